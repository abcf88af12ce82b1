"""Atomic file output: write to a temporary sibling, then rename into place.

Used by every writer in analysislib so that an interrupted or failed write never leaves a
half-written file where a complete one is expected.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_output"]


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], companions: tuple[str, ...] = (), *,
                  keep_suffix: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds.

    Parameters
    ----------
    path
        Final destination.
    companions
        Suffixes of companion files written next to the temporary file (for example ``".tbi"``
        for a tabix index). They are renamed into place before the main file (so the main file
        never appears without them), or removed on failure.
    keep_suffix
        Give the temporary file the destination's suffixes (``.NAME.XXXX.tmp.vcf.gz``) for tools
        that sniff them (default). With False its name ends in ``.tmp`` (``.NAME.XXXX.tmp``), so
        a reader globbing ``*.parquet`` never picks up a temporary left by a killed writer.

    Yields
    ------
    Path
        Where to write: a hidden sibling of ``path`` (its name starts with a dot).
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(final.suffixes) if keep_suffix else ""
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f".tmp{suffix}", dir=final.parent)
    except OSError as err:  # name the file asked for, not the temporary
        raise type(err)(err.errno, f"cannot write a file there ({err.strerror})", os.fspath(final)) from None
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_name, 0o666 & ~umask)  # mkstemp makes files owner-only; honour the umask instead
    tmp = Path(tmp_name)
    try:
        yield tmp
    except BaseException:
        for leftover in [tmp, *(Path(f"{tmp}{c}") for c in companions)]:
            leftover.unlink(missing_ok=True)
        raise
    for companion in companions:
        produced = Path(f"{tmp}{companion}")
        if produced.exists():
            os.replace(produced, f"{final}{companion}")
    os.replace(tmp, final)
