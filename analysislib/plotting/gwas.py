"""Figures of the DeepWAS comparison (notebooks 40 and 41).

Each function takes the tables of :mod:`analysislib.gwas.report` and returns a matplotlib
figure; the notebooks save it with :func:`analysislib.plotting.save_figure`.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysislib.gwas.report import MODEL_ORDER

__all__ = ["plot_ablation", "plot_enrichment_recovery", "plot_model_size"]


def plot_model_size(stats: pd.DataFrame, *, title: str = "") -> Figure:
    """Table 1 as two panels: held-out Δ NLL and corr(log F̂, log F) by model size.

    Parameters
    ----------
    stats
        The ``stats`` table of :func:`~analysislib.gwas.report.model_size_tables` (mean and
        95 % half-width per objective and model).
    title
        Figure title.
    """
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    x = np.arange(len(MODEL_ORDER))
    objectives = list(dict.fromkeys(stats.index.get_level_values("objective")))
    panels = (("delta_nll", "held-out Δ NLL per SNP vs null (lower is better)"),
              ("log_f_r", "corr(log F̂, log F) on held-out SNPs"))
    for ax, (metric, label) in zip(axes, panels, strict=True):
        for k, (objective, marker) in enumerate(zip(objectives, "os", strict=False)):
            part = stats.loc[objective]
            mean = part[(metric, "mean")].reindex(MODEL_ORDER).to_numpy()
            half = np.nan_to_num(part[(metric, "ci95")].reindex(MODEL_ORDER).to_numpy())
            ax.errorbar(x + (k - 0.5) * 0.12, mean, yerr=half, marker=marker, capsize=3,
                        label=objective)
        ax.set(xticks=x, xticklabels=MODEL_ORDER, xlabel="model (small → large)", ylabel=label)
    axes[1].legend(title="objective", loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.suptitle(title)
    return fig


def plot_ablation(table: pd.DataFrame) -> Figure:
    """Table 2 as horizontal bars of held-out Δ NLL, one per (objective, model, features)."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    labels = [" · ".join(key) for key in table.index]
    colours = ["C0" if key[0] == "likelihood" else "C1" for key in table.index]
    ax.barh(labels, table["delta_nll"].to_numpy(), color=colours)
    ax.invert_yaxis()
    ax.set(xlabel="held-out Δ NLL per SNP vs null (lower is better)", title="ablation")
    return fig


def plot_enrichment_recovery(wide: pd.DataFrame, se: pd.Series, methods: Sequence[str]) -> Figure:
    """Estimated against true heritability enrichment, one marker per category and method.

    Parameters
    ----------
    wide, se
        From :func:`~analysislib.gwas.report.enrichment_comparison`; S-LDSC (method
        ``s_ldsc``) gets its jackknife standard errors as error bars.
    methods
        Columns of ``wide`` to draw (markers are slightly offset so they do not overlap).
    """
    fig, ax = plt.subplots(figsize=(6.5, 5))
    x = wide["truth"].to_numpy()
    offsets = np.linspace(0.97, 1.03, len(methods)) if len(methods) > 1 else [1.0]
    for method, marker, offset in zip(methods, "so^dv", offsets, strict=False):
        yerr = se.reindex(wide.index).to_numpy() if method == "s_ldsc" else None
        ax.errorbar(x * offset, wide[method].to_numpy(), yerr=yerr, fmt=marker, capsize=3,
                    label=method)
    lo = 0.5 * min(0.3, float(np.nanmin(x)))
    hi = max(3.0, float(np.nanmax(wide.to_numpy())) * 1.5)
    ax.plot([lo, hi], [lo, hi], color="grey", lw=1, ls="--")
    ax.set(xscale="log", xlim=(lo, hi), xlabel="true enrichment", ylabel="estimated enrichment",
           title="heritability enrichment of annotation categories")
    ax.set_yscale("symlog", linthresh=lo)  # S-LDSC estimates can be negative
    ax.legend()
    return fig
