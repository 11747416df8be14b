"""Readers for the dataset layouts of the field. Each returns a list of `Study` records."""
