"""Benchmark: genotype calls per second of ``read_vcf`` against ``bcftools query``.

Both read the same files in the same run: the real 1000 Genomes chr22 file (500 samples ×
10,490 phased SNPs) and, optionally, a larger simulated file written with ``write_vcf`` (GT only,
or GT:DS:GP as an imputation server would write it). ``read_vcf`` is timed up to a computed
``call_genotype`` NumPy array reading GT only (eagerly, and lazily with dask), and for files with
DS/GP also with every field computed;
``bcftools query -f '[%GT\\t]\\n'`` is timed writing to /dev/null, so it pays for decoding and
formatting but not for building an array. The ratio is read_vcf's rate over bcftools' rate.

Run from the project root::

    .venv/bin/python benchmarks/vcf_read_throughput.py --simulate-variants 40000
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
from collections.abc import Callable
from pathlib import Path

import numpy as np

from analysislib.genotype.dataset import create_genotype_dataset
from analysislib.io.vcf import LAZY_THRESHOLD_BYTES, read_vcf, write_vcf

__all__ = ["main"]

DEFAULT_DATASET = "1kg_chr22_array500"


def _catalog_vcf(name: str) -> Path:
    """The VCF of a catalog dataset (resolved through the mirror, cache or origin)."""
    from analysislib.catalog import fetch

    return next(p for rel, p in fetch(name).items() if rel.endswith(".vcf.gz"))


def best_time(action: Callable[[], object], repeats: int) -> float:
    """Smallest wall-clock time of ``repeats`` runs (the least disturbed by other load)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return min(times)


def simulate(path: Path, n_variants: int, n_samples: int, probabilities: bool, seed: int) -> Path:
    """Write a phased diploid VCF with random allele frequencies (and DS/GP if asked)."""
    rng = np.random.default_rng(seed)
    frequency = rng.beta(0.5, 2.0, size=n_variants)[:, None, None]
    gt = (rng.random((n_variants, n_samples, 2)) < frequency).astype(np.int8)
    extra = {}
    if probabilities:
        gp = rng.dirichlet([0.3, 0.3, 0.3], size=(n_variants, n_samples)).astype(np.float32)
        extra = {"call_genotype_probability": gp, "call_dosage": gp[..., 1] + 2 * gp[..., 2]}
    ds = create_genotype_dataset(
        contigs=["20"], variant_contig=np.zeros(n_variants, np.int32),
        variant_position=np.arange(1, n_variants + 1, dtype=np.int64) * 37,
        variant_allele=np.array([["A", "G"]] * n_variants, dtype=object),
        sample_id=[f"sim{i:05d}" for i in range(n_samples)], call_genotype=gt,
        call_genotype_phased=np.ones((n_variants, n_samples), bool), **extra)
    return write_vcf(ds, path, compress_level=1)


def bcftools_query(path: Path) -> None:
    with open(os.devnull, "wb") as sink:
        subprocess.run(["bcftools", "query", "-f", "[%GT\t]\n", str(path)], stdout=sink, check=True)


def _has_probabilities(path: Path) -> bool:
    ds = read_vcf(path, chunk_variants=10**9)  # lazy: reads only the site columns
    return "call_dosage" in ds or "call_genotype_probability" in ds


def measure(path: Path, repeats: int, chunk_variants: int | None) -> list[tuple[str, float, float]]:
    """Rows of (method, seconds, calls per second) for one file."""
    ds = read_vcf(path, fields=("GT",))
    n_calls = ds.sizes["variants"] * ds.sizes["samples"]
    print(f"\n{path.name}: {ds.sizes['variants']:,} variants × {ds.sizes['samples']:,} samples "
          f"= {n_calls:,} genotype calls, {path.stat().st_size / 2**20:.1f} MiB")
    rows = []
    # read_vcf reads files above LAZY_THRESHOLD_BYTES lazily (two passes) unless told otherwise.
    mode = "dask, default chunks" if path.stat().st_size > LAZY_THRESHOLD_BYTES else "eager"
    seconds = best_time(lambda: read_vcf(path, fields=("GT",))["call_genotype"].values, repeats)
    rows.append((f"read_vcf GT ({mode})", seconds, n_calls / seconds))
    if _has_probabilities(path):
        seconds = best_time(lambda: read_vcf(path).compute(), repeats)
        rows.append((f"read_vcf GT+DS+GP ({mode})", seconds, n_calls / seconds))
    if chunk_variants:
        seconds = best_time(lambda: read_vcf(path, chunk_variants=chunk_variants, fields=("GT",))[
            "call_genotype"].values, repeats)
        rows.append((f"read_vcf GT (dask, {chunk_variants} variants/chunk)", seconds,
                     n_calls / seconds))
    seconds = best_time(lambda: bcftools_query(path), repeats)
    rows.append(("bcftools query > /dev/null", seconds, n_calls / seconds))
    reference = rows[-1][2]
    for method, secs, rate in rows:
        print(f"  {method:<44} {secs:8.3f} s  {rate / 1e6:8.2f} M calls/s  ratio {rate / reference:5.2f}")
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print calls per second and the ratio to bcftools."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vcf", type=Path, default=None,
                        help=f"VCF to read (default: catalog dataset {DEFAULT_DATASET})")
    parser.add_argument("--repeats", type=int, default=3, help="runs per method; the best is kept")
    parser.add_argument("--chunk-variants", type=int, default=2000,
                        help="also time a lazy dask read with this chunk size (0 to skip)")
    parser.add_argument("--simulate-variants", type=int, default=0,
                        help="also benchmark simulated files with this many variants (0 to skip)")
    parser.add_argument("--simulate-samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    if shutil.which("bcftools") is None:
        print("bcftools is not installed (apt-get install bcftools)", file=sys.stderr)
        return 2
    version = subprocess.run(["bcftools", "--version"], check=True, capture_output=True,
                             text=True).stdout
    print(f"{datetime.date.today()}  {platform.node()}  {platform.processor() or platform.machine()}"
          f"  {os.cpu_count()} CPUs  Python {platform.python_version()}  "
          f"{version.splitlines()[0]}")
    files = [args.vcf if args.vcf is not None else _catalog_vcf(DEFAULT_DATASET)]
    with tempfile.TemporaryDirectory() as scratch:
        if args.simulate_variants:
            for probabilities in (False, True):
                name = "sim_gt_ds_gp.vcf.gz" if probabilities else "sim_gt.vcf.gz"
                files.append(simulate(Path(scratch) / name, args.simulate_variants,
                                      args.simulate_samples, probabilities, args.seed))
        for path in files:
            measure(path, args.repeats, args.chunk_variants or None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
