"""Benchmark: genotype imputation accuracy of the deep models against Beagle 5.4, Minimac4 and the floor.

One run, on the real 1000 Genomes chr22 array panel from the catalog (``1kg_chr22_array500``, 500
samples x 10,490 SNPs), through the evaluation harness (:func:`analysislib.evaluate.evaluate`):
50 samples (10%, split seed 0) are the targets, the other 450 the reference panel. MAF bins (Dias
et al.) and the minor-allele coding of aggregate r² come from the reference samples only
(:mod:`analysislib.genotype.metrics`).

Scenarios and the methods each runs:

* ``typed_1in3``: one SNP in three typed in the targets; the autoencoder (``dae``), Beagle,
  Minimac4 and the allele-frequency floor;
* ``random_05``, ``random_15``, ``random_25``: 5, 15 or 25% of the target genotypes hidden at
  random (BiU-Net's protocol, masking seed 1); BiU-Net (``biunet``), SCDA (``scda``), Beagle and the
  floor.

The deep models use the preset given by ``--preset``. In ``typed_1in3`` the autoencoder is trained
for the targets' array, as a user who holds the target VCF would train it
(``--dae-trained-for sites``, the default): ``typed_sites`` are the scenario's typed sites, which
its training masks hide last, and ``typed_fraction=1/3`` centres its masking curriculum on the
untyped share (:class:`~analysislib.genotype.dae.DAEImputer`). ``--dae-trained-for density`` gives
only the share, and ``any`` (or ``--array-agnostic``) neither: the preset's curriculum, for any
array, as Dias et al. train. It is also trained on haplotype rows (``unit="haplotype"``: each of a sample's two
haplotypes a row of its own), since the targets are phased 1000 Genomes calls, as Minimac4 needs;
``--dae-unit genotype`` gives the paper's rows (a sample's unphased genotypes). Each (scenario,
method) pair runs in a fresh
worker process, so neither memory nor torch settings carry over from one method to the next; the
harness times ``fit`` and ``impute`` itself. Peak memory is the largest resident set of the worker
or of the tool it ran (Beagle's Java, Minimac4), so it includes the interpreter and the data.

Printed per scenario: aggregate r² (minor-allele dosage), mean per-variant r² and genotype
accuracy, overall and per MAF bin, with aggregate r² as a fraction of Beagle's in the same bin;
then fit, impute and total seconds, peak memory and Beagle's total time over the method's (above
1: faster than Beagle). ``--json PATH`` writes one object per method, scenario and MAF bin
(``"all"`` for overall) with the keys ``method, scenario, preset, maf_bin, aggregate_r2, r2,
accuracy, fit_seconds, impute_seconds`` and a few more (``peak_memory_mb``, ``variants``,
``calls``, the Beagle ratios).

Run from the project root (``ANALYSISLIB_DATA_MIRROR`` set as the Makefile does)::

    .venv/bin/python benchmarks/genotype_accuracy.py --preset quick --json build/genotype_accuracy_quick.json
    .venv/bin/python benchmarks/genotype_accuracy.py --variants 600 --methods allele_frequency beagle \\
        --scenarios random_05            # a smoke test in well under a minute
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["METHODS", "SCENARIOS", "main", "run_one"]

#: Benchmark scenario -> (harness scenario name, methods it runs, in print order).
SCENARIOS: dict[str, tuple[str, tuple[str, ...]]] = {
    "typed_1in3": ("typed_1in3", ("dae", "beagle", "minimac4", "allele_frequency")),
    "random_05": ("random_05_seed1", ("biunet", "scda", "beagle", "allele_frequency")),
    "random_15": ("random_15_seed1", ("biunet", "scda", "beagle", "allele_frequency")),
    "random_25": ("random_25_seed1", ("biunet", "scda", "beagle", "allele_frequency")),
}
METHODS = ("dae", "biunet", "scda", "beagle", "minimac4", "allele_frequency")
DEEP = ("dae", "biunet", "scda")
DATASET = "1kg_chr22_array500"
TARGET_FRACTION = 0.1
SPLIT_SEED = 0
#: Harness metric -> JSON key.
METRICS = {"aggregate_r2": "aggregate_r2", "r2": "r2", "genotype_accuracy": "accuracy"}


def _load(dataset: str, variants: int | None):
    """The dataset (catalog name or VCF) and its label, cut to the first ``variants`` SNPs."""
    from analysislib.evaluate import load_genotypes

    ds, label, _ = load_genotypes(dataset)
    if variants is not None:
        ds = ds.isel(variants=slice(0, variants))
        label = f"{label}[:{ds.sizes['variants']}]"
    return ds, label


def _method_parameters(method: str, preset: str, threads: int, scenario: str | None = None, *,
                       dae_trained_for: str = "sites", dae_unit: str = "haplotype") -> dict[str, Any]:
    """Preset for the deep models, each imputer's own thread keywords (for the autoencoder, more
    than one thread also means as many training worker processes), the autoencoder's training rows
    (``dae_unit``) and its ``typed_fraction`` (the scenario's share of typed sites, unless
    ``dae_trained_for`` is ``"any"``; :func:`run_one` adds the sites themselves for ``"sites"``)."""
    from analysislib.evaluate import thread_parameters
    from analysislib.genotype.masking import parse_scenario

    parameters: dict[str, Any] = {"preset": preset} if method in DEEP else {}
    if method == "dae":
        parameters["unit"] = dae_unit
        harness = None if scenario is None or dae_trained_for == "any" else parse_scenario(SCENARIOS[scenario][0])
        if harness is not None and harness.kind == "typed_fraction":
            parameters["typed_fraction"] = 1 / harness.keep_every
    # The floor has no thread setting: it runs on one thread whatever --threads says.
    if thread_parameters(method, 1):
        parameters.update(thread_parameters(method, threads))
    return parameters


def _peak_rss_mb() -> float:
    """Largest resident set of this process or of any child it waited for (MB)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return float("nan")
    return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
               resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024


