"""Benchmark: autoencoder inference, VCF to VCF, against Beagle 5.4 and Minimac4 in one run.

Real 1000 Genomes chr22 array-site panel from the catalog (``1kg_chr22_array500``): 10% of samples
held out as targets with one SNP in three typed, the rest is the reference panel. A bundle is
trained once on the reference with the autoencoder's ``--preset`` (``quick`` by default: what
``DAEImputer`` and ``analysislib train`` give, two models per tile; ``--epochs`` and
``--models-per-tile`` override it; not timed against the tools), then, with the same target VCF
and thread count, each repeat times:

* ``impute_vcf`` in this process (bundle load and sha256 check, VCF read, imputation, VCF write),
  with the default NumPy engine (packed ``weights.npy``) and, for comparison, the torch engine
  (per-tile ``.pt`` files, the path of bundles written before packing);
* ``analysislib impute`` as a new process (adds interpreter start and imports; neither torch
  nor pandas is imported), and the imports alone in a new process (the floor of any
  command-line run). The package's bytecode is compiled first, as an installed package's is;
* ``beagle ref= gt= out= nthreads= gp=true``;
* ``minimac4 ref.msav target.vcf.gz -f GT,DS,GP`` (reference compressed once beforehand).

Ratios are tool time over autoencoder time (medians); the issue's targets are >= 20x over Beagle
for ``analysislib impute`` in a new process and >= 30x in process. Aggregate r^2 at untyped entries
is printed for each output so speed is not read alone. ``--json PATH`` writes one object per
method: ``method``, ``median_seconds``, ``beagle_ratio`` (Beagle's median over this one's) and
``aggregate_r2`` (null where there is no output), the command line's row being
``"analysislib impute"``.

With ``--scaling 50,500,5000`` the script then times ``analysislib impute`` and Beagle once each
on targets replicated from the held-out samples (sample IDs suffixed ``_rep<k>``) to each size,
with wall time and peak resident memory of each process tree's largest process
(:func:`analysislib.external.run_tool`). Beagle runs through Debian's ``beagle`` script (Java's
default heap); if it fails and ``--beagle-heap`` is given, it is run again as
``java -Xmx<heap> -jar /usr/share/beagle/beagle.jar`` and both runs are reported. Scaling rows
go to the JSON as ``"analysislib impute, N targets"`` / ``"beagle, N targets"`` with
``n_targets``, ``peak_memory_mb`` and ``returncode``.

Run from the project root::

    .venv/bin/python benchmarks/dae_inference_vs_hmm.py --threads 2 --repeats 5 --json out.json \
        --scaling 50,500,5000 --beagle-heap 16g
"""

from __future__ import annotations

import argparse
import compileall
import datetime
import json
import os
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


def _replicated(target, n_targets: int):
    """``target`` with its samples repeated to ``n_targets`` (IDs suffixed ``_rep<k>``)."""
    n = target.sizes["samples"]
    picks = np.arange(n_targets) % n
    out = target.isel(samples=picks)
    ids = [f"{s}_rep{k // n}" for k, s in enumerate(target["sample_id"].values[picks])]
    return out.assign(sample_id=("samples", np.array(ids, dtype=object)))


def _scaling(sizes: list[int], masked, ref_vcf: Path, bundle_dir: Path, work: Path, *, threads: int,
             beagle_heap: str | None) -> list[dict]:
    """Wall time and peak RSS of ``analysislib impute`` and Beagle at each target count."""
    from analysislib.external import run_tool
    from analysislib.io.vcf import write_vcf

    rows = []
    print(f"\n{'targets':>8} {'method':<34} {'wall s':>8} {'peak RSS GB':>12} {'exit':>5}")
    for size in sizes:
        target_vcf = work / f"target_{size}.vcf.gz"
        write_vcf(_replicated(masked.target, size), target_vcf, compress_level=1)
        runs = [("analysislib impute", [sys.executable, "-m", "analysislib.cli", "impute", "--models",
                                        str(bundle_dir), str(target_vcf), str(work / f"dae_{size}.vcf.gz"),
                                        "--threads", str(threads)])]
        beagle = [f"ref={ref_vcf}", f"gt={target_vcf}", f"out={work / f'beagle_{size}'}",
                  f"nthreads={threads}", "gp=true", "seed=0"]
        runs.append(("beagle", ["beagle", *beagle]))
        for name, command in runs:
            run = run_tool(command, check=False)
            rows.append({"method": f"{name}, {size} targets", "n_targets": size,
                         "median_seconds": run.seconds, "beagle_ratio": None, "aggregate_r2": None,
                         "peak_memory_mb": run.peak_memory_mb,
                         "peak_memory_source": run.peak_memory_source, "returncode": run.returncode,
                         "stderr_tail": run.stderr_tail if run.returncode else ""})
            print(f"{size:>8} {name:<34} {run.seconds:>8.1f} {run.peak_memory_mb / 1024:>12.2f} "
                  f"{run.returncode:>5}")
            if name == "beagle" and run.returncode and beagle_heap:
                heap_name = f"beagle (java -Xmx{beagle_heap})"
                run = run_tool(["java", f"-Xmx{beagle_heap}", "-jar", "/usr/share/beagle/beagle.jar",
                                *beagle], check=False)
                rows.append({"method": f"{heap_name}, {size} targets", "n_targets": size,
                             "median_seconds": run.seconds, "beagle_ratio": None, "aggregate_r2": None,
                             "peak_memory_mb": run.peak_memory_mb,
                             "peak_memory_source": run.peak_memory_source, "returncode": run.returncode,
                             "stderr_tail": run.stderr_tail if run.returncode else ""})
                print(f"{size:>8} {heap_name:<34} {run.seconds:>8.1f} {run.peak_memory_mb / 1024:>12.2f} "
                      f"{run.returncode:>5}")
        beagle_ok = [r for r in rows if r["n_targets"] == size and r["method"].startswith("beagle")
                     and r["returncode"] == 0]
        dae_row = next(r for r in rows if r["method"] == f"analysislib impute, {size} targets")
        if beagle_ok:
            dae_row["beagle_ratio"] = beagle_ok[0]["median_seconds"] / dae_row["median_seconds"]
    return rows


