"""The one interface every genotype imputer answers, deep or HMM.

An imputer is fitted on a phased reference panel (or loaded from a trained bundle), then imputes
a target dataset. The target holds the target samples at the scenario's typed sites, with -1
where a typed genotype is missing; the result covers every reference-panel variant for those
samples and carries dosages, genotype probabilities and best-guess genotypes.

The evaluation harness (:mod:`analysislib.evaluate`), notebooks, benchmarks and dashboard speak
only to this interface.
"""

from __future__ import annotations

import abc
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from analysislib import variables
from analysislib.errors import InvalidArgumentError, NotFittedError

if TYPE_CHECKING:
    import xarray as xr

__all__ = [
    "AlleleFrequencyImputer",
    "GenotypeImputer",
    "ImputationRun",
    "TrainOnce",
    "check_imputed",
    "imputed_dataset",
    "sites_key",
    "warn_if_unphased",
]

logger = logging.getLogger(__name__)


@dataclass
class ImputationRun:
    """Cost of the last :meth:`GenotypeImputer.impute` (and fit) call.

    Attributes
    ----------
    seconds
        Wall time, including external-tool time.
    peak_memory_mb
        Peak resident memory of the process doing the work (the external tool's, for wrappers).
    details
        Anything else worth recording (tool versions, command lines, thread counts).
    """

    seconds: float = float("nan")
    peak_memory_mb: float = float("nan")
    details: dict[str, Any] = field(default_factory=dict)


def imputed_dataset(reference: xr.Dataset, target: xr.Dataset, genotype: Any, gp: Any, *,
                    phased: bool, attrs: dict[str, Any] | None = None) -> xr.Dataset:
    """An imputer's result: the reference panel's variants, the target's samples.

    ``genotype`` is ``call_genotype`` (variants, samples, ploidy) and ``gp`` the genotype
    probabilities (variants, samples, 3); the dosage is always P(het) + 2 P(hom-alt) of ``gp``, so
    the two never disagree.
    """
    from analysislib.genotype.dataset import create_genotype_dataset

    genotype = np.asarray(genotype, dtype=np.int8)
    gp = np.asarray(gp, dtype=np.float32)
    return create_genotype_dataset(
        contigs=list(reference.attrs["contigs"]),
        variant_contig=np.asarray(reference["variant_contig"].values),
        variant_position=np.asarray(reference["variant_position"].values),
        variant_allele=np.asarray(reference["variant_allele"].values),
        variant_id=np.asarray(reference["variant_id"].values) if "variant_id" in reference else None,
        sample_id=[str(s) for s in target["sample_id"].values],
        sample_population=(target["sample_population"].values if "sample_population" in target
                           else None),
        call_genotype=genotype,
        call_genotype_phased=np.full(genotype.shape[:2], phased, dtype=bool),
        call_dosage=gp[..., 1] + 2 * gp[..., 2],
        call_genotype_probability=gp,
        attrs=attrs)


class GenotypeImputer(abc.ABC):
    """Base class of genotype imputers.

    Subclasses set :attr:`name`, implement :meth:`fit` and :meth:`impute`, and fill
    :attr:`last_run` with the cost of their work. :meth:`parameters` returns what the results
    store records about the configuration.
    """

    name: str = "imputer"

    def __init__(self) -> None:
        self.last_run = ImputationRun()
        self.reference: xr.Dataset | None = None

    @abc.abstractmethod
    def fit(self, reference: xr.Dataset) -> GenotypeImputer:
        """Learn from (or remember) a phased reference panel; return ``self``."""

    @abc.abstractmethod
    def impute(self, target: xr.Dataset) -> xr.Dataset:
        """Impute ``target`` (typed sites, target samples) to every reference variant.

        Returns
        -------
        xarray.Dataset
            Genotype dataset over the reference variants (same order) and the target samples
            (same order) with ``call_dosage``, ``call_genotype_probability`` and
            ``call_genotype``. Validated by :func:`check_imputed`.
        """

    def parameters(self) -> dict[str, Any]:
        """Configuration recorded with every result (JSON-serialisable)."""
        return {}


def warn_if_unphased(genotypes: Any, phased: Any, *, model: str, where: str) -> None:
    """Log a warning when heterozygous calls are unphased, for models that read calls as phased.

    ``genotypes`` is ``(variants, samples, 2)`` (-1 missing) and ``phased`` ``(variants,
    samples)``; ``where`` names the data (a file or "the target").
    """
    gt = np.asarray(genotypes)
    het = (gt[..., 0] >= 0) & (gt[..., 1] >= 0) & (gt[..., 0] != gt[..., 1])
    unphased = int((het & ~np.asarray(phased, dtype=bool)).sum())
    if unphased:
        logger.warning("%s: %d of %d heterozygous calls of %s are unphased; %s reads them as phased "
                       "in the order given (phase them first, e.g. with Beagle)", model, unphased,
                       int(het.sum()), where, model)


def sites_key(ds: xr.Dataset) -> np.ndarray:
    """One string per variant, ``contig:position:ref:alt``, to match sites between datasets."""
    contigs = np.asarray(ds.attrs.get("contigs", []), dtype=object)
    contig = contigs[np.asarray(ds["variant_contig"].values)] if len(contigs) else ds["variant_contig"].values
    alleles = np.asarray(ds["variant_allele"].values, dtype=object)
    return np.array([
        f"{c}:{p}:{a[0]}:{a[1] if len(a) > 1 else ''}"
        for c, p, a in zip(contig, np.asarray(ds["variant_position"].values), alleles, strict=True)
    ], dtype=object)


