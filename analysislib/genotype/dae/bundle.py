"""The model bundle format of the per-tile autoencoders: writing, reading, overlapping tiles.

Dias et al. 2022 impute with one trained model per LD tile ("Imputation data format"); a bundle
holds them as one portable folder:

* ``manifest.json``: format version, contigs and genome build, tiles, training-data summary
  (:func:`training_data_summary`), :data:`OVERLAP_RULE`, the ``unit`` of a training row
  (:data:`UNITS`; absent in bundles written before it existed: ``"genotype"``) and the sha256
  of every file;
* per tile ``tiles/<id>.pt`` (state_dict), ``tiles/<id>.variants.tsv`` (chrom, pos, id, ref,
  alt, alt_freq) and ``tiles/<id>.json`` (hyperparameters, training-history summary);
* ``weights.npy``: every tile's Linear layers packed into one float32 array (offsets, layer
  widths and activation per tile in the manifest's tile entries, ``packed_weights`` describing
  the file), so inference needs NumPy only. Bundles written before ``weights.npy`` existed load
  unchanged and run through torch.

Writing: :func:`write_tile`, :func:`write_manifest` and :func:`save_bundle`. Reading:
:func:`load_bundle` checks the files and gives a :class:`Bundle`, whose tables are NumPy columns
(pandas only when a DataFrame is asked for) and whose :meth:`Bundle.predict` runs one tile:
through :func:`~analysislib.genotype.dae.forward.numpy_forward` from ``weights.npy``, or, for
older bundles, the ``.pt`` weights (one storage per file) through one weightless torch model per
tile shape. A variant in several tiles takes their weighted mean (:data:`OVERLAP_RULE`,
:func:`overlap_weights`).
"""

from __future__ import annotations

import concurrent.futures
import datetime
import itertools
import json
import logging
import os
import pickle
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from analysislib.errors import BundleChecksumError, BundleError, InvalidArgumentError
from analysislib.genotype.dae.contigs import _contig_length_map, infer_genome_build
from analysislib.genotype.dae.forward import linear_layers, numpy_forward
from analysislib.genotype.dae.hyperparameters import ACTIVATIONS, DAEHyperparameters
from analysislib.io.atomic import atomic_output
from analysislib.io.checksum import read_with_sha256, sha256_of

if TYPE_CHECKING:
    import pandas as pd
    import torch
    import xarray as xr

    from analysislib.genotype.dae.fit import TrainedTile

__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_FORMAT_VERSION",
    "MANIFEST_NAME",
    "OVERLAP_RULE",
    "PACKED_WEIGHTS_NAME",
    "TILES_DIR",
    "UNITS",
    "VARIANT_COLUMNS",
    "Bundle",
    "check_unit",
    "load_bundle",
    "overlap_weights",
    "save_bundle",
    "tile_id_for",
    "training_data_summary",
    "write_manifest",
    "write_tile",
]

logger = logging.getLogger(__name__)


BUNDLE_FORMAT = "analysislib-dae-bundle"
BUNDLE_FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
TILES_DIR = "tiles"
PACKED_WEIGHTS_NAME = "weights.npy"
VARIANT_COLUMNS = ("chrom", "pos", "id", "ref", "alt", "alt_freq")

#: What one row of training data is. ``"genotype"``: a sample's unphased genotypes (Dias et al.
#: 2022, "no pre-phasing was performed"). ``"haplotype"`` (our option): each of a sample's two
#: haplotypes is a homozygous pseudo-sample of its own
#: (:func:`~analysislib.genotype.encoding.haplotype_rows`) and a target sample's genotype
#: probabilities are the products over its haplotypes
#: (:func:`~analysislib.genotype.encoding.genotype_probabilities_from_haplotype_presence`); the
#: targets' typed calls must then be phased.
UNITS = ("genotype", "haplotype")


def check_unit(unit: Any) -> str:
    """``unit`` if it is one of :data:`UNITS`, else :class:`~analysislib.errors.InvalidArgumentError`."""
    if unit not in UNITS:
        raise InvalidArgumentError(f"unit must be one of {UNITS}, got {unit!r}")
    return str(unit)

OVERLAP_RULE = (
    "A variant that lies in several tiles takes the weighted mean of their allele-presence "
    "outputs (before decoding to genotype probabilities), each tile weighted by 1 + the "
    "variant's edge distance in it (edge distance = min(index in tile, n_variants - 1 - index)): "
    "the models that see more flanking variants on both sides count more. A variant in one tile "
    "takes that tile's values. The variant's 'tile' is the one with the largest weight (ties: the "
    "tile that starts first), tiling.variant_tiles' 'primary' tile."
)

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


# --------------------------------------------------------------------------------------------
# Training-data summary
# --------------------------------------------------------------------------------------------

_MAF_EDGES = (0.0, 0.005, 0.01, 0.05, 0.5)


def training_data_summary(reference: xr.Dataset) -> dict[str, Any]:
    """What a bundle records about its training panel (JSON-serialisable).

    Returns
    -------
    dict
        ``n_samples``, ``n_haplotypes``, ``n_variants``, ``populations`` (sample counts, if
        labelled), ``phased``, ``missing_calls``, ``maf`` (mean, median, monomorphic count and
        counts in the bins [0, 0.5%), [0.5%, 1%), [1%, 5%), [5%, 50%]), ``source`` and
        ``genotype_sha256`` (of the genotype and position arrays).
    """
    from analysislib.genotype.stats import minor_allele_frequency
    from analysislib.results import array_checksum

    gt = np.asarray(reference["call_genotype"].values)
    maf = np.nan_to_num(np.asarray(minor_allele_frequency(reference).values, dtype=np.float64))
    bins = np.histogram(maf, bins=_MAF_EDGES)[0]
    populations: dict[str, int] = {}
    if "sample_population" in reference:
        labels, counts = np.unique(np.asarray(reference["sample_population"].values, dtype=str),
                                   return_counts=True)
        populations = {str(k): int(n) for k, n in zip(labels, counts, strict=True)}
    phased = bool(np.asarray(reference["call_genotype_phased"].values).all()) \
        if "call_genotype_phased" in reference else False
    return {
        "n_samples": int(reference.sizes["samples"]),
        "n_haplotypes": int(reference.sizes["samples"] * reference.sizes["ploidy"]),
        "n_variants": int(reference.sizes["variants"]),
        "populations": populations,
        "phased": phased,
        "missing_calls": int((gt < 0).any(axis=-1).sum()),
        "maf": {
            "mean": float(maf.mean()) if maf.size else float("nan"),
            "median": float(np.median(maf)) if maf.size else float("nan"),
            "monomorphic": int((maf == 0).sum()),
            "bins": [f"[{a:g}, {b:g}{']' if b == 0.5 else ')'}" for a, b in itertools.pairwise(_MAF_EDGES)],
            "counts": [int(n) for n in bins],
        },
        "source": str(reference.attrs.get("source", "")),
        "genotype_sha256": array_checksum(gt, np.asarray(reference["variant_position"].values)),
    }


