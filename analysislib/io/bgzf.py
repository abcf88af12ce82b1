"""BGZF output with a tabix index built while writing.

BGZF (the SAM/BAM specification, section 4.1) is gzip cut into independent members of at most
64 KiB, so a reader can seek to a *virtual offset*: the compressed offset of a member shifted
left by 16 bits, plus an offset inside its uncompressed data. A tabix index (the tabix section
of the same specification) maps genomic intervals to virtual offsets.

:class:`BgzfVcfWriter` writes VCF text as BGZF and records each record's virtual offset as it
goes, so the ``.tbi`` needs no second pass over the file (``tabix -p vcf`` re-reads and
re-parses everything it indexes). At the fast levels (1-3) members are deflated with ISA-L (``isal``), several times
faster than zlib's fastest level, on a few threads at once. Readers (htslib, pysam, bcftools)
see an ordinary bgzipped, tabix-indexed VCF.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import os
import struct
import zlib
from pathlib import Path
from typing import Self

import numpy as np

from analysislib.errors import InvalidArgumentError

__all__ = ["BGZF_EOF", "BgzfVcfWriter", "bgzf_compress", "reg2bin"]

#: Uncompressed bytes per BGZF member, as htslib writes them (``BGZF_BLOCK_SIZE``).
BLOCK_DATA = 0xFF00
#: The empty member that ends every BGZF file (SAM specification 4.1.2).
BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")
_MEMBER_LIMIT = 1 << 16
_TABIX_VCF = 2  # tabix format code: VCF (1-based, end from REF or INFO/END)
_FIELDS_WINDOW = 128  # bytes of a record line searched for its first 8 tabs before a slow parse
_PSEUDO_BIN = 37450  # htslib's per-reference summary bin: offsets span, mapped/unmapped counts
_LINEAR_SHIFT = 14  # 16 kb windows of the linear index


def _member(data: bytes | memoryview, level: int) -> bytes:
    """One BGZF member holding ``data`` (at most :data:`BLOCK_DATA` bytes)."""
    from isal import isal_zlib  # its CRC-32 is the same number as zlib's, about 10x sooner

    if 1 <= level <= 3:
        deflated = isal_zlib.compress(data, 1, -15)
    else:
        packer = zlib.compressobj(level, zlib.DEFLATED, -15)
        deflated = packer.compress(data) + packer.flush()
    if len(deflated) + 26 > _MEMBER_LIMIT:  # incompressible: stored blocks always fit
        packer = zlib.compressobj(0, zlib.DEFLATED, -15)
        deflated = packer.compress(data) + packer.flush()
    size = len(deflated) + 25  # BSIZE: member length minus 1
    header = b"\x1f\x8b\x08\x04\x00\x00\x00\x00\x00\xff\x06\x00BC\x02\x00" + struct.pack("<H", size)
    return header + deflated + struct.pack("<II", isal_zlib.crc32(data), len(data))


def bgzf_compress(data: bytes, level: int = 1) -> bytes:
    """``data`` as a complete BGZF file (members of :data:`BLOCK_DATA` bytes and the EOF member)."""
    return b"".join(_member(data[i:i + BLOCK_DATA], level) for i in range(0, len(data), BLOCK_DATA)) + BGZF_EOF


def reg2bin(beg: np.ndarray | int, end: np.ndarray | int) -> np.ndarray:
    """Tabix/BAI bins of 0-based half-open intervals ``[beg, end)`` (SAM specification 5.3)."""
    beg, last = np.asarray(beg, dtype=np.int64), np.asarray(end, dtype=np.int64) - 1
    bins = np.zeros(np.broadcast(beg, last).shape, dtype=np.int64)
    for shift, first in ((26, 1), (23, 9), (20, 73), (17, 585), (14, 4681)):  # finest level wins
        same = (beg >> shift) == (last >> shift)
        bins = np.where(same, first + (beg >> shift), bins)
    return bins


def _reference_index(beg: np.ndarray, end: np.ndarray, start: np.ndarray, stop: np.ndarray) -> bytes:
    """The index entries of one contig's records (in file order, sorted by ``beg``).

    ``start``/``stop`` are each record's virtual offsets. Bins hold one chunk per run of
    consecutive records in the bin; the linear index holds, per 16 kb window, the first record
    overlapping it, empty windows taking the previous window's offset (the first record's
    before it), as htslib fills them.
    """
    bins = reg2bin(beg, end)
    run_starts = np.flatnonzero(np.r_[True, bins[1:] != bins[:-1]])
    run_stops = np.r_[run_starts[1:], len(bins)] - 1
    run_bins = bins[run_starts]
    order = np.argsort(run_bins, kind="stable")  # by bin, file order within a bin
    sorted_bins = run_bins[order]
    edges = np.r_[np.flatnonzero(np.r_[True, sorted_bins[1:] != sorted_bins[:-1]]), len(order)]
    parts = [struct.pack("<i", len(edges))]  # distinct bins + the pseudo-bin
    chunks = np.stack([start[run_starts[order]], stop[run_stops[order]]], axis=1).astype("<u8").tobytes()
    for lo, hi in itertools.pairwise(edges.tolist()):
        parts.append(struct.pack("<Ii", int(sorted_bins[lo]), hi - lo) + chunks[16 * lo:16 * hi])
    parts.append(struct.pack("<IiQQQQ", _PSEUDO_BIN, 2, int(start[0]), int(stop[-1]), len(beg), 0))
    first, last = beg >> _LINEAR_SHIFT, (end - 1) >> _LINEAR_SHIFT
    spans = last - first + 1
    windows = np.repeat(first, spans) + (np.arange(spans.sum()) - np.repeat(np.cumsum(spans) - spans, spans))
    linear = np.full(int(last.max()) + 1, np.iinfo(np.uint64).max, dtype=np.uint64)
    np.minimum.at(linear, windows, np.repeat(start, spans))
    filled = linear != np.iinfo(np.uint64).max
    previous = np.maximum.accumulate(np.where(filled, np.arange(len(linear)), -1))
    linear = np.where(previous >= 0, linear[np.maximum(previous, 0)], start[0]).astype("<u8")
    parts.append(struct.pack("<i", len(linear)) + linear.tobytes())
    return b"".join(parts)


class BgzfVcfWriter:
    """Write VCF text (header, then record lines in any pieces) as BGZF with a ``.tbi`` index.

    Records must be sorted by position within each contig and each contig's records must be
    contiguous, as tabix requires; otherwise :meth:`write` raises ValueError naming the file
    and record. :meth:`close` writes the EOF member and the index beside the file
    (``<path>.tbi``). Writes go to ``path`` directly: wrap it in
    :func:`~analysislib.io.atomic.atomic_output` for an all-or-nothing file.

    Parameters
    ----------
    path
        The ``.vcf.gz`` to write.
    level
        Compression level 0-9. Levels 1-3 use ISA-L's level 1 (about 4x faster than zlib's
        level 1 and about 5% smaller); 0 and 4-9 use zlib at that level, as htslib does.
        ISA-L may deflate the same text in different, equivalent ways from one run to the next
        (the text is the same; compare files by their text, not their bytes); zlib's levels
        give the same bytes every time.
    threads
        Members deflated at once.
    """

    def __init__(self, path: str | os.PathLike[str], *, level: int = 1, threads: int = 1) -> None:
        if not 0 <= level <= 9:
            raise InvalidArgumentError("compression level must be between 0 and 9")
        self.path = Path(path)
        self.level = level
        self._file = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        self._pool = concurrent.futures.ThreadPoolExecutor(threads) if threads > 1 else None
        self._pending = bytearray()  # uncompressed bytes not yet in a member
        self._pending_start = 0  # uncompressed offset of _pending[0]
        self._member_starts: list[int] = []  # compressed offset of each member
        self._compressed = 0
        self._partial = b""  # an unfinished line carried to the next write
        self._in_header = True
        self._record_no = 0
        # per write: CHROM of each record, 0-based start and end, uncompressed start and stop
        self._sites: list[tuple[list[bytes], np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self._closed = False

    # -- text --------------------------------------------------------------------------------

    def write(self, text: bytes) -> None:
        """Append header or record text; lines may be split across calls."""
        data = self._partial + text if self._partial else bytes(text)
        cut = data.rfind(b"\n") + 1
        self._partial = data[cut:]
        if cut:
            self._lines(data[:cut])

    def write_records(self, text: bytes, chroms: list[bytes], beg: np.ndarray, end: np.ndarray,
                      lengths: np.ndarray) -> None:
        """Append whole record lines whose sites the caller knows, so they are not parsed again.

        ``text`` is ``len(lengths)`` record lines of ``lengths`` bytes each, every one ending in a
        newline; ``chroms``, ``beg`` and ``end`` are each record's CHROM and 0-based start and
        end, as :meth:`write` would parse them (end from REF, or INFO/END). The index is the one
        :meth:`write` builds from the same text. Call after the header, between whole lines.
        """
        lengths = np.asarray(lengths, dtype=np.int64)
        ends = np.cumsum(lengths)
        beg, end = np.asarray(beg, dtype=np.int64), np.asarray(end, dtype=np.int64)
        if self._partial or not len(text) or ends[-1] != len(text) or not (
                len(chroms) == len(beg) == len(end) == len(lengths)) or (beg < 0).any() or (end <= beg).any():
            raise InvalidArgumentError(f"{self.path}: write_records needs whole lines with one site each")
        if (np.frombuffer(text, dtype=np.uint8)[ends - 1] != 10).any():
            raise InvalidArgumentError(f"{self.path}: write_records needs lines that end in a newline")
        base = self._pending_start + len(self._pending)
        self._in_header = False
        self._note_sites(list(chroms), beg, end, ends - lengths + base, ends + base)
        self._flush(final=False, text=text)

    def _note_sites(self, chroms: list[bytes], beg: np.ndarray, end: np.ndarray, ustart: np.ndarray,
                    ustop: np.ndarray) -> None:
        """Keep the index entries of records just queued (uncompressed start and stop of each)."""
        self._record_no += len(beg)
        self._sites.append((chroms, beg, end, ustart, ustop))

    def _lines(self, data: bytes, final: bool = False) -> None:
        """Queue whole lines for compression and note where each record is."""
        base = self._pending_start + len(self._pending)
        buf = np.frombuffer(data, dtype=np.uint8)
        ends = np.flatnonzero(buf == 10) + 1
        if final and data[-1:] != b"\n":
            ends = np.r_[ends, len(data)]
        starts = np.r_[0, ends[:-1]]
        if self._in_header:  # header lines ('#') come before the first record
            records = np.flatnonzero(buf[starts] != ord("#"))
            if len(records):
                self._in_header = False
                starts, ends = starts[records[0]:], ends[records[0]:]
            else:
                starts = ends = starts[:0]
        if len(starts):
            self._note_sites(*self._parse_sites(data, buf, starts, ends), starts + base, ends + base)
        self._flush(final=False, text=data)

    def _parse_sites(self, data: bytes, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray
                     ) -> tuple[list[bytes], np.ndarray, np.ndarray]:
        """CHROM, 0-based start and end (REF length or INFO/END) of record lines, vectorised."""
        n = len(starts)
        cells = starts[:, None] + np.arange(_FIELDS_WINDOW)
        window = np.where(cells < ends[:, None], buf[np.minimum(cells, len(buf) - 1)], 0)
        row, column = np.nonzero(window == 9)
        counts = np.bincount(row, minlength=n)
        first = np.r_[0, np.cumsum(counts)[:-1]]
        fast = counts >= 8  # CHROM..INFO within the window
        tabs = np.zeros((n, 8), dtype=np.int64)
        tabs[fast] = column[first[fast][:, None] + np.arange(8)]
        width = tabs[:, 1] - tabs[:, 0] - 1
        fast &= (width >= 1) & (width <= 18)
        digit_cells = np.minimum(starts[:, None] + tabs[:, :1] + 1 + np.arange(18), len(buf) - 1)
        digits = buf[digit_cells].astype(np.int64) - ord("0")
        used = np.arange(18) < width[:, None]
        fast &= ((digits >= 0) & (digits <= 9) | ~used).all(axis=1)
        powers = 10 ** np.maximum(width[:, None] - 1 - np.arange(18), 0)
        pos = np.where(used, digits * powers, 0).sum(axis=1)
        plain_info = (tabs[:, 7] - tabs[:, 6] == 2) & (buf[np.minimum(starts + tabs[:, 6] + 1, len(buf) - 1)] == ord("."))
        fast &= plain_info  # an INFO other than "." may hold END=
        beg = pos - 1
        end = beg + np.maximum(tabs[:, 3] - tabs[:, 2] - 1, 1)
        chroms = [data[s:s + t] for s, t in zip(starts.tolist(), tabs[:, 0].tolist(), strict=True)]
        for i in np.flatnonzero(~fast).tolist():
            chroms[i], beg[i], end[i] = self._parse_site_slowly(data[starts[i]:ends[i]], self._record_no + i + 1)
        return chroms, beg, end

    def _parse_site_slowly(self, line: bytes, record_no: int) -> tuple[bytes, int, int]:
        fields = line.rstrip(b"\n").split(b"\t", 8)
        try:
            beg = int(fields[1]) - 1
            end = beg + max(len(fields[3]), 1)
            for item in fields[7].split(b";"):
                if item.startswith(b"END="):
                    end = max(end, int(item[4:]))
        except (IndexError, ValueError):
            raise InvalidArgumentError(f"{self.path}: record {record_no} is not a VCF record line (CHROM, POS, "
                             "ID, REF, ALT, QUAL, FILTER and INFO separated by tabs)") from None
        if beg < 0:
            raise InvalidArgumentError(f"{self.path}: record {record_no}: POS must be at least 1")
        return fields[0], beg, end

    # -- members -----------------------------------------------------------------------------

    def _flush(self, final: bool, text: bytes | bytearray = b"") -> None:
        """Deflate and write every full block of the pending bytes followed by ``text`` (and, if
        ``final``, the partial block left); keep the rest pending (less than a block).

        Members are deflated from views of ``text``, not from a copy of it: with the pending
        bytes always shorter than a block, only the first member joins the two.
        """
        total = len(self._pending) + len(text)
        count = total // BLOCK_DATA + (1 if final and total % BLOCK_DATA else 0)
        if not count:
            self._pending += text
            return
        source = memoryview(text)
        head = BLOCK_DATA - len(self._pending)  # bytes of text that complete the first block
        rest = head + (count - 1) * BLOCK_DATA  # where the bytes left pending start in text
        blocks = [bytes(self._pending) + source[:head],
                  *(source[start:start + BLOCK_DATA] for start in range(head, rest, BLOCK_DATA))]
        members = (self._pool.map(_member, blocks, [self.level] * count) if self._pool
                   else [_member(block, self.level) for block in blocks])
        for member in members:
            self._member_starts.append(self._compressed)
            self._file.write(member)
            self._compressed += len(member)
        self._pending = bytearray(source[rest:])
        self._pending_start += min(count * BLOCK_DATA, total)

    def _virtual(self, offsets: np.ndarray) -> np.ndarray:
        """Virtual offsets of uncompressed offsets (each within a written member, or the end)."""
        member = offsets // BLOCK_DATA
        starts = np.asarray([*self._member_starts, self._compressed], dtype=np.uint64)
        return (starts[member] << np.uint64(16)) | (offsets - member * BLOCK_DATA).astype(np.uint64)

    # -- index -------------------------------------------------------------------------------

    def _index(self) -> bytes:
        """The ``.tbi`` content (before BGZF compression) of the records written."""
        names: list[str] = []
        parts: list[bytes] = []
        if self._sites:
            chroms = [c for part in self._sites for c in part[0]]
            beg, end, ustart, ustop = (np.concatenate([part[k] for part in self._sites]) for k in range(1, 5))
            start, stop = self._virtual(ustart), self._virtual(ustop)
            changes = [0, *(i for i in range(1, len(chroms)) if chroms[i] != chroms[i - 1]), len(chroms)]
            for lo, hi in itertools.pairwise(changes):
                name = chroms[lo].decode(errors="replace")
                if name in names:
                    raise InvalidArgumentError(f"{self.path}: record {lo + 1} ({name}:{beg[lo] + 1}): contig {name} "
                                     "appears again after other contigs; tabix needs each contig's "
                                     "records together")
                unsorted = np.flatnonzero(np.diff(beg[lo:hi]) < 0)
                if len(unsorted):
                    i = lo + int(unsorted[0]) + 1
                    raise InvalidArgumentError(f"{self.path}: record {i + 1} ({name}:{beg[i] + 1}) is before the "
                                     "previous record; tabix needs records sorted by position")
                names.append(name)
                parts.append(_reference_index(beg[lo:hi], end[lo:hi], start[lo:hi], stop[lo:hi]))
        packed_names = b"".join(name.encode() + b"\0" for name in names)
        head = b"TBI\x01" + struct.pack("<8i", len(names), _TABIX_VCF, 1, 2, 0, ord("#"), 0, len(packed_names))
        return head + packed_names + b"".join(parts)

    def close(self) -> None:
        """Finish the file (last member and EOF) and write ``<path>.tbi``."""
        if self._closed:
            return
        try:
            if self._partial:  # a last line without its newline
                self._lines(self._partial, final=True)
                self._partial = b""
            self._flush(final=True)
            self._file.write(BGZF_EOF)
            index = self._index()
        finally:
            self._closed = True
            self._file.close()
            if self._pool is not None:
                self._pool.shutdown()
        Path(f"{self.path}.tbi").write_bytes(bgzf_compress(index))

    def abort(self) -> None:
        """Stop without finishing the file (the caller discards it)."""
        if not self._closed:
            self._closed = True
            self._file.close()
            if self._pool is not None:
                self._pool.shutdown(cancel_futures=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()
