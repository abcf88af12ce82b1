"""Tests for analysislib.epigenome.wasserstein (peak-shape W1 distances, eDICE Fig. 4c)."""

from __future__ import annotations

import dask
import dask.array
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy import stats

from analysislib.epigenome.tensor import create_signal_dataset, to_arcsinh
from analysislib.epigenome.wasserstein import (
    distance_agreement,
    highlight_peaks,
    normalise_profiles,
    peak_bin_ranges,
    peak_profiles,
    peak_shape_distances,
    wasserstein_1d,
    wasserstein_distances,
)
from analysislib.testing import raise_if_dask_computes

BIN = 25


def _track(values, chrom="chrS", starts=None):
    values = np.asarray(values, dtype=np.float64)
    starts = np.arange(values.size) * BIN if starts is None else np.asarray(starts)
    chroms = np.full(values.size, chrom) if isinstance(chrom, str) else np.asarray(chrom)
    return xr.DataArray(values, dims="bin",
                        coords={"bin_start": ("bin", starts), "bin_chrom": ("bin", chroms)},
                        attrs={"scale": "neglog10p", "bin_size": BIN})


def _scipy_reference(a, b, first, length):
    out = []
    for s, n in zip(first, length, strict=True):
        wa = np.nan_to_num(np.clip(a[s:s + n], 0, None))
        wb = np.nan_to_num(np.clip(b[s:s + n], 0, None))
        if wa.sum() == 0 or wb.sum() == 0:
            out.append(np.nan)
            continue
        pos = np.arange(n)
        out.append(stats.wasserstein_distance(pos, pos, wa, wb))
    return np.array(out)


def test_hand_computed_distances():
    # All mass at 0 vs all mass at 2: the mass moves 2 bins.
    assert wasserstein_1d(np.array([1.0, 0, 0]), np.array([0, 0, 2.0])) == pytest.approx(2.0)
    # Half the mass moves one bin: 0.5.
    assert wasserstein_1d(np.array([1.0, 1.0]), np.array([0.0, 3.0])) == pytest.approx(0.5)
    # Scale-free (normalised), symmetric, zero on identical shapes.
    a, b = np.array([3.0, 1, 0, 2]), np.array([0.0, 1, 5, 1])
    assert wasserstein_1d(a, b) == pytest.approx(wasserstein_1d(10 * a, b))
    assert wasserstein_1d(a, b) == pytest.approx(wasserstein_1d(b, a))
    assert wasserstein_1d(a, 7 * a) == pytest.approx(0.0)


def test_normalisation_clips_negatives_and_nan_and_flags_empty():
    weights, empty = normalise_profiles(np.array([[-1.0, 1.0, np.nan, 3.0], [0.0, -2.0, 0, 0]]))
    np.testing.assert_allclose(weights[0], [0, 0.25, 0, 0.75])
    np.testing.assert_array_equal(weights[1], 0.0)
    np.testing.assert_array_equal(empty, [False, True])
    out = wasserstein_1d(np.array([[1.0, 0], [0.0, 0]]), np.array([[0.0, 1], [1.0, 0]]))
    assert out[0] == pytest.approx(1.0)
    assert np.isnan(out[1])


@pytest.mark.parametrize("seed", range(5))
def test_agrees_with_scipy_and_ignores_zero_padding(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 60))
    a = rng.gamma(0.7, 2.0, (20, n)) - 0.3 * rng.random((20, n))
    b = rng.gamma(1.5, 1.0, (20, n))
    a[0, rng.integers(0, n)] = np.nan
    ours = wasserstein_1d(a, b)
    ref = _scipy_reference(a.ravel(), b.ravel(), np.arange(20) * n, np.full(20, n))
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-12)
    padded = wasserstein_1d(np.pad(a, ((0, 0), (0, 7))), np.pad(b, ((0, 0), (0, 7))))
    np.testing.assert_allclose(padded, ours, rtol=1e-12)


