"""Genotype imputation accuracy: per-variant and aggregate r², concordance, IQS, F1, phased accuracy.

Follows the papers and the authors' code:

* the accuracy calculator used by Dias et al. (2022) (``Compare_imputation_to_WGS.py`` in
  ``TorkamaniLab/imputation_accuracy_calculator``): per-variant squared Pearson correlation of
  imputed dosage and true allele count, concordance P0 of the rounded dosage, IQS (Cohen's kappa
  on the 3×3 genotype table), F-score on allele-presence bits ``{0: [1, 0], 1: [1, 1],
  2: [0, 1]}``, RMSE;
* Dias' MAF bins ``[0, .001, .005, .01, .05, .1, .2, .3, .4, .5]`` as R
  ``cut(maf, breaks, right=FALSE, include.lowest=TRUE)``, summarised by the mean of per-variant
  values ± standard error (``autoencoder_tuning_pipeline/plot_evaluation_results_per_variant.R``
  in ``TorkamaniLab/Imputation_Autoencoder``);
* BiU-Net (Methods 5.4 "Model training"): metrics computed "by concatenating
  all SNPs" of a MAF bin, i.e. pooled over every scored (sample, variant) pair (aggregate r²);
  accuracy on phased genotype classes (0|0, 0|1, 1|0, 1|1).

Only scored entries count: every function takes a ``score_mask`` of shape (variants, samples),
True where the entry was hidden from the imputer (untyped site or masked genotype). Entries whose
true genotype is missing are never scored. Arrays are NumPy, shape (variants, samples); the
dataset-level :func:`score_imputation` walks variants in blocks, so dask-backed datasets are
loaded one block at a time.

Minor-allele coding of pooled metrics: before pooling, dosage and truth are recoded 2 − x at
sites whose ALT allele frequency exceeds 0.5 (:func:`minor_allele_flip`), so every site is scored
on its minor-allele dosage. :func:`score_imputation` always does this, with the ALT frequency
from the reference panel when given (as the evaluation harness does) or else from the truth; the
array functions :func:`aggregate_r2` and pooled :func:`genotype_confusion`/:func:`iqs` do it when
given ``alt_frequency`` and pool as coded otherwise. Pooling ALT-major with ALT-minor sites would otherwise reward a
constant allele-frequency guess (dosage 2p) with an aggregate r² near 1 in rare MAF bins, because
2p alone separates the two kinds of site. Aggregate r² and aggregate IQS change with the coding;
per-variant metrics and pooled concordance, F1, precision, recall, RMSE and accuracy do not (the
recoding permutes genotype classes and swaps the two allele-presence bits), so one flip of the
per-variant statistics serves every pooled metric (:meth:`_Stats.minor_coded`).

Degenerate cases (documented choices):

* r² of a variant whose scored truth is monomorphic, or whose scored dosage is constant, is
  0 by default (``monomorphic="zero"``: the calculator's NaN→0 reading) or NaN with
  ``monomorphic="nan"`` (excluded from means, as Dias' Optuna pipeline excluded monomorphic
  variants). The same rule applies to a pooled (aggregate) r². A variant with no scored entry
  has r² NaN in both modes. (The calculator's current code adds 1e-15 to numerator and
  denominator, which makes the monomorphic value depend on rounding noise; we do not copy that.)
* IQS is NaN when chance agreement is 1 (every scored call in one class in both truth and
  imputation), as the calculator's 0/0.
* Rounding of dosages uses :func:`numpy.rint` (halves to even: 0.5 → 0, 1.5 → 2), as the
  calculator's ``np.round``; results are clipped to 0–2. The calculator rounds outputs to 3
  decimals and adds 1e-8 to TP; we do neither (differences below 5e-4).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import pandas as pd
import xarray as xr

from analysislib import variables
from analysislib.errors import InvalidArgumentError
from analysislib.genotype.imputer import sites_key
from analysislib.genotype.stats import alt_allele_frequency, minor_allele_frequency

__all__ = [
    "DIAS_MAF_BINS",
    "PER_VARIANT_METRICS",
    "POOLED_METRICS",
    "aggregate_r2",
    "allele_count",
    "allele_presence_scores",
    "assign_maf_bins",
    "best_guess",
    "concordance",
    "f1_score",
    "genotype_accuracy",
    "genotype_confusion",
    "iqs",
    "maf_bin_labels",
    "minor_allele_flip",
    "per_variant_r2",
    "phased_accuracy",
    "phased_genotype_confusion",
    "rmse",
    "score_imputation",
]

#: Dias et al. (2022) MAF bin breaks (``plot_evaluation_results_per_variant.R``).
DIAS_MAF_BINS: tuple[float, ...] = (0.0, 0.001, 0.005, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5)

#: Metrics with one value per variant; strata report their mean (and ``<metric>_se``).
PER_VARIANT_METRICS: tuple[str, ...] = ("r2", "concordance", "iqs", "f1", "precision", "recall", "rmse")

#: Metrics pooled over every scored (sample, variant) pair of a stratum (BiU-Net's definition).
POOLED_METRICS: tuple[str, ...] = (
    "aggregate_r2", "aggregate_concordance", "aggregate_iqs", "aggregate_f1", "aggregate_precision",
    "aggregate_recall", "aggregate_rmse", "genotype_accuracy", "phased_accuracy",
)

Monomorphic = Literal["zero", "nan"]

# Allele-presence bits of allele counts 0, 1, 2: [REF present, ALT present] (Dias et al. Eq. 1).
_BITS = np.array([[1, 0], [1, 1], [0, 1]], dtype=np.int64)
# Bit counts for each (true class, imputed class) pair, indexed [t, p].
_TP = np.einsum("tb,pb->tp", _BITS, _BITS)
_FP = np.einsum("tb,pb->tp", 1 - _BITS, _BITS)
_FN = np.einsum("tb,pb->tp", _BITS, 1 - _BITS)
_TN = np.einsum("tb,pb->tp", 1 - _BITS, 1 - _BITS)


# ----------------------------------------------------------------------------- array helpers


def allele_count(call_genotype: Any) -> np.ndarray:
    """Alternate-allele count per call from ``call_genotype`` (variants, samples, ploidy).

    Any non-reference allele counts as alternate (as :mod:`analysislib.genotype.stats`). A call
    with any missing allele is -1. Returns int8 (variants, samples).
    """
    gt = np.asarray(call_genotype)
    if gt.ndim != 3:
        raise InvalidArgumentError(f"call_genotype must have dims (variants, samples, ploidy), got shape {gt.shape}")
    # Loops over the short ploidy axis: reductions along it are slow in NumPy.
    count = np.zeros(gt.shape[:-1], dtype=np.int8)
    missing = np.zeros(gt.shape[:-1], dtype=bool)
    for k in range(gt.shape[-1]):
        count += gt[..., k] > 0
        missing |= gt[..., k] < 0
    count[missing] = -1
    return count


def _haplotypes_equal(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """True where two (variants, samples, ploidy) arrays agree on every haplotype."""
    equal = a[..., 0] == b[..., 0]
    for k in range(1, a.shape[-1]):
        equal &= a[..., k] == b[..., k]
    return equal


def best_guess(dosage: Any, *, ploidy: int = 2) -> np.ndarray:
    """Best-guess allele count from dosages: ``rint`` (halves to even) clipped to 0–ploidy.

    Non-finite dosages give -1. Returns int8 with the shape of ``dosage``.
    """
    x = np.asarray(dosage, dtype=np.float64)
    finite = np.isfinite(x)
    out = np.clip(np.rint(np.where(finite, x, 0.0)), 0, ploidy).astype(np.int8)
    out[~finite] = -1
    return out


def _as_class(imputed: Any) -> np.ndarray:
    """Imputed genotype class: integer arrays are allele counts, float arrays dosages to round."""
    values = np.asarray(imputed)
    if values.dtype.kind in "iub":
        return values.astype(np.int8)
    return best_guess(values)


def _scored_mask(truth: np.ndarray, score_mask: Any | None) -> np.ndarray:
    """score_mask restricted to called truth entries; checks shapes."""
    if truth.ndim != 2:
        raise InvalidArgumentError(f"truth allele counts must be (variants, samples), got shape {truth.shape}")
    called = truth >= 0
    if score_mask is None:
        return called
    mask = np.asarray(score_mask)
    if mask.shape != truth.shape:
        raise InvalidArgumentError(f"score_mask has shape {mask.shape}, expected {truth.shape} (variants, samples)")
    if mask.dtype != bool:
        raise InvalidArgumentError(f"score_mask must be boolean, got dtype {mask.dtype}")
    return mask & called


def _check_complete(bad: np.ndarray, what: str, keys: Sequence[str] | None = None,
                    samples: Sequence[str] | None = None) -> None:
    """Raise if any scored entry has no imputed value, naming the first one."""
    if not bad.any():
        return
    v, s = np.argwhere(bad)[0]
    variant = keys[v] if keys is not None else f"variant {v}"
    sample = samples[s] if samples is not None else f"sample {s}"
    raise InvalidArgumentError(f"{int(bad.sum())} scored entries have no imputed {what} "
                     f"(first: {variant}, {sample}); imputers must fill every scored entry")


# ----------------------------------------------------------------------------- per-variant statistics


@dataclass
class _Stats:
    """Sufficient statistics per variant over the scored entries (one row per variant)."""

    n: np.ndarray            # scored entries
    mean_x: np.ndarray       # dosage mean
    mean_y: np.ndarray       # truth mean
    sxx: np.ndarray          # centred sums of squares and products
    syy: np.ndarray
    sxy: np.ndarray
    min_x: np.ndarray
    max_x: np.ndarray
    min_y: np.ndarray
    max_y: np.ndarray
    sse: np.ndarray          # sum of squared dosage errors
    confusion: np.ndarray    # (variants, 3, 3) counts [true class, imputed class]
    gt_correct: np.ndarray   # best-guess genotype (call_genotype) matches, unphased
    phased_correct: np.ndarray
    phased_ok: bool          # every scored entry phased in truth and imputation

    @classmethod
    def empty(cls, n_variants: int) -> _Stats:
        f = lambda fill: np.full(n_variants, fill, dtype=np.float64)
        return cls(n=np.zeros(n_variants, np.int64), mean_x=f(0), mean_y=f(0), sxx=f(0), syy=f(0),
                   sxy=f(0), min_x=f(np.inf), max_x=f(-np.inf), min_y=f(np.inf), max_y=f(-np.inf),
                   sse=f(0), confusion=np.zeros((n_variants, 3, 3), np.int64),
                   gt_correct=np.zeros(n_variants, np.int64),
                   phased_correct=np.zeros(n_variants, np.int64), phased_ok=True)

    @classmethod
    def combine(cls, parts: Sequence[_Stats]) -> _Stats:
        """Statistics over the union of disjoint sample sets (parallel combination of moments)."""
        n = np.sum([p.n for p in parts], axis=0)
        safe = np.maximum(n, 1)
        mean_x = np.sum([p.n * p.mean_x for p in parts], axis=0) / safe
        mean_y = np.sum([p.n * p.mean_y for p in parts], axis=0) / safe

        def centred(own: str, a: str, b: str, mean_a: np.ndarray, mean_b: np.ndarray) -> np.ndarray:
            return np.sum([getattr(p, own) + p.n * (getattr(p, a) - mean_a) * (getattr(p, b) - mean_b)
                           for p in parts], axis=0)

        return cls(
            n=n, mean_x=mean_x, mean_y=mean_y,
            sxx=centred("sxx", "mean_x", "mean_x", mean_x, mean_x),
            syy=centred("syy", "mean_y", "mean_y", mean_y, mean_y),
            sxy=centred("sxy", "mean_x", "mean_y", mean_x, mean_y),
            min_x=np.min([p.min_x for p in parts], axis=0), max_x=np.max([p.max_x for p in parts], axis=0),
            min_y=np.min([p.min_y for p in parts], axis=0), max_y=np.max([p.max_y for p in parts], axis=0),
            sse=np.sum([p.sse for p in parts], axis=0),
            confusion=np.sum([p.confusion for p in parts], axis=0),
            gt_correct=np.sum([p.gt_correct for p in parts], axis=0),
            phased_correct=np.sum([p.phased_correct for p in parts], axis=0),
            phased_ok=all(p.phased_ok for p in parts),
        )

    def minor_coded(self, flip: np.ndarray) -> _Stats:
        """The same statistics with dosage and truth recoded ``2 - x`` at variants where ``flip``.

        Centred moments, squared errors and match counts do not change; means and extremes are
        reflected and the confusion table reversed on both axes (classes 0 and 2 swap).
        """
        flip = np.asarray(flip, dtype=bool)
        if not flip.any():
            return self
        column = flip[:, None, None]
        return replace(
            self,
            mean_x=np.where(flip, 2.0 - self.mean_x, self.mean_x),
            mean_y=np.where(flip, 2.0 - self.mean_y, self.mean_y),
            min_x=np.where(flip, 2.0 - self.max_x, self.min_x),
            max_x=np.where(flip, 2.0 - self.min_x, self.max_x),
            min_y=np.where(flip, 2.0 - self.max_y, self.min_y),
            max_y=np.where(flip, 2.0 - self.min_y, self.max_y),
            confusion=np.where(column, self.confusion[:, ::-1, ::-1], self.confusion))

    def put(self, rows: slice, other: _Stats) -> None:
        for name in ("n", "mean_x", "mean_y", "sxx", "syy", "sxy", "min_x", "max_x", "min_y",
                     "max_y", "sse", "confusion", "gt_correct", "phased_correct"):
            getattr(self, name)[rows] = getattr(other, name)
        self.phased_ok = self.phased_ok and other.phased_ok


def _variant_stats(
    dosage: np.ndarray,
    truth: np.ndarray,
    mask: np.ndarray,
    *,
    imputed_class: np.ndarray | None = None,
    genotype_match: np.ndarray | None = None,
    phased_match: np.ndarray | None = None,
    phased: np.ndarray | None = None,
) -> _Stats:
    """Statistics of one block; ``mask`` already excludes missing truth.

    ``genotype_match`` / ``phased_match``: where the imputed ``call_genotype`` equals the truth
    unphased (allele counts) / phased (haplotype pairs); ``phased``: where both calls are phased.
    """
    x = np.asarray(dosage, dtype=np.float64)
    y = truth.astype(np.float64)
    n = mask.sum(axis=1).astype(np.int64)
    safe = np.maximum(n, 1)
    mean_x = np.where(mask, x, 0.0).sum(axis=1) / safe
    mean_y = np.where(mask, y, 0.0).sum(axis=1) / safe
    dx = np.where(mask, x - mean_x[:, None], 0.0)
    dy = np.where(mask, y - mean_y[:, None], 0.0)
    err = np.where(mask, x - y, 0.0)
    p = best_guess(x) if imputed_class is None else imputed_class
    code = np.where(mask, truth.astype(np.int64) * 3 + np.clip(p, 0, 2), 0)
    rows = np.broadcast_to(np.arange(len(n))[:, None] * 9, mask.shape)
    confusion = np.bincount((rows + code)[mask], minlength=len(n) * 9).reshape(len(n), 3, 3)
    stats = _Stats(
        n=n, mean_x=mean_x, mean_y=mean_y,
        sxx=np.einsum("ij,ij->i", dx, dx), syy=np.einsum("ij,ij->i", dy, dy),
        sxy=np.einsum("ij,ij->i", dx, dy),
        min_x=np.where(mask, x, np.inf).min(axis=1, initial=np.inf),
        max_x=np.where(mask, x, -np.inf).max(axis=1, initial=-np.inf),
        min_y=np.where(mask, y, np.inf).min(axis=1, initial=np.inf),
        max_y=np.where(mask, y, -np.inf).max(axis=1, initial=-np.inf),
        sse=np.einsum("ij,ij->i", err, err), confusion=confusion,
        gt_correct=np.zeros(len(n), np.int64), phased_correct=np.zeros(len(n), np.int64),
        phased_ok=phased is not None,
    )
    if genotype_match is not None:
        stats.gt_correct = (mask & genotype_match).sum(axis=1)
    if phased_match is not None:
        stats.phased_correct = (mask & phased_match).sum(axis=1)
    if phased is not None:
        stats.phased_ok = bool(np.all(phased[mask]))
    return stats


def _r2_from_moments(sxx: Any, syy: Any, sxy: Any, constant: Any, n: Any, *,
                     monomorphic: Monomorphic) -> np.ndarray:
    """Squared correlation from centred moments with the degenerate-case rule."""
    if monomorphic not in ("zero", "nan"):
        raise InvalidArgumentError(f"monomorphic must be 'zero' or 'nan', got {monomorphic!r}")
    sxx, syy, sxy = (np.asarray(a, dtype=np.float64) for a in (sxx, syy, sxy))
    constant = np.asarray(constant, dtype=bool)
    ok = ~constant & (sxx > 0) & (syy > 0)
    r2 = np.divide(sxy * sxy, sxx * syy, out=np.zeros_like(sxx), where=ok)
    r2 = np.clip(r2, 0.0, 1.0)
    r2[~ok] = 0.0 if monomorphic == "zero" else np.nan
    r2[np.asarray(n) == 0] = np.nan
    return r2


def _iqs_from_confusion(confusion: np.ndarray) -> np.ndarray:
    """Cohen's kappa (N·A − E)/(N² − E) in exact integer arithmetic; NaN where chance is 1."""
    c = np.asarray(confusion, dtype=np.int64)
    total = c.sum(axis=(-2, -1))
    agree = np.trace(c, axis1=-2, axis2=-1)
    chance = (c.sum(axis=-1) * c.sum(axis=-2)).sum(axis=-1)
    num = (total * agree - chance).astype(np.float64)
    den = (total * total - chance).astype(np.float64)
    return np.divide(num, den, out=np.full(np.shape(den), np.nan), where=den != 0)


