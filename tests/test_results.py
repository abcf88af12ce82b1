from __future__ import annotations

import re
import warnings

import pandas as pd
import pytest

from analysislib.errors import InputFormatError
from analysislib.results import (
    CHECKSUM_SUFFIX,
    COLUMNS,
    ResultsStore,
    UnverifiedResultsWarning,
    array_checksum,
    new_run_id,
    parameters_json,
)


def _rows(run_id, method="beagle", values=(0.9, 0.8)):
    base = {"run_id": run_id, "timestamp": "2026-11-21T00:00:00Z", "task": "genotype_imputation",
            "dataset": "d", "scenario": "s", "method": method, "metric": "r2", "stratum_kind": "maf_bin",
            "runtime_s": 1.5, "peak_memory_mb": 10.0, "parameters": parameters_json({"threads": 2}),
            "data_checksum": "abc", "code_version": "test"}
    return [{**base, "stratum": f"bin{i}", "value": v, "n": 10} for i, v in enumerate(values)]


def test_append_then_read_round_trips_with_schema(tmp_path):
    store = ResultsStore(tmp_path)
    store.append(_rows("run1"))
    store.append(_rows("run2", method="minimac4", values=(0.7,)))
    table = store.read("genotype_imputation")
    assert list(table.columns) == list(COLUMNS)
    assert len(table) == 3
    assert store.read(method="minimac4")["value"].tolist() == [0.7]
    assert store.read(method=["beagle", "minimac4"], stratum="bin0")["value"].tolist() == [0.9, 0.7]
    assert store.runs()["run_id"].tolist() == ["run1", "run2"]
    assert store.tasks() == ["genotype_imputation"]
    assert ResultsStore(tmp_path / "absent").tasks() == []


def test_empty_store_reads_empty_table_with_schema(tmp_path):
    table = ResultsStore(tmp_path / "none").read()
    assert table.empty and list(table.columns) == list(COLUMNS)


def test_append_rejects_bad_rows_and_leaves_nothing(tmp_path):
    store = ResultsStore(tmp_path)
    bad = pd.DataFrame(_rows("run1")).drop(columns="value")
    with pytest.raises(ValueError, match=r"missing columns \['value'\]"):
        store.append(bad)
    mixed = _rows("run1") + _rows("run2")
    with pytest.raises(ValueError, match="one run_id"):
        store.append(mixed)
    assert not list(tmp_path.rglob("*.parquet"))
    store.append(_rows("run1"))
    with pytest.raises(FileExistsError):
        store.append(_rows("run1"))


def test_run_ids_are_unique_and_checksums_stable():
    assert len({new_run_id() for _ in range(50)}) == 50
    assert array_checksum([1, 2, 3]) == array_checksum([1, 2, 3])
    assert array_checksum([1, 2, 3]) != array_checksum([1, 2, 4])
    assert parameters_json({"b": 1, "a": [1, 2]}) == '{"a": [1, 2], "b": 1}'


def test_latest_keeps_the_newest_run_per_experiment(tmp_path):
    store = ResultsStore(tmp_path)
    store.append(_rows("20260101T000000-a", values=(0.1,)))
    store.append(_rows("20260102T000000-b", values=(0.2,)))
    store.append(_rows("20260101T120000-c", method="minimac4", values=(0.3,)))
    latest = store.read(latest=True)
    assert sorted(latest["value"].tolist()) == [0.2, 0.3]
    assert len(store.read()) == 3


def test_fit_and_impute_seconds_are_stored_and_old_rows_read_as_nan(tmp_path):
    store = ResultsStore(tmp_path)
    timed = [{**row, "fit_seconds": 1.25, "impute_seconds": 0.25} for row in _rows("run2")]
    store.append(timed)
    store.append(_rows("run3", method="minimac4", values=(0.7,)))  # optional columns left out
    # a file written before the columns existed (the old schema, straight to parquet)
    old = pd.DataFrame(_rows("run1", method="old", values=(0.5,)))
    assert "fit_seconds" not in old.columns
    old.to_parquet(tmp_path / "genotype_imputation" / "run1.parquet", index=False)
    with pytest.warns(UnverifiedResultsWarning, match="1 results file"):
        table = store.read("genotype_imputation")
    assert list(table.columns) == list(COLUMNS)
    by_method = table.set_index("method")
    assert by_method.loc["beagle", "fit_seconds"].tolist() == [1.25, 1.25]
    assert by_method.loc["beagle", "impute_seconds"].tolist() == [0.25, 0.25]
    for method in ("old", "minimac4"):
        assert pd.isna(by_method.loc[method, "fit_seconds"])
        assert pd.isna(by_method.loc[method, "impute_seconds"])
    with pytest.warns(UnverifiedResultsWarning):
        runs = store.runs().set_index("run_id")
    assert runs.loc["run2", "fit_seconds"] == 1.25 and pd.isna(runs.loc["run1", "impute_seconds"])
    assert table["fit_seconds"].dtype == "float64"


# ----------------------------------------------------------------------------- integrity


