"""Diagnostic: does BiU-Net hold its training panel, and is the answer within a short window of it?

Same data and split as ``genotype_accuracy.py`` (real chr22 array panel, 450 reference and 50
target samples, cut to the first ``--variants`` SNPs). The benchmark's ``random_05`` scenario
(:func:`~analysislib.genotype.masking.apply_scenario`: 5 % of the called genotypes, masking seed
1) hides genotypes twice: in the targets, and in the first 100 reference samples, which the
network was trained on. On each set it reports the accuracy of the called ALT count (BiU-Net's called
genotype; the lookup's rounded dosage) and the r² of the ALT dosage, pooled over the hidden
entries, for

* BiU-Net at each ``--presets`` (trained once per preset, ``--threads`` torch threads), and
* the nearest reference haplotype within ±w SNPs (``--windows``): for every hidden entry of every
  haplotype, the ALT alleles of the reference haplotypes closest in Hamming distance over the
  visible SNPs of the window, averaged over ties. It uses the panel's haplotypes themselves, as an
  HMM imputer does, and nothing is trained.

A network accurate on new targets but far less than the lookup on its own training haplotypes has
not stored its panel (BENCHMARKS.md, "where the gap to Beagle comes from"). The pooled r² here is
not the benchmark's minor-allele aggregate r²; compare figures within one run.

Run from the project root (``ANALYSISLIB_DATA_MIRROR`` set as the Makefile does)::

    .venv/bin/python benchmarks/biunet_capacity.py --presets quick standard --json build/biunet_capacity.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import genotype_accuracy  # the accuracy benchmark's data, split and loader

SCENARIO, TRAINED_SAMPLES = "random_05", 100


def nearest_haplotype_dosage(reference: np.ndarray, genotypes: np.ndarray, hidden: np.ndarray,
                             half_window: int) -> np.ndarray:
    """ALT dosage at the hidden entries: per haplotype, the mean ALT allele of the reference
    haplotypes (columns of ``reference``, variants x haplotypes) nearest over the visible SNPs
    within ±``half_window``."""
    n_variants, n_samples = hidden.shape
    panel = reference.reshape(n_variants, -1).astype(np.int8)
    dosage = np.zeros(hidden.shape)
    for sample in range(n_samples):
        visible = ~hidden[:, sample]
        for site in np.flatnonzero(hidden[:, sample]):
            lo, hi = max(0, site - half_window), min(n_variants, site + half_window + 1)
            window = np.flatnonzero(visible[lo:hi]) + lo
            for copy in range(genotypes.shape[2]):
                distance = (panel[window] != genotypes[window, sample, copy, None]).sum(axis=0)
                dosage[site, sample] += panel[site, distance == distance.min()].mean()
    return dosage


def score(dosage: np.ndarray, genotypes: np.ndarray, hidden: np.ndarray,
          calls: np.ndarray | None = None) -> dict[str, float]:
    """Accuracy of the called ALT count (``calls``; None: the rounded dosage) and pooled r² of the
    ALT dosage, over the hidden entries."""
    from analysislib.genotype.metrics import allele_count

    truth, estimate = allele_count(genotypes)[hidden], dosage[hidden]
    called = np.rint(estimate) if calls is None else calls[hidden]
    return {"accuracy": float((called == truth).mean()),
            "r2": float(np.corrcoef(estimate, truth)[0, 1] ** 2), "entries": int(hidden.sum())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", type=int, default=2000, help="first N SNPs (default 2000)")
    parser.add_argument("--presets", nargs="*", default=["quick"], help="BiU-Net presets to train")
    parser.add_argument("--windows", nargs="*", type=int, default=[8, 16, 64], help="lookup half-windows")
    parser.add_argument("--threads", type=int, default=1, help="torch threads while training")
    parser.add_argument("--json", type=Path, default=None, help="write the rows here")
    args = parser.parse_args(argv)

    from analysislib.evaluate import harness_split
    from analysislib.genotype.masking import apply_scenario, parse_scenario
    from analysislib.genotype.metrics import allele_count
    from analysislib.genotype.unet import BiUNetImputer

    ds, _ = genotype_accuracy._load("1kg_chr22_array500", args.variants)
    reference, targets = harness_split(ds, target_fraction=genotype_accuracy.TARGET_FRACTION,
                                       seed=genotype_accuracy.SPLIT_SEED)
    reference, targets = reference.compute(), targets.compute()
    panels = {"training haplotypes": reference.isel(samples=slice(0, TRAINED_SAMPLES)), "targets": targets}
    scenario = parse_scenario(genotype_accuracy.SCENARIOS[SCENARIO][0])
    masked = {name: apply_scenario(panel, scenario) for name, panel in panels.items()}
    truth = {name: panel["call_genotype"].values for name, panel in panels.items()}
    hidden = {name: masked[name].score_mask for name in panels}
    rows: list[dict[str, Any]] = []

    def report(model: str, dosages: dict[str, np.ndarray], fit_seconds: float,
               calls: dict[str, np.ndarray] | None = None) -> None:
        row = {"model": model, "fit_seconds": round(fit_seconds, 1)}
        for name, dosage in dosages.items():
            row[name] = score(dosage, truth[name], hidden[name], None if calls is None else calls[name])
        rows.append(row)
        cells = "  ".join(f"{name}: acc {row[name]['accuracy']:.4f} r2 {row[name]['r2']:.4f}" for name in dosages)
        print(f"{model:<34} {cells}  fit {fit_seconds:.0f} s", flush=True)

    for half in args.windows:
        report(f"nearest haplotype ±{half}", {
            name: nearest_haplotype_dosage(reference["call_genotype"].values, gt, hidden[name], half)
            for name, gt in truth.items()}, 0.0)
    for preset in args.presets:
        started = time.perf_counter()
        imputer = BiUNetImputer(preset=preset, device="cpu", progress=False, threads=args.threads).fit(reference)
        fit_seconds = time.perf_counter() - started
        dosages, calls = {}, {}
        for name in panels:
            imputed = imputer.impute(masked[name].target)
            dosages[name] = imputed["call_dosage"].values
            calls[name] = allele_count(imputed["call_genotype"].values)
        report(f"BiU-Net {preset}", dosages, fit_seconds, calls)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
