"""Sparse denoising autoencoders per LD tile (Dias et al. 2022): bundles, training, imputation.

Dias et al. (2022, eLife 11:e75600) train one sparse denoising autoencoder per LD tile
("Genome tiling", "Hyperparameter tuning") and impute a VCF by running every tile's model on the
target genotypes ("Imputation data format"). The authors' inference repository cuts the input
into tiles with bcftools, runs one model per tile and concatenates the outputs without resolving
overlaps, copying observed genotypes through (``TorkamaniLab/imputator_inference``:
``genome_tiler.sh``, ``imputator.sh`` and ``inference_function.py``). This package holds the same
pipeline as one portable artefact and one call, a module per concept:

* :mod:`~analysislib.genotype.dae.hyperparameters`: a tile's hyperparameters and layer widths;
* :mod:`~analysislib.genotype.dae.model`: the torch module;
* :mod:`~analysislib.genotype.dae.forward`: its forward pass in NumPy, for inference without
  torch;
* :mod:`~analysislib.genotype.dae.losses` and :mod:`~analysislib.genotype.dae.fit`: training
  one tile's model (loss terms; masking curriculum, validation r², ``train_tile``);
* :mod:`~analysislib.genotype.dae.contigs`: contig names and genome builds;
* :mod:`~analysislib.genotype.dae.bundle`: the bundle format (:func:`save_bundle`,
  :func:`load_bundle`, :class:`Bundle`) and the rule for overlapping tiles
  (:data:`OVERLAP_RULE`);
* :mod:`~analysislib.genotype.dae.plan`: training every tile into a bundle
  (:func:`train_bundle`, on a process pool or a ``dask.distributed`` cluster, resumable) and
  the offset tiles of an ensemble's models (:func:`offset_tiles`);
* :mod:`~analysislib.genotype.dae.mapping`: matching input variants to the bundle's
  (:func:`map_variants`);
* :mod:`~analysislib.genotype.dae.inference` and :mod:`~analysislib.genotype.dae.streaming`:
  imputing a dataset in memory (:func:`impute_dataset`) or a VCF to a VCF in region chunks
  (:func:`impute_vcf`);
* :mod:`~analysislib.genotype.dae.imputer`: :class:`DAEImputer`, the
  :class:`~analysislib.genotype.imputer.GenotypeImputer` (``"dae"``) of the evaluation harness;
* :mod:`analysislib.genotype.dae.tuning`: per-tile hyperparameter search.

Training rows are a sample's unphased genotypes, as in the paper, or, for phased targets, each
of its two haplotypes as a homozygous pseudo-sample (``unit="haplotype"``,
:data:`~analysislib.genotype.dae.bundle.UNITS`; our option): a target whose haplotypes each
resemble haplotypes of the panel is then imputed from them even when no panel sample carries
that pair.

Importing this package imports neither torch nor pandas, so ``analysislib impute`` starts fast:
only :mod:`~analysislib.genotype.dae.model` imports torch, and the modules that train a model
or read older bundles' torch weights import it inside those functions.
"""

from __future__ import annotations

from analysislib.genotype.dae.bundle import (
    BUNDLE_FORMAT,
    BUNDLE_FORMAT_VERSION,
    OVERLAP_RULE,
    PACKED_WEIGHTS_NAME,
    Bundle,
    BundleChecksumError,
    BundleError,
    load_bundle,
    save_bundle,
    tile_id_for,
    training_data_summary,
    write_manifest,
    write_tile,
)

# ``name as name``: public names that stay outside ``__all__``, as before the split.
from analysislib.genotype.dae.bundle import MANIFEST_NAME as MANIFEST_NAME
from analysislib.genotype.dae.bundle import TILES_DIR as TILES_DIR
from analysislib.genotype.dae.bundle import UNITS as UNITS
from analysislib.genotype.dae.bundle import VARIANT_COLUMNS as VARIANT_COLUMNS
from analysislib.genotype.dae.bundle import overlap_weights as overlap_weights
from analysislib.genotype.dae.contigs import (
    KNOWN_CONTIG_LENGTHS,
    infer_genome_build,
    normalise_contig,
)
from analysislib.genotype.dae.imputer import DAE_PRESETS, DAEImputer
from analysislib.genotype.dae.inference import impute_dataset
from analysislib.genotype.dae.mapping import StrandPolicy as StrandPolicy
from analysislib.genotype.dae.mapping import VariantMapping, map_variants
from analysislib.genotype.dae.plan import ENSEMBLE_STREAM as ENSEMBLE_STREAM
from analysislib.genotype.dae.plan import offset_tiles, plan_tile_tasks, train_bundle
from analysislib.genotype.dae.streaming import (
    CHUNK_GENOTYPES,
    DEFAULT_BATCH_SAMPLES,
    ImputeReport,
    StreamPlan,
    impute_vcf,
    plan_stream,
)

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
    "offset_tiles",
    "plan_stream",
    "plan_tile_tasks",
    "save_bundle",
    "tile_id_for",
    "train_bundle",
    "training_data_summary",
    "write_manifest",
    "write_tile",
]
