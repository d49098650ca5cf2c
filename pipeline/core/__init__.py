"""Foundations every stage stands on: storage paths, records, locks, progress, plots, the model spec."""
