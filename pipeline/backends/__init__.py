"""Executors apart from the stages: labelling on a Ray cluster."""
