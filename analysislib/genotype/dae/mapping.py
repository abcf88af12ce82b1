"""Matching input variants to a bundle's variants: contigs, positions, alleles, flips, strands.

Variants match on contig, position and alleles (:func:`map_variants`): REF/ALT swapped relative
to the bundle is an allele flip (genotypes recoded), complemented alleles a strand flip, A/T and
C/G SNPs are taken as written or left out, contig names ``22`` and ``chr22`` are matched, and an
input that does not fit (another genome build, no shared variant) gets a clear error.
:class:`VariantMapping` records what was used, flipped, dropped and renamed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from analysislib.errors import InputFormatError, InvalidArgumentError
from analysislib.genotype.dae.bundle import Bundle, _object_codes
from analysislib.genotype.dae.contigs import (
    _contig_length_map,
    _contig_names,
    infer_genome_build,
    normalise_contig,
)

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["StrandPolicy", "VariantMapping", "map_variants"]

_COMPLEMENT = {"A": "T", "C": "G", "G": "C", "T": "A"}
_AMBIGUOUS = {("A", "T"), ("T", "A"), ("C", "G"), ("G", "C")}
StrandPolicy = Literal["keep", "drop"]

_KIND_RANK = {"exact": 0, "ambiguous": 0, "allele_flip": 1, "ambiguous_flip": 1, "strand_flip": 2,
              "strand_allele_flip": 3, "monomorphic": 4, "ambiguous_dropped": 8, "allele_mismatch": 9}
_USED_KINDS = ("exact", "ambiguous", "allele_flip", "ambiguous_flip", "strand_flip",
               "strand_allele_flip", "monomorphic")
_FLIP_KINDS = ("allele_flip", "ambiguous_flip", "strand_allele_flip")


@dataclass
class VariantMapping:
    """How input variants map onto a bundle's variants.

    Attributes
    ----------
    input_index, bundle_index
        Matched pairs in input order: input variant ``input_index[k]`` is bundle variant
        ``bundle_index[k]``.
    flip
        Per pair, True when REF and ALT are swapped (genotypes are recoded 0 <-> 1).
    counts
        Input variants per outcome: ``exact``, ``allele_flip`` (REF/ALT swapped),
        ``strand_flip`` (alleles complemented), ``strand_allele_flip`` (both),
        ``ambiguous`` / ``ambiguous_flip`` (A/T or C/G SNPs used as given / swapped),
        ``ambiguous_dropped`` (A/T or C/G SNPs left out by ``strand_ambiguous="drop"``),
        ``monomorphic`` (input ALT ``.``, matched on REF), ``allele_mismatch`` (a bundle variant
        at the position, alleles incompatible), ``duplicate`` (a second input variant for the
        same bundle variant), ``not_in_bundle`` (no bundle variant at the position),
        ``other_contig`` (contig absent from the bundle), and the totals ``input``, ``used``,
        ``bundle``.
    contig_map
        Input contig name -> bundle contig name, for names that differ (``chr22`` -> ``22``).
    """

    input_index: np.ndarray
    bundle_index: np.ndarray
    flip: np.ndarray
    counts: dict[str, int]
    contig_map: dict[str, str]

    def summary(self) -> str:
        """A few lines for people: what was used, flipped, dropped and renamed."""
        c = self.counts
        lines = [(f"{c['used']} of {c['input']} input variants matched {c['bundle']} bundle variants "
                  f"({100 * c['used'] / max(1, c['bundle']):.1f}% of the bundle typed)")]
        details = [f"{k.replace('_', ' ')} {c[k]}" for k in (
            "exact", "allele_flip", "strand_flip", "strand_allele_flip", "ambiguous", "ambiguous_flip",
            "ambiguous_dropped", "monomorphic", "allele_mismatch", "duplicate", "not_in_bundle",
            "other_contig") if c.get(k)]
        lines.append("  " + "; ".join(details))
        if c.get("ambiguous") or c.get("ambiguous_flip") or c.get("ambiguous_dropped"):
            lines.append("  strand-ambiguous (A/T, C/G) SNPs: "
                         f"{c.get('ambiguous', 0) + c.get('ambiguous_flip', 0)} used as written, "
                         f"{c.get('ambiguous_dropped', 0)} dropped")
        for src, dst in self.contig_map.items():
            lines.append(f"  input contig {src!r} read as bundle contig {dst!r}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Counts and contig renames (JSON-serialisable)."""
        return {"counts": dict(self.counts), "contig_map": dict(self.contig_map)}