def test_reader_never_matches_a_temporary_of_a_killed_writer(tmp_path, monkeypatch):
    from analysislib.results import store as results

    store = ResultsStore(tmp_path)
    store.append(_rows("run1"))
    folder = tmp_path / "genotype_imputation"
    # What a writer of the old naming killed mid-append left behind (issue repro).
    (folder / ".x.parquet.ab.tmp.parquet").write_bytes(b"PAR1")
    # A writer killed now: read the store while the temporaries exist, before any rename.
    seen = {}
    write_checksum = results._write_checksum

    def read_mid_append(data_path, sidecar, name):
        write_checksum(data_path, sidecar, name)
        seen["temporaries"] = sorted(p.name for p in folder.iterdir() if p.name.startswith("."))
        seen["rows"] = len(store.read())

    monkeypatch.setattr(results, "_write_checksum", read_mid_append)
    store.append(_rows("run2"))
    assert seen["rows"] == 2  # run1 only: neither temporary was read
    temporaries = [n for n in seen["temporaries"] if n.startswith(".run2.parquet.")]
    assert len(temporaries) == 2 and not any(n.endswith(".parquet") for n in temporaries)
    assert len(store.read()) == 4 and store.tasks() == ["genotype_imputation"]
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == [
        "run1.parquet", f"run1.parquet{CHECKSUM_SUFFIX}", "run2.parquet", f"run2.parquet{CHECKSUM_SUFFIX}"]


def test_checksum_file_is_sha256sum_format_and_an_orphan_is_ignored(tmp_path):
    import hashlib

    store = ResultsStore(tmp_path)
    path = store.append(_rows("run1"))
    sidecar = path.with_name(path.name + CHECKSUM_SUFFIX)
    assert sidecar.read_text() == f"{hashlib.sha256(path.read_bytes()).hexdigest()}  run1.parquet\n"
    # Killed between the two renames: the checksum is in place, its parquet is not.
    sidecar.with_name("run0.parquet" + CHECKSUM_SUFFIX).write_text(sidecar.read_text())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(store.read()) == 2


def _flipped_reads(store, flipped, named, original, masks=None):
    """Flip each byte of ``flipped``: every read must raise naming ``named`` or return ``original``.

    Byte ``i`` gets bit ``i % 8`` flipped, or each XOR mask of ``masks`` in turn.
    """
    data = flipped.read_bytes()
    outcomes = {"raised": 0, "identical": 0}
    for i in range(len(data)):
        for mask in masks or [1 << (i % 8)]:
            flipped.write_bytes(data[:i] + bytes([data[i] ^ mask]) + data[i + 1:])
            try:
                table = store.read()
            except InputFormatError as err:
                assert str(err).startswith(f"{named}: damaged results file"), str(err)
                outcomes["raised"] += 1
                continue
            pd.testing.assert_frame_equal(table, original)
            outcomes["identical"] += 1
    flipped.write_bytes(data)
    return outcomes


def test_every_single_byte_flip_raises_naming_the_file_or_reads_identical(tmp_path):
    store = ResultsStore(tmp_path)
    path = store.append(_rows("run1", values=(0.5,)))
    original = store.read()
    outcomes = _flipped_reads(store, path, path, original)
    assert outcomes == {"raised": path.stat().st_size, "identical": 0}
    sidecar = path.with_name(path.name + CHECKSUM_SUFFIX)
    masks = (0x01, 0x02, 0x20, 0x80, 0xFF)
    outcomes = _flipped_reads(store, sidecar, path, original, masks)
    # Only changing a hex letter's case keeps the record (0x20 on a-f); all else raises.
    assert outcomes["raised"] + outcomes["identical"] == len(masks) * sidecar.stat().st_size
    assert outcomes["identical"] < 64
    pd.testing.assert_frame_equal(store.read(), original)


def test_damaged_file_is_skipped_with_a_warning_naming_it_when_asked(tmp_path):
    store = ResultsStore(tmp_path)
    path = store.append(_rows("run1", values=(0.5,)))
    store.append(_rows("run2", method="minimac4", values=(0.7,)))
    other = store.read(method="minimac4")
    data = path.read_bytes()
    for i in range(0, len(data), 101):
        path.write_bytes(data[:i] + bytes([data[i] ^ 0x10]) + data[i + 1:])
        with pytest.warns(UserWarning, match=re.escape(f"skipping damaged results file: {path}: damaged")):
            kept = store.read(on_damaged="skip")
        pd.testing.assert_frame_equal(kept, other)


@pytest.mark.parametrize(
    ("damage", "message"),
    [(lambda p: p.write_bytes(b"PAR1"), "differs from"),
     (lambda p: p.write_bytes(b""), "differs from"),
     (lambda p: p.with_name(p.name + CHECKSUM_SUFFIX).write_text("nonsense\n"), "malformed")],
)
def test_damaged_file_is_named_in_one_line(tmp_path, damage, message):
    store = ResultsStore(tmp_path)
    path = store.append(_rows("run1"))
    damage(path)
    with pytest.raises(InputFormatError, match=message) as info:
        store.read()
    assert str(info.value).startswith(f"{path}: damaged results file") and "\n" not in str(info.value)
    with pytest.warns(UserWarning, match="skipping damaged results file"):
        assert store.read(on_damaged="skip").empty
    with pytest.raises(ValueError, match="on_damaged"):
        store.read(on_damaged="ignore")


