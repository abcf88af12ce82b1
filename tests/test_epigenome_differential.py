"""Tests for analysislib.epigenome.differential (simulated replicates, DESeq2 Wald tests)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy import stats

from analysislib.epigenome.differential import (
    DispersionTrend,
    affinity_correlation,
    affinity_scores,
    compare_differential,
    count_in_peaks,
    counts_to_neglog10p,
    differential_heatmap_matrix,
    differential_test,
    fit_dispersion_trend,
    median_of_ratios,
    neglog10p_to_counts,
    run_differential_comparison,
    simulate_replicates,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::RuntimeWarning",
                                        "ignore::PendingDeprecationWarning")


# --------------------------------------------------------------------------- conversion


def test_counts_to_neglog10p_matches_the_poisson_tail():
    # Integer counts: −log10 P(X >= k) = −log10 poisson.sf(k − 1, λ).
    k = np.array([1.0, 3.0, 10.0, 40.0])
    expected = -np.log10(stats.poisson.sf(k - 1, 6.0))
    np.testing.assert_allclose(counts_to_neglog10p(k, 6.0), expected, rtol=1e-9)
    # Hand value: P(X >= 3; λ = 2) = 1 − 5 e^−2.
    assert counts_to_neglog10p(np.array([3.0]), 2.0)[0] == pytest.approx(
        -np.log10(1 - 5 * np.exp(-2)))
    assert counts_to_neglog10p(np.array([0.0]), 6.0)[0] == 0.0


@pytest.mark.parametrize("background", [0.8, 6.0, 40.0])
def test_conversion_round_trips(background):
    counts = np.array([0.0, 0.3, 1.0, 5.5, background, 20.0, 150.0, 2500.0])
    scores = counts_to_neglog10p(counts, background)
    back = neglog10p_to_counts(scores, background)
    # Counts far below λ all have p ≈ 1 (score < 1e-5): they are not identifiable.
    identifiable = (scores > 1e-5) | (counts == 0)
    assert identifiable.sum() >= 5 - (background > 10)
    np.testing.assert_allclose(back[identifiable], counts[identifiable], rtol=1e-6, atol=1e-4)
    scores = np.array([0.0, 0.01, 0.5, 2.0, 7.3, 60.0, 300.0])
    again = counts_to_neglog10p(neglog10p_to_counts(scores, background), background)
    np.testing.assert_allclose(again, scores, rtol=1e-6, atol=1e-7)


def test_conversion_of_dataarrays_handles_scale_nan_and_negatives():
    values = np.array([0.0, 2.0, np.nan, -0.5, 12.0])
    track = xr.DataArray(values, dims="bin", attrs={"scale": "neglog10p"})
    counts = neglog10p_to_counts(track, 6.0)
    assert counts.attrs["scale"] == "counts"
    assert np.isnan(counts.values[2])
    assert counts.values[3] == 0.0  # negative −log10 p treated as 0
    via_arcsinh = neglog10p_to_counts(
        xr.DataArray(np.arcsinh(values), dims="bin", attrs={"scale": "arcsinh"}), 6.0)
    np.testing.assert_allclose(via_arcsinh.values, counts.values, rtol=1e-6, equal_nan=True)
    with pytest.raises(ValueError, match="background"):
        neglog10p_to_counts(values, 0.0)


# --------------------------------------------------------------------------- dispersion


def test_median_of_ratios_hand_case():
    counts = np.array([[1.0, 2.0, 0.0], [2.0, 4.0, 5.0]])
    # Third feature has a zero and is ignored; geometric means are √2 and √8.
    np.testing.assert_allclose(median_of_ratios(counts), [1 / np.sqrt(2), np.sqrt(2)])


def _nb(rng, mu, alpha, size):
    return rng.negative_binomial(1.0 / alpha, 1.0 / (1.0 + alpha * mu), size=size)


@pytest.mark.parametrize(("a0", "a1"), [(0.1, 0.0), (0.05, 2.0)])
def test_moment_trend_recovers_known_dispersion(a0, a1):
    rng = np.random.default_rng(7)
    mu = np.exp(rng.uniform(np.log(5), np.log(2000), 20_000))
    factors = np.array([0.8, 1.0, 1.2, 1.1])
    counts = _nb(rng, mu * factors[:, None], a0 + a1 / mu, (4, mu.size))
    trend = fit_dispersion_trend(counts)
    assert trend.method == "moments"
    assert trend.a0 == pytest.approx(a0, rel=0.1)
    grid = np.array([50.0, 200.0, 1000.0])
    np.testing.assert_allclose(trend(grid), a0 + a1 / grid, rtol=0.15)


@pytest.mark.slow
def test_pydeseq2_trend_recovers_known_dispersion():
    rng = np.random.default_rng(3)
    mu = np.exp(rng.uniform(np.log(20), np.log(2000), 400))
    counts = _nb(rng, mu, 0.1, (4, mu.size))
    trend = fit_dispersion_trend(counts, method="pydeseq2", max_features=300)
    assert trend.method == "pydeseq2"
    assert trend.n_features == 300
    np.testing.assert_allclose(trend(np.array([100.0, 1000.0])), 0.1, rtol=0.35)


def test_dispersion_input_errors():
    with pytest.raises(ValueError, match=">= 2 replicates"):
        fit_dispersion_trend(np.ones((1, 10)))
    with pytest.raises(ValueError, match="non-negative"):
        fit_dispersion_trend(-np.ones((3, 10)))
    with pytest.raises(ValueError, match="method"):
        fit_dispersion_trend(np.ones((3, 10)), method="glmGamPoi")


def test_simulated_replicates_have_nb_moments():
    trend = DispersionTrend(a0=0.2, a1=1.0)
    mu = np.full(50_000, 30.0)
    draws = simulate_replicates(mu, trend, 3, seed=1)
    assert draws.shape == (3, 50_000) and draws.dtype == np.int64
    alpha = 0.2 + 1.0 / 30.0
    assert draws.mean() == pytest.approx(30.0, rel=0.01)
    assert draws.var() == pytest.approx(30.0 + alpha * 900.0, rel=0.03)
    # The mean is floored at 1 (R code: mu = max(λ, 1)); NaN bins give 0.
    low = simulate_replicates(np.r_[np.zeros(40_000), np.nan], trend, 1, seed=2)
    assert low[0, :-1].mean() == pytest.approx(1.0, rel=0.03)
    assert low[0, -1] == 0
    track = xr.DataArray(mu[:10], dims="bin", coords={"bin_start": ("bin", np.arange(10) * 25)})
    as_da = simulate_replicates(track, trend, 4, seed=0)
    assert as_da.dims == ("replicate", "bin") and "bin_start" in as_da.coords


# --------------------------------------------------------------------------- counting, testing


def _count_array(values):
    values = np.asarray(values)
    n = values.shape[1]
    return xr.DataArray(values, dims=("sample", "bin"),
                        coords={"sample": [f"s{i}" for i in range(values.shape[0])],
                                "bin_start": ("bin", np.arange(n) * 25),
                                "bin_chrom": ("bin", ["chrS"] * n)},
                        attrs={"bin_size": 25})


def test_count_in_peaks_hand_case():
    counts = _count_array([[1, 2, 3, 4, 5, 6], [0, 0, 1, 0, 0, 10]])
    peaks = pd.DataFrame({"chrom": ["chrS", "chrS"], "start": [25, 120], "end": [75, 150]},
                         index=["pA", "pB"])
    table = count_in_peaks(counts, peaks)
    # pA covers bins 1–2, pB bins 4–5.
    assert table.loc["s0"].tolist() == [5, 11]
    assert table.loc["s1"].tolist() == [1, 10]
    assert table.columns.tolist() == ["pA", "pB"]


def _planted_counts(seed, n_peaks=60, n_diff=10, fold=4.0):
    """Peaks p0..p{n_diff-1} differ 4-fold: the first half up in B, the second half up in A
    (balanced, so that median-of-ratios size factors stay unbiased)."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(50, 400, n_peaks)
    tissue = pd.Series(["A"] * 4 + ["B"] * 3, index=[f"s{i}" for i in range(7)])
    mean = np.tile(base, (7, 1))
    mean[4:, : n_diff // 2] *= fold
    mean[:4, n_diff // 2: n_diff] *= fold
    counts = _nb(rng, mean, 0.02, mean.shape)
    frame = pd.DataFrame(counts, index=tissue.index, columns=[f"p{j}" for j in range(n_peaks)])
    return frame, tissue


def test_wald_test_finds_a_planted_difference_and_not_a_null():
    counts, tissue = _planted_counts(11)
    result = differential_test(counts, tissue)
    assert result.attrs["contrast"] == ["B", "A"]
    planted = [f"p{j}" for j in range(10)]
    assert result.loc[planted, "significant"].all()
    np.testing.assert_allclose(result.loc[planted[:5], "log2FoldChange"], 2.0, atol=0.5)
    np.testing.assert_allclose(result.loc[planted[5:], "log2FoldChange"], -2.0, atol=0.5)
    # FDR control at 0.05: false discoveries stay a small share of the discoveries.
    false = int(result["significant"].drop(planted).sum())
    assert false / int(result["significant"].sum()) <= 0.2
    null_counts, _ = _planted_counts(12, n_diff=0)
    assert differential_test(null_counts, tissue)["significant"].sum() <= 1
    with pytest.raises(ValueError, match="two tissues"):
        differential_test(counts, pd.Series("A", index=counts.index))


def test_overlap_ppv_and_recall_on_hand_sets():
    result = compare_differential({"p1", "p2", "p3", "p4"}, {"p3", "p4", "p5"})
    assert (result.n_measured, result.n_imputed, result.n_shared) == (4, 3, 2)
    assert result.ppv == pytest.approx(2 / 3)
    assert result.recall == pytest.approx(0.5)
    empty = compare_differential(set(), {"p1"})
    assert empty.ppv == 0.0 and np.isnan(empty.recall)
    table = pd.DataFrame({"significant": [True, False, True]}, index=["p1", "p2", "p3"])
    assert compare_differential(table, {"p3"}).n_shared == 1


def test_affinity_scores_correlation_and_heatmap_matrix():
    counts = pd.DataFrame([[10, 20, 30], [20, 40, 60], [30, 10, 5]],
                          index=["a", "b", "c"], columns=["p1", "p2", "p3"])
    factors = median_of_ratios(counts.to_numpy(float))
    affinity = affinity_scores(counts)
    assert affinity.loc["a", "p1"] == pytest.approx(np.log2(1 + 10 / factors[0]))
    corr = affinity_correlation(affinity)
    assert corr.loc["a", "b"] == pytest.approx(
        np.corrcoef(affinity.loc["a"], affinity.loc["b"])[0, 1])
    assert corr.shape == (3, 3)
    matrix = differential_heatmap_matrix(affinity, ["p1", "p3"])
    assert matrix.index.tolist() == ["p1", "p3"] and matrix.columns.tolist() == ["a", "b", "c"]
    np.testing.assert_allclose(matrix.mean(axis=1), 0.0, atol=1e-12)
    np.testing.assert_allclose(matrix.std(axis=1, ddof=1), 1.0)


# --------------------------------------------------------------------------- whole pipeline


@pytest.mark.slow
def test_pipeline_on_simulated_individuals():
    from analysislib.simulate.epigenome import simulate_epigenome

    ds = simulate_epigenome(n_cells=3, n_individuals=4, n_bins=20_000, assays=["H3K9ac"],
                            n_lineages=2, seed=1)
    signal = ds["signal"].sel(assay="H3K9ac")
    training = np.rint(neglog10p_to_counts(signal.sel(cell="cell002").values))
    trend = fit_dispersion_trend(training)
    measured = {t: signal.sel(cell=t).rename(individual="replicate")
                .assign_attrs(scale="neglog10p", bin_size=25) for t in ("cell000", "cell001")}
    imputed = {t: measured[t].mean("replicate").assign_attrs(scale="neglog10p")
               for t in measured}
    out = run_differential_comparison(measured, imputed, trend,
                                      n_replicates={"cell000": 4, "cell001": 3})
    assert out.samples["source"].value_counts().to_dict() == {"measured": 8, "imputed": 7}
    assert out.counts.shape == (15, len(out.peaks))
    assert out.overlap.n_measured == int(out.measured["significant"].sum())
    assert out.overlap.n_measured > 0 and out.overlap.ppv > 0.3
    # The block structure of Fig. 4d: measured replicates agree more within than across tissues.
    corr = out.correlation
    a = [s for s in corr.index if s.startswith("cell000_measured")]
    b = [s for s in corr.index if s.startswith("cell001_measured")]
    within = corr.loc[a, a].to_numpy()[np.triu_indices(len(a), 1)].mean()
    assert within > corr.loc[a, b].to_numpy().mean()
    assert out.heatmap.shape[1] == 15


@pytest.mark.slow
@pytest.mark.tools
def test_pipeline_with_macs2_peaks_matches_the_numpy_caller():
    from analysislib.simulate.epigenome import simulate_epigenome

    ds = simulate_epigenome(n_cells=3, n_individuals=3, n_bins=8_000, assays=["H3K9ac"],
                            n_lineages=2, seed=2)
    signal = ds["signal"].sel(assay="H3K9ac")
    trend = fit_dispersion_trend(np.rint(neglog10p_to_counts(signal.sel(cell="cell002").values)))
    measured = {t: signal.sel(cell=t).rename(individual="replicate")
                .assign_attrs(scale="neglog10p", bin_size=25) for t in ("cell000", "cell001")}
    imputed = {t: measured[t].mean("replicate").assign_attrs(scale="neglog10p")
               for t in measured}
    by_numpy = run_differential_comparison(measured, imputed, trend, peak_method="numpy", seed=3)
    by_macs2 = run_differential_comparison(measured, imputed, trend, peak_method="macs2", seed=3)
    assert len(by_numpy.peaks) > 0
    pd.testing.assert_frame_equal(by_numpy.peaks[["chrom", "start", "end"]],
                                  by_macs2.peaks[["chrom", "start", "end"]], check_dtype=False)
    assert by_numpy.overlap == by_macs2.overlap


def test_pipeline_input_errors_name_the_tissue():
    coords = {"bin_start": ("bin", np.arange(50) * 25), "bin_chrom": ("bin", ["chrS"] * 50)}
    reps = xr.DataArray(np.ones((2, 50)), dims=("replicate", "bin"), coords=coords)
    trend = DispersionTrend(0.1, 1.0)
    with pytest.raises(ValueError, match="same two tissues"):
        run_differential_comparison({"A": reps, "B": reps}, {"A": reps[0]}, trend)
    shifted = reps.assign_coords(bin_start=("bin", np.arange(50) * 25 + 5))
    with pytest.raises(ValueError, match=r"measured\['B'\] is not on the bins"):
        run_differential_comparison({"A": reps, "B": shifted}, {"A": reps[0], "B": reps[0]},
                                    trend)
    with pytest.raises(ValueError, match=r"imputed\['A'\] must be 1-D"):
        run_differential_comparison({"A": reps, "B": reps}, {"A": reps, "B": reps[0]}, trend)
