"""Contig names and human genome builds: ``chr22`` reads as ``22``, builds named from lengths.

A bundle records its training panel's contigs, their lengths and the build
(:mod:`~analysislib.genotype.dae.bundle`); variant mapping
(:mod:`~analysislib.genotype.dae.mapping`) matches input contigs by these names and refuses an
input whose contig lengths show another build.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["KNOWN_CONTIG_LENGTHS", "infer_genome_build", "normalise_contig"]


#: Lengths (bp) of the primary assembled chromosomes in the two human builds, to name the build
#: of a panel or input from its ``##contig`` header lines.
KNOWN_CONTIG_LENGTHS: dict[str, dict[str, int]] = {
    "GRCh37": {
        "1": 249250621, "2": 243199373, "3": 198022430, "4": 191154276, "5": 180915260,
        "6": 171115067, "7": 159138663, "8": 146364022, "9": 141213431, "10": 135534747,
        "11": 135006516, "12": 133851895, "13": 115169878, "14": 107349540, "15": 102531392,
        "16": 90354753, "17": 81195210, "18": 78077248, "19": 59128983, "20": 63025520,
        "21": 48129895, "22": 51304566, "X": 155270560, "Y": 59373566,
    },
    "GRCh38": {
        "1": 248956422, "2": 242193529, "3": 198295559, "4": 190214555, "5": 181538259,
        "6": 170805979, "7": 159345973, "8": 145138636, "9": 138394717, "10": 133797422,
        "11": 135086622, "12": 133275309, "13": 114364328, "14": 107043718, "15": 101991189,
        "16": 90338345, "17": 83257441, "18": 80373285, "19": 58617616, "20": 64444167,
        "21": 46709983, "22": 50818468, "X": 156040895, "Y": 57227415,
    },
}


def normalise_contig(name: str) -> str:
    """Contig name without a ``chr`` prefix, upper-case, with ``M`` for ``MT``: ``chr22`` -> ``22``."""
    text = str(name).strip()
    if text[:3].lower() == "chr":
        text = text[3:]
    text = text.upper()
    return "M" if text == "MT" else text


def infer_genome_build(contigs: Sequence[str], lengths: Sequence[int | None] | None) -> str | None:
    """Name the human build (``GRCh37`` / ``GRCh38``) from contig lengths, or None if unknown.

    Only chromosomes 1-22, X and Y with a known length vote; the build is returned when every
    vote agrees.
    """
    if lengths is None:
        return None
    votes = set()
    for name, length in zip(contigs, lengths, strict=False):
        if length is None:
            continue
        key = normalise_contig(name)
        matches = {build for build, table in KNOWN_CONTIG_LENGTHS.items() if table.get(key) == int(length)}
        known = any(key in table for table in KNOWN_CONTIG_LENGTHS.values())
        if known:
            votes.add(next(iter(matches)) if len(matches) == 1 else "other")
    return next(iter(votes)) if len(votes) == 1 and "other" not in votes else None


def _contig_names(ds: xr.Dataset) -> np.ndarray:
    """Contig name of every variant."""
    contigs = np.asarray(ds.attrs.get("contigs", []), dtype=object)
    codes = np.asarray(ds["variant_contig"].values)
    return contigs[codes] if len(contigs) else codes.astype(str).astype(object)


def _contig_length_map(ds: xr.Dataset) -> dict[str, int]:
    lengths = ds.attrs.get("contig_lengths")
    if lengths is None:
        return {}
    return {str(c): int(n) for c, n in zip(ds.attrs.get("contigs", []), lengths, strict=False)
            if n is not None}
