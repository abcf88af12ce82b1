"""File checksums: the sha256 of a file, memoised within the process while the file is unchanged.

Standard library only, so that checking a model bundle (``analysislib impute``) does not import
the data catalog's YAML parser; :mod:`analysislib.catalog` re-exports :func:`sha256_of`.
"""

from __future__ import annotations

import hashlib
import os
import time

__all__ = ["sha256_of"]

_VERIFIED: dict[tuple[str, int, int, int, int, int], str] = {}
#: A file changed this recently (ns) may still change within one timestamp tick: not memoised.
_RACY_NS = 2 * 10**9


def _stat_key(path: str | os.PathLike[str], stat: os.stat_result) -> tuple[str, int, int, int, int, int]:
    return (os.path.abspath(path), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns,
            stat.st_ctime_ns)


def sha256_of(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, memoised within the process while the file is unchanged.

    The memo key is (absolute path, device, inode, size, mtime, ctime) of the open file (one
    ``fstat``; device and inode identify the file, so the path is not resolved). mtime alone
    can be put back after an in-place edit (``touch -d``, ``rsync -t``, ``cp -p``), but
    ctime cannot: the kernel sets it to the current time on every write and on every mtime
    change, and a replaced file has a new inode. Re-hashing on every call would be exact too,
    but costs a full read of every catalog file each time a notebook opens a dataset. As in
    git's "racily clean" rule, a file whose mtime or ctime lies within two seconds of the hash
    is not memoised, since a write within the same timestamp tick could leave both unchanged.
    """
    with open(path, "rb") as handle:
        key = _stat_key(path, os.fstat(handle.fileno()))
        if key in _VERIFIED:
            return _VERIFIED[key]
        started = time.time_ns()
        digest = hashlib.sha256()
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
        unchanged = _stat_key(path, os.fstat(handle.fileno())) == key
    if unchanged and max(key[4], key[5]) < started - _RACY_NS:
        _VERIFIED[key] = digest.hexdigest()
    return digest.hexdigest()
