"""Verdicts: answer extraction, verifier workers with a fast path, scoring rollouts."""
