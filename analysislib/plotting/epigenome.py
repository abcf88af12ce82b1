"""Figures of the eDICE notebooks (30–33; Hawkins-Hooker et al. 2023, Figs. 2–6).

Each function takes tidy tables (results-store rows, or the tables of
:mod:`analysislib.epigenome.report` and :mod:`analysislib.epigenome.downstream`) plus keyword options and
returns a matplotlib figure; the notebooks save it with :func:`analysislib.plotting.save_figure`.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import xarray as xr
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.patches import Circle

from analysislib.epigenome.differential import DifferentialOverlap
from analysislib.epigenome.wasserstein import distance_agreement
from analysislib.errors import InvalidArgumentError

__all__ = [
    "plot_affinity_correlation",
    "plot_affinity_heatmap",
    "plot_distance_scatter",
    "plot_example_tracks",
    "plot_individual_specific_auprc",
    "plot_joint_occupancy",
    "plot_learning_curves",
    "plot_mark_groups",
    "plot_metric_boxes",
    "plot_occupancy_histograms",
    "plot_peak_examples",
    "plot_replicates_at_peaks",
    "plot_scores_by_assay",
    "plot_track_across_individuals",
    "plot_transfer_scores",
    "plot_venn",
    "plot_win_percentages",
]

#: Colours of the tracks of a panel, in order (observed first).
TRACK_COLOURS = ("k", "tab:blue", "tab:orange", "tab:green", "tab:red")
#: Colours of the two tissues compared in Fig. 4.
TISSUE_COLOURS = ("tab:blue", "tab:orange")


def _labels(metrics: Mapping[str, str] | Sequence[str]) -> dict[str, str]:
    return dict(metrics) if isinstance(metrics, Mapping) else {m: m for m in metrics}


def _region_title(row: Mapping[str, Any]) -> str:
    title = f"{row['chrom']}:{int(row['start'])}-{int(row['end'])}"
    return f"{row['kind']}: {title}" if "kind" in row else title


# --------------------------------------------------------------------------- Fig. 2


def plot_metric_boxes(tracks: pd.DataFrame, *, metrics: Mapping[str, str],
                      order: Sequence[str], title: str = "") -> Figure:
    """Per-track scores of every method, one panel per metric (eDICE Fig. 2a).

    Parameters
    ----------
    tracks
        Store rows of one dataset's tracks (``method``, ``metric``, ``value``).
    metrics
        Metric -> panel title, in panel order.
    order
        Methods, in box order.
    title
        Figure title.
    """
    part = tracks[tracks["metric"].isin(list(metrics))]
    part = part.assign(**{"metric name": part["metric"].map(metrics)})
    grid = sns.catplot(data=part, x="method", y="value", col="metric name", col_wrap=5,
                       kind="box", order=list(order), col_order=list(metrics.values()),
                       sharey=False, height=2.6, aspect=0.95, hue="method", palette="tab10",
                       legend=False)
    grid.map_dataframe(sns.stripplot, x="method", y="value", order=list(order), color="k",
                       size=3)
    for ax in grid.axes.flat:
        ax.tick_params(axis="x", rotation=60)
    grid.set_titles("{col_name}")
    grid.figure.suptitle(title, y=1.02)
    return grid.figure


def plot_example_tracks(windows: pd.DataFrame, peaks: pd.DataFrame, *,
                        titles: Mapping[str, str] | None = None,
                        xlabel: str = "position (kb)") -> Figure:
    """Observed and imputed signal with the peaks called on each (eDICE Fig. 2b).

    One column per cell, one row per track (observed first) and a last row with the peaks.

    Parameters
    ----------
    windows, peaks
        Output of :func:`analysislib.epigenome.report.example_tracks`.
    titles
        Cell -> column title (default the cell).
    xlabel
        Label of the position axis (kb).
    """
    cells = list(dict.fromkeys(windows["cell"]))
    sources = list(dict.fromkeys(windows["track"]))
    colours = dict(zip(sources, TRACK_COLOURS, strict=False))
    fig, axes = plt.subplots(len(sources) + 1, len(cells), figsize=(7 * len(cells), 7),
                             squeeze=False, sharex="col",
                             gridspec_kw={"height_ratios": [2] * len(sources) + [1.2]})
    for col, cell in enumerate(cells):
        part = windows[windows["cell"] == cell]
        top = float(part["signal"].max())
        for row, source in enumerate(sources):
            line = part[part["track"] == source]
            ax = axes[row, col]
            ax.fill_between(line["bin_start"] / 1e3, line["signal"], step="mid",
                            color=colours[source])
            ax.set(ylabel=f"{source}\n−log10 p", ylim=(0, top * 1.05))
        ax = axes[-1, col]
        for row, source in enumerate(sources):
            inside = peaks[(peaks["cell"] == cell) & (peaks["track"] == source)]
            ax.hlines(np.full(len(inside), row), inside["start"] / 1e3, inside["end"] / 1e3,
                      lw=6, color=colours[source])
        ax.set(yticks=range(len(sources)), yticklabels=[f"{s} peaks" for s in sources],
               ylim=(-0.7, len(sources) - 0.3), xlabel=xlabel)
        axes[0, col].set_title((titles or {}).get(cell, cell))
    fig.tight_layout()
    return fig


def plot_win_percentages(wins: pd.DataFrame, *, labels: Mapping[str, str] | None = None,
                         baselines: Sequence[str] | None = None, col: str | None = None,
                         ylabel: str = "better (%)") -> Figure:
    """Percentage of strata on which a method beats each baseline, per metric (eDICE Fig. 2c).

    Parameters
    ----------
    wins
        Output of :func:`analysislib.results.summary.win_percentages`.
    labels
        Metric -> label, in bar-group order (default the metrics as found).
    baselines
        Bar order within a group.
    col
        Column of ``wins`` giving the panels (e.g. ``"data"``).
    ylabel
        Label of the percentage axis.
    """
    labels = dict(labels) if labels else {m: m for m in dict.fromkeys(wins["metric"])}
    data = wins.assign(metric=wins["metric"].map(labels)).rename(columns={"win_pct": ylabel})
    grid = sns.catplot(data=data, x="metric", y=ylabel, hue="baseline", col=col, kind="bar",
                       order=list(labels.values()), hue_order=baselines, height=3.8,
                       aspect=1.6)
    for ax in grid.axes.flat:
        ax.axhline(50, color="grey", lw=1, ls="--")
        ax.tick_params(axis="x", rotation=45)
        ax.set(ylim=(0, 100))
    return grid.figure


def plot_learning_curves(curve: pd.DataFrame, *, labels: Mapping[str, str],
                         title: str = "") -> Figure:
    """Scores against the number of training bins, one panel per metric (eDICE Fig. 2d).

    Parameters
    ----------
    curve
        Store rows of tracks with a ``training bins`` column
        (:func:`analysislib.epigenome.report.training_bins`); lines are means with 95 %
        confidence intervals over tracks.
    labels
        Metric -> panel title.
    title
        Figure title.
    """
    data = curve.assign(**{"metric name": curve["metric"].map(labels)})
    grid = sns.relplot(data=data, x="training bins", y="value", hue="method", col="metric name",
                       kind="line", marker="o", errorbar=("ci", 95), facet_kws={"sharey": False},
                       height=3.2, aspect=1.1)
    for ax in grid.axes.flat:
        ax.set_xscale("log")
    grid.set_titles("{col_name}")
    grid.figure.suptitle(title, y=1.03)
    return grid.figure


# --------------------------------------------------------------------------- Fig. 3


def plot_scores_by_assay(rows: pd.DataFrame, *, metrics: Mapping[str, str] | Sequence[str],
                         seed: int = 0) -> Figure:
    """Per-track scores grouped by assay, one row per metric and column per dataset (Fig. 3a).

    Dots (jittered) are coloured by the fitted tracks of the same cell type; the light bars
    behind (right axis) count the fitted tracks of the same assay in other cell types.

    Parameters
    ----------
    rows
        Per-track rows with ``data``, ``assay``, ``metric``, ``value`` and the two count columns
        of :func:`analysislib.epigenome.report.support_counts`.
    metrics
        Metric -> axis label (or the metrics), in row order.
    seed
        Seed of the jitter.
    """
    labels = _labels(metrics)
    datas = sorted(rows["data"].unique())
    cell_counts = rows["fitted tracks, same cell type"]
    fig, axes = plt.subplots(len(labels), len(datas), figsize=(7 * len(datas), 2.8 * len(labels)),
                             constrained_layout=True, squeeze=False)
    jitter = np.random.default_rng(seed)
    points = None
    for r, (metric, label) in enumerate(labels.items()):
        for c, data in enumerate(datas):
            ax = axes[r, c]
            part = rows[(rows["data"] == data) & (rows["metric"] == metric)]
            order = sorted(part["assay"].unique())
            counts = part.groupby("assay")["fitted tracks, same assay"].mean().reindex(order)
            twin = ax.twinx()
            twin.bar(range(len(order)), counts.to_numpy(), width=0.7, color="lightblue",
                     alpha=0.6)
            twin.set(ylabel="fitted tracks,\nsame assay", ylim=(0, max(counts.max(), 1) * 1.15))
            twin.grid(False)
            ax.set_zorder(twin.get_zorder() + 1)
            ax.patch.set_visible(False)
            x = (np.array([order.index(a) for a in part["assay"]])
                 + jitter.uniform(-0.15, 0.15, len(part)))
            points = ax.scatter(x, part["value"], c=part["fitted tracks, same cell type"],
                                cmap="viridis", vmin=cell_counts.min(), vmax=cell_counts.max(),
                                s=30, edgecolor="k", linewidth=0.4)
            ax.set_xticks(range(len(order)), order, rotation=30)
            ax.set(xlim=(-0.6, len(order) - 0.4), ylabel=label,
                   title=f"{data}: eDICE {label} per test track")
    if points is not None:
        fig.colorbar(points, ax=axes.ravel().tolist(), label="fitted tracks of the same cell type",
                     shrink=0.4)
    return fig


def plot_mark_groups(rows: pd.DataFrame, tests: pd.DataFrame, *,
                     metrics: Mapping[str, str] | Sequence[str]) -> Figure:
    """Per-track scores of two mark groups with their Welch test (eDICE Fig. 3b–c).

    One row per dataset, one column per metric; the p-value is printed under each panel.

    Parameters
    ----------
    rows
        Output of :func:`analysislib.epigenome.report.mark_groups` (``data``, ``metric``,
        ``group``, ``assay``, ``value``).
    tests
        Output of :func:`analysislib.epigenome.report.mark_group_tests` for the same rows.
    metrics
        Metric -> title (or the metrics), in column order.
    """
    labels = _labels(metrics)
    groups = str(tests["split"].iloc[0]).split(" vs ")
    datas = sorted(rows["data"].unique())
    p_values = tests.set_index(["data", "metric"])["Welch p"]
    fig, axes = plt.subplots(len(datas), len(labels), squeeze=False,
                             figsize=(3.3 * len(labels), 3.6 * len(datas)))
    for r, data in enumerate(datas):
        for c, (metric, label) in enumerate(labels.items()):
            ax = axes[r, c]
            sub = rows[(rows["data"] == data) & (rows["metric"] == metric)]
            p = float(p_values.get((data, metric), np.nan))
            sns.boxplot(data=sub, x="group", y="value", order=groups, ax=ax, color="lightgrey",
                        showfliers=False)
            sns.stripplot(data=sub, x="group", y="value", order=groups, hue="assay", ax=ax,
                          size=4, legend=(c == len(labels) - 1))
            ax.set(title=f"{data}: {label}", xlabel=f"Welch p = {p:.3g}", ylabel=label)
        if axes[r, -1].get_legend() is not None:
            axes[r, -1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8,
                               title="assay")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- Fig. 4


def plot_distance_scatter(distances: xr.Dataset, *, highlight: pd.DataFrame | None = None,
                          ax: Any = None) -> Figure:
    """Scatter of observed vs imputed peak-shape distances (eDICE Fig. 4c).

    Parameters
    ----------
    distances
        ``observed`` and ``imputed`` over ``peak``, with attributes ``cells`` and ``unit``
        (:func:`analysislib.epigenome.wasserstein.peak_shape_distances`, computed, or
        :func:`analysislib.epigenome.report.read_peak_shapes`).
    highlight
        Rows with ``observed``, ``imputed``, ``kind`` (``specific`` or ``shared``) and
        ``peak`` (:func:`analysislib.epigenome.wasserstein.highlight_peaks`): circled and named
        in the legend.
    ax
        Matplotlib axes to draw on; a new figure otherwise.
    """
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
    else:
        fig = ax.figure
    x = np.asarray(distances["observed"].values, dtype=np.float64)
    y = np.asarray(distances["imputed"].values, dtype=np.float64)
    ax.scatter(x, y, s=6, alpha=0.4, color="tab:blue", linewidths=0)
    agreement = distance_agreement(distances)
    unit = distances.attrs.get("unit", "bins")
    ax.set_xlabel(f"W1 distance, observed ({unit})")
    ax.set_ylabel(f"W1 distance, imputed ({unit})")
    cells = distances.attrs.get("cells", ["A", "B"])
    ax.set_title(f"{cells[0]} vs {cells[1]}: Pearson {agreement.pearson:.2f}, "
                 f"Spearman {agreement.spearman:.2f} (n={agreement.n})", fontsize=9)
    if highlight is not None and len(highlight):
        for row in highlight.to_dict("records"):
            ax.scatter([row["observed"]], [row["imputed"]], s=80, facecolors="none",
                       edgecolors="tab:red" if row["kind"] == "specific" else "tab:green",
                       label=f"{row['kind']}: {row['peak']}")
        ax.legend(fontsize=7, loc="upper left")
    return fig


def plot_peak_examples(windows: pd.DataFrame, highlight: pd.DataFrame) -> Figure:
    """Signal of both tissues around example peaks, observed above imputed (eDICE Fig. 4a, b).

    Parameters
    ----------
    windows
        :func:`analysislib.epigenome.report.track_windows` of tracks ``observed`` and
        ``imputed`` with a ``cell`` column (the two tissues) around the rows of ``highlight``.
    highlight
        The peaks (``chrom``, ``start``, ``end``, optionally ``kind``), one column each.
    """
    if len(highlight) == 0:
        raise InvalidArgumentError("no peaks to plot")
    kinds = list(dict.fromkeys(windows["track"]))
    cells = list(dict.fromkeys(windows["cell"]))
    n = len(highlight)
    fig, axes = plt.subplots(len(kinds), n, figsize=(3.2 * n, 2.1 * len(kinds)), squeeze=False,
                             sharex="col")
    for col, row in enumerate(highlight.reset_index(drop=True).to_dict("records")):
        for r, kind in enumerate(kinds):
            ax = axes[r, col]
            for cell, colour in zip(cells, TISSUE_COLOURS, strict=False):
                part = windows[(windows["region"] == col) & (windows["track"] == kind)
                               & (windows["cell"] == cell)]
                ax.step(part["bin_start"], part["signal"], where="post", color=colour,
                        label=str(cell), linewidth=1)
            ax.axvspan(float(row["start"]), float(row["end"]), color="0.85", zorder=0)
            if col == 0:
                ax.set_ylabel(f"{kind}\n−log10 p")
        axes[0, col].set_title(_region_title(row), fontsize=8)
        axes[-1, col].set_xlabel("position (bp)")
    axes[0, 0].legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def plot_replicates_at_peaks(windows: pd.DataFrame, highlight: pd.DataFrame) -> Figure:
    """Every replicate of both tissues around example peaks (eDICE Fig. 4a, b, top rows).

    Parameters
    ----------
    windows
        :func:`analysislib.epigenome.report.track_windows` of tissue -> replicates
        ``(replicate, bin)`` around the rows of ``highlight``.
    highlight
        The peaks (``chrom``, ``start``, ``end``, optionally ``kind``), one panel each.
    """
    tissues = list(dict.fromkeys(windows["track"]))
    fig, axes = plt.subplots(1, len(highlight), figsize=(3.4 * len(highlight), 2.8),
                             squeeze=False)
    for col, row in enumerate(highlight.reset_index(drop=True).to_dict("records")):
        ax = axes[0, col]
        for tissue, colour in zip(tissues, TISSUE_COLOURS, strict=False):
            part = windows[(windows["region"] == col) & (windows["track"] == tissue)]
            for k, (_, rep) in enumerate(part.groupby("replicate", sort=True)):
                ax.step(rep["bin_start"], rep["signal"], where="post", color=colour, lw=0.8,
                        alpha=0.7, label=tissue if k == 0 else None)
        ax.axvspan(float(row["start"]), float(row["end"]), color="0.9", zorder=0)
        ax.set(title=_region_title(row), xlabel="position (bp)")
        ax.title.set_fontsize(8)
    axes[0, 0].set_ylabel("replicates, −log10 p")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_venn(overlap: DifferentialOverlap, *, labels: Sequence[str] = ("measured", "imputed"),
              ax: Any = None) -> Figure:
    """Two-circle Venn diagram of differential peaks (eDICE Fig. 4e).

    Circle areas are proportional to the set sizes; the overlap is drawn at a fixed offset
    (not area-exact) and labelled with the counts and the PPV.

    Parameters
    ----------
    overlap
        Counts of differential peaks (:class:`~analysislib.epigenome.differential.DifferentialOverlap`).
    labels
        Names of the two sets.
    ax
        Matplotlib axes to draw on; a new figure otherwise.
    """
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
    else:
        fig = ax.figure
    sizes = np.array([overlap.n_measured, overlap.n_imputed], dtype=float)
    radii = np.sqrt(np.maximum(sizes, 1) / max(sizes.max(), 1))
    gap = 0.6 * (radii.sum()) if overlap.n_shared else 1.1 * radii.sum()
    centres = [(-gap / 2, 0.0), (gap / 2, 0.0)]
    for (x, y), r, colour in zip(centres, radii, TISSUE_COLOURS, strict=True):
        ax.add_patch(Circle((x, y), r, alpha=0.4, color=colour, linewidth=1.5))
    ax.text(centres[0][0] - radii[0] / 2, 0, str(overlap.n_measured - overlap.n_shared),
            ha="center", va="center")
    ax.text(centres[1][0] + radii[1] / 2, 0, str(overlap.n_imputed - overlap.n_shared),
            ha="center", va="center")
    ax.text(0.0, 0.0, str(overlap.n_shared), ha="center", va="center", fontweight="bold")
    for (x, _), r, label in zip(centres, radii, labels, strict=True):
        ax.text(x, r + 0.08, label, ha="center", va="bottom")
    ax.set_title(f"differential peaks (PPV {overlap.ppv:.2f}, recall {overlap.recall:.2f})",
                 fontsize=9)
    ax.set_xlim(centres[0][0] - radii[0] - 0.2, centres[1][0] + radii[1] + 0.2)
    ax.set_ylim(-radii.max() - 0.2, radii.max() + 0.35)
    ax.set_aspect("equal")
    ax.axis("off")
    return fig


def plot_affinity_correlation(correlation: pd.DataFrame) -> Figure:
    """Clustered heatmap of the sample correlation matrix (eDICE Fig. 4d; seaborn clustermap).

    Parameters
    ----------
    correlation
        Sample × sample correlation of affinities.
    """
    grid = sns.clustermap(correlation, cmap="viridis", figsize=(5, 5), annot=False)
    return grid.figure


def plot_affinity_heatmap(matrix: pd.DataFrame, samples: pd.DataFrame | None = None) -> Figure:
    """Clustered heatmap of row-scaled affinities of differential peaks (eDICE Fig. 4f).

    Rows (peaks) are clustered (average linkage, as seaborn's default); columns keep the given
    order, measured samples first when ``samples`` is given.

    Parameters
    ----------
    matrix
        Peaks × samples row-scaled affinities (at least two peaks).
    samples
        Per sample ``source`` and ``tissue``, to order the columns.
    """
    if matrix.shape[0] < 2:
        raise InvalidArgumentError("need at least two differential peaks to cluster")
    columns = list(matrix.columns)
    if samples is not None:
        columns = sorted(columns, key=lambda s: (samples.at[s, "source"] != "measured",
                                                 samples.at[s, "tissue"], s))
    grid = sns.clustermap(matrix[columns], col_cluster=False, cmap="RdBu_r", center=0,
                          yticklabels=False, figsize=(5, 6))
    return grid.figure


# --------------------------------------------------------------------------- Figs. 5–6


def plot_track_across_individuals(windows: pd.DataFrame, *, by: str = "individual",
                                  title: str = "") -> Figure:
    """One track in every individual, one row each (eDICE Fig. 5a).

    Parameters
    ----------
    windows
        :func:`analysislib.epigenome.report.track_windows` of a track with a ``by``
        dimension.
    by
        Column giving the rows.
    title
        Figure title.
    """
    names = list(dict.fromkeys(windows[by]))
    fig, axes = plt.subplots(len(names), 1, figsize=(9, 1.2 * len(names)), sharex=True,
                             sharey=True, squeeze=False)
    for ax, name in zip(axes[:, 0], names, strict=True):
        part = windows[windows[by] == name]
        ax.fill_between(part["bin_start"] / 1e3, part["signal"], step="post", color="tab:blue",
                        lw=0)
        ax.set_ylabel(str(name), rotation=0, ha="right", va="center")
    axes[-1, 0].set_xlabel(f"{windows['chrom'].iloc[0]} position (kb)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_occupancy_histograms(table: pd.DataFrame, *, by: str = "assay",
                              value: str = "fraction", title: str | None = None) -> Figure:
    """One bar chart of occupancy per ``by`` value (eDICE Fig. 5b, c).

    Parameters
    ----------
    table
        ``by``, ``occupancy`` and ``n_bins`` columns, e.g.
        :func:`analysislib.epigenome.occupancy.occupancy_histogram` (rows of several groups
        sharing a ``by`` value are summed: bin counts are added, fractions recomputed).
    by
        Column giving the panels.
    value
        ``"fraction"`` or ``"n_bins"``.
    title
        Figure title.
    """
    if value not in ("fraction", "n_bins"):
        raise InvalidArgumentError(f"value must be 'fraction' or 'n_bins', got {value!r}")
    if table.empty:
        raise InvalidArgumentError("no occupancy rows to plot")
    summed = table.groupby([by, "occupancy"], sort=True)["n_bins"].sum().reset_index()
    summed["fraction"] = summed["n_bins"] / summed.groupby(by)["n_bins"].transform("sum")
    panels = list(dict.fromkeys(summed[by]))
    fig, axes = plt.subplots(1, len(panels), figsize=(2.4 * len(panels), 2.8), squeeze=False,
                             sharey=value == "fraction")
    for ax, panel in zip(axes[0], panels, strict=True):
        part = summed[summed[by] == panel]
        ax.bar(part["occupancy"], part[value], color="tab:blue")
        ax.set_title(str(panel), fontsize=9)
        ax.set_xticks(part["occupancy"])
        ax.set_xlabel("occupancy")
    axes[0, 0].set_ylabel("fraction of enriched bins" if value == "fraction" else "bins")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_joint_occupancy(tables: Mapping[Hashable, pd.DataFrame] | pd.DataFrame, *,
                         title: str | None = None) -> Figure:
    """Heatmaps of joint-occupancy tables (eDICE Fig. 5d), log-scaled colours.

    Parameters
    ----------
    tables
        One tissues × individuals table (:func:`analysislib.epigenome.occupancy.joint_occupancy`),
        or a mapping label -> table (one panel each, e.g. one per assay).
    title
        Figure title.
    """
    if isinstance(tables, pd.DataFrame):
        tables = {"": tables}
    items = list(tables.items())
    if not items:
        raise InvalidArgumentError("no joint-occupancy tables to plot")
    fig, axes = plt.subplots(1, len(items), figsize=(2.8 * len(items), 2.9), squeeze=False)
    for ax, (label, table) in zip(axes[0], items, strict=True):
        values = table.to_numpy(np.float64)
        shown = np.where(values > 0, values, np.nan)
        vmax = np.nanmax(shown) if np.isfinite(shown).any() else 1.0
        image = ax.imshow(shown, origin="lower", cmap="viridis", aspect="auto",
                          norm=LogNorm(vmin=1, vmax=max(vmax, 1.0)))
        for (r, c), v in np.ndenumerate(values):
            ax.text(c, r, str(int(v)), ha="center", va="center", fontsize=7, color="w")
        ax.set_xticks(range(table.shape[1]), table.columns)
        ax.set_yticks(range(table.shape[0]), table.index)
        ax.set_xlabel("individuals enriched")
        ax.set_ylabel("tissues enriched")
        ax.set_title(str(label), fontsize=9)
        ax.grid(False)
        fig.colorbar(image, ax=ax, shrink=0.8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_transfer_scores(rows: pd.DataFrame) -> Figure:
    """Pearson r and MSE per assay of eDICE transfer and both baselines (eDICE Fig. 5e).

    Parameters
    ----------
    rows
        Track rows of the transfer scores with an ``assay`` column
        (:func:`analysislib.epigenome.report.read_transfer_tracks`).
    """
    from analysislib.epigenome.transfer import TRANSFER_LABELS, TRANSFER_METHODS

    data = rows.assign(method=rows["method"].map(TRANSFER_LABELS))
    grid = sns.catplot(data=data, x="assay", y="value", hue="method", col="metric", kind="box",
                       sharey=False, height=3.4, aspect=1.3,
                       hue_order=[TRANSFER_LABELS[m] for m in TRANSFER_METHODS])
    grid.set_axis_labels("", "")
    grid.set_titles("{col_name} (arcsinh)")
    grid.set_xticklabels(rotation=30)
    return grid.figure


def plot_individual_specific_auprc(rows: pd.DataFrame) -> Figure:
    """AUPRC for individual-specific peaks per assay, and eDICE against each baseline per track.

    eDICE Fig. 6c (boxes per assay and method) and 6d (one dot per track and baseline, the
    diagonal dashed).

    Parameters
    ----------
    rows
        Track rows of the ``auprc`` metric with an ``assay`` column
        (:func:`analysislib.epigenome.report.read_transfer_tracks`), methods as in
        :data:`analysislib.epigenome.transfer.TRANSFER_LABELS`.
    """
    from analysislib.epigenome.transfer import TRANSFER_LABELS, TRANSFER_METHODS

    labels = TRANSFER_LABELS
    order = [labels[m] for m in (*TRANSFER_METHODS, "positive_fraction")]
    data = rows.assign(method=rows["method"].map(labels))
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), gridspec_kw={"width_ratios": [2.2, 1]})
    sns.boxplot(data=data, x="assay", y="value", hue="method", hue_order=order, ax=axes[0])
    axes[0].set(ylabel="AUPRC, individual-specific bins", xlabel="", title="Fig. 6c")
    wide = data.pivot_table(index="stratum", columns="method", values="value")
    for baseline, colour in zip(order[1:], ("tab:orange", "tab:green", "tab:red"), strict=True):
        if baseline in wide and order[0] in wide:
            axes[1].scatter(wide[baseline], wide[order[0]], s=14, color=colour, label=baseline)
    values = wide.to_numpy(dtype=float)
    top = float(np.nanmax(values)) * 1.05 if np.isfinite(values).any() else 1.0
    axes[1].plot([0, top], [0, top], color="grey", lw=1, ls="--")
    axes[1].set(xlabel="baseline AUPRC", ylabel="eDICE AUPRC", title="Fig. 6d: per track")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return fig
