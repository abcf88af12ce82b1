"""Genotype data: the sgkit-style dataset model and, in later modules, imputers and metrics."""
