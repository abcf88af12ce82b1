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
def atomic_output(path: str | os.PathLike[str], companions: tuple[str, ...] = ()) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds.

    Parameters
    ----------
    path
        Final destination.
    companions
        Suffixes of companion files written next to the temporary file (for example ``".tbi"``
        for a tabix index). They are renamed together with the main file, or removed on failure.

    Yields
    ------
    Path
        Where to write. It keeps the destination's suffixes so tools that sniff them still work.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(final.suffixes)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f".tmp{suffix}", dir=final.parent)
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
