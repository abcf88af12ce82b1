"""Tests for analysislib.training: schedules, devices, RNG, checkpoints, fit/resume and DDP."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from analysislib.errors import CheckpointError
from analysislib.testing import run_torchrun
from analysislib.training import (
    CurriculumSchedule,
    DeviceUnavailableError,
    EarlyStopping,
    all_but_k_rate,
    autocast_context,
    capture_rng_state,
    checkpoint_path,
    decay_learning_rate,
    derive_seed,
    distributed_sampler,
    fit,
    latest_checkpoint,
    linear_curriculum,
    list_checkpoints,
    load_checkpoint,
    make_generator,
    make_grad_scaler,
    move_to_device,
    progress_enabled,
    read_checkpoint_header,
    restore_rng_state,
    save_checkpoint,
    seed_everything,
    select_device,
    step_curriculum,
)

TESTS_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = TESTS_DIR.parent
WORKER = TESTS_DIR / "ddp_worker.py"
HAS_CUDA = torch.cuda.is_available()


def _load_worker():
    spec = importlib.util.spec_from_file_location("ddp_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


worker = _load_worker()


@pytest.fixture(autouse=True)
def single_thread():
    """Match the subprocess workers (one thread) so float results agree bit for bit."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def assert_same_parameters(a: torch.nn.Module, b: torch.nn.Module) -> None:
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    for name in state_a:
        assert torch.equal(state_a[name], state_b[name]), name


def global_draws(n: int = 1) -> tuple:
    """One draw each from Python's, NumPy's (legacy global) and torch's global generators."""
    return (random.random(), np.random.random_sample(n).tolist(), torch.rand(n).tolist())  # noqa: NPY002


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", ANALYSISLIB_PROGRESS="0")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    return env


# --------------------------------------------------------------------------- import weight


def test_import_does_not_load_torch():
    code = (
        "import sys, analysislib, analysislib.training;"
        "from analysislib.training import EarlyStopping, CurriculumSchedule;"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------- schedules


def test_linear_curriculum_matches_dias_linspace():
    n_variants = 1758  # median chr22 tile in Dias et al.
    end = all_but_k_rate(n_variants, 5)
    assert end == pytest.approx(1753 / 1758)
    schedule = linear_curriculum(0.80, end, 500, cycle=True)
    expected = np.linspace(0.80, end, 500)
    np.testing.assert_allclose(schedule.values(), expected, rtol=0, atol=1e-15)
    assert schedule(0) == 0.80 and schedule(499) == end
    assert schedule(500) == 0.80  # cycles back
    assert schedule(749) == pytest.approx(expected[249])
    assert schedule(-1) == end  # cycling also wraps backwards


def test_linear_curriculum_endpoints_midpoint_and_clamp():
    schedule = linear_curriculum(0.05, 0.25, 5)
    assert [round(schedule(t), 12) for t in range(5)] == [0.05, 0.1, 0.15, 0.2, 0.25]
    assert schedule(2) == pytest.approx(0.15)
    assert schedule(10_000) == 0.25  # held at the end without cycling
    with pytest.raises(ValueError, match=">= 0"):
        schedule(-1)
    assert linear_curriculum(0.3, 0.9, 1)(0) == 0.3  # a one-step schedule is its start
    falling = linear_curriculum(1.0, 0.0, 3)
    assert falling.values() == [1.0, 0.5, 0.0]


def test_step_curriculum_plateaus():
    # BiU-Net range, 5 plateaus over 10 epochs: two epochs per level.
    schedule = step_curriculum(0.05, 0.25, n_steps=10, n_levels=5)
    values = [round(schedule(t), 12) for t in range(12)]
    assert values == [0.05, 0.05, 0.1, 0.1, 0.15, 0.15, 0.2, 0.2, 0.25, 0.25, 0.25, 0.25]
    uneven = step_curriculum(0.0, 1.0, n_steps=7, n_levels=3)  # plateaus of 3, 2, 2 steps
    assert uneven.values() == [0.0, 0.0, 0.0, 0.5, 0.5, 1.0, 1.0]
    assert step_curriculum(0.2, 0.4, n_steps=4, n_levels=1).values() == [0.2] * 4
    # With one level per step the step mode equals the linear mode.
    assert CurriculumSchedule(0.1, 0.5, 5, mode="step").values() == pytest.approx(
        linear_curriculum(0.1, 0.5, 5).values()
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"start": 0.1, "end": 0.2, "n_steps": 0},
        {"start": 0.1, "end": 0.2, "n_steps": 3, "mode": "cosine"},
        {"start": 0.1, "end": 0.2, "n_steps": 3, "mode": "step", "n_levels": 4},
        {"start": float("nan"), "end": 0.2, "n_steps": 3},
    ],
)
def test_curriculum_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        CurriculumSchedule(**kwargs)


