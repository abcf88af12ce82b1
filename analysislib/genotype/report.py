"""Runs and tables of the BiU-Net comparison, from the rows the genotype harness stores.

Notebook 20 (the paper's Fig. 1 and Tables S1–S3, on real chr22 or a simulated panel) and
notebook 22 (Fig. 2 and Tables S13–S18: cohort-specific against pooled training) call these;
the figures live in :mod:`analysislib.plotting.genotype`. The summaries are plain pandas on
results-store rows (task ``genotype_imputation``), so stored runs can be re-read without
retraining.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from analysislib.errors import InputFormatError
from analysislib.evaluate import evaluate, load_genotypes
from analysislib.genotype.imputer import TrainOnce, sites_key
from analysislib.genotype.masking import Scenario, apply_scenario, parse_scenario
from analysislib.genotype.metrics import aggregate_r2, allele_count
from analysislib.genotype.segments import variant_qc_mask
from analysislib.results import ResultsStore
from analysislib.results.summary import ordered_strata

__all__ = [
    "BIUNET_PANELS",
    "FIGURE_METRICS",
    "TABLE_METRICS",
    "TASK",
    "biunet_panel",
    "cohort_gains",
    "evaluate_methods",
    "per_bin_tables",
    "per_sample_r2_rows",
    "run_costs",
    "summarise_scenarios",
]

TASK = "genotype_imputation"
#: Panels notebook 20 runs on: real 1000 Genomes chr22 array sites, or the simulated
#: YRI/CEU/CHB panel (stdpopsim OutOfAfrica_3G09).
BIUNET_PANELS = ("1kg_chr22", "simulated")
#: Fig. 1's metrics, in the paper's order.
FIGURE_METRICS = {"genotype_accuracy": "accuracy", "aggregate_r2": "R²",
                  "aggregate_precision": "precision", "aggregate_recall": "recall",
                  "aggregate_f1": "F1"}
#: Tables S1–S3's metrics: Fig. 1's, the phased accuracy and Dias et al.'s mean per-variant r².
TABLE_METRICS = {"genotype_accuracy": "accuracy", "phased_accuracy": "phased accuracy",
                 "aggregate_r2": "R²", "aggregate_precision": "precision",
                 "aggregate_recall": "recall", "aggregate_f1": "F1", "r2": "mean r²"}


def biunet_panel(panel: str = "1kg_chr22", *, quick: bool = True, seed: int = 0,
                 n_variants: int = 2000, region_bp: int = 300_000
                 ) -> tuple[xr.Dataset, xr.Dataset, str]:
    """The genotypes a BiU-Net comparison runs on, after the paper's variant QC.

    Parameters
    ----------
    panel
        ``"1kg_chr22"`` (catalog ``1kg_chr22_array500``: 500 samples at 10,490 array sites;
        quick mode keeps the first ``n_variants`` SNPs after QC, a contiguous window) or
        ``"simulated"`` (:func:`~analysislib.simulate.genotypes.simulate_genotypes`; quick mode
        simulates ``region_bp`` base pairs).
    quick, seed
        Quick (CPU-minutes) or full size, and the simulation seed.
    n_variants, region_bp
        Quick-mode sizes of the real and simulated panels.

    Returns
    -------
    raw, ds, label
        The dataset before and after QC (:func:`~analysislib.genotype.segments.variant_qc_mask`)
        and the label its results are stored under.
    """
    if panel == "1kg_chr22":
        raw, source, _ = load_genotypes("1kg_chr22_array500")
        ds = raw.isel(variants=np.flatnonzero(variant_qc_mask(raw)))
        if quick:
            ds = ds.isel(variants=slice(0, n_variants))
        return raw, ds, f"{source}_qc" + (f"_first{ds.sizes['variants']}" if quick else "")
    if panel == "simulated":
        from analysislib.simulate.genotypes import simulate_genotypes

        size = "quick" if quick else "full"
        simulated = simulate_genotypes(size, seed=seed,
                                       **({"sequence_length": region_bp} if quick else {}))
        raw = simulated.ds.compute()
        ds = raw.isel(variants=np.flatnonzero(variant_qc_mask(raw)))
        return raw, ds, f"sim_{size}_qc_{ds.sizes['variants']}snps"
    raise ValueError(f"panel must be one of {list(BIUNET_PANELS)}, got {panel!r}")


def evaluate_methods(imputers: Mapping[str, Any], ds: xr.Dataset, scenarios: Sequence[Scenario],
                     *, store: ResultsStore, label: str, seed: int = 0,
                     target_fraction: float = 0.1) -> pd.DataFrame:
    """Score each imputer on every scenario, training it once (:class:`TrainOnce`).

    Every scenario masks the same target samples, so one trained model imputes them all. A
    method the harness cannot score (Beagle writes no GP when every marker is genotyped) is
    reported and skipped.

    Returns
    -------
    pandas.DataFrame
        One row per method and scenario: aggregate R², mean per-variant r², accuracy, and fit
        and impute seconds.
    """
    log = []
    for method, imputer in imputers.items():
        once = imputer if isinstance(imputer, TrainOnce) else TrainOnce(imputer)
        for scenario in scenarios:
            try:
                result = evaluate(once, ds, scenario, target_fraction=target_fraction, seed=seed,
                                  store=store, dataset_label=label)
            except InputFormatError as err:
                print(f"{method} could not be scored on {scenario.name}: {err}")
                break
            overall = result.rows.query("stratum_kind == 'all'").set_index("metric")["value"]
            log.append({"method": method, "scenario": scenario.name,
                        "aggregate R²": overall["aggregate_r2"], "mean per-variant r²": overall["r2"],
                        "accuracy": overall["genotype_accuracy"],
                        "fit s": result.rows.fit_seconds.iloc[0],
                        "impute s": result.rows.impute_seconds.iloc[0]})
    return pd.DataFrame(log)


def summarise_scenarios(rows: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Mean over replicate seeds of every metric, per missing rate, method and stratum.

    Parameters
    ----------
    rows
        Harness rows of random-missingness scenarios (``random_05_seed1``, …).

    Returns
    -------
    summary
        Columns ``rate, method, stratum_kind, stratum, metric, value, n, replicates`` for the
        overall (``all``) and MAF-bin strata.
    bins
        The MAF-bin labels in order.
    """
    parsed = {name: parse_scenario(name) for name in rows.scenario.unique()}
    rows = rows.assign(rate=rows.scenario.map(lambda s: parsed[s].rate),
                       replicate=rows.scenario.map(lambda s: parsed[s].seed))
    strata = rows[rows.stratum_kind.isin(["all", "maf_bin"])]
    bins = ordered_strata(strata.loc[strata.stratum_kind == "maf_bin", "stratum"])
    summary = (strata.groupby(["rate", "method", "stratum_kind", "stratum", "metric"],
                              as_index=False)
               .agg(value=("value", "mean"), n=("n", "mean"), replicates=("replicate", "nunique")))
    return summary, bins


