"""Bad track input (npz, bigWig, bedGraph): every failure is an InputFormatError naming the file.

Issue 16, fault 5 and item 6.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_io_tracks import CHROM_SIZES, _two_chrom_dataset  # tests/ is on sys.path

from analysislib.errors import InputFormatError
from analysislib.io.tracks import (
    read_bedgraph,
    read_bigwig,
    read_roadmap_npz,
    read_track_files,
    write_bigwig,
)


def _write(path, values):
    np.savez_compressed(path, arr_0=values)
    return path


def test_zero_byte_track_is_named(tmp_path):
    path = tmp_path / "E003.H3K4me3.pilot.npz"
    path.write_bytes(b"")
    with pytest.raises(InputFormatError, match="empty file") as info:
        read_roadmap_npz([path])
    assert str(info.value).startswith(str(path))


def test_every_flip_or_cut_of_a_track_is_named_or_harmless(tmp_path):
    values = np.linspace(0, 3, 40, dtype=np.float32)
    good = _write(tmp_path / "E003.H3K4me3.pilot.npz", values)
    data = good.read_bytes()
    damaged = tmp_path / "E004.H3K4me3.pilot.npz"
    copies = [(f"byte {i} flipped", data[:i] + bytes([data[i] ^ (1 << (i % 8))]) + data[i + 1:])
              for i in range(len(data))]
    copies += [(f"cut to {n} bytes", data[:n]) for n in range(len(data))]
    outcomes = {"named": 0, "identical": 0}
    for what, copy in copies:
        damaged.write_bytes(copy)
        try:
            ds = read_roadmap_npz([good, damaged])
        except InputFormatError as err:
            message = str(err)
            assert message.startswith(str(damaged)) and "\n" not in message, (what, message)
            outcomes["named"] += 1
            continue
        signal = ds["signal"] if "signal" in ds else ds[next(iter(ds.data_vars))]
        np.testing.assert_array_equal(signal.sel(cell="E004").values.ravel(),
                                      signal.sel(cell="E003").values.ravel(), err_msg=what)
        outcomes["identical"] += 1
    assert outcomes["named"] > len(data)


# --------------------------------------------------------------------------------- bigWig


@pytest.fixture
def bigwig(tmp_path):
    """A small two-chromosome bigWig, its bytes and what it reads as."""
    path = write_bigwig(_two_chrom_dataset(), tmp_path / "good.bw", CHROM_SIZES, cell="E003",
                        assay="H3K4me3")
    return path, path.read_bytes(), read_bigwig(path, fill_value=np.nan).values


def _named(err: InputFormatError, path) -> None:
    message = str(err)
    assert message.startswith(str(path)) and "\n" not in message, message


def test_every_cut_of_a_bigwig_is_named_or_harmless(bigwig, tmp_path):
    _, data, expected = bigwig
    damaged = tmp_path / "cut.bw"
    harmless = []
    for n in range(len(data)):
        damaged.write_bytes(data[:n])
        try:
            got = read_bigwig(damaged, fill_value=np.nan).values
        except InputFormatError as err:
            _named(err, damaged)
            continue
        np.testing.assert_array_equal(got, expected, err_msg=f"cut to {n} bytes")
        harmless.append(n)
    # Only the tail that reading does not use (after the data and its index) can go unnoticed.
    assert not harmless or harmless == list(range(harmless[0], len(data))), harmless


def test_a_bigwig_chromosome_name_that_is_not_utf8_is_named(bigwig, tmp_path):
    # pyBigWig's chroms() raised a bare RuntimeError ("...adding an item to the output dictionary").
    _, data, _ = bigwig
    at = data.index(b"chr1")
    damaged = tmp_path / "name.bw"
    damaged.write_bytes(data[:at] + bytes([data[at] ^ 0x80]) + data[at + 1:])
    with pytest.raises(InputFormatError) as info:
        read_bigwig(damaged)
    assert str(info.value) == f"{damaged}: damaged bigWig file: its chromosome list cannot be read"
    with pytest.raises(InputFormatError) as info:
        read_track_files({("E003", "H3K4me3"): damaged})
    _named(info.value, damaged)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.integers(0, 10**6), mask=st.integers(1, 255))
def test_a_flipped_bigwig_is_named_or_read_without_a_traceback(bigwig, tmp_path, position, mask):
    # bigWig carries no checksum: a flip in an uncompressed size or index field (chromosome
    # length, an R-tree bound) can still read as other values. Flips in the compressed data are
    # caught by zlib; what the reader promises for the rest is a named error, never a traceback.
    _, data, _ = bigwig
    position %= len(data)
    damaged = tmp_path / "flipped.bw"
    damaged.write_bytes(data[:position] + bytes([data[position] ^ mask]) + data[position + 1:])
    for read in (lambda: read_bigwig(damaged, fill_value=np.nan),
                 lambda: read_track_files({("E003", "H3K4me3"): damaged}, fill_value=np.nan)):
        try:
            read()
        except InputFormatError as err:
            _named(err, damaged)


# ------------------------------------------------------------------------------- bedGraph

GOOD_BEDGRAPH = "track type=bedGraph\nchr1\t0\t10\t1.5\nchr1\t10\t30\t2\nchr2\t5\t25\t0.25\n"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(line=st.integers(0, 3), field=st.integers(0, 4),
       text=st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\n\r"), max_size=8))
def test_a_damaged_bedgraph_field_is_named_with_its_line(tmp_path, line, field, text):
    lines = GOOD_BEDGRAPH.splitlines()
    fields = lines[line].split("\t")
    fields[min(field, len(fields) - 1)] = text
    path = tmp_path / "damaged.bg"
    path.write_text("\n".join([*lines[:line], "\t".join(fields), *lines[line + 1:]]) + "\n")
    for read in (lambda: read_bedgraph(path), lambda: read_track_files({("E003", "H3K4me3"): path})):
        try:
            read()
        except InputFormatError as err:
            _named(err, path)
            assert err.record is None or err.record.startswith(("line ", "chr")), err.record


@pytest.mark.parametrize("data", [b"", b"\xff\xfe\x00\x01", b"\x1f\x8b\x08\x00garbage", b"track only\n"])
def test_a_bedgraph_that_is_not_text_or_empty_is_named(tmp_path, data):
    path = tmp_path / "bad.bg"
    path.write_bytes(data)
    for read in (lambda: read_bedgraph(path), lambda: read_track_files({("E003", "H3K4me3"): path})):
        with pytest.raises(InputFormatError) as info:
            read()
        _named(info.value, path)
