"""VCF/BCF input and output for sgkit-style genotype datasets.

Reads GT (phased or unphased), DS and GP from VCF, bgzipped VCF or BCF into the dataset built by
:func:`analysislib.genotype.dataset.create_genotype_dataset`, and writes such datasets back as
bgzipped, indexed VCF or BCF. It is the data layer of the genotype papers we reproduce: Dias et
al. 2022, Materials and methods, "Training data" (biallelic SNPs only: multi-allelic sites removed
with bcftools, hence ``multiallelic=``) and "Imputation data format" (imputed genotypes exported
as VCF with class probabilities, hence GT:DS:GP on write); BiU-Net §5.2 "Data preprocessing"
(the genotype matrix extracted from VCF).

How reading works
-----------------
pysam opens the file and parses the header (samples, contigs). Records are then read as text
lines (BCF records are rendered to text by htslib) and their sample columns are parsed in blocks
with NumPy byte operations: the per-call GT, DS and GP strings never become Python objects.
Records the vectorised parser cannot take (multi-digit allele indices, dropped trailing FORMAT
fields, malformed values) go through a plain per-call parser, which also writes the error
messages.

A large file, or any file when ``chunk_variants`` is given, is read lazily: one sequential pass
checks every record's site columns (order, duplicates, multi-allelic sites, column counts) and
notes the bgzf virtual offset at which each chunk of records starts; each dask chunk later seeks
to its offset and parses its records. Seeking by offset needs no tabix/CSI index, cannot pick up
records from the neighbouring chunk (a region query would, for deletions overlapping the region
start or several records at one position) and works for BCF and bgzipped VCF alike. Plain-gzip
(not bgzf) files cannot seek, so they are read eagerly and wrapped in dask.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import itertools
import logging
import math
import os
import tempfile
import threading
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from analysislib import variables
from analysislib.errors import InputFormatError, InvalidArgumentError
from analysislib.io.atomic import atomic_output
from analysislib.io.bgzf import BgzfVcfWriter

if TYPE_CHECKING:
    import xarray as xr

__all__ = [
    "LAZY_THRESHOLD_BYTES",
    "VCFArrays",
    "check_diploid_panel",
    "check_same_samples",
    "header_text",
    "read_vcf",
    "read_vcf_arrays",
    "records_output",
    "write_vcf",
]

logger = logging.getLogger(__name__)

#: Files larger than this (bytes on disk) are read lazily with dask when ``chunk_variants`` is None.
LAZY_THRESHOLD_BYTES = 64 * 2**20

SUPPORTED_FIELDS = ("GT", "DS", "GP")
_BLOCK_BYTES = 16 * 2**20  # text parsed at once by the vectorised parser
_TARGET_CHUNK_CALLS = 64 * 2**20  # genotype entries per dask chunk when the size is chosen for you
_BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")

TAB, COLON, COMMA, DOT, PIPE, SLASH, ZERO, NINE, NEWLINE = (ord(c) for c in "\t:,.|/09\n")

Multiallelic = Literal["error", "split", "drop"]


# --------------------------------------------------------------------------------------------
# Opening files
# --------------------------------------------------------------------------------------------


_quiet_lock = threading.Lock()
_quiet_state = {"depth": 0, "saved": 0}


@contextlib.contextmanager
def _quiet_htslib() -> Iterator[None]:
    """Silence htslib's own stderr messages (we raise errors that say more); thread-safe."""
    import pysam

    with _quiet_lock:
        if _quiet_state["depth"] == 0:
            _quiet_state["saved"] = pysam.set_verbosity(0)
        _quiet_state["depth"] += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_state["depth"] -= 1
            if _quiet_state["depth"] == 0:
                pysam.set_verbosity(_quiet_state["saved"])


@dataclass(frozen=True)
class _Layout:
    """What a file is and how its records can be reached."""

    path: str
    container: Literal["bcf", "bgzf", "gzip", "plain"]
    samples: tuple[str, ...]
    header_contigs: tuple[str, ...]
    contig_lengths: tuple[int | None, ...]
    size: int
    mtime_ns: int


def _inspect(path: Path) -> _Layout:
    """Open ``path`` with pysam, check it is VCF/BCF and read its header."""
    if not path.exists():
        raise FileNotFoundError(f"no such VCF/BCF file: {path}")
    if path.is_file() and path.stat().st_size == 0:
        raise InputFormatError(path, "not a readable VCF/BCF file: empty file (0 bytes)")
    with open(path, "rb") as handle:
        magic = handle.read(18)
    is_gzip = magic[:2] == b"\x1f\x8b"
    is_bgzf = is_gzip and len(magic) >= 16 and magic[3] & 4 and magic[12:14] == b"BC"
    if is_bgzf:
        with open(path, "rb") as handle:
            handle.seek(max(0, path.stat().st_size - len(_BGZF_EOF)))
            if handle.read() != _BGZF_EOF:
                raise InputFormatError(
                    path, "truncated file: the BGZF end-of-file marker is missing "
                    "(the download or copy was probably cut short)")
    try:
        if is_gzip and not is_bgzf:
            # htslib cannot open plain-gzip VCF (it needs to seek); give it the header alone.
            with tempfile.TemporaryDirectory() as scratch:
                header_only = Path(scratch) / "header.vcf"
                header_only.write_bytes(_gzip_header(path))
                fmt, samples, names, lengths = _pysam_header(header_only)
        else:
            fmt, samples, names, lengths = _pysam_header(path)
    except (ValueError, OSError, NotImplementedError, AssertionError) as err:
        # htslib says only "does not have valid header"; find the damaged block or header line.
        reason = _diagnose_unreadable(path, bool(is_bgzf), is_gzip)
        raise InputFormatError(path, reason or f"not a readable VCF/BCF file ({err})") from None
    if fmt not in ("VCF", "BCF"):
        raise InputFormatError(path, f"not a VCF/BCF file (htslib detected {fmt})")
    if len(set(samples)) != len(samples):
        raise InputFormatError(path, "duplicate sample IDs in the #CHROM header line")
    if fmt == "BCF":
        container: Literal["bcf", "bgzf", "gzip", "plain"] = "bcf"
    else:
        container = "bgzf" if is_bgzf else "gzip" if is_gzip else "plain"
    stat = path.stat()
    return _Layout(str(path), container, samples, names, lengths, stat.st_size, stat.st_mtime_ns)


def _pysam_header(path: Path) -> tuple[str, tuple[str, ...], tuple[str, ...], tuple[int | None, ...]]:
    """Format, samples, contig names and lengths, as htslib parses the header.

    Contigs are taken from the ``##contig`` header records in file order, not from pysam's
    ``header.contigs``: that mapping fails with a bare AssertionError when the lines carry
    ``IDX=`` values with gaps (as in htslib's ``test/modhdr.vcf.gz``), which htslib and
    bcftools accept.
    """
    import pysam

    with _quiet_htslib(), pysam.VariantFile(str(path)) as vf:
        names: dict[str, None] = {}
        lengths: list[int | None] = []
        for record in vf.header.records:
            if record.type != "CONTIG" or record.get("ID") is None or str(record["ID"]) in names:
                continue
            names[str(record["ID"])] = None
            length = str(record.get("length") or "")
            lengths.append(int(length) if length.isdigit() else None)
        return (str(vf.format), tuple(str(s) for s in vf.header.samples), tuple(names),
                tuple(lengths))


_HEADER_LIMIT = 256 * 2**20  # header bytes examined when explaining why a file cannot be opened
_FIXED_COLUMNS = (b"#CHROM", b"POS", b"ID", b"REF", b"ALT", b"QUAL", b"FILTER", b"INFO")


def _bgzf_header_bytes(path: Path) -> bytes:
    """Decompress the BGZF blocks holding the header, checking each block's CRC32 and size.

    Stops after the block that ends the ``#CHROM`` line. Raises InputFormatError naming the
    byte offset of a damaged or cut block.
    """
    text = bytearray()
    offset = 0
    with open(path, "rb") as handle:
        while len(text) < _HEADER_LIMIT:
            head = handle.read(18)
            if not head:
                break
            if (len(head) < 18 or head[:4] != b"\x1f\x8b\x08\x04" or head[10:12] != b"\x06\x00"
                    or head[12:16] != b"BC\x02\x00"):
                raise InputFormatError(path, f"damaged BGZF block header at byte {offset} "
                                       "(the file is corrupt or cut short)")
            size = int.from_bytes(head[16:18], "little") + 1
            rest = handle.read(size - 18)
            if len(rest) != size - 18 or size < 26:
                raise InputFormatError(path, f"the BGZF block at byte {offset} is cut short "
                                       "(truncated file)")
            try:
                data = zlib.decompress(rest[:-8], -15)
            except zlib.error as err:
                raise InputFormatError(path, f"corrupt compressed data in the BGZF block at byte "
                                       f"{offset} ({err})") from None
            crc, length = int.from_bytes(rest[-8:-4], "little"), int.from_bytes(rest[-4:], "little")
            if zlib.crc32(data) != crc or len(data) != length:
                raise InputFormatError(path, f"checksum (CRC32) mismatch in the BGZF block at byte "
                                       f"{offset}: the file is damaged")
            text += data
            offset += size
            chrom = text.find(b"#CHROM")
            if chrom >= 0 and text.find(b"\n", chrom) >= 0:
                break
    return bytes(text)


