"""Tests for analysislib.epigenome.occupancy (eDICE Figs. 5b–d and 6c–d)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from sklearn.metrics import average_precision_score

from analysislib.epigenome.occupancy import (
    MIN_SPECIFIC_LENGTH,
    enriched_bins,
    individual_specific_auprc,
    individual_specific_regions,
    joint_occupancy,
    occupancy_histogram,
    peak_overlaps,
)
from analysislib.epigenome.peaks import call_peaks, peak_mask
from analysislib.epigenome.tensor import create_signal_dataset, to_arcsinh

BIN = 25


def _peaks(*intervals, chrom="chrS"):
    return pd.DataFrame({"chrom": chrom, "start": [s for s, _ in intervals],
                         "end": [e for _, e in intervals]}).astype({"start": np.int64,
                                                                     "end": np.int64})


def _enriched(values, observed, dims=("individual", "cell", "assay", "bin")):
    """A hand-made enriched-bins array with the coordinates enriched_bins() attaches."""
    values = np.asarray(values, dtype=bool)
    coords = {d: [f"{d[:3]}{i}" for i in range(n)] for d, n in zip(dims[:-1], values.shape[:-1],
                                                                    strict=True)}
    coords["observed"] = (dims[:-1], np.asarray(observed, dtype=bool))
    return xr.DataArray(values, dims=dims, coords=coords)


# --------------------------------------------------------------------------- enriched bins


def test_enriched_bins_are_the_peak_masks_of_observed_tracks():
    rng = np.random.default_rng(0)
    signal = rng.uniform(0, 1, size=(2, 1, 60)).astype(np.float32)
    signal[0, 0, 10:20] = 3.0   # 250 bp peak in cell A
    signal[1, 0, 30:34] = 5.0   # 100 bp: below the 200 bp minimum length
    signal[1, 0, 40:50] = 4.0   # 250 bp peak in cell B
    ds = create_signal_dataset(signal, cells=["A", "B"], assays=["H3K4me3"], chrom="chrS")
    enriched = enriched_bins(ds)
    assert enriched.dims == ("cell", "assay", "bin")
    expected_a = np.zeros(60, bool)
    expected_a[10:20] = True
    expected_b = np.zeros(60, bool)
    expected_b[40:50] = True
    np.testing.assert_array_equal(enriched.sel(cell="A", assay="H3K4me3").values, expected_a)
    np.testing.assert_array_equal(enriched.sel(cell="B", assay="H3K4me3").values, expected_b)
    # the same on the arcsinh scale, and with a shorter minimum length the 100 bp peak appears
    np.testing.assert_array_equal(enriched_bins(to_arcsinh(ds)).values, enriched.values)
    short = enriched_bins(ds, min_length=100).sel(cell="B", assay="H3K4me3").values
    assert short[30:34].all() and short.sum() == 14
    # an unobserved track has no enriched bins and is flagged
    hidden = create_signal_dataset(signal, cells=["A", "B"], assays=["H3K4me3"],
                                   observed=np.array([[True], [False]]))
    out = enriched_bins(hidden)
    assert not out.sel(cell="B").values.any()
    assert out["observed"].values.tolist() == [[True], [False]]


def test_enriched_bins_agree_with_call_peaks_per_track_on_simulated_individuals():
    from analysislib.simulate.epigenome import simulate_epigenome

    ds = simulate_epigenome(n_cells=2, n_individuals=2, assays=["H3K4me3"], n_bins=3_000,
                            n_lineages=1, seed=3)
    enriched = enriched_bins(ds)
    assert enriched.dims == ("individual", "cell", "assay", "bin")
    track = ds["signal"].isel(individual=1, cell=0, assay=0).assign_attrs(scale="neglog10p")
    expected = peak_mask(call_peaks(track), ds["bin_start"].values, 25,
                         bin_chrom=ds["bin_chrom"].values)
    np.testing.assert_array_equal(enriched.isel(individual=1, cell=0, assay=0).values, expected)
    assert expected.any()


def test_enriched_bins_input_errors():
    ds = create_signal_dataset(np.zeros((1, 1, 5)), cells=["A"], assays=["x"])
    with pytest.raises(ValueError, match="'observed'"):
        enriched_bins(ds.drop_vars("observed"))


# --------------------------------------------------------------------------- occupancy


def test_occupancy_histogram_across_tissues_hand_case():
    # one individual, one assay, three tissues (the third unobserved), six bins
    values = np.array([[[[1, 1, 0, 1, 0, 0]], [[1, 0, 0, 1, 1, 0]], [[1, 1, 1, 1, 1, 1]]]])
    enriched = _enriched(values.transpose(0, 1, 2, 3), [[[True], [True], [False]]])
    table = occupancy_histogram(enriched, over="cell")
    # enriched in >= 1 observed tissue: bins 0, 1, 3, 4 -> occupancies 2, 1, 2, 1
    assert table["occupancy"].tolist() == [1, 2]
    assert table["n_bins"].tolist() == [2, 2]
    assert table["fraction"].tolist() == [0.5, 0.5]
    assert table["n_observed"].tolist() == [2, 2]
    assert table["individual"].unique().tolist() == ["ind0"]


def test_occupancy_histogram_across_individuals_matches_brute_force():
    rng = np.random.default_rng(1)
    values = rng.random((3, 2, 2, 40)) < 0.3
    observed = np.ones((3, 2, 2), bool)
    observed[2, 1, 0] = False
    enriched = _enriched(values, observed)
    table = occupancy_histogram(enriched, over="individual")
    for (cell, assay), part in table.groupby(["cell", "assay"]):
        c, a = int(cell[-1]), int(assay[-1])
        use = observed[:, c, a]
        counts = values[use, c, a].sum(axis=0)
        expected = [int((counts == k).sum()) for k in range(1, use.sum() + 1)]
        assert part["n_bins"].tolist() == expected
        assert (part["n_observed"] == use.sum()).all()
    with pytest.raises(ValueError, match="over must be"):
        occupancy_histogram(enriched, over="bin")


def test_joint_occupancy_hand_case():
    # 2 individuals x 2 tissues x 1 assay x 4 bins; the track is (ind0, cel0)
    values = np.zeros((2, 2, 1, 4), bool)
    values[0, 0, 0] = [1, 1, 1, 0]   # target track: bins 0-2 enriched
    values[0, 1, 0] = [1, 0, 0, 1]   # other tissue, same individual
    values[1, 0, 0] = [1, 1, 0, 0]   # same tissue, other individual
    values[1, 1, 0] = [1, 1, 1, 1]   # neither: never counted
    enriched = _enriched(values, np.ones((2, 2, 1), bool))
    table = joint_occupancy(enriched, individual="ind0", cell="cel0", assay="ass0")
    # bin 0: 2 tissues, 2 individuals; bin 1: 1 tissue, 2 individuals; bin 2: 1, 1
    assert table.to_numpy().tolist() == [[1, 1], [0, 1]]
    assert table.index.name == "n_tissues" and table.columns.name == "n_individuals"
    # hiding the other individual's tissue removes it from the individual count
    observed = np.ones((2, 2, 1), bool)
    observed[1, 0, 0] = False
    table = joint_occupancy(_enriched(values, observed), individual="ind0", cell="cel0",
                            assay="ass0")
    assert table.to_numpy().tolist() == [[2, 0], [1, 0]]
    with pytest.raises(ValueError, match="not observed"):
        joint_occupancy(_enriched(values, observed), individual="ind1", cell="cel0",
                        assay="ass0")


# --------------------------------------------------------------------------- Fig. 6


def test_peak_overlaps_hand_case_and_brute_force():
    query = _peaks((0, 100), (100, 200), (300, 400), (1000, 1100))
    reference = _peaks((50, 100), (399, 500))
    # (100, 200) only touches (50, 100): half-open intervals do not overlap
    assert peak_overlaps(query, reference).tolist() == [True, False, True, False]
    other_chrom = _peaks((0, 1000), chrom="chrT")
    assert not peak_overlaps(query, other_chrom).any()
    rng = np.random.default_rng(2)
    starts = rng.integers(0, 5000, 60)
    q = _peaks(*[(s, s + rng.integers(1, 300)) for s in starts[:30]])
    r = _peaks(*[(s, s + rng.integers(1, 300)) for s in starts[30:]])
    brute = [bool(((r.start < e) & (r.end > s)).any()) for s, e in zip(q.start, q.end,
                                                                         strict=True)]
    assert peak_overlaps(q, r).tolist() == brute


def test_individual_specific_regions_hand_case():
    starts = np.arange(70) * BIN
    target = _peaks((100, 300), (500, 600), (1000, 1200), (1400, 1550))
    training = _peaks((250, 400), (1300, 1350))
    regions = individual_specific_regions(target, training, starts, BIN)
    assert regions.min_length == MIN_SPECIFIC_LENGTH == 150
    assert regions.n_conserved == 1 and regions.n_short == 1
    expected_labels = np.zeros(70, bool)
    expected_labels[40:48] = True     # 1000-1200
    expected_labels[56:62] = True     # 1400-1550 (exactly 150 bp: kept)
    np.testing.assert_array_equal(regions.labels, expected_labels)
    expected_eval = np.ones(70, bool)
    expected_eval[4:16] = False       # conserved region: 100-300 and its partner 250-400
    expected_eval[20:24] = False      # short specific peak 500-600
    np.testing.assert_array_equal(regions.evaluated, expected_eval)
    # the training-only peak (1300-1350) stays in as negatives
    assert regions.evaluated[52] and not regions.labels[52]
    assert regions.n_positive == 14
    assert regions.positive_fraction == pytest.approx(14 / 54)
    assert regions.specific_peaks["kept"].tolist() == [False, True, True]


def test_individual_specific_auprc_matches_sklearn_and_the_baseline():
    starts = np.arange(60) * BIN
    regions = individual_specific_regions(_peaks((100, 300), (1000, 1200)),
                                          _peaks((250, 400)), starts, BIN)
    rng = np.random.default_rng(4)
    scores = rng.normal(size=60) + 1.5 * regions.labels
    out = individual_specific_auprc(regions, scores)
    use = regions.evaluated
    assert out["auprc"] == pytest.approx(average_precision_score(regions.labels[use],
                                                                 scores[use]))
    assert out["positive_fraction"] == pytest.approx(8 / 48)
    assert out["n_positive"] == 8 and out["n_evaluated"] == 48
    # a perfect scorer gets 1 whatever the excluded bins hold; NaN bins are dropped
    perfect = regions.labels.astype(float)
    perfect[~regions.evaluated] = 100.0
    perfect[0] = np.nan
    result = individual_specific_auprc(regions, perfect)
    assert result["auprc"] == 1.0 and result["n_evaluated"] == 47
    # no positives -> NaN AUPRC, baseline 0
    empty = individual_specific_regions(_peaks((100, 300)), _peaks((100, 300)), starts, BIN)
    none = individual_specific_auprc(empty, scores)
    assert np.isnan(none["auprc"]) and none["positive_fraction"] == 0.0
    with pytest.raises(ValueError, match="shape"):
        individual_specific_auprc(regions, scores[:10])


def test_specific_peaks_recover_planted_individual_gains():
    """On the simulator, individual-specific peaks sit mostly on the planted individual gains."""
    from analysislib.simulate.epigenome import simulate_epigenome

    ds = simulate_epigenome(n_cells=2, n_individuals=2, assays=["H3K4me1"], n_bins=20_000,
                            n_lineages=1, individual_specific_fraction=0.3, seed=5)
    track = {i: ds["signal"].isel(individual=i, cell=0, assay=0).assign_attrs(
        scale="neglog10p") for i in (0, 1)}
    regions = individual_specific_regions(call_peaks(track[0]), call_peaks(track[1]),
                                          ds["bin_start"].values, 25)
    planted = ds["individual_peak"].isel(individual=0).values == 1
    assert regions.n_positive > 0
    # the positives are enriched for the planted gains far above their genome share
    assert planted[regions.labels].mean() > 5 * planted.mean()
