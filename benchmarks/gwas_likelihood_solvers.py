"""Benchmark: DeepWAS window likelihood, Cholesky against Woodbury against PCG, by window size.

For each window size ``m`` (``--sizes``, default 500 1000 2000 4000) the window's targets are
its middle third (DeepWAS evaluates the middle 1 Mb of 3 Mb LD windows), ``n_t = m // 3``. One
run times, in float64 on the same data, the loss plus its gradient with respect to ``log_F``
(``window_nll(...).backward()``) for

* ``cholesky``: the exact dense solver, the reference of every ratio;
* ``woodbury``: the exact determinant-lemma/Woodbury solver with all eigen-directions, given
  its cached ``F``-independent factor (``eigh(R_tt)``, timed separately as ``setup``), and
  ``woodbury-r``, the same dropping eigen-directions with eigenvalue <= 1e-10 (exact for
  low-rank LD, as here: the panel has fewer samples than large windows have SNPs);
* ``cg-spectral`` / ``cg-target``: PCG with the notes' spectral preconditioner (setup: ``eigh``
  of the whole window) or the target-block variant (setup: ``eigh(R_tt)``), ``vtol`` Hutchinson
  probes (``--vtol``, default 0.1: 100 probes) and the SLQ log-determinant estimate.

It prints times, ratios to Cholesky, NLL values and their relative differences from Cholesky,
and PCG iteration counts of the ``z`` solve with no preconditioner, the spectral one and the
target one (``--max-iter`` caps the unpreconditioned count).

LD comes from a simulated panel (``analysislib.simulate.genotypes.simulate_genotypes``, YRI/CEU/
CHB, ``--samples`` diploids, MAF >= 1%): standardised allele counts ``Z`` (SNPs x samples),
``R = Z Z' / n``, which is PSD by construction (rank <= n). ``z`` is drawn from the model as in
the notes' section 3: ``z = R b + Z g / sqrt(n)`` with ``b ~ N(0, F)``, ``g ~ N(0, I)`` and
``log F ~ N(log 0.2, 1)`` (``F`` on the z scale, about ``N h^2 / M`` for ``N = 4e5``,
``h^2 = 0.5``, ``M = 1e6``).

Run from the project root::

    .venv/bin/python benchmarks/gwas_likelihood_solvers.py --sizes 500 1000 2000 4000
"""

from __future__ import annotations

import argparse
import datetime
import math
import platform
import statistics
import time
import warnings

import numpy as np
import torch

from analysislib.genotype.stats import minor_allele_frequency
from analysislib.gwas.likelihood import cg_operators, pcg, prepare_window, window_nll
from analysislib.simulate.genotypes import simulate_genotypes

__all__ = ["main"]

#: Common (MAF >= 1%) SNPs per Mb in the simulated panel with 3 x 1000 diploids (measured in
#: benchmarks/ld_vs_plink.py).
COMMON_SNPS_PER_MB = 3600


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


