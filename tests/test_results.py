from __future__ import annotations

import pandas as pd
import pytest

from analysislib.results import COLUMNS, ResultsStore, array_checksum, new_run_id, parameters_json


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
    table = store.read("genotype_imputation")
    assert list(table.columns) == list(COLUMNS)
    by_method = table.set_index("method")
    assert by_method.loc["beagle", "fit_seconds"].tolist() == [1.25, 1.25]
    assert by_method.loc["beagle", "impute_seconds"].tolist() == [0.25, 0.25]
    for method in ("old", "minimac4"):
        assert pd.isna(by_method.loc[method, "fit_seconds"])
        assert pd.isna(by_method.loc[method, "impute_seconds"])
    runs = store.runs().set_index("run_id")
    assert runs.loc["run2", "fit_seconds"] == 1.25 and pd.isna(runs.loc["run1", "impute_seconds"])
    assert table["fit_seconds"].dtype == "float64"