def test_early_stopping_min_with_delta_and_state_round_trip():
    stopper = EarlyStopping(patience=2, min_delta=0.1, mode="min")
    outcomes = [stopper.update(v) for v in (1.0, 0.95, 0.85, 0.8)]
    # 0.95 is within min_delta of 1.0; 0.85 improves by 0.15; 0.8 by only 0.05.
    assert outcomes == [True, False, True, False]
    assert not stopper.should_stop and stopper.best == 0.85 and stopper.best_index == 2
    state = stopper.state_dict()
    restored = EarlyStopping(patience=2, min_delta=0.1, mode="min")
    restored.load_state_dict(state)
    assert restored.update(float("nan")) is False  # NaN never improves
    assert restored.should_stop and restored.num_bad == 2
    with pytest.raises(ValueError, match="mode"):
        EarlyStopping(mode="max").load_state_dict(state)


def test_early_stopping_max_mode_and_tracking_only():
    stopper = EarlyStopping(patience=1, mode="max")
    assert [stopper.update(v) for v in (0.5, 0.7, 0.7)] == [True, True, False]
    assert stopper.should_stop and stopper.best == 0.7
    tracker = EarlyStopping(patience=None)
    for value in (3.0, 4.0, 5.0, 6.0):
        tracker.update(value)
    assert not tracker.should_stop and tracker.best == 3.0 and tracker.num_bad == 3
    with pytest.raises(ValueError):
        EarlyStopping(patience=0)


def test_decay_learning_rate_with_floor():
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(
        [{"params": [model.weight], "lr": 0.1}, {"params": [model.bias], "lr": 0.002}]
    )
    assert decay_learning_rate(optimizer, 0.5, min_lr=0.0015) == pytest.approx([0.05, 0.0015])
    with pytest.raises(ValueError):
        decay_learning_rate(optimizer, 1.5)


# --------------------------------------------------------------------------- devices, AMP


def test_select_device_cpu_and_auto():
    assert select_device("cpu") == torch.device("cpu")
    assert select_device(torch.device("cpu")) == torch.device("cpu")
    expected = "cuda" if HAS_CUDA else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert select_device("auto").type == expected
    with pytest.raises(ValueError, match="unknown device"):
        select_device("gpu")


@pytest.mark.skipif(HAS_CUDA, reason="checks the error raised when CUDA is missing")
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_select_device_explicit_cuda_unavailable(name):
    with pytest.raises(DeviceUnavailableError, match="CUDA is not available"):
        select_device(name)


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="MPS present")
def test_select_device_explicit_mps_unavailable():
    with pytest.raises(DeviceUnavailableError, match="mps"):
        select_device("mps")


def test_autocast_and_scaler_are_no_ops_on_cpu():
    a, b = torch.randn(4, 3), torch.randn(3, 2)
    with autocast_context("cpu", enabled=False):
        assert (a @ b).dtype == torch.float32
    with autocast_context("cpu", enabled=True):  # no default mixed precision on the CPU
        assert (a @ b).dtype == torch.float32
    with autocast_context("cpu", enabled=True, dtype=torch.bfloat16):
        assert (a @ b).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="bfloat16"):
        autocast_context("cpu", dtype=torch.float16)

    scaler = make_grad_scaler("cpu", enabled=True)
    assert not scaler.is_enabled()
    loss = torch.tensor(2.5, requires_grad=True)
    assert scaler.scale(loss) is loss
    assert scaler.state_dict() == {}


