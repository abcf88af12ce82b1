"""Epigenomic signal tensors (cell × assay × bin) and the methods that impute them (eDICE)."""
