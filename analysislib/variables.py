"""The registry of dataset variables: one place that says what every variable must look like.

Genotype datasets follow sgkit's names and dimensions (``variants``, ``samples``, ``ploidy``,
``alleles``, ``genotypes``); epigenomic datasets use ``cell``, ``assay``, ``bin`` and, when
several people are present, ``individual``. Functions call :func:`validate` on entry so a
malformed dataset fails with an error naming the variable, not deep inside a computation.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from analysislib.errors import InvalidArgumentError, VariableSpecError

__all__ = [
    "SPECS",
    "ArrayLikeSpec",
    "register_variable",
    "validate",
]


@dataclass(frozen=True)
class ArrayLikeSpec:
    """What one dataset variable must look like.

    Attributes
    ----------
    name
        Variable name in the dataset.
    kind
        Allowed NumPy dtype kinds (``"i"`` signed int, ``"u"`` unsigned, ``"f"`` float,
        ``"b"`` bool, ``"S"``/``"U"``/``"O"`` strings).
    dims
        Allowed dimension tuples; the first one is the canonical form.
    doc
        One-line description shown by :func:`describe`.
    """

    name: str
    kind: str
    dims: tuple[tuple[str, ...], ...]
    doc: str


SPECS: dict[str, ArrayLikeSpec] = {}


def register_variable(name: str, kind: str, dims: Iterable[tuple[str, ...]], doc: str) -> ArrayLikeSpec:
    """Register a variable spec and return it; a name can be registered only once."""
    if name in SPECS:
        raise InvalidArgumentError(f"variable {name!r} is already registered")
    spec = ArrayLikeSpec(name, kind, tuple(tuple(d) for d in dims), doc)
    SPECS[name] = spec
    return spec


_STR = "SUO"
# Genotypes (sgkit names).
call_genotype = register_variable(
    "call_genotype", "i", [("variants", "samples", "ploidy")],
    "Allele index per haplotype, int8; -1 marks a missing call.")
call_genotype_phased = register_variable(
    "call_genotype_phased", "b", [("variants", "samples")], "True where the call is phased.")
call_dosage = register_variable(
    "call_dosage", "f", [("variants", "samples")], "Expected alternate-allele count (0-2).")
call_genotype_probability = register_variable(
    "call_genotype_probability", "f", [("variants", "samples", "genotypes")],
    "Probabilities of hom-ref, het, hom-alt; each row sums to 1.")
variant_position = register_variable(
    "variant_position", "iu", [("variants",)], "1-based position on the contig.")
variant_contig = register_variable(
    "variant_contig", "iu", [("variants",)], "Index into the dataset attribute 'contigs'.")
variant_allele = register_variable(
    "variant_allele", _STR, [("variants", "alleles")], "Reference then alternate alleles.")
variant_genetic_position = register_variable(
    "variant_genetic_position", "f", [("variants",)],
    "Genetic map position in centimorgans (non-decreasing along the contig).")
variant_id = register_variable("variant_id", _STR, [("variants",)], "Variant identifier ('.' if none).")
sample_id = register_variable("sample_id", _STR, [("samples",)], "Sample identifier.")
sample_population = register_variable(
    "sample_population", _STR, [("samples",)], "Population label of each sample.")
# Epigenomic signal.
signal = register_variable(
    "signal", "f", [("cell", "assay", "bin"), ("individual", "cell", "assay", "bin")],
    "Track values; the attribute 'scale' says 'neglog10p' or 'arcsinh'.")
observed = register_variable(
    "observed", "b", [("cell", "assay"), ("individual", "cell", "assay")],
    "True where the (cell, assay) track was measured, False where it is to be imputed.")
bin_start = register_variable("bin_start", "iu", [("bin",)], "0-based start of each bin on its chromosome.")
bin_chrom = register_variable("bin_chrom", _STR, [("bin",)], "Chromosome of each bin.")

GENOTYPE_CORE = ("call_genotype", "variant_position", "variant_contig", "variant_allele", "sample_id")
EPIGENOME_CORE = ("signal", "observed")


def validate(ds: object, names: Iterable[str] | str) -> None:
    """Check that ``ds`` holds each named variable with an allowed dtype kind and dims.

    Parameters
    ----------
    ds
        An ``xarray.Dataset``.
    names
        Registered variable names, or one name.

    Raises
    ------
    VariableSpecError
        Naming the first offending variable and what was expected of it.
    """
    if isinstance(names, str):
        names = [names]
    for name in names:
        spec = SPECS.get(name)
        if spec is None:
            raise KeyError(f"{name!r} is not a registered variable")
        if name not in ds:  # type: ignore[operator]
            raise VariableSpecError(f"dataset has no variable {name!r} ({spec.doc})")
        var = ds[name]  # type: ignore[index]
        kind = np.dtype(var.dtype).kind
        if kind not in spec.kind:
            raise VariableSpecError(
                f"variable {name!r} has dtype {var.dtype} (kind {kind!r}); expected kind in {spec.kind!r}")
        if tuple(var.dims) not in spec.dims:
            raise VariableSpecError(
                f"variable {name!r} has dims {tuple(var.dims)}; expected one of {list(spec.dims)}")