def test_peak_bin_ranges_hand_case_and_errors():
    starts = np.r_[np.arange(8) * BIN, np.arange(4) * BIN]
    chroms = ["c1"] * 8 + ["c2"] * 4
    track = _track(np.zeros(12), chrom=chroms, starts=starts)
    peaks = pd.DataFrame({"chrom": ["c1", "c2", "c1"], "start": [30, 0, 175],
                          "end": [80, 25, 200]})
    first, length = peak_bin_ranges(track, peaks)
    # [30, 80) overlaps the bins starting at 25, 50 and 75; [0, 25) is c2's first bin (index 8).
    np.testing.assert_array_equal(first, [1, 8, 7])
    np.testing.assert_array_equal(length, [3, 1, 1])
    with pytest.raises(ValueError, match="does not cover"):
        peak_bin_ranges(track, pd.DataFrame({"chrom": ["c9"], "start": [0], "end": [10]}))
    with pytest.raises(ValueError, match=r"peak 0 .*end <= start"):
        peak_bin_ranges(track, pd.DataFrame({"chrom": ["c1"], "start": [50], "end": [50]}))
    gappy = _track(np.zeros(4), starts=[0, 25, 100, 125])
    with pytest.raises(ValueError, match="spans a gap"):
        peak_bin_ranges(gappy, pd.DataFrame({"chrom": ["chrS"], "start": [0], "end": [110]}))
    with pytest.raises(ValueError, match="lacks columns"):
        peak_bin_ranges(track, pd.DataFrame({"chrom": ["c1"], "start": [0]}))


def test_peak_profiles_pads_with_zeros_and_keeps_length():
    track = _track(np.arange(1.0, 11.0))
    peaks = pd.DataFrame({"chrom": ["chrS", "chrS"], "start": [50, 200], "end": [100, 225]},
                         index=["p1", "p2"])
    prof = peak_profiles(track, peaks)
    assert prof.dims == ("peak", "offset")
    np.testing.assert_array_equal(prof.values, [[3.0, 4.0], [9.0, 0.0]])
    np.testing.assert_array_equal(prof["peak_length"].values, [2, 1])
    assert prof["peak"].values.tolist() == ["p1", "p2"]


def _random_case(seed, n_bins=3000, n_peaks=150):
    rng = np.random.default_rng(seed)
    a = rng.gamma(0.8, 2.0, n_bins) - 0.2
    b = rng.gamma(0.8, 2.0, n_bins)
    a[100:110] = 0.0
    b[100:110] = -1.0  # an all-zero profile after clipping: NaN distance
    start = rng.integers(0, n_bins - 400, n_peaks) * BIN + rng.integers(0, BIN, n_peaks)
    length = np.exp(rng.uniform(np.log(20), np.log(400 * BIN), n_peaks)).astype(int)
    peaks = pd.DataFrame({"chrom": "chrS", "start": start,
                          "end": np.minimum(start + length, n_bins * BIN)})
    peaks.loc[len(peaks)] = ["chrS", 100 * BIN, 110 * BIN]
    peaks.index = [f"peak{i}" for i in range(len(peaks))]
    return _track(a), _track(b), peaks


def test_distances_match_scipy_in_table_order_and_stay_lazy():
    a, b, peaks = _random_case(1)
    with raise_if_dask_computes():
        dist = wasserstein_distances(a, b, peaks, chunk_size=16)
    assert dist.chunks is not None
    first, length = peak_bin_ranges(a, peaks)
    assert len(np.unique(np.ceil(np.log2(length)))) > 3  # several length buckets
    ref = _scipy_reference(a.values, b.values, first, length)
    values = dist.compute(scheduler="threads").values
    np.testing.assert_allclose(values, ref, rtol=1e-9, atol=1e-12, equal_nan=True)
    assert np.isnan(values[-1])
    assert dist["peak"].values.tolist() == peaks.index.tolist()
    np.testing.assert_array_equal(dist["peak_length"].values, length)
    bp = wasserstein_distances(a, b, peaks, unit="bp").compute().values
    np.testing.assert_allclose(bp, values * BIN, equal_nan=True)


def test_dask_backed_and_arcsinh_tracks_give_the_same_distances():
    a, b, peaks = _random_case(2, n_bins=1500, n_peaks=60)
    expected = wasserstein_distances(a, b, peaks).values
    # Lazy signal, in-memory bin coordinates (these are read to place the peaks).
    a_lazy = a.copy(data=dask.array.from_array(a.values, chunks=500))
    b_lazy = b.copy(data=dask.array.from_array(b.values, chunks=500))
    with raise_if_dask_computes():
        lazy = wasserstein_distances(a_lazy, b_lazy, peaks)
    np.testing.assert_allclose(lazy.compute().values, expected, rtol=1e-12, equal_nan=True)
    a_asinh = to_arcsinh(a)
    assert a_asinh.attrs["scale"] == "arcsinh"
    via_arcsinh = wasserstein_distances(a_asinh, b, peaks).values
    np.testing.assert_allclose(via_arcsinh, expected, rtol=1e-9, equal_nan=True)


def test_runs_on_a_distributed_cluster():
    distributed = pytest.importorskip("distributed")
    a, b, peaks = _random_case(3, n_bins=1500, n_peaks=60)
    expected = wasserstein_distances(a, b, peaks).compute(scheduler="sync").values
    # tcp on loopback: the inproc transport looks up the machine's address through the network
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  protocol="tcp://", host="127.0.0.1",
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        got = client.compute(wasserstein_distances(a, b, peaks, chunk_size=8).data).result()
    np.testing.assert_allclose(got, expected, rtol=1e-12, equal_nan=True)


