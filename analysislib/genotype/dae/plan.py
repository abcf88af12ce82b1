"""Training every tile of a panel into a bundle: tile tasks, resume, process pool or dask.

Dias et al. 2022 train one sparse denoising autoencoder per LD tile ("Genome tiling",
"Hyperparameter tuning"). :func:`train_bundle` trains every tile (or an ensemble of models per
tile), several tiles per task (:func:`plan_tile_tasks`), the tasks inline, on a process pool or
on a ``dask.distributed`` cluster (:func:`analysislib.runtime.run_tasks`); it writes each tile
atomically (:func:`~analysislib.genotype.dae.bundle.write_tile`), never retrains a tile whose
files already hold the same variants and hyperparameters, and writes the manifest last. One
tile's model is trained by :func:`~analysislib.genotype.dae.fit.train_tile`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from analysislib import variables
from analysislib.errors import BundleError, InvalidArgumentError, WorkerDiedError
from analysislib.genotype.dae.bundle import (
    TILES_DIR,
    Bundle,
    _read_variants_tsv,
    check_unit,
    load_bundle,
    tile_id_for,
    training_data_summary,
    write_manifest,
    write_tile,
)
from analysislib.genotype.dae.contigs import _contig_length_map, _contig_names
from analysislib.genotype.dae.hyperparameters import DAEHyperparameters, stored_hyperparameters
from analysislib.genotype.encoding import haplotype_rows
from analysislib.genotype.imputer import warn_if_unphased
from analysislib.io.checksum import sha256_of
from analysislib.presets import check_settings
from analysislib.runtime import (
    RunOptions,
    options_from_keywords,
    renamed_keywords,
    run_tasks,
    torch_threads,
)

if TYPE_CHECKING:
    import pandas as pd
    import xarray as xr

__all__ = ["ENSEMBLE_STREAM", "offset_tiles", "plan_tile_tasks", "train_bundle"]

logger = logging.getLogger(__name__)


#: ``derive_seed`` stream of the seeds of a tile's extra ensemble models (``models_per_tile``).
ENSEMBLE_STREAM = 21


def offset_tiles(first: np.ndarray, last: np.ndarray, contigs: np.ndarray, models: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The tiles of each model of a ``models``-member ensemble over tiles ``first``..``last``.

    Model 1 has the tiles as given. Model ``k > 1`` cuts each contig at the points
    ``first[i] + ⌊(k − 1) · size[i] / models⌋`` (tile ``i``'s start moved into it by that share of
    its size): its tile ``i`` runs from tile ``i``'s cut point to just before tile ``i + 1``'s, the
    first from the contig's first tiled variant and the last to its last. Every member covers the
    variants the tiles cover, and with two members a tile edge falls about mid-tile of the other.
    ``contigs`` holds each variant's contig.

    Returns
    -------
    tuple
        ``(first, last, tile, model)``: inclusive variant ranges, the input row each starts in
        and the model number (1-based), ordered by input tile and then model; tiles a cut leaves
        empty are dropped.
    """
    first, last = np.asarray(first, dtype=np.int64), np.asarray(last, dtype=np.int64)
    out: list[tuple[int, int, int, int]] = [(int(a), int(b), row, 1)
                                            for row, (a, b) in enumerate(zip(first, last, strict=True))]
    tile_contigs = np.asarray(contigs)[first]
    for k in range(2, models + 1):
        for contig in dict.fromkeys(tile_contigs.tolist()):
            rows = np.flatnonzero(tile_contigs == contig)
            rows = rows[np.argsort(first[rows], kind="stable")]
            cuts = first[rows] + ((k - 1) * (last[rows] - first[rows] + 1)) // models
            cuts = np.maximum.accumulate(cuts)
            cuts[0] = first[rows[0]]  # the contig's first tiled variant (rows sorted by start)
            ends = np.append(cuts[1:] - 1, last[rows].max())
            out.extend((int(a), int(b), int(row), k)
                       for row, a, b in zip(rows, cuts, ends, strict=True) if b >= a)
    out.sort(key=lambda item: (item[2], item[3]))
    columns = np.array(out, dtype=np.int64).reshape(-1, 4)
    return columns[:, 0], columns[:, 1], columns[:, 2], columns[:, 3]


