"""The results store: one tidy, append-only table of every method's scores.

Every evaluation appends rows with the same columns, whatever the task (genotype imputation,
epigenomic imputation, GWAS priors). Notebooks and the dashboard read only this store, so a new
method shows up everywhere once it writes results.

Layout: ``<root>/<task>/<run_id>.parquet``, one file per run, written atomically; reading
concatenates them. Nothing is ever rewritten, so concurrent runs cannot corrupt each other. The
root is ``$ANALYSISLIB_RESULTS`` or ``results/`` under the current directory.

Integrity: beside each ``RUN.parquet`` lies ``RUN.parquet.sha256``, the sha256 of the parquet
bytes in ``sha256sum`` format (``sha256sum -c`` checks it too). Writers build both as hidden
temporaries ending in ``.tmp`` (never matched by the reader) and rename the checksum into place
first, so a writer killed at any moment leaves either nothing visible or a complete pair (an
orphan ``.sha256`` without its parquet is ignored). The reader verifies every file before it
parses it and checks that the table has the schema below, its folder's task and its file's run
id. A file failing any check is damaged: :meth:`ResultsStore.read` raises an
:class:`~analysislib.errors.InputFormatError` naming it, or with ``on_damaged="skip"`` leaves
it out with a warning naming it; it never returns values that differ from those written.
Files written before checksums existed (no ``.sha256``) are still read, after the same schema
checks, with one :class:`UnverifiedResultsWarning` per read naming how many there are;
:meth:`ResultsStore.add_checksums` records checksums for them.

Schema (:data:`COLUMNS`):

============== ======== =====================================================================
column         type     meaning
============== ======== =====================================================================
run_id         str      unique id of the run that wrote the row
timestamp      str      ISO-8601 UTC time of the run
task           str      ``genotype_imputation``, ``epigenome_imputation``, ``gwas_priors``...
dataset        str      catalog name or file name of the data
scenario       str      masking or hold-out scenario (``array_omni15``, ``random_05_seed1``)
method         str      imputer or model name (``beagle``, ``minimac4``, ``dae``)
metric         str      ``r2``, ``aggregate_r2``, ``concordance``, ``iqs``, ``f1``...
stratum_kind   str      what the stratum is: ``all``, ``maf_bin``, ``tile``, ``population``,
                        ``variant``, ``sample``, ``assay``...
stratum        str      the stratum's label (``[0.01,0.05)``, a variant key, ``CEU``)
value          float    the metric's value
n              int      how many scored units (variants or calls) the value summarises
runtime_s      float    wall time of the method on this run, fit plus impute (same on every
                        row of a run)
fit_seconds    float    wall time of fitting (training a network, preparing an HMM panel);
                        NaN where not measured
impute_seconds float    wall time of imputing (or predicting) the targets; NaN where not
                        measured
peak_memory_mb float    peak resident memory of the method on this run
parameters     str      JSON of the method's parameters
data_checksum  str      sha256 of the input data (files, or arrays for in-memory data)
code_version   str      analysislib version plus git commit when available
============== ======== =====================================================================

``fit_seconds`` and ``impute_seconds`` were added after the first stored runs: they are optional
when appending (NaN when absent) and rows stored without them read back with NaN.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from analysislib.errors import InputFormatError, InvalidArgumentError, UnverifiedResultsWarning
from analysislib.io.atomic import atomic_output

__all__ = [
    "CHECKSUM_SUFFIX",
    "COLUMNS",
    "OPTIONAL_COLUMNS",
    "RESULTS_ENV",
    "ResultsStore",
    "UnverifiedResultsWarning",
]

RESULTS_ENV = "ANALYSISLIB_RESULTS"
COLUMNS: dict[str, str] = {
    "run_id": "string", "timestamp": "string", "task": "string", "dataset": "string",
    "scenario": "string", "method": "string", "metric": "string", "stratum_kind": "string",
    "stratum": "string", "value": "float64", "n": "int64", "runtime_s": "float64",
    "fit_seconds": "float64", "impute_seconds": "float64",
    "peak_memory_mb": "float64", "parameters": "string", "data_checksum": "string",
    "code_version": "string",
}
#: Columns added to the schema later: NaN when a writer or a stored file lacks them.
OPTIONAL_COLUMNS: tuple[str, ...] = ("fit_seconds", "impute_seconds")
#: Suffix of the checksum file stored beside each ``RUN.parquet``.
CHECKSUM_SUFFIX = ".sha256"


class ResultsStore:
    """Append-only parquet store of tidy result rows.

    Parameters
    ----------
    root
        Folder of the store; default ``$ANALYSISLIB_RESULTS`` or ``./results``.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root if root is not None else os.environ.get(RESULTS_ENV, "results"))

    def append(self, rows: pd.DataFrame | Iterable[Mapping[str, Any]]) -> Path:
        """Validate rows against :data:`COLUMNS` and write them as one new parquet file.

        All rows must share one ``run_id`` and ``task``; :data:`OPTIONAL_COLUMNS` may be left
        out (stored as NaN). Returns the file written.

        Raises
        ------
        ValueError
            If a column is missing or unknown, or rows mix runs or tasks.
        """
        frame = pd.DataFrame(rows) if not isinstance(rows, pd.DataFrame) else rows.copy()
        for column in OPTIONAL_COLUMNS:
            if column not in frame.columns:
                frame[column] = np.nan
        missing = [c for c in COLUMNS if c not in frame.columns]
        extra = [c for c in frame.columns if c not in COLUMNS]
        if missing or extra:
            raise InvalidArgumentError(f"result rows: missing columns {missing}, unknown columns {extra}")
        if frame.empty:
            raise InvalidArgumentError("result rows: nothing to append")
        for key in ("run_id", "task"):
            if frame[key].nunique() != 1:
                raise InvalidArgumentError(f"result rows: one append holds one {key}, got {frame[key].unique()}")
        frame = frame[list(COLUMNS)].astype(COLUMNS)
        target = self.root / str(frame["task"].iloc[0]) / f"{frame['run_id'].iloc[0]}.parquet"
        if target.exists():
            raise FileExistsError(f"{target} exists: run ids are written once")
        # Hidden temporaries ending in .tmp; the checksum is renamed into place first.
        with atomic_output(target, companions=(CHECKSUM_SUFFIX,), keep_suffix=False) as tmp:
            frame.to_parquet(tmp, index=False)
            _write_checksum(Path(f"{tmp}{CHECKSUM_SUFFIX}"),
                            hashlib.sha256(tmp.read_bytes()).hexdigest(), target.name)
        return target

    def files(self, task: str | None = None) -> list[Path]:
        """The stored run files (of one task), sorted; temporaries and hidden files excluded."""
        if not self.root.is_dir():
            return []
        folders = [self.root / task] if task else sorted(self.root.iterdir())
        return sorted(f for folder in folders if folder.is_dir() and not folder.name.startswith(".")
                      for f in folder.glob("*.parquet") if _is_run_file(f))

    def read(self, task: str | None = None, *, latest: bool = False,
             on_damaged: Literal["raise", "skip"] = "raise", **filters: Any) -> pd.DataFrame:
        """All rows (of one task), optionally filtered by column equality or membership.

        ``store.read("genotype_imputation", method=["beagle", "minimac4"], metric="r2")``

        With ``latest=True`` only the most recent run of each (task, dataset, scenario, method)
        is kept, so re-running an experiment replaces it in summaries without deleting history.

        Every file is checked against its ``.sha256`` and the schema before its rows are used.
        A damaged file raises (``on_damaged="raise"``, the default) or is left out with a
        warning naming it (``on_damaged="skip"``). Files without a checksum (written before
        checksums existed) are read after the schema checks, with one
        :class:`UnverifiedResultsWarning`.

        Raises
        ------
        InputFormatError
            A file is damaged (checksum mismatch, unreadable parquet, wrong schema); the message
            names it.
        """
        if on_damaged not in ("raise", "skip"):
            raise InvalidArgumentError(f"on_damaged must be 'raise' or 'skip', not {on_damaged!r}")
        tables, unverified = [], []
        for path in self.files(task):
            try:
                table, verified = _load_run_file(path)
            except InputFormatError as err:
                if on_damaged == "raise":
                    raise
                warnings.warn(f"skipping damaged results file: {err}", stacklevel=2)
                continue
            tables.append(table)
            if not verified:
                unverified.append(path)
        if unverified:
            warnings.warn(
                f"{len(unverified)} results file(s) have no {CHECKSUM_SUFFIX} checksum and cannot "
                f"be verified (written before checksums existed), e.g. {unverified[0]}; "
                "ResultsStore.add_checksums() records checksums for them",
                UnverifiedResultsWarning, stacklevel=2)
        if not tables:
            return pd.DataFrame({c: pd.Series(dtype=t) for c, t in COLUMNS.items()})
        frame = pd.concat(tables, ignore_index=True)
        for column, wanted in filters.items():
            if column not in COLUMNS:
                raise KeyError(f"no column {column!r}; columns: {list(COLUMNS)}")
            values = [wanted] if isinstance(wanted, str) or not isinstance(wanted, Iterable) else list(wanted)
            frame = frame[frame[column].isin(values)]
        if latest and not frame.empty:
            keys = ["task", "dataset", "scenario", "method"]
            newest = frame.groupby(keys)["run_id"].transform("max")  # run ids sort by time
            frame = frame[frame["run_id"] == newest]
        return frame.reset_index(drop=True)

    def tasks(self) -> list[str]:
        """Tasks with at least one run in the store."""
        return sorted({f.parent.name for f in self.files()})

    def runs(self, task: str | None = None, *,
             on_damaged: Literal["raise", "skip"] = "raise") -> pd.DataFrame:
        """One row per run: identity, cost and provenance (``on_damaged`` as in :meth:`read`)."""
        keys = ["run_id", "timestamp", "task", "dataset", "scenario", "method", "runtime_s",
                "fit_seconds", "impute_seconds", "peak_memory_mb", "parameters", "data_checksum",
                "code_version"]
        table = self.read(task, on_damaged=on_damaged)
        return table[keys].drop_duplicates("run_id").reset_index(drop=True)

    def add_checksums(self) -> list[Path]:
        """Write the missing ``.sha256`` of files stored before checksums existed.

        Every such file must first pass the schema checks of :meth:`read`; if one fails, none
        is written. Returns the checksum files written.

        Raises
        ------
        InputFormatError
            A file without a checksum fails the schema checks; nothing is written for it.
        """
        unsealed = {}
        for path in self.files():
            if not Path(f"{path}{CHECKSUM_SUFFIX}").exists():
                data = path.read_bytes()
                _parse_run_file(path, data)  # check them all before writing any
                unsealed[path] = hashlib.sha256(data).hexdigest()
        written = []
        for path, digest in unsealed.items():
            sidecar = Path(f"{path}{CHECKSUM_SUFFIX}")
            with atomic_output(sidecar, keep_suffix=False) as tmp:
                _write_checksum(tmp, digest, path.name)
            written.append(sidecar)
        return written


