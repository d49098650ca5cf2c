"""Curricula: stratified stages, informative-group figures, merging measured and predicted labels."""