def run_one(spec: dict[str, Any]) -> dict[str, Any]:
    """Evaluate one method on one scenario through the harness; the summary rows as a dict.

    ``spec`` holds ``dataset, variants, scenario, method, parameters, store`` and optionally
    ``typed_sites`` (true: the autoencoder is trained for the scenario's typed sites, those the
    harness keeps in the targets). Returns
    ``{"rows": [...], "fit_seconds", "impute_seconds", "peak_memory_mb", "n_reference",
    "n_targets"}`` with one row per stratum (``"all"``, then the MAF bins).
    """
    import numpy as np

    from analysislib.evaluate import evaluate
    from analysislib.results import ResultsStore

    ds, label = _load(spec["dataset"], spec["variants"])
    parameters = dict(spec["parameters"])
    if spec.get("typed_sites"):
        from analysislib.evaluate import harness_split
        from analysislib.genotype.masking import apply_scenario, parse_scenario

        reference, truth = harness_split(ds, target_fraction=TARGET_FRACTION, seed=SPLIT_SEED)
        scenario = parse_scenario(SCENARIOS[spec["scenario"]][0])
        parameters["typed_sites"] = apply_scenario(truth, scenario, reference=reference).typed_sites
    result = evaluate(spec["method"], ds, SCENARIOS[spec["scenario"]][0],
                      target_fraction=TARGET_FRACTION, seed=SPLIT_SEED,
                      method_parameters=parameters, store=ResultsStore(spec["store"]),
                      dataset_label=label)
    table = result.headline(list(METRICS))
    run = result.rows.iloc[0]
    rows = []
    for row in table.itertuples(index=False):
        values = row._asdict()
        rows.append({"maf_bin": values["stratum"],
                     **{key: _number(values.get(metric)) for metric, key in METRICS.items()},
                     "variants": _count(values["variants"]), "calls": _count(values["calls"])})
    peak = float(np.nanmax([float(run.peak_memory_mb), _peak_rss_mb()]))
    return {"rows": rows, "fit_seconds": float(run.fit_seconds),
            "impute_seconds": float(run.impute_seconds), "peak_memory_mb": peak,
            "n_reference": int(ds.sizes["samples"] - result.imputed.sizes["samples"]),
            "n_targets": int(result.imputed.sizes["samples"])}


