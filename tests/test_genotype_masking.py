"""Tests of analysislib.genotype.masking: sample splits, scenarios and their score masks."""

from __future__ import annotations

import numpy as np
import pytest

from analysislib.genotype.masking import (
    Scenario,
    apply_scenario,
    array_scenario,
    parse_scenario,
    random_missing_scenario,
    split_samples,
    split_train_val_test,
    standard_scenarios,
    typed_fraction_scenario,
)
from analysislib.genotype.metrics import allele_count, score_imputation
from analysislib.simulate.genotypes import array_marker_set
from analysislib.testing import genotype_dataset


def _panel(n_var=400, per_pop=20, pops=("YRI", "CEU", "CHB"), *, seed=0, missing=0.0,
           populations=True):
    rng = np.random.default_rng(seed)
    n_samp = per_pop * len(pops)
    p = rng.uniform(0.0, 0.5, n_var)
    gt = (rng.random((n_var, n_samp, 2)) < p[:, None, None]).astype(np.int8)
    if missing:
        gt[rng.random((n_var, n_samp)) < missing] = -1
    positions = np.sort(rng.choice(np.arange(1, 10 * n_var), n_var, replace=False))
    return genotype_dataset(
        gt, positions=positions, contigs=["22"], variant_ids=None, phased=True,
        sample_ids=[f"{pop}_{i}" for pop in pops for i in range(per_pop)],
        populations=np.repeat(pops, per_pop) if populations else None,
        dosage=gt.sum(-1).astype(np.float32))


# ----------------------------------------------------------------------------- splits


def test_split_samples_stratified_disjoint_and_deterministic():
    ds = _panel()
    ref, tgt = split_samples(ds, target_fraction=0.1, seed=4)
    assert ref.sizes["samples"] == 54 and tgt.sizes["samples"] == 6
    ids_ref, ids_tgt = set(ref["sample_id"].values), set(tgt["sample_id"].values)
    assert not ids_ref & ids_tgt and ids_ref | ids_tgt == set(ds["sample_id"].values)
    pops, counts = np.unique(tgt["sample_population"].values, return_counts=True)
    assert dict(zip(pops, counts, strict=True)) == {"CEU": 2, "CHB": 2, "YRI": 2}
    again = split_samples(ds, target_fraction=0.1, seed=4)[1]
    assert list(again["sample_id"].values) == list(tgt["sample_id"].values)
    other = split_samples(ds, target_fraction=0.1, seed=5)[1]
    assert list(other["sample_id"].values) != list(tgt["sample_id"].values)
    assert (tgt.attrs["split"], tgt.attrs["split_stratified_by"]) == ("target", "sample_population")
    assert "split" not in ds.attrs
    # sample order follows the input
    order = {s: i for i, s in enumerate(ds["sample_id"].values)}
    assert np.all(np.diff([order[s] for s in tgt["sample_id"].values]) > 0)


def test_split_without_population_labels_and_bad_arguments():
    ds = _panel(populations=False)
    _, tgt = split_samples(ds, target_fraction=0.25, seed=0)
    assert tgt.sizes["samples"] == 15 and tgt.attrs["split_stratified_by"] == ""
    with pytest.raises(ValueError, match="cannot stratify"):
        split_samples(ds, stratify_by="cohort")
    with pytest.raises(ValueError, match="target_fraction"):
        split_samples(ds, target_fraction=1.0)
    with pytest.raises(ValueError, match="empty"):
        split_samples(_panel(per_pop=2), target_fraction=0.1)


def test_random_holdout_is_the_autoencoders_validation_split():
    from analysislib.genotype.dae.tuning import split_validation_samples
    from analysislib.genotype.masking import _random_holdout
    from analysislib.training import derive_seed

    kept, held = _random_holdout(10, 3, seed=7)
    order = np.random.default_rng(7).permutation(10)  # the first n_held of one permutation
    assert np.array_equal(held, np.sort(order[:3])) and np.array_equal(kept, np.sort(order[3:]))
    train, val = split_validation_samples(10, 0.2, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip((train, val), _random_holdout(10, 2, derive_seed(4, 0x5A11)),
                                                    strict=True))