def _unique_ids(ids: list[str]) -> list[str]:
    """``ids`` with a repeated one (identical spans, rare) suffixed ``_2``, ``_3``, ..."""
    seen: dict[str, int] = {}
    unique = []
    for tile_id in ids:
        seen[tile_id] = seen.get(tile_id, 0) + 1
        unique.append(tile_id if seen[tile_id] == 1 else f"{tile_id}_{seen[tile_id]}")
    return unique


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
        raise InvalidArgumentError("n_workers must be at least 1")
    if tiles_per_task is None:
        tiles_per_task = max(1, math.ceil(n / (4 * n_workers)))
    if tiles_per_task < 1:
        raise InvalidArgumentError("tiles_per_task must be at least 1")
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


def _existing_tile(out: Path, tile_id: str, wanted: pd.DataFrame, hparams: dict[str, Any], *,
                   epochs: int | None, unit: str, untyped: list[int] | None = None) -> dict[str, Any] | None:
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
    training = config.get("training", {})
    if (stored_hyperparameters(config.get("hparams")) != hparams or training.get("epochs_requested") != epochs
            or training.get("unit", "genotype") != unit or training.get("untyped") != untyped):
        raise BundleError(config_path, "this tile was trained with other hyperparameters, epochs, "
                          "training rows (unit) or typed sites; train into a new folder or pass "
                          "resume=False to retrain every tile")
    return {k: config[k] for k in ("id", "contig", "n_variants", "first_position", "last_position",
                                   "weights", "variants", "config")}


def _untyped_flags(item: dict[str, Any]) -> np.ndarray | None:
    """A task item's untyped sites (tile-local indices) as the bool mask ``train_tile`` takes."""
    if item["untyped"] is None:
        return None
    flags = np.zeros(item["last"] - item["first"] + 1, dtype=bool)
    flags[item["untyped"]] = True
    return flags


def _typed_flags(reference: xr.Dataset, typed_sites: Any) -> np.ndarray:
    """Bool per reference variant, true at the sites of ``typed_sites`` (see :func:`train_bundle`)."""
    import xarray as xr

    n_variants = reference.sizes["variants"]
    if isinstance(typed_sites, np.ndarray) and typed_sites.dtype == bool:
        if typed_sites.shape != (n_variants,):
            raise InvalidArgumentError(f"typed_sites as a bool array needs one value per reference variant "
                                       f"({n_variants}), got shape {typed_sites.shape}")
        flags = typed_sites.copy()
    else:
        if isinstance(typed_sites, xr.Dataset):
            variables.validate(typed_sites, ["variant_contig", "variant_position"])
            pairs = zip(_contig_names(typed_sites), np.asarray(typed_sites["variant_position"].values),
                        strict=True)
        else:
            pairs = typed_sites
        try:
            wanted = {(str(contig), int(position)) for contig, position in pairs}
        except (TypeError, ValueError):
            raise InvalidArgumentError("typed_sites must be a bool array over the reference's variants, a "
                                       "genotype Dataset or (contig, position) pairs") from None
        contigs = _contig_names(reference).astype(str)
        positions = np.asarray(reference["variant_position"].values, dtype=np.int64)
        flags = np.fromiter(((c, int(p)) in wanted for c, p in zip(contigs, positions, strict=True)),
                            dtype=bool, count=n_variants)
    if not flags.any():
        raise InvalidArgumentError("none of typed_sites is a site of the reference panel; check the "
                                   "contig names (e.g. 22 against chr22) and the genome build")
    return flags