# --------------------------------------------------------------------------------------------
# Writing bundles
# --------------------------------------------------------------------------------------------


def tile_id_for(contig: str, first_position: int, last_position: int) -> str:
    """File-name-safe tile id from its span: ``22_16050075-17003456``."""
    return f"{_SAFE_NAME.sub('_', str(contig))}_{int(first_position)}-{int(last_position)}"


def _variants_text(variants: pd.DataFrame) -> str:
    """The tile variant table as TSV text (header line, then one line per variant)."""
    lines = ["\t".join(VARIANT_COLUMNS)]
    freq = variants["alt_freq"].to_numpy(dtype=np.float64)
    for c, p, i, r, a, f in zip(variants["chrom"], variants["pos"], variants["id"], variants["ref"],
                                variants["alt"], freq, strict=True):
        lines.append(f"{c}\t{int(p)}\t{i or '.'}\t{r}\t{a}\t{f:.6g}")
    return "\n".join(lines) + "\n"


def _typed_columns(cells: list[str], names: list[str]) -> dict[str, np.ndarray]:
    """Variant-table cells (row-major) as columns: ``pos`` int64, ``alt_freq`` float64 (NaN when
    the table has none), the rest strings; a non-numeric value raises ValueError."""
    table = np.array(cells, dtype=object).reshape(-1, len(names))
    columns = {name: table[:, k] for k, name in enumerate(names)}
    columns["pos"] = columns["pos"].astype(np.int64)
    columns["alt_freq"] = (columns["alt_freq"].astype(np.float64) if "alt_freq" in columns
                           else np.full(len(table), np.nan))
    return columns


def _variants_columns(path: Path, text: str | None = None) -> dict[str, np.ndarray]:
    """Columns of a tile variant table as arrays (``text``: the file's text, if already read);
    errors name the file and line."""
    if text is None:
        text = _decoded_table(path, _read_table_bytes(path))
    lines = text.rstrip("\n").split("\n")
    header = lines[0].split("\t")
    if tuple(header[:5]) != VARIANT_COLUMNS[:5]:
        raise BundleError(path, f"line 1: expected the columns {', '.join(VARIANT_COLUMNS)}; "
                          f"found {', '.join(header)}")
    width = len(header)
    cells = "\t".join(lines[1:]).split("\t") if len(lines) > 1 else []
    if len(cells) != width * (len(lines) - 1):
        for number, line in enumerate(lines[1:], start=2):
            if line.count("\t") != width - 1:
                raise BundleError(path, f"line {number}: {line.count(chr(9)) + 1} columns, expected {width}")
    try:
        columns = _typed_columns(cells, header)
    except ValueError as err:
        raise BundleError(path, f"non-numeric pos or alt_freq ({err})") from None
    return {name: columns[name] for name in VARIANT_COLUMNS}


def _read_table_bytes(path: Path, expected: str | None = None) -> bytes:
    """The bytes of a tile variant table, checked against sha256 ``expected`` if given; a missing
    or unreadable file is a named BundleError, a changed one a BundleChecksumError."""
    try:
        if expected is None:
            return path.read_bytes()
        data, actual = read_with_sha256(path)
    except FileNotFoundError:
        raise BundleError(path, "incomplete bundle: the tile variant table is missing") from None
    except OSError as err:
        raise BundleError(path, f"unreadable tile variant table ({err})") from None
    _verify_file(path, expected, actual)
    return data


def _decoded_table(path: Path, data: bytes) -> str:
    """A tile variant table's text, as ``Path.read_text`` decodes it (UTF-8, universal newlines)."""
    try:
        text = data.decode()
    except UnicodeDecodeError as err:
        raise BundleError(path, f"unreadable tile variant table ({err})") from None
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


def _read_variants_tsv(path: Path) -> pd.DataFrame:
    """A tile variant table as a DataFrame (columns :data:`VARIANT_COLUMNS`)."""
    import pandas as pd

    return pd.DataFrame(_variants_columns(path))


def _history_summary(history: pd.DataFrame | None, cycle_epochs: int) -> dict[str, Any]:
    """A short, JSON-able summary of a training history (per-cycle rows kept)."""
    if history is None or len(history) == 0:
        return {"epochs": 0}
    summary: dict[str, Any] = {"epochs": len(history)}
    numeric = history.select_dtypes("number")
    for column in numeric.columns:
        if column == "epoch":
            continue
        values = numeric[column].to_numpy(dtype=np.float64)
        finite = values[np.isfinite(values)]
        if finite.size:
            best = finite.max() if "r2" in column else finite.min()
            summary[column] = {"first": float(finite[0]), "last": float(finite[-1]), "best": float(best)}
    epochs = history["epoch"].to_numpy() if "epoch" in history else np.arange(len(history))
    at_cycle_end = ((epochs + 1) % max(1, cycle_epochs) == 0) | (np.arange(len(history)) == len(history) - 1)
    cycles = numeric[at_cycle_end]
    summary["per_cycle"] = json.loads(cycles.to_json(orient="records"))
    return summary