def test_move_to_device_keeps_structure():
    batch = {"x": torch.ones(2), "meta": ("a", [torch.zeros(1), 3])}
    moved = move_to_device(batch, "cpu")
    assert moved["meta"][0] == "a" and moved["meta"][1][1] == 3
    assert torch.equal(moved["x"], batch["x"]) and isinstance(moved["meta"], tuple)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_cuda_autocast_fp16_and_active_scaler():
    device = select_device("cuda")
    a, b = torch.randn(4, 3, device=device), torch.randn(3, 2, device=device)
    with autocast_context(device, enabled=True):
        assert (a @ b).dtype == torch.float16
    assert make_grad_scaler(device, enabled=True).is_enabled()
    assert not make_grad_scaler(device, enabled=True, dtype=torch.bfloat16).is_enabled()


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_fit_on_cuda_with_amp(tmp_path):
    model, result = worker.train_toy(
        checkpoint_dir=tmp_path / "ckpt", epochs=2, device="cuda", amp=True, noise=0.0
    )
    assert next(model.parameters()).device.type == "cuda"
    assert result.epochs_completed == 2 and np.isfinite(result.history[-1]["loss"])


# --------------------------------------------------------------------------- randomness


def test_seed_everything_and_rng_round_trip():
    seed_everything(11)
    first = global_draws()
    seed_everything(11)
    assert global_draws() == first

    state = capture_rng_state()
    expected = global_draws(3)
    restore_rng_state(state)
    assert global_draws(3) == expected


def test_derived_streams_are_stable_and_distinct():
    assert derive_seed(7, 1, 3) == derive_seed(7, 1, 3)
    seeds = {derive_seed(7, 1, epoch) for epoch in range(100)}
    assert len(seeds) == 100 and all(0 <= s < 2**63 for s in seeds)
    assert derive_seed(7, 1, 3) != derive_seed(8, 1, 3)
    a = torch.rand(5, generator=make_generator(7, 1, 3))
    torch.rand(100)  # global draws do not affect derived streams
    assert torch.equal(a, torch.rand(5, generator=make_generator(7, 1, 3)))
    with pytest.raises(ValueError):
        derive_seed(-1)


# --------------------------------------------------------------------------- checkpoints


def small_setup(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    loss = model(torch.randn(5, 3)).pow(2).mean()
    loss.backward()
    optimizer.step()
    scheduler.step()
    return model, optimizer, scheduler


def test_checkpoint_round_trip_restores_everything(tmp_path):
    model, optimizer, scheduler = small_setup(0)
    scaler = make_grad_scaler("cpu")
    seed_everything(3)
    path = save_checkpoint(
        tmp_path / "ck" / "epoch_000004.pt",
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        epoch=4,
        step=40,
        trainer_state={"history": [{"epoch": 1, "loss": 0.5}]},
        extra={"tile": "chr22:1", "n": 3},
    )
    after_save = global_draws(2)

    model2, optimizer2, scheduler2 = small_setup(1)
    assert not torch.equal(model2[0].weight, model[0].weight)
    torch.rand(10)  # move the global RNG elsewhere
    ckpt = load_checkpoint(path, model2, optimizer2, scheduler2, scaler)
    assert (ckpt.epoch, ckpt.step, ckpt.extra) == (4, 40, {"tile": "chr22:1", "n": 3})
    assert ckpt.trainer_state == {"history": [{"epoch": 1, "loss": 0.5}]}
    assert ckpt.world_size == 1 and ckpt.path == path
    assert_same_parameters(model, model2)
    assert scheduler2.state_dict() == scheduler.state_dict()
    state, state2 = optimizer.state_dict()["state"], optimizer2.state_dict()["state"]
    for key in state:
        assert torch.equal(state[key]["exp_avg_sq"], state2[key]["exp_avg_sq"])
    assert optimizer2.param_groups[0]["lr"] == pytest.approx(0.005)
    # RNG states restored: the same draws as right after saving.
    assert global_draws(2) == after_save

    header = read_checkpoint_header(path)
    assert header["format_version"] == 1 and header["epoch"] == 4
    assert header["payload_bytes"] + len(b"ANALYSISLIB-CHECKPOINT\n") < path.stat().st_size


def test_truncated_checkpoint_is_detected(tmp_path):
    model, optimizer, _ = small_setup()
    path = save_checkpoint(tmp_path / "a.pt", model=model, optimizer=optimizer, epoch=1, step=1)
    data = path.read_bytes()
    for keep in (len(data) - 1, len(data) // 2, 30, 5):
        path.write_bytes(data[:keep])
        with pytest.raises(CheckpointError, match="truncated") as info:
            load_checkpoint(path, model)
        assert str(path) in str(info.value)


def test_corrupt_checkpoint_is_detected(tmp_path):
    model, optimizer, _ = small_setup()
    path = save_checkpoint(tmp_path / "b.pt", model=model, optimizer=optimizer, epoch=1, step=1)
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"corrupt: payload sha256") as info:
        load_checkpoint(path, model)
    assert str(path) in str(info.value)

    plain = tmp_path / "plain.pt"
    torch.save(model.state_dict(), plain)
    with pytest.raises(CheckpointError, match="not an analysislib checkpoint"):
        load_checkpoint(plain, model)
    with pytest.raises(CheckpointError, match=r"missing\.pt"):
        load_checkpoint(tmp_path / "missing.pt", model)

    header_broken = tmp_path / "c.pt"
    good = save_checkpoint(tmp_path / "d.pt", model=model, epoch=1, step=1).read_bytes()
    header_broken.write_bytes(good.replace(b'"format_version"', b'"format_versio!"', 1))
    with pytest.raises(CheckpointError, match="lacks"):
        load_checkpoint(header_broken, model)


def test_checkpoint_that_does_not_match_the_model(tmp_path):
    model, optimizer, _ = small_setup()
    path = save_checkpoint(tmp_path / "m.pt", model=model, optimizer=optimizer, epoch=1, step=1)
    wider = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    with pytest.raises(CheckpointError, match=r"m\.pt: model state does not match") as info:
        load_checkpoint(path, wider)
    assert "size mismatch" in str(info.value)
    other = torch.nn.Linear(3, 1)
    with pytest.raises(CheckpointError, match="Missing key"):
        load_checkpoint(path, other)
    with pytest.raises(CheckpointError, match="optimizer state does not match"):
        load_checkpoint(path, None, torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))]))
    no_optimizer = save_checkpoint(tmp_path / "n.pt", model=model, epoch=1, step=1)
    with pytest.raises(CheckpointError, match="holds no optimizer state"):
        load_checkpoint(no_optimizer, model, optimizer)


