"""Benchmark: time of one DeepWAS training epoch against the number of SNPs (fixed windows).

DeepWAS's claim (Amin et al. 2025, arXiv 2506.19598; ``AlanNawzadAmin/DeepWAS``) is that
cutting the LD matrix into windows of fixed size makes the full likelihood cost linear in the
number of SNPs: each window costs the same (a Cholesky factor of its target block), and the
number of windows grows with ``M``. This script measures it. The reference is the linear law
itself: the script fits ``time = a M^k`` by least squares on the log-log scale and prints ``k``
(1 is linear, 3 would be one dense Cholesky of the whole region) and the ratio of the time per
SNP at the largest and smallest ``M`` (1 is linear).

Data: a synthetic panel whose haplotypes copy their left neighbour with probability 0.85 (fast
to make at any size; LD decays along the genome), random smooth annotations, and the GWAS
simulator's z-scores, block-diagonal LD and split (:func:`analysislib.simulate.gwas.
simulate_gwas_from_panel`), with every SNP in the training split. Per model and objective the
script times :func:`analysislib.gwas.priors.prepare_windows` (extracting the dense window
matrices) and one epoch of :func:`analysislib.gwas.priors.train_prior` (forward, loss, backward
and AdamW steps over all windows), best of ``--repeats``.

Reading the conv rows: the model runs once per optimizer step on the union of the SNPs of the
step's windows. While ``M`` is small enough for all windows to share one step, flanking SNPs
are computed once; at larger ``M`` a step's windows rarely overlap and each flank is computed
with its window, so the time per SNP steps up once (by up to ``(target + 2 flank) / target``)
and is flat after that. The likelihood rows have no such effect.

Run from the project root::

    .venv/bin/python benchmarks/gwas_epoch_scaling.py --snps 2000 4000 8000 16000
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time

import numpy as np

__all__ = ["main", "synthetic_gwas"]


def synthetic_gwas(m: int, *, n_ref: int = 400, ld_block_snps: int = 500, seed: int = 0):
    """A :class:`~analysislib.simulate.gwas.SimulatedGwas` of ``m`` SNPs, all in ``train``."""
    from analysislib.simulate.gwas import TrueLogF, simulate_gwas_from_panel

    rng = np.random.default_rng(seed)
    hap = np.empty((m, n_ref), dtype=np.int8)
    hap[0] = rng.random(n_ref) < 0.3
    for j in range(1, m):
        fresh = rng.random(n_ref) < rng.uniform(0.15, 0.5)
        hap[j] = np.where(rng.random(n_ref) < 0.85, hap[j - 1], fresh)
    n_tracks, width = 8, 16
    level = rng.standard_normal((m, n_tracks))
    tracks = level[:, :, None] + 0.3 * rng.standard_normal((m, n_tracks, width))
    scalars = rng.standard_normal((m, 2))
    names = [f"cell000:t{k}" for k in range(n_tracks)]
    truth = TrueLogF(linear={"cell000:t0": 1.0, "cell000:t1": -0.5, "s0": 0.5})
    return simulate_gwas_from_panel(
        hap, np.arange(1, m + 1) * 100, tracks, scalars, track_names=names,
        scalar_names=["s0", "s1"], truth=truth, rng=seed, h2=0.01 * m / 2000,
        ld_block_snps=ld_block_snps, n_segments=1, test_fraction=0.0, valid_fraction=0.0)


def _time_epoch(sim, kind: str, objective: str, *, target: int, flank: int, repeats: int,
                per_step: int) -> tuple[float, float, int]:
    import torch

    from analysislib.gwas.priors import (
        PriorTrainingConfig,
        feature_set,
        make_prior,
        prepare_windows,
        train_prior,
    )

    fs = feature_set(sim, "all")
    best_prep = best_epoch = float("inf")
    n_windows = 0
    for _ in range(repeats):
        started = time.perf_counter()
        n_windows = len(prepare_windows(sim, "train", target_size=target, flank=flank))
        best_prep = min(best_prep, time.perf_counter() - started)
        torch.manual_seed(0)
        model = make_prior(kind, len(fs.tracks), len(fs.scalars), sim.annotations.shape[2])
        config = PriorTrainingConfig(objective=objective, epochs=1, target_size=target,
                                     flank=flank, windows_per_step=per_step, device="cpu")
        trained = train_prior(model, sim, config, features=fs, validate=False)
        best_epoch = min(best_epoch, trained.epoch_seconds[0])
    return best_prep, best_epoch, n_windows


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table (returns the exit code)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--snps", type=int, nargs="+", default=[2000, 4000, 8000, 16000])
    parser.add_argument("--target", type=int, default=250, help="target SNPs per window")
    parser.add_argument("--flank", type=int, default=250, help="context SNPs on each side")
    parser.add_argument("--models", nargs="+", default=["linear:likelihood", "conv:likelihood",
                                                         "linear:ldsr"])
    parser.add_argument("--windows-per-step", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    print(f"# DeepWAS epoch time vs SNPs; window = {args.target} targets + {args.flank} flank "
          f"each side; {datetime.date.today()}, {platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, {args.threads} thread(s)")
    sims = {m: synthetic_gwas(m) for m in sorted(args.snps)}
    print(f"{'model:objective':<20} {'SNPs':>7} {'windows':>8} {'prepare s':>10} "
          f"{'epoch s':>9} {'ms / SNP':>9}")
    for spec in args.models:
        kind, objective = spec.split(":")
        times = []
        for m, sim in sims.items():
            prep, epoch, n_windows = _time_epoch(sim, kind, objective, target=args.target,
                                                 flank=args.flank, repeats=args.repeats,
                                                 per_step=args.windows_per_step)
            times.append(epoch)
            print(f"{spec:<20} {m:>7} {n_windows:>8} {prep:>10.3f} {epoch:>9.3f} "
                  f"{1e3 * epoch / m:>9.4f}", flush=True)
        ms = np.array(list(sims), dtype=float)
        slope = np.polyfit(np.log(ms), np.log(np.maximum(times, 1e-9)), 1)[0]
        ratio = (times[-1] / ms[-1]) / (times[0] / ms[0])
        print(f"{spec:<20} log-log slope k = {slope:.2f} (1 = linear); time per SNP at "
              f"{int(ms[-1])} / at {int(ms[0])} = {ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