def _classify(ref_t: np.ndarray, alt_t: np.ndarray, ref_b: np.ndarray, alt_b: np.ndarray,
              strand_ambiguous: StrandPolicy) -> np.ndarray:
    """Relation of each (input, bundle) allele pair at a shared position; see :class:`VariantMapping`."""
    def complement(alleles: np.ndarray) -> np.ndarray:
        out = np.full(len(alleles), "", dtype=object)
        for base, other in _COMPLEMENT.items():
            out[alleles == base] = other
        return out

    exact = (ref_t == ref_b) & (alt_t == alt_b)
    swap = (ref_t == alt_b) & (alt_t == ref_b)
    bases = list(_COMPLEMENT)
    snp = np.isin(ref_t, bases) & np.isin(alt_t, bases)
    c_ref, c_alt = complement(ref_t), complement(alt_t)
    strand = snp & (c_ref == ref_b) & (c_alt == alt_b)
    strand_swap = snp & (c_ref == alt_b) & (c_alt == ref_b)
    ambiguous = np.zeros(len(ref_b), dtype=bool)
    for a, b in _AMBIGUOUS:
        ambiguous |= (ref_b == a) & (alt_b == b)
    monomorphic = np.isin(alt_t, ["", "."]) & (ref_t == ref_b)
    kind = np.full(len(ref_t), "allele_mismatch", dtype=object)
    kind[monomorphic] = "monomorphic"
    kind[strand_swap] = "strand_allele_flip"
    kind[strand] = "strand_flip"
    kind[swap] = "allele_flip"
    kind[exact] = "exact"
    amb = ambiguous & (exact | swap)
    if strand_ambiguous == "drop":
        kind[amb] = "ambiguous_dropped"
    else:
        kind[ambiguous & exact] = "ambiguous"
        kind[ambiguous & swap & ~exact] = "ambiguous_flip"
    return kind


def map_variants(
    bundle: Bundle,
    target: xr.Dataset,
    *,
    strand_ambiguous: StrandPolicy = "keep",
    source: str | os.PathLike[str] | None = None,
) -> VariantMapping:
    """Match a target dataset's variants to a bundle's.

    Variants match on contig, position and alleles. REF/ALT swapped relative to the bundle is an
    allele flip (genotypes recoded). For SNPs that are not strand-ambiguous, complemented alleles
    are a strand flip (with or without a swap). A/T and C/G SNPs cannot reveal a strand flip:
    with ``strand_ambiguous="keep"`` they are taken as written (VCF alleles are on the forward
    strand), with ``"drop"`` they are left untyped and imputed. Contig names are compared
    exactly, then without a ``chr`` prefix (``chr22`` reads as ``22``).

    Parameters
    ----------
    bundle
        The model bundle.
    target
        Genotype dataset to impute (biallelic).
    strand_ambiguous
        ``"keep"`` or ``"drop"`` (see above).
    source
        File named in error messages (default: ``target.attrs["source"]``).

    Returns
    -------
    VariantMapping

    Raises
    ------
    InputFormatError
        No input contig matches the bundle's (both lists are given); the input's contig
        lengths show another genome build; most shared positions have other alleles (another
        build or reference); or no input variant matches a bundle variant.
    """
    where = str(source or target.attrs.get("source") or "target dataset")
    if target.sizes.get("alleles", 2) > 2:
        raise InputFormatError(where, "multi-allelic variants: split them first (read_vcf(..., "
                               "multiallelic='split') or bcftools norm -m-)")
    return _map_sites(bundle, _contig_names(target).astype(str), target["variant_position"].values,
                      target["variant_allele"].values, _contig_length_map(target),
                      strand_ambiguous=strand_ambiguous, where=where)


