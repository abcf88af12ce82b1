"""Tests for analysislib.io.vcf: hand-checked small files, round trips, bad input, bcftools."""

from __future__ import annotations

import gzip
import itertools
import logging
import shutil
import subprocess
import tempfile
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from analysislib.errors import InputFormatError
from analysislib.io import vcf as vcf_module
from analysislib.io.vcf import check_same_samples, read_vcf, write_vcf
from analysislib.testing import genotype_dataset

REAL_VCF = "genotypes/1kg_phase3_chr22_array500.vcf.gz"
FORMAT_LINES = (
    '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
    '##FORMAT=<ID=DS,Number=A,Type=Float,Description="Dosage">\n'
    '##FORMAT=<ID=GP,Number=G,Type=Float,Description="Genotype probabilities">\n'
)


def vcf_text(records: list[str], samples: tuple[str, ...] = ("S1", "S2", "S3"),
             contigs: tuple[str, ...] = ("chr1", "chr2")) -> str:
    """A VCF with the given tab-separated record lines (spaces in them become tabs)."""
    header = "##fileformat=VCFv4.2\n" + "".join(f"##contig=<ID={c}>\n" for c in contigs)
    header += FORMAT_LINES + "\t".join(
        ["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT", *samples]) + "\n"
    return header + "".join("\t".join(r.split()) + "\n" for r in records)


def write_text(path: Path, text: str) -> Path:
    if path.name.endswith(".gz"):
        import pysam

        with pysam.BGZFile(str(path), "wb") as out:
            out.write(text.encode())
    else:
        path.write_text(text)
    return path


SMALL = [
    "chr1 10 rs1 A G . . . GT:DS:GP 0|1:1:0,1,0 1/1:1.9:0.05,0.05,0.9 ./.:.:.",
    "chr1 20 . C T,A . . . GT:DS:GP 1|2:1,1:0,0,0,1,0,0 0/2:0,0.8:0.1,0,0,0.8,0.1,0 .|.:.,.:.",
    "chr2 5 rs3 G . . . . GT 0|0 0/0 .",
]


@pytest.fixture
def small_vcf(tmp_path: Path) -> Path:
    return write_text(tmp_path / "small.vcf", vcf_text(SMALL))


def gt_strings(ds) -> np.ndarray:
    """GT text of each call, shape (variants, samples), as bcftools prints it (``./.``, ``0|1``)."""
    gt = np.asarray(ds["call_genotype"].values)
    phased = np.asarray(ds["call_genotype_phased"].values)
    labels = np.array(["."] + [str(i) for i in range(int(gt.max(initial=0)) + 1)])
    text = labels[gt[..., 0] + 1]
    separator = np.where(phased, "|", "/")
    for h in range(1, gt.shape[2]):
        text = np.strings.add(np.strings.add(text, separator), labels[gt[..., h] + 1])
    return text


# ------------------------------------------------------------------------------------------
# Hand-checked reading
# ------------------------------------------------------------------------------------------


def test_read_small_split_by_hand(small_vcf: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="analysislib.io.vcf"):
        ds = read_vcf(small_vcf, multiallelic="split")
    assert "1 multi-allelic record(s) split" in caplog.text
    assert ds.attrs["n_multiallelic_split"] == 1
    assert ds.attrs["n_multiallelic_dropped"] == 0
    assert ds.attrs["contigs"] == ["chr1", "chr2"]
    assert ds["variant_contig"].values.tolist() == [0, 0, 0, 1]
    assert ds["variant_position"].values.tolist() == [10, 20, 20, 5]
    assert ds["variant_allele"].values.tolist() == [["A", "G"], ["C", "T"], ["C", "A"], ["G", ""]]
    assert ds["variant_id"].values.tolist() == ["rs1", ".", ".", "rs3"]
    assert ds["sample_id"].values.tolist() == ["S1", "S2", "S3"]
    assert ds["call_genotype"].dtype == np.int8
    # 1|2 splits into 1|0 (ALT T) and 0|1 (ALT A); 0/2 into 0/0 and 0/1; '.' is missing.
    assert ds["call_genotype"].values.tolist() == [
        [[0, 1], [1, 1], [-1, -1]],
        [[1, 0], [0, 0], [-1, -1]],
        [[0, 1], [0, 1], [-1, -1]],
        [[0, 0], [0, 0], [-1, -1]],
    ]
    assert ds["call_genotype_phased"].values.tolist() == [
        [True, False, False], [True, False, True], [True, False, True], [True, False, False]]
    np.testing.assert_allclose(ds["call_dosage"].values, [
        [1, 1.9, np.nan], [1, 0, np.nan], [1, 0.8, np.nan], [np.nan] * 3], rtol=1e-6)
    # GP over genotypes 00,01,11,02,12,22 summed by copies of the chosen ALT.
    gp = ds["call_genotype_probability"]
    assert gp.dims == ("variants", "samples", "genotypes")
    np.testing.assert_allclose(gp.values[0, :2], [[0, 1, 0], [0.05, 0.05, 0.9]], rtol=1e-6)
    np.testing.assert_allclose(gp.values[1, :2], [[1, 0, 0], [0.9, 0.1, 0]], rtol=1e-6)
    np.testing.assert_allclose(gp.values[2, :2], [[0, 1, 0], [0.1, 0.9, 0]], rtol=1e-6)
    assert np.isnan(gp.values[:, 2]).all() and np.isnan(gp.values[3]).all()


