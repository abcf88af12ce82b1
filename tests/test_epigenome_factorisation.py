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
    select_new_cells,
    wilcoxon_converged,
)
from analysislib.epigenome.imputer import AverageImputer, get_epigenome_imputer
from analysislib.epigenome.tensor import create_signal_dataset, hide_tracks

HELD_OUT = [("c1", "a2"), ("c4", "a0"), ("c2", "a3")]
PREDICTD_FAST = {"n_factors": 4, "training_fraction": 1.0, "batch_size": 256, "max_epochs": 20,
                 "lr": 0.02, "mse_every": 3, "min_evaluations": 50,
                 "lrate_search_num": 3, "n_bags": 1}
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
    settings = {**PREDICTD_FAST, "max_epochs": 3}
    a = PredictdImputer("quick", device="cpu", progress=False, **settings).fit(obs)
    b = PredictdImputer("quick", device="cpu", progress=False, **settings).fit(obs)
    c = PredictdImputer("quick", device="cpu", progress=False, seed=4, **settings).fit(obs)
    np.testing.assert_array_equal(a.predict(HELD_OUT).values, b.predict(HELD_OUT).values)
    assert not np.allclose(a.predict(HELD_OUT).values, c.predict(HELD_OUT).values)


def test_predictd_bags_are_trained_apart_and_their_imputations_averaged():
    # train_bags.py: one model per validation fold and initialisation seed, imputations averaged
    obs = hide_tracks(planted_dataset(n_bins=200), HELD_OUT)
    settings = {**PREDICTD_FAST, "max_epochs": 3}
    one = PredictdImputer("quick", device="cpu", progress=False, **settings).fit(obs)
    three = PredictdImputer("quick", device="cpu", progress=False,
                            **{**settings, "n_bags": 3}).fit(obs)
    assert len(three.models_) == 3 and three.model is three.models_[0]
    for key, value in one.model.state_dict().items():  # bag 0 is the single model
        torch.testing.assert_close(three.models_[0].state_dict()[key], value, rtol=0, atol=0)
    assert not torch.allclose(three.models_[1].genome, three.models_[2].genome)
    per_bag = []
    for model in three.models_:
        one.models_, one.model = [model], model
        per_bag.append(one.predict(HELD_OUT).values)
    np.testing.assert_allclose(three.predict(HELD_OUT).values, np.mean(per_bag, 0),
                               rtol=1e-5, atol=1e-5)
    assert not np.allclose(per_bag[0], per_bag[1])
    with pytest.raises(ValueError, match="n_bags"):
        predictd_config("quick", n_bags=0)


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
    assert 37e6 < n_params < 39e6  # about 37.9 M on the pilot regions (Avocado defaults)
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
                                    **{**settings, ("max_epochs" if name == "predictd"
                                                    else "epochs"): 1})
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


# --------------------------------------------------------------------------- new cell types


def nonnegative_planted(n_cells=4, n_assays=5, n_bins=1500, seed=0):
    """A non-negative rank-3 arcsinh-like tensor; cell 3 copies cell 0's pattern exactly."""
    rng = np.random.default_rng(seed)
    cells = rng.gamma(2.0, 0.5, size=(n_cells, 3))
    cells[3] = cells[0]
    signal = np.einsum("cf,af,gf->cag", cells, rng.gamma(2.0, 0.5, size=(n_assays, 3)),
                       rng.exponential(0.5, size=(n_bins, 3)))
    signal += 0.02 * rng.random(signal.shape)
    return create_signal_dataset(signal.astype(np.float32),
                                 cells=[f"c{i}" for i in range(n_cells)],
                                 assays=[f"a{j}" for j in range(n_assays)], scale="arcsinh")


NEW_TARGETS = [("c3", f"a{j}") for j in range(1, 5)]  # c3 keeps a0 only


