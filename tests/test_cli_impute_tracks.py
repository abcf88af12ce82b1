"""Tests of ``analysislib impute-tracks``: bigWig/bedGraph tracks in, imputed bigWig out."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from analysislib.cli import main
from analysislib.epigenome.imputer import AverageImputer
from analysislib.epigenome.tensor import to_neglog10p
from analysislib.errors import InputFormatError
from analysislib.io.tracks import parse_region, read_bigwig, read_track_files, write_bigwig

pyBigWig = pytest.importorskip("pyBigWig")

CHROMS = {"chr1": 2000, "chr2": 1000}
CELLS = ["C1", "C2", "C3"]
MARKS = ["M1", "M2"]
STEP = 5  # bases per written value: five values per 25 bp bin


def _base_values(cell: str, mark: str, length: int, chrom: str) -> np.ndarray:
    """Raw (−log10 p-like, non-negative) values, one per STEP bases."""
    seed = [CELLS.index(cell), MARKS.index(mark), list(CHROMS).index(chrom)]
    return np.random.default_rng(seed).gamma(1.5, 2.0, length // STEP).astype(np.float32)


def _write_bw(path: Path, cell: str, mark: str, chroms: dict[str, int] = CHROMS) -> Path:
    handle = pyBigWig.open(str(path), "w")
    handle.addHeader(list(chroms.items()))
    for chrom, length in chroms.items():
        handle.addEntries(chrom, 0, values=_base_values(cell, mark, length, chrom).astype(float),
                          span=STEP, step=STEP)
    handle.close()
    return path


def _binned(cell: str, mark: str, chrom: str, bin_size: int = 25) -> np.ndarray:
    """Hand-binned signal: mean of the STEP-base values in each bin."""
    values = np.repeat(_base_values(cell, mark, CHROMS[chrom], chrom).astype(np.float64), STEP)
    return values.reshape(-1, bin_size).mean(axis=1)


@pytest.fixture
def bigwigs(tmp_path) -> dict[tuple[str, str], Path]:
    """Five of the six tracks as bigWig: C1.M2 is missing, to be imputed."""
    folder = tmp_path / "in"
    folder.mkdir()
    return {(c, m): _write_bw(folder / f"{c}.{m}.bw", c, m)
            for c in CELLS for m in MARKS if (c, m) != ("C1", "M2")}


def _specs(tracks: dict[tuple[str, str], Path]) -> list[str]:
    return [f"{c}:{m}={p}" for (c, m), p in tracks.items()]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: ")
    return err[0]


# ----------------------------------------------------------------------------- reading


def test_read_track_files_bins_bigwig_like_hand_computed_means(bigwigs):
    ds = read_track_files(bigwigs, bin_size=25)
    assert ds["cell"].values.tolist() == CELLS and ds["assay"].values.tolist() == MARKS
    assert ds.attrs["scale"] == "neglog10p" and ds.attrs["chrom_sizes"] == CHROMS
    assert not bool(ds["observed"].sel(cell="C1", assay="M2"))
    assert ds.sizes["bin"] == (2000 + 1000) // 25
    expected = np.concatenate([_binned("C2", "M1", "chr1"), _binned("C2", "M1", "chr2")])
    np.testing.assert_allclose(ds["signal"].sel(cell="C2", assay="M1").values, expected,
                               rtol=1e-6)
    assert ds["bin_chrom"].values[80] == "chr2" and int(ds["bin_start"][80]) == 0


def test_bedgraph_and_bigwig_of_one_track_read_the_same(bigwigs, tmp_path):
    bedgraph = tmp_path / "C2.M1.bedGraph"
    lines = []
    for chrom, length in CHROMS.items():
        values = _base_values("C2", "M1", length, chrom)
        lines += [f"{chrom}\t{i * STEP}\t{(i + 1) * STEP}\t{float(v):.9g}\n"
                  for i, v in enumerate(values)]
    bedgraph.write_text("".join(lines))
    mixed = {**bigwigs, ("C2", "M1"): bedgraph}
    region = [parse_region("chr1:500-1,500")]
    from_bw = read_track_files(bigwigs, regions=region, bin_size=50)
    from_mixed = read_track_files(mixed, regions=region, bin_size=50)
    np.testing.assert_allclose(from_mixed["signal"].values, from_bw["signal"].values, rtol=1e-6)
    expected = _binned("C2", "M1", "chr1", 50)[10:30]
    np.testing.assert_allclose(from_bw["signal"].sel(cell="C2", assay="M1").values, expected,
                               rtol=1e-6)


def test_track_written_as_bigwig_reads_back_as_the_binned_signal(bigwigs, tmp_path):
    ds = read_track_files(bigwigs, bin_size=25)
    path = write_bigwig(ds, tmp_path / "out.bw", CHROMS, cell="C3", assay="M2")
    back = read_track_files({("C3", "M2"): path}, bin_size=25)
    np.testing.assert_allclose(back["signal"].values[0, 0],
                               ds["signal"].sel(cell="C3", assay="M2").values, rtol=1e-6)


def test_parse_region():
    assert parse_region("chr1:1,000-2000") == ("chr1", 1000, 2000)
    with pytest.raises(ValueError, match="chrom:start-end"):
        parse_region("chr1:1000")


# ----------------------------------------------------------------------------- imputing


@pytest.mark.parametrize("transform", ["arcsinh", "none"])
def test_avg_imputation_written_as_bigwig_equals_python_avg(bigwigs, tmp_path, capsys, transform):
    out = tmp_path / "out"
    code = main(["impute-tracks", *_specs(bigwigs), "--impute", "C1:M2", "--method", "avg",
                 "--out", str(out), "--transform", transform, "--threads", "1"])
    assert code == 0, capsys.readouterr().err
    written = out / "C1.M2.imputed.bw"
    assert capsys.readouterr().out.split() == [str(written)]
    assert sorted(p.name for p in out.iterdir()) == ["C1.M2.imputed.bw"]
    scale = "neglog10p" if transform == "arcsinh" else "arcsinh"
    ds = read_track_files(bigwigs, scale=scale)
    predicted = AverageImputer().fit(ds).predict([("C1", "M2")]).sel(track="C1.M2")
    expected = (to_neglog10p(predicted) if scale == "neglog10p" else predicted).values
    got = np.concatenate([read_bigwig(written, chrom).values for chrom in CHROMS])
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    # By hand: the mean of the other cells' M2 on the fitting (arcsinh) scale, then back.
    donors = np.stack([ds["signal"].sel(cell=c, assay="M2").values for c in ("C2", "C3")])
    hand = (np.sinh(np.arcsinh(donors).mean(axis=0)) if transform == "arcsinh"
            else donors.mean(axis=0))
    np.testing.assert_allclose(got, hand, rtol=1e-5, atol=1e-6)
    with pyBigWig.open(str(written)) as handle:
        assert handle.chroms() == CHROMS


def test_impute_tracks_over_regions_writes_only_those_bins(bigwigs, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["impute-tracks", *_specs(bigwigs), "--impute", "C1:M2", "--out", str(out),
                 "--regions", "chr2:100-600", "--bin-size", "50"]) == 0
    written = out / "C1.M2.imputed.bw"
    with pyBigWig.open(str(written)) as handle:
        assert handle.chroms() == CHROMS  # the inputs' header, all chromosomes
        intervals = handle.intervals("chr2")
        assert handle.intervals("chr1", 0, 2000) is None
    assert [(s, e) for s, e, _ in intervals] == [(s, s + 50) for s in range(100, 600, 50)]
    expected = np.sinh(np.mean([np.arcsinh(_binned(c, "M2", "chr2", 50)[2:12])
                                for c in ("C2", "C3")], axis=0))
    np.testing.assert_allclose([v for _, _, v in intervals], expected, rtol=1e-5)


# ----------------------------------------------------------------------------- bad input


def _damaged_bigwig(path: Path, keep: int) -> Path:
    """A bigWig cut to its first ``keep`` bytes (negative: all but the last ``-keep``)."""
    _write_bw(path, "C2", "M1")
    data = path.read_bytes()
    path.write_bytes(data[:keep])
    return path


def _flipped_key_size(path: Path) -> Path:
    """A bigWig whose chromosome tree claims 16 more bytes per name (libBigWig crashed on it)."""
    _write_bw(path, "C2", "M1")
    data = bytearray(path.read_bytes())
    (chrom_tree,) = struct.unpack_from("<Q", data, 8)
    data[chrom_tree + 8] ^= 0x10
    path.write_bytes(bytes(data))
    return path


BAD_INPUTS = {
    "missing file": (lambda d: d / "absent.bw", "C2.M1", "absent.bw: no such track file"),
    "text named .bw": (lambda d: (d / "text.bw").write_text("chr1\t0\t5\t1\n") and d / "text.bw",
                       "C2.M1", "text.bw: not a bigWig file"),
    "cut bigWig": (lambda d: _damaged_bigwig(d / "cut.bw", 64), "C2.M1", "cut.bw: bigWig file cut"),
    "cut bigWig data": (lambda d: _damaged_bigwig(d / "cut2.bw", -100), "C2.M1",
                        "cut2.bw: bigWig file cut short or damaged"),
    "short bigWig": (lambda d: _damaged_bigwig(d / "cut3.bw", 10), "C2.M1",
                     "cut3.bw: bigWig file cut short: 10 bytes"),
    "flipped bigWig header": (lambda d: _flipped_key_size(d / "flip.bw"), "C2.M1",
                              "flip.bw: damaged bigWig file: its chromosome tree"),
    "other chromosomes": (lambda d: _write_bw(d / "other.bw", "C2", "M1", {"chr1": 2000}),
                          "C2.M1", "other.bw: chromosome mismatch"),
    "other length": (lambda d: _write_bw(d / "long.bw", "C2", "M1", {"chr1": 2500, "chr2": 1000}),
                     "C2.M1", "long.bw at chr1: chromosome mismatch"),
    "binary as bedGraph": (lambda d: (d / "noise.bg").write_bytes(b"\xff\xfe\x00\x81" * 50)
                           and d / "noise.bg", "C2.M1", "noise.bg: neither a bigWig"),
    "bad bedGraph line": (lambda d: (d / "bad.bedGraph").write_text("chr1\t0\tx\t1\n")
                          and d / "bad.bedGraph", "C2.M1", "bad.bedGraph at line 1"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_track_file_gets_one_error_line_naming_it(bigwigs, tmp_path, capsys, case):
    make, track, message = BAD_INPUTS[case]
    cell, mark = track.split(".")
    tracks = {**bigwigs, (cell, mark): make(tmp_path)}
    out = tmp_path / "out"
    assert main(["impute-tracks", *_specs(tracks), "--impute", "C1:M2", "--out", str(out)]) == 1
    assert message in _one_error_line(capsys)
    assert not out.exists() or not list(out.iterdir())


def test_bit_flipped_bigwig_is_read_or_refused_never_a_crash(tmp_path):
    data = _write_bw(tmp_path / "good.bw", "C2", "M1").read_bytes()
    damaged = tmp_path / "damaged.bw"
    for offset in range(0, len(data), 3):
        flipped = bytearray(data)
        flipped[offset] ^= 0x10
        damaged.write_bytes(bytes(flipped))
        try:
            read_track_files({("C2", "M1"): damaged})
        except InputFormatError as err:
            assert str(err).startswith(f"{damaged}")


def test_region_outside_a_file_is_named(bigwigs, tmp_path, capsys):
    tracks = {**bigwigs, ("C2", "M1"): _write_bw(tmp_path / "short.bw", "C2", "M1",
                                                 {"chr1": 1000, "chr2": 1000})}
    assert main(["impute-tracks", *_specs(tracks), "--impute", "C1:M2", "--out",
                 str(tmp_path / "out"), "--regions", "chr1:500-1500"]) == 1
    assert "short.bw at chr1: region chr1:1500 ends beyond" in _one_error_line(capsys)
    assert main(["impute-tracks", *_specs(bigwigs), "--impute", "C1:M2", "--out",
                 str(tmp_path / "out"), "--regions", "chrX:0-100"]) == 1
    assert "chromosome chrX of --regions is not in the file" in _one_error_line(capsys)


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--impute", "C2:M1"], "C2.M1.bw: --impute C2:M1: this track is observed"),
     (["--impute", "C9:M1"], "no input track of cell C9"),
     (["--impute", "C1:M7"], "mark M7 has no input track"),
     (["--impute", "C1:M2", "--method", "magic"], "unknown epigenomic imputer 'magic'"),
     (["--impute", "C1:M2", "--threads", "0"], "--threads must be at least 1"),
     (["--impute", "C1:M2", "--regions", "chr1:10"], "expected chrom:start-end"),
     (["--impute", "C1:M2", "--method", "predictd", "--preset", "huge"],
      "unknown PREDICTD preset 'huge'")],
)
def test_bad_request_gets_one_error_line(bigwigs, tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    assert main(["impute-tracks", *_specs(bigwigs), "--out", str(out), *extra]) == 1
    assert message in _one_error_line(capsys)
    assert not out.exists()


def test_bad_track_spec_and_duplicate_track(bigwigs, tmp_path, capsys):
    path = bigwigs["C2", "M1"]
    args = ["--impute", "C1:M2", "--out", str(tmp_path / "out")]
    assert main(["impute-tracks", *_specs(bigwigs), str(path), *args]) == 1
    assert "expected CELL:MARK=PATH" in _one_error_line(capsys)
    assert main(["impute-tracks", *_specs(bigwigs), f"C2:M1={path}", *args]) == 1
    assert "second file for track C2:M1" in _one_error_line(capsys)


@pytest.mark.parametrize("damage", ["cut", "flipped"])
def test_read_bigwig_checks_the_layout_before_libbigwig_opens_it(tmp_path, damage):
    """The public reader is guarded too: libBigWig crashed the process on these files."""
    from analysislib.io.tracks import read_bigwig

    path = (_damaged_bigwig(tmp_path / "cut.bw", 64) if damage == "cut"
            else _flipped_key_size(tmp_path / "flip.bw"))
    with pytest.raises(InputFormatError, match=path.name):
        read_bigwig(path, "chr1")