def _two_tissue_dataset(seed):
    rng = np.random.default_rng(seed)
    n_bins = 2000
    signal = rng.gamma(0.5, 1.0, (2, 1, n_bins))
    return create_signal_dataset(signal, cells=["E025", "E052"], assays=["H3K9ac"], chrom="chrS")


def test_peak_shape_distances_agreement_and_highlights():
    observed = _two_tissue_dataset(4)
    rng = np.random.default_rng(5)
    noisy = observed["signal"].values * rng.uniform(0.8, 1.2, observed["signal"].shape)
    imputed = to_arcsinh(create_signal_dataset(noisy, cells=["E025", "E052"],
                                               assays=["H3K9ac"], chrom="chrS"))
    start = np.arange(0, 1900, 19) * BIN
    peaks = pd.DataFrame({"chrom": "chrS", "start": start,
                          "end": start + rng.integers(1, 16, start.size) * BIN})
    dist = peak_shape_distances(observed, imputed, peaks, cells=["E025", "E052"],
                                assay="H3K9ac").compute()
    for kind, src in (("observed", observed), ("imputed", imputed)):
        direct = wasserstein_distances(
            _as_track(src, "E025"), _as_track(src, "E052"), peaks).values
        np.testing.assert_allclose(dist[kind].values, direct, equal_nan=True)
    agreement = distance_agreement(dist)
    ok = np.isfinite(dist["observed"].values) & np.isfinite(dist["imputed"].values)
    assert agreement.n == ok.sum()
    ref = stats.pearsonr(dist["observed"].values[ok], dist["imputed"].values[ok])
    assert agreement.pearson == pytest.approx(ref.statistic)
    assert agreement.spearman == pytest.approx(
        stats.spearmanr(dist["observed"].values[ok], dist["imputed"].values[ok]).statistic)
    assert agreement.pearson > 0.5  # 20 % multiplicative noise keeps shapes close

    picks = highlight_peaks(dist, n_specific=2, n_shared=1, min_length=3)
    assert picks["kind"].tolist() == ["specific", "specific", "shared"]
    eligible = dist["observed"].values[ok & (dist["peak_length"].values >= 3)]
    assert picks["observed"].iloc[0] == pytest.approx(eligible.max())
    assert picks["observed"].iloc[2] == pytest.approx(eligible.min())
    assert {"chrom", "start", "end"} <= set(picks.columns)


def _as_track(ds, cell):
    track = ds["signal"].sel(cell=cell, assay="H3K9ac").drop_vars(["cell", "assay"])
    track.attrs = {"scale": ds.attrs["scale"], "bin_size": ds.attrs["bin_size"]}
    return track


def test_bad_inputs_are_named():
    a, b, peaks = _random_case(6, n_bins=500, n_peaks=5)
    with pytest.raises(ValueError, match="same bins"):
        wasserstein_distances(a, b.isel(bin=slice(0, 400)), peaks)
    with pytest.raises(ValueError, match="unit"):
        wasserstein_distances(a, b, peaks, unit="kb")
    with pytest.raises(ValueError, match="two tissues"):
        peak_shape_distances(_two_tissue_dataset(0), _two_tissue_dataset(0), peaks,
                             cells=["E025"], assay="H3K9ac")


def test_peaks_on_several_chromosomes_keep_the_table_order():
    rng = np.random.default_rng(8)
    n = 600
    chroms = ["c1"] * n + ["c2"] * n
    starts = np.r_[np.arange(n), np.arange(n)] * BIN
    a = _track(rng.gamma(0.7, 2.0, 2 * n), chrom=chroms, starts=starts)
    b = _track(rng.gamma(0.7, 2.0, 2 * n), chrom=chroms, starts=starts)
    start = rng.integers(0, n - 60, 40) * BIN
    peaks = pd.DataFrame({"chrom": np.where(np.arange(40) % 3 == 0, "c2", "c1"),
                          "start": start, "end": start + rng.integers(1, 60, 40) * BIN})
    first, length = peak_bin_ranges(a, peaks)
    assert np.all(first[peaks["chrom"].to_numpy() == "c2"] >= n)
    dist = wasserstein_distances(a, b, peaks, chunk_size=7).compute()
    ref = _scipy_reference(a.values, b.values, first, length)
    np.testing.assert_allclose(dist.values, ref, rtol=1e-9, equal_nan=True)
    assert dist["peak"].values.tolist() == peaks.index.tolist()
