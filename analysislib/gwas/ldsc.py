"""Stratified LD score regression (S-LDSC), the classic baseline of the DeepWAS comparison.

Re-implemented here (ldsc has no installable Python 3 package) from the formulas in
``research/deepwas_ld_simulation.md`` section 3, which follow the ldsc code
(Bulik-Sullivan et al. 2015, Nat Genet 47:291; Finucane et al. 2015, Nat Genet 47:1228;
``ldscore/regressions.py``, ``irwls.py``, ``jackknife.py``):

* annotation LD scores ``ℓ(j, c) = Σ_k r̃²_jk a_kc`` with the unbiased
  ``r̃² = r² − (1 − r²)/(n − 2)`` (:func:`annotation_ld_scores`);
* model ``E[χ²_j] = N Σ_c τ_c ℓ(j, c) + N a + 1`` (the intercept absorbs ``N a + 1``);
* weights ``w = het_w · oc_w`` with ``het_w = 1 / (2 (intercept + (h² N / M) ℓ_j)²)`` (``ℓ``
  clipped at >= 1, ``h²`` clipped to [0, 1]) and ``oc_w = 1 / max(w_ld, 1)``, ``w_ld`` the LD
  score over regression SNPs (:func:`ldsc_weights`);
* ``h²`` initialised as ``M (mean χ² − intercept) / (N mean ℓ)`` and two rounds of
  reweighting (IRWLS), then a weighted least-squares fit with a block jackknife over
  ``n_blocks`` contiguous SNP blocks (200 in ldsc) for standard errors;
* the two-step estimator: the intercept is fitted on SNPs with ``χ² < two_step`` (30 in ldsc),
  then fixed while the slopes are fitted on all SNPs; the jackknife delete values of the slopes
  are corrected for the step-1 intercept's (ldsc ``_combine_twostep_jknives``);
* ``Prop_h2(c) = Σ_{j∈c} h²_j / h²_tot`` with overlapping categories
  (``h²_j = Σ_c a_jc τ_c``), ``Prop_SNPs`` and ``Enrichment = Prop_h2 / Prop_SNPs`` with
  ratio-jackknife standard errors and ldsc's enrichment p-value (:func:`enrichment`).

Two deliberate differences from ldsc's literal code, both documented where they apply:
ldsc's reweighting reads the first two regression coefficients as ``h²`` and intercept even in
a partitioned fit; here the total ``h² = Σ_c M_c τ_c`` and the actual intercept are used. And
ldsc refuses the two-step estimator with several annotations; here it is allowed, with the
delete-value correction generalised from the scalar ``c = Σ w x / Σ w x²`` to the vector
``c = (Xᵀ W X)⁻¹ Xᵀ W 1`` (identical for one annotation).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

__all__ = [
    "LdscResult",
    "annotation_ld_scores",
    "block_jackknife",
    "enrichment",
    "ldsc_weights",
    "s_ldsc",
    "unbiased_r2",
]


def unbiased_r2(r2: Any, n: int) -> np.ndarray:
    """The unbiased estimator ``r̃² = r² − (1 − r²)/(n − 2)`` of squared correlation.

    Parameters
    ----------
    r2
        Sample squared correlations.
    n
        Number of haplotypes (or samples) the correlations were estimated from.
    """
    if n <= 2:
        raise ValueError(f"the unbiased r^2 needs n > 2, got {n}")
    r2 = np.asarray(r2, dtype=np.float64)
    return r2 - (1.0 - r2) / (n - 2)


def annotation_ld_scores(
    R: Any, annotations: Any, *, n_ref: int | None = None, unbiased: bool = True
) -> np.ndarray:
    """Annotation LD scores ``ℓ(j, c) = Σ_k r̃²_jk a_kc`` over the stored pairs of ``R``.

    Parameters
    ----------
    R
        LD (correlation) matrix, dense or ``scipy.sparse``. Only stored entries (the LD window or
        block, including the diagonal) are summed, as ldsc sums over its 1 cM window.
    annotations
        ``(snps, categories)`` annotation values (or ``(snps,)``).
    n_ref
        Haplotypes behind ``R``; required when ``unbiased``.
    unbiased
        Use ``r̃²`` (ldsc's estimator) rather than ``r²``. The diagonal stays 1.

    Returns
    -------
    numpy.ndarray
        float64 ``(snps, categories)``.
    """
    a = np.asarray(annotations, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    m = R.shape[0]
    if R.shape != (m, m) or a.shape[0] != m:
        raise ValueError(f"R has shape {R.shape} and annotations {a.shape}; R must be square "
                         "with one annotation row per SNP")
    if unbiased and n_ref is None:
        raise ValueError("n_ref (haplotypes behind R) is needed for the unbiased r^2")
    if sp.issparse(R):
        r2 = sp.csr_matrix(R, dtype=np.float64, copy=True)
        r2.data = r2.data ** 2
        if unbiased:
            r2.data = unbiased_r2(r2.data, int(n_ref))
            r2.setdiag(1.0)
        return np.asarray(r2 @ a)
    r2 = np.asarray(R, dtype=np.float64) ** 2
    if unbiased:
        r2 = unbiased_r2(r2, int(n_ref))
        np.fill_diagonal(r2, 1.0)
    return r2 @ a


def ldsc_weights(
    ld: Any, w_ld: Any, n: Any, m: float, h2: float, intercept: float = 1.0
) -> np.ndarray:
    """ldsc regression weights ``het_w · oc_w``.

    ``het_w = 1 / (2 (intercept + h² N ℓ / M)²)`` is the inverse variance of χ² under the
    model (clipping ``ℓ >= 1`` and ``h²`` to [0, 1]) and ``oc_w = 1 / max(w_ld, 1)`` corrects
    for counting a causal SNP once per SNP in LD with it.

    Parameters
    ----------
    ld
        Total LD score per regression SNP.
    w_ld
        LD score computed over regression SNPs only.
    n
        GWAS sample size (scalar or per SNP).
    m
        Number of reference SNPs.
    h2
        Current heritability estimate.
    intercept
        Current intercept estimate.
    """
    h2 = float(min(max(h2, 0.0), 1.0))
    ld = np.maximum(np.asarray(ld, dtype=np.float64), 1.0)
    w_ld = np.maximum(np.asarray(w_ld, dtype=np.float64), 1.0)
    c = h2 * np.asarray(n, dtype=np.float64) / float(m)
    het_w = 1.0 / (2.0 * (intercept + c * ld) ** 2)
    return het_w / w_ld


@dataclass
class _Jackknife:
    est: np.ndarray          # (p,)
    delete_values: np.ndarray  # (n_blocks, p)
    separators: np.ndarray
    cov: np.ndarray = field(init=False)
    se: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.cov = _pseudo_cov(self.est, self.delete_values)
        self.se = np.sqrt(np.diag(self.cov))


def _pseudo_cov(est: np.ndarray, delete_values: np.ndarray) -> np.ndarray:
    """Jackknife covariance from delete values: cov of pseudovalues / n_blocks."""
    n_blocks = delete_values.shape[0]
    pseudo = n_blocks * est[None, :] - (n_blocks - 1) * delete_values
    return np.atleast_2d(np.cov(pseudo.T, ddof=1)) / n_blocks


def block_jackknife(
    x: np.ndarray, y: np.ndarray, n_blocks: int, separators: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least squares ``y ~ x`` with block-jackknife delete values (ldsc ``LstsqJackknifeFast``).

    Parameters
    ----------
    x
        Design ``(n, p)`` (already weighted).
    y
        Response ``(n,)``.
    n_blocks
        Contiguous blocks, separated at ``floor(linspace(0, n, n_blocks + 1))``.
    separators
        Block boundaries to use instead.

    Returns
    -------
    est : numpy.ndarray
        Full-data estimate ``(p,)``.
    delete_values : numpy.ndarray
        Estimates with each block left out, ``(n_blocks, p)``.
    separators : numpy.ndarray
        Block boundaries used.
    """
    n = x.shape[0]
    if separators is None:
        if not 1 < n_blocks <= n:
            raise ValueError(f"n_blocks must lie in [2, {n}] (number of SNPs), got {n_blocks}")
        separators = np.floor(np.linspace(0, n, n_blocks + 1)).astype(np.int64)
    xtx = np.stack([x[a:b].T @ x[a:b] for a, b in itertools.pairwise(separators)])
    xty = np.stack([x[a:b].T @ y[a:b] for a, b in itertools.pairwise(separators)])
    total_xtx, total_xty = xtx.sum(axis=0), xty.sum(axis=0)
    est = np.linalg.solve(total_xtx, total_xty)
    delete = np.stack([np.linalg.solve(total_xtx - a, total_xty - b)
                       for a, b in zip(xtx, xty, strict=True)])
    return est, delete, np.asarray(separators)


def _weighted(x: np.ndarray, sqrt_w: np.ndarray) -> np.ndarray:
    """Rows scaled by ``sqrt_w / sum(sqrt_w)`` (ldsc ``IRWLS._weight``)."""
    if np.any(sqrt_w <= 0):
        raise ValueError("regression weights must be positive")
    scale = sqrt_w / sqrt_w.sum()
    return x * (scale[:, None] if x.ndim == 2 else scale)


def _irwls(
    x: np.ndarray, y: np.ndarray, update: Any, w: np.ndarray, n_blocks: int,
    separators: np.ndarray | None = None, n_iter: int = 2,
) -> _Jackknife:
    """Iteratively reweighted least squares then a jackknifed WLS fit (ldsc ``IRWLS``)."""
    sqrt_w = np.sqrt(w)
    for _ in range(n_iter):
        coef = np.linalg.lstsq(_weighted(x, sqrt_w), _weighted(y, sqrt_w), rcond=None)[0]
        sqrt_w = np.sqrt(update(coef))
    est, delete, seps = block_jackknife(_weighted(x, sqrt_w), _weighted(y, sqrt_w), n_blocks,
                                        separators)
    jk = _Jackknife(est=est, delete_values=delete, separators=seps)
    jk.final_weights = sqrt_w ** 2  # type: ignore[attr-defined]
    return jk


@dataclass
class LdscResult:
    """Result of :func:`s_ldsc`.

    Attributes
    ----------
    names
        Annotation names.
    tau, tau_se, tau_cov
        Per-SNP heritability coefficients ``τ_c`` with jackknife SEs and covariance.
    intercept, intercept_se
        Intercept (fixed value and SE ``nan`` when constrained).
    h2, h2_se
        Total heritability ``Σ_c M_c τ_c``.
    category_h2
        ``M_c τ_c`` per annotation.
    m
        ``M_c``: annotation sums over reference SNPs.
    tau_delete_values
        ``(n_blocks, categories)`` leave-one-block-out ``τ``.
    intercept_delete_values
        ``(n_blocks,)`` (``None`` when the intercept is fixed).
    mean_chi2, lambda_gc
        Summary of the χ² statistics.
    ratio
        ``(intercept − 1) / (mean χ² − 1)`` (``nan`` when mean χ² <= 1 or fixed intercept).
    n_blocks
        Jackknife blocks.
    two_step
        χ² threshold of the two-step estimator, if used; ``twostep_filtered`` SNPs exceeded it.
    weights
        Final regression weights.
    """

    names: list[str]
    tau: np.ndarray
    tau_se: np.ndarray
    tau_cov: np.ndarray
    intercept: float
    intercept_se: float
    h2: float
    h2_se: float
    category_h2: np.ndarray
    m: np.ndarray
    tau_delete_values: np.ndarray
    intercept_delete_values: np.ndarray | None
    mean_chi2: float
    lambda_gc: float
    ratio: float
    n_blocks: int
    two_step: float | None = None
    twostep_filtered: int | None = None
    weights: np.ndarray | None = field(default=None, repr=False)

    def summary(self) -> pd.DataFrame:
        """One row per annotation: ``tau``, ``tau_se``, ``tau_z``, ``category_h2``."""
        with np.errstate(divide="ignore", invalid="ignore"):
            z = self.tau / self.tau_se
        return pd.DataFrame({"category": self.names, "tau": self.tau, "tau_se": self.tau_se,
                             "tau_z": z, "category_h2": self.category_h2, "m": self.m})


def _as_column(value: Any, n: int, name: str) -> np.ndarray:
    arr = np.broadcast_to(np.asarray(value, dtype=np.float64), (n,)).copy()
    if not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise ValueError(f"{name} is not finite at SNP {bad}")
    return arr


def s_ldsc(
    chi2: Any,
    ref_ld: Any,
    w_ld: Any,
    n: Any,
    m: Any,
    *,
    intercept: float | None = None,
    two_step: float | None = None,
    n_blocks: int = 200,
    names: Sequence[str] | None = None,
) -> LdscResult:
    """Stratified LD score regression of χ² on annotation LD scores.

    Parameters
    ----------
    chi2
        χ² statistics of the regression SNPs ``(snps,)``.
    ref_ld
        Annotation LD scores ``(snps, categories)`` (:func:`annotation_ld_scores`); one column
        for plain LDSC.
    w_ld
        LD scores over regression SNPs (for the weights).
    n
        GWAS sample size, scalar or per SNP.
    m
        ``M_c``: sum of each annotation over the reference SNPs, ``(categories,)``.
    intercept
        Fix the intercept at this value (``1`` for no confounding); ``None`` estimates it.
    two_step
        χ² threshold of the two-step estimator (ldsc's default 30 when the intercept is free);
        ``None`` fits intercept and slopes together.
    n_blocks
        Block-jackknife blocks (contiguous in SNP order).
    names
        Annotation names (default ``L2_0``, ``L2_1``...).

    Returns
    -------
    LdscResult
    """
    ref_ld = np.asarray(ref_ld, dtype=np.float64)
    if ref_ld.ndim == 1:
        ref_ld = ref_ld[:, None]
    n_snp, n_annot = ref_ld.shape
    y = _as_column(chi2, n_snp, "chi2")
    w_ld = _as_column(w_ld, n_snp, "w_ld")
    n_vec = _as_column(n, n_snp, "N")
    if not np.all(np.isfinite(ref_ld)):
        raise ValueError("ref_ld contains non-finite values")
    m = np.asarray(m, dtype=np.float64).reshape(-1)
    if m.shape != (n_annot,):
        raise ValueError(f"m has {m.size} values; ref_ld has {n_annot} annotations")
    if two_step is not None and intercept is not None:
        raise ValueError("two_step estimates the intercept; it cannot be combined with a fixed "
                         "intercept")
    names = list(names) if names is not None else [f"L2_{k}" for k in range(n_annot)]
    if len(names) != n_annot:
        raise ValueError(f"{len(names)} names for {n_annot} annotations")

    m_tot = float(m.sum())
    ld_tot = ref_ld.sum(axis=1)
    null_intercept = 1.0 if intercept is None else float(intercept)
    h2_start = m_tot * (y.mean() - null_intercept) / np.mean(ld_tot * n_vec)
    w0 = ldsc_weights(ld_tot, w_ld, n_vec, m_tot, h2_start, null_intercept)
    n_bar = n_vec.mean()
    x = ref_ld * (n_vec / n_bar)[:, None]

    def update(fixed: float | None, rows: np.ndarray) -> Any:
        def inner(coef: np.ndarray) -> np.ndarray:
            h2 = float(m @ coef[:n_annot]) / n_bar
            icpt = float(coef[n_annot]) if fixed is None else fixed
            return ldsc_weights(ld_tot[rows], w_ld[rows], n_vec[rows], m_tot, h2, icpt)
        return inner

    everyone = np.arange(n_snp)
    filtered = None
    if two_step is not None:
        step1 = np.flatnonzero(y < two_step)
        filtered = n_snp - step1.size
        if step1.size < n_blocks:
            raise ValueError(f"only {step1.size} SNPs have chi2 < {two_step}; fewer than "
                             f"n_blocks = {n_blocks}")
        x1 = np.column_stack([x[step1], np.ones(step1.size)])
        jk1 = _irwls(x1, y[step1], update(None, step1), w0[step1], n_blocks)
        step1_int = float(jk1.est[n_annot])
        # map step-1 block boundaries (indices among filtered SNPs) back to all SNPs
        full_index = np.r_[step1, n_snp]
        seps = np.r_[0, full_index[jk1.separators[1:-1]], n_snp]
        jk2 = _irwls(x, y - step1_int, update(step1_int, everyone), w0, n_blocks,
                     separators=seps)
        xw = x * w0[:, None]
        c = np.linalg.solve(x.T @ xw, xw.sum(axis=0))
        tau_delete = jk2.delete_values - np.outer(jk1.delete_values[:, n_annot] - step1_int, c)
        est = np.r_[jk2.est, step1_int]
        delete = np.column_stack([tau_delete, jk1.delete_values[:, n_annot]])
        cov = _pseudo_cov(est, delete)
        weights = jk2.final_weights  # type: ignore[attr-defined]
        icpt, icpt_delete = step1_int, jk1.delete_values[:, n_annot]
        icpt_se = float(np.sqrt(cov[n_annot, n_annot]))
    elif intercept is None:
        xi = np.column_stack([x, np.ones(n_snp)])
        jk = _irwls(xi, y, update(None, everyone), w0, n_blocks)
        est, delete, cov = jk.est, jk.delete_values, jk.cov
        weights = jk.final_weights  # type: ignore[attr-defined]
        icpt, icpt_delete = float(est[n_annot]), delete[:, n_annot]
        icpt_se = float(jk.se[n_annot])
    else:
        jk = _irwls(x, y - float(intercept), update(float(intercept), everyone), w0, n_blocks)
        est, delete, cov = jk.est, jk.delete_values, jk.cov
        weights = jk.final_weights  # type: ignore[attr-defined]
        icpt, icpt_delete, icpt_se = float(intercept), None, float("nan")

    tau = est[:n_annot] / n_bar
    tau_cov = cov[:n_annot, :n_annot] / n_bar ** 2
    tau_delete = delete[:, :n_annot] / n_bar
    category_h2 = m * tau
    h2_total = float(category_h2.sum())
    h2_se = float(np.sqrt(m @ tau_cov @ m))
    mean_chi2 = float(y.mean())
    ratio = (icpt - 1.0) / (mean_chi2 - 1.0) if (mean_chi2 > 1 and icpt_delete is not None) \
        else float("nan")
    return LdscResult(
        names=names, tau=tau, tau_se=np.sqrt(np.diag(tau_cov)), tau_cov=tau_cov,
        intercept=icpt, intercept_se=icpt_se, h2=h2_total, h2_se=h2_se,
        category_h2=category_h2, m=m, tau_delete_values=tau_delete,
        intercept_delete_values=icpt_delete, mean_chi2=mean_chi2,
        lambda_gc=float(np.median(y) / stats.chi2.ppf(0.5, 1)), ratio=float(ratio),
        n_blocks=int(delete.shape[0]), two_step=two_step, twostep_filtered=filtered,
        weights=weights,
    )


def enrichment(
    result: LdscResult, annotations: Any, *, names: Sequence[str] | None = None
) -> pd.DataFrame:
    """Heritability enrichment of (overlapping) categories from an S-LDSC fit.

    With ``A`` the ``(reference SNPs, categories)`` annotation matrix of the regression and
    ``O = Aᵀ A`` its overlap matrix: ``Prop_h2(c) = (O τ)_c / Σ_c M_c τ_c``,
    ``Prop_SNPs(c) = M_c / M_tot`` and ``Enrichment = Prop_h2 / Prop_SNPs`` (ldsc
    ``_overlap_output``). Standard errors come from the ratio jackknife over the fit's delete
    values; the p-value tests whether ``τ``-implied per-SNP heritability differs inside and
    outside the category (ldsc's ``Enrichment_p``, a t test with ``n_blocks`` degrees of
    freedom).

    Parameters
    ----------
    result
        Output of :func:`s_ldsc` on LD scores of these annotations.
    annotations
        ``(reference SNPs, categories)`` annotation values (binary categories; a base all-ones
        category is usual). ``M_tot`` is the number of rows.
    names
        Category names (default the regression's).

    Returns
    -------
    pandas.DataFrame
        ``category``, ``prop_snps``, ``prop_h2``, ``prop_h2_se``, ``enrichment``,
        ``enrichment_se``, ``enrichment_p``, ``tau``, ``tau_se``.
    """
    a = np.asarray(annotations, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.shape[1] != result.tau.size:
        raise ValueError(f"annotations have {a.shape[1]} categories; the fit has "
                         f"{result.tau.size}")
    names = list(names) if names is not None else list(result.names)
    m_tot = float(a.shape[0])
    m_annot = a.sum(axis=0)
    overlap = a.T @ a
    total = float(m_annot @ result.tau)
    prop_h2 = overlap @ result.tau / total
    num_del = result.tau_delete_values @ overlap.T           # (blocks, categories)
    den_del = result.tau_delete_values @ m_annot             # (blocks,)
    ratio_del = num_del / den_del[:, None]
    prop_cov = _pseudo_cov(prop_h2, ratio_del)
    prop_se = np.sqrt(np.diag(prop_cov))
    prop_snps = m_annot / m_tot
    diff = np.zeros_like(overlap)
    for i in range(len(m_annot)):
        if m_annot[i] != m_tot:
            diff[i] = overlap[i] / m_annot[i] - (m_annot - overlap[i]) / (m_tot - m_annot[i])
    diff_est = diff @ result.tau
    diff_se = np.sqrt(np.diag(diff @ result.tau_cov @ diff.T))
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(diff_se > 0, 2 * stats.t.sf(np.abs(diff_est / diff_se), result.n_blocks),
                     np.nan)
    return pd.DataFrame({
        "category": names, "prop_snps": prop_snps, "prop_h2": prop_h2, "prop_h2_se": prop_se,
        "enrichment": prop_h2 / prop_snps, "enrichment_se": prop_se / prop_snps,
        "enrichment_p": p, "tau": result.tau, "tau_se": result.tau_se,
    })
