"""Datasets, architectures, training and evaluation. Imports no Qt."""
