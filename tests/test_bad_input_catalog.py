"""Bad data-catalog input: every failure is a project error naming the file (issue 16 item 6).

The catalog file itself (YAML syntax, structure, required fields) and the data files it lists
(missing, wrong sha256) are damaged here in a private catalog and mirror, never the shared ones.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysislib.catalog import (
    CACHE_ENV,
    CATALOG_ENV,
    MIRROR_ENV,
    DataFileNotFoundError,
    UnknownDatasetError,
    load_catalog,
)
from analysislib.cli import main
from analysislib.errors import ChecksumError, InputFormatError

PROJECT_CATALOG = Path(__file__).resolve().parents[1] / "data_catalog.yaml"
DATA = b"##fileformat=VCFv4.2\n"
REL = "genotypes/small.vcf"


def _entry(**changes) -> dict:
    entry = {"kind": "genotypes", "description": "a small file", "citation": "us", "license": "MIT",
             "loader": "analysislib.io.vcf:read_vcf",
             "files": {REL: {"url": "https://example.org/small.vcf",
                             "sha256": hashlib.sha256(DATA).hexdigest()}}}
    entry.update(changes)
    return {k: v for k, v in entry.items() if v is not None}


def _catalog(path: Path, datasets: dict) -> Path:
    path.write_text(yaml.safe_dump({"version": 1, "datasets": datasets}, sort_keys=False))
    return path


@pytest.fixture
def mirror(tmp_path, monkeypatch) -> Path:
    """A private mirror holding the one data file, and an empty cache."""
    (tmp_path / "mirror" / REL).parent.mkdir(parents=True)
    (tmp_path / "mirror" / REL).write_bytes(DATA)
    monkeypatch.setenv(MIRROR_ENV, str(tmp_path / "mirror"))
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "mirror"


def _one_line(err: Exception, start: str) -> str:
    message = str(err)
    assert message.startswith(start) and "\n" not in message, message
    return message


# ------------------------------------------------------------------------- the catalog file


@pytest.mark.parametrize(("text", "line", "words"), [
    ("version: 1\ndatasets:\n  x: {kind: genotypes\n", 4, "expected ',' or '}'"),
    ("version: 1\ndatasets:\n\tx: {}\n", 3, "found character '\\t' that cannot start any token"),
    ("version: 1\ndatasets:\n  x: [\n", 4, "expected the node content"),
    ("version: 1\ndatasets:\n  x: 'unclosed\n", 4, "found unexpected end of stream"),
    # PyYAML keeps the last of two equal keys: the first entry would vanish without a word.
    ("version: 1\ndatasets:\n  x: {}\n  y: {}\n  x: {}\n", 5, "'x' appears twice in one mapping"),
])
def test_yaml_errors_name_the_file_and_line(tmp_path, text, line, words):
    path = tmp_path / "catalog.yaml"
    path.write_text(text)
    with pytest.raises(InputFormatError) as info:
        load_catalog(path)
    message = _one_line(info.value, f"{path} at line {line}: not valid YAML: ")
    assert words in message, message


@pytest.mark.parametrize(("data", "words"), [
    (b"version: 1\ndatasets:\n  \xff: {}\n", r"not UTF-8 text \(byte 23\)"),
    (b"version: 1\x01\n", "special characters are not allowed"),
])
def test_bytes_that_are_not_yaml_text_are_named(tmp_path, data, words):
    path = tmp_path / "catalog.yaml"
    path.write_bytes(data)
    with pytest.raises(InputFormatError, match=words) as info:
        load_catalog(path)
    _one_line(info.value, f"{path}")


def test_missing_or_unreadable_catalog_file_is_named(tmp_path):
    with pytest.raises(DataFileNotFoundError) as info:
        load_catalog(tmp_path / "nowhere.yaml")
    assert str(info.value) == f"{tmp_path / 'nowhere.yaml'}: no such data catalog file"
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(InputFormatError) as info:
        load_catalog(tmp_path)
    assert str(info.value) == f"{tmp_path}: cannot read the data catalog (Is a directory)"


@pytest.mark.parametrize(("datasets", "words"), [
    ({"x": _entry(description=None)}, "dataset 'x' lacks description"),
    ({"x": _entry(kind=None, citation="")}, "dataset 'x' lacks kind, citation"),
    ({"x": _entry(license=None)}, "dataset 'x' lacks license"),
    ({"x": _entry(kind="proteins")}, "dataset 'x' has unknown kind 'proteins'"),
    ({"x": _entry(kind=["genotypes"])}, "dataset 'x' has unknown kind ['genotypes']"),
    ({"x": _entry(files={REL: {"url": "https://example.org/a"}})},
     f"dataset 'x' file '{REL}' needs url and a sha256"),
    ({"x": _entry(files={REL: {"url": "https://example.org/a", "sha256": "abc"}})},
     f"dataset 'x' file '{REL}' needs url and a sha256"),
    ({"x": _entry(files={REL: "https://example.org/a"})}, f"dataset 'x' file '{REL}' needs url and a sha256"),
    ({"x": _entry(files=[REL])}, "dataset 'x': 'files' must be a dict"),
    ({"x": _entry(generator="m:f")}, "dataset 'x' needs either 'files' or 'generator'"),
    ({"x": _entry(files=None, generator="m:f", parameters=[1, 2])}, "dataset 'x': 'parameters' must be a dict"),
    ({"x": _entry(sha256="typo")}, "dataset 'x' has unknown fields ['sha256']"),
    ({"x": "a string"}, "dataset 'x' must be a name holding a mapping of fields"),
    ({"x": None}, "dataset 'x' must be a name holding a mapping of fields"),
    ({7: _entry()}, "dataset 7 must be a name holding a mapping of fields"),
])
def test_malformed_entries_name_the_file_and_dataset(tmp_path, datasets, words):
    path = _catalog(tmp_path / "catalog.yaml", datasets)
    with pytest.raises(InputFormatError) as info:
        load_catalog(path)
    assert _one_line(info.value, f"{path}: ") == f"{path}: {words}"


@pytest.mark.parametrize("text", ["", "version: 1\n", "version: 2\ndatasets: {}\n",
                                  "version: 1\ndatasets: [a, b]\n", "version: 1\ndatasets:\n", "[1, 2]\n"])
def test_a_file_that_is_not_a_catalog_is_named(tmp_path, text):
    path = tmp_path / "catalog.yaml"
    path.write_text(text)
    with pytest.raises(InputFormatError) as info:
        load_catalog(path)
    assert str(info.value) == f"{path}: expected 'version: 1' and a 'datasets' mapping"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.integers(0, 10**6), replacement=st.binary(max_size=4), cut=st.booleans())
def test_any_damage_to_the_catalog_loads_or_is_named(tmp_path, position, replacement, cut):
    good = PROJECT_CATALOG.read_bytes()
    position %= len(good)
    path = tmp_path / "damaged.yaml"
    path.write_bytes(good[:position] if cut else good[:position] + replacement + good[position + 1:])
    try:
        catalog = load_catalog(path)
    except InputFormatError as err:
        _one_line(err, f"{path}")
        return
    for name in catalog:  # what loads is a valid catalog
        assert catalog[name].kind in ("genotypes", "epigenome", "gwas", "results")


# --------------------------------------------------------------------------- dataset names


def test_unknown_dataset_names_the_catalog_and_lists_the_known_ones(tmp_path):
    path = _catalog(tmp_path / "catalog.yaml", {"b_set": _entry(), "a_set": _entry()})
    catalog = load_catalog(path)
    for call in (lambda: catalog["c_set"], lambda: catalog.fetch("c_set"), lambda: catalog.open("c_set")):
        with pytest.raises(UnknownDatasetError) as info:
            call()
        assert str(info.value) == f"no dataset 'c_set' in {path}; known: a_set, b_set"
    # Still a KeyError, so the catalog stays a Mapping: `in` and .get() do not raise.
    assert isinstance(info.value, KeyError)
    assert "c_set" not in catalog and catalog.get("c_set") is None


# -------------------------------------------------------------------------- the data files


@pytest.mark.parametrize("where", ["mirror", "cache"])
def test_wrong_hash_of_a_data_file_names_it_and_both_hashes(tmp_path, mirror, monkeypatch, where):
    if where == "cache":
        monkeypatch.delenv(MIRROR_ENV)
        (tmp_path / "cache" / REL).parent.mkdir(parents=True)
        (mirror / REL).rename(tmp_path / "cache" / REL)
    damaged = (mirror if where == "mirror" else tmp_path / "cache") / REL
    damaged.write_bytes(DATA.replace(b"4.2", b"4.3"))
    catalog = load_catalog(_catalog(tmp_path / "catalog.yaml", {"x": _entry()}))
    for call in (lambda: catalog.fetch("x"), lambda: catalog.open("x")):
        with pytest.raises(ChecksumError) as info:
            call()
        assert _one_line(info.value, f"{damaged}: checksum mismatch: ") == (
            f"{damaged}: checksum mismatch: catalog expects sha256 {hashlib.sha256(DATA).hexdigest()}, "
            f"file has {hashlib.sha256(damaged.read_bytes()).hexdigest()}")
    assert damaged.exists()  # the evidence is kept


def test_missing_data_file_names_it_and_where_it_was_looked_for(tmp_path, mirror):
    (mirror / REL).unlink()
    catalog = load_catalog(_catalog(tmp_path / "catalog.yaml", {"x": _entry()}))
    with pytest.raises(DataFileNotFoundError) as info:
        catalog.open("x")  # the download is refused by the no_network fixture
    message = _one_line(info.value, f"{REL} is not in ${MIRROR_ENV}={mirror} nor in the cache ")
    assert "https://example.org/small.vcf" in message and f"Point {MIRROR_ENV} at a folder" in message
    assert isinstance(info.value, FileNotFoundError)
    assert not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))  # nothing half-downloaded


# ------------------------------------------------------------------------------- the CLI


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: ") and "Traceback" not in "\n".join(err), err
    return err[-1]


def test_cli_catalog_errors_are_one_line(tmp_path, mirror, monkeypatch, capsys):
    path = tmp_path / "catalog.yaml"
    path.write_text("version: 1\ndatasets:\n  x: {kind: genotypes\n")
    monkeypatch.setenv(CATALOG_ENV, str(path))
    assert main(["catalog", "list"]) == 1
    assert _one_error_line(capsys).startswith(f"error: {path} at line 4: not valid YAML")
    _catalog(path, {"x": _entry()})
    assert main(["catalog", "fetch", "y"]) == 1
    assert _one_error_line(capsys) == f"error: no dataset 'y' in {path}; known: x"
    (mirror / REL).write_bytes(b"changed")
    assert main(["catalog", "fetch", "x"]) == 1
    assert _one_error_line(capsys).startswith(f"error: {mirror / REL}: checksum mismatch")
