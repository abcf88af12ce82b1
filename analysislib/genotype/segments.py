"""Phased encoding, overlapping segments, positional channel, HDF5 storage, reassembly and QC.

Follows the BiU-Net paper (Methods 5.2 "Data preprocessing": quality control and segmentation;
5.3 "Model": the positional channel). The authors' repository (``learnslowly/BiU-Net``) holds
only the model code; their segmentation, positional-channel and reassembly code is not public,
so everything here follows the paper's text; each choice the text leaves open is stated where it
is made:

* **Phased encoding** (:data:`MISSING` 0, :data:`HOM_REF` 1 for 0|0, :data:`HET_REF_ALT` 2 for
  0|1, :data:`HET_ALT_REF` 3 for 1|0, :data:`HOM_ALT` 4 for 1|1, :data:`PAD` 5). The paper names
  the two heterozygous phases "A|a, a|A as 2 and 3"; we read A|a as REF|ALT (the order of the
  same author's genobert tokens, ``learnslowly/genobert``). A call with any missing allele is
  missing. Unphased calls are encoded in their stored allele order (the paper phases every
  cohort first).
* **Segmentation** (:class:`SegmentLayout`): windows of ``segment_length`` SNPs (128) starting
  every ``segment_length - overlap`` SNPs (overlap 16), cut by SNP index as in genobert's
  ``compute_global_segments``; the last window is padded with :data:`PAD` (never truncated, so
  every segment has the same length). The number of segments is the smallest that covers all
  SNPs. Segmentation is per contig: one dataset must hold one contig.
* **Positional channel** (:func:`positional_channel`): the paper adds "a min-max normalized
  positional channel per segment". Default ``normalise="segment"``: each segment's coordinates
  are mapped to [0, 1] by that segment's own minimum and maximum; ``normalise="global"`` uses the
  contig's minimum and maximum instead (a segment then also says where it lies). Coordinates
  are bp positions or, with ``position="genetic"``, ``variant_genetic_position`` (cM; the
  authors' code calls it the "cM channel"). A segment whose coordinates are all equal gets 0.
  Padding columns get 0.
* **HDF5 storage** (:func:`write_segments`, :func:`segment_to_hdf5`, :func:`read_segments`,
  :func:`iter_segment_batches`): tokens are stored "transposed (SNPs as columns)", one row per
  (sample, segment) in sample-major order, so full and batch-wise loading keep the sample and
  segment order. Files are written atomically.
* **Reassembly** (:func:`reassemble_probabilities`): "Overlaps are resolved by selecting the
  highest Softmax logits across segments": for each (sample, SNP) the prediction of the
  covering segment whose largest class probability is highest is kept whole; ties go to the
  earlier segment. :func:`reassemble_tokens` inverts :func:`segment_codes` exactly.
* **QC** (:func:`qc_split`): biallelic SNPs only (duplicated positions removed, first kept);
  samples with more than 5% missing calls removed; SNPs with any missing call removed; 8:1:1
  train/validation/test split stratified by population
  (:func:`~analysislib.genotype.masking.split_train_val_test`; the paper also stratifies by sex,
  which our datasets do not record); then HWE (exact test, Wigginton et al. 2005, keep
  p > 1e-6) and MAF (keep MAF >= 0.1%) filters computed per split. The paper applies them "on
  each split independently" and keeps the SNPs shared by all subsets (``decide="all"``). By
  default (``decide="train"``) the training split's filters decide for every split, so nothing
  about the held-out genotypes (for example a test-monomorphic SNP) shapes the SNP set.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import xarray as xr

from analysislib import variables
from analysislib.errors import InputFormatError, InvalidArgumentError
from analysislib.io.atomic import atomic_output

__all__ = [
    "GENOTYPE_CODES",
    "HET_ALT_REF",
    "HET_REF_ALT",
    "HOM_ALT",
    "HOM_REF",
    "MISSING",
    "N_CLASSES",
    "PAD",
    "SEGMENTS_FORMAT",
    "VOCAB_SIZE",
    "QCResult",
    "SegmentBatch",
    "SegmentLayout",
    "SegmentedGenotypes",
    "biallelic_snp_mask",
    "code_dosage",
    "decode_phased",
    "duplicate_position_mask",
    "encode_dataset",
    "encode_phased",
    "genotypes_to_dataset",
    "haplotype_probabilities_to_phased",
    "haplotype_tokens",
    "hwe_exact_pvalues",
    "hwe_pvalues",
    "iter_segment_batches",
    "positional_channel",
    "qc_split",
    "read_segments",
    "reassemble_probabilities",
    "reassemble_tokens",
    "segment_codes",
    "segment_dataset",
    "segment_to_hdf5",
    "variant_coordinates",
    "variant_qc_mask",
    "write_segments",
]

MISSING = 0
HOM_REF = 1
HET_REF_ALT = 2
HET_ALT_REF = 3
HOM_ALT = 4
PAD = 5
#: Number of token values (0-5) seen by the models' one-hot input.
VOCAB_SIZE = 6
#: The predicted classes, in model output order: 0|0, 0|1, 1|0, 1|1.
GENOTYPE_CODES: tuple[int, ...] = (HOM_REF, HET_REF_ALT, HET_ALT_REF, HOM_ALT)
#: Number of predicted classes: the models' output channels.
N_CLASSES = len(GENOTYPE_CODES)
SEGMENTS_FORMAT = "analysislib-biunet-segments/1"

# code -> alternate-allele dosage (NaN for missing and padding)
_DOSAGE = np.array([np.nan, 0.0, 1.0, 1.0, 2.0, np.nan])
# code -> (allele 1, allele 2); missing and padding decode to -1
_ALLELES = np.array([[-1, -1], [0, 0], [0, 1], [1, 0], [1, 1], [-1, -1]], dtype=np.int8)
_BASES = frozenset("ACGT")

PositionKind = Literal["physical", "genetic"]
Normalise = Literal["segment", "global"]


# ----------------------------------------------------------------------------- encoding


def encode_phased(call_genotype: Any, *, variant_names: Sequence[str] | None = None) -> np.ndarray:
    """Phased genotype codes (samples, variants) from ``call_genotype`` (variants, samples, 2).

    Parameters
    ----------
    call_genotype
        Allele indices, -1 missing; only 0 and 1 are allowed (biallelic).
    variant_names
        Names used in the error for a non-biallelic call (default: the variant index).

    Returns
    -------
    numpy.ndarray
        uint8 codes: 0 missing, 1 0|0, 2 0|1, 3 1|0, 4 1|1.
    """
    gt = np.asarray(call_genotype)
    if gt.ndim != 3 or gt.shape[2] != 2:
        raise InvalidArgumentError(f"expected diploid call_genotype (variants, samples, 2), got shape {gt.shape}")
    bad = (gt > 1).any(axis=(1, 2))
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        name = variant_names[first] if variant_names is not None else f"variant {first}"
        raise InvalidArgumentError(f"{name}: allele index above 1; the phased encoding needs biallelic "
                         f"variants ({int(bad.sum())} offending variants; run qc_split first)")
    a, b = gt[..., 0], gt[..., 1]
    codes = np.where(a == b, 1 + 3 * a.clip(0), np.where(a < b, HET_REF_ALT, HET_ALT_REF))
    codes = np.where((a < 0) | (b < 0), MISSING, codes).astype(np.uint8)
    return np.ascontiguousarray(codes.T)


def decode_phased(codes: Any) -> np.ndarray:
    """``call_genotype`` (variants, samples, 2) int8 from codes (samples, variants).

    Missing (0) and padding (5) decode to -1.
    """
    c = np.asarray(codes)
    if c.ndim != 2:
        raise InvalidArgumentError(f"expected codes (samples, variants), got shape {c.shape}")
    if c.size and (c.min() < 0 or c.max() > PAD):
        raise InvalidArgumentError(f"codes must lie in 0..{PAD}, found {int(c.min())}..{int(c.max())}")
    return np.ascontiguousarray(_ALLELES[c.astype(np.intp)].transpose(1, 0, 2))


def code_dosage(codes: Any) -> np.ndarray:
    """Alternate-allele dosage of each code (0|0 -> 0, hets -> 1, 1|1 -> 2; NaN for 0 and 5)."""
    return _DOSAGE[np.asarray(codes).astype(np.intp)]


def _variant_names(ds: xr.Dataset) -> list[str]:
    if "variant_id" in ds:
        return [str(v) for v in np.asarray(ds["variant_id"].values)]
    return [f"position {p}" for p in np.asarray(ds["variant_position"].values)]


def encode_dataset(ds: xr.Dataset, samples: slice | np.ndarray | None = None) -> np.ndarray:
    """Phased codes (samples, variants) of a genotype dataset (optionally a subset of samples).

    Dask-backed genotypes are computed for the selected samples only.
    """
    variables.validate(ds, "call_genotype")
    gt = ds["call_genotype"]
    if samples is not None:
        gt = gt.isel(samples=samples)
    return encode_phased(np.asarray(gt.values), variant_names=_variant_names(ds))


def genotypes_to_dataset(codes: Any, like: xr.Dataset) -> xr.Dataset:
    """A copy of ``like`` whose ``call_genotype`` is decoded from ``codes`` (samples, variants).

    ``call_genotype_phased`` is set True for called entries; per-call dosages and probabilities
    of ``like`` are dropped (they would no longer match).
    """
    gt = decode_phased(codes)
    if gt.shape[:2] != (like.sizes["variants"], like.sizes["samples"]):
        raise InvalidArgumentError(f"codes cover {gt.shape[1]} samples x {gt.shape[0]} variants, the dataset "
                         f"{like.sizes['samples']} x {like.sizes['variants']}")
    out = like.drop_vars([v for v in ("call_dosage", "call_genotype_probability") if v in like])
    out = out.copy()
    out["call_genotype"] = (("variants", "samples", "ploidy"), gt, like["call_genotype"].attrs)
    out["call_genotype_phased"] = (("variants", "samples"), (gt >= 0).all(axis=2))
    return out


# ----------------------------------------------------------------------------- segmentation


@dataclass(frozen=True)
class SegmentLayout:
    """Where overlapping fixed-length segments lie along ``n_variants`` SNPs.

    Segment ``k`` covers SNP indices ``k * stride ... k * stride + segment_length - 1`` with
    ``stride = segment_length - overlap``; indices past the last SNP are padding.

    Parameters
    ----------
    n_variants
        SNPs on the contig.
    segment_length
        SNPs per segment (128 in the paper).
    overlap
        SNPs shared by consecutive segments (16 in the paper; 64 for the SGDP HLA region).
    """

    n_variants: int
    segment_length: int = 128
    overlap: int = 16

    def __post_init__(self) -> None:
        if int(self.n_variants) != self.n_variants or self.n_variants < 1:
            raise InvalidArgumentError(f"n_variants must be a positive integer, got {self.n_variants!r}")
        if int(self.segment_length) != self.segment_length or self.segment_length < 1:
            raise InvalidArgumentError(f"segment_length must be a positive integer, got {self.segment_length!r}")
        if int(self.overlap) != self.overlap or not 0 <= self.overlap < self.segment_length:
            raise InvalidArgumentError(f"overlap must be an integer in [0, segment_length), got {self.overlap!r}")

    @property
    def stride(self) -> int:
        """SNPs between the starts of consecutive segments."""
        return self.segment_length - self.overlap

    @property
    def n_segments(self) -> int:
        """Smallest number of segments covering every SNP."""
        rest = max(0, self.n_variants - self.segment_length)
        return 1 + -(-rest // self.stride)

    @property
    def starts(self) -> np.ndarray:
        """Index of the first SNP of each segment."""
        return np.arange(self.n_segments, dtype=np.int64) * self.stride

    def index(self) -> np.ndarray:
        """SNP index of every segment column (n_segments, segment_length); -1 for padding."""
        idx = self.starts[:, None] + np.arange(self.segment_length, dtype=np.int64)
        return np.where(idx < self.n_variants, idx, -1)

    @property
    def n_padding(self) -> int:
        """Padding columns in the last segment."""
        return int(self.starts[-1] + self.segment_length - self.n_variants)

    def to_dict(self) -> dict[str, int]:
        """JSON-serialisable form."""
        return {"n_variants": int(self.n_variants), "segment_length": int(self.segment_length),
                "overlap": int(self.overlap)}


def segment_codes(codes: Any, layout: SegmentLayout) -> np.ndarray:
    """Cut codes (samples, variants) into segments (samples, n_segments, segment_length).

    Columns past the last SNP hold :data:`PAD`.
    """
    c = np.asarray(codes)
    if c.ndim != 2 or c.shape[1] != layout.n_variants:
        raise InvalidArgumentError(f"expected codes (samples, {layout.n_variants}), got shape {c.shape}")
    idx = layout.index()
    out = c[:, np.clip(idx, 0, None)]
    out[:, idx < 0] = PAD
    return out.astype(np.uint8, copy=False)


# phased code -> the codes of its two haplotypes, each written as the homozygous genotype h|h
_HAPLOTYPE_CODES = np.array([[MISSING, MISSING], [HOM_REF, HOM_REF], [HOM_REF, HOM_ALT],
                             [HOM_ALT, HOM_REF], [HOM_ALT, HOM_ALT], [PAD, PAD]], dtype=np.uint8)


def haplotype_tokens(tokens: Any) -> np.ndarray:
    """Each sample's two haplotypes as two rows of homozygous codes.

    Row ``2 i`` of the result is the first haplotype of sample ``i`` (allele ``a`` written as the
    genotype ``a|a``), row ``2 i + 1`` the second; missing and padding stay as they are. The
    segment models run on these rows unchanged (same tokens, prior and loss) when trained with
    ``unit="haplotype"`` (:mod:`analysislib.genotype.unet`);
    :func:`haplotype_probabilities_to_phased` pairs their outputs up again.

    Parameters
    ----------
    tokens
        uint8 codes ``(samples, ...)``.

    Returns
    -------
    numpy.ndarray
        uint8 ``(2 * samples, ...)``.
    """
    t = np.asarray(tokens)
    if t.size and t.max() > PAD:
        raise InvalidArgumentError(f"token values must be 0-{PAD}, found {int(t.max())}")
    pairs = _HAPLOTYPE_CODES[t]  # (samples, ..., 2)
    return np.moveaxis(pairs, -1, 1).reshape(2 * t.shape[0], *t.shape[1:])


def haplotype_probabilities_to_phased(probabilities: Any) -> np.ndarray:
    """Phased-genotype probabilities of samples from those of their haplotype rows.

    Parameters
    ----------
    probabilities
        ``(2 * samples, ..., 4)`` class probabilities (0|0, 0|1, 1|0, 1|1) of the rows of
        :func:`haplotype_tokens`. A haplotype's ALT probability is ``P(1|1) / (P(0|0) +
        P(1|1))``: it was presented as a homozygous genotype, so the heterozygous classes,
        never a training target, are left out.

    Returns
    -------
    numpy.ndarray
        ``(samples, ..., 4)``: ``P(a|b) = P(first = a) P(second = b)``, the two haplotypes
        taken as independent given their contexts.
    """
    p = np.asarray(probabilities)
    if p.shape[0] % 2 or p.shape[-1] != 4:
        raise InvalidArgumentError(f"expected (2 * samples, ..., 4) probabilities, got shape {p.shape}")
    hom = p[..., 0] + p[..., 3]
    alt = np.divide(p[..., 3], hom, out=np.full(hom.shape, 0.5, dtype=p.dtype), where=hom > 0)
    first, second = alt[0::2], alt[1::2]
    return np.stack([(1 - first) * (1 - second), (1 - first) * second, first * (1 - second),
                     first * second], axis=-1).astype(p.dtype, copy=False)


def _covering_groups(layout: SegmentLayout) -> list[np.ndarray]:
    """Segments split into groups whose members do not overlap (every ``m``-th segment)."""
    m = -(-layout.segment_length // layout.stride)
    return [np.arange(g, layout.n_segments, m) for g in range(min(m, layout.n_segments))]


def reassemble_tokens(tokens: Any, layout: SegmentLayout) -> np.ndarray:
    """Codes (samples, variants) from segments (samples, n_segments, segment_length).

    Each SNP is read from the first segment that covers it; the inverse of
    :func:`segment_codes`.
    """
    t = np.asarray(tokens)
    want = (layout.n_segments, layout.segment_length)
    if t.ndim != 3 or t.shape[1:] != want:
        raise InvalidArgumentError(f"expected tokens (samples, {want[0]}, {want[1]}), got shape {t.shape}")
    out = np.empty((t.shape[0], layout.n_variants), dtype=t.dtype)
    idx = layout.index()
    for group in reversed(_covering_groups(layout)):  # earlier segments written last win
        cols = idx[group]
        valid = cols >= 0
        out[:, cols[valid]] = t[:, group][:, valid]
    return out


def reassemble_probabilities(
    probabilities: Any, layout: SegmentLayout, *, return_source: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Full-length class probabilities from per-segment softmax outputs.

    Parameters
    ----------
    probabilities
        (samples, n_segments, segment_length, classes) softmax outputs.
    layout
        The segmentation used.
    return_source
        Also return, per (sample, SNP), the segment the prediction came from.

    Returns
    -------
    numpy.ndarray or tuple
        (samples, n_variants, classes): for each entry, the whole probability vector of the
        covering segment whose largest probability is highest (ties: the earlier segment); and
        optionally the int64 source segments (samples, n_variants).
    """
    p = np.asarray(probabilities)
    want = (layout.n_segments, layout.segment_length)
    if p.ndim != 4 or p.shape[1:3] != want:
        raise InvalidArgumentError(f"expected probabilities (samples, {want[0]}, {want[1]}, classes), "
                         f"got shape {p.shape}")
    n, k = p.shape[0], p.shape[3]
    out = np.zeros((n, layout.n_variants, k), dtype=p.dtype)
    best = np.full((n, layout.n_variants), -np.inf)
    source = np.full((n, layout.n_variants), -1, dtype=np.int64)
    idx = layout.index()
    for group in _covering_groups(layout):  # within a group no two segments share a SNP
        cols = idx[group]
        valid = cols >= 0
        flat = cols[valid]
        cand = p[:, group][:, valid]  # (samples, covered, classes)
        conf = cand.max(axis=-1)
        seg = np.broadcast_to(group[:, None], cols.shape)[valid]
        # strictly higher wins; on ties the earlier segment wins
        current = best[:, flat]
        earlier = seg[None, :] < source[:, flat]
        take = (conf > current) | ((conf == current) & earlier)
        rows, where = np.nonzero(take)
        out[rows, flat[where]] = cand[rows, where]
        best[rows, flat[where]] = conf[rows, where]
        source[rows, flat[where]] = seg[where]
    return (out, source) if return_source else out