def _number(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _count(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _worker(spec_path: str, out_path: str) -> int:
    """Entry of a worker process: run one spec and write its result as JSON.

    A failure ends the worker with its traceback on stderr and no result file.
    """
    out = run_one(json.loads(Path(spec_path).read_text()))
    Path(out_path).write_text(json.dumps(out))
    return 0


def _run_isolated(spec: dict[str, Any], scratch: Path) -> dict[str, Any]:
    """:func:`run_one` in a fresh Python process (its output streams pass through)."""
    name = f"{spec['scenario']}-{spec['method']}"
    spec_path, out_path = scratch / f"{name}.spec.json", scratch / f"{name}.out.json"
    spec_path.write_text(json.dumps(spec))
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker",
                           str(spec_path), str(out_path)], check=False)
    if done.returncode != 0 or not out_path.exists():
        return {"error": f"worker exited with status {done.returncode} (its traceback is above)"}
    return json.loads(out_path.read_text())


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def _records(results: dict[tuple[str, str], dict[str, Any]], preset: str) -> list[dict[str, Any]]:
    """One JSON object per method, scenario and MAF bin, with the ratios to Beagle."""
    records = []
    for (scenario, method), result in results.items():
        if "error" in result:
            continue
        beagle = results.get((scenario, "beagle"), {})
        beagle_rows = {r["maf_bin"]: r for r in beagle.get("rows", [])}
        total = result["fit_seconds"] + result["impute_seconds"]
        beagle_total = (beagle["fit_seconds"] + beagle["impute_seconds"]) if "rows" in beagle else None
        for row in result["rows"]:
            records.append({
                "method": method, "scenario": scenario, "preset": preset, "maf_bin": row["maf_bin"],
                "aggregate_r2": row["aggregate_r2"], "r2": row["r2"], "accuracy": row["accuracy"],
                "fit_seconds": result["fit_seconds"], "impute_seconds": result["impute_seconds"],
                "total_seconds": total, "peak_memory_mb": _number(result["peak_memory_mb"]),
                "variants": row["variants"], "calls": row["calls"],
                "aggregate_r2_ratio_to_beagle": _ratio(
                    row["aggregate_r2"], beagle_rows.get(row["maf_bin"], {}).get("aggregate_r2")),
                "beagle_time_ratio": _ratio(beagle_total, total),
                "harness_scenario": SCENARIOS[scenario][0],
                "n_reference": result["n_reference"], "n_targets": result["n_targets"],
                "typed_fraction": result.get("typed_fraction"), "unit": result.get("unit"),
                "trained_for_sites": result.get("trained_for_sites"),
            })
    return records


def _fmt(value: float | None, spec: str) -> str:
    """``value`` formatted by ``spec`` (``"7.4f"``), or a dash as wide for a missing value."""
    if value is None:
        width = spec.split(".")[0].rstrip("df")
        return "-".rjust(int(width) if width.isdigit() else 1)
    return format(value, spec)


def _print_tables(records: list[dict[str, Any]], scenarios: list[str], methods: list[str]) -> None:
    for scenario in scenarios:
        rows = [r for r in records if r["scenario"] == scenario]
        if not rows:
            continue
        order = [m for m in SCENARIOS[scenario][1] if m in methods]
        print(f"\n{scenario} ({SCENARIOS[scenario][0]}): accuracy on hidden genotypes")
        print(f"{'method':<17} {'MAF bin':<14} {'agg r2':>7} {'r2':>7} {'accuracy':>8} "
              f"{'agg r2/Beagle':>13} {'variants':>8} {'calls':>8}")
        for method in order:
            for r in (r for r in rows if r["method"] == method):
                print(f"{method:<17} {r['maf_bin']:<14} {_fmt(r['aggregate_r2'], '7.4f')} "
                      f"{_fmt(r['r2'], '7.4f')} {_fmt(r['accuracy'], '8.4f')} "
                      f"{_fmt(r['aggregate_r2_ratio_to_beagle'], '13.3f')} "
                      f"{_fmt(r['variants'], '8d')} {_fmt(r['calls'], '8d')}")
        print(f"\n{scenario}: cost")
        print(f"{'method':<17} {'fit s':>9} {'impute s':>9} {'total s':>9} {'peak MB':>8} "
              f"{'Beagle time/this':>16}")
        for method in order:
            r = next((r for r in rows if r["method"] == method and r["maf_bin"] == "all"), None)
            if r is not None:
                print(f"{method:<17} {r['fit_seconds']:>9.2f} {r['impute_seconds']:>9.2f} "
                      f"{r['total_seconds']:>9.2f} {_fmt(r['peak_memory_mb'], '8.0f')} "
                      f"{_fmt(r['beagle_time_ratio'], '16.3f')}")


