"""LD-based genome tiling with box scores: valleys, mountains and valley-mountain-valley tiles.

This module cuts a chromosome into the overlapping segments that Dias et al. (2022, eLife
11:e75600, "Genome tiling" and Figure 1A) trained one autoencoder each on. It follows the authors'
own code (the ``BoxScore`` and ``FindMVMs`` R notebooks in ``TorkamaniLab/Genome-Tiling``):

1. keep common variants (allele frequency in ``[min_maf, 1 - min_maf]``, 0.05 in the authors'
   ``BoxScore`` notebook; the paper text says 0.5 %, the code 5 %) and take the Pearson
   correlation ``r`` of their haplotype allele indicators (:func:`analysislib.ld.ld_band`);
2. threshold ``|r| >= 0.45`` and count, at the boundary between common variants ``k - 1`` and
   ``k``, the strong pairs ``(i, j)`` with ``i`` in the ``box`` variants upstream and ``j`` in the
   ``box`` variants downstream (:func:`box_scores`, 500 x 500 by default);
3. walk the score curve with asymmetric hysteresis (threshold 10, hysteresis 3 on both sides) to
   label weak-LD *valleys* and strong-LD *mountains* (:func:`find_ld_regions`);
4. make one tile per mountain plus its neighbouring valleys, so neighbouring tiles share a valley
   (:func:`build_tiles`); mountains longer than 4500 common variants are split at internal
   minima of the score (:func:`mountain_split_points`), and tiles still above 6000 variants are
   cut into 6000-variant pieces that overlap by 2500 (:func:`hard_cap_pieces`).

:func:`tile_genome` runs the whole chain on a genotype dataset, :func:`variant_tiles` maps every
variant (rare ones included) to its tiles, and :func:`hotspot_proximity` checks tile boundaries
against known recombination hotspots of a simulated panel.

Score scale. The box score is a count of pairs, so its size grows with the box area and with
how much LD a panel can resolve. The authors' thresholds (valley below 7, mountain above 13, split
minima below 1000) are counts in a 500 x 500 box on dense sequence panels. With ``threshold_scale=
"box_area"`` :func:`tile_genome` reads them as counts per 500 x 500 box and scales them by
``(box / 500) ** 2`` for smaller boxes (sparse array panels, small simulations).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import xarray as xr

from analysislib import ld, variables
from analysislib.errors import InvalidArgumentError

__all__ = [
    "AUTHORS_BOX",
    "Tiling",
    "box_scores",
    "build_tiles",
    "common_variant_index",
    "find_ld_regions",
    "hard_cap_pieces",
    "hotspot_distance",
    "hotspot_proximity",
    "hotspot_sweep",
    "mountain_split_points",
    "thresholded_ld_matrix",
    "tile_genome",
    "tile_summary",
    "valley_window",
    "variant_tiles",
]

#: Box size (common variants per side) of the authors' score files; thresholds given in
#: "authors' units" are counts in a box of this size.
AUTHORS_BOX = 500

_CUT_KINDS = ("vmv", "mountain_split", "hard_cap")


# --------------------------------------------------------------------------------------------
# Box scores
# --------------------------------------------------------------------------------------------


def _block_box_counts(block: Any, box: int, threshold: float) -> np.ndarray:
    """Contributions of one block of band rows to the box counts.

    ``block[i, o - 1]`` is ``r`` between band row ``i`` and the variant ``o`` places downstream.
    Returns ``out`` of length ``rows + box`` where ``out[t]`` adds to the count of the boundary
    just before variant ``row0 + t`` (``row0`` being the block's first row).
    """
    strong = np.abs(np.asarray(block[:, : 2 * box - 1], dtype=np.float32)) >= threshold  # NaN -> False
    rows = strong.shape[0]
    # prefix[i, o] = number of strong pairs (i, i + 1..i + o)
    prefix = np.zeros((rows, 2 * box), dtype=np.int32)
    np.cumsum(strong, axis=1, out=prefix[:, 1:])
    # row i, boundary k = i + d (d = 1..box): partners j in [k, k + box) are offsets d..d + box - 1
    per_distance = prefix[:, box:] - prefix[:, :box]
    out = np.zeros(rows + box, dtype=np.int64)
    for d in range(1, box + 1):
        out[d : d + rows] += per_distance[:, d - 1]
    return out


def box_scores(
    band_abs_r: Any,
    *,
    box: int = AUTHORS_BOX,
    threshold: float = 0.45,
    pad: int = -1,
    block_rows: int = 8192,
) -> np.ndarray:
    """Box scores along a run of common variants from a band of LD correlations.

    The score of the boundary between variants ``b`` and ``b + 1`` (0-based) is the number of
    pairs ``(i, j)`` with ``i`` in ``[b + 1 - box, b]`` (``box`` variants upstream) and ``j`` in
    ``[b + 1, b + box]`` (``box`` downstream) whose ``|r| >= threshold``: the count of strong
    entries in the off-diagonal ``box x box`` block of the thresholded correlation matrix, as in
    the ``BoxScore`` notebook of Dias et al. (2022). Computed from row-wise prefix sums over the
    band, block by block, never forming the full matrix.

    Parameters
    ----------
    band_abs_r
        Array-like ``(n_variants, window)`` (NumPy, dask or :class:`xarray.DataArray` from
        :func:`analysislib.ld.ld_band`): entry ``[i, o - 1]`` is ``r`` (or ``|r|``) between
        variants ``i`` and ``i + o``; NaN past the end or for monomorphic variants (counted as
        weak). ``window`` must be at least ``2 * box - 1``.
    box
        Variants per side of the box.
    threshold
        Pairs with ``|r| >= threshold`` count.
    pad
        Score given to boundaries whose box does not fit (the first ``box - 1`` and last
        ``box - 1`` boundaries), ``-1`` as in the authors' score files.
    block_rows
        Band rows per NumPy block (bounds memory); dask inputs use their own chunks.

    Returns
    -------
    numpy.ndarray
        int64, length ``n_variants - 1``.
    """
    if box < 1:
        raise InvalidArgumentError(f"box must be at least 1, got {box}")
    data = band_abs_r.data if isinstance(band_abs_r, xr.DataArray) else band_abs_r
    if getattr(data, "ndim", None) != 2:
        raise InvalidArgumentError(f"the LD band must be 2-D (variants, offset), got shape {getattr(data, 'shape', None)}")
    n, window = (int(s) for s in data.shape)
    if window < 2 * box - 1:
        raise InvalidArgumentError(
            f"the LD band has {window} offsets but a {box}-variant box needs 2 * box - 1 = {2 * box - 1}")
    counts = np.zeros(n + box + 1, dtype=np.int64)  # counts[k]: boundary just before variant k
    if isinstance(data, np.ndarray):
        for row0 in range(0, n, block_rows):
            part = _block_box_counts(data[row0 : row0 + block_rows], box, threshold)
            counts[row0 : row0 + len(part)] += part
    else:
        import dask
        import dask.array as da

        arr = da.asarray(data)[:, : 2 * box - 1].rechunk({1: -1})
        starts = np.concatenate([[0], np.cumsum(arr.chunks[0])[:-1]]).astype(int)
        parts = ld.compute_ld(*[dask.delayed(_block_box_counts)(blk, box, threshold)
                                for blk in arr.to_delayed()[:, 0]])
        for row0, part in zip(starts, parts, strict=True):
            counts[row0 : row0 + len(part)] += part
    scores = np.full(max(n - 1, 0), pad, dtype=np.int64)
    valid = slice(box - 1, n - box)  # boundary b needs b + 1 - box >= 0 and b + box <= n - 1
    scores[valid] = counts[1:n][valid]
    return scores


def thresholded_ld_matrix(band_abs_r: Any, start: int, stop: int, *, threshold: float | None = 0.45) -> np.ndarray:
    """Square correlation matrix of variants ``start..stop - 1`` laid out from a band.

    Entries farther apart than the band's window are NaN. With ``threshold`` the matrix holds 1
    where ``|r| >= threshold`` and 0 elsewhere (NaN kept), the red/grey picture of Dias et al.
    (2022) Figure 1A.1; with ``threshold=None`` it holds ``|r|``. The diagonal is 1.
    """
    data = band_abs_r.data if isinstance(band_abs_r, xr.DataArray) else band_abs_r
    n, window = (int(s) for s in data.shape)
    if not 0 <= start < stop <= n:
        raise InvalidArgumentError(f"region [{start}, {stop}) is outside the band's {n} variants")
    rows = np.abs(np.asarray(data[start:stop], dtype=np.float64))
    m = stop - start
    matrix = np.full((m, m), np.nan)
    np.fill_diagonal(matrix, 1.0)
    for offset in range(1, min(window, m - 1) + 1):
        i = np.arange(m - offset)
        matrix[i, i + offset] = matrix[i + offset, i] = rows[i, offset - 1]
    if threshold is not None:
        matrix = np.where(np.isnan(matrix), np.nan, (matrix >= threshold).astype(float))
    return matrix


# --------------------------------------------------------------------------------------------
# Valleys and mountains
# --------------------------------------------------------------------------------------------


def _transition_starts(scores: np.ndarray, threshold: float, hysteresis_valley: float,
                       hysteresis_mountain: float) -> np.ndarray:
    """Score indices where each valley or mountain begins (alternating, first a valley).

    Asymmetric hysteresis as in the authors' ``FindMVMs``: starting in a mountain, the state
    turns to valley when a score falls below ``threshold - hysteresis_valley`` and back to
    mountain when one rises above ``threshold + hysteresis_mountain``. The transition is dated
    at the first score that crossed ``threshold`` itself since the last opposite extreme.
    """
    n = len(scores)
    idx = np.arange(n)
    low = scores < threshold - hysteresis_valley
    high = scores > threshold + hysteresis_mountain
    last_low = np.maximum.accumulate(np.where(low, idx, -1))
    last_high = np.maximum.accumulate(np.where(high, idx, -1))
    in_valley = last_low > last_high
    changes = np.flatnonzero(np.diff(np.concatenate([[False], in_valley]).astype(np.int8)) != 0)
    # first index >= p below / above the threshold (n when none)
    next_below = np.minimum.accumulate(np.where(scores < threshold, idx, n)[::-1])[::-1]
    next_above = np.minimum.accumulate(np.where(scores > threshold, idx, n)[::-1])[::-1]
    starts = np.empty(len(changes), dtype=np.int64)
    for t, c in enumerate(changes):
        if in_valley[c]:
            starts[t] = next_below[last_high[c] + 1]
        else:
            starts[t] = next_above[last_low[c] + 1]
    return starts


def find_ld_regions(
    scores: Any,
    *,
    threshold: float = 10,
    hysteresis_valley: float = 3,
    hysteresis_mountain: float = 3,
    pad: int = -1,
    positions: Any | None = None,
) -> pd.DataFrame:
    """Split a run of common variants into alternating mountains and valleys.

    Follows ``FindMVMs`` of Dias et al. (2022): padded scores (boxes that do not fit at the
    chromosome ends) count as mountain, the walk starts in a mountain, a valley begins when the
    score drops below ``threshold - hysteresis_valley`` (7 by default) and a mountain when it
    rises above ``threshold + hysteresis_mountain`` (13); each change is placed at the first
    score that crossed ``threshold`` on the way. Every real score is visited (the R loop
    starts one score after the first unpadded one).

    Parameters
    ----------
    scores
        Box scores from :func:`box_scores` (length ``n_common - 1``).
    threshold, hysteresis_valley, hysteresis_mountain
        Hysteresis settings, in box-score units.
    pad
        The pad value used in ``scores``.
    positions
        Optional positions of the ``n_common`` variants, to add coordinates.

    Returns
    -------
    pandas.DataFrame
        One row per region in order: ``region``, ``kind`` (``"mountain"``/``"valley"``),
        ``first_common``, ``last_common`` (inclusive, indices into the common variants),
        ``n_common``, ``min_score`` and ``min_score_common`` (the lowest real score among the
        boundary that opens the region and those inside it, and the index of the variant after
        that boundary; NaN and -1 if none), and with
        ``positions`` also ``first_position``, ``last_position``, ``centre_position`` (midway
        between the boundaries that open and close the region) and ``min_score_position``.
    """
    raw = np.asarray(scores, dtype=np.float64)
    n_common = len(raw) + 1
    real = np.where(raw == pad, np.inf, raw)
    starts = _transition_starts(real, threshold, hysteresis_valley, hysteresis_mountain) + 1
    firsts = np.concatenate([[0], starts]).astype(np.int64)
    stops = np.concatenate([starts, [n_common]]).astype(np.int64)
    kinds = np.where(np.arange(len(firsts)) % 2 == 0, "mountain", "valley")
    mins, argmins = [], []
    for first, stop in zip(firsts, stops, strict=True):
        # the region's boundaries: the one opening it (score index first - 1) and those inside
        lo = max(first - 1, 0)
        inner = real[lo : stop - 1]
        if len(inner) and np.isfinite(inner).any():
            b = int(np.argmin(inner))
            mins.append(float(inner[b]))
            argmins.append(lo + b + 1)
        else:
            mins.append(np.nan)
            argmins.append(-1)
    regions = pd.DataFrame({
        "region": np.arange(len(firsts)),
        "kind": kinds,
        "first_common": firsts,
        "last_common": stops - 1,
        "n_common": stops - firsts,
        "min_score": mins,
        "min_score_common": np.asarray(argmins, dtype=np.int64),
    })
    if positions is not None:
        pos = np.asarray(positions, dtype=np.float64)
        if len(pos) != n_common:
            raise InvalidArgumentError(f"{len(pos)} positions given for {n_common} common variants")
        # the boundary before common variant k lies midway between variants k - 1 and k
        before = np.concatenate([[pos[0]], (pos[:-1] + pos[1:]) / 2, [pos[-1]]])
        regions["first_position"] = pos[firsts].astype(np.int64)
        regions["last_position"] = pos[stops - 1].astype(np.int64)
        regions["centre_position"] = (before[firsts] + before[stops]) / 2
        arg = regions["min_score_common"].to_numpy()
        regions["min_score_position"] = np.where(arg > 0, before[np.maximum(arg, 0)], np.nan)
    return regions


# --------------------------------------------------------------------------------------------
# Splitting rules
# --------------------------------------------------------------------------------------------


def mountain_split_points(
    scores: Any,
    first: int,
    stop: int,
    *,
    bin_size: int = 200,
    threshold: float = 1000,
    min_piece: int = 200,
    pad: int = -1,
) -> np.ndarray:
    """Internal minima where a long mountain of common variants ``[first, stop)`` is cut.

    As in ``FindMVMs``: the boundaries inside the mountain are grouped in bins of ``bin_size``,
    the lowest score of each bin is a candidate (first and last bins skipped, so no cut lands
    next to a valley), candidates scoring ``threshold`` or more are rejected, and a cut that
    would leave a piece of ``min_piece`` variants or fewer is dropped (pieces are measured from
    the previous kept cut, and the last piece to the mountain end is checked too).

    Returns
    -------
    numpy.ndarray
        Common-variant indices where new pieces begin, increasing, all in ``(first, stop)``.
    """
    raw = np.asarray(scores, dtype=np.float64)
    # boundaries strictly inside: score index b cuts before variant b + 1
    inner = np.where(raw[first : stop - 1] == pad, np.inf, raw[first : stop - 1])
    n_bins = -(-len(inner) // bin_size)
    candidates = []
    for k in range(1, n_bins - 1):
        chunk = inner[k * bin_size : (k + 1) * bin_size]
        b = int(np.argmin(chunk))
        if chunk[b] < threshold:
            candidates.append(first + k * bin_size + b + 1)
    kept: list[int] = []
    previous = first
    for cut in candidates:
        if cut - previous > min_piece and stop - cut > min_piece:
            kept.append(cut)
            previous = cut
    return np.asarray(kept, dtype=np.int64)


def hard_cap_pieces(first: int, last: int, *, max_tile: int = 6000, overlap: int = 2500) -> list[tuple[int, int]]:
    """Cut the inclusive range ``[first, last]`` into pieces of at most ``max_tile`` variants.

    Dias et al. (2022) split segments still above 6000 SNPs "into 6000 SNP segments with large
    overlaps of 2500 SNPs". Pieces here are exactly ``max_tile`` long, start evenly spaced from
    ``first`` to ``last - max_tile + 1``, and there are just enough of them that consecutive
    pieces overlap by at least ``overlap`` variants. A range that fits is returned unchanged.

    Returns
    -------
    list of tuple
        Inclusive ``(first, last)`` pairs.
    """
    if not 0 <= overlap < max_tile:
        raise InvalidArgumentError(f"overlap ({overlap}) must be in [0, max_tile = {max_tile})")
    length = last - first + 1
    if length <= max_tile:
        return [(first, last)]
    n_pieces = -(-(length - max_tile) // (max_tile - overlap)) + 1
    starts = np.round(np.linspace(first, last - max_tile + 1, n_pieces)).astype(np.int64)
    return [(int(s), int(s) + max_tile - 1) for s in starts]


def build_tiles(
    scores: Any,
    regions: pd.DataFrame,
    common_index: Any,
    n_variants: int,
    *,
    positions: Any | None = None,
    max_mountain: int = 4500,
    split_bin: int = 200,
    split_threshold: float = 1000,
    min_piece: int = 200,
    max_tile: int = 6000,
    cap_overlap: int = 2500,
    pad: int = -1,
) -> pd.DataFrame:
    """Valley-mountain-valley tiles from regions, with the two splitting rules.

    Each mountain becomes one tile together with the valley before and the valley after it, so
    neighbouring tiles overlap on their shared valley (the chromosome ends stand in for missing
    valleys). A mountain of more than ``max_mountain`` common variants is cut at its internal
    minima (:func:`mountain_split_points`); the pieces meet at the minimum without overlap. A
    tile of more than ``max_tile`` variants (all variants, the autoencoder's input width) is cut
    by :func:`hard_cap_pieces`.

    Tiles are mapped from common variants to all variants: a tile covering common variants
    ``[s, e]`` spans from common variant ``s`` (variant 0 for the first tile) to the variant just
    before common variant ``e + 1`` (the last variant for the final tile), so rare variants
    between two common ones belong to the tile on their left and every variant is covered.

    Parameters
    ----------
    scores
        Box scores (length ``len(common_index) - 1``).
    regions
        Output of :func:`find_ld_regions`.
    common_index
        Indices (into all ``n_variants``) of the common variants, increasing.
    n_variants
        Number of variants in the dataset.
    positions
        Optional positions of all ``n_variants`` variants.
    max_mountain, split_bin, split_threshold, min_piece
        Mountain splitting (common variants; score units for ``split_threshold``).
    max_tile, cap_overlap
        Hard cap and overlap of its pieces (all variants).
    pad
        Pad value of ``scores``.

    Returns
    -------
    pandas.DataFrame
        One row per tile, sorted by first variant: ``tile``, ``first_variant``,
        ``last_variant`` (inclusive, indices into all variants), ``n_variants``, ``first_common``, ``last_common`` (indices into the
        common variants, -1 if none), ``n_common``, ``cut`` (``"vmv"``, ``"mountain_split"``,
        ``"hard_cap"``), ``mountain`` (region number of the source mountain), and with
        ``positions`` ``first_position``, ``last_position``.
    """
    common = np.asarray(common_index, dtype=np.int64)
    n_common = len(common)
    if n_common and (np.any(np.diff(common) <= 0) or common[0] < 0 or common[-1] >= n_variants):
        raise InvalidArgumentError("common_index must be increasing indices into the variants")
    segments: list[tuple[int, int, str, int]] = []  # common [start, stop), cut, mountain
    rows = regions.reset_index(drop=True) if n_common else regions.iloc[0:0]
    if n_common == 0:
        segments.append((0, 0, "vmv", -1))  # nothing to cut on: one tile over everything
    for r, region in rows.iterrows():
        if region["kind"] != "mountain":
            continue
        start = int(rows.loc[r - 1, "first_common"]) if r > 0 else 0
        stop = int(rows.loc[r + 1, "last_common"]) + 1 if r + 1 < len(rows) else n_common
        m_first, m_stop = int(region["first_common"]), int(region["last_common"]) + 1
        cuts = np.empty(0, dtype=np.int64)
        if m_stop - m_first > max_mountain:
            cuts = mountain_split_points(scores, m_first, m_stop, bin_size=split_bin,
                                         threshold=split_threshold, min_piece=min_piece, pad=pad)
        bounds = [start, *cuts.tolist(), stop]
        kind = "mountain_split" if len(cuts) else "vmv"
        segments += [(a, b, kind, int(region["region"])) for a, b in itertools.pairwise(bounds)]

    records = []
    for start, stop, kind, mountain in segments:
        first = 0 if start == 0 else int(common[start])
        last = n_variants - 1 if stop >= n_common else int(common[stop]) - 1
        pieces = hard_cap_pieces(first, last, max_tile=max_tile, overlap=cap_overlap)
        for a, b in pieces:
            records.append((a, b, "hard_cap" if len(pieces) > 1 else kind, mountain))
    tiles = pd.DataFrame(records, columns=["first_variant", "last_variant", "cut", "mountain"])
    tiles = tiles.sort_values(["first_variant", "last_variant"], kind="stable", ignore_index=True)
    tiles.insert(0, "tile", np.arange(len(tiles)))
    tiles["n_variants"] = tiles["last_variant"] - tiles["first_variant"] + 1
    lo = np.searchsorted(common, tiles["first_variant"].to_numpy(), side="left")
    hi = np.searchsorted(common, tiles["last_variant"].to_numpy(), side="right")
    tiles["n_common"] = hi - lo
    tiles["first_common"] = np.where(hi > lo, lo, -1)
    tiles["last_common"] = np.where(hi > lo, hi - 1, -1)
    tiles["cut"] = pd.Categorical(tiles["cut"], categories=_CUT_KINDS)
    if positions is not None:
        pos = np.asarray(positions)
        tiles["first_position"] = pos[tiles["first_variant"].to_numpy()]
        tiles["last_position"] = pos[tiles["last_variant"].to_numpy()]
    columns = ["tile", "first_variant", "last_variant", "first_position", "last_position", "n_variants",
               "first_common", "last_common", "n_common", "cut", "mountain"]
    return tiles[[c for c in columns if c in tiles]]


# --------------------------------------------------------------------------------------------
# Whole chain on a dataset
# --------------------------------------------------------------------------------------------


@dataclass
class Tiling:
    """The result of :func:`tile_genome`.

    Attributes
    ----------
    tiles
        One row per tile (see :func:`build_tiles`), with ``contig``; variant indices refer to
        the whole input dataset.
    regions
        Valleys and mountains per contig (see :func:`find_ld_regions`), with ``contig``.
    scores
        The box-score file: one row per boundary between consecutive common variants with
        ``contig``, ``variant_up``, ``variant_down`` (dataset indices), ``position_up``,
        ``position_down`` and ``box_score`` (``pad`` where the box does not fit), the columns
        of the authors' ``corboxscores`` files.
    common_index
        Dataset indices of the common variants used for LD.
    params
        The parameters used (after any box-area scaling).
    """

    tiles: pd.DataFrame
    regions: pd.DataFrame
    scores: pd.DataFrame
    common_index: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)

    def valley_centres(self) -> np.ndarray:
        """Centre positions (bp) of the valleys, the tile boundaries."""
        valleys = self.regions[self.regions["kind"] == "valley"]
        return valleys["centre_position"].to_numpy(dtype=np.float64)


def common_variant_index(ds: xr.Dataset, *, min_maf: float = 0.05) -> np.ndarray:
    """Indices of variants with alternate-allele frequency in ``[min_maf, 1 - min_maf]``."""
    from analysislib.genotype.stats import minor_allele_frequency

    maf = np.asarray(minor_allele_frequency(ds).values)
    return np.flatnonzero(maf >= min_maf)


def _check_sorted(contig: str, positions: np.ndarray, offset: int) -> None:
    bad = np.flatnonzero(np.diff(positions) < 0)
    if len(bad):
        i = int(bad[0]) + 1
        raise InvalidArgumentError(
            f"variants must be sorted by position to tile them; variant {offset + i} "
            f"({contig}:{int(positions[i])}) comes after {contig}:{int(positions[i - 1])}")


def tile_genome(  # noqa: PLR0913 - the authors' tiling parameters
    ds: xr.Dataset,
    *,
    min_maf: float = 0.05,
    box: int = AUTHORS_BOX,
    r_threshold: float = 0.45,
    valley_threshold: float = 10,
    hysteresis_valley: float = 3,
    hysteresis_mountain: float = 3,
    max_mountain: int = 4500,
    split_bin: int = 200,
    split_threshold: float = 1000,
    min_piece: int = 200,
    max_tile: int = 6000,
    cap_overlap: int = 2500,
    threshold_scale: Literal["count", "box_area"] = "count",
    pad: int = -1,
    chunk_variants: int | None = None,
) -> Tiling:
    """Tile a phased genotype dataset into overlapping LD segments (Dias et al. 2022, Fig. 1A).

    Per contig: keep common variants, compute haplotype ``r`` in a band of ``2 * box - 1``
    offsets with :func:`analysislib.ld.ld_band`, score boundaries with :func:`box_scores`, find
    valleys and mountains with :func:`find_ld_regions`, and build tiles with
    :func:`build_tiles`. Defaults are the authors' values.

    Parameters
    ----------
    ds
        Genotype dataset with ``call_genotype``, ``variant_position`` and ``variant_contig``,
        sorted by position within each contig.
    min_maf
        Common-variant cut: alternate-allele frequency in ``[min_maf, 1 - min_maf]``.
    box
        Common variants per side of the scoring box (500).
    r_threshold
        ``|r|`` threshold for a strong pair (0.45).
    valley_threshold, hysteresis_valley, hysteresis_mountain
        Hysteresis walk: valley below 10 - 3, mountain above 10 + 3.
    max_mountain, split_bin, split_threshold, min_piece
        Mountains above 4500 common variants are cut at bin-wise minima (bins of 200, minima
        below 1000, no piece of 200 or fewer).
    max_tile, cap_overlap
        Tiles above 6000 variants are cut into 6000-variant pieces overlapping by 2500.
    threshold_scale
        ``"count"`` uses ``valley_threshold``, the hystereses and ``split_threshold`` as given;
        ``"box_area"`` reads them as counts in the authors' 500 x 500 box and multiplies them by
        ``(box / 500) ** 2``, keeping the same fraction of the box area for smaller boxes.
    pad
        Score of boundaries whose box does not fit.
    chunk_variants
        Variants per dask chunk of the LD band (passed to :func:`analysislib.ld.ld_band`).

    Returns
    -------
    Tiling
    """
    variables.validate(ds, ["call_genotype", "variant_position", "variant_contig"])
    if threshold_scale not in ("count", "box_area"):
        raise InvalidArgumentError(f"threshold_scale must be 'count' or 'box_area', got {threshold_scale!r}")
    factor = (box / AUTHORS_BOX) ** 2 if threshold_scale == "box_area" else 1.0
    params = {
        "min_maf": min_maf, "box": box, "r_threshold": r_threshold,
        "valley_threshold": valley_threshold * factor, "hysteresis_valley": hysteresis_valley * factor,
        "hysteresis_mountain": hysteresis_mountain * factor, "max_mountain": max_mountain,
        "split_bin": split_bin, "split_threshold": split_threshold * factor, "min_piece": min_piece,
        "max_tile": max_tile, "cap_overlap": cap_overlap, "threshold_scale": threshold_scale, "pad": pad,
    }
    positions = np.asarray(ds["variant_position"].values, dtype=np.int64)
    contig_codes = np.asarray(ds["variant_contig"].values)
    contig_names = list(ds.attrs.get("contigs", []))
    common_all = common_variant_index(ds, min_maf=min_maf)
    tiles, regions, scores = [], [], []
    for code in pd.unique(contig_codes):
        members = np.flatnonzero(contig_codes == code)
        if np.any(np.diff(members) != 1):
            raise InvalidArgumentError(f"variants of contig {code} are not contiguous; sort the dataset by contig first")
        offset, n_here = int(members[0]), len(members)
        name = contig_names[int(code)] if int(code) < len(contig_names) else str(code)
        pos = positions[members]
        _check_sorted(name, pos, offset)
        common = common_all[(common_all >= offset) & (common_all < offset + n_here)]
        if len(common) >= 2:
            band = ld.ld_band(ds.isel(variants=common), window=max(2 * box - 1, 1), unit="haplotype",
                              chunk_variants=chunk_variants)
            score = box_scores(band, box=box, threshold=r_threshold, pad=pad)
        else:
            score = np.empty(0, dtype=np.int64)
        local = common - offset
        region = find_ld_regions(score, threshold=params["valley_threshold"],
                                 hysteresis_valley=params["hysteresis_valley"],
                                 hysteresis_mountain=params["hysteresis_mountain"], pad=pad,
                                 positions=pos[local] if len(local) else None)
        if len(local) == 0:
            region = region.iloc[0:0]
        tile = build_tiles(score, region, local, n_here, positions=pos, max_mountain=max_mountain,
                           split_bin=split_bin, split_threshold=params["split_threshold"], min_piece=min_piece,
                           max_tile=max_tile, cap_overlap=cap_overlap, pad=pad)
        for column in ("first_variant", "last_variant"):
            tile[column] += offset
        tile.insert(1, "contig", name)
        region.insert(1, "contig", name)
        tiles.append(tile)
        regions.append(region)
        scores.append(pd.DataFrame({
            "contig": name,
            "variant_up": common[:-1], "variant_down": common[1:],
            "position_up": positions[common[:-1]], "position_down": positions[common[1:]],
            "box_score": score,
        }))
    tiles_df = pd.concat(tiles, ignore_index=True)
    tiles_df["tile"] = np.arange(len(tiles_df))
    return Tiling(tiles=tiles_df, regions=pd.concat(regions, ignore_index=True),
                  scores=pd.concat(scores, ignore_index=True), common_index=common_all, params=params)


# --------------------------------------------------------------------------------------------
# Using and checking tiles
# --------------------------------------------------------------------------------------------


def variant_tiles(tiles: pd.DataFrame, n_variants: int) -> pd.DataFrame:
    """Every variant's tiles, one row per (variant, tile) membership.

    Parameters
    ----------
    tiles
        A tile table with ``tile``, ``first_variant`` and ``last_variant`` (inclusive).
    n_variants
        Number of variants in the dataset.

    Returns
    -------
    pandas.DataFrame
        ``variant``, ``tile``, ``edge_distance`` (variants to the nearer tile end) and
        ``primary`` (True for the one tile per variant where it sits farthest from an edge,
        the natural tile to take an imputed value from where tiles overlap), sorted by variant.

    Raises
    ------
    ValueError
        If a variant belongs to no tile or a tile reaches outside ``[0, n_variants)``.
    """
    first = tiles["first_variant"].to_numpy(dtype=np.int64)
    last = tiles["last_variant"].to_numpy(dtype=np.int64)
    if len(first) and (first.min() < 0 or last.max() >= n_variants or np.any(last < first)):
        raise InvalidArgumentError(f"tile ranges must lie inside [0, {n_variants}) with first <= last")
    lengths = last - first + 1
    tile_ids = np.repeat(tiles["tile"].to_numpy(), lengths)
    within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    variant = np.repeat(first, lengths) + within
    edge = np.minimum(within, np.repeat(lengths, lengths) - 1 - within)
    order = np.lexsort((tile_ids, -edge, variant))
    table = pd.DataFrame({"variant": variant[order], "tile": tile_ids[order], "edge_distance": edge[order]})
    table["primary"] = ~table["variant"].duplicated()
    covered = np.zeros(n_variants, dtype=bool)
    covered[table["variant"].to_numpy()] = True
    if not covered.all():
        missing = np.flatnonzero(~covered)
        raise InvalidArgumentError(f"{len(missing)} variants belong to no tile, the first is variant {int(missing[0])}")
    return table.reset_index(drop=True)


def hotspot_distance(positions: Any, hotspots: pd.DataFrame) -> np.ndarray:
    """Distance (bp) from each 1-based position to the nearest hotspot, 0 inside one.

    ``hotspots`` has 0-based half-open ``start``, ``end`` columns, as
    :attr:`analysislib.simulate.genotypes.SimulatedPanel.hotspots`.
    """
    pos = np.asarray(positions, dtype=np.float64)
    if len(hotspots) == 0:
        return np.full(pos.shape, np.inf)
    order = np.argsort(hotspots["start"].to_numpy())
    lo = hotspots["start"].to_numpy(dtype=np.float64)[order] + 1  # first 1-based base
    hi = hotspots["end"].to_numpy(dtype=np.float64)[order]        # last 1-based base
    gaps = np.maximum(np.maximum(lo[None, :] - pos[:, None], pos[:, None] - hi[None, :]), 0)
    return gaps.min(axis=1)


def hotspot_proximity(
    positions: Any,
    hotspots: pd.DataFrame,
    *,
    span: Sequence[float],
    within: float = 10_000,
    n_random: int = 10_000,
    seed: int = 0,
) -> dict[str, float]:
    """How often positions (valley centres) fall near a hotspot, against random positions.

    Parameters
    ----------
    positions
        1-based positions to test, for example :meth:`Tiling.valley_centres`.
    hotspots
        Table with 0-based half-open ``start``, ``end``.
    span
        ``(low, high)`` range for the uniform random positions (the tiled region).
    within
        Distance (bp) that counts as near.
    n_random
        Random positions drawn.
    seed
        Seed of the random positions.

    Returns
    -------
    dict
        ``n``, ``fraction_near``, ``median_distance`` for ``positions`` and
        ``random_fraction_near``, ``random_median_distance`` for uniform positions.
    """
    rng = np.random.default_rng(seed)
    observed = hotspot_distance(positions, hotspots)
    random = hotspot_distance(rng.uniform(span[0], span[1], n_random), hotspots)
    return {
        "n": float(len(observed)),
        "fraction_near": float(np.mean(observed <= within)) if len(observed) else np.nan,
        "median_distance": float(np.median(observed)) if len(observed) else np.nan,
        "random_fraction_near": float(np.mean(random <= within)),
        "random_median_distance": float(np.median(random)),
    }


# --------------------------------------------------------------------------------------------
# Summaries of a tiling (Dias et al. 2022, Fig. 1A and the tile counts of its Methods)
# --------------------------------------------------------------------------------------------

def valley_window(tiling: Tiling, size: int) -> int:
    """First common-variant index of a ``size``-variant window holding as many valleys as possible.

    Windows start a fifth of ``size`` before a valley; 0 when every common variant fits in one
    window or there is no valley.
    """
    n_common = len(tiling.common_index)
    valleys = tiling.regions.query("kind == 'valley'")
    if n_common <= size or valleys.empty:
        return 0
    starts = np.clip(valleys["first_common"].to_numpy() - size // 5, 0, n_common - size)
    inside = [((valleys["first_common"] >= s) & (valleys["last_common"] < s + size)).sum()
              for s in starts]
    return int(starts[int(np.argmax(inside))])


def tile_summary(tiling: Tiling, n_variants: int) -> dict[str, float]:
    """One-row summary of a tiling: tiles by cut, valleys, sizes, overlaps and coverage.

    Parameters
    ----------
    tiling
        A :func:`tile_genome` result.
    n_variants
        Variants of the tiled dataset (for the coverage).
    """
    t = tiling.tiles
    membership = variant_tiles(t, n_variants)
    same_contig = t["contig"].to_numpy()[1:] == t["contig"].to_numpy()[:-1]
    overlap = (t["last_variant"].to_numpy()[:-1] - t["first_variant"].to_numpy()[1:] + 1)[same_contig]
    counts = t["cut"].value_counts()
    shared = membership["variant"].duplicated(keep=False).groupby(membership["variant"]).any()
    return {
        "tiles": len(t), **{f"cut {k}": int(counts.get(k, 0)) for k in _CUT_KINDS},
        "valleys": int((tiling.regions["kind"] == "valley").sum()),
        "variants / tile (median)": t["n_variants"].median(),
        "variants / tile (max)": t["n_variants"].max(),
        "common / tile (median)": t["n_common"].median(),
        "tile length kb (median)": ((t["last_position"] - t["first_position"]) / 1e3).median(),
        "overlap variants (median)": np.median(overlap) if len(overlap) else np.nan,
        "variants in >1 tile (%)": 100 * shared.mean(),
        "variants covered (%)": 100 * membership["variant"].nunique() / n_variants,
    }


def hotspot_sweep(ds: xr.Dataset, hotspots: pd.DataFrame, settings: Mapping[str, Any],
                  grid: Sequence[tuple[int, str]], *, within: float = 10_000, seed: int = 0,
                  tilings: Mapping[tuple[int, str], Tiling] | None = None) -> pd.DataFrame:
    """Do tile boundaries fall at recombination hotspots? One row per (box, threshold scale).

    Parameters
    ----------
    ds
        A simulated panel whose ``hotspots`` are known.
    hotspots
        Table with 0-based half-open ``start``, ``end``.
    settings
        :func:`tile_genome` keywords other than ``box`` and ``threshold_scale``.
    grid
        ``(box, threshold_scale)`` pairs to tile with (duplicates run once).
    within, seed
        See :func:`hotspot_proximity`.
    tilings
        Tilings already computed, by ``(box, threshold_scale)``.

    Returns
    -------
    pandas.DataFrame
        Valleys and tiles, and the share of valley centres within ``within`` of a hotspot and
        their median distance, against uniformly random positions over the region.
    """
    positions = ds["variant_position"].values
    span = (positions[0], positions[-1])
    rows = []
    for box, scale in dict.fromkeys(grid):
        tiling = (tilings or {}).get((box, scale))
        if tiling is None:
            tiling = tile_genome(ds, box=box, threshold_scale=scale, **settings)
        prox = hotspot_proximity(tiling.valley_centres(), hotspots, span=span, within=within,
                                 seed=seed)
        rows.append({"box": box, "thresholds": scale, "valleys": int(prox["n"]),
                     "tiles": len(tiling.tiles),
                     "near hotspot (%)": 100 * prox["fraction_near"],
                     "random near (%)": 100 * prox["random_fraction_near"],
                     "median distance (bp)": prox["median_distance"],
                     "random median distance (bp)": prox["random_median_distance"]})
    return pd.DataFrame(rows)