def test_new_cell_rule_and_override():
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 1, 0], [1, 1, 0, 0, 0],
                     [1, 0, 0, 0, 0]], dtype=bool)
    cells = ["a", "b", "c", "d", "e"]
    assert select_new_cells(mask, cells, None, "m").tolist() == [0, 0, 0, 1, 1]
    assert not select_new_cells(np.ones((3, 4), bool), cells[:3], None, "m").any()
    assert select_new_cells(mask, cells, ["c"], "m").tolist() == [0, 0, 1, 0, 0]
    assert not select_new_cells(mask, cells, [], "m").any()
    with pytest.raises(ValueError, match="not cell types"):
        select_new_cells(mask, cells, ["zz"], "m")
    with pytest.raises(ValueError, match="no reference"):
        select_new_cells(mask, cells, cells, "m")


def test_wilcoxon_rule_stops_on_a_plateau_and_continues_while_improving():
    rng = np.random.default_rng(0)
    improving = 1.0 / np.arange(1, 41) + 1e-4 * rng.random(40)
    assert not wilcoxon_converged(improving)
    flat = np.concatenate([improving[:5], np.full(35, 0.02)])
    assert wilcoxon_converged(flat)  # identical errors: the shifted later window ranks higher
    rising = np.concatenate([np.full(20, 0.5), 0.5 + 0.01 * np.arange(1, 21)])
    assert wilcoxon_converged(rising)
    noisy_fall = 1.0 - 0.01 * np.arange(40) + 0.001 * rng.standard_normal(40)
    assert not wilcoxon_converged(noisy_fall)
    assert not wilcoxon_converged(np.full(34, 0.1))  # fewer than 2 * 15 + 5 errors


def test_predictd_training_stops_on_convergence_before_the_cap():
    obs = hide_tracks(planted_dataset(n_bins=300), HELD_OUT)
    settings = {**PREDICTD_FAST, "max_epochs": 400, "min_evaluations": 10, "lrate_search_num": 0,
                "win_size": 5, "win_spacing": 2}
    imputer = PredictdImputer("quick", device="cpu", progress=False, **settings).fit(obs)
    assert imputer.stop_reason_ in ("wilcoxon", "no_new_minimum")
    assert len(imputer.history) < 400
    # the kept factors are those of the lowest validation MSE
    assert min(imputer.validation_mse_) <= imputer.validation_mse_[0]
    capped = PredictdImputer("quick", device="cpu", progress=False,
                             **{**settings, "max_epochs": 1, "min_evaluations": 1000}).fit(obs)
    assert capped.stop_reason_ == "max_epochs" and len(capped.history) == 1


def test_predictd_stopping_rules_wait_for_min_epochs():
    # On long windows the rules fired before the genome rows had moved, and every bag kept its
    # initial factors; min_epochs passes come first.
    obs = hide_tracks(planted_dataset(n_bins=300), HELD_OUT)
    settings = {**PREDICTD_FAST, "max_epochs": 400, "min_evaluations": 1, "lrate_search_num": 0,
                "win_size": 2, "win_spacing": 1}
    eager = PredictdImputer("quick", device="cpu", progress=False, **settings, min_epochs=0).fit(obs)
    assert eager.stop_reason_ in ("wilcoxon", "no_new_minimum")
    wait = len(eager.history) + 5
    patient = PredictdImputer("quick", device="cpu", progress=False, **settings, min_epochs=wait).fit(obs)
    assert wait <= len(patient.history) < 400
    assert patient.stop_reason_ in ("wilcoxon", "no_new_minimum")


def test_predictd_training_bins_are_bounded():
    quick, paper = predictd_config("quick"), predictd_config("paper")
    assert [quick.training_bins(n) for n in (400_000, 50_000, 5_000, 600)] == [10_000, 5_000, 1_000, 600]
    assert paper.training_bins(400_000) == 4_000
    with pytest.raises(ValueError, match="max_training_bins"):
        predictd_config("quick", max_training_bins=10)


