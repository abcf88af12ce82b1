"""Individual-specific peak scores of a transfer run (eDICE Fig. 6c–d) and the experiment's hook."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from analysislib.epigenome import transfer
from analysislib.epigenome.occupancy import individual_specific_auprc, individual_specific_regions
from analysislib.epigenome.peaks import call_peaks
from analysislib.epigenome.transfer import (
    TRACK_KEYS,
    TransferRun,
    individual_specific_scores,
    run_transfer_experiment,
)
from analysislib.simulate.epigenome import simulate_epigenome


@pytest.fixture(scope="module")
def personal():
    return simulate_epigenome("personal", n_individuals=2, n_cells=3, n_bins=4000, seed=2)


def _run(ds, training="ind00", target="ind01", tissue="cell001"):
    """A hand-made run: eDICE 'predicts' the measured track plus noise, the baselines copy."""
    rng = np.random.default_rng(0)
    assays = [str(a) for a in ds["assay"].values]
    truth = np.arcsinh(ds["signal"].sel(individual=target, cell=tissue).values.astype(np.float64))
    copy = np.arcsinh(ds["signal"].sel(individual=training, cell=tissue).values.astype(np.float64))

    def array(values):
        return xr.DataArray(values, dims=("track", "bin"),
                            coords={"track": [f"{tissue}.{a}" for a in assays],
                                    "assay": ("track", assays)})

    predictions = {"edice_transfer": array(truth + rng.normal(0, 0.3, truth.shape)),
                   "training_individual_track": array(copy)}
    return TransferRun(training, target, tissue, array(truth), predictions)


def test_individual_specific_scores_match_the_occupancy_functions(personal):
    run = _run(personal)
    table = individual_specific_scores(run, personal, peak_options={"min_length": 0})
    assays = [str(a) for a in personal["assay"].values]
    assert len(table) == len(assays) * 3  # two methods and the positive-fraction baseline
    assert set(table["method"]) == {"edice_transfer", "training_individual_track",
                                    "positive_fraction"}
    assert table["n_positive"].max() > 0  # the individuals differ somewhere
    assay = assays[0]

    def peaks(person):
        track = personal["signal"].sel(individual=person, cell="cell001", assay=assay)
        return call_peaks(track.assign_attrs(scale=personal.attrs["scale"]), min_length=0)

    regions = individual_specific_regions(peaks("ind01"), peaks("ind00"),
                                          personal["bin_start"].values, 25,
                                          bin_chrom=personal["bin_chrom"].values)
    row = table[(table.assay == assay) & (table.method == "edice_transfer")].iloc[0]
    expected = individual_specific_auprc(regions, run.predictions["edice_transfer"].values[0])
    assert row["auprc"] == pytest.approx(expected["auprc"], nan_ok=True)
    assert row["n_evaluated"] == expected["n_evaluated"]
    base = table[(table.assay == assay) & (table.method == "positive_fraction")].iloc[0]
    assert base["auprc"] == pytest.approx(regions.positive_fraction, nan_ok=True)
    assert base["n_positive"] == regions.n_positive
    changed = (personal["individual_peak"] != 0).any("individual").values
    assert base["genome_share"] == pytest.approx(changed[regions.evaluated].mean())
    # the truth shares describe the track, so every method's row carries the same ones
    shares = table[table.assay == assay][["planted_share", "genome_share"]]
    assert (shares.nunique(dropna=False) == 1).all()
    # without the simulator's truth the shares are left out
    plain = individual_specific_scores(run, personal.drop_vars("individual_peak"))
    assert "planted_share" not in plain.columns


def test_the_experiment_merges_extra_scores_by_track(personal, monkeypatch):
    run = _run(personal)
    monkeypatch.setattr(transfer, "pretrain", lambda *args, **kwargs: None)
    monkeypatch.setattr(transfer, "leave_one_tissue_out", lambda *args, **kwargs: run)

    def extra(got):
        rows = transfer.transfer_scores(got)[list(TRACK_KEYS)].assign(extra=1.0)
        more = rows.iloc[:1].assign(method="positive_fraction", extra=2.0)
        return pd.concat([rows.iloc[::-1], more], ignore_index=True)

    table = run_transfer_experiment(personal, pairs=[("ind00", "ind01")], tissues=["cell001"],
                                    extra_scores=extra)
    plain = run_transfer_experiment(personal, pairs=[("ind00", "ind01")], tissues=["cell001"])
    assert len(table) == len(plain) + 1
    pd.testing.assert_frame_equal(table.iloc[:len(plain)][plain.columns].astype(plain.dtypes),
                                  plain)  # the scores keep their order
    assert (table["extra"].iloc[:len(plain)] == 1.0).all()
    last = table.iloc[-1]
    assert last["method"] == "positive_fraction" and last["extra"] == 2.0
    assert np.isnan(last["mse"])