def _sites_by_contig(contigs: np.ndarray, positions: np.ndarray, flags: np.ndarray) -> dict[str, list[int]]:
    """The flagged sites as contig -> positions (the manifest's ``typed_sites``)."""
    out: dict[str, list[int]] = {}
    for contig, position in zip(contigs[flags], positions[flags], strict=True):
        out.setdefault(str(contig), []).append(int(position))
    return out


def _train_task(task: dict[str, Any]) -> list[dict[str, Any]]:
    """Train the tiles of one task in this process and write them (pool / dask entry point)."""
    from analysislib.genotype.dae.fit import train_tile

    out = Path(task["out_dir"])
    options = task["options"]
    entries = []
    # The task's threads hold for the whole task; inside it train_tile drops to one thread for
    # small batches (its ``threads=None``).
    with torch_threads(options.threads):
        for item in task["items"]:
            hparams = DAEHyperparameters.from_dict(item["hparams"])
            checkpoints = out / "checkpoints" / item["tile_id"]
            started = time.perf_counter()
            try:
                trained = train_tile(item["genotypes"], hparams, epochs=task["epochs"],
                                     validation=item["validation"], checkpoint_dir=checkpoints,
                                     genetic_map=item["genetic_map"], untyped=_untyped_flags(item),
                                     options=options.replace(threads=None))
            except Exception as err:
                raise RuntimeError(f"training tile {item['tile_id']} failed: {type(err).__name__}: {err}") from err
            training = {**trained.summary(), "epochs_requested": task["epochs"], "unit": task["unit"],
                        "untyped": item["untyped"],
                        "seconds": time.perf_counter() - started,
                        "n_reference_samples": int(item["genotypes"].shape[1]),
                        "n_validation_samples": 0 if item["validation"] is None else int(item["validation"].shape[1])}
            training.pop("hyperparameters", None)
            entries.append(write_tile(out, item["tile_id"], trained.model, trained.hparams, item["variants"],
                                      history=trained.history, best_epoch=trained.best_epoch,
                                      training=training))
            shutil.rmtree(checkpoints, ignore_errors=True)
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
            raise InvalidArgumentError(f"the tile table lacks {', '.join(sorted(missing))}")
        return tiles.reset_index(drop=True), None
    raise TypeError("tiles must be a tile table, a Tiling, tile_genome arguments or None")


def _is_per_tile(hparams: Mapping[Any, Any]) -> bool:
    """True for a tile -> hyperparameters mapping, False for a mapping of hyperparameter fields.

    Per tile, every value is a mapping or
    :class:`~analysislib.genotype.dae.hyperparameters.DAEHyperparameters`.
    """
    return bool(hparams) and all(isinstance(v, Mapping | DAEHyperparameters) for v in hparams.values())


def _check_settings(hparams: Any, tiling: Mapping[str, Any] | None) -> None:
    """PresetError now, not at fit, for a hyperparameter or tiling setting that does not exist."""
    import inspect

    from analysislib.tiling import tile_genome

    if isinstance(hparams, Mapping):
        for settings in hparams.values() if _is_per_tile(hparams) else [hparams]:
            if isinstance(settings, Mapping):
                check_settings("autoencoder hyperparameter", settings, set(DAEHyperparameters.__dataclass_fields__))
    if tiling:
        parameters = inspect.signature(tile_genome).parameters
        check_settings("tiling", tiling, {n for n, p in parameters.items() if p.kind == p.KEYWORD_ONLY})


def _hparams_for(hparams: Any, tile_ids: Sequence[str], tile_numbers: Sequence[Any]) -> list[DAEHyperparameters]:
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
                raise InvalidArgumentError(f"no hyperparameters for tile {tile_id} (tile {number}) in the mapping")
        return chosen
    raise TypeError("hparams must be DAEHyperparameters, a mapping of their fields, or a per-tile mapping")


