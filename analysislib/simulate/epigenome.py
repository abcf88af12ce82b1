"""Generative simulator of Roadmap-like −log10 p histone tracks (cell × assay × 25 bp bins).

Used as the simulated data path of the eDICE reproduction, including the individual-specific
setting of eDICE's ENTEx experiments.
The model, from the genome up:

1. **Chromatin states.** A semi-Markov chain over the 15 states of the Roadmap core ChromHMM
   model (Ernst & Kellis, *Nat Methods* 2012; Roadmap Epigenomics Consortium, *Nature* 518:317,
   2015, Fig. 4): active TSS, flanking TSS, transcribed, enhancers, ZNF genes/repeats,
   heterochromatin, bivalent TSS/enhancers, Polycomb-repressed and quiescent. Segment lengths are
   log-normal with state-specific means (a 1.5 kb promoter, a 15 kb transcribed region, a
   25 kb quiescent stretch), and the jump matrix favours neighbours seen in genes (TSS -> flank
   -> transcribed) and tuned so that genome fractions match ``state_fractions``.
2. **Lineage tree.** A root path is copied to each lineage with a share of segments switched to
   a related state (enhancer <-> quiescent, active <-> bivalent TSS, ...), then each cell type
   copies its lineage path with fewer switches. A switch covers a stretch drawn from the new
   state's length distribution, so a quiescent stretch gains an enhancer, not a 25 kb enhancer.
3. **Individuals (optional).** Each individual has its own gained enhancers and lost active
   elements, shared by all of that individual's tissues (as in ENTEx, where eDICE imputes
   individual-specific tracks).
4. **Emissions.** Each assay has a presence probability per state (after the Roadmap emission
   matrix: H3K4me3 at promoters, H3K4me1 at enhancers and flanks, H3K36me3 over transcribed
   regions, H3K27me3 at Polycomb and bivalent states, H3K9me3 at heterochromatin and ZNF
   repeats) drawn per 200 bp block (ChromHMM's bin) with uniforms shared by all cells, so cells
   in the same state show the same peaks. Present blocks get a gamma-distributed fold
   enrichment shared across cells, scaled per track.
5. **Peak shapes per cell type.** The enrichment is convolved with an asymmetric
   (two-sided exponential) kernel whose width and skew are drawn per cell type, and reads are
   piled up over a cell-specific fragment length, so peak width and skew differ between cell
   types (the signal the Wasserstein peak-shape analysis looks for).
6. **Noise and p-values (MACS2-style).** Read starts are gamma-Poisson around
   ``depth × background × (1 + enrichment)``, where the background is a smooth log-normal field
   (mappability/GC, partly shared across cells, shared across a cell's assays). The fragment
   pileup is compared with a conservative local λ (the maximum of the genome, 1 kb and 10 kb
   background levels) and reported as −log10 of the Poisson upper tail, as Roadmap's
   ``pval.signal`` tracks (Zhang et al., *Genome Biol* 2008, MACS).

Default emission amplitudes and depths are calibrated so that per-mark statistics
(:func:`analysislib.epigenome.tensor.track_summary`: fraction of bins above −log10 p = 2, mean
−log10 p, lag-1 autocorrelation; and the cross-mark correlation matrix) match the averages of the
20 Roadmap pilot-region tracks (E003, E017, E065, E116 × 5 marks; catalog ``roadmap_pilot_arcsinh``);
``tests/test_simulate_epigenome.py`` checks this against the real files. For 12 cell types ×
200,000 bins the simulated per-mark means are within about 12 % (one sd over seeds) of the real
ones, the fractions above 2 within 0.01 and the lag-1 autocorrelations within 0.03; cross-mark
correlations are within 0.07, slightly lower than the real ones. Cell types are more alike
than the four real ones, which come from distant lineages; raise ``lineage_switch_rate`` for
more diverse tissues.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from analysislib.epigenome.tensor import (
    create_signal_dataset,
    cross_mark_correlation,
    track_summary,
)
from analysislib.errors import InvalidArgumentError
from analysislib.presets import Presets

__all__ = [
    "ASSAY_EMISSIONS",
    "CHROMATIN_STATES",
    "CORE_MARKS",
    "EPIGENOME_PRESETS",
    "STATE_FRACTIONS",
    "compare_mark_statistics",
    "mark_statistics",
    "neglog10_poisson_sf",
    "simulate_chromatin_states",
    "simulate_epigenome",
]

# Roadmap core 15-state ChromHMM model: (name, mean segment length in 25 bp bins).
CHROMATIN_STATES: tuple[tuple[str, int], ...] = (
    ("TssA", 60), ("TssAFlnk", 40), ("TxFlnk", 30), ("Tx", 600), ("TxWk", 500),
    ("EnhG", 40), ("Enh", 50), ("ZNF/Rpts", 200), ("Het", 800), ("TssBiv", 50),
    ("BivFlnk", 40), ("EnhBiv", 40), ("ReprPC", 300), ("ReprPCWk", 600), ("Quies", 1000),
)
STATE_NAMES = tuple(name for name, _ in CHROMATIN_STATES)
_S = {name: i for i, name in enumerate(STATE_NAMES)}

# Target genome fractions of the root path (roughly the Roadmap average over cell types).
STATE_FRACTIONS: dict[str, float] = {
    "TssA": 0.012, "TssAFlnk": 0.02, "TxFlnk": 0.004, "Tx": 0.05, "TxWk": 0.10, "EnhG": 0.006,
    "Enh": 0.045, "ZNF/Rpts": 0.012, "Het": 0.04, "TssBiv": 0.004, "BivFlnk": 0.005,
    "EnhBiv": 0.006, "ReprPC": 0.03, "ReprPCWk": 0.08, "Quies": 0.586,
}

# Pairs that neighbour each other more often than chance (TSS -> flank -> gene body ...).
_AFFINITY: tuple[tuple[str, str, float], ...] = (
    ("TssA", "TssAFlnk", 6.0), ("TssAFlnk", "TxFlnk", 4.0), ("TxFlnk", "Tx", 6.0),
    ("TssA", "Tx", 3.0), ("Tx", "TxWk", 3.0), ("Tx", "EnhG", 4.0), ("TxWk", "EnhG", 2.0),
    ("Enh", "TssAFlnk", 2.0), ("TssBiv", "BivFlnk", 6.0), ("BivFlnk", "ReprPC", 4.0),
    ("TssBiv", "ReprPC", 4.0), ("EnhBiv", "ReprPC", 3.0), ("ReprPC", "ReprPCWk", 3.0),
    ("ZNF/Rpts", "Het", 4.0),
)

# Where a lineage or cell type may move a segment: state -> {new state: weight}.
_SWITCHES: dict[str, dict[str, float]] = {
    "TssA": {"TssBiv": 0.4, "TssAFlnk": 0.3, "ReprPC": 0.15, "Quies": 0.15},
    "TssAFlnk": {"TssA": 0.3, "BivFlnk": 0.3, "Quies": 0.4},
    "TxFlnk": {"Tx": 0.5, "TssAFlnk": 0.5},
    "Tx": {"TxWk": 0.6, "Quies": 0.3, "ReprPCWk": 0.1},
    "TxWk": {"Tx": 0.4, "Quies": 0.5, "ReprPCWk": 0.1},
    "EnhG": {"Tx": 0.5, "Enh": 0.5},
    "Enh": {"Quies": 0.5, "EnhBiv": 0.2, "EnhG": 0.1, "ReprPCWk": 0.2},
    "ZNF/Rpts": {"Het": 0.6, "Quies": 0.4},
    "Het": {"Quies": 0.7, "ZNF/Rpts": 0.1, "ReprPCWk": 0.2},
    "TssBiv": {"TssA": 0.5, "ReprPC": 0.3, "TssAFlnk": 0.2},
    "BivFlnk": {"TssAFlnk": 0.5, "ReprPC": 0.5},
    "EnhBiv": {"Enh": 0.5, "ReprPC": 0.3, "Quies": 0.2},
    "ReprPC": {"ReprPCWk": 0.4, "TssBiv": 0.2, "Quies": 0.4},
    "ReprPCWk": {"ReprPC": 0.3, "Quies": 0.5, "Het": 0.2},
    "Quies": {"Enh": 0.35, "TxWk": 0.2, "ReprPCWk": 0.2, "Het": 0.15, "ReprPC": 0.1},
}
_ACTIVE_ELEMENTS = ("TssA", "TssAFlnk", "Enh", "EnhG")

CORE_MARKS = ("H3K4me3", "H3K4me1", "H3K36me3", "H3K27me3", "H3K9me3")

# Per assay: presence probability per state (unlisted states: ``floor``), mean fold enrichment
# of a present 200 bp block (``amplitude``) and the gamma shape of its spread. The five core
# marks follow the Roadmap emission matrix and are calibrated on the pilot-region tracks; the
# others are plausible extensions (not calibrated).
ASSAY_EMISSIONS: dict[str, dict[str, Any]] = {
    "H3K4me3": {"presence": {"TssA": 0.9, "TssAFlnk": 0.1, "TxFlnk": 0.1, "TssBiv": 0.6,
                             "BivFlnk": 0.2, "EnhG": 0.03, "Enh": 0.02, "EnhBiv": 0.03},
                "floor": 0.002, "amplitude": 15.0, "shape": 2.0},
    "H3K4me1": {"presence": {"TssA": 0.55, "TssAFlnk": 0.9, "TxFlnk": 0.6, "EnhG": 0.9,
                             "Enh": 0.85, "TssBiv": 0.5, "BivFlnk": 0.85, "EnhBiv": 0.6,
                             "ReprPC": 0.1, "Tx": 0.15, "TxWk": 0.08, "ReprPCWk": 0.05},
                "floor": 0.01, "amplitude": 2.4, "shape": 2.0},
    "H3K36me3": {"presence": {"TxFlnk": 0.8, "Tx": 0.9, "TxWk": 0.35, "EnhG": 0.8,
                              "ZNF/Rpts": 0.6, "TssAFlnk": 0.1, "Enh": 0.05, "Het": 0.05},
                 "floor": 0.01, "amplitude": 2.3, "shape": 2.0},
    "H3K27me3": {"presence": {"TssBiv": 0.75, "BivFlnk": 0.7, "EnhBiv": 0.5, "ReprPC": 0.55,
                              "ReprPCWk": 0.2, "Het": 0.3, "ZNF/Rpts": 0.2},
                 "floor": 0.01, "amplitude": 4.0, "shape": 1.0},
    "H3K9me3": {"presence": {"ZNF/Rpts": 0.8, "Het": 0.7, "ReprPC": 0.3, "ReprPCWk": 0.25,
                             "TssBiv": 0.05, "BivFlnk": 0.05},
                "floor": 0.01, "amplitude": 1.7, "shape": 2.0},
    "H3K27ac": {"presence": {"TssA": 0.9, "TssAFlnk": 0.7, "TxFlnk": 0.4, "EnhG": 0.5,
                             "Enh": 0.6},
                "floor": 0.005, "amplitude": 5.0, "shape": 1.5},
    "H3K9ac": {"presence": {"TssA": 0.9, "TssAFlnk": 0.6, "TxFlnk": 0.2, "Enh": 0.2},
               "floor": 0.005, "amplitude": 5.0, "shape": 1.5},
    "H3K4me2": {"presence": {"TssA": 0.9, "TssAFlnk": 0.9, "TxFlnk": 0.5, "EnhG": 0.6,
                             "Enh": 0.6, "TssBiv": 0.7, "BivFlnk": 0.6, "EnhBiv": 0.4},
                "floor": 0.005, "amplitude": 4.0, "shape": 1.5},
    "H2A.Z": {"presence": {"TssA": 0.8, "TssAFlnk": 0.6, "TssBiv": 0.8, "BivFlnk": 0.5,
                           "Enh": 0.3, "EnhBiv": 0.3},
              "floor": 0.01, "amplitude": 3.0, "shape": 1.5},
    "H3K79me2": {"presence": {"TxFlnk": 0.8, "TssAFlnk": 0.4, "Tx": 0.4, "TxWk": 0.15,
                              "EnhG": 0.3},
                 "floor": 0.005, "amplitude": 3.0, "shape": 2.0},
    "H4K20me1": {"presence": {"Tx": 0.5, "TxWk": 0.3, "TxFlnk": 0.5, "EnhG": 0.3},
                 "floor": 0.01, "amplitude": 2.0, "shape": 2.0},
    "DNase": {"presence": {"TssA": 0.9, "TssAFlnk": 0.6, "Enh": 0.4, "EnhG": 0.3,
                           "TssBiv": 0.5},
              "floor": 0.003, "amplitude": 6.0, "shape": 1.2},
}

BLOCK_BINS = 8  # 200 bp at 25 bp: ChromHMM's bin, the unit at which marks are present or not.

EPIGENOME_PRESETS: Presets[dict[str, Any]] = Presets("epigenome simulation", {
    # A couple of minutes on 2 CPU cores for a whole notebook: 8 cell types × 5 marks × 2.5 Mb.
    "quick": {"n_cells": 8, "assays": CORE_MARKS, "n_bins": 100_000, "n_lineages": 3, "seed": 0},
    # Pilot-region scale (1,126,469 bins = 28 Mb) with 48 cell types × 10 assays (~2.2 GB).
    "full": {"n_cells": 48, "n_bins": 1_126_469, "n_lineages": 8, "seed": 0,
             "assays": (*CORE_MARKS, "H3K27ac", "H3K9ac", "H3K4me2", "H2A.Z", "DNase")},
    # Individual-specific setting (ENTEx-like): 4 individuals × 4 tissues × 5 marks.
    "personal": {"n_cells": 4, "n_individuals": 4, "assays": CORE_MARKS, "n_bins": 100_000,
                 "n_lineages": 2, "individual_specific_fraction": 0.1, "seed": 0},
})


# --------------------------------------------------------------------------- chromatin states


def _jump_matrix(fractions: Mapping[str, float]) -> np.ndarray:
    """Jump matrix of the semi-Markov chain whose occupancy matches ``fractions``."""
    n = len(STATE_NAMES)
    lengths = np.array([length for _, length in CHROMATIN_STATES], dtype=float)
    target = np.array([fractions[name] for name in STATE_NAMES], dtype=float)
    target /= target.sum()
    affinity = np.ones((n, n))
    for a, b, boost in _AFFINITY:
        affinity[_S[a], _S[b]] = affinity[_S[b], _S[a]] = boost
    np.fill_diagonal(affinity, 0.0)
    weights = target / lengths
    for _ in range(50):  # fixed-point: rescale weights until occupancy hits the target
        jump = affinity * weights[None, :]
        jump /= jump.sum(axis=1, keepdims=True)
        eigvals, eigvecs = np.linalg.eig(jump.T)
        visits = np.abs(np.real(eigvecs[:, np.argmin(np.abs(eigvals - 1))]))
        occupancy = visits * lengths / np.sum(visits * lengths)
        weights *= target / occupancy
    jump = affinity * weights[None, :]
    return jump / jump.sum(axis=1, keepdims=True)


def _segment_length(rng: np.random.Generator, state: int, size: int | None = None) -> Any:
    mean = CHROMATIN_STATES[state][1]
    sigma = 0.6
    draw = mean * np.exp(sigma * rng.standard_normal(size) - sigma**2 / 2)
    return np.maximum(4, np.rint(draw)).astype(np.int64)


def simulate_chromatin_states(
    n_bins: int,
    rng: np.random.Generator,
    state_fractions: Mapping[str, float] | None = None,
) -> np.ndarray:
    """Draw a root chromatin-state path (int8 state index per bin) from the semi-Markov chain.

    Parameters
    ----------
    n_bins
        Path length in bins.
    rng
        Random generator.
    state_fractions
        Target genome fraction per state name (default :data:`STATE_FRACTIONS`).
    """
    jump = _jump_matrix(state_fractions or STATE_FRACTIONS)
    fractions = np.array([(state_fractions or STATE_FRACTIONS)[s] for s in STATE_NAMES])
    path = np.empty(n_bins, dtype=np.int8)
    state = int(rng.choice(len(STATE_NAMES), p=fractions / fractions.sum()))
    pos = 0
    while pos < n_bins:
        length = int(_segment_length(rng, state))
        path[pos: pos + length] = state
        pos += length
        state = int(rng.choice(len(STATE_NAMES), p=jump[state]))
    return path


def _runs(path: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) of each run of equal states."""
    change = np.flatnonzero(np.diff(path)) + 1
    starts = np.r_[0, change]
    return starts, np.r_[change, path.size]


