"""benchmarks/biunet_capacity.py: the nearest-haplotype lookup and the score, on hand-made haplotypes."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def capacity(benchmark_script):
    return benchmark_script("biunet_capacity")


def test_the_lookup_copies_the_nearest_reference_haplotype_and_averages_ties(capacity):
    # four reference haplotypes (two samples) over 6 SNPs
    haps = np.array([[0, 0, 0, 0, 0, 0],
                     [1, 1, 1, 1, 1, 1],
                     [0, 1, 0, 1, 0, 1],
                     [0, 1, 0, 1, 1, 1]])
    reference = haps.T.reshape(6, 2, 2)
    # target sample: haplotype 1 = reference hap 2 except SNP 4 (shared with hap 3); haplotype 2 = hap 1
    target = np.stack([haps[2], haps[1]], axis=-1)[:, None, :]  # (6, 1, 2)
    hidden = np.zeros((6, 1), dtype=bool)
    hidden[4] = True
    dosage = capacity.nearest_haplotype_dosage(reference, target, hidden, half_window=2)
    # copy 1: haps 2 and 3 tie on SNPs 2, 3, 5 -> ALT 0.5; copy 2: hap 1 alone -> 1
    assert dosage[4, 0] == pytest.approx(1.5)
    assert dosage[~hidden].sum() == 0
    # one SNP on each side (3 and 5) no longer tells haps 1, 2 and 3 apart: 2/3 ALT for each copy
    assert capacity.nearest_haplotype_dosage(reference, target, hidden, half_window=1)[4, 0] == pytest.approx(4 / 3)


def test_score_counts_rounded_calls_and_pooled_r2_over_hidden_entries_only(capacity):
    genotypes = np.array([[[0, 0], [0, 1]], [[1, 1], [1, 0]], [[0, 1], [0, 0]]])  # (3, 2, 2)
    hidden = np.array([[True, True], [True, False], [False, True]])
    dosage = np.array([[0.2, 0.4], [1.7, 9.0], [9.0, 0.4]])  # 9.0: not hidden, must be ignored
    out = capacity.score(dosage, genotypes, hidden)
    assert out["entries"] == 4
    assert out["accuracy"] == pytest.approx(3 / 4)  # the 0.4 against a heterozygote is the one miss
    truth = np.array([0, 1, 2, 0])
    assert out["r2"] == pytest.approx(np.corrcoef([0.2, 0.4, 1.7, 0.4], truth)[0, 1] ** 2)
    # a model's own calls replace the rounded dosage: the heterozygote is right, the last entry wrong
    calls = np.array([[0, 1], [2, 2], [2, 2]])
    with_calls = capacity.score(dosage, genotypes, hidden, calls)
    assert with_calls["accuracy"] == pytest.approx(3 / 4) and with_calls["r2"] == out["r2"]
    calls[2, 1] = 0
    assert capacity.score(dosage, genotypes, hidden, calls)["accuracy"] == 1.0
