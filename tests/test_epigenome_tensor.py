"""Tests of the epigenomic signal tensor: constructor, scale helpers, track selection, statistics."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr

from analysislib.epigenome.tensor import (
    create_signal_dataset,
    cross_cell_agreement,
    cross_mark_correlation,
    hide_tracks,
    observed_tracks,
    select_tracks,
    signal_scale,
    stack_tracks,
    to_arcsinh,
    to_neglog10p,
    track_summary,
)
from analysislib.errors import VariableSpecError
from analysislib.variables import validate


def _small(scale="neglog10p", observed=None):
    values = np.arange(2 * 3 * 4, dtype=np.float64).reshape(2, 3, 4) / 4
    return create_signal_dataset(values, cells=["E003", "E017"], assays=["a1", "a2", "a3"],
                                 observed=observed, scale=scale, bin_size=200, chrom="chr21")


def test_constructor_layout():
    ds = _small()
    assert ds["signal"].dims == ("cell", "assay", "bin")
    assert ds["signal"].dtype == np.float32
    assert ds["observed"].dims == ("cell", "assay") and ds["observed"].dtype == bool
    assert ds.attrs == {"scale": "neglog10p", "bin_size": 200}
    assert ds["signal"].attrs["scale"] == "neglog10p"
    np.testing.assert_array_equal(ds["bin"].values, [0, 1, 2, 3])
    np.testing.assert_array_equal(ds["bin_start"].values, [0, 200, 400, 600])
    assert ds["bin_chrom"].values.tolist() == ["chr21"] * 4
    assert ds["cell"].values.tolist() == ["E003", "E017"]
    validate(ds, ["signal", "observed", "bin_start", "bin_chrom"])
    assert float(ds["signal"].sel(cell="E017", assay="a2", bin=3)) == pytest.approx(19 / 4)  # flat index 1*12 + 1*4 + 3


def test_constructor_blanks_unobserved_and_infers_mask():
    observed = np.array([[True, False, True], [True, True, True]])
    ds = _small(observed=observed)
    assert np.isnan(ds["signal"].sel(cell="E003", assay="a2")).all()
    assert np.isfinite(ds["signal"].sel(cell="E003", assay="a3")).all()
    inferred = create_signal_dataset(ds["signal"].values, cells=["E003", "E017"],
                                     assays=["a1", "a2", "a3"])
    np.testing.assert_array_equal(inferred["observed"].values, observed)


def test_constructor_with_individuals_and_explicit_coordinates():
    values = np.ones((2, 1, 1, 3))
    ds = create_signal_dataset(values, individuals=["p1", "p2"], cells=["lung"], assays=["H3K4me3"],
                               bin_start=[100, 125, 0], bin_chrom=["chr1", "chr1", "chr2"])
    assert ds["signal"].dims == ("individual", "cell", "assay", "bin")
    assert ds["observed"].dims == ("individual", "cell", "assay")
    assert ds["bin_chrom"].values.tolist() == ["chr1", "chr1", "chr2"]
    assert observed_tracks(ds) == [("p1", "lung", "H3K4me3"), ("p2", "lung", "H3K4me3")]


def test_constructor_keeps_dask_lazy():
    values = da.from_array(np.ones((1, 2, 10)), chunks=(1, 2, 5))
    ds = create_signal_dataset(values, cells=["c"], assays=["a", "b"],
                               observed=np.array([[True, False]]))
    assert isinstance(ds["signal"].data, da.Array)
    computed = ds["signal"].values
    assert np.isnan(computed[0, 1]).all() and (computed[0, 0] == 1).all()


@pytest.mark.parametrize("kwargs, message", [
    ({"scale": "log"}, "scale must be one of"),
    ({"cells": ["only-one"]}, "1 cell labels"),
    ({"assays": ["x", "x", "y"]}, "not unique"),
    ({"bin_start": [0, 1]}, "bin_start has shape"),
    ({"observed": np.ones((3, 3), bool)}, "observed has shape"),
])
def test_constructor_rejects_bad_arguments(kwargs, message):
    base = {"cells": ["E003", "E017"], "assays": ["a1", "a2", "a3"]}
    with pytest.raises(ValueError, match=message):
        create_signal_dataset(np.zeros((2, 3, 4)), **{**base, **kwargs})


def test_constructor_rejects_wrong_rank():
    with pytest.raises(ValueError, match="3 dimensions"):
        create_signal_dataset(np.zeros((2, 3)), cells=["a", "b"], assays=["x", "y", "z"])


def test_validate_catches_a_broken_signal_dataset():
    ds = _small()
    broken = ds.assign(signal=ds["signal"].astype(int))
    with pytest.raises(VariableSpecError, match="signal"):
        validate(broken, "signal")


def test_arcsinh_and_sinh_are_inverse_and_never_double_transform():
    ds = _small()
    arc = to_arcsinh(ds)
    assert arc.attrs["scale"] == "arcsinh" and arc["signal"].attrs["scale"] == "arcsinh"
    np.testing.assert_allclose(arc["signal"].values, np.arcsinh(ds["signal"].values), rtol=1e-6)
    assert float(arc["signal"][0, 0, 0]) == 0.0  # arcsinh(0) = 0
    # Applying the same conversion again is a no-op, not a second arcsinh.
    xr.testing.assert_identical(to_arcsinh(arc), arc)
    back = to_neglog10p(arc)
    xr.testing.assert_identical(to_neglog10p(back), back)
    np.testing.assert_allclose(back["signal"].values, ds["signal"].values, rtol=1e-5)
    assert back.attrs["scale"] == "neglog10p"
    assert ds.attrs["scale"] == "neglog10p"  # the input is left untouched


def test_scale_helpers_on_a_track_dataarray():
    track = xr.DataArray(np.array([0.0, np.sinh(1.0), np.sinh(2.0)]), dims="bin",
                         attrs={"scale": "neglog10p"})
    arc = to_arcsinh(track)
    np.testing.assert_allclose(arc.values, [0.0, 1.0, 2.0])
    assert signal_scale(arc) == "arcsinh"
    assert to_arcsinh(arc) is arc
    with pytest.raises(ValueError, match="no 'scale' attribute"):
        to_arcsinh(xr.DataArray(np.zeros(3), dims="bin"))


def test_select_and_hide_tracks():
    ds = _small()
    sub = select_tracks(ds, cells=["E017"], assays=["a3", "a1"], bins=slice(1, 3))
    assert sub["assay"].values.tolist() == ["a3", "a1"]
    np.testing.assert_array_equal(sub["bin_start"].values, [200, 400])
    with pytest.raises(KeyError, match="E999"):
        select_tracks(ds, cells=["E999"])
    hidden = hide_tracks(ds, [("E003", "a1"), ("E017", "a3")])
    assert len(observed_tracks(hidden)) == 4
    assert ("E003", "a1") not in observed_tracks(hidden)
    assert np.isnan(hidden["signal"].sel(cell="E017", assay="a3")).all()
    assert hidden["signal"].dtype == np.float32 and hidden["signal"].attrs["scale"] == "neglog10p"
    np.testing.assert_array_equal(hidden["signal"].sel(cell="E017", assay="a1"),
                                  ds["signal"].sel(cell="E017", assay="a1"))
    with pytest.raises(KeyError, match="not in the dataset"):
        hide_tracks(ds, [("E003", "zz")])


def test_stack_tracks_builds_the_full_grid():
    tracks = {("E003", "H3K4me3"): np.array([1.0, 2.0]), ("E017", "H3K9me3"): np.array([3.0, 4.0])}
    ds = stack_tracks(tracks, scale="arcsinh")
    assert ds["cell"].values.tolist() == ["E003", "E017"]
    assert ds["assay"].values.tolist() == ["H3K4me3", "H3K9me3"]
    np.testing.assert_array_equal(ds["observed"].values, [[True, False], [False, True]])
    assert ds.attrs["scale"] == "arcsinh"
    np.testing.assert_array_equal(ds["signal"].sel(cell="E017", assay="H3K9me3"), [3.0, 4.0])
    with pytest.raises(ValueError, match="shape"):
        stack_tracks({("a", "b"): np.zeros(2), ("c", "d"): np.zeros(3)})


def test_track_summary_by_hand():
    # −log10 p values of one track: two bins above 2 out of five.
    p = np.array([0.0, 1.0, 3.0, 5.0, 1.0])
    ds = create_signal_dataset(p[None, None, :], cells=["c"], assays=["a"])
    row = track_summary(ds).iloc[0]
    assert row["cell"] == "c" and row["assay"] == "a"
    assert row["fraction_above"] == pytest.approx(0.4)
    assert row["mean"] == pytest.approx(2.0)
    assert row["median"] == pytest.approx(1.0)
    x = np.arcsinh(p)
    assert row["lag1_autocorrelation"] == pytest.approx(np.corrcoef(x[:-1], x[1:])[0, 1], rel=1e-5)
    # Same answer from the arcsinh version of the data.
    row_arc = track_summary(to_arcsinh(ds)).iloc[0]
    assert row_arc["mean"] == pytest.approx(2.0, rel=1e-5)


def test_cross_mark_correlation_averages_over_cells_where_both_are_observed():
    rng = np.random.default_rng(0)
    base = rng.random((2, 50))
    signal = np.stack([
        np.stack([base[0], 2 * base[0] + 1, -base[0]]),   # cell 1: corr(a,b)=1, corr(a,c)=-1
        np.stack([base[1], -base[1], rng.random(50)]),    # cell 2: corr(a,b)=-1
    ])
    observed = np.array([[True, True, True], [True, True, False]])
    ds = create_signal_dataset(signal, cells=["c1", "c2"], assays=["a", "b", "c"],
                               observed=observed, scale="arcsinh")
    corr = cross_mark_correlation(ds)
    assert corr.loc["a", "b"] == pytest.approx(0.0, abs=1e-6)   # mean of +1 and −1
    assert corr.loc["a", "c"] == pytest.approx(-1.0)              # only cell 1 has c
    assert corr.loc["b", "c"] == pytest.approx(-1.0)
    np.testing.assert_allclose(np.diag(corr.values), 1.0)
    assert (corr.values == corr.values.T).all()


def test_cross_cell_agreement_compares_a_cell_with_the_others_mean():
    rng = np.random.default_rng(1)
    shared = rng.random(400)
    others = [shared + rng.normal(0, s, 400) for s in (0.3, 0.5, 0.8)]
    average_like = 2 * np.mean(others, axis=0)               # exactly twice the others' mean
    unrelated = rng.random(400)
    signal = np.stack([np.stack([average_like, unrelated]), *[np.stack([o, o]) for o in others]])
    observed = np.ones((4, 2), dtype=bool)
    observed[1, 1] = False                                   # only two others have mark b
    ds = create_signal_dataset(signal.astype(np.float32), cells=["new", "c1", "c2", "c3"],
                               assays=["a", "b"], observed=observed, scale="arcsinh")
    table = cross_cell_agreement(ds, "new")
    row = table.loc["a"]
    assert row["cell_r"] == pytest.approx(1.0) and row["cell_slope"] == pytest.approx(2.0)
    # Each other cell type against the mean of the remaining two, by hand.
    expected = [np.corrcoef(others[i], np.mean([others[j] for j in range(3) if j != i], axis=0))[0, 1]
                for i in range(3)]
    assert row["others_r"] == pytest.approx(np.mean(expected), rel=1e-5)
    assert row["others_r"] < row["cell_r"] and row["n_others"] == 3
    assert table.loc["b", "n_others"] == 2 and abs(table.loc["b", "cell_r"]) < 0.2
    # A cell type that is one of the others' sources agrees less with the rest.
    assert cross_cell_agreement(ds, "c3").loc["a", "cell_r"] < 1.0


def test_cross_cell_agreement_refuses_an_unknown_cell_type():
    ds = create_signal_dataset(np.ones((2, 1, 5), dtype=np.float32), cells=["x", "y"], assays=["a"],
                               scale="arcsinh")
    with pytest.raises(ValueError, match="'z' is not in the dataset"):
        cross_cell_agreement(ds, "z")
    assert cross_cell_agreement(ds, "x").empty              # one other cell type: no mean to compare


def test_cross_cell_agreement_is_undefined_for_constant_tracks():
    signal = np.ones((3, 1, 20), dtype=np.float32)
    signal[0, 0] = np.arange(20)
    ds = create_signal_dataset(signal, cells=["x", "y", "z"], assays=["a"], scale="arcsinh")
    row = cross_cell_agreement(ds, "x").loc["a"]
    assert np.isnan(row["cell_r"]) and np.isnan(row["others_r"]) and row["n_others"] == 2
