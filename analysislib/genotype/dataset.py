"""Construction of sgkit-style genotype datasets.

One constructor, :func:`create_genotype_dataset`, is used by the VCF reader, the simulators and
the imputers, so every genotype dataset in analysislib has the same names, dtypes and dims
(see :mod:`analysislib.variables`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from analysislib import variables

__all__ = ["create_genotype_dataset", "ploidy_of"]


def create_genotype_dataset(
    *,
    contigs: Sequence[str],
    variant_contig: Any,
    variant_position: Any,
    variant_allele: Any,
    sample_id: Sequence[str],
    call_genotype: Any,
    call_genotype_phased: Any | None = None,
    variant_id: Any | None = None,
    sample_population: Sequence[str] | None = None,
    call_dosage: Any | None = None,
    call_genotype_probability: Any | None = None,
    attrs: dict[str, Any] | None = None,
) -> xr.Dataset:
    """Build and validate a genotype dataset.

    Arrays may be NumPy or dask. ``call_genotype`` has shape ``(variants, samples, ploidy)`` with
    allele indices and -1 for missing; ``variant_allele`` has shape ``(variants, alleles)``.

    Returns
    -------
    xarray.Dataset
        With the dataset attribute ``contigs`` listing contig names, indexed by ``variant_contig``.
    """
    data_vars: dict[str, tuple[tuple[str, ...], Any]] = {
        "variant_contig": (("variants",), variant_contig),
        "variant_position": (("variants",), variant_position),
        "variant_allele": (("variants", "alleles"), variant_allele),
        "sample_id": (("samples",), np.asarray(sample_id, dtype=object)),
        "call_genotype": (("variants", "samples", "ploidy"), call_genotype),
    }
    optional = {
        "call_genotype_phased": (("variants", "samples"), call_genotype_phased),
        "variant_id": (("variants",), variant_id),
        "sample_population": (
            ("samples",), None if sample_population is None else np.asarray(sample_population, dtype=object)),
        "call_dosage": (("variants", "samples"), call_dosage),
        "call_genotype_probability": (("variants", "samples", "genotypes"), call_genotype_probability),
    }
    data_vars.update({k: v for k, v in optional.items() if v[1] is not None})
    ds = xr.Dataset(data_vars, attrs={"contigs": list(contigs), **(attrs or {})})
    ds["call_genotype"].attrs["mixed_ploidy"] = False
    variables.validate(ds, [name for name in data_vars])
    return ds


def ploidy_of(ds: xr.Dataset) -> int:
    """Number of haplotypes per sample."""
    return int(ds.sizes["ploidy"])
