"""File input and output: VCF/BCF genotypes, epigenomic tracks, atomic writes, checksums."""