@pytest.mark.parametrize("name", ["predictd", "avocado"])
def test_stage_two_leaves_shared_parameters_bit_identical(name):
    ds = nonnegative_planted(n_bins=400)
    obs = hide_tracks(ds, NEW_TARGETS)
    settings = ({**PREDICTD_FAST, "max_epochs": 3} if name == "predictd"
                else {**AVOCADO_FAST, "epochs": 3, "celltype_epochs": 3})
    imputer = get_epigenome_imputer(name, preset="quick", device="cpu", progress=False,
                                    **settings).fit(obs)
    assert imputer.new_cells_ == ["c3"]
    before = {k: v.clone() for k, v in imputer.model.state_dict().items()}
    imputer.fit_celltypes(["c3"])
    after = imputer.model.state_dict()
    for key, value in after.items():
        # genome, assay, biases, network and the reference cells' rows: bit-identical; the new
        # cell's row is refitted (deterministically, so it comes out the same again)
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


@pytest.mark.parametrize("name", ["predictd", "avocado"])
def test_new_cell_copying_a_reference_is_recovered(name):
    ds = nonnegative_planted()
    obs = hide_tracks(ds, NEW_TARGETS)
    settings = ({"n_factors": 4, "training_fraction": 1.0, "batch_size": 512, "lr": 0.05,
                 "rc": 0.01, "ri2": 0.1}
                if name == "predictd" else {**AVOCADO_FAST, "celltype_epochs": 30})
    imputer = get_epigenome_imputer(name, preset="quick", device="cpu", progress=False,
                                    **settings).fit(obs)
    assert imputer.new_cells_ == ["c3"]
    pred = imputer.predict(NEW_TARGETS).values
    truth = np.stack([ds["signal"].sel(cell=c, assay=a).values for c, a in NEW_TARGETS])
    corr = [np.corrcoef(p, t)[0, 1] for p, t in zip(pred, truth, strict=True)]
    assert np.mean(corr) > 0.85 and min(corr) > 0.7, corr
    assert (pred >= 0).all()


@pytest.mark.parametrize("name", ["predictd", "avocado"])
def test_fully_observed_dataset_fits_jointly_as_before(name):
    ds = nonnegative_planted(n_bins=200)
    settings = ({**PREDICTD_FAST, "max_epochs": 1} if name == "predictd"
                else {**AVOCADO_FAST, "epochs": 1})
    imputer = get_epigenome_imputer(name, preset="quick", device="cpu", progress=False,
                                    **settings).fit(ds)
    assert imputer.new_cells_ == []
    forced = get_epigenome_imputer(name, preset="quick", device="cpu", progress=False,
                                   **settings).fit(hide_tracks(ds, NEW_TARGETS), new_cells=[])
    assert forced.new_cells_ == []


def test_predictd_initial_biases_leave_out_the_validation_entries():
    rng = np.random.default_rng(1)
    values = rng.normal(size=(6, 2, 3)).astype(np.float32)
    mask = np.array([[1, 1, 1], [1, 0, 1]], dtype=bool)
    held_out = np.zeros(values.shape, dtype=bool)
    held_out[0, 0, 0] = held_out[3, 1, 2] = True
    model = PredictdModel(2, 3, 6, 4)
    model.init_biases(values, mask, held_out)
    obs = np.where(mask[None] & ~held_out, values, np.nan)
    mean = np.nanmean(obs)
    assert float(model.mean) == pytest.approx(mean, rel=1e-6)
    np.testing.assert_allclose(model.genome_bias.detach().numpy(),
                               np.nanmean(obs, axis=(1, 2)) - mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.cell_bias.detach().numpy(),
                               np.nanmean(obs, axis=(0, 2)) - mean, rtol=1e-5, atol=1e-6)
    # Changing a held-out value leaves every bias unchanged.
    changed = values.copy()
    changed[0, 0, 0] += 100
    other = PredictdModel(2, 3, 6, 4)
    other.init_biases(changed, mask, held_out)
    for name in ("genome_bias", "cell_bias", "assay_bias", "mean"):
        assert torch.equal(getattr(model, name), getattr(other, name))


def test_predictd_training_improves_on_its_initial_validation_mse():
    # The initial genome biases average only the training entries of a bin, so a held-out
    # entry is not already part of its own prediction and training can improve on it.
    ds = planted_dataset(seed=3)
    imp = PredictdImputer("quick", device="cpu", progress=False, max_epochs=5).fit(hide_tracks(ds, HELD_OUT))
    assert min(imp.validation_mse_) < imp.validation_mse_[0]
