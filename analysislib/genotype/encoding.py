"""Genotype encodings for neural imputers and their inverses.

Allele presence (Dias et al. 2022, Methods "Genotype encoding", Eq. 1): two nodes per variant,
``[REF present, ALT present]``: 0/0 -> [1, 0], 0/1 -> [1, 1], 1/1 -> [0, 1], missing -> [0, 0].
Decoding follows the authors' inference code: with sigmoid outputs ``(p_ref, p_alt)``,
``P(0/0) = p_ref (1 - p_alt)``, ``P(0/1) = p_ref p_alt``, ``P(1/1) = (1 - p_ref) p_alt``; unlike
their code, the three are normalised to sum to 1 before dosage and best guess are derived.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from analysislib.errors import InvalidArgumentError

__all__ = [
    "allele_presence",
    "dosage_from_probabilities",
    "genotype_probabilities_from_presence",
]


def allele_presence(call_genotype: Any) -> np.ndarray:
    """Encode diploid genotypes as allele-presence bits.

    Parameters
    ----------
    call_genotype
        Array ``(variants, samples, 2)`` of allele indices, -1 missing (a call with any missing
        allele is missing).

    Returns
    -------
    numpy.ndarray
        float32 ``(samples, 2 * variants)``, interleaved ``[ref_0, alt_0, ref_1, alt_1, ...]``.
    """
    gt = np.asarray(call_genotype)
    if gt.ndim != 3 or gt.shape[2] != 2:
        raise InvalidArgumentError(f"expected diploid call_genotype (variants, samples, 2), got shape {gt.shape}")
    # Samples first before any arithmetic; whole-array operations (reductions over the
    # length-2 ploidy axis are slow).
    first, second = gt[..., 0].T, gt[..., 1].T
    called = (first >= 0) & (second >= 0)
    bits = np.empty((gt.shape[1], gt.shape[0], 2), dtype=np.float32)
    bits[..., 0] = called & ((first == 0) | (second == 0))  # not 1/1: a REF allele
    bits[..., 1] = called & ((first > 0) | (second > 0))
    return bits.reshape(gt.shape[1], -1)


def genotype_probabilities_from_presence(presence: Any, eps: float = 1e-12) -> np.ndarray:
    """Normalised genotype probabilities ``(samples, variants, 3)`` from allele-presence outputs.

    ``presence`` is ``(samples, 2 * variants)`` of sigmoid outputs, interleaved as in
    :func:`allele_presence`.
    """
    p = np.asarray(presence, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] % 2:
        raise InvalidArgumentError(f"expected (samples, 2 * variants) presence outputs, got shape {p.shape}")
    p_ref, p_alt = p[:, 0::2], p[:, 1::2]
    raw = np.stack([p_ref * (1 - p_alt), p_ref * p_alt, (1 - p_ref) * p_alt], axis=2)
    total = (raw[..., 0] + raw[..., 1] + raw[..., 2])[..., None]  # = raw.sum(axis=2), faster
    uniform = np.full_like(raw, 1 / 3)
    return np.where(total > eps, raw / np.maximum(total, eps), uniform)


def dosage_from_probabilities(gp: Any) -> np.ndarray:
    """Expected alternate-allele count ``P(0/1) + 2 P(1/1)`` from ``(..., 3)`` probabilities."""
    gp = np.asarray(gp)
    return gp[..., 1] + 2 * gp[..., 2]
