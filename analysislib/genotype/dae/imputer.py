"""The ``"dae"`` genotype imputer of the evaluation harness, and its presets (Dias et al. 2022).

:class:`DAEImputer` tiles the reference panel, trains a bundle
(:func:`~analysislib.genotype.dae.plan.train_bundle`) or loads one, and imputes with
:func:`~analysislib.genotype.dae.inference.impute_dataset`; :data:`DAE_PRESETS` name its
training scales.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from analysislib.errors import BundleError, InvalidArgumentError, NotFittedError
from analysislib.genotype.dae.bundle import Bundle, check_unit, load_bundle
from analysislib.genotype.dae.hyperparameters import DAEHyperparameters, masking_for_typed_fraction
from analysislib.genotype.dae.inference import impute_dataset
from analysislib.genotype.dae.mapping import StrandPolicy
from analysislib.genotype.dae.plan import _check_settings, _is_per_tile, _typed_flags, train_bundle
from analysislib.genotype.imputer import GenotypeImputer, ImputationRun, sites_key
from analysislib.presets import Presets
from analysislib.results.provenance import peak_memory_mb
from analysislib.runtime import RunOptions, renamed_keywords

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["DAE_PRESETS", "DAEImputer"]


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
#:   closer still (``typed_fraction``: 57-72 % for one site in three typed) gave 0.756 / 0.598
#:   on these 2,000 SNPs against 0.730 / 0.579 for the presets' 50-90 %, at the cost of
#:   accuracy on sparser arrays, so the presets keep 50-90 % for arrays of any density;
#: * with few samples (450) a full batch at lr 1e-2 replaces tens of Python-bound small steps
#:   per epoch by one, and 2 layers of ratio 1.0 (the width the authors' per-tile search
#:   picked most often, 119 of 256 chr22 tiles) beat 4 layers of ratio 0.5 (0.739 / 0.587
#:   against 0.704 / 0.544 on 100-variant tiles of the first 1,000 SNPs, 1,000 steps);
#: * the authors' de-duplication of training rows discards how often each haplotype occurs,
#:   and tiles of a few dozen variants repeat many (a median of 396 distinct haplotypes among
#:   900 on 53-variant windows): keeping every row raised the full chr22 panel, haplotype
#:   rows, from 0.825 / 0.689 to 0.838 / 0.699 (Minimac4 0.839 / 0.712; 0.831 / 0.689 with one
#:   batch per epoch, for keeping the rows doubles the batches of a 450-sample panel) and a
#:   230-sample panel from 0.844 / 0.695 to 0.853 / 0.701 (one batch per epoch either way).
_FAST_HPARAMS = {"batch_size": 512, "learning_rate": 1e-2, "n_layers": 2, "size_ratio": 1.0,
                 "min_mask": 0.5, "max_mask": 0.9, "deduplicate": False}
DAE_PRESETS: Presets[dict[str, Any]] = Presets("autoencoder", {
    # Two models per tile: on the full chr22 panel (typed 1 in 3) one model gave aggregate / mean
    # per-variant r² 0.753 / 0.603, two 0.760 / 0.611 for twice the training, and two of 200
    # epochs 0.755 / 0.602 (BENCHMARKS.md). Dias et al. train one model per tile. The second model
    # trains on tiles offset by half a tile (train_bundle), so a variant at one model's tile edge
    # is inside the other's: 0.838 / 0.699 -> 0.840 / 0.702 on the full panel, 0.853 / 0.701 ->
    # 0.861 / 0.711 on a 230-sample panel (same training cost).
    "quick": {"epochs": 300, "hparams": {**_FAST_HPARAMS, "cycle_epochs": 100}, "tiling": {"box": 25},
              "models_per_tile": 2},
    # Longer training over-fits at reference-panel sizes of a few hundred: on the same 2,000 SNPs,
    # 1,500 epochs in cycles of 500 gave 0.696 / 0.558 against quick's 0.717 / 0.565, and 0.694 /
    # 0.552 with a 10 % validation split choosing the best cycle by r² (the authors' Optuna
    # objective). What helped was averaging independently seeded models of each tile: two or
    # three bundles of quick's training gave 0.731-0.733 (BENCHMARKS.md). ``standard`` is an
    # ensemble of three such models, on tiles offset by thirds (0.840 / 0.700 -> 0.843 / 0.706 on
    # the full panel), in batches of 256 (-> 0.846 / 0.709; fit 14 min against 12 on 2 cores).
    "standard": {"epochs": 300, "hparams": {**_FAST_HPARAMS, "cycle_epochs": 100, "batch_size": 256},
                 "tiling": {"box": 25},
                 "models_per_tile": 3},
    "full": {"epochs": None, "hparams": {}, "tiling": {}, "models_per_tile": 1},
})


_CURRICULUM_KEYS = frozenset({"min_mask", "max_mask"})


def _sets_own_curriculum(given: Any) -> bool:
    """True when the user's hyperparameters set the masking curriculum (per tile, or min/max_mask)."""
    return isinstance(given, Mapping) and (_is_per_tile(given) or bool(_CURRICULUM_KEYS & set(given)))


