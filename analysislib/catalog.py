"""The data catalog: every dataset the notebooks use, resolved offline-first and checksummed.

``data_catalog.yaml`` (at the project root, shipped inside the package too) lists each dataset
with a description, kind, licence and citation. Real datasets list their files with public
origin URL and sha256; simulated ones name a generator and its parameters.

A file is resolved in this order:

1. the offline mirror folder ``$ANALYSISLIB_DATA_MIRROR`` (laid out like the catalog paths);
2. the cache folder ``$ANALYSISLIB_DATA_DIR`` (default: the OS cache, ``~/.cache/analysislib``);
3. a download from the origin URL into the cache, through pooch.

Every resolved file is checked against its sha256; a mismatch raises
:class:`~analysislib.errors.ChecksumError` naming both hashes. This follows the dataset registries
of MNE-Python and xarray's tutorial module, both built on pooch.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from analysislib.errors import (
    ChecksumError,
    DataFileNotFoundError,
    InputFormatError,
    InvalidArgumentError,
    UnknownDatasetError,
)
from analysislib.io.checksum import sha256_of  # re-exported: older code imports it from here

__all__ = [
    "CACHE_ENV",
    "CATALOG_ENV",
    "MIRROR_ENV",
    "Catalog",
    "DataFileNotFoundError",
    "DatasetEntry",
    "UnknownDatasetError",
    "fetch",
    "load_catalog",
    "open_dataset",
]

MIRROR_ENV = "ANALYSISLIB_DATA_MIRROR"
CACHE_ENV = "ANALYSISLIB_DATA_DIR"
CATALOG_ENV = "ANALYSISLIB_CATALOG"
_REQUIRED = ("kind", "description", "citation")
_KINDS = ("genotypes", "epigenome", "gwas", "results")
_FIELDS = {"kind", "description", "citation", "license", "files", "loader", "generator", "parameters"}


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load`` that refuses a repeated mapping key (PyYAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"{key!r} appears twice in one mapping", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


@dataclass(frozen=True)
class DatasetEntry:
    """One catalog entry.

    Attributes
    ----------
    name, kind, description, citation, license
        As written in the catalog.
    files
        Relative path -> ``{"url": ..., "sha256": ...}`` for real data; empty for simulated data.
    loader
        ``"module:function"`` that opens the first file, for real data.
    generator, parameters
        ``"module:function"`` and keyword arguments, for simulated data.
    """

    name: str
    kind: str
    description: str
    citation: str
    license: str | None = None
    files: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    loader: str | None = None
    generator: str | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)

    @property
    def simulated(self) -> bool:
        """True when the entry is produced by a generator rather than downloaded."""
        return self.generator is not None


def _default_catalog_path() -> Path:
    env = os.environ.get(CATALOG_ENV)
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parent.parent / "data_catalog.yaml"
    if checkout.exists():
        return checkout
    return Path(__file__).resolve().parent / "data_catalog.yaml"  # copy shipped in the wheel


def _cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    import pooch

    return Path(pooch.os_cache("analysislib"))


def _check(path: Path, expected: str) -> Path:
    actual = sha256_of(path)
    if actual != expected:
        raise ChecksumError(path, expected, actual)
    return path


class Catalog(Mapping[str, DatasetEntry]):
    """The parsed catalog: a read-only mapping from dataset name to :class:`DatasetEntry`."""

    def __init__(self, entries: Mapping[str, DatasetEntry], source: Path) -> None:
        self._entries = dict(entries)
        self.source = source

    def __getitem__(self, name: str) -> DatasetEntry:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownDatasetError(
                f"no dataset {name!r} in {self.source}; known: {', '.join(sorted(self._entries))}"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def fetch(self, name: str) -> dict[str, Path]:
        """Resolve every file of a real dataset and return relative path -> local path.

        Raises
        ------
        ChecksumError
            If a mirrored, cached or downloaded file does not match the catalog's sha256.
        DataFileNotFoundError
            If a file is in neither mirror nor cache and cannot be downloaded.
        """
        entry = self[name]
        if entry.simulated:
            raise InvalidArgumentError(f"dataset {name!r} is simulated; use open_dataset({name!r})")
        return {rel: self._resolve(rel, spec) for rel, spec in entry.files.items()}

    def _resolve(self, rel: str, spec: Mapping[str, str]) -> Path:
        mirror = os.environ.get(MIRROR_ENV)
        if mirror and (Path(mirror) / rel).is_file():
            return _check(Path(mirror) / rel, spec["sha256"])
        cache = _cache_dir()
        cached = cache / rel
        if cached.is_file():
            return _check(cached, spec["sha256"])
        import pooch

        registry = pooch.create(
            path=cache, base_url="", registry={rel: f"sha256:{spec['sha256']}"},
            urls={rel: spec["url"]}, allow_updates=False, retry_if_failed=1)
        try:
            return Path(registry.fetch(rel, progressbar=True))
        except ValueError as err:  # pooch's hash mismatch, after it deleted the download
            raise ChecksumError(spec["url"], spec["sha256"], str(err)) from err
        except Exception as err:
            where = f"${MIRROR_ENV}={mirror}" if mirror else f"${MIRROR_ENV} (unset)"
            raise DataFileNotFoundError(
                f"{rel} is not in {where} nor in the cache {cache}, and downloading "
                f"{spec['url']} failed ({type(err).__name__}: {err}). Point {MIRROR_ENV} at a "
                "folder holding a copy, e.g. ../shared/data."
            ) from err

    def open(self, name: str, **kwargs: Any) -> Any:
        """Open a dataset: run a simulated entry's generator, or a real entry's loader.

        Keyword arguments override the catalog's parameters (simulated) or are passed to the
        loader (real).
        """
        entry = self[name]
        if entry.simulated:
            return _import(entry.generator)(**{**entry.parameters, **kwargs})  # type: ignore[arg-type]
        paths = self.fetch(name)
        if entry.loader is None:
            raise InvalidArgumentError(f"dataset {name!r} names no loader; use fetch({name!r})")
        data_files = [p for rel, p in paths.items() if not rel.endswith((".tbi", ".csi"))]
        target = data_files[0] if len(data_files) == 1 else data_files
        return _import(entry.loader)(target, **kwargs)


def _import(spec: str) -> Any:
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def load_catalog(path: str | os.PathLike[str] | None = None) -> Catalog:
    """Parse and validate ``data_catalog.yaml``.

    Parameters
    ----------
    path
        Catalog file; default ``$ANALYSISLIB_CATALOG``, else the project's ``data_catalog.yaml``.

    Raises
    ------
    InputFormatError
        Naming the file, and the line or the entry and field, when the catalog is malformed.
    DataFileNotFoundError
        If the catalog file does not exist.
    """
    source = Path(path) if path is not None else _default_catalog_path()
    # Every failure is one error naming the file (issue 16): no bare YAML, decode or type errors.
    try:
        raw = yaml.load(source.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # a SafeLoader
    except FileNotFoundError:
        raise DataFileNotFoundError(f"{source}: no such data catalog file") from None
    except OSError as err:
        raise InputFormatError(source, f"cannot read the data catalog ({err.strerror})") from None
    except UnicodeDecodeError as err:
        raise InputFormatError(source, f"not UTF-8 text (byte {err.start})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise InputFormatError(source, f"not valid YAML: {problem}",
                               record=f"line {mark.line + 1}" if mark else None) from None
    if not isinstance(raw, dict) or raw.get("version") != 1 or not isinstance(raw.get("datasets"), dict):
        raise InputFormatError(source, "expected 'version: 1' and a 'datasets' mapping")
    entries = {}
    for name, fields in raw["datasets"].items():
        if not isinstance(name, str) or not isinstance(fields, dict):
            raise InputFormatError(source, f"dataset {name!r} must be a name holding a mapping of fields")
        missing = [key for key in _REQUIRED if not fields.get(key)]
        if missing:
            raise InputFormatError(source, f"dataset {name!r} lacks {', '.join(missing)}")
        if not isinstance(fields["kind"], str) or fields["kind"] not in _KINDS:
            raise InputFormatError(source, f"dataset {name!r} has unknown kind {fields['kind']!r}")
        if bool(fields.get("files")) == bool(fields.get("generator")):
            raise InputFormatError(source, f"dataset {name!r} needs either 'files' or 'generator'")
        for key, kind in (("files", dict), ("parameters", dict), ("loader", str), ("generator", str)):
            if fields.get(key) is not None and not isinstance(fields[key], kind):
                raise InputFormatError(source, f"dataset {name!r}: {key!r} must be a {kind.__name__}")
        for rel, spec in (fields.get("files") or {}).items():
            sha = str(spec.get("sha256", "")) if isinstance(spec, dict) else ""
            if len(sha) != 64 or not spec.get("url"):
                raise InputFormatError(source, f"dataset {name!r} file {rel!r} needs url and a sha256")
        if fields.get("files") and not fields.get("license"):
            raise InputFormatError(source, f"dataset {name!r} lacks license")
        unknown = sorted(set(fields) - _FIELDS)
        if unknown:
            raise InputFormatError(source, f"dataset {name!r} has unknown fields {unknown}")
        entries[name] = DatasetEntry(name=name, **fields)
    return Catalog(entries, source)


def fetch(name: str) -> dict[str, Path]:
    """Resolve the files of a catalog dataset; see :meth:`Catalog.fetch`."""
    return load_catalog().fetch(name)


def open_dataset(name: str, **kwargs: Any) -> Any:
    """Open a catalog dataset by name; see :meth:`Catalog.open`."""
    return load_catalog().open(name, **kwargs)