def _bit_counts(confusion: np.ndarray) -> dict[str, np.ndarray]:
    c = np.asarray(confusion, dtype=np.int64)
    return {name: np.einsum("...tp,tp->...", c, table)
            for name, table in (("tp", _TP), ("fp", _FP), ("fn", _FN), ("tn", _TN))}


def _prf(counts: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    tp, fp, fn = (np.asarray(counts[k], dtype=np.float64) for k in ("tp", "fp", "fn"))
    nan = np.full(np.shape(tp), np.nan)
    precision = np.divide(tp, tp + fp, out=nan.copy(), where=(tp + fp) > 0)
    recall = np.divide(tp, tp + fn, out=nan.copy(), where=(tp + fn) > 0)
    f1 = np.divide(2 * tp, 2 * tp + fp + fn, out=nan.copy(), where=(2 * tp + fp + fn) > 0)
    return {"precision": precision, "recall": recall, "f1": f1}


def _scalar_or_array(values: np.ndarray, pooled: bool) -> Any:
    return float(values) if pooled else values


# ----------------------------------------------------------------------------- public array API


def per_variant_r2(dosage: Any, truth: Any, score_mask: Any | None = None, *,
                   monomorphic: Monomorphic = "zero") -> np.ndarray:
    """Squared Pearson correlation of imputed dosage and true allele count, per variant.

    Parameters
    ----------
    dosage
        Imputed alternate-allele dosages (variants, samples).
    truth
        True allele counts (variants, samples), -1 where missing (:func:`allele_count`).
    score_mask
        True where an entry is scored; default every called entry.
    monomorphic
        ``"zero"`` (default, the calculator's NaN→0) or ``"nan"`` for variants whose scored
        truth is monomorphic or whose scored dosage is constant.

    Returns
    -------
    numpy.ndarray
        float64 (variants,); NaN for variants without scored entries.
    """
    y = np.asarray(truth)
    mask = _scored_mask(y, score_mask)
    x = np.asarray(dosage, dtype=np.float64)
    _check_complete(mask & ~np.isfinite(x), "dosage")
    s = _variant_stats(x, y, mask)
    constant = (s.min_x == s.max_x) | (s.min_y == s.max_y)
    return _r2_from_moments(s.sxx, s.syy, s.sxy, constant, s.n, monomorphic=monomorphic)


def minor_allele_flip(alt_frequency: Any) -> np.ndarray:
    """Variants scored on the other allele: True where the ALT allele frequency exceeds 0.5.

    The one rule of minor-allele coding (module docstring): pooled metrics recode dosage and
    truth as ``2 - x`` at these variants. ``alt_frequency`` is one value per variant, from the
    reference panel; NaN never flips.
    """
    return np.nan_to_num(np.asarray(alt_frequency, dtype=np.float64), nan=0.0) > 0.5


def _flip_for(truth: np.ndarray, alt_frequency: Any | None) -> np.ndarray:
    """:func:`minor_allele_flip` checked against the truth's variants; None flips nothing."""
    if alt_frequency is None:
        return np.zeros(truth.shape[0], dtype=bool)
    flip = minor_allele_flip(alt_frequency)
    if flip.shape != truth.shape[:1]:
        raise InvalidArgumentError(f"alt_frequency has shape {flip.shape}, expected ({truth.shape[0]},) "
                         "(one per variant)")
    return flip


def aggregate_r2(dosage: Any, truth: Any, score_mask: Any | None = None, *,
                 alt_frequency: Any | None = None, monomorphic: Monomorphic = "zero") -> float:
    """Squared correlation pooled over every scored (sample, variant) pair (as in BiU-Net).

    Unlike the mean of per-variant r², it includes between-variant differences in allele
    frequency. Apply it to the variants of one MAF bin to get BiU-Net's per-bin R².

    Pass ``alt_frequency`` (ALT allele frequency per variant, from the reference panel) to score
    the minor-allele dosage: at variants whose ALT frequency exceeds 0.5, dosage and truth become
    ``2 - x`` (:func:`minor_allele_flip`), so the value does not depend on which allele a file
    calls ALT and a constant allele-frequency guess cannot score by separating ALT-major from
    ALT-minor sites. :func:`score_imputation` and the evaluation harness always do this. Without
    ``alt_frequency`` the dosages are pooled as coded.
    """
    y = np.asarray(truth)
    mask = _scored_mask(y, score_mask)
    x = np.asarray(dosage, dtype=np.float64)
    _check_complete(mask & ~np.isfinite(x), "dosage")
    if not mask.any():
        return float("nan")
    stats = _variant_stats(x, y, mask).minor_coded(_flip_for(y, alt_frequency))
    scored = np.flatnonzero(stats.n > 0)
    everything = _Strata("all", ["all"], scored, np.zeros(len(scored), np.int64))
    return float(_pooled(stats, everything, monomorphic)["aggregate_r2"][0])


def genotype_confusion(imputed: Any, truth: Any, score_mask: Any | None = None, *,
                       pooled: bool = False, alt_frequency: Any | None = None) -> np.ndarray:
    """3×3 counts of (true allele count, imputed allele count) over scored entries.

    ``imputed`` is either dosages (floats, rounded by :func:`best_guess`) or best-guess allele
    counts (integers). Returns (variants, 3, 3), or (3, 3) with ``pooled=True``; rows are the
    truth, columns the imputation. With ``alt_frequency`` (per variant, from the reference
    panel) the pooled table counts minor-allele classes: classes 0 and 2 are swapped at variants
    :func:`minor_allele_flip` selects.
    """
    y = np.asarray(truth)
    mask = _scored_mask(y, score_mask)
    p = _as_class(imputed)
    _check_complete(mask & (p < 0), "genotype")
    code = y.astype(np.int64) * 3 + np.clip(p, 0, 2)
    rows = np.broadcast_to(np.arange(y.shape[0])[:, None] * 9, y.shape)
    per_variant = np.bincount((rows + code)[mask], minlength=y.shape[0] * 9).reshape(-1, 3, 3)
    if pooled:
        flip = _flip_for(y, alt_frequency)[:, None, None]
        return np.where(flip, per_variant[:, ::-1, ::-1], per_variant).sum(axis=0)
    return per_variant


def concordance(imputed: Any, truth: Any, score_mask: Any | None = None, *,
                pooled: bool = False) -> Any:
    """Fraction of scored entries whose best-guess allele count equals the truth (P0).

    ``imputed``: dosages (rounded) or best-guess allele counts. Per variant (NaN without scored
    entries) or, with ``pooled=True``, one fraction over all scored entries.
    """
    c = genotype_confusion(imputed, truth, score_mask, pooled=pooled)
    total = c.sum(axis=(-2, -1)).astype(np.float64)
    agree = np.trace(c, axis1=-2, axis2=-1).astype(np.float64)
    out = np.divide(agree, total, out=np.full(np.shape(total), np.nan), where=total > 0)
    return _scalar_or_array(out, pooled)


def iqs(imputed: Any, truth: Any, score_mask: Any | None = None, *, pooled: bool = False,
        alt_frequency: Any | None = None) -> Any:
    """Imputation quality score (P0 − Pc)/(1 − Pc), Pc from the 3×3 marginals (Cohen's kappa).

    NaN where chance agreement is 1. Per variant, or with ``pooled=True`` from the pooled table
    (minor-allele classes with ``alt_frequency``, see :func:`genotype_confusion`).
    """
    c = genotype_confusion(imputed, truth, score_mask, pooled=pooled, alt_frequency=alt_frequency)
    return _scalar_or_array(_iqs_from_confusion(c), pooled)


def allele_presence_scores(imputed: Any, truth: Any, score_mask: Any | None = None, *,
                           pooled: bool = False) -> dict[str, Any]:
    """TP/FP/FN/TN, precision, recall and F1 on allele-presence bits.

    Each call becomes two bits, [REF present, ALT present]: 0 → [1, 0], 1 → [1, 1],
    2 → [0, 1]; the best-guess bits are compared with the true bits (as the calculator does).
    Returns a dict with ``tp``, ``fp``, ``fn``, ``tn`` (integer counts) and ``precision``,
    ``recall``, ``f1`` (NaN where undefined), per variant or pooled.
    """
    c = genotype_confusion(imputed, truth, score_mask, pooled=pooled)
    counts = _bit_counts(c)
    scores: dict[str, Any] = {**counts, **_prf(counts)}
    if pooled:
        scores = {k: (int(v) if k in ("tp", "fp", "fn", "tn") else float(v)) for k, v in scores.items()}
    return scores


def f1_score(imputed: Any, truth: Any, score_mask: Any | None = None, *, pooled: bool = False) -> Any:
    """F1 on allele-presence bits (see :func:`allele_presence_scores`)."""
    return allele_presence_scores(imputed, truth, score_mask, pooled=pooled)["f1"]


def rmse(dosage: Any, truth: Any, score_mask: Any | None = None, *, pooled: bool = False) -> Any:
    """Root mean squared dosage error, per variant or pooled over scored entries."""
    y = np.asarray(truth)
    mask = _scored_mask(y, score_mask)
    x = np.asarray(dosage, dtype=np.float64)
    _check_complete(mask & ~np.isfinite(x), "dosage")
    sq = np.where(mask, x - y, 0.0) ** 2
    if pooled:
        return float(np.sqrt(sq.sum() / mask.sum())) if mask.any() else float("nan")
    n = mask.sum(axis=1)
    return np.sqrt(np.divide(sq.sum(axis=1), n, out=np.full(n.shape, np.nan), where=n > 0))


def _gt_pair(imputed_gt: Any, truth_gt: Any, score_mask: Any | None) -> tuple[np.ndarray, ...]:
    imp, tru = np.asarray(imputed_gt), np.asarray(truth_gt)
    if imp.shape != tru.shape or imp.ndim != 3 or imp.shape[-1] != 2:
        raise InvalidArgumentError(f"genotype arrays must be (variants, samples, 2) and equal in shape, got "
                         f"{imp.shape} and {tru.shape}")
    mask = _scored_mask(allele_count(tru), score_mask)
    _check_complete(mask & (allele_count(imp) < 0), "genotype")
    return imp, tru, mask


def genotype_accuracy(imputed_gt: Any, truth_gt: Any, score_mask: Any | None = None, *,
                      pooled: bool = False) -> Any:
    """Accuracy on unphased genotype classes (allele counts) of ``call_genotype`` arrays."""
    imp, tru, mask = _gt_pair(imputed_gt, truth_gt, score_mask)
    correct = mask & (allele_count(imp) == allele_count(tru))
    if pooled:
        return float(correct.sum() / mask.sum()) if mask.any() else float("nan")
    n = mask.sum(axis=1)
    return np.divide(correct.sum(axis=1), n, out=np.full(n.shape, np.nan), where=n > 0)


def phased_accuracy(imputed_gt: Any, truth_gt: Any, score_mask: Any | None = None, *,
                    pooled: bool = False) -> Any:
    """Accuracy on phased genotype classes 0|0, 0|1, 1|0, 1|1 (exact haplotype-pair match).

    For methods that output phased calls (BiU-Net's accuracy); ``call_genotype`` arrays
    (variants, samples, 2).
    """
    imp, tru, mask = _gt_pair(imputed_gt, truth_gt, score_mask)
    correct = mask & _haplotypes_equal(imp, tru)
    if pooled:
        return float(correct.sum() / mask.sum()) if mask.any() else float("nan")
    n = mask.sum(axis=1)
    return np.divide(correct.sum(axis=1), n, out=np.full(n.shape, np.nan), where=n > 0)


def phased_genotype_confusion(imputed_gt: Any, truth_gt: Any, score_mask: Any | None = None) -> np.ndarray:
    """4×4 pooled counts of phased classes [0|0, 0|1, 1|0, 1|1] (rows truth, columns imputed).

    BiU-Net's confusion-matrix analysis (its Figure S3). Biallelic: any non-zero allele is 1.
    """
    imp, tru, mask = _gt_pair(imputed_gt, truth_gt, score_mask)
    code_t = 2 * (tru[..., 0] > 0) + (tru[..., 1] > 0)
    code_i = 2 * (imp[..., 0] > 0) + (imp[..., 1] > 0)
    return np.bincount((4 * code_t + code_i)[mask], minlength=16).reshape(4, 4)


# ----------------------------------------------------------------------------- MAF bins


def _check_bins(bins: Sequence[float]) -> np.ndarray:
    edges = np.asarray(bins, dtype=np.float64)
    if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
        raise InvalidArgumentError(f"MAF bin breaks must be at least two increasing numbers, got {list(bins)}")
    return edges


def maf_bin_labels(bins: Sequence[float] = DIAS_MAF_BINS) -> list[str]:
    """Labels of R ``cut(right=FALSE, include.lowest=TRUE)``: ``[lo,hi)``, the last ``[lo,hi]``."""
    edges = _check_bins(bins)
    labels = [f"[{lo:g},{hi:g})" for lo, hi in itertools.pairwise(edges)]
    labels[-1] = labels[-1][:-1] + "]"
    return labels


def assign_maf_bins(maf: Any, bins: Sequence[float] = DIAS_MAF_BINS) -> pd.Categorical:
    """Bin MAFs like R ``cut(maf, bins, right=FALSE, include.lowest=TRUE)``.

    Intervals are closed on the left, the last also on the right; values outside the breaks
    or NaN get no bin (NaN). Returns an ordered categorical with :func:`maf_bin_labels`.
    """
    edges = _check_bins(bins)
    values = np.asarray(maf, dtype=np.float64)
    code = np.searchsorted(edges, values, side="right") - 1
    code[values == edges[-1]] = len(edges) - 2
    code[~np.isfinite(values) | (values < edges[0]) | (values > edges[-1])] = -1
    return pd.Categorical.from_codes(code, categories=maf_bin_labels(edges), ordered=True)


# ----------------------------------------------------------------------------- strata


@dataclass
class _Strata:
    """Membership pairs (variant index, group index); a variant may belong to several groups."""

    kind: str
    labels: list[str]
    variant: np.ndarray
    group: np.ndarray


def _strata_from_codes(kind: str, labels: list[str], codes: np.ndarray, keep: np.ndarray) -> _Strata:
    ok = (codes >= 0) & keep
    return _Strata(kind, labels, np.flatnonzero(ok), codes[ok].astype(np.int64))


def _tile_strata(tiles: Any, truth: xr.Dataset, keys: np.ndarray, keep: np.ndarray) -> _Strata:
    """Tile membership from a tile table, a key→tile mapping or one label (or list) per variant."""
    labels: dict[str, int] = {}
    variant_parts: list[np.ndarray] = []
    group_parts: list[np.ndarray] = []

    def add(variants: Any, label: Any) -> None:
        if label is None or (isinstance(label, float) and np.isnan(label)):
            return
        names = [label] if isinstance(label, str) or not isinstance(label, Iterable) else list(label)
        idx = np.atleast_1d(np.asarray(variants, dtype=np.int64))
        for name in names:
            variant_parts.append(idx)
            group_parts.append(np.full(len(idx), labels.setdefault(str(name), len(labels))))

    if isinstance(tiles, pd.DataFrame) and {"variant", "tile"} <= set(tiles.columns):
        # one row per (variant index, tile), as analysislib.tiling.variant_tiles
        variant = tiles["variant"].to_numpy(dtype=np.int64)
        if len(variant) and (variant.min() < 0 or variant.max() >= len(keys)):
            raise InvalidArgumentError(f"tile table: variant indices outside 0..{len(keys) - 1}")
        for name, idx in pd.Series(variant).groupby(tiles["tile"].to_numpy(), sort=False):
            add(idx.to_numpy(), name)
    elif isinstance(tiles, pd.DataFrame):
        columns = set(tiles.columns)
        names = tiles["tile"] if "tile" in columns else tiles.index
        bounds = next((pair for pair in (("start", "end"), ("first_position", "last_position"),
                                         ("first_variant", "last_variant")) if set(pair) <= columns), None)
        if bounds is None:
            raise InvalidArgumentError("tile table needs 'start'/'end' or 'first_position'/'last_position' "
                             "(1-based inclusive positions), 'first_variant'/'last_variant' "
                             "(inclusive variant indices) or 'variant'/'tile' columns")
        if bounds[0] == "first_variant":
            coordinate = np.arange(len(keys))
        else:
            coordinate = np.asarray(truth["variant_position"].values, dtype=np.int64)
        contigs = np.asarray(truth.attrs.get("contigs", []), dtype=object)
        contig_index = np.asarray(truth["variant_contig"].values)
        contig = (contigs[contig_index] if len(contigs) else contig_index).astype(str)
        lows, highs = tiles[bounds[0]].to_numpy(), tiles[bounds[1]].to_numpy()
        tile_contigs = tiles["contig"].astype(str).to_numpy() if "contig" in columns else None
        for i, name in enumerate(names):
            inside = (coordinate >= int(lows[i])) & (coordinate <= int(highs[i]))
            if tile_contigs is not None:
                inside &= contig == tile_contigs[i]
            add(np.flatnonzero(inside), name)
    elif isinstance(tiles, Mapping):
        index = pd.Index(keys).get_indexer(list(tiles))
        for v, label in zip(index, tiles.values(), strict=True):
            if v >= 0:
                add(v, label)
    else:
        per_variant = list(tiles)
        if len(per_variant) != len(keys):
            raise InvalidArgumentError(f"tiles: got {len(per_variant)} labels for {len(keys)} variants")
        for v, label in enumerate(per_variant):
            add(v, label)
    variant = np.concatenate(variant_parts) if variant_parts else np.zeros(0, np.int64)
    group = np.concatenate(group_parts) if group_parts else np.zeros(0, np.int64)
    ok = keep[variant]
    return _Strata("tile", list(labels), variant[ok], group[ok])


def _mean_se(values: np.ndarray, strata: _Strata) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, standard error (sd/sqrt(k), ddof 1) and count of non-NaN values per group."""
    k = len(strata.labels)
    v = values[strata.variant]
    ok = np.isfinite(v)
    g, v = strata.group[ok], v[ok]
    count = np.bincount(g, minlength=k).astype(np.float64)
    mean = np.divide(np.bincount(g, weights=v, minlength=k), count,
                     out=np.full(k, np.nan), where=count > 0)
    ss = np.bincount(g, weights=(v - mean[g]) ** 2, minlength=k)
    se = np.divide(np.sqrt(np.divide(ss, count - 1, out=np.full(k, np.nan), where=count > 1)),
                   np.sqrt(count), out=np.full(k, np.nan), where=count > 1)
    return mean, se, count.astype(np.int64)


def _pooled(stats: _Stats, strata: _Strata, monomorphic: Monomorphic) -> dict[str, np.ndarray]:
    """Pooled metrics per group from per-variant statistics (parallel combination of moments)."""
    k = len(strata.labels)
    v, g = strata.variant, strata.group
    n = stats.n[v].astype(np.float64)
    total = np.bincount(g, weights=n, minlength=k)
    safe = np.maximum(total, 1)
    mx = np.bincount(g, weights=n * stats.mean_x[v], minlength=k) / safe
    my = np.bincount(g, weights=n * stats.mean_y[v], minlength=k) / safe
    ddx, ddy = stats.mean_x[v] - mx[g], stats.mean_y[v] - my[g]
    sxx = np.bincount(g, weights=stats.sxx[v] + n * ddx * ddx, minlength=k)
    syy = np.bincount(g, weights=stats.syy[v] + n * ddy * ddy, minlength=k)
    sxy = np.bincount(g, weights=stats.sxy[v] + n * ddx * ddy, minlength=k)
    extremes = {}
    for name, reduce, fill in (("min_x", np.minimum, np.inf), ("max_x", np.maximum, -np.inf),
                               ("min_y", np.minimum, np.inf), ("max_y", np.maximum, -np.inf)):
        out = np.full(k, fill)
        reduce.at(out, g, getattr(stats, name)[v])
        extremes[name] = out
    constant = (extremes["min_x"] == extremes["max_x"]) | (extremes["min_y"] == extremes["max_y"])
    confusion = np.zeros((k, 3, 3), np.int64)
    np.add.at(confusion, g, stats.confusion[v])
    counts = _bit_counts(confusion)
    prf = _prf(counts)
    nan = np.full(k, np.nan)
    agree = np.trace(confusion, axis1=1, axis2=2)
    out = {
        "n": total.astype(np.int64),
        "aggregate_r2": _r2_from_moments(sxx, syy, sxy, constant, total, monomorphic=monomorphic),
        "aggregate_concordance": np.divide(agree, total, out=nan.copy(), where=total > 0),
        "aggregate_iqs": _iqs_from_confusion(confusion),
        "aggregate_f1": prf["f1"], "aggregate_precision": prf["precision"],
        "aggregate_recall": prf["recall"],
        "aggregate_rmse": np.sqrt(np.divide(np.bincount(g, weights=stats.sse[v], minlength=k), total,
                                            out=nan.copy(), where=total > 0)),
        "genotype_accuracy": np.divide(np.bincount(g, weights=stats.gt_correct[v], minlength=k),
                                       total, out=nan.copy(), where=total > 0),
        "phased_accuracy": np.divide(np.bincount(g, weights=stats.phased_correct[v], minlength=k),
                                     total, out=nan.copy(), where=total > 0),
    }
    return out


def _per_variant_metrics(stats: _Stats, monomorphic: Monomorphic) -> dict[str, np.ndarray]:
    constant = (stats.min_x == stats.max_x) | (stats.min_y == stats.max_y)
    n = stats.n.astype(np.float64)
    nan = np.full(len(n), np.nan)
    prf = _prf(_bit_counts(stats.confusion))
    return {
        "r2": _r2_from_moments(stats.sxx, stats.syy, stats.sxy, constant, stats.n,
                               monomorphic=monomorphic),
        "concordance": np.divide(np.trace(stats.confusion, axis1=1, axis2=2), n, out=nan.copy(),
                                 where=n > 0),
        "iqs": _iqs_from_confusion(stats.confusion),
        "f1": prf["f1"], "precision": prf["precision"], "recall": prf["recall"],
        "rmse": np.sqrt(np.divide(stats.sse, n, out=nan.copy(), where=n > 0)),
    }


# ----------------------------------------------------------------------------- dataset summary


def _align(truth: xr.Dataset, imputed: xr.Dataset, missing_sites: str) -> tuple[np.ndarray, np.ndarray]:
    """Index of each truth variant in ``imputed`` (-1 if absent) and imputed sample order."""
    t_samples = np.asarray(truth["sample_id"].values, dtype=str)
    i_samples = pd.Index(np.asarray(imputed["sample_id"].values, dtype=str))
    if not i_samples.is_unique:
        raise InvalidArgumentError("imputed dataset has duplicated sample ids")
    sample_index = i_samples.get_indexer(t_samples)
    if np.any(sample_index < 0):
        absent = t_samples[sample_index < 0]
        raise InvalidArgumentError(f"{len(absent)} truth samples are not in the imputed dataset "
                         f"(first: {absent[0]})")
    t_keys, i_keys = sites_key(truth), pd.Index(sites_key(imputed))
    if not i_keys.is_unique:
        dup = i_keys[i_keys.duplicated()][0]
        raise InvalidArgumentError(f"imputed dataset has duplicated sites (first: {dup})")
    variant_index = i_keys.get_indexer(t_keys)
    if missing_sites not in ("error", "skip"):
        raise InvalidArgumentError(f"missing_sites must be 'error' or 'skip', got {missing_sites!r}")
    if missing_sites == "error" and np.any(variant_index < 0):
        absent = t_keys[variant_index < 0]
        raise InvalidArgumentError(f"{len(absent)} truth variants are not in the imputed dataset (first: "
                         f"{absent[0]}); pass missing_sites='skip' to score the others")
    return variant_index, sample_index


def _per_truth_variant(values: Any, keys: np.ndarray, name: str) -> np.ndarray:
    """One float per truth variant from an array in truth order or a Series by site key."""
    if isinstance(values, pd.Series):
        return values.reindex(keys).to_numpy(dtype=np.float64)
    out = np.asarray(values.values if isinstance(values, xr.DataArray) else values, dtype=np.float64)
    if out.shape != (len(keys),):
        raise InvalidArgumentError(f"{name} has shape {out.shape}, expected ({len(keys)},) (one per truth variant)")
    return out


def _resolve_frequencies(maf: Any, alt_frequency: Any, truth: xr.Dataset,
                         keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(MAF for binning, ALT frequency for minor-allele coding) per truth variant.

    Each comes from its argument, else from the other argument, else from the truth. A MAF
    derived from an ALT frequency is rounded to 12 decimals so that, for example, 1 - 0.9 falls
    in the bin of 0.1 as the count-based MAF does.
    """
    alt = (np.asarray(alt_allele_frequency(truth).values, dtype=np.float64) if alt_frequency is None
           else _per_truth_variant(alt_frequency, keys, "alt_frequency"))
    if maf is not None:
        return _per_truth_variant(maf, keys, "maf"), alt
    if alt_frequency is not None:
        return np.round(np.minimum(alt, 1.0 - alt), 12), alt
    return np.asarray(minor_allele_frequency(truth).values, dtype=np.float64), alt


def _take(data: Any, variant_index: np.ndarray, sample_index: np.ndarray) -> np.ndarray:
    """Rows ``variant_index`` (-1: filled by row 0, masked later) and columns ``sample_index``."""
    rows = np.where(variant_index >= 0, variant_index, 0)
    lo, hi = int(rows.min()), int(rows.max()) + 1
    block = np.asarray(data[lo:hi])
    return block[rows - lo][:, sample_index]


def score_imputation(  # noqa: PLR0913 - one keyword per score stratification
    truth: xr.Dataset,
    imputed: xr.Dataset,
    score_mask: Any | None = None,
    *,
    maf: Any | None = None,
    alt_frequency: Any | None = None,
    maf_bins: Sequence[float] | None = DIAS_MAF_BINS,
    tiles: Any | None = None,
    populations: bool | str = True,
    monomorphic: Monomorphic = "zero",
    best_guess_from: Literal["dosage", "genotype"] = "dosage",
    per_variant: bool = True,
    min_maf: float = 0.0,
    missing_sites: Literal["error", "skip"] = "error",
    block_variants: int = 2048,
) -> pd.DataFrame:
    """Score an imputation against the truth: tidy rows for the results store.

    Parameters
    ----------
    truth
        True genotypes of the target samples over the full site list (``call_genotype``;
        ``sample_population`` for population rows).
    imputed
        Imputer output (``call_dosage`` and/or ``call_genotype``), matched to ``truth`` by
        :func:`~analysislib.genotype.imputer.sites_key` and ``sample_id``. Dosage comes from
        ``call_dosage`` when present, else from the allele counts of ``call_genotype``.
    score_mask
        Bool (variants, samples) over ``truth``; True where the entry is scored (hidden from the
        imputer). Default: every called entry. Entries with missing truth are never scored.
    maf
        MAF per truth variant (array in truth order, or a Series indexed by site key, for a
        reference panel's MAF). Default: from ``alt_frequency`` when given, else from the true
        genotypes (all truth samples).
    alt_frequency
        ALT allele frequency per truth variant (same forms as ``maf``), from the reference
        panel: pooled metrics are computed on minor-allele coding, flipping variants whose ALT
        frequency exceeds 0.5 (module docstring). Default: from the true genotypes. The
        evaluation harness passes the reference panel's ``maf`` and ``alt_frequency``.
    maf_bins
        Bin breaks (R ``cut(right=FALSE, include.lowest=TRUE)``); None skips MAF-bin rows.
    tiles
        Tile strata, any of: a tile table with a ``tile`` label (else the index) and bounds
        ``start``/``end`` or ``first_position``/``last_position`` (1-based inclusive positions,
        optional ``contig``) or ``first_variant``/``last_variant`` (inclusive indices into the
        truth variants), as :func:`analysislib.tiling.tile_genome` returns; a ``variant``/``tile``
        membership table (:func:`analysislib.tiling.variant_tiles`); a mapping site key → tile
        label(s); or one label (or list of labels) per truth variant. A variant in several tiles
        counts in each.
    populations
        True: rows per ``sample_population`` when present; a string names another sample
        variable; False: none.
    monomorphic
        r² of degenerate variants/strata: ``"zero"`` (calculator) or ``"nan"``.
    best_guess_from
        Genotype classes for concordance, IQS and F1: ``"dosage"`` rounds the dosage (the
        calculator), ``"genotype"`` uses the imputed ``call_genotype``.
    per_variant
        Also emit one row per scored variant and per-variant metric.
    min_maf
        Drop variants with MAF below this from every row (Dias filtered MAF >= 0.001).
    missing_sites
        Truth variants absent from ``imputed``: ``"error"``, or ``"skip"`` (not scored; a row
        ``unimputed_variants`` counts those that had scored entries, as BiU-Net reported Beagle
        on its retained SNPs).
    block_variants
        Variants processed per block (memory bound: about 100 bytes × samples per variant).

    Returns
    -------
    pandas.DataFrame
        Columns ``metric, stratum_kind, stratum, value, n`` (the results store's columns).
        ``stratum_kind`` is ``all``, ``maf_bin``, ``tile``, ``population`` or ``variant``.
        Per-variant metrics (:data:`PER_VARIANT_METRICS`) are reported per stratum as the mean
        over scored variants with ``<metric>_se`` (Dias: mean ± SE), ``n`` = variants; pooled
        metrics (:data:`POOLED_METRICS`) have ``n`` = scored calls. ``phased_accuracy`` appears
        only when truth and imputation are phased at every scored entry, ``genotype_accuracy``
        only when ``imputed`` has ``call_genotype``. Variant rows use the site key as stratum.
        Strata without scored entries are left out; a pooled value can be NaN with ``n > 0``
        when undefined (for example r² of a bin whose scored truth is all monomorphic with
        ``monomorphic="nan"``).
    """
    variables.validate(truth, ["call_genotype", "sample_id", "variant_position"])
    has_dosage, has_gt = "call_dosage" in imputed, "call_genotype" in imputed
    if not (has_dosage or has_gt):
        raise InvalidArgumentError("imputed dataset has neither call_dosage nor call_genotype")
    if best_guess_from not in ("dosage", "genotype"):
        raise InvalidArgumentError(f"best_guess_from must be 'dosage' or 'genotype', got {best_guess_from!r}")
    if best_guess_from == "genotype" and not has_gt:
        raise InvalidArgumentError("best_guess_from='genotype' needs call_genotype in the imputed dataset")
    if truth.sizes["ploidy"] != 2:
        raise InvalidArgumentError(f"scoring supports diploid calls only, truth has ploidy {truth.sizes['ploidy']}")
    variables.validate(imputed, [v for v in ("call_dosage", "call_genotype") if v in imputed])

    n_var, n_samp = truth.sizes["variants"], truth.sizes["samples"]
    keys = sites_key(truth)
    samples = np.asarray(truth["sample_id"].values, dtype=str)
    variant_index, sample_index = _align(truth, imputed, missing_sites)
    mask_all = np.ones((n_var, n_samp), bool) if score_mask is None else np.asarray(score_mask)
    if mask_all.shape != (n_var, n_samp) or mask_all.dtype != bool:
        raise InvalidArgumentError(f"score_mask must be bool with shape {(n_var, n_samp)} (truth variants, "
                         f"samples), got {mask_all.dtype} {mask_all.shape}")
    unimputed = variant_index < 0

    # Sample groups: everyone, then each population.
    groups: list[tuple[str, np.ndarray]] = [("all", np.arange(n_samp))]
    pop_var = "sample_population" if populations is True else (populations or None)
    if isinstance(pop_var, str) and (pop_var in truth or populations is not True):
        variables.validate(truth, pop_var)
        labels = np.asarray(truth[pop_var].values).astype(str)
        groups += [(p, np.flatnonzero(labels == p)) for p in dict.fromkeys(labels.tolist())]

    stats = {name: _Stats.empty(n_var) for name, _ in groups}
    truth_gt_data = truth["call_genotype"].data
    dosage_data = imputed["call_dosage"].data if has_dosage else None
    imp_gt_data = imputed["call_genotype"].data if has_gt else None
    truth_phased = truth["call_genotype_phased"].data if "call_genotype_phased" in truth else None
    imp_phased = imputed["call_genotype_phased"].data if "call_genotype_phased" in imputed else None
    unimputed_scored = 0
    for lo in range(0, n_var, max(1, int(block_variants))):
        rows = slice(lo, min(lo + int(block_variants), n_var))
        true_gt = np.asarray(truth_gt_data[rows])
        y = allele_count(true_gt)
        mask = mask_all[rows] & (y >= 0)
        unimputed_scored += int((mask & unimputed[rows, None]).any(axis=1).sum())
        mask &= ~unimputed[rows, None]
        vidx = variant_index[rows]
        if not (vidx >= 0).any():
            for name, _ in groups:
                stats[name].put(rows, _Stats.empty(rows.stop - rows.start))
            continue
        imp_gt = _take(imp_gt_data, vidx, sample_index) if has_gt else None
        x = (_take(dosage_data, vidx, sample_index).astype(np.float64) if has_dosage
             else allele_count(imp_gt).astype(np.float64))
        if not has_dosage:
            x[x < 0] = np.nan
        _check_complete(mask & ~np.isfinite(x), "dosage", keys[rows], samples)
        klass = None
        if best_guess_from == "genotype":
            klass = allele_count(imp_gt)
            _check_complete(mask & (klass < 0), "genotype", keys[rows], samples)
        phased = genotype_match = phased_match = None
        if imp_gt is not None:
            genotype_match = (klass if klass is not None else allele_count(imp_gt)) == y
            phased_match = _haplotypes_equal(imp_gt, true_gt)
            if truth_phased is not None and imp_phased is not None:
                phased = np.asarray(truth_phased[rows]) & _take(imp_phased, vidx, sample_index)

        def part(values: np.ndarray | None, cols: np.ndarray) -> np.ndarray | None:
            return None if values is None else values[:, cols]

        # Populations partition the samples: their statistics combine into the overall ones.
        block = {name: _variant_stats(
            x[:, cols], y[:, cols], mask[:, cols], imputed_class=part(klass, cols),
            genotype_match=part(genotype_match, cols), phased_match=part(phased_match, cols),
            phased=part(phased, cols)) for name, cols in groups[1:]}
        block["all"] = (_Stats.combine(list(block.values())) if block else _variant_stats(
            x, y, mask, imputed_class=klass, genotype_match=genotype_match,
            phased_match=phased_match, phased=phased))
        for name, values in block.items():
            stats[name].put(rows, values)

    maf_values, alt_values = _resolve_frequencies(maf, alt_frequency, truth, keys)
    # Minor-allele coding for pooled metrics; per-variant metrics are unchanged by it.
    stats = {name: stat.minor_coded(minor_allele_flip(alt_values)) for name, stat in stats.items()}
    keep = stats["all"].n > 0
    if min_maf > 0:
        keep &= maf_values >= min_maf
    strata = [_strata_from_codes("all", ["all"], np.zeros(n_var, np.int64), keep)]
    if maf_bins is not None:
        binned = assign_maf_bins(maf_values, maf_bins)
        strata.append(_strata_from_codes("maf_bin", list(binned.categories), binned.codes, keep))
    if tiles is not None:
        strata.append(_tile_strata(tiles, truth, keys, keep))

    pooled_names = [m for m in POOLED_METRICS
                    if (m != "genotype_accuracy" or has_gt)
                    and (m != "phased_accuracy" or (has_gt and stats["all"].phased_ok))]
    frames: list[pd.DataFrame] = []

    def emit(metric: str, kind: str, labels: Sequence[str], value: np.ndarray, n: np.ndarray) -> None:
        use = np.asarray(n) > 0
        if use.any():
            frames.append(pd.DataFrame({
                "metric": metric, "stratum_kind": kind, "stratum": np.asarray(labels, dtype=object)[use],
                "value": np.asarray(value, dtype=np.float64)[use], "n": np.asarray(n, np.int64)[use]}))

    def summarise(stat: _Stats, stratum: _Strata, kind: str, labels: Sequence[str]) -> None:
        per_var = _per_variant_metrics(stat, monomorphic)
        for metric in PER_VARIANT_METRICS:
            mean, se, count = _mean_se(per_var[metric], stratum)
            emit(metric, kind, labels, mean, count)
            emit(f"{metric}_se", kind, labels, se, np.where(count > 1, count, 0))
        pooled = _pooled(stat, stratum, monomorphic)
        for metric in pooled_names:
            emit(metric, kind, labels, pooled[metric], pooled["n"])

    for stratum in strata:
        summarise(stats["all"], stratum, stratum.kind, stratum.labels)
    for name, _ in groups[1:]:
        sub_keep = keep & (stats[name].n > 0)
        stratum = _strata_from_codes("population", [name], np.zeros(n_var, np.int64), sub_keep)
        summarise(stats[name], stratum, "population", [name])
    if per_variant:
        per_var = _per_variant_metrics(stats["all"], monomorphic)
        for metric in PER_VARIANT_METRICS:
            n = np.where(keep & np.isfinite(per_var[metric]), stats["all"].n, 0)
            emit(metric, "variant", keys, per_var[metric], n)
    if unimputed_scored:
        emit("unimputed_variants", "all", ["all"], np.array([unimputed_scored]), np.array([unimputed_scored]))
    if not frames:
        return pd.DataFrame({"metric": pd.Series(dtype=str), "stratum_kind": pd.Series(dtype=str),
                             "stratum": pd.Series(dtype=str), "value": pd.Series(dtype=np.float64),
                             "n": pd.Series(dtype=np.int64)})
    return pd.concat(frames, ignore_index=True)