def test_failed_save_leaves_nothing_behind(tmp_path, monkeypatch):
    model, optimizer, _ = small_setup()
    path = tmp_path / "epoch_000001.pt"
    save_checkpoint(path, model=model, optimizer=optimizer, epoch=1, step=10)
    good_bytes = path.read_bytes()

    import analysislib.training.checkpoint as checkpoint_module

    real_fsync = os.fsync

    def failing_fsync(fd):
        raise OSError("disk full (simulated)")

    # Fail after the bytes were written to the temporary file, just before the rename.
    monkeypatch.setattr(checkpoint_module.os, "fsync", failing_fsync)
    model[0].weight.data.add_(1.0)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model=model, optimizer=optimizer, epoch=2, step=20)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "epoch_000002.pt", model=model, epoch=2, step=20)
    monkeypatch.setattr(checkpoint_module.os, "fsync", real_fsync)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_000001.pt"]
    assert path.read_bytes() == good_bytes  # the old checkpoint is untouched
    with pytest.raises(TypeError, match="JSON"):
        save_checkpoint(tmp_path / "x.pt", model=model, epoch=1, step=1, extra={"a": object()})
    assert not (tmp_path / "x.pt").exists()


def test_latest_checkpoint_ignores_temporaries(tmp_path):
    assert latest_checkpoint(tmp_path / "nowhere") is None
    for epoch in (2, 10, 9):
        checkpoint_path(tmp_path, epoch).write_bytes(b"x")
    (tmp_path / ".epoch_000011.pt.abc.tmp.pt").write_bytes(b"partial")
    (tmp_path / "best.pt").write_bytes(b"x")
    assert latest_checkpoint(tmp_path) == tmp_path / "epoch_000010.pt"
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "epoch_000002.pt",
        "epoch_000009.pt",
        "epoch_000010.pt",
    ]


# --------------------------------------------------------------------------- fit and resume

RESUME_CASES = {
    "per-epoch": {"epochs": 4, "raise_at_step": 15},
    "cycles": {
        "epochs": 5,
        "raise_at_step": 21,
        "cycle_length": 2,
        "lr_decay_factor": 0.5,
        "early_stopping": "patience-3",
    },
}


