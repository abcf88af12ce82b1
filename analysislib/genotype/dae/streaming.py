"""Streamed VCF-to-VCF imputation with a bundle: region chunks by sample batches.

:func:`impute_vcf` reads the target VCF into NumPy arrays (no xarray, dask or pandas), cuts the
output variants into region chunks (:func:`plan_stream`, :class:`StreamPlan`) and imputes each
chunk ``batch_samples`` samples at a time, here (chunks side by side on threads) or on a
``dask.distributed`` cluster, writing GT:DS:GP with bgzip and tabix into one atomically renamed
file, each chunk before the next. The text is the one ``write_vcf(impute_dataset(...))``
writes, whatever the chunk sizes and thread count; with batches of fewer samples than the
cohort, a few DS/GP values can move by one unit of the last decimal (BLAS sums the products in
an order that depends on the number of rows). :class:`ImputeReport` says what was done and how
long each stage took.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from analysislib.errors import InputFormatError, InvalidArgumentError
from analysislib.genotype.dae.bundle import Bundle, _open_bundle, load_bundle
from analysislib.genotype.dae.inference import (
    _check_engine,
    _ChunkTile,
    _covered_variants,
    _decode_columns,
    _engine_threads,
    _input_rows,
    _run_tiles,
    _tiles_on,
    _unread_rows,
    _warn_if_phase_needed,
    _work_needed,
)
from analysislib.genotype.dae.mapping import StrandPolicy, VariantMapping, _map_sites

__all__ = [
    "CHUNK_GENOTYPES",
    "DEFAULT_BATCH_SAMPLES",
    "ImputeReport",
    "StreamPlan",
    "impute_vcf",
    "plan_stream",
]

#: Default samples per batch of :func:`impute_vcf` (``analysislib impute --batch-samples``).
DEFAULT_BATCH_SAMPLES = 1000
#: Output genotypes (variants x samples) that :func:`impute_vcf` holds at once as text (about
#: 20 bytes a genotype) before writing them: one region chunk, or the chunks side by side on
#: threads together (:func:`plan_stream`).
CHUNK_GENOTYPES = 2**22


@dataclass(frozen=True)
class StreamPlan:
    """How :func:`impute_vcf` cuts its work: region chunks of output variants, sample batches.

    Chunks are runs of output variants ``[start, stop)`` that end where the variants' primary tile
    changes (:data:`~analysislib.genotype.dae.bundle.OVERLAP_RULE`), so that few tiles reach into
    two chunks; one that does runs in both and adds to each chunk's variants only. Within a chunk
    the samples go ``batch_samples`` at a time through the models and the text formatter; the
    chunk's text is then written and dropped. ``side_by_side`` chunks are imputed at once (one per
    thread); with more than one, one more chunk's text can be held while it is written.
    """

    n_samples: int
    batch_samples: int
    chunks: tuple[tuple[int, int], ...]
    side_by_side: int = 1

    @property
    def chunks_held(self) -> int:
        """Chunks whose text can be held at once (:func:`_chunks_held`)."""
        return _chunks_held(self.side_by_side)

    @property
    def max_chunk_variants(self) -> int:
        """Output variants of the largest chunk."""
        return max((stop - start for start, stop in self.chunks), default=0)

    @property
    def genotypes_held(self) -> int:
        """Output genotypes held at once as text at most (:attr:`chunks_held` of the largest
        chunk, every sample)."""
        return self.chunks_held * self.max_chunk_variants * self.n_samples

    @property
    def batch_genotypes(self) -> int:
        """Genotypes decoded at once in floating point (one sample batch of the largest chunk,
        in each chunk imputed side by side)."""
        return self.side_by_side * self.max_chunk_variants * min(self.batch_samples, self.n_samples)


def _chunks_held(side_by_side: int) -> int:
    """Chunks held at once: those imputed side by side and, with more than one, one being written."""
    return 1 if side_by_side == 1 else side_by_side + 1


def plan_stream(supplier: Sequence[int], n_samples: int, *, batch_samples: int = DEFAULT_BATCH_SAMPLES,
                chunk_genotypes: int = CHUNK_GENOTYPES, side_by_side: int = 1) -> StreamPlan:
    """Cut output variants into region chunks that together hold about ``chunk_genotypes`` genotypes.

    With ``side_by_side`` chunks imputed at once, :attr:`StreamPlan.chunks_held` chunks share
    ``chunk_genotypes``, and there are at least ``side_by_side`` chunks where the tiles allow.

    Parameters
    ----------
    supplier
        Per output variant (genome order), its primary tile row
        (:data:`~analysislib.genotype.dae.bundle.OVERLAP_RULE`): chunks end where it changes.
    n_samples
        Target samples.
    batch_samples
        Samples per batch.
    chunk_genotypes
        Variants x samples held as text at once; a chunk holds at least one tile's variants.
    side_by_side
        Chunks imputed at once (threads).
    """
    if batch_samples < 1 or chunk_genotypes < 1 or n_samples < 1 or side_by_side < 1:
        raise InvalidArgumentError("batch_samples, chunk_genotypes, n_samples and side_by_side must be "
                                   "at least 1")
    supplier = np.asarray(supplier)
    ends = np.r_[np.flatnonzero(np.diff(supplier) != 0) + 1, len(supplier)] if len(supplier) else []
    target = max(1, min(chunk_genotypes // _chunks_held(side_by_side) // n_samples,
                        len(supplier) // side_by_side))
    chunks, start, last = [], 0, 0
    for end in ends:
        if end - start > target and last > start:
            chunks.append((start, last))
            start = last
        last = int(end)
    if last > start:
        chunks.append((start, last))
    return StreamPlan(int(n_samples), int(batch_samples), tuple(chunks), int(side_by_side))


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
    unread: np.ndarray | None = None  # bool (span,): typed calls kept out of the inputs (_unread_rows)


def _chunk_work(bundle: Bundle, chunk: tuple[int, int], *, local: np.ndarray,
                typed_rows: np.ndarray, typed_in: np.ndarray, phased_in: np.ndarray,
                prefixes: list[bytes], unread: np.ndarray | None = None) -> _ChunkWork:
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
    return _ChunkWork(start, stop, lo, prefixes[start:stop], tiles, typed, phased,
                      None if unread is None or not unread[lo:hi].any() else unread[lo:hi])


#: A chunk's record lines and the length of each (:func:`_impute_chunk`).
_ChunkText = tuple[bytes, np.ndarray]


def _impute_chunk(bundle: Bundle, work: _ChunkWork, *, batch_samples: int, engine: str,
                  threads: int | None, decimals: int) -> _ChunkText:
    """The VCF record lines (GT:DS:GP) of one region chunk, samples ``batch_samples`` at a time,
    and each line's length in bytes.

    Per sample the numbers are those of :func:`~analysislib.genotype.dae.inference.impute_dataset`
    followed by :func:`~analysislib.io.vcf.write_vcf`: the same decoding, hard calls for typed
    genotypes, GP normalisation and rounding.
    """
    from analysislib.io.vcf import _format_calls, _format_records

    n_var = work.stop - work.start
    rows_out = np.arange(work.start, work.stop) - work.span_start  # chunk variants in the span
    n_samples = work.typed.shape[1]
    needed = _work_needed(work.typed)
    whole = batch_samples >= n_samples  # one batch: whole record lines straight from the formatter
    columns: list[list[bytes]] = []
    pieces: list[tuple[bytes, np.ndarray]] = []
    for first in range(0, n_samples, batch_samples):
        last = min(first + batch_samples, n_samples)
        size = last - first
        batch = work.typed[:, first:last]
        presence = _input_rows(bundle, batch)
        if work.unread is not None:
            presence[:, work.unread] = 0
        raw = _run_tiles(bundle, work.tiles, presence, n_var, engine=engine, threads=threads, **needed)
        lines: list[bytes] = []
        step = max(1, _FORMAT_BLOCK_CALLS // size)  # variants decoded and formatted at a time
        for start in range(0, n_var, step):
            block = slice(start, min(start + step, n_var))
            calls = _decoded_calls(bundle, raw[block], batch[rows_out[block]],
                                   work.phased[rows_out[block], first:last])
            if whole:
                pieces.append(_format_records(work.prefixes[block], *calls, decimals=decimals, allele_width=1))
            else:
                lines += _format_calls(*calls, decimals=decimals, allele_width=1, line_end=last == n_samples)
        if not whole:
            columns.append(lines)
    if whole:
        return b"".join(text for text, _ in pieces), np.concatenate([lengths for _, lengths in pieces])
    records = [prefix + b"".join(texts) for prefix, *texts in zip(work.prefixes, *columns, strict=True)]
    return b"".join(records), np.fromiter(map(len, records), dtype=np.int64, count=len(records))


_FORMAT_BLOCK_CALLS = 2**16  # calls decoded and formatted at a time (temporaries stay in cache)


def _decoded_calls(bundle: Bundle, raw: np.ndarray, typed: np.ndarray, phased: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    """GT, phase, DS and GP of some variants' sample columns, as :func:`~analysislib.io.vcf._format_calls`
    takes them.

    ``raw`` holds the sigmoid outputs ``(variants, rows, 2)`` (rows: samples, or their haplotypes,
    :func:`~analysislib.genotype.dae.inference._decode_rows`), ``typed`` the input calls
    ``(variants, samples, 2)`` (-1 untyped) and ``phased`` their phase. The numbers are those of
    :func:`~analysislib.genotype.dae.inference.impute_dataset` followed by
    :func:`~analysislib.io.vcf.write_vcf`: normalised probabilities, hard calls for typed genotypes,
    DS in float32, GP renormalised in float64. Each genotype's probabilities are a separate array
    throughout (no stacked axis of length 3), which halves the time of this step.
    """
    from analysislib.io.vcf import _normalised_columns

    gp = [column.astype(np.float32) for column in _decode_columns(bundle, raw)]
    first, second = typed[..., 0], typed[..., 1]
    called = (first >= 0) & (second >= 0)
    if called.any():  # typed genotypes: their call, with probability 1
        alt_count = (first > 0).astype(np.int8) + (second > 0)
        gp = [np.where(called, alt_count == g, column).astype(np.float32, copy=False)
              for g, column in enumerate(gp)]
    dosage = (gp[1] + 2 * gp[2]).astype(np.float32)
    # Best guess = the argmax (ties to the lower genotype), as comparisons, as alleles 0/1.
    genotypes = np.empty(typed.shape, dtype=np.int8)
    genotypes[..., 0] = np.where(called, first, (gp[2] > gp[0]) & (gp[2] > gp[1]))  # 1/1
    genotypes[..., 1] = np.where(called, second, (gp[1] > gp[0]) | (gp[2] > gp[0]))  # not 0/0
    return (genotypes, phased & called, dosage.astype(np.float64),
            _normalised_columns([column.astype(np.float64) for column in gp]))


_worker_bundles: dict[tuple[str, bool], Bundle] = {}
_worker_lock = threading.Lock()


def _impute_chunk_on_worker(bundle_path: str, verify: bool, work: _ChunkWork, **settings: Any) -> _ChunkText:
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


def _record_sites(bundle: Bundle, keep: np.ndarray, contig_names: Mapping[str, str]
                  ) -> tuple[list[bytes], np.ndarray, np.ndarray]:
    """CHROM, 0-based start and end of every output record (end from REF: INFO is empty), for
    :meth:`~analysislib.io.bgzf.BgzfVcfWriter.write_records`."""
    column = bundle._variant
    names = {c: name.encode() for c, name in contig_names.items()}
    beg = column("pos")[keep].astype(np.int64) - 1
    ref_lengths = np.fromiter(map(len, column("ref")[keep].tolist()), dtype=np.int64, count=len(keep))
    return [names[c] for c in column("contig")[keep].tolist()], beg, beg + np.maximum(ref_lengths, 1)


def _ordered_results(works: Iterator[_ChunkWork], compute: Any, *, client: Any, bundle: Bundle,
                     verify: bool, side_by_side: int, window: int, settings: dict[str, Any]
                     ) -> Iterator[_ChunkText]:
    """Each chunk's text in chunk order: computed here, or on ``client``, ``window`` chunks in flight.

    Here, with ``side_by_side`` above 1 (:attr:`StreamPlan.side_by_side`), chunks run on that many
    threads (NumPy releases the GIL in its array operations), ``window`` of them submitted at
    once (:attr:`StreamPlan.chunks_held`: while the caller writes one chunk, every thread has
    another). The engine's thread limit is process-wide, so it is set to one thread once around
    them, not per chunk.
    """
    if client is None and side_by_side == 1:  # one chunk at a time, its tiles on the threads given
        for work in works:
            yield compute(work)
        return
    if client is None:
        as_set = {**settings, "threads": None}  # tiles in turn, at the limit set here
        with _engine_threads(settings["engine"], 1), \
                concurrent.futures.ThreadPoolExecutor(side_by_side) as pool:
            running: list[concurrent.futures.Future[_ChunkText]] = []
            try:
                for work in works:
                    running.append(pool.submit(_impute_chunk, bundle, work, **as_set))
                    if len(running) >= window:
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
            *([(f"  {len(self.plan.chunks)} region chunks"
                + (f" ({self.plan.side_by_side} at a time)" if self.plan.side_by_side > 1 else "")
                + f", samples in batches of {min(self.plan.batch_samples, self.n_samples)}")]
              if self.plan is not None else []),
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
        raise InvalidArgumentError(
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

    The output is streamed: region chunks are imputed ``batch_samples`` samples at a time,
    formatted and written in order, the text held at once staying near ``chunk_genotypes``
    output genotypes (:func:`plan_stream`), so the memory for outputs is bounded by the chunks,
    not the cohort. The typed input genotypes (2 bytes each) are read whole. The text is the same as
    ``write_vcf(impute_dataset(...))`` writes, whatever the chunk sizes (sample batches: see
    the module docstring).

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
        CPU threads for inference (see :func:`~analysislib.genotype.dae.inference.impute_dataset`).
    strand_ambiguous
        See :func:`~analysislib.genotype.dae.mapping.map_variants`.
    verify
        Check every bundle file's sha256 when loading from a folder. The packed weights are
        checked on a second thread while the targets are read and imputed; if they do not match,
        :class:`~analysislib.errors.BundleChecksumError` is raised and no output is written.
    decimals, compress_level
        Passed to :func:`~analysislib.io.vcf.write_vcf`. Level 1 (default) deflates with ISA-L,
        about 10x faster than htslib's default 6 for a file about 15% larger; ``bcftools view
        -Oz`` recompresses it if size matters. ``threads`` blocks are compressed at once.
    engine
        See :func:`~analysislib.genotype.dae.inference.impute_dataset` (default: NumPy when the
        bundle has packed weights).
    batch_samples
        Samples per batch through the models and the formatter.
    chunk_genotypes
        Output variants x samples held as text at once: one region chunk, or with ``threads``
        above 1 (NumPy engine) the ``threads + 1`` chunks in flight together (:func:`plan_stream`).
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
        raise InvalidArgumentError("batch_samples must be at least 1")
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    # The packed weights' sha256 runs on a second thread while the targets are read and imputed
    # (a process's first check of a 68 MB file takes about 0.05 s); the output appears only once
    # it has matched.
    with concurrent.futures.ThreadPoolExecutor(1) as background:
        weights_check = None
        if not isinstance(bundle, Bundle):
            bundle, weights_check = _open_bundle(bundle, verify=verify, background=background)
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
        _warn_if_phase_needed(bundle, typed_in, phased_in, where)
        typed_rows = local[mapping.bundle_index]
        unread = _unread_rows(bundle, keep, typed_rows, where)
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
        chroms, begs, ends = _record_sites(bundle, keep, contig_names)
        # Chunks side by side, a chunk per thread, with the NumPy engine (torch runs its own threads
        # inside a chunk); on a cluster the workers hold them.
        side_by_side = threads if threads > 1 and client is None and engine == "numpy" else 1
        supplier = bundle._variant("tile")[keep]
        plan = plan_stream(supplier, n_samples, batch_samples=batch_samples, chunk_genotypes=chunk_genotypes,
                           side_by_side=side_by_side)
        needed = _tiles_on(bundle, covered)
        typed_out = np.zeros(len(keep), dtype=bool)
        typed_out[typed_rows] = True
        untyped_tiles = sum(not typed_out[local[bundle.members[row]]].any() for row in needed)
        settings = {"batch_samples": batch_samples, "engine": engine, "threads": threads, "decimals": decimals}
        works = (_chunk_work(bundle, chunk, local=local, typed_rows=typed_rows, typed_in=typed_in,
                             phased_in=phased_in, prefixes=prefixes, unread=unread)
                 for chunk in plan.chunks)
        window = 2 * max(1, len(client.nthreads())) if client is not None else plan.chunks_held
        results = _ordered_results(works, lambda work: _impute_chunk(bundle, work, **settings),
                                   client=client, bundle=bundle, verify=verify,
                                   side_by_side=plan.side_by_side, window=window, settings=settings)
        seconds["impute"] = seconds["write"] = 0.0
        with records_output(out_vcf, header, compress_level=compress_level, threads=threads) as write:
            for start, stop in plan.chunks:
                text, lengths = next(results)
                now = time.perf_counter()
                seconds["impute"] += now - mark
                write(text, (chroms[start:stop], begs[start:stop], ends[start:stop], lengths))
                mark = time.perf_counter()
                seconds["write"] += mark - now
            if weights_check is not None:
                weights_check.result()  # raises BundleChecksumError: no output is left
        now = time.perf_counter()
        seconds["write"] += now - mark  # bgzf end and index
        seconds["total"] = now - started
        return ImputeReport(Path(out_vcf), mapping, n_samples, len(keep), len(needed), int(untyped_tiles),
                            threads, seconds, plan)
