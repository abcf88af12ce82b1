"""ChromImpute (Ernst & Kellis 2015) behind the epigenomic imputer interface, via the Debian jar.

The eDICE paper compares against ChromImpute's leave-one-out Roadmap imputations (Results and
Methods, "Baselines"). The steps below are those of the tool's manual page (Ernst & Kellis
2015, *Nat Biotechnol*). This module runs the real tool, Debian package ``chromimpute`` 1.0.3,
on our tracks:

1. ``Convert``: each observed track is written as a gzipped bedGraph of −log10 p values
   (:func:`analysislib.io.tracks.write_bedgraph`; ChromImpute recognises the format only by the
   ``.bedgraph.gz`` ending), listed in a sample-mark table, and binned at the dataset's bin size
   (``-r``) over a chromosome-sizes file covering the bins;
2. ``ComputeGlobalDist``: for every observed track, other samples ranked by correlation of that
   mark;
3. ``GenerateTrainData``: once per target mark, feature vectors at ``num_samples`` random
   positions (``-f``) from the mark in the ``max_knn`` nearest samples and the other marks of each
   sample, over windows of ``window_narrow``/``window_wide`` bins (``-w``, ``-i``);
4. ``Train``: an ensemble of regression trees per target (sample, mark);
5. ``Apply``: the imputed track, read back from its fixed-step wig into arcsinh values.

Steps 1-2 run in :meth:`ChromImputeImputer.fit` (and again in ``predict`` if it is given other
observed tracks than were fitted); 3 runs once per mark and is cached; 4-5 run per target.

Facts checked on the installed jar (and relied on here):

- ``/usr/bin/ChromImpute`` is a symlink to ``/usr/share/java/chromimpute.jar``, which is not
  executable as a program without a binfmt handler, so the jar is run with ``java -jar``. It is
  found from that symlink, ``$ANALYSISLIB_CHROMIMPUTE_JAR`` or the Debian path.
- Imputing a track that is itself in the sample-mark table gives output identical to imputing it
  with the track removed from the table, when ``GenerateTrainData`` uses every position
  (``num_samples`` >= bins; tested). So the tool does not read a target's own values, and one
  workspace serves leave-one-track-out evaluation of every observed track (the way the Roadmap
  ChromImpute imputations the paper uses were made). With fewer positions than bins the random
  draw of training positions depends on the table, so the two runs differ slightly (on a test
  simulation, 7 % of bins by a few hundredths).
- ``Apply`` writes 0 for the first and last ``window_wide`` bins of each chromosome, where its
  wide feature window does not fit. These bins are returned as the tool gives them (0).
- Values in converted and imputed files are rounded to two decimals by the tool.
- Defaults of 1.0.3 (the ``full`` preset): 100,000 training positions, windows 20/400 bins,
  increments 1/20, 10 nearest samples, 1 bag, seed 100. The ``quick`` preset uses 10,000
  positions and windows 10/40 (for short test chromosomes); nothing else differs.

The tool is trained on −log10 p values (the Roadmap ``pval.signal`` scale it was built for) and
its output is converted to arcsinh, the scale every imputer here returns.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import xarray as xr

from analysislib.epigenome.imputer import EpigenomeImputer, Track
from analysislib.epigenome.tensor import observed_tracks, to_arcsinh, to_neglog10p
from analysislib.errors import (
    ExternalToolError,
    InputFormatError,
    InvalidArgumentError,
    ToolNotFoundError,
)
from analysislib.external import (
    JAVA_FATAL_STDERR,
    ToolRun,
    check_java_heap,
    find_tool,
    java_heap_option,
    run_tool,
)
from analysislib.genotype.imputer import ImputationRun
from analysislib.io.tracks import write_bedgraph
from analysislib.presets import Presets
from analysislib.results import array_checksum

__all__ = [
    "CHROMIMPUTE_JAR_ENV",
    "CHROMIMPUTE_PRESETS",
    "ChromImputeImputer",
    "chromimpute_available",
    "chromimpute_version",
    "find_chromimpute_jar",
    "read_fixedstep_wig",
]

CHROMIMPUTE_JAR_ENV = "ANALYSISLIB_CHROMIMPUTE_JAR"
_DEBIAN_JAR = Path("/usr/share/java/chromimpute.jar")

#: Settings of each preset (``full`` = the tool's own defaults in version 1.0.3).
CHROMIMPUTE_PRESETS: Presets[dict[str, int]] = Presets("ChromImpute", {
    "full": {"num_samples": 100_000, "window_narrow": 20, "window_wide": 400,
             "increment_narrow": 1, "increment_wide": 20, "max_knn": 10, "num_bags": 1},
    "quick": {"num_samples": 10_000, "window_narrow": 10, "window_wide": 40,
              "increment_narrow": 1, "increment_wide": 20, "max_knn": 10, "num_bags": 1},
})


def find_chromimpute_jar() -> Path:
    """Path of the ChromImpute jar: ``$ANALYSISLIB_CHROMIMPUTE_JAR``, the target of the
    ``ChromImpute`` command on ``PATH``, or the Debian location.

    Raises
    ------
    ToolNotFoundError
        Naming the Debian package ``chromimpute``.
    """
    override = os.environ.get(CHROMIMPUTE_JAR_ENV)
    if override:
        if not Path(override).is_file():
            raise ToolNotFoundError("ChromImpute", "chromimpute")
        return Path(override)
    on_path = shutil.which("ChromImpute")
    if on_path is not None:
        target = Path(os.path.realpath(on_path))
        if target.suffix == ".jar" and target.is_file():
            return target
    if _DEBIAN_JAR.is_file():
        return _DEBIAN_JAR
    raise ToolNotFoundError("ChromImpute", "chromimpute")


def chromimpute_available() -> bool:
    """Whether ChromImpute can run here: its jar is found and ``java`` is on ``PATH``."""
    try:
        find_chromimpute_jar()
    except ToolNotFoundError:
        return False
    return shutil.which("java") is not None


def chromimpute_version() -> str:
    """Version reported by ``java -jar chromimpute.jar Version`` (for example ``"1.0.3"``)."""
    run = run_tool(["java", "-jar", find_chromimpute_jar(), "Version"], capture_stdout=True)
    text = (run.stdout or "") + run.stderr_tail
    match = re.search(r"version\s+(\S+)", text)
    return match.group(1) if match else text.strip()


def read_fixedstep_wig(path: str | os.PathLike[str]) -> dict[str, tuple[int, int, np.ndarray]]:
    """Read a fixed-step wig (as ChromImpute writes): chromosome -> (start0, step, values).

    ``start0`` is the 0-based start of the first value; value ``k`` covers
    ``[start0 + k * step, start0 + k * step + span)``.

    Raises
    ------
    InputFormatError
        On a ``variableStep`` block, a malformed header or a non-numeric value.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    blocks: dict[str, tuple[int, int, list[float]]] = {}
    current: list[float] | None = None
    with opener(path, "rt", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            text = line.strip()
            if not text or text.startswith(("track", "browser", "#")):
                continue
            if text.startswith("variableStep"):
                raise InputFormatError(path, "variableStep wig is not supported",
                                       record=f"line {number}")
            if text.startswith("fixedStep"):
                fields = dict(part.split("=", 1) for part in text.split()[1:] if "=" in part)
                try:
                    chrom, start, step = fields["chrom"], int(fields["start"]), int(fields["step"])
                except (KeyError, ValueError):
                    raise InputFormatError(path, f"bad fixedStep header {text!r}",
                                           record=f"line {number}") from None
                if chrom in blocks:
                    raise InputFormatError(path, f"second fixedStep block for {chrom}",
                                           record=f"line {number}")
                current = []
                blocks[chrom] = (start - 1, step, current)
                continue
            if current is None:
                raise InputFormatError(path, "value before any fixedStep header",
                                       record=f"line {number}")
            try:
                current.append(float(text))
            except ValueError:
                raise InputFormatError(path, f"value {text!r} is not a number",
                                       record=f"line {number}") from None
    if not blocks:
        raise InputFormatError(path, "no fixedStep block")
    return {c: (s, st, np.asarray(v, dtype=np.float64)) for c, (s, st, v) in blocks.items()}


@dataclass
class _Workspace:
    """One Convert/ComputeGlobalDist run over one set of observed tracks."""

    root: Path
    checksum: str
    samples: dict[str, str]  # cell -> alias
    marks: dict[str, str]  # assay -> alias
    observed: set[tuple[str, str]]
    chroms: np.ndarray
    starts: np.ndarray
    bin_size: int
    trained_marks: set[str] = field(default_factory=set)

    @property
    def table(self) -> Path:
        return self.root / "samplemarktable.txt"

    @property
    def sizes(self) -> Path:
        return self.root / "chromsizes.txt"

    def path(self, name: str) -> Path:
        return self.root / name


class ChromImputeImputer(EpigenomeImputer):
    """ChromImpute 1.0.3 (Debian ``chromimpute``), run through ``java -jar``.

    Parameters
    ----------
    preset
        ``"quick"`` or ``"full"`` (see :data:`CHROMIMPUTE_PRESETS`); explicit arguments below
        override it.
    num_samples
        Training positions drawn by ``GenerateTrainData`` (``-f``).
    window_narrow, window_wide
        Feature window half-widths in bins (``-w``); ``Apply`` leaves ``window_wide`` bins at each
        chromosome end at 0.
    increment_narrow, increment_wide
        Offsets between features inside the windows, in bins (``-i``).
    max_knn
        Nearest samples used for features (``-k``).
    num_bags
        Bags of the ensemble (``-b``).
    seed
        Seed of ``GenerateTrainData`` (``-d``; the tool's default is 100).
    java_mem
        JVM heap, for example ``"2g"`` (``-Xmx``; see :func:`analysislib.external.check_java_heap`).
    workdir
        Parent folder of the scratch workspaces (default: the system temporary folder).
    keep_workdir
        Keep the workspaces (inputs, converted tracks, predictors, outputs) for inspection.
    timeout
        Seconds before any single ChromImpute step is killed.
    progress
        Show a tqdm bar over targets.

    Notes
    -----
    After :meth:`fit` and :meth:`predict`, :attr:`last_run` holds the wall time, the largest
    peak memory of the tool's JVM runs (MiB) and in ``details`` the time of each step and the
    tool version.
    """

    name: ClassVar[str] = "chromimpute"

    def __init__(  # noqa: PLR0913 - the tool's own options, each documented
                 self, preset: str = "quick", *, num_samples: int | None = None,
                 window_narrow: int | None = None, window_wide: int | None = None,
                 increment_narrow: int | None = None, increment_wide: int | None = None,
                 max_knn: int | None = None, num_bags: int | None = None, seed: int = 100,
                 java_mem: str = "2g", workdir: str | os.PathLike[str] | None = None,
                 keep_workdir: bool = False, timeout: float | None = None,
                 progress: bool = False) -> None:
        super().__init__()
        preset = CHROMIMPUTE_PRESETS.canonical(preset)  # PresetError for an unknown name
        settings = dict(CHROMIMPUTE_PRESETS[preset])
        given = {"num_samples": num_samples, "window_narrow": window_narrow,
                 "window_wide": window_wide, "increment_narrow": increment_narrow,
                 "increment_wide": increment_wide, "max_knn": max_knn, "num_bags": num_bags}
        settings.update({k: int(v) for k, v in given.items() if v is not None})
        for key, value in settings.items():
            if value < 1:
                raise InvalidArgumentError(f"{key} must be >= 1, got {value}")
        self.preset = preset
        self.settings = settings
        self.seed = int(seed)
        self.java_mem = check_java_heap(java_mem)
        self.workdir = Path(workdir) if workdir is not None else None
        self.keep_workdir = keep_workdir
        self.timeout = timeout
        self.progress = progress
        self._workspace: _Workspace | None = None
        self._runs: list[tuple[str, ToolRun]] = []
        self._fit_details: dict[str, Any] = {}
        self._version: str | None = None

    def parameters(self) -> dict[str, Any]:
        """Preset, tool settings, seed and Java heap, recorded with results."""
        return {"preset": self.preset, **self.settings, "seed": self.seed,
                "java_mem": self.java_mem}

    # tool runs -------------------------------------------------------------------------------

    def _run(self, step: str, arguments: Sequence[Any], expect: Sequence[Path] | str,
             where: Path) -> ToolRun:
        """Run one ChromImpute step and check that it produced its outputs."""
        find_tool("java")
        jar = find_chromimpute_jar()
        command = ["java", java_heap_option(self.java_mem), "-jar", jar, step, *map(str, arguments)]
        run = run_tool(command, timeout=self.timeout, fatal_stderr=JAVA_FATAL_STDERR,
                       fatal_grace=2.0, stderr_path=where / f"{step}.stderr", tail_lines=20)
        self._runs.append((step, run))
        if isinstance(expect, str):
            missing = [] if any(where.glob(expect)) else [str(where / expect)]
        else:
            missing = [str(p) for p in expect if not p.exists()]
        if missing:
            raise ExternalToolError(run.command, run.returncode,
                                    f"ChromImpute {step} exited without writing "
                                    f"{', '.join(missing[:3])}\n{run.stderr_tail}")
        return run

    def _common_options(self) -> list[str]:
        s = self.settings
        return ["-w", str(s["window_narrow"]), str(s["window_wide"]),
                "-i", str(s["increment_narrow"]), str(s["increment_wide"]),
                "-k", str(s["max_knn"]), "-b", str(s["num_bags"])]

    # workspace -------------------------------------------------------------------------------

    @staticmethod
    def _checksum(ds: xr.Dataset) -> str:
        return array_checksum(ds["observed"].values, ds["signal"].values,
                              ds["bin_start"].values, ds["bin_chrom"].values.astype(str))

    def _build_workspace(self, ds: xr.Dataset) -> _Workspace:
        if "individual" in ds["signal"].dims:
            raise InvalidArgumentError("chromimpute: select one individual first")
        bin_size = int(ds.attrs.get("bin_size", 25))
        starts = np.asarray(ds["bin_start"].values, dtype=np.int64)
        chroms = np.asarray(ds["bin_chrom"].values).astype(str)
        if np.any(starts % bin_size):
            raise InvalidArgumentError(f"chromimpute: bin starts must be multiples of bin_size={bin_size} "
                             "(ChromImpute bins each chromosome from position 0)")
        tracks = [(str(c), str(a)) for c, a in observed_tracks(ds)]
        if not tracks:
            raise InvalidArgumentError("chromimpute: the dataset has no observed track")
        if self.workdir is not None:
            self.workdir.mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix="analysislib-chromimpute-", dir=self.workdir))
        samples = {str(c): f"S{i}" for i, c in enumerate(ds["cell"].values)}
        marks = {str(a): f"M{j}" for j, a in enumerate(ds["assay"].values)}
        space = _Workspace(root=root, checksum=self._checksum(ds), samples=samples, marks=marks,
                           observed=set(tracks), chroms=chroms, starts=starts, bin_size=bin_size)
        try:
            self._prepare(ds, space, tracks)
        except BaseException:
            if not self.keep_workdir:
                shutil.rmtree(root, ignore_errors=True)
            raise
        return space

    def _prepare(self, ds: xr.Dataset, space: _Workspace, tracks: list[tuple[str, str]]) -> None:
        """Write the inputs and run Convert and ComputeGlobalDist in ``space``."""
        samples, marks, bin_size = space.samples, space.marks, space.bin_size
        chroms, starts = space.chroms, space.starts
        inputs = space.path("input")
        inputs.mkdir()
        raw = to_neglog10p(ds)
        lines, names = [], []
        for cell, assay in tracks:
            name = f"{samples[cell]}_{marks[assay]}.bedgraph.gz"
            write_bedgraph(raw, inputs / name, cell=cell, assay=assay, scale="neglog10p",
                           bin_size=bin_size)
            lines.append(f"{samples[cell]}\t{marks[assay]}\t{name}\n")
            names.append(name)
        space.table.write_text("".join(lines))
        sizes = {}
        for chrom in dict.fromkeys(chroms.tolist()):
            sizes[chrom] = int(starts[chroms == chrom].max()) + bin_size
        space.sizes.write_text("".join(f"{c}\t{n}\n" for c, n in sizes.items()))
        res = ["-r", str(bin_size)]
        converted, distance = space.path("converted"), space.path("distance")
        first_chrom = next(iter(sizes))
        self._run("Convert", [*res, inputs, space.table, space.sizes, converted],
                  [converted / f"{first_chrom}_{name}.wig.gz" for name in names], space.root)
        self._run("ComputeGlobalDist", [*res, converted, space.table, space.sizes, distance],
                  [distance / f"{samples[c]}_{marks[a]}.txt" for c, a in tracks], space.root)

    def _drop_workspace(self) -> None:
        if self._workspace is not None and not self.keep_workdir:
            shutil.rmtree(self._workspace.root, ignore_errors=True)
        self._workspace = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._drop_workspace()

    @contextlib.contextmanager
    def _workspace_for(self, observed: xr.Dataset) -> Iterator[_Workspace]:
        """The fitted workspace when ``observed`` holds the fitted tracks, else a temporary one."""
        if self._workspace is not None and self._checksum(observed) == self._workspace.checksum:
            yield self._workspace
            return
        space = self._build_workspace(observed)
        try:
            yield space
        finally:
            if not self.keep_workdir:
                shutil.rmtree(space.root, ignore_errors=True)

    # interface -------------------------------------------------------------------------------

    def fit(self, ds: xr.Dataset) -> ChromImputeImputer:
        """Convert the observed tracks and compute global distances (steps 1-2)."""
        start = time.perf_counter()
        self._runs = []
        self._drop_workspace()
        if self._version is None:
            self._version = chromimpute_version()
        self.training_data = to_arcsinh(ds)
        self._workspace = self._build_workspace(self.training_data)
        self._fit_details = self._summary(time.perf_counter() - start)
        self.last_run = ImputationRun(seconds=time.perf_counter() - start,
                                      peak_memory_mb=self._fit_details["peak_memory_mb"],
                                      details=self._fit_details)
        return self

    def predict(self, targets: Sequence[Track], observed: xr.Dataset | None = None) -> xr.DataArray:
        """Impute ``targets`` (see :meth:`EpigenomeImputer.predict`); records tool costs."""
        self._runs = []
        start = time.perf_counter()
        result = super().predict(targets, observed)
        details = self._summary(time.perf_counter() - start)
        details["fit"] = self._fit_details
        self.last_run = ImputationRun(seconds=time.perf_counter() - start,
                                      peak_memory_mb=details["peak_memory_mb"], details=details)
        return result

    def _summary(self, seconds: float) -> dict[str, Any]:
        steps: dict[str, float] = {}
        for step, run in self._runs:
            steps[step] = steps.get(step, 0.0) + run.seconds
        peak = max((run.peak_memory_mb for _, run in self._runs), default=float("nan"))
        return {"seconds": seconds, "peak_memory_mb": peak, "tool_seconds": steps,
                "tool_runs": len(self._runs), "tool_version": self._version}

    def _predict(self, observed: xr.Dataset, targets: list[Track]) -> np.ndarray:
        mask = observed["observed"]
        for cell, assay in targets:
            donors = [str(c) for c in observed["cell"].values
                      if c != cell and bool(mask.sel(cell=c, assay=assay))]
            if not donors:
                raise InvalidArgumentError(f"chromimpute: assay {assay} is observed in no cell type other "
                                 f"than {cell}, so there is nothing to train {cell}.{assay} on")
        out = np.empty((len(targets), observed.sizes["bin"]), dtype=np.float32)
        with self._workspace_for(observed) as space:
            rows: Any = enumerate(targets)
            if self.progress:
                from tqdm.auto import tqdm

                rows = tqdm(list(rows), desc="ChromImpute targets")
            for row, (cell, assay) in rows:
                out[row] = self._impute_one(space, cell, assay)
        return out

    def _impute_one(self, space: _Workspace, cell: str, assay: str) -> np.ndarray:
        sample, mark = space.samples[cell], space.marks[assay]
        converted, distance = space.path("converted"), space.path("distance")
        traindata = space.path("traindata")
        res = ["-r", str(space.bin_size)]
        if mark not in space.trained_marks:
            self._run("GenerateTrainData",
                      [*res, "-f", self.settings["num_samples"], "-d", self.seed,
                       *self._common_options(), converted, distance, space.table, space.sizes,
                       traindata, mark],
                      f"traindata/traindata_{mark}_*", space.root)
            space.trained_marks.add(mark)
        predictors = space.path("predictors")
        self._run("Train", ["-k", self.settings["max_knn"], "-b", self.settings["num_bags"],
                            traindata, space.table, predictors, sample, mark],
                  f"predictors/classifier_{sample}_{mark}_*", space.root)
        output = space.path("output")
        chrom_names = list(dict.fromkeys(space.chroms.tolist()))
        files = [output / f"{chrom}_impute_{sample}_{mark}.wig.gz" for chrom in chrom_names]
        self._run("Apply", [*res, *self._common_options(), converted, distance, predictors,
                            space.table, space.sizes, output, sample, mark], files, space.root)
        values = np.full(space.starts.size, np.nan, dtype=np.float64)
        for chrom, path in zip(chrom_names, files, strict=True):
            blocks = read_fixedstep_wig(path)
            if chrom not in blocks:
                raise InputFormatError(path, f"ChromImpute output has no block for {chrom}")
            start0, step, track = blocks[chrom]
            on_chrom = np.flatnonzero(space.chroms == chrom)
            slot = (space.starts[on_chrom] - start0) // step
            inside = (slot >= 0) & (slot < track.size)
            values[on_chrom[inside]] = track[slot[inside]]
        if not self.keep_workdir:
            for path in files:
                path.unlink()
        return np.arcsinh(values).astype(np.float32)

    # convenience -----------------------------------------------------------------------------

    @property
    def workspace(self) -> Path | None:
        """Folder of the fitted workspace (kept until the imputer is refitted or deleted)."""
        return None if self._workspace is None else self._workspace.root
