"""Tests of analysislib.simulate.gwas: LD blocks, the Z-trick, annotations, truth and splits."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from analysislib.gwas.ldsc import unbiased_r2
from analysislib.simulate.gwas import (
    DEFAULT_TRUTH,
    GWAS_PRESETS,
    SimulatedGwas,
    TrueLogF,
    _block_edges,
    _windows,
    block_ld_matrix,
    simulate_gwas,
    simulate_gwas_from_panel,
    simulate_summary_statistics,
)

SMALL = {
    "genotype_overrides": {"populations": ("CEU",), "samples_per_population": 120,
                           "sequence_length": 600_000},
    "ld_block_snps": 100,
    "epigenome_overrides": {"n_cells": 2},
    "n_track_cells": 2,
    "n_segments": 6,
}


@pytest.fixture(scope="module")
def sim() -> SimulatedGwas:
    return simulate_gwas("quick", seed=3, **SMALL)


@pytest.mark.slow  # shares a ~10 s simulation
def test_shapes_and_types(sim: SimulatedGwas) -> None:
    m = sim.n_snps
    assert m > 500
    assert sim.z.shape == sim.beta.shape == sim.true_log_f.shape == (m,)
    assert sim.annotations.shape == (m, 10, GWAS_PRESETS["quick"].window_bins)
    assert sim.annotations.dtype == np.float32
    assert sim.scalar_annotations.shape == (m, 2)
    assert sim.track_names[:2] == ["cell000:H3K4me3", "cell000:H3K4me1"]
    assert sim.scalar_names == ["conservation", "coding"]
    assert sp.issparse(sim.R) and sim.R.shape == (m, m)
    assert np.all(np.diff(sim.positions) > 0)
    assert sim.maf.min() >= 0.05
    assert sim.n_ref == 240
    ds = sim.to_dataset()
    assert ds.sizes == {"snps": m, "track": 10, "window": 16, "scalar": 2}
    np.testing.assert_array_equal(ds["z"].values, sim.z)


@pytest.mark.slow  # shares a ~10 s simulation
def test_ld_matrix_is_block_diagonal_psd_correlation(sim: SimulatedGwas) -> None:
    R = sim.R.toarray()
    np.testing.assert_allclose(R, R.T, atol=1e-12)
    np.testing.assert_allclose(np.diag(R), 1.0, atol=1e-12)
    rows, cols = sim.R.nonzero()
    assert np.all(sim.ld_block[rows] == sim.ld_block[cols])
    for b in np.unique(sim.ld_block)[:3]:
        idx = np.flatnonzero(sim.ld_block == b)
        assert np.linalg.eigvalsh(R[np.ix_(idx, idx)]).min() > -1e-9


def test_block_ld_matrix_matches_numpy_corrcoef() -> None:
    rng = np.random.default_rng(0)
    hap = (rng.random((7, 40)) < 0.4).astype(np.int8)
    hap[:, 0], hap[:, 1] = 0, 1  # no monomorphic rows
    edges = np.array([0, 3, 7])
    R = block_ld_matrix(hap, edges).toarray()
    np.testing.assert_allclose(R[:3, :3], np.corrcoef(hap[:3]), atol=1e-12)
    np.testing.assert_allclose(R[3:, 3:], np.corrcoef(hap[3:]), atol=1e-12)
    assert np.all(R[:3, 3:] == 0)


def test_monomorphic_reference_snp_is_refused() -> None:
    hap = np.array([[0, 1, 0, 1], [1, 1, 1, 1], [1, 0, 0, 1]], dtype=np.int8)
    with pytest.raises(ValueError, match="SNP 1 is monomorphic"):
        block_ld_matrix(hap, np.array([0, 3]))


def test_block_edges_merge_short_remainder() -> None:
    np.testing.assert_array_equal(_block_edges(1040, 250), [0, 250, 500, 750, 1040])
    np.testing.assert_array_equal(_block_edges(1200, 250), [0, 250, 500, 750, 1000, 1200])
    with pytest.raises(ValueError, match="at least 2"):
        _block_edges(10, 1)


@pytest.mark.slow  # shares a ~10 s simulation
def test_ld_scores_are_unbiased_r2_sums_within_blocks(sim: SimulatedGwas) -> None:
    b = sim.ld_block[0]
    idx = np.flatnonzero(sim.ld_block == b)
    r2 = sim.R[idx][:, idx].toarray() ** 2
    expected = unbiased_r2(r2, sim.n_ref)
    np.fill_diagonal(expected, 1.0)
    np.testing.assert_allclose(sim.ld_scores[idx], expected.sum(axis=1), rtol=1e-10)


@pytest.mark.slow  # shares a ~10 s simulation
def test_prior_variances_sum_to_h2_and_follow_the_truth(sim: SimulatedGwas) -> None:
    f = np.exp(sim.true_log_f) / sim.n_gwas
    assert f.sum() == pytest.approx(sim.h2, rel=1e-10)
    g = sim.truth(sim.annotations, sim.scalar_annotations, sim.track_names, sim.scalar_names)
    offset = sim.true_log_f - g
    np.testing.assert_allclose(offset, offset[0], atol=1e-9)
    assert sim.true_log_f.std() > 0.5  # the annotations matter


@pytest.mark.slow  # shares a ~10 s simulation
def test_z_is_ld_projected_effects_plus_ld_noise(sim: SimulatedGwas) -> None:
    # z = sqrt(N) R beta + e with e ~ N(0, R): the residual has unit variance on average
    # and E[chi2 | beta] = N (R beta)^2 + 1
    # and E[chi2 | beta] = N (R beta)^2 + 1. Exact standard deviations of the means under
    # e ~ N(0, R): var(mean e^2) = 2 tr(R^2) / M^2 and var(mean(2 s e)) = 4 s'R s / M^2.
    m = sim.n_snps
    signal = np.sqrt(sim.n_gwas) * (sim.R @ sim.beta)
    e = sim.z - signal
    tr_r2 = sim.R.multiply(sim.R).sum()
    sd_e2 = np.sqrt(2 * tr_r2) / m
    assert abs(np.mean(e ** 2) - 1.0) < 4 * sd_e2
    sd_chi2 = np.sqrt(2 * tr_r2 + 4 * signal @ (sim.R @ signal)) / m
    assert abs(sim.chi2.mean() - np.mean(signal ** 2) - 1.0) < 4 * sd_chi2
    assert np.mean(signal ** 2) > 1.0  # the simulation carries real signal


@pytest.mark.slow  # shares a ~10 s simulation
def test_splits_are_whole_segments_of_whole_blocks(sim: SimulatedGwas) -> None:
    assert set(np.unique(sim.split)) == {"train", "valid", "test"}
    for seg in np.unique(sim.segment):
        assert len(set(sim.split[sim.segment == seg])) == 1
    for b in np.unique(sim.ld_block):
        assert len(set(sim.segment[sim.ld_block == b])) == 1
    assert np.all(np.diff(sim.segment) >= 0)
    bounds = sim.segment_bounds("test")
    covered = np.concatenate([np.arange(a, c) for a, c in bounds])
    np.testing.assert_array_equal(covered, sim.indices("test"))
    with pytest.raises(ValueError, match="unknown split"):
        sim.indices("holdout")


@pytest.mark.slow  # shares a ~10 s simulation
def test_annotation_window_centre_is_the_snp_bin(sim: SimulatedGwas) -> None:
    # neighbouring SNPs in the same 25 bp bin share their whole window
    same_bin = np.flatnonzero(np.diff((sim.positions - 1) // 25) == 0)
    assert same_bin.size > 0
    j = same_bin[0]
    np.testing.assert_array_equal(sim.annotations[j], sim.annotations[j + 1])


def test_windows_helper_edge_pads() -> None:
    values = np.arange(10, dtype=float)[None, :]
    out = _windows(values, np.array([0, 5, 9]), 4)
    np.testing.assert_array_equal(out[:, 0], [[0, 0, 0, 1], [3, 4, 5, 6], [7, 8, 9, 9]])


def test_summary_statistics_covariance_matches_the_model() -> None:
    # z = sqrt(N) R beta + e has covariance R diag(N F) R + R
    rng = np.random.default_rng(1)
    hap = (rng.random((3, 30)) < 0.5).astype(np.int8)
    hap[1] = hap[0] ^ (rng.random(30) < 0.2)  # LD between SNPs 0 and 1
    edges = np.array([0, 3])
    R = block_ld_matrix(hap, edges).toarray()
    variance = np.array([2e-5, 0.0, 1e-5])
    n = 1e5
    draws = np.array([simulate_summary_statistics(hap, edges, variance, n, rng)[0]
                      for _ in range(8000)])
    expected = R @ np.diag(n * variance) @ R + R
    np.testing.assert_allclose(np.cov(draws.T), expected, atol=0.12 * np.abs(expected).max())


def test_summary_statistics_are_reproducible() -> None:
    hap = np.array([[0, 1, 1, 0, 1], [1, 1, 0, 0, 1]], dtype=np.int8)
    a = simulate_summary_statistics(hap, np.array([0, 2]), np.ones(2), 10.0,
                                    np.random.default_rng(5))
    b = simulate_summary_statistics(hap, np.array([0, 2]), np.ones(2), 10.0,
                                    np.random.default_rng(5))
    np.testing.assert_array_equal(a[0], b[0])
    with pytest.raises(ValueError, match="non-negative"):
        simulate_summary_statistics(hap, np.array([0, 2]), -np.ones(2), 10.0,
                                    np.random.default_rng(5))


def test_true_log_f_hand_computed() -> None:
    window = np.zeros((2, 2, 4))
    window[0, 0] = [0, 1, 1, 0]   # mean 0.5, centre 1.0
    window[1, 0] = [3, 3, 3, 3]   # mean 3, centre 3
    window[:, 1] = 1.0
    scalars = np.array([[2.0], [-1.0]])
    truth = TrueLogF(linear={"a": 2.0, "s": -1.0}, interactions=(("a", "b", 4.0),),
                     centre_peaks=(("a", 0.9, 5.0),), soft_clip=None)
    out = truth(window, scalars, ["a", "b"], ["s"])
    gate = lambda x: 1 / (1 + np.exp(-2 * (x - 1)))
    expected = [2 * 0.5 - 2.0 + 4 * gate(0.5) * gate(1.0) + 5.0,
                2 * 3.0 + 1.0 + 4 * gate(3.0) * gate(1.0) + 5.0]
    np.testing.assert_allclose(out, expected)
    clipped = TrueLogF(linear={"a": 1.0}, soft_clip=3.0)(window, scalars, ["a", "b"], ["s"])
    np.testing.assert_allclose(clipped, 3 * np.tanh(np.array([0.5, 3.0]) / 3))
    assert TrueLogF(linear={"a": 1.0}).is_log_linear and not DEFAULT_TRUTH.is_log_linear
    with pytest.raises(KeyError, match="'zz'"):
        TrueLogF(linear={"zz": 1.0})(window, scalars, ["a", "b"], ["s"])


@pytest.mark.slow  # shares a ~10 s simulation
def test_true_enrichment_by_hand(sim: SimulatedGwas) -> None:
    mask = np.zeros(sim.n_snps, bool)
    mask[:10] = True
    table = sim.true_enrichment(mask, names=["first10"])
    f = np.exp(sim.true_log_f)
    assert table.loc[0, "prop_h2"] == pytest.approx(f[:10].sum() / f.sum())
    assert table.loc[0, "prop_snps"] == pytest.approx(10 / sim.n_snps)
    with pytest.raises(ValueError, match="rows"):
        sim.true_enrichment(mask[:-1])


def test_bad_parameters() -> None:
    from analysislib.errors import PresetError

    with pytest.raises(PresetError, match="unknown GWAS simulation preset 'huge'"):
        simulate_gwas("huge")
    with pytest.raises(PresetError, match="unknown GWAS simulation setting 'n_snps'"):
        simulate_gwas("quick", n_snps=10)
    with pytest.raises(ValueError, match="h2"):
        simulate_gwas("quick", h2=1.5)
    with pytest.raises(ValueError, match="test_fraction"):
        simulate_gwas("quick", test_fraction=0.6, valid_fraction=0.5)


def test_from_panel_checks_its_inputs() -> None:
    rng = np.random.default_rng(0)
    hap = (rng.random((40, 30)) < 0.5).astype(np.int8)
    tracks = np.zeros((40, 1, 4))
    scalars = np.zeros((40, 1))
    truth = TrueLogF(linear={"t": 1.0})
    sim = simulate_gwas_from_panel(hap, np.arange(40) + 1, tracks, scalars, track_names=["t"],
                                   scalar_names=["s"], truth=truth, ld_block_snps=10, n_segments=4,
                                   test_fraction=0.25, valid_fraction=0.0)
    assert sim.n_snps == 40 and set(sim.split) == {"train", "test"}
    np.testing.assert_allclose(sim.true_log_f, np.log(sim.n_gwas * sim.h2 / 40))  # flat truth
    with pytest.raises(ValueError, match="positions has 39 rows"):
        simulate_gwas_from_panel(hap, np.arange(39), tracks, scalars, track_names=["t"],
                                 scalar_names=["s"], truth=truth, ld_block_snps=10)
    with pytest.raises(ValueError, match="2 scalar columns for 1 names"):
        simulate_gwas_from_panel(hap, np.arange(40), tracks, np.zeros((40, 2)), track_names=["t"],
                                 scalar_names=["s"], truth=truth, ld_block_snps=10)
    with pytest.raises(ValueError, match="two LD blocks"):
        simulate_gwas_from_panel(hap, np.arange(40), tracks, scalars, track_names=["t"],
                                 scalar_names=["s"], truth=truth, ld_block_snps=30)


def test_standard_preset_is_sized_for_the_model_size_claim() -> None:
    quick, standard = GWAS_PRESETS["quick"], GWAS_PRESETS["standard"]
    geno = standard.genotype_overrides
    assert geno["populations"] == ("CEU",) and geno["samples_per_population"] == 500
    assert geno["sequence_length"] == 7 * quick.genotype_overrides["sequence_length"]
    assert standard.ld_block_snps == 500 and standard.min_maf == quick.min_maf
    assert standard.n_segments == 20 and standard.n_track_cells == quick.n_track_cells
    # h2 grows with the number of SNPs (~23,000 against ~3,100), so the per-SNP signal
    # N h2 / M, and with it the mean chi2, stays close to the quick preset's.
    per_snp = {name: p.n_gwas * p.h2 / m for name, p, m in
               (("quick", quick, 3_100), ("standard", standard, 23_000))}
    assert 0.5 < per_snp["standard"] / per_snp["quick"] < 1.0


@pytest.mark.slow  # ~45 s and 1.6 GB: the whole standard simulation
def test_standard_preset_has_tens_of_thousands_of_snps() -> None:
    sim = simulate_gwas("standard", seed=0)
    assert 20_000 <= sim.n_snps <= 30_000
    assert sim.annotations.shape[1:] == (20, 16)
    blocks = np.bincount(sim.ld_block)
    assert len(blocks) >= 40 and blocks.min() >= 500
    counts = {s: int((sim.split == s).sum()) for s in ("train", "valid", "test")}
    assert counts["train"] >= 15_000 and counts["valid"] >= 1_000 and counts["test"] >= 3_000
    assert 4.0 < sim.chi2.mean() < 12.0
    # every held-out run starts and ends on an LD-block boundary (windows need no flank)
    for a, b in sim.segment_bounds(["valid", "test"]):
        assert sim.ld_block[a] != sim.ld_block[a - 1] if a else True
        assert b == sim.n_snps or sim.ld_block[b] != sim.ld_block[b - 1]
