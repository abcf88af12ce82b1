"""Helpers for testing analysislib and code built on it: small datasets, dask guards, torchrun jobs.

In the manner of ``sgkit.testing`` and xarray's test helpers, these are public so that a user's
own tests (a new imputer, a new metric) can build the same inputs ours do:

* :func:`genotype_dataset` wraps genotype calls in a valid dataset with default names;
* :func:`simulate_genotype_calls` draws random calls (independent sites, no LD);
* :func:`raise_if_dask_computes` fails when code that should stay lazy computes;
* :func:`run_torchrun` runs a script as a two-process ``torchrun`` job on this machine.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

__all__ = [
    "CountingScheduler",
    "free_port",
    "genotype_dataset",
    "raise_if_dask_computes",
    "run_torchrun",
    "simulate_genotype_calls",
]


def genotype_dataset(calls: Any, *, positions: Any = None, contig: Any = None, contigs: Sequence[str] = ("1",),
                     populations: Sequence[str] | None = None, dosage: Any = None, phased: Any = None,
                     alleles: Any = ("A", "G"), sample_ids: str | Sequence[str] = "s",
                     variant_ids: str | Sequence[str] | None = "v",
                     genotype_probability: Any = None, attrs: dict[str, Any] | None = None) -> xr.Dataset:
    """A genotype dataset holding ``calls``, with default names for all that is not given.

    Parameters
    ----------
    calls
        ``(variants, samples, ploidy)`` allele indices, -1 where missing (stored as int8).
    positions
        One position per variant; by default 100, 200, ....
    contig
        One index into ``contigs`` per variant; by default all on the first contig.
    contigs
        Contig names (the dataset attribute ``contigs``).
    populations
        One population label per sample; by default no ``sample_population``.
    dosage
        ``(variants, samples)`` ``call_dosage``; by default none.
    phased
        ``(variants, samples)`` ``call_genotype_phased``, or one bool for every call (``True``:
        all phased); by default (``None``) the dataset has no ``call_genotype_phased``.
    alleles
        The alleles of every site (``("A", "G")``), or a ``(variants, alleles)`` array of each
        site's own.
    sample_ids
        A prefix (samples ``s0, s1, ...`` for ``"s"``) or one ID per sample.
    variant_ids
        A prefix (variants ``v0, v1, ...`` for ``"v"``), one ID per variant, or ``None`` for a
        dataset without ``variant_id``.
    genotype_probability
        ``(variants, samples, genotypes)`` ``call_genotype_probability``; by default none.
    attrs
        Dataset attributes besides ``contigs`` (such as ``source``).

    Returns
    -------
    xarray.Dataset
        Built and validated by :func:`analysislib.genotype.dataset.create_genotype_dataset`.

    Examples
    --------
    >>> ds = genotype_dataset([[[0, 1], [1, 1]], [[0, 0], [0, -1]]])
    >>> ds.sizes["variants"], ds.sizes["samples"], ds.sizes["ploidy"]
    (2, 2, 2)
    >>> ds["variant_position"].values.tolist()
    [100, 200]
    >>> ds = genotype_dataset([[[0, 1]], [[1, 1]]], alleles=[["A", "G"], ["C", "T"]],
    ...                       sample_ids=["x"], variant_ids=None, phased=True)
    >>> ds["variant_allele"].values.tolist(), ds["sample_id"].values.tolist(), "variant_id" in ds
    ([['A', 'G'], ['C', 'T']], ['x'], False)
    >>> ds["call_genotype_phased"].values.tolist()
    [[True], [True]]
    """
    from analysislib.genotype.dataset import create_genotype_dataset

    gt = np.asarray(calls, dtype=np.int8)
    n_variants, n_samples = gt.shape[:2]
    allele_table = np.asarray(alleles, dtype=object)
    if allele_table.ndim == 1:  # the same alleles at every site
        allele_table = np.tile(allele_table, (n_variants, 1))
    if isinstance(sample_ids, str):
        sample_ids = [f"{sample_ids}{i}" for i in range(n_samples)]
    if isinstance(variant_ids, str):
        variant_ids = [f"{variant_ids}{i}" for i in range(n_variants)]
    if phased is not None and np.ndim(phased) == 0:  # one value for every call
        phased = np.full((n_variants, n_samples), phased)
    return create_genotype_dataset(
        contigs=list(contigs),
        variant_contig=np.zeros(n_variants, np.int16) if contig is None else np.asarray(contig, np.int16),
        variant_position=np.asarray(positions if positions is not None else np.arange(1, n_variants + 1) * 100),
        variant_allele=allele_table,
        variant_id=None if variant_ids is None else np.asarray(variant_ids, dtype=object),
        sample_id=sample_ids, call_genotype=gt, call_genotype_phased=phased,
        sample_population=populations, call_dosage=dosage,
        call_genotype_probability=genotype_probability, attrs=attrs)


def simulate_genotype_calls(n_variants: int, n_samples: int, *, seed: int = 0, alt_frequency: Any = None,
                            missing_rate: float = 0.0) -> np.ndarray:
    """Random diploid calls ``(n_variants, n_samples, 2)`` int8: independent alleles, -1 where missing.

    ``alt_frequency`` (scalar or one per variant) defaults to a draw from U(0.05, 0.5) per
    variant; each call is missing with probability ``missing_rate`` (both alleles).

    >>> simulate_genotype_calls(3, 4, seed=1).shape
    (3, 4, 2)
    """
    rng = np.random.default_rng(seed)
    if alt_frequency is None:
        alt_frequency = rng.uniform(0.05, 0.5, n_variants)
    p = np.broadcast_to(np.asarray(alt_frequency, dtype=float), (n_variants,))[:, None, None]
    calls = (rng.random((n_variants, n_samples, 2)) < p).astype(np.int8)
    if missing_rate:
        calls[rng.random((n_variants, n_samples)) < missing_rate] = -1
    return calls


class CountingScheduler:
    """A dask scheduler that counts computes and fails past ``max_computes``."""

    def __init__(self, max_computes: int = 0) -> None:
        self.total_computes = 0
        self.max_computes = max_computes

    def __call__(self, dsk: Any, keys: Any, **kwargs: Any) -> Any:
        """Run the graph with dask's synchronous scheduler, counting the compute."""
        import dask

        self.total_computes += 1
        if self.total_computes > self.max_computes:
            raise RuntimeError(f"too many dask computations: {self.total_computes} > {self.max_computes}")
        return dask.get(dsk, keys, **kwargs)


def raise_if_dask_computes(max_computes: int = 0) -> Any:
    """Context manager in which any dask compute beyond ``max_computes`` raises RuntimeError.

    >>> import dask.array as da
    >>> with raise_if_dask_computes():
    ...     lazy = da.ones(4, chunks=2) + 1  # building the graph computes nothing
    """
    import dask

    return dask.config.set(scheduler=CountingScheduler(max_computes))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for a ``torchrun`` rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_torchrun(script: str | os.PathLike[str], *args: str, nproc: int = 2, timeout: float = 300,
                 cwd: str | os.PathLike[str] | None = None,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``script args...`` as a one-node ``torchrun`` job of ``nproc`` processes.

    Raises
    ------
    AssertionError
        If the job fails; the message ends with the last 3,000 characters of its stderr.
    """
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--nnodes=1",
               "--master_addr=127.0.0.1", f"--master_port={free_port()}", str(Path(script)), *map(str, args)]
    proc = subprocess.run(command, check=False, capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env=env)
    assert proc.returncode == 0, f"torchrun {Path(script).name} failed:\n{proc.stderr[-3000:]}"
    return proc