def test_old_files_without_checksum_read_with_one_warning_until_checksummed(tmp_path):
    store = ResultsStore(tmp_path)
    folder = tmp_path / "genotype_imputation"
    folder.mkdir()
    for run in ("run1", "run2"):
        pd.DataFrame(_rows(run)).to_parquet(folder / f"{run}.parquet", index=False)
    with pytest.warns(UnverifiedResultsWarning) as caught:
        assert len(store.read()) == 4
    assert len(caught) == 1 and "2 results file(s)" in str(caught[0].message)
    # Schema checks still apply: a legacy file whose run id changed is refused by name.
    bad = pd.DataFrame(_rows("runX"))
    bad.to_parquet(folder / "run3.parquet", index=False)
    with pytest.raises(InputFormatError, match=r"run3\.parquet: damaged results file: column run_id"):
        store.read()
    with pytest.raises(InputFormatError, match=r"run3\.parquet"):
        store.add_checksums()
    (folder / "run3.parquet").unlink()
    assert [p.name for p in store.add_checksums()] == [
        f"run1.parquet{CHECKSUM_SUFFIX}", f"run2.parquet{CHECKSUM_SUFFIX}"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(store.read()) == 4


# ----------------------------------------------------------------------------- provenance, summaries


def test_run_stamp_gives_every_column_but_the_scores_and_round_trips(tmp_path):
    from analysislib.results import run_stamp

    stamp = run_stamp(task="genotype_imputation", dataset="d", scenario="s", method="beagle",
                      parameters={"threads": 2}, data_checksum="abc", runtime_s=3.0, fit_seconds=1.0,
                      impute_seconds=2.0, peak_memory_mb=12.5)
    assert set(COLUMNS) - set(stamp) == {"metric", "stratum_kind", "stratum", "value", "n"}
    assert re.fullmatch(r"\d{8}T\d{6}-[0-9a-f]{8}", stamp["run_id"])
    assert stamp["parameters"] == parameters_json({"threads": 2})
    assert stamp["code_version"].startswith("analysislib ")
    ResultsStore(tmp_path).append([{**stamp, "metric": "r2", "stratum_kind": "all", "stratum": "all",
                                    "value": 0.5, "n": 3}])
    stored = ResultsStore(tmp_path).read().iloc[0]
    assert (stored["fit_seconds"], stored["impute_seconds"], stored["peak_memory_mb"]) == (1.0, 2.0, 12.5)
    # not measured: NaN; a run id can be given
    partial = run_stamp(task="t", dataset="d", scenario="s", method="m", parameters={}, data_checksum="x",
                        runtime_s=1, run_id="given")
    assert partial["run_id"] == "given" and pd.isna(partial["fit_seconds"])


def test_peak_memory_is_this_process_resident_size_in_mib():
    import numpy as np

    from analysislib.results import peak_memory_mb

    before = peak_memory_mb()
    assert 10 < before < 100_000
    block = np.ones(int(before + 64) * 2**20 // 8)  # more than the peak so far, touched
    after = peak_memory_mb()
    del block
    assert after - before > 56, (before, after)


def test_summaries_and_provenance_import_neither_plotting_nor_pandas_needlessly():
    import subprocess
    import sys

    code = ("import sys; import analysislib.results as r; r.array_checksum(b'x'); "
            "assert 'pandas' not in sys.modules, 'provenance imported pandas'; "
            "r.win_counts; bad = {'panel', 'holoviews', 'bokeh', 'matplotlib'} & set(sys.modules); "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_win_counts_from_the_results_store_without_the_dashboard(tmp_path):
    from analysislib.results import compare_methods, summarise, win_counts

    store = ResultsStore(tmp_path)
    store.append(_rows("run1", method="dae", values=(0.9, 0.5, 0.7)))
    store.append(_rows("run2", method="beagle", values=(0.8, 0.6, 0.7)))
    rows = store.read()
    pairs = compare_methods(rows, "r2", "maf_bin", "dae", "beagle")
    assert pairs["stratum"].tolist() == ["bin0", "bin1", "bin2"]
    assert win_counts(pairs, "r2", "dae", "beagle") == {"dae": 1, "beagle": 1, "ties": 1}
    table = summarise(rows, "r2", "maf_bin")
    assert table.loc[table.method == "dae", "value"].tolist() == [0.9, 0.5, 0.7]


def test_every_summary_and_store_name_is_importable_from_results():
    from analysislib import results
    from analysislib.results import store, summary

    assert set(summary.__all__) <= set(results.__all__)
    assert all(getattr(results, name) is getattr(summary, name) for name in summary.__all__)
    assert {"ResultsStore", "COLUMNS"} <= set(results.__all__) and results.ResultsStore is store.ResultsStore
