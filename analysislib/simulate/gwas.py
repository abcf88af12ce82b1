"""Simulated GWAS summary statistics with functional annotations and a known prior (DeepWAS).

The synthetic stand-in for the DeepWAS experiments (Amin, Potapczynski & Wilson, ICML 2025,
arXiv 2506.19598: the semi-synthetic simulation and the simulation of GWAS summary statistics,
as the authors' repository implements them):

1. **Genotypes and LD.** A coalescent panel from :func:`~analysislib.simulate.genotypes.
   simulate_genotypes` (one population, CEU by default). SNPs with minor allele frequency at least
   ``min_maf`` are kept and cut into contiguous LD blocks of ``ld_block_snps`` SNPs. The LD
   matrix ``R`` is **block-diagonal**: within a block ``R_b = Z_b Z_bᵀ / n_ref`` where ``Z_b``
   holds the standardised haplotype alleles. A dense
   panel ``R`` carries off-band ``r² ≈ 1/n_ref`` everywhere, which adds about ``N h² / n_ref``
   to the mean χ² and inflates the LDSC intercept; the block-diagonal ``R`` avoids this, and it
   is exactly PSD.
2. **Annotations.** Epigenomic tracks from :func:`~analysislib.simulate.epigenome.
   simulate_epigenome` laid over the same region (bin ``b`` covers bp ``[region_start + 25 b,
   region_start + 25 (b + 1))``), arcsinh-transformed and standardised per track (DeepWAS
   standardises its bigWig tracks with precomputed means and standard deviations). Each SNP gets a
   window of ``window_bins`` bins centred on it (``window_size_data = 16`` in the authors'
   simulation config), shape ``(snps, tracks, window)``. Two conservation-like scalar scores
   stand in for the dbNSFP columns: ``conservation`` (a smooth phyloP-like field raised in
   promoters and enhancers of the root chromatin-state path) and ``coding`` (a sparse
   missense-like score inside transcribed states).
3. **Effect sizes.** ``log F_j = g(a_j) + c`` with a known nonlinear ``g`` (:class:`TrueLogF`:
   linear terms on window means, a product of rectified window means, and a threshold on the
   centre of a window, which only a model that sees the window shape can represent), and ``c``
   chosen so that ``Σ_j F_j = h2`` (standardised effects, ``β_j ~ N(0, F_j)``). The stored truth
   is ``log(N F_j)``, the z-scale prior variance that the DeepWAS network outputs (``log_F_N``).
4. **Summary statistics.** ``z = √N R β + e`` with ``e ~ N(0, R)`` drawn per block with the
   Z-trick (``Rβ = Z(Zᵀβ)/n_ref`` and ``e = Z g / √n_ref``, ``g ~ N(0, I)``), exact and
   ``O(m n)``. Hence ``z ~ N(0, R diag(N F) R + R)``, the DeepWAS marginal
   likelihood with ``σ = 1``.
5. **LD scores** from the same ``R`` with the unbiased ``r̃² = r² − (1 − r²)/(n_ref − 2)``
   (:func:`analysislib.gwas.ldsc.annotation_ld_scores`).
6. **Held-out regions.** The LD blocks are grouped into ``n_segments`` contiguous segments; whole
   segments are labelled ``test`` or ``valid`` (the analogue of DeepWAS's held-out chromosomes),
   the rest ``train``. Because ``R`` is block-diagonal and segments hold whole blocks, held-out
   z-scores are independent of the training ones.

Choices the paper leaves open (documented here): the block-diagonal ``R`` with equal-count
blocks (rather than blocks at LD minima), the form of the true function ``g`` and its default
coefficients (:data:`DEFAULT_TRUTH`), the two scalar scores, and the split by whole segments.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import xarray as xr

from analysislib.errors import InvalidArgumentError
from analysislib.presets import Presets

__all__ = [
    "DEFAULT_TRUTH",
    "GWAS_PRESETS",
    "GwasPreset",
    "SimulatedGwas",
    "TrueLogF",
    "block_ld_matrix",
    "simulate_gwas",
    "simulate_gwas_from_panel",
    "simulate_summary_statistics",
]

# Chromatin states whose bins get higher conservation (promoters, enhancers).
_FUNCTIONAL_STATES = ("TssA", "TssAFlnk", "EnhG", "Enh")
_TRANSCRIBED_STATES = ("Tx", "TxWk", "TxFlnk")


@dataclass(frozen=True)
class TrueLogF:
    """The known function from annotations to relative log prior variance.

    ``g(a) = Σ_f linear[f]·u_f + Σ_(f, h, w) w·s(u_f)·s(u_h) + Σ_(f, t, w) w·1[c_f > t]``,
    where for a track ``f`` ``m_f`` is its mean over the SNP's window, ``c_f`` the mean of the
    two central bins (for a scalar score both are its value), ``u_f = k tanh(m_f / k)`` softly
    clips the (skewed, standardised) means at ``k = soft_clip`` and ``s(x) = 1/(1 + e^{-2(x-1)})``
    is a gate that opens about one standard deviation above the mean. Bounded terms keep the
    prior variances within a realistic range (a raw product of peak heights puts most of the
    heritability on a handful of SNPs). Feature names are ``"<cell>:<assay>"`` for tracks and the
    score name for scalars.

    Attributes
    ----------
    linear
        Feature name -> weight on its (soft-clipped) window mean.
    interactions
        ``(feature, feature, weight)``: a product of two gates (an AND of two marks).
    centre_peaks
        ``(feature, threshold, weight)`` step functions of the window centre.
    soft_clip
        ``k`` above; ``None`` uses the raw means (then ``g`` with only ``linear`` terms is
        exactly log-linear in the window means).
    """

    linear: Mapping[str, float] = field(default_factory=dict)
    interactions: tuple[tuple[str, str, float], ...] = ()
    centre_peaks: tuple[tuple[str, float, float], ...] = ()
    soft_clip: float | None = 3.0

    def features(self) -> list[str]:
        """Names of the features the function reads."""
        names = list(self.linear)
        names += [n for a, b, _ in self.interactions for n in (a, b)]
        names += [n for n, _, _ in self.centre_peaks]
        return list(dict.fromkeys(names))

    @property
    def is_log_linear(self) -> bool:
        """True when ``g`` is linear in the window means (no interaction or threshold term)."""
        return not self.interactions and not self.centre_peaks

    def __call__(
        self,
        window: np.ndarray,
        scalars: np.ndarray,
        track_names: Sequence[str],
        scalar_names: Sequence[str],
    ) -> np.ndarray:
        """Evaluate ``g`` for SNPs with track windows ``(snps, tracks, window)`` and scalars.

        Raises
        ------
        KeyError
            If the function names a feature that is not among ``track_names``/``scalar_names``.
        """
        window = np.asarray(window, dtype=np.float64)
        scalars = np.asarray(scalars, dtype=np.float64).reshape(window.shape[0], -1)
        tracks = {name: k for k, name in enumerate(track_names)}
        scores = {name: k for k, name in enumerate(scalar_names)}
        width = window.shape[2]
        centre = slice(max(width // 2 - 1, 0), width // 2 + 1)

        def mean(name: str) -> np.ndarray:
            if name in tracks:
                return window[:, tracks[name]].mean(axis=1)
            if name in scores:
                return scalars[:, scores[name]]
            raise KeyError(f"true log F uses feature {name!r}, which the annotations lack; "
                           f"tracks {list(track_names)[:6]}..., scalars {list(scalar_names)}")

        def middle(name: str) -> np.ndarray:
            if name in tracks:
                return window[:, tracks[name], centre].mean(axis=1)
            return mean(name)

        def clipped(name: str) -> np.ndarray:
            m = mean(name)
            return m if self.soft_clip is None else self.soft_clip * np.tanh(m / self.soft_clip)

        def gate(x: np.ndarray) -> np.ndarray:
            return 1.0 / (1.0 + np.exp(-2.0 * (x - 1.0)))

        out = np.zeros(window.shape[0])
        for name, weight in self.linear.items():
            out += weight * clipped(name)
        for a, b, weight in self.interactions:
            out += weight * gate(clipped(a)) * gate(clipped(b))
        for name, threshold, weight in self.centre_peaks:
            out += weight * (middle(name) > threshold)
        return out

    def to_json(self) -> str:
        """JSON description (stored in dataset attributes)."""
        return json.dumps({"linear": dict(self.linear),
                           "interactions": [list(t) for t in self.interactions],
                           "centre_peaks": [list(t) for t in self.centre_peaks],
                           "soft_clip": self.soft_clip})


#: Default truth: enhancer (H3K4me1) and conservation raise the prior variance, heterochromatin
#: (H3K9me3) lowers it, conserved promoters (H3K4me3 x conservation) interact, and SNPs at the
#: centre of a strong H3K4me3 peak of a second cell type get a step increase.
DEFAULT_TRUTH = TrueLogF(
    linear={"cell000:H3K4me1": 0.6, "cell000:H3K9me3": -0.4, "conservation": 0.5},
    interactions=(("cell000:H3K4me3", "conservation", 3.0),),
    centre_peaks=(("cell001:H3K4me3", 1.0, 2.0),),
)


@dataclass(frozen=True)
class GwasPreset:
    """Parameters of one GWAS simulation.

    Attributes
    ----------
    genotype_preset
        Preset of :func:`~analysislib.simulate.genotypes.simulate_genotypes`.
    genotype_overrides
        Overrides for it (population, sample size, region length).
    min_maf
        Minimum minor allele frequency of a kept SNP (in the panel).
    ld_block_snps
        SNPs per LD block of the block-diagonal ``R`` (the last block takes the remainder).
    n_gwas
        GWAS sample size ``N`` (UKBB: 407,527).
    h2
        Heritability carried by the region's SNPs (``Σ F_j``).
    epigenome_preset, epigenome_overrides
        Arguments of :func:`~analysislib.simulate.epigenome.simulate_epigenome`; ``n_bins`` is
        set from the region length.
    n_track_cells
        Cell types whose tracks become annotations (all assays of the first ``n_track_cells``).
    window_bins
        Bins (25 bp) in each SNP's annotation window.
    n_segments, test_fraction, valid_fraction
        Hold-out layout: LD blocks are grouped into ``n_segments`` contiguous segments, and
        these shares of segments (at least one each when positive) are held out.
    """

    genotype_preset: str = "quick"
    genotype_overrides: Mapping[str, Any] = field(default_factory=dict)
    min_maf: float = 0.05
    ld_block_snps: int = 250
    n_gwas: float = 200_000.0
    h2: float = 0.004
    epigenome_preset: str = "quick"
    epigenome_overrides: Mapping[str, Any] = field(default_factory=dict)
    n_track_cells: int = 4
    window_bins: int = 16
    n_segments: int = 10
    test_fraction: float = 0.2
    valid_fraction: float = 0.1


#: ``quick``: CEU 300 diploids over 2 Mb (about 3,100 SNPs with MAF >= 5% in 250-SNP blocks;
#: seeds 0 and 1 gave 3,141 and 3,051), 4 cell types x 5 marks = 20 tracks, h2 = 0.004 (mean
#: chi2 about 6-10), about 10 s on 2 busy cores. ``standard``: CEU 500 diploids over 14 Mb with
#: MAF >= 5% (about 23,000 SNPs in 44-48 LD blocks of 500; seeds 0-4 gave 21,912-24,169), the
#: same 20 tracks (the epigenome's ``quick`` preset, 8 cell types, over 560,000 bins), h2 = 0.02
#: (so the per-SNP signal ``N h2 / M`` and the mean chi2, 7.4-8.9 for seeds 0-4, are close to
#: ``quick``'s), 20 segments (15,400-17,200 training SNPs in 14, 2,000-2,500 validation SNPs in
#: 2, 4,000-5,000 test SNPs in 4); 16-42 s (depending on the load) and 1.6 GB peak on one
#: thread: the scale at which notebook 40 tests whether larger priors help.
#: ``full``: CEU 2,500 diploids over 20 Mb with
#: MAF >= 1% (about 26,500 SNPs; not run here),
#: 1,000-SNP blocks, 12 cell types x 10 assays = 120 tracks, h2 = 0.02.
GWAS_PRESETS: Presets[GwasPreset] = Presets("GWAS simulation", {
    "quick": GwasPreset(
        genotype_overrides={"populations": ("CEU",), "samples_per_population": 300,
                            "sequence_length": 2_000_000}),
    "standard": GwasPreset(
        genotype_overrides={"populations": ("CEU",), "samples_per_population": 500,
                            "sequence_length": 14_000_000},
        ld_block_snps=500, h2=0.02, n_segments=20),
    "full": GwasPreset(
        genotype_preset="full",
        genotype_overrides={"populations": ("CEU",), "samples_per_population": 2500,
                            "sequence_length": 20_000_000, "variant_chunks": None},
        min_maf=0.01, ld_block_snps=1000, h2=0.02,
        epigenome_preset="full", epigenome_overrides={"n_cells": 12},
        n_track_cells=12, n_segments=20),
})


@dataclass
class SimulatedGwas:
    """Simulated summary statistics, annotations, LD and the truth.

    Attributes
    ----------
    z
        z-scores ``√N β̂`` (float64, ``(snps,)``).
    beta
        True standardised effects ``β`` (``(snps,)``).
    true_log_f
        True ``log(N F_j)``: the z-scale prior variance (``(snps,)``).
    annotations
        Track windows, float32 ``(snps, tracks, window_bins)`` (standardised arcsinh signal).
    scalar_annotations
        Conservation-like scores, float32 ``(snps, scalars)`` (standardised).
    track_names, scalar_names
        Feature names (``"cell000:H3K4me1"``, ``"conservation"``).
    R
        Block-diagonal LD matrix, ``scipy.sparse.csr_matrix`` float64 ``(snps, snps)``.
    ld_scores
        ``Σ_k r̃²_jk`` within the block (including ``j`` itself).
    positions
        1-based bp positions.
    maf
        Panel minor allele frequencies.
    ld_block, segment
        Block and segment index per SNP.
    split
        ``"train"``, ``"valid"`` or ``"test"`` per SNP.
    n_gwas, n_ref, h2
        GWAS sample size, reference haplotypes behind ``R``, and region heritability.
    truth
        The :class:`TrueLogF` used.
    params
        The preset with overrides applied.
    seed
        Seed of the simulation.
    """

    z: np.ndarray
    beta: np.ndarray
    true_log_f: np.ndarray
    annotations: np.ndarray
    scalar_annotations: np.ndarray
    track_names: list[str]
    scalar_names: list[str]
    R: sp.csr_matrix
    ld_scores: np.ndarray
    positions: np.ndarray
    maf: np.ndarray
    ld_block: np.ndarray
    segment: np.ndarray
    split: np.ndarray
    n_gwas: float
    n_ref: int
    h2: float
    truth: TrueLogF
    params: GwasPreset = field(repr=False)
    seed: int = 0

    @property
    def n_snps(self) -> int:
        """Number of SNPs."""
        return int(self.z.shape[0])

    @property
    def feature_names(self) -> list[str]:
        """Track names followed by scalar names."""
        return [*self.track_names, *self.scalar_names]

    @property
    def chi2(self) -> np.ndarray:
        """χ² statistics ``z²``."""
        return self.z ** 2

    def indices(self, split: str | Sequence[str]) -> np.ndarray:
        """Indices of the SNPs in one split (or several)."""
        labels = [split] if isinstance(split, str) else list(split)
        unknown = sorted(set(labels) - {"train", "valid", "test"})
        if unknown:
            raise InvalidArgumentError(f"unknown split(s) {unknown}; use 'train', 'valid' or 'test'")
        return np.flatnonzero(np.isin(self.split, labels))

    def segment_bounds(self, split: str | Sequence[str]) -> list[tuple[int, int]]:
        """Contiguous ``[start, stop)`` SNP index ranges covering a split (one per run)."""
        inside = np.isin(self.split, [split] if isinstance(split, str) else list(split))
        edges = np.flatnonzero(np.diff(np.r_[0, inside.astype(np.int8), 0]))
        return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]

    def true_enrichment(self, annotation: np.ndarray, names: Sequence[str] | None = None
                        ) -> pd.DataFrame:
        """Expected ``Prop_h2``, ``Prop_SNPs`` and enrichment of binary annotations.

        ``Prop_h2(c) = Σ_{j∈c} F_j / Σ_j F_j`` from the true prior variances (the expected
        share of heritability, which S-LDSC estimates).

        Parameters
        ----------
        annotation
            Boolean or 0/1 array ``(snps,)`` or ``(snps, categories)``.
        names
            Category names (default ``cat0``, ``cat1``...).
        """
        a = np.asarray(annotation, dtype=np.float64)
        if a.ndim == 1:
            a = a[:, None]
        if a.shape[0] != self.n_snps:
            raise InvalidArgumentError(f"annotation has {a.shape[0]} rows; the simulation has "
                             f"{self.n_snps} SNPs")
        f = np.exp(self.true_log_f)
        prop_h2 = a.T @ f / f.sum()
        prop_snps = a.mean(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            enrichment = prop_h2 / prop_snps
        names = list(names) if names is not None else [f"cat{k}" for k in range(a.shape[1])]
        return pd.DataFrame({"category": names, "prop_snps": prop_snps, "prop_h2": prop_h2,
                             "enrichment": enrichment})

    def to_dataset(self) -> xr.Dataset:
        """The per-SNP arrays as an ``xarray.Dataset`` (``R`` is kept out; it is sparse)."""
        ds = xr.Dataset(
            {
                "z": ("snps", self.z),
                "beta": ("snps", self.beta),
                "true_log_f": ("snps", self.true_log_f),
                "annotation": (("snps", "track", "window"), self.annotations),
                "scalar_annotation": (("snps", "scalar"), self.scalar_annotations),
                "ld_score": ("snps", self.ld_scores),
                "maf": ("snps", self.maf),
                "ld_block": ("snps", self.ld_block),
                "segment": ("snps", self.segment),
                "split": ("snps", self.split.astype(str)),
            },
            coords={"position": ("snps", self.positions), "track": self.track_names,
                    "scalar": self.scalar_names},
            attrs={"n_gwas": float(self.n_gwas), "n_ref": int(self.n_ref), "h2": float(self.h2),
                   "truth": self.truth.to_json(), "seed": int(self.seed),
                   "source": "analysislib.simulate.gwas.simulate_gwas"},
        )
        return ds


# --------------------------------------------------------------------------------- LD blocks


def _block_edges(n_snps: int, block_snps: int) -> np.ndarray:
    """Block starts plus the end: equal blocks, a short remainder (< half) merged into the last."""
    if block_snps < 2:
        raise InvalidArgumentError(f"ld_block_snps must be at least 2, got {block_snps}")
    edges = [*list(range(0, n_snps, block_snps)), n_snps]
    if len(edges) > 2 and edges[-1] - edges[-2] < block_snps // 2:
        del edges[-2]
    return np.asarray(edges, dtype=np.int64)


def _standardised_haplotypes(haplotypes: np.ndarray) -> np.ndarray:
    """Centred rows scaled to unit variance (ddof 0), so ``Z Zᵀ / n`` has a unit diagonal."""
    h = np.asarray(haplotypes, dtype=np.float64)
    h = h - h.mean(axis=1, keepdims=True)
    sd = h.std(axis=1, keepdims=True)
    if np.any(sd == 0):
        bad = int(np.flatnonzero(sd[:, 0] == 0)[0])
        raise InvalidArgumentError(f"SNP {bad} is monomorphic in the reference haplotypes")
    return h / sd


def block_ld_matrix(haplotypes: np.ndarray, edges: np.ndarray) -> sp.csr_matrix:
    """Block-diagonal LD (correlation) matrix from 0/1 haplotypes ``(snps, n_ref)``.

    Parameters
    ----------
    haplotypes
        Allele indicators, one row per SNP.
    edges
        Block boundaries ``[0, ..., snps]``.

    Returns
    -------
    scipy.sparse.csr_matrix
        ``R_b = Z_b Z_bᵀ / n_ref`` on the diagonal blocks, exactly PSD with unit diagonal.
    """
    z = _standardised_haplotypes(haplotypes)
    n = z.shape[1]
    blocks = [z[a:b] @ z[a:b].T / n for a, b in itertools.pairwise(edges)]
    return sp.block_diag(blocks, format="csr")


def simulate_summary_statistics(
    haplotypes: np.ndarray,
    edges: np.ndarray,
    variance: np.ndarray,
    n_gwas: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """``z = √N R β + e`` with ``β_j ~ N(0, variance_j)`` and ``e ~ N(0, R)``, per LD block.

    Uses the Z-trick, exact and with no Cholesky factor: with standardised haplotypes ``Z_b``,
    ``R_b β_b = Z_b (Z_bᵀ β_b) / n`` and ``e_b = Z_b g_b / √n`` with ``g_b ~ N(0, I_n)``.

    Returns
    -------
    z, beta : numpy.ndarray
    """
    z_mat = _standardised_haplotypes(haplotypes)
    n = z_mat.shape[1]
    variance = np.asarray(variance, dtype=np.float64)
    if variance.shape != (z_mat.shape[0],) or np.any(variance < 0):
        raise InvalidArgumentError("variance must be one non-negative value per SNP")
    beta = rng.standard_normal(len(variance)) * np.sqrt(variance)
    z = np.empty_like(beta)
    for a, b in itertools.pairwise(edges):
        zb = z_mat[a:b]
        r_beta = zb @ (zb.T @ beta[a:b]) / n
        noise = zb @ rng.standard_normal(n) / np.sqrt(n)
        z[a:b] = np.sqrt(n_gwas) * r_beta + noise
    return z, beta


# ------------------------------------------------------------------------------ annotations


def _standardise_tracks(signal: np.ndarray) -> np.ndarray:
    """arcsinh then z-score per track over the whole region, (tracks, bins) float64."""
    x = np.arcsinh(np.asarray(signal, dtype=np.float64))
    sd = x.std(axis=1, keepdims=True)
    return (x - x.mean(axis=1, keepdims=True)) / np.where(sd > 0, sd, 1.0)


def _windows(values: np.ndarray, centre_bins: np.ndarray, width: int) -> np.ndarray:
    """``values[:, b - width//2 : b + width - width//2]`` per SNP (edge-padded), (snps, F, W)."""
    half = width // 2
    padded = np.pad(values, ((0, 0), (half, width - half)), mode="edge")
    index = centre_bins[:, None] + np.arange(width)[None, :]  # offset by the left pad
    return np.transpose(padded[:, index], (1, 0, 2))


def _scalar_scores(states: np.ndarray, state_names: Sequence[str], rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Per-bin ``conservation`` and ``coding`` scores from a chromatin-state path."""
    from scipy.ndimage import gaussian_filter1d

    n_bins = states.shape[0]
    functional = np.isin(states, [state_names.index(s) for s in _FUNCTIONAL_STATES])
    transcribed = np.isin(states, [state_names.index(s) for s in _TRANSCRIBED_STATES])
    field_ = gaussian_filter1d(rng.standard_normal(n_bins), 40.0, mode="wrap")
    conservation = field_ / field_.std() + 2.0 * functional + 0.5 * rng.standard_normal(n_bins)
    coding = np.where(transcribed & (rng.random(n_bins) < 0.1),
                      rng.gamma(2.0, 1.0, size=n_bins), 0.0)
    scores = np.stack([conservation, coding])
    scores = (scores - scores.mean(axis=1, keepdims=True)) / scores.std(axis=1, keepdims=True)
    return scores[0], scores[1]


# ------------------------------------------------------------------------------ the simulator


def _resolve(preset: str | GwasPreset, overrides: Mapping[str, Any]) -> GwasPreset:
    params = GWAS_PRESETS.resolve(preset, **overrides)
    if not 0 < params.h2 <= 1:
        raise InvalidArgumentError(f"h2 must lie in (0, 1], got {params.h2}")
    if params.n_gwas <= 0:
        raise InvalidArgumentError(f"n_gwas must be positive, got {params.n_gwas}")
    if not 0 <= params.min_maf < 0.5:
        raise InvalidArgumentError(f"min_maf must lie in [0, 0.5), got {params.min_maf}")
    if params.window_bins < 2:
        raise InvalidArgumentError(f"window_bins must be at least 2, got {params.window_bins}")
    if params.test_fraction < 0 or params.valid_fraction < 0 or (
            params.test_fraction + params.valid_fraction >= 1):
        raise InvalidArgumentError("test_fraction and valid_fraction must be non-negative and sum below 1")
    return params


def _split_segments(n_blocks: int, params: GwasPreset, rng: np.random.Generator
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Segment index per block and the split label per segment."""
    n_segments = max(1, min(params.n_segments, n_blocks))
    block_segment = np.minimum(np.arange(n_blocks) * n_segments // n_blocks, n_segments - 1)
    n_test = max(1, round(params.test_fraction * n_segments)) if params.test_fraction > 0 else 0
    n_valid = max(1, round(params.valid_fraction * n_segments)) if params.valid_fraction > 0 else 0
    if n_test + n_valid >= n_segments:
        raise InvalidArgumentError(f"{n_segments} segments cannot hold {n_test} test and {n_valid} "
                         "validation segments plus training data; lower the fractions or add "
                         "SNPs")
    order = rng.permutation(n_segments)
    labels = np.full(n_segments, "train", dtype=object)
    labels[order[:n_test]] = "test"
    labels[order[n_test:n_test + n_valid]] = "valid"
    return block_segment, labels


def simulate_gwas(
    preset: str | GwasPreset = "quick",
    *,
    seed: int = 0,
    truth: TrueLogF | None = None,
    progress: bool = False,
    **overrides: Any,
) -> SimulatedGwas:
    """Simulate GWAS z-scores, functional annotations, block-diagonal LD and the true prior.

    See the module docstring for the model.

    Parameters
    ----------
    preset
        ``"quick"``, ``"standard"``, ``"full"`` (:data:`GWAS_PRESETS`) or a :class:`GwasPreset`.
    seed
        Seeds genotypes, epigenome, scores, effects, noise and the split (independent streams).
    truth
        The function ``g`` of annotations (default :data:`DEFAULT_TRUTH`); pass a
        ``TrueLogF(linear=...)`` for a log-linear truth.
    progress
        Show the epigenome simulator's progress bar.
    **overrides
        Any :class:`GwasPreset` field.

    Returns
    -------
    SimulatedGwas
    """
    from analysislib.simulate.epigenome import STATE_NAMES, simulate_epigenome
    from analysislib.simulate.genotypes import simulate_genotypes

    params = _resolve(preset, overrides)
    truth = DEFAULT_TRUTH if truth is None else truth
    seeds = np.random.SeedSequence(seed).spawn(4)
    geno_seed, epi_seed = (int(s.generate_state(1)[0] % (2**31 - 1)) for s in seeds[:2])
    score_rng = np.random.default_rng(seeds[3])

    panel = simulate_genotypes(params.genotype_preset, seed=geno_seed,
                               **dict(params.genotype_overrides))
    ds = panel.ds
    haplotypes = np.asarray(ds["call_genotype"].values)
    haplotypes = (haplotypes.reshape(haplotypes.shape[0], -1) > 0).astype(np.int8)
    freq = haplotypes.mean(axis=1)
    maf = np.minimum(freq, 1.0 - freq)
    keep = maf >= max(params.min_maf, 1e-12)
    haplotypes = haplotypes[keep]
    positions = np.asarray(ds["variant_position"].values, dtype=np.int64)[keep]
    if keep.sum() < 2 * params.ld_block_snps:
        raise InvalidArgumentError(f"only {int(keep.sum())} SNPs pass MAF >= {params.min_maf}; need at "
                         f"least two LD blocks of {params.ld_block_snps}")
    # Annotations: epigenome laid over the region.
    region_start = int(panel.preset.region_start)
    epi_kwargs = dict(params.epigenome_overrides)
    bin_size = int(epi_kwargs.pop("bin_size", 25))
    n_bins = int(np.ceil(panel.preset.sequence_length / bin_size)) + 1
    epi = simulate_epigenome(params.epigenome_preset, n_bins=n_bins, bin_size=bin_size,
                             seed=epi_seed, progress=progress, **epi_kwargs)
    cells = [str(c) for c in epi["cell"].values[: params.n_track_cells]]
    assays = [str(a) for a in epi["assay"].values]
    signal = epi["signal"].sel(cell=cells).values.reshape(len(cells) * len(assays), -1)
    track_names = [f"{c}:{a}" for c in cells for a in assays]
    snp_bin = np.clip((positions - 1 - region_start) // bin_size, 0, n_bins - 1)
    tracks = _standardise_tracks(signal)
    annotations = _windows(tracks, snp_bin, params.window_bins).astype(np.float32)
    root = np.asarray(epi["lineage_chromatin_state"].values[0])
    conservation, coding = _scalar_scores(root, list(STATE_NAMES), score_rng)
    scalar_names = ["conservation", "coding"]
    scalars = np.stack([conservation[snp_bin], coding[snp_bin]], axis=1).astype(np.float32)

    return simulate_gwas_from_panel(
        haplotypes, positions, annotations, scalars, track_names=track_names,
        scalar_names=scalar_names, truth=truth, params=params, rng=np.random.default_rng(seeds[2]),
        seed=seed)


def simulate_gwas_from_panel(
    haplotypes: Any,
    positions: Any,
    annotations: Any,
    scalar_annotations: Any,
    *,
    track_names: Sequence[str],
    scalar_names: Sequence[str],
    truth: TrueLogF | None = None,
    params: GwasPreset | None = None,
    rng: np.random.Generator | int = 0,
    seed: int = 0,
    **overrides: Any,
) -> SimulatedGwas:
    """Simulate GWAS summary statistics over a given panel and given annotations.

    Steps 3-6 of the module docstring (effects, z-scores, block-diagonal LD, LD scores, split)
    for any reference haplotypes and annotation arrays: :func:`simulate_gwas` calls it with the
    coalescent panel and the simulated epigenome; use it directly for your own panel and tracks.

    Parameters
    ----------
    haplotypes
        0/1 allele indicators ``(snps, haplotypes)`` of polymorphic SNPs in genome order.
    positions
        bp position per SNP (increasing).
    annotations, scalar_annotations
        ``(snps, tracks, window)`` and ``(snps, scalars)`` annotation arrays.
    track_names, scalar_names
        Feature names read by ``truth``.
    truth
        The function ``g`` (default :data:`DEFAULT_TRUTH`).
    params
        Settings used: ``n_gwas``, ``h2``, ``ld_block_snps``, ``n_segments``, ``test_fraction``,
        ``valid_fraction`` (default the ``quick`` preset, with ``**overrides`` applied).
    rng
        Generator or seed for effects, noise and the split.
    seed
        Recorded in the result.

    Returns
    -------
    SimulatedGwas
    """
    from analysislib.gwas.ldsc import annotation_ld_scores

    params = _resolve(params if params is not None else "quick", overrides)
    truth = DEFAULT_TRUTH if truth is None else truth
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    effect_rng, split_rng = rng.spawn(2)
    haplotypes = (np.asarray(haplotypes) > 0).astype(np.int8)
    positions = np.asarray(positions, dtype=np.int64)
    annotations = np.asarray(annotations, dtype=np.float32)
    scalars = np.asarray(scalar_annotations, dtype=np.float32).reshape(len(haplotypes), -1)
    n_snps, n_ref = haplotypes.shape
    for name, arr in (("positions", positions), ("annotations", annotations)):
        if arr.shape[0] != n_snps:
            raise InvalidArgumentError(f"{name} has {arr.shape[0]} rows; haplotypes have {n_snps} SNPs")
    if annotations.ndim != 3 or annotations.shape[1] != len(track_names):
        raise InvalidArgumentError(f"annotations must be (snps, {len(track_names)} tracks, window), got "
                         f"{annotations.shape}")
    if scalars.shape[1] != len(scalar_names):
        raise InvalidArgumentError(f"{scalars.shape[1]} scalar columns for {len(scalar_names)} names")
    if n_snps < 2 * params.ld_block_snps:
        raise InvalidArgumentError(f"only {n_snps} SNPs; need at least two LD blocks of "
                         f"{params.ld_block_snps}")
    freq = haplotypes.mean(axis=1)
    maf = np.minimum(freq, 1.0 - freq)
    edges = _block_edges(n_snps, params.ld_block_snps)
    block = np.repeat(np.arange(len(edges) - 1), np.diff(edges))

    relative = truth(annotations, scalars, list(track_names), list(scalar_names))
    log_f = relative - np.log(np.exp(relative - relative.max()).sum()) - relative.max()
    log_f += np.log(params.h2)  # now sum(exp(log_f)) == h2
    z, beta = simulate_summary_statistics(haplotypes, edges, np.exp(log_f), params.n_gwas,
                                          effect_rng)
    R = block_ld_matrix(haplotypes, edges)
    ld = annotation_ld_scores(R, np.ones((n_snps, 1)), n_ref=n_ref)[:, 0]

    block_segment, labels = _split_segments(len(edges) - 1, params, split_rng)
    segment = block_segment[block]
    return SimulatedGwas(
        z=z, beta=beta, true_log_f=log_f + np.log(params.n_gwas),
        annotations=annotations, scalar_annotations=scalars,
        track_names=list(track_names), scalar_names=list(scalar_names),
        R=R, ld_scores=ld, positions=positions, maf=maf,
        ld_block=block, segment=segment, split=labels[segment].astype(str),
        n_gwas=float(params.n_gwas), n_ref=int(n_ref), h2=float(params.h2), truth=truth,
        params=params, seed=int(seed),
    )
