"""Bad results-store input: a damaged file is an InputFormatError naming it, never changed values.

Issue 16 item 6. Single-byte flips of sealed files are swept exhaustively in test_results.py;
here hypothesis draws cuts and multi-byte damage, and the cases list what else a store folder can
hold: empty files, broken checksum files, temporaries of killed writers, files of other schemas.
"""

from __future__ import annotations

import hashlib
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_results import _rows  # tests/ is on sys.path (rootdir conftest)

from analysislib.errors import InputFormatError
from analysislib.results import CHECKSUM_SUFFIX, ResultsStore, UnverifiedResultsWarning

TASK = "genotype_imputation"
SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def _named(err: InputFormatError, path) -> str:
    """The message, checked to be one line starting with the file's path."""
    message = str(err)
    assert message.startswith(f"{path}: damaged results file") and "\n" not in message, message
    return message


def _sidecar(path):
    return path.with_name(path.name + CHECKSUM_SUFFIX)


def _seal(path) -> None:
    """Write a correct checksum for ``path`` as it is now (a file written by hand, then sealed)."""
    _sidecar(path).write_text(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}\n")


@pytest.fixture
def store(tmp_path):
    store = ResultsStore(tmp_path)
    store.append(_rows("run1", values=(0.5, 0.25)))
    return store


@pytest.fixture
def sealed(store):
    """One sealed run: (store, its parquet path, its bytes, the table it reads as)."""
    path = store.files()[0]
    return store, path, path.read_bytes(), store.read()


def _read_named_or_identical(store, path, original) -> str:
    """Read the store: either it raises naming ``path`` or returns ``original`` exactly."""
    try:
        table = store.read()
    except InputFormatError as err:
        _named(err, path)
        return "named"
    pd.testing.assert_frame_equal(table, original)
    return "identical"


# ------------------------------------------------------------------------------ damaged bytes


@pytest.mark.parametrize("sealed_file", [True, False], ids=["sealed", "legacy"])
def test_zero_byte_parquet_is_named(tmp_path, sealed_file):
    path = tmp_path / TASK / "run1.parquet"
    path.parent.mkdir()
    path.write_bytes(b"")
    if sealed_file:
        _seal(path)
    with pytest.raises(InputFormatError) as info:
        ResultsStore(tmp_path).read()
    assert "not a readable parquet file" in _named(info.value, path)


@SETTINGS
@given(data=st.data())
def test_every_cut_is_named(sealed, data):
    store, path, good, _ = sealed
    length = data.draw(st.integers(0, len(good) - 1), label="cut to")
    path.write_bytes(good[:length])
    try:
        with pytest.raises(InputFormatError, match="differs from") as info:
            store.read()
        _named(info.value, path)
        # Without its checksum (a legacy file) the cut is still found: the footer is gone.
        _sidecar(path).rename(path.with_name("kept"))
        with pytest.raises(InputFormatError, match="not a readable parquet file") as info:
            store.read()
        _named(info.value, path)
    finally:
        path.write_bytes(good)
        if not _sidecar(path).exists():
            path.with_name("kept").rename(_sidecar(path))


@SETTINGS
@given(flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=4))
def test_any_bit_flips_are_named(sealed, flips):
    store, path, good, _ = sealed
    data = bytearray(good)
    for position, mask in flips:
        data[position % len(data)] ^= mask
    path.write_bytes(bytes(data))
    try:
        outcome = _read_named_or_identical(store, path, sealed[3])
        # Flips can cancel out (the same bit twice); otherwise the checksum catches them.
        assert outcome == ("identical" if bytes(data) == good else "named")
    finally:
        path.write_bytes(good)


@SETTINGS
@given(position=st.integers(0, 200), replacement=st.binary(min_size=0, max_size=3))
def test_damaged_checksum_file_is_named_or_harmless(sealed, position, replacement):
    store, path, _, original = sealed
    sidecar = _sidecar(path)
    text = sidecar.read_bytes()
    position %= len(text)
    sidecar.write_bytes(text[:position] + replacement + text[position + 1:])
    try:
        _read_named_or_identical(store, path, original)
    finally:
        sidecar.write_bytes(text)


def test_flips_in_a_legacy_file_never_raise_anything_but_a_named_error(store):
    # Without a .sha256 a flip inside a data page can go unseen (parquet pages carry no checksum
    # unless written with one); what the reader promises is a named error or a warning that
    # the rows are unverified, never a bare traceback.
    path = store.files()[0]
    _sidecar(path).unlink()
    good = path.read_bytes()
    outcomes = {"named": 0, "warned": 0}
    for i in range(0, len(good), 7):
        path.write_bytes(good[:i] + bytes([good[i] ^ (1 << (i % 8))]) + good[i + 1:])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                store.read()
            except InputFormatError as err:
                _named(err, path)
                outcomes["named"] += 1
                continue
        assert [w.category for w in caught] == [UnverifiedResultsWarning], caught
        outcomes["warned"] += 1
    assert outcomes["named"] > 0 and outcomes["warned"] > 0


# ------------------------------------------------------------------------ the .sha256 files


def test_missing_checksum_reads_the_same_values_with_a_warning(sealed):
    store, path, _, original = sealed
    _sidecar(path).unlink()
    with pytest.warns(UnverifiedResultsWarning, match=r"1 results file\(s\) have no \.sha256") as caught:
        table = store.read()
    assert str(path) in str(caught[0].message)
    pd.testing.assert_frame_equal(table, original)