def check_imputed(imputed: xr.Dataset, reference: xr.Dataset, target: xr.Dataset) -> xr.Dataset:
    """Check that an imputer's output covers the reference variants and the target samples.

    Raises
    ------
    ValueError
        Naming what does not line up.
    """
    variables.validate(imputed, ["call_dosage", "call_genotype_probability", "call_genotype"])
    if not np.array_equal(sites_key(imputed), sites_key(reference)):
        raise InvalidArgumentError("imputed variants differ from the reference panel's (order or alleles)")
    got = np.asarray(imputed["sample_id"].values, dtype=str)
    want = np.asarray(target["sample_id"].values, dtype=str)
    if not np.array_equal(got, want):
        raise InvalidArgumentError("imputed samples differ from the target samples (order or identity)")
    return imputed


def _genotypes_from_probabilities(gp: np.ndarray) -> np.ndarray:
    """Best-guess diploid genotypes (variants, samples, 2) from probabilities of 0/1/2 alt alleles."""
    best = gp.argmax(axis=-1)
    return np.stack([(best == 2), (best >= 1)], axis=-1).astype(np.int8)


class AlleleFrequencyImputer(GenotypeImputer):
    """Imputes every hidden genotype from reference allele frequencies under Hardy-Weinberg.

    The floor of every comparison: dosage 2p and probabilities ((1-p)^2, 2p(1-p), p^2) at
    untyped sites and at missing typed entries; observed typed genotypes are kept.
    """

    name = "allele_frequency"

    def fit(self, reference: xr.Dataset) -> AlleleFrequencyImputer:
        """Remember the reference panel and its alternate-allele frequencies."""
        from analysislib.genotype.stats import alt_allele_frequency

        variables.validate(reference, ["call_genotype", "variant_position", "variant_allele"])
        self.reference = reference
        self._frequency = np.nan_to_num(alt_allele_frequency(reference).values, nan=0.0)
        return self

    def impute(self, target: xr.Dataset) -> xr.Dataset:
        """Fill untyped sites and missing entries; see the class docstring."""
        import time

        if self.reference is None:
            raise NotFittedError("call fit(reference) before impute(target)")
        started = time.perf_counter()
        reference = self.reference
        ref_index = {key: i for i, key in enumerate(sites_key(reference))}
        target_keys = sites_key(target)
        unknown = [k for k in target_keys if k not in ref_index]
        if unknown:
            raise InvalidArgumentError(f"{len(unknown)} target sites are not in the reference panel, e.g. {unknown[0]}")
        rows = np.fromiter((ref_index[k] for k in target_keys), dtype=np.int64, count=len(target_keys))
        p = self._frequency[:, None]
        n_samples = target.sizes["samples"]
        gp = np.broadcast_to(np.stack([(1 - p) ** 2, 2 * p * (1 - p), p**2], axis=-1),
                             (len(p), n_samples, 3)).copy()
        gt = np.asarray(target["call_genotype"].values)
        called = (gt >= 0).all(axis=-1)
        observed = np.eye(3)[np.clip((gt > 0).sum(axis=-1), 0, 2)]
        gp[rows] = np.where(called[..., None], observed, gp[rows])
        genotypes = _genotypes_from_probabilities(gp)
        genotypes[rows] = np.where(called[..., None], gt, genotypes[rows])
        imputed = imputed_dataset(reference, target, genotypes, gp, phased=False)
        self.last_run = ImputationRun(seconds=time.perf_counter() - started)
        return imputed


class TrainOnce(GenotypeImputer):
    """Train a wrapped imputer once per reference panel and impute every masked target with it.

    The harness (:func:`analysislib.evaluate.evaluate`) calls ``fit`` before each scenario. With
    one split seed the reference panel is the same for every missing rate and replicate, so the
    model is trained once and reused, as the BiU-Net paper masks one test set at 5/15/25 % × 3
    seeds for one trained model. Panels are told apart by the checksum of their calls and
    positions.

    Parameters
    ----------
    inner
        The imputer to train and apply.
    population
        Train on the reference samples of this ``sample_population`` only (BiU-Net Fig. 2's
        cohort-specific models).
    name
        Method name in the results store (default: ``inner``'s).
    """

    def __init__(self, inner: GenotypeImputer, *, population: str | None = None, name: str | None = None) -> None:
        super().__init__()
        self.inner, self.population = inner, population
        self.name = name or inner.name
        self._trained_on: str | None = None

    def fit(self, reference: xr.Dataset) -> TrainOnce:
        """Fit ``inner`` on ``reference`` (or its ``population``) unless it was fitted on that panel."""
        from analysislib.results.provenance import array_checksum

        if self.population is not None:
            if "sample_population" not in reference:
                raise InvalidArgumentError(f"population={self.population!r} needs a 'sample_population' variable")
            keep = np.flatnonzero(reference["sample_population"].values.astype(str) == self.population)
            if not len(keep):
                raise InvalidArgumentError(f"no reference sample is in population {self.population!r}")
            reference = reference.isel(samples=keep)
        key = array_checksum(reference["call_genotype"].values, reference["variant_position"].values)
        if key != self._trained_on:
            self.inner.fit(reference)
            self._trained_on = key
        self.reference = reference
        return self

    def impute(self, target: xr.Dataset) -> xr.Dataset:
        """``inner``'s imputation of ``target``; :attr:`last_run` is ``inner``'s."""
        imputed = self.inner.impute(target)
        self.last_run = self.inner.last_run
        return imputed

    def parameters(self) -> dict[str, Any]:
        """``inner``'s parameters, marked as trained once per reference (and its population)."""
        extra: dict[str, Any] = {"trained_once_per_reference": True}
        if self.population is not None:
            extra["training_population"] = self.population
        return {**self.inner.parameters(), **extra}