def _diagnose_unreadable(path: Path, is_bgzf: bool, is_gzip: bool) -> str | None:
    """Why htslib refused to open ``path``: a damaged block or the header line at fault.

    Raises InputFormatError for damaged compressed data; returns a message for a header
    problem, or None when no cause is found.
    """
    if is_bgzf:
        text = _bgzf_header_bytes(path)
    elif is_gzip:
        text = _gzip_header(path)
    else:
        with open(path, "rb") as handle:
            text = handle.read(_HEADER_LIMIT)
    if text[:3] == b"BCF":
        return None
    lines = text.split(b"\n")
    if not lines[0].startswith(b"##fileformat=VCF"):
        return (f"not a readable VCF/BCF file: line 1 is {lines[0][:40]!r}, not "
                "##fileformat=VCFv4.x (the file is another format, or its header is damaged)")
    chrom = next((i for i, line in enumerate(lines) if line[:1] != b"#" or line[:2] != b"##"), None)
    if chrom is None or not lines[chrom].startswith(b"#CHROM"):
        where = f"line {chrom + 1} is {lines[chrom][:40]!r}" if chrom is not None else "none found"
        return f"no #CHROM header line after the ## lines ({where}): the header is cut short or damaged"
    columns = lines[chrom].rstrip(b"\r").split(b"\t")
    if tuple(columns[:8]) != _FIXED_COLUMNS or (len(columns) > 8 and columns[8] != b"FORMAT"):
        return (f"malformed #CHROM header line (line {chrom + 1}): it must start with "
                f"{' '.join(c.decode() for c in _FIXED_COLUMNS)} [FORMAT], got "
                f"{b' '.join(columns[:9])[:80]!r}")
    samples = columns[9:]
    seen: dict[bytes, int] = {}
    for column, sample in enumerate(samples, start=10):
        if sample in seen:
            return (f"duplicate sample ID {sample.decode(errors='replace')!r} in the #CHROM header "
                    f"line (line {chrom + 1}, columns {seen[sample]} and {column}); sample IDs "
                    "must be unique")
        seen[sample] = column
    for number, line in enumerate(lines[:chrom + 1], start=1):
        try:
            line.decode()
        except UnicodeDecodeError:
            return f"non-UTF-8 bytes in header line {number}: {line[:60]!r}"
    bad = _first_bad_header_line(lines[:chrom], lines[chrom])
    if bad is not None:
        return f"malformed header line {bad + 1}: {lines[bad][:100].decode(errors='replace')!r}"
    return None


def _first_bad_header_line(meta: list[bytes], chrom_line: bytes) -> int | None:
    """Index of the first ``##`` line that htslib rejects (bisection over header prefixes)."""
    import pysam

    def accepted(n: int) -> bool:
        with tempfile.TemporaryDirectory() as scratch:
            header = Path(scratch) / "header.vcf"
            header.write_bytes(b"\n".join([*meta[:n], chrom_line]) + b"\n")
            try:
                with _quiet_htslib(), pysam.VariantFile(str(header)) as vf:
                    list(vf.header.records)
            except (ValueError, OSError, NotImplementedError, AssertionError):
                return False
            return True

    if not meta or accepted(len(meta)):
        return None
    low, high = 0, len(meta) - 1  # the first line whose prefix is rejected is in [low, high]
    while low < high:
        middle = (low + high) // 2
        if accepted(middle + 1):
            low = middle + 1
        else:
            high = middle
    return low


def _gzip_header(path: Path) -> bytes:
    """The header lines of a plain-gzip text file."""
    lines = []
    try:
        with gzip.open(path, "rb") as handle:
            for line in handle:
                if line[:1] != b"#":
                    break
                lines.append(line)
    except (EOFError, OSError, zlib.error) as err:
        raise InputFormatError(path, f"truncated or corrupt gzip data ({err})") from None
    return b"".join(lines)


@contextlib.contextmanager
def _record_lines(layout: _Layout, offset: int | None = None) -> Iterator[Iterator[tuple[int, bytes]]]:
    """Yield an iterator of ``(offset, line)`` for every record line from ``offset`` on.

    Header lines are skipped (``offset`` None starts at the top of the file). Offsets are bgzf
    virtual offsets for bgzf and BCF files, byte offsets for plain text and -1 for plain gzip.
    """
    import pysam

    if layout.container == "bcf":
        with _quiet_htslib(), pysam.VariantFile(layout.path) as vf:
            if offset is not None:
                vf.seek(offset)

            def bcf_lines() -> Iterator[tuple[int, bytes]]:
                while True:
                    where = vf.tell()
                    try:
                        record = next(vf)
                    except StopIteration:
                        return
                    yield where, str(record).encode()

            yield bcf_lines()
        return
    opener: Any = {"gzip": gzip.open, "bgzf": pysam.BGZFile, "plain": open}[layout.container]
    with opener(layout.path, "rb") as handle:
        if offset is not None:
            handle.seek(offset)
        tell = handle.tell if layout.container != "gzip" else lambda: -1

        def text_lines() -> Iterator[tuple[int, bytes]]:
            while True:
                where = tell()
                line = handle.readline()
                if not line:
                    return
                if line[:1] == b"#" or line in (b"\n", b"\r\n"):
                    continue
                yield where, line

        yield text_lines()


def _count_header_lines(layout: _Layout) -> int:
    """Number of header lines of a text VCF (to turn record numbers into line numbers)."""
    if layout.container == "bcf":
        return 0
    import pysam

    opener: Any = {"gzip": gzip.open, "bgzf": pysam.BGZFile, "plain": open}[layout.container]
    count = 0
    with opener(layout.path, "rb") as handle:
        for line in handle:
            if line[:1] != b"#":
                break
            count += 1
    return count


# --------------------------------------------------------------------------------------------
# Site columns (CHROM .. FORMAT): one pass over the file
# --------------------------------------------------------------------------------------------


@dataclass
class _Site:
    contig: str
    position: int
    variant_id: str
    ref: str
    alts: list[str]
    format_keys: tuple[bytes, ...]
    sample_text: bytes
    label: str
    expansion: int  # output variants made from this record (0 = dropped)


@dataclass
class _Context:
    """Everything the record parsers need to know about the file and the request."""

    layout: _Layout
    multiallelic: Multiallelic
    sample_index: np.ndarray | None  # columns to keep, None = all
    n_header_lines: int
    ploidy: int | None = None

    @property
    def path(self) -> str:
        return self.layout.path

    @property
    def n_samples(self) -> int:
        return len(self.layout.samples)

    def label(self, record_no: int, contig: str | None = None, position: int | None = None) -> str:
        where = f"record {record_no}"
        details = []
        if contig is not None:
            details.append(contig if position is None else f"{contig}:{position}")
        if self.layout.container != "bcf":
            details.append(f"line {self.n_header_lines + record_no}")
        return f"{where} ({', '.join(details)})" if details else where

    def error(self, message: str, label: str | None) -> InputFormatError:
        return InputFormatError(self.path, message, label)


def _parse_site(line: bytes, record_no: int, ctx: _Context) -> _Site:
    """Parse and check the fixed columns of one record line."""
    line = line.rstrip(b"\r\n")
    columns = line.split(b"\t", 9)
    if len(columns) < 8:
        raise ctx.error(
            f"only {len(columns)} tab-separated columns; a VCF record has at least 8",
            ctx.label(record_no))
    try:
        contig = columns[0].decode()
        ref = columns[3].decode()
        alt_text = columns[4].decode()
        variant_id = columns[2].decode()
    except UnicodeDecodeError:
        raise ctx.error("non-UTF-8 bytes in the CHROM/ID/REF/ALT columns",
                        ctx.label(record_no)) from None
    try:
        position = int(columns[1])
    except ValueError:
        raise ctx.error(f"POS {columns[1].decode(errors='replace')!r} is not an integer",
                        ctx.label(record_no, contig, None)) from None
    label = ctx.label(record_no, contig, position)
    if not contig.strip() or contig != contig.strip():  # would surface later as "unsorted"
        raise ctx.error(f"CHROM {contig!r} is empty or has surrounding spaces", label)
    if position < 0:
        raise ctx.error(f"negative POS {position}", label)
    if not ref or ref == ".":
        raise ctx.error("empty REF allele", label)
    alts = [] if alt_text == "." else alt_text.split(",")
    if any(not a for a in alts):
        raise ctx.error(f"empty allele in ALT {alt_text!r}", label)
    n_samples = ctx.n_samples
    expected_tabs = 8 + n_samples if n_samples else None
    if expected_tabs is not None:
        tabs = line.count(b"\t")
        if tabs != expected_tabs:
            raise ctx.error(
                f"{tabs + 1} columns, but the header declares {n_samples} samples "
                f"(expected {expected_tabs + 1} columns)", label)
        format_keys = tuple(columns[8].split(b":"))
        if b"GT" not in format_keys:
            raise ctx.error(
                f"no GT field (FORMAT is {columns[8].decode(errors='replace')!r}); "
                "genotypes are required", label)
        sample_text = columns[9]
    else:
        format_keys, sample_text = (), b""
    if len(alts) > 1:
        if ctx.multiallelic == "error":
            raise ctx.error(
                f"multi-allelic site (REF {ref}, ALT {alt_text}); read it with "
                "multiallelic='split' to split it into biallelic variants or "
                "multiallelic='drop' to skip it", label)
        expansion = len(alts) if ctx.multiallelic == "split" else 0
    else:
        expansion = 1
    return _Site(contig, position, variant_id, ref, alts, format_keys, sample_text, label, expansion)


class _OrderCheck:
    """Reject unsorted records and exact duplicates (same contig, POS, REF and ALT)."""

    def __init__(self, ctx: _Context) -> None:
        self.ctx = ctx
        self.contig: str | None = None
        self.position = -1
        self.done_contigs: set[str] = set()
        self.alleles_here: set[tuple[str, tuple[str, ...]]] = set()

    def check(self, site: _Site) -> None:
        if site.contig != self.contig:
            if site.contig in self.done_contigs:
                raise self.ctx.error(
                    f"unsorted file: contig {site.contig!r} appears again after contig "
                    f"{self.contig!r}; sort it with `bcftools sort`", site.label)
            if self.contig is not None:
                self.done_contigs.add(self.contig)
            self.contig, self.position, self.alleles_here = site.contig, -1, set()
        if site.position < self.position:
            raise self.ctx.error(
                f"unsorted file: position {site.position} comes after {self.position}; "
                "sort it with `bcftools sort`", site.label)
        key = (site.ref, tuple(site.alts))
        if site.position != self.position:
            self.position, self.alleles_here = site.position, set()
        elif key in self.alleles_here:
            raise self.ctx.error(
                f"duplicate record: {site.contig}:{site.position} {site.ref}>"
                f"{','.join(site.alts) or '.'} appears more than once", site.label)
        self.alleles_here.add(key)


def _first_ploidy(site: _Site, ctx: _Context) -> int | None:
    """Ploidy of the first GT in a record that is not a bare '.', or None if all are '.'."""
    gt_at = site.format_keys.index(b"GT")
    for sample_no, call in enumerate(site.sample_text.split(b"\t")):
        fields = call.split(b":")
        text = fields[gt_at] if gt_at < len(fields) else b"."
        if text != b".":
            return len(_parse_gt_text(text, ctx, site, sample_no)[0])
    return None