def _switch_segments(path: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Copy a parent path, moving a share ``rate`` of its segments to a related state."""
    child = path.copy()
    starts, ends = _runs(path)
    chosen = np.flatnonzero(rng.random(starts.size) < rate)
    for k in chosen:
        old = STATE_NAMES[path[starts[k]]]
        options = _SWITCHES[old]
        new = _S[rng.choice(list(options), p=np.array(list(options.values())) /
                            sum(options.values()))]
        span = ends[k] - starts[k]
        length = min(span, int(_segment_length(rng, new)))
        offset = starts[k] + int(rng.integers(0, span - length + 1))
        child[offset: offset + length] = new
    return child


def _individual_changes(
    root: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Gained enhancers (in quiescent stretches) and lost active elements of one individual."""
    starts, ends = _runs(root)
    active = np.flatnonzero(np.isin(root[starts], [_S[s] for s in _ACTIVE_ELEMENTS]))
    quiet = np.flatnonzero(root[starts] == _S["Quies"])
    n_changes = round(fraction * active.size)
    n_gain = n_changes // 2 + n_changes % 2
    gains, losses = [], []
    for k in rng.choice(quiet, size=min(n_gain, quiet.size), replace=False) if quiet.size else []:
        span = ends[k] - starts[k]
        length = min(span, int(_segment_length(rng, _S["Enh"])))
        offset = starts[k] + int(rng.integers(0, span - length + 1))
        gains.append((offset, offset + length))
    n_loss = min(n_changes - n_gain, active.size)
    for k in rng.choice(active, size=n_loss, replace=False) if n_loss else []:
        losses.append((int(starts[k]), int(ends[k])))
    return gains, losses


# --------------------------------------------------------------------------- signal model


def neglog10_poisson_sf(count: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """−log10 P(X ≥ count) for X ~ Poisson(lam), continuous in ``count`` (MACS-style p-score).

    Uses the regularised incomplete gamma function, P(X ≥ k) = P(k, λ), and an asymptotic
    expansion of the tail where that underflows. ``count = 0`` gives 0.
    """
    from scipy import special

    count = np.asarray(count, dtype=np.float64)
    lam = np.broadcast_to(np.asarray(lam, dtype=np.float64), count.shape)
    out = np.zeros(count.shape)
    positive = count > 0
    k, mu = count[positive], lam[positive]
    tail = special.gammainc(k, mu)
    score = -np.log10(np.maximum(tail, 1e-300))
    tiny = tail < 1e-290
    if np.any(tiny):
        kt, mt = k[tiny], mu[tiny]
        log_tail = (kt * np.log(mt) - mt - special.gammaln(kt + 1)
                    - np.log1p(-np.minimum(mt / (kt + 1), 0.999)))
        score[tiny] = -log_tail / np.log(10)
    out[positive] = score
    return out


def _smooth_field(rng: np.random.Generator, n_bins: int, scale: float) -> np.ndarray:
    """Gaussian noise smoothed over ``scale`` bins, rescaled to unit variance."""
    from scipy.ndimage import gaussian_filter1d

    field = gaussian_filter1d(rng.standard_normal(n_bins), scale, mode="wrap")
    return field / field.std()


def _peak_kernel(width: float, skew: float) -> np.ndarray:
    """Two-sided exponential kernel: left scale width·(1−skew), right width·(1+skew)."""
    left, right = width * (1 - skew), width * (1 + skew)
    reach = int(np.ceil(5 * max(left, right)))
    offsets = np.arange(-reach, reach + 1, dtype=float)
    kernel = np.where(offsets < 0, np.exp(offsets / left), np.exp(-offsets / right))
    return kernel / kernel.sum()


def _moving_sum(x: np.ndarray, window: int) -> np.ndarray:
    """Sum over a centred window of ``window`` bins (fragment pileup)."""
    padded = np.concatenate([np.zeros(window // 2), x, np.zeros(window - 1 - window // 2)])
    cumulative = np.r_[0.0, np.cumsum(padded)]
    return cumulative[window:] - cumulative[:-window]


def _moving_mean(x: np.ndarray, window: int) -> np.ndarray:
    counts = _moving_sum(np.ones_like(x), window)
    return _moving_sum(x, window) / counts


def _presence_table(assays: Sequence[str], emissions: Mapping[str, Mapping[str, Any]]) -> np.ndarray:
    table = np.empty((len(STATE_NAMES), len(assays)))
    for j, assay in enumerate(assays):
        spec = emissions[assay]
        for i, state in enumerate(STATE_NAMES):
            table[i, j] = spec["presence"].get(state, spec["floor"])
    return table


def _jsonable_params(params: Mapping[str, Any]) -> str:
    return json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in params.items()},
                      default=str)


def simulate_epigenome(  # noqa: PLR0913 - one keyword per simulated effect
    preset: str | None = None,
    *,
    n_cells: int | None = None,
    assays: Sequence[str] | None = None,
    n_bins: int | None = None,
    bin_size: int = 25,
    n_lineages: int | None = None,
    n_individuals: int | None = None,
    individual_specific_fraction: float | None = None,
    seed: int | None = None,
    lineage_switch_rate: float = 0.25,
    cell_switch_rate: float = 0.08,
    state_fractions: Mapping[str, float] | None = None,
    emissions: Mapping[str, Mapping[str, Any]] | None = None,
    mean_depth: float = 4.0,
    depth_spread: float = 0.2,
    amplitude_spread: float = 0.2,
    background_sd: float = 0.35,
    background_shared: float = 0.5,
    block_noise_cv: float = 0.4,
    dispersion: float = 0.05,
    fragment_length: tuple[float, float] = (100.0, 225.0),
    peak_width: tuple[float, float] = (1.0, 4.0),
    peak_skew: tuple[float, float] = (-0.5, 0.5),
    chrom: str = "chrS",
    progress: bool = False,
) -> xr.Dataset:
    """Simulate −log10 p tracks for many cell types × assays from latent chromatin states.

    See the module docstring for the model. The same ``seed`` and arguments give the same
    dataset.

    Parameters
    ----------
    preset
        A name in :data:`EPIGENOME_PRESETS` (``"quick"``, ``"full"``, ``"personal"``) giving
        defaults for the size arguments and the seed; explicit arguments override it. Without a
        preset, ``n_cells``, ``n_bins`` and ``seed`` are required.
    n_cells
        Number of cell types (tissues).
    assays
        Assay names, keys of ``emissions`` (default :data:`ASSAY_EMISSIONS`).
    n_bins, bin_size
        Genome length in bins, and the bin width in bp.
    n_lineages
        Branches of the lineage tree; cell types are split evenly among them.
    n_individuals
        If given, an ``individual`` dimension with that many people sharing the cell-type
        state paths plus their own gained/lost elements.
    individual_specific_fraction
        Individual-specific changes per individual, as a share of the root's active elements
        (promoters and enhancers); half gains, half losses.
    seed
        Seed of the random generator.
    lineage_switch_rate, cell_switch_rate
        Share of parent segments switched to a related state for each lineage and cell type.
    state_fractions
        Target genome fraction per chromatin state (default :data:`STATE_FRACTIONS`).
    emissions
        Per-assay presence probabilities and amplitudes (default :data:`ASSAY_EMISSIONS`).
    mean_depth
        Mean background fragment pileup per bin (≈ reads × fragment length / genome size).
    depth_spread, amplitude_spread
        Log-normal sd of the per-track depth and enrichment (ChIP quality) multipliers.
    background_sd
        Log-normal sd of the smooth background field (mappability/GC/copy number).
    background_shared
        Share of the background field's variance common to all cell types.
    block_noise_cv
        Coefficient of variation of a cell type's enrichment at one 200 bp block around the
        value shared by all cell types.
    dispersion
        Gamma-Poisson overdispersion of read starts (0 gives Poisson).
    fragment_length
        Range (bp) of the per-cell-type fragment length over which reads are piled up.
    peak_width, peak_skew
        Ranges of the per-cell-type peak kernel width (bins) and skew (−1..1).
    chrom
        Chromosome label of the bins.
    progress
        Show a progress bar over cell types (useful for the ``full`` preset).

    Returns
    -------
    xarray.Dataset
        A signal dataset (``scale="neglog10p"``, all tracks observed) with the truth:
        ``chromatin_state`` (int8 index into the ``state`` coordinate, dims ``(cell, bin)`` or
        ``(individual, cell, bin)``), ``lineage_chromatin_state`` (lineage, bin),
        ``cell_lineage``, ``cell_fragment_length``, ``cell_peak_width``, ``cell_peak_skew``,
        ``track_depth``, ``track_amplitude``, ``state_presence`` (state, assay), and with
        individuals ``individual_peak`` (individual, bin: +1 gained, −1 lost, 0 unchanged).
        The attribute ``simulation`` holds the parameters as JSON.

    Examples
    --------
    >>> ds = simulate_epigenome(n_cells=2, n_bins=2_000, n_lineages=1, seed=1)
    >>> ds["signal"].shape
    (2, 5, 2000)
    """
    defaults = {"assays": CORE_MARKS, "n_lineages": 3, "individual_specific_fraction": 0.1,
                **(EPIGENOME_PRESETS[preset] if preset else {})}
    n_cells = defaults.get("n_cells") if n_cells is None else n_cells
    n_bins = defaults.get("n_bins") if n_bins is None else n_bins
    seed = defaults.get("seed") if seed is None else seed
    assays = defaults["assays"] if assays is None else assays
    n_lineages = defaults["n_lineages"] if n_lineages is None else n_lineages
    n_individuals = defaults.get("n_individuals") if n_individuals is None else n_individuals
    if individual_specific_fraction is None:
        individual_specific_fraction = defaults["individual_specific_fraction"]
    if n_cells is None or n_bins is None or seed is None:
        raise TypeError("simulate_epigenome needs a preset, or n_cells, n_bins and seed")
    emissions = dict(ASSAY_EMISSIONS if emissions is None else emissions)
    unknown = [a for a in assays if a not in emissions]
    if unknown:
        raise InvalidArgumentError(f"no emission parameters for assays {unknown}; known: {sorted(emissions)}")
    if n_cells < 1 or n_bins < 1 or n_lineages < 1:
        raise InvalidArgumentError("n_cells, n_bins and n_lineages must be positive")
    if n_individuals is not None and n_individuals < 1:
        raise InvalidArgumentError("n_individuals must be positive or None")
    params = {k: v for k, v in locals().items()
              if k not in ("emissions", "unknown", "progress", "defaults")}
    rng = np.random.default_rng(seed)
    assays = list(assays)
    n_assays = len(assays)

    # Latent states: root -> lineages -> cell types (-> individuals).
    root = simulate_chromatin_states(n_bins, rng, state_fractions)
    lineages = np.stack([_switch_segments(root, lineage_switch_rate, rng)
                         for _ in range(n_lineages)])
    cell_lineage = (np.arange(n_cells) * n_lineages) // n_cells
    cell_paths = np.stack([_switch_segments(lineages[g], cell_switch_rate, rng)
                           for g in cell_lineage])
    people = 1 if n_individuals is None else n_individuals
    states = np.broadcast_to(cell_paths, (people, n_cells, n_bins)).copy()
    individual_peak = np.zeros((people, n_bins), dtype=np.int8)
    if n_individuals is not None:
        for person in range(people):
            gains, losses = _individual_changes(root, individual_specific_fraction, rng)
            for lo, hi in gains:
                states[person, :, lo:hi] = _S["Enh"]
                individual_peak[person, lo:hi] = 1
            active = np.isin(states[person], [_S[s] for s in _ACTIVE_ELEMENTS])
            for lo, hi in losses:
                states[person, :, lo:hi][active[:, lo:hi]] = _S["Quies"]
                individual_peak[person, lo:hi] = -1

    # Emission parameters shared by all cells: presence uniforms and strengths per block.
    presence = _presence_table(assays, emissions)
    n_blocks = -(-n_bins // BLOCK_BINS)
    block_of_bin = np.arange(n_bins) // BLOCK_BINS
    uniforms = rng.random((n_assays, n_blocks))
    shapes = np.array([emissions[a]["shape"] for a in assays])
    strength = rng.gamma(shapes[:, None], 1.0 / shapes[:, None], size=(n_assays, n_blocks))
    amplitude = np.array([emissions[a]["amplitude"] for a in assays])

    # Cell-type properties: peak shape, fragment length, background field.
    frag_bp = rng.uniform(*fragment_length, size=n_cells)
    frag_bins = np.maximum(1, np.rint(frag_bp / bin_size)).astype(int)
    width = rng.uniform(*peak_width, size=n_cells)
    skew = rng.uniform(*peak_skew, size=n_cells)
    shared_field = _smooth_field(rng, n_bins, 40.0)

    track_shape = (people, n_cells, n_assays)
    depth = mean_depth * np.exp(depth_spread * rng.standard_normal(track_shape)
                                - depth_spread**2 / 2)
    quality = np.exp(amplitude_spread * rng.standard_normal(track_shape) - amplitude_spread**2 / 2)
    library_ratio = rng.uniform(0.5, 1.0, size=track_shape)
    noise_shape = 1.0 / block_noise_cv**2 if block_noise_cv > 0 else np.inf

    signal = np.empty((people, n_cells, n_assays, n_bins), dtype=np.float32)
    cell_order: Any = range(n_cells)
    if progress:
        from tqdm.auto import tqdm

        cell_order = tqdm(cell_order, desc="simulating cell types", unit="cell")
    for c in cell_order:
        kernel = _peak_kernel(width[c], skew[c])
        window = int(frag_bins[c])
        z = (np.sqrt(background_shared) * shared_field
             + np.sqrt(1 - background_shared) * _smooth_field(rng, n_bins, 40.0))
        bg = np.exp(background_sd * z - background_sd**2 / 2)
        local = np.maximum.reduce([np.ones(n_bins), _moving_mean(bg, 40), _moving_mean(bg, 400)])
        for j in range(n_assays):
            cell_strength = strength[j] * (
                rng.gamma(noise_shape, 1.0 / noise_shape, n_blocks) if np.isfinite(noise_shape)
                else 1.0)
            for person in range(people):
                on = uniforms[j][block_of_bin] < presence[states[person, c], j]
                enrichment = np.where(on, amplitude[j] * cell_strength[block_of_bin], 0.0)
                enrichment = np.convolve(enrichment * quality[person, c, j], kernel, mode="same")
                rate = depth[person, c, j] / window * bg * (1.0 + enrichment)
                if dispersion > 0:
                    rate = rate * rng.gamma(1.0 / dispersion, dispersion, n_bins)
                starts = rng.poisson(rate)
                pileup = _moving_sum(starts.astype(float), window)
                lam = depth[person, c, j] * local
                ratio = library_ratio[person, c, j]
                signal[person, c, j] = neglog10_poisson_sf(pileup * ratio, lam * ratio)

    cells = [f"cell{c:03d}" for c in range(n_cells)]
    individuals = None if n_individuals is None else [f"ind{p:02d}" for p in range(people)]
    squeeze = n_individuals is None
    track_dims = ("cell", "assay") if squeeze else ("individual", "cell", "assay")
    state_dims = ("cell", "bin") if squeeze else ("individual", "cell", "bin")
    extra: dict[str, tuple[tuple[str, ...], Any]] = {
        "chromatin_state": (state_dims, states[0] if squeeze else states),
        "lineage_chromatin_state": (("lineage", "bin"), lineages),
        "cell_lineage": (("cell",), cell_lineage.astype(np.int64)),
        "cell_fragment_length": (("cell",), frag_bins * bin_size),
        "cell_peak_width": (("cell",), width),
        "cell_peak_skew": (("cell",), skew),
        "track_depth": (track_dims, depth[0] if squeeze else depth),
        "track_amplitude": (track_dims, (quality * amplitude)[0] if squeeze
                            else quality * amplitude),
        "state_presence": (("state", "assay"), presence),
    }
    if not squeeze:
        extra["individual_peak"] = (("individual", "bin"), individual_peak)
    ds = create_signal_dataset(
        signal[0] if squeeze else signal, cells=cells, assays=assays, individuals=individuals,
        observed=np.ones(track_shape[1:] if squeeze else track_shape, dtype=bool),
        chrom=chrom, bin_size=bin_size, scale="neglog10p", extra=extra,
        attrs={"source": "analysislib.simulate.epigenome.simulate_epigenome",
               "simulation": _jsonable_params(params)})
    ds = ds.assign_coords(state=list(STATE_NAMES), lineage=np.arange(n_lineages))
    ds["chromatin_state"].attrs["states"] = list(STATE_NAMES)
    return ds


# --------------------------------------------------------------------------- calibration


def mark_statistics(ds: xr.Dataset, threshold: float = 2.0) -> pd.DataFrame:
    """Per-assay averages over cells of :func:`~analysislib.epigenome.tensor.track_summary`.

    Returns
    -------
    pandas.DataFrame
        Indexed by assay, with columns ``fraction_above``, ``mean``, ``median``, ``q99`` and
        ``lag1_autocorrelation``.
    """
    summary = track_summary(ds, threshold=threshold)
    columns = ["fraction_above", "mean", "median", "q99", "lag1_autocorrelation"]
    return summary.groupby("assay")[columns].mean()


def compare_mark_statistics(simulated: xr.Dataset, reference: xr.Dataset) -> dict[str, pd.DataFrame]:
    """Set simulated per-mark statistics beside a reference (for example real Roadmap tracks).

    Only assays present in both are compared.

    Returns
    -------
    dict
        ``"marks"``: a DataFrame indexed by assay with ``<statistic>_simulated`` and
        ``<statistic>_reference`` columns; ``"cross_mark_simulated"`` and
        ``"cross_mark_reference"``: assay × assay mean correlations (arcsinh scale);
        ``"cross_mark_difference"``: simulated minus reference.
    """
    common = [a for a in reference["assay"].values.tolist() if a in simulated["assay"].values]
    if not common:
        raise InvalidArgumentError("no assay in common between the simulated and reference datasets")
    sim = mark_statistics(simulated.sel(assay=common))
    ref = mark_statistics(reference.sel(assay=common))
    marks = sim.add_suffix("_simulated").join(ref.add_suffix("_reference")).loc[common]
    sim_corr = cross_mark_correlation(simulated.sel(assay=common)).loc[common, common]
    ref_corr = cross_mark_correlation(reference.sel(assay=common)).loc[common, common]
    return {"marks": marks, "cross_mark_simulated": sim_corr, "cross_mark_reference": ref_corr,
            "cross_mark_difference": sim_corr - ref_corr}
