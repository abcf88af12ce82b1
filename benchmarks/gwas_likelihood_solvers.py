"""Benchmark: DeepWAS window likelihood on banded LD, dense Cholesky/Woodbury against banded solvers.

For each window size ``m`` (``--sizes``, default 1,000 to 32,000 SNPs) the window's targets are
its middle third (DeepWAS evaluates the middle 1 Mb of 3 Mb LD windows), ``n_t = m // 3``, and the
LD is kept to a band of ``--bandwidth`` SNPs (default 500), Bartlett-tapered so that it stays
positive semi-definite (see :mod:`analysislib.gwas.banded`). Every solver works on that same
banded matrix; one run times, in float64, the loss plus its gradient with respect to ``log_F``
(``window_nll(...).backward()``) for

* ``cholesky``: the exact dense solver on the dense form of the band, the reference of every
  ratio (up to ``--dense-max`` SNPs: its window is an ``m x m`` dense array);
* ``woodbury``: the exact determinant-lemma/Woodbury solver, given its cached ``eigh(R_tt)``
  (timed separately as setup), up to ``--dense-max``;
* ``banded``: the exact block-tridiagonal Cholesky of the banded ``C_tt`` (autograd gradient);
* ``banded_cg``: PCG on the banded operator with the block-tridiagonal preconditioner, Hutchinson
  gradient with the probe count from ``--vtol`` and the SLQ log-determinant; ``banded_cg-block``
  (block-Jacobi preconditioner) when asked for with ``--methods``.

Banding the window (``band_window``) is setup, timed separately; the dense methods get a dense
array holding the band's target rows and columns (all they read). ``rel_error`` is the relative
difference of the per-SNP NLL from Cholesky's (from ``banded`` where Cholesky was not run);
``grad_rel_error`` likewise for the gradient. Memory is the peak increase of this process's
resident set during the call (psutil, 5 ms polling).

LD comes from a simulated panel (``simulate_genotypes``, YRI/CEU/CHB, ``--samples`` diploids, MAF
>= 1%): standardised allele counts ``Z`` (SNPs x samples), ``R = Z Z' / n``; the band is computed
from ``Z`` block by block, so no dense ``m x m`` matrix is needed for the banded solvers. ``z`` is
drawn from the model ``z = R b + Z g / sqrt(n)`` with ``b ~ N(0, F)``, ``g ~ N(0, I)`` and
``log F ~ N(log 0.2, 1)`` (``F`` on the z scale, about ``N h^2 / M`` for ``N = 4e5``,
``h^2 = 0.5``, ``M = 1e6``).

Run from the project root::

    .venv/bin/python benchmarks/gwas_likelihood_solvers.py --json build/gwas_solvers.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from edice_vs_baselines import PeakRSS

from analysislib.genotype.stats import minor_allele_frequency
from analysislib.gwas.banded import band_window
from analysislib.gwas.likelihood import prepare_window, window_nll
from analysislib.simulate.genotypes import simulate_genotypes

__all__ = ["main"]

#: Common (MAF >= 1%) SNPs per Mb in the simulated panel with 3 x 1000 diploids (measured in
#: benchmarks/ld_vs_plink.py).
COMMON_SNPS_PER_MB = 3600
METHODS = ("cholesky", "woodbury", "banded", "banded_cg", "banded_cg-block")
DEFAULT_METHODS = ("cholesky", "woodbury", "banded", "banded_cg")


def standardized_panel(samples: int, snps: int, seed: int) -> np.ndarray:
    """``(snps, samples)`` standardised allele counts of the first ``snps`` common SNPs."""
    length = int(snps / COMMON_SNPS_PER_MB * 1e6 * 1.15)
    while True:
        ds = simulate_genotypes("quick", seed=seed, samples_per_population=samples // 3,
                                sequence_length=length).ds
        common = np.flatnonzero(minor_allele_frequency(ds).values >= 0.01)
        if len(common) >= snps:
            break
        length = int(length * 1.5 * snps / max(len(common), 1))
    gt = ds["call_genotype"].isel(variants=common[:snps]).values.astype(np.float64)
    x = gt.sum(axis=2)
    x -= x.mean(axis=1, keepdims=True)
    x /= x.std(axis=1, keepdims=True)
    return x


def loss_and_grad(z, R, log_F0, target, **options):
    """``window_nll`` value, gradient and info for one call."""
    log_F = log_F0.clone().requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        nll, info = window_nll(z, R, log_F, target=target, return_info=True, **options)
    nll.backward()
    return float(nll.detach()), log_F.grad, info


def measured(fn, repeats: int):
    """Median seconds over ``repeats`` calls, peak RSS increase (MiB) and the last result."""
    times, peak, out = [], 0.0, None
    for _ in range(repeats):
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
        peak = max(peak, mem.peak_mb)
    return statistics.median(times), peak, out


def dense_band(bw) -> torch.Tensor:
    """``m x m`` dense array with the band's target rows and columns (what dense solvers read)."""
    U = bw.dense_u()
    R = torch.zeros(bw.n_snps, bw.n_snps, dtype=torch.float64)
    R[bw.target, :] = U
    R[:, bw.target] = U.T
    return R


