"""DeepWAS-style GWAS (Amin et al. 2025): banded-LD full likelihood, functional priors, LDSC.

Submodules are imported explicitly (``from analysislib.gwas.likelihood import window_nll``) so
that ``import analysislib.gwas`` does not load torch.
"""

__all__: list[str] = []
