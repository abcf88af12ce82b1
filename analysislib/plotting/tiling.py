"""Figures of LD-based genome tiling (Dias et al. 2022, Fig. 1A; notebook 10).

Each function takes a :class:`~analysislib.tiling.Tiling` (and its dataset) and returns a
matplotlib figure; the notebook saves it with :func:`analysislib.plotting.save_figure`.
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import xarray as xr
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from analysislib.ld import ld_band
from analysislib.tiling import Tiling, thresholded_ld_matrix

__all__ = ["CUT_COLOURS", "DIAS_CHR22_TILE_SIZES", "plot_tile_chromosome", "plot_tile_region",
           "plot_tile_sizes"]

#: Colour of each way a tile boundary was cut (valley–mountain–valley, mountain split, size cap).
CUT_COLOURS = {"vmv": "tab:green", "mountain_split": "tab:orange", "hard_cap": "tab:purple"}
#: Quartiles (with minimum and maximum) of the variants per tile Dias et al. report on HRC chr22.
DIAS_CHR22_TILE_SIZES = (111, 603, 1758, 3364, 6001)


def _hotspot_indices(tiling: Tiling, ds: xr.Dataset, hotspots: pd.DataFrame) -> np.ndarray:
    """Hotspot midpoints as fractional common-variant indices (for plots in index space)."""
    positions = ds["variant_position"].values[tiling.common_index]
    mid = (hotspots["start"].to_numpy() + hotspots["end"].to_numpy()) / 2 + 1
    return np.interp(mid, positions, np.arange(len(positions)), left=np.nan, right=np.nan)


def _draw_tiles(ax: Any, tiles: pd.DataFrame, first: float, last: float, unit: str) -> None:
    """Tiles as bars on two alternating rows, coloured by how they were cut."""
    for _, t in tiles.iterrows():
        lo, hi = t[f"first_{unit}"], t[f"last_{unit}"]
        if hi < first or lo > last:
            continue
        ax.broken_barh([(lo, hi - lo)], (t["tile"] % 2 + 0.1, 0.8), color=CUT_COLOURS[t["cut"]],
                       alpha=0.85)
    ax.set(ylim=(0, 2), yticks=[])
    ax.legend(handles=[Patch(color=c, label=k) for k, c in CUT_COLOURS.items()],
              loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, title="tile cut",
              title_fontsize=8)


def plot_tile_region(ds: xr.Dataset, tiling: Tiling, start: int, size: int, title: str, *,
                     hotspots: pd.DataFrame | None = None) -> Figure:
    """Fig. 1A for a window of common variants: thresholded |r|, box counts and tiles.

    Parameters
    ----------
    ds, tiling
        The dataset and its :func:`~analysislib.tiling.tile_genome` result.
    start, size
        First common-variant index of the window and its length
        (:func:`~analysislib.tiling.valley_window` picks one with valleys).
    title
        Panel title prefix.
    hotspots
        Simulated hotspots to mark (0-based half-open ``start``, ``end``), if known.
    """
    common = tiling.common_index
    stop = min(start + size, len(common))
    params = tiling.params
    box = params["box"]
    band = ld_band(ds.isel(variants=common[start:stop]), window=stop - start - 1, unit="haplotype")
    matrix = thresholded_ld_matrix(band.values, 0, stop - start, threshold=params["r_threshold"])
    scores = tiling.scores["box_score"].to_numpy().astype(float)
    scores[scores < 0] = np.nan
    fig, axes = plt.subplots(3, 1, figsize=(8, 12), sharex=True,
                             gridspec_kw={"height_ratios": [5, 2.2, 0.8]})
    ax = axes[0]
    ax.imshow(matrix, cmap=ListedColormap(["#d9d9d9", "#d62728"]), vmin=0, vmax=1, aspect="auto",
              interpolation="nearest", extent=(start - 0.5, stop - 0.5, stop - 0.5, start - 0.5))
    ax.set(ylabel="common variant",
           title=f"{title}: |r| ≥ {params['r_threshold']} (red) and {box} × {box} boxes")
    ax.grid(False)
    # One box at the deepest valley in view and one at the highest score.
    valleys = tiling.regions.query("kind == 'valley'")
    valleys = valleys[(valleys.min_score_common >= start + box)
                      & (valleys.min_score_common <= stop - box)]
    in_view = np.arange(start + box - 1, stop - box)
    marks = []
    if not valleys.empty:
        marks.append((int(valleys.sort_values("min_score").iloc[0]["min_score_common"]), "tab:blue"))
    if len(in_view) and np.isfinite(scores[in_view]).any():
        marks.append((int(in_view[np.nanargmax(scores[in_view])]) + 1, "black"))
    for k, colour in marks:
        ax.add_patch(Rectangle((k - 0.5, k - box - 0.5), box, box, fill=False, lw=2, ec=colour))
        ax.annotate(f"box count {scores[k - 1]:.0f}", (k + box, k - box), color=colour,
                    fontsize=9, xytext=(4, 0), textcoords="offset points", va="top",
                    bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.85})
    ax = axes[1]
    ax.plot(np.arange(start, stop - 1) + 0.5, scores[start:stop - 1], color="tab:red", lw=1)
    ax.set_yscale("symlog", linthresh=10)
    low = params["valley_threshold"] - params["hysteresis_valley"]
    high = params["valley_threshold"] + params["hysteresis_mountain"]
    ax.axhline(low, ls="--", lw=0.8, color="tab:blue", label=f"valley below {low:g}")
    ax.axhline(high, ls="--", lw=0.8, color="black", label=f"mountain above {high:g}")
    for _, v in tiling.regions.query("kind == 'valley'").iterrows():
        if v["last_common"] >= start and v["first_common"] < stop:
            ax.axvspan(v["first_common"] - 0.5, v["last_common"] + 0.5, color="tab:blue",
                       alpha=0.15, lw=0)
            k = v["min_score_common"]
            if start < k < stop:
                ax.annotate("", (k - 0.5, max(v["min_score"], 0)), xytext=(0, 30),
                            textcoords="offset points",
                            arrowprops={"arrowstyle": "-|>", "color": "tab:red", "lw": 1.5})
    if hotspots is not None:
        xs = _hotspot_indices(tiling, ds, hotspots)
        for i, xh in enumerate(xs[(xs >= start) & (xs < stop)]):
            ax.axvline(xh, color="tab:green", lw=1, ls=":",
                       label="simulated hotspot" if i == 0 else None)
    ax.set(ylabel="box count", ylim=(-0.5, None))
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    _draw_tiles(axes[2], tiling.tiles.query("first_common >= 0"), start, stop, "common")
    axes[2].set(xlabel="common variant index", xlim=(start - 0.5, stop - 0.5))
    fig.tight_layout()
    return fig


def plot_tile_chromosome(tiling: Tiling, title: str, hotspots: pd.DataFrame | None = None
                         ) -> Figure:
    """Box counts, valleys and tiles along the whole region, in Mb."""
    s = tiling.scores
    x = (s["position_up"] + s["position_down"]) / 2e6
    y = s["box_score"].where(s["box_score"] >= 0)
    fig, axes = plt.subplots(2, 1, figsize=(12, 4.8), sharex=True,
                             gridspec_kw={"height_ratios": [3, 1]})
    ax = axes[0]
    ax.plot(x, y, color="tab:red", lw=0.7)
    ax.set_yscale("symlog", linthresh=10)
    params = tiling.params
    low = params["valley_threshold"] - params["hysteresis_valley"]
    ax.axhline(low, ls="--", lw=0.8, color="tab:blue", label=f"valley below {low:g}")
    for _, v in tiling.regions.query("kind == 'valley'").iterrows():
        ax.axvspan(v["first_position"] / 1e6, v["last_position"] / 1e6 + 1e-4, color="tab:blue",
                   alpha=0.25, lw=0)
    centres = tiling.valley_centres()
    if len(centres) <= 60:  # beyond that the shading alone reads better
        ax.vlines(centres / 1e6, 0, 1, transform=ax.get_xaxis_transform(), color="tab:blue",
                  lw=0.6, alpha=0.6, label="valley centre (tile boundary)")
    if hotspots is not None:
        mid = (hotspots["start"] + hotspots["end"]) / 2e6
        ax.plot(mid, np.full(len(mid), y.max() * 1.5), "v", color="tab:green", ms=6,
                label="simulated hotspot")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    ax.set(ylabel="box count", title=f"{title}: box counts (box {params['box']}) and valleys")
    tiles = tiling.tiles.assign(first_mb=tiling.tiles["first_position"] / 1e6,
                                last_mb=tiling.tiles["last_position"] / 1e6)
    _draw_tiles(axes[1], tiles, -np.inf, np.inf, "mb")
    axes[1].set(xlabel="position (Mb)")
    fig.tight_layout()
    return fig


def plot_tile_sizes(tilings: dict[str, Tiling]) -> Figure:
    """Cumulative distributions of variants per tile and tile length, one line per dataset,
    with the quartiles Dias et al. report on HRC chr22 (:data:`DIAS_CHR22_TILE_SIZES`)."""
    sizes = pd.concat([t.tiles.assign(dataset=name) for name, t in tilings.items()])
    sizes["length (kb)"] = (sizes["last_position"] - sizes["first_position"] + 1) / 1e3
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    sns.ecdfplot(data=sizes, x="n_variants", hue="dataset", ax=axes[0])
    label = "Dias et al. chr22 (HRC)"
    axes[0].plot(DIAS_CHR22_TILE_SIZES, [0, 0.25, 0.5, 0.75, 1], "kx", ms=8, label=label)
    legend = axes[0].get_legend()
    axes[0].legend(handles=legend.legend_handles + axes[0].lines[-1:],
                   labels=[t.get_text() for t in legend.texts] + [label], fontsize=8)
    axes[0].set(xscale="log", xlabel="variants per tile", ylabel="fraction of tiles",
                title="tile sizes (variants)")
    sns.ecdfplot(data=sizes, x="length (kb)", hue="dataset", ax=axes[1], legend=False)
    axes[1].set(xscale="log", xlabel="tile length (kb)", ylabel="fraction of tiles",
                title="tile lengths")
    fig.tight_layout()
    return fig
