from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import yaml

from analysislib.catalog import CACHE_ENV, MIRROR_ENV, load_catalog, sha256_of
from analysislib.errors import ChecksumError


def _sha256sums(shared: Path) -> dict[str, str]:
    pairs = (line.split() for line in (shared / "SHA256SUMS").read_text().splitlines() if line)
    return {path: digest for digest, path in pairs}


def test_catalog_entries_are_complete():
    catalog = load_catalog()
    assert {"1kg_chr22_array500", "roadmap_pilot_arcsinh", "sim_genotypes_quick"} <= set(catalog)
    for entry in catalog.values():
        assert entry.description and entry.citation and entry.kind
        if entry.simulated:
            assert ":" in entry.generator and entry.parameters
        else:
            assert entry.license and entry.loader
            for spec in entry.files.values():
                assert spec["url"].startswith("https://")
                assert len(spec["sha256"]) == 64


def test_catalog_registers_every_shared_file_with_its_checksum(shared_data):
    registered = {rel: spec["sha256"] for e in load_catalog().values() for rel, spec in e.files.items()}
    assert registered == _sha256sums(shared_data)
    assert sum(rel.startswith("epigenome/") for rel in registered) == 20


def test_fetch_resolves_from_the_mirror(data_mirror):
    paths = load_catalog().fetch("1kg_chr22_array500")
    vcf = paths["genotypes/1kg_phase3_chr22_array500.vcf.gz"]
    assert vcf == data_mirror / "genotypes/1kg_phase3_chr22_array500.vcf.gz"
    assert hashlib.sha256(vcf.read_bytes()).hexdigest() == sha256_of(vcf)


def test_checksum_mismatch_names_both_hashes(shared_data, tmp_path, monkeypatch):
    rel = "epigenome/E003.H3K4me3.pilot.arcsinh.npz"
    mirror = tmp_path / "mirror"
    (mirror / "epigenome").mkdir(parents=True)
    for track in (shared_data / "epigenome").iterdir():
        (mirror / "epigenome" / track.name).symlink_to(track)
    bad = mirror / rel
    bad.unlink()
    shutil.copy(shared_data / rel, bad)
    with open(bad, "ab") as handle:
        handle.write(b"tampered")
    monkeypatch.setenv(MIRROR_ENV, str(tmp_path / "mirror"))
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    expected = _sha256sums(shared_data)[rel]
    actual = hashlib.sha256(bad.read_bytes()).hexdigest()
    with pytest.raises(ChecksumError) as info:
        load_catalog().fetch("roadmap_pilot_arcsinh")
    assert expected in str(info.value) and actual in str(info.value)
    assert str(bad) in str(info.value)


def test_cached_file_is_used_without_network(shared_data, tmp_path, monkeypatch):
    rel = "genotypes/1kg_phase3_chr22_array500.vcf.gz"
    cache = tmp_path / "cache"
    for name in (rel, rel + ".tbi"):
        (cache / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shared_data / name, cache / name)
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    monkeypatch.setenv(CACHE_ENV, str(cache))
    assert load_catalog().fetch("1kg_chr22_array500")[rel] == cache / rel


def test_missing_file_without_network_says_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "empty-cache"))
    with pytest.raises(FileNotFoundError, match=MIRROR_ENV):
        load_catalog().fetch("1kg_chr22_array500")
    assert not any((tmp_path / "empty-cache").rglob("*.vcf.gz"))


def test_malformed_catalog_names_the_entry(tmp_path):
    bad = tmp_path / "catalog.yaml"
    bad.write_text(yaml.safe_dump({"version": 1, "datasets": {"x": {"kind": "genotypes"}}}))
    with pytest.raises(ValueError, match="'x' lacks description"):
        load_catalog(bad)


def test_unknown_dataset_lists_known_names():
    with pytest.raises(KeyError, match="roadmap_pilot_arcsinh"):
        load_catalog()["no_such_dataset"]


def test_unknown_catalog_field_is_named(tmp_path):
    bad = tmp_path / "catalog.yaml"
    entry = {"kind": "genotypes", "description": "d", "citation": "c", "generator": "m:f",
             "parameters": {}, "sha": "typo"}
    bad.write_text(yaml.safe_dump({"version": 1, "datasets": {"x": entry}}))
    with pytest.raises(ValueError, match=r"'x' has unknown fields \['sha'\]"):
        load_catalog(bad)


def test_hash_memo_sees_an_in_place_edit_with_the_same_size_and_mtime(tmp_path, monkeypatch):
    import os
    import time

    from analysislib.io import checksum

    path = tmp_path / "track.npz"
    path.write_bytes(b"a" * 64)
    os.utime(path, ns=(10**18, 10**18))
    # Hash "much later" than the file changed, so the result is memoised.
    now = time.time_ns
    monkeypatch.setattr(checksum.time, "time_ns", lambda: now() + 10 * 10**9)
    assert sha256_of(path) == hashlib.sha256(b"a" * 64).hexdigest()
    memo = dict(checksum._VERIFIED)
    assert any(key[0] == str(path.resolve()) for key in memo)
    assert sha256_of(path) == hashlib.sha256(b"a" * 64).hexdigest()  # served from the memo
    before = path.stat()
    with open(path, "r+b") as handle:  # in place: same inode, same size
        handle.write(b"b")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # mtime put back
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino, before.st_size, before.st_mtime_ns)
    assert sha256_of(path) == hashlib.sha256(b"b" + b"a" * 63).hexdigest()


def test_hash_of_a_file_changed_just_now_is_not_memoised(tmp_path):
    from analysislib.io import checksum

    path = tmp_path / "fresh.bin"
    path.write_bytes(b"fresh")
    assert sha256_of(path) == hashlib.sha256(b"fresh").hexdigest()
    assert not any(key[0] == str(path.resolve()) for key in checksum._VERIFIED)


def test_read_with_sha256_gives_the_bytes_and_shares_the_memo(tmp_path, monkeypatch):
    import os
    import time

    from analysislib.io import checksum

    path = tmp_path / "table.tsv"
    data = b"chrom\tpos\n" + b"22\t1\n" * 300_000  # more than one read block
    path.write_bytes(data)
    os.utime(path, ns=(10**18, 10**18))
    now = time.time_ns
    monkeypatch.setattr(checksum.time, "time_ns", lambda: now() + 10 * 10**9)
    digest = hashlib.sha256(data).hexdigest()
    assert checksum.read_with_sha256(path) == (data, digest)
    assert any(key[0] == str(path.resolve()) for key in checksum._VERIFIED)
    assert sha256_of(path) == digest  # memoised by the read
    assert checksum.read_with_sha256(path) == (data, digest)  # memo hit: the bytes are still read
