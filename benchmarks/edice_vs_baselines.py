"""Benchmark: eDICE against AVG, PREDICTD-style, Avocado-style and ChromImpute on real tracks.

Follows the eDICE paper (Hawkins-Hooker et al. 2023), Fig. 2a (genome-wide MSE and Pearson
correlation on the arcsinh scale) and its "training efficiency" argument (Fig. 2d: eDICE predicts
at any position from the observed signal there, while a tensor factorisation must learn an
embedding for every position it predicts). All five imputers of
:data:`analysislib.epigenome.imputer.EPIGENOME_IMPUTERS` run in one process on the same data:

* **Data**: the Roadmap pilot-region tracks of the catalog (``roadmap_pilot_arcsinh``: 4 cell
  types x 5 marks, 25 bp bins), a window of ``--bins`` bins starting at ``--start``.
* **Protocol** ("target cell reduced to one mark"): for each target cell type every mark but one
  is hidden; the kept mark rotates over the assays (cell ``i`` keeps assay ``i mod 5``), so each
  assay is a target in at least three cell types. Each method is fitted once per target cell
  on the 16 other tracks plus the kept one, and predicts the 4 hidden tracks. The scores are
  :func:`analysislib.epigenome.metrics.score_tracks` ``mse`` and ``pearson`` (arcsinh scale, the
  paper's "GW MSE" and "GW Corr").
* **Throughput**: for eDICE and the Avocado-style model, bins predicted per second (target
  tracks x bins / wall seconds of ``predict``) on the fitted window, and on an unseen window of
  the same length right after it. There eDICE runs the same forward pass, while Avocado has to
  fit genome embeddings for the new bins first (its second training stage, ``genome_epochs``),
  which is counted.
* **Memory**: the peak resident-set-size increase of this process over its size before each
  fit/predict (``psutil`` polled every 5 ms; torch allocations are not seen by tracemalloc), and
  for ChromImpute the largest peak RSS of its Java runs as measured by
  :func:`analysislib.external.run_tool`.

Presets are the library's ``quick`` ones (one CPU thread by default); ``--preset paper`` uses the
papers' hyperparameters (far too slow for a CPU; ChromImpute's equivalent is ``full``).

Run from the project root::

    ANALYSISLIB_DATA_MIRROR=../shared/data .venv/bin/python benchmarks/edice_vs_baselines.py
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any, Self

import numpy as np
import pandas as pd
import xarray as xr

__all__ = ["PeakRSS", "main", "reduced_cell_targets"]

METHODS = ("edice", "avg", "predictd", "avocado", "chromimpute")


class PeakRSS:
    """Context manager measuring the peak resident set size increase of this process (MiB).

    A daemon thread polls :func:`psutil.Process.memory_info` every ``interval`` seconds; the
    result is the largest RSS seen minus the RSS on entry.
    """

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.peak_mb = float("nan")
        self._stop = threading.Event()

    def __enter__(self) -> Self:
        import psutil

        self._process = psutil.Process()
        self._start = self._peak = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, self._process.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, self._process.memory_info().rss)
        self.peak_mb = (self._peak - self._start) / 2**20


def reduced_cell_targets(ds: xr.Dataset, cell: str) -> list[tuple[str, str]]:
    """Tracks hidden when ``cell`` is reduced to one mark: all but assay ``i mod n_assays``."""
    cells = [str(c) for c in ds["cell"].values]
    assays = [str(a) for a in ds["assay"].values]
    keep = assays[cells.index(cell) % len(assays)]
    return [(cell, a) for a in assays if a != keep and bool(ds["observed"].sel(cell=cell, assay=a))]


def _make(name: str, preset: str) -> Any:
    from analysislib.epigenome.imputer import get_epigenome_imputer

    if name == "avg":
        return get_epigenome_imputer("avg")
    if name == "chromimpute":
        return get_epigenome_imputer("chromimpute", preset="full" if preset == "paper" else preset)
    return get_epigenome_imputer(name, preset=preset, device="cpu", progress=False)


def _largest(*values: float | None) -> float:
    """Largest of the finite values, NaN if none (methods without a subprocess report none)."""
    finite = [float(v) for v in values if v is not None and np.isfinite(v)]
    return max(finite) if finite else float("nan")


def _timed(call: Callable[[], Any]) -> tuple[Any, float, float]:
    with PeakRSS() as memory:
        start = time.perf_counter()
        out = call()
        seconds = time.perf_counter() - start
    return out, seconds, memory.peak_mb


def run(ds: xr.Dataset, unseen: xr.Dataset, methods: list[str], cells: list[str],
        preset: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fit and score every method for every target cell; time eDICE and Avocado throughput.

    Returns
    -------
    scores
        One row per (method, track): ``mse``, ``pearson``.
    costs
        One row per (method, target cell): fit and predict seconds, peak RSS increase (MiB),
        tool peak memory (ChromImpute), and for eDICE/Avocado the unseen-window predict seconds.
    """
    from analysislib.epigenome.metrics import score_tracks
    from analysislib.epigenome.tensor import hide_tracks

    scores, costs = [], []
    for cell in cells:
        targets = reduced_cell_targets(ds, cell)
        train = hide_tracks(ds, targets)
        unseen_inputs = hide_tracks(unseen, targets)
        for name in methods:
            imputer = _make(name, preset)
            _, fit_s, fit_mb = _timed(lambda: imputer.fit(train))  # noqa: B023
            fit_tool_mb = imputer.last_run.peak_memory_mb
            pred, pred_s, pred_mb = _timed(lambda: imputer.predict(targets))  # noqa: B023
            row = {"method": name, "cell": cell, "targets": len(targets),
                   "fit_s": fit_s, "predict_s": pred_s,
                   "peak_rss_mb": max(fit_mb, pred_mb),
                   "tool_peak_mb": _largest(fit_tool_mb, imputer.last_run.peak_memory_mb)}
            if name in ("edice", "avocado"):
                _, new_s, new_mb = _timed(
                    lambda: imputer.predict(targets, observed=unseen_inputs))  # noqa: B023
                row.update(unseen_predict_s=new_s, unseen_peak_rss_mb=new_mb)
            costs.append(row)
            table = score_tracks(ds, pred)
            for record in table[["track", "assay", "mse", "pearson"]].to_dict("records"):
                scores.append({"method": name, "cell": cell, **record})
            print(f"# {cell} {name}: fit {fit_s:.1f} s, predict {pred_s:.1f} s, "
                  f"mean pearson {table['pearson'].mean():.3f}", flush=True)
    return pd.DataFrame(scores), pd.DataFrame(costs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bins", type=int, default=100_000, help="25 bp bins per window")
    parser.add_argument("--start", type=int, default=200_000, help="first bin of the window")
    parser.add_argument("--cells", nargs="*", default=None, help="target cells (default all)")
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=METHODS)
    parser.add_argument("--preset", default="quick", choices=("quick", "paper"))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)

    import torch

    from analysislib.catalog import load_catalog

    torch.set_num_threads(args.threads)
    # The factorisations warn when a target informed their shared factors; every target is
    # hidden before fit here, so the warning cannot apply.
    warnings.filterwarnings("ignore", message=".*informed the shared factors.*")
    full = load_catalog().open("roadmap_pilot_arcsinh")
    if args.start + 2 * args.bins > full.sizes["bin"]:
        parser.error(f"--start + 2 x --bins exceeds the {full.sizes['bin']} bins of the data")
    ds = full.isel(bin=slice(args.start, args.start + args.bins)).load()
    unseen = full.isel(bin=slice(args.start + args.bins, args.start + 2 * args.bins)).load()
    cells = args.cells or [str(c) for c in ds["cell"].values]
    print(f"# {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
          f"{os.cpu_count()} CPUs, python {platform.python_version()}, torch {torch.__version__} "
          f"({args.threads} thread(s)), load average {os.getloadavg()[0]:.1f}")
    print(f"# roadmap_pilot_arcsinh bins {args.start}-{args.start + args.bins} "
          f"({args.bins * 25 / 1e6:.2f} Mb); target cells {cells}; preset {args.preset}")
    scores, costs = run(ds, unseen, args.methods, cells, args.preset)

    print("\n## Genome-wide accuracy over the held-out tracks (arcsinh scale)\n")
    wide = scores.pivot_table(index="track", columns="method", values=["mse", "pearson"])
    best_mse = wide["mse"].idxmin(axis=1).value_counts()
    best_r = wide["pearson"].idxmax(axis=1).value_counts()
    print("| method | tracks | GW MSE mean (sd) | GW Pearson mean (sd) | best MSE on | "
          "best Pearson on |")
    print("|---|---|---|---|---|---|")
    for name in args.methods:
        part = scores[scores.method == name]
        print(f"| {name} | {len(part)} | {part.mse.mean():.4f} ({part.mse.std():.4f}) | "
              f"{part.pearson.mean():.3f} ({part.pearson.std():.3f}) | "
              f"{best_mse.get(name, 0)} | {best_r.get(name, 0)} |")
    print("\n## Per assay: GW Pearson (mean over target cells)\n")
    per_assay = scores.pivot_table(index="assay", columns="method", values="pearson")
    methods = [m for m in args.methods if m in per_assay.columns]
    print("| assay | " + " | ".join(methods) + " |")
    print("|---" * (len(methods) + 1) + "|")
    for assay, row in per_assay.iterrows():
        print(f"| {assay} | " + " | ".join(f"{row[m]:.3f}" for m in methods) + " |")

    print("\n## Cost per target cell (means over target cells; wall seconds)\n")
    print("Rates are predicted track-bins per second (target tracks x bins / predict seconds).\n")
    print("| method | fit s | predict s | rate (fitted window) | predict s (unseen window) | "
          "rate (unseen window) | peak RSS increase MiB | tool peak MiB |")
    print("|---|---|---|---|---|---|---|---|")
    summary = costs.groupby("method", sort=False).mean(numeric_only=True)
    for name, row in summary.iterrows():
        rate = row.targets * args.bins / row.predict_s
        unseen_s = row.get("unseen_predict_s", np.nan)
        unseen = (f"{unseen_s:.2f} | {row.targets * args.bins / unseen_s:,.0f}"
                  if np.isfinite(unseen_s) else "- | -")
        print(f"| {name} | {row.fit_s:.1f} | {row.predict_s:.2f} | {rate:,.0f} | {unseen} | "
              f"{row.peak_rss_mb:.0f} | "
              f"{'-' if np.isnan(row.tool_peak_mb) else f'{row.tool_peak_mb:.0f}'} |")
    if {"edice", "avocado"} <= set(summary.index):
        e, a = summary.loc["edice"], summary.loc["avocado"]
        print(f"\n# Avocado-style time / eDICE time (above 1: eDICE faster): predict on the "
              f"fitted window {a.predict_s / e.predict_s:.2f}, predict on an unseen window "
              f"{a.unseen_predict_s / e.unseen_predict_s:.2f}, fit {a.fit_s / e.fit_s:.2f}. "
              f"Peak RSS increase: eDICE {e.peak_rss_mb:.0f} MiB, Avocado-style "
              f"{a.peak_rss_mb:.0f} MiB")


if __name__ == "__main__":
    main()