def test_train_val_test_8_1_1_per_stratum():
    ds = _panel(per_pop=20)
    train, val, test = split_train_val_test(ds, seed=1)
    for part, per_pop in ((train, 16), (val, 2), (test, 2)):
        _, counts = np.unique(part["sample_population"].values, return_counts=True)
        assert list(counts) == [per_pop] * 3
    # 7 per stratum: quotas 5.6 / 0.7 / 0.7 -> 5 / 1 / 1 by largest remainder
    train, val, test = split_train_val_test(_panel(per_pop=7), seed=1)
    assert (train.sizes["samples"], val.sizes["samples"], test.sizes["samples"]) == (15, 3, 3)
    all_ids = np.concatenate([p["sample_id"].values for p in (train, val, test)])
    assert len(set(all_ids)) == 21
    with pytest.raises(ValueError, match="sum to 1"):
        split_train_val_test(ds, (0.8, 0.1, 0.2))


# ----------------------------------------------------------------------------- scenario objects


def test_scenario_names_parse_and_standard_set():
    assert array_scenario("affy6").name == "array_affy6"
    assert array_scenario(0.05).name == "array_0.05"
    assert random_missing_scenario(0.05, 1).name == "random_05_seed1"
    assert random_missing_scenario(0.25, 3).name == "random_25_seed3"
    assert typed_fraction_scenario().name == "typed_1in3"
    names = [s.name for s in standard_scenarios()]
    assert names == [f"random_{r}_seed{s}" for r in ("05", "15", "25") for s in (1, 2, 3)] + [
        "array_affy6", "array_ukb_axiom", "array_omni15"]
    for scenario in [*standard_scenarios(), array_scenario(0.05), typed_fraction_scenario(4, offset=1)]:
        assert parse_scenario(scenario.name) == scenario
    with pytest.raises(ValueError, match="unknown scenario"):
        parse_scenario("holdout")
    with pytest.raises(ValueError, match="rate"):
        random_missing_scenario(1.5, 1)
    with pytest.raises(ValueError, match="unknown array"):
        array_scenario("gsa")
    with pytest.raises(ValueError, match="kind"):
        Scenario("x", "mystery")  # type: ignore[arg-type]
    with pytest.raises(AttributeError):
        random_missing_scenario(0.05).rate = 0.1  # type: ignore[misc]


# ----------------------------------------------------------------------------- applying scenarios


def test_random_missing_hides_exactly_the_scored_entries():
    truth = _panel(missing=0.02, seed=2)
    gt = truth["call_genotype"].values
    called = (gt >= 0).all(-1)
    masked = apply_scenario(truth, random_missing_scenario(0.15, 1))
    target_gt = masked.target["call_genotype"].values
    assert masked.target.sizes == truth.sizes and masked.typed_sites.all()
    assert masked.score_mask.sum() == round(0.15 * called.sum())
    # scored entries are exactly the called entries the target no longer shows, both haplotypes
    hidden = called & (target_gt < 0).all(-1)
    np.testing.assert_array_equal(masked.score_mask, hidden)
    assert not ((target_gt < 0).any(-1) & ~(target_gt < 0).all(-1)).any()
    np.testing.assert_array_equal(target_gt[~masked.score_mask], gt[~masked.score_mask])
    assert not masked.target["call_genotype_phased"].values[masked.score_mask].any()
    assert "call_dosage" not in masked.target            # would leak the hidden genotypes
    assert masked.target.attrs["scenario"] == "random_15_seed1"


def test_random_missing_is_deterministic_nested_and_seed_dependent():
    truth = _panel(seed=3)
    masks = {(r, s): apply_scenario(truth, random_missing_scenario(r, s)).score_mask
             for r in (0.05, 0.15, 0.25) for s in (1, 2)}
    np.testing.assert_array_equal(masks[(0.05, 1)],
                                  apply_scenario(truth, random_missing_scenario(0.05, 1)).score_mask)
    assert not np.array_equal(masks[(0.05, 1)], masks[(0.05, 2)])
    for s in (1, 2):
        assert not (masks[(0.05, s)] & ~masks[(0.15, s)]).any()
        assert not (masks[(0.15, s)] & ~masks[(0.25, s)]).any()
    total = truth.sizes["variants"] * truth.sizes["samples"]
    for (rate, _), mask in masks.items():
        assert mask.sum() == round(rate * total)