def main() -> int:
    """Train a bundle, then time the three imputers on the same targets and print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=("quick", "standard"), default="quick",
                        help="autoencoder preset the bundle is trained with (DAE_PRESETS)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs per tile (default: the preset's)")
    parser.add_argument("--models-per-tile", type=int, default=None,
                        help="models per tile (default: the preset's)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=2, help="training processes")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, metavar="PATH",
                        help="write the rows as a JSON list (method, median_seconds, beagle_ratio, "
                             "aggregate_r2)")
    parser.add_argument("--scaling", default=None, metavar="N,N,...",
                        help="also time analysislib impute and Beagle once at these target counts")
    parser.add_argument("--beagle-heap", default=None, metavar="SIZE",
                        help="rerun Beagle with java -Xmx SIZE where its default heap fails (scaling)")
    parser.add_argument("--bundle", type=Path, default=None,
                        help="use this bundle (trained on this split's reference with the preset's tiling) "
                             "instead of training one; its accuracy reflects its own training")
    args = parser.parse_args()

    from analysislib.catalog import load_catalog
    from analysislib.external import tool_version
    from analysislib.genotype.dae import DAEImputer, impute_vcf, load_bundle
    from analysislib.genotype.masking import apply_scenario, parse_scenario, split_samples
    from analysislib.genotype.metrics import aggregate_r2
    from analysislib.io.vcf import read_vcf, write_vcf

    print(f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC  {platform.machine()}  "
          f"{os.cpu_count()} CPUs  Python {platform.python_version()}  {tool_version('beagle')}  "
          f"{tool_version('minimac4')}  load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
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
        if args.bundle is not None:
            bundle_dir = args.bundle
            trained = f"given ({bundle_dir})"
        else:
            bundle_dir = work / "bundle"
            dae = DAEImputer(preset=args.preset, epochs=args.epochs, models_per_tile=args.models_per_tile,
                             bundle_dir=bundle_dir, jobs=args.jobs, progress=False).fit(reference)
            trained = (f"trained in {time.perf_counter() - started:.1f} s ({args.preset} preset, "
                       f"{dae.epochs} epochs, models per tile: {dae.models_per_tile})")
        print(f"targets {masked.target.sizes['samples']} samples x {masked.target.sizes['variants']} "
              f"typed of {ds.sizes['variants']}; bundle of {len(load_bundle(bundle_dir).members)} "
              f"tile models {trained}\n")
        # Bytecode as an installed package has it (pip compiles wheels; a normal interpreter
        # caches what it imports). With PYTHONDONTWRITEBYTECODE set and no cache, every new
        # process would compile analysislib again (about 0.2 s here).
        import analysislib

        compileall.compile_dir(str(Path(analysislib.__file__).parent), quiet=1)
        times: dict[str, list[float]] = {"dae (in process)": [], "dae (in process, torch)": [],
                                         "analysislib impute": [], "imports (new process)": [],
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
            times["analysislib impute"].append(_timed(
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
            at = np.array([row[int(p)] for p in imputed["variant_position"].values])
            true_counts = (truth["call_genotype"].values[at] > 0).sum(-1)
            return float(aggregate_r2(imputed["call_dosage"].values, true_counts,
                                      np.asarray(masked.score_mask)[at]))

        outputs = {"dae (in process)": "dae.vcf.gz", "dae (in process, torch)": "dae_torch.vcf.gz",
                   "analysislib impute": "dae_cli.vcf.gz", "beagle": "beagle.vcf.gz",
                   "minimac4": "minimac4.vcf.gz"}
        medians = {k: statistics.median(v) for k, v in times.items()}
        rows: list[dict] = []
        print(f"{'method':<26} {'median s':>9} {'beagle/this':>12} {'minimac4/this':>14} {'aggregate r2':>13}")
        for method, seconds in medians.items():
            r2 = score(work / outputs[method]) if method in outputs else None
            rows.append({"method": method, "median_seconds": seconds,
                         "beagle_ratio": medians["beagle"] / seconds, "aggregate_r2": r2})
            print(f"{method:<26} {seconds:>9.3f} {medians['beagle'] / seconds:>12.2f} "
                  f"{medians['minimac4'] / seconds:>14.2f} {'' if r2 is None else f'{r2:.3f}':>13}")
        print("\nimpute_vcf stages (NumPy engine, medians): "
              + ", ".join(f"{k} {statistics.median(v):.3f} s" for k, v in stages.items()))
        print(f"load average after the timed repeats: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        if args.scaling:
            sizes = [int(n) for n in args.scaling.split(",")]
            rows += _scaling(sizes, masked, ref_vcf, bundle_dir, work, threads=args.threads,
                             beagle_heap=args.beagle_heap)
            print(f"load average after scaling: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