def _with_typed_masking(hparams: Any, given: Any, typed_fraction: float) -> Any:
    """``hparams`` (the preset's with the user's ``given`` over them) with the masking curriculum of
    :func:`masking_for_typed_fraction`."""
    masking = masking_for_typed_fraction(typed_fraction)
    if isinstance(hparams, DAEHyperparameters):
        return hparams.replace(**masking)
    if _sets_own_curriculum(given):
        if _is_per_tile(given):
            raise InvalidArgumentError("typed_fraction sets one masking curriculum for every tile; with per-tile "
                                       "hyperparameters set min_mask and max_mask in each tile's instead")
        clash = sorted(_CURRICULUM_KEYS & set(given))
        raise InvalidArgumentError(f"typed_fraction sets min_mask and max_mask; leave {clash} out of hparams")
    return {**hparams, **masking}


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
        :class:`~analysislib.genotype.dae.hyperparameters.DAEHyperparameters` (used as given), a
        mapping of their fields (applied over the preset's), or a per-tile mapping (see
        :func:`train_bundle`).
    tiling
        :func:`~analysislib.tiling.tile_genome` arguments (override the preset's).
    tiles_per_task, validation_fraction
        Passed to :func:`train_bundle`.
    jobs, client, threads, device, progress
        Run-time options, gathered into one :class:`~analysislib.runtime.RunOptions`
        (:attr:`options`) that :func:`train_bundle` receives: training worker processes (``jobs``;
        ``n_jobs``, its old name, is accepted for one release) or a dask ``client``; CPU threads
        for inference (see :func:`impute_dataset`) and torch threads when training with
        ``jobs=1`` (with more workers each gets its share of the CPUs); the training device
        (``"auto"``: CUDA, then MPS, then the CPU); a progress bar while training.
    strand_ambiguous
        See :func:`~analysislib.genotype.dae.mapping.map_variants`.
    name
        Method name recorded with results (default ``"dae"``); e.g. ``"dae_tuned"`` for
        per-tile hyperparameters from :mod:`analysislib.genotype.dae.tuning`, so untuned and
        tuned runs are stored as separate methods.
    models_per_tile
        Independently seeded models over each variant, each after the first on tiles offset by a
        share of a tile, averaged at inference (None: the preset's; see :func:`train_bundle`).
    typed_fraction
        Share of the panel's sites that the targets will have typed, if known (e.g. 1/3 for
        an array typing one site in three). The masking curriculum is then centred on the
        share they lack (:func:`~analysislib.genotype.dae.hyperparameters.masking_for_typed_fraction`),
        which is more accurate at that density and less so on much sparser arrays. None (the
        default) keeps the preset's array-agnostic curriculum.
    typed_sites
        The sites the targets will have typed, if known: the target panel itself, an array's
        site list as a genotype Dataset, ``(contig, position)`` pairs or a bool array over the
        reference's variants (see :func:`train_bundle`). Training then masks the other sites
        first, and, unless ``typed_fraction`` is given or ``hparams`` set ``min_mask`` or
        ``max_mask`` (or per tile), centres the curriculum on their share of the reference's
        sites. The bundle is then made for that array; None (the default) trains for any array,
        as Dias et al. do.
    unit
        What one training row is (:data:`~analysislib.genotype.dae.bundle.UNITS`):
        ``"genotype"`` (default; the paper's, for unphased targets) or ``"haplotype"``, each of
        a sample's two haplotypes a row of its own (see :func:`train_bundle`). Haplotype rows
        need phased targets (``impute`` warns when typed heterozygous calls are not) and are
        more accurate with them. A loaded ``bundle`` keeps the unit it was trained with.
    """

    name = "dae"

    @renamed_keywords(n_jobs="jobs")
    def __init__(  # noqa: PLR0913 - an estimator: settings and run-time options as keywords
        self,
        *,
        bundle: str | os.PathLike[str] | None = None,
        bundle_dir: str | os.PathLike[str] | None = None,
        preset: str = "quick",
        epochs: int | None = None,
        hparams: Any = None,
        tiling: Mapping[str, Any] | None = None,
        jobs: int = 1,
        tiles_per_task: int | None = None,
        client: Any = None,
        threads: int = 1,
        validation_fraction: float = 0.0,
        strand_ambiguous: StrandPolicy = "keep",
        device: str = "auto",
        progress: bool | None = None,
        name: str = "dae",
        models_per_tile: int | None = None,
        typed_fraction: float | None = None,
        typed_sites: Any = None,
        unit: str = "genotype",
    ) -> None:
        super().__init__()
        if not name or not isinstance(name, str):
            raise InvalidArgumentError(f"name must be a non-empty string, got {name!r}")
        self.name = name
        preset = DAE_PRESETS.canonical(preset)  # PresetError for an unknown name
        _check_settings(hparams, tiling)
        if threads < 1:
            raise InvalidArgumentError("threads must be at least 1")
        self.unit = check_unit(unit)
        self.bundle_path = None if bundle is None else Path(bundle)
        self.bundle_dir = None if bundle_dir is None else Path(bundle_dir)
        self.preset = preset
        self.epochs = epochs if epochs is not None else DAE_PRESETS[preset]["epochs"]
        given = hparams
        if hparams is None or (isinstance(hparams, Mapping) and not _is_per_tile(hparams)):
            hparams = {**DAE_PRESETS[preset]["hparams"], **dict(hparams or {})}
        if typed_fraction is not None:
            hparams = _with_typed_masking(hparams, given, typed_fraction)
        self.typed_fraction = None if typed_fraction is None else float(typed_fraction)
        self.typed_sites = typed_sites
        self.n_typed_sites: int | None = None  # set by fit
        self._given_hparams = given
        self.hparams = hparams
        self.tiling = {**DAE_PRESETS[preset]["tiling"], **dict(tiling or {})}
        self.models_per_tile = int(models_per_tile if models_per_tile is not None
                                   else DAE_PRESETS[preset]["models_per_tile"])
        if self.models_per_tile < 1:
            raise InvalidArgumentError(f"models_per_tile must be at least 1, got {models_per_tile!r}")
        self.tiles_per_task = tiles_per_task
        # One value for the layers below; with several workers each gets its share of the CPUs.
        self.options = RunOptions(device=device, threads=int(threads) if jobs == 1 else None,
                                  jobs=int(jobs), progress=progress, client=client)
        self.threads = int(threads)  # also the inference threads
        self.validation_fraction = float(validation_fraction)
        self.strand_ambiguous = strand_ambiguous
        self.bundle: Bundle | None = None
        self._cleanup: weakref.finalize | None = None
        self._fit_details: dict[str, Any] = {}

    @property
    def jobs(self) -> int:
        """Training worker processes."""
        return self.options.jobs

    def parameters(self) -> dict[str, Any]:
        """Training and inference settings recorded with results."""
        hp = self.hparams.to_dict() if hasattr(self.hparams, "to_dict") else self.hparams
        per_tile = isinstance(hp, Mapping) and _is_per_tile(hp)
        if per_tile:  # tile -> hyperparameters: recorded in full for small tilings
            hp = ({str(tile): v.to_dict() if hasattr(v, "to_dict") else dict(v) for tile, v in hp.items()}
                  if len(hp) <= 40 else None)
        return {"preset": self.preset, "epochs": self.epochs, "tiling": dict(self.tiling),
                "models_per_tile": self.models_per_tile, "typed_fraction": self.typed_fraction,
                "typed_sites": self.n_typed_sites,
                "unit": self.bundle.unit if self.bundle is not None else self.unit,
                "hparams": hp if isinstance(hp, Mapping) and (per_tile or len(hp) < 40) else None,
                "hparams_per_tile": per_tile,
                "bundle": None if self.bundle_path is None else str(self.bundle_path),
                "threads": self.threads, "jobs": self.jobs,
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
        hparams, typed = self.hparams, None
        if self.typed_sites is not None:
            typed = _typed_flags(reference, self.typed_sites)
            self.n_typed_sites = int(typed.sum())
            given = self._given_hparams
            if self.typed_fraction is None and not _sets_own_curriculum(given):
                hparams = _with_typed_masking(hparams, given, float(typed.mean()))
        self.bundle = train_bundle(reference, tiling, hparams, folder, epochs=self.epochs,
                                   tiles_per_task=self.tiles_per_task,
                                   validation_fraction=self.validation_fraction,
                                   models_per_tile=self.models_per_tile, unit=self.unit,
                                   typed_sites=typed, options=self.options)
        self._fit_details = {"fit_seconds": time.perf_counter() - started, "trained": True,
                             "n_tiles": len(self.bundle.members), "bundle": str(folder)}
        return self

    def impute(self, target: xr.Dataset) -> xr.Dataset:
        """Impute ``target`` to the reference variants (panel order)."""
        if self.bundle is None or self.reference is None:
            raise NotFittedError("call fit(reference) before impute(target)")
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
