"""Genotype figures: the data tour (notebook 00), Dias et al. 2022 (notebook 12) and BiU-Net
(notebooks 20, 22).

Each function takes the tables of :mod:`analysislib.genotype.report` and returns a matplotlib
figure; the notebooks save it with :func:`analysislib.plotting.save_figure`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from analysislib.genotype.report import FIGURE_METRICS
from analysislib.results.summary import ordered_strata

__all__ = ["method_palette", "plot_by_population", "plot_cohort_scatter", "plot_genotype_pcs",
           "plot_inference_time", "plot_ld_decay", "plot_maf_spectra", "plot_metrics_by_maf",
           "plot_metrics_by_maf_bin", "plot_per_tile_r2", "plot_r2_by_maf", "plot_r2_definitions"]


def method_palette(methods: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    """One colour-blind-safe colour per method, in order."""
    return dict(zip(methods, sns.color_palette("colorblind", len(methods)), strict=True))


def _bin_ticks(ax: plt.Axes, bins: Sequence[str]) -> None:
    ax.set_xticks(range(len(bins)), bins, rotation=60, fontsize=7)


def plot_metrics_by_maf(summary: pd.DataFrame, bins: Sequence[str], methods: Sequence[str],
                        metrics: Mapping[str, str] = FIGURE_METRICS) -> Figure:
    """Fig. 1: each metric by MAF bin, one row per missing rate, one line per method.

    Grey bars (right axis) count the SNPs with hidden genotypes per bin; the text gives each
    method's overall value.

    Parameters
    ----------
    summary, bins
        From :func:`~analysislib.genotype.report.summarise_scenarios`.
    methods
        Methods to draw, in legend order.
    metrics
        Metric name → panel title.
    """
    rates = sorted(summary.rate.unique())
    palette = method_palette(methods)
    fig, axes = plt.subplots(len(rates), len(metrics), squeeze=False, sharex=True,
                             figsize=(3.6 * len(metrics), 3.0 * len(rates)))
    for i, rate in enumerate(rates):
        at_rate = summary[summary.rate == rate]
        snps = (at_rate[(at_rate.metric == "r2") & (at_rate.stratum_kind == "maf_bin")]
                .groupby("stratum").n.max().reindex(bins))
        for j, (metric, title) in enumerate(metrics.items()):
            ax = axes[i][j]
            bars = ax.twinx()
            bars.bar(range(len(bins)), snps.fillna(0).values, color="lightsteelblue", alpha=0.45,
                     zorder=0)
            bars.grid(False)
            bars.set_ylabel("SNPs" if j == len(metrics) - 1 else "")
            ax.set_zorder(bars.get_zorder() + 1)
            ax.patch.set_visible(False)
            text = []
            for method in methods:
                part = at_rate[(at_rate.method == method) & (at_rate.metric == metric)]
                line = part[part.stratum_kind == "maf_bin"].set_index("stratum").value.reindex(bins)
                ax.plot(range(len(bins)), line.values, marker="o", ms=3, color=palette[method],
                        label=method)
                total = part[part.stratum_kind == "all"].value
                if len(total):
                    text.append(f"{method} {total.iloc[0]:.3f}")
            ax.text(0.5, 0.5, "\n".join(text), transform=ax.transAxes, ha="center",
                    va="center", fontsize=7, bbox={"facecolor": "white", "alpha": 0.7, "lw": 0})
            ax.set_ylim(-0.02, 1.02)
            ax.set_title(f"{title}, {rate:.0%} missing", fontsize=9)
            _bin_ticks(ax, bins)
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.supxlabel("MAF bin")
    fig.tight_layout()
    return fig


def plot_r2_definitions(summary: pd.DataFrame, bins: Sequence[str], methods: Sequence[str]
                        ) -> Figure:
    """Aggregate R² (BiU-Net's) against mean per-variant r² (Dias et al.'s) by MAF bin."""
    both = summary[(summary.stratum_kind == "maf_bin")
                   & summary.metric.isin(["aggregate_r2", "r2"])]
    both = both.assign(definition=both.metric.map({"aggregate_r2": "aggregate (BiU-Net)",
                                                   "r2": "mean per-variant (Dias)"}))
    grid = sns.relplot(data=both, x="stratum", y="value", hue="method", style="definition",
                       col="rate", kind="line", marker="o", height=3.3, aspect=1.2,
                       palette=method_palette(methods), hue_order=list(methods))
    for ax in grid.axes.flat:
        _bin_ticks(ax, bins)
    grid.set_axis_labels("MAF bin", "r²")
    return grid.figure


def plot_cohort_scatter(wide: pd.DataFrame, cohorts: Sequence[str],
                        pooled: str = "biunet_ALL") -> Figure:
    """Fig. 2: per-sample R² of each cohort's own model (y) against the pooled model (x).

    One row per cohort, one column per missing rate; points below the diagonal are samples
    the pooled model imputes better (counted in each panel).
    """
    rates = sorted(wide.rate.unique())
    fig, axes = plt.subplots(len(cohorts), len(rates), squeeze=False,
                             figsize=(3.4 * len(rates), 3.3 * len(cohorts)))
    colours = sns.color_palette("colorblind")
    for i, cohort in enumerate(cohorts):
        for j, rate in enumerate(rates):
            ax = axes[i][j]
            part = wide[(wide.population == cohort) & (wide.rate == rate)].dropna(
                subset=[pooled, f"biunet_{cohort}"])
            x, y = part[pooled], part[f"biunet_{cohort}"]
            ax.scatter(x, y, s=14, alpha=0.8, color=colours[i % len(colours)])
            lo = float(np.nanmin([x.min(), y.min(), 1.0])) - 0.02
            ax.plot([lo, 1], [lo, 1], color="grey", lw=1, ls="--")
            ax.set(xlim=(lo, 1.0), ylim=(lo, 1.0), xlabel="R², pooled (ALL) model",
                   ylabel=f"R², {cohort}-only model", title=f"{cohort}, {rate:.0%} missing")
            ax.text(0.97, 0.04, f"ALL better: {int((y < x).sum())}/{len(part)}",
                    transform=ax.transAxes, ha="right", fontsize=8)
    fig.tight_layout()
    return fig


def plot_r2_by_maf(rows: pd.DataFrame) -> Figure:
    """Aggregate R² by MAF bin, one line per method, one panel per missing rate.

    ``rows`` are harness rows with a ``rate`` column (the MAF-bin ``aggregate_r2`` rows are
    drawn; replicate seeds are averaged).
    """
    by_maf = rows[(rows.stratum_kind == "maf_bin") & (rows.metric == "aggregate_r2")]
    bins = ordered_strata(by_maf.stratum)
    by_maf = by_maf.assign(stratum=pd.Categorical(by_maf.stratum, categories=bins, ordered=True))
    grid = sns.relplot(data=by_maf, x="stratum", y="value", hue="method", col="rate",
                       kind="line", marker="o", height=3.2, aspect=1.2, errorbar=None)
    for ax in grid.axes.flat:
        _bin_ticks(ax, bins)
    grid.set_axis_labels("MAF bin", "aggregate R²")
    return grid.figure


# ------------------------------------------------------------------ the data tour (notebook 00)

def plot_maf_spectra(spectra: pd.DataFrame) -> Figure:
    """Minor-allele-frequency spectra, one bar colour per group.

    ``spectra`` stacks :func:`~analysislib.genotype.stats.maf_spectrum` tables with a ``group``
    column (population, or the whole dataset).
    """
    fig, ax = plt.subplots(figsize=(9, 4))
    sns.barplot(data=spectra, x="maf_bin", y="fraction", hue="group", ax=ax)
    ax.set(xlabel="minor allele frequency", ylabel="fraction of variants", title="MAF spectra")
    return fig


def plot_genotype_pcs(pcs: Mapping[str, object]) -> Figure:
    """PC1 against PC2 of each dataset's :func:`~analysislib.genotype.stats.genotype_pca`,
    coloured by population where the dataset has one."""
    fig, axes = plt.subplots(1, len(pcs), figsize=(5.5 * len(pcs), 4.5), squeeze=False)
    for ax, (title, result) in zip(axes[0], pcs.items(), strict=True):
        hue = result.sample_population if "sample_population" in result else None
        sns.scatterplot(x=result.sample_pc.sel(components=1), y=result.sample_pc.sel(components=2),
                        hue=hue, s=14, ax=ax)
        ax.set(title=title, xlabel="PC1", ylabel="PC2")
    return fig


def plot_ld_decay(decay: pd.DataFrame, *, min_pairs: int = 20) -> Figure:
    """Mean r² against distance (log scale), one line per ``dataset``; distance bins with at
    most ``min_pairs`` variant pairs are left out."""
    fig, ax = plt.subplots(figsize=(7, 4))
    sns.lineplot(data=decay[decay.n_pairs > min_pairs], x="distance_mid", y="mean_r2",
                 hue="dataset", marker="o", ax=ax)
    ax.set(xscale="log", xlabel="distance (bp)", ylabel="mean r²", title="LD decay")
    return fig


# ------------------------------------------------- Dias et al. 2022 (notebook 12)

def plot_per_tile_r2(pairs: Mapping[tuple[str, str], pd.DataFrame], tests: pd.DataFrame,
                     autoencoders: Mapping[str, str], baselines: Sequence[str]) -> Figure:
    """Figs. 2–3: per-tile r² of each HMM tool (y) against the autoencoder (x).

    One row per autoencoder (before and after tuning), one column per baseline; points below
    the identity line are tiles the autoencoder imputes better.

    Parameters
    ----------
    pairs, tests
        From :func:`~analysislib.genotype.report.per_tile_pairs` and
        :func:`~analysislib.genotype.report.win_tests`.
    autoencoders
        Method → stage label (``{"dae": "before tuning (Fig. 2)", ...}``).
    baselines
        HMM tools, one column each.
    """
    n_cols = max(1, len(baselines))
    fig, axes = plt.subplots(len(autoencoders), n_cols, figsize=(5.2 * n_cols, 4.8 * len(autoencoders)),
                             squeeze=False)
    for ax_row, (ae, stage) in zip(axes, autoencoders.items(), strict=True):
        for ax, baseline in zip(ax_row, baselines, strict=False):
            won = tests[(tests.autoencoder == ae) & (tests.baseline == baseline)].iloc[0]
            sns.scatterplot(data=pairs[ae, baseline], x="x", y="y", hue="scenario", ax=ax, s=30)
            ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--")
            ax.text(0.03, 0.93, f"{baseline} better: {won['baseline wins']}", transform=ax.transAxes)
            ax.text(0.55, 0.05, f"autoencoder better: {won['autoencoder wins']}",
                    transform=ax.transAxes)
            ax.set(xlim=(0, 1), ylim=(0, 1), xlabel=f"autoencoder r² per tile, {stage}",
                   ylabel=f"{baseline} r² per tile", title=f"{stage}: vs {baseline}")
    fig.tight_layout()
    return fig


def plot_metrics_by_maf_bin(rows: pd.DataFrame, metrics: Sequence[str]) -> Figure:
    """Fig. 4: each metric by MAF bin, one line per method, one row of panels per scenario."""
    by_maf = rows[(rows.stratum_kind == "maf_bin") & rows.metric.isin(list(metrics))]
    order = ordered_strata(by_maf.stratum)
    grid = sns.relplot(data=by_maf, x="stratum", y="value", hue="method", col="metric",
                       row="scenario", kind="line", marker="o", facet_kws={"sharey": False},
                       height=3.4, aspect=1.2)
    for ax in grid.axes.flat:
        ax.set_xticks(range(len(order)), order, rotation=45)
    grid.set_axis_labels("MAF bin", "value")
    return grid.figure


def plot_by_population(rows: pd.DataFrame, metrics: Sequence[str]) -> Figure:
    """Fig. 5: each metric per target population, one bar per method."""
    by_pop = rows[(rows.stratum_kind == "population") & rows.metric.isin(list(metrics))]
    grid = sns.catplot(data=by_pop, x="stratum", y="value", hue="method", col="metric",
                       row="scenario", kind="bar", sharey=False, height=3.4, aspect=1.1)
    grid.set_axis_labels("target population", "value")
    return grid.figure


def plot_inference_time(runs: pd.DataFrame, methods: Sequence[str], *, title: str = "") -> Figure:
    """Fig. 6: each run's wall time (log scale), one bar per method and scenario."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    sns.barplot(data=runs, x="method", y="runtime_s", hue="scenario", ax=ax, order=list(methods))
    ax.set(ylabel="inference wall time (s)", yscale="log", title=title)
    return fig
