"""Simulators: genotypes (coalescent), epigenomes (chromatin-state model) and GWAS traits."""
