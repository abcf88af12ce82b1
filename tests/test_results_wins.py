"""Paired wins, best methods and the "first on most metrics" verdict (analysislib.results.summary)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysislib.results.summary import best_methods, leader_verdict, win_percentages


def _rows(values):
    """Store rows from {(data, method, metric): [value per track]}."""
    rows = []
    for (data, method, metric), per_track in values.items():
        for k, value in enumerate(per_track):
            rows.append({"data": data, "method": method, "metric": metric,
                         "stratum_kind": "track", "stratum": f"t{k}", "value": value, "n": 10,
                         "run_id": f"{data}-{method}"})
    return pd.DataFrame(rows)


def test_win_percentages_pair_by_stratum():
    rows = _rows({("real", "edice", "mse"): [0.1, 0.2, 0.3, np.nan],
                  ("real", "avg", "mse"): [0.2, 0.2, 0.1, 0.5],
                  ("real", "edice", "pearson"): [0.9, 0.5, 0.7, 0.8],
                  ("real", "avg", "pearson"): [0.8, 0.6, 0.6, 0.7],
                  ("sim", "edice", "mse"): [0.1],
                  ("sim", "avg", "mse"): [0.3]})
    wins = win_percentages(rows, "edice", ["avg"], metrics=["mse", "pearson"], by=["data"])
    table = wins.set_index(["data", "metric"])
    # mse: lower wins; the tie and the track without an eDICE value do not count
    assert table.loc[("real", "mse"), ["strata", "wins"]].tolist() == [3, 1]
    assert table.loc[("real", "mse"), "win_pct"] == pytest.approx(100 / 3)
    assert table.loc[("real", "pearson"), ["strata", "wins", "win_pct"]].tolist() == [4, 3, 75.0]
    assert table.loc[("sim", "mse"), "win_pct"] == 100.0
    assert np.isnan(table.loc[("sim", "pearson"), "win_pct"])  # nothing to pair
    assert list(wins.columns) == ["data", "metric", "baseline", "strata", "wins", "win_pct"]
    ungrouped = win_percentages(rows[rows.data == "real"], "edice", ["avg"], metrics=["pearson"])
    assert ungrouped[["metric", "wins"]].values.tolist() == [["pearson", 3]]


def test_best_methods_and_the_leader_verdict():
    means = pd.DataFrame({"mse": [0.1, 0.2, 0.3], "pearson": [0.5, 0.9, 0.7],
                          "auprc": [0.6, 0.4, 0.5]},
                         index=pd.Index(["edice", "avg", "predictd"], name="method"))
    assert best_methods(means).iloc[0].tolist() == ["edice", "avg", "edice"]
    grouped = pd.concat({"real": means, "sim": means.assign(mse=[0.3, 0.2, 0.1])},
                        names=["data"])
    best = best_methods(grouped)
    assert best.loc["sim"].tolist() == ["predictd", "avg", "edice"]
    text = leader_verdict(means, "edice", name="eDICE", labels={"mse": "GW MSE"}, title="real")
    assert text.splitlines() == [
        ("real: eDICE first on 2 of 3 metrics (GW MSE, auprc); the paper's 'first on most "
         "metrics' is reproduced."),
        "  GW MSE: eDICE 0.100, ahead of 2 of 2 baselines",
        "  pearson: eDICE 0.500, ahead of 0 of 2 baselines",
        "  auprc: eDICE 0.600, ahead of 2 of 2 baselines"]
    behind = leader_verdict(means, "avg")
    assert behind.startswith("avg first on 1 of 3 metrics (pearson);") and "NOT reproduced" in behind
