"""Trained autoencoder bundles, many-tile training and portable VCF-to-VCF imputation.

Dias et al. (2022, eLife 11:e75600) train one sparse denoising autoencoder per LD tile
("Genome tiling", "Hyperparameter tuning") and impute a VCF by running every tile's model on the
target genotypes ("Imputation data format"). The authors' inference repository cuts the input
into tiles with bcftools, runs one model per tile and concatenates the outputs without resolving
overlaps, copying observed genotypes through (``TorkamaniLab/imputator_inference``:
``genome_tiler.sh``, ``imputator.sh`` and ``inference_function.py``). This module holds the same
pipeline as one portable artefact and one call:

* a **bundle** folder: ``manifest.json`` (format version, contigs and genome build, tiles,
  training-data summary, sha256 of every file) and per tile ``tiles/<id>.pt`` (state_dict),
  ``tiles/<id>.variants.tsv`` (chrom, pos, id, ref, alt, alt_freq) and ``tiles/<id>.json``
  (hyperparameters, training-history summary), plus ``weights.npy``: every tile's Linear
  layers packed into one float32 array (offsets, layer widths and activation per tile in the
  manifest's tile entries, ``packed_weights`` describing the file), so inference needs NumPy
  only. Bundles written before ``weights.npy`` existed load unchanged and run through torch.
  :func:`save_bundle` / :func:`load_bundle`;
* :func:`train_bundle`: trains every tile (several tiles per task, tasks on a process pool or a
  ``dask.distributed`` cluster), writes each tile atomically and never retrains a tile whose
  files already hold the same variants and hyperparameters;
* :func:`map_variants`: matches input variants to bundle variants by contig, position and
  alleles (allele flips recoded, strand flips and strand-ambiguous SNPs handled and counted,
  contig names ``22`` / ``chr22`` mapped), with clear errors for inputs that do not fit;
* :func:`impute_dataset` / :func:`impute_vcf`: each tile's model on the target samples (NumPy
  forward pass from ``weights.npy``, or torch for older bundles), overlapping tiles resolved
  by :data:`OVERLAP_RULE`, typed genotypes passed through, GT:DS:GP (GP normalised) written
  with bgzip and tabix. :func:`impute_dataset` returns a dataset in memory;
  :func:`impute_vcf` streams: region chunks (:func:`plan_stream`) in sample batches, each
  chunk written before the next (or imputed on a ``dask.distributed`` cluster), into one
  atomically renamed file;
* :class:`DAEImputer`: the :class:`~analysislib.genotype.imputer.GenotypeImputer` ("dae") used
  by the evaluation harness.

The model and single-tile training are in :mod:`analysislib.genotype.autoencoder`.

Output and matching rules
-------------------------
The output holds the bundle's variants on the contigs the input covers, in genome order; input
variants absent from the bundle are dropped and counted (as Beagle and Minimac4 drop
target-only markers). Typed genotypes are copied through as hard calls, as in the authors'
``get_predicted_gen_known_indices``; unlike their code, decoded probabilities are normalised
(:func:`~analysislib.genotype.encoding.genotype_probabilities_from_presence`) and written as
GP, with DS = P(het) + 2 P(hom-alt) and GT = the most likely genotype, unphased.

Speed
-----
Inference cost is a few matrix products per tile; everything else (reading, mapping, decoding,
writing) is vectorised over variants and samples. Importing torch takes longer than imputing a
chromosome of array data, so inference runs the packed weights through
:func:`~analysislib.genotype.autoencoder.numpy_forward` (one file read for all tiles, the
matrix products in NumPy's BLAS, results equal to torch's to float32 rounding) and
``analysislib impute`` never imports torch; it reads the VCF into NumPy arrays
(:func:`~analysislib.io.vcf.read_vcf_arrays`), so xarray and dask are not imported either, and
holds the bundle's tables as NumPy columns, so neither is pandas. On array panels with tens of
variants per tile the per-tile overhead dominates, so threads go to tiles only when tiles are large
(:func:`_thread_split`). The torch path (older bundles, ``engine="torch"``) stores weights in
one storage per file and runs them through one weightless model per tile shape
(:meth:`Bundle.predict`).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime
import functools
import itertools
import json
import logging
import math
import os
import pickle
import re
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from analysislib import variables
from analysislib.errors import BundleChecksumError, BundleError, InputFormatError
from analysislib.genotype.imputer import GenotypeImputer, ImputationRun, sites_key
from analysislib.io.atomic import atomic_output
from analysislib.io.checksum import sha256_of
from analysislib.presets import Presets, check_settings
from analysislib.results.provenance import peak_memory_mb

if TYPE_CHECKING:
    import pandas as pd
    import torch
    import xarray as xr

    from analysislib.genotype.autoencoder import DAEHyperparameters, TrainedTile

__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_FORMAT_VERSION",
    "CHUNK_GENOTYPES",
    "DAE_PRESETS",
    "DEFAULT_BATCH_SAMPLES",
    "KNOWN_CONTIG_LENGTHS",
    "OVERLAP_RULE",
    "PACKED_WEIGHTS_NAME",
    "Bundle",
    "BundleChecksumError",
    "BundleError",
    "DAEImputer",
    "ImputeReport",
    "StreamPlan",
    "VariantMapping",
    "impute_dataset",
    "impute_vcf",
    "infer_genome_build",
    "load_bundle",
    "map_variants",
    "normalise_contig",
    "plan_stream",
    "plan_tile_tasks",
    "save_bundle",
    "tile_id_for",
    "train_bundle",
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

OVERLAP_RULE = (
    "A variant that lies in several tiles takes the weighted mean of their allele-presence "
    "outputs (before decoding to genotype probabilities), each tile weighted by 1 + the "
    "variant's edge distance in it (edge distance = min(index in tile, n_variants - 1 - index)): "
    "the models that see more flanking variants on both sides count more. A variant in one tile "
    "takes that tile's values. The variant's 'tile' is the one with the largest weight (ties: the "
    "tile that starts first), tiling.variant_tiles' 'primary' tile."
)

#: Presets of :class:`DAEImputer`: training epochs per tile, hyperparameter overrides,
#: :func:`~analysislib.tiling.tile_genome` arguments and models per tile (:func:`train_bundle`).
#: ``full`` is the paper's scale (its hyperparameters, up to ``max_epochs`` with early stopping,
#: the authors' 500-SNP box).
#: ``quick`` and ``standard`` run the same code with other values (issue 12, measured on the
#: first 2,000 SNPs of 1000 Genomes chr22 array sites, 450 reference / 50 target samples, one SNP
#: in three typed, one torch thread; aggregate / mean per-variant r² at untyped sites, Minimac4
#: 0.785 / 0.657, allele-frequency floor 0.243 / 0):
#:
#: * the old quick preset (40 epochs, batches of 32, lr 3e-3, 4 layers, ratio 0.5, masking
#:   curriculum from 80 % to all but 5 variants) reached 0.547 / 0.336 in 82 s: about 600
#:   optimizer steps per tile is far too few, and 200 epochs gave 0.686 / 0.503 (521 s);
#: * the curriculum's 80-99 % masking is harder than inference on arrays with a third of the
#:   sites typed: 50 % instead of 80 % raised 200-variant tiles from 0.592 / 0.401 to
#:   0.634 / 0.450 (``max_mask`` caps the end rate; the authors' code, TorkamaniLab/
#:   Imputation_Autoencoder ``DSAE_TORCH_ARG.py``, runs ``min_mask`` 0.8 to ``(V - 5) / V``);
#: * with few samples (450) a full batch at lr 1e-2 replaces tens of Python-bound small steps
#:   per epoch by one, and 2 layers of ratio 1.0 (the width the authors' per-tile search
#:   picked most often, 119 of 256 chr22 tiles) beat 4 layers of ratio 0.5 (0.739 / 0.587
#:   against 0.704 / 0.544 on 100-variant tiles of the first 1,000 SNPs, 1,000 steps).
_FAST_HPARAMS = {"batch_size": 512, "learning_rate": 1e-2, "n_layers": 2, "size_ratio": 1.0,
                 "min_mask": 0.5, "max_mask": 0.9}
DAE_PRESETS: Presets[dict[str, Any]] = Presets("autoencoder", {
    # Two models per tile: on the full chr22 panel (typed 1 in 3) one model gave aggregate / mean
    # per-variant r² 0.753 / 0.603, two 0.760 / 0.611 for twice the training, and two of 200
    # epochs 0.755 / 0.602 (BENCHMARKS.md). Dias et al. train one model per tile.
    "quick": {"epochs": 300, "hparams": {**_FAST_HPARAMS, "cycle_epochs": 100}, "tiling": {"box": 25},
              "models_per_tile": 2},
    # Longer training over-fits at reference-panel sizes of a few hundred: on the same 2,000 SNPs,
    # 1,500 epochs in cycles of 500 gave 0.696 / 0.558 against quick's 0.717 / 0.565, and 0.694 /
    # 0.552 with a 10 % validation split choosing the best cycle by r² (the authors' Optuna
    # objective). What helped was averaging independently seeded models of each tile: two or
    # three bundles of quick's training gave 0.731-0.733 (BENCHMARKS.md). ``standard`` is an
    # ensemble of three such models per tile.
    "standard": {"epochs": 300, "hparams": {**_FAST_HPARAMS, "cycle_epochs": 100}, "tiling": {"box": 25},
                 "models_per_tile": 3},
    "full": {"epochs": None, "hparams": {}, "tiling": {}, "models_per_tile": 1},
})

#: ``derive_seed`` stream of the seeds of a tile's extra ensemble models (``models_per_tile``).
ENSEMBLE_STREAM = 21

#: Lengths (bp) of the primary assembled chromosomes in the two human builds, to name the build
#: of a panel or input from its ``##contig`` header lines.
KNOWN_CONTIG_LENGTHS: dict[str, dict[str, int]] = {
    "GRCh37": {
        "1": 249250621, "2": 243199373, "3": 198022430, "4": 191154276, "5": 180915260,
        "6": 171115067, "7": 159138663, "8": 146364022, "9": 141213431, "10": 135534747,
        "11": 135006516, "12": 133851895, "13": 115169878, "14": 107349540, "15": 102531392,
        "16": 90354753, "17": 81195210, "18": 78077248, "19": 59128983, "20": 63025520,
        "21": 48129895, "22": 51304566, "X": 155270560, "Y": 59373566,
    },
    "GRCh38": {
        "1": 248956422, "2": 242193529, "3": 198295559, "4": 190214555, "5": 181538259,
        "6": 170805979, "7": 159345973, "8": 145138636, "9": 138394717, "10": 133797422,
        "11": 135086622, "12": 133275309, "13": 114364328, "14": 107043718, "15": 101991189,
        "16": 90338345, "17": 83257441, "18": 80373285, "19": 58617616, "20": 64444167,
        "21": 46709983, "22": 50818468, "X": 156040895, "Y": 57227415,
    },
}

_SMALL_TILE_WORK = 5e7  # multiply-adds per tile below which threads do not pay (see _thread_split)
_DECODE_BLOCK = 65536  # variants decoded at a time
_COMPLEMENT = {"A": "T", "C": "G", "G": "C", "T": "A"}
_AMBIGUOUS = {("A", "T"), ("T", "A"), ("C", "G"), ("G", "C")}
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
StrandPolicy = Literal["keep", "drop"]


# --------------------------------------------------------------------------------------------
# Contigs and genome builds
# --------------------------------------------------------------------------------------------


def normalise_contig(name: str) -> str:
    """Contig name without a ``chr`` prefix, upper-case, with ``M`` for ``MT``: ``chr22`` -> ``22``."""
    text = str(name).strip()
    if text[:3].lower() == "chr":
        text = text[3:]
    text = text.upper()
    return "M" if text == "MT" else text


def infer_genome_build(contigs: Sequence[str], lengths: Sequence[int | None] | None) -> str | None:
    """Name the human build (``GRCh37`` / ``GRCh38``) from contig lengths, or None if unknown.

    Only chromosomes 1-22, X and Y with a known length vote; the build is returned when every
    vote agrees.
    """
    if lengths is None:
        return None
    votes = set()
    for name, length in zip(contigs, lengths, strict=False):
        if length is None:
            continue
        key = normalise_contig(name)
        matches = {build for build, table in KNOWN_CONTIG_LENGTHS.items() if table.get(key) == int(length)}
        known = any(key in table for table in KNOWN_CONTIG_LENGTHS.values())
        if known:
            votes.add(next(iter(matches)) if len(matches) == 1 else "other")
    return next(iter(votes)) if len(votes) == 1 and "other" not in votes else None


def _contig_names(ds: xr.Dataset) -> np.ndarray:
    """Contig name of every variant."""
    contigs = np.asarray(ds.attrs.get("contigs", []), dtype=object)
    codes = np.asarray(ds["variant_contig"].values)
    return contigs[codes] if len(contigs) else codes.astype(str).astype(object)


def _contig_length_map(ds: xr.Dataset) -> dict[str, int]:
    lengths = ds.attrs.get("contig_lengths")
    if lengths is None:
        return {}
    return {str(c): int(n) for c, n in zip(ds.attrs.get("contigs", []), lengths, strict=False)
            if n is not None}


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


def _variants_columns(path: Path) -> dict[str, np.ndarray]:
    """Columns of a tile variant table as arrays; errors name the file and line."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise BundleError(path, "incomplete bundle: the tile variant table is missing") from None
    except (OSError, UnicodeDecodeError) as err:
        raise BundleError(path, f"unreadable tile variant table ({err})") from None
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
    table = np.array(cells, dtype=object).reshape(-1, width)
    columns = {name: table[:, k] for k, name in enumerate(header)}
    try:
        columns["pos"] = columns["pos"].astype(np.int64)
        columns["alt_freq"] = (columns["alt_freq"].astype(np.float64) if "alt_freq" in columns
                               else np.full(len(table), np.nan))
    except ValueError as err:
        raise BundleError(path, f"non-numeric pos or alt_freq ({err})") from None
    return {name: columns[name] for name in VARIANT_COLUMNS}


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
        Trained :class:`~analysislib.genotype.autoencoder.SparseDenoisingAutoencoder`.
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
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``manifest.json`` over tiles already written by :func:`write_tile`.

    Every tile file is hashed (sha256) into ``files``; the manifest goes in atomically. When
    every tile holds float32 autoencoder weights, they are also packed into ``weights.npy``
    (hashed too) and each tile entry gains ``packed`` (offset, layer widths, activation), the
    manifest ``packed_weights``; otherwise (other modules) inference uses the ``.pt`` files.
    """
    from analysislib.results import code_version

    out = Path(out_dir)
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
    weights are not a float32 :class:`~analysislib.genotype.autoencoder.SparseDenoisingAutoencoder`
    (such a bundle is run through torch).
    """
    import torch

    from analysislib.genotype.autoencoder import linear_layers

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
                raise ValueError("weights are not float32")
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

    def tile_config(self, tile: int) -> dict[str, Any]:
        """The parsed ``tiles/<id>.json`` of tile row ``tile``."""
        if tile not in self._configs:
            path = self.path / self._tile("config")[tile]
            try:
                self._configs[tile] = json.loads(path.read_text())
            except FileNotFoundError:
                raise BundleError(path, "incomplete bundle: the tile configuration is missing") from None
            except (OSError, ValueError) as err:
                raise BundleError(path, f"unreadable tile configuration ({err})") from None
        return self._configs[tile]

    def hyperparameters(self, tile: int) -> DAEHyperparameters:
        """Hyperparameters of tile row ``tile``."""
        from analysislib.genotype.autoencoder import DAEHyperparameters

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
        if rel in self._deferred and path.is_file():
            actual = sha256_of(path)
            if actual != self.manifest["files"][rel]:
                raise BundleChecksumError(path, self.manifest["files"][rel], actual)
            self._deferred.discard(rel)
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

        from analysislib.genotype.autoencoder import SparseDenoisingAutoencoder

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

        from analysislib.genotype.autoencoder import SparseDenoisingAutoencoder

        cache = self._local.__dict__.setdefault("skeletons", {})
        key = (int(self._tile("n_variants")[tile]), self.hyperparameters(tile))
        if key not in cache:
            with torch.device("meta"):
                model = SparseDenoisingAutoencoder(*key).eval()
            cache[key] = (model, {k: tuple(v.shape) for k, v in model.state_dict().items()})
        return cache[key]

    def packed_layers(self, tile: int) -> tuple[list[tuple[np.ndarray, np.ndarray]], str]:
        """Tile row ``tile``'s Linear layers (views into ``weights.npy``) and hidden activation.

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
                    try:
                        flat = np.load(path, allow_pickle=False)
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
        :func:`~analysislib.genotype.autoencoder.numpy_forward` and never imports torch;
        ``engine="torch"`` (the default for bundles without packed weights) runs the tile's
        ``.pt`` weights through a weightless model of the tile's shape
        (``torch.func.functional_call``) under ``torch.inference_mode``. All samples go
        ``batch_size`` at a time. Safe to call from several threads at once.

        ``inputs`` and ``outputs`` are those of
        :func:`~analysislib.genotype.autoencoder.numpy_forward`: ``presence`` then holds only
        the ``inputs`` columns (the others are 0), and only the ``outputs`` columns are returned.
        The NumPy engine skips the work of the rest; torch computes everything and selects.
        """
        if engine is None:
            engine = "numpy" if self.packed else "torch"
        if engine == "numpy":
            from analysislib.genotype.autoencoder import numpy_forward

            layers, activation = self.packed_layers(tile)
            return numpy_forward(layers, activation, presence, batch_size=batch_size, inputs=inputs,
                                 outputs=outputs)
        if engine != "torch":
            raise ValueError(f"engine must be 'numpy' or 'torch', got {engine!r}")
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
    return manifest


