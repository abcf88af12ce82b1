"""Tests of the epigenome simulator: structure, determinism, biology, and calibration on Roadmap."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special, stats

from analysislib.epigenome.tensor import to_arcsinh
from analysislib.io.tracks import read_roadmap_npz
from analysislib.simulate.epigenome import (
    ASSAY_EMISSIONS,
    CHROMATIN_STATES,
    CORE_MARKS,
    EPIGENOME_PRESETS,
    compare_mark_statistics,
    neglog10_poisson_sf,
    simulate_chromatin_states,
    simulate_epigenome,
)
from analysislib.variables import validate

# Calibration tolerances: simulated per-mark averages vs the real Roadmap pilot tracks.
FRACTION_ABOVE_2_ABS_TOL = 0.03   # fraction of bins with −log10 p > 2: within ±0.03 ...
FRACTION_ABOVE_2_REL_TOL = 0.40   # ... or within 40 % of the real value
MEAN_REL_TOL = 0.30               # mean −log10 p within 30 %
LAG1_ABS_TOL = 0.10               # lag-1 autocorrelation (arcsinh scale) within 0.1
CROSS_MARK_ABS_TOL = 0.15         # each cross-mark correlation within 0.15
CALIBRATION_RUN = {"n_cells": 12, "n_bins": 200_000, "n_lineages": 4, "seed": 2024}

STATE = {name: i for i, (name, _) in enumerate(CHROMATIN_STATES)}


@pytest.fixture(scope="module")
def small():
    return simulate_epigenome(n_cells=6, n_bins=40_000, n_lineages=2, seed=7)


def test_layout_and_truth(small):
    ds = small
    validate(ds, ["signal", "observed", "bin_start", "bin_chrom"])
    assert ds["signal"].dims == ("cell", "assay", "bin") and ds["signal"].dtype == np.float32
    assert ds["signal"].shape == (6, 5, 40_000)
    assert ds.attrs["scale"] == "neglog10p" and ds.attrs["bin_size"] == 25
    assert ds["assay"].values.tolist() == list(CORE_MARKS)
    assert ds["observed"].values.all()
    values = ds["signal"].values
    assert np.isfinite(values).all() and values.min() >= 0
    assert ds["chromatin_state"].dims == ("cell", "bin")
    assert ds["chromatin_state"].values.max() < len(CHROMATIN_STATES)
    assert ds["state"].values.tolist() == [name for name, _ in CHROMATIN_STATES]
    np.testing.assert_array_equal(ds["cell_lineage"].values, [0, 0, 0, 1, 1, 1])
    assert ds["state_presence"].sel(state="TssA", assay="H3K4me3") == 0.9
    # Peak shapes differ between cell types.
    assert np.unique(ds["cell_peak_width"].values).size == 6
    assert np.unique(ds["cell_peak_skew"].values).size == 6
    assert '"seed": 7' in ds.attrs["simulation"]


def test_deterministic_given_seed(small):
    again = simulate_epigenome(n_cells=6, n_bins=40_000, n_lineages=2, seed=7)
    np.testing.assert_array_equal(again["signal"].values, small["signal"].values)
    np.testing.assert_array_equal(again["chromatin_state"].values, small["chromatin_state"].values)
    other = simulate_epigenome(n_cells=6, n_bins=40_000, n_lineages=2, seed=8)
    assert not np.array_equal(other["signal"].values, small["signal"].values)


def test_marks_follow_their_states(small):
    """Each mark is strongest in the states the Roadmap emission matrix assigns it."""
    states = small["chromatin_state"].values
    expected = {"H3K4me3": "TssA", "H3K4me1": "Enh", "H3K36me3": "Tx", "H3K27me3": "ReprPC",
                "H3K9me3": "Het"}
    for assay, state in expected.items():
        track = small["signal"].sel(assay=assay).values
        in_state = track[states == STATE[state]].mean()
        quiescent = track[states == STATE["Quies"]].mean()
        assert in_state > 3 * quiescent, (assay, state, in_state, quiescent)


def test_lineages_share_states(small):
    states = small["chromatin_state"].values
    same = np.mean(states[0] == states[1])    # both in lineage 0
    other = np.mean(states[0] == states[4])   # lineage 0 vs lineage 1
    assert same > other
    assert np.mean(states[0] == small["lineage_chromatin_state"].values[0]) > 0.9


def test_state_fractions_follow_the_target():
    path = simulate_chromatin_states(400_000, np.random.default_rng(0))
    share = np.bincount(path, minlength=len(CHROMATIN_STATES)) / path.size
    assert share[STATE["Quies"]] == pytest.approx(0.586, abs=0.08)
    assert share[STATE["TssA"]] == pytest.approx(0.012, abs=0.006)
    runs = np.flatnonzero(np.diff(path)) + 1
    assert np.mean(np.diff(runs)) > 50  # segments span many bins, not single bins


def test_individuals_share_their_specific_peaks_across_tissues():
    ds = simulate_epigenome(**EPIGENOME_PRESETS["personal"] | {"n_bins": 40_000})
    assert ds["signal"].dims == ("individual", "cell", "assay", "bin")
    assert ds["chromatin_state"].dims == ("individual", "cell", "bin")
    assert ds["observed"].shape == (4, 4, 5)
    peaks = ds["individual_peak"].values
    assert set(np.unique(peaks)) <= {-1, 0, 1} and (peaks == 1).any() and (peaks == -1).any()
    gained = peaks[0] == 1
    arc = to_arcsinh(ds)["signal"].sel(assay="H3K4me1").values
    own = arc[0][:, gained].mean()
    others = arc[1:][:, :, gained & (peaks[1:] != 1).all(axis=0)].mean()
    assert own > 2 * others
    # A gain is an enhancer in every tissue of that individual.
    assert (ds["chromatin_state"].values[0][:, gained] == STATE["Enh"]).all()


def test_every_known_assay_simulates():
    ds = simulate_epigenome(n_cells=2, assays=list(ASSAY_EMISSIONS), n_bins=5_000, seed=1,
                            n_lineages=1)
    assert ds["signal"].shape == (2, len(ASSAY_EMISSIONS), 5_000)
    with pytest.raises(ValueError, match="no emission parameters"):
        simulate_epigenome(n_cells=2, assays=["H3K99me9"], n_bins=100, seed=1)


def test_presets_are_well_formed():
    assert {"quick", "full"} <= set(EPIGENOME_PRESETS)
    for preset in EPIGENOME_PRESETS.values():
        assert all(a in ASSAY_EMISSIONS for a in preset["assays"])
    assert EPIGENOME_PRESETS["full"]["n_bins"] > EPIGENOME_PRESETS["quick"]["n_bins"]


def test_poisson_p_scores_by_hand():
    # P(X >= 1 | λ = 1) = 1 − e^−1.
    assert neglog10_poisson_sf(np.array([1.0]), 1.0)[0] == pytest.approx(-np.log10(1 - np.exp(-1)))
    assert neglog10_poisson_sf(np.array([0.0]), 3.0)[0] == 0.0
    k = np.arange(1, 40, dtype=float)
    np.testing.assert_allclose(neglog10_poisson_sf(k, 4.0),
                               -np.log10(stats.poisson.sf(k - 1, 4.0)), rtol=1e-8)
    # Far tail, where the incomplete gamma underflows: compare with a log-sum of the pmf.
    big = np.array([400.0])
    exact = -special.logsumexp(stats.poisson.logpmf(np.arange(400, 2000), 2.0)) / np.log(10)
    assert neglog10_poisson_sf(big, 2.0)[0] == pytest.approx(exact, rel=1e-3)


# --------------------------------------------------------------------------- calibration


@pytest.fixture(scope="module")
def calibration(shared_data):
    real = read_roadmap_npz(shared_data / "epigenome", assays=list(CORE_MARKS))
    simulated = simulate_epigenome(**CALIBRATION_RUN)
    return compare_mark_statistics(simulated, real)


def test_fraction_above_2_matches_roadmap(calibration):
    marks = calibration["marks"]
    for mark, row in marks.iterrows():
        sim, real = row["fraction_above_simulated"], row["fraction_above_reference"]
        assert (abs(sim - real) <= FRACTION_ABOVE_2_ABS_TOL
                or abs(sim - real) <= FRACTION_ABOVE_2_REL_TOL * real), (mark, sim, real)


def test_mean_neglog10p_matches_roadmap(calibration):
    for mark, row in calibration["marks"].iterrows():
        sim, real = row["mean_simulated"], row["mean_reference"]
        assert abs(sim - real) <= MEAN_REL_TOL * real, (mark, sim, real)


def test_lag1_autocorrelation_matches_roadmap(calibration):
    for mark, row in calibration["marks"].iterrows():
        sim, real = row["lag1_autocorrelation_simulated"], row["lag1_autocorrelation_reference"]
        assert abs(sim - real) <= LAG1_ABS_TOL, (mark, sim, real)


def test_cross_mark_correlations_match_roadmap(calibration):
    difference = calibration["cross_mark_difference"]
    assert np.abs(difference.values).max() <= CROSS_MARK_ABS_TOL, difference.round(3)
    # The strongest real pairs are reproduced: promoter/enhancer marks and the two repressive marks.
    simulated = calibration["cross_mark_simulated"]
    assert simulated.loc["H3K4me3", "H3K4me1"] > 0.1
    assert simulated.loc["H3K27me3", "H3K9me3"] > 0.1


def test_preset_gives_defaults_and_explicit_arguments_override():
    ds = simulate_epigenome("quick", n_bins=3_000)
    quick = EPIGENOME_PRESETS["quick"]
    assert ds.sizes["cell"] == quick["n_cells"] and ds.sizes["bin"] == 3_000
    assert list(ds["assay"].values) == list(quick["assays"])
    same = simulate_epigenome(n_cells=quick["n_cells"], n_bins=3_000, n_lineages=quick["n_lineages"],
                              seed=quick["seed"])
    np.testing.assert_array_equal(ds["signal"].values, same["signal"].values)
    with pytest.raises(ValueError, match="unknown epigenome simulation preset"):
        simulate_epigenome("huge")
    with pytest.raises(TypeError, match="needs a preset"):
        simulate_epigenome(n_cells=2)
