"""Bad input on the command line: one ``error:`` line naming the file, exit 1 (issue 16)."""

from __future__ import annotations

import os

import pytest
from test_bad_input_vcf import _bgzip, _vcf_text  # tests/ is on sys.path (rootdir conftest)

from analysislib.cli import main


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("same", ["path", "dotted", "symlink", "hardlink"])
def test_impute_refuses_to_overwrite_its_input(tmp_path, capsys, same):
    source = _bgzip(_vcf_text(), tmp_path / "x.vcf.gz")
    before = source.read_bytes()
    output = {"path": source, "dotted": tmp_path / "sub" / ".." / "x.vcf.gz",
              "symlink": tmp_path / "link.vcf.gz", "hardlink": tmp_path / "hard.vcf.gz"}[same]
    (tmp_path / "sub").mkdir()
    if same == "symlink":
        output.symlink_to(source)
    elif same == "hardlink":
        os.link(source, output)
    # The bundle does not exist: the check comes before anything is loaded.
    assert main(["impute", "--models", str(tmp_path / "no_bundle"), str(source), str(output)]) == 1
    err = _one_error_line(capsys)
    assert f"error: {output}: the output is the input file {source}" in err
    assert source.read_bytes() == before


@pytest.mark.parametrize(("text", "words"), [
    (_vcf_text(ploidy=3), "genotypes are triploid"),
    (_vcf_text(ploidy=1), "genotypes are haploid"),
    (_vcf_text(n_variants=0), "no variant records (the file holds a header only)"),
    (_vcf_text(samples=["A", "B", "A"]), "duplicate sample ID 'A'"),
])
def test_evaluate_explains_unusable_vcf_in_one_line(tmp_path, capsys, text, words):
    path = _bgzip(text, tmp_path / "bad.vcf.gz")
    assert main(["evaluate", "--method", "allele_frequency", "--dataset", str(path),
                 "--scenario", "typed_1in3", "--results", str(tmp_path / "results")]) == 1
    err = _one_error_line(capsys)
    assert err.startswith(f"error: {path}: ") and words in err, err
    assert not (tmp_path / "results").exists()


def test_evaluate_on_a_bit_flipped_file_names_the_damage(tmp_path, capsys):
    path = _bgzip(_vcf_text(), tmp_path / "flipped.vcf.gz")
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x10
    path.write_bytes(bytes(data))
    assert main(["evaluate", "--method", "allele_frequency", "--dataset", str(path),
                 "--scenario", "typed_1in3", "--results", str(tmp_path / "results")]) == 1
    err = _one_error_line(capsys)
    assert err.startswith(f"error: {path}: ") and "BGZF block at byte 0" in err, err


def test_os_errors_are_one_line_naming_the_file(tmp_path, capsys):
    folder = tmp_path / "folder.vcf.gz"
    folder.mkdir()
    assert main(["evaluate", "--method", "allele_frequency", "--dataset", str(folder),
                 "--scenario", "typed_1in3", "--results", str(tmp_path / "results")]) == 1
    assert str(folder) in _one_error_line(capsys)


def test_evaluate_reads_a_contig_idx_header_as_bcftools_does(tmp_path, capsys):
    # htslib's test/modhdr.vcf.gz style header: pysam alone fails with a bare AssertionError.
    text = _vcf_text(samples=[f"S{i}" for i in range(20)], n_variants=30,
                     contig_lines=["##contig=<ID=1,length=100000,IDX=1>"])
    source = _bgzip(text, tmp_path / "modhdr.vcf.gz")
    assert main(["evaluate", "--method", "allele_frequency", "--dataset", str(source),
                 "--scenario", "typed_1in3", "--target-fraction", "0.25",
                 "--results", str(tmp_path / "results")]) == 0
    assert "allele_frequency on modhdr.vcf.gz" in capsys.readouterr().out
