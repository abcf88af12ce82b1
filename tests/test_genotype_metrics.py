"""Tests of analysislib.genotype.metrics: hand-computed metrics, MAF bins and score_imputation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysislib.genotype.imputer import sites_key
from analysislib.genotype.metrics import (
    DIAS_MAF_BINS,
    PER_VARIANT_METRICS,
    aggregate_r2,
    allele_count,
    allele_presence_scores,
    assign_maf_bins,
    best_guess,
    concordance,
    f1_score,
    genotype_accuracy,
    genotype_confusion,
    iqs,
    maf_bin_labels,
    per_variant_r2,
    phased_accuracy,
    phased_genotype_confusion,
    rmse,
    score_imputation,
)
from analysislib.results import COLUMNS
from analysislib.testing import genotype_dataset

# ----------------------------------------------------------------------------- hand-computed cases


def test_allele_count_and_best_guess():
    gt = np.array([[[0, 0], [0, 1], [1, 1], [-1, 1], [1, 0]]], dtype=np.int8)
    np.testing.assert_array_equal(allele_count(gt), [[0, 1, 2, -1, 1]])
    # rint rounds halves to even, as the calculator's np.round; clipped to 0-2; NaN -> -1
    np.testing.assert_array_equal(best_guess([0.5, 1.5, 2.5, -0.3, 2.7, 0.49, np.nan]),
                                  [0, 2, 2, 0, 2, 0, -1])


def test_per_variant_r2_by_hand():
    x = np.array([[0.1, 1.2, 1.9, 0.4]])
    y = np.array([[0, 1, 2, 0]], dtype=np.int8)
    # means 0.9, 0.75; sxy 2.3, sxx 1.98, syy 2.75
    np.testing.assert_allclose(per_variant_r2(x, y), [2.3**2 / (1.98 * 2.75)])


def test_per_variant_r2_matches_numpy_and_the_calculator_formula():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, (50, 40)).astype(np.int8)
    x = np.clip(y + rng.normal(0, 0.6, y.shape), 0, 2)
    expected = [np.corrcoef(x[i], y[i])[0, 1] ** 2 for i in range(50)]
    np.testing.assert_allclose(per_variant_r2(x, y), expected, rtol=1e-10)
    n = y.shape[1]
    num = n * (x * y).sum(1) - x.sum(1) * y.sum(1)
    den = (n * (x**2).sum(1) - x.sum(1) ** 2) * (n * (y**2).sum(1) - y.sum(1) ** 2)
    np.testing.assert_allclose(per_variant_r2(x, y), num**2 / den, rtol=1e-9)


def test_r2_uses_only_scored_called_entries():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, (5, 30)).astype(np.int8)
    x = np.clip(y + rng.normal(0, 0.7, y.shape), 0, 2)
    mask = rng.random(y.shape) < 0.5
    y_missing = y.copy()
    y_missing[0, :3] = -1          # missing truth is never scored
    got = per_variant_r2(x, y_missing, mask)
    for i in range(5):
        keep = mask[i] & (y_missing[i] >= 0)
        np.testing.assert_allclose(got[i], np.corrcoef(x[i, keep], y[i, keep])[0, 1] ** 2)


def test_degenerate_r2_zero_or_nan():
    x = np.array([[0.1, 0.5, 0.2], [1.0, 1.0, 1.0], [0.3, 1.0, 2.0], [0.0, 1.0, 2.0]])
    y = np.array([[0, 0, 0], [0, 1, 2], [0, 1, 2], [0, 1, 2]], dtype=np.int8)
    mask = np.ones_like(y, dtype=bool)
    mask[3] = False                                     # nothing scored
    zero = per_variant_r2(x, y, mask)
    nan = per_variant_r2(x, y, mask, monomorphic="nan")
    np.testing.assert_array_equal(zero[:2], [0.0, 0.0])  # monomorphic truth; constant dosage
    assert np.isnan(nan[:2]).all()
    assert zero[2] == nan[2] and 0.9 < zero[2] <= 1
    assert np.isnan(zero[3]) and np.isnan(nan[3])
    with pytest.raises(ValueError, match="monomorphic"):
        per_variant_r2(x, y, monomorphic="drop")


def test_aggregate_r2_differs_from_mean_per_variant_r2():
    # v1: x [0, 1], y [0, 1]; v2: x [1, 2], y [2, 2] (monomorphic)
    x = np.array([[0.0, 1.0], [1.0, 2.0]])
    y = np.array([[0, 1], [2, 2]], dtype=np.int8)
    np.testing.assert_allclose(per_variant_r2(x, y), [1.0, 0.0])
    # as coded: pooled x [0, 1, 1, 2], y [0, 1, 2, 2]: sxy 2, sxx 2, syy 2.75 -> 8/11
    assert aggregate_r2(x, y) == pytest.approx(8 / 11)
    assert aggregate_r2(x, y, alt_frequency=[0.2, 0.5]) == pytest.approx(8 / 11)
    # minor-allele coding (v2 ALT-major in the reference): x [0, 1, 1, 0], y [0, 1, 0, 0]:
    # sxy 1/2, sxx 1, syy 3/4 -> 1/3
    assert aggregate_r2(x, y, alt_frequency=[0.2, 0.9]) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="alt_frequency"):
        aggregate_r2(x, y, alt_frequency=[0.2])
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, (20, 30)).astype(np.int8)
    x = np.clip(y + rng.normal(0, 0.5, y.shape), 0, 2)
    mask = rng.random(y.shape) < 0.3
    assert aggregate_r2(x, y, mask) == pytest.approx(np.corrcoef(x[mask], y[mask])[0, 1] ** 2)
    alt = y.mean(axis=1) / 2
    flip = (alt > 0.5)[:, None]
    x_minor, y_minor = np.where(flip, 2 - x, x), np.where(flip, 2 - y, y)
    assert flip.any() and not flip.all()
    assert aggregate_r2(x, y, mask, alt_frequency=alt) == pytest.approx(
        np.corrcoef(x_minor[mask], y_minor[mask])[0, 1] ** 2)
    assert aggregate_r2(np.ones((2, 2)), np.array([[0, 1], [1, 2]])) == 0.0
    assert np.isnan(aggregate_r2(np.ones((2, 2)), np.array([[0, 1], [1, 2]]), monomorphic="nan"))


# truth, dosage and their rounding: 0.5 -> 0 (halves to even)
TRUTH = np.array([[0, 0, 1, 1, 2, 2, 0, 1]], dtype=np.int8)
DOSAGE = np.array([[0.2, 0.6, 0.9, 1.5, 1.6, 2.0, 0.5, 0.4]])


def test_confusion_concordance_and_iqs_by_hand():
    c = genotype_confusion(DOSAGE, TRUTH)
    np.testing.assert_array_equal(c[0], [[2, 1, 0], [1, 1, 1], [0, 0, 2]])
    np.testing.assert_allclose(concordance(DOSAGE, TRUTH), [5 / 8])
    # Pc = (3*3 + 3*2 + 2*3) / 64 = 21/64; IQS = (40/64 - 21/64) / (43/64)
    np.testing.assert_allclose(iqs(DOSAGE, TRUTH), [19 / 43])
    # integer input is a best-guess genotype, used as is
    np.testing.assert_allclose(concordance(best_guess(DOSAGE), TRUTH), [5 / 8])


def test_iqs_nan_when_chance_agreement_is_one_and_pooled_table():
    y = np.array([[0, 0, 0], [0, 1, 2]], dtype=np.int8)
    x = np.array([[0.1, 0.0, 0.2], [0, 1, 2]], dtype=float)
    out = iqs(x, y)
    assert np.isnan(out[0]) and out[1] == 1.0
    # pooled: table [[4,0,0],[0,1,0],[0,0,1]], P0 = 1 -> IQS 1
    assert iqs(x, y, pooled=True) == 1.0
    assert concordance(x, y, pooled=True) == 1.0


def test_allele_presence_f1_by_hand():
    scores = allele_presence_scores(DOSAGE, TRUTH)
    # TP 9, FP 1, FN 2, TN 4 over 16 bits
    assert [int(scores[k][0]) for k in ("tp", "fp", "fn", "tn")] == [9, 1, 2, 4]
    np.testing.assert_allclose(scores["precision"], [9 / 10])
    np.testing.assert_allclose(scores["recall"], [9 / 11])
    np.testing.assert_allclose(scores["f1"], [6 / 7])
    pooled = allele_presence_scores(np.vstack([DOSAGE, DOSAGE]), np.vstack([TRUTH, TRUTH]), pooled=True)
    assert (pooled["tp"], pooled["fp"], pooled["fn"], pooled["tn"]) == (18, 2, 4, 8)
    assert f1_score(DOSAGE, TRUTH, pooled=True) == pytest.approx(6 / 7)


def test_rmse_by_hand():
    x = np.array([[0.0, 1.5, 2.0], [1.0, 1.0, 1.0]])
    y = np.array([[0, 1, 1], [1, 1, 1]], dtype=np.int8)
    np.testing.assert_allclose(rmse(x, y), [np.sqrt(1.25 / 3), 0.0])
    assert rmse(x, y, pooled=True) == pytest.approx(np.sqrt(1.25 / 6))


def test_phased_and_unphased_accuracy_by_hand():
    truth = np.array([[[0, 1], [1, 0], [1, 1], [0, 0]]], dtype=np.int8)
    imputed = np.array([[[1, 0], [1, 0], [1, 1], [0, 1]]], dtype=np.int8)
    np.testing.assert_allclose(phased_accuracy(imputed, truth), [0.5])
    np.testing.assert_allclose(genotype_accuracy(imputed, truth), [0.75])
    mask = np.array([[True, True, False, False]])
    assert phased_accuracy(imputed, truth, mask, pooled=True) == 0.5
    expected = np.zeros((4, 4), int)
    for t, i in [(1, 2), (2, 2), (3, 3), (0, 1)]:   # 0|0=0, 0|1=1, 1|0=2, 1|1=3
        expected[t, i] += 1
    np.testing.assert_array_equal(phased_genotype_confusion(imputed, truth), expected)


def test_missing_imputed_value_at_scored_entry_is_an_error():
    x = np.array([[0.0, np.nan]])
    y = np.array([[0, 1]], dtype=np.int8)
    with pytest.raises(ValueError, match="no imputed dosage"):
        per_variant_r2(x, y)
    assert per_variant_r2(x, y, np.array([[True, False]]))[0] == 0.0   # unscored NaN is fine
    with pytest.raises(ValueError, match="shape"):
        concordance(x, y, np.ones((2, 2), bool))


# ----------------------------------------------------------------------------- MAF bins


def test_maf_bins_follow_r_cut_right_false_include_lowest():
    assert maf_bin_labels() == ["[0,0.001)", "[0.001,0.005)", "[0.005,0.01)", "[0.01,0.05)",
                                "[0.05,0.1)", "[0.1,0.2)", "[0.2,0.3)", "[0.3,0.4)", "[0.4,0.5]"]
    maf = np.array([0.0, 0.0009, 0.001, 0.05, 1 / 20, 0.3999, 0.4, 0.5, 0.6, -0.1, np.nan])
    got = assign_maf_bins(maf, DIAS_MAF_BINS)
    assert list(got.astype(object)[:8]) == ["[0,0.001)", "[0,0.001)", "[0.001,0.005)", "[0.05,0.1)",
                                            "[0.05,0.1)", "[0.3,0.4)", "[0.4,0.5]", "[0.4,0.5]"]
    assert pd.isna(got[8:]).all()
    custom = assign_maf_bins([0.02, 0.3], bins=[0.0, 0.25, 0.5])
    assert list(custom.astype(object)) == ["[0,0.25)", "[0.25,0.5]"]
    with pytest.raises(ValueError, match="increasing"):
        maf_bin_labels([0.1, 0.05])


# ----------------------------------------------------------------------------- score_imputation


def _panel(n_var=60, n_samp=24, seed=0, phased=True):
    rng = np.random.default_rng(seed)
    p = np.concatenate([rng.uniform(0.0, 0.02, n_var // 3), rng.uniform(0.05, 0.5, n_var - n_var // 3)])
    gt = (rng.random((n_var, n_samp, 2)) < p[:, None, None]).astype(np.int8)
    truth = genotype_dataset(gt, contigs=["22"], variant_ids=None, phased=phased,
                             populations=np.array(["AFR", "EUR", "EAS"])[np.arange(n_samp) % 3])
    dosage = np.clip(gt.sum(-1) + rng.normal(0, 0.45, gt.shape[:2]), 0, 2)
    imp_gt = gt.copy()
    flip = rng.random(gt.shape[:2]) < 0.1
    imp_gt[flip] = imp_gt[flip][:, ::-1]          # some phase switches
    imputed = genotype_dataset(imp_gt, contigs=["22"], variant_ids=None, phased=True, dosage=dosage)
    mask = rng.random((n_var, n_samp)) < 0.4
    return truth, imputed, mask


def _value(rows, metric, kind="all", stratum="all"):
    hit = rows[(rows.metric == metric) & (rows.stratum_kind == kind) & (rows.stratum == stratum)]
    assert len(hit) == 1, (metric, kind, stratum)
    return hit.iloc[0]


def test_score_imputation_matches_the_array_functions():
    truth, imputed, mask = _panel()
    rows = score_imputation(truth, imputed, mask, populations=False)
    assert {"metric", "stratum_kind", "stratum", "value", "n"} == set(rows.columns)
    assert set(rows.columns) <= set(COLUMNS)
    y = allele_count(truth["call_genotype"].values)
    x = imputed["call_dosage"].values
    r2 = per_variant_r2(x, y, mask)
    scored = mask.any(axis=1)
    row = _value(rows, "r2")
    assert row.value == pytest.approx(np.nanmean(r2[scored])) and row.n == scored.sum()
    se = np.std(r2[scored], ddof=1) / np.sqrt(scored.sum())
    assert _value(rows, "r2_se").value == pytest.approx(se)
    # pooled metrics on minor-allele coding, by default from the truth's ALT frequencies
    alt = y.sum(1) / (2 * y.shape[1])
    assert (alt > 0.5).any()
    row = _value(rows, "aggregate_r2")
    assert row.value == pytest.approx(aggregate_r2(x, y, mask, alt_frequency=alt)) and row.n == mask.sum()
    assert _value(rows, "aggregate_concordance").value == pytest.approx(concordance(x, y, mask, pooled=True))
    assert _value(rows, "aggregate_iqs").value == pytest.approx(
        iqs(x, y, mask, pooled=True, alt_frequency=alt))
    assert _value(rows, "aggregate_f1").value == pytest.approx(f1_score(x, y, mask, pooled=True))
    assert _value(rows, "aggregate_rmse").value == pytest.approx(rmse(x, y, mask, pooled=True))
    assert _value(rows, "iqs").value == pytest.approx(np.nanmean(iqs(x, y, mask)[scored]))
    gts = (imputed["call_genotype"].values, truth["call_genotype"].values)
    assert _value(rows, "phased_accuracy").value == pytest.approx(phased_accuracy(*gts, mask, pooled=True))
    assert _value(rows, "genotype_accuracy").value == pytest.approx(1.0)
    # per-variant rows keyed by sites_key, only scored variants
    per_var = rows[(rows.stratum_kind == "variant") & (rows.metric == "r2")]
    keys = sites_key(truth)
    assert list(per_var.stratum) == list(keys[scored])
    np.testing.assert_allclose(per_var.value, r2[scored])
    np.testing.assert_array_equal(per_var.n, mask.sum(axis=1)[scored])
    assert set(rows[rows.stratum_kind == "variant"].metric) == set(PER_VARIANT_METRICS)


def test_maf_bin_tile_and_population_strata():
    truth, imputed, mask = _panel(seed=4)
    y = allele_count(truth["call_genotype"].values)
    x = imputed["call_dosage"].values
    maf_true = np.minimum(y.sum(1), 2 * y.shape[1] - y.sum(1)) / (2 * y.shape[1])
    alt = y.sum(1) / (2 * y.shape[1])      # every stratum is coded on the truth's minor alleles
    tiles = pd.DataFrame({"tile": ["t1", "t2"], "start": [100, 2000], "end": [3000, 6000]})
    rows = score_imputation(truth, imputed, mask, tiles=tiles)
    bins = assign_maf_bins(maf_true).astype(object)
    r2 = per_variant_r2(x, y, mask)
    for label in set(bins[mask.any(1)]):
        sel = (bins == label) & mask.any(1)
        assert _value(rows, "r2", "maf_bin", label).value == pytest.approx(r2[sel].mean())
        sub = mask & sel[:, None]
        assert _value(rows, "aggregate_r2", "maf_bin", label).value == pytest.approx(aggregate_r2(x, y, sub, alt_frequency=alt))
    # overlapping tiles: variants at 2000-3000 count in both
    pos = truth["variant_position"].values
    for label, lo, hi in (("t1", 100, 3000), ("t2", 2000, 6000)):
        sub = mask & ((pos >= lo) & (pos <= hi))[:, None]
        row = _value(rows, "aggregate_r2", "tile", label)
        assert row.value == pytest.approx(aggregate_r2(x, y, sub, alt_frequency=alt)) and row.n == sub.sum()
    pops = truth["sample_population"].values
    for pop in ("AFR", "EUR", "EAS"):
        cols = pops == pop
        sub_r2 = per_variant_r2(x[:, cols], y[:, cols], mask[:, cols])
        assert _value(rows, "r2", "population", pop).value == pytest.approx(np.nanmean(sub_r2))
        row = _value(rows, "aggregate_r2", "population", pop)
        assert row.value == pytest.approx(aggregate_r2(x[:, cols], y[:, cols], mask[:, cols],
                                                       alt_frequency=alt))
        assert row.n == mask[:, cols].sum()


def test_tiles_as_mapping_or_per_variant_labels_and_min_maf():
    truth, imputed, mask = _panel(seed=5)
    keys = sites_key(truth)
    labels = [["a", "b"] if i < 10 else ("b" if i < 30 else None) for i in range(len(keys))]
    by_list = score_imputation(truth, imputed, mask, tiles=labels, per_variant=False)
    by_map = score_imputation(truth, imputed, mask, per_variant=False,
                              tiles={k: lab for k, lab in zip(keys, labels, strict=True) if lab})
    pd.testing.assert_frame_equal(by_list, by_map)
    y = allele_count(truth["call_genotype"].values)
    x = imputed["call_dosage"].values
    b = mask & (np.arange(len(keys)) < 30)[:, None]
    alt = y.sum(1) / (2 * y.shape[1])
    assert _value(by_list, "aggregate_r2", "tile", "b").value == pytest.approx(
        aggregate_r2(x, y, b, alt_frequency=alt))
    # tiling-module tables: inclusive variant-index bounds, or a variant/tile membership table
    by_index = score_imputation(truth, imputed, mask, per_variant=False, tiles=pd.DataFrame(
        {"tile": ["a", "b"], "first_variant": [0, 0], "last_variant": [9, 29]}))
    membership = pd.DataFrame({"variant": [*range(10), *range(30)], "tile": ["a"] * 10 + ["b"] * 30})
    by_membership = score_imputation(truth, imputed, mask, per_variant=False, tiles=membership)
    tile_rows = by_list[by_list.stratum_kind == "tile"].reset_index(drop=True)
    for other in (by_index, by_membership):
        pd.testing.assert_frame_equal(tile_rows, other[other.stratum_kind == "tile"].reset_index(drop=True))
    with pytest.raises(ValueError, match="tile table needs"):
        score_imputation(truth, imputed, mask, tiles=pd.DataFrame({"tile": ["a"], "from": [1]}))
    maf = pd.Series(np.linspace(0, 0.5, len(keys)), index=keys)
    rows = score_imputation(truth, imputed, mask, maf=maf, min_maf=0.25, populations=False)
    kept = (maf.values >= 0.25) & mask.any(1)
    assert _value(rows, "r2").n == kept.sum()
    assert set(rows[rows.stratum_kind == "maf_bin"].stratum) <= {"[0.2,0.3)", "[0.3,0.4)", "[0.4,0.5]"}


def test_populations_blocks_dask_and_sample_order_do_not_change_results():
    truth, imputed, mask = _panel(seed=6)
    base = score_imputation(truth, imputed, mask, populations=False)
    with_pops = score_imputation(truth, imputed, mask, block_variants=7)
    pd.testing.assert_frame_equal(base, with_pops[with_pops.stratum_kind != "population"]
                                  .reset_index(drop=True), check_exact=False, rtol=1e-10)
    lazy = score_imputation(truth.chunk({"variants": 11}), imputed.chunk({"variants": 13}), mask,
                            populations=False)
    pd.testing.assert_frame_equal(base, lazy, check_exact=False, rtol=1e-12)
    order = np.random.default_rng(0).permutation(imputed.sizes["samples"])
    shuffled = score_imputation(truth, imputed.isel(samples=order), mask, populations=False)
    pd.testing.assert_frame_equal(base, shuffled, check_exact=False, rtol=1e-12)


def test_best_guess_from_genotype_and_unphased_outputs():
    truth, imputed, mask = _panel(seed=7)
    rows = score_imputation(truth, imputed, mask, best_guess_from="genotype", populations=False)
    # imputed call_genotype carries the true allele counts (only phase switches)
    assert _value(rows, "aggregate_concordance").value == 1.0
    assert _value(rows, "aggregate_f1").value == 1.0
    no_phase = imputed.assign(call_genotype_phased=imputed["call_genotype_phased"] & False)
    rows = score_imputation(truth, no_phase, mask, populations=False)
    assert "phased_accuracy" not in set(rows.metric)
    dosage_only = imputed.drop_vars(["call_genotype", "call_genotype_phased"])
    rows = score_imputation(truth, dosage_only, mask, populations=False)
    assert not {"phased_accuracy", "genotype_accuracy"} & set(rows.metric)


def test_missing_sites_and_bad_inputs():
    truth, imputed, mask = _panel(seed=8)
    fewer = imputed.isel(variants=slice(5, None))
    with pytest.raises(ValueError, match="not in the imputed dataset"):
        score_imputation(truth, fewer, mask)
    rows = score_imputation(truth, fewer, mask, missing_sites="skip", populations=False)
    assert _value(rows, "unimputed_variants").value == mask[:5].any(1).sum()
    assert _value(rows, "aggregate_r2").n == mask[5:].sum()
    bad = imputed.copy(deep=True)
    bad["call_dosage"].values[np.argwhere(mask)[0][0], np.argwhere(mask)[0][1]] = np.nan
    key = sites_key(truth)[np.argwhere(mask)[0][0]]
    with pytest.raises(ValueError, match=key):
        score_imputation(truth, bad, mask)
    with pytest.raises(ValueError, match="score_mask"):
        score_imputation(truth, imputed, mask[:, :3])
    with pytest.raises(ValueError, match="samples are not in the imputed"):
        score_imputation(truth, imputed.isel(samples=slice(1, None)), mask)


def test_perfect_imputation_scores_one_everywhere():
    truth, imputed, mask = _panel(seed=9)
    exact = imputed.assign(call_dosage=(("variants", "samples"),
                                        allele_count(truth["call_genotype"].values).astype(float)),
                           call_genotype=truth["call_genotype"])
    rows = score_imputation(truth, exact, mask, monomorphic="nan")
    summary = rows[rows.stratum_kind != "variant"]
    for metric in ("r2", "aggregate_r2", "concordance", "aggregate_concordance", "f1", "aggregate_f1",
                   "precision", "recall", "phased_accuracy", "genotype_accuracy"):
        values = summary[summary.metric == metric].value
        # NaN only where every scored truth is monomorphic (r² undefined with monomorphic="nan")
        assert values.notna().sum() >= 2 and np.allclose(values.dropna(), 1.0), metric
    assert set(summary[summary.value.isna()].stratum) <= {"[0,0.001)"}
    assert np.allclose(summary[summary.metric == "aggregate_rmse"].value, 0.0)


# ----------------------------------------------------------------------------- minor-allele coding


def _two_rare_sites():
    """Reference of 50 samples: site A has ALT frequency 0.02, site B (ALT-major) 0.98.

    Ten targets: A is 0 in nine and 1 in one; B is 2 in nine and 1 in one. Both sites have
    MAF 0.02 in the reference, so both fall in the [0.01,0.05) bin.
    """
    from analysislib.genotype.imputer import AlleleFrequencyImputer

    def dataset(prefix, gt):
        return genotype_dataset(gt, contigs=["22"], alleles=[["A", "G"], ["C", "T"]],
                                sample_ids=prefix, variant_ids=None)

    ref = np.zeros((2, 50, 2), np.int8)
    ref[0, :2, 0] = 1           # A: 2 ALT alleles in 100
    ref[1] = 1
    ref[1, :2, 0] = 0           # B: 98 ALT alleles in 100
    target = np.zeros((2, 10, 2), np.int8)
    target[0, 0, 0] = 1         # A: one het, nine 0
    target[1] = 1
    target[1, 0, 0] = 0         # B: one het, nine 2
    reference, truth = dataset("r", ref), dataset("t", target)
    untyped = truth.isel(variants=slice(0, 0))
    floor = AlleleFrequencyImputer().fit(reference).impute(untyped)
    return reference, truth, floor


def test_floor_no_longer_scores_near_one_in_a_rare_bin():
    from analysislib.genotype.stats import alt_allele_frequency, minor_allele_frequency

    reference, truth, floor = _two_rare_sites()
    dosage = floor["call_dosage"].values
    np.testing.assert_allclose(dosage[:, 0], [0.04, 1.96])   # 2p, the same for every target
    y = allele_count(truth["call_genotype"].values)
    alt = alt_allele_frequency(reference).values
    np.testing.assert_allclose(alt, [0.02, 0.98])
    # As coded, pooling separates the ALT-minor from the ALT-major site: x = 1 ± 0.96,
    # y - 1 = -1 (9x), 0, +1 (9x), 0: sxy 17.28, sxx 18.432, syy 18 -> r² = 0.9 exactly.
    assert aggregate_r2(dosage, y, alt_frequency=[0.0, 0.0]) == pytest.approx(0.9)
    # On the minor-allele dosage the floor is the constant 0.04 (up to float32 rounding of
    # 2 - 1.96): r² 0.
    assert aggregate_r2(dosage, y, alt_frequency=alt) == pytest.approx(0.0, abs=1e-12)
    rows = score_imputation(truth, floor, maf=minor_allele_frequency(reference).values,
                            alt_frequency=alt, populations=False)
    assert _value(rows, "aggregate_r2", "maf_bin", "[0.01,0.05)").value == pytest.approx(0.0, abs=1e-12)
    assert _value(rows, "aggregate_r2").value == pytest.approx(0.0, abs=1e-12)
    # pooled minor-allele table [[18, 0, 0], [2, 0, 0], [0, 0, 0]]: P0 = Pc = 0.9 -> IQS 0
    # (as coded [[9, 0, 0], [1, 0, 1], [0, 0, 9]]: (0.9 - 0.45) / 0.55)
    assert _value(rows, "aggregate_iqs", "maf_bin", "[0.01,0.05)").value == 0.0
    assert iqs(dosage, y, pooled=True, alt_frequency=[0.0, 0.0]) == pytest.approx(0.45 / 0.55)
    # coding-invariant pooled metrics: 18 of 20 calls right
    assert _value(rows, "aggregate_concordance").value == pytest.approx(0.9)
    assert _value(rows, "genotype_accuracy").value == pytest.approx(0.9)


def _recode(ds, sites):
    """Swap REF and ALT at ``sites``: alleles, genotypes, dosage and probabilities."""
    out = ds.copy(deep=True)
    alleles = out["variant_allele"].values
    alleles[sites] = alleles[sites][:, ::-1]
    gt = out["call_genotype"].values
    gt[sites] = np.where(gt[sites] >= 0, 1 - gt[sites], gt[sites])
    if "call_dosage" in out:
        out["call_dosage"].values[sites] = 2 - out["call_dosage"].values[sites]
    return out


def test_aggregate_r2_does_not_depend_on_which_allele_is_alt():
    truth, imputed, mask = _panel(seed=10)
    sites = np.arange(0, truth.sizes["variants"], 4)
    alt = allele_count(truth["call_genotype"].values).sum(1) / (2 * truth.sizes["samples"])
    alt_recoded = alt.copy()
    alt_recoded[sites] = 1 - alt[sites]
    for given in (False, True):      # frequencies passed in (as the harness does) or from the truth
        base = score_imputation(truth, imputed, mask, per_variant=False,
                                alt_frequency=alt if given else None)
        recoded = score_imputation(_recode(truth, sites), _recode(imputed, sites), mask,
                                   per_variant=False, alt_frequency=alt_recoded if given else None)
        pd.testing.assert_frame_equal(base, recoded, check_exact=False, rtol=1e-10)
        for kind, label in (("all", "all"), ("maf_bin", "[0.01,0.05)"), ("maf_bin", "[0.4,0.5]")):
            value = _value(base, "aggregate_r2", kind, label).value
            assert 0 < value < 1 and _value(recoded, "aggregate_r2", kind, label).value == \
                pytest.approx(value, rel=1e-10)
    y, x = allele_count(truth["call_genotype"].values), imputed["call_dosage"].values
    y2, x2 = y.copy(), x.copy()
    y2[sites], x2[sites] = 2 - y[sites], 2 - x[sites]
    assert aggregate_r2(x2, y2, mask, alt_frequency=alt_recoded) == pytest.approx(
        aggregate_r2(x, y, mask, alt_frequency=alt), rel=1e-12)
    # pooled as coded (no alt_frequency), the recoding changes the value
    assert aggregate_r2(x2, y2, mask) != pytest.approx(aggregate_r2(x, y, mask), rel=1e-3)