@renamed_keywords(n_jobs="jobs", threads_per_job="threads")
@options_from_keywords("jobs", "client", "threads", "device", "progress")
def train_bundle(  # noqa: PLR0913 - training settings and the targets' sites as keywords
    reference: xr.Dataset,
    tiles: pd.DataFrame | Mapping[str, Any] | Any | None = None,
    hparams: DAEHyperparameters | Mapping[Any, Any] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    epochs: int | None = None,
    tiles_per_task: int | None = None,
    validation_fraction: float = 0.0,
    genome_build: str | None = None,
    resume: bool = True,
    models_per_tile: int = 1,
    unit: str = "genotype",
    typed_sites: Any = None,
    options: RunOptions | None = None,
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
        :class:`~analysislib.genotype.dae.hyperparameters.DAEHyperparameters` for every tile, a
        mapping of their fields, or a per-tile mapping (tile id, tile number from the ``tile``
        column, or its string) to hyperparameters (objects or dicts), for example the picks of
        :mod:`analysislib.genotype.dae.tuning`.
    out_dir
        Bundle folder (created). Required.
    epochs
        Epochs per tile; None trains up to each tile's ``max_epochs`` with early stopping.
    tiles_per_task
        Tiles trained one after another by one task (see :func:`plan_tile_tasks`).
    validation_fraction
        Share of reference samples held out per tile for validation r² in the history
        (0: none; early stopping follows the training loss, as the authors did).
    genome_build
        Build recorded in the manifest; inferred from the panel's contig lengths when None.
    resume
        Keep tiles already in ``out_dir`` whose variants, hyperparameters and epochs match
        (a tile trained differently raises :class:`BundleError`); False retrains all tiles.
    models_per_tile
        Models covering each variant (an ensemble; 1, the default, is one model per tile). Model
        ``k > 1`` is trained on the tiles offset by (k − 1) / ``models_per_tile`` of a tile
        (:func:`offset_tiles`), so that a variant near the edge of its tile sits inside another
        model's; each is stored as a tile of its own with id ``<its span's id>_m<k>``, the
        hyperparameters of the tile it starts in and seed ``derive_seed(seed, ENSEMBLE_STREAM,
        k)``. Inference averages the models by
        :data:`~analysislib.genotype.dae.bundle.OVERLAP_RULE`, which weighs each by the variant's
        distance to its tile's edge.
    unit
        What one training row is (:data:`~analysislib.genotype.dae.bundle.UNITS`):
        ``"genotype"`` (default, the paper's: a sample's unphased genotypes) or ``"haplotype"``
        (each of a sample's two haplotypes a homozygous pseudo-sample, twice the rows; the
        targets' typed calls must then be phased). Recorded in the manifest; inference follows it.
    typed_sites
        The sites the targets will have typed, when known: a bool array over the reference's
        variants, a genotype Dataset (the targets themselves or an array's site list; matched by
        contig and position) or ``(contig, position)`` pairs. Training masks then take the other
        sites first (``train_tile(untyped=...)``), so each network learns the problem it will be
        given. The bundle is then made for that array: on other sites it is less accurate than
        one trained with None (the default, the paper's training for any array). The sites are
        recorded in the manifest (:attr:`Bundle.typed_sites`), and inference reads target calls
        only there.
    options
        Run-time options (:class:`~analysislib.runtime.RunOptions`; None: the defaults).
        ``jobs``: worker processes when no ``client`` is given (1 trains in this process).
        ``client``: a ``dask.distributed.Client`` or a scheduler address; tasks run on its
        workers, which must see ``out_dir`` (shared file system). ``threads``: torch threads of
        each worker (of this process with ``jobs=1``), by default
        :meth:`~analysislib.runtime.RunOptions.threads_per_job`. ``device``: the training
        device. ``progress``: a bar over tiles. The same settings train the same weights under
        any options.

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

    The separate ``jobs``, ``client``, ``threads``, ``device`` and ``progress`` keywords of
    earlier releases (and ``n_jobs``, ``threads_per_job``) are accepted for one release.
    """
    from tqdm.auto import tqdm

    from analysislib.genotype.stats import alt_allele_frequency
    from analysislib.training import progress_enabled

    if out_dir is None:
        raise InvalidArgumentError("out_dir (the bundle folder) is required")
    variables.validate(reference, ["call_genotype", "variant_position", "variant_allele", "variant_contig"])
    if reference.sizes["ploidy"] != 2 or reference.sizes["alleles"] != 2:
        raise InvalidArgumentError("the reference panel must be diploid and biallelic")
    if not 0 <= validation_fraction < 1:
        raise InvalidArgumentError("validation_fraction must be in [0, 1)")
    if check_unit(unit) == "haplotype" and "call_genotype_phased" in reference:
        warn_if_unphased(reference["call_genotype"].values, reference["call_genotype_phased"].values,
                         model="training on haplotype rows",
                         where=reference.attrs.get("source") or "the reference panel")
    options = options if options is not None else RunOptions()
    jobs, client = options.jobs, options.client
    if int(models_per_tile) != models_per_tile or models_per_tile < 1:
        raise InvalidArgumentError(f"models_per_tile must be a positive integer, got {models_per_tile!r}")
    out = Path(out_dir)
    (out / TILES_DIR).mkdir(parents=True, exist_ok=True)
    table, tiling_params = _resolve_tiles(reference, tiles)
    contigs = _contig_names(reference)
    positions = np.asarray(reference["variant_position"].values, dtype=np.int64)
    first = table["first_variant"].to_numpy(dtype=np.int64)
    last = table["last_variant"].to_numpy(dtype=np.int64)
    n_variants = reference.sizes["variants"]
    if len(first) == 0 or first.min() < 0 or last.max() >= n_variants or np.any(last < first):
        raise InvalidArgumentError(f"tile ranges must be non-empty and lie inside [0, {n_variants})")
    spans_contigs = contigs[first] != contigs[last]
    if spans_contigs.any():
        t = int(np.flatnonzero(spans_contigs)[0])
        raise InvalidArgumentError(f"tile {t} spans contigs {contigs[first[t]]} and {contigs[last[t]]}")
    typed = None if typed_sites is None else _typed_flags(reference, typed_sites)
    ids = _unique_ids([tile_id_for(contigs[a], positions[a], positions[b])
                       for a, b in zip(first, last, strict=True)])
    numbers = table["tile"].tolist() if "tile" in table else list(range(len(table)))
    chosen = _hparams_for(hparams, ids, numbers)
    if models_per_tile > 1:  # the ensemble's extra models as tiles of their own, after their tile
        from analysislib.training import derive_seed

        member_first, member_last, base, member = offset_tiles(first, last, contigs, models_per_tile)
        ids = _unique_ids([ids[row] if k == 1 else
                           f"{tile_id_for(contigs[a], positions[a], positions[b])}_m{k}"
                           for row, k, a, b in zip(base, member, member_first, member_last, strict=True)])
        chosen = [chosen[row] if k == 1 else
                  replace(chosen[row], seed=derive_seed(chosen[row].seed, ENSEMBLE_STREAM, int(k)))
                  for row, k in zip(base, member, strict=True)]
        first, last = member_first, member_last

    alt_freq = np.nan_to_num(np.asarray(alt_allele_frequency(reference).values, dtype=np.float64))
    calls = reference["call_genotype"].data  # NumPy or dask: sliced one tile at a time
    genetic_cm = (np.asarray(reference["variant_genetic_position"].values, dtype=np.float64)
                  if "variant_genetic_position" in reference else None)  # for offspring augmentation
    train_samples = np.arange(reference.sizes["samples"])
    val_samples = np.empty(0, dtype=np.int64)
    if validation_fraction > 0:
        from analysislib.genotype.masking import _random_holdout

        n_samples = reference.sizes["samples"]
        n_val = max(1, round(validation_fraction * n_samples))
        train_samples, val_samples = _random_holdout(n_samples, n_val, chosen[0].seed)

    entries: list[dict[str, Any] | None] = [None] * len(ids)
    pending: list[dict[str, Any]] = []
    pending_rows: list[int] = []
    for row, (tile_id, a, b, hp) in enumerate(zip(ids, first, last, chosen, strict=True)):
        variants_table = _tile_variant_table(reference, int(a), int(b), contigs, alt_freq)
        untyped = None if typed is None else np.flatnonzero(~typed[a:b + 1]).tolist()
        if resume:
            entries[row] = _existing_tile(out, tile_id, variants_table, hp.to_dict(), epochs=epochs,
                                          unit=unit, untyped=untyped)
            if entries[row] is not None:
                continue
        pending_rows.append(row)
        pending.append({"tile_id": tile_id, "hparams": hp.to_dict(), "variants": variants_table,
                        "first": int(a), "last": int(b), "untyped": untyped})
    reused = len(ids) - len(pending)
    if reused:
        logger.info("%s: %d of %d tiles already trained; training %d", out, reused, len(ids), len(pending))

    n_workers = jobs if client is None or isinstance(client, str) else max(1, len(client.nthreads()))
    # what each task needs of the options: no client (it does not pickle), no progress bars
    task_options = options.replace(client=None, threads=options.threads_per_job(), progress=False)
    costs = [float(p["last"] - p["first"] + 1) ** 2 * len(train_samples) for p in pending]
    plan = plan_tile_tasks(costs, n_workers, tiles_per_task)
    row_of = {p["tile_id"]: r for p, r in zip(pending, pending_rows, strict=True)}

    def rows(block: np.ndarray) -> np.ndarray:
        """Training rows of a (variants, samples, 2) block: its samples, or their haplotypes."""
        return haplotype_rows(block) if unit == "haplotype" else np.ascontiguousarray(block)

    def make_task(task: list[int]) -> dict[str, Any]:
        """The payload of one task, genotypes included (built only when it is submitted)."""
        items = []
        for i in task:
            spec = pending[i]
            block = np.asarray(calls[spec["first"]:spec["last"] + 1], dtype=np.int8)
            items.append({**spec, "genotypes": rows(block[:, train_samples]),
                          "validation": rows(block[:, val_samples]) if len(val_samples) else None,
                          "genetic_map": None if genetic_cm is None else genetic_cm[spec["first"]:spec["last"] + 1]})
        return {"out_dir": str(out), "epochs": epochs, "unit": unit, "options": task_options, "items": items}

    with contextlib.ExitStack() as stack:
        bar = stack.enter_context(tqdm(total=len(pending), desc="tiles", unit="tile",
                                       disable=not progress_enabled(options.progress)))
        if isinstance(client, str) and plan:
            from distributed import Client

            client = stack.enter_context(Client(client))
        results = (run_tasks(_train_task, map(make_task, plan), jobs=jobs, client=client,
                             window=2 * n_workers) if plan else ())
        try:
            for done in results:
                for entry in done:
                    entries[row_of[entry["id"]]] = entry
                bar.update(len(done))
        except WorkerDiedError as err:
            raise WorkerDiedError(f"{err} (finished tiles are kept; rerun to continue)") from err

    finished = [e for e in entries if e is not None]
    if len(finished) != len(ids):
        raise RuntimeError("some tiles were not trained")  # defensive; run_tasks raises first
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
                   contig_lengths=_contig_length_map(reference), genome_build=genome_build, unit=unit,
                   extra={"training": {"epochs_requested": epochs, "n_tiles": len(ids),
                                       "models_per_tile": int(models_per_tile),
                                       "ensemble_layout": "offset",  # see offset_tiles
                                       "tiles_reused": reused, "tiling": tiling_params},
                          "typed_sites": None if typed is None else _sites_by_contig(contigs, positions, typed)})
    return load_bundle(out)
