"""Benchmark: BiU-Net against SCDA and Beagle 5.4 (accuracy) and against SCDA (throughput).

One run, on a simulated YRI/CEU/CHB panel (:func:`analysislib.simulate.genotypes.simulate_genotypes`):

(a) accuracy, the BiU-Net paper's protocol at 5% missingness: the paper's QC and 8:1:1 split
    (:func:`analysislib.genotype.segments.qc_split`), BiU-Net and SCDA trained on the training
    split (validation split for early stopping), Beagle 5.4 given the training split as its
    reference panel; 5% of the test genotypes masked (seed 1); aggregate R² (BiU-Net's
    "concatenated SNPs") overall and in the rarest MAF bin (MAF from the training split, bins
    0.5%, 1%, 5%, 10%, 20%, 30%, 40%, 50%);
(b) throughput on CPU: training and inference segments per second of BiU-Net and SCDA on the
    same 128-SNP segments (architectures of the chosen preset), and their ratio.

``--preset quick`` simulates a 300 kb region with 3 x 40 samples and uses the quick model presets
(about 5 CPU-minutes; ``--region-kb`` and ``--samples-per-population`` scale it up);
``--preset full`` simulates the ``full`` panel region (20 Mb, 3 x 1000 samples) with the paper's
architectures and epoch limits (hours on a CPU; meant for a GPU). Run from the project root::

    .venv/bin/python benchmarks/biunet_vs_scda.py --preset quick
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import time

import numpy as np

__all__ = ["main"]

MAF_BINS = (0.0, 0.005, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5)


def _throughput(config, n_segments: int, batch_size: int, seed: int = 0) -> tuple[float, float]:
    """(training, inference) segments per second of one architecture on random 128-SNP segments."""
    import torch

    from analysislib.genotype.segments import SegmentLayout
    from analysislib.genotype.unet_training import _batch_loss, build_model, site_prior

    config = config.replace(segment_length=128, overlap=16)
    rng = np.random.default_rng(seed)
    tokens = torch.from_numpy(rng.integers(1, 5, size=(n_segments, 128)).astype(np.uint8))
    positional = torch.from_numpy(np.tile(np.linspace(0, 1, 128, dtype=np.float32), (n_segments, 1)))
    # every row its own segment, so the site prior and embedding are gathered as in training
    prior = torch.from_numpy(site_prior(tokens.numpy()[None]))
    segment = torch.arange(n_segments)
    torch.manual_seed(seed)
    model = build_model(config, SegmentLayout(n_segments * 112 + 16, 128, 16))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    started = time.perf_counter()
    for lo in range(0, n_segments, batch_size):
        rows = slice(lo, lo + batch_size)
        out = _batch_loss(model, tokens[rows], positional[rows], prior[rows], segment[rows],
                          rate=0.05, generator=generator, config=config)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
    train_rate = n_segments / (time.perf_counter() - started)
    model.eval()
    started = time.perf_counter()
    with torch.inference_mode():
        for lo in range(0, n_segments, 512):
            rows = slice(lo, lo + 512)
            model(tokens[rows], positional[rows] if config.positional else None,
                  prior[rows] if config.site_prior else None, segment[rows] if config.site_channels else None)
    return train_rate, n_segments / (time.perf_counter() - started)


def main() -> int:
    """Run (a) and (b) and print the tables."""
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=("quick", "full"), default="quick")
    parser.add_argument("--seed", type=int, default=1, help="simulation seed")
    parser.add_argument("--threads", type=int, default=2, help="torch and Beagle threads")
    parser.add_argument("--skip-beagle", action="store_true")
    parser.add_argument("--region-kb", type=int, default=None,
                        help="simulated region length (quick default 300 kb)")
    parser.add_argument("--samples-per-population", type=int, default=None,
                        help="simulated samples per population (quick default 40)")
    args = parser.parse_args()

    import torch

    from analysislib.external import tool_version
    from analysislib.genotype.hmm import BeagleImputer
    from analysislib.genotype.masking import apply_scenario, random_missing_scenario
    from analysislib.genotype.metrics import aggregate_r2, allele_count, assign_maf_bins
    from analysislib.genotype.segments import qc_split
    from analysislib.genotype.stats import minor_allele_frequency
    from analysislib.genotype.unet import BIUNET_PRESETS, SCDA_PRESETS, BiUNetImputer, SCDAImputer
    from analysislib.simulate.genotypes import simulate_genotypes

    torch.set_num_threads(args.threads)
    quick = args.preset == "quick"
    beagle_version = "beagle skipped" if args.skip_beagle else tool_version("beagle")
    print(f"{datetime.date.today()}  {platform.machine()}  Python {platform.python_version()}  "
          f"torch {torch.__version__} ({args.threads} threads)  {beagle_version}  preset {args.preset}")
    overrides = {"samples_per_population": 40, "sequence_length": 300_000} if quick else {}
    if args.region_kb is not None:
        overrides["sequence_length"] = args.region_kb * 1000
    if args.samples_per_population is not None:
        overrides["samples_per_population"] = args.samples_per_population
    panel = simulate_genotypes(args.preset, seed=args.seed, **overrides).ds.compute()
    qc = qc_split(panel, seed=0)
    train, validation, test = qc.train, qc.validation, qc.test
    print(f"panel {panel.sizes['samples']} samples x {panel.sizes['variants']} SNPs; after QC "
          f"{qc.report['variants_out']} SNPs, train/val/test {qc.report['train']}/"
          f"{qc.report['validation']}/{qc.report['test']} samples")
    masked = apply_scenario(test, random_missing_scenario(0.05, 1))
    truth = allele_count(test["call_genotype"].values)
    maf = minor_allele_frequency(train).values
    bins = np.asarray(assign_maf_bins(maf, MAF_BINS).codes)
    labels = list(assign_maf_bins(maf, MAF_BINS).categories)
    scored_bins = sorted(set(bins[masked.score_mask.any(axis=1)].tolist()) - {-1})
    rare = scored_bins[0]
    rare_rows = bins == rare

    def accuracy(imputer, fit_data) -> dict[str, float]:
        started = time.perf_counter()
        imputer.fit(fit_data)
        fit_s = time.perf_counter() - started
        started = time.perf_counter()
        imputed = imputer.impute(masked.target)
        impute_s = time.perf_counter() - started
        dosage = imputed["call_dosage"].values
        return {"overall": aggregate_r2(dosage, truth, masked.score_mask),
                "rare": aggregate_r2(dosage, truth, masked.score_mask & rare_rows[:, None]),
                "fit_s": fit_s, "impute_s": impute_s}

    results: dict[str, dict[str, float]] = {}
    common = {"preset": args.preset, "device": "cpu", "threads": args.threads, "progress": False}
    # the networks train on train + validation and stop early on the validation split
    import xarray as xr

    train_val = xr.concat([train, validation], dim="samples", data_vars="minimal", coords="minimal",
                          compat="override", join="override")
    val_fraction = validation.sizes["samples"] / train_val.sizes["samples"]
    results["biunet"] = accuracy(BiUNetImputer(validation_fraction=val_fraction, **common), train_val)
    print(f"biunet: {results['biunet']}")
    results["scda"] = accuracy(SCDAImputer(validation_fraction=val_fraction, **common), train_val)
    print(f"scda: {results['scda']}")
    if not args.skip_beagle:
        results["beagle"] = accuracy(BeagleImputer(threads=args.threads), train)

    n_rare = int((masked.score_mask & rare_rows[:, None]).sum())
    print(f"\n(a) aggregate R2 at 5% random missingness (seed 1), {int(masked.score_mask.sum())} "
          f"masked test genotypes; rarest MAF bin {labels[rare]} ({int(rare_rows.sum())} SNPs, "
          f"{n_rare} masked genotypes)")
    print(f"{'method':<8} {'overall R2':>11} {'rare-bin R2':>12} {'fit s':>9} {'impute s':>9}")
    for method, row in results.items():
        print(f"{method:<8} {row['overall']:>11.4f} {row['rare']:>12.4f} {row['fit_s']:>9.1f} "
              f"{row['impute_s']:>9.2f}")
    for other in [m for m in results if m != "biunet"]:
        print(f"BiU-Net minus {other}: overall {results['biunet']['overall'] - results[other]['overall']:+.4f}, "
              f"rare bin {results['biunet']['rare'] - results[other]['rare']:+.4f}")

    n_segments = 2048 if quick else 8192
    batch = BIUNET_PRESETS[args.preset].batch_size
    biunet = _throughput(BIUNET_PRESETS[args.preset], n_segments, batch)
    scda = _throughput(SCDA_PRESETS[args.preset].replace(segment_length=128), n_segments, batch)
    print(f"\n(b) CPU throughput on {n_segments} segments of 128 SNPs, batch {batch} "
          f"({args.preset} architectures)")
    print(f"{'model':<8} {'train seg/s':>12} {'infer seg/s':>12}")
    for name, (tr, inf) in (("biunet", biunet), ("scda", scda)):
        print(f"{name:<8} {tr:>12.1f} {inf:>12.1f}")
    print(f"BiU-Net / SCDA: training {biunet[0] / scda[0]:.2f}x, inference {biunet[1] / scda[1]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
