"""HMM imputation baselines: Beagle 5.4 and Minimac4 4.1.2, run as external tools.

Both answer the :class:`~analysislib.genotype.imputer.GenotypeImputer` interface, so they are
scored exactly like the deep models, and both run as subprocesses through
:func:`analysislib.external.run_tool`. Dias et al. (2022) compare their autoencoders against
these two tools (Methods, "Performance testing and comparisons"). Defaults and quirks that
matter here: Minimac4 4.1.2 writes only ``HDS`` in BCF unless asked (``-f GT,DS,GP -O vcf.gz``);
Beagle 5.4 writes ``GT:DS`` unless ``gp=true`` and uses a 40 cM window, 2 cM overlap and
``ne=100000`` by default.

What the tools do, as observed with the Debian packages (Beagle 22Jul22.46e, Minimac4 4.1.2)
----------------------------------------------------------------------------------------------
* Both write every reference-panel marker (ungenotyped reference markers included) in panel
  order; target-only markers and markers whose alleles differ from the panel's are dropped.
  The output is matched back to the panel with :func:`~analysislib.genotype.imputer.sites_key`
  and an error names the first marker that does not line up.
* Beagle always re-phases the target. At genotyped markers it reports the input genotype as a
  hard call (GP one-hot, integer DS); a missing genotype at a genotyped marker (the
  random-missing scenario) is filled during phasing and is also reported as a hard call.
  It writes GP only for imputed markers (no GP header at all when every marker is genotyped), so
  the wrappers take GP as the one-hot hard call wherever GP is absent.
  Beagle rounds DS and GP to two decimals, so its GP rows sum to 0.99-1.01.
* Minimac4 needs phased target haplotypes without missing alleles: with a missing allele at a
  genotyped site it aborts (``Assertion !std::isnan(hmm_results.loo_dosages_...)``), and it
  reads an unphased ``0/1`` as if it were phased. :class:`Minimac4Imputer` therefore pre-phases
  such targets with Beagle (``impute=false``), the Eagle/Beagle-then-Minimac4 pipeline of the
  imputation servers. At genotyped sites Minimac4 reports its HMM re-estimate (INFO
  ``TYPED;IMPUTED``), which differs from the input for about 1% of calls; by default the
  observed genotypes are put back, as Beagle reports them.
* Minimac4 takes the genetic map at imputation time (``-m``); a map given to
  ``--compress-reference`` does not change the result. Without a map Beagle assumes
  1 cM = 1 Mb; both read the PLINK ``.map`` layout (chromosome, id, cM, bp), and Beagle needs its
  chromosome names to match the VCF contigs.

Returned datasets
-----------------
Every reference variant (panel order) by every target sample (target order), with
``call_genotype`` (phased, from the tool), ``call_genotype_probability`` (the tool's GP
renormalised to sum to 1) and ``call_dosage`` = P(het) + 2 P(hom-alt) of that GP, so dosage and
GP always agree (Beagle's own DS differs from it by its two-decimal rounding at most).

Cost accounting (``last_run``)
------------------------------
``fit`` writes the panel VCF (and, for Minimac4, compresses it to ``.msav``), once per panel;
its cost goes to ``details["fit_seconds"]`` and ``details["fit_peak_memory_mb"]``. ``seconds``
is the wall time of ``impute`` (writing the target VCF, every tool run, reading the output back)
and ``peak_memory_mb`` the largest peak of the tool processes it ran (the JVM for Beagle).
``details["steps"]`` lists each tool run with its command line, time and peak memory.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import os
import shutil
import tempfile
import time
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, Self

import numpy as np
import xarray as xr

from analysislib.errors import InputFormatError, InvalidArgumentError, NotFittedError
from analysislib.external import (
    JAVA_FATAL_STDERR,
    ToolRun,
    check_java_heap,
    find_tool,
    java_heap_option,
    run_tool,
    tool_version,
)
from analysislib.genotype.imputer import (
    GenotypeImputer,
    ImputationRun,
    check_imputed,
    imputed_dataset,
    sites_key,
)
from analysislib.io.vcf import read_vcf, write_vcf

__all__ = ["BeagleImputer", "Minimac4Imputer", "write_plink_map"]

logger = logging.getLogger(__name__)

GeneticMap = Any  # msprime.RateMap, per-variant cM array, or a PLINK .map path


# --------------------------------------------------------------------------------------------
# Genetic maps
# --------------------------------------------------------------------------------------------


def write_plink_map(path: str | os.PathLike[str], contigs: Sequence[str], positions: Any,
                    cm: Any) -> Path:
    """Write a PLINK ``.map`` genetic map (chromosome, id, cM, bp), as Beagle and Minimac4 read.

    Parameters
    ----------
    path
        Output file (written to a temporary sibling, then renamed).
    contigs
        Chromosome name of each entry (must match the VCF contig names).
    positions
        1-based bp position of each entry, sorted within each chromosome.
    cm
        Genetic position in cM of each entry, non-decreasing within each chromosome.

    Returns
    -------
    Path
        The file. Entries repeating a chromosome and position are written once (the first),
        since both tools interpolate between strictly increasing positions.

    Raises
    ------
    ValueError
        Lengths differ, or positions or cM go backwards within a chromosome, or cM is not
        finite.
    """
    from analysislib.io.atomic import atomic_output

    contigs = np.asarray(contigs, dtype=object)
    positions = np.asarray(positions, dtype=np.int64)
    cm = np.asarray(cm, dtype=np.float64)
    if not contigs.shape == positions.shape == cm.shape or contigs.ndim != 1:
        raise InvalidArgumentError("contigs, positions and cm must be 1-D and of equal length")
    if not np.all(np.isfinite(cm)):
        bad = int(np.flatnonzero(~np.isfinite(cm))[0])
        raise InvalidArgumentError(f"genetic position of entry {bad} ({contigs[bad]}:{positions[bad]}) "
                         "is not finite")
    same_contig = contigs[1:] == contigs[:-1]
    for name, values in (("positions", positions), ("cM", cm)):
        backwards = np.flatnonzero(same_contig & (np.diff(values) < 0))
        if backwards.size:
            i = int(backwards[0]) + 1
            raise InvalidArgumentError(f"{name} go backwards at entry {i} ({contigs[i]}:{positions[i]})")
    keep = np.r_[True, ~(same_contig & (np.diff(positions) == 0))]
    lines = [f"{c}\t.\t{g:.8f}\t{p}\n" for c, p, g in
             zip(contigs[keep], positions[keep], cm[keep], strict=True)]
    with atomic_output(path) as tmp:
        tmp.write_text("".join(lines))
    return Path(path)


def _reference_map(reference: xr.Dataset, genetic_map: GeneticMap, directory: Path
                   ) -> tuple[Path | None, str]:
    """The PLINK map file to give the tools for ``reference``, and how it was obtained."""
    n = reference.sizes["variants"]
    positions = np.asarray(reference["variant_position"].values)
    if genetic_map is None:
        if "variant_genetic_position" not in reference:
            return None, "none (the tool's default; Beagle: 1 cM = 1 Mb)"
        cm, source = reference["variant_genetic_position"].values, "variant_genetic_position"
    elif isinstance(genetic_map, (str, os.PathLike)):
        path = Path(genetic_map)
        if not path.is_file():
            raise FileNotFoundError(f"no such genetic map file: {path}")
        return path, str(path)
    elif hasattr(genetic_map, "get_cumulative_mass"):
        from analysislib.simulate.genotypes import genetic_position_cm

        cm, source = genetic_position_cm(genetic_map, positions), "rate_map"
    else:
        cm, source = np.asarray(genetic_map, dtype=np.float64), "array"
        if cm.shape != (n,):
            raise InvalidArgumentError(f"genetic_map has shape {cm.shape}; expected one cM value per "
                             f"reference variant ({n},)")
    contigs = np.asarray(reference.attrs["contigs"], dtype=object)[
        np.asarray(reference["variant_contig"].values)]
    return write_plink_map(directory / "reference.map", contigs, positions, cm), source


# --------------------------------------------------------------------------------------------
# Shared machinery
# --------------------------------------------------------------------------------------------


def _step(name: str, run: ToolRun) -> dict[str, Any]:
    return {"step": name, "command": run.command, "seconds": run.seconds,
            "peak_memory_mb": run.peak_memory_mb, "peak_memory_source": run.peak_memory_source}


def _check_reference(reference: xr.Dataset) -> None:
    if reference.sizes["ploidy"] != 2 or reference.sizes["alleles"] != 2:
        raise InvalidArgumentError("the reference panel must be diploid and biallelic")
    gt = reference["call_genotype"].data
    if bool((gt < 0).any()):
        raise InvalidArgumentError("the reference panel has missing genotypes; HMM imputers need a "
                         "complete phased panel")
    if "call_genotype_phased" not in reference or not bool(
            reference["call_genotype_phased"].data.all()):
        raise InvalidArgumentError("the reference panel must be phased (call_genotype_phased all True)")


def _normalised(gp: np.ndarray) -> np.ndarray:
    """GP rows scaled to sum to 1 (float32)."""
    gp = np.asarray(gp, dtype=np.float64)
    total = gp.sum(axis=-1, keepdims=True)
    if not np.all(np.isfinite(total)) or np.any(total <= 0):
        raise InvalidArgumentError("the tool wrote missing or all-zero genotype probabilities")
    return (gp / total).astype(np.float32)


class _ExternalHMMImputer(GenotypeImputer):
    """Scratch directories, panel checks and output assembly shared by the tool wrappers."""

    tool = ""

    def __init__(self, *, threads: int, genetic_map: GeneticMap, workdir: str | os.PathLike[str]
                 | None, keep_workdir: bool, extra_args: Sequence[str]) -> None:
        super().__init__()
        if threads < 1:
            raise InvalidArgumentError("threads must be at least 1")
        self.threads = int(threads)
        self.genetic_map = genetic_map
        self.workdir = None if workdir is None else Path(workdir)
        self.keep_workdir = keep_workdir
        self.extra_args = [str(a) for a in extra_args]
        self._fit_dir: Path | None = None
        self._fit_cleanup: weakref.finalize | None = None
        self._fit_details: dict[str, Any] = {}
        self._map_path: Path | None = None
        self._map_source = ""

    # scratch space ------------------------------------------------------------------------

    def _new_dir(self, label: str) -> Path:
        if self.workdir is not None:
            self.workdir.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"analysislib-{self.tool}-{label}-",
                                     dir=self.workdir))

    @contextlib.contextmanager
    def _scratch(self, label: str) -> Iterator[Path]:
        """A fresh directory, removed afterwards (even on error) unless ``keep_workdir``."""
        path = self._new_dir(label)
        try:
            yield path
        finally:
            if self.keep_workdir:
                logger.info("%s: keeping working directory %s", self.tool, path)
            else:
                shutil.rmtree(path, ignore_errors=True)

    def close(self) -> None:
        """Remove the files written by :meth:`fit` (also done when the imputer is collected)."""
        if self._fit_cleanup is not None:
            self._fit_cleanup()
        self._fit_cleanup, self._fit_dir = None, None

    # fit ----------------------------------------------------------------------------------

    def fit(self, reference: xr.Dataset) -> Self:
        """Check the phased panel, write it as VCF (plus map) and prepare the tool's input."""
        find_tool(self.tool)
        _check_reference(reference)
        self.close()
        start = time.perf_counter()
        fit_dir = self._new_dir("reference")
        if not self.keep_workdir:
            self._fit_cleanup = weakref.finalize(self, shutil.rmtree, fit_dir, True)
        self._fit_dir = fit_dir
        try:
            write_vcf(reference, fit_dir / "reference.vcf.gz", fields=["GT"])
            self._map_path, self._map_source = _reference_map(reference, self.genetic_map,
                                                              fit_dir)
            steps = self._prepare_reference(fit_dir)
        except BaseException:
            self.close()
            raise
        self.reference = reference
        seconds = time.perf_counter() - start
        peak = max((s["peak_memory_mb"] for s in steps), default=float("nan"))
        self._fit_details = {"fit_seconds": seconds, "fit_peak_memory_mb": peak,
                             "fit_steps": steps}
        self.last_run = ImputationRun(seconds=seconds, peak_memory_mb=peak,
                                      details={"version": tool_version(self.tool),
                                               **self._fit_details})
        return self

    def _prepare_reference(self, fit_dir: Path) -> list[dict[str, Any]]:
        """Tool-specific preprocessing of ``fit_dir/reference.vcf.gz``; returns the steps run."""
        return []

    def _reference_vcf(self) -> Path:
        if self.reference is None or self._fit_dir is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit(reference) first")
        return self._fit_dir / "reference.vcf.gz"

    # impute -------------------------------------------------------------------------------

    def impute(self, target: xr.Dataset) -> xr.Dataset:
        """Impute ``target`` to every reference variant (see the module notes)."""
        reference_vcf = self._reference_vcf()
        assert self.reference is not None
        if target.sizes["ploidy"] != 2 or target.sizes["alleles"] != 2:
            raise InvalidArgumentError("the target must be diploid and biallelic")
        start = time.perf_counter()
        with self._scratch("impute") as scratch:
            target_vcf = write_vcf(target, scratch / "target.vcf.gz", fields=["GT"])
            result, steps = self._run(reference_vcf, target_vcf, target, scratch)
            seconds = time.perf_counter() - start
            kept = {"workdir": str(scratch)} if self.keep_workdir else {}
        check_imputed(result, self.reference, target)
        self.last_run = ImputationRun(
            seconds=seconds,
            peak_memory_mb=max(s["peak_memory_mb"] for s in steps),
            details={"version": tool_version(self.tool), "command": steps[-1]["command"],
                     "steps": steps, "tool_seconds": sum(s["seconds"] for s in steps),
                     "genetic_map": self._map_source, "threads": self.threads,
                     **self._fit_details, **kept})
        return result

    @abc.abstractmethod
    def _run(self, reference_vcf: Path, target_vcf: Path, target: xr.Dataset, scratch: Path
             ) -> tuple[xr.Dataset, list[dict[str, Any]]]:
        """Run the tool(s) in ``scratch``; return the result and the steps run."""

    def _typed_sites(self, target: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
        """Indices of target sites found in the panel, and their indices in the panel."""
        assert self.reference is not None
        ref_keys = sites_key(self.reference)
        order = {key: i for i, key in enumerate(ref_keys)}
        target_keys = sites_key(target)
        ref_index = np.array([order.get(k, -1) for k in target_keys], dtype=np.int64)
        found = np.flatnonzero(ref_index >= 0)
        missing = target.sizes["variants"] - found.size
        if missing:
            logger.warning("%s: %d of %d target sites are not in the reference panel (other "
                           "position or alleles) and are ignored", self.tool, missing,
                           target.sizes["variants"])
        return found, ref_index[found]

    def _read_output(self, path: Path, target: xr.Dataset) -> xr.Dataset:
        """Read the tool's VCF, check it covers the panel in order, build the result dataset."""
        assert self.reference is not None
        samples = [str(s) for s in target["sample_id"].values]
        out = read_vcf(path, samples=samples, fields=("GT", "DS", "GP")).load()
        ref_keys, out_keys = sites_key(self.reference), sites_key(out)
        if not np.array_equal(ref_keys, out_keys):
            position = {key: i for i, key in enumerate(out_keys)}
            absent = [k for k in ref_keys if k not in position]
            extra = sorted(set(out_keys) - set(ref_keys))
            if absent or extra or len(out_keys) != len(ref_keys):
                detail = (f"reference variant {absent[0]} is missing" if absent
                          else f"variant {extra[0]} is not in the reference" if extra
                          else "variants are repeated")
                raise InputFormatError(
                    path, f"{self.tool} output has {len(out_keys)} variants but the reference "
                    f"panel has {len(ref_keys)}: {detail}",
                    absent[0] if absent else extra[0] if extra else None)
            out = out.isel(variants=np.array([position[k] for k in ref_keys]))
        genotype = out["call_genotype"].values
        if (genotype < 0).any():
            v, s = np.argwhere((genotype < 0).any(axis=-1))[0]
            contig = out.attrs["contigs"][int(out["variant_contig"].values[v])]
            raise InputFormatError(path, f"{self.tool} left the genotype of sample {samples[s]} "
                                   "missing", f"{contig}:{int(out['variant_position'].values[v])}")
        # Genotyped markers carry GT only (every marker is genotyped in random-missingness
        # scenarios, and then Beagle writes no GP header at all): their GP is the hard call.
        hard = np.eye(3, dtype=np.float64)[genotype.sum(axis=-1)]
        if "call_genotype_probability" in out:
            raw = np.asarray(out["call_genotype_probability"].values, dtype=np.float64)
            absent = ~np.isfinite(raw).all(axis=-1)
            raw = np.where(absent[..., None], hard, raw)
        else:
            raw = hard
        try:
            gp = _normalised(raw)
        except ValueError as err:
            raise InputFormatError(path, str(err)) from None
        return self._result(genotype, gp, target)

    def _result(self, genotype: np.ndarray, gp: np.ndarray, target: xr.Dataset) -> xr.Dataset:
        assert self.reference is not None
        return imputed_dataset(self.reference, target, genotype, gp, phased=True,
                               attrs={"source": f"analysislib.genotype.hmm.{type(self).__name__}",
                                      "imputer": self.name})


def _java_env(java_mem: str) -> dict[str, str]:
    """Environment giving the JVM started by Debian's ``beagle`` script a heap limit."""
    options = " ".join(filter(None, [os.environ.get("JDK_JAVA_OPTIONS", ""), java_heap_option(java_mem)]))
    return {"JDK_JAVA_OPTIONS": options}


# --------------------------------------------------------------------------------------------
# Beagle
# --------------------------------------------------------------------------------------------


class BeagleImputer(_ExternalHMMImputer):
    """Beagle 5.4 imputation (Browning et al. 2018), through Debian's ``beagle`` script.

    Runs ``beagle ref=reference.vcf.gz gt=target.vcf.gz out=... map=... nthreads=N gp=true
    impute=true seed=S [ne=] [window=] [overlap=]`` and reads GT, DS and GP back. Missing
    genotypes at typed sites are filled by Beagle's phasing step (reported as hard calls).

    Parameters
    ----------
    threads
        ``nthreads``.
    ne
        Effective population size (``ne``; Beagle's default 100000 when None).
    window_cm, overlap_cm
        Window and overlap lengths in cM (Beagle's defaults 40 and 2 when None).
    seed
        Beagle's random seed.
    genetic_map
        ``None`` uses the panel's ``variant_genetic_position`` (cM) when it has one and
        otherwise no map (Beagle then assumes 1 cM = 1 Mb); or an ``msprime.RateMap`` (the
        simulation's map), an array of cM per reference variant, or a PLINK ``.map`` file.
    java_mem
        JVM heap limit (``-Xmx``, passed through ``JDK_JAVA_OPTIONS``).
    workdir
        Where scratch directories go (a fresh subdirectory per call; the system temp folder
        when None). They are removed afterwards unless ``keep_workdir``.
    keep_workdir
        Keep the scratch directories (for debugging); their paths are logged and recorded in
        ``last_run.details["workdir"]``.
    extra_args
        More ``key=value`` arguments for Beagle.

    Notes
    -----
    Costs are accounted as described in :mod:`analysislib.genotype.hmm`: ``fit`` only writes
    the panel VCF; ``last_run.seconds`` covers one ``impute`` call.

    Beagle merges markers closer than ``cluster=0.005`` cM into one HMM state. On dense
    simulated panels with short maps this costs accuracy: on 120 simulated samples over 1 Mb
    (1.6 cM, one SNP in three typed) the mean r² at untyped SNPs with MAF > 5% was 0.91 with the
    default and 0.95 with ``extra_args=["cluster=0"]`` (Minimac4: 0.96). The default is kept,
    as it is the tool's.
    """

    name = "beagle"
    tool = "beagle"

    def __init__(self, *, threads: int = 2, ne: float | None = None, window_cm: float | None = None,
                 overlap_cm: float | None = None, seed: int = 0, genetic_map: GeneticMap = None,
                 java_mem: str = "2g", workdir: str | os.PathLike[str] | None = None,
                 keep_workdir: bool = False, extra_args: Sequence[str] = ()) -> None:
        super().__init__(threads=threads, genetic_map=genetic_map, workdir=workdir,
                         keep_workdir=keep_workdir, extra_args=extra_args)
        self.ne, self.window_cm, self.overlap_cm = ne, window_cm, overlap_cm
        self.seed = int(seed)
        self.java_mem = check_java_heap(java_mem)

    def parameters(self) -> dict[str, Any]:
        """Configuration recorded with every result."""
        return {"tool": "beagle", "threads": self.threads, "ne": self.ne,
                "window_cm": self.window_cm, "overlap_cm": self.overlap_cm, "seed": self.seed,
                "genetic_map": self._map_source or _describe_map(self.genetic_map),
                "java_mem": self.java_mem, "extra_args": self.extra_args}

    def _run(self, reference_vcf: Path, target_vcf: Path, target: xr.Dataset, scratch: Path
             ) -> tuple[xr.Dataset, list[dict[str, Any]]]:
        self._typed_sites(target)  # warns about target sites Beagle will ignore
        run = _run_beagle(reference_vcf, target_vcf, scratch / "imputed", threads=self.threads,
                         seed=self.seed, map_path=self._map_path, java_mem=self.java_mem,
                         impute=True, extra=self._tuning_args())
        return self._read_output(scratch / "imputed.vcf.gz", target), [_step("beagle", run)]

    def _tuning_args(self) -> list[str]:
        named = {"ne": self.ne, "window": self.window_cm, "overlap": self.overlap_cm}
        return [f"{k}={v}" for k, v in named.items() if v is not None] + self.extra_args


def _run_beagle(reference_vcf: Path, target_vcf: Path, out_prefix: Path, *, threads: int,
               seed: int, map_path: Path | None, java_mem: str, impute: bool,
               extra: Sequence[str] = ()) -> ToolRun:
    """One Beagle run writing ``out_prefix.vcf.gz`` (GT:DS:GP when imputing)."""
    command = ["beagle", f"ref={reference_vcf}", f"gt={target_vcf}", f"out={out_prefix}",
               f"nthreads={threads}", f"seed={seed}", f"impute={str(impute).lower()}"]
    if impute:
        command.append("gp=true")
    if map_path is not None:
        command.append(f"map={map_path}")
    return run_tool([*command, *extra], env=_java_env(java_mem),
                    stderr_path=out_prefix.with_suffix(".stderr"), fatal_stderr=JAVA_FATAL_STDERR,
                    fatal_grace=2.0)


def _describe_map(genetic_map: GeneticMap) -> str:
    if genetic_map is None:
        return "variant_genetic_position if present"
    if isinstance(genetic_map, (str, os.PathLike)):
        return str(genetic_map)
    return "rate_map" if hasattr(genetic_map, "get_cumulative_mass") else "array"


# --------------------------------------------------------------------------------------------
# Minimac4
# --------------------------------------------------------------------------------------------


class Minimac4Imputer(_ExternalHMMImputer):
    """Minimac4 4.1.2 imputation (Das et al. 2016) of phased targets.

    ``fit`` compresses the panel (``minimac4 --compress-reference reference.vcf.gz -o
    reference.msav``); ``impute`` runs ``minimac4 reference.msav target.vcf.gz -f GT,DS,GP
    -O vcf.gz -o imputed.vcf.gz -t N [-m map]`` and reads GT, DS and GP back.

    Parameters
    ----------
    threads
        ``--threads`` (and Beagle's ``nthreads`` when pre-phasing).
    genetic_map
        As for :class:`BeagleImputer`; passed with ``-m`` at imputation time.
    prephase
        ``"auto"`` pre-phases the target with Beagle (``impute=false``, same panel and map)
        when any typed genotype is missing or unphased, which Minimac4 cannot take (see the
        module notes); ``"always"`` always does; ``"never"`` raises ``ValueError`` for such
        targets.
    restore_typed
        Report the observed genotypes at typed sites (GP one-hot), as Beagle does, instead of
        Minimac4's HMM re-estimate there. Calls that were missing keep Minimac4's output.
    seed, java_mem
        Beagle's seed and heap limit, for pre-phasing.
    workdir, keep_workdir, extra_args
        As for :class:`BeagleImputer` (``extra_args`` go to the Minimac4 imputation command).

    Notes
    -----
    The panel must hold one chromosome (Minimac4 imputes one at a time). The compression in
    ``fit`` is a once-per-panel cost recorded in ``last_run.details["fit_seconds"]`` and
    ``["fit_peak_memory_mb"]``, not in ``last_run.seconds``, which covers one ``impute`` call
    (pre-phasing included).
    """

    name = "minimac4"
    tool = "minimac4"

    def __init__(self, *, threads: int = 2, genetic_map: GeneticMap = None,
                 prephase: Literal["auto", "always", "never"] = "auto",
                 restore_typed: bool = True, seed: int = 0, java_mem: str = "2g",
                 workdir: str | os.PathLike[str] | None = None, keep_workdir: bool = False,
                 extra_args: Sequence[str] = ()) -> None:
        super().__init__(threads=threads, genetic_map=genetic_map, workdir=workdir,
                         keep_workdir=keep_workdir, extra_args=extra_args)
        if prephase not in ("auto", "always", "never"):
            raise InvalidArgumentError(f"prephase must be 'auto', 'always' or 'never', not {prephase!r}")
        self.prephase = prephase
        self.restore_typed = restore_typed
        self.seed = int(seed)
        self.java_mem = check_java_heap(java_mem)

    def parameters(self) -> dict[str, Any]:
        """Configuration recorded with every result."""
        return {"tool": "minimac4", "threads": self.threads, "prephase": self.prephase,
                "restore_typed": self.restore_typed, "seed": self.seed,
                "genetic_map": self._map_source or _describe_map(self.genetic_map),
                "extra_args": self.extra_args}

    def fit(self, reference: xr.Dataset) -> Self:
        """Check the panel (one chromosome), write it and compress it to ``.msav``."""
        contigs = np.unique(np.asarray(reference["variant_contig"].values))
        if contigs.size > 1:
            names = [reference.attrs["contigs"][i] for i in contigs]
            raise InvalidArgumentError(f"Minimac4 imputes one chromosome at a time; the panel holds "
                             f"{names}. Fit one imputer per chromosome.")
        super().fit(reference)
        return self

    def _prepare_reference(self, fit_dir: Path) -> list[dict[str, Any]]:
        run = run_tool(["minimac4", "--compress-reference", fit_dir / "reference.vcf.gz",
                        "-o", fit_dir / "reference.msav"])
        return [_step("minimac4 --compress-reference", run)]

    def _run(self, reference_vcf: Path, target_vcf: Path, target: xr.Dataset, scratch: Path
             ) -> tuple[xr.Dataset, list[dict[str, Any]]]:
        assert self._fit_dir is not None
        steps: list[dict[str, Any]] = []
        found, ref_index = self._typed_sites(target)
        gt = np.asarray(target["call_genotype"].values)[found]
        observed = (gt >= 0).all(axis=-1)
        phased = (np.asarray(target["call_genotype_phased"].values)[found]
                  if "call_genotype_phased" in target else np.zeros(observed.shape, bool))
        needs_phasing = bool((~observed).any() or (~phased & observed).any())
        if needs_phasing and self.prephase == "never":
            raise InvalidArgumentError("the target has missing or unphased genotypes at typed sites, "
                             "which Minimac4 cannot take; use prephase='auto'")
        given_gt = gt
        if self.prephase == "always" or (needs_phasing and self.prephase == "auto"):
            run = _run_beagle(reference_vcf, target_vcf, scratch / "prephased",
                             threads=self.threads, seed=self.seed, map_path=self._map_path,
                             java_mem=self.java_mem, impute=False)
            steps.append(_step("beagle prephasing", run))
            target_vcf = scratch / "prephased.vcf.gz"
            import pysam

            pysam.tabix_index(str(target_vcf), preset="vcf", force=True)
            given_gt = self._prephased_genotypes(target_vcf, target, found)
        command = ["minimac4", self._fit_dir / "reference.msav", target_vcf, "-f", "GT,DS,GP",
                   "-O", "vcf.gz", "-o", scratch / "imputed.vcf.gz", "-t", str(self.threads)]
        if self._map_path is not None:
            command += ["-m", self._map_path]
        run = run_tool([*command, *self.extra_args], stderr_path=scratch / "minimac4.stderr")
        steps.append(_step("minimac4", run))
        result = self._read_output(scratch / "imputed.vcf.gz", target)
        if self.restore_typed and found.size:
            result = _restore_typed(result, ref_index, given_gt, observed)
        return result, steps

    def _prephased_genotypes(self, path: Path, target: xr.Dataset, found: np.ndarray
                             ) -> np.ndarray:
        """Beagle's phased, filled genotypes at the typed sites ``found`` (target order)."""
        samples = [str(s) for s in target["sample_id"].values]
        phased = read_vcf(path, samples=samples, fields=("GT",)).load()
        order = {key: i for i, key in enumerate(sites_key(phased))}
        keys = sites_key(target)[found]
        absent = [k for k in keys if k not in order]
        if absent:
            raise InputFormatError(path, "Beagle's pre-phased target lacks a typed site",
                                   absent[0])
        return np.asarray(phased["call_genotype"].values)[[order[k] for k in keys]]


def _restore_typed(result: xr.Dataset, ref_index: np.ndarray, given_gt: np.ndarray,
                   observed: np.ndarray) -> xr.Dataset:
    """Put the genotypes given to the tool back at typed sites where the input was observed."""
    gt = result["call_genotype"].values.copy()
    gp = result["call_genotype_probability"].values.copy()
    rows, cols = np.nonzero(observed)
    sites = ref_index[rows]
    gt[sites, cols] = given_gt[rows, cols]
    count = given_gt[rows, cols].sum(axis=-1)
    gp[sites, cols] = np.eye(3, dtype=np.float32)[count]
    result = result.copy()
    result["call_genotype"] = result["call_genotype"].copy(data=gt)
    result["call_genotype_probability"] = result["call_genotype_probability"].copy(data=gp)
    result["call_dosage"] = result["call_dosage"].copy(
        data=(gp[..., 1] + 2 * gp[..., 2]).astype(np.float32))
    return result