def _write_json(path: Path, records: list[dict[str, Any]]) -> None:
    from analysislib.io.atomic import atomic_output

    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(records, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Run the chosen scenarios and methods, print the tables, optionally write the JSON."""
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=("quick", "standard"), default="quick",
                        help="preset of the deep models (default quick)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH",
                        help="write the results as a list of JSON objects")
    parser.add_argument("--scenarios", nargs="+", choices=list(SCENARIOS), default=list(SCENARIOS))
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS),
                        help="methods to run (each only in the scenarios that list it)")
    parser.add_argument("--variants", type=int, default=None, metavar="N",
                        help="use the first N SNPs only (default all)")
    parser.add_argument("--threads", type=int, default=2,
                        help="threads for Beagle, Minimac4 and the deep models; the autoencoder "
                             "trains its tiles in as many worker processes (default 2)")
    parser.add_argument("--dataset", default=DATASET,
                        help=f"catalog name or biallelic VCF (default {DATASET})")
    parser.add_argument("--results", type=Path, default=None, metavar="DIR",
                        help="also keep the harness's rows in this results store "
                             "(default: a temporary store)")
    parser.add_argument("--dae-trained-for", choices=("sites", "density", "any"), default="sites",
                        help="train the autoencoder for the scenario's typed sites and their share "
                             "(default), for their share only, or for any array (the preset's "
                             "masking curriculum, as Dias et al.)")
    parser.add_argument("--array-agnostic", action="store_true",
                        help="the same as --dae-trained-for any")
    parser.add_argument("--dae-unit", choices=("haplotype", "genotype"), default="haplotype",
                        help="the autoencoder's training rows: each haplotype (default; the targets "
                             "are phased) or each sample's genotypes (the paper's)")
    parser.add_argument("--in-process", action="store_true",
                        help="run every method in this process, stopping at the first failure "
                             "(peak memory then includes earlier methods' use)")
    args = parser.parse_args(argv)
    if args.variants is not None and args.variants < 1:
        parser.error("--variants must be at least 1")
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    if args.array_agnostic:
        if args.dae_trained_for not in ("sites", "any"):
            parser.error("--array-agnostic is --dae-trained-for any; give one of them")
        args.dae_trained_for = "any"
    pairs = [(s, m) for s in args.scenarios for m in SCENARIOS[s][1] if m in args.methods]
    if not pairs:
        parser.error("none of --methods runs in the chosen --scenarios")
    from analysislib.evaluate import make_imputer

    for method in dict.fromkeys(m for _, m in pairs):  # an unknown preset fails before any run
        try:
            make_imputer(method, **_method_parameters(method, args.preset, args.threads))
        except ValueError as err:
            parser.error(f"{method}: {err}")

    from analysislib.external import tool_version
    from analysislib.genotype.masking import parse_scenario

    ds, label = _load(args.dataset, args.variants)
    tools = []
    for tool in ("beagle", "minimac4"):
        if any(m == tool for _, m in pairs):
            tools.append(tool_version(tool))
    dae_training = ""
    if any(m == "dae" for _, m in pairs):
        trained_for = {"sites": "the scenario's typed sites", "density": "the scenario's typed share",
                       "any": "any array"}[args.dae_trained_for]
        dae_training = f"autoencoder trained on {args.dae_unit} rows for {trained_for}; "
    print("  ".join([str(datetime.date.today()), platform.machine(), f"{os.cpu_count()} CPUs",
                     f"Python {platform.python_version()}", *tools]))
    print(f"{label}: {ds.sizes['samples']} samples x {ds.sizes['variants']} SNPs; "
          f"{TARGET_FRACTION:.0%} held out as targets (seed {SPLIT_SEED}); deep preset "
          f"{args.preset}; {args.threads} threads; "
          f"{dae_training}"
          f"{'in process' if args.in_process else 'one worker process per method'}")
    del ds

    results: dict[tuple[str, str], dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="genotype-accuracy-") as scratch_name:
        scratch = Path(scratch_name)
        store = args.results if args.results is not None else scratch / "results"
        for scenario, method in pairs:
            spec = {"dataset": args.dataset, "variants": args.variants, "scenario": scenario,
                    "method": method, "store": str(store),
                    "parameters": _method_parameters(method, args.preset, args.threads, scenario,
                                                     dae_trained_for=args.dae_trained_for,
                                                     dae_unit=args.dae_unit),
                    "typed_sites": method == "dae" and args.dae_trained_for == "sites"
                    and parse_scenario(SCENARIOS[scenario][0]).kind == "typed_fraction"}
            print(f"running {method} on {scenario} ...")
            started = time.perf_counter()
            result = run_one(spec) if args.in_process else _run_isolated(spec, scratch)
            results[(scenario, method)] = {**result,
                                           "typed_fraction": spec["parameters"].get("typed_fraction"),
                                           "trained_for_sites": bool(spec["typed_sites"]),
                                           "unit": spec["parameters"].get("unit")}
            if "error" in result:
                print(f"  FAILED: {result['error']}")
            else:
                print(f"  done in {time.perf_counter() - started:.1f} s")

    records = _records(results, args.preset)
    _print_tables(records, args.scenarios, args.methods)
    failed = [f"{m} on {s}" for (s, m), r in results.items() if "error" in r]
    if args.json is not None:
        _write_json(args.json, records)
        print(f"\nwrote {len(records)} rows to {args.json}")
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        sys.exit(_worker(*sys.argv[2:4]))
    sys.exit(main())
