"""Imputing a genotype dataset in memory with a bundle: typed variants in, every bundle variant out.

:func:`impute_dataset` maps the target's variants onto the bundle
(:func:`~analysislib.genotype.dae.mapping.map_variants`), runs each tile's model on all samples
and sums the tiles' outputs with their :data:`~analysislib.genotype.dae.bundle.OVERLAP_RULE`
weights (:func:`_run_tiles`, shared with the streamed
:func:`~analysislib.genotype.dae.streaming.impute_vcf`).

Output and matching rules
-------------------------
The output holds the bundle's variants on the contigs the input covers, in genome order; input
variants absent from the bundle are dropped and counted (as Beagle and Minimac4 drop
target-only markers). Typed genotypes are copied through as hard calls, as in the authors'
``get_predicted_gen_known_indices``; unlike their code, decoded probabilities are normalised
(:func:`~analysislib.genotype.encoding.genotype_probabilities_from_presence`) and written as
GP, with DS = P(het) + 2 P(hom-alt) and GT = the most likely genotype, unphased. A bundle trained
on haplotype rows (:data:`~analysislib.genotype.dae.bundle.UNITS`) runs each target haplotype
as a row of its own and multiplies their ALT probabilities
(:func:`~analysislib.genotype.encoding.genotype_probabilities_from_haplotype_presence`); it
reads the typed calls as phased and warns when heterozygous ones are not.

Speed
-----
Inference cost is a few matrix products per tile; everything else (reading, mapping, decoding,
writing) is vectorised over variants and samples. Importing torch takes longer than imputing a
chromosome of array data, so inference runs the packed weights through
:func:`~analysislib.genotype.dae.forward.numpy_forward` (one file, memory-mapped, for all tiles; the
matrix products in NumPy's BLAS, results equal to torch's to float32 rounding) and
``analysislib impute`` never imports torch; it reads the VCF into NumPy arrays
(:func:`~analysislib.io.vcf.read_vcf_arrays`), so xarray and dask are not imported either, and
holds the bundle's tables as NumPy columns, so neither is pandas. On array panels with tens of
variants per tile the per-tile overhead dominates, so threads go to tiles only when tiles are large
(:func:`_thread_split`). The torch path (older bundles, ``engine="torch"``) stores weights in
one storage per file and runs them through one weightless model per tile shape
(:meth:`~analysislib.genotype.dae.bundle.Bundle.predict`).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import json
import logging
import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from analysislib import variables
from analysislib.errors import InputFormatError, InvalidArgumentError
from analysislib.genotype.dae.bundle import Bundle, load_bundle
from analysislib.genotype.dae.mapping import StrandPolicy, VariantMapping, map_variants
from analysislib.runtime import torch_threads

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["impute_dataset"]

logger = logging.getLogger(__name__)

_SMALL_TILE_WORK = 5e7  # multiply-adds per tile below which threads do not pay (see _thread_split)
_DECODE_BLOCK = 65536  # variants decoded at a time


@contextlib.contextmanager
def _engine_threads(engine: str, threads: int | None) -> Iterator[None]:
    """Limit the inference engine's threads per tile (torch's, or NumPy's BLAS) to ``threads``."""
    if engine == "torch":
        with torch_threads(threads):
            yield
        return
    if threads is None:
        yield
        return
    if threads < 1:
        raise InvalidArgumentError("threads must be at least 1")
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
        raise InvalidArgumentError("threads must be at least 1")
    if not len(work) or float(np.median(work)) < _SMALL_TILE_WORK:
        return 1, 1
    workers = max(1, min(int(threads), len(work)))
    return workers, max(1, int(threads) // workers)


def _check_engine(bundle: Bundle, engine: str | None) -> str:
    if engine is None:
        engine = "numpy" if bundle.packed else "torch"
    if engine not in ("numpy", "torch"):
        raise InvalidArgumentError(f"engine must be 'numpy' or 'torch', got {engine!r}")
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
    presence (untyped and missing calls as [0, 0]), and each tile's model runs once on all samples
    (batches of ``batch_size``; NumPy or torch, see ``engine``). A variant in several tiles takes
    their weighted mean (:data:`~analysislib.genotype.dae.bundle.OVERLAP_RULE`); decoded
    probabilities are normalised
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
    _warn_if_phase_needed(bundle, gt_in, phased_in, where)
    presence = _input_rows(bundle, typed)
    unread = _unread_rows(bundle, keep, local[mapping.bundle_index], where)
    if unread is not None:
        presence[:, unread] = 0
    called = (typed >= 0).all(axis=2)

    needed = _tiles_on(bundle, covered)
    untyped_tiles = sum(not called[local[bundle.members[row]]].any() for row in needed)
    weights = bundle.overlap_weights()
    tiles = [(row, local[bundle.members[row]], np.arange(len(weights[row])), local[bundle.members[row]],
              weights[row]) for row in needed]
    # sigmoid outputs, allele presence
    raw = _run_tiles(bundle, tiles, presence, n_out, engine=engine, threads=threads, batch_size=batch_size,
                     **_work_needed(typed))
    gp = np.empty((n_out, n_samples, 3), dtype=np.float32)
    for start in range(0, n_out, _DECODE_BLOCK):  # bounded float64 temporaries
        block = raw[start:start + _DECODE_BLOCK]
        gp[start:start + len(block)] = _decode_rows(bundle, block)

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


def _input_rows(bundle: Bundle, typed: np.ndarray) -> np.ndarray:
    """The network's input rows ``(rows, variants, 2)`` for calls ``typed`` ``(variants, samples, 2)``.

    Allele presence of each sample, or of each of its haplotypes for a bundle trained on
    haplotype rows (:attr:`Bundle.unit`).
    """
    from analysislib.genotype.encoding import allele_presence, haplotype_rows

    n_var, n_samples = typed.shape[:2]
    if bundle.unit == "haplotype":
        return allele_presence(haplotype_rows(typed)).reshape(2 * n_samples, n_var, 2)
    return allele_presence(typed).reshape(n_samples, n_var, 2)


#: Share of a typed-sites bundle's sites (:attr:`Bundle.typed_sites`) that targets may lack, between
#: their first and last typed site, before imputing warns (at its highest masking rate training
#: hides up to about 15 % of them, with one site in three typed) and before it is refused (with
#: most of them missing the networks see inputs they were never trained on, and did worse than the
#: allele-frequency floor).
LACKING_WARN, LACKING_REFUSE = 0.1, 0.5


def _unread_rows(bundle: Bundle, keep: np.ndarray, typed_rows: np.ndarray, where: str) -> np.ndarray | None:
    """Bool over the output rows (bundle variants ``keep``): typed target sites that a bundle trained
    for one array's sites (:attr:`Bundle.typed_sites`) never learnt to read. Their calls are kept
    in the output but left out of the networks' inputs, with a warning. None when nothing is left out.

    Raises
    ------
    InputFormatError
        When the targets lack more than :data:`LACKING_REFUSE` of the bundle's sites between their
        first and last typed site (a warning above :data:`LACKING_WARN`).
    """
    trained = bundle.typed_sites
    if trained is None or len(typed_rows) == 0:
        return None
    readable = trained[keep]
    typed = np.zeros(len(keep), dtype=bool)
    typed[typed_rows] = True
    unread = typed & ~readable
    span = slice(int(typed_rows.min()), int(typed_rows.max()) + 1)
    wanted = int(readable[span].sum())
    lacking = int((readable[span] & ~typed[span]).sum())
    if lacking > LACKING_REFUSE * wanted:
        raise InputFormatError(where, f"types {wanted - lacking} of the {wanted} sites (in its span) that "
                               "this bundle was trained to read: it was trained for another array; train "
                               "for these targets (typed_sites, --typed-sites) or for any array")
    if lacking > LACKING_WARN * wanted:
        logger.warning("%s: lacks %d of the %d sites (in its span) that this bundle was trained to read, "
                       "so it imputes less accurately than on that array", where, lacking, wanted)
    if unread.any():
        logger.warning("%s: %d of the %d typed sites are not among the sites this bundle was trained to "
                       "read; their calls are kept but not used to impute", where, int(unread.sum()),
                       int(typed.sum()))
    return unread if unread.any() else None


def _warn_if_phase_needed(bundle: Bundle, calls: np.ndarray, phased: np.ndarray, where: str) -> None:
    """A haplotype-row bundle reads typed calls as phased: warn when heterozygous ones are not."""
    if bundle.unit == "haplotype":
        from analysislib.genotype.imputer import warn_if_unphased

        warn_if_unphased(calls, phased, model="a haplotype-row autoencoder bundle", where=where)


def _decode_rows(bundle: Bundle, raw: np.ndarray) -> np.ndarray:
    """Genotype probabilities ``(variants, samples, 3)`` (float64) from outputs ``(variants, rows, 2)``.

    The rows are samples, or each sample's two haplotypes for a bundle trained on haplotype rows
    (:attr:`Bundle.unit`). The numbers are those of
    :func:`~analysislib.genotype.encoding.genotype_probabilities_from_presence` and
    :func:`~analysislib.genotype.encoding.genotype_probabilities_from_haplotype_presence`,
    variants first.
    """
    return np.stack(_decode_columns(bundle, raw), axis=-1)


def _decode_columns(bundle: Bundle, raw: np.ndarray) -> list[np.ndarray]:
    """:func:`_decode_rows` as three float64 arrays ``(variants, samples)``: P(0/0), P(0/1), P(1/1)."""
    from analysislib.genotype.encoding import _allele_pair_columns, _haplotype_pair_columns

    p = np.asarray(raw, dtype=np.float64)
    columns = _allele_pair_columns(p[..., 0], p[..., 1])
    if bundle.unit == "haplotype":
        return _haplotype_pair_columns([c[:, 0::2] for c in columns], [c[:, 1::2] for c in columns])
    return columns


#: A tile's part in a region chunk (or in the whole output, :func:`impute_dataset`): tile row, its
#: inputs' rows in the chunk's span, the positions in its output that the chunk's variants take
#: (``sources``), where they go in the chunk (``targets``) and their
#: :data:`~analysislib.genotype.dae.bundle.OVERLAP_RULE` weights.
_ChunkTile = tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _work_needed(calls: np.ndarray) -> dict[str, np.ndarray]:
    """The ``typed`` and ``wanted`` masks of :func:`_run_tiles` from every sample's input calls
    ``(span, samples, 2)`` (int8, -1 where uncalled), per span row."""
    known = calls >= 0
    return {"typed": known.any(axis=(1, 2)), "wanted": ~known.all(axis=(1, 2))}


def _run_tiles(bundle: Bundle, tiles: list[_ChunkTile], presence: np.ndarray, n_var: int, *, engine: str,
               threads: int | None, typed: np.ndarray, wanted: np.ndarray,
               batch_size: int = 4096) -> np.ndarray:
    """Sigmoid outputs ``(n_var, samples, 2)`` of ``tiles`` for presence ``(samples, span, 2)``.

    Tiles run side by side on threads (:func:`_thread_split`) and are summed with their
    :data:`~analysislib.genotype.dae.bundle.OVERLAP_RULE` weights in the order given, so the sums
    are the same on any thread count. Used for a whole dataset (:func:`impute_dataset`) and for
    region chunks.

    Only the work that can change the result is done (:meth:`Bundle.predict`'s ``inputs`` and
    ``outputs``): a tile's first layer reads only its members that are ``typed`` (per span row:
    some sample has a call there; elsewhere every input is 0), and outputs are computed only
    for ``wanted`` members (per span row: some sample lacks a call; the others are all replaced
    by the input calls and stay 0 here). Both masks are properties of the whole input, not of a
    sample batch, and a tile computes every wanted member even when only some of them are
    ``targets`` (a tile reaching into two region chunks): BLAS may round a product differently
    with another number of output columns, so each tile does the same arithmetic whatever the
    batching and the chunks.
    """
    size = presence.shape[0]
    raw = np.zeros((n_var, size, 2), dtype=np.float32)  # variants first: a tile adds whole rows
    plans = []  # per tile: its typed members, their input columns, wanted outputs, which go where
    for row, inputs, sources, targets, weight in tiles:
        keep_in = typed[inputs]
        computed = np.flatnonzero(wanted[inputs])  # tile outputs run, whatever the chunk
        keep_out = wanted[inputs[sources]]
        picked = np.searchsorted(computed, sources[keep_out])  # the targets' among them
        plans.append((row, inputs[keep_in], np.flatnonzero(np.repeat(keep_in, 2)),
                      (2 * computed[:, None] + np.arange(2)).ravel(),
                      None if len(picked) == len(computed) else picked, targets[keep_out], weight[keep_out]))
    plans = [plan for plan in plans if len(plan[5])]  # tiles with nothing wanted do not run

    def run_tile(plan: tuple[Any, ...]) -> np.ndarray:
        row, members, in_cols, out_cols, picked = plan[:5]
        out = bundle.predict(row, presence[:, members].reshape(size, -1), batch_size=batch_size,
                             engine=engine, inputs=in_cols, outputs=out_cols).reshape(size, -1, 2)
        return out if picked is None else out[:, picked]

    workers, per_worker = _thread_split(threads, [size * 2 * len(t[1]) ** 2 for t in tiles])
    with _engine_threads(engine, per_worker), concurrent.futures.ThreadPoolExecutor(workers) as pool:
        outputs = map(run_tile, plans) if workers == 1 else pool.map(run_tile, plans)
        for (*_, targets, weight), out in zip(plans, outputs, strict=True):
            raw[targets] += weight[:, None, None] * out.transpose(1, 0, 2)
    return raw