def resume_kwargs(case: str) -> dict:
    kwargs = dict(RESUME_CASES[case])
    if kwargs.get("early_stopping") == "patience-3":
        kwargs["early_stopping"] = EarlyStopping(patience=3)
    return kwargs


@pytest.mark.parametrize("case", sorted(RESUME_CASES))
def test_interrupted_and_resumed_run_matches_uninterrupted(tmp_path, case):
    reference, ref_result = worker.train_toy(
        checkpoint_dir=tmp_path / "ref", **{**resume_kwargs(case), "raise_at_step": None}
    )
    kwargs = resume_kwargs(case)
    with pytest.raises(KeyboardInterrupt):
        worker.train_toy(checkpoint_dir=tmp_path / "run", **kwargs)
    # 6 steps per epoch: the interruption hits the third (or fourth) epoch mid-way.
    done = kwargs["raise_at_step"] // 6
    assert latest_checkpoint(tmp_path / "run") == checkpoint_path(tmp_path / "run", done)
    assert not any(p.name.startswith(".") for p in (tmp_path / "run").iterdir())

    kwargs = {**resume_kwargs(case), "raise_at_step": None}
    resumed, result = worker.train_toy(checkpoint_dir=tmp_path / "run", **kwargs)
    assert result.resumed_from == checkpoint_path(tmp_path / "run", done)
    assert_same_parameters(reference, resumed)
    assert result.history == ref_result.history
    assert (result.steps, result.epochs_completed) == (
        ref_result.steps,
        ref_result.epochs_completed,
    )
    assert result.best_epoch == ref_result.best_epoch
    if case == "cycles":
        metrics = [r.get("metric") for r in result.history]
        losses = [r["loss"] for r in result.history]
        # Cycle ends at epochs 2, 4 and the final epoch 5; metric = mean loss of the cycle.
        assert metrics[0] is None and metrics[2] is None
        assert metrics[1] == pytest.approx(np.mean(losses[0:2]))
        assert metrics[3] == pytest.approx(np.mean(losses[2:4]))
        assert metrics[4] == pytest.approx(losses[4])


