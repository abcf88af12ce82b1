"""Bad VCF input: every failure is an InputFormatError naming the file (issue 16, faults 4-5)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pysam
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysislib.errors import InputFormatError
from analysislib.io.vcf import read_vcf

SAMPLES = [f"S{i}" for i in range(6)]


def _vcf_text(samples=SAMPLES, ploidy=2, n_variants=12, contig_lines=None, seed=0) -> str:
    rng = np.random.default_rng(seed)
    lines = ["##fileformat=VCFv4.2",
             *(contig_lines or ["##contig=<ID=1,length=100000>"]),
             '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
             "\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT",
                        *samples])]
    for v in range(n_variants):
        calls = ["|".join(str(a) for a in rng.integers(0, 2, ploidy)) for _ in samples]
        lines.append("\t".join(["1", str(100 + 10 * v), ".", "A", "G", ".", ".", ".", "GT", *calls]))
    return "\n".join(lines) + "\n"


def _bgzip(text: str, path: Path) -> Path:
    with pysam.BGZFile(str(path), "wb") as out:
        out.write(text.encode())
    return path


def test_contig_lines_with_idx_read_like_bcftools(tmp_path):
    # htslib's test/modhdr.vcf.gz style: IDX= on ##contig lines, with a gap (no IDX=0).
    text = _vcf_text(contig_lines=["##contig=<ID=1,length=100000,IDX=1>",
                                   "##contig=<ID=2,length=5000,IDX=3>"])
    plain = read_vcf(_bgzip(_vcf_text(), tmp_path / "plain.vcf.gz"))
    ds = read_vcf(_bgzip(text, tmp_path / "idx.vcf.gz"))
    assert ds.attrs["contigs"] == ["1", "2"] and ds.attrs["contig_lengths"] == [100000, 5000]
    np.testing.assert_array_equal(ds["call_genotype"].values, plain["call_genotype"].values)
    lazy = read_vcf(tmp_path / "idx.vcf.gz", chunk_variants=5)
    np.testing.assert_array_equal(lazy["call_genotype"].values, plain["call_genotype"].values)


def test_duplicate_sample_ids_are_called_duplicate(tmp_path):
    path = _bgzip(_vcf_text(samples=[*SAMPLES, "S2"]), tmp_path / "dup.vcf.gz")
    with pytest.raises(InputFormatError, match=r"duplicate sample ID 'S2'.*columns 12 and 16") as info:
        read_vcf(path)
    assert str(info.value).startswith(str(path))


def test_empty_and_header_only_files(tmp_path):
    empty = tmp_path / "empty.vcf.gz"
    empty.write_bytes(b"")
    with pytest.raises(InputFormatError, match="empty file") as info:
        read_vcf(empty)
    assert str(info.value).startswith(str(empty))
    header_only = _bgzip(_vcf_text(n_variants=0), tmp_path / "header.vcf.gz")
    assert read_vcf(header_only).sizes["variants"] == 0


def test_header_line_htslib_rejects_is_named(tmp_path):
    # Two contigs claiming one IDX: htslib refuses the header ("Conflicting IDX=...").
    text = _vcf_text(contig_lines=["##contig=<ID=1,length=100000,IDX=0>",
                                   "##contig=<ID=2,length=5000,IDX=0>"])
    path = _bgzip(text, tmp_path / "bad.vcf.gz")
    with pytest.raises(InputFormatError) as info:
        read_vcf(path)
    assert str(info.value) == f"{path}: malformed header line 3: '##contig=<ID=2,length=5000,IDX=0>'"


def _every_damaged_copy(data: bytes):
    """Each byte flipped (bit ``i % 8`` of byte ``i``), then each length the file can be cut to."""
    for i in range(len(data)):
        yield f"byte {i} flipped", data[:i] + bytes([data[i] ^ (1 << (i % 8))]) + data[i + 1:]
    for n in range(len(data)):
        yield f"cut to {n} bytes", data[:n]


@pytest.mark.parametrize("suffix", [".vcf.gz", ".bcf"])
def test_every_flip_or_cut_of_a_small_compressed_file_is_named_or_harmless(tmp_path, suffix):
    source = _bgzip(_vcf_text(), tmp_path / "ok.vcf.gz")
    if suffix == ".bcf":
        with pysam.VariantFile(str(source)) as vin, \
                pysam.VariantFile(str(tmp_path / "ok.bcf"), "wb", header=vin.header) as vout:
            for record in vin:
                vout.write(record)
        source = tmp_path / "ok.bcf"
    expected = read_vcf(source)["call_genotype"].values
    damaged = tmp_path / f"damaged{suffix}"
    vague = []
    for what, data in _every_damaged_copy(source.read_bytes()):
        damaged.write_bytes(data)
        try:
            got = read_vcf(damaged)["call_genotype"].values
        except InputFormatError as err:
            message = str(err)
            assert message.startswith(str(damaged)) and "\n" not in message, (what, message)
            if "does not have valid header" in message or "invalid file" in message:
                vague.append((what, message))
            continue
        # Whatever reads back must be the genotypes written (a flip in an unused header byte).
        np.testing.assert_array_equal(got, expected, err_msg=what)
    if suffix == ".vcf.gz":
        assert not vague, vague[:3]


def test_plain_gzip_cut_short_is_named(tmp_path):
    path = tmp_path / "plain.vcf.gz"
    data = gzip.compress(_vcf_text().encode())
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputFormatError, match="truncated or corrupt") as info:
        read_vcf(path)
    assert str(info.value).startswith(str(path))


# ---------------------------------------------------------------- damaged records in plain text

_RECORDS = _vcf_text().splitlines()
_FIRST_RECORD = 4  # lines before it: fileformat, contig, FORMAT, #CHROM
_FIELD_TEXT = st.text(alphabet="01|/.,;:=-ACGTN<>*[]x\t ", max_size=8)


def _write_with_record_field(path: Path, record: int, field: int, value: str) -> Path:
    lines = list(_RECORDS)
    fields = lines[_FIRST_RECORD + record].split("\t")
    fields[field] = value
    lines[_FIRST_RECORD + record] = "\t".join(fields)
    path.write_text("\n".join(lines) + "\n")
    return path


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(record=st.integers(0, 11), field=st.integers(0, 9 + len(SAMPLES) - 1), value=_FIELD_TEXT,
       chunk=st.sampled_from([None, 5]))
def test_a_damaged_record_is_named_by_line_or_leaves_the_others_intact(tmp_path, record, field, value, chunk):
    # chunk=5: the lazy reader, which parses the file in chunks of 5 records.
    path = _write_with_record_field(tmp_path / "damaged.vcf", record, field, value)
    try:
        got = np.asarray(read_vcf(path, chunk_variants=chunk)["call_genotype"].values)  # lazy: errors here
    except InputFormatError as err:
        message = str(err)
        assert message.startswith(str(path)) and "\n" not in message, message
        # The damaged line, or the next one when a changed CHROM or POS breaks the sort order.
        named = [f"line {_FIRST_RECORD + record + k}" for k in (1, 2)]
        assert any(n in message for n in named) and ("unsorted" in message or named[0] in message), message
        return
    # Read without complaint: every other record reads back exactly as written.
    expected = read_vcf(_bgzip(_vcf_text(), tmp_path / "ok.vcf.gz"))
    assert got.shape[0] == expected.sizes["variants"]
    others = np.arange(12) != record
    np.testing.assert_array_equal(got[others],
                                  expected["call_genotype"].values[others])


@pytest.mark.parametrize(("field", "value", "says"), [
    (1, "abc", "POS 'abc' is not an integer"),
    (0, "", "CHROM '' is empty"),
    (3, "", "empty REF allele"),
    (4, "", "empty allele in ALT"),
    (8, "DP", "no GT field"),
    (9, "0|x", "malformed GT '0|x' for sample S0"),
    (9, "0|2", "refers to allele 2"),
    (9, "0|1|1", "mixed ploidy"),
])
def test_each_kind_of_broken_record_names_file_record_and_line(tmp_path, field, value, says):
    path = _write_with_record_field(tmp_path / "broken.vcf", 3, field, value)
    with pytest.raises(InputFormatError) as info:
        read_vcf(path)
    message = str(info.value)
    assert message.startswith(f"{path} at record ") and "line 8" in message and says in message, message
