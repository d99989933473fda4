"""Synthetic operator: a world worth modelling, delivered as real extracts."""