# ----------------------------------------------------------------------------- positions


def variant_coordinates(ds: xr.Dataset, position: PositionKind = "physical") -> np.ndarray:
    """Per-variant coordinate: bp (``variant_position``) or cM (``variant_genetic_position``)."""
    if position == "physical":
        variables.validate(ds, "variant_position")
        return np.asarray(ds["variant_position"].values, dtype=np.float64)
    if position == "genetic":
        if "variant_genetic_position" not in ds:
            raise InvalidArgumentError("position='genetic' needs the variable variant_genetic_position (cM); "
                             "the dataset has none (use position='physical')")
        return np.asarray(ds["variant_genetic_position"].values, dtype=np.float64)
    raise InvalidArgumentError(f"position must be 'physical' or 'genetic', got {position!r}")


def positional_channel(coordinates: Any, layout: SegmentLayout,
                       normalise: Normalise = "segment") -> np.ndarray:
    """Min-max normalised coordinates per segment column (n_segments, segment_length), float32.

    ``"segment"``: each segment scaled by its own min and max; ``"global"``: by the contig's.
    Constant ranges give 0; padding columns give 0.
    """
    x = np.asarray(coordinates, dtype=np.float64)
    if x.shape != (layout.n_variants,):
        raise InvalidArgumentError(f"expected {layout.n_variants} coordinates, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise InvalidArgumentError(f"coordinates must be finite; variant {int(np.flatnonzero(~np.isfinite(x))[0])} is not")
    idx = layout.index()
    valid = idx >= 0
    values = np.where(valid, x[np.clip(idx, 0, None)], np.nan)
    if normalise == "segment":
        lo = np.nanmin(values, axis=1, keepdims=True)
        hi = np.nanmax(values, axis=1, keepdims=True)
    elif normalise == "global":
        lo, hi = np.full((1, 1), x.min()), np.full((1, 1), x.max())
    else:
        raise InvalidArgumentError(f"normalise must be 'segment' or 'global', got {normalise!r}")
    span = hi - lo
    scaled = np.where(span > 0, (values - lo) / np.where(span > 0, span, 1.0), 0.0)
    return np.where(valid, scaled, 0.0).astype(np.float32)


# ----------------------------------------------------------------------------- containers


@dataclass
class SegmentedGenotypes:
    """Segmented phased genotypes of one contig, ready for training or inference.

    Attributes
    ----------
    tokens
        uint8 (samples, n_segments, segment_length) codes, :data:`PAD` past the last SNP.
    positional
        float32 (n_segments, segment_length) positional channel (shared by all samples).
    layout
        The segmentation.
    sample_id
        Sample identifiers, in order.
    variant_position
        bp position of each SNP.
    contig
        Contig name.
    position, normalise
        How :attr:`positional` was computed.
    """

    tokens: np.ndarray
    positional: np.ndarray
    layout: SegmentLayout
    sample_id: np.ndarray
    variant_position: np.ndarray
    contig: str = ""
    position: str = "physical"
    normalise: str = "segment"
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        shape = (len(self.sample_id), self.layout.n_segments, self.layout.segment_length)
        if self.tokens.shape != shape:
            raise InvalidArgumentError(f"tokens have shape {self.tokens.shape}, the layout needs {shape}")
        if self.positional.shape != shape[1:]:
            raise InvalidArgumentError(f"positional has shape {self.positional.shape}, expected {shape[1:]}")
        if len(self.variant_position) != self.layout.n_variants:
            raise InvalidArgumentError("variant_position does not match the layout's n_variants")

    @property
    def n_samples(self) -> int:
        """Number of samples."""
        return int(self.tokens.shape[0])

    @property
    def n_segments(self) -> int:
        """Segments per sample."""
        return self.layout.n_segments

    def __len__(self) -> int:
        return self.n_samples * self.n_segments

    def codes(self) -> np.ndarray:
        """Full-length codes (samples, variants) (:func:`reassemble_tokens`)."""
        return reassemble_tokens(self.tokens, self.layout)


def _single_contig(ds: xr.Dataset) -> str:
    codes = np.unique(np.asarray(ds["variant_contig"].values))
    contigs = list(ds.attrs.get("contigs", []))
    names = [str(contigs[c]) if c < len(contigs) else str(c) for c in codes]
    if len(codes) != 1:
        raise InvalidArgumentError(f"segmentation works on one contig at a time; the dataset holds "
                         f"{', '.join(names)} (select one with ds.isel(variants=...))")
    return names[0]


def _check_sorted(coordinates: np.ndarray, ds: xr.Dataset) -> None:
    step = np.diff(coordinates)
    if (step < 0).any():
        i = int(np.flatnonzero(step < 0)[0]) + 1
        raise InvalidArgumentError(f"variants must be sorted by position; {_variant_names(ds)[i]} comes after "
                         "a later position")


def segment_dataset(
    ds: xr.Dataset,
    *,
    segment_length: int = 128,
    overlap: int = 16,
    position: PositionKind = "physical",
    normalise: Normalise = "segment",
) -> SegmentedGenotypes:
    """Encode and segment a one-contig genotype dataset in memory.

    Parameters
    ----------
    ds
        Genotype dataset (biallelic, sorted by position, one contig).
    segment_length, overlap
        See :class:`SegmentLayout`.
    position, normalise
        See :func:`variant_coordinates` and :func:`positional_channel`.

    Returns
    -------
    SegmentedGenotypes
    """
    contig = _single_contig(ds)
    layout = SegmentLayout(ds.sizes["variants"], segment_length, overlap)
    coords = variant_coordinates(ds, position)
    _check_sorted(np.asarray(ds["variant_position"].values), ds)
    tokens = segment_codes(encode_dataset(ds), layout)
    return SegmentedGenotypes(
        tokens=tokens, positional=positional_channel(coords, layout, normalise), layout=layout,
        sample_id=np.asarray(ds["sample_id"].values).astype(str),
        variant_position=np.asarray(ds["variant_position"].values, dtype=np.int64),
        contig=contig, position=position, normalise=normalise)


# ----------------------------------------------------------------------------- HDF5


def _create(handle: Any, layout: SegmentLayout, positional: np.ndarray, sample_id: np.ndarray,
            variant_position: np.ndarray, *, contig: str, position: str, normalise: str,
            chunk_rows: int) -> Any:
    import h5py

    handle.attrs["format"] = SEGMENTS_FORMAT
    for key, value in layout.to_dict().items():
        handle.attrs[key] = value
    handle.attrs.update({"contig": contig, "position": position, "normalise": normalise,
                         "n_samples": len(sample_id)})
    rows = len(sample_id) * layout.n_segments
    tokens = handle.create_dataset(
        "tokens", shape=(rows, layout.segment_length), dtype=np.uint8,
        chunks=(max(1, min(chunk_rows, rows)), layout.segment_length), compression="gzip",
        compression_opts=1)
    handle.create_dataset("positional", data=positional.astype(np.float32))
    handle.create_dataset("segment_start", data=layout.starts)
    handle.create_dataset("variant_position", data=np.asarray(variant_position, dtype=np.int64))
    handle.create_dataset("sample_id", data=np.asarray(sample_id, dtype=object),
                          dtype=h5py.string_dtype())
    return tokens


def write_segments(path: str | os.PathLike[str], segmented: SegmentedGenotypes) -> Path:
    """Write segments to HDF5 atomically (rows = (sample, segment) pairs, sample-major).

    Layout: ``tokens`` uint8 (samples * n_segments, segment_length), ``positional`` float32
    (n_segments, segment_length), ``segment_start``, ``variant_position``, ``sample_id``;
    attributes ``format``, ``n_variants``, ``segment_length``, ``overlap``, ``contig``,
    ``position``, ``normalise``, ``n_samples``.
    """
    import h5py

    path = Path(path)
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as handle:
        tokens = _create(handle, segmented.layout, segmented.positional, segmented.sample_id,
                         segmented.variant_position, contig=segmented.contig,
                         position=segmented.position, normalise=segmented.normalise,
                         chunk_rows=4096)
        tokens[...] = segmented.tokens.reshape(-1, segmented.layout.segment_length)
    return path


def segment_to_hdf5(
    ds: xr.Dataset,
    path: str | os.PathLike[str],
    *,
    segment_length: int = 128,
    overlap: int = 16,
    position: PositionKind = "physical",
    normalise: Normalise = "segment",
    sample_chunk: int = 256,
    progress: bool = False,
) -> Path:
    """Encode, segment and write a dataset to HDF5 ``sample_chunk`` samples at a time.

    The paper's pipeline ("The samples were chunked for memory efficiency and then
    segmented"): memory stays bounded by one chunk of samples; the file equals
    ``write_segments(path, segment_dataset(ds, ...))``.
    """
    import h5py
    from tqdm.auto import tqdm

    if sample_chunk < 1:
        raise InvalidArgumentError("sample_chunk must be at least 1")
    contig = _single_contig(ds)
    layout = SegmentLayout(ds.sizes["variants"], segment_length, overlap)
    coords = variant_coordinates(ds, position)
    _check_sorted(np.asarray(ds["variant_position"].values), ds)
    positional = positional_channel(coords, layout, normalise)
    sample_id = np.asarray(ds["sample_id"].values).astype(str)
    n = len(sample_id)
    path = Path(path)
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as handle:
        tokens = _create(handle, layout, positional, sample_id,
                         np.asarray(ds["variant_position"].values), contig=contig,
                         position=position, normalise=normalise, chunk_rows=4096)
        for lo in tqdm(range(0, n, sample_chunk), desc="segmenting", unit="chunk", disable=not progress):
            hi = min(n, lo + sample_chunk)
            seg = segment_codes(encode_dataset(ds, slice(lo, hi)), layout)
            tokens[lo * layout.n_segments:hi * layout.n_segments] = seg.reshape(-1, segment_length)
    return path


def _open_checked(path: Path) -> Any:
    import h5py

    try:
        handle = h5py.File(path, "r")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such segment file") from None
    except OSError as err:
        raise InputFormatError(path, f"not a readable HDF5 file ({err})") from None
    found = handle.attrs.get("format")
    if found != SEGMENTS_FORMAT:
        handle.close()
        raise InputFormatError(path, f"not a segment file (format attribute {found!r}, "
                               f"expected {SEGMENTS_FORMAT!r})")
    missing = [k for k in ("tokens", "positional", "sample_id", "variant_position") if k not in handle]
    if missing:
        handle.close()
        raise InputFormatError(path, f"incomplete segment file: missing {', '.join(missing)}")
    return handle


def _layout_of(handle: Any) -> SegmentLayout:
    return SegmentLayout(int(handle.attrs["n_variants"]), int(handle.attrs["segment_length"]),
                         int(handle.attrs["overlap"]))


def read_segments(path: str | os.PathLike[str]) -> SegmentedGenotypes:
    """Load a whole segment file (full loading)."""
    path = Path(path)
    with _open_checked(path) as handle:
        layout = _layout_of(handle)
        sample_id = np.asarray(handle["sample_id"].asstr()[...]).astype(str)
        tokens = handle["tokens"][...].reshape(len(sample_id), layout.n_segments, layout.segment_length)
        return SegmentedGenotypes(
            tokens=tokens, positional=handle["positional"][...], layout=layout,
            sample_id=sample_id, variant_position=handle["variant_position"][...],
            contig=str(handle.attrs["contig"]), position=str(handle.attrs["position"]),
            normalise=str(handle.attrs["normalise"]))


@dataclass
class SegmentBatch:
    """A batch of rows of a segment file, in file order.

    Attributes
    ----------
    tokens
        uint8 (batch, segment_length).
    positional
        float32 (batch, segment_length), the row's segment channel.
    sample_index, segment_index
        int64 (batch,): which sample and segment each row is.
    """

    tokens: np.ndarray
    positional: np.ndarray
    sample_index: np.ndarray
    segment_index: np.ndarray


def iter_segment_batches(path: str | os.PathLike[str], batch_size: int = 1024) -> Iterator[SegmentBatch]:
    """Read a segment file in consecutive batches of rows (batch-wise loading).

    Rows come in sample-major order (sample 0's segments 0..S-1, then sample 1's...), so
    concatenating the batches reproduces :func:`read_segments`.
    """
    if batch_size < 1:
        raise InvalidArgumentError("batch_size must be at least 1")
    path = Path(path)
    with _open_checked(path) as handle:
        layout = _layout_of(handle)
        positional = handle["positional"][...]
        data = handle["tokens"]
        for lo in range(0, data.shape[0], batch_size):
            hi = min(data.shape[0], lo + batch_size)
            rows = np.arange(lo, hi, dtype=np.int64)
            segment = rows % layout.n_segments
            yield SegmentBatch(data[lo:hi], positional[segment], rows // layout.n_segments, segment)


# ----------------------------------------------------------------------------- QC


def biallelic_snp_mask(ds: xr.Dataset) -> np.ndarray:
    """True for variants with exactly two alleles, each one of A, C, G, T, and no index above 1."""
    variables.validate(ds, ["variant_allele", "call_genotype"])
    alleles = np.asarray(ds["variant_allele"].values, dtype=object)
    filled = np.array([[str(a) if a is not None else "" for a in row] for row in alleles], dtype=object)
    n_alleles = (filled != "").sum(axis=1)
    snp = np.array([all(a in _BASES for a in row if a != "") for row in filled], dtype=bool)
    first_two_snp = np.array([len(row) >= 2 and row[0] in _BASES and row[1] in _BASES for row in filled])
    gt = ds["call_genotype"].data
    low = (gt <= 1).all(axis=(1, 2))
    low = np.asarray(low.compute() if hasattr(low, "compute") else low)
    return (n_alleles == 2) & snp & first_two_snp & low


def duplicate_position_mask(ds: xr.Dataset) -> np.ndarray:
    """True for the first variant at each (contig, position); later duplicates are False."""
    key = np.stack([np.asarray(ds["variant_contig"].values, dtype=np.int64),
                    np.asarray(ds["variant_position"].values, dtype=np.int64)], axis=1)
    _, first = np.unique(key, axis=0, return_index=True)
    keep = np.zeros(len(key), dtype=bool)
    keep[first] = True
    return keep


def hwe_exact_pvalues(n_het: Any, n_hom1: Any, n_hom2: Any) -> np.ndarray:
    """Exact Hardy-Weinberg test p-values (Wigginton, Cutler and Abecasis 2005).

    The p-value is the total probability, given the allele counts, of heterozygote counts no
    more likely than the one observed (ties within a relative 1e-7 count as equal, as PLINK
    does). Computed from log-factorials, once per distinct genotype-count triple.

    Parameters
    ----------
    n_het, n_hom1, n_hom2
        Genotype counts per variant (arrays of equal shape).

    Returns
    -------
    numpy.ndarray
        float64 p-values; 1 for variants without called genotypes.
    """
    from scipy.special import gammaln

    het = np.asarray(n_het, dtype=np.int64)
    h1 = np.asarray(n_hom1, dtype=np.int64)
    h2 = np.asarray(n_hom2, dtype=np.int64)
    if not het.shape == h1.shape == h2.shape:
        raise InvalidArgumentError("n_het, n_hom1 and n_hom2 must have the same shape")
    if ((het < 0) | (h1 < 0) | (h2 < 0)).any():
        raise InvalidArgumentError("genotype counts must be non-negative")
    triples = np.stack([het.ravel(), h1.ravel(), h2.ravel()], axis=1)
    unique, inverse = np.unique(triples, axis=0, return_inverse=True)
    pvalues = np.ones(len(unique))
    for row, (h, a, b) in enumerate(unique):
        n = h + a + b
        rare = 2 * min(a, b) + h
        if n == 0 or rare == 0:
            continue
        hets = np.arange(rare % 2, rare + 1, 2)
        homr = (rare - hets) // 2
        homc = n - hets - homr
        ok = homc >= 0
        hets, homr, homc = hets[ok], homr[ok], homc[ok]
        logp = (hets * np.log(2.0) + gammaln(n + 1) - gammaln(homr + 1) - gammaln(hets + 1)
                - gammaln(homc + 1) + gammaln(rare + 1) + gammaln(2 * n - rare + 1)
                - gammaln(2 * n + 1))
        prob = np.exp(logp - logp.max())
        observed = prob[hets == h][0]
        pvalues[row] = min(1.0, prob[prob <= observed * (1 + 1e-7)].sum() / prob.sum())
    return pvalues[inverse.ravel()].reshape(het.shape)


def _genotype_counts(ds: xr.Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    gt = ds["call_genotype"].data
    called = (gt >= 0).all(axis=2)
    alt = (gt > 0).sum(axis=2)
    counts = [((alt == k) & called).sum(axis=1) for k in (0, 1, 2)]
    if not isinstance(gt, np.ndarray):
        import dask

        counts = list(dask.compute(*counts))
    hom_ref, het, hom_alt = (np.asarray(c, dtype=np.int64) for c in counts)
    return het, hom_ref, hom_alt


def hwe_pvalues(ds: xr.Dataset) -> np.ndarray:
    """Exact HWE p-value of every variant of a biallelic dataset (missing calls ignored)."""
    variables.validate(ds, "call_genotype")
    return hwe_exact_pvalues(*_genotype_counts(ds))


def variant_qc_mask(ds: xr.Dataset, *, hwe_threshold: float = 1e-6, min_maf: float = 0.001) -> np.ndarray:
    """True for variants passing the paper's HWE (p > threshold) and MAF (>= min_maf) filters."""
    het, hom_ref, hom_alt = _genotype_counts(ds)
    n_alleles = 2 * (het + hom_ref + hom_alt)
    alt = het + 2 * hom_alt
    maf = np.where(n_alleles > 0, np.minimum(alt, n_alleles - alt) / np.maximum(n_alleles, 1), 0.0)
    return (hwe_exact_pvalues(het, hom_ref, hom_alt) > hwe_threshold) & (maf >= min_maf)


@dataclass
class QCResult:
    """Outcome of :func:`qc_split`: the three splits over the retained SNPs and a step report.

    Attributes
    ----------
    train, validation, test
        Genotype datasets over the same retained SNPs.
    report
        Ordered counts: ``variants_in``, ``non_biallelic_snp``, ``duplicate_position``,
        ``samples_in``, ``samples_missing_over``, ``variants_with_missing``, ``hwe_maf_failed``,
        ``variants_out``, ``train``, ``validation``, ``test``.
    variant_index
        Indices of the retained SNPs in the input dataset.
    """

    train: xr.Dataset
    validation: xr.Dataset
    test: xr.Dataset
    report: dict[str, int]
    variant_index: np.ndarray


def qc_split(
    ds: xr.Dataset,
    *,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    stratify_by: str | None = "sample_population",
    seed: int = 0,
    max_sample_missing: float = 0.05,
    hwe_threshold: float = 1e-6,
    min_maf: float = 0.001,
    decide: Literal["train", "all"] = "train",
) -> QCResult:
    """The paper's QC pipeline and 8:1:1 split (module docstring, "QC").

    Parameters
    ----------
    ds
        Phased genotype dataset.
    fractions, stratify_by, seed
        Passed to :func:`~analysislib.genotype.masking.split_train_val_test`.
    max_sample_missing
        Samples with a larger fraction of missing calls (over the biallelic SNPs) are removed.
    hwe_threshold, min_maf
        Variant filters (keep p > ``hwe_threshold`` and MAF >= ``min_maf``).
    decide
        ``"train"``: the training split's filters decide for all splits; ``"all"``: each split
        is filtered independently and the SNPs passing in every split are kept (the paper).

    Returns
    -------
    QCResult
    """
    from analysislib.genotype.masking import split_train_val_test

    if decide not in ("train", "all"):
        raise InvalidArgumentError(f"decide must be 'train' or 'all', got {decide!r}")
    report: dict[str, int] = {"variants_in": int(ds.sizes["variants"])}
    biallelic = biallelic_snp_mask(ds)
    unique = duplicate_position_mask(ds)
    report["non_biallelic_snp"] = int((~biallelic).sum())
    report["duplicate_position"] = int((biallelic & ~unique).sum())
    keep = np.flatnonzero(biallelic & unique)
    work = ds.isel(variants=keep)
    gt = work["call_genotype"].data
    call_missing = (gt < 0).any(axis=2)
    per_sample = call_missing.mean(axis=0) if work.sizes["variants"] else np.zeros(work.sizes["samples"])
    per_variant = call_missing.any(axis=1)
    if not isinstance(gt, np.ndarray):
        import dask

        per_sample, per_variant = dask.compute(per_sample, per_variant)
    samples_ok = np.asarray(per_sample) <= max_sample_missing
    report["samples_in"] = int(ds.sizes["samples"])
    report["samples_missing_over"] = int((~samples_ok).sum())
    work = work.isel(samples=np.flatnonzero(samples_ok))
    call_missing_kept = (work["call_genotype"].data < 0).any(axis=2).any(axis=1)
    call_missing_kept = np.asarray(call_missing_kept.compute() if hasattr(call_missing_kept, "compute")
                                   else call_missing_kept)
    report["variants_with_missing"] = int(call_missing_kept.sum())
    complete = np.flatnonzero(~call_missing_kept)
    keep, work = keep[complete], work.isel(variants=complete)
    if work.sizes["variants"] == 0:
        raise InvalidArgumentError("no variant is left after the biallelic-SNP and missingness filters")
    train, validation, test = split_train_val_test(work, fractions, stratify_by=stratify_by, seed=seed)
    passing = variant_qc_mask(train, hwe_threshold=hwe_threshold, min_maf=min_maf)
    if decide == "all":
        for part in (validation, test):
            if part.sizes["samples"]:
                passing &= variant_qc_mask(part, hwe_threshold=hwe_threshold, min_maf=min_maf)
    report["hwe_maf_failed"] = int((~passing).sum())
    retained = np.flatnonzero(passing)
    report["variants_out"] = len(retained)
    parts = [part.isel(variants=retained) for part in (train, validation, test)]
    for name, part in zip(("train", "validation", "test"), parts, strict=True):
        report[name] = int(part.sizes["samples"])
        part.attrs = {**part.attrs, "qc": "biunet", "qc_decide": decide}
    return QCResult(parts[0], parts[1], parts[2], report, keep[retained])
