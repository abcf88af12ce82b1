"""The epigenomic imputer interface, its registry and the AVG baseline."""

from __future__ import annotations

import numpy as np
import pytest

from analysislib.epigenome.imputer import (
    EPIGENOME_IMPUTERS,
    AverageImputer,
    EpigenomeImputer,
    get_epigenome_imputer,
    signal_floor,
)
from analysislib.epigenome.tensor import create_signal_dataset, hide_tracks


def small_dataset():
    # 3 cells x 2 assays x 4 bins on the arcsinh scale
    signal = np.arange(24, dtype=np.float32).reshape(3, 2, 4) / 10
    return create_signal_dataset(signal, cells=["c1", "c2", "c3"], assays=["a1", "a2"],
                                 scale="arcsinh")


def test_avg_is_the_mean_over_other_cells_where_observed():
    ds = hide_tracks(small_dataset(), [("c2", "a1")])
    imputer = AverageImputer().fit(ds)
    pred = imputer.predict([("c1", "a1"), ("c2", "a1")])
    signal = small_dataset()["signal"].values
    # c1.a1 from c3 only (c2.a1 hidden); c2.a1 from c1 and c3
    np.testing.assert_allclose(pred.sel(track="c1.a1").values, signal[2, 0])
    np.testing.assert_allclose(pred.sel(track="c2.a1").values, (signal[0, 0] + signal[2, 0]) / 2,
                               rtol=1e-6)
    assert pred.dims == ("track", "bin") and pred.attrs["scale"] == "arcsinh"
    assert list(pred["cell"].values) == ["c1", "c2"] and list(pred["assay"].values) == ["a1", "a1"]


def test_avg_never_reads_the_target_itself():
    ds = small_dataset()
    pred = AverageImputer().fit(ds).predict([("c1", "a2")])
    signal = ds["signal"].values
    np.testing.assert_allclose(pred.values[0], (signal[1, 1] + signal[2, 1]) / 2, rtol=1e-6)


def test_neglog10p_input_is_converted_to_arcsinh():
    raw = create_signal_dataset(np.full((2, 1, 3), 10.0), cells=["x", "y"], assays=["a"])
    pred = AverageImputer().fit(raw).predict([("x", "a")])
    np.testing.assert_allclose(pred.values, np.arcsinh(10.0), rtol=1e-6)


def test_errors_name_the_track():
    ds = hide_tracks(small_dataset(), [("c2", "a2"), ("c3", "a2")])
    with pytest.raises(ValueError, match=r"c1\.a2"):
        AverageImputer().fit(ds).predict([("c1", "a2")])
    with pytest.raises(ValueError, match=r"c9\.a1"):
        AverageImputer().fit(ds).predict([("c9", "a1")])
    with pytest.raises(RuntimeError, match="fit"):
        AverageImputer().predict([("c1", "a1")])


def test_registry_names_and_unknown_name():
    assert {"avg", "edice", "predictd", "avocado", "chromimpute"} <= set(EPIGENOME_IMPUTERS)
    assert isinstance(get_epigenome_imputer("avg"), AverageImputer)
    with pytest.raises(KeyError, match="registered: avg"):
        get_epigenome_imputer("nope")


class _Negative(EpigenomeImputer):
    """Returns fixed values, some negative, to exercise the base-class clamp."""

    name = "negative"

    def fit(self, ds):
        self.training_data = ds
        return self

    def _predict(self, observed, targets):
        n = observed.sizes["bin"]
        return np.tile(np.linspace(-2.0, 2.0, n, dtype=np.float32), (len(targets), 1))


def test_predictions_never_fall_below_the_signal_floor():
    ds = small_dataset()  # arcsinh values 0 .. 2.3, all >= 0
    assert signal_floor(ds) == 0.0
    pred = _Negative().fit(ds).predict([("c1", "a1"), ("c2", "a2")]).values
    assert (pred >= 0).all()
    np.testing.assert_allclose(pred[0], np.clip(np.linspace(-2, 2, 4), 0, None), rtol=1e-6)
    # a signed synthetic dataset keeps its own range: the floor is its smallest observed value
    signed = create_signal_dataset(small_dataset()["signal"].values - 1.0,
                                   cells=["c1", "c2", "c3"], assays=["a1", "a2"],
                                   scale="arcsinh")
    assert signal_floor(signed) == pytest.approx(-1.0)
    assert _Negative().fit(signed).predict([("c1", "a1")]).values.min() == pytest.approx(-1.0)
    # unobserved (hidden) values never set the floor
    hidden = hide_tracks(signed, [("c1", "a1")])
    assert signal_floor(hidden) == pytest.approx(float(signed["signal"].values[0, 1].min()))
