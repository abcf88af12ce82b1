"""File checksums: the sha256 of a file, memoised within the process while the file is unchanged.

Standard library only, so that checking a model bundle (``analysislib impute``) does not import
the data catalog's YAML parser; :mod:`analysislib.catalog` re-exports :func:`sha256_of`.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import time

__all__ = ["read_with_sha256", "sha256_of"]

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
    return _hashed(path, keep=False)[1]


def read_with_sha256(path: str | os.PathLike[str]) -> tuple[bytes, str]:
    """The bytes of a file and their hex sha256 (memoised as by :func:`sha256_of`), in one read.

    For small files that are both checked and parsed, such as a model bundle's tile tables.
    """
    data, digest = _hashed(path, keep=True)
    assert data is not None
    return data, digest


def _hashed(path: str | os.PathLike[str], *, keep: bool) -> tuple[bytes | None, str]:
    """The sha256 of a file (memo of :func:`sha256_of`), and its bytes when ``keep``.

    The file is hashed in one ``update`` over the whole file (read, or memory-mapped when the
    bytes are not kept): hashlib then releases the GIL once for all of it, so a hash on another
    thread runs beside Python code instead of waiting for the GIL after every block.
    """
    with open(path, "rb") as handle:
        stat = os.fstat(handle.fileno())
        key = _stat_key(path, stat)
        if key in _VERIFIED:
            return (handle.read() if keep else None), _VERIFIED[key]
        started = time.time_ns()
        if keep or stat.st_size == 0:
            data = handle.read()
            digest = hashlib.sha256(data).hexdigest()
        else:
            data = None
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                digest = hashlib.sha256(mapped).hexdigest()
        unchanged = _stat_key(path, os.fstat(handle.fileno())) == key
    if unchanged and max(key[4], key[5]) < started - _RACY_NS:
        _VERIFIED[key] = digest
    return data, digest