def run_size(Z: np.ndarray, m: int, args: argparse.Namespace, rng: np.random.Generator
             ) -> list[dict]:
    """Every requested solver on the first window of ``m`` SNPs; one JSON row per method."""
    Zm = Z[:m]
    n_ref = Zm.shape[1]
    t = slice(m // 3, m // 3 + m // 3)
    log_F = torch.tensor(rng.normal(math.log(0.2), 1.0, m))
    b = rng.standard_normal(m) * np.exp(0.5 * log_F.numpy())
    z = (Zm @ (Zm.T @ b / n_ref + rng.standard_normal(n_ref) / math.sqrt(n_ref)))[t]
    bw_seconds, _, bw = measured(lambda: band_window(
        target=t, bandwidth=args.bandwidth, n_snps=m,
        block_fn=lambda rows, cols: Zm[rows] @ Zm[cols].T / n_ref), 1)
    base = {"window": m, "bandwidth": args.bandwidth, "n_targets": t.stop - t.start}
    rows, results = [], {}
    cg = {"vtol": args.vtol, "tol": args.tol, "seed": 0, "max_iter": args.max_iter}
    dense = m <= args.dense_max and any(k in args.methods for k in ("cholesky", "woodbury"))
    R = dense_band(bw) if dense else None
    for method in args.methods:
        setup = bw_seconds if method.startswith("banded") else 0.0
        if method in ("cholesky", "woodbury") and not dense:
            continue
        if method == "cholesky":
            call = lambda: loss_and_grad(z, R, log_F, t)
        elif method == "woodbury":
            setup, _, fac = measured(lambda: prepare_window(R, target=t, spectral=False), 1)
            call = lambda fac=fac: loss_and_grad(z, R, log_F, t, method="woodbury",
                                                 factor=fac)
        elif method == "banded":
            call = lambda: loss_and_grad(z, bw, log_F, t, method="banded")
        else:
            pc = "block" if method.endswith("-block") else "tridiagonal"
            call = lambda pc=pc: loss_and_grad(z, bw, log_F, t, method="banded_cg",
                                               preconditioner=pc, **cg)
        seconds, memory, (value, grad, info) = measured(call, args.repeats)
        results[method] = (value, grad)
        rows.append({**base, "method": method, "seconds": seconds, "setup_seconds": setup,
                     "iterations": info.cg_iterations, "probe_iterations": info.probe_iterations,
                     "n_probes": info.n_probes, "memory_mb": memory, "nll": value,
                     "logdet_stderr_per_snp": info.logdet_stderr / base["n_targets"],
                     "grad_rel_stderr": info.grad_rel_stderr})
        print(f"#   m={m} {method}: {seconds:.3f} s (setup {setup:.2f} s), {memory:.0f} MiB, "
              f"iterations {info.cg_iterations}, probes {info.n_probes}", flush=True)
    reference = "cholesky" if "cholesky" in results else "banded"
    for row in rows:
        if reference in results:
            ref_value, ref_grad = results[reference]
            value, grad = results[row["method"]]
            row["rel_error"] = abs(value - ref_value) / abs(ref_value)
            row["grad_rel_error"] = float((grad - ref_grad).norm() / ref_grad.norm())
            row["reference"] = reference
    return rows


def loglog_slope(rows: list[dict], method: str) -> float | None:
    """Least-squares slope of log(seconds) against log(window) for one method."""
    pts = [(math.log(r["window"]), math.log(r["seconds"])) for r in rows if r["method"] == method]
    if len(pts) < 2:
        return None
    x, y = np.array(pts).T
    return float(np.polyfit(x, y, 1)[0])


def crossover(rows: list[dict], method: str) -> int | None:
    """Smallest window from which ``method`` beats Cholesky at every larger measured size."""
    chol = {r["window"]: r["seconds"] for r in rows if r["method"] == "cholesky"}
    mine = {r["window"]: r["seconds"] for r in rows if r["method"] == method}
    sizes = sorted(set(chol) & set(mine))
    best = None
    for size in reversed(sizes):
        if mine[size] < chol[size]:
            best = size
        else:
            break
    return best


def fmt(x, spec: str = ".3f") -> str:
    """Format a number or a dash when missing."""
    return "-" if x is None else format(x, spec)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark, print the tables and optionally write JSON rows."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+",
                    default=[1000, 2000, 4000, 8000, 16000, 32000])
    ap.add_argument("--bandwidth", type=int, default=500, help="LD band in SNPs")
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=list(DEFAULT_METHODS))
    ap.add_argument("--samples", type=int, default=3000, help="panel diploids (3 populations)")
    ap.add_argument("--vtol", type=float, default=0.1,
                    help="Hutchinson target: relative standard error of the gradient")
    ap.add_argument("--tol", type=float, default=1e-6, help="PCG relative tolerance")
    ap.add_argument("--max-iter", type=int, default=3000)
    ap.add_argument("--dense-max", type=int, default=16000,
                    help="largest window for the dense solvers (an m x m float64 array)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path, help="write the rows as a JSON list here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)

    t0 = time.perf_counter()
    Z = standardized_panel(args.samples, max(args.sizes), args.seed)
    print(f"# panel: {Z.shape[0]} common SNPs x {Z.shape[1]} diploids, simulated in "
          f"{time.perf_counter() - t0:.1f} s")
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{args.threads} thread(s), {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; "
          f"bandwidth {args.bandwidth} (Bartlett taper), vtol={args.vtol}, tol={args.tol}")
    rows: list[dict] = []
    for m in args.sizes:
        rows += run_size(Z, m, args, rng)
        if args.json:  # rewritten after each size, so a long run leaves its rows behind
            args.json.parent.mkdir(parents=True, exist_ok=True)
            tmp = args.json.with_name(args.json.name + ".tmp")
            tmp.write_text(json.dumps(rows, indent=1))
            tmp.replace(args.json)

    methods = [k for k in args.methods if any(r["method"] == k for r in rows)]
    print("\nloss + gradient per window, seconds (ratio to Cholesky; < 1 is faster)")
    print(f"{'window':>7} {'n_t':>6} " + " ".join(f"{k:>22}" for k in methods))
    for m in args.sizes:
        by = {r["method"]: r for r in rows if r["window"] == m}
        chol = by.get("cholesky", {}).get("seconds")
        cells = []
        for k in methods:
            r = by.get(k)
            ratio = f" ({r['seconds'] / chol:.2f})" if r and chol else ""
            cells.append(f"{(fmt(r['seconds']) + ratio) if r else '-':>22}")
        print(f"{m:>7} {m // 3:>6} " + " ".join(cells))
    print("\nsetup seconds / peak memory MiB / iterations (z solve, probes) / probes / "
          "rel. error of the NLL and of the gradient against the reference")
    for r in rows:
        print(f"{r['window']:>7} {r['method']:>16}: setup {r['setup_seconds']:.2f}, "
              f"{r['memory_mb']:.0f} MiB, it {fmt(r['iterations'], 'd')}/"
              f"{fmt(r['probe_iterations'], 'd')}, probes {fmt(r['n_probes'], 'd')}, "
              f"rel_error {fmt(r.get('rel_error'), '.1e')}, grad {fmt(r.get('grad_rel_error'), '.1e')}"
              f" (vs {r.get('reference', '-')})")
    for k in methods:
        if k.startswith("banded"):
            print(f"\n{k}: log-log slope of seconds against window {fmt(loglog_slope(rows, k), '.2f')}"
                  f"; beats Cholesky from window {fmt(crossover(rows, k), 'd')} on")
    print(f"cholesky: log-log slope {fmt(loglog_slope(rows, 'cholesky'), '.2f')}")


if __name__ == "__main__":
    main()
