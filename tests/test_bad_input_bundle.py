"""Bad model bundles: every failure is a BundleError naming the bundle file (issue 16 item 6).

One small bundle with packed weights (two overlapping tiles of an untrained autoencoder) is
written once; each test damages a copy. What load_bundle accepts must be the bundle written:
same variants, tiles and predictions.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysislib.genotype.dae import (
    BundleChecksumError,
    BundleError,
    load_bundle,
    write_manifest,
    write_tile,
)
from analysislib.genotype.dae import bundle as dae_bundle

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
TILES = [(0, 5), (4, 9)]  # variant index spans; variants 4 and 5 lie in both tiles
X = np.random.default_rng(0).integers(0, 2, (4, 12)).astype(np.float32)  # allele presence, 6 variants


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    from analysislib.genotype import autoencoder as ae
    from analysislib.genotype.dae.model import SparseDenoisingAutoencoder

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("bundle") / "bundle"
    hp = ae.DAEHyperparameters(n_layers=2, size_ratio=0.5)
    entries = []
    for k, (a, b) in enumerate(TILES):
        pos = 100 * np.arange(a + 1, b + 2)
        variants = pd.DataFrame({"chrom": "22", "pos": pos, "id": [f"rs{p}" for p in pos],
                                 "ref": "A", "alt": "G", "alt_freq": 0.25})
        entries.append(write_tile(out, f"t{k}", SparseDenoisingAutoencoder(len(variants), hp), hp,
                                  variants))
    write_manifest(out, entries, contig_lengths={"22": 51304566})
    return out


@pytest.fixture
def bundle(pristine, tmp_path) -> Path:
    """A fresh copy of the pristine bundle to damage."""
    return Path(shutil.copytree(pristine, tmp_path / "bundle"))


@pytest.fixture(scope="module")
def expected(pristine) -> dict:
    loaded = load_bundle(pristine)
    assert loaded.packed
    return {"variants": loaded.variants, "members": [m.tolist() for m in loaded.members],
            "tiles": loaded.tiles[["contig", "n_variants"]],
            "predictions": [loaded.predict(t, X) for t in range(len(TILES))]}


def _named(err: Exception, bundle: Path) -> str:
    """One line starting with a path inside ``bundle`` (or the bundle folder itself)."""
    message = str(err)
    assert message.startswith(str(bundle)) and "\n" not in message, message
    return message


def _load_named_or_identical(bundle: Path, expected: dict) -> str:
    try:
        loaded = load_bundle(bundle)
        predictions = [loaded.predict(t, X) for t in range(len(TILES))]
    except BundleError as err:  # BundleChecksumError is not a BundleError: caught below
        _named(err, bundle)
        return "named"
    except BundleChecksumError as err:
        _named(err, bundle)
        return "named"
    pd.testing.assert_frame_equal(loaded.variants, expected["variants"])
    # A tile id is a label: a flip that renames one (uniquely) changes nothing read from the files.
    pd.testing.assert_frame_equal(loaded.tiles[["contig", "n_variants"]], expected["tiles"])
    assert [m.tolist() for m in loaded.members] == expected["members"]
    for got, want in zip(predictions, expected["predictions"], strict=True):
        np.testing.assert_array_equal(got, want)
    return "identical"


def _edit_manifest(bundle: Path, edit) -> Path:
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest, indent=1))
    return path


def _rehash(bundle: Path, rel: str) -> None:
    """Record the current sha256 of ``rel``, as a writer that changed it on purpose would."""
    _edit_manifest(bundle, lambda m: m["files"].update({rel: hashlib.sha256((bundle / rel).read_bytes()).hexdigest()}))


# ---------------------------------------------------------------------------- the folder


def test_a_missing_folder_or_a_file_is_named(bundle, tmp_path):
    with pytest.raises(BundleError) as info:
        load_bundle(tmp_path / "nowhere")
    assert str(info.value) == f"{tmp_path / 'nowhere'}: no such model bundle folder"
    for path in (bundle / "manifest.json", bundle / "weights.npy"):
        with pytest.raises(BundleError) as info:
            load_bundle(path)
        assert str(info.value) == (f"{path}: not a model bundle: this is a file; a bundle is a folder "
                                   "holding manifest.json")


def test_missing_manifest_is_named_with_a_hint_when_tiles_are_there(bundle, tmp_path):
    (bundle / "manifest.json").unlink()
    with pytest.raises(BundleError) as info:
        load_bundle(bundle)
    assert _named(info.value, bundle).startswith(f"{bundle}: not a model bundle: manifest.json is missing "
                                                 "(tiles are present: training was interrupted;")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BundleError) as info:
        load_bundle(empty)
    assert str(info.value) == f"{empty}: not a model bundle: manifest.json is missing"


# -------------------------------------------------------------------------- the manifest


@pytest.mark.parametrize(("text", "words"), [
    (b"", "unreadable manifest (Expecting value: line 1 column 1 (char 0))"),
    (b"{nope", "unreadable manifest (Expecting property name enclosed in double quotes"),
    (b"\xff\xfe{}", "unreadable manifest ('utf-8' codec can't decode byte 0xff in position 0"),
    (b"[]", "not an analysislib-dae-bundle manifest"),
    (b'{"format": "something-else", "format_version": 1}', "not an analysislib-dae-bundle manifest"),
])
def test_manifest_that_is_not_a_bundle_manifest_is_named(bundle, text, words):
    (bundle / "manifest.json").write_bytes(text)
    with pytest.raises(BundleError) as info:
        load_bundle(bundle)
    assert _named(info.value, bundle).startswith(f"{bundle / 'manifest.json'}: {words}")


@pytest.mark.parametrize(("version", "words"), [
    (2, "bundle format version 2; this analysislib reads version 1"),
    ("1", "bundle format version 1; this analysislib reads version 1"),  # a string is not 1
    (None, "bundle format version None; this analysislib reads version 1"),
])
def test_other_format_versions_are_refused(bundle, version, words):
    path = _edit_manifest(bundle, lambda m: m.update(format_version=version))
    with pytest.raises(BundleError) as info:
        load_bundle(bundle)
    assert str(info.value) == f"{path}: {words}"


@pytest.mark.parametrize(("edit", "words"), [
    (lambda m: m.pop("tiles"), "the manifest lacks 'tiles'"),
    (lambda m: m.update(tiles=5), "'tiles' must be a list of tile entries"),
    (lambda m: m.update(tiles=[]), "tile entries need config, contig, id, n_variants, variants, weights"),
    (lambda m: m["tiles"].__setitem__(0, "t0"), "'tiles' must be a list of tile entries"),
    (lambda m: m["tiles"][0].pop("variants"), "tile t0: the entry lacks variants"),
    (lambda m: [t.pop("config") for t in m["tiles"]], "tile t0: the entry lacks config"),
    (lambda m: m["tiles"][1].update(id="t0"), "tile ids repeat: ['t0']"),
    (lambda m: m.pop("packed_weights"), "the tiles have 'packed' entries but the manifest has no 'packed_weights'"),
    (lambda m: m["tiles"][0].update(n_variants="6"), "tile t0: 'n_variants' must be a positive integer, not '6'"),
    (lambda m: m["tiles"][0].update(n_variants=0), "tile t0: 'n_variants' must be a positive integer, not 0"),
    (lambda m: m.update(files=[]), "'files' must map file names to sha256 strings"),
    (lambda m: m["files"].pop("tiles/t1.pt"), "tiles/t1.pt has no sha256 in 'files'"),
    (lambda m: m.update(contigs=None), "'contigs' must be a list of contig names"),
    (lambda m: m.update(contigs=[22]), "'contigs' must be a list of contig names"),
    (lambda m: m["tiles"][1]["packed"].update(offset=7), "tile t1: 'packed' entry"),
    (lambda m: m["tiles"][0]["packed"].update(activation="swish"), "tile t0: 'packed' entry"),
    (lambda m: m["tiles"][0]["packed"].update(widths=[12, 12]), "tile t0: 'packed' entry"),
    (lambda m: m["packed_weights"].update(size=3), "packed tiles hold 324 values; 'packed_weights' says 3"),
    (lambda m: m["packed_weights"].update(file="other.npy"), "'packed_weights' must name a file listed"),
])
def test_malformed_manifest_fields_are_named(bundle, edit, words):
    path = _edit_manifest(bundle, edit)
    with pytest.raises(BundleError) as info:
        load_bundle(bundle)
    assert _named(info.value, bundle).startswith(f"{path}: {words}"), str(info.value)


@pytest.mark.parametrize(("edit", "file", "words"), [
    (lambda m: m["tiles"][0].update(n_variants=5), "manifest.json",
     ("tile t0: 'packed' entry {'offset': 0, 'widths': [12, 6, 12], 'activation': 'tanh'} does not fit "
      "a 5-variant autoencoder")),
    # As in a bundle written before weights.npy existed: the variant table is what disagrees.
    (lambda m: (m.pop("packed_weights"), [t.pop("packed") for t in m["tiles"]], m["tiles"][0].update(n_variants=5)),
     "tiles/t0.variants.tsv",
     "6 variants; the manifest says 5"),
    (lambda m: m.update(contigs=["21"]), "tiles/t0.variants.tsv", "variants must all be on the tile's contig '22'"),
    (lambda m: m["tiles"][1].update(contig="chr22"), "tiles/t1.variants.tsv",
     "variants must all be on the tile's contig 'chr22'"),
])
def test_manifest_that_contradicts_a_tile_names_the_tile_file(bundle, edit, file, words):
    _edit_manifest(bundle, edit)
    with pytest.raises(BundleError) as info:
        load_bundle(bundle)
    assert str(info.value).startswith(f"{bundle / file}: {words}"), str(info.value)


@SETTINGS
@given(position=st.integers(0, 10**6), mask=st.integers(1, 255), cut=st.booleans())
def test_any_damage_to_the_manifest_is_named_or_harmless(
        pristine, tmp_path, expected, *, position, mask, cut):
    bundle = tmp_path / "bundle"
    if bundle.exists():
        shutil.rmtree(bundle)
    shutil.copytree(pristine, bundle)
    path = bundle / "manifest.json"
    data = path.read_bytes()
    position %= len(data)
    path.write_bytes(data[:position] if cut else
                     data[:position] + bytes([data[position] ^ mask]) + data[position + 1:])
    _load_named_or_identical(bundle, expected)


# ----------------------------------------------------------------------------- tile files


@pytest.mark.parametrize("rel", ["weights.npy", "tiles/t1.pt", "tiles/t1.variants.tsv", "tiles/t0.json"])
def test_a_missing_file_is_named(bundle, rel):
    (bundle / rel).unlink()
    with pytest.raises(BundleError) as info:
        load_bundle(bundle)
    assert str(info.value) == f"{bundle / rel}: incomplete bundle: this file, listed in manifest.json, is missing"
    (bundle / rel).mkdir()  # a folder in its place is no better
    with pytest.raises(BundleError, match="incomplete bundle"):
        load_bundle(bundle)


@pytest.mark.parametrize(("text", "words"), [
    (b"", "line 1: expected the columns chrom, pos, id, ref, alt, alt_freq; found "),
    (b"\xff\x00", "unreadable tile variant table ('utf-8' codec can't decode byte 0xff"),
    (b"chrom\tpos\tid\tref\talt\talt_freq\n", "0 variants; the manifest says 6"),
    (b"chrom\tpos\tid\tref\talt\talt_freq\n22\tx\t.\tA\tG\t0.1\n", "non-numeric pos or alt_freq"),
    (b"chrom\tpos\tid\tref\talt\talt_freq\n22\t500\t.\tA\n", "line 2: 4 columns, expected 6"),
])
def test_damaged_variant_table_is_named(bundle, text, words):
    (bundle / "tiles/t1.variants.tsv").write_bytes(text)
    with pytest.raises(BundleChecksumError):
        load_bundle(bundle)
    _rehash(bundle, "tiles/t1.variants.tsv")  # the checksum alone would hide what is wrong
    with pytest.raises(BundleError) as info:
        load_bundle(bundle)
    assert _named(info.value, bundle).startswith(f"{bundle / 'tiles/t1.variants.tsv'}: {words}")


@SETTINGS
@given(flips=st.lists(st.tuples(st.integers(0, 10**4), st.integers(1, 255)), min_size=1, max_size=3),
       cut=st.one_of(st.none(), st.integers(0, 10**4)))
def test_variant_tables_read_at_once_or_one_by_one_alike(pristine, tmp_path, flips, cut):
    """load_bundle parses every table at once only when reading them one by one gives the same."""
    bundle = tmp_path / "bundle"
    if not bundle.exists():
        shutil.copytree(pristine, bundle)
    data = bytearray((pristine / "tiles/t1.variants.tsv").read_bytes())
    for position, mask in flips:
        data[position % len(data)] ^= mask
    (bundle / "tiles/t1.variants.tsv").write_bytes(bytes(data[:None if cut is None else cut % len(data)]))
    manifest = json.loads((bundle / "manifest.json").read_text())
    tiles, rank = dae_bundle._tile_columns(manifest["tiles"]), {c: i for i, c in enumerate(manifest["contigs"])}
    try:
        texts = dae_bundle._read_tile_tables(bundle, tiles, None)
    except BundleError:  # not text: neither way parses it
        return
    at_once = dae_bundle._tile_rows_at_once(texts, tiles, rank)
    try:
        one_by_one = dae_bundle._tile_rows(bundle, texts, tiles, rank)
    except (ValueError, OverflowError):  # BundleError or other: not to be read at once either
        one_by_one = None
    if at_once is None:
        return
    assert one_by_one is not None and at_once.keys() == one_by_one.keys()
    for name, values in at_once.items():
        assert values.dtype == one_by_one[name].dtype, name
        np.testing.assert_array_equal(values, one_by_one[name], err_msg=name)


# ------------------------------------------------------------------------- weights.npy


@SETTINGS
@given(flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=3),
       cut=st.one_of(st.none(), st.integers(0, 10**6)))
def test_damaged_packed_weights_fail_their_checksum(pristine, tmp_path, flips, cut):
    bundle = tmp_path / "bundle"
    if not bundle.exists():
        shutil.copytree(pristine, bundle)
    path = bundle / "weights.npy"
    good = (pristine / "weights.npy").read_bytes()
    data = bytearray(good)
    for position, mask in flips:
        data[position % len(data)] ^= mask
    if cut is not None:
        data = data[:cut % len(data)]
    path.write_bytes(bytes(data))
    if bytes(data) == good:  # flips that cancel out
        load_bundle(bundle)
        return
    with pytest.raises(BundleChecksumError) as info:
        load_bundle(bundle)
    assert str(info.value) == (f"{path}: corrupt bundle file: manifest.json records sha256 "
                               f"{hashlib.sha256(good).hexdigest()}, the file has "
                               f"{hashlib.sha256(bytes(data)).hexdigest()}")


@SETTINGS
@given(length=st.integers(0, 10**6))
def test_cut_packed_weights_are_named_when_read_unverified(pristine, tmp_path, length):
    bundle = tmp_path / "bundle"
    if not bundle.exists():
        shutil.copytree(pristine, bundle)
    good = (pristine / "weights.npy").read_bytes()
    (bundle / "weights.npy").write_bytes(good[:length % len(good)])
    loaded = load_bundle(bundle, verify=False)
    with pytest.raises(BundleError) as info:
        loaded.predict(0, X)
    assert _named(info.value, bundle).startswith(f"{bundle / 'weights.npy'}: ")


@pytest.mark.parametrize(("array", "words"), [
    (lambda a: a[:-1], "expected 324 float32 values, found float32 (323,)"),
    (lambda a: np.concatenate([a, np.zeros(1, np.float32)]), "expected 324 float32 values, found float32 (325,)"),
    (lambda a: a.astype(np.float64), "expected 324 float32 values, found float64 (324,)"),
    (lambda a: a.reshape(4, 81), "expected 324 float32 values, found float32 (4, 81)"),
])
def test_packed_weights_of_another_shape_are_named(bundle, array, words):
    path = bundle / "weights.npy"
    np.save(path, array(np.load(path)))
    _rehash(bundle, "weights.npy")
    loaded = load_bundle(bundle)
    with pytest.raises(BundleError) as info:
        loaded.predict(1, X)
    assert str(info.value) == f"{path}: {words}"


def test_object_arrays_are_not_unpickled(bundle):
    path = bundle / "weights.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    _rehash(bundle, "weights.npy")
    with pytest.raises(BundleError) as info:
        load_bundle(bundle).predict(0, X)
    assert _named(info.value, bundle).startswith(f"{path}: unreadable packed weights (")


# ----------------------------------------------------------------------- per-tile .pt files


def test_damaged_tile_weights_are_named_when_first_read(bundle):
    # With packed weights, the .pt files are checked on first read, not by load_bundle.
    path = bundle / "tiles/t1.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))
    loaded = load_bundle(bundle)
    with pytest.raises(BundleChecksumError) as info:
        loaded.predict(1, X, engine="torch")
    assert _named(info.value, bundle).startswith(f"{path}: corrupt bundle file: manifest.json records")
    path.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(BundleError) as info:
        load_bundle(bundle, verify=False).predict(1, X, engine="torch")
    assert _named(info.value, bundle).startswith(f"{path}: unreadable tile weights (")


def test_damaged_tile_configuration_is_caught_when_first_read(bundle, expected):
    # Inference never reads the tile configurations: load_bundle leaves them to tile_config.
    path = bundle / "tiles/t0.json"
    path.write_text(path.read_text().replace("{", "{ ", 1))  # valid JSON, other bytes
    loaded = load_bundle(bundle)
    np.testing.assert_array_equal(loaded.predict(0, X), expected["predictions"][0])
    with pytest.raises(BundleChecksumError) as info:
        loaded.tile_config(0)
    assert _named(info.value, bundle).startswith(f"{path}: corrupt bundle file: manifest.json records")
    assert load_bundle(bundle, verify=False).tile_config(0)["hparams"]  # unverified: read as it is


def test_tile_weights_of_another_shape_are_named(bundle):
    from analysislib.genotype import autoencoder as ae
    from analysislib.genotype.dae.model import SparseDenoisingAutoencoder

    path = bundle / "tiles/t0.pt"
    other = SparseDenoisingAutoencoder(5, ae.DAEHyperparameters(n_layers=2, size_ratio=0.5))
    torch.save(other.state_dict(), path)
    _rehash(bundle, "tiles/t0.pt")
    with pytest.raises(BundleError) as info:
        load_bundle(bundle).predict(0, X, engine="torch")
    assert _named(info.value, bundle).startswith(
        f"{path}: the weights do not fit a 6-variant model with the tile's hyperparameters")


@pytest.mark.parametrize(("text", "words"), [
    ("{", "unreadable tile configuration (Expecting property name"),
    ('{"hparams": {"n_layers": "two"}}', "bad hyperparameters ("),
    ('{"format": "analysislib-dae-bundle"}', "bad hyperparameters ('hparams')"),
])
def test_damaged_tile_configuration_is_named(bundle, text, words):
    path = bundle / "tiles/t0.json"
    path.write_text(text)
    _rehash(bundle, "tiles/t0.json")
    with pytest.raises(BundleError) as info:
        load_bundle(bundle).predict(0, X, engine="torch")
    assert _named(info.value, bundle).startswith(f"{path}: {words}"), str(info.value)
