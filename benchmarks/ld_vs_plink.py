"""Benchmark: banded LD (``analysislib.ld``) against ``plink1.9 --r2`` on the same simulated panel.

A YRI/CEU/CHB panel is simulated (``simulate_genotypes``), filtered to MAF >= 1% and cut to the
first ``--snps`` variants. plink1.9 gets a .bed made beforehand (the VCF -> bed conversion is not
timed) and runs ``--r2 --ld-window W+1 --ld-window-kb 100000 --ld-window-r2 T --threads 2``
(plink's ``--ld-window N`` pairs each variant with the next N - 1, so W + 1 matches our window of
W); its time includes reading the .bed and writing the pairs. We time, from genotypes in memory:

* ``ld_band`` (dosage unit, the allele-count correlation plink reports) reduced to the number of
  pairs with r^2 >= T, so no pair list is materialised;
* ``ld_pairs``, which also builds the DataFrame of those pairs (closest to plink's text output).

Both run on the dask threaded scheduler with ``--threads`` workers and one BLAS thread each.
Achieved GFLOP/s counts the matrix products only: ``2 n m (sub_block + window)`` flops for n
samples and m variants (each sub-block of rows is multiplied against itself plus the next
``window`` rows).

Run from the project root::

    .venv/bin/python benchmarks/ld_vs_plink.py --samples 3000 --snps 25000 --window 1000
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from analysislib.genotype.stats import minor_allele_frequency
from analysislib.io.vcf import write_vcf
from analysislib.ld import ld_band, ld_pairs
from analysislib.simulate.genotypes import simulate_genotypes

__all__ = ["main"]

#: Common (MAF >= 1%) SNPs per Mb in the simulated panel with 3 x 1000 diploids (measured).
COMMON_SNPS_PER_MB = 3600


def simulated_panel(samples: int, snps: int, min_maf: float, seed: int):
    """In-memory panel of ``samples`` diploids (split over 3 populations) and ``snps`` common SNPs."""
    length = int(snps / COMMON_SNPS_PER_MB * 1e6 * 1.15)
    while True:
        ds = simulate_genotypes("quick", seed=seed, samples_per_population=samples // 3,
                                sequence_length=length).ds
        common = np.flatnonzero(minor_allele_frequency(ds).values >= min_maf)
        if len(common) >= snps:
            return ds.isel(variants=common[:snps]).compute()
        length = int(length * 1.5 * snps / max(len(common), 1))


def run_plink(bfile: Path, out: Path, window: int, threshold: float, threads: int) -> tuple[float, int]:
    """Seconds of one ``plink1.9 --r2`` run and the number of pairs it reported."""
    command = ["plink1.9", "--bfile", str(bfile), "--r2", "--ld-window", str(window + 1),
               "--ld-window-kb", "100000", "--ld-window-r2", str(threshold),
               "--threads", str(threads), "--out", str(out)]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    seconds = time.perf_counter() - start
    with open(out.with_suffix(".ld"), "rb") as handle:
        pairs = sum(1 for _ in handle) - 1
    return seconds, pairs


def count_pairs(ds, *, window: int, chunk: int, sub_block: int, threshold: float,
                threads: int) -> int:
    """Pairs with r^2 >= threshold, counted from the lazy band without materialising pairs."""
    from threadpoolctl import threadpool_limits

    band = ld_band(ds, window=window, unit="dosage", chunk_variants=chunk, sub_block=sub_block)
    with threadpool_limits(limits=1, user_api="blas"):
        return int((band**2 >= threshold).sum().compute(scheduler="threads", num_workers=threads))


def list_pairs(ds, *, window: int, chunk: int, sub_block: int, threshold: float,
               threads: int) -> int:
    """Rows of the ``ld_pairs`` DataFrame (pairs with r^2 >= threshold)."""
    import dask

    with dask.config.set(scheduler="threads", num_workers=threads):
        return len(ld_pairs(ds, window=window, threshold_r2=threshold, unit="dosage",
                            chunk_variants=chunk, sub_block=sub_block))


def best_of(repeats: int, action):
    """Smallest wall time over ``repeats`` runs and the (last) result."""
    best, result = np.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        result = action()
        best = min(best, time.perf_counter() - start)
    return best, result


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print wall times, their ratio, pair counts and GFLOP/s."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=3000, help="diploid samples (3 populations)")
    parser.add_argument("--snps", type=int, default=25_000, help="variants with MAF >= --maf")
    parser.add_argument("--maf", type=float, default=0.01)
    parser.add_argument("--window", type=int, default=1000, help="partners per variant")
    parser.add_argument("--chunk", type=int, default=4096, help="variants per dask chunk")
    parser.add_argument("--sub-block", type=int, default=512, help="rows per matrix product")
    parser.add_argument("--threshold", type=float, default=0.2, help="r^2 reported at or above")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="runs per method; the best is kept")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    if shutil.which("plink1.9") is None:
        print("plink1.9 is not installed (apt-get install plink1.9)", file=sys.stderr)
        return 2
    version = subprocess.run(["plink1.9", "--version"], check=True, capture_output=True,
                             text=True).stdout
    print(f"{datetime.date.today()}  {platform.node()}  {platform.processor() or platform.machine()}"
          f"  {os.cpu_count()} CPUs  Python {platform.python_version()}  {version.strip()}")

    start = time.perf_counter()
    ds = simulated_panel(args.samples, args.snps, args.maf, args.seed)
    n, m = ds.sizes["samples"], ds.sizes["variants"]
    span = (ds["variant_position"].values[-1] - ds["variant_position"].values[0]) / 1e6
    print(f"panel: {n:,} samples x {m:,} SNPs (MAF >= {args.maf}) over {span:.2f} Mb, "
          f"simulated in {time.perf_counter() - start:.1f} s")
    print(f"window {args.window} SNPs, r^2 >= {args.threshold}, {args.threads} threads, "
          f"chunk {args.chunk}, sub-block {args.sub_block}")

    with tempfile.TemporaryDirectory() as scratch:
        scratch_dir = Path(scratch)
        vcf = write_vcf(ds, scratch_dir / "panel.vcf.gz", compress_level=1)
        subprocess.run(["plink1.9", "--vcf", str(vcf), "--double-id", "--allow-extra-chr",
                        "--make-bed", "--out", str(scratch_dir / "panel")],
                       check=True, capture_output=True)
        runs = [run_plink(scratch_dir / "panel", scratch_dir / "ld", args.window,
                          args.threshold, args.threads) for _ in range(args.repeats)]
        plink_seconds, plink_pairs = min(seconds for seconds, _ in runs), runs[-1][1]

    band_seconds, band_pairs = best_of(args.repeats, lambda: count_pairs(
        ds, window=args.window, chunk=args.chunk, sub_block=args.sub_block,
        threshold=args.threshold, threads=args.threads))
    table_seconds, table_pairs = best_of(args.repeats, lambda: list_pairs(
        ds, window=args.window, chunk=args.chunk, sub_block=args.sub_block,
        threshold=args.threshold, threads=args.threads))

    flops = 2.0 * n * m * (args.sub_block + args.window)
    rows = [
        ("plink1.9 --r2 (bed in, text out)", plink_seconds, plink_pairs),
        ("ld_band -> count r^2 >= T", band_seconds, band_pairs),
        ("ld_pairs -> DataFrame", table_seconds, table_pairs),
    ]
    print(f"\n{'method':<36} {'seconds':>8} {'pairs':>10} {'plink/ours':>10} {'GFLOP/s':>8}")
    for method, seconds, pairs in rows:
        ratio = "" if method.startswith("plink") else f"{plink_seconds / seconds:10.2f}"
        gflops = "" if method.startswith("plink") else f"{flops / seconds / 1e9:8.1f}"
        print(f"{method:<36} {seconds:8.2f} {pairs:>10,} {ratio:>10} {gflops:>8}")
    print(f"\nflops = 2 n m (sub_block + window) = 2 x {n} x {m} x ({args.sub_block} + "
          f"{args.window}) = {flops:.3g}")
    print(f"pair counts: ours - plink = {band_pairs - plink_pairs:+d} "
          "(float32 r^2 against plink's threshold test at the boundary)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
