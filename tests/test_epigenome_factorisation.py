"""PREDICTD- and Avocado-style factorisation baselines: formulas, fits, determinism, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analysislib.epigenome.factorisation import (
    AvocadoConfig,
    AvocadoImputer,
    AvocadoModel,
    PredictdImputer,
    PredictdModel,
    avocado_config,
    predictd_config,
    ridge_genome_factors,
)
from analysislib.epigenome.imputer import AverageImputer, get_epigenome_imputer
from analysislib.epigenome.tensor import create_signal_dataset, hide_tracks

HELD_OUT = [("c1", "a2"), ("c4", "a0"), ("c2", "a3")]
PREDICTD_FAST = {"n_factors": 4, "training_fraction": 1.0, "batch_size": 256, "epochs": 20,
                 "lr": 0.02}
AVOCADO_FAST = {"batch_size": 128, "epochs": 40, "lr": 3e-3, "genome_epochs": 15}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def planted_dataset(n_cells=6, n_assays=4, n_bins=800, rank=2, seed=0):
    rng = np.random.default_rng(seed)
    signal = np.einsum("cf,af,gf->cag", rng.normal(size=(n_cells, rank)),
                       rng.normal(size=(n_assays, rank)), rng.normal(size=(n_bins, rank)))
    signal += 0.05 * rng.normal(size=signal.shape)
    return create_signal_dataset(signal.astype(np.float32),
                                 cells=[f"c{i}" for i in range(n_cells)],
                                 assays=[f"a{j}" for j in range(n_assays)], scale="arcsinh")


def _mse(pred, ds, tracks):
    truth = np.stack([ds["signal"].sel(cell=c, assay=a).values for c, a in tracks])
    return float(np.mean((pred - truth) ** 2))


# --------------------------------------------------------------------------- PREDICTD


def test_predictd_formula_and_bias_initialisation():
    torch.manual_seed(0)
    model = PredictdModel(3, 2, 5, 4)
    rng = np.random.default_rng(0)
    values = rng.normal(size=(5, 3, 2)).astype(np.float32)
    mask = np.array([[1, 1], [1, 0], [0, 1]], dtype=bool)
    model.init_biases(values, mask)
    obs = np.where(mask, values, np.nan)
    mean = np.nanmean(obs)
    assert float(model.mean) == pytest.approx(mean, rel=1e-6)
    np.testing.assert_allclose(model.cell_bias.detach().numpy(),
                               np.nanmean(obs, axis=(0, 2)) - mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.assay_bias.detach().numpy(),
                               np.nanmean(obs, axis=(0, 1)) - mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.genome_bias.detach().numpy(),
                               np.nanmean(obs, axis=(1, 2)) - mean, rtol=1e-5, atol=1e-6)
    assert model.cell.abs().max() <= 0.33 and model.genome.abs().max() <= 0.33
    g, c, a = torch.tensor([4, 0]), torch.tensor([2, 1]), torch.tensor([1, 0])
    p = {k: v.detach().numpy() for k, v in model.named_parameters()}
    expected = [(p["cell"][ci] * p["assay"][ai] * p["genome"][gi]).sum() + p["cell_bias"][ci]
                + p["assay_bias"][ai] + p["genome_bias"][gi] + mean
                for gi, ci, ai in zip([4, 0], [2, 1], [1, 0], strict=True)]
    np.testing.assert_allclose(model(g, c, a).detach().numpy(), expected, rtol=1e-5)


def test_ridge_refit_matches_lstsq_with_augmented_rows():
    rng = np.random.default_rng(1)
    design = rng.normal(size=(7, 3))
    residual = rng.normal(size=(4, 7))
    factors, bias = ridge_genome_factors(residual, design, 2.9)
    # reference: ridge on [G, b] with the penalty only on G, by augmented least squares
    x = np.hstack([design, np.ones((7, 1))])
    aug = np.vstack([x, np.hstack([np.sqrt(2.9) * np.eye(3), np.zeros((3, 1))])])
    for g in range(4):
        sol = np.linalg.lstsq(aug, np.concatenate([residual[g], np.zeros(3)]), rcond=None)[0]
        np.testing.assert_allclose(factors[g], sol[:3], rtol=1e-8, atol=1e-10)
        assert bias[g] == pytest.approx(sol[3], rel=1e-8)
    with pytest.raises(ValueError, match="at least one observed"):
        ridge_genome_factors(np.zeros((2, 0)), np.zeros((0, 3)), 2.9)


def test_predictd_presets():
    paper = predictd_config("paper")
    assert (paper.n_factors, paper.lr, paper.rc, paper.ra, paper.ri, paper.ri2,
            paper.training_fraction) == (100, 0.005, 3.66, 1.23e-7, 1.23e-5, 2.9, 0.01)
    with pytest.raises(ValueError, match="unknown PREDICTD setting"):
        predictd_config("quick", factors=3)


def test_predictd_fits_planted_tensor_much_better_than_avg():
    ds = planted_dataset()
    obs = hide_tracks(ds, HELD_OUT)
    imputer = PredictdImputer("quick", device="cpu", progress=False, **PREDICTD_FAST).fit(obs)
    pred = imputer.predict(HELD_OUT).values
    avg = AverageImputer().fit(obs).predict(HELD_OUT).values
    assert _mse(pred, ds, HELD_OUT) < 0.25 * _mse(avg, ds, HELD_OUT)
    # the genome factors are refitted per bin, so unseen bins are predicted as well as seen ones
    half = imputer.predict(HELD_OUT, observed=obs.isel(bin=slice(400, 800))).values
    np.testing.assert_allclose(half, pred[:, 400:], rtol=1e-5, atol=1e-5)
    imputer.chunk_bins = 33
    np.testing.assert_allclose(imputer.predict(HELD_OUT).values, pred, rtol=1e-5, atol=1e-5)


def test_predictd_is_deterministic_given_a_seed():
    obs = hide_tracks(planted_dataset(n_bins=200), HELD_OUT)
    settings = {**PREDICTD_FAST, "epochs": 3}
    a = PredictdImputer("quick", device="cpu", progress=False, **settings).fit(obs)
    b = PredictdImputer("quick", device="cpu", progress=False, **settings).fit(obs)
    c = PredictdImputer("quick", device="cpu", progress=False, seed=4, **settings).fit(obs)
    np.testing.assert_array_equal(a.predict(HELD_OUT).values, b.predict(HELD_OUT).values)
    assert not np.allclose(a.predict(HELD_OUT).values, c.predict(HELD_OUT).values)


# --------------------------------------------------------------------------- Avocado


def test_avocado_architecture_and_parameter_count():
    cfg = avocado_config("paper")
    assert (cfg.n_celltype_factors, cfg.n_assay_factors, cfg.n_25bp_factors,
            cfg.n_250bp_factors, cfg.n_5kbp_factors, cfg.n_layers, cfg.n_nodes) == (
        32, 256, 25, 40, 45, 2, 2048)
    model = AvocadoModel(5, 5, 1_126_469, cfg)
    n_params = sum(p.numel() for p in model.parameters())
    genome = 1_126_469 * 25 + (1_126_469 // 10 + 1) * 40 + (1_126_469 // 200 + 1) * 45
    dense = (398 * 2048 + 2048) + (2048 * 2048 + 2048) + 2049
    assert n_params == 5 * 32 + 5 * 256 + genome + dense
    assert 37e6 < n_params < 39e6  # notes §2.1: about 37.9 M on the pilot regions
    # bins 0..9 share the 250 bp embedding, bins 0..199 the 5 kbp one
    small = AvocadoModel(2, 2, 400, avocado_config("quick")).eval()
    g = torch.tensor([3, 9, 10, 199, 200])
    with torch.no_grad():
        small.genome[0].weight.zero_()
        out = small(g, torch.zeros_like(g), torch.zeros_like(g))
    assert out[0] == out[1] and out[1] != out[2]
    with pytest.raises(ValueError, match="n_nodes must be positive"):
        AvocadoConfig(n_nodes=0)


def test_avocado_fits_planted_tensor_much_better_than_avg():
    ds = planted_dataset()
    obs = hide_tracks(ds, HELD_OUT)
    imputer = AvocadoImputer("quick", device="cpu", progress=False, **AVOCADO_FAST).fit(obs)
    pred = imputer.predict(HELD_OUT).values
    avg = AverageImputer().fit(obs).predict(HELD_OUT).values
    assert _mse(pred, ds, HELD_OUT) < 0.5 * _mse(avg, ds, HELD_OUT)
    assert imputer.history[-1]["loss"] < imputer.history[0]["loss"]
    imputer.chunk_bins = 50
    np.testing.assert_allclose(imputer.predict(HELD_OUT).values, pred, rtol=1e-5, atol=1e-6)


def test_avocado_second_stage_fits_new_bins_with_everything_else_frozen():
    ds = planted_dataset(n_bins=1200)
    first, second = ds.isel(bin=slice(0, 800)), ds.isel(bin=slice(800, 1200))
    imputer = AvocadoImputer("quick", device="cpu", progress=False, **AVOCADO_FAST)
    imputer.fit(hide_tracks(first, HELD_OUT))
    before = {k: v.clone() for k, v in imputer.model.state_dict().items()}
    obs2 = hide_tracks(second, HELD_OUT)
    pred = imputer.predict(HELD_OUT, observed=obs2).values
    assert pred.shape == (3, 400)
    for key, value in imputer.model.state_dict().items():  # fitted model untouched
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    assert len(imputer._genome_cache) == 2
    avg = AverageImputer().fit(obs2).predict(HELD_OUT).values
    assert _mse(pred, second, HELD_OUT) < _mse(avg, second, HELD_OUT)


def test_avocado_is_deterministic_given_a_seed():
    obs = hide_tracks(planted_dataset(n_bins=200), HELD_OUT)
    settings = {**AVOCADO_FAST, "epochs": 2}
    a = AvocadoImputer("quick", device="cpu", progress=False, **settings).fit(obs)
    b = AvocadoImputer("quick", device="cpu", progress=False, **settings).fit(obs)
    c = AvocadoImputer("quick", device="cpu", progress=False, seed=9, **settings).fit(obs)
    np.testing.assert_array_equal(a.predict(HELD_OUT).values, b.predict(HELD_OUT).values)
    assert not np.allclose(a.predict(HELD_OUT).values, c.predict(HELD_OUT).values)


# --------------------------------------------------------------------------- shared behaviour


@pytest.mark.parametrize("name", ["predictd", "avocado"])
def test_registry_errors_and_warnings(name):
    ds = planted_dataset(n_bins=100)
    obs = hide_tracks(ds, HELD_OUT)
    settings = PREDICTD_FAST if name == "predictd" else AVOCADO_FAST
    imputer = get_epigenome_imputer(name, preset="quick", device="cpu", progress=False,
                                    **{**settings, "epochs": 1})
    with pytest.raises(RuntimeError, match="fit"):
        imputer.predict(HELD_OUT, observed=obs)
    imputer.fit(obs)
    assert imputer.parameters()["preset"] == "quick"
    bigger = create_signal_dataset(np.zeros((7, 4, 100), np.float32),
                                   cells=[f"c{i}" for i in range(7)],
                                   assays=[f"a{j}" for j in range(4)], scale="arcsinh")
    with pytest.raises(ValueError, match=r"c6\.a1.*fixed at fit time"):
        imputer.predict([("c6", "a1")], observed=bigger)
    with pytest.warns(UserWarning, match=r"c0\.a0.*observed at fit time"):
        imputer.predict([("c0", "a0")])
    with_individuals = create_signal_dataset(np.zeros((2, 3, 2, 10), np.float32),
                                             cells=["x", "y", "z"], assays=["p", "q"],
                                             individuals=["i1", "i2"], scale="arcsinh")
    with pytest.raises(ValueError, match="individual"):
        imputer.fit(with_individuals)