def write_tile(
    out_dir: str | os.PathLike[str],
    tile_id: str,
    model: torch.nn.Module,
    hparams: DAEHyperparameters,
    variants: pd.DataFrame,
    *,
    history: pd.DataFrame | None = None,
    best_epoch: int | None = None,
    training: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write one tile's three files; the JSON goes last, so its presence marks a complete tile.

    Parameters
    ----------
    out_dir
        The bundle folder (``tiles/`` is created inside).
    tile_id
        Tile id (see :func:`tile_id_for`).
    model
        Trained :class:`~analysislib.genotype.dae.model.SparseDenoisingAutoencoder`.
    hparams
        Its hyperparameters.
    variants
        The tile's variants in model order: ``chrom``, ``pos``, ``id``, ``ref``, ``alt``,
        ``alt_freq`` (training-panel alternate-allele frequency).
    history, best_epoch, training
        Training history (summarised), best epoch and other training facts (epochs asked,
        seconds, sample counts) for the tile JSON.

    Returns
    -------
    dict
        The tile's manifest entry (id, contig, span, variant count and file names).
    """
    import torch

    out = Path(out_dir)
    rel = {kind: f"{TILES_DIR}/{tile_id}{suffix}" for kind, suffix in
           (("weights", ".pt"), ("variants", ".variants.tsv"), ("config", ".json"))}
    n_variants = len(variants)
    state = {k: v.detach().to("cpu") for k, v in model.state_dict().items()}
    if len({v.dtype for v in state.values()}) == 1:  # one storage per file: smaller, faster to load
        flat = torch.cat([v.reshape(-1) for v in state.values()])
        offsets = np.cumsum([0, *(v.numel() for v in state.values())])
        state = {k: flat[a:b].view(v.shape) for (k, v), a, b in
                 zip(state.items(), offsets[:-1], offsets[1:], strict=True)}
    with atomic_output(out / rel["weights"]) as tmp:
        torch.save(state, tmp)
    with atomic_output(out / rel["variants"]) as tmp:
        tmp.write_text(_variants_text(variants))
    contig = str(variants["chrom"].iloc[0])
    entry = {
        "id": tile_id, "contig": contig, "n_variants": int(n_variants),
        "first_position": int(variants["pos"].iloc[0]), "last_position": int(variants["pos"].iloc[-1]),
        **rel,
    }
    config = {
        "format": BUNDLE_FORMAT, "format_version": BUNDLE_FORMAT_VERSION, **entry,
        "architecture": "SparseDenoisingAutoencoder", "encoding": "allele_presence",
        "hparams": hparams.to_dict(),
        "training": {**(training or {}), "best_epoch": None if best_epoch is None else int(best_epoch),
                     "history": _history_summary(history, hparams.cycle_epochs)},
        "files": {rel["weights"]: sha256_of(out / rel["weights"]),
                  rel["variants"]: sha256_of(out / rel["variants"])},
    }
    with atomic_output(out / rel["config"]) as tmp:
        tmp.write_text(json.dumps(config, indent=1, allow_nan=True) + "\n")
    return entry


def write_manifest(
    out_dir: str | os.PathLike[str],
    tiles: Sequence[Mapping[str, Any]],
    *,
    training_data: Mapping[str, Any] | None = None,
    contigs: Sequence[str] | None = None,
    contig_lengths: Mapping[str, int] | None = None,
    genome_build: str | None = None,
    unit: str = "genotype",
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``manifest.json`` over tiles already written by :func:`write_tile`.

    ``unit`` is what one training row was (:data:`UNITS`); inference reads it back
    (:attr:`Bundle.unit`).

    Every tile file is hashed (sha256) into ``files``; the manifest goes in atomically. When
    every tile holds float32 autoencoder weights, they are also packed into ``weights.npy``
    (hashed too) and each tile entry gains ``packed`` (offset, layer widths, activation), the
    manifest ``packed_weights``; otherwise (other modules) inference uses the ``.pt`` files.
    """
    from analysislib.results import code_version

    out = Path(out_dir)
    check_unit(unit)
    entries = [dict(t) for t in tiles]
    if not entries:
        raise BundleError(out, "a bundle needs at least one tile")
    ids = [e["id"] for e in entries]
    if len(set(ids)) != len(ids):
        raise BundleError(out, "tile ids repeat in the manifest")
    files: dict[str, str] = {}
    for entry in entries:
        for kind in ("weights", "variants", "config"):
            path = out / entry[kind]
            if not path.is_file():
                raise BundleError(path, f"tile {entry['id']}: the {kind} file is missing")
            files[entry[kind]] = sha256_of(path)
    packed = _pack_weights(out, entries)
    if packed is not None:
        files[PACKED_WEIGHTS_NAME] = sha256_of(out / PACKED_WEIGHTS_NAME)
    names = list(contigs) if contigs is not None else list(dict.fromkeys(e["contig"] for e in entries))
    lengths = {c: int(n) for c, n in (contig_lengths or {}).items() if c in names}
    if genome_build is None and lengths:
        genome_build = infer_genome_build(list(lengths), list(lengths.values()))
    manifest = {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "code_version": code_version(),
        "model": "sparse denoising autoencoder per LD tile (Dias et al. 2022)",
        "encoding": "allele_presence",
        "unit": unit,
        "genome_build": genome_build,
        "contigs": names,
        "contig_lengths": lengths,
        "overlap_rule": OVERLAP_RULE,
        "training_data": dict(training_data or {}),
        **dict(extra or {}),
        **({"packed_weights": packed} if packed is not None else {}),
        "tiles": entries,
        "files": files,
    }
    with atomic_output(out / MANIFEST_NAME) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1, allow_nan=True) + "\n")
    return out / MANIFEST_NAME


def _pack_weights(out: Path, entries: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Write every tile's Linear layers into one float32 ``weights.npy`` for torch-free inference.

    Each tile entry gains ``packed``: ``offset`` (first element in the file), ``widths`` (node
    counts from input to output, ``2 V ... 2 V``) and ``activation``. A tile's block holds, per
    Linear layer in forward order, the weight ``(out, in)`` row-major and then the bias. Returns
    the manifest's ``packed_weights`` description, or None (nothing written) when some tile's
    weights are not a float32 :class:`~analysislib.genotype.dae.model.SparseDenoisingAutoencoder`
    (such a bundle is run through torch).
    """
    import torch

    blocks: list[np.ndarray] = []
    described: list[dict[str, Any]] = []
    offset = 0
    for entry in entries:
        entry.pop("packed", None)
    for entry in entries:
        try:
            state = torch.load(out / entry["weights"], map_location="cpu", weights_only=True)
        except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as err:
            raise BundleError(out / entry["weights"], f"unreadable tile weights ({err})") from None
        try:
            config = json.loads((out / entry["config"]).read_text())
            activation = str(config["hparams"]["activation"])
            if any(v.dtype != torch.float32 for v in state.values()):
                raise InvalidArgumentError("weights are not float32")
            layers = linear_layers(state)
        except (KeyError, TypeError, ValueError) as err:
            logger.info("%s: tile %s is not packed (%s); inference will use torch", out, entry["id"], err)
            (out / PACKED_WEIGHTS_NAME).unlink(missing_ok=True)
            return None
        if layers[0][0].shape[1] != 2 * int(entry["n_variants"]):
            raise BundleError(out / entry["weights"], f"the weights take {layers[0][0].shape[1]} inputs; "
                              f"the tile has {entry['n_variants']} variants")
        parts = [a.reshape(-1) for layer in layers for a in layer]
        described.append({"offset": offset,
                          "widths": [int(layers[0][0].shape[1]), *(int(w.shape[0]) for w, _ in layers)],
                          "activation": activation})
        blocks.extend(parts)
        offset += sum(part.size for part in parts)
    with atomic_output(out / PACKED_WEIGHTS_NAME) as tmp, open(tmp, "wb") as handle:
        np.save(handle, np.concatenate(blocks).astype(np.float32, copy=False), allow_pickle=False)
    for entry, packed in zip(entries, described, strict=True):
        entry["packed"] = packed
    return {"file": PACKED_WEIGHTS_NAME, "dtype": "float32", "size": int(offset),
            "layout": "per tile from its 'packed' offset: each Linear layer in forward order, "
                      "weight (out, in) row-major then bias"}


def save_bundle(
    out_dir: str | os.PathLike[str],
    trained: Mapping[str, tuple[TrainedTile, pd.DataFrame]],
    *,
    reference: xr.Dataset | None = None,
    genome_build: str | None = None,
) -> Bundle:
    """Write already-trained tiles as a bundle and load it back.

    Parameters
    ----------
    out_dir
        Bundle folder.
    trained
        Tile id -> ``(TrainedTile, variants table)`` (columns as in :func:`write_tile`), in
        genome order.
    reference
        The training panel, for the training-data summary, contig names and lengths.
    genome_build
        Build name; inferred from the reference's contig lengths when None.

    Returns
    -------
    Bundle
    """
    entries = []
    for tile_id, (tile, table) in trained.items():
        facts = tile.summary() if hasattr(tile, "summary") else {}
        facts.pop("hyperparameters", None)
        entries.append(write_tile(out_dir, tile_id, tile.model, tile.hparams, table, history=tile.history,
                                  best_epoch=tile.best_epoch, training=facts))
    summary = training_data_summary(reference) if reference is not None else {}
    lengths = _contig_length_map(reference) if reference is not None else {}
    write_manifest(out_dir, entries, training_data=summary, contig_lengths=lengths,
                   genome_build=genome_build)
    return load_bundle(out_dir)

# --------------------------------------------------------------------------------------------
# Reading bundles
# --------------------------------------------------------------------------------------------


def _frame_of(columns: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """A DataFrame of NumPy columns; object columns go in as lists, so pandas infers their dtypes."""
    import pandas as pd

    return pd.DataFrame({name: values.tolist() if values.dtype == object else values
                         for name, values in columns.items()})


class _Table:
    """A table attribute of :class:`Bundle`: NumPy columns, and a DataFrame built from them when read.

    :func:`load_bundle` fills the columns only, so inference never imports pandas. A DataFrame
    assigned to the attribute (``Bundle(path, manifest, tiles, variants, members)``) becomes the
    source of the columns instead. The DataFrame is built once: edit a copy and assign it back.
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, bundle: Bundle | None, owner: type | None = None) -> pd.DataFrame:
        if bundle is None:  # no class-level default: the dataclass field stays required
            raise AttributeError(self.name)
        state = bundle.__dict__
        if state.get(f"_{self.name}_frame") is None:
            state[f"_{self.name}_frame"] = _frame_of(state[f"_{self.name}_columns"])
        return state[f"_{self.name}_frame"]

    def __set__(self, bundle: Bundle, frame: pd.DataFrame | None) -> None:
        bundle.__dict__[f"_{self.name}_frame"] = frame
        bundle.__dict__[f"_{self.name}_columns"] = None


