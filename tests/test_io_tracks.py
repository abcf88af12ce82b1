"""Tests of track I/O: Roadmap npz (real files), bigWig, bedGraph and zarr round trips and errors."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysislib.epigenome.tensor import create_signal_dataset, stack_tracks, to_arcsinh
from analysislib.errors import InputFormatError
from analysislib.io.tracks import (
    parse_roadmap_name,
    read_bedgraph,
    read_bigwig,
    read_roadmap_npz,
    read_zarr,
    write_bedgraph,
    write_bigwig,
    write_roadmap_npz,
    write_zarr,
)

CELLS = ["E003", "E017", "E065", "E116"]
MARKS = ["H3K4me3", "H3K27me3", "H3K36me3", "H3K9me3", "H3K4me1"]
PILOT_BINS = 1_126_469


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


# --------------------------------------------------------------------------- real npz


@pytest.fixture(scope="module")
def pilot(shared_data):
    """The 20 real tracks minus E065.H3K9me3, to check the unobserved slot."""
    files = sorted((shared_data / "epigenome").glob("*.npz"))
    kept = [f for f in files if not f.name.startswith("E065.H3K9me3.")]
    return read_roadmap_npz(kept, assays=MARKS), shared_data / "epigenome"


def test_read_real_roadmap_npz(pilot):
    ds, folder = pilot
    assert ds["signal"].shape == (4, 5, PILOT_BINS)
    assert ds["cell"].values.tolist() == CELLS
    assert ds["assay"].values.tolist() == MARKS
    assert ds.attrs["scale"] == "arcsinh" and ds.attrs["bin_size"] == 25
    assert int(ds["bin_start"][-1]) == (PILOT_BINS - 1) * 25
    observed = ds["observed"].to_series()
    assert observed.sum() == 19
    assert not observed[("E065", "H3K9me3")]
    assert np.isnan(ds["signal"].sel(cell="E065", assay="H3K9me3")).all()
    raw = np.load(folder / "E003.H3K4me3.pilot.arcsinh.npz")["arr_0"]
    np.testing.assert_array_equal(ds["signal"].sel(cell="E003", assay="H3K4me3").values, raw)
    # Known figures of Avocado's E003.H3K4me3 file: max 6.39, mean 0.273 (arcsinh scale).
    assert raw.max() == pytest.approx(6.39, abs=0.01) and raw.mean() == pytest.approx(0.273, abs=1e-3)


def test_read_real_directory_with_a_missing_cell(shared_data):
    folder = shared_data / "epigenome"
    ds = read_roadmap_npz(folder, cells=["E116", "E999"], assays=["H3K4me3"])
    assert ds["signal"].shape == (2, 1, PILOT_BINS)
    np.testing.assert_array_equal(ds["observed"].values, [[True], [False]])


# --------------------------------------------------------------------------- synthetic npz


def _write_npz(path: Path, **arrays) -> Path:
    np.savez_compressed(path, **arrays)
    return path


def test_npz_round_trip(tmp_path):
    values = np.abs(np.random.default_rng(0).normal(size=(2, 2, 30))).astype(np.float32)
    ds = create_signal_dataset(values, cells=["E1", "E2"], assays=["m1", "m2"],
                               observed=np.array([[True, True], [False, True]]), scale="arcsinh")
    written = write_roadmap_npz(ds, tmp_path, label="sim")
    assert sorted(p.name for p in written) == [
        "E1.m1.sim.arcsinh.npz", "E1.m2.sim.arcsinh.npz", "E2.m2.sim.arcsinh.npz"]
    back = read_roadmap_npz(tmp_path, cells=["E1", "E2"], assays=["m1", "m2"], chrom="chr1")
    xr.testing.assert_equal(back["signal"], ds["signal"])
    np.testing.assert_array_equal(back["observed"], ds["observed"])
    assert _leftovers(tmp_path) == []


def test_npz_wrong_key(tmp_path):
    good = _write_npz(tmp_path / "E1.m1.x.npz", arr_0=np.zeros(5, np.float32))
    bad = _write_npz(tmp_path / "E1.m2.x.npz", values=np.zeros(5, np.float32))
    with pytest.raises(InputFormatError, match="arr_0") as err:
        read_roadmap_npz([good, bad])
    assert err.value.path == str(bad) and err.value.record == "key arr_0"


def test_npz_shape_mismatch_names_both_files(tmp_path):
    first = _write_npz(tmp_path / "E1.m1.x.npz", arr_0=np.zeros(5, np.float32))
    second = _write_npz(tmp_path / "E2.m1.x.npz", arr_0=np.zeros(6, np.float32))
    with pytest.raises(InputFormatError, match=r"6 bins but E1\.m1\.x\.npz has 5") as err:
        read_roadmap_npz(tmp_path)
    assert err.value.path == str(second) and str(first.name) in str(err.value)


def test_npz_other_errors(tmp_path):
    two_d = _write_npz(tmp_path / "E1.m1.x.npz", arr_0=np.zeros((2, 5), np.float32))
    with pytest.raises(InputFormatError, match="1-D"):
        read_roadmap_npz([two_d])
    with pytest.raises(InputFormatError, match=r"CELL\.ASSAY"):
        parse_roadmap_name(tmp_path / "nodots.npz")
    assert parse_roadmap_name("E003.H3K4me3.pilot.arcsinh.npz") == ("E003", "H3K4me3")
    corrupt = tmp_path / "E1.m2.x.npz"
    corrupt.write_bytes(b"not a zip archive")
    with pytest.raises(InputFormatError, match="not a readable npz"):
        read_roadmap_npz([corrupt])
    ok = _write_npz(tmp_path / "E3.m1.a.npz", arr_0=np.zeros(5, np.float32))
    dup = _write_npz(tmp_path / "E3.m1.b.npz", arr_0=np.zeros(5, np.float32))
    with pytest.raises(InputFormatError, match="second file for track"):
        read_roadmap_npz([ok, dup])


# --------------------------------------------------------------------------- bigWig


def _two_chrom_dataset(scale="neglog10p"):
    """Two tracks over chr1 (4 bins, last one partial) and chr2 (3 bins), with a NaN bin."""
    values = np.array([[[0.5, 1.25, np.nan, 3.0, 0.0, 7.5, 7.5],
                        [2.0, 2.0, 2.0, 1.0, 4.0, 0.25, 0.125]]], dtype=np.float32)
    return create_signal_dataset(
        values, cells=["E003"], assays=["H3K4me3", "H3K27me3"], scale=scale,
        bin_start=[0, 25, 50, 75, 0, 25, 50], bin_chrom=["chr1"] * 4 + ["chr2"] * 3)


CHROM_SIZES = {"chr1": 90, "chr2": 75}


def test_bigwig_round_trip(tmp_path):
    ds = _two_chrom_dataset()
    path = write_bigwig(ds, tmp_path / "t.bw", CHROM_SIZES, cell="E003", assay="H3K4me3")
    back = read_bigwig(path, fill_value=np.nan)
    original = ds["signal"].sel(cell="E003", assay="H3K4me3")
    np.testing.assert_array_equal(back.values, original.values)
    np.testing.assert_array_equal(back["bin_start"].values, original["bin_start"].values)
    assert back["bin_chrom"].values.tolist() == original["bin_chrom"].values.tolist()
    assert back.attrs["scale"] == "neglog10p"
    # The NaN bin is absent from the file: the default fill value is 0.
    assert float(read_bigwig(path, "chr1")[2]) == 0.0
    assert _leftovers(tmp_path) == []


def test_bigwig_writes_neglog10p_from_arcsinh_and_rebins(tmp_path):
    ds = to_arcsinh(_two_chrom_dataset())
    path = write_bigwig(ds, tmp_path / "t.bw", CHROM_SIZES, cell="E003", assay="H3K27me3")
    chr2 = read_bigwig(path, "chr2")
    np.testing.assert_allclose(chr2.values, [4.0, 0.25, 0.125], rtol=1e-6)
    # 50 bp bins on chr1 (90 bp long): 0-50 holds 2.0; 50-90 holds 25 bp of 2.0, 15 bp of 1.0.
    coarse = read_bigwig(path, "chr1", bin_size=50)
    np.testing.assert_allclose(coarse.values, [2.0, (25 * 2.0 + 15 * 1.0) / 40], rtol=1e-6)
    window = read_bigwig(path, "chr1", start=60, end=90, bin_size=10)
    np.testing.assert_allclose(window.values, [2.0, (5 * 2.0 + 5 * 1.0) / 10, 1.0], rtol=1e-6)
    np.testing.assert_array_equal(window["bin_start"].values, [60, 70, 80])


def test_bigwig_errors_leave_nothing_behind(tmp_path):
    ds = _two_chrom_dataset()
    with pytest.raises(ValueError, match="beyond"):
        write_bigwig(ds, tmp_path / "t.bw", {"chr1": 60, "chr2": 75}, cell="E003",
                     assay="H3K4me3")
    with pytest.raises(ValueError, match="lacks chromosomes"):
        write_bigwig(ds, tmp_path / "t.bw", {"chr1": 90}, cell="E003", assay="H3K4me3")
    assert list(tmp_path.iterdir()) == []
    not_bw = tmp_path / "x.bw"
    not_bw.write_text("chr1\t0\t10\t1\n")
    with pytest.raises(InputFormatError, match="bigWig"):
        read_bigwig(not_bw, "chr1")
    good = write_bigwig(ds, tmp_path / "t.bw", CHROM_SIZES, cell="E003", assay="H3K4me3")
    with pytest.raises(InputFormatError, match="chrX") as err:
        read_bigwig(good, "chrX")
    assert err.value.record == "chrX"


# --------------------------------------------------------------------------- bedGraph


@pytest.mark.parametrize("name", ["t.bedGraph", "t.bedGraph.gz"])
def test_bedgraph_round_trip(tmp_path, name):
    ds = _two_chrom_dataset()
    path = write_bedgraph(ds, tmp_path / name, cell="E003", assay="H3K27me3")
    back = read_bedgraph(path)
    original = ds["signal"].sel(cell="E003", assay="H3K27me3")
    np.testing.assert_array_equal(back.values, original.values)
    assert back["bin_chrom"].values.tolist() == original["bin_chrom"].values.tolist()
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "rt") as handle:
        lines = handle.read().splitlines()
    # Equal neighbours are merged: chr1 0-75 holds 2.0 in one line.
    assert lines[0] == "chr1\t0\t75\t2"
    assert len(lines) == 5


def test_bedgraph_float32_values_round_trip_exactly(tmp_path):
    values = np.random.default_rng(1).gamma(0.5, 3.0, size=(1, 1, 500)).astype(np.float32)
    ds = create_signal_dataset(values, cells=["c"], assays=["a"])
    path = write_bedgraph(ds, tmp_path / "t.bg", cell="c", assay="a")
    np.testing.assert_array_equal(read_bedgraph(path, "chr1").values, values[0, 0])


def test_bedgraph_binning_by_hand(tmp_path):
    path = tmp_path / "hand.bg"
    path.write_text("track type=bedGraph\n# comment\nchr7\t10\t30\t2\nchr7\t30\t40\t5\n"
                    "chr7\t45\t50\t1.5\n")
    track = read_bedgraph(path, bin_size=25, fill_value=-1.0)
    # Bin 0-25 covers 10-25 (value 2); bin 25-50 covers 25-30 (2), 30-40 (5), 45-50 (1.5).
    expected = [2.0, (5 * 2 + 10 * 5 + 5 * 1.5) / 20]
    np.testing.assert_allclose(track.values, expected)
    padded = read_bedgraph(path, "chr7", start=0, end=100, bin_size=25, fill_value=-1.0)
    np.testing.assert_allclose(padded.values, [*expected, -1.0, -1.0])


@pytest.mark.parametrize("body, line, message", [
    ("chr1\t0\t10\t1\nchr1\t5\t20\t2\n", 2, "overlaps"),
    ("chr1\t20\t30\t1\nchr1\t0\t10\t2\n", 2, "unsorted"),
    ("chr1\t0\t10\t1\nchr2\t0\t10\t1\nchr1\t20\t30\t1\n", 3, "appears again"),
    ("track name=x\nchr1\t0\t10\tabc\n", 2, "not a number"),
    ("chr1\t0\t10\n", 1, "4 columns"),
    ("chr1\tzero\t10\t1\n", 1, "not integers"),
    ("chr1\t10\t10\t1\n", 1, "invalid interval"),
])
def test_bedgraph_errors_name_the_line(tmp_path, body, line, message):
    path = tmp_path / "bad.bg"
    path.write_text(body)
    with pytest.raises(InputFormatError, match=message) as err:
        read_bedgraph(path)
    assert err.value.record == f"line {line}" and err.value.path == str(path)
    assert f"{path} at line {line}" in str(err.value)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(1, 9),
                          st.floats(0, 1e3, allow_nan=False, width=32)), min_size=1, max_size=20))
def test_bedgraph_reader_matches_per_base_expansion(tmp_path, pieces):
    """Reading at 1 bp equals the intervals expanded base by base (gaps filled with NaN)."""
    lines, pos, bases = [], 0, []
    for gap, length, value in pieces:
        bases += [np.nan] * gap + [value] * length
        lines.append(f"chrQ\t{pos + gap}\t{pos + gap + length}\t{value!r}\n")
        pos += gap + length
    path = tmp_path / "prop.bg"
    path.write_text("".join(lines))
    first = pieces[0][0]
    track = read_bedgraph(path, "chrQ", start=first, bin_size=1, fill_value=np.nan)
    np.testing.assert_array_equal(track.values, np.asarray(bases[first:], dtype=np.float32))


# --------------------------------------------------------------------------- zarr


def test_zarr_round_trip_and_overwrite(tmp_path):
    ds = _two_chrom_dataset()
    ds.attrs["note"] = np.int64(3)  # numpy scalars are stored as JSON numbers
    path = write_zarr(ds, tmp_path / "sig.zarr")
    back = read_zarr(path)
    assert back["signal"].chunks is not None  # lazy by default
    back = back.load()
    xr.testing.assert_equal(back, ds)
    assert back.attrs["scale"] == "neglog10p" and back.attrs["note"] == 3
    assert back["cell"].dtype.kind == "U" and back["bin_chrom"].dtype.kind == "U"
    with pytest.raises(FileExistsError):
        write_zarr(ds, path)
    replaced = write_zarr(to_arcsinh(ds), path, overwrite=True, chunks={"bin": 3})
    assert read_zarr(replaced, load=True).attrs["scale"] == "arcsinh"
    assert _leftovers(tmp_path) == []


def test_zarr_with_individuals(tmp_path):
    values = np.arange(12, dtype=np.float32).reshape(2, 1, 2, 3)
    ds = create_signal_dataset(values, individuals=["p1", "p2"], cells=["lung"],
                               assays=["a", "b"], observed=np.array([[[True, False]]] * 2))
    back = read_zarr(write_zarr(ds, tmp_path / "ind.zarr"), load=True)
    xr.testing.assert_equal(back, ds)


def test_zarr_failure_leaves_nothing(tmp_path):
    ds = _two_chrom_dataset()
    ds.attrs["bad"] = object()
    with pytest.raises(TypeError):
        write_zarr(ds, tmp_path / "sig.zarr")
    assert list(tmp_path.iterdir()) == []


def test_read_zarr_rejects_non_signal_stores(tmp_path):
    folder = tmp_path / "plain"
    folder.mkdir()
    with pytest.raises(InputFormatError, match="not a readable zarr"):
        read_zarr(folder)
    other = tmp_path / "other.zarr"
    xr.Dataset({"x": ("y", np.arange(3))}).to_zarr(other, zarr_format=2)
    with pytest.raises(InputFormatError, match="not a signal dataset"):
        read_zarr(other)
    with pytest.raises(FileNotFoundError):
        read_zarr(tmp_path / "missing.zarr")


def test_bigwig_tracks_stack_into_a_dataset(tmp_path):
    ds = _two_chrom_dataset()
    tracks = {}
    for assay in ["H3K4me3", "H3K27me3"]:
        path = write_bigwig(ds, tmp_path / f"{assay}.bw", CHROM_SIZES, cell="E003", assay=assay)
        tracks[("E003", assay)] = read_bigwig(path, fill_value=np.nan)
    stacked = stack_tracks(tracks, assays=["H3K4me3", "H3K27me3"])
    xr.testing.assert_equal(stacked["signal"], ds["signal"])
    assert stacked.attrs["bin_size"] == 25
