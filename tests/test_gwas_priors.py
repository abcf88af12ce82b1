"""Tests of analysislib.gwas.priors: losses by hand, models, training, resume and recovery."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from analysislib.gwas.priors import (
    RESULT_METRICS,
    ConstantPrior,
    ConvAttentionPrior,
    FeatureSet,
    PriorTrainingConfig,
    evaluate_prior,
    feature_set,
    initial_log_f,
    ldsr_loss,
    likelihood_loss,
    make_prior,
    predict_log_f,
    prepare_windows,
    result_rows,
    train_prior,
)
from analysislib.simulate.gwas import SimulatedGwas, TrueLogF, simulate_gwas_from_panel

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TRUTH = TrueLogF(linear={"c0:t0": 1.0, "c0:t1": -0.7, "s0": 0.5}, soft_clip=None)


def toy_sim(m: int = 3000, *, seed: int = 0, h2: float = 0.05, n_gwas: float = 2e5,
            block: int = 100) -> SimulatedGwas:
    """A small simulation without msprime: Markov-copying haplotypes, smooth random tracks."""
    rng = np.random.default_rng(seed)
    n_ref = 400
    hap = np.empty((m, n_ref), dtype=np.int8)
    hap[0] = rng.random(n_ref) < 0.3
    for j in range(1, m):
        fresh = rng.random(n_ref) < rng.uniform(0.15, 0.5)
        hap[j] = np.where(rng.random(n_ref) < 0.85, hap[j - 1], fresh)
    n_tracks, width = 3, 4
    level = rng.standard_normal((m, n_tracks))
    tracks = (level[:, :, None] + 0.3 * rng.standard_normal((m, n_tracks, width))).astype(
        np.float32)
    scalars = rng.standard_normal((m, 1)).astype(np.float32)
    names, scalar_names = [f"c0:t{k}" for k in range(n_tracks)], ["s0"]
    return simulate_gwas_from_panel(
        hap, np.arange(1, m + 1) * 100, tracks, scalars, track_names=names,
        scalar_names=scalar_names, truth=TRUTH, rng=seed, h2=h2, n_gwas=n_gwas,
        ld_block_snps=block, n_segments=10, test_fraction=0.2, valid_fraction=0.1)


@pytest.fixture(scope="module")
def sim() -> SimulatedGwas:
    return toy_sim()


def _window(R: np.ndarray, z: np.ndarray, t: slice, *, n: float = 1e4, h2: float = 0.5,
            m_total: int = 10) -> dict:
    r2_t = R[t] ** 2
    ell = r2_t.sum(axis=1)
    return {"z": torch.tensor(z), "R": torch.tensor(R), "target": torch.tensor([t.start, t.stop]),
            "r2_t": torch.tensor(r2_t), "ell": torch.tensor(ell),
            "s": torch.tensor(n * ell * h2 / m_total + np.diag(R)[t])}


R3 = np.array([[1.0, 0.6, 0.1], [0.6, 1.0, 0.3], [0.1, 0.3, 1.0]])


def test_likelihood_loss_matches_scipy_multivariate_normal() -> None:
    log_f = torch.tensor([0.2, -1.0, 0.5], dtype=torch.float64, requires_grad=True)
    z = np.array([1.5, -0.4])
    loss = likelihood_loss(log_f, _window(R3, z, slice(0, 2)))
    C = R3 @ np.diag(np.exp(log_f.detach().numpy())) @ R3 + R3 + 1e-4 * np.eye(3)
    expected = -stats.multivariate_normal(np.zeros(2), C[:2, :2]).logpdf(z) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    loss.backward()
    assert log_f.grad is not None and torch.all(log_f.grad != 0)  # flank SNP 2 matters too


def test_ldsr_loss_by_hand() -> None:
    log_f = torch.log(torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64))
    z = np.array([2.0, -1.0])
    w = _window(R3, z, slice(0, 2), n=1e4, h2=0.5, m_total=10)
    # chi_hat_0 = 1*0.5 + 0.36*2 + 0.01*1 + 1 = 2.23;  chi_hat_1 = 0.36*0.5 + 2 + 0.09 + 1 = 3.27
    ell = np.array([1 + 0.36 + 0.01, 0.36 + 1 + 0.09])
    s = 1e4 * ell * 0.5 / 10 + 1.0
    expected = np.mean(((np.array([2.23, 3.27]) - np.array([4.0, 1.0])) / s) ** 2 / ell)
    assert float(ldsr_loss(log_f, w)) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("kind", ["constant", "linear", "mlp", "conv"])
def test_models_map_annotations_to_one_log_f_per_snp(kind: str) -> None:
    torch.manual_seed(0)
    model = make_prior(kind, 5, 2, 16, init_log_f=-1.5)
    tracks = torch.randn(7, 5, 16, dtype=torch.float64)
    scalars = torch.randn(7, 2, dtype=torch.float64)
    out = model(tracks, scalars)
    assert out.shape == (7,) and out.dtype == torch.float64
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    if kind in ("constant", "linear"):  # zero-initialised weights start at the bias
        np.testing.assert_allclose(out.detach().numpy(), -1.5)


def test_conv_model_sees_the_window_shape_and_checks_its_length() -> None:
    torch.manual_seed(1)
    model = ConvAttentionPrior(1, 0, 8, dim=8, target_length=2).double().eval()
    for p in model.head.parameters():  # make the head visible
        torch.nn.init.normal_(p, std=1.0)
    a = torch.zeros(1, 1, 8, dtype=torch.float64)
    a[0, 0, 3:5] = 4.0           # a centred peak
    b = torch.zeros(1, 1, 8, dtype=torch.float64)
    b[0, 0, [0, 7]] = 4.0        # same window mean, at the edges
    scalars = torch.zeros(1, 0, dtype=torch.float64)
    with torch.no_grad():
        assert abs(float(model(a, scalars) - model(b, scalars))) > 1e-6
    with pytest.raises(ValueError, match="power of two"):
        ConvAttentionPrior(1, 0, 12, target_length=2)
    with pytest.raises(ValueError, match="unknown prior kind"):
        make_prior("transformer", 1, 0, 8)


def test_feature_sets(sim: SimulatedGwas) -> None:
    assert feature_set(sim, "all") == FeatureSet("all", (0, 1, 2), (0,))
    assert feature_set(sim, "few") == FeatureSet("few", (0, 1, 2), ())
    tracks, scalars = feature_set(sim, "few").select(sim)
    assert tracks.shape == (sim.n_snps, 3, 4) and scalars.shape == (sim.n_snps, 0)
    with pytest.raises(ValueError, match="unknown feature set"):
        feature_set(sim, "most")


def test_windows_cover_each_split_once(sim: SimulatedGwas) -> None:
    windows = prepare_windows(sim, "test", target_size=70, flank=30)
    targets = np.concatenate([np.arange(int(w["snps"][0]) + int(w["target"][0]),
                                        int(w["snps"][0]) + int(w["target"][1]))
                              for w in windows])
    np.testing.assert_array_equal(targets, sim.indices("test"))
    for w in windows:
        lo, hi = int(w["snps"][0]), int(w["snps"][1])
        assert set(sim.split[lo:hi]) == {"test"}  # context never crosses into training data
        np.testing.assert_allclose(w["R"].numpy(), sim.R[lo:hi, lo:hi].toarray())


def test_null_like_constant_prior_matches_the_null(sim: SimulatedGwas) -> None:
    model = ConstantPrior(init_log_f=-40.0).double()
    ev = evaluate_prior(model, sim, "test", target_size=100, flank=0)
    assert ev["delta_nll"] == pytest.approx(0.0, abs=1e-8)
    assert ev["n_snps"] == sim.indices("test").size


@pytest.mark.slow
def test_linear_prior_trained_by_likelihood_recovers_log_linear_truth(sim: SimulatedGwas) -> None:
    torch.manual_seed(0)
    fs = feature_set(sim, "all")
    start = initial_log_f(sim.z, sim.ld_scores)
    model = make_prior("linear", 3, 1, 4, init_log_f=start)
    config = PriorTrainingConfig(objective="likelihood", epochs=20, lr=0.05, warmup_steps=5,
                                 windows_per_step=2, target_size=100, flank=0, device="cpu")
    trained = train_prior(model, sim, config, features=fs, kind="linear")
    weights = model.linear.weight.detach().numpy()[0]
    # sampling error of the estimates on ~2000 training SNPs is about 0.15 (seen over seeds)
    np.testing.assert_allclose(weights, [1.0, -0.7, 0.0, 0.5], atol=0.35)
    ev = evaluate_prior(trained, sim, "test")
    assert ev["log_f_r"] > 0.98
    assert ev["delta_nll"] < -0.5
    assert len(trained.fit.history) == 20 and np.isfinite(trained.fit.history[-1]["metric"])
    pred = predict_log_f(model, sim, fs)
    test = sim.indices("test")
    assert np.abs(pred[test] - sim.true_log_f[test]).mean() == pytest.approx(ev["log_f_mae"])

    # the same model trained with the LDSR loss is further from the truth (DeepWAS's point)
    torch.manual_seed(0)
    ldsr_model = make_prior("linear", 3, 1, 4, init_log_f=start)
    config.objective = "ldsr"
    ldsr = train_prior(ldsr_model, sim, config, features=fs, validate=False)
    ev_ldsr = evaluate_prior(ldsr, sim, "test")
    assert ev_ldsr["log_f_r"] < ev["log_f_r"] - 0.03
    assert ev_ldsr["nll"] > ev["nll"]


def test_constant_prior_trained_by_ldsr_reaches_the_closed_form(sim: SimulatedGwas) -> None:
    # For a constant F the LDSR loss is weighted least squares in F:
    # sum_j w_j (l_j F + R_jj - chi2_j)^2 with w_j = 1 / (s_j^2 l_j), so
    # F* = sum w l (chi2 - 1) / sum w l^2 (R_jj = 1, sigma = 1).
    windows = prepare_windows(sim, "train", target_size=100, flank=0)
    ell = np.concatenate([w["ell"].numpy() for w in windows])
    s = np.concatenate([w["s"].numpy() for w in windows])
    chi2 = np.concatenate([w["z"].numpy() ** 2 for w in windows])
    # each window's loss is a mean over its targets: SNPs weigh 1 / (targets in the window)
    per_window = np.concatenate([np.full(len(w["z"]), 1.0 / len(w["z"])) for w in windows])
    weight = per_window / (s ** 2 * ell)
    best = np.sum(weight * ell * (chi2 - 1)) / np.sum(weight * ell ** 2)
    model = make_prior("constant", 3, 1, 4, init_log_f=0.0)
    config = PriorTrainingConfig(objective="ldsr", epochs=150, lr=0.05, warmup_steps=1,
                                 windows_per_step=len(windows), target_size=100, flank=0,
                                 device="cpu")
    trained = train_prior(model, sim, config, validate=False)
    assert np.exp(model.bias.item()) == pytest.approx(best, rel=0.02)
    assert trained.parameters()["objective"] == "ldsr"
    with pytest.raises(ValueError, match="objective"):
        train_prior(model, sim, PriorTrainingConfig(objective="mse"))
    with pytest.raises(ValueError, match="does not accept feature set 'few'"):
        train_prior(make_prior("linear", 3, 1, 4), sim, config, features=feature_set(sim, "few"))


def test_resume_gives_identical_weights(sim: SimulatedGwas, tmp_path) -> None:
    def run(epochs: int, directory) -> np.ndarray:
        torch.manual_seed(3)
        model = make_prior("mlp", 3, 1, 4, hidden=(8,))
        config = PriorTrainingConfig(epochs=epochs, lr=0.01, warmup_steps=2, windows_per_step=3,
                                     target_size=100, flank=0, device="cpu", seed=9,
                                     checkpoint_dir=str(directory) if directory else None)
        train_prior(model, sim, config, validate=False)
        return torch.cat([p.detach().flatten() for p in model.parameters()]).numpy()

    straight = run(4, None)
    run(2, tmp_path)
    resumed = run(4, tmp_path)  # continues from the epoch-2 checkpoint
    np.testing.assert_array_equal(resumed, straight)


def test_result_rows_round_trip_through_the_store(sim: SimulatedGwas, tmp_path) -> None:
    from analysislib.results import ResultsStore

    model = make_prior("constant", 3, 1, 4, init_log_f=-1.0)
    config = PriorTrainingConfig(epochs=1, target_size=100, flank=0, device="cpu")
    trained = train_prior(model, sim, config, kind="constant", validate=False)
    ev = evaluate_prior(trained, sim, "test")
    rows = result_rows(trained, ev, sim, dataset="toy")
    store = ResultsStore(tmp_path)
    store.append(rows)
    back = store.read("gwas_priors", method="likelihood_constant")
    assert len(back) == len(RESULT_METRICS)
    assert set(back["scenario"]) == {"features_all"} and set(back["stratum"]) == {"test"}
    values = dict(zip(back["metric"], back["value"], strict=True))
    assert values["delta_nll"] == pytest.approx(ev["delta_nll"])
    assert back["n"].iloc[0] == sim.indices("test").size


class _Interrupted(RuntimeError):
    """Stands in for a crash or Ctrl-C in the middle of training."""


def test_best_weights_survive_an_interruption_and_resume(sim: SimulatedGwas, tmp_path,
                                                         monkeypatch) -> None:
    # Issue 14 item 5: with keep_best, a run interrupted after its best epoch and resumed from
    # its checkpoint must return what the uninterrupted run returns (weights, best_epoch,
    # history), not the best of the epochs trained after the resume.
    from analysislib.gwas import priors
    from analysislib.training import list_checkpoints, read_checkpoint_header

    def run(directory) -> tuple:
        torch.manual_seed(3)
        model = make_prior("mlp", 3, 1, 4, hidden=(8,))
        # lr 0.3 makes the validation delta NLL peak early (epoch 2 of 6) on this simulation
        config = PriorTrainingConfig(epochs=6, lr=0.3, warmup_steps=2, windows_per_step=3,
                                     target_size=100, flank=0, device="cpu", seed=9,
                                     checkpoint_dir=str(directory) if directory else None)
        trained = train_prior(model, sim, config)
        return trained, torch.cat([p.detach().flatten() for p in model.parameters()]).numpy()

    straight, straight_weights = run(None)
    assert straight.best_epoch == 2 and straight.fit.best_epoch == 2
    checkpointed, checkpointed_weights = run(tmp_path / "uninterrupted")
    assert checkpointed.best_epoch == 2  # checkpointing alone changes nothing
    np.testing.assert_array_equal(checkpointed_weights, straight_weights)

    # Interrupt the run in epoch 4 (its validation raises): epoch 3 is the last checkpoint.
    evaluate, calls = priors._evaluate_windows, []

    def interrupted(*args, **kwargs):
        calls.append(None)
        if len(calls) == 4:
            raise _Interrupted("killed during epoch 4")
        return evaluate(*args, **kwargs)

    directory = tmp_path / "interrupted"
    monkeypatch.setattr(priors, "_evaluate_windows", interrupted)
    with pytest.raises(_Interrupted):
        run(directory)
    monkeypatch.setattr(priors, "_evaluate_windows", evaluate)
    checkpoints = list_checkpoints(directory)
    assert read_checkpoint_header(checkpoints[-1])["epoch"] == 3
    assert not [p.name for p in directory.iterdir() if ".tmp" in p.name]  # nothing half-written

    resumed, resumed_weights = run(directory)
    assert resumed.fit.resumed_from == checkpoints[-1]
    assert resumed.best_epoch == straight.best_epoch == 2
    assert resumed.fit.best_epoch == 2 and resumed.fit.best_metric == straight.fit.best_metric
    assert resumed.fit.history == straight.fit.history
    np.testing.assert_array_equal(resumed_weights, straight_weights)

    # Calling it again on the finished run trains nothing and still returns the best weights.
    again, again_weights = run(directory)
    assert again.best_epoch == 2 and len(again.fit.history) == 6
    np.testing.assert_array_equal(again_weights, straight_weights)


def test_linear_prior_trained_on_banded_ld_recovers_the_truth(sim: SimulatedGwas) -> None:
    torch.manual_seed(0)
    fs = feature_set(sim, "all")
    model = make_prior("linear", 3, 1, 4, init_log_f=initial_log_f(sim.z, sim.ld_scores))
    config = PriorTrainingConfig(objective="likelihood", epochs=20, lr=0.05, warmup_steps=5,
                                 windows_per_step=2, target_size=100, flank=0, device="cpu",
                                 method="banded", bandwidth=30)
    trained = train_prior(model, sim, config, features=fs, kind="linear")
    np.testing.assert_allclose(model.linear.weight.detach().numpy()[0], [1.0, -0.7, 0.0, 0.5],
                               atol=0.35)
    assert evaluate_prior(trained, sim, "test")["log_f_r"] > 0.95
    config.bandwidth = None
    with pytest.raises(ValueError, match="bandwidth"):
        train_prior(model, sim, config, features=fs)
