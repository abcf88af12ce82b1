from __future__ import annotations

import numpy as np
import pytest

from analysislib.genotype.encoding import (
    allele_presence,
    dosage_from_probabilities,
    genotype_probabilities_from_presence,
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


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="diploid"):
        allele_presence(np.zeros((2, 3), dtype=np.int8))
    with pytest.raises(ValueError, match="presence outputs"):
        genotype_probabilities_from_presence(np.zeros((2, 3)))