def load_bundle(path: str | os.PathLike[str], *, verify: bool = True) -> Bundle:
    """Open a model bundle, check it is complete and (optionally) that no file changed.

    Parameters
    ----------
    path
        Bundle folder written by :func:`train_bundle` or :func:`save_bundle`.
    verify
        Recompute the sha256 of every file and compare with the manifest. In bundles with
        packed weights the per-tile ``.pt`` files, which inference does not read, are checked
        when first read (:meth:`Bundle.load_weights`) instead.

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
    # With packed weights, inference never reads the per-tile .pt files: they are checked when
    # first read (Bundle.load_weights) instead of here, which halves the hashing.
    deferred = set(tiles["weights"]) if verify and "packed_weights" in manifest else set()
    base, listings = os.fspath(root), {}
    for rel, expected in files.items():
        file = os.path.join(base, rel)
        if not _is_file(file, listings):
            raise BundleError(root / rel, "incomplete bundle: this file, listed in manifest.json, is missing")
        if verify and rel not in deferred:
            actual = sha256_of(file)
            if actual != expected:
                raise BundleChecksumError(root / rel, expected, actual)
    if "packed_weights" in manifest:
        _check_packed(root, manifest, tiles)
    elif "packed" in tiles:  # a damaged 'packed_weights' key would silently switch engines
        raise BundleError(root / MANIFEST_NAME, "the tiles have 'packed' entries but the manifest has "
                          "no 'packed_weights'")
    contig_rank = {c: i for i, c in enumerate(manifest["contigs"])}
    rows = _tile_rows_at_once(root, tiles, contig_rank)
    if rows is None:
        rows = _tile_rows(root, tiles, contig_rank)
    variants, members = _union_of_tiles(rows, len(manifest["tiles"]))
    if "first_position" not in tiles:
        tiles["first_position"] = np.array([variants["pos"][m[0]] for m in members], dtype=np.int64)
        tiles["last_position"] = np.array([variants["pos"][m[-1]] for m in members], dtype=np.int64)
    return Bundle(root, manifest, None, None, members, _deferred=deferred, _tiles_columns=tiles,
                  _variants_columns=variants)


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


def _tile_rows_at_once(root: Path, tiles: Mapping[str, np.ndarray], contig_rank: Mapping[str, int]
                       ) -> dict[str, np.ndarray] | None:
    """:func:`_tile_rows` with every tile variant table parsed as one; None if any check fails.

    Takes tables with one header and passes only when every check of :func:`_tile_rows` would;
    otherwise :func:`_tile_rows` reads them one by one and names the first bad table.
    """
    base = os.fspath(root)
    header, bodies = None, []
    for rel in tiles["variants"]:
        try:
            with open(os.path.join(base, rel)) as handle:  # as Path.read_text
                text = handle.read()
        except (OSError, UnicodeDecodeError, TypeError):
            return None
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
    cells = "\n".join(bodies).replace("\n", "\t").split("\t")
    table = np.array(cells, dtype=object).reshape(-1, width)
    columns = {name: table[:, k] for k, name in enumerate(names)}
    try:
        columns["pos"] = columns["pos"].astype(np.int64)
        columns["alt_freq"] = (columns["alt_freq"].astype(np.float64) if "alt_freq" in columns
                               else np.full(len(table), np.nan))
    except (ValueError, TypeError, OverflowError):
        return None
    if (columns["chrom"] != np.repeat(np.array(contigs, dtype=object), counts)).any():
        return None
    row = np.repeat(np.arange(len(counts)), counts)
    within = np.arange(len(table)) - np.repeat(np.cumsum(counts) - counts, counts)
    return {**{name: columns[name] for name in VARIANT_COLUMNS}, "row": row, "within": within,
            "edge": np.minimum(within, np.repeat(counts, counts) - 1 - within),
            "rank": np.repeat(np.array([contig_rank[c] for c in contigs], dtype=np.int64), counts)}


def _tile_rows(root: Path, tiles: Mapping[str, np.ndarray], contig_rank: Mapping[str, int]
               ) -> dict[str, np.ndarray]:
    """One entry per (tile, variant): the variant columns plus ``row``, ``within``, ``edge``, ``rank``.

    Reads each tile's variant table and checks it against the manifest (variant count, contig).
    """
    parts: dict[str, list[np.ndarray]] = {name: [] for name in (*VARIANT_COLUMNS, "row", "within", "edge", "rank")}
    for row, (rel, contig, n) in enumerate(zip(tiles["variants"], tiles["contig"], tiles["n_variants"],
                                               strict=True)):
        columns = _variants_columns(root / rel)
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
        from analysislib.genotype.autoencoder import ACTIVATIONS

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


# --------------------------------------------------------------------------------------------
# Training many tiles
# --------------------------------------------------------------------------------------------


def plan_tile_tasks(costs: Sequence[float], n_workers: int = 1, tiles_per_task: int | None = None
                    ) -> list[list[int]]:
    """Group tiles into tasks of several tiles with balanced cost (longest-processing-time first).

    Parameters
    ----------
    costs
        Estimated cost of each tile (:func:`train_bundle` uses ``n_variants**2 * n_samples``,
        the multiply-adds of the fully connected layers per epoch).
    n_workers
        Processes or dask workers that will run the tasks.
    tiles_per_task
        Tiles per task. None picks enough tasks for about four per worker (so a slow task does
        not leave the others idle) and never fewer than one tile per task.

    Returns
    -------
    list of list of int
        Tile indices per task; tasks sorted by total cost, largest first (submit in this
        order). Within a task, tiles keep genome order.
    """
    costs = np.asarray(costs, dtype=np.float64)
    n = len(costs)
    if n == 0:
        return []
    if n_workers < 1:
        raise ValueError("n_workers must be at least 1")
    if tiles_per_task is None:
        tiles_per_task = max(1, math.ceil(n / (4 * n_workers)))
    if tiles_per_task < 1:
        raise ValueError("tiles_per_task must be at least 1")
    n_tasks = math.ceil(n / tiles_per_task)
    loads = np.zeros(n_tasks)
    counts = np.zeros(n_tasks, dtype=np.int64)
    tasks: list[list[int]] = [[] for _ in range(n_tasks)]
    for i in np.argsort(-costs, kind="stable"):
        open_tasks = np.flatnonzero(counts < tiles_per_task)
        task = int(open_tasks[np.argmin(loads[open_tasks])])
        tasks[task].append(int(i))
        loads[task] += costs[i]
        counts[task] += 1
    order = np.argsort(-loads, kind="stable")
    return [sorted(tasks[t]) for t in order if tasks[t]]


def _tile_variant_table(reference: xr.Dataset, first: int, last: int, contigs: np.ndarray,
                        alt_freq: np.ndarray) -> pd.DataFrame:
    import pandas as pd

    sl = slice(first, last + 1)
    alleles = np.asarray(reference["variant_allele"].values[sl], dtype=object)
    ids = (np.asarray(reference["variant_id"].values[sl], dtype=object) if "variant_id" in reference
           else np.full(last - first + 1, ".", dtype=object))
    return pd.DataFrame({
        "chrom": contigs[sl].astype(str), "pos": np.asarray(reference["variant_position"].values[sl], dtype=np.int64),
        "id": [str(i) if str(i) else "." for i in ids], "ref": alleles[:, 0].astype(str),
        "alt": alleles[:, 1].astype(str), "alt_freq": alt_freq[sl],
    })


def _same_variants(stored: pd.DataFrame, wanted: pd.DataFrame) -> bool:
    return len(stored) == len(wanted) and all(
        np.array_equal(stored[c].to_numpy().astype(str), wanted[c].to_numpy().astype(str))
        for c in ("chrom", "pos", "ref", "alt"))


def _existing_tile(out: Path, tile_id: str, wanted: pd.DataFrame, hparams: dict[str, Any],
                   epochs: int | None) -> dict[str, Any] | None:
    """The manifest entry of a complete, matching tile already in ``out``, or None to train it.

    Raises
    ------
    BundleError
        The tile exists but was trained on other variants or with other settings.
    """
    config_path = out / TILES_DIR / f"{tile_id}.json"
    if not config_path.is_file():
        return None
    try:
        config = json.loads(config_path.read_text())
        files = config["files"]
        intact = all((out / rel).is_file() and sha256_of(out / rel) == digest for rel, digest in files.items())
    except (OSError, ValueError, KeyError, TypeError):
        intact = False
    if not intact:
        logger.warning("tile %s in %s is damaged or incomplete; training it again", tile_id, out)
        return None
    stored = _read_variants_tsv(out / config["variants"])
    if not _same_variants(stored, wanted):
        raise BundleError(config_path, "this tile was trained on other variants; train into a new "
                          "folder or pass resume=False to retrain every tile")
    if config.get("hparams") != hparams or config.get("training", {}).get("epochs_requested") != epochs:
        raise BundleError(config_path, "this tile was trained with other hyperparameters or epochs; "
                          "train into a new folder or pass resume=False to retrain every tile")
    return {k: config[k] for k in ("id", "contig", "n_variants", "first_position", "last_position",
                                   "weights", "variants", "config")}


def _train_task(task: dict[str, Any]) -> list[dict[str, Any]]:
    """Train the tiles of one task in this process and write them (pool / dask entry point)."""
    import torch

    from analysislib.genotype.autoencoder import DAEHyperparameters, train_tile

    out = Path(task["out_dir"])
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, int(task["threads"])))
    entries = []
    try:
        for item in task["items"]:
            hparams = DAEHyperparameters.from_dict(item["hparams"])
            checkpoints = out / "checkpoints" / item["tile_id"]
            started = time.perf_counter()
            try:
                trained = train_tile(item["genotypes"], hparams, epochs=task["epochs"],
                                     validation=item["validation"], checkpoint_dir=checkpoints,
                                     device=task["device"], genetic_map=item["genetic_map"],
                                     progress=False)
            except Exception as err:
                raise RuntimeError(f"training tile {item['tile_id']} failed: {type(err).__name__}: {err}") from err
            training = {**trained.summary(), "epochs_requested": task["epochs"],
                        "seconds": time.perf_counter() - started,
                        "n_reference_samples": int(item["genotypes"].shape[1]),
                        "n_validation_samples": 0 if item["validation"] is None else int(item["validation"].shape[1])}
            training.pop("hyperparameters", None)
            entries.append(write_tile(out, item["tile_id"], trained.model, trained.hparams, item["variants"],
                                      history=trained.history, best_epoch=trained.best_epoch,
                                      training=training))
            shutil.rmtree(checkpoints, ignore_errors=True)
    finally:
        torch.set_num_threads(previous)
    return entries


def _resolve_tiles(reference: xr.Dataset, tiles: Any) -> tuple[pd.DataFrame, dict[str, Any] | None]:
    import pandas as pd

    from analysislib.tiling import Tiling, tile_genome

    if tiles is None or isinstance(tiles, Mapping):
        tiles = tile_genome(reference, **dict(tiles or {}))
    if isinstance(tiles, Tiling):
        return tiles.tiles, dict(tiles.params)
    if isinstance(tiles, pd.DataFrame):
        missing = {"first_variant", "last_variant"} - set(tiles.columns)
        if missing:
            raise ValueError(f"the tile table lacks {', '.join(sorted(missing))}")
        return tiles.reset_index(drop=True), None
    raise TypeError("tiles must be a tile table, a Tiling, tile_genome arguments or None")


def _is_per_tile(hparams: Mapping[Any, Any]) -> bool:
    """True for a tile -> hyperparameters mapping, False for a mapping of hyperparameter fields.

    Per tile, every value is a mapping or :class:`~analysislib.genotype.autoencoder.DAEHyperparameters`.
    """
    from analysislib.genotype.autoencoder import DAEHyperparameters

    return bool(hparams) and all(isinstance(v, Mapping | DAEHyperparameters) for v in hparams.values())


def _check_settings(hparams: Any, tiling: Mapping[str, Any] | None) -> None:
    """PresetError now, not at fit, for a hyperparameter or tiling setting that does not exist."""
    import inspect

    from analysislib.genotype.autoencoder import DAEHyperparameters
    from analysislib.tiling import tile_genome

    if isinstance(hparams, Mapping):
        for settings in hparams.values() if _is_per_tile(hparams) else [hparams]:
            if isinstance(settings, Mapping):
                check_settings("autoencoder hyperparameter", settings, set(DAEHyperparameters.__dataclass_fields__))
    if tiling:
        parameters = inspect.signature(tile_genome).parameters
        check_settings("tiling", tiling, {n for n, p in parameters.items() if p.kind == p.KEYWORD_ONLY})


def _hparams_for(hparams: Any, tile_ids: Sequence[str], tile_numbers: Sequence[Any]) -> list[DAEHyperparameters]:
    from analysislib.genotype.autoencoder import DAEHyperparameters

    if hparams is None:
        return [DAEHyperparameters()] * len(tile_ids)
    if isinstance(hparams, DAEHyperparameters):
        return [hparams] * len(tile_ids)
    if isinstance(hparams, Mapping):
        if not _is_per_tile(hparams):
            return [DAEHyperparameters(**hparams)] * len(tile_ids)
        chosen = []
        for tile_id, number in zip(tile_ids, tile_numbers, strict=True):
            for key in (tile_id, number, str(number)):
                if key in hparams:
                    value = hparams[key]
                    chosen.append(value if isinstance(value, DAEHyperparameters)
                                  else DAEHyperparameters.from_dict(value))
                    break
            else:
                raise ValueError(f"no hyperparameters for tile {tile_id} (tile {number}) in the mapping")
        return chosen
    raise TypeError("hparams must be DAEHyperparameters, a mapping of their fields, or a per-tile mapping")


def train_bundle(
    reference: xr.Dataset,
    tiles: pd.DataFrame | Mapping[str, Any] | Any | None = None,
    hparams: DAEHyperparameters | Mapping[Any, Any] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    epochs: int | None = None,
    n_jobs: int = 1,
    client: Any = None,
    tiles_per_task: int | None = None,
    threads_per_job: int | None = None,
    validation_fraction: float = 0.0,
    genome_build: str | None = None,
    resume: bool = True,
    device: str = "cpu",
    progress: bool | None = None,
    models_per_tile: int = 1,
) -> Bundle:
    """Train one autoencoder per tile (or an ensemble of ``models_per_tile``) and write the bundle.

    Parameters
    ----------
    reference
        Phased, biallelic, diploid reference panel, sorted by contig and position.
    tiles
        A tile table (``first_variant``, ``last_variant`` inclusive, optional ``tile``), a
        :class:`~analysislib.tiling.Tiling`, or a mapping of
        :func:`~analysislib.tiling.tile_genome` arguments (None: the authors' defaults).
    hparams
        :class:`~analysislib.genotype.autoencoder.DAEHyperparameters` for every tile, a mapping
        of their fields, or a per-tile mapping (tile id, tile number from the ``tile`` column,
        or its string) to hyperparameters (objects or dicts), for example the picks of
        :mod:`analysislib.genotype.tuning`.
    out_dir
        Bundle folder (created). Required.
    epochs
        Epochs per tile; None trains up to each tile's ``max_epochs`` with early stopping.
    n_jobs
        Worker processes when no ``client`` is given (1 trains in this process).
    client
        A ``dask.distributed.Client`` or a scheduler address: tasks run on its workers, which
        must see ``out_dir`` (shared file system).
    tiles_per_task
        Tiles trained one after another by one task (see :func:`plan_tile_tasks`).
    threads_per_job
        Torch threads per task; default: the CPU count divided by ``n_jobs`` (1 with a client).
    validation_fraction
        Share of reference samples held out per tile for validation r² in the history
        (0: none; early stopping follows the training loss, as the authors did).
    genome_build
        Build recorded in the manifest; inferred from the panel's contig lengths when None.
    resume
        Keep tiles already in ``out_dir`` whose variants, hyperparameters and epochs match
        (a tile trained differently raises :class:`BundleError`); False retrains all tiles.
    device
        Training device (``"cpu"``, ``"cuda"``, ``"auto"``).
    progress
        Show a tqdm bar over tiles (None: see :func:`analysislib.training.progress_enabled`).
    models_per_tile
        Independently seeded models per tile (an ensemble). Model ``k > 1`` of a tile is stored
        as a tile of its own with the same variants, id ``<tile id>_m<k>`` and hyperparameter
        seed ``derive_seed(seed, ENSEMBLE_STREAM, k)``; inference averages them by
        :data:`OVERLAP_RULE` (equal weights: same variants). 1 (default) is one model per tile.

    Returns
    -------
    Bundle
        The finished bundle, loaded and verified.

    Notes
    -----
    Each tile is written atomically (weights, variant table, then the JSON that marks it
    complete), so an interrupted run keeps its finished tiles and a rerun with the same
    arguments trains only the rest; within a tile, training resumes from its last cycle
    checkpoint under ``out_dir/checkpoints`` (removed once the tile is written). The manifest
    with every file's sha256 is written last.
    """
    from tqdm.auto import tqdm

    from analysislib.genotype.stats import alt_allele_frequency
    from analysislib.training import progress_enabled

    if out_dir is None:
        raise ValueError("out_dir (the bundle folder) is required")
    variables.validate(reference, ["call_genotype", "variant_position", "variant_allele", "variant_contig"])
    if reference.sizes["ploidy"] != 2 or reference.sizes["alleles"] != 2:
        raise ValueError("the reference panel must be diploid and biallelic")
    if not 0 <= validation_fraction < 1:
        raise ValueError("validation_fraction must be in [0, 1)")
    if n_jobs < 1:
        raise ValueError("n_jobs must be at least 1")
    if int(models_per_tile) != models_per_tile or models_per_tile < 1:
        raise ValueError(f"models_per_tile must be a positive integer, got {models_per_tile!r}")
    out = Path(out_dir)
    (out / TILES_DIR).mkdir(parents=True, exist_ok=True)
    table, tiling_params = _resolve_tiles(reference, tiles)
    contigs = _contig_names(reference)
    positions = np.asarray(reference["variant_position"].values, dtype=np.int64)
    first = table["first_variant"].to_numpy(dtype=np.int64)
    last = table["last_variant"].to_numpy(dtype=np.int64)
    n_variants = reference.sizes["variants"]
    if len(first) == 0 or first.min() < 0 or last.max() >= n_variants or np.any(last < first):
        raise ValueError(f"tile ranges must be non-empty and lie inside [0, {n_variants})")
    spans_contigs = contigs[first] != contigs[last]
    if spans_contigs.any():
        t = int(np.flatnonzero(spans_contigs)[0])
        raise ValueError(f"tile {t} spans contigs {contigs[first[t]]} and {contigs[last[t]]}")
    ids = [tile_id_for(contigs[a], positions[a], positions[b]) for a, b in zip(first, last, strict=True)]
    seen: dict[str, int] = {}
    for i, tile_id in enumerate(ids):  # identical spans (rare): make the ids unique
        seen[tile_id] = seen.get(tile_id, 0) + 1
        if seen[tile_id] > 1:
            ids[i] = f"{tile_id}_{seen[tile_id]}"
    numbers = table["tile"].tolist() if "tile" in table else list(range(len(table)))
    chosen = _hparams_for(hparams, ids, numbers)
    if models_per_tile > 1:  # the ensemble's extra models as tiles of their own, after their tile
        from analysislib.training import derive_seed

        first, last = np.repeat(first, models_per_tile), np.repeat(last, models_per_tile)
        models = range(1, models_per_tile + 1)
        ids = [tile_id if k == 1 else f"{tile_id}_m{k}" for tile_id in ids for k in models]
        chosen = [hp if k == 1 else replace(hp, seed=derive_seed(hp.seed, ENSEMBLE_STREAM, k))
                  for hp in chosen for k in models]

    alt_freq = np.nan_to_num(np.asarray(alt_allele_frequency(reference).values, dtype=np.float64))
    calls = reference["call_genotype"].data  # NumPy or dask: sliced one tile at a time
    genetic_cm = (np.asarray(reference["variant_genetic_position"].values, dtype=np.float64)
                  if "variant_genetic_position" in reference else None)  # for offspring augmentation
    train_samples = np.arange(reference.sizes["samples"])
    val_samples = np.empty(0, dtype=np.int64)
    if validation_fraction > 0:
        rng = np.random.default_rng(chosen[0].seed)
        shuffled = rng.permutation(reference.sizes["samples"])
        n_val = max(1, round(validation_fraction * len(shuffled)))
        val_samples, train_samples = np.sort(shuffled[:n_val]), np.sort(shuffled[n_val:])

    entries: list[dict[str, Any] | None] = [None] * len(ids)
    pending: list[dict[str, Any]] = []
    pending_rows: list[int] = []
    for row, (tile_id, a, b, hp) in enumerate(zip(ids, first, last, chosen, strict=True)):
        variants_table = _tile_variant_table(reference, int(a), int(b), contigs, alt_freq)
        if resume:
            entries[row] = _existing_tile(out, tile_id, variants_table, hp.to_dict(), epochs)
            if entries[row] is not None:
                continue
        pending_rows.append(row)
        pending.append({"tile_id": tile_id, "hparams": hp.to_dict(), "variants": variants_table,
                        "first": int(a), "last": int(b)})
    reused = len(ids) - len(pending)
    if reused:
        logger.info("%s: %d of %d tiles already trained; training %d", out, reused, len(ids), len(pending))

    n_workers = n_jobs if client is None or isinstance(client, str) else max(1, len(client.nthreads()))
    if threads_per_job is None:
        threads_per_job = 1 if client is not None else max(1, (os.cpu_count() or 1) // n_jobs)
    costs = [float(p["last"] - p["first"] + 1) ** 2 * len(train_samples) for p in pending]
    plan = plan_tile_tasks(costs, n_workers, tiles_per_task)
    row_of = {p["tile_id"]: r for p, r in zip(pending, pending_rows, strict=True)}

    def make_task(task: list[int]) -> dict[str, Any]:
        """The payload of one task, genotypes included (built only when it is submitted)."""
        items = []
        for i in task:
            spec = pending[i]
            block = np.asarray(calls[spec["first"]:spec["last"] + 1], dtype=np.int8)
            items.append({**spec, "genotypes": np.ascontiguousarray(block[:, train_samples]),
                          "validation": np.ascontiguousarray(block[:, val_samples]) if len(val_samples) else None,
                          "genetic_map": None if genetic_cm is None else genetic_cm[spec["first"]:spec["last"] + 1]})
        return {"out_dir": str(out), "epochs": epochs, "device": device, "threads": threads_per_job,
                "items": items}

    with contextlib.ExitStack() as stack:
        bar = stack.enter_context(tqdm(total=len(pending), desc="tiles", unit="tile",
                                       disable=not progress_enabled(progress)))
        if isinstance(client, str) and plan:
            from distributed import Client

            client = stack.enter_context(Client(client))
        for done in _run_tasks(plan, make_task, n_jobs=n_jobs, client=client, window=2 * n_workers):
            for entry in done:
                entries[row_of[entry["id"]]] = entry
            bar.update(len(done))

    finished = [e for e in entries if e is not None]
    if len(finished) != len(ids):
        raise RuntimeError("some tiles were not trained")  # defensive; _run_tasks raises first
    with contextlib.suppress(OSError):
        (out / "checkpoints").rmdir()  # only if empty
    listed = {Path(e[k]).name for e in finished for k in ("weights", "variants", "config")}
    stale = [p.name for p in (out / TILES_DIR).iterdir() if p.name not in listed and not p.name.startswith(".")]
    if stale:
        logger.warning("%s: %d files in tiles/ belong to no tile of this bundle (e.g. %s); they are "
                       "not listed in the manifest", out, len(stale), stale[0])
    summary = training_data_summary(reference)
    summary.update({"n_training_samples": len(train_samples),
                    "n_validation_samples": len(val_samples)})
    names = list(dict.fromkeys(contigs.astype(str).tolist()))
    write_manifest(out, finished, training_data=summary, contigs=names,
                   contig_lengths=_contig_length_map(reference), genome_build=genome_build,
                   extra={"training": {"epochs_requested": epochs, "n_tiles": len(ids),
                                       "models_per_tile": int(models_per_tile),
                                       "tiles_reused": reused, "tiling": tiling_params}})
    return load_bundle(out)


def _run_tasks(plan: list[list[int]], make_task: Any, *, n_jobs: int, client: Any, window: int
               ) -> Iterator[list[dict[str, Any]]]:
    """Run training tasks here, on a process pool or on dask; yield each task's tile entries.

    At most ``window`` tasks are in flight, so only their genotypes are in memory at once.
    """
    if not plan:
        return
    if client is None and n_jobs == 1:
        for task in plan:
            yield _train_task(make_task(task))
        return
    with contextlib.ExitStack() as stack:
        if client is not None:
            import distributed

            def submit(payload: dict[str, Any]) -> Any:
                return client.submit(_train_task, payload, pure=False)

            def wait_first(futures: set[Any]) -> set[Any]:
                return set(distributed.wait(futures, return_when="FIRST_COMPLETED").done)

            def cancel(futures: set[Any]) -> None:
                client.cancel(list(futures))
        else:
            import multiprocessing

            pool = stack.enter_context(concurrent.futures.ProcessPoolExecutor(
                max_workers=n_jobs, mp_context=multiprocessing.get_context("spawn")))  # no fork with torch

            def submit(payload: dict[str, Any]) -> Any:
                return pool.submit(_train_task, payload)

            def wait_first(futures: set[Any]) -> set[Any]:
                return concurrent.futures.wait(futures, return_when="FIRST_COMPLETED").done

            def cancel(futures: set[Any]) -> None:
                for future in futures:
                    future.cancel()
        queue, running = list(plan), set()
        try:
            while queue or running:
                while queue and len(running) < max(1, window):
                    running.add(submit(make_task(queue.pop(0))))
                for future in wait_first(running):
                    running.discard(future)
                    yield future.result()
        except concurrent.futures.process.BrokenProcessPool as err:
            raise RuntimeError(
                "a training worker process died: out of memory, or the calling script lacks the "
                "`if __name__ == '__main__':` guard that process pools need (finished tiles are "
                "kept; rerun to continue)") from err
        finally:
            cancel(running)


# --------------------------------------------------------------------------------------------
# Matching input variants to a bundle
# --------------------------------------------------------------------------------------------

_KIND_RANK = {"exact": 0, "ambiguous": 0, "allele_flip": 1, "ambiguous_flip": 1, "strand_flip": 2,
              "strand_allele_flip": 3, "monomorphic": 4, "ambiguous_dropped": 8, "allele_mismatch": 9}
_USED_KINDS = ("exact", "ambiguous", "allele_flip", "ambiguous_flip", "strand_flip",
               "strand_allele_flip", "monomorphic")
_FLIP_KINDS = ("allele_flip", "ambiguous_flip", "strand_allele_flip")


@dataclass
class VariantMapping:
    """How input variants map onto a bundle's variants.

    Attributes
    ----------
    input_index, bundle_index
        Matched pairs in input order: input variant ``input_index[k]`` is bundle variant
        ``bundle_index[k]``.
    flip
        Per pair, True when REF and ALT are swapped (genotypes are recoded 0 <-> 1).
    counts
        Input variants per outcome: ``exact``, ``allele_flip`` (REF/ALT swapped),
        ``strand_flip`` (alleles complemented), ``strand_allele_flip`` (both),
        ``ambiguous`` / ``ambiguous_flip`` (A/T or C/G SNPs used as given / swapped),
        ``ambiguous_dropped`` (A/T or C/G SNPs left out by ``strand_ambiguous="drop"``),
        ``monomorphic`` (input ALT ``.``, matched on REF), ``allele_mismatch`` (a bundle variant
        at the position, alleles incompatible), ``duplicate`` (a second input variant for the
        same bundle variant), ``not_in_bundle`` (no bundle variant at the position),
        ``other_contig`` (contig absent from the bundle), and the totals ``input``, ``used``,
        ``bundle``.
    contig_map
        Input contig name -> bundle contig name, for names that differ (``chr22`` -> ``22``).
    """

    input_index: np.ndarray
    bundle_index: np.ndarray
    flip: np.ndarray
    counts: dict[str, int]
    contig_map: dict[str, str]

    def summary(self) -> str:
        """A few lines for people: what was used, flipped, dropped and renamed."""
        c = self.counts
        lines = [(f"{c['used']} of {c['input']} input variants matched {c['bundle']} bundle variants "
                  f"({100 * c['used'] / max(1, c['bundle']):.1f}% of the bundle typed)")]
        details = [f"{k.replace('_', ' ')} {c[k]}" for k in (
            "exact", "allele_flip", "strand_flip", "strand_allele_flip", "ambiguous", "ambiguous_flip",
            "ambiguous_dropped", "monomorphic", "allele_mismatch", "duplicate", "not_in_bundle",
            "other_contig") if c.get(k)]
        lines.append("  " + "; ".join(details))
        if c.get("ambiguous") or c.get("ambiguous_flip") or c.get("ambiguous_dropped"):
            lines.append("  strand-ambiguous (A/T, C/G) SNPs: "
                         f"{c.get('ambiguous', 0) + c.get('ambiguous_flip', 0)} used as written, "
                         f"{c.get('ambiguous_dropped', 0)} dropped")
        for src, dst in self.contig_map.items():
            lines.append(f"  input contig {src!r} read as bundle contig {dst!r}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Counts and contig renames (JSON-serialisable)."""
        return {"counts": dict(self.counts), "contig_map": dict(self.contig_map)}


def _classify(ref_t: np.ndarray, alt_t: np.ndarray, ref_b: np.ndarray, alt_b: np.ndarray,
              strand_ambiguous: StrandPolicy) -> np.ndarray:
    """Relation of each (input, bundle) allele pair at a shared position; see :class:`VariantMapping`."""
    def complement(alleles: np.ndarray) -> np.ndarray:
        out = np.full(len(alleles), "", dtype=object)
        for base, other in _COMPLEMENT.items():
            out[alleles == base] = other
        return out

    exact = (ref_t == ref_b) & (alt_t == alt_b)
    swap = (ref_t == alt_b) & (alt_t == ref_b)
    bases = list(_COMPLEMENT)
    snp = np.isin(ref_t, bases) & np.isin(alt_t, bases)
    c_ref, c_alt = complement(ref_t), complement(alt_t)
    strand = snp & (c_ref == ref_b) & (c_alt == alt_b)
    strand_swap = snp & (c_ref == alt_b) & (c_alt == ref_b)
    ambiguous = np.zeros(len(ref_b), dtype=bool)
    for a, b in _AMBIGUOUS:
        ambiguous |= (ref_b == a) & (alt_b == b)
    monomorphic = np.isin(alt_t, ["", "."]) & (ref_t == ref_b)
    kind = np.full(len(ref_t), "allele_mismatch", dtype=object)
    kind[monomorphic] = "monomorphic"
    kind[strand_swap] = "strand_allele_flip"
    kind[strand] = "strand_flip"
    kind[swap] = "allele_flip"
    kind[exact] = "exact"
    amb = ambiguous & (exact | swap)
    if strand_ambiguous == "drop":
        kind[amb] = "ambiguous_dropped"
    else:
        kind[ambiguous & exact] = "ambiguous"
        kind[ambiguous & swap & ~exact] = "ambiguous_flip"
    return kind


def map_variants(
    bundle: Bundle,
    target: xr.Dataset,
    *,
    strand_ambiguous: StrandPolicy = "keep",
    source: str | os.PathLike[str] | None = None,
) -> VariantMapping:
    """Match a target dataset's variants to a bundle's.

    Variants match on contig, position and alleles. REF/ALT swapped relative to the bundle is an
    allele flip (genotypes recoded). For SNPs that are not strand-ambiguous, complemented alleles
    are a strand flip (with or without a swap). A/T and C/G SNPs cannot reveal a strand flip:
    with ``strand_ambiguous="keep"`` they are taken as written (VCF alleles are on the forward
    strand), with ``"drop"`` they are left untyped and imputed. Contig names are compared
    exactly, then without a ``chr`` prefix (``chr22`` reads as ``22``).

    Parameters
    ----------
    bundle
        The model bundle.
    target
        Genotype dataset to impute (biallelic).
    strand_ambiguous
        ``"keep"`` or ``"drop"`` (see above).
    source
        File named in error messages (default: ``target.attrs["source"]``).

    Returns
    -------
    VariantMapping

    Raises
    ------
    InputFormatError
        No input contig matches the bundle's (both lists are given); the input's contig
        lengths show another genome build; most shared positions have other alleles (another
        build or reference); or no input variant matches a bundle variant.
    """
    where = str(source or target.attrs.get("source") or "target dataset")
    if target.sizes.get("alleles", 2) > 2:
        raise InputFormatError(where, "multi-allelic variants: split them first (read_vcf(..., "
                               "multiallelic='split') or bcftools norm -m-)")
    return _map_sites(bundle, _contig_names(target).astype(str), target["variant_position"].values,
                      target["variant_allele"].values, _contig_length_map(target),
                      strand_ambiguous=strand_ambiguous, where=where)


def _map_sites(bundle: Bundle, names: np.ndarray, positions: np.ndarray, alleles: np.ndarray,
               contig_lengths: Mapping[str, int], *, strand_ambiguous: StrandPolicy, where: str
               ) -> VariantMapping:
    """:func:`map_variants` on the variant columns: contig name per variant, positions, alleles."""
    if strand_ambiguous not in ("keep", "drop"):
        raise ValueError("strand_ambiguous must be 'keep' or 'drop'")
    bundle_contigs = bundle.contigs
    by_normal = {normalise_contig(c): c for c in bundle_contigs}
    contig_map: dict[str, str] = {}
    used_names = list(dict.fromkeys(names.tolist()))
    for name in used_names:
        if name in bundle_contigs:
            continue
        if normalise_contig(name) in by_normal:
            contig_map[name] = by_normal[normalise_contig(name)]
    mapped = np.array([contig_map.get(n, n) for n in names], dtype=object)
    on_bundle = np.isin(mapped, bundle_contigs)
    if len(names) and not on_bundle.any():
        shown = ", ".join(used_names[:5]) + (" ..." if len(used_names) > 5 else "")
        raise InputFormatError(where, f"no input contig matches the model bundle's: the input has {shown}; "
                               f"the bundle has {', '.join(bundle_contigs)} (names like '22' and 'chr22' "
                               "are matched automatically)")
    _check_build(bundle, contig_lengths, contig_map, where)

    n_input = len(names)
    t_alleles = np.asarray(alleles, dtype=object)
    t_ref = t_alleles[:, 0].astype(str).astype(object)
    t_alt = (t_alleles[:, 1].astype(str).astype(object) if t_alleles.shape[1] > 1
             else np.full(n_input, "", dtype=object))
    t_pos = np.asarray(positions, dtype=np.int64)
    b_contig = bundle._variant("contig")
    b_pos = np.asarray(bundle._variant("pos"), dtype=np.int64)
    t_idx, b_idx = _same_sites(np.flatnonzero(on_bundle), mapped[on_bundle], t_pos[on_bundle], b_contig, b_pos)
    kind = _classify(t_ref[t_idx], t_alt[t_idx], np.asarray(bundle._variant("ref"), dtype=object)[b_idx],
                     np.asarray(bundle._variant("alt"), dtype=object)[b_idx], strand_ambiguous)
    rank = np.array([_KIND_RANK[k] for k in kind], dtype=np.int64)
    # Best relation per input variant, then one input variant per bundle variant.
    order = np.lexsort((b_idx, rank, t_idx))
    best_of_input = order[np.r_[True, t_idx[order][1:] != t_idx[order][:-1]]] if len(order) else order
    usable = best_of_input[np.isin(kind[best_of_input], _USED_KINDS)]
    order = usable[np.lexsort((t_idx[usable], rank[usable], b_idx[usable]))]
    keep = order[np.r_[True, b_idx[order][1:] != b_idx[order][:-1]]] if len(order) else order
    keep = np.sort(keep)
    counts = {k: 0 for k in _KIND_RANK}
    for k, n in zip(*np.unique(kind[keep], return_counts=True), strict=True):
        counts[str(k)] = int(n)
    rejected = best_of_input[~np.isin(kind[best_of_input], _USED_KINDS)]
    for k, n in zip(*np.unique(kind[rejected], return_counts=True), strict=True):
        counts[str(k)] += int(n)
    counts["duplicate"] = int(len(usable) - len(keep))
    counts["not_in_bundle"] = int(on_bundle.sum() - len(best_of_input))
    counts["other_contig"] = int((~on_bundle).sum())
    counts.update({"input": n_input, "used": len(keep), "bundle": len(b_pos)})
    position_matches = len(best_of_input)
    if position_matches >= 20 and counts["allele_mismatch"] > 0.5 * position_matches:
        raise InputFormatError(where, f"alleles differ at {counts['allele_mismatch']} of {position_matches} "
                               "positions shared with the model bundle: the input is probably on another "
                               f"genome build or reference (bundle: {bundle.genome_build or 'build unknown'})")
    if counts["used"] == 0:
        span = ", ".join(f"{c}:{int(b_pos[b_contig == c].min())}-{int(b_pos[b_contig == c].max())}"
                         for c in dict.fromkeys(b_contig.tolist()))
        raise InputFormatError(where, f"no input variant overlaps the model bundle: {n_input} input variants, "
                               f"{position_matches} at bundle positions but none with matching alleles; the "
                               f"bundle covers {span} ({bundle.genome_build or 'build unknown'})")
    return VariantMapping(t_idx[keep], b_idx[keep], np.isin(kind[keep], _FLIP_KINDS), counts, contig_map)


def _same_sites(t_rows: np.ndarray, t_contig: np.ndarray, t_pos: np.ndarray, b_contig: np.ndarray,
                b_pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Input rows and bundle rows of every pair on the same contig and position (a join).

    ``t_rows`` number the input variants ``t_contig`` / ``t_pos``; bundle variants are numbered
    from 0. Pairs come ordered by input row, then bundle row.
    """
    contig_codes = _object_codes(np.concatenate([np.asarray(t_contig, dtype=object),
                                                 np.asarray(b_contig, dtype=object)]))
    positions = np.concatenate([t_pos, b_pos])
    low, high = (int(positions.min()), int(positions.max())) if len(positions) else (0, 0)
    if (int(contig_codes.max(initial=0)) + 1) * (high - low + 1) >= 2**62:  # keys would overflow
        positions = np.unique(positions, return_inverse=True)[1]
        low, high = 0, int(positions.max(initial=0))
    keys = contig_codes * (high - low + 1) + (positions - low)
    t_keys, b_keys = keys[:len(t_pos)], keys[len(t_pos):]
    b_order = np.argsort(b_keys, kind="stable")
    b_sorted = b_keys[b_order]
    lo = np.searchsorted(b_sorted, t_keys, side="left")
    found = np.searchsorted(b_sorted, t_keys, side="right") - lo
    starts = np.repeat(lo, found)
    within = np.arange(len(starts)) - np.repeat(np.cumsum(found) - found, found)
    return np.repeat(np.asarray(t_rows, dtype=np.int64), found), b_order[starts + within].astype(np.int64)


def _check_build(bundle: Bundle, theirs: Mapping[str, int], contig_map: Mapping[str, str], where: str) -> None:
    """Compare contig lengths declared by the input with the bundle's; raise on a build mismatch."""
    ours = bundle.contig_lengths
    for name, length in theirs.items():
        bundle_name = contig_map.get(name, name)
        if bundle_name in ours and ours[bundle_name] != length:
            their_build = infer_genome_build([name], [length]) or "another build"
            raise InputFormatError(
                where, f"contig {name} has length {length} ({their_build}) but the model bundle's "
                f"{bundle_name} has length {ours[bundle_name]} ({bundle.genome_build or 'its build'}): "
                "the input is on a different genome build; lift it over first")


# --------------------------------------------------------------------------------------------
# Imputation
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    import torch

    previous = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise ValueError("threads must be at least 1")
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def _engine_threads(engine: str, threads: int | None) -> Iterator[None]:
    """Limit the inference engine's threads per tile (torch's, or NumPy's BLAS) to ``threads``."""
    if engine == "torch":
        with _torch_threads(threads):
            yield
        return
    if threads is None:
        yield
        return
    if threads < 1:
        raise ValueError("threads must be at least 1")
    controller = _blas_controller()
    if controller is None:  # pragma: no cover - threadpoolctl comes with scikit-learn
        yield
        return
    with controller.limit(limits=int(threads), user_api="blas"):
        yield


@functools.cache
def _blas_controller() -> Any:
    """One ``threadpoolctl.ThreadpoolController`` per process (finding the libraries is slow)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover
        return None
    return ThreadpoolController()


def _thread_split(threads: int | None, work: Sequence[float]) -> tuple[int, int | None]:
    """How many tiles to run side by side, and engine threads (torch or BLAS) per tile.

    ``work`` estimates each tile's multiply-adds. Small tiles (median below
    :data:`_SMALL_TILE_WORK`, e.g. array panels with tens of variants per tile) are bound by
    per-tile overheads that threads cannot share (Python, the GIL, weight loading) and run one
    after another on one torch thread: more threads only add waiting, and OpenMP threads that
    wait on each other stall badly on a busy machine. Larger tiles run ``threads`` at a time, each
    on one torch thread; with fewer tiles than threads, the rest go to torch inside each tile.
    None keeps torch's setting and runs tiles in turn.
    """
    if threads is None:
        return 1, None
    if threads < 1:
        raise ValueError("threads must be at least 1")
    if not len(work) or float(np.median(work)) < _SMALL_TILE_WORK:
        return 1, 1
    workers = max(1, min(int(threads), len(work)))
    return workers, max(1, int(threads) // workers)


def _check_engine(bundle: Bundle, engine: str | None) -> str:
    if engine is None:
        engine = "numpy" if bundle.packed else "torch"
    if engine not in ("numpy", "torch"):
        raise ValueError(f"engine must be 'numpy' or 'torch', got {engine!r}")
    return engine


def _output_layout(bundle: Bundle, target: xr.Dataset, strand_ambiguous: StrandPolicy, where: str
                   ) -> tuple[VariantMapping, set[str], np.ndarray, np.ndarray]:
    """Check the target and map it; the output is the bundle variants on the contigs it covers.

    Returns the mapping, the covered bundle contigs, the bundle rows of the output variants
    (``keep``) and, per bundle variant, its output row or -1 (``local``).
    """
    variables.validate(target, ["call_genotype", "variant_position", "variant_allele", "sample_id"])
    if target.sizes["ploidy"] != 2:
        raise InputFormatError(where, f"ploidy {target.sizes['ploidy']}; the autoencoder imputes diploid genotypes")
    if target.sizes["samples"] == 0:
        raise InputFormatError(where, "no samples to impute")
    mapping = map_variants(bundle, target, strand_ambiguous=strand_ambiguous, source=where)
    return (mapping, *_covered_variants(bundle, mapping))


def _covered_variants(bundle: Bundle, mapping: VariantMapping) -> tuple[set[str], np.ndarray, np.ndarray]:
    """Bundle contigs the input covers, the bundle rows on them (``keep``), each row's output index."""
    contig_of = bundle._variant("contig")
    covered = set(contig_of[mapping.bundle_index].tolist())
    keep = np.flatnonzero(np.isin(contig_of, list(covered)))
    local = np.full(len(contig_of), -1, dtype=np.int64)
    local[keep] = np.arange(len(keep))
    return covered, keep, local


def _tiles_on(bundle: Bundle, covered: set[str]) -> list[int]:
    """Rows of the bundle's tiles on the ``covered`` contigs: every tile that adds to the output."""
    tile_contig = bundle._tile("contig")
    return [row for row in range(len(bundle.members)) if tile_contig[row] in covered]


def impute_dataset(
    bundle: Bundle | str | os.PathLike[str],
    target: xr.Dataset,
    *,
    threads: int | None = 1,
    strand_ambiguous: StrandPolicy = "keep",
    batch_size: int = 4096,
    source: str | os.PathLike[str] | None = None,
    engine: Literal["numpy", "torch"] | None = None,
) -> xr.Dataset:
    """Impute a target dataset to every variant of a bundle.

    Typed input genotypes are mapped onto the bundle (:func:`map_variants`), encoded as allele
    presence (untyped and missing calls as [0, 0]), and each tile's model runs once on all
    samples (batches of ``batch_size``; NumPy or torch, see ``engine``). A variant in several
    tiles takes their weighted mean (:data:`OVERLAP_RULE`); decoded probabilities are normalised
    (:func:`~analysislib.genotype.encoding.genotype_probabilities_from_presence`). Observed
    genotypes are passed through as hard calls (GP one-hot, integer DS, input phase kept).

    Parameters
    ----------
    bundle
        A :class:`Bundle` or its folder.
    target
        Genotype dataset (diploid, biallelic).
    threads
        CPU threads for inference (None: the engine's current setting, tiles in turn). Large
        tiles run side by side on ``threads`` threads, each with one engine thread (with fewer
        tiles than threads the remainder goes to the engine inside each tile: torch threads, or
        BLAS threads through ``threadpoolctl``); small tiles, whose cost is per-tile overhead,
        run in turn on one thread (see :func:`_thread_split`).
    strand_ambiguous
        See :func:`map_variants`.
    batch_size
        Samples per forward pass.
    source
        File named in error messages.
    engine
        ``"numpy"`` runs the bundle's packed weights without torch (default when the bundle has
        them), ``"torch"`` the per-tile ``.pt`` files (default for bundles written before packed
        weights existed). See :meth:`Bundle.predict`.

    Returns
    -------
    xarray.Dataset
        Every bundle variant on the contigs the input covers (genome order) by every target
        sample, with ``call_genotype``,
        ``call_genotype_phased`` (True only for typed calls that were phased),
        ``call_dosage`` and ``call_genotype_probability``; contigs named as in the input.
        Attributes: ``variant_mapping`` (:meth:`VariantMapping.to_dict` as JSON),
        ``tiles_imputed`` and ``tiles_without_typed_variants`` (tiles imputed from the model's
        prior alone, e.g. where an array has a gap).
    """
    from analysislib.genotype.dataset import create_genotype_dataset
    from analysislib.genotype.encoding import allele_presence, genotype_probabilities_from_presence

    bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    engine = _check_engine(bundle, engine)
    where = str(source or target.attrs.get("source") or "target dataset")
    mapping, covered, keep, local = _output_layout(bundle, target, strand_ambiguous, where)
    n_samples = target.sizes["samples"]
    n_out = len(keep)

    gt_in = np.asarray(target["call_genotype"].values, dtype=np.int8)[mapping.input_index]
    gt_in = np.where(mapping.flip[:, None, None] & (gt_in >= 0), 1 - gt_in, gt_in).astype(np.int8)
    typed = np.full((n_out, n_samples, 2), -1, dtype=np.int8)
    typed[local[mapping.bundle_index]] = gt_in
    phased_in = (np.asarray(target["call_genotype_phased"].values, dtype=bool)[mapping.input_index]
                 if "call_genotype_phased" in target else np.zeros(gt_in.shape[:2], dtype=bool))
    presence = allele_presence(typed).reshape(n_samples, n_out, 2)
    called = (typed >= 0).all(axis=2)

    needed = _tiles_on(bundle, covered)
    untyped_tiles = sum(not called[local[bundle.members[row]]].any() for row in needed)
    weights = bundle.overlap_weights()
    tiles = [(row, local[bundle.members[row]], np.arange(len(weights[row])), local[bundle.members[row]],
              weights[row]) for row in needed]
    # sigmoid outputs, allele presence
    raw = _run_tiles(bundle, tiles, presence, n_out, engine=engine, threads=threads, batch_size=batch_size,
                     **_work_needed(typed, np.arange(n_out)))
    gp = np.empty((n_out, n_samples, 3), dtype=np.float32)
    for start in range(0, n_out, _DECODE_BLOCK):  # bounded float64 temporaries
        block = raw[:, start:start + _DECODE_BLOCK]
        gp[start:start + block.shape[1]] = genotype_probabilities_from_presence(
            block.reshape(n_samples, -1)).transpose(1, 0, 2)

    hard = (typed > 0).sum(axis=2)
    gp[called] = np.eye(3, dtype=np.float32)[hard[called]]
    dosage = (gp[..., 1] + 2 * gp[..., 2]).astype(np.float32)
    best = gp.argmax(axis=2)
    genotypes = np.stack([best == 2, best >= 1], axis=2).astype(np.int8)
    genotypes[called] = typed[called]
    phased = np.zeros((n_out, n_samples), dtype=bool)
    phased[local[mapping.bundle_index]] = phased_in
    phased &= called

    variants = {name: values[keep] for name, values in bundle._columns("variants").items()}
    names = [c for c in bundle.contigs if c in covered]
    inverse = {dst: src for src, dst in mapping.contig_map.items()}
    code_of = {c: i for i, c in enumerate(names)}
    codes = np.fromiter((code_of.get(c, -1) for c in variants["contig"].tolist()), dtype=np.int32,
                        count=len(keep))
    alleles = np.stack([np.asarray(variants["ref"], dtype=object), np.asarray(variants["alt"], dtype=object)],
                       axis=1)
    lengths = bundle.contig_lengths
    attrs: dict[str, Any] = {"source": f"dae imputation of {where}",
                             "variant_mapping": json.dumps(mapping.to_dict()),
                             "tiles_imputed": len(needed), "tiles_without_typed_variants": int(untyped_tiles)}
    if lengths and all(c in lengths for c in names):
        attrs["contig_lengths"] = [lengths[c] for c in names]
    return create_genotype_dataset(
        contigs=[inverse.get(c, c) for c in names], variant_contig=codes,
        variant_position=np.asarray(variants["pos"], dtype=np.int64), variant_allele=alleles,
        variant_id=np.asarray(variants["id"], dtype=object),
        sample_id=np.asarray(target["sample_id"].values, dtype=object), call_genotype=genotypes,
        call_genotype_phased=phased,
        sample_population=(np.asarray(target["sample_population"].values, dtype=object)
                           if "sample_population" in target else None),
        call_dosage=dosage, call_genotype_probability=gp, attrs=attrs)


# --------------------------------------------------------------------------------------------
# Streamed VCF-to-VCF imputation: region chunks by sample batches
# --------------------------------------------------------------------------------------------

#: Default samples per batch of :func:`impute_vcf` (``analysislib impute --batch-samples``).
DEFAULT_BATCH_SAMPLES = 1000
#: Output genotypes (variants x samples) per region chunk of :func:`impute_vcf`: a chunk's
#: text (about 20 bytes a genotype) is held until it is written.
CHUNK_GENOTYPES = 2**22


@dataclass(frozen=True)
class StreamPlan:
    """How :func:`impute_vcf` cuts its work: region chunks of output variants, sample batches.

    Chunks are runs of output variants ``[start, stop)`` that end where the variants' primary
    tile changes (:data:`OVERLAP_RULE`), so that few tiles reach into two chunks; one that does
    runs in both and adds to each chunk's variants only. Within a chunk the samples go
    ``batch_samples`` at a time through the models and the text formatter; the chunk's text is
    then written and dropped.
    """

    n_samples: int
    batch_samples: int
    chunks: tuple[tuple[int, int], ...]

    @property
    def max_chunk_variants(self) -> int:
        """Output variants of the largest chunk."""
        return max((stop - start for start, stop in self.chunks), default=0)

    @property
    def genotypes_held(self) -> int:
        """Output genotypes held at once as text (the largest chunk, every sample)."""
        return self.max_chunk_variants * self.n_samples

    @property
    def batch_genotypes(self) -> int:
        """Genotypes decoded at once in floating point (the largest chunk, one sample batch)."""
        return self.max_chunk_variants * min(self.batch_samples, self.n_samples)


def plan_stream(supplier: Sequence[int], n_samples: int, *, batch_samples: int = DEFAULT_BATCH_SAMPLES,
                chunk_genotypes: int = CHUNK_GENOTYPES) -> StreamPlan:
    """Cut output variants into region chunks of about ``chunk_genotypes`` genotypes.

    Parameters
    ----------
    supplier
        Per output variant (genome order), its primary tile row (:data:`OVERLAP_RULE`): chunks
        end where it changes.
    n_samples
        Target samples.
    batch_samples
        Samples per batch.
    chunk_genotypes
        Variants x samples per chunk; a chunk holds at least one tile's variants.
    """
    if batch_samples < 1 or chunk_genotypes < 1 or n_samples < 1:
        raise ValueError("batch_samples, chunk_genotypes and n_samples must be at least 1")
    supplier = np.asarray(supplier)
    ends = np.r_[np.flatnonzero(np.diff(supplier) != 0) + 1, len(supplier)] if len(supplier) else []
    target = max(1, chunk_genotypes // n_samples)
    chunks, start, last = [], 0, 0
    for end in ends:
        if end - start > target and last > start:
            chunks.append((start, last))
            start = last
        last = int(end)
    if last > start:
        chunks.append((start, last))
    return StreamPlan(int(n_samples), int(batch_samples), tuple(chunks))


#: A tile's part in a region chunk (or in the whole output, :func:`impute_dataset`): tile row,
#: its inputs' rows in the chunk's span, the positions in its output that the chunk's variants
#: take (``sources``), where they go in the chunk (``targets``) and their :data:`OVERLAP_RULE`
#: weights.
_ChunkTile = tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@dataclass
class _ChunkWork:
    """One region chunk: its record prefixes, its tiles and the typed genotypes they read.

    ``typed``/``phased`` cover output rows ``span_start`` onwards (every sample), enough for
    each tile's inputs; ``tiles`` lists every tile holding a variant of ``[start, stop)``
    (:data:`_ChunkTile`).
    """

    start: int
    stop: int
    span_start: int
    prefixes: list[bytes]
    tiles: list[_ChunkTile]
    typed: np.ndarray  # int8 (span, samples, 2), -1 untyped
    phased: np.ndarray  # bool (span, samples)


def _chunk_work(bundle: Bundle, chunk: tuple[int, int], local: np.ndarray,
                typed_rows: np.ndarray, typed_in: np.ndarray, phased_in: np.ndarray,
                prefixes: list[bytes]) -> _ChunkWork:
    """Gather what :func:`_impute_chunk` needs for output variants ``chunk`` (driver side).

    Every tile holding a variant of the chunk runs, in tile order; a tile that reaches past the
    chunk's ends reads its whole input but adds only to the chunk's variants.
    """
    start, stop = chunk
    weights = bundle.overlap_weights()
    rows, members = [], []
    for row, variants in enumerate(bundle.members):
        member = local[variants]
        if ((member >= start) & (member < stop)).any():
            rows.append(row)
            members.append(member)
    lo = min(int(m.min()) for m in members)
    hi = max(int(m.max()) for m in members) + 1
    tiles = []
    for row, member in zip(rows, members, strict=True):
        sources = np.flatnonzero((member >= start) & (member < stop))
        tiles.append((row, member - lo, sources, member[sources] - start, weights[row][sources]))
    inside = (typed_rows >= lo) & (typed_rows < hi)
    n_samples = typed_in.shape[1]
    typed = np.full((hi - lo, n_samples, 2), -1, dtype=np.int8)
    typed[typed_rows[inside] - lo] = typed_in[inside]
    phased = np.zeros((hi - lo, n_samples), dtype=bool)
    phased[typed_rows[inside] - lo] = phased_in[inside]
    return _ChunkWork(start, stop, lo, prefixes[start:stop], tiles, typed, phased)


def _work_needed(calls: np.ndarray, out_rows: np.ndarray) -> dict[str, np.ndarray]:
    """The ``typed`` and ``wanted`` masks of :func:`_run_tiles` from every sample's input calls.

    ``calls`` are int8 ``(span, samples, 2)`` (-1 where uncalled) and ``out_rows`` the span row
    of each output variant.
    """
    known = calls >= 0
    return {"typed": known.any(axis=(1, 2)), "wanted": ~known[out_rows].all(axis=(1, 2))}


def _run_tiles(bundle: Bundle, tiles: list[_ChunkTile], presence: np.ndarray, n_var: int, *, engine: str,
               threads: int | None, typed: np.ndarray, wanted: np.ndarray,
               batch_size: int = 4096) -> np.ndarray:
    """Sigmoid outputs ``(samples, n_var, 2)`` of ``tiles`` for presence ``(samples, span, 2)``.

    Tiles run side by side on threads (:func:`_thread_split`) and are summed with their
    :data:`OVERLAP_RULE` weights in the order given, so the sums are the same on any thread
    count. Used for a whole dataset (:func:`impute_dataset`) and for region chunks.

    Only the work that can change the result is done (:meth:`Bundle.predict`'s ``inputs`` and
    ``outputs``): a tile's first layer reads only its members that are ``typed`` (per span row:
    some sample has a call there; elsewhere every input is 0), and outputs are computed only
    for ``wanted`` variants (per output variant: some sample lacks a call; the others are all
    replaced by the input calls and stay 0 here). Both masks are properties of the whole
    input, not of a sample batch, so every batching does the same arithmetic.
    """
    size = presence.shape[0]
    raw = np.zeros((size, n_var, 2), dtype=np.float32)
    plans = []  # per tile: its typed members, their input columns, wanted outputs and where they go
    for row, inputs, sources, targets, weight in tiles:
        keep_in = typed[inputs]
        keep_out = wanted[targets]
        chosen = sources[keep_out]
        plans.append((row, inputs[keep_in], np.flatnonzero(np.repeat(keep_in, 2)),
                      np.stack([2 * chosen, 2 * chosen + 1], axis=1).ravel(), targets[keep_out],
                      weight[keep_out]))
    plans = [plan for plan in plans if len(plan[4])]  # tiles with nothing wanted do not run

    def run_tile(plan: tuple[Any, ...]) -> np.ndarray:
        row, members, in_cols, out_cols = plan[:4]
        return bundle.predict(row, presence[:, members].reshape(size, -1), batch_size=batch_size,
                              engine=engine, inputs=in_cols, outputs=out_cols)

    workers, per_worker = _thread_split(threads, [size * 2 * len(t[1]) ** 2 for t in tiles])
    with _engine_threads(engine, per_worker), concurrent.futures.ThreadPoolExecutor(workers) as pool:
        outputs = map(run_tile, plans) if workers == 1 else pool.map(run_tile, plans)
        for (*_, targets, weight), out in zip(plans, outputs, strict=True):
            raw[:, targets] += weight[:, None] * out.reshape(size, -1, 2)
    return raw


def _impute_chunk(bundle: Bundle, work: _ChunkWork, *, batch_samples: int, engine: str,
                  threads: int | None, decimals: int) -> bytes:
    """The VCF record lines (GT:DS:GP) of one region chunk, samples ``batch_samples`` at a time.

    Per sample the numbers are those of :func:`impute_dataset` followed by
    :func:`~analysislib.io.vcf.write_vcf`: the same decoding, hard calls for typed genotypes,
    GP normalisation and rounding.
    """
    from analysislib.genotype.encoding import allele_presence

    n_var = work.stop - work.start
    rows_out = np.arange(work.start, work.stop) - work.span_start  # chunk variants in the span
    n_samples = work.typed.shape[1]
    span = work.typed.shape[0]
    needed = _work_needed(work.typed, rows_out)
    columns: list[list[bytes]] = []
    for first in range(0, n_samples, batch_samples):
        last = min(first + batch_samples, n_samples)
        size = last - first
        batch = work.typed[:, first:last]
        presence = allele_presence(batch).reshape(size, span, 2)
        raw = _run_tiles(bundle, work.tiles, presence, n_var, engine=engine, threads=threads, **needed)
        lines: list[bytes] = []
        step = max(1, _FORMAT_BLOCK_CALLS // size)  # variants decoded and formatted at a time
        for start in range(0, n_var, step):
            block = slice(start, min(start + step, n_var))
            lines += _decode_and_format(raw[:, block], batch[rows_out[block]],
                                        work.phased[rows_out[block], first:last], decimals,
                                        line_end=last == n_samples)
        columns.append(lines)
    if len(columns) == 1:
        return b"".join(prefix + text for prefix, text in zip(work.prefixes, columns[0], strict=True))
    return b"".join(prefix + b"".join(texts) for prefix, *texts in zip(work.prefixes, *columns, strict=True))


_FORMAT_BLOCK_CALLS = 2**16  # calls decoded and formatted at a time (temporaries stay in cache)


def _decode_and_format(raw: np.ndarray, typed: np.ndarray, phased: np.ndarray, decimals: int, *,
                       line_end: bool) -> list[bytes]:
    """Sample columns of some variants as text, one bytes object per variant.

    ``raw`` holds the sigmoid outputs ``(samples, variants, 2)``, ``typed`` the input calls
    ``(variants, samples, 2)`` (-1 untyped) and ``phased`` their phase. The numbers are those of
    :func:`impute_dataset` followed by :func:`~analysislib.io.vcf.write_vcf`: normalised
    probabilities, hard calls for typed genotypes, DS in float32, GP renormalised in float64.
    """
    from analysislib.genotype.encoding import genotype_probabilities_from_presence
    from analysislib.io.vcf import _format_calls, _normalise_gp

    size = raw.shape[0]
    gp = genotype_probabilities_from_presence(raw.reshape(size, -1)).transpose(1, 0, 2).astype(np.float32)
    called = (typed[..., 0] >= 0) & (typed[..., 1] >= 0)
    alt_count = (typed[..., 0] > 0).astype(np.int8) + (typed[..., 1] > 0)
    gp[called] = np.eye(3, dtype=np.float32)[alt_count[called]]
    dosage = (gp[..., 1] + 2 * gp[..., 2]).astype(np.float32)
    # Best guess = gp.argmax(axis=2) (ties to the lower genotype), as comparisons: faster than
    # a reduction over the length-3 axis.
    genotypes = np.empty(typed.shape, dtype=np.int8)
    genotypes[..., 0] = (gp[..., 2] > gp[..., 0]) & (gp[..., 2] > gp[..., 1])  # 1/1
    genotypes[..., 1] = (gp[..., 1] > gp[..., 0]) | (gp[..., 2] > gp[..., 0])  # not 0/0
    genotypes[called] = typed[called]
    text, lengths = _format_calls(genotypes, phased & called, dosage.astype(np.float64),
                                  _normalise_gp(gp.astype(np.float64)), decimals, 1, line_end=line_end)
    ends = np.cumsum(lengths).tolist()
    flat = text.tobytes()
    return [flat[e - n:e] for e, n in zip(ends, lengths.tolist(), strict=True)]


_worker_bundles: dict[tuple[str, bool], Bundle] = {}
_worker_lock = threading.Lock()


def _impute_chunk_on_worker(bundle_path: str, verify: bool, work: _ChunkWork, **settings: Any) -> bytes:
    """:func:`_impute_chunk` on a dask worker: the bundle is loaded once per worker process."""
    with _worker_lock:
        key = (bundle_path, verify)
        if key not in _worker_bundles:
            _worker_bundles[key] = load_bundle(bundle_path, verify=verify)
    return _impute_chunk(_worker_bundles[key], work, **settings)


def _record_prefixes(bundle: Bundle, keep: np.ndarray, contig_names: Mapping[str, str]) -> list[bytes]:
    """CHROM..FORMAT columns of every output record, as :func:`~analysislib.io.vcf.write_vcf` writes them."""
    column = bundle._variant
    return [f"{contig_names[c]}\t{p}\t{i or '.'}\t{r}\t{a or '.'}\t.\t.\t.\tGT:DS:GP\t".encode()
            for c, p, i, r, a in zip(column("contig")[keep].tolist(), column("pos")[keep].tolist(),
                                     column("id")[keep].tolist(), column("ref")[keep].tolist(),
                                     column("alt")[keep].tolist(), strict=True)]


def _ordered_results(works: Iterator[_ChunkWork], compute: Any, client: Any, bundle: Bundle, verify: bool,
                     window: int, settings: dict[str, Any]) -> Iterator[bytes]:
    """Each chunk's text in chunk order: computed here, or on ``client`` with ``window`` in flight.

    Here, with ``settings["threads"]`` above 1 and the NumPy engine, chunks run side by side on that many threads
    (NumPy releases the GIL in its array operations). The engine's thread limit is process-wide,
    so it is set to one thread once around them, not per chunk.
    """
    threads = settings.get("threads") or 1
    if client is None and (threads == 1 or settings["engine"] != "numpy"):  # torch threads inside
        for work in works:
            yield compute(work)
        return
    if client is None:
        as_set = {**settings, "threads": None}  # tiles in turn, at the limit set here
        with _engine_threads(settings["engine"], 1), concurrent.futures.ThreadPoolExecutor(threads) as pool:
            running: list[concurrent.futures.Future[bytes]] = []
            try:
                for work in works:
                    running.append(pool.submit(_impute_chunk, bundle, work, **as_set))
                    if len(running) >= 2 * threads:
                        yield running.pop(0).result()
                while running:
                    yield running.pop(0).result()
            finally:
                for future in running:
                    future.cancel()
        return
    pending: list[Any] = []
    try:
        for work in works:
            pending.append(client.submit(_impute_chunk_on_worker, str(bundle.path), verify, work,
                                         pure=False, **settings))
            if len(pending) >= window:
                yield pending.pop(0).result()
        while pending:
            yield pending.pop(0).result()
    finally:
        if pending:
            client.cancel(pending)


@dataclass
class ImputeReport:
    """What :func:`impute_vcf` did: output file, variant mapping and time per stage (seconds)."""

    output: Path
    mapping: VariantMapping
    n_samples: int
    n_variants: int
    n_tiles: int
    n_tiles_untyped: int
    threads: int
    seconds: dict[str, float]
    plan: StreamPlan | None = None

    def summary(self) -> str:
        """Lines for the command line."""
        s = self.seconds
        return "\n".join([
            (f"wrote {self.output}: {self.n_variants} variants x {self.n_samples} samples from "
             f"{self.n_tiles} tiles ({self.threads} thread{'s' if self.threads != 1 else ''})"),
            self.mapping.summary(),
            *([f"  {self.n_tiles_untyped} tiles had no typed variant (imputed from the model alone)"]
              if self.n_tiles_untyped else []),
            *([(f"  {len(self.plan.chunks)} region chunks, samples in batches of "
               f"{min(self.plan.batch_samples, self.n_samples)}")] if self.plan is not None else []),
            "time: " + ", ".join(f"{k} {v:.2f} s" for k, v in s.items()),
        ])


def _refuse_output_is_input(in_vcf: str | os.PathLike[str], out_vcf: str | os.PathLike[str]) -> None:
    """Raise ValueError if writing ``out_vcf`` would replace ``in_vcf``.

    Compares resolved paths (symbolic links, ``..``) and, when both exist, file identity
    (device and inode: hard links, bind mounts).
    """
    source, target = Path(in_vcf), Path(out_vcf)
    same = source.resolve() == target.resolve()
    if not same and source.exists() and target.exists():
        same = os.path.samefile(source, target)
    if same:
        raise ValueError(
            f"{out_vcf}: the output is the input file {in_vcf} (the same file); writing it "
            "would replace the input, so choose another output path")


def impute_vcf(
    bundle: Bundle | str | os.PathLike[str],
    in_vcf: str | os.PathLike[str],
    out_vcf: str | os.PathLike[str],
    *,
    threads: int = 1,
    strand_ambiguous: StrandPolicy = "keep",
    verify: bool = True,
    decimals: int = 3,
    compress_level: int = 1,
    engine: Literal["numpy", "torch"] | None = None,
    batch_samples: int = DEFAULT_BATCH_SAMPLES,
    chunk_genotypes: int = CHUNK_GENOTYPES,
    client: Any = None,
) -> ImputeReport:
    """Impute a VCF/BCF file with a model bundle and write GT:DS:GP as bgzipped, indexed VCF.

    The output is streamed: region chunks of about ``chunk_genotypes`` output genotypes are
    imputed ``batch_samples`` samples at a time, formatted and written before the next chunk
    starts (:func:`plan_stream`), so the memory for outputs is bounded by the chunk, not the
    cohort. The typed input genotypes (2 bytes each) are read whole. The text is the same as
    ``write_vcf(impute_dataset(...))`` writes, whatever the batch and chunk sizes.

    Parameters
    ----------
    bundle
        A :class:`Bundle` or its folder (loaded with ``verify``).
    in_vcf
        Target genotypes (VCF, bgzipped VCF or BCF). Multi-allelic records are split.
    out_vcf
        Output path (``.vcf.gz`` gets a ``.tbi``, ``.bcf`` a ``.csi``); written atomically: on
        any failure no output (or the previous file) is left.
    threads
        CPU threads for inference (see :func:`impute_dataset`).
    strand_ambiguous
        See :func:`map_variants`.
    verify
        Check every bundle file's sha256 when loading from a folder.
    decimals, compress_level
        Passed to :func:`~analysislib.io.vcf.write_vcf`. Level 1 (default) deflates with ISA-L,
        about 10x faster than htslib's default 6 for a file about 15% larger; ``bcftools view
        -Oz`` recompresses it if size matters. ``threads`` blocks are compressed at once.
    engine
        See :func:`impute_dataset` (default: NumPy when the bundle has packed weights).
    batch_samples
        Samples per batch through the models and the formatter.
    chunk_genotypes
        Output variants x samples per region chunk.
    client
        A ``dask.distributed`` client: chunks are imputed on its workers (each loads the
        bundle from its folder once, so the folder must be reachable from the workers) and
        written here in order, a few chunks in flight.

    Returns
    -------
    ImputeReport

    Raises
    ------
    ValueError
        ``out_vcf`` is ``in_vcf`` (by path or by identity, e.g. a hard link): nothing is read
        or written.
    """
    from analysislib.io.vcf import header_text, read_vcf_arrays, records_output

    _refuse_output_is_input(in_vcf, out_vcf)
    if batch_samples < 1:
        raise ValueError("batch_samples must be at least 1")
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle, verify=verify)
    engine = _check_engine(bundle, engine)
    seconds["load bundle"] = time.perf_counter() - started
    mark = time.perf_counter()
    target = read_vcf_arrays(in_vcf, multiallelic="split", fields=("GT",))  # no xarray, no dask
    seconds["read"] = time.perf_counter() - mark
    mark = time.perf_counter()
    where = str(in_vcf)
    n_samples = len(target.sample_id)
    if target.call_genotype.shape[2] != 2:
        raise InputFormatError(where, f"ploidy {target.call_genotype.shape[2]}; the autoencoder imputes "
                               "diploid genotypes")
    if n_samples == 0:
        raise InputFormatError(where, "no samples to impute")
    contigs = np.asarray(target.contigs, dtype=object)
    mapping = _map_sites(bundle, contigs[target.variant_contig].astype(str), target.variant_position,
                         target.variant_allele,
                         dict(zip(target.contigs, target.attrs.get("contig_lengths") or [], strict=False)),
                         strand_ambiguous=strand_ambiguous, where=where)
    covered, keep, local = _covered_variants(bundle, mapping)
    typed_in = target.call_genotype[mapping.input_index]
    typed_in = np.where(mapping.flip[:, None, None] & (typed_in >= 0), 1 - typed_in, typed_in).astype(np.int8)
    phased_in = target.call_genotype_phased[mapping.input_index]
    typed_rows = local[mapping.bundle_index]
    sample_ids = target.sample_id
    del target
    names = [c for c in bundle.contigs if c in covered]
    inverse = {dst: src for src, dst in mapping.contig_map.items()}
    contig_names = {c: inverse.get(c, c) for c in names}
    lengths = bundle.contig_lengths
    header = header_text([contig_names[c] for c in names],
                         [lengths[c] for c in names] if lengths and all(c in lengths for c in names) else None,
                         ("GT", "DS", "GP"), sample_ids)
    prefixes = _record_prefixes(bundle, keep, contig_names)
    if threads > 1 and client is None and engine == "numpy":  # a chunk per thread (_ordered_results)
        chunk_genotypes = min(chunk_genotypes, max(1, len(keep) * n_samples // threads))
    supplier = bundle._variant("tile")[keep]
    plan = plan_stream(supplier, n_samples, batch_samples=batch_samples, chunk_genotypes=chunk_genotypes)
    needed = _tiles_on(bundle, covered)
    typed_out = np.zeros(len(keep), dtype=bool)
    typed_out[typed_rows] = True
    untyped_tiles = sum(not typed_out[local[bundle.members[row]]].any() for row in needed)
    settings = {"batch_samples": batch_samples, "engine": engine, "threads": threads, "decimals": decimals}
    works = (_chunk_work(bundle, chunk, local, typed_rows, typed_in, phased_in, prefixes)
             for chunk in plan.chunks)
    window = 2 * max(1, len(client.nthreads())) if client is not None else 1
    results = _ordered_results(works, lambda work: _impute_chunk(bundle, work, **settings), client,
                               bundle, verify, window, settings)
    seconds["impute"] = seconds["write"] = 0.0
    with records_output(out_vcf, header, compress_level=compress_level, threads=threads) as write:
        for _ in plan.chunks:
            text = next(results)
            now = time.perf_counter()
            seconds["impute"] += now - mark
            write(text)
            mark = time.perf_counter()
            seconds["write"] += mark - now
    now = time.perf_counter()
    seconds["write"] += now - mark  # bgzf end and index
    seconds["total"] = now - started
    return ImputeReport(Path(out_vcf), mapping, n_samples, len(keep), len(needed), int(untyped_tiles),
                        threads, seconds, plan)


# --------------------------------------------------------------------------------------------
# The GenotypeImputer
# --------------------------------------------------------------------------------------------


class DAEImputer(GenotypeImputer):
    """Dias et al. (2022) autoencoders behind the common imputer interface (name ``"dae"``).

    ``fit`` tiles the reference panel (:func:`~analysislib.tiling.tile_genome`), trains a bundle
    with :func:`train_bundle` and loads it; with ``bundle=`` it loads an existing bundle
    instead. ``impute`` runs :func:`impute_dataset` and returns the reference variants in panel
    order.

    Parameters
    ----------
    bundle
        Folder of a trained bundle to use instead of training.
    bundle_dir
        Where to write the trained bundle (None: a temporary folder removed with the imputer).
    preset
        ``"quick"``, ``"standard"`` or ``"full"`` (:data:`DAE_PRESETS`): default epochs, hyperparameter
        overrides and tiling.
    epochs
        Epochs per tile (overrides the preset; None in the ``full`` preset means up to
        ``max_epochs`` with early stopping).
    hparams
        :class:`~analysislib.genotype.autoencoder.DAEHyperparameters` (used as given), a
        mapping of their fields (applied over the preset's), or a per-tile mapping (see
        :func:`train_bundle`).
    tiling
        :func:`~analysislib.tiling.tile_genome` arguments (override the preset's).
    n_jobs, tiles_per_task, client, validation_fraction, device
        Passed to :func:`train_bundle`.
    threads
        CPU threads for inference (see :func:`impute_dataset`) and torch threads when
        training with ``n_jobs=1``.
    strand_ambiguous
        See :func:`map_variants`.
    progress
        Progress bar while training.
    name
        Method name recorded with results (default ``"dae"``); e.g. ``"dae_tuned"`` for
        per-tile hyperparameters from :mod:`analysislib.genotype.tuning`, so untuned and
        tuned runs are stored as separate methods.
    models_per_tile
        Independently seeded models per tile, averaged at inference (None: the preset's; see
        :func:`train_bundle`).
    """

    name = "dae"

    def __init__(
        self,
        *,
        bundle: str | os.PathLike[str] | None = None,
        bundle_dir: str | os.PathLike[str] | None = None,
        preset: str = "quick",
        epochs: int | None = None,
        hparams: Any = None,
        tiling: Mapping[str, Any] | None = None,
        n_jobs: int = 1,
        tiles_per_task: int | None = None,
        client: Any = None,
        threads: int = 1,
        validation_fraction: float = 0.0,
        strand_ambiguous: StrandPolicy = "keep",
        device: str = "cpu",
        progress: bool | None = None,
        name: str = "dae",
        models_per_tile: int | None = None,
    ) -> None:
        super().__init__()
        if not name or not isinstance(name, str):
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        self.name = name
        preset = DAE_PRESETS.canonical(preset)  # PresetError for an unknown name
        _check_settings(hparams, tiling)
        if threads < 1:
            raise ValueError("threads must be at least 1")
        self.bundle_path = None if bundle is None else Path(bundle)
        self.bundle_dir = None if bundle_dir is None else Path(bundle_dir)
        self.preset = preset
        self.epochs = epochs if epochs is not None else DAE_PRESETS[preset]["epochs"]
        if hparams is None or (isinstance(hparams, Mapping) and not _is_per_tile(hparams)):
            hparams = {**DAE_PRESETS[preset]["hparams"], **dict(hparams or {})}
        self.hparams = hparams
        self.tiling = {**DAE_PRESETS[preset]["tiling"], **dict(tiling or {})}
        self.models_per_tile = int(models_per_tile if models_per_tile is not None
                                   else DAE_PRESETS[preset]["models_per_tile"])
        if self.models_per_tile < 1:
            raise ValueError(f"models_per_tile must be at least 1, got {models_per_tile!r}")
        self.n_jobs, self.tiles_per_task, self.client = int(n_jobs), tiles_per_task, client
        self.threads = int(threads)
        self.validation_fraction = float(validation_fraction)
        self.strand_ambiguous = strand_ambiguous
        self.device, self.progress = device, progress
        self.bundle: Bundle | None = None
        self._cleanup: weakref.finalize | None = None
        self._fit_details: dict[str, Any] = {}

    def parameters(self) -> dict[str, Any]:
        """Training and inference settings recorded with results."""
        hp = self.hparams.to_dict() if hasattr(self.hparams, "to_dict") else self.hparams
        per_tile = isinstance(hp, Mapping) and _is_per_tile(hp)
        if per_tile:  # tile -> hyperparameters: recorded in full for small tilings
            hp = ({str(tile): v.to_dict() if hasattr(v, "to_dict") else dict(v) for tile, v in hp.items()}
                  if len(hp) <= 40 else None)
        return {"preset": self.preset, "epochs": self.epochs, "tiling": dict(self.tiling),
                "models_per_tile": self.models_per_tile,
                "hparams": hp if isinstance(hp, Mapping) and (per_tile or len(hp) < 40) else None,
                "hparams_per_tile": per_tile,
                "bundle": None if self.bundle_path is None else str(self.bundle_path),
                "threads": self.threads, "n_jobs": self.n_jobs,
                "strand_ambiguous": self.strand_ambiguous}

    def close(self) -> None:
        """Remove a temporary bundle folder (also done when the imputer is collected)."""
        if self._cleanup is not None:
            self._cleanup()
        self._cleanup = None

    def fit(self, reference: xr.Dataset) -> DAEImputer:
        """Train (or load) the bundle for ``reference``; see the class docstring."""
        from analysislib.tiling import tile_genome

        started = time.perf_counter()
        self.reference = reference
        if self.bundle_path is not None:
            self.bundle = load_bundle(self.bundle_path)
            self._fit_details = {"fit_seconds": time.perf_counter() - started, "trained": False}
            return self
        if self.bundle_dir is None:
            self.close()
            folder = Path(tempfile.mkdtemp(prefix="analysislib-dae-"))
            self._cleanup = weakref.finalize(self, shutil.rmtree, folder, True)
        else:
            folder = self.bundle_dir
        tiling = tile_genome(reference, **self.tiling)
        self.bundle = train_bundle(reference, tiling, self.hparams, folder, epochs=self.epochs,
                                   n_jobs=self.n_jobs, client=self.client,
                                   tiles_per_task=self.tiles_per_task,
                                   threads_per_job=self.threads if self.n_jobs == 1 else None,
                                   validation_fraction=self.validation_fraction, device=self.device,
                                   progress=self.progress, models_per_tile=self.models_per_tile)
        self._fit_details = {"fit_seconds": time.perf_counter() - started, "trained": True,
                             "n_tiles": len(self.bundle.members), "bundle": str(folder)}
        return self

    def impute(self, target: xr.Dataset) -> xr.Dataset:
        """Impute ``target`` to the reference variants (panel order)."""
        if self.bundle is None or self.reference is None:
            raise RuntimeError("call fit(reference) before impute(target)")
        started = time.perf_counter()
        imputed = impute_dataset(self.bundle, target, threads=self.threads,
                                 strand_ambiguous=self.strand_ambiguous)
        want = sites_key(self.reference)
        have = sites_key(imputed)
        if not np.array_equal(want, have):
            index = {key: i for i, key in enumerate(have)}
            missing = [k for k in want if k not in index]
            if missing:
                raise BundleError(self.bundle.path, f"{len(missing)} reference variants are not in the "
                                  f"model bundle, e.g. {missing[0]}")
            imputed = imputed.isel(variants=np.fromiter((index[k] for k in want), dtype=np.int64,
                                                         count=len(want)))
        self.last_run = ImputationRun(
            seconds=time.perf_counter() - started, peak_memory_mb=peak_memory_mb(),
            details={**self._fit_details, "threads": self.threads,
                     "variant_mapping": json.loads(imputed.attrs["variant_mapping"])})
        return imputed