@dataclass
class Bundle:
    """A loaded model bundle.

    Attributes
    ----------
    path
        The bundle folder.
    manifest
        The parsed ``manifest.json``.
    tiles
        One row per tile in genome order: ``id``, ``contig``, ``n_variants``,
        ``first_position``, ``last_position``, ``weights``, ``variants``, ``config`` and, in
        bundles with ``weights.npy``, ``packed`` (offset, layer widths, activation).
    variants
        The bundle's variants (the union of the tiles', sorted by contig and position):
        ``contig``, ``pos``, ``id``, ``ref``, ``alt``, ``alt_freq``, ``tile`` (row of
        :attr:`tiles` the imputed value comes from, :data:`OVERLAP_RULE`), ``offset`` (index
        of the variant in that tile) and ``n_tiles``.
    members
        Per tile row, the indices into :attr:`variants` of the tile's variants in model order.

    :func:`load_bundle` holds :attr:`tiles` and :attr:`variants` as NumPy columns and builds
    the DataFrames when first read; inference reads the columns and never imports pandas.
    """

    path: Path
    manifest: dict[str, Any]
    tiles: pd.DataFrame = _Table()  # None when _tiles_columns is given
    variants: pd.DataFrame = _Table()  # None when _variants_columns is given
    members: list[np.ndarray]
    _configs: dict[int, dict[str, Any]] = field(default_factory=dict, repr=False)
    _hparams: dict[int, Any] = field(default_factory=dict, repr=False)
    _local: threading.local = field(default_factory=threading.local, repr=False)
    _packed: np.ndarray | None = field(default=None, repr=False)
    _packed_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _deferred: set[str] = field(default_factory=set, repr=False)  # files to verify when first read
    _tiles_columns: dict[str, np.ndarray] | None = field(default=None, repr=False, compare=False)
    _variants_columns: dict[str, np.ndarray] | None = field(default=None, repr=False, compare=False)
    _overlap_weights: list[np.ndarray] | None = field(default=None, repr=False, compare=False)
    _typed_site_flags: np.ndarray | None = field(default=None, repr=False, compare=False)

    def _columns(self, table: str) -> dict[str, np.ndarray]:
        """The NumPy columns of ``"tiles"`` or ``"variants"`` (taken from the DataFrame if assigned)."""
        columns = self.__dict__[f"_{table}_columns"]
        if columns is None:
            frame = self.__dict__[f"_{table}_frame"]
            columns = {name: frame[name].to_numpy() for name in frame.columns}
            self.__dict__[f"_{table}_columns"] = columns
        return columns

    def _tile(self, name: str) -> np.ndarray:
        """Column ``name`` of :attr:`tiles` as a NumPy array."""
        return self._columns("tiles")[name]

    def _variant(self, name: str) -> np.ndarray:
        """Column ``name`` of :attr:`variants` as a NumPy array."""
        return self._columns("variants")[name]

    def overlap_weights(self) -> list[np.ndarray]:
        """Per tile row, the float32 weight of its output for each member variant (:data:`OVERLAP_RULE`).

        Each variant's weights over the tiles that hold it sum to 1; a variant in one tile has
        weight exactly 1.
        """
        if self._overlap_weights is None:
            self._overlap_weights = overlap_weights(self.members, len(self._variant("pos")))
        return self._overlap_weights

    @property
    def packed(self) -> bool:
        """True when the bundle has ``weights.npy``, so inference needs NumPy only (no torch)."""
        return "packed_weights" in self.manifest

    @property
    def unit(self) -> str:
        """What one training row was (:data:`UNITS`): ``"genotype"`` or ``"haplotype"``."""
        return str(self.manifest.get("unit", "genotype"))

    @property
    def typed_sites(self) -> np.ndarray | None:
        """Bool per variant of :attr:`variants`: the sites the bundle was trained to read typed
        (``train_bundle(typed_sites=...)``), or None for a bundle trained for any array.

        Inference reads target calls only at these sites; calls elsewhere are kept in the output
        but not given to the networks, whose inputs there were never trained.
        """
        record = self.manifest.get("typed_sites")
        if record is None:
            return None
        if self._typed_site_flags is None:
            contigs, positions = self._variant("contig"), self._variant("pos")
            flags = np.zeros(len(positions), dtype=bool)
            for contig, sites in record.items():
                on_contig = np.flatnonzero(contigs == contig)
                flags[on_contig] = np.isin(positions[on_contig], np.asarray(sites, dtype=np.int64))
            self._typed_site_flags = flags
        return self._typed_site_flags

    @property
    def contigs(self) -> list[str]:
        """Contig names of the bundle, in genome order."""
        return list(self.manifest["contigs"])

    @property
    def genome_build(self) -> str | None:
        """Build the panel was on (``GRCh37``, ``GRCh38``) when known."""
        return self.manifest.get("genome_build")

    @property
    def contig_lengths(self) -> dict[str, int]:
        """Contig lengths recorded from the training panel's header (may be empty)."""
        return dict(self.manifest.get("contig_lengths") or {})

    @property
    def training_data(self) -> dict[str, Any]:
        """The training-data summary (see :func:`training_data_summary`)."""
        return dict(self.manifest.get("training_data") or {})

    def _verify_deferred(self, rel: str) -> None:
        """Check a file that :func:`load_bundle` left to be checked when first read (if present)."""
        path = self.path / rel
        if rel in self._deferred and path.is_file():
            _verify_file(path, self.manifest["files"][rel])
            self._deferred.discard(rel)

    def tile_config(self, tile: int) -> dict[str, Any]:
        """The parsed ``tiles/<id>.json`` of tile row ``tile``."""
        if tile not in self._configs:
            rel = self._tile("config")[tile]
            path = self.path / rel
            self._verify_deferred(rel)
            try:
                self._configs[tile] = json.loads(path.read_text())
            except FileNotFoundError:
                raise BundleError(path, "incomplete bundle: the tile configuration is missing") from None
            except (OSError, ValueError) as err:
                raise BundleError(path, f"unreadable tile configuration ({err})") from None
        return self._configs[tile]

    def hyperparameters(self, tile: int) -> DAEHyperparameters:
        """Hyperparameters of tile row ``tile``."""
        if tile not in self._hparams:
            config = self.tile_config(tile)
            try:
                self._hparams[tile] = DAEHyperparameters.from_dict(config["hparams"])
            except (KeyError, TypeError, ValueError) as err:
                raise BundleError(self.path / self._tile("config")[tile],
                                  f"bad hyperparameters ({err})") from None
        return self._hparams[tile]

    def load_weights(self, tile: int) -> dict[str, torch.Tensor]:
        """The stored state_dict of tile row ``tile`` (read with ``weights_only=True``)."""
        import torch

        rel = self._tile("weights")[tile]
        path = self.path / rel
        self._verify_deferred(rel)
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise BundleError(path, "incomplete bundle: the tile weights are missing") from None
        except (RuntimeError, EOFError, ValueError, OSError, pickle.UnpicklingError) as err:
            raise BundleError(path, f"unreadable tile weights ({type(err).__name__}: {err})") from None

    def load_model(self, tile: int) -> torch.nn.Module:
        """The trained model of tile row ``tile`` on the CPU, in eval mode.

        The module is built on torch's ``meta`` device and the stored tensors are assigned to
        it, so no time goes into random initialisation of weights that are then replaced.
        """
        import torch

        from analysislib.genotype.dae.model import SparseDenoisingAutoencoder

        state = self.load_weights(tile)
        n_variants = int(self._tile("n_variants")[tile])
        try:
            with torch.device("meta"):
                model = SparseDenoisingAutoencoder(n_variants, self.hyperparameters(tile))
            model.load_state_dict(state, assign=True)
        except (RuntimeError, KeyError, TypeError) as err:
            raise BundleError(self.path / self._tile("weights")[tile],
                              f"the weights do not fit a {n_variants}-variant model with the tile's "
                              f"hyperparameters ({' '.join(str(err).split())})") from None
        return model.eval()

    def _skeleton(self, tile: int) -> tuple[torch.nn.Module, dict[str, tuple[int, ...]]]:
        """A weightless (``meta``) model shaped like tile row ``tile`` and its parameter shapes.

        Shared by tiles of equal shape, one cache per thread (``functional_call`` swaps tensors
        into the module while it runs, so threads must not share one).
        """
        import torch

        from analysislib.genotype.dae.model import SparseDenoisingAutoencoder

        cache = self._local.__dict__.setdefault("skeletons", {})
        key = (int(self._tile("n_variants")[tile]), self.hyperparameters(tile))
        if key not in cache:
            with torch.device("meta"):
                model = SparseDenoisingAutoencoder(*key).eval()
            cache[key] = (model, {k: tuple(v.shape) for k, v in model.state_dict().items()})
        return cache[key]

    def packed_layers(self, tile: int) -> tuple[list[tuple[np.ndarray, np.ndarray]], str]:
        """Tile row ``tile``'s Linear layers (views into ``weights.npy``) and hidden activation.

        The file is memory-mapped on first use, not read: a fresh 68 MB read took 0.1-0.3 s at
        random on a 2-CPU machine, mapping it 0.005 s (BENCHMARKS.md). Bundles are written by
        atomic rename, so a bundle saved again later does not change a mapping already open.

        Raises
        ------
        BundleError
            The bundle has no packed weights, or ``weights.npy`` is unreadable or too short.
        """
        if not self.packed:
            raise BundleError(self.path, f"the bundle has no {PACKED_WEIGHTS_NAME} (written by older "
                              "versions); use engine='torch'")
        path = self.path / self.manifest["packed_weights"]["file"]
        if self._packed is None:
            with self._packed_lock:
                if self._packed is None:
                    try:  # mapped, not read: pages come from the page cache as tiles need them
                        flat = np.asarray(np.load(path, mmap_mode="r", allow_pickle=False))
                    except (OSError, ValueError, EOFError) as err:
                        raise BundleError(path, f"unreadable packed weights ({err})") from None
                    size = int(self.manifest["packed_weights"]["size"])
                    if flat.dtype != np.float32 or flat.shape != (size,):
                        raise BundleError(path, f"expected {size} float32 values, found {flat.dtype} "
                                          f"{flat.shape}")
                    self._packed = flat
        packed = self._tile("packed")[tile]
        widths, offset = packed["widths"], int(packed["offset"])
        layers = []
        for width_in, width_out in itertools.pairwise(widths):
            weight = self._packed[offset:offset + width_in * width_out].reshape(width_out, width_in)
            offset += width_in * width_out
            layers.append((weight, self._packed[offset:offset + width_out]))
            offset += width_out
        return layers, str(packed["activation"])

    def predict(self, tile: int, presence: Any, batch_size: int = 4096,
                engine: Literal["numpy", "torch"] | None = None, *,
                inputs: np.ndarray | None = None, outputs: np.ndarray | None = None) -> np.ndarray:
        """Sigmoid outputs of tile row ``tile`` for allele-presence inputs ``(samples, 2 V)``.

        The same numbers as ``load_model(tile)(x)`` (to float32 rounding), without building a
        module per tile. ``engine="numpy"`` (the default when the bundle has packed weights)
        runs the layers of ``weights.npy`` through
        :func:`~analysislib.genotype.dae.forward.numpy_forward` and never imports torch;
        ``engine="torch"`` (the default for bundles without packed weights) runs the tile's
        ``.pt`` weights through a weightless model of the tile's shape
        (``torch.func.functional_call``) under ``torch.inference_mode``. All samples go
        ``batch_size`` at a time. Safe to call from several threads at once.

        ``inputs`` and ``outputs`` are those of
        :func:`~analysislib.genotype.dae.forward.numpy_forward`: ``presence`` then holds only
        the ``inputs`` columns (the others are 0), and only the ``outputs`` columns are returned.
        The NumPy engine skips the work of the rest; torch computes everything and selects.
        """
        if engine is None:
            engine = "numpy" if self.packed else "torch"
        if engine == "numpy":
            layers, activation = self.packed_layers(tile)
            return numpy_forward(layers, activation, presence, batch_size=batch_size, inputs=inputs,
                                 outputs=outputs)
        if engine != "torch":
            raise InvalidArgumentError(f"engine must be 'numpy' or 'torch', got {engine!r}")
        import torch

        skeleton, shapes = self._skeleton(tile)
        state = self.load_weights(tile)
        found = {k: tuple(v.shape) for k, v in state.items()}
        if found != shapes:
            differ = sorted(set(found) ^ set(shapes)) or [k for k in shapes if found[k] != shapes[k]]
            raise BundleError(self.path / self._tile("weights")[tile],
                              f"the weights do not fit a {int(self._tile('n_variants')[tile])}-variant "
                              f"model with the tile's hyperparameters (first difference: {differ[0]})")
        x = np.ascontiguousarray(presence, dtype=np.float32)
        if inputs is not None:
            full = np.zeros((x.shape[0], 2 * int(self._tile("n_variants")[tile])), dtype=np.float32)
            full[:, inputs] = x
            x = full
        x = torch.as_tensor(x)
        with torch.inference_mode():
            parts = [torch.func.functional_call(skeleton, state, (x[i:i + batch_size],))
                     for i in range(0, x.shape[0], batch_size)]
        out = torch.cat(parts).numpy()
        return out if outputs is None else out[:, outputs]