def per_bin_tables(summary: pd.DataFrame, bins: Sequence[str], methods: Sequence[str]
                   ) -> dict[float, pd.DataFrame]:
    """Tables S1–S3: per missing rate, the overall row then one row per MAF bin.

    Columns are (metric, method) over :data:`TABLE_METRICS`, after a ``SNPs`` column (SNPs
    with hidden genotypes in the stratum).
    """
    tables = {}
    for rate in sorted(summary.rate.unique()):
        part = summary[(summary.rate == rate) & summary.metric.isin(list(TABLE_METRICS))]
        table = part.pivot_table(index="stratum", columns=["metric", "method"], values="value")
        table = table.reindex(["all", *bins]).rename(index={"all": "overall"})
        order = [(m, method) for m in TABLE_METRICS for method in methods
                 if (m, method) in table.columns]
        table = table[order].rename(columns=TABLE_METRICS, level=0)
        snps = part[part.metric == "r2"].groupby("stratum").n.max().reindex(["all", *bins])
        table.insert(0, "SNPs", snps.to_numpy())
        tables[float(rate)] = table
    return tables


def run_costs(store: ResultsStore, run_ids: Sequence[str]) -> pd.DataFrame:
    """Cost and provenance of the given runs: fit, impute and total seconds, peak memory,
    parameter count, epochs and code version."""
    runs = store.runs(TASK)
    runs = runs[runs.run_id.isin(list(run_ids))].copy()
    parameters = runs.parameters.map(json.loads)
    runs["n_parameters"] = parameters.map(lambda p: p.get("n_parameters"))
    runs["epochs"] = parameters.map(lambda p: p.get("epochs_completed", p.get("epochs")))
    return runs[["scenario", "method", "fit_seconds", "impute_seconds", "runtime_s",
                 "peak_memory_mb", "n_parameters", "epochs", "code_version"]]