def _is_run_file(path: Path) -> bool:
    """Whether a ``*.parquet`` name is a stored run (not hidden, not a temporary)."""
    return not path.name.startswith(".") and ".tmp" not in path.name


def _write_checksum(sidecar: Path, digest: str, name: str) -> None:
    """Write ``digest  name`` to ``sidecar``, the format ``sha256sum -c`` reads."""
    sidecar.write_text(f"{digest}  {name}\n")


def _load_run_file(path: Path) -> tuple[pd.DataFrame, bool]:
    """Read one stored run, verified: its rows, and whether a checksum vouched for them."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise InputFormatError(path, f"damaged results file: cannot read it ({err})") from None
    sidecar = Path(f"{path}{CHECKSUM_SUFFIX}")
    try:
        recorded_text = sidecar.read_bytes()
    except FileNotFoundError:
        return _parse_run_file(path, data), False
    except OSError as err:
        raise InputFormatError(
            path, f"damaged results file: cannot read its checksum {sidecar.name} ({err})") from None
    fields = recorded_text.split()
    recorded = fields[0].decode("ascii", "replace").lower() if fields else ""
    if (len(fields) != 2 or len(recorded) != 64 or not all(c in "0123456789abcdef" for c in recorded)
            or fields[1].lstrip(b"*") != path.name.encode()):
        raise InputFormatError(
            path, f"damaged results file: its checksum file {sidecar.name} is malformed "
            f"(expected 'SHA256  {path.name}')")
    actual = hashlib.sha256(data).hexdigest()
    if actual != recorded:
        raise InputFormatError(
            path, f"damaged results file: sha256 {actual} differs from {recorded} recorded in "
            f"{sidecar.name} when it was written")
    return _parse_run_file(path, data), True


def _parse_run_file(path: Path, data: bytes) -> pd.DataFrame:
    """Parse a stored run's parquet bytes and check schema, task and run id."""
    try:
        table = pd.read_parquet(io.BytesIO(data))
    except Exception as err:  # noqa: BLE001 - pyarrow raises many types for corrupt bytes
        reason = f"{type(err).__name__}: {err}".splitlines()[0][:200]
        raise InputFormatError(path, f"damaged results file: not a readable parquet file ({reason})"
                               ) from None
    required = [c for c in COLUMNS if c not in OPTIONAL_COLUMNS]
    missing = [c for c in required if c not in table.columns]
    extra = [c for c in table.columns if c not in COLUMNS]
    if missing or extra:
        raise InputFormatError(path, f"damaged results file: missing columns {missing}, "
                               f"unknown columns {extra}")
    # Files written before a column was added read back with NaN there.
    table = table.reindex(columns=list(COLUMNS))
    # astype would change values silently here: 10.5 -> 10, and uint64 above 2**63 wraps negative.
    for column in (c for c, t in COLUMNS.items() if t == "int64"):
        values = table[column]
        kind = values.dtype.kind
        exact = kind == "i" or (kind == "u" and (values.empty or int(values.max()) < 2**63)) or (
            kind == "f" and bool(np.all(values.isna() | ((values == np.trunc(values)) & (values.abs() < 2**63)))))
        if not exact:
            raise InputFormatError(path, f"damaged results file: column {column} holds {values.dtype} "
                                   "values that are not all int64 integers")
    try:
        table = table.astype(COLUMNS)
    except (TypeError, ValueError) as err:
        raise InputFormatError(path, f"damaged results file: a column has the wrong type ({err})"
                               ) from None
    checks = (("task", path.parent.name), ("run_id", path.name.removesuffix(".parquet")))
    for column, expected in checks:
        found = sorted(set(table[column].astype(str)))
        if found != [expected]:
            raise InputFormatError(path, f"damaged results file: column {column} holds {found[:3]}, "
                                   f"expected only {expected!r} (from the file's path)")
    return table