@pytest.mark.parametrize(("text", "accepted"), [
    (b"", False),
    (b"\n", False),
    (b"{digest}\n", False),                          # no file name
    (b"{digest}  run2.parquet\n", False),             # another file's name
    (b"{digest}  run1.parquet  extra\n", False),
    (b"{digest}0  run1.parquet\n", False),            # 65 hex digits
    (b"{short}  run1.parquet\n", False),              # 63 hex digits
    (b"{nonhex}  run1.parquet\n", False),
    (b"\xff\xfe{digest}  run1.parquet\n", False),     # not ASCII
    (b"{upper}  run1.parquet\n", True),              # sha256sum -c accepts either case
    (b"{digest} *run1.parquet\n", True),             # sha256sum's binary-mode marker
    (b"{digest}  run1.parquet", True),               # no final newline
])
def test_malformed_checksum_file_is_named(sealed, text, accepted):
    store, path, good, original = sealed
    digest = hashlib.sha256(good).hexdigest()
    text = text.replace(b"{digest}", digest.encode()).replace(b"{upper}", digest.upper().encode())
    text = text.replace(b"{short}", digest[:-1].encode()).replace(b"{nonhex}", b"g" + digest[1:].encode())
    _sidecar(path).write_bytes(text)
    if accepted:
        pd.testing.assert_frame_equal(store.read(), original)
        return
    with pytest.raises(InputFormatError, match=r"checksum file run1\.parquet\.sha256 is malformed") as info:
        store.read()
    _named(info.value, path)


def test_unreadable_files_are_named(sealed):
    store, path, _, _ = sealed
    sidecar = _sidecar(path)
    sidecar.unlink()
    sidecar.mkdir()  # a folder where the checksum should be
    with pytest.raises(InputFormatError, match=r"cannot read its checksum run1\.parquet\.sha256") as info:
        store.read()
    _named(info.value, path)
    folder = path.with_name("run2.parquet")
    folder.mkdir()  # a folder with a run file's name
    sidecar.rmdir()
    _seal(path)
    with pytest.raises(InputFormatError, match="cannot read it") as info:
        store.read()
    _named(info.value, folder)


# ------------------------------------------------------------------ what else lies in a store


def test_temporaries_hidden_files_and_orphans_are_ignored(sealed, tmp_path):
    store, path, good, original = sealed
    folder = path.parent
    junk = {
        ".run2.parquet.3f2a.tmp": good,                  # killed writer, data temporary
        ".run2.parquet.3f2a.tmp.sha256": b"x",           # killed writer, checksum temporary
        ".run3.parquet.ab.tmp.parquet": b"PAR1",         # temporary of the old naming
        "run4.tmp.parquet": b"PAR1",
        ".hidden.parquet": b"",
        "run5.parquet.sha256": _sidecar(path).read_bytes(),  # orphan checksum
        "notes.txt": b"not a run",
    }
    for name, data in junk.items():
        (folder / name).write_bytes(data)
    (tmp_path / ".trash" / "run6.parquet").parent.mkdir()
    (tmp_path / ".trash" / "run6.parquet").write_bytes(b"")
    (tmp_path / "README").write_text("a file beside the task folders")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pd.testing.assert_frame_equal(store.read(), original)
    assert store.files() == [path] and store.tasks() == [TASK]


def _write_run(store, run_id, edit):
    """A run file written by another writer: ``edit`` changes the frame, then it is sealed."""
    frame = pd.DataFrame(_rows(run_id, method="other", values=(0.75,)))
    frame = edit(frame)
    path = store.root / TASK / f"{run_id}.parquet"
    frame.to_parquet(path, index=False)
    _seal(path)
    return path


@pytest.mark.parametrize(("edit", "words"), [
    (lambda f: f.drop(columns=["metric"]), "missing columns ['metric'], unknown columns []"),
    (lambda f: f.assign(extra=1), "missing columns [], unknown columns ['extra']"),
    (lambda f: f.assign(value=["high"]), "a column has the wrong type"),
    (lambda f: f.assign(n=[np.nan]), "a column has the wrong type"),
    (lambda f: f.assign(n=[10.5]), "column n holds float64 values that are not all int64 integers"),
    (lambda f: f.assign(n=np.array([2**63 + 5], dtype=np.uint64)),
     "column n holds uint64 values that are not all int64 integers"),
    (lambda f: f.assign(task="gwas_priors"), "column task holds ['gwas_priors']"),
    (lambda f: f.assign(run_id="run1"), "column run_id holds ['run1']"),
])
def test_a_file_of_another_schema_is_named_and_skippable(store, edit, words):
    original = store.read()
    path = _write_run(store, "run2", edit)
    with pytest.raises(InputFormatError) as info:
        store.read()
    message = _named(info.value, path)
    assert words in message, message
    with pytest.warns(UserWarning, match=f"skipping damaged results file: {path}"):
        kept = store.read(on_damaged="skip")
    pd.testing.assert_frame_equal(kept, original)


def test_files_of_old_and_new_schema_read_together(store):
    # fit/impute seconds came later: a file without them reads with NaN, beside one with them.
    path = _write_run(store, "run2", lambda f: f.drop(columns=["fit_seconds", "impute_seconds"],
                                                       errors="ignore").assign(n=[7.0]))
    table = store.read()
    assert table["run_id"].tolist() == ["run1", "run1", "run2"]
    assert table["n"].dtype == "int64" and table["n"].tolist() == [10, 10, 7]
    assert table.loc[table["run_id"] == "run2", "fit_seconds"].isna().all()
    assert path in store.files()
