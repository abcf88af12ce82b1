from __future__ import annotations

import numpy as np
import pytest

from analysislib.genotype.encoding import (
    allele_presence,
    dosage_from_probabilities,
    genotype_probabilities_from_haplotype_presence,
    genotype_probabilities_from_presence,
    haplotype_rows,
)


def test_allele_presence_by_hand():
    gt = np.array([[[0, 0], [0, 1], [1, 1], [-1, 0]]], dtype=np.int8)  # one variant, four samples
    np.testing.assert_array_equal(allele_presence(gt), [[1, 0], [1, 1], [0, 1], [0, 0]])
    two = np.array([[[0, 1]], [[1, 1]]], dtype=np.int8)  # two variants, one sample
    np.testing.assert_array_equal(allele_presence(two), [[1, 1, 0, 1]])


def test_probabilities_are_normalised_and_invert_the_encoding():
    gp = genotype_probabilities_from_presence(np.array([[0.9, 0.2, 0.5, 0.5, 0.0, 0.0]]))
    raw = np.array([0.9 * 0.8, 0.9 * 0.2, 0.1 * 0.2])
    np.testing.assert_allclose(gp[0, 0], raw / raw.sum())
    np.testing.assert_allclose(gp[0, 1], [1 / 3, 1 / 3, 1 / 3])
    np.testing.assert_allclose(gp[0, 2], [1 / 3, 1 / 3, 1 / 3])  # no evidence at all
    np.testing.assert_allclose(gp.sum(axis=2), 1)
    gt = np.array([[[0, 0], [0, 1], [1, 1]]], dtype=np.int8)
    exact = genotype_probabilities_from_presence(allele_presence(gt))
    np.testing.assert_allclose(dosage_from_probabilities(exact)[:, 0], [0, 1, 2])


def test_haplotype_rows_are_homozygous_pseudo_samples():
    gt = np.array([[[0, 1], [1, -1]], [[1, 1], [0, 0]]], dtype=np.int8)  # two variants, two samples
    rows = haplotype_rows(gt)
    assert rows.shape == (2, 4, 2) and rows.dtype == np.int8
    # sample 0's haplotypes, then sample 1's; a missing allele stays missing on its row only
    np.testing.assert_array_equal(rows[0], [[0, 0], [1, 1], [1, 1], [-1, -1]])
    np.testing.assert_array_equal(rows[1], [[1, 1], [1, 1], [0, 0], [0, 0]])


def test_haplotype_probabilities_multiply_over_the_two_haplotypes():
    # one sample, two variants; each row's outputs (p_ref, p_alt) per variant
    first = [0.9, 0.1, 0.0, 1.0]
    second = [0.2, 0.6, 0.5, 0.5]
    gp = genotype_probabilities_from_haplotype_presence(np.array([first, second]))
    assert gp.shape == (1, 2, 3)
    # a row's ALT probability: half its dosage, (P(0/1) / 2 + P(1/1)) / (P(0/0) + P(0/1) + P(1/1))
    a = (0.9 * 0.1 / 2 + 0.1 * 0.1) / (0.9 * 0.9 + 0.9 * 0.1 + 0.1 * 0.1)
    b = (0.2 * 0.6 / 2 + 0.8 * 0.6) / (0.2 * 0.4 + 0.2 * 0.6 + 0.8 * 0.6)
    np.testing.assert_allclose(gp[0, 0], [(1 - a) * (1 - b), a * (1 - b) + (1 - a) * b, a * b])
    b = (0.25 / 2 + 0.25) / 0.75  # outputs (0.5, 0.5): P = 0.25, 0.25, 0.25 before normalising
    np.testing.assert_allclose(gp[0, 1], [0, 1 - b, b])  # ALT for sure on the first row
    np.testing.assert_allclose(gp.sum(axis=2), 1)
    # exact outputs for the rows of 0|1 and 1|1 give the genotypes back
    gt = np.array([[[0, 1], [1, 1]]], dtype=np.int8)
    exact = genotype_probabilities_from_haplotype_presence(allele_presence(haplotype_rows(gt)))
    np.testing.assert_allclose(dosage_from_probabilities(exact)[:, 0], [1, 2])


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="diploid"):
        allele_presence(np.zeros((2, 3), dtype=np.int8))
    with pytest.raises(ValueError, match="presence outputs"):
        genotype_probabilities_from_presence(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="diploid"):
        haplotype_rows(np.zeros((2, 3), dtype=np.int8))
    with pytest.raises(ValueError, match="haplotype-row outputs"):
        genotype_probabilities_from_haplotype_presence(np.zeros((3, 4)))