def _read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST_NAME
    if root.exists() and not root.is_dir():  # "no such folder" would be wrong about a file
        raise BundleError(root, "not a model bundle: this is a file; a bundle is a folder holding "
                          f"{MANIFEST_NAME}")
    if not root.is_dir():
        raise BundleError(root, "no such model bundle folder")
    if not path.is_file():
        partial = (root / TILES_DIR).is_dir() and any((root / TILES_DIR).glob("*.json"))
        hint = (" (tiles are present: training was interrupted; run train_bundle or "
                "`analysislib train` again with the same arguments to finish it)") if partial else ""
        raise BundleError(root, f"not a model bundle: {MANIFEST_NAME} is missing{hint}")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise BundleError(path, f"unreadable manifest ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(path, f"not an {BUNDLE_FORMAT} manifest")
    version = manifest.get("format_version")
    if version != BUNDLE_FORMAT_VERSION:
        raise BundleError(path, f"bundle format version {version}; this analysislib reads "
                          f"version {BUNDLE_FORMAT_VERSION}")
    for key in ("tiles", "files", "contigs"):
        if key not in manifest:
            raise BundleError(path, f"the manifest lacks {key!r}")
    # Wrong JSON types are named here, not met later as bare TypeError or ValueError (issue 16).
    files, tiles, contigs = manifest["files"], manifest["tiles"], manifest["contigs"]
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise BundleError(path, "'files' must map file names to sha256 strings")
    if not isinstance(contigs, list) or not all(isinstance(c, str) for c in contigs):
        raise BundleError(path, "'contigs' must be a list of contig names")
    if not isinstance(tiles, list) or not all(isinstance(t, dict) for t in tiles):
        raise BundleError(path, "'tiles' must be a list of tile entries")
    for tile in tiles:
        lacking = sorted({"id", "contig", "n_variants", "weights", "variants", "config"} - set(tile))
        if lacking:
            raise BundleError(path, f"tile {tile.get('id')}: the entry lacks {', '.join(lacking)}")
        n = tile.get("n_variants")
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise BundleError(path, f"tile {tile.get('id')}: 'n_variants' must be a positive integer, "
                              f"not {n!r}")
    ids = [str(tile["id"]) for tile in tiles]
    if len(set(ids)) != len(ids):
        raise BundleError(path, f"tile ids repeat: {sorted({i for i in ids if ids.count(i) > 1})}")
    if manifest.get("unit", "genotype") not in UNITS:
        raise BundleError(path, f"'unit' must be one of {UNITS}, not {manifest['unit']!r}")
    return manifest


def load_bundle(path: str | os.PathLike[str], *, verify: bool = True) -> Bundle:
    """Open a model bundle, check it is complete and (optionally) that no file changed.

    Parameters
    ----------
    path
        Bundle folder written by :func:`~analysislib.genotype.dae.plan.train_bundle` or
        :func:`save_bundle`.
    verify
        Recompute the sha256 of every file and compare with the manifest. Files that
        inference does not read are checked when first read instead: the tile configurations
        (:meth:`Bundle.tile_config`) and, in bundles with packed weights, the per-tile ``.pt``
        files (:meth:`Bundle.load_weights`).

    Returns
    -------
    Bundle

    Raises
    ------
    BundleError
        The folder or manifest is missing or malformed, a listed file is missing, or a tile's
        variant table is malformed (each message names the file).
    BundleChecksumError
        A file's sha256 differs from the manifest's (the message gives both).
    """
    with concurrent.futures.ThreadPoolExecutor(1) as background:
        bundle, weights_check = _open_bundle(path, verify=verify, background=background)
        if weights_check is not None:
            weights_check.result()
    return bundle


def _open_bundle(path: str | os.PathLike[str], *, verify: bool,
                 background: concurrent.futures.Executor) -> tuple[Bundle, concurrent.futures.Future[None] | None]:
    """:func:`load_bundle`, with the packed weights' sha256 check left running on ``background``.

    Returns the bundle and that check (None without ``verify`` or packed weights): its
    ``result()`` raises :class:`~analysislib.errors.BundleChecksumError` if the weights changed.
    The weights are then in use before the check ends, so a caller must wait for it before
    anything it computed leaves (:func:`~analysislib.genotype.dae.streaming.impute_vcf` does,
    before its output file appears).
    """
    root = Path(path)
    manifest = _read_manifest(root)
    files: dict[str, str] = manifest["files"]
    tiles = _tile_columns(manifest["tiles"])
    needed = {"id", "contig", "n_variants", "weights", "variants", "config"}
    if not manifest["tiles"] or not needed <= set(tiles):
        raise BundleError(root / MANIFEST_NAME, f"tile entries need {', '.join(sorted(needed))}")
    for kind in ("weights", "variants", "config"):
        for rel in tiles[kind]:
            if rel not in files:
                raise BundleError(root / MANIFEST_NAME, f"{rel} has no sha256 in 'files'")
    # Files that inference does not read are checked when first read instead of here: the tile
    # configurations (Bundle.tile_config) and, with packed weights, the per-tile .pt files
    # (Bundle.load_weights). The variant tables are checked as they are read, below.
    deferred = set(tiles["config"]) if verify else set()
    if verify and "packed_weights" in manifest:
        deferred |= set(tiles["weights"])
    checked_when_read = set(tiles["variants"])
    # The packed weights (68 MB for chr22) are hashed on a second thread while the tables are
    # parsed (and, in impute_vcf, while the targets are read and imputed); hashlib and file
    # reads release the GIL.
    described = manifest.get("packed_weights")
    packed_rel = described.get("file") if isinstance(described, Mapping) else None
    base, listings = os.fspath(root), {}
    weights_check = None
    for rel, expected in files.items():
        file = os.path.join(base, rel)
        if not _is_file(file, listings):
            raise BundleError(root / rel, "incomplete bundle: this file, listed in manifest.json, is missing")
        if verify and rel == packed_rel:
            weights_check = background.submit(_verify_file, root / rel, expected)
        elif verify and rel not in deferred and rel not in checked_when_read:
            _verify_file(root / rel, expected)
    if "packed_weights" in manifest:
        _check_packed(root, manifest, tiles)
    elif "packed" in tiles:  # a damaged 'packed_weights' key would silently switch engines
        raise BundleError(root / MANIFEST_NAME, "the tiles have 'packed' entries but the manifest has "
                          "no 'packed_weights'")
    contig_rank = {c: i for i, c in enumerate(manifest["contigs"])}
    texts = _read_tile_tables(root, tiles, files if verify else None)
    rows = _tile_rows_at_once(texts, tiles, contig_rank)
    if rows is None:
        rows = _tile_rows(root, texts, tiles, contig_rank)
    variants, members = _union_of_tiles(rows, len(manifest["tiles"]))
    if "first_position" not in tiles:
        tiles["first_position"] = np.array([variants["pos"][m[0]] for m in members], dtype=np.int64)
        tiles["last_position"] = np.array([variants["pos"][m[-1]] for m in members], dtype=np.int64)
    bundle = Bundle(root, manifest, None, None, members, _deferred=deferred, _tiles_columns=tiles,
                    _variants_columns=variants)
    return bundle, weights_check


def _verify_file(path: Path, expected: str, actual: str | None = None) -> None:
    """BundleChecksumError unless the file's sha256 (``actual``, if already computed) is ``expected``."""
    if actual is None:
        actual = sha256_of(path)
    if actual != expected:
        raise BundleChecksumError(path, expected, actual)


def _is_file(path: str, listings: dict[str, dict[str, os.DirEntry[str]]]) -> bool:
    """``Path(path).is_file()`` from one listing per folder (``listings``), without a stat per file."""
    folder, name = os.path.split(path)
    if folder not in listings:
        try:
            with os.scandir(folder or ".") as entries:
                listings[folder] = {entry.name: entry for entry in entries}
        except OSError:
            listings[folder] = {}
    entry = listings[folder].get(name)
    if entry is None or entry.is_symlink():  # not listed under this name, or a link: ask the file system
        return Path(path).is_file()
    return entry.is_file()


def _read_tile_tables(root: Path, tiles: Mapping[str, np.ndarray], files: Mapping[str, str] | None
                      ) -> list[str]:
    """The text of every tile variant table, each file read once and, given the manifest's
    ``files``, checked against its sha256 (all before any is parsed)."""
    texts = []
    for rel in tiles["variants"]:
        path = root / rel
        texts.append(_decoded_table(path, _read_table_bytes(path, None if files is None else files[rel])))
    return texts


def _tile_rows_at_once(texts: Sequence[str], tiles: Mapping[str, np.ndarray], contig_rank: Mapping[str, int]
                       ) -> dict[str, np.ndarray] | None:
    """:func:`_tile_rows` with every tile variant table parsed as one; None if any check fails.

    Takes tables with one header and passes only when every check of :func:`_tile_rows` would;
    otherwise :func:`_tile_rows` parses them one by one and names the first bad table.
    """
    header, bodies = None, []
    for text in texts:
        head, _, body = text.rstrip("\n").partition("\n")
        if header is None:
            header = head
        if head != header or not body:
            return None
        bodies.append(body)
    names = header.split("\t")
    if tuple(names[:5]) != VARIANT_COLUMNS[:5]:
        return None
    width = len(names)
    counts = np.array([body.count("\n") + 1 for body in bodies], dtype=np.int64)
    if any(body.count("\t") != (width - 1) * count for body, count in zip(bodies, counts.tolist(), strict=True)):
        return None
    contigs = tiles["contig"].tolist()
    if (counts != [int(n) for n in tiles["n_variants"]]).any() or not all(
            isinstance(c, str) and c in contig_rank for c in contigs):
        return None
    try:
        columns = _typed_columns("\n".join(bodies).replace("\n", "\t").split("\t"), names)
    except (ValueError, TypeError, OverflowError):
        return None
    n_rows = len(columns["pos"])
    if (columns["chrom"] != np.repeat(np.array(contigs, dtype=object), counts)).any():
        return None
    row = np.repeat(np.arange(len(counts)), counts)
    within = np.arange(n_rows) - np.repeat(np.cumsum(counts) - counts, counts)
    return {**{name: columns[name] for name in VARIANT_COLUMNS}, "row": row, "within": within,
            "edge": np.minimum(within, np.repeat(counts, counts) - 1 - within),
            "rank": np.repeat(np.array([contig_rank[c] for c in contigs], dtype=np.int64), counts)}


def _tile_rows(root: Path, texts: Sequence[str], tiles: Mapping[str, np.ndarray], contig_rank: Mapping[str, int]
               ) -> dict[str, np.ndarray]:
    """One entry per (tile, variant): the variant columns plus ``row``, ``within``, ``edge``, ``rank``.

    Parses each tile's variant table (``texts``, in tile order) and checks it against the
    manifest (variant count, contig); errors name the file under ``root``.
    """
    parts: dict[str, list[np.ndarray]] = {name: [] for name in (*VARIANT_COLUMNS, "row", "within", "edge", "rank")}
    for row, (rel, text, contig, n) in enumerate(zip(tiles["variants"], texts, tiles["contig"], tiles["n_variants"],
                                                     strict=True)):
        columns = _variants_columns(root / rel, text)
        count = len(columns["pos"])
        if count != int(n) or count == 0:
            raise BundleError(root / rel, f"{count} variants; the manifest says {n}")
        if contig not in contig_rank or (columns["chrom"] != contig).any():
            raise BundleError(root / rel, f"variants must all be on the tile's contig {contig!r}, "
                              "which the manifest must list")
        within = np.arange(count)
        for name in VARIANT_COLUMNS:
            parts[name].append(columns[name])
        parts["row"].append(np.full(count, row))
        parts["within"].append(within)
        parts["edge"].append(np.minimum(within, count - 1 - within))
        parts["rank"].append(np.full(count, contig_rank[contig]))
    return {name: np.concatenate(values) for name, values in parts.items()}


def _tile_columns(entries: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """The manifest's tile entries as object columns (every key of any entry; NaN where absent)."""
    names = dict.fromkeys(name for entry in entries for name in entry)
    return {name: np.fromiter((entry.get(name, np.nan) for entry in entries), dtype=object, count=len(entries))
            for name in names}


def _check_packed(root: Path, manifest: Mapping[str, Any], tiles: Mapping[str, np.ndarray]) -> None:
    """Check the packed-weight entries of a manifest against the tiles (not the file's values)."""
    where = root / MANIFEST_NAME
    described = manifest["packed_weights"]
    if not isinstance(described, Mapping) or described.get("file") not in manifest["files"]:
        raise BundleError(where, "'packed_weights' must name a file listed in 'files'")
    if "packed" not in tiles:
        raise BundleError(where, "'packed_weights' is set but the tiles have no 'packed' entries")
    end = 0
    for tile_id, n, packed in zip(tiles["id"], tiles["n_variants"], tiles["packed"], strict=True):
        try:
            widths = [int(w) for w in packed["widths"]]
            offset = int(packed["offset"])
            activation = packed["activation"]
        except (KeyError, TypeError, ValueError):
            raise BundleError(where, f"tile {tile_id}: malformed 'packed' entry {packed!r}") from None
        if (len(widths) < 3 or widths[0] != 2 * int(n) or widths[-1] != 2 * int(n) or min(widths) < 1
                or activation not in ACTIVATIONS or offset != end):
            raise BundleError(where, f"tile {tile_id}: 'packed' entry {packed!r} does not fit a "
                              f"{n}-variant autoencoder at offset {end}")
        end = offset + sum(a * b + b for a, b in itertools.pairwise(widths))
    if end != int(described.get("size", -1)):
        raise BundleError(where, f"packed tiles hold {end} values; 'packed_weights' says {described.get('size')}")


def _object_codes(values: np.ndarray) -> np.ndarray:
    """Integer codes of the values of an object array, numbered in order of first appearance."""
    items = values.tolist()
    table = {item: i for i, item in enumerate(dict.fromkeys(items))}  # np.unique sorts objects slowly
    return np.fromiter(map(table.__getitem__, items), dtype=np.int64, count=len(items))


def _first_appearance_codes(*columns: np.ndarray) -> np.ndarray:
    """Codes of the distinct rows of ``columns``, numbered in order of first appearance.

    What :func:`pandas.factorize` gives for the rows, with NumPy only.
    """
    keys = [_object_codes(values) if values.dtype == object else values for values in columns]
    order = np.lexsort(keys[::-1])
    new = np.zeros(len(order), dtype=bool)
    new[:1] = True
    for values in keys:
        ordered = values[order]
        new[1:] |= ordered[1:] != ordered[:-1]
    group = np.empty(len(order), dtype=np.int64)
    group[order] = np.cumsum(new) - 1
    firsts = order[new]  # the sort is stable: each group's first row
    renumber = np.empty(len(firsts), dtype=np.int64)
    renumber[np.argsort(firsts)] = np.arange(len(firsts))
    return renumber[group]


def _union_of_tiles(rows: dict[str, np.ndarray], n_tiles: int) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
    """The bundle's variant columns and each tile's member indices (see :data:`OVERLAP_RULE`).

    ``rows`` holds one entry per (tile, variant): the variant columns plus ``row`` (tile),
    ``within`` (index in the tile), ``edge`` (edge distance) and ``rank`` (order of the
    variant's contig, one per ``chrom``).
    """
    order = np.lexsort((rows["within"], rows["row"], rows["pos"], rows["rank"]))
    rows = {name: values[order] for name, values in rows.items()}
    # Codes of (chrom, pos, ref, alt) in first-appearance order = genome order. Equal variants
    # lie in one run of equal (rank, pos); when every run holds one variant (no position with two
    # allele pairs), the run number is the code.
    run = np.r_[True, (rows["rank"][1:] != rows["rank"][:-1]) | (rows["pos"][1:] != rows["pos"][:-1])]
    codes = np.cumsum(run) - 1
    first = np.flatnonzero(run)[codes]
    if not all((rows[name] == rows[name][first]).all() for name in ("chrom", "ref", "alt")):
        codes = _first_appearance_codes(rows["chrom"], rows["pos"], rows["ref"], rows["alt"])
    # Primary tile: largest edge distance, then the earliest tile.
    pick = np.lexsort((rows["row"], -rows["edge"], codes))
    primary = pick[np.r_[True, codes[pick][1:] != codes[pick][:-1]]]
    variants = {
        "contig": rows["chrom"][primary], "pos": rows["pos"][primary], "id": rows["id"][primary],
        "ref": rows["ref"][primary], "alt": rows["alt"][primary], "alt_freq": rows["alt_freq"][primary],
        "tile": rows["row"][primary], "offset": rows["within"][primary],
        "n_tiles": np.bincount(codes),
    }
    by_tile = np.lexsort((rows["within"], rows["row"]))
    bounds = np.searchsorted(rows["row"][by_tile], np.arange(n_tiles + 1))
    members = [codes[by_tile[bounds[t]:bounds[t + 1]]].astype(np.int64) for t in range(n_tiles)]
    return variants, members


def overlap_weights(members: Sequence[np.ndarray], n_variants: int) -> list[np.ndarray]:
    """Per tile, the weight of its output for each of its ``members`` (:data:`OVERLAP_RULE`).

    Tile weights are 1 + edge distance, divided by their sum over the tiles that hold the
    variant; returned as float32 arrays aligned with ``members``.
    """
    raw = []
    for member in members:
        within = np.arange(len(member))
        raw.append(np.minimum(within, len(member) - 1 - within) + 1.0)
    total = np.zeros(n_variants)
    for member, weight in zip(members, raw, strict=True):
        total[member] += weight  # a tile holds each variant once
    return [(weight / total[member]).astype(np.float32) for member, weight in zip(members, raw, strict=True)]
