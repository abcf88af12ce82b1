"""Toy training job for tests/test_training.py: run under torchrun (DDP) or as a plain process.

The same ``train_toy`` runs in-process in the tests (reference runs) and in subprocesses:

* ``torchrun --nproc_per_node=2 tests/ddp_worker.py --out DIR --local-batch 4`` trains with
  DDP on gloo and writes each rank's final parameters to ``DIR/rank{r}.pt``;
* ``python tests/ddp_worker.py --out DIR --kill-at-step N`` sends itself SIGKILL at optimizer
  step ``N``, leaving only the checkpoints written before, to test exact resume
  (``raise_at_step`` does the same in-process with ``KeyboardInterrupt``).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from analysislib.training import (
    cleanup_distributed,
    distributed_sampler,
    fit,
    init_distributed,
    seed_everything,
    wrap_ddp,
)

N_SAMPLES, N_FEATURES = 48, 6


def toy_data() -> TensorDataset:
    """A fixed regression problem: y = x @ w + noise."""
    generator = torch.Generator().manual_seed(1234)
    x = torch.randn(N_SAMPLES, N_FEATURES, generator=generator)
    w = torch.randn(N_FEATURES, 1, generator=generator)
    y = x @ w + 0.1 * torch.randn(N_SAMPLES, 1, generator=generator)
    return TensorDataset(x, y)


def toy_model(dropout: float) -> torch.nn.Module:
    """A small MLP; dropout draws on the global torch RNG."""
    return torch.nn.Sequential(
        torch.nn.Linear(N_FEATURES, 16),
        torch.nn.Tanh(),
        torch.nn.Dropout(dropout),
        torch.nn.Linear(16, 1),
    )


def train_toy(
    *,
    checkpoint_dir: Path | None,
    epochs: int = 4,
    batch_size: int = 8,
    dropout: float = 0.3,
    noise: float = 0.05,
    seed: int = 7,
    kill_at_step: int | None = None,
    raise_at_step: int | None = None,
    device: str = "cpu",
    **fit_kwargs: object,
) -> tuple[torch.nn.Module, object]:
    """Train the toy model; sharded over ranks in a DDP job (``batch_size`` is per rank)."""
    seed_everything(seed)
    model = wrap_ddp(toy_model(dropout), torch.device(device))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    dataset = toy_data()
    sampler = distributed_sampler(dataset, seed=seed, shuffle=True)

    def make_loader(epoch: int, generator: torch.Generator) -> DataLoader:
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler)

    def train_step(model: torch.nn.Module, batch: tuple, ctx: object) -> torch.Tensor:
        if kill_at_step is not None and ctx.step == kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)
        if raise_at_step is not None and ctx.step == raise_at_step:
            raise KeyboardInterrupt(f"simulated interruption at step {ctx.step}")
        x, y = batch
        # Input noise from the per-epoch stream exercises ctx.generator across a resume.
        if noise:
            x = x + noise * torch.randn(x.shape, generator=ctx.generator)
        return torch.nn.functional.mse_loss(model(x), y)

    result = fit(
        model,
        optimizer,
        train_step,
        make_loader,
        epochs=epochs,
        seed=seed,
        checkpoint_dir=checkpoint_dir,
        progress=False,
        **fit_kwargs,
    )
    return model, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--local-batch", type=int, default=4)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--noise", type=float, default=0.0)
    parser.add_argument("--kill-at-step", type=int, default=None)
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    ctx = init_distributed("cpu")
    try:
        model, result = train_toy(
            checkpoint_dir=args.out / "checkpoints",
            epochs=args.epochs,
            batch_size=args.local_batch,
            dropout=args.dropout,
            noise=args.noise,
            kill_at_step=args.kill_at_step,
            device=str(ctx.device),
        )
        inner = model.module if hasattr(model, "module") else model
        state = {name: tensor.detach().clone() for name, tensor in inner.state_dict().items()}
        torch.save(
            {
                "state": state,
                "steps": result.steps,
                "world_size": ctx.world_size,
                "backend": ctx.backend,
                "history": result.history,
                "resumed_from": str(result.resumed_from or ""),
            },
            args.out / f"rank{ctx.rank}.pt",
        )
    finally:
        cleanup_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