def test_run_killed_with_sigkill_resumes_exactly(tmp_path):
    out = tmp_path / "killed"
    out.mkdir()
    args = [
        "--out",
        str(out),
        "--epochs",
        "4",
        "--local-batch",
        "8",
        "--dropout",
        "0.3",
        "--noise",
        "0.05",
        "--kill-at-step",
        "15",
    ]
    proc = subprocess.run(
        [sys.executable, str(WORKER), *args],
        check=False,
        env=subprocess_env(),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert not (out / "rank0.pt").exists()
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == [
        "epoch_000001.pt",
        "epoch_000002.pt",
    ]

    reference, _ = worker.train_toy(checkpoint_dir=None, epochs=4, dropout=0.3, noise=0.05)
    resumed, result = worker.train_toy(
        checkpoint_dir=out / "checkpoints", epochs=4, dropout=0.3, noise=0.05
    )
    assert result.resumed_from.name == "epoch_000002.pt"
    assert_same_parameters(reference, resumed)
    # keep_last=2 pruned the older files; best.pt is the lowest-loss epoch.
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == [
        "epoch_000003.pt",
        "epoch_000004.pt",
    ]
    assert result.best_checkpoint == out / "checkpoints" / "best.pt"
    assert read_checkpoint_header(result.best_checkpoint)["epoch"] == result.best_epoch


def test_resume_with_other_seed_is_refused_and_resume_false_restarts(tmp_path):
    worker.train_toy(checkpoint_dir=tmp_path, epochs=1, seed=1)
    with pytest.raises(CheckpointError, match="seed"):
        worker.train_toy(checkpoint_dir=tmp_path, epochs=2, seed=2)
    _, result = worker.train_toy(checkpoint_dir=tmp_path, epochs=1, seed=2, resume=False)
    assert result.resumed_from is None and result.epochs_completed == 1
    assert json.loads(json.dumps(read_checkpoint_header(latest_checkpoint(tmp_path))["extra"]))[
        "run"
    ] == {"seed": 2, "cycle_length": 1}


def linear_problem():
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(16, 2)
    y = x @ torch.tensor([[1.0], [-2.0]])

    def step(model, batch, ctx):
        return torch.nn.functional.mse_loss(model(batch[0]), batch[1])

    return model, optimizer, step, [(x, y)]


class _Killed(RuntimeError):
    """Stands in for a process killed between two file writes."""


def test_resume_repairs_best_copy_after_a_kill_between_the_two_writes(tmp_path, monkeypatch):
    # fit writes epoch_N.pt and then copies it to best.pt; a kill in between leaves a
    # checkpoint naming epoch N the best beside an older best.pt. The resumed run must still
    # return (restore_best) the weights of epoch N, as the uninterrupted run does.
    from analysislib.training import loop

    scores = {0: 0.5, 1: 0.4, 2: 0.45}  # epoch 2 is the best

    def run(directory, epochs=3):
        model, optimizer, step, loader = linear_problem()
        result = fit(
            model,
            optimizer,
            step,
            loader,
            epochs=epochs,
            checkpoint_dir=directory,
            validate=lambda net, epoch: scores[epoch],
            restore_best=True,
            progress=False,
        )
        return model, result

    reference, ref_result = run(tmp_path / "straight")
    assert ref_result.best_epoch == 2

    copy = loop._atomic_copy

    def killed_at_epoch_2(source, destination):
        if Path(source).name == checkpoint_path(tmp_path, 2).name:
            raise _Killed
        copy(source, destination)

    directory = tmp_path / "killed"
    monkeypatch.setattr(loop, "_atomic_copy", killed_at_epoch_2)
    with pytest.raises(_Killed):
        run(directory)
    monkeypatch.setattr(loop, "_atomic_copy", copy)
    assert read_checkpoint_header(latest_checkpoint(directory))["epoch"] == 2
    assert read_checkpoint_header(directory / "best.pt")["epoch"] == 1  # stale copy
    assert not [p.name for p in directory.iterdir() if ".tmp" in p.name]

    model, result = run(directory)
    assert result.resumed_from == checkpoint_path(directory, 2)
    assert result.best_epoch == 2 and result.history == ref_result.history
    assert read_checkpoint_header(result.best_checkpoint)["epoch"] == 2
    assert_same_parameters(model, reference)


def test_early_stopping_and_lr_decay_in_fit(tmp_path):
    model, optimizer, step, loader = linear_problem()
    scores = iter([0.5, 0.4, 0.45, 0.41, 0.3])  # improves, improves, worse, worse

    def validate(model, epoch):
        return next(scores)

    result = fit(
        model,
        optimizer,
        step,
        loader,
        epochs=10,
        validate=validate,
        early_stopping=EarlyStopping(patience=2),
        lr_decay_factor=0.5,
        checkpoint_dir=tmp_path,
        progress=False,
        restore_best=True,
    )
    assert result.stopped_early and result.epochs_completed == 4
    assert [r["improved"] for r in result.history] == [True, True, False, False]
    assert [r["lr"] for r in result.history] == pytest.approx([0.1, 0.1, 0.1, 0.05])
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.025)
    assert (result.best_metric, result.best_epoch) == (0.4, 2)
    best = load_checkpoint(tmp_path / "best.pt", restore_rng=False)
    assert best.epoch == 2
    reloaded = torch.nn.Linear(2, 1)
    load_checkpoint(tmp_path / "best.pt", reloaded, restore_rng=False)
    assert_same_parameters(model, reloaded)  # restore_best put the epoch-2 weights back

    # Resuming a run that already stopped early does nothing more.
    again = fit(
        model,
        optimizer,
        step,
        loader,
        epochs=10,
        checkpoint_dir=tmp_path,
        early_stopping=EarlyStopping(patience=2),
        progress=False,
    )
    assert again.stopped_early and again.steps == 4 and len(again.history) == 4