def test_read_drop_counts_and_samples_subset(small_vcf: Path) -> None:
    ds = read_vcf(small_vcf, multiallelic="drop", samples=["S3", "S1"], fields=("GT",))
    assert ds.attrs["n_multiallelic_dropped"] == 1
    assert ds["variant_position"].values.tolist() == [10, 5]
    assert ds["sample_id"].values.tolist() == ["S3", "S1"]
    assert ds["call_genotype"].values.tolist() == [[[-1, -1], [0, 1]], [[-1, -1], [0, 0]]]
    assert "call_dosage" not in ds and "call_genotype_probability" not in ds


def test_gt_only_file_has_no_dosage(tmp_path: Path) -> None:
    path = write_text(tmp_path / "gt.vcf.gz", vcf_text(
        ["chr1 1 . A C . . . GT 0|0 1|0 0/1", "chr1 2 . A C . . . GT 1|1 .|. 0|1"]))
    ds = read_vcf(path)
    assert set(ds.data_vars) == {"variant_contig", "variant_position", "variant_allele",
                                 "variant_id", "sample_id", "call_genotype", "call_genotype_phased"}
    assert ds["call_genotype"].values.tolist() == [[[0, 0], [1, 0], [0, 1]],
                                                   [[1, 1], [-1, -1], [0, 1]]]
    assert ds["call_genotype_phased"].values.tolist() == [[True, True, False], [True, True, True]]


def test_haploid_and_multidigit_alleles(tmp_path: Path) -> None:
    alts = "C,G,T,CA,CG,CT,GA,GC,GT,TA,TC"
    path = write_text(tmp_path / "hap.vcf", vcf_text(
        ["chr1 5 . A C . . . GT 0 1 .", f"chr1 9 . A {alts} . . . GT 11 0 10"]))
    ds = read_vcf(path, multiallelic="split")
    assert ds.sizes["ploidy"] == 1 and ds.sizes["variants"] == 12
    gt = ds["call_genotype"].values[..., 0]
    assert gt[0].tolist() == [0, 1, -1]
    assert gt[10].tolist() == [0, 0, 1]   # ALT 10 (TA): only S3 carries it
    assert gt[11].tolist() == [1, 0, 0]   # ALT 11 (TC): only S1
    assert gt[1:10].sum() == 0
    assert not ds["call_genotype_phased"].values.any()


def test_irregular_records_use_the_per_call_parser(tmp_path: Path) -> None:
    # Dropped trailing fields, a lone '.', a '.' inside GP and CRLF line ends.
    text = vcf_text([
        "chr1 1 . A C . . . GT:DS:GP 0|1:0.5 1|1:2:0,0,1 0/0:.:0.9,.,0.1",
        "chr1 2 . A C . . . GT:DS:GP 0|1:1:0,1,0 1|1:2:0,0,1 0/0:0:1,0,0",
    ]).replace("\n", "\r\n")
    ds = read_vcf(write_text(tmp_path / "irregular.vcf", text))
    np.testing.assert_allclose(ds["call_dosage"].values, [[0.5, 2, np.nan], [1, 2, 0]])
    np.testing.assert_allclose(ds["call_genotype_probability"].values[0],
                               [[np.nan] * 3, [0, 0, 1], [0.9, np.nan, 0.1]], rtol=1e-6)
    assert ds["call_genotype"].values[0].tolist() == [[0, 1], [1, 1], [0, 0]]


# ------------------------------------------------------------------------------------------
# Lazy reading
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["lazy.vcf.gz", "lazy.vcf", "lazy.bcf", "plain.vcf.gz"])
def test_lazy_matches_eager(tmp_path: Path, small_vcf: Path, name: str) -> None:
    eager = read_vcf(small_vcf, multiallelic="split")
    if name == "plain.vcf.gz":  # plain gzip cannot seek: read eagerly, then wrapped in dask
        path = tmp_path / name
        path.write_bytes(gzip.compress(small_vcf.read_bytes()))
    else:
        path = write_vcf(eager, tmp_path / name)
    lazy = read_vcf(path, chunk_variants=2, multiallelic="split")
    assert isinstance(lazy["call_genotype"].data, da.Array)
    assert lazy["call_genotype"].chunks == ((2, 2), (3,), (2,))
    assert lazy["call_dosage"].chunks[1:] == ((3,),)
    for name_ in ("call_genotype", "call_genotype_phased"):
        np.testing.assert_array_equal(lazy[name_].values, eager[name_].values)
    np.testing.assert_allclose(lazy["call_dosage"].values, eager["call_dosage"].values, atol=5e-4)
    np.testing.assert_array_equal(lazy["variant_position"].values, eager["variant_position"].values)