def test_array_scenario_types_only_array_markers():
    truth = _panel(n_var=600, seed=4)
    masked = apply_scenario(truth, array_scenario("omni15"))
    markers = array_marker_set(truth, "omni15")
    np.testing.assert_array_equal(masked.typed_sites, markers)
    assert masked.target.sizes["variants"] == markers.sum() == round(600 * 14_453 / 306_812)
    np.testing.assert_array_equal(masked.target["variant_position"].values,
                                  truth["variant_position"].values[markers])
    np.testing.assert_array_equal(masked.score_mask, ~markers[:, None] & np.ones((1, 60), bool))
    assert "call_dosage" not in masked.target
    # markers chosen from the reference panel's MAF when given
    reference = _panel(n_var=600, seed=5).assign(variant_position=truth["variant_position"])
    from_ref = apply_scenario(truth, array_scenario(0.1), reference=reference)
    np.testing.assert_array_equal(from_ref.typed_sites, array_marker_set(reference, 0.1))
    with pytest.raises(ValueError, match="same sites"):
        apply_scenario(truth, array_scenario(0.1), reference=reference.isel(variants=slice(1, None)))


def test_typed_fraction_keeps_one_in_three():
    truth = _panel(n_var=100, missing=0.01, seed=6)
    masked = apply_scenario(truth, typed_fraction_scenario(3))
    np.testing.assert_array_equal(np.flatnonzero(masked.typed_sites), np.arange(0, 100, 3))
    assert masked.target.sizes["variants"] == 34
    called = (truth["call_genotype"].values >= 0).all(-1)
    np.testing.assert_array_equal(masked.score_mask, ~masked.typed_sites[:, None] & called)
    shifted = apply_scenario(truth, typed_fraction_scenario(3, offset=2))
    np.testing.assert_array_equal(np.flatnonzero(shifted.typed_sites), np.arange(2, 100, 3))


def test_scored_counts_reach_score_imputation_unchanged():
    truth = _panel(seed=7)
    masked = apply_scenario(truth, random_missing_scenario(0.25, 2))
    y = allele_count(truth["call_genotype"].values)
    oracle = truth.assign(call_dosage=(("variants", "samples"), y.astype(float)))
    rows = score_imputation(truth, oracle, masked.score_mask, populations=False, per_variant=False)
    overall = rows[(rows.metric == "aggregate_r2") & (rows.stratum_kind == "all")].iloc[0]
    assert overall.n == masked.score_mask.sum() and overall.value == pytest.approx(1.0)


def test_dask_backed_truth_gives_the_same_masks():
    truth = _panel(seed=8)
    lazy = truth.chunk({"variants": 50})
    for scenario in (random_missing_scenario(0.05, 3), typed_fraction_scenario(3), array_scenario(0.1)):
        a, b = apply_scenario(truth, scenario), apply_scenario(lazy, scenario)
        np.testing.assert_array_equal(a.score_mask, b.score_mask)
        np.testing.assert_array_equal(a.target["call_genotype"].values, b.target["call_genotype"].values)


def test_typed_1in3_on_the_real_chr22_file(data_mirror):
    from analysislib.catalog import load_catalog

    ds = load_catalog().open("1kg_chr22_array500")
    ref, tgt = split_samples(ds, target_fraction=0.1, seed=1)     # no population labels: plain split
    assert (ref.sizes["samples"], tgt.sizes["samples"]) == (450, 50)
    masked = apply_scenario(tgt, typed_fraction_scenario(3))
    assert masked.target.sizes["variants"] == 3_497               # ceil(10,490 / 3)
    assert masked.score_mask.sum() == (10_490 - 3_497) * 50       # no missing calls in the file
