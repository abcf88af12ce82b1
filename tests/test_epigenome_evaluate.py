"""Tests for analysislib.epigenome.evaluate: protocols, refit rules, stored rows, real Roadmap data.

AVG is the method throughout: its predictions are simple enough to recompute with NumPy, so the
stored scores can be checked against an independent calculation.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from analysislib.epigenome.evaluate import (
    TASK,
    EpigenomeEvaluation,
    evaluate_epigenome,
    split_tracks,
)
from analysislib.epigenome.imputer import AverageImputer
from analysislib.epigenome.metrics import COUNT_METRICS, METRICS
from analysislib.epigenome.tensor import create_signal_dataset, observed_tracks
from analysislib.results import COLUMNS, ResultsStore

N_METRICS = len(METRICS) + len(COUNT_METRICS)


@pytest.fixture(scope="module")
def small() -> xr.Dataset:
    """4 cells x 3 assays x 600 bins with shared peaks; E4.m3 unobserved."""
    rng = np.random.default_rng(0)
    base = rng.exponential(0.3, 600)
    base[100:160] += 5.0
    base[400:430] += 3.0
    signal = np.stack([np.stack([base * (1.0 + 0.3 * j) * (0.8 + 0.1 * i)
                                 + rng.exponential(0.2, 600) for j in range(3)])
                       for i in range(4)]).astype(np.float32)
    observed = np.ones((4, 3), dtype=bool)
    observed[3, 2] = False
    return create_signal_dataset(signal, cells=["E1", "E2", "E3", "E4"],
                                 assays=["m1", "m2", "m3"], observed=observed)


class CountingAverage(AverageImputer):
    """AVG under another name (so the harness does not know it needs no refit); logs fits."""

    name = "counting_avg"

    def __init__(self) -> None:
        super().__init__()
        self.fitted_on: list[set[tuple[str, ...]]] = []

    def fit(self, ds: xr.Dataset) -> CountingAverage:
        self.fitted_on.append(set(observed_tracks(ds)))
        return super().fit(ds)


def avg_by_hand(ds: xr.Dataset, cell: str, assay: str) -> np.ndarray:
    arcsinh = np.arcsinh(ds["signal"].astype(np.float64))
    donors = [c for c in ds["cell"].values
              if c != cell and bool(ds["observed"].sel(cell=c, assay=assay))]
    return arcsinh.sel(assay=assay, cell=donors).mean("cell").values


def track_value(result: EpigenomeEvaluation, track: str, metric: str) -> float:
    rows = result.rows
    return rows[(rows.stratum_kind == "track") & (rows.stratum == track)
                & (rows.metric == metric)]["value"].item()


def test_leave_one_out_with_avg_stores_tidy_rows(small: xr.Dataset, tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    result = evaluate_epigenome("avg", small, "leave_one_out", store=store,
                                dataset_label="toy")
    assert result.predictions.sizes["track"] == 11  # every observed track
    assert result.scores["track"].tolist()[:3] == ["E1.m1", "E1.m2", "E1.m3"]
    truth = np.arcsinh(small["signal"].sel(cell="E2", assay="m3").values.astype(np.float64))
    imputed = avg_by_hand(small, "E2", "m3")
    np.testing.assert_allclose(result.predictions.sel(track="E2.m3").values, imputed, rtol=1e-5)
    assert track_value(result, "E2.m3", "pearson") == pytest.approx(
        np.corrcoef(truth, imputed)[0, 1], rel=1e-5)
    assert track_value(result, "E2.m3", "mse") == pytest.approx(
        np.mean((truth - imputed) ** 2), rel=1e-4)
    stored = store.read(TASK)
    assert list(stored.columns) == list(COLUMNS)
    assert len(stored) == N_METRICS * (11 + 3 + 1)
    assert set(stored["stratum_kind"]) == {"track", "assay", "all"}
    assert set(stored["dataset"]) == {"toy"} and set(stored["method"]) == {"avg"}
    assert set(stored["scenario"]) == {"leave_one_out"}
    assert stored["runtime_s"].iloc[0] > 0 and stored["peak_memory_mb"].iloc[0] > 0
    assert json.loads(stored["parameters"].iloc[0])["refit"] is False
    m3 = stored[(stored.stratum_kind == "assay") & (stored.stratum == "m3")
                & (stored.metric == "pearson")]
    assert m3["n"].item() == 3  # E4.m3 is unobserved
    assert m3["value"].item() == pytest.approx(
        result.scores.loc[result.scores.assay == "m3", "pearson"].mean())


def test_leave_one_out_refits_unknown_methods_without_the_target(small: xr.Dataset) -> None:
    imputer = CountingAverage()
    targets = [("E1", "m1"), ("E3", "m2")]
    result = evaluate_epigenome(imputer, small, tracks=targets, write=False)
    assert len(imputer.fitted_on) == 2
    for fitted, target in zip(imputer.fitted_on, targets, strict=True):
        assert target not in fitted and len(fitted) == 10
    assert result.store_path is None
    imputer = CountingAverage()
    evaluate_epigenome(imputer, small, tracks=["E1.m1", "E3.m2"], refit=False, write=False)
    assert len(imputer.fitted_on) == 1 and len(imputer.fitted_on[0]) == 11


def test_reduced_cell_keeps_one_mark(small: xr.Dataset) -> None:
    imputer = CountingAverage()
    result = evaluate_epigenome(imputer, small, "reduced_cell", cells=["E2", "E4"], keep="m1",
                                write=False)
    assert result.scores["track"].tolist() == ["E2.m2", "E2.m3", "E4.m2"]
    assert len(imputer.fitted_on) == 2  # one fit per target cell
    assert ("E2", "m1") in imputer.fitted_on[0]
    assert not {("E2", "m2"), ("E2", "m3")} & imputer.fitted_on[0]
    assert set(result.rows["scenario"]) == {"reduced_cell_keep_m1"}
    # default: keep the cell's first observed assay, every cell
    default = evaluate_epigenome("avg", small, "reduced_cell", write=False)
    assert len(default.scores) == 11 - 4
    assert json.loads(default.rows["parameters"].iloc[0])["keep"]["E1"] == ["m1"]


def test_new_cell_with_a_few_marks(small: xr.Dataset) -> None:
    result = evaluate_epigenome("avg", small, "reduced_cell", cells=["E3"], keep=["m1", "m3"],
                                write=False)
    assert result.scores["track"].tolist() == ["E3.m2"]


def test_holdout_fits_once_on_the_rest(small: xr.Dataset) -> None:
    imputer = CountingAverage()
    result = evaluate_epigenome(imputer, small, "holdout", tracks=["E1.m2", ("E4", "m1")],
                                write=False)
    assert len(imputer.fitted_on) == 1
    assert not {("E1", "m2"), ("E4", "m1")} & imputer.fitted_on[0]
    assert result.scores["track"].tolist() == ["E1.m2", "E4.m1"]
    assert json.loads(result.rows["parameters"].iloc[0])["tracks"] == ["E1.m2", "E4.m1"]


def test_split_tracks_properties(small: xr.Dataset) -> None:
    parts = split_tracks(small, (0.5, 0.2, 0.3), seed=4)
    tracks = set(observed_tracks(small))
    together = parts["train"] + parts["val"] + parts["test"]
    assert sorted(together) == sorted(tracks) and len(together) == len(set(together))
    train = set(parts["train"])
    for cell, assay in parts["val"] + parts["test"]:
        assert any(a == assay and c != cell for c, a in train)
        assert any(c == cell for c, _ in train)
    assert split_tracks(small, (0.5, 0.2, 0.3), seed=4) == parts
    assert any(split_tracks(small, (0.5, 0.2, 0.3), seed=s) != parts for s in range(5, 10))
    with pytest.raises(ValueError, match="fractions"):
        split_tracks(small, (0.5, 0.5, 0.5))


def test_split_protocol_fits_on_train_and_val(small: xr.Dataset) -> None:
    imputer = CountingAverage()
    parts = {"train": [("E1", "m1"), ("E2", "m1"), ("E3", "m2"), ("E1", "m2"), ("E2", "m3")],
             "val": [("E3", "m1")], "test": ["E4.m1", "E2.m2"]}
    result = evaluate_epigenome(imputer, small, "split", split=parts, write=False)
    assert result.scores["track"].tolist() == ["E4.m1", "E2.m2"]
    assert not {("E4", "m1"), ("E2", "m2")} & imputer.fitted_on[0]
    assert ("E3", "m1") in imputer.fitted_on[0]
    params = json.loads(result.rows["parameters"].iloc[0])
    assert (params["n_train"], params["n_val"], params["n_test"]) == (5, 1, 2)
    random = evaluate_epigenome("avg", small, "split", seed=3, write=False)
    assert set(random.rows["scenario"]) == {"split_seed3"}
    assert len(random.scores) == len(split_tracks(small, seed=3)["test"])


def test_bad_requests(small: xr.Dataset) -> None:
    with pytest.raises(ValueError, match="unknown protocol"):
        evaluate_epigenome("avg", small, "cross_validation", write=False)
    with pytest.raises(ValueError, match="give the tracks"):
        evaluate_epigenome("avg", small, "holdout", write=False)
    with pytest.raises(ValueError, match=r"E4\.m3.*not observed"):
        evaluate_epigenome("avg", small, "holdout", tracks=["E4.m3"], write=False)
    with pytest.raises(ValueError, match="no observed"):
        evaluate_epigenome("avg", small, "reduced_cell", cells=["E4"], keep="m3", write=False)
    with pytest.raises(KeyError, match="unknown epigenomic imputer"):
        evaluate_epigenome("nope", small, write=False)


@pytest.mark.slow
def test_real_roadmap_tracks_leave_one_out_with_avg(data_mirror: Path, tmp_path: Path) -> None:
    from analysislib.catalog import load_catalog

    store = ResultsStore(tmp_path)
    window = slice(0, 100_000)
    result = evaluate_epigenome("avg", "roadmap_pilot_arcsinh", "leave_one_out", bins=window,
                                store=store)
    assert len(result.scores) == 20  # 4 cells x 5 marks, each from the other 19
    ds = load_catalog().open("roadmap_pilot_arcsinh").isel(bin=window)
    truth = ds["signal"].sel(cell="E003", assay="H3K4me3").values.astype(np.float64)
    others = ds["signal"].sel(assay="H3K4me3", cell=["E017", "E065", "E116"]).values
    imputed = others.astype(np.float64).mean(axis=0)  # the file values are arcsinh already
    assert track_value(result, "E003.H3K4me3", "pearson") == pytest.approx(
        np.corrcoef(truth, imputed)[0, 1], rel=1e-5)
    stored = store.read(TASK)
    assert set(stored["dataset"]) == {"roadmap_pilot_arcsinh"}
    assert stored["data_checksum"].str.len().eq(64).all()
    assert stored["code_version"].str.startswith("analysislib").all()
    h3k4me3 = stored[(stored.stratum_kind == "assay") & (stored.stratum == "H3K4me3")
                     & (stored.metric == "auprc_peaks")]
    assert h3k4me3["n"].item() == 4
    # the promoter mark is imputed far better than the broad repressive marks (paper Fig. 3a)
    means = result.scores.groupby("assay")["pearson"].mean()
    assert means["H3K4me3"] > means["H3K27me3"] + 0.2
    assert means["H3K4me3"] > means["H3K9me3"] + 0.2