def test_large_files_are_lazy_by_default(small_vcf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vcf_module, "LAZY_THRESHOLD_BYTES", 0)
    lazy = read_vcf(small_vcf, multiallelic="split")
    assert isinstance(lazy["call_genotype"].data, da.Array)
    assert lazy["call_genotype"].values[1].tolist() == [[1, 0], [0, 0], [-1, -1]]


def test_fields_missing_in_some_records_are_nan(tmp_path: Path) -> None:
    path = write_text(tmp_path / "mixed.vcf.gz", vcf_text(
        ["chr1 1 . A C . . . GT:DS 0|1:0.9 1|1:2 0|0:0.1", "chr1 2 . A C . . . GT 0|0 0|1 1|1"]))
    for chunk in (None, 1):
        ds = read_vcf(path, chunk_variants=chunk)
        np.testing.assert_allclose(ds["call_dosage"].values, [[0.9, 2, 0.1], [np.nan] * 3], rtol=1e-6)
        assert "call_genotype_probability" not in ds


def test_lazy_chunks_with_repeated_positions(tmp_path: Path) -> None:
    # Several records at one position, one chunk each: offsets must not mix them up.
    records = [f"chr1 100 . A {alt} . . . GT {gt} 0|0 1|1"
               for alt, gt in zip("CGT", ["1|0", "0|1", "1/1"], strict=True)]
    path = write_text(tmp_path / "same_pos.vcf.gz", vcf_text(records))
    lazy = read_vcf(path, chunk_variants=1)
    assert lazy["call_genotype"].chunks[0] == (1, 1, 1)
    assert lazy["call_genotype"].values[:, 0].tolist() == [[1, 0], [0, 1], [1, 1]]
    assert lazy["variant_allele"].values[:, 1].tolist() == ["C", "G", "T"]


def test_lazy_error_names_record_when_computed(tmp_path: Path) -> None:
    records = [f"chr1 {p} . A C . . . GT 0|0 0|1 1|1" for p in range(1, 6)]
    records[3] = "chr1 4 . A C . . . GT 0|0 0|z 1|1"
    path = write_text(tmp_path / "late_error.vcf.gz", vcf_text(records))
    lazy = read_vcf(path, chunk_variants=2)  # site columns are fine, so this succeeds
    lazy["call_genotype"][:2].compute()
    with pytest.raises(InputFormatError, match=r"record 4 \(chr1:4, line \d+\): malformed GT '0\|z'"):
        lazy["call_genotype"].compute()


# ------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------