def test_fit_step_outputs_logs_and_errors():
    model, optimizer, step, loader = linear_problem()

    def step_with_logs(model, batch, ctx):
        loss = step(model, batch, ctx)
        return {"loss": loss, "half": loss.detach() / 2}

    result = fit(model, optimizer, step_with_logs, loader, epochs=2, progress=False)
    assert result.history[0]["half"] == pytest.approx(result.history[0]["loss"] / 2)
    assert result.last_checkpoint is None and result.steps == 2

    with pytest.raises(TypeError, match="scalar loss tensor"):
        fit(model, optimizer, lambda m, b, c: 1.0, loader, epochs=1, progress=False)

    def nan_step(model, batch, ctx):
        return step(model, batch, ctx) * float("nan")

    with pytest.raises(FloatingPointError, match="epoch 1"):
        fit(model, optimizer, nan_step, loader, epochs=1, progress=False)
    with pytest.raises(ValueError, match="cycle_length"):
        fit(model, optimizer, step, loader, epochs=1, cycle_length=0)


def test_progress_bars_can_be_switched_off(capsys, monkeypatch):
    model, optimizer, step, loader = linear_problem()
    fit(model, optimizer, step, loader, epochs=1, progress=True)
    assert "training" in capsys.readouterr().err
    monkeypatch.setenv("ANALYSISLIB_PROGRESS", "0")
    assert progress_enabled(None) is False and progress_enabled(True) is True
    fit(model, optimizer, step, loader, epochs=1)
    assert capsys.readouterr().err == ""
    monkeypatch.delenv("ANALYSISLIB_PROGRESS")
    assert progress_enabled(None) is True


# --------------------------------------------------------------------------- DDP


def test_sharded_sampler_is_world_size_invariant():
    single = distributed_sampler(10, seed=3, num_replicas=1, rank=0)
    shards = [distributed_sampler(10, seed=3, num_replicas=2, rank=r) for r in (0, 1)]
    for epoch in (0, 1):
        for sampler in (single, *shards):
            sampler.set_epoch(epoch)
        order = list(single)
        assert sorted(order) == list(range(10))
        # Local batches of 2 per rank make up the single-process batches of 4.
        local = [list(s) for s in shards]
        for k in range(2):
            assert sorted(local[0][2 * k : 2 * k + 2] + local[1][2 * k : 2 * k + 2]) == sorted(
                order[4 * k : 4 * k + 4]
            )
    single.set_epoch(0)
    first = list(single)
    single.set_epoch(1)
    assert list(single) != first
    padded = [distributed_sampler(5, shuffle=False, num_replicas=2, rank=r) for r in (0, 1)]
    assert [list(s) for s in padded] == [[0, 2, 4], [1, 3, 0]]
    cut = distributed_sampler(5, shuffle=False, num_replicas=2, rank=1, drop_last=True)
    assert list(cut) == [1, 3] and len(cut) == 2


def run_ddp_worker(out: Path, epochs: int, local_batch: int) -> None:
    run_torchrun(WORKER, "--out", str(out), "--epochs", str(epochs), "--local-batch", str(local_batch),
                 timeout=180, env=subprocess_env(), cwd=PROJECT_ROOT)


def test_ddp_two_processes_match_single_process(tmp_path):
    epochs, local_batch = 3, 4
    # Two epochs, then a second torchrun job that resumes from the epoch-2 checkpoint.
    run_ddp_worker(tmp_path, epochs - 1, local_batch)
    run_ddp_worker(tmp_path, epochs, local_batch)
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert rank0["world_size"] == 2 and rank0["backend"] == "gloo"
    assert rank0["resumed_from"] == rank1["resumed_from"]
    assert Path(rank0["resumed_from"]).name == "epoch_000002.pt"
    assert rank0["steps"] == rank1["steps"] == epochs * worker.N_SAMPLES // (2 * local_batch)
    for name in rank0["state"]:
        assert torch.equal(rank0["state"][name], rank1["state"][name]), name

    # Same global batch of 8 in one process: DDP's gradient averaging gives the same weights.
    single, result = worker.train_toy(
        checkpoint_dir=None, epochs=epochs, batch_size=2 * local_batch, dropout=0.0, noise=0.0
    )
    for name, value in single.state_dict().items():
        torch.testing.assert_close(rank0["state"][name], value, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        [r["loss"] for r in rank0["history"]], [r["loss"] for r in result.history], rtol=1e-5
    )
    # Only rank 0 wrote checkpoints, holding the RNG states of both ranks.
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["best.pt", "epoch_000002.pt", "epoch_000003.pt"]
    assert read_checkpoint_header(tmp_path / "checkpoints" / "epoch_000003.pt")["world_size"] == 2