@dataclass
class _Variants:
    """Variant-level columns gathered while scanning records."""

    contig_names: list[str]
    contig_index: dict[str, int]
    contig: list[int] = field(default_factory=list)
    position: list[int] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    alleles: list[tuple[str, str]] = field(default_factory=list)
    format_keys: set[bytes] = field(default_factory=set)
    n_split: int = 0
    n_dropped: int = 0

    def add(self, site: _Site) -> None:
        if site.contig not in self.contig_index:
            self.contig_index[site.contig] = len(self.contig_names)
            self.contig_names.append(site.contig)
        if site.expansion == 0:
            self.n_dropped += 1
            return
        self.format_keys.update(site.format_keys)
        if len(site.alts) > 1:
            self.n_split += 1
        index = self.contig_index[site.contig]
        for alt in site.alts[:site.expansion] or [""]:
            self.contig.append(index)
            self.position.append(site.position)
            self.ids.append(site.variant_id)
            self.alleles.append((site.ref, alt))


# --------------------------------------------------------------------------------------------
# Sample columns: the per-call parsers
# --------------------------------------------------------------------------------------------


@dataclass
class _Calls:
    """Parsed FORMAT values of some records, before multi-allelic splitting."""

    gt: np.ndarray  # (records, samples, ploidy) int8
    phased: np.ndarray  # (records, samples) bool
    ds: np.ndarray | None  # (records, samples, n_alt) float32
    gp: np.ndarray | None  # (records, samples, n_genotypes) float32


def _n_genotypes(n_alleles: int, ploidy: int) -> int:
    return math.comb(n_alleles + ploidy - 1, ploidy)


def _parse_gt_text(text: bytes, ctx: _Context, site: _Site, sample_no: int) -> tuple[list[int], bool]:
    """Parse one GT string such as ``0|1``, ``./.`` or ``2``: allele indices and phase."""
    separators = [c for c in text if c in (PIPE, SLASH)]
    pieces = text.replace(b"|", b"/").split(b"/")
    alleles = []
    for piece in pieces:
        if piece == b".":
            alleles.append(-1)
        elif piece.isdigit():
            alleles.append(int(piece))
        else:
            raise ctx.error(
                f"malformed GT {text.decode(errors='replace')!r} for sample "
                f"{ctx.layout.samples[sample_no]}", site.label)
    phased = bool(separators) and all(c == PIPE for c in separators)
    return alleles, phased


def _parse_floats_text(text: bytes | None, count: int, key: str, *, ctx: _Context, site: _Site,
                       sample_no: int) -> list[float]:
    """Parse one DS/GP value list; ``.`` or an absent field means missing."""
    if text is None or text == b".":
        return [math.nan] * count
    values = []
    for piece in text.split(b","):
        try:
            values.append(math.nan if piece == b"." else float(piece))
        except ValueError:
            raise ctx.error(
                f"malformed {key} value {text.decode(errors='replace')!r} for sample "
                f"{ctx.layout.samples[sample_no]}", site.label) from None
    if len(values) != count:
        raise ctx.error(
            f"{key} for sample {ctx.layout.samples[sample_no]} has {len(values)} values, "
            f"expected {count} for {1 + max(len(site.alts), 1)} alleles", site.label)
    return values


def _parse_record_slow(site: _Site, ctx: _Context, want: tuple[str, ...]) -> _Calls:
    """Parse one record's sample columns call by call (handles every legal layout)."""
    ploidy = ctx.ploidy or 2
    n_alt = max(len(site.alts), 1)
    n_gp = _n_genotypes(n_alt + 1, ploidy)
    calls = site.sample_text.split(b"\t")
    n = len(calls)
    gt = np.full((n, ploidy), -1, np.int8)
    phased = np.zeros(n, bool)
    ds = np.full((n, n_alt), np.nan, np.float32) if "DS" in want else None
    gp = np.full((n, n_gp), np.nan, np.float32) if "GP" in want else None
    keys = site.format_keys
    gt_at = keys.index(b"GT")
    ds_at = keys.index(b"DS") if b"DS" in keys else None
    gp_at = keys.index(b"GP") if b"GP" in keys else None
    for j, call in enumerate(calls):
        values = call.split(b":")
        if len(values) > len(keys):
            raise ctx.error(
                f"sample {ctx.layout.samples[j]} has {len(values)} FORMAT values "
                f"{call.decode(errors='replace')!r} but FORMAT lists {len(keys)} keys", site.label)
        text = values[gt_at] if gt_at < len(values) else b"."
        if text != b".":
            alleles, phased[j] = _parse_gt_text(text, ctx, site, j)
            if len(alleles) != ploidy:
                raise ctx.error(
                    f"mixed ploidy: sample {ctx.layout.samples[j]} has GT "
                    f"{text.decode()!r} with {len(alleles)} allele(s), but the file's ploidy is "
                    f"{ploidy} (from its first genotype call)", site.label)
            if max(alleles) > len(site.alts):
                raise ctx.error(
                    f"GT {text.decode()!r} of sample {ctx.layout.samples[j]} refers to allele "
                    f"{max(alleles)}, but the record has only {len(site.alts)} ALT allele(s)",
                    site.label)
            gt[j] = alleles
        if ds is not None and ds_at is not None:
            ds[j] = _parse_floats_text(values[ds_at] if ds_at < len(values) else None,
                                       n_alt, "DS", ctx=ctx, site=site, sample_no=j)
        if gp is not None and gp_at is not None:
            gp[j] = _parse_floats_text(values[gp_at] if gp_at < len(values) else None,
                                       n_gp, "GP", ctx=ctx, site=site, sample_no=j)
    return _Calls(gt[None], phased[None], None if ds is None else ds[None],
                  None if gp is None else gp[None])


def _fast_floats(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, count: int,
                 several_fields: bool = False) -> np.ndarray | None:
    """Parse the float lists in byte spans ``buf[starts:ends]``; None if any is irregular.

    Each span is followed in ``buf`` by a delimiter byte. The spans are cut out as lines of a
    small CSV and parsed by pandas' C reader. A span reading ``.`` is missing (all NaN); so is
    any single ``.`` inside a list. With ``several_fields`` a span covers consecutive FORMAT
    fields (``DS:GP``): colons separate values too, and every call must have all ``count``.
    """
    import pandas as pd

    shape = starts.shape
    starts, ends = starts.ravel(), ends.ravel()
    n = starts.size
    if n == 0:
        return np.empty((*shape, count), np.float32)
    # Mark the bytes of every span and its delimiter (spans never overlap), then cut them out.
    edges = np.zeros(buf.size + 1, np.int8)
    edges[starts] += 1
    edges[ends + 1] -= 1
    text = buf[np.cumsum(edges[:-1], dtype=np.int8).view(bool)]
    line_ends = np.cumsum(ends - starts + 1)
    text[line_ends - 1] = NEWLINE
    if several_fields:
        text[text == COLON] = COMMA
    commas = np.add.reduceat((text == COMMA).view(np.int8), line_ends - (ends - starts + 1),
                             dtype=np.int32)
    regular = commas == count - 1
    if not (regular.all() if several_fields else (regular | (commas == 0)).all()):
        return None
    try:
        table = pd.read_csv(
            io.BytesIO(text.tobytes()), sep=",", header=None, names=range(count),
            index_col=False, dtype=np.float64, na_values=["."], keep_default_na=False,
            skip_blank_lines=True, engine="c")
    except (ValueError, pd.errors.ParserError):
        return None
    if len(table) != n:
        return None  # an empty value
    values = table.to_numpy(np.float32)
    if count > 1:
        single = commas == 0  # only a lone '.' may stand for the whole list
        if not np.isnan(values[single, 0]).all():
            return None
    return values.reshape(*shape, count)


def _value_counts(n_alts: int, ploidy: int) -> dict[str, int]:
    """Values per call of DS (Number=A) and GP (Number=G); no ALT counts as one empty ALT."""
    n_alt = max(n_alts, 1)
    return {"DS": n_alt, "GP": _n_genotypes(n_alt + 1, ploidy)}