def timed(fn, repeats: int) -> tuple[float, object]:
    """Median wall time of ``fn()`` over ``repeats`` calls and the last result."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def loss_and_grad(z, R, log_F0, target, **options):
    """``window_nll`` value and its gradient; returns (value, info)."""
    log_F = log_F0.clone().requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        nll, info = window_nll(z, R, log_F, target=target, return_info=True, **options)
    nll.backward()
    return float(nll.detach()), info


def run_size(Z: np.ndarray, m: int, args: argparse.Namespace, rng: np.random.Generator) -> dict:
    """All solvers on the first window of ``m`` SNPs."""
    Zm = Z[:m]
    n_ref = Zm.shape[1]
    R = torch.tensor(Zm @ Zm.T / n_ref)
    t = slice(m // 3, m // 3 + m // 3)
    log_F = torch.tensor(rng.normal(math.log(0.2), 1.0, m))
    b = rng.standard_normal(m) * np.exp(0.5 * log_F.numpy())
    z_all = R.numpy() @ b + Zm @ rng.standard_normal(n_ref) / math.sqrt(n_ref)
    z = z_all[t]
    row: dict = {"m": m, "n_t": t.stop - t.start}
    reps = args.repeats

    row["cholesky"], (row["v_cholesky"], _) = timed(lambda: loss_and_grad(z, R, log_F, t), reps)

    row["setup_target"], fac = timed(lambda: prepare_window(R, target=t, spectral=False), 1)
    row["woodbury"], (row["v_woodbury"], _) = timed(
        lambda: loss_and_grad(z, R, log_F, t, method="woodbury", factor=fac), reps)
    row["woodbury-r"], (row["v_woodbury-r"], info) = timed(
        lambda: loss_and_grad(z, R, log_F, t, method="woodbury", factor=fac, rank_tol=1e-10),
        reps)
    row["rank"] = info.rank

    cg_opts = {"vtol": args.vtol, "tol": args.tol, "seed": 0, "max_iter": args.max_iter}
    row["cg-target"], (row["v_cg-target"], info_t) = timed(
        lambda: loss_and_grad(z, R, log_F, t, method="cg", factor=fac, preconditioner="target",
                              **cg_opts), reps)
    row["probe_it_target"] = info_t.probe_iterations
    row["slq_se"] = 0.5 / row["n_t"] * info_t.logdet_stderr
    if m <= args.max_spectral:
        row["setup_spectral"], fac_s = timed(lambda: prepare_window(R, target=t), 1)
        row["cg-spectral"], (row["v_cg-spectral"], info_s) = timed(
            lambda: loss_and_grad(z, R, log_F, t, method="cg", factor=fac_s,
                                  preconditioner="spectral", **cg_opts), reps)
        row["probe_it_spectral"] = info_s.probe_iterations
    else:
        fac_s = None
    zt = torch.tensor(z)
    for name, pc, f in (("none", None, None), ("spectral", "spectral", fac_s),
                        ("target", "target", fac)):
        if pc == "spectral" and f is None:
            row[f"it_{name}"] = None
            continue
        matvec, precond = cg_operators(R, log_F, target=t, preconditioner=pc, factor=f)
        res = pcg(matvec, zt, precond, tol=args.tol, max_iter=args.max_iter)
        row[f"it_{name}"] = int(res.iterations[0]) if bool(res.converged[0]) else None
    return row


def fmt(x, spec: str = ".3f") -> str:
    """Format a number or a dash when missing."""
    return "-" if x is None else format(x, spec)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 2000, 4000])
    ap.add_argument("--samples", type=int, default=3000, help="panel diploids (3 populations)")
    ap.add_argument("--vtol", type=float, default=0.1, help="Hutchinson probes = 1/vtol^2")
    ap.add_argument("--tol", type=float, default=1e-6, help="PCG relative tolerance")
    ap.add_argument("--max-iter", type=int, default=3000)
    ap.add_argument("--max-spectral", type=int, default=4000,
                    help="largest window for the spectral preconditioner (its eigh is O(m^3))")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)

    t0 = time.perf_counter()
    Z = standardized_panel(args.samples, max(args.sizes), args.seed)
    print(f"# panel: {Z.shape[0]} common SNPs x {Z.shape[1]} diploids, simulated in "
          f"{time.perf_counter() - t0:.1f} s")
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{args.threads} thread(s), {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; "
          f"vtol={args.vtol} ({max(1, round(1 / args.vtol**2)) if args.vtol else 'unit'} "
          f"probes), tol={args.tol}")
    methods = ["cholesky", "woodbury", "woodbury-r", "cg-spectral", "cg-target"]
    rows = []
    for m in args.sizes:
        row = run_size(Z, m, args, rng)
        rows.append(row)
        print(f"# m={m}: " + ", ".join(f"{k}={fmt(v, '.4g') if isinstance(v, float) else v}"
                                       for k, v in row.items()), flush=True)

    print("\nloss + gradient per window, seconds (ratio = time / cholesky time)")
    print(f"{'m':>6} {'n_t':>5} {'rank':>5} " + " ".join(f"{k:>12}" for k in methods)
          + f" {'setup eigh(Rtt)':>16} {'setup eigh(R)':>14}")
    for r in rows:
        print(f"{r['m']:>6} {r['n_t']:>5} {r['rank']:>5} "
              + " ".join(f"{fmt(r.get(k)):>12}" for k in methods)
              + f" {fmt(r['setup_target']):>16} {fmt(r.get('setup_spectral')):>14}")
    print("\nratios to cholesky (< 1 is faster)")
    for r in rows:
        print(f"{r['m']:>6} " + " ".join(
            f"{k}={fmt(r[k] / r['cholesky'] if r.get(k) is not None else None, '.2f')}"
            for k in methods[1:]))
    print("\nper-SNP NLL values; relative difference from cholesky")
    for r in rows:
        ref = r["v_cholesky"]
        parts = [f"cholesky={ref:.8f}"]
        for k in methods[1:]:
            v = r.get(f"v_{k}")
            parts.append(f"{k}={fmt(None if v is None else abs(v - ref) / abs(ref), '.1e')}")
        print(f"{r['m']:>6} " + " ".join(parts)
              + f" (cg SLQ standard error {r['slq_se']:.1e} per SNP)")
    print("\nPCG iterations for the z solve (tol "
          f"{args.tol}; '-' = not converged in {args.max_iter} or not run) and for probes")
    print(f"{'m':>6} {'none':>6} {'spectral':>9} {'target':>7} {'probes spectral':>16} "
          f"{'probes target':>14}")
    for r in rows:
        print(f"{r['m']:>6} {fmt(r['it_none'], 'd'):>6} {fmt(r['it_spectral'], 'd'):>9} "
              f"{fmt(r['it_target'], 'd'):>7} {fmt(r.get('probe_it_spectral'), 'd'):>16} "
              f"{fmt(r['probe_it_target'], 'd'):>14}")
    wins = [r["m"] for r in rows if r["cg-target"] < r["cholesky"]]
    print("\niterative path (cg-target) faster than cholesky from m = "
          + (str(min(wins)) if wins else "never in this run"))


if __name__ == "__main__":
    main()
