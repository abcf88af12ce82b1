"""The one interface every genotype imputer answers, deep or HMM (GUIDE.md, "One interface").

An imputer is fitted on a phased reference panel (or loaded from a trained bundle), then imputes
a target dataset. The target holds the target samples at the scenario's typed sites, with -1
where a typed genotype is missing; the result covers every reference-panel variant for those
samples and carries dosages, genotype probabilities and best-guess genotypes.

The evaluation harness (:mod:`analysislib.evaluate`), notebooks, benchmarks and dashboard speak
only to this interface.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from analysislib import variables

__all__ = ["GenotypeImputer", "ImputationRun", "check_imputed", "sites_key"]


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
        raise ValueError("imputed variants differ from the reference panel's (order or alleles)")
    got = np.asarray(imputed["sample_id"].values, dtype=str)
    want = np.asarray(target["sample_id"].values, dtype=str)
    if not np.array_equal(got, want):
        raise ValueError("imputed samples differ from the target samples (order or identity)")
    return imputed