def _decode_gt(chars: list[np.ndarray], full: np.ndarray, bare: np.ndarray, n_alts: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Alleles, phase and a bad-call mask from the bytes of fixed-width GT strings.

    ``chars[i]`` holds byte ``i`` of every call's GT; ``full`` marks calls whose GT has the
    expected width (P alleles and P - 1 separators) and ``bare`` those reading a lone ``.``.
    """
    ploidy = (len(chars) + 1) // 2
    good = full.copy()
    alleles = []
    for c in chars[0::2]:
        good &= ((c >= ZERO) & (c <= NINE)) | (c == DOT)
        allele = c.astype(np.int8) - np.int8(ZERO)
        allele[(c == DOT) | ~full] = -1
        alleles.append(allele)
    phased = full & (ploidy > 1)
    for c in chars[1::2]:
        good &= (c == PIPE) | (c == SLASH)
        phased &= c == PIPE
    gt = np.stack(alleles, axis=-1)
    bad = ~(good | bare) | (gt > n_alts).any(axis=-1)
    return gt, phased & ~bare, bad


def _field_spans(buf: np.ndarray, sites: Sequence[_Site], n_samples: int, k: int
                 ) -> tuple[np.ndarray, np.ndarray] | None:
    """Start and end byte of every FORMAT value, shape (records, samples, keys); None if irregular."""
    m = len(sites)
    delims = np.flatnonzero((buf == TAB) | (buf == COLON))
    if delims.size != m * n_samples * k:
        return None
    kinds = buf[delims].reshape(m * n_samples, k)
    if (kinds[:, -1] != TAB).any() or (kinds[:, :-1] == TAB).any():
        return None
    record_ends = np.cumsum([len(s.sample_text) + 1 for s in sites]) - 1
    if not np.array_equal(delims.reshape(m, n_samples * k)[:, -1], record_ends):
        return None
    starts = np.empty_like(delims)
    starts[0], starts[1:] = 0, delims[:-1] + 1
    return starts.reshape(m, n_samples, k), delims.reshape(m, n_samples, k)


def _parse_group_fast(sites: Sequence[_Site], ctx: _Context, want: tuple[str, ...]
                      ) -> tuple[_Calls, np.ndarray] | None:
    """Vectorised parse of records sharing FORMAT keys and allele count.

    Returns the parsed calls and a per-record mask of records it could not parse (to be sent to
    the per-call parser), or None if the group's layout is irregular.
    """
    ploidy = ctx.ploidy or 2
    m, n_samples = len(sites), ctx.n_samples
    keys = sites[0].format_keys
    k = len(keys)
    n_alts = len(sites[0].alts)
    width = 2 * ploidy - 1  # GT bytes when every allele index is one digit
    buf = np.frombuffer(b"\t".join(s.sample_text for s in sites) + b"\t", np.uint8)

    if k == 1 and buf.size == m * n_samples * (width + 1) and all(
            len(s.sample_text) == n_samples * (width + 1) - 1 for s in sites):
        # GT only and every call the same width: the calls are rows of a byte matrix.
        calls = buf.reshape(m, n_samples, width + 1)
        chars = [calls[..., i] for i in range(width)]
        full = calls[..., width] == TAB
        gt, phased, bad = _decode_gt(chars, full, np.zeros_like(full), n_alts)
        absent = {key: np.full((m, n_samples, count), np.nan, np.float32) if key in want else None
                  for key, count in _value_counts(n_alts, ploidy).items()}
        return _Calls(gt, phased, absent["DS"], absent["GP"]), bad.any(axis=1)

    spans = _field_spans(buf, sites, n_samples, k)
    if spans is None:
        return None
    starts, ends = spans
    gt_at = keys.index(b"GT")
    gt_start, gt_len = starts[..., gt_at], ends[..., gt_at] - starts[..., gt_at]
    padded = np.concatenate([buf, np.zeros(width, np.uint8)])
    chars = [padded[gt_start + i] for i in range(width)]
    full = gt_len == width
    bare = (gt_len == 1) & (chars[0] == DOT)
    gt, phased, bad = _decode_gt(chars, full, bare, n_alts)

    values: dict[str, np.ndarray | None] = {"DS": None, "GP": None}
    counts = _value_counts(n_alts, ploidy)
    if keys[0] == b"GT" and k > 2 and all(key.decode() in want for key in keys[1:]):
        # Imputed output (GT:DS:GP): parse everything after GT in one go when no value is missing.
        total = sum(counts[key.decode()] for key in keys[1:])
        parsed = _fast_floats(buf, starts[..., 1], ends[..., -1], total, several_fields=True)
        if parsed is not None:
            first = 0
            for key in keys[1:]:
                n_values = counts[key.decode()]
                values[key.decode()] = parsed[..., first:first + n_values]
                first += n_values
    for key, count in counts.items():
        if values[key] is not None:
            continue
        if key not in want:
            continue
        if key.encode() in keys:
            at = keys.index(key.encode())
            parsed = _fast_floats(buf, starts[..., at], ends[..., at], count)
            if parsed is None:
                return None
        else:
            parsed = np.full((m, n_samples, count), np.nan, np.float32)
        values[key] = parsed
    return _Calls(gt, phased, values["DS"], values["GP"]), bad.any(axis=1)


def _parse_records(sites: Sequence[_Site], ctx: _Context, want: tuple[str, ...]) -> list[_Calls]:
    """Parse the sample columns of records sharing FORMAT keys and allele count.

    Uses the vectorised parser, halving the group until the irregular records are isolated;
    those go through the per-call parser. Returns one :class:`_Calls` per record range, in order.
    """
    result = _parse_group_fast(sites, ctx, want)
    if result is None:
        if len(sites) == 1:
            return [_parse_record_slow(sites[0], ctx, want)]
        half = len(sites) // 2
        return _parse_records(sites[:half], ctx, want) + _parse_records(sites[half:], ctx, want)
    calls, bad_records = result
    if not bad_records.any():
        return [calls]
    pieces = []
    for r, site in enumerate(sites):
        if bad_records[r]:
            pieces.append(_parse_record_slow(site, ctx, want))
        else:
            pieces.append(_Calls(
                calls.gt[r:r + 1], calls.phased[r:r + 1],
                None if calls.ds is None else calls.ds[r:r + 1],
                None if calls.gp is None else calls.gp[r:r + 1]))
    return pieces


def _split_matrix(n_alleles: int, ploidy: int, alt: int) -> np.ndarray:
    """Matrix summing VCF-ordered genotype probabilities into P(0..ploidy copies of ``alt``)."""
    genotypes = sorted(itertools.combinations_with_replacement(range(n_alleles), ploidy),
                       key=lambda g: g[::-1])
    matrix = np.zeros((len(genotypes), ploidy + 1), np.float32)
    for row, genotype in enumerate(genotypes):
        matrix[row, genotype.count(alt)] = 1
    return matrix


@dataclass
class _Block:
    """Parsed output variants of a run of records (after splitting or dropping)."""

    gt: np.ndarray
    phased: np.ndarray
    ds: np.ndarray | None
    gp: np.ndarray | None


def _parse_block(sites: Sequence[_Site], ctx: _Context, want: tuple[str, ...]) -> _Block:
    """Parse the calls of consecutive records and lay them out as output variants.

    DS/GP arrays are made only if some record of the block carries the field (else None).
    """
    ploidy = ctx.ploidy or 2
    want = tuple(f for f in want if any(f.encode() in s.format_keys for s in sites))
    keep = ctx.sample_index
    n_out_samples = ctx.n_samples if keep is None else len(keep)
    offsets = np.cumsum([0] + [s.expansion for s in sites])
    n_out = int(offsets[-1])
    gt = np.full((n_out, n_out_samples, ploidy), -1, np.int8)
    phased = np.zeros((n_out, n_out_samples), bool)
    ds = np.full((n_out, n_out_samples), np.nan, np.float32) if "DS" in want else None
    gp = np.full((n_out, n_out_samples, ploidy + 1), np.nan, np.float32) if "GP" in want else None
    if ctx.n_samples == 0:
        return _Block(gt, phased, ds, gp)

    # Group the kept records by FORMAT keys and allele count, keeping file order inside groups.
    groups: dict[tuple[tuple[bytes, ...], int], list[int]] = {}
    for r, site in enumerate(sites):
        if site.expansion:
            groups.setdefault((site.format_keys, len(site.alts)), []).append(r)
    for (_, n_alts), members in groups.items():
        start = 0
        for calls in _parse_records([sites[r] for r in members], ctx, want):
            count = calls.gt.shape[0]
            rows = members[start:start + count]
            start += count
            if keep is not None:
                calls = _Calls(calls.gt[:, keep], calls.phased[:, keep],
                               None if calls.ds is None else calls.ds[:, keep],
                               None if calls.gp is None else calls.gp[:, keep])
            if n_alts <= 1:
                out = offsets[rows]
                gt[out], phased[out] = calls.gt, calls.phased
                if ds is not None:
                    ds[out] = calls.ds[..., 0]
                if gp is not None:
                    gp[out] = calls.gp
                continue
            # Split each multi-allelic record into one biallelic variant per ALT allele:
            # the chosen ALT becomes allele 1, every other ALT becomes REF (as `bcftools norm -m-`).
            for i, r in enumerate(rows):
                for alt in range(1, n_alts + 1):
                    out = offsets[r] + alt - 1
                    source = calls.gt[i]
                    gt[out] = np.where(source == alt, 1, np.where(source < 0, -1, 0))
                    phased[out] = calls.phased[i]
                    if ds is not None:
                        ds[out] = calls.ds[i, :, alt - 1]
                    if gp is not None:
                        gp[out] = calls.gp[i] @ _split_matrix(n_alts + 1, ploidy, alt)
    return _Block(gt, phased, ds, gp)


# --------------------------------------------------------------------------------------------
# Reading: eager and lazy
# --------------------------------------------------------------------------------------------


def _resolve_samples(layout: _Layout, samples: Sequence[str] | None) -> np.ndarray | None:
    if samples is None:
        return None
    if isinstance(samples, str):
        samples = [samples]
    requested = list(samples)
    if len(set(requested)) != len(requested):
        raise InvalidArgumentError("samples= names a sample more than once")
    position = {name: i for i, name in enumerate(layout.samples)}
    absent = [s for s in requested if s not in position]
    if absent:
        shown = ", ".join(absent[:10]) + (f" and {len(absent) - 10} more" if len(absent) > 10 else "")
        raise InputFormatError(
            layout.path, f"requested samples are not in the file: {shown} "
            f"(the file has {len(layout.samples)} samples)")
    return np.array([position[s] for s in requested], dtype=np.int64)


def _chunk_size(chunk_variants: int | None, layout: _Layout, ploidy: int) -> int:
    if chunk_variants is not None:
        return chunk_variants
    per_variant = max(1, len(layout.samples) * ploidy)
    return max(1000, _TARGET_CHUNK_CALLS // per_variant)


def _checked_lines(ctx: _Context, offset: int | None, progress: list[str | None]
                   ) -> Iterator[tuple[int, bytes]]:
    """Record lines, with read errors turned into an InputFormatError.

    Decompression and htslib errors, including those only reported when the file is closed
    (a corrupt bgzf block ends reading early), name the last record read, ``progress[0]``.
    Errors raised by the caller's own code do not pass through here.
    """
    try:
        with _quiet_htslib(), _record_lines(ctx.layout, offset) as lines:
            yield from lines
    except (EOFError, zlib.error, gzip.BadGzipFile, OSError, ValueError) as err:
        after = f"after {progress[0]}" if progress[0] else "before the first record"
        raise ctx.error(
            f"truncated or corrupt data {after}: {err or type(err).__name__}", None) from None


def _scan(ctx: _Context, chunk: int | None, want: tuple[str, ...]
          ) -> tuple[_Variants, list[_Block], list[tuple[int, int, int, int]]]:
    """One sequential pass over the records.

    Always checks the site columns and gathers variant columns. With ``chunk`` None it also
    parses every record's calls (eager read); otherwise it returns, per chunk, the offset of its
    first record, the record count, the first record number and the output variant count.
    """
    variants = _Variants(list(ctx.layout.header_contigs),
                         {c: i for i, c in enumerate(ctx.layout.header_contigs)})
    order = _OrderCheck(ctx)
    blocks: list[_Block] = []
    chunks: list[tuple[int, int, int, int]] = []
    pending: list[_Site] = []
    pending_bytes = 0
    record_no = 0
    chunk_start = (0, 1)
    chunk_records = chunk_out = 0
    progress: list[str | None] = [None]
    with contextlib.closing(_checked_lines(ctx, None, progress)) as lines:
        for offset, line in lines:
            record_no += 1
            site = _parse_site(line, record_no, ctx)
            progress[0] = site.label
            order.check(site)
            variants.add(site)
            if ctx.ploidy is None and ctx.n_samples and site.expansion:
                ctx.ploidy = _first_ploidy(site, ctx)
            if chunk is None:
                if site.expansion:
                    pending.append(site)
                    pending_bytes += len(site.sample_text)
                if pending_bytes >= _BLOCK_BYTES and ctx.ploidy is not None:
                    blocks.append(_parse_block(pending, ctx, want))
                    pending, pending_bytes = [], 0
                continue
            if chunk_records and chunk_out + site.expansion > chunk:
                chunks.append((*chunk_start, chunk_records, chunk_out))
                chunk_records = chunk_out = 0
            if chunk_records == 0:
                chunk_start = (offset, record_no)
            chunk_records += 1
            chunk_out += site.expansion
    if ctx.ploidy is None:
        ctx.ploidy = 2
    if pending:
        blocks.append(_parse_block(pending, ctx, want))
    if chunk_records:
        chunks.append((*chunk_start, chunk_records, chunk_out))
    return variants, blocks, chunks


def _read_chunk(ctx: _Context, want: tuple[str, ...], offset: int, n_records: int,
                first_record: int) -> dict[str, np.ndarray]:
    """Read and parse ``n_records`` records starting at virtual/byte offset ``offset``."""
    stat = os.stat(ctx.path)
    if (stat.st_size, stat.st_mtime_ns) != (ctx.layout.size, ctx.layout.mtime_ns):
        raise ctx.error("the file changed after it was opened lazily; read it again", None)
    sites: list[_Site] = []
    blocks: list[_Block] = []
    pending_bytes = 0
    record_no = first_record - 1
    progress: list[str | None] = [None]
    with contextlib.closing(_checked_lines(ctx, offset, progress)) as lines:
        for _, line in itertools.islice(lines, n_records):
            record_no += 1
            site = _parse_site(line, record_no, ctx)
            progress[0] = site.label
            if site.expansion:
                sites.append(site)
                pending_bytes += len(site.sample_text)
            if pending_bytes >= _BLOCK_BYTES:
                blocks.append(_parse_block(sites, ctx, want))
                sites, pending_bytes = [], 0
    if record_no != first_record - 1 + n_records:
        raise ctx.error(f"the file ended at record {record_no}, before record "
                        f"{first_record - 1 + n_records}; it changed or is corrupt", None)
    if sites or not blocks:
        blocks.append(_parse_block(sites, ctx, want))
    return _join_blocks(blocks, want)


def _join_blocks(blocks: list[_Block], want: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Concatenate blocks; a block without DS/GP contributes NaN rows."""
    out = {
        "call_genotype": np.concatenate([b.gt for b in blocks]),
        "call_genotype_phased": np.concatenate([b.phased for b in blocks]),
    }

    def filled(values: np.ndarray | None, like: np.ndarray, tail: tuple[int, ...]) -> np.ndarray:
        if values is not None:
            return values
        return np.full((*like.shape[:2], *tail), np.nan, np.float32)

    if "DS" in want:
        out["call_dosage"] = np.concatenate([filled(b.ds, b.gt, ()) for b in blocks])
    if "GP" in want:
        out["call_genotype_probability"] = np.concatenate(
            [filled(b.gp, b.gt, (b.gt.shape[2] + 1,)) for b in blocks])
    return out


def read_vcf(
    path: str | os.PathLike[str],
    *,
    chunk_variants: int | None = None,
    multiallelic: Multiallelic = "error",
    samples: Sequence[str] | None = None,
    fields: Iterable[str] = ("GT", "DS", "GP"),
) -> xr.Dataset:
    """Read a VCF, bgzipped VCF or BCF file into a genotype dataset.

    Parameters
    ----------
    path
        ``.vcf``, ``.vcf.gz`` (bgzip or plain gzip) or ``.bcf``. No index is needed.
    chunk_variants
        Read lazily with dask, at most this many variants per chunk (chunked along ``variants``
        only). None reads eagerly into NumPy unless the file is larger than
        :data:`LAZY_THRESHOLD_BYTES`, in which case chunks of about 64 million genotype entries
        are used. Plain-gzip files cannot seek, so they are read eagerly and then wrapped in dask.
    multiallelic
        What to do with records that have more than one ALT allele. ``"error"`` (default) raises
        an :class:`~analysislib.errors.InputFormatError` naming the record. ``"split"`` makes one
        biallelic variant per ALT allele, like ``bcftools norm -m-``: GT alleles equal to that ALT
        become 1, other ALT alleles become 0 (REF); DS (Number=A) takes that ALT's value; GP
        (Number=G) is summed into probabilities of 0..ploidy copies of that ALT. ``"drop"`` skips
        such records. Either way the count is logged as a warning and stored in the dataset
        attributes ``n_multiallelic_split`` and ``n_multiallelic_dropped``.
    samples
        Sample IDs to keep, in the order wanted. None keeps all.
    fields
        FORMAT fields to read: GT is always read; DS gives ``call_dosage`` and GP gives
        ``call_genotype_probability`` when any record carries them (calls without the field are
        NaN). Values are taken as written (GP is not renormalised on read).

    Returns
    -------
    xarray.Dataset
        Built by :func:`~analysislib.genotype.dataset.create_genotype_dataset`. Attributes:
        ``contigs`` (header contigs, then any others in order of appearance), ``source``, and the
        multi-allelic counts. Missing alleles are -1; a bare ``.`` GT is missing for every
        haplotype. Haploid calls are unphased.

    Raises
    ------
    InputFormatError
        The file is not VCF/BCF, is truncated, is unsorted, repeats a record (same contig, POS,
        REF and ALT; different alleles at one position are allowed), has a multi-allelic site
        (with ``multiallelic="error"``), lacks or has a malformed GT, mixes ploidies, has a
        column count that disagrees with the header, or lacks requested samples. The message
        names the file and the record (``record 12 (22:16050075, line 265)``). With lazy reading
        the call-level checks run when a chunk is computed.
    """
    ctx, requested = _open_for_reading(path, multiallelic, samples, fields, chunk_variants)
    layout = ctx.layout
    lazy = chunk_variants is not None or layout.size > LAZY_THRESHOLD_BYTES
    if lazy and layout.container != "gzip":  # plain gzip cannot seek: read eagerly
        # First pass over sites only; the per-chunk size needs the ploidy, which the pass finds.
        variants, _, chunks = _scan(ctx, chunk_variants or _chunk_size(None, layout, 2), requested)
        want = tuple(f for f in requested if f.encode() in variants.format_keys)
        arrays = _lazy_arrays(ctx, want, chunks)
        read = _assemble(ctx, variants, arrays)
    else:
        read = _read_eagerly(ctx, requested)
        if lazy:
            import dask.array as da

            size = _chunk_size(chunk_variants, layout, ctx.ploidy or 2)
            for name in _CALL_NAMES:
                value = getattr(read, name)
                if value is not None:
                    setattr(read, name, da.from_array(value, chunks=(size, *value.shape[1:])))
    from analysislib.genotype.dataset import create_genotype_dataset

    return create_genotype_dataset(
        contigs=read.contigs, variant_contig=read.variant_contig, variant_position=read.variant_position,
        variant_allele=read.variant_allele, variant_id=read.variant_id, sample_id=read.sample_id,
        call_genotype=read.call_genotype, call_genotype_phased=read.call_genotype_phased,
        call_dosage=read.call_dosage, call_genotype_probability=read.call_genotype_probability,
        attrs=read.attrs)


_CALL_NAMES = ("call_genotype", "call_genotype_phased", "call_dosage", "call_genotype_probability")


@dataclass
class VCFArrays:
    """A VCF's variants, samples and calls as NumPy arrays (:func:`read_vcf_arrays`).

    The fields are the variables and attributes of the dataset :func:`read_vcf` returns:
    ``contigs`` (header contigs, then others in order of appearance), ``variant_contig``
    (index into ``contigs``), ``variant_position``, ``variant_allele`` (variants, 2),
    ``variant_id``, ``sample_id``, ``call_genotype`` (variants, samples, ploidy; -1 missing),
    ``call_genotype_phased``, ``call_dosage`` and ``call_genotype_probability`` (None unless
    read) and ``attrs`` (``source``, multi-allelic counts, ``contig_lengths`` when every contig
    has one).
    """

    contigs: list[str]
    variant_contig: np.ndarray
    variant_position: np.ndarray
    variant_allele: np.ndarray
    variant_id: np.ndarray
    sample_id: list[str]
    call_genotype: Any
    call_genotype_phased: Any
    call_dosage: Any
    call_genotype_probability: Any
    attrs: dict[str, Any]


def read_vcf_arrays(
    path: str | os.PathLike[str],
    *,
    multiallelic: Multiallelic = "error",
    samples: Sequence[str] | None = None,
    fields: Iterable[str] = ("GT", "DS", "GP"),
) -> VCFArrays:
    """Read a VCF, bgzipped VCF or BCF file into NumPy arrays, without xarray or dask.

    The same reading, checks and errors as :func:`read_vcf` (whose parameters these are),
    always eager; for callers that need arrays, not a dataset (``analysislib impute``).
    """
    ctx, requested = _open_for_reading(path, multiallelic, samples, fields, None)
    return _read_eagerly(ctx, requested)


def _open_for_reading(path: str | os.PathLike[str], multiallelic: Multiallelic, samples: Any,
                      fields: Iterable[str], chunk_variants: int | None) -> tuple[_Context, tuple[str, ...]]:
    """Check the arguments, open the file and return the parsing context and DS/GP requested."""
    path = Path(path)
    if multiallelic not in ("error", "split", "drop"):
        raise InvalidArgumentError(f"multiallelic must be 'error', 'split' or 'drop', not {multiallelic!r}")
    fields = tuple(fields)
    unknown = [f for f in fields if f not in SUPPORTED_FIELDS]
    if unknown:
        raise InvalidArgumentError(f"unsupported FORMAT fields {unknown}; read_vcf reads {SUPPORTED_FIELDS}")
    if chunk_variants is not None and chunk_variants < 1:
        raise InvalidArgumentError("chunk_variants must be a positive integer")
    layout = _inspect(path)
    ctx = _Context(layout, multiallelic, _resolve_samples(layout, samples), _count_header_lines(layout))
    return ctx, tuple(f for f in ("DS", "GP") if f in fields)


def _read_eagerly(ctx: _Context, requested: tuple[str, ...]) -> VCFArrays:
    variants, blocks, _ = _scan(ctx, None, requested)
    want = tuple(f for f in requested if f.encode() in variants.format_keys)
    if not blocks:
        blocks = [_parse_block([], ctx, want)]
    return _assemble(ctx, variants, _join_blocks(blocks, want))


def _assemble(ctx: _Context, variants: _Variants, arrays: dict[str, Any]) -> VCFArrays:
    """Variant columns, samples and attributes around the call arrays."""
    layout = ctx.layout
    if variants.n_split or variants.n_dropped:
        logger.warning("%s: %d multi-allelic record(s) split into biallelic variants, %d dropped",
                       layout.path, variants.n_split, variants.n_dropped)
    sample_ids = list(layout.samples)
    if ctx.sample_index is not None:
        sample_ids = [sample_ids[i] for i in ctx.sample_index]
    n_variants = len(variants.position)
    attrs: dict[str, Any] = {
        "source": str(layout.path),
        "n_multiallelic_split": variants.n_split,
        "n_multiallelic_dropped": variants.n_dropped,
    }
    lengths = layout.contig_lengths
    if len(variants.contig_names) == len(lengths) and all(x is not None for x in lengths):
        attrs["contig_lengths"] = [int(x) for x in lengths if x is not None]
    return VCFArrays(
        contigs=list(variants.contig_names),
        variant_contig=np.asarray(variants.contig, dtype=np.int32),
        variant_position=np.asarray(variants.position, dtype=np.int64),
        variant_allele=np.array(variants.alleles, dtype=object).reshape(n_variants, 2),
        variant_id=np.array(variants.ids, dtype=object),
        sample_id=sample_ids,
        call_genotype=arrays["call_genotype"],
        call_genotype_phased=arrays["call_genotype_phased"],
        call_dosage=arrays.get("call_dosage"),
        call_genotype_probability=arrays.get("call_genotype_probability"),
        attrs=attrs,
    )


def _lazy_arrays(ctx: _Context, want: tuple[str, ...],
                 chunks: list[tuple[int, int, int, int]]) -> dict[str, Any]:
    """Dask arrays whose chunks each read one run of records."""
    import operator

    import dask
    import dask.array as da

    ploidy = ctx.ploidy or 2
    n_samples = ctx.n_samples if ctx.sample_index is None else len(ctx.sample_index)
    specs = {
        "call_genotype": ((n_samples, ploidy), np.int8),
        "call_genotype_phased": ((n_samples,), bool),
        "call_dosage": ((n_samples,), np.float32),
        "call_genotype_probability": ((n_samples, ploidy + 1), np.float32),
    }
    names = ["call_genotype", "call_genotype_phased"]
    names += [n for f, n in (("DS", "call_dosage"), ("GP", "call_genotype_probability")) if f in want]
    pieces: dict[str, list[Any]] = {name: [] for name in names}
    reader = dask.delayed(_read_chunk, pure=True)
    for offset, first_record, n_records, n_out in chunks:
        if n_out == 0:
            continue
        parsed = reader(ctx, want, offset, n_records, first_record)
        for name in names:
            tail, dtype = specs[name]
            item = dask.delayed(operator.getitem, pure=True)(parsed, name)
            pieces[name].append(da.from_delayed(item, shape=(n_out, *tail), dtype=dtype))
    out = {}
    for name in names:
        tail, dtype = specs[name]
        out[name] = (da.concatenate(pieces[name]) if pieces[name]
                     else da.zeros((0, *tail), dtype=dtype))
    return out


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _digit_tokens(values: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """ASCII digits of non-negative ints, right-aligned in ``width`` bytes, with a keep-mask."""
    digits = np.empty((*values.shape, width), np.uint8)
    keep = np.empty((*values.shape, width), bool)
    for i in range(width):
        power = 10 ** (width - 1 - i)
        digits[..., i] = (values // power) % 10 + ZERO
        keep[..., i] = (values >= power) | (i == width - 1)
    return digits, keep


def _allele_tokens(alleles: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Allele indices as text; -1 becomes ``.``."""
    missing = alleles < 0
    digits, keep = _digit_tokens(np.where(missing, 0, alleles).astype(np.int64), width)
    digits[..., -1] = np.where(missing, DOT, digits[..., -1])
    return digits, keep


def _float_tokens(values: np.ndarray, decimals: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative floats with ``decimals`` places, trailing zeros trimmed; NaN becomes ``.``.

    Values are rounded to integers ``k = rint(value * 10**decimals)`` and each ``k`` is looked
    up in a table of its text (:func:`_float_table`); the text equals :func:`_float_tokens_direct`.
    """
    missing = ~np.isfinite(values)
    scaled = np.rint(np.where(missing, 0, values) * 10**decimals).astype(np.int64)
    width = len(str(int(scaled.max(initial=0)) // 10**decimals))
    if 10 ** (width + decimals) > _TABLE_LIMIT:
        return _float_tokens_direct(values, decimals)
    digits, keep = _float_table(decimals, width)
    text, kept = np.take(digits, scaled, axis=0), np.take(keep, scaled, axis=0)
    int_last = digits.shape[1] - decimals - 2  # last integer digit ("0" of a missing value)
    text[..., int_last] = np.where(missing, DOT, text[..., int_last])
    return text, kept


_TABLE_LIMIT = 10**5  # most entries of a lookup table of float texts
_float_tables: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def _float_table(decimals: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Text and keep-mask of ``k / 10**decimals`` for every ``k`` of ``width`` integer digits (cached)."""
    key = (decimals, width)
    if key not in _float_tables:
        _float_tables[key] = _float_tokens_direct(
            np.arange(10 ** (width + decimals)) / 10**decimals, decimals, width=width)
    return _float_tables[key]


def _float_tokens_direct(values: np.ndarray, decimals: int, width: int | None = None
                         ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_float_tokens` computed digit by digit (any magnitude)."""
    missing = ~np.isfinite(values)
    scale = 10**decimals
    scaled = np.rint(np.where(missing, 0, values) * scale).astype(np.int64)
    whole, fraction = np.divmod(scaled, scale)
    width = width or max(1, len(str(int(whole.max(initial=0)))))
    int_digits, int_keep = _digit_tokens(whole, width)
    int_digits[..., -1] = np.where(missing, DOT, int_digits[..., -1])
    frac_digits = np.empty((*values.shape, decimals), np.uint8)
    frac_keep = np.empty((*values.shape, decimals), bool)
    for i in range(decimals):
        frac_digits[..., i] = (fraction // 10 ** (decimals - 1 - i)) % 10 + ZERO
        frac_keep[..., i] = (fraction % 10 ** (decimals - i)) != 0  # a nonzero digit follows
    point = np.full((*values.shape, 1), DOT, np.uint8)
    point_keep = (fraction != 0)[..., None]
    return (np.concatenate([int_digits, point, frac_digits], axis=-1),
            np.concatenate([int_keep, point_keep, frac_keep], axis=-1))


def _const(shape: tuple[int, ...], char: str) -> tuple[np.ndarray, np.ndarray]:
    return np.full((*shape, 1), ord(char), np.uint8), np.ones((*shape, 1), bool)


def _format_calls(gt: np.ndarray, phased: np.ndarray, ds: np.ndarray | None,
                  gp: np.ndarray | list[np.ndarray] | None, *, decimals: int, allele_width: int,
                  line_end: bool = True) -> list[bytes]:
    """Sample columns of a block of variants, one bytes object per variant.

    ``gp`` is ``(variants, samples, G)``, or a list of G arrays ``(variants, samples)``, one per
    genotype (:func:`_normalised_columns`). Each call becomes a fixed-width byte row with a
    keep-mask; dropping the masked bytes leaves the exact text, calls separated by tabs and lines
    ended by a newline (by a tab when ``line_end`` is False: more sample columns follow, as when
    samples come in batches).
    """
    gp = _gp_columns(gp)
    fast = _format_calls_packed(gt, phased, ds, gp, decimals=decimals, allele_width=allele_width,
                                line_end=line_end)
    if fast is not None:
        return fast
    n_var, n_samples, ploidy = gt.shape
    shape = (n_var, n_samples)
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    separator = np.where(phased, PIPE, SLASH).astype(np.uint8)[..., None]
    for h in range(ploidy):
        if h:
            parts.append((separator, np.ones((*shape, 1), bool)))
        parts.append(_allele_tokens(gt[..., h], allele_width))
    if ds is not None:
        parts += [_const(shape, ":"), _float_tokens(ds, decimals)]
    if gp is not None:
        parts.append(_const(shape, ":"))
        absent = np.logical_and.reduce([np.isnan(column) for column in gp])[..., None]  # one '.'
        for g, column in enumerate(gp):
            token, keep = _float_tokens(column, decimals)
            if g:
                comma, comma_keep = _const(shape, ",")
                parts.append((comma, comma_keep & ~absent))
                keep &= ~absent
            parts.append((token, keep))
    end, end_keep = _const(shape, "\t")
    if line_end:
        end[:, -1] = NEWLINE
    parts.append((end, end_keep))
    text = np.concatenate([p[0] for p in parts], axis=-1)
    keep = np.concatenate([p[1] for p in parts], axis=-1)
    flat = text[keep].tobytes()
    ends = np.cumsum(keep.sum(axis=(1, 2))).tolist()
    return [flat[start:end] for start, end in zip([0, *ends[:-1]], ends, strict=True)]


_packed_tables: dict[tuple[str, int, int], np.ndarray] = {}


def _packed_table(separator: str, decimals: int, width: int) -> np.ndarray:
    """``separator`` + the text of ``k / 10**decimals`` for every ``k`` of ``width`` integer digits,
    each packed into one uint64 (bytes left-aligned, zero padded); the last entry is ``separator.``
    (a missing value). Cached.
    """
    key = (separator, decimals, width)
    if key not in _packed_tables:
        digits, keep = _float_table(decimals, width)
        # The kept bytes of a number are one run (leading and trailing zeros dropped): gather it.
        first = keep.argmax(axis=1)
        length = keep.sum(axis=1)
        row = np.concatenate([digits, np.zeros((len(digits), 8), np.uint8)], axis=1)
        spans = np.take_along_axis(row, first[:, None] + np.arange(7), axis=1)
        spans[np.arange(7) >= length[:, None]] = 0
        bytes_ = np.zeros((len(digits) + 1, 8), np.uint8)
        bytes_[:, 0] = ord(separator)
        bytes_[:-1, 1:] = spans
        bytes_[-1, 1] = DOT  # a missing value
        _packed_tables[key] = bytes_.view(np.uint64).ravel()
    return _packed_tables[key]


def _format_calls_packed(gt: np.ndarray, phased: np.ndarray, ds: np.ndarray | None,
                         gp: np.ndarray | list[np.ndarray] | None, *, decimals: int, allele_width: int,
                         line_end: bool
                         ) -> list[bytes] | None:
    """:func:`_format_calls` for one-digit alleles and short numbers; None where it does not apply.

    Deleting the zero bytes of each variant's row of :func:`_packed_rows` (``bytes.translate``,
    several times faster than a boolean mask here) leaves its text.
    """
    rows = _packed_rows(gt, phased, ds, gp, decimals=decimals, allele_width=allele_width, line_end=line_end)
    if rows is None:
        return None
    flat, width = rows.tobytes(), rows.shape[1]
    return [flat[start:start + width].translate(None, b"\0") for start in range(0, len(flat), width)]


def _packed_rows(gt: np.ndarray, phased: np.ndarray, ds: np.ndarray | None,
                 gp: np.ndarray | list[np.ndarray] | None, *, decimals: int, allele_width: int,
                 line_end: bool, lead: int = 0) -> np.ndarray | None:
    """One uint8 row per variant holding its sample columns' text with zero bytes between; None
    for alleles of more than one digit or numbers too long (:func:`_format_calls_packed`).

    Each DS or GP value, with the ``:`` or ``,`` before it, is at most 8 bytes, so it is one
    uint64 looked up in a table (:func:`_packed_table`) and stored into an 8-byte slot of the
    call's fixed-width cell; padding bytes are zero. Each row starts with ``lead`` zero bytes
    (room for the record's first columns). The text is the same as the general path's of
    :func:`_format_calls` (the tables are made by it).
    """
    gp = _gp_columns(gp)
    values: list[tuple[np.ndarray, str]] = []
    if ds is not None:
        values.append((ds, ":"))
    absent = None
    if gp is not None:
        absent = np.logical_and.reduce([np.isnan(column) for column in gp])
        values += [(column, ":" if g == 0 else ",") for g, column in enumerate(gp)]
    scaled = []
    for value, separator in values:
        missing = ~np.isfinite(value)
        k = np.rint(np.where(missing, 0, value) * 10**decimals).astype(np.int64)
        width = len(str(int(k.max(initial=0)) // 10**decimals))
        if allele_width != 1 or 2 + width + decimals > 8 or 10 ** (width + decimals) > _TABLE_LIMIT:
            return None
        table = _packed_table(separator, decimals, width)
        scaled.append((table, np.where(missing, len(table) - 1, k)))
    n_var, n_samples, ploidy = gt.shape
    gt_width = 2 * ploidy - 1
    row_width = gt_width + 8 * len(values) + 1
    rows = np.zeros((n_var, lead + n_samples * row_width), np.uint8)
    text = rows[:, lead:].reshape(n_var, n_samples, row_width)
    for h in range(ploidy):
        text[..., 2 * h] = np.where(gt[..., h] < 0, DOT, gt[..., h] + ZERO)
        if h:
            text[..., 2 * h - 1] = np.where(phased, PIPE, SLASH)
    if values:
        slots = text[..., gt_width:gt_width + 8 * len(values)].view(np.uint64)
        for j, (table, k) in enumerate(scaled):
            slots[..., j] = np.take(table, k)
        if absent is not None and absent.any():  # no GP at all: one '.'
            first = len(values) - len(gp)
            slots[absent, first] = _packed_table(":", decimals, 1)[-1]
            slots[absent, first + 1:] = 0
    text[..., -1] = TAB
    if line_end:
        text[:, -1, -1] = NEWLINE
    return rows


def _format_records(prefixes: Sequence[bytes], gt: np.ndarray, phased: np.ndarray, ds: np.ndarray | None,
                    gp: np.ndarray | list[np.ndarray] | None, *, decimals: int, allele_width: int
                    ) -> tuple[bytes, np.ndarray]:
    """Whole record lines, each variant's ``prefixes`` entry (CHROM to FORMAT, tab-ended) then its
    sample columns (:func:`_format_calls`), as one bytes object, and the length of each line.

    Where the packed cells apply, the prefixes go into the rows' lead and one ``translate`` of
    the whole block leaves every line at once (no bytes object per variant).
    """
    joined = b"".join(prefixes)
    lead = max(map(len, prefixes), default=0)
    rows = (None if b"\0" in joined or b"\n" in joined else
            _packed_rows(gt, phased, ds, gp, decimals=decimals, allele_width=allele_width, line_end=True,
                         lead=lead))
    if rows is None:
        records = [prefix + line for prefix, line in zip(
            prefixes, _format_calls(gt, phased, ds, gp, decimals=decimals, allele_width=allele_width),
            strict=True)]
        return b"".join(records), np.fromiter(map(len, records), dtype=np.int64, count=len(records))
    sizes = np.fromiter(map(len, prefixes), dtype=np.int64, count=len(prefixes))
    starts = np.repeat(np.arange(len(prefixes)) * rows.shape[1] - np.cumsum(sizes) + sizes, sizes)
    rows.reshape(-1)[starts + np.arange(len(joined))] = np.frombuffer(joined, dtype=np.uint8)
    text = rows.tobytes().translate(None, b"\0")
    ends = np.flatnonzero(np.frombuffer(text, dtype=np.uint8) == NEWLINE) + 1
    return text, np.diff(ends, prepend=0)


def _gp_columns(gp: np.ndarray | list[np.ndarray] | None) -> list[np.ndarray] | None:
    """GP as one array per genotype (:func:`_format_calls` takes either layout)."""
    if gp is None or isinstance(gp, list):
        return gp
    return [gp[..., g] for g in range(gp.shape[-1])]


def _normalised_columns(columns: list[np.ndarray]) -> list[np.ndarray]:
    """Scale each call's GP, given as one float array per genotype, to sum to 1; calls with NaN,
    or summing to 0, become missing. The sum runs left to right, as ``sum(axis=-1)`` over a
    short last axis does, as whole-array additions (a reduction over a length-3 axis is slow)."""
    total = columns[0]
    for column in columns[1:]:
        total = total + column
    bad = ~np.isfinite(total) | (total <= 0)
    if not bad.any():
        return [column / total for column in columns]
    divisor = np.where(bad, 1, total)
    return [np.where(bad, np.nan, column / divisor) for column in columns]


def _check_writable(ds: xr.Dataset, fields: Sequence[str]) -> None:
    """Raise ValueError if the dataset cannot be written as a valid, indexable VCF."""
    contigs = ds.attrs.get("contigs")
    if contigs is None:
        raise InvalidArgumentError("dataset has no 'contigs' attribute (made by create_genotype_dataset)")
    contig = np.asarray(ds["variant_contig"].values)
    position = np.asarray(ds["variant_position"].values)
    if contig.size and (contig.min() < 0 or contig.max() >= len(contigs)):
        raise InvalidArgumentError("variant_contig holds indices outside the 'contigs' attribute")
    if (position < 0).any():
        raise InvalidArgumentError("variant_position has negative values")
    changes = np.flatnonzero(np.diff(contig) != 0) + 1
    runs = contig[np.r_[0, changes]] if contig.size else contig
    if len(set(runs.tolist())) != len(runs):
        raise InvalidArgumentError("variants of one contig are not contiguous; sort the dataset first")
    same = np.diff(contig) == 0
    backwards = np.flatnonzero(same & (np.diff(position) < 0))
    if backwards.size:
        i = int(backwards[0]) + 1
        raise InvalidArgumentError(
            f"variant {i} ({contigs[contig[i]]}:{position[i]}) comes after position "
            f"{position[i - 1]}; sort the dataset by position first")
    alleles = np.asarray(ds["variant_allele"].values)
    sample_ids = [_text(s) for s in ds["sample_id"].values]
    for name, texts, forbidden in (("variant_allele", [_text(a) for a in alleles.ravel()], "\t\n\r ,"),
                                   ("sample_id", sample_ids, "\t\n\r")):
        if set("".join(texts)) & set(forbidden):
            bad = next(t for t in texts if set(t) & set(forbidden))
            raise InvalidArgumentError(f"{name} value {bad!r} cannot be written to a VCF")
    if alleles.size and not all(_text(a) for a in alleles[:, 0]):
        raise InvalidArgumentError("some variants have an empty REF allele")
    if not all(sample_ids) or len(set(sample_ids)) != len(sample_ids):
        raise InvalidArgumentError("sample_id has empty or duplicate names")
    if "GT" not in fields:
        raise InvalidArgumentError("GT must be written; fields must include 'GT'")


def _header(ds: xr.Dataset, fields: Sequence[str]) -> bytes:
    return header_text(ds.attrs["contigs"], ds.attrs.get("contig_lengths"), fields,
                       [str(s) for s in ds["sample_id"].values])


def header_text(contigs: Sequence[str], lengths: Sequence[int] | None, fields: Sequence[str],
                sample_ids: Sequence[str]) -> bytes:
    """The VCF header :func:`write_vcf` writes (contigs, FORMAT fields, sample columns)."""
    lines = ["##fileformat=VCFv4.2", "##source=analysislib"]
    for i, contig in enumerate(contigs):
        length = f",length={lengths[i]}" if lengths is not None and i < len(lengths) else ""
        lines.append(f"##contig=<ID={contig}{length}>")
    described = {
        "GT": '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
        "DS": '##FORMAT=<ID=DS,Number=A,Type=Float,Description="Estimated alternate allele dosage">',
        "GP": '##FORMAT=<ID=GP,Number=G,Type=Float,Description="Genotype probabilities">',
    }
    lines += [described[f] for f in fields]
    columns = ["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO"]
    if len(sample_ids):
        columns += ["FORMAT", *sample_ids]
    lines.append("\t".join(columns))
    return ("\n".join(lines) + "\n").encode()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _vcf_lines(ds: xr.Dataset, fields: Sequence[str], decimals: int, block: int) -> Iterator[bytes]:
    """The record lines of ``ds``, a block of variants at a time."""
    contigs = [str(c) for c in ds.attrs["contigs"]]
    contig = np.asarray(ds["variant_contig"].values)
    position = np.asarray(ds["variant_position"].values)
    ids = np.asarray(ds["variant_id"].values) if "variant_id" in ds else None
    alleles = np.asarray(ds["variant_allele"].values)
    has_samples = ds.sizes["samples"] > 0
    format_column = ":".join(fields)
    for start in range(0, ds.sizes["variants"], block):
        stop = min(start + block, ds.sizes["variants"])
        part = ds.isel(variants=slice(start, stop))
        prefixes = []
        for v in range(start, stop):
            alts = [_text(a) for a in alleles[v, 1:] if _text(a)]
            variant_id = _text(ids[v]) if ids is not None and _text(ids[v]) else "."
            row = [contigs[contig[v]], str(position[v]), variant_id, _text(alleles[v, 0]),
                   ",".join(alts) or ".", ".", ".", "."]
            if has_samples:
                row.append(format_column)
            prefixes.append(("\t".join(row) + ("\t" if has_samples else "\n")).encode())
        if not has_samples:
            yield b"".join(prefixes)
            continue
        gt = np.asarray(part["call_genotype"].values)
        phased = (np.asarray(part["call_genotype_phased"].values) if "call_genotype_phased" in part
                  else np.zeros(gt.shape[:2], bool))
        dosage = probability = None
        if "DS" in fields:
            dosage = np.asarray(part["call_dosage"].values, dtype=np.float64)
            if (np.rint(np.nan_to_num(dosage) * 10**decimals) < 0).any():
                raise InvalidArgumentError("call_dosage has negative values")
        if "GP" in fields:
            probability = np.asarray(part["call_genotype_probability"].values, dtype=np.float64)
            if (np.nan_to_num(probability) < 0).any():
                raise InvalidArgumentError("call_genotype_probability has negative values")
            probability = _normalised_columns(_gp_columns(probability))
        width = max(1, len(str(int(gt.max(initial=0)))))
        yield _format_records(prefixes, gt, phased, dosage, probability, decimals=decimals,
                              allele_width=width)[0]


def write_vcf(
    ds: xr.Dataset,
    path: str | os.PathLike[str],
    *,
    fields: Sequence[str] | None = None,
    decimals: int = 3,
    compress_level: int = 6,
    block_variants: int = 5000,
) -> Path:
    """Write a genotype dataset as bgzipped, indexed VCF (or BCF, or plain VCF).

    Parameters
    ----------
    ds
        A genotype dataset (see :func:`~analysislib.genotype.dataset.create_genotype_dataset`),
        sorted by contig and position. Dask-backed datasets are computed a block at a time.
    path
        Ends in ``.vcf.gz`` (bgzip + ``.tbi``), ``.bcf`` (BCF + ``.csi``) or ``.vcf`` (plain
        text, no index).
    fields
        FORMAT fields to write, among ``GT``, ``DS`` (from ``call_dosage``) and ``GP`` (from
        ``call_genotype_probability``); GT is required. None writes every one the dataset has.
    decimals
        Decimal places of DS and GP (trailing zeros are trimmed).
    compress_level
        bgzf/BCF compression level, 0-9 (htslib's default is 6). For ``.vcf.gz``, levels 1-3
        deflate with ISA-L, about 10x faster than zlib at 6 for a file about 15% larger with
        imputed dosages (:class:`~analysislib.io.bgzf.BgzfVcfWriter`).
    block_variants
        Variants formatted at a time (bounds memory).

    Returns
    -------
    Path
        The written file. Each FORMAT field written, and every contig in ``ds.attrs["contigs"]``,
        is declared in the header. GP is normalised to sum to 1 per call; a GP row with NaN or
        summing to 0 is written as missing (``.``). QUAL, FILTER and INFO are ``.``.

    Raises
    ------
    ValueError
        The dataset is unsorted, lacks a requested field, or holds values that cannot be
        written. Nothing is written: output goes to a temporary file renamed into place
        (with its index) only on success.
    """
    path = Path(path)
    _output_kind(path)
    if not 0 <= compress_level <= 9:
        raise InvalidArgumentError("compress_level must be between 0 and 9")
    available = {"GT": "call_genotype", "DS": "call_dosage", "GP": "call_genotype_probability"}
    if fields is None:
        fields = [f for f, var in available.items() if var in ds]
    for f in fields:
        if f not in available:
            raise InvalidArgumentError(f"cannot write FORMAT field {f!r}; supported: {list(available)}")
        if available[f] not in ds:
            raise InvalidArgumentError(f"field {f} needs variable {available[f]!r}, which the dataset lacks")
    fields = [f for f in available if f in fields]  # GT first, as VCF requires
    variables.validate(ds, [*variables.GENOTYPE_CORE, *(available[f] for f in fields)])
    if "GP" in fields and ds.sizes["genotypes"] != ds.sizes["ploidy"] + 1:
        raise InvalidArgumentError("call_genotype_probability must have ploidy + 1 genotypes (biallelic)")
    if ds.sizes["alleles"] > 2 and ("DS" in fields or "GP" in fields):
        raise InvalidArgumentError("DS and GP can only be written for biallelic variants (2 alleles)")
    _check_writable(ds, fields)

    with records_output(path, _header(ds, fields), compress_level=compress_level) as write:
        for chunk in _vcf_lines(ds, fields, decimals, block_variants):
            write(chunk)
    return path


def _text_only(write: Any) -> Any:
    """:func:`records_output`'s ``write(text, sites=None)`` for a format whose index needs no sites."""
    return lambda text, sites=None: write(text)


def _output_kind(path: Path) -> tuple[str, tuple[str, ...]]:
    name = path.name
    if name.endswith((".vcf.gz", ".vcf.bgz")):
        return "vcf.gz", (".tbi",)
    if name.endswith(".bcf"):
        return "bcf", (".csi",)
    if name.endswith(".vcf"):
        return "vcf", ()
    raise InvalidArgumentError(f"{path}: the file name must end in .vcf.gz, .bcf or .vcf")


@contextlib.contextmanager
def records_output(path: str | os.PathLike[str], header: bytes, *, compress_level: int = 6,
                   threads: int = 1) -> Iterator[Any]:
    """Write a VCF from its header and record text, atomically, with its index.

    Yields a function ``write(text, sites=None)`` that appends record lines (bytes). ``sites``,
    if given, is ``(chroms, beg, end, lengths)`` of whole record lines
    (:meth:`~analysislib.io.bgzf.BgzfVcfWriter.write_records`), so a ``.vcf.gz`` index is built
    without parsing the text again; other formats ignore it. ``.vcf.gz`` is bgzipped
    (``threads`` blocks compressed at once) and gets a ``.tbi`` built as it is written
    (:class:`~analysislib.io.bgzf.BgzfVcfWriter`), ``.bcf`` is converted by htslib and gets a
    ``.csi``, ``.vcf`` is plain text. Records must be sorted (contigs contiguous, positions
    ascending) for the indexed formats. The
    file appears under ``path`` only when the block ends without error (see
    :func:`~analysislib.io.atomic.atomic_output`); otherwise nothing is left behind and an
    older file at ``path`` is kept.
    """
    import pysam

    path = Path(path)
    kind, companions = _output_kind(path)
    if not 0 <= compress_level <= 9:
        raise InvalidArgumentError("compress_level must be between 0 and 9")
    with atomic_output(path, companions=companions) as tmp:
        if kind == "vcf":
            with open(tmp, "wb") as out:
                out.write(header)
                yield _text_only(out.write)
        elif kind == "vcf.gz":  # bgzipped with the .tbi built while writing
            with BgzfVcfWriter(tmp, level=compress_level, threads=threads) as bgzf:
                bgzf.write(header)

                def write(text: bytes, sites: tuple[Any, ...] | None = None) -> None:
                    if sites is None:
                        bgzf.write(text)
                    else:
                        bgzf.write_records(text, *sites)

                yield write
        else:
            with tempfile.TemporaryDirectory(dir=tmp.parent, prefix=f".{path.name}.") as scratch:
                text_path = Path(scratch) / "records.vcf"
                with open(text_path, "wb") as out:
                    out.write(header)
                    yield _text_only(out.write)
                with _quiet_htslib(), pysam.VariantFile(str(text_path)) as source, \
                        pysam.VariantFile(str(tmp), f"wb{compress_level}", header=source.header) as target:
                    for record in source:
                        target.write(record)
            with _quiet_htslib():
                pysam.tabix_index(str(tmp), preset="bcf", csi=True, force=True)


# --------------------------------------------------------------------------------------------
# Sample checks
# --------------------------------------------------------------------------------------------


def check_diploid_panel(ds: xr.Dataset, where: Any, purpose: str, *, min_samples: int = 1) -> None:
    """InputFormatError naming ``where`` unless ``ds`` has variants, samples and diploid calls.

    ``purpose`` completes the messages ("train on", "impute or score"); ``min_samples`` is the
    fewest samples the caller can use.
    """
    if ds.sizes["variants"] == 0:
        raise InputFormatError(where, "no variant records (the file holds a header only): "
                               f"nothing to {purpose}")
    if ds.sizes["samples"] < min_samples:
        raise InputFormatError(where, f"{ds.sizes['samples']} sample(s); at least {min_samples} "
                               f"needed to {purpose}")
    ploidy = ds.sizes["ploidy"]
    if ploidy != 2:
        kind = {1: "haploid", 3: "triploid", 4: "tetraploid"}.get(ploidy, f"of ploidy {ploidy}")
        raise InputFormatError(where, f"genotypes are {kind} (from the first genotype call); "
                               f"only diploid genotypes can be used to {purpose}")


def check_same_samples(ds_a: xr.Dataset, ds_b: xr.Dataset, *, ignore_order: bool = False) -> None:
    """Raise unless two genotype datasets hold the same samples (in the same order).

    Use it before combining panels, for example a reference and its masked copy.

    Parameters
    ----------
    ds_a, ds_b
        Genotype datasets; their ``source`` attribute (set by :func:`read_vcf`) names them in the
        error message.
    ignore_order
        Accept the same samples in a different order.

    Raises
    ------
    InputFormatError
        Listing samples found in only one dataset, or the first position where the orders differ.
    """
    a = [str(s) for s in ds_a["sample_id"].values]
    b = [str(s) for s in ds_b["sample_id"].values]
    where = f"{ds_a.attrs.get('source', 'first dataset')} vs {ds_b.attrs.get('source', 'second dataset')}"
    set_a, set_b = set(a), set(b)
    only_a = [s for s in a if s not in set_b]
    only_b = [s for s in b if s not in set_a]

    def shown(names: list[str]) -> str:
        return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")

    if only_a or only_b:
        parts = []
        if only_a:
            parts.append(f"{len(only_a)} sample(s) only in the first ({shown(only_a)})")
        if only_b:
            parts.append(f"{len(only_b)} sample(s) only in the second ({shown(only_b)})")
        raise InputFormatError(where, "sample sets differ: " + "; ".join(parts))
    if len(a) != len(b) or len(set(a)) != len(a):
        raise InputFormatError(where, "sample lists differ in length or repeat a sample")
    if not ignore_order and a != b:
        first = next(i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)
        raise InputFormatError(
            where, f"same samples in a different order (position {first}: {a[first]} vs "
            f"{b[first]}); reorder one with ds.sel or pass ignore_order=True")
