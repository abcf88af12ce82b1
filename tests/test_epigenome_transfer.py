"""Leave-one-tissue-out transfer learning with eDICE and its two baselines, on a tiny case."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analysislib.epigenome import transfer
from analysislib.epigenome.tensor import create_signal_dataset
from analysislib.epigenome.transfer import (
    TRANSFER_METHODS,
    fine_tune,
    leave_one_tissue_out,
    pretrain,
    run_transfer_experiment,
    transfer_config,
    transfer_scores,
)
from analysislib.simulate.epigenome import simulate_epigenome

TINY = {"embed_dim": 8, "n_heads": 2, "ffn_dim": 8, "decoder_hidden": 16, "batch_size": 64,
        "epochs": 2, "train_bins": None}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def personal():
    return simulate_epigenome("personal", n_individuals=2, n_cells=3, n_bins=600, seed=1)


@pytest.fixture(scope="module")
def config():
    return transfer_config("quick", ft_epochs=2, **TINY)


def test_presets_follow_the_entex_script():
    cfg = transfer_config("entex")
    assert (cfg.edice.embed_dim, cfg.edice.decoder_hidden, cfg.edice.n_heads,
            cfg.edice.decoder_dropout, cfg.edice.seed, cfg.edice.epochs) == (64, 512, 4, 0.3,
                                                                              43, 20)
    assert (cfg.ft_lr, cfg.ft_epochs, cfg.ft_patience) == (3e-5, 15, 5)
    quick = transfer_config("quick")
    assert quick.ft_lr == pytest.approx(quick.edice.lr / 10)
    assert transfer_config("quick", ft_patience=None).ft_patience is None
    assert transfer_config("paper") == transfer_config("full") == cfg  # the paper's experiment
    with pytest.raises(ValueError, match="unknown eDICE transfer preset 'roadmap'"):
        transfer_config("roadmap")


def test_leave_one_tissue_out_predictions_and_baselines(personal, config):
    run = leave_one_tissue_out(personal, training_individual="ind00", target_individual="ind01",
                               target_tissue="cell001", config=config, device="cpu",
                               progress=False)
    assert set(run.predictions) == set(TRANSFER_METHODS)
    assays = [str(a) for a in personal["assay"].values]
    arcsinh = np.arcsinh(personal["signal"].values.astype(np.float64))  # (ind, cell, assay, bin)
    for method, pred in run.predictions.items():
        assert pred.dims == ("track", "bin") and pred.shape == (5, 600), method
        assert list(pred["assay"].values) == assays and set(pred["cell"].values) == {"cell001"}
    np.testing.assert_allclose(run.truth.values, arcsinh[1, 1], rtol=1e-6)
    # the training individual's own track, and the target individual's mean over other tissues
    np.testing.assert_allclose(run.predictions["training_individual_track"].values,
                               arcsinh[0, 1], rtol=1e-6)
    np.testing.assert_allclose(run.predictions["individual_avg"].values,
                               (arcsinh[1, 0] + arcsinh[1, 2]) / 2, rtol=1e-5, atol=1e-6)
    assert np.isfinite(run.predictions["edice_transfer"].values).all()
    # pre-training at the eDICE rate, fine-tuning at the lower one
    assert [r["lr"] for r in run.pretrain_history] == [config.edice.lr] * 2
    assert [r["lr"] for r in run.finetune_history] == [config.ft_lr] * 2

    scores = transfer_scores(run)
    assert len(scores) == 3 * 5 and set(scores["method"]) == set(TRANSFER_METHODS)
    row = scores[(scores.method == "individual_avg") & (scores.assay == assays[2])].iloc[0]
    expected = (arcsinh[1, 0, 2] + arcsinh[1, 2, 2]) / 2
    assert row["mse"] == pytest.approx(np.mean((expected - arcsinh[1, 1, 2]) ** 2), rel=1e-5)
    assert row["pearson"] == pytest.approx(np.corrcoef(expected, arcsinh[1, 1, 2])[0, 1],
                                           rel=1e-5)


def test_target_tissue_is_never_read_and_pretrained_model_is_kept(personal, config):
    base = pretrain(personal.sel(individual="ind00"), config, device="cpu", progress=False)
    weights = {k: v.clone() for k, v in base.model.state_dict().items()}
    kwargs = {"training_individual": "ind00", "target_individual": "ind01",
              "target_tissue": "cell002", "config": config, "pretrained": base,
              "device": "cpu", "progress": False}
    first = leave_one_tissue_out(personal, **kwargs)
    scrambled = personal.copy(deep=True)
    rng = np.random.default_rng(0)
    scrambled["signal"][1, 2] = rng.exponential(size=(5, 600)).astype(np.float32)
    second = leave_one_tissue_out(scrambled, **kwargs)
    np.testing.assert_array_equal(first.predictions["edice_transfer"].values,
                                  second.predictions["edice_transfer"].values)
    assert not np.allclose(first.truth.values, second.truth.values)
    for key, value in base.model.state_dict().items():  # fine-tuning worked on a copy
        torch.testing.assert_close(value, weights[key], rtol=0, atol=0)


def test_experiment_reuses_pretraining(personal, config, monkeypatch):
    calls = []
    original = transfer.pretrain

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(transfer, "pretrain", counting)
    table = run_transfer_experiment(personal, config=config, pairs=[("ind01", "ind00")],
                                    tissues=["cell000", "cell002"], device="cpu",
                                    progress=False)
    assert len(calls) == 1
    assert len(table) == 2 * 3 * 5
    assert set(table["tissue"]) == {"cell000", "cell002"}
    assert (table["training_individual"] == "ind01").all()


def test_errors(personal, config):
    with pytest.raises(ValueError, match="must differ"):
        leave_one_tissue_out(personal, training_individual="ind00", target_individual="ind00",
                             target_tissue="cell000", config=config)
    with pytest.raises(ValueError, match="tissue 'liver'"):
        leave_one_tissue_out(personal, training_individual="ind00", target_individual="ind01",
                             target_tissue="liver", config=config)
    with pytest.raises(ValueError, match="individual 'ind07'"):
        leave_one_tissue_out(personal, training_individual="ind07", target_individual="ind01",
                             target_tissue="cell000", config=config)
    flat = create_signal_dataset(np.zeros((2, 2, 10), np.float32), cells=["x", "y"],
                                 assays=["p", "q"], scale="arcsinh")
    with pytest.raises(ValueError, match="'individual' dimension"):
        run_transfer_experiment(flat, config=config)
    base = pretrain(personal.sel(individual="ind00"), config, device="cpu", progress=False)
    other = personal.sel(individual="ind01").isel(cell=[0, 1])
    with pytest.raises(ValueError, match="differ from the pre-trained"):
        fine_tune(base, other, config)
