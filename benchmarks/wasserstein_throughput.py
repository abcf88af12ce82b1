"""Benchmark: peak-shape Wasserstein distances per second (``analysislib.epigenome.wasserstein``).

A genome-wide-size peak set is timed three ways in one run, on the same two tracks:

* ``wasserstein_distances(...).compute(scheduler="threads")`` (dask threaded scheduler);
* the same lazy result computed on a ``dask.distributed`` ``LocalCluster`` with ``--workers``
  worker processes (one thread each) on loopback tcp;
* a plain Python loop calling ``scipy.stats.wasserstein_distance(pos, pos, a, b)`` per peak on
  the clipped profiles (the reference; on a random subset of ``--reference-peaks`` peaks, and
  the rate extrapolated, since a full loop takes minutes).

Tracks are two random −log10 p tracks of ``--bins`` 25 bp bins (gamma noise with peaks added);
peak lengths are log-normal around 1 kb (median 40 bins), clipped to 200 bp–20 kb, like MACS2
narrow/broad histone peaks. Building the lazy graph (peak → bin lookup and profile gathering) is
timed separately from computing it; rates count both. The distributed rate includes sending the
tracks to the workers. The threaded and scipy results are checked to agree.

Run from the project root::

    .venv/bin/python benchmarks/wasserstein_throughput.py --peaks 100000
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time

import numpy as np
import pandas as pd
import xarray as xr

from analysislib.epigenome.wasserstein import peak_bin_ranges, wasserstein_distances

__all__ = ["main", "synthetic_case"]

BIN = 25


def synthetic_case(n_bins: int, n_peaks: int, seed: int) -> tuple[xr.DataArray, xr.DataArray,
                                                                  pd.DataFrame]:
    """Two −log10 p tracks and a table of (possibly overlapping) peaks of realistic lengths."""
    rng = np.random.default_rng(seed)
    coords = {"bin_start": ("bin", np.arange(n_bins, dtype=np.int64) * BIN),
              "bin_chrom": ("bin", np.full(n_bins, "chr1"))}
    tracks = []
    for _ in range(2):
        values = rng.gamma(0.5, 0.6, n_bins).astype(np.float32)
        tracks.append(xr.DataArray(values, dims="bin", coords=coords,
                                   attrs={"scale": "neglog10p", "bin_size": BIN}))
    length = np.clip(rng.lognormal(np.log(1000), 0.8, n_peaks), 200, 20_000).astype(np.int64)
    start = np.sort(rng.integers(0, n_bins * BIN - 20_000, n_peaks))
    for track in tracks:  # put some mass into the peaks
        middle = (start + length // 2) // BIN
        track.values[middle] += rng.gamma(2.0, 3.0, n_peaks).astype(np.float32)
    peaks = pd.DataFrame({"chrom": "chr1", "start": start, "end": start + length})
    return tracks[0], tracks[1], peaks


def scipy_loop(a: np.ndarray, b: np.ndarray, first: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Reference: one ``scipy.stats.wasserstein_distance`` call per peak."""
    from scipy.stats import wasserstein_distance

    out = np.empty(first.size)
    for i, (s, n) in enumerate(zip(first, length, strict=True)):
        wa = np.clip(a[s:s + n], 0, None)
        wb = np.clip(b[s:s + n], 0, None)
        pos = np.arange(n)
        out[i] = (wasserstein_distance(pos, pos, wa, wb) if wa.sum() > 0 and wb.sum() > 0
                  else np.nan)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peaks", type=int, default=100_000)
    parser.add_argument("--bins", type=int, default=4_000_000, help="25 bp bins (100 Mb)")
    parser.add_argument("--chunk-size", type=int, default=8192)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reference-peaks", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    a, b, peaks = synthetic_case(args.bins, args.peaks, args.seed)
    first, length = peak_bin_ranges(a, peaks)
    print(f"# {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, "
          f"{platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}")
    print(f"# {args.peaks} peaks on {args.bins} bins; peak length median "
          f"{int(np.median(length))} bins, max {int(length.max())} bins")

    rows = []
    t0 = time.perf_counter()
    lazy = wasserstein_distances(a, b, peaks, chunk_size=args.chunk_size)
    built = time.perf_counter() - t0
    t0 = time.perf_counter()
    threaded = lazy.compute(scheduler="threads", num_workers=args.threads).values
    seconds = built + time.perf_counter() - t0
    rows.append(("dask threaded", args.threads, seconds, args.peaks / seconds))

    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                      protocol="tcp://", host="127.0.0.1", dashboard_address=None) as cluster, \
            Client(cluster) as client:
        client.wait_for_workers(args.workers)
        t0 = time.perf_counter()
        lazy = wasserstein_distances(a, b, peaks, chunk_size=args.chunk_size)
        distributed = client.compute(lazy).result().values
        seconds = time.perf_counter() - t0
    rows.append(("dask.distributed LocalCluster", args.workers, seconds, args.peaks / seconds))

    rng = np.random.default_rng(args.seed + 1)
    subset = np.sort(rng.choice(args.peaks, min(args.reference_peaks, args.peaks),
                                replace=False))
    t0 = time.perf_counter()
    reference = scipy_loop(a.values, b.values, first[subset], length[subset])
    seconds = time.perf_counter() - t0
    rows.append(("python loop, scipy.stats.wasserstein_distance", 1, seconds,
                 subset.size / seconds))

    agree = np.nanmax(np.abs(threaded[subset] - reference))
    same = np.nanmax(np.abs(threaded - distributed))
    reference_rate = rows[-1][3]
    print(f"# max |threaded - scipy| = {agree:.2e} on {subset.size} peaks; "
          f"max |threaded - distributed| = {same:.2e}")
    print("| method | workers | seconds | distances/s | ratio to scipy loop |")
    print("|---|---|---|---|---|")
    for name, workers, secs, rate in rows:
        peaks_done = subset.size if name.startswith("python") else args.peaks
        print(f"| {name} ({peaks_done} peaks) | {workers} | {secs:.2f} | {rate:,.0f} | "
              f"{rate / reference_rate:.1f} |")


if __name__ == "__main__":
    main()
