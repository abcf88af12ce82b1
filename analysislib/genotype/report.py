"""Runs and tables of the genotype comparisons, from the rows the genotype harness stores.

Notebook 12 (Dias et al. 2022, Figs. 2–6 and Tables 2/4/5: per-tile autoencoder r² against
Minimac4 and Beagle, before and after tuning), notebook 20 (BiU-Net, Fig. 1 and Tables S1–S3,
on real chr22 or a simulated panel) and notebook 22 (BiU-Net, Fig. 2 and Tables S13–S18:
cohort-specific against pooled training) call these;
the figures live in :mod:`analysislib.plotting.genotype`. The summaries are plain pandas on
results-store rows (task ``genotype_imputation``), so stored runs can be re-read without
retraining.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from analysislib.errors import InputFormatError, InvalidArgumentError
from analysislib.evaluate import evaluate, harness_split, load_genotypes
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
    "dias_panel",
    "evaluate_array_densities",
    "evaluate_methods",
    "per_bin_tables",
    "per_sample_r2_rows",
    "per_tile_pairs",
    "region_tables",
    "run_costs",
    "summarise_scenarios",
    "tile_feature_correlations",
    "tune_on_reference",
    "tuning_change",
    "tuning_rows",
    "win_tests",
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
    raise InvalidArgumentError(f"panel must be one of {list(BIUNET_PANELS)}, got {panel!r}")


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
        raise InvalidArgumentError("per-sample R²: the imputed dataset's sites or samples differ from the "
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


# ------------------------------------------------- Dias et al. 2022 (notebook 12)

def tuning_rows(tuning: Any, *, label: str, reference: xr.Dataset, seed: int,
                seconds: float) -> pd.DataFrame:
    """Results-store rows of one :func:`~analysislib.genotype.dae.tuning.tune_tiles` run.

    Task ``dae_tuning``: the XGBoost predictor's cross-validated r² (``cv_r2``, its standard
    error, ``cv_pearson_r2``), how many tiles each source won (``winner_from_predicted`` /
    ``observed`` / ``base``), and per tile the best validation r² of the random search and of
    the final training (Methods, "Hyperparameter tuning"; Table 1).
    """
    from analysislib.results import array_checksum, run_stamp

    common = run_stamp(task="dae_tuning", dataset=label, scenario="reference_validation",
                       method="xgboost_predictor",
                       parameters={"preset": tuning.preset.__dict__, "seed": seed},
                       data_checksum=array_checksum(reference["call_genotype"].values),
                       runtime_s=seconds)
    cv = tuning.cross_validation
    rows = [{**common, "metric": m, "stratum_kind": "all", "stratum": "all", "value": v,
             "n": len(tuning.trials)}
            for m, v in [("cv_r2", cv.r2), ("cv_r2_se", cv.r2_se), ("cv_pearson_r2", cv.pearson_r2)]]
    winner = tuning.finals.loc[tuning.finals.groupby("tile")["val_r2"].idxmax()]
    rows += [{**common, "method": "dae_tuning_final", "metric": f"winner_from_{source}",
              "stratum_kind": "all", "stratum": "all",
              "value": float((winner.source == source).sum()), "n": len(winner)}
             for source in ("predicted", "observed", "base")]
    for stage, table in [("random_search", tuning.trials), ("final", tuning.finals)]:
        best = table.groupby("tile")["val_r2"].max()
        rows += [{**common, "method": f"dae_tuning_{stage}", "metric": "val_r2",
                  "stratum_kind": "tile", "stratum": str(t), "value": float(v),
                  "n": int((table.tile == t).sum())} for t, v in best.items()]
    return pd.DataFrame(rows)


def _wilcoxon_p(diff: pd.Series) -> float:
    """Two-sided Wilcoxon signed-rank p of paired differences (NaN when all are 0)."""
    from scipy import stats

    return float(stats.wilcoxon(diff).pvalue) if (diff != 0).any() else float("nan")


def per_tile_pairs(rows: pd.DataFrame, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], pd.DataFrame]:
    """Per-tile mean r² of method x against method y, the tiles of every scenario pooled.

    Each frame has columns ``stratum``, ``x``, ``y`` and ``scenario``
    (:func:`~analysislib.results.summary.compare_methods` per scenario).
    """
    from analysislib.results.summary import compare_methods

    scenarios = sorted(rows.scenario.unique())
    return {(x, y): pd.concat([compare_methods(rows[rows.scenario == s], "r2", "tile", x, y)
                               .assign(scenario=s) for s in scenarios], ignore_index=True)
            for x, y in pairs}


def win_tests(pairs: Mapping[tuple[str, str], pd.DataFrame], autoencoders: Sequence[str],
              baselines: Sequence[str]) -> pd.DataFrame:
    """Figs. 2–3's counts: tiles each autoencoder and each baseline wins, and a two-proportion
    test of the difference."""
    from analysislib.results.summary import two_proportion_p, win_counts

    tests = []
    for ae in autoencoders:
        for baseline in baselines:
            pair, n = pairs[ae, baseline], len(pairs[ae, baseline])
            won = win_counts(pair, "r2", ae, baseline)
            tests.append({"autoencoder": ae, "baseline": baseline, "tiles": n,
                          "autoencoder wins": won[ae], "baseline wins": won[baseline],
                          "two-proportion p": two_proportion_p(won[ae], n, won[baseline], n)})
    return pd.DataFrame(tests)


def tuning_change(tests: pd.DataFrame, gain: pd.Series, *, before: str = "dae",
                  after: str = "dae_tuned") -> pd.DataFrame:
    """Per baseline: tiles won before and after tuning (two-proportion p), and the per-tile
    r² gain of tuning (tiles improved, mean gain, Wilcoxon p)."""
    from analysislib.results.summary import two_proportion_p

    change = []
    for baseline in tests.baseline.unique():
        b, a = (tests[(tests.autoencoder == ae) & (tests.baseline == baseline)].iloc[0]
                for ae in (before, after))
        change.append({"baseline": baseline, "wins before": b["autoencoder wins"],
                       "wins after": a["autoencoder wins"],
                       "two-proportion p (before vs after)": two_proportion_p(
                           b["autoencoder wins"], b["tiles"], a["autoencoder wins"], a["tiles"]),
                       "tiles improved by tuning": int((gain > 0).sum()),
                       "mean r² gain": gain.mean(), "Wilcoxon p (tuned vs untuned)": _wilcoxon_p(gain)})
    return pd.DataFrame(change)


def region_tables(rows: pd.DataFrame, methods: Sequence[str], autoencoders: Sequence[str]
                  ) -> pd.DataFrame:
    """Tables 2, 4, 5: per scenario and method, the mean r² per tile and the whole-region r²,
    with Wilcoxon signed-rank p of each autoencoder against each other method over tiles."""
    per_tile = rows[(rows.stratum_kind == "tile") & (rows.metric == "r2")].pivot_table(
        index=["scenario", "stratum"], columns="method", values="value").reset_index()
    summary = []
    for scenario, part in per_tile.groupby("scenario"):
        whole = rows[(rows.scenario == scenario) & (rows.stratum_kind == "all")
                     & (rows.metric == "r2")].set_index("method")["value"]
        for method in methods:
            entry = {"scenario": scenario, "method": method,
                     "mean r² per tile": part[method].mean(),
                     "whole-region r²": whole.get(method, np.nan)}
            if method not in autoencoders:
                for ae in autoencoders:
                    both = part.dropna(subset=[ae, method])
                    entry[f"Wilcoxon p ({ae} vs this)"] = _wilcoxon_p(both[ae] - both[method])
            summary.append(entry)
    return pd.DataFrame(summary)


def tile_feature_correlations(features: pd.DataFrame, rows: pd.DataFrame,
                              reference: str = "minimac4") -> pd.DataFrame:
    """Spearman ρ of each tile feature with the autoencoder-minus-``reference`` r² difference
    (before and after tuning) and with the tuning gain (Fig. 3—figure supplements 3–7)."""
    per_tile = rows[(rows.stratum_kind == "tile") & (rows.metric == "r2")].pivot_table(
        index=["scenario", "stratum"], columns="method", values="value").reset_index()
    per_stratum = per_tile.groupby("stratum")[["dae", "dae_tuned", reference]].mean()
    per_stratum.index = per_stratum.index.astype(str)
    features = features.copy()
    features.index = features.index.astype(str)
    differences = pd.DataFrame({
        f"r²(dae) − r²({reference})": per_stratum["dae"] - per_stratum[reference],
        f"r²(dae_tuned) − r²({reference})": per_stratum["dae_tuned"] - per_stratum[reference],
        "tuning gain r²(dae_tuned) − r²(dae)": per_stratum["dae_tuned"] - per_stratum["dae"]})
    joined = features.join(differences, how="inner")
    return pd.DataFrame({name: joined[features.columns].apply(
        lambda col, name=name: col.corr(joined[name], method="spearman")) for name in differences})


def dias_panel(*, quick: bool = True, seed: int = 0, region_bp: int = 600_000,
               min_maf: float = 0.01) -> tuple[xr.Dataset, str]:
    """The simulated YRI/CEU/CHB panel notebook 12 runs on, and its results label.

    Quick mode simulates ``region_bp`` base pairs and keeps variants with MAF ≥ ``min_maf``, so
    per-tile training takes minutes on two CPU cores; full mode is the 20 Mb simulation.
    """
    from analysislib.genotype.stats import minor_allele_frequency
    from analysislib.simulate.genotypes import simulate_genotypes

    size = "quick" if quick else "full"
    ds = simulate_genotypes(size, seed=seed,
                            **({"sequence_length": region_bp} if quick else {})).ds.compute()
    if quick:
        ds = ds.isel(variants=np.flatnonzero(minor_allele_frequency(ds).values >= min_maf))
    return ds, f"sim_{size}_{ds.sizes['variants']}snps"


def tune_on_reference(ds: xr.Dataset, preset: Any, *, dae_preset: str, tiling: Mapping[str, Any],
                      seed: int = 0, jobs: int = 1, store: ResultsStore | None = None,
                      label: str = "") -> tuple[Any, Any]:
    """Dias et al.'s tuning (Methods, "Hyperparameter tuning") on the harness's reference samples.

    The reference samples are those :func:`~analysislib.evaluate.evaluate` keeps with the same
    ``seed`` (10 % targets, stratified by population), tiled as ``DAEImputer.fit`` tiles them so
    tile numbers match the bundle's; the base hyperparameters are ``dae_preset``'s.

    Parameters
    ----------
    ds
        The whole dataset.
    preset
        A :class:`~analysislib.genotype.dae.tuning.TuningPreset` or its name.
    dae_preset, tiling
        The autoencoder preset (base hyperparameters and tiling) and tiling overrides.
    seed, jobs
        Split and tuning seed, and worker processes.
    store, label
        Where to store :func:`tuning_rows` (nothing is stored without a store).

    Returns
    -------
    tuning, base
        The :class:`~analysislib.genotype.dae.tuning.TuningResult` and the base
        :class:`~analysislib.genotype.dae.hyperparameters.DAEHyperparameters`.
    """
    from analysislib.genotype.dae import DAE_PRESETS
    from analysislib.genotype.dae.hyperparameters import DAEHyperparameters
    from analysislib.genotype.dae.tuning import dataset_tile_features, tile_genotypes, tune_tiles
    from analysislib.tiling import tile_genome

    reference, _ = harness_split(ds, seed=seed)  # the reference panel evaluate() will train on
    tiles = tile_genome(reference, **{**DAE_PRESETS[dae_preset]["tiling"], **tiling}).tiles
    base = DAEHyperparameters(**DAE_PRESETS[dae_preset]["hparams"])
    started = time.perf_counter()
    tuning = tune_tiles(tile_genotypes(reference, tiles), preset, seed=seed, base=base, jobs=jobs,
                        features=dataset_tile_features(reference, tiles))
    if store is not None:
        store.append(tuning_rows(tuning, label=label, reference=reference, seed=seed,
                                 seconds=time.perf_counter() - started))
    return tuning, base


def evaluate_array_densities(methods: Mapping[str, Any], ds: xr.Dataset, densities: Sequence[str],
                             *, tiles: pd.DataFrame, store: ResultsStore, label: str,
                             seed: int = 0) -> None:
    """Score each method at each genotyping-array density (``array_<density>`` scenarios).

    ``methods`` maps a registered imputer name to its parameters, or any name to a built
    imputer; the harness scores per-tile strata on ``tiles`` (Dias et al., Figs. 2–3).
    """
    for density in densities:
        for name, spec in methods.items():
            if isinstance(spec, Mapping):
                evaluate(name, ds, f"array_{density}", seed=seed, tiles=tiles,
                         method_parameters=dict(spec), store=store, dataset_label=label)
            else:
                evaluate(spec, ds, f"array_{density}", seed=seed, tiles=tiles, store=store,
                         dataset_label=label)
