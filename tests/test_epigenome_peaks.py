"""Tests for analysislib.epigenome.peaks: the bdgpeakcall rule, its agreement with MACS2, consensus
peaks and peak masks.

Hand-computed cases pin the rule (threshold, gap merge, minimum length, summit ties); the
``tools``-marked tests run the real ``macs2 bdgpeakcall`` on the same tracks and require identical
peaks.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from analysislib.epigenome.peaks import (
    PEAK_COLUMNS,
    call_peaks,
    consensus_peaks,
    matched_cutoff,
    peak_mask,
    read_narrowpeak,
)
from analysislib.errors import ExternalToolError, InputFormatError, ToolNotFoundError

needs_macs2 = pytest.mark.skipif(shutil.which("macs2") is None, reason="macs2 not installed")


def make_track(values, starts=None, chroms=None, scale="neglog10p", bin_size=25):
    values = np.asarray(values, dtype=np.float32)
    starts = np.arange(values.size) * bin_size if starts is None else np.asarray(starts)
    coords = {"bin_start": ("bin", starts)}
    if chroms is not None:
        coords["bin_chrom"] = ("bin", np.asarray(chroms))
    return xr.DataArray(values, dims="bin", coords=coords, attrs={"scale": scale})


def as_tuples(peaks: pd.DataFrame) -> list[tuple]:
    return [(c, int(s), int(e), int(m), float(v)) for c, s, e, m, v in
            peaks[["chrom", "start", "end", "summit", "score"]].itertuples(index=False)]


# Regions (25 bp bins, equal neighbours merged):
# [0,25)0 [25,75)3 [75,100)0 [100,150)5 [150,200)0 [200,225)2 [225,300)0 [300,350)4
GAPPY = [0, 3, 3, 0, 5, 5, 0, 0, 2, 0, 0, 0, 4, 4]


def test_threshold_gap_merge_and_min_length_by_hand() -> None:
    peaks = call_peaks(make_track(GAPPY), cutoff=2, min_length=50, max_gap=30)
    # [25,75) and [100,150) are 25 bp apart (<= 30): one peak, summit mid of [100,150).
    # [200,225) is 50 bp after it (> 30) and only 25 bp long (< 50): dropped.
    # [300,350) touches the end of the track (edge peak).
    assert as_tuples(peaks) == [("chr1", 25, 150, 125, 5.0), ("chr1", 300, 350, 325, 4.0)]
    assert list(peaks.columns) == list(PEAK_COLUMNS)
    assert peaks["length"].tolist() == [125, 50]


def test_cutoff_is_inclusive_and_max_gap_bound_is_inclusive() -> None:
    # value exactly at the cut-off counts; a gap of exactly max_gap is bridged
    peaks = call_peaks(make_track(GAPPY), cutoff=2, min_length=0, max_gap=50)
    assert as_tuples(peaks) == [("chr1", 25, 225, 125, 5.0), ("chr1", 300, 350, 325, 4.0)]
    peaks = call_peaks(make_track(GAPPY), cutoff=2, min_length=0, max_gap=49)
    assert [p[1:3] for p in as_tuples(peaks)] == [(25, 150), (200, 225), (300, 350)]


def test_summit_ties_pick_the_middle_region() -> None:
    # three regions share the maximum: midpoints 25, 87, 137 -> the middle one
    peaks = call_peaks(make_track([3, 3, 0, 3, 1, 3]), cutoff=2, min_length=0, max_gap=30)
    assert as_tuples(peaks) == [("chr1", 0, 150, 87, 3.0)]
    # four tied regions: midpoints 12, 62, 112, 162 -> the lower middle (62)
    peaks = call_peaks(make_track([3, 0, 3, 0, 3, 0, 3]), cutoff=2, min_length=0, max_gap=30)
    assert as_tuples(peaks) == [("chr1", 0, 175, 62, 3.0)]


def test_plateau_summit_is_its_midpoint() -> None:
    peaks = call_peaks(make_track([0, 3, 3, 3, 3, 3, 3, 3, 3, 0]))
    assert as_tuples(peaks) == [("chr1", 25, 225, 125, 3.0)]


def test_default_min_length_drops_short_peaks() -> None:
    # seven bins above 2 = 175 bp < 200 default
    assert call_peaks(make_track([0, *[3] * 7, 0])).empty
    assert len(call_peaks(make_track([0, *[3] * 8, 0]))) == 1


def test_uncovered_stretches_and_nan_count_as_zero() -> None:
    # bins at 0, 25, then 100, 125: the 50 bp hole is below the cut-off
    track = make_track([3, 3, 3, 3], starts=[0, 25, 100, 125])
    assert [p[1:3] for p in as_tuples(call_peaks(track, min_length=0, max_gap=30))] == [
        (0, 50), (100, 150)]
    merged = call_peaks(track, min_length=0, max_gap=50)
    assert as_tuples(merged) == [("chr1", 0, 150, 25, 3.0)]  # ties 25, 125 -> first of two
    nan_track = make_track([3, 3, np.nan, np.nan, 3, 3])
    assert [p[1:3] for p in as_tuples(call_peaks(nan_track, min_length=0, max_gap=30))] == [
        (0, 50), (100, 150)]


def test_first_bin_after_chromosome_start() -> None:
    track = make_track([3, 3, 0], starts=[1000, 1025, 1050])
    assert as_tuples(call_peaks(track, min_length=0)) == [("chr1", 1000, 1050, 1025, 3.0)]


def test_arcsinh_tracks_are_converted_with_sinh() -> None:
    raw = np.array(GAPPY, dtype=np.float32)
    arcsinh = make_track(np.arcsinh(raw), scale="arcsinh")
    peaks = call_peaks(arcsinh, cutoff=2, min_length=50)
    expected = call_peaks(make_track(np.sinh(np.arcsinh(raw))), cutoff=2, min_length=50)
    pd.testing.assert_frame_equal(peaks, expected)
    assert [p[1:3] for p in as_tuples(peaks)] == [(25, 150), (300, 350)]
    np.testing.assert_allclose(peaks["score"], [5.0, 4.0], rtol=1e-6)


def test_chromosomes_are_called_separately() -> None:
    values = [3, 3, 3, 3, 0, 0, 3, 3]
    chroms = ["chr2"] * 4 + ["chr1"] * 4
    starts = [0, 25, 50, 75, 0, 25, 50, 75]
    peaks = call_peaks(make_track(values, starts, chroms), min_length=50, max_gap=30)
    assert as_tuples(peaks) == [("chr1", 50, 100, 75, 3.0), ("chr2", 0, 100, 50, 3.0)]


def test_no_peaks_gives_an_empty_table_with_the_columns() -> None:
    peaks = call_peaks(make_track(np.zeros(20)))
    assert peaks.empty and list(peaks.columns) == list(PEAK_COLUMNS)


@pytest.mark.parametrize("kwargs, message", [
    ({"cutoff": 0.0}, "cutoff"),
    ({"cutoff": float("nan")}, "cutoff"),
    ({"max_gap": -1}, "max_gap"),
    ({"method": "homer"}, "method"),
])
def test_bad_parameters(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        call_peaks(make_track(GAPPY), **kwargs)


def test_bad_tracks() -> None:
    with pytest.raises(TypeError, match="DataArray"):
        call_peaks(np.zeros(5))
    two_d = xr.DataArray(np.zeros((2, 3)), dims=("track", "bin"), attrs={"scale": "arcsinh"})
    with pytest.raises(ValueError, match="single dimension 'bin'"):
        call_peaks(two_d)
    no_scale = make_track(GAPPY)
    no_scale.attrs = {}
    with pytest.raises(ValueError, match="scale"):
        call_peaks(no_scale)
    with pytest.raises(ValueError, match="overlap"):
        call_peaks(make_track([3, 3], starts=[0, 10]), bin_size=25)


# --------------------------------------------------------------------------- MACS2 agreement


def random_track(seed: int, n: int = 3000) -> xr.DataArray:
    """Plateaus and ties (values on a 0.5 grid, runs of 1-7 bins), zeros, edge peaks, two chromosomes, holes, NaN."""
    rng = np.random.default_rng(seed)
    v = np.repeat(np.round(rng.exponential(1.2, n) * 2) / 2, rng.integers(1, 8, n))[:n]
    v[rng.random(n) < 0.3] = 0
    v[:4] = 4.5
    v[-4:] = 4.5
    v[rng.random(n) < 0.01] = np.nan
    half = n // 2
    starts = np.r_[np.arange(half) * 25 + 200, np.arange(n - half) * 25]
    keep = rng.random(n) > 0.05  # holes on the 25 bp grid
    keep[[0, half - 1, half, n - 1]] = True
    chroms = np.array(["chr1"] * half + ["chrX"] * (n - half))
    return make_track(v[keep], starts[keep], chroms[keep])


SHARED_CASES = [
    (make_track(GAPPY), {"cutoff": 2, "min_length": 50, "max_gap": 30}),
    (make_track(GAPPY), {"cutoff": 2, "min_length": 0, "max_gap": 50}),
    (make_track([3, 3, 0, 3, 1, 3]), {"cutoff": 2, "min_length": 0, "max_gap": 30}),
    (make_track([3, 0, 3, 0, 3, 0, 3]), {"cutoff": 2, "min_length": 0, "max_gap": 30}),
    (make_track([3, 3, 3, 3], starts=[0, 25, 100, 125]), {"min_length": 0, "max_gap": 50}),
    (make_track([3, 3, 0], starts=[1000, 1025, 1050]), {"min_length": 0}),
]


@pytest.mark.tools
@needs_macs2
@pytest.mark.parametrize("case", range(len(SHARED_CASES)))
def test_numpy_agrees_with_macs2_on_hand_cases(case: int) -> None:
    track, kwargs = SHARED_CASES[case]
    ours = call_peaks(track, **kwargs)
    macs = call_peaks(track, method="macs2", **kwargs)
    pd.testing.assert_frame_equal(ours, macs)
    assert macs.attrs["tool_run"]["seconds"] > 0
    assert macs.attrs["tool_run"]["peak_memory_mb"] > 0


@pytest.mark.tools
@needs_macs2
@pytest.mark.parametrize("seed, kwargs", [
    (1, {}),
    (2, {"cutoff": 1.0, "min_length": 50, "max_gap": 60}),
    (3, {"cutoff": 3.0, "min_length": 0, "max_gap": 0}),
    (4, {"cutoff": 0.5, "min_length": 100, "max_gap": 25}),
])
def test_numpy_agrees_with_macs2_on_random_tracks(seed: int, kwargs: dict) -> None:
    track = random_track(seed)
    ours = call_peaks(track, **kwargs)
    macs = call_peaks(track, method="macs2", **kwargs)
    assert len(ours) > 0
    pd.testing.assert_frame_equal(ours, macs)


@pytest.mark.tools
@needs_macs2
def test_numpy_agrees_with_macs2_on_arcsinh_floats() -> None:
    rng = np.random.default_rng(7)
    x = np.abs(rng.normal(0.6, 0.8, 4000)).astype(np.float32)  # continuous arcsinh values
    track = make_track(x, scale="arcsinh")
    ours = call_peaks(track, min_length=50)
    macs = call_peaks(track, method="macs2", min_length=50)
    assert len(ours) > 20
    pd.testing.assert_frame_equal(ours, macs)


@pytest.mark.tools
@needs_macs2
def test_macs2_needs_a_regular_grid() -> None:
    with pytest.raises(ValueError, match="grid"):
        call_peaks(make_track([3, 3, 3], starts=[0, 25, 60]), method="macs2")


def _fake_tool(directory: Path, name: str, script: str) -> None:
    path = directory / name
    path.write_text(script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_macs2_failure_quotes_its_stderr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_tool(tmp_path, "macs2", "#!/bin/sh\necho 'CRITICAL: bedGraph is broken' >&2\nexit 3\n")
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(ExternalToolError, match="bedGraph is broken"):
        call_peaks(make_track(GAPPY), method="macs2")


def test_macs2_missing_names_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolNotFoundError, match="macs"):
        call_peaks(make_track(GAPPY), method="macs2")


# --------------------------------------------------------------------------- narrowPeak


def test_matched_cutoff_gives_the_references_share_of_bins() -> None:
    # references: 2 of 10 and 4 of 10 bins at or above 2 -> share 0.3 -> the 3rd largest value
    references = [make_track([0, 0, 2, 5, 0, 0, 0, 0, 0, 0]),
                  make_track(np.arcsinh([3, 3, 3, 2, 0, 0, 0, 0, 0, 0]), scale="arcsinh")]
    track = make_track(np.arange(10) / 10)
    assert matched_cutoff(track, references) == pytest.approx(0.7)
    assert int((track.values >= matched_cutoff(track, references)).sum()) == 3
    # another reference cut-off: share 0.1 (only the 5) -> the largest value
    assert matched_cutoff(track, references, cutoff=4) == pytest.approx(0.9)


def test_matched_cutoff_edge_cases() -> None:
    track = make_track(np.arange(10) / 10)
    flat = make_track(np.ones(10))
    assert matched_cutoff(track, [flat]) == 2.0  # references without enriched bins: the cut-off
    zeros = make_track(np.zeros(10))
    level = matched_cutoff(zeros, [make_track([5] * 5 + [0] * 5)])
    assert level > 0  # call_peaks needs a positive cut-off; a flat 0 track has no peaks there
    assert call_peaks(zeros, cutoff=level, min_length=0).empty
    with pytest.raises(ValueError, match="at least one reference"):
        matched_cutoff(track, [])


def test_read_narrowpeak(tmp_path: Path) -> None:
    path = tmp_path / "x.narrowPeak"
    path.write_text('track type=narrowPeak name="x"\n'
                    "chr2\t100\t300\tp1\t57\t.\t0\t0\t0\t50\n"
                    "chr1\t0\t50\tp2\t20\t.\t0\t0\t0\t-1\n")
    peaks = read_narrowpeak(path)
    assert as_tuples(peaks) == [("chr1", 0, 50, 25, 2.0), ("chr2", 100, 300, 150, 5.7)]
    bad = tmp_path / "bad.narrowPeak"
    bad.write_text("chr1\t0\t50\tp\t20\t.\t0\t0\t0\n")
    with pytest.raises(InputFormatError, match="line 1"):
        read_narrowpeak(bad)


# --------------------------------------------------------------------------- consensus


def peaks_table(rows):
    return pd.DataFrame(rows, columns=["chrom", "start", "end", "summit", "score"])


def test_consensus_keeps_peaks_in_at_least_k_sets() -> None:
    a = peaks_table([("chr1", 100, 200, 150, 3.0), ("chr1", 500, 600, 550, 2.0),
                     ("chr2", 0, 100, 50, 9.0)])
    b = peaks_table([("chr1", 150, 260, 180, 4.0), ("chr1", 600, 700, 650, 8.0)])
    c = peaks_table([("chr1", 250, 300, 275, 1.0), ("chr1", 900, 950, 925, 2.0)])
    two = consensus_peaks([a, b, c], min_overlap=2)
    # a[100,200) overlaps b[150,260) which overlaps c[250,300): one merged peak from 3 sets.
    # a[500,600) and b[600,700) only touch: separate, each from one set -> dropped.
    assert two[["chrom", "start", "end", "summit", "score", "n_sets"]].values.tolist() == [
        ["chr1", 100, 300, 180, 4.0, 3]]
    one = consensus_peaks([a, b, c], min_overlap=1)
    assert one[["chrom", "start", "end", "n_sets"]].values.tolist() == [
        ["chr1", 100, 300, 3], ["chr1", 500, 600, 1], ["chr1", 600, 700, 1],
        ["chr1", 900, 950, 1], ["chr2", 0, 100, 1]]
    # a fraction: ceil(0.9 * 3) = 3 sets
    assert consensus_peaks([a, b, c], min_overlap=0.9)["n_sets"].tolist() == [3]
    assert consensus_peaks([a, b, c], min_overlap=4).empty


def test_consensus_counts_sets_not_peaks() -> None:
    a = peaks_table([("chr1", 0, 100, 50, 1.0), ("chr1", 50, 150, 100, 2.0)])
    b = peaks_table([("chr1", 1000, 1100, 1050, 1.0)])
    assert consensus_peaks([a, b], min_overlap=2).empty
    merged = consensus_peaks([a, b], min_overlap=1)
    assert merged[["start", "end", "summit", "n_sets"]].values.tolist() == [
        [0, 150, 100, 1], [1000, 1100, 1050, 1]]


def test_consensus_errors() -> None:
    with pytest.raises(ValueError, match="no peak tables"):
        consensus_peaks([])
    with pytest.raises(ValueError, match="min_overlap"):
        consensus_peaks([peaks_table([])], min_overlap=1.5)
    with pytest.raises(ValueError, match="lacks columns"):
        consensus_peaks([pd.DataFrame({"chrom": ["chr1"], "start": [0]})])


# --------------------------------------------------------------------------- masks


def test_peak_mask_by_hand() -> None:
    starts = np.arange(10) * 25
    peaks = pd.DataFrame({"chrom": ["chr1", "chr1"], "start": [25, 130], "end": [75, 176]})
    # [25,75) covers bins 1-2; [130,176) overlaps bins 5 (125-150), 6, and 7 (175-200) by 1 bp
    expected = np.zeros(10, bool)
    expected[[1, 2, 5, 6, 7]] = True
    np.testing.assert_array_equal(peak_mask(peaks, starts, 25), expected)


def test_peak_mask_by_chromosome_and_unsorted_bins() -> None:
    starts = np.array([50, 0, 25, 0, 25])
    chroms = np.array(["chr1", "chr1", "chr1", "chr2", "chr2"])
    peaks = pd.DataFrame({"chrom": ["chr2", "chr1"], "start": [0, 40], "end": [25, 60]})
    np.testing.assert_array_equal(peak_mask(peaks, starts, 25, bin_chrom=chroms),
                                  [True, False, True, True, False])
    with pytest.raises(ValueError, match="several chromosomes"):
        peak_mask(peaks, starts, 25)


def test_peak_mask_matches_called_peaks() -> None:
    track = random_track(5)
    peaks = call_peaks(track, min_length=0)
    mask = peak_mask(peaks, track["bin_start"].values, 25, bin_chrom=track["bin_chrom"].values)
    values = np.nan_to_num(track.values)
    # every bin at or above the cut-off is inside a peak (min_length=0)
    assert np.all(mask[values >= 2.0])
    assert mask.sum() * 25 <= peaks["length"].sum()