def per_sample_r2_rows(result: Any, truth: xr.Dataset, reference: xr.Dataset,
                       scenario: Scenario) -> pd.DataFrame:
    """Per-sample aggregate R² over each test sample's hidden genotypes, as harness rows.

    Parameters
    ----------
    result
        The harness's :class:`~analysislib.evaluate.EvaluationResult` for ``scenario``.
    truth, reference
        The test samples' true genotypes and the reference panel of that run
        (:func:`~analysislib.genotype.masking.split_samples`), to rebuild the harness's mask.
    scenario
        The scenario scored.

    Returns
    -------
    pandas.DataFrame
        One row per test sample (``stratum_kind = "sample"``), stamped like the run's rows.
    """
    imputed = result.imputed
    if not (np.array_equal(sites_key(imputed), sites_key(truth)) and np.array_equal(
            imputed["sample_id"].values.astype(str), truth["sample_id"].values.astype(str))):
        raise ValueError("per-sample R²: the imputed dataset's sites or samples differ from the "
                         "truth's")
    mask = apply_scenario(truth, scenario, reference=reference).score_mask
    dosage = imputed["call_dosage"].values
    counts = allele_count(truth["call_genotype"].values)
    values = [aggregate_r2(dosage[:, [j]], counts[:, [j]], mask[:, [j]])
              for j in range(mask.shape[1])]
    run = result.rows.iloc[0]
    stamp = {c: run[c] for c in result.rows.columns
             if c not in ("metric", "stratum_kind", "stratum", "value", "n")}
    return pd.DataFrame({**stamp, "metric": "aggregate_r2", "stratum_kind": "sample",
                         "stratum": truth["sample_id"].values.astype(str), "value": values,
                         "n": mask.sum(axis=0)})


def cohort_gains(wide: pd.DataFrame, cohorts: Sequence[str], pooled: str = "biunet_ALL"
                 ) -> pd.DataFrame:
    """Per cohort and missing rate: the pooled model's per-sample R² against the cohort's own.

    Parameters
    ----------
    wide
        One row per (rate, population, sample) with a column per model (``biunet_ALL``,
        ``biunet_<cohort>``).
    cohorts
        Cohorts with their own model.
    pooled
        Column of the pooled model.
    """
    gains = []
    for cohort in cohorts:
        for rate in sorted(wide.rate.unique()):
            part = wide[(wide.population == cohort) & (wide.rate == rate)].dropna(
                subset=[pooled, f"biunet_{cohort}"])
            x, y = part[pooled], part[f"biunet_{cohort}"]
            gains.append({"cohort": cohort, "rate": rate, "test samples": len(part),
                          "mean R² ALL": x.mean(), "mean R² cohort-only": y.mean(),
                          "mean gain of ALL": (x - y).mean(),
                          "samples ALL better": int((y < x).sum())})
    return pd.DataFrame(gains)