def _map_sites(bundle: Bundle, names: np.ndarray, positions: np.ndarray, alleles: np.ndarray,
               contig_lengths: Mapping[str, int], *, strand_ambiguous: StrandPolicy, where: str
               ) -> VariantMapping:
    """:func:`map_variants` on the variant columns: contig name per variant, positions, alleles."""
    if strand_ambiguous not in ("keep", "drop"):
        raise InvalidArgumentError("strand_ambiguous must be 'keep' or 'drop'")
    bundle_contigs = bundle.contigs
    by_normal = {normalise_contig(c): c for c in bundle_contigs}
    contig_map: dict[str, str] = {}
    used_names = list(dict.fromkeys(names.tolist()))
    for name in used_names:
        if name in bundle_contigs:
            continue
        if normalise_contig(name) in by_normal:
            contig_map[name] = by_normal[normalise_contig(name)]
    mapped = np.array([contig_map.get(n, n) for n in names], dtype=object)
    on_bundle = np.isin(mapped, bundle_contigs)
    if len(names) and not on_bundle.any():
        shown = ", ".join(used_names[:5]) + (" ..." if len(used_names) > 5 else "")
        raise InputFormatError(where, f"no input contig matches the model bundle's: the input has {shown}; "
                               f"the bundle has {', '.join(bundle_contigs)} (names like '22' and 'chr22' "
                               "are matched automatically)")
    _check_build(bundle, contig_lengths, contig_map, where)

    n_input = len(names)
    t_alleles = np.asarray(alleles, dtype=object)
    t_ref = t_alleles[:, 0].astype(str).astype(object)
    t_alt = (t_alleles[:, 1].astype(str).astype(object) if t_alleles.shape[1] > 1
             else np.full(n_input, "", dtype=object))
    t_pos = np.asarray(positions, dtype=np.int64)
    b_contig = bundle._variant("contig")
    b_pos = np.asarray(bundle._variant("pos"), dtype=np.int64)
    t_idx, b_idx = _same_sites(np.flatnonzero(on_bundle), mapped[on_bundle], t_pos[on_bundle], b_contig, b_pos)
    kind = _classify(t_ref[t_idx], t_alt[t_idx], np.asarray(bundle._variant("ref"), dtype=object)[b_idx],
                     np.asarray(bundle._variant("alt"), dtype=object)[b_idx], strand_ambiguous)
    rank = np.array([_KIND_RANK[k] for k in kind], dtype=np.int64)
    # Best relation per input variant, then one input variant per bundle variant.
    order = np.lexsort((b_idx, rank, t_idx))
    best_of_input = order[np.r_[True, t_idx[order][1:] != t_idx[order][:-1]]] if len(order) else order
    usable = best_of_input[np.isin(kind[best_of_input], _USED_KINDS)]
    order = usable[np.lexsort((t_idx[usable], rank[usable], b_idx[usable]))]
    keep = order[np.r_[True, b_idx[order][1:] != b_idx[order][:-1]]] if len(order) else order
    keep = np.sort(keep)
    counts = {k: 0 for k in _KIND_RANK}
    for k, n in zip(*np.unique(kind[keep], return_counts=True), strict=True):
        counts[str(k)] = int(n)
    rejected = best_of_input[~np.isin(kind[best_of_input], _USED_KINDS)]
    for k, n in zip(*np.unique(kind[rejected], return_counts=True), strict=True):
        counts[str(k)] += int(n)
    counts["duplicate"] = int(len(usable) - len(keep))
    counts["not_in_bundle"] = int(on_bundle.sum() - len(best_of_input))
    counts["other_contig"] = int((~on_bundle).sum())
    counts.update({"input": n_input, "used": len(keep), "bundle": len(b_pos)})
    position_matches = len(best_of_input)
    if position_matches >= 20 and counts["allele_mismatch"] > 0.5 * position_matches:
        raise InputFormatError(where, f"alleles differ at {counts['allele_mismatch']} of {position_matches} "
                               "positions shared with the model bundle: the input is probably on another "
                               f"genome build or reference (bundle: {bundle.genome_build or 'build unknown'})")
    if counts["used"] == 0:
        span = ", ".join(f"{c}:{int(b_pos[b_contig == c].min())}-{int(b_pos[b_contig == c].max())}"
                         for c in dict.fromkeys(b_contig.tolist()))
        raise InputFormatError(where, f"no input variant overlaps the model bundle: {n_input} input variants, "
                               f"{position_matches} at bundle positions but none with matching alleles; the "
                               f"bundle covers {span} ({bundle.genome_build or 'build unknown'})")
    return VariantMapping(t_idx[keep], b_idx[keep], np.isin(kind[keep], _FLIP_KINDS), counts, contig_map)


def _same_sites(t_rows: np.ndarray, t_contig: np.ndarray, t_pos: np.ndarray, b_contig: np.ndarray,
                b_pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Input rows and bundle rows of every pair on the same contig and position (a join).

    ``t_rows`` number the input variants ``t_contig`` / ``t_pos``; bundle variants are numbered
    from 0. Pairs come ordered by input row, then bundle row.
    """
    contig_codes = _object_codes(np.concatenate([np.asarray(t_contig, dtype=object),
                                                 np.asarray(b_contig, dtype=object)]))
    positions = np.concatenate([t_pos, b_pos])
    low, high = (int(positions.min()), int(positions.max())) if len(positions) else (0, 0)
    if (int(contig_codes.max(initial=0)) + 1) * (high - low + 1) >= 2**62:  # keys would overflow
        positions = np.unique(positions, return_inverse=True)[1]
        low, high = 0, int(positions.max(initial=0))
    keys = contig_codes * (high - low + 1) + (positions - low)
    t_keys, b_keys = keys[:len(t_pos)], keys[len(t_pos):]
    b_order = np.argsort(b_keys, kind="stable")
    b_sorted = b_keys[b_order]
    lo = np.searchsorted(b_sorted, t_keys, side="left")
    found = np.searchsorted(b_sorted, t_keys, side="right") - lo
    starts = np.repeat(lo, found)
    within = np.arange(len(starts)) - np.repeat(np.cumsum(found) - found, found)
    return np.repeat(np.asarray(t_rows, dtype=np.int64), found), b_order[starts + within].astype(np.int64)


def _check_build(bundle: Bundle, theirs: Mapping[str, int], contig_map: Mapping[str, str], where: str) -> None:
    """Compare contig lengths declared by the input with the bundle's; raise on a build mismatch."""
    ours = bundle.contig_lengths
    for name, length in theirs.items():
        bundle_name = contig_map.get(name, name)
        if bundle_name in ours and ours[bundle_name] != length:
            their_build = infer_genome_build([name], [length]) or "another build"
            raise InputFormatError(
                where, f"contig {name} has length {length} ({their_build}) but the model bundle's "
                f"{bundle_name} has length {ours[bundle_name]} ({bundle.genome_build or 'its build'}): "
                "the input is on a different genome build; lift it over first")