BAD_CASES = {
    "unsorted": (["chr1 20 . A G . . . GT 0|0 0|1 1|1", "chr1 10 . A G . . . GT 0|0 0|1 1|1"],
                 r"record 2 \(chr1:10, line 9\): unsorted file: position 10 comes after 20"),
    "contig_again": (["chr1 1 . A G . . . GT 0|0 0|1 1|1", "chr2 1 . A G . . . GT 0|0 0|1 1|1",
                      "chr1 5 . A G . . . GT 0|0 0|1 1|1"],
                     r"record 3 \(chr1:5, .*contig 'chr1' appears again after contig 'chr2'"),
    "duplicate": (["chr1 20 . A G . . . GT 0|0 0|1 1|1", "chr1 20 . A G . . . GT 0|0 0|1 1|1"],
                  r"record 2 \(chr1:20, line 9\): duplicate record: chr1:20 A>G"),
    "multiallelic": (["chr1 20 . A G,T . . . GT 0|2 0|1 1|1"],
                     r"record 1 \(chr1:20, line 8\): multi-allelic site .*multiallelic='split'"),
    "no_gt": (["chr1 20 . A G . . . DS 0 1 2"], r"record 1 \(chr1:20.*no GT field \(FORMAT is 'DS'\)"),
    "malformed_gt": (["chr1 20 . A G . . . GT 0|0 0|1 1|1", "chr1 30 . A G . . . GT 0|0 0-1 1|1"],
                     r"record 2 \(chr1:30.*malformed GT '0-1' for sample S2"),
    "allele_out_of_range": (["chr1 20 . A G . . . GT 0|0 0|2 1|1"],
                            r"record 1 \(chr1:20.*refers to allele 2, but the record has only 1"),
    "mixed_ploidy": (["chr1 20 . A G . . . GT 0|0 0|1 1|1", "chr1 30 . A G . . . GT 0|0 1 1|1"],
                     r"record 2 \(chr1:30.*mixed ploidy: sample S2 has GT '1' with 1 allele"),
    "column_count": (["chr1 20 . A G . . . GT 0|0 0|1"],
                     r"record 1 \(chr1:20.*11 columns, but the header declares 3 samples"),
    "bad_pos": (["chr1 2x . A G . . . GT 0|0 0|1 1|1"], r"record 1 \(chr1, line 8\): POS '2x' is not an integer"),
    "bad_ds": (["chr1 20 . A G . . . GT:DS 0|0:0 0|1:abc 1|1:2"],
               r"record 1 \(chr1:20.*malformed DS value 'abc' for sample S2"),
    "short_gp": (["chr1 20 . A G . . . GT:GP 0|0:1,0,0 0|1:0,1 1|1:0,0,1"],
                 r"GP for sample S2 has 2 values, expected 3"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
@pytest.mark.parametrize("suffix", [".vcf", ".vcf.gz"])
def test_bad_records_raise_naming_file_and_record(tmp_path: Path, case: str, suffix: str) -> None:
    records, pattern = BAD_CASES[case]
    path = write_text(tmp_path / f"{case}{suffix}", vcf_text(records))
    with pytest.raises(InputFormatError, match=pattern) as info:
        read_vcf(path)
    assert info.value.path == str(path)
    assert str(path) in str(info.value)


def test_absent_samples_are_named(small_vcf: Path) -> None:
    with pytest.raises(InputFormatError, match="requested samples are not in the file: X9, Y1"):
        read_vcf(small_vcf, samples=["S1", "X9", "Y1"], multiallelic="drop")


def test_truncated_bgzip(tmp_path: Path, small_vcf: Path) -> None:
    full = write_text(tmp_path / "full.vcf.gz", small_vcf.read_text())
    cut = tmp_path / "cut.vcf.gz"
    cut.write_bytes(full.read_bytes()[:-40])
    with pytest.raises(InputFormatError, match=r"cut\.vcf\.gz: truncated file"):
        read_vcf(cut, multiallelic="split")


@pytest.mark.parametrize("chunk", [None, 500])
def test_corrupt_bgzip_block(tmp_path: Path, chunk: int | None) -> None:
    rng = np.random.default_rng(1)
    records = [f"chr1 {p} . A C . . . GT " + " ".join(rng.choice(["0|0", "0|1", "1/1"], 3))
               for p in range(1, 20000)]
    data = bytearray(write_text(tmp_path / "ok.vcf.gz", vcf_text(records)).read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(64)
    corrupt = tmp_path / "corrupt.vcf.gz"
    corrupt.write_bytes(bytes(data))
    with pytest.raises(InputFormatError, match=r"corrupt\.vcf\.gz: truncated or corrupt data after "
                       r"record \d+ \(chr1:\d+, line \d+\)"):
        read_vcf(corrupt, chunk_variants=chunk)["call_genotype"].compute()


def test_truncated_plain_gzip(tmp_path: Path) -> None:
    records = [f"chr1 {p} . A C . . . GT 0|0 0|1 1|1" for p in range(1, 400)]
    data = gzip.compress(vcf_text(records).encode())
    cut = tmp_path / "cut.vcf.gz"
    cut.write_bytes(data[: len(data) - 30])
    with pytest.raises(InputFormatError, match=r"cut\.vcf\.gz.*(truncated|columns)"):
        read_vcf(cut)


@pytest.mark.parametrize("content", [b"", b"hello world\nnot a vcf\n", b"chr1\t10\t20\n",
                                     b"\x89PNG\r\n\x1a\n" + bytes(range(256))])
def test_not_a_vcf(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "not_a.vcf"
    path.write_bytes(content)
    with pytest.raises(InputFormatError, match=r"not_a\.vcf: not a readable VCF/BCF file"):
        read_vcf(path)


def test_bad_arguments(small_vcf: Path) -> None:
    with pytest.raises(ValueError, match="multiallelic must be"):
        read_vcf(small_vcf, multiallelic="keep")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unsupported FORMAT fields"):
        read_vcf(small_vcf, fields=("GT", "PL"))
    with pytest.raises(FileNotFoundError):
        read_vcf(small_vcf.with_name("absent.vcf"))


def test_check_same_samples() -> None:
    def dataset(samples: list[str], source: str):
        return genotype_dataset(np.zeros((1, len(samples), 2), np.int8), positions=[5],
                                alleles=("A", "C"), sample_ids=samples, variant_ids=None,
                                attrs={"source": source})

    ref = dataset(["a", "b", "c"], "ref.vcf.gz")
    check_same_samples(ref, dataset(["a", "b", "c"], "target.vcf.gz"))
    check_same_samples(ref, dataset(["c", "a", "b"], "target.vcf.gz"), ignore_order=True)
    with pytest.raises(InputFormatError, match=r"ref\.vcf\.gz vs target\.vcf\.gz: sample sets "
                       r"differ: 1 sample\(s\) only in the first \(c\); 1 sample\(s\) only in the "
                       r"second \(d\)"):
        check_same_samples(ref, dataset(["a", "b", "d"], "target.vcf.gz"))
    with pytest.raises(InputFormatError, match=r"different order \(position 0: a vs c\)"):
        check_same_samples(ref, dataset(["c", "a", "b"], "target.vcf.gz"))


# ------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------


def imputed_dataset() -> object:
    gt = np.array([[[0, 1], [1, 1]], [[0, 0], [-1, -1]]], np.int8)
    return genotype_dataset(
        gt, positions=[100, 7], contig=[0, 1], contigs=["chr1", "chr2"],
        alleles=[["A", "G"], ["T", "C"]], variant_ids=["rs9", "."], sample_ids=["x", "y"],
        phased=np.array([[True, False], [True, True]]),
        dosage=np.array([[0.8, 1.95], [0.1, np.nan]], np.float32),
        genotype_probability=np.array(
            [[[2, 1, 1], [0, 0.1, 0.9]], [[0.9, 0.1, 0], [0, 0, 0]]], np.float32))


def test_write_header_records_and_gp_normalised(tmp_path: Path) -> None:
    path = write_vcf(imputed_dataset(), tmp_path / "imputed.vcf.gz")
    assert Path(f"{path}.tbi").exists()
    with gzip.open(path, "rt") as handle:
        lines = handle.read().splitlines()
    assert lines[0] == "##fileformat=VCFv4.2"
    assert "##contig=<ID=chr1>" in lines and "##contig=<ID=chr2>" in lines
    for field in ("GT", "DS", "GP"):
        assert any(line.startswith(f"##FORMAT=<ID={field},") for line in lines)
    records = [line.split("\t") for line in lines if not line.startswith("#")]
    assert records[0] == ["chr1", "100", "rs9", "A", "G", ".", ".", ".", "GT:DS:GP",
                          "0|1:0.8:0.5,0.25,0.25", "1/1:1.95:0,0.1,0.9"]
    assert records[1] == ["chr2", "7", ".", "T", "C", ".", ".", ".", "GT:DS:GP",
                          "0|0:0.1:0.9,0.1,0", ".|.:.:."]
    back = read_vcf(path)
    np.testing.assert_allclose(back["call_genotype_probability"].values[0, 0], [0.5, 0.25, 0.25])


def test_write_selected_fields_and_bcf(tmp_path: Path) -> None:
    path = write_vcf(imputed_dataset(), tmp_path / "gt_only.bcf", fields=["GT"])
    assert Path(f"{path}.csi").exists()
    back = read_vcf(path)
    assert "call_dosage" not in back
    np.testing.assert_array_equal(back["call_genotype"].values, imputed_dataset()["call_genotype"].values)
    plain = write_vcf(imputed_dataset(), tmp_path / "gt_ds.vcf", fields=["DS", "GT"])
    header = [line for line in plain.read_text().splitlines() if line.startswith("##FORMAT")]
    assert [h.split(",")[0] for h in header] == ["##FORMAT=<ID=GT", "##FORMAT=<ID=DS"]
    assert plain.read_text().splitlines()[-1].split("\t")[8] == "GT:DS"


def test_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pysam

    from analysislib.io import bgzf

    def broken_index(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(bgzf, "bgzf_compress", broken_index)  # the .tbi of a .vcf.gz
    monkeypatch.setattr(pysam, "tabix_index", broken_index)  # the .csi of a .bcf
    for name in ("out.vcf.gz", "out.bcf"):
        with pytest.raises(OSError, match="disk full"):
            write_vcf(imputed_dataset(), tmp_path / name)
        assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    bad = imputed_dataset()
    bad["call_dosage"][1, 0] = -1.0  # fails while records are being written
    for name in ("out.vcf.gz", "out.bcf", "out.vcf"):
        with pytest.raises(ValueError, match="negative"):
            write_vcf(bad, tmp_path / name)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc, where no file can be made")
def test_an_output_that_cannot_be_made_is_named_not_its_temporary() -> None:
    target = Path("/proc/analysislib-out.vcf.gz")
    with pytest.raises(OSError) as info:
        write_vcf(imputed_dataset(), target)
    assert str(info.value).endswith(f"cannot write a file there (No such file or directory): '{target}'")


def test_write_rejects_unsorted_and_bad_names(tmp_path: Path) -> None:
    ds = imputed_dataset()
    ds["variant_contig"][:] = 0
    ds["variant_position"][:] = [100, 7]
    with pytest.raises(ValueError, match=r"variant 1 \(chr1:7\) comes after position 100"):
        write_vcf(ds, tmp_path / "x.vcf.gz")
    ds = imputed_dataset()
    ds["sample_id"][0] = "a\tb"
    with pytest.raises(ValueError, match="sample_id value"):
        write_vcf(ds, tmp_path / "x.vcf.gz")
    with pytest.raises(ValueError, match="must end in"):
        write_vcf(imputed_dataset(), tmp_path / "x.txt")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------
# Round trips (hypothesis)
# ------------------------------------------------------------------------------------------


@st.composite
def vcf_records(draw: st.DrawFn) -> tuple[int, list[str]]:
    """Canonical VCF record lines: what write_vcf would write for the same data."""
    n_samples = draw(st.integers(1, 4))
    ploidy = draw(st.sampled_from([1, 2]))
    with_probabilities = draw(st.booleans())
    positions = {c: sorted(draw(st.sets(st.integers(1, 10**7), max_size=6))) for c in ("chr1", "chr2")}
    bases = st.text("ACGT", min_size=1, max_size=3)
    lines = []
    for contig, contig_positions in positions.items():
        for pos in contig_positions:
            ref = draw(bases)
            alt = draw(bases.filter(lambda a, ref=ref: a != ref))
            variant_id = draw(st.sampled_from([".", f"rs{pos}"]))
            calls = []
            for _ in range(n_samples):
                alleles = [draw(st.sampled_from([".", "0", "1"])) for _ in range(ploidy)]
                gt = draw(st.sampled_from("|/")).join(alleles) if ploidy == 2 else alleles[0]
                if with_probabilities:
                    if draw(st.booleans()):
                        dosage = draw(st.integers(0, 2000))
                        a = draw(st.integers(0, 1000))
                        b = draw(st.integers(0, 1000 - a))
                        probabilities = (a, b, 1000 - a - b) if ploidy == 2 else (a, 1000 - a)
                        gt += ":" + _decimal(dosage) + ":" + ",".join(map(_decimal, probabilities))
                    else:
                        gt += ":.:."
                calls.append(gt)
            fmt = "GT:DS:GP" if with_probabilities else "GT"
            lines.append("\t".join([contig, str(pos), variant_id, ref, alt, ".", ".", ".", fmt, *calls]))
    return n_samples, lines


def _decimal(thousandths: int) -> str:
    return f"{thousandths / 1000:.3f}".rstrip("0").rstrip(".")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(vcf_records())
def test_vcf_dataset_vcf_round_trip_is_identical(generated: tuple[int, list[str]]) -> None:
    n_samples, lines = generated
    # A file whose GTs are all a bare '.' does not say its ploidy (read as diploid).
    assume(any(call.split(":")[0] != "." for line in lines for call in line.split("\t")[9:]))
    samples = tuple(f"S{i}" for i in range(n_samples))
    with tempfile.TemporaryDirectory() as scratch:
        source = write_text(Path(scratch) / "in.vcf.gz",
                            vcf_text([], samples) + "".join(line + "\n" for line in lines))
        ds = read_vcf(source)
        out = write_vcf(ds, Path(scratch) / "out.vcf.gz")
        with gzip.open(out, "rt") as handle:
            written = [line for line in handle.read().splitlines() if not line.startswith("#")]
        assert written == lines  # genotypes, phase, positions, alleles and values unchanged
        again = read_vcf(out)
    for name in ("call_genotype", "call_genotype_phased", "variant_position", "variant_contig"):
        np.testing.assert_array_equal(again[name].values, ds[name].values)


@st.composite
def genotype_datasets(draw: st.DrawFn) -> object:
    n_var = draw(st.integers(0, 8))
    n_samples = draw(st.integers(1, 5))
    ploidy = draw(st.sampled_from([1, 2]))
    positions = np.sort(np.array(draw(st.lists(st.integers(1, 10**8), min_size=n_var, max_size=n_var,
                                               unique=True)), dtype=np.int64))
    ints = st.integers(-1, 1)
    gt = np.array(draw(st.lists(ints, min_size=n_var * n_samples * ploidy,
                                max_size=n_var * n_samples * ploidy)), np.int8)
    phased = np.array(draw(st.lists(st.booleans(), min_size=n_var * n_samples,
                                    max_size=n_var * n_samples)), bool)
    dosage = np.array(draw(st.lists(st.floats(0, ploidy) | st.just(np.nan), min_size=n_var * n_samples,
                                    max_size=n_var * n_samples)), np.float32)
    return genotype_dataset(
        gt.reshape(n_var, n_samples, ploidy), positions=positions, contigs=["7"], sample_ids="id",
        variant_ids=None, phased=phased.reshape(n_var, n_samples) & (ploidy == 2),
        dosage=dosage.reshape(n_var, n_samples))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(genotype_datasets(), st.sampled_from(["rt.vcf.gz", "rt.bcf"]))
def test_dataset_vcf_dataset_round_trip(ds, name: str) -> None:
    # A haploid file whose calls are all '.' does not say its ploidy (read as diploid).
    assume(ds.sizes["ploidy"] == 2 or bool((ds["call_genotype"].values >= 0).any()))
    with tempfile.TemporaryDirectory() as scratch:
        back = read_vcf(write_vcf(ds, Path(scratch) / name))
    assert back["sample_id"].values.tolist() == ds["sample_id"].values.tolist()
    assert back.sizes["variants"] == ds.sizes["variants"]
    if ds.sizes["variants"] == 0:
        return  # an empty file does not say its ploidy
    for var in ("call_genotype", "call_genotype_phased", "variant_position", "variant_contig"):
        np.testing.assert_array_equal(back[var].values, ds[var].values)
    np.testing.assert_allclose(back["call_dosage"].values, ds["call_dosage"].values, atol=5e-4)


# ------------------------------------------------------------------------------------------
# Real data and bcftools agreement
# ------------------------------------------------------------------------------------------


def test_real_1kg_file(shared_data: Path) -> None:
    ds = read_vcf(shared_data / REAL_VCF)
    assert dict(ds.sizes) == {"variants": 10490, "samples": 500, "ploidy": 2, "alleles": 2}
    assert ds["sample_id"].values[0] == "HG00096" and ds["sample_id"].values[-1] == "HG01497"
    positions = ds["variant_position"].values
    assert positions[0] == 16055171 and positions[-1] == 51219006
    assert (np.diff(positions) > 0).all()
    assert {ds.attrs["contigs"][i] for i in np.unique(ds["variant_contig"].values)} == {"22"}
    gt = ds["call_genotype"].values
    assert ds["call_genotype_phased"].values.all() and (gt >= 0).all()
    assert ds["variant_id"].values[0] == "rs12628452"
    assert gt[0, :8].tolist() == [[0, 0]] * 7 + [[0, 1]]  # HG00105 is 0|1 at the first site
    alt_counts = gt.sum(axis=(1, 2))
    assert int(((alt_counts == 0) | (alt_counts == 1000)).sum()) == 75  # monomorphic, per README
    lazy = read_vcf(shared_data / REAL_VCF, chunk_variants=4000)
    assert lazy["call_genotype"].chunks[0] == (4000, 4000, 2490)
    np.testing.assert_array_equal(lazy["call_genotype"].values, gt)


def _bcftools_gt(path: Path) -> np.ndarray:
    """``bcftools query -f '[%GT\\t]\\n'`` as an array of strings, shape (variants, samples)."""
    out = subprocess.run(["bcftools", "query", "-f", "[%GT\t]\n", str(path)],
                         check=True, capture_output=True, text=True).stdout
    return np.array([line.rstrip("\t").split("\t") for line in out.splitlines()])


requires_bcftools = pytest.mark.skipif(shutil.which("bcftools") is None,
                                       reason="bcftools is not installed (apt-get install bcftools)")


@pytest.mark.tools
@requires_bcftools
def test_agrees_with_bcftools_on_real_file(shared_data: Path, tmp_path: Path) -> None:
    path = shared_data / REAL_VCF
    ds = read_vcf(path)
    np.testing.assert_array_equal(gt_strings(ds), _bcftools_gt(path))
    # And our writer's output reads the same in bcftools (first 300 sites, as BCF).
    part = ds.isel(variants=slice(0, 300))
    written = write_vcf(part, tmp_path / "part.bcf")
    np.testing.assert_array_equal(_bcftools_gt(written), gt_strings(part))


@pytest.mark.tools
@requires_bcftools
def test_agrees_with_bcftools_on_unphased_missing_and_haploid(tmp_path: Path) -> None:
    diploid = write_text(tmp_path / "mixed.vcf.gz", vcf_text([
        "chr1 1 . A C . . . GT:DS 0/1:1 ./.:. 1|1:2",
        "chr1 2 . A C . . . GT 0|. .|. 1/0",
        "chr2 3 . A C,G . . . GT 2/1 0|2 ./.",
    ]))
    np.testing.assert_array_equal(gt_strings(read_vcf(diploid, multiallelic="drop")),
                                  _bcftools_gt(diploid)[:2])
    haploid = write_text(tmp_path / "haploid.vcf", vcf_text(
        ["chr1 1 . A C . . . GT 0 1 1", "chr1 2 . A C . . . GT 1 0 0"]))
    np.testing.assert_array_equal(gt_strings(read_vcf(haploid)), _bcftools_gt(haploid))


def test_vectorised_parser_matches_per_call_parser(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    records = []
    for pos in range(1, 60):
        calls = []
        for _ in range(7):
            a, b = rng.choice([".", "0", "1"], 2)
            gp = rng.dirichlet([1, 1, 1]).round(3)
            calls.append(f"{a}{rng.choice(['|', '/'])}{b}:{rng.uniform(0, 2):.3f}:"
                         + ",".join(f"{x:.3f}" for x in gp))
        records.append(f"chr1 {pos} . A C . . . GT:DS:GP " + " ".join(calls))
    path = write_text(tmp_path / "random.vcf", vcf_text(records, tuple(f"s{i}" for i in range(7))))
    fast = read_vcf(path)
    layout = vcf_module._inspect(path)
    ctx = vcf_module._Context(layout, "error", None, 0, ploidy=2)
    lines = path.read_bytes().splitlines()[-len(records):]
    for r, line in enumerate(lines):
        site = vcf_module._parse_site(line, r + 1, ctx)
        slow = vcf_module._parse_record_slow(site, ctx, ("DS", "GP"))
        np.testing.assert_array_equal(fast["call_genotype"].values[r], slow.gt[0])
        np.testing.assert_array_equal(fast["call_genotype_phased"].values[r], slow.phased[0])
        np.testing.assert_array_equal(fast["call_dosage"].values[r], slow.ds[0, :, 0])
        np.testing.assert_array_equal(fast["call_genotype_probability"].values[r], slow.gp[0])


def test_packed_call_formatter_writes_the_general_formatters_text(monkeypatch: pytest.MonkeyPatch):
    """DS/GP through uint64 lookup tables: byte for byte the digit-by-digit text, NaN and all."""
    from analysislib.io import vcf

    rng = np.random.default_rng(3)
    shape = (40, 9)
    gp = rng.dirichlet([0.3, 0.3, 0.3], size=shape)
    hard = rng.random(shape) < 0.3
    gp[hard] = np.eye(3)[rng.integers(0, 3, hard.sum())]
    gp[rng.random(shape) < 0.1] = np.nan  # whole GP missing: one '.'
    partial = gp.copy()
    partial[rng.random((*shape, 3)) < 0.05] = np.nan
    ds = gp[..., 1] + 2 * gp[..., 2]
    ds[rng.random(shape) < 0.1] = np.nan
    phased = rng.random(shape) < 0.5
    cases = 0
    for ploidy, decimals, (dosage, probability), line_end in itertools.product(
            (1, 2), (1, 3, 4), ((ds, gp), (ds * 10, partial), (None, gp), (ds, None), (None, None)),
            (True, False)):
        gt = rng.integers(-1, 2, (*shape, ploidy)).astype(np.int8)
        packed = vcf._format_calls_packed(gt, phased, dosage, probability, decimals=decimals,
                                          allele_width=1, line_end=line_end)
        with monkeypatch.context() as patch:
            patch.setattr(vcf, "_format_calls_packed", lambda *args, **kwargs: None)
            lines = vcf._format_calls(gt, phased, dosage, probability, decimals=decimals,
                                      allele_width=1, line_end=line_end)
        assert len(lines) == shape[0]
        if packed is not None:
            cases += 1
            assert packed == lines
    assert cases >= 50


def test_whole_record_lines_are_the_prefixes_then_the_formatters_text():
    """_format_records: each prefix then its sample columns, as one text, with each line's length;
    prefixes of any length, and the general path where the packed cells do not apply."""
    from analysislib.io import vcf

    rng = np.random.default_rng(8)
    shape = (30, 5)
    gp = rng.dirichlet([0.4, 0.4, 0.4], size=shape)
    gp[rng.random(shape) < 0.1] = np.nan
    ds = gp[..., 1] + 2 * gp[..., 2]
    phased = rng.random(shape) < 0.5
    prefixes = [f"22\t{100 + i}\t{'rs' * int(rng.integers(0, 30)) or '.'}\tA\tG\t.\t.\t.\tGT:DS:GP\t".encode()
                for i in range(shape[0])]
    for gt, width in ((rng.integers(-1, 2, (*shape, 2)).astype(np.int8), 1),  # packed cells
                      (rng.integers(-1, 12, (*shape, 2)).astype(np.int8), 2)):  # two-digit alleles
        text, lengths = vcf._format_records(prefixes, gt, phased, ds, gp, decimals=3, allele_width=width)
        lines = vcf._format_calls(gt, phased, ds, gp, decimals=3, allele_width=width)
        expected = [prefix + line for prefix, line in zip(prefixes, lines, strict=True)]
        assert text == b"".join(expected)
        assert lengths.tolist() == [len(line) for line in expected]
