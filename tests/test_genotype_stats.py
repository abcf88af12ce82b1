from __future__ import annotations

import numpy as np

from analysislib.genotype.stats import (
    alt_allele_frequency,
    genotype_pca,
    maf_spectrum,
    minor_allele_frequency,
)
from analysislib.testing import genotype_dataset


def test_allele_frequencies_by_hand_ignore_missing():
    gt = [[[0, 1], [1, 1], [0, -1]],   # 3 alt of 5 called
          [[0, 0], [0, 0], [0, 0]]]    # monomorphic
    ds = genotype_dataset(gt, populations=["A", "A", "B"])
    np.testing.assert_allclose(alt_allele_frequency(ds).values, [0.6, 0.0])
    np.testing.assert_allclose(minor_allele_frequency(ds).values, [0.4, 0.0])
    by = alt_allele_frequency(ds, by="sample_population")
    np.testing.assert_allclose(by.sel(group="A").values, [0.75, 0.0])
    np.testing.assert_allclose(by.sel(group="B").values, [0.0, 0.0])


def test_maf_spectrum_counts_each_variant_once():
    gt = [[[0, 1]] * 10, [[0, 0]] * 10, [[1, 1]] * 9 + [[0, 1]]]
    spectrum = maf_spectrum(genotype_dataset(gt))
    assert spectrum["n_variants"].sum() == 3
    assert spectrum.set_index("maf_bin").loc["0", "n_variants"] == 1
    assert spectrum.set_index("maf_bin").loc["(0.2, 0.5]", "n_variants"] == 1   # MAF 0.5
    assert spectrum.set_index("maf_bin").loc["(0.01, 0.05]", "n_variants"] == 1  # MAF 0.05


def test_pca_separates_two_populations():
    rng = np.random.default_rng(0)
    p = np.stack([rng.uniform(0.05, 0.3, 200), rng.uniform(0.7, 0.95, 200)])
    gt = np.concatenate([rng.random((200, 20, 2)) < p[0][:, None, None],
                         rng.random((200, 20, 2)) < p[1][:, None, None]], axis=1)
    pcs = genotype_pca(genotype_dataset(gt.astype(np.int8), populations=["A"] * 20 + ["B"] * 20), n_components=3)
    pc1 = pcs["sample_pc"].sel(components=1).values
    assert np.sign(pc1[:20]).std() == 0 and np.sign(pc1[20:]).std() == 0
    assert np.sign(pc1[0]) != np.sign(pc1[20])
    assert pcs["explained_variance_ratio"].values[0] > 0.3

