"""Benchmark: autoencoder inference, VCF to VCF, against Beagle 5.4 and Minimac4 in one run.

Real 1000 Genomes chr22 array-site panel from the catalog (``1kg_chr22_array500``): 10% of samples
held out as targets with one SNP in three typed, the rest is the reference panel. A bundle is
trained once on the reference (quick preset, ``--epochs``; not timed against the tools), then, with
the same target VCF and thread count, each repeat times:

* ``impute_vcf`` in this process (bundle load and sha256 check, VCF read, imputation, VCF write),
  with the default NumPy engine (packed ``weights.npy``) and, for comparison, the torch engine
  (per-tile ``.pt`` files, the path of bundles written before packing);
* ``analysislib impute`` as a new process (adds interpreter start and imports; torch is not
  imported), and the imports alone in a new process (the floor of any command-line run);
* ``beagle ref= gt= out= nthreads= gp=true``;
* ``minimac4 ref.msav target.vcf.gz -f GT,DS,GP`` (reference compressed once beforehand).

Ratios are tool time over autoencoder time (medians); the issue's target is >= 20x over Beagle.
Aggregate r^2 at untyped entries is printed for each output so speed is not read alone.

Run from the project root::

    .venv/bin/python benchmarks/dae_inference_vs_hmm.py --threads 2 --repeats 5
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

__all__ = ["main"]


def _timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> int:
    """Train a bundle, then time the three imputers on the same targets and print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40, help="training epochs per tile")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=2, help="training processes")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bundle", type=Path, default=None,
                        help="use this bundle (trained on this split's reference, tile_genome box=25) "
                             "instead of training one; its accuracy reflects its own training")
    args = parser.parse_args()

    from analysislib.catalog import load_catalog
    from analysislib.external import tool_version
    from analysislib.genotype.dae import impute_vcf, train_bundle
    from analysislib.genotype.masking import apply_scenario, parse_scenario, split_samples
    from analysislib.genotype.metrics import aggregate_r2
    from analysislib.io.vcf import read_vcf, write_vcf
    from analysislib.tiling import tile_genome

    print(f"{datetime.date.today()}  {platform.machine()}  Python {platform.python_version()}  "
          f"{tool_version('beagle')}  {tool_version('minimac4')}")
    ds = load_catalog().open("1kg_chr22_array500").compute()
    reference, truth = split_samples(ds, target_fraction=0.1, seed=0)
    masked = apply_scenario(truth, parse_scenario("typed_1in3"), reference=reference)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        ref_vcf, target_vcf, msav = work / "ref.vcf.gz", work / "target.vcf.gz", work / "ref.msav"
        write_vcf(reference, ref_vcf)
        write_vcf(masked.target, target_vcf)
        subprocess.run(["minimac4", "--compress-reference", str(ref_vcf), "-o", str(msav)],
                       check=True, capture_output=True)
        started = time.perf_counter()
        tiles = tile_genome(reference, box=25).tiles
        if args.bundle is not None:
            bundle_dir = args.bundle
            trained = f"given ({bundle_dir})"
        else:
            bundle_dir = work / "bundle"
            train_bundle(reference, tiles, {"batch_size": 32, "learning_rate": 3e-3}, bundle_dir,
                         epochs=args.epochs, n_jobs=args.jobs, progress=False)
            trained = f"trained in {time.perf_counter() - started:.1f} s ({args.epochs} epochs)"
        print(f"targets {masked.target.sizes['samples']} samples x {masked.target.sizes['variants']} "
              f"typed of {ds.sizes['variants']}; bundle of {len(tiles)} tiles {trained}\n")
        times: dict[str, list[float]] = {"dae (in process)": [], "dae (in process, torch)": [],
                                         "dae (analysislib impute)": [], "imports (new process)": [],
                                         "beagle": [], "minimac4": []}
        stages: dict[str, list[float]] = {}
        impute_vcf(bundle_dir, target_vcf, work / "warm.vcf.gz", threads=args.threads, engine="torch")
        for _ in range(args.repeats):
            report = impute_vcf(bundle_dir, target_vcf, work / "dae.vcf.gz", threads=args.threads)
            times["dae (in process)"].append(report.seconds["total"])
            for stage, seconds in report.seconds.items():
                stages.setdefault(stage, []).append(seconds)
            report = impute_vcf(bundle_dir, target_vcf, work / "dae_torch.vcf.gz", threads=args.threads,
                                engine="torch")
            times["dae (in process, torch)"].append(report.seconds["total"])
            times["imports (new process)"].append(_timed(
                [sys.executable, "-c", "import analysislib.cli, analysislib.genotype.dae, analysislib.io.vcf"]))
            times["dae (analysislib impute)"].append(_timed(
                [sys.executable, "-m", "analysislib.cli", "impute", "--models", str(bundle_dir),
                 str(target_vcf), str(work / "dae_cli.vcf.gz"), "--threads", str(args.threads)]))
            times["beagle"].append(_timed(
                ["beagle", f"ref={ref_vcf}", f"gt={target_vcf}", f"out={work / 'beagle'}",
                 f"nthreads={args.threads}", "gp=true", "seed=0"]))
            times["minimac4"].append(_timed(
                ["minimac4", str(msav), str(target_vcf), "-f", "GT,DS,GP", "-O", "vcf.gz",
                 "-o", str(work / "minimac4.vcf.gz"), "-t", str(args.threads)]))

        def score(path: Path) -> float:
            imputed = read_vcf(path)
            row = {int(p): i for i, p in enumerate(truth["variant_position"].values)}
            rows = np.array([row[int(p)] for p in imputed["variant_position"].values])
            true_counts = (truth["call_genotype"].values[rows] > 0).sum(-1)
            return float(aggregate_r2(imputed["call_dosage"].values, true_counts,
                                      np.asarray(masked.score_mask)[rows]))

        outputs = {"dae (in process)": "dae.vcf.gz", "dae (in process, torch)": "dae_torch.vcf.gz",
                   "dae (analysislib impute)": "dae_cli.vcf.gz", "beagle": "beagle.vcf.gz",
                   "minimac4": "minimac4.vcf.gz"}
        medians = {k: statistics.median(v) for k, v in times.items()}
        print(f"{'method':<26} {'median s':>9} {'beagle/this':>12} {'minimac4/this':>14} {'aggregate r2':>13}")
        for method, seconds in medians.items():
            r2 = f"{score(work / outputs[method]):>13.3f}" if method in outputs else f"{'':>13}"
            print(f"{method:<26} {seconds:>9.3f} {medians['beagle'] / seconds:>12.2f} "
                  f"{medians['minimac4'] / seconds:>14.2f} {r2}")
        print("\nimpute_vcf stages (NumPy engine, medians): "
              + ", ".join(f"{k} {statistics.median(v):.3f} s" for k, v in stages.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
