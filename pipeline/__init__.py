"""gradus's domain library: problems, rollouts, verification, pass rates, curricula.

Importable and testable without Dagster; the `assets` package is the thin Dagster layer on top.
"""
