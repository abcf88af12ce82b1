"""Tests of analysislib.simulate.genotypes: coalescent panels, array marker sets, offspring."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analysislib import variables
from analysislib.genotype.stats import minor_allele_frequency
from analysislib.simulate.genotypes import (
    ARRAY_DENSITIES,
    GENOTYPE_PRESETS,
    array_marker_set,
    augment_with_offspring,
    form_offspring,
    hotspot_rate_map,
    mask_to_array,
    simulate_genotypes,
    subset_to_array,
)
from analysislib.testing import genotype_dataset

SMALL = {"samples_per_population": 20, "sequence_length": 300_000}


@pytest.fixture(scope="module")
def panel():
    return simulate_genotypes("quick", seed=3, **SMALL)


def _haplotypes(ds, population=None):
    gt = ds["call_genotype"].values
    if population is not None:
        gt = gt[:, ds["sample_population"].values == population]
    return gt.reshape(gt.shape[0], -1)


# ----------------------------------------------------------------------------- simulation


def test_presets_match_the_brief():
    quick, full = GENOTYPE_PRESETS["quick"], GENOTYPE_PRESETS["full"]
    assert (quick.samples_per_population, quick.sequence_length) == (100, 2_000_000)
    assert (full.samples_per_population, full.sequence_length) == (1000, 20_000_000)
    assert quick.populations == full.populations == ("YRI", "CEU", "CHB")


def test_same_seed_same_panel_other_seed_differs(panel):
    again = simulate_genotypes("quick", seed=3, **SMALL)
    np.testing.assert_array_equal(again.ds["call_genotype"].values, panel.ds["call_genotype"].values)
    np.testing.assert_array_equal(again.ds["variant_position"].values,
                                  panel.ds["variant_position"].values)
    assert again.hotspots.equals(panel.hotspots)
    other = simulate_genotypes("quick", seed=4, **SMALL)
    assert not np.array_equal(other.ds["variant_position"].values[:50],
                              panel.ds["variant_position"].values[:50])
    assert not other.hotspots["start"].equals(panel.hotspots["start"])


def test_populations_shapes_and_names(panel):
    ds = panel.ds
    variables.validate(ds, ["call_genotype", "call_genotype_phased", "sample_population",
                            "variant_genetic_position", "variant_id"])
    assert ds.sizes["samples"] == 60 and ds.sizes["ploidy"] == 2
    assert ds["call_genotype"].dtype == np.int8
    pops = ds["sample_population"].values.tolist()
    assert pops == ["YRI"] * 20 + ["CEU"] * 20 + ["CHB"] * 20
    assert ds["sample_id"].values[0] == "YRI_0001" and ds["sample_id"].values[-1] == "CHB_0020"
    assert ds.attrs["contigs"] == ["22"] and set(ds["variant_contig"].values) == {0}
    assert bool(ds["call_genotype_phased"].all())
    pos = ds["variant_position"].values
    assert np.all(np.diff(pos) > 0)
    assert pos[0] >= 20_000_001 and pos[-1] <= 20_300_000
    assert ds["variant_id"].values[0] == f"22:{pos[0]}"
    assert ds.attrs["region"] == "22:20000001-20300000"


def test_model_mutation_rate_is_used(panel):
    import stdpopsim

    model = stdpopsim.get_species("HomSap").get_demographic_model("OutOfAfrica_3G09")
    assert panel.ds.attrs["mutation_rate"] == model.mutation_rate == 2.35e-8
    assert [p.metadata["name"] for p in panel.tree_sequence.populations()] == ["YRI", "CEU", "CHB"]


def test_only_biallelic_snps_remain(panel):
    ds, ts = panel.ds, panel.tree_sequence
    gt = ds["call_genotype"].values
    assert set(np.unique(gt)) == {0, 1}
    alleles = ds["variant_allele"].values
    assert np.all(alleles[:, 0] != alleles[:, 1])
    assert set(alleles.ravel()) <= set("ACGT")
    # Every site carries exactly one mutation, so every kept site segregates.
    assert np.array_equal(np.bincount(ts.tables.mutations.site, minlength=ts.num_sites),
                          np.ones(ts.num_sites, dtype=int))
    alt_count = gt.sum(axis=(1, 2))
    assert np.all((alt_count > 0) & (alt_count < 120))
    assert ds.attrs["n_multiple_mutation_sites_removed"] == panel.n_removed_sites >= 0
    assert ts.num_sites == ds.sizes["variants"]


def test_multi_mutation_sites_are_counted():
    # A longer region has recurrent mutations to remove; the count is reported.
    bigger = simulate_genotypes("quick", seed=3, samples_per_population=20, sequence_length=1_000_000)
    assert bigger.n_removed_sites > 0
    assert bigger.ds.attrs["n_multiple_mutation_sites_removed"] == bigger.n_removed_sites


def test_yri_is_more_diverse_than_out_of_africa_populations(panel):
    # OutOfAfrica_3G09: the CEU and CHB founders passed through a bottleneck (Gutenkunst 2009).
    segregating, diversity = {}, {}
    for pop in ("YRI", "CEU", "CHB"):
        haps = _haplotypes(panel.ds, pop)
        n = haps.shape[1]
        p = haps.mean(axis=1)
        segregating[pop] = int(((p > 0) & (p < 1)).sum())
        diversity[pop] = float((2 * p * (1 - p) * n / (n - 1)).sum())
    assert segregating["YRI"] > 1.2 * max(segregating["CEU"], segregating["CHB"])
    assert diversity["YRI"] > 1.1 * max(diversity["CEU"], diversity["CHB"])
    # Allele frequencies differ between continents more than between the two bottlenecked pops'
    # sampling noise would allow: mean |p_YRI - p_CEU| is well above zero.
    p_yri = _haplotypes(panel.ds, "YRI").mean(axis=1)
    p_ceu = _haplotypes(panel.ds, "CEU").mean(axis=1)
    assert np.mean(np.abs(p_yri - p_ceu)) > 0.05


def test_dask_chunks_give_the_same_genotypes(panel):
    chunked = simulate_genotypes("quick", seed=3, variant_chunks=500, **SMALL)
    gt = chunked.ds["call_genotype"]
    assert gt.chunks is not None and gt.chunks[0][0] == 500
    np.testing.assert_array_equal(gt.values, panel.ds["call_genotype"].values)


def test_bad_parameters_are_rejected():
    from analysislib.errors import PresetError

    with pytest.raises(PresetError, match="unknown genotype simulation setting 'n_samples'; known: "):
        simulate_genotypes("quick", seed=1, n_samples=3)
    with pytest.raises(PresetError, match="unknown genotype simulation preset 'huge'; choose from quick, full"):
        simulate_genotypes("huge", seed=1)
    with pytest.raises(ValueError, match="chromosome 22"):
        simulate_genotypes("quick", seed=1, region_start=50_000_000)
    with pytest.raises(ValueError, match="not in OutOfAfrica_3G09"):
        simulate_genotypes("quick", seed=1, populations=("YRI", "JPT"), **SMALL)


# ----------------------------------------------------------------------------- recombination truth


def test_hotspot_table_matches_rate_map(panel):
    rm, hs = panel.rate_map, panel.hotspots
    assert list(hs.columns) == ["start", "end", "intensity", "rate"]
    assert len(hs) == panel.ds.attrs["n_hotspots"] >= 2
    width = hs["end"] - hs["start"]
    assert width.between(1_000, 2_000).all()
    gaps = hs["start"].to_numpy()[1:] - hs["end"].to_numpy()[:-1]
    assert np.all((gaps >= 50_000) & (gaps <= 100_000))
    assert hs["intensity"].between(10, 100).all()
    np.testing.assert_allclose(hs["rate"], 1e-8 * hs["intensity"])
    mids = ((hs["start"] + hs["end"]) / 2).to_numpy()
    np.testing.assert_allclose(rm.get_rate(mids), hs["rate"])
    between = (hs["end"].to_numpy()[:-1] + hs["start"].to_numpy()[1:]) / 2
    np.testing.assert_allclose(rm.get_rate(between), 1e-8)
    assert np.isnan(rm.get_rate([1_000_000.0]))[0]
    assert rm.sequence_length == 20_300_000
    # Map length: background over the non-hotspot bp plus each hotspot's rate x width.
    expected_morgans = 1e-8 * (300_000 - width.sum()) + (hs["rate"] * width).sum()
    assert rm.get_cumulative_mass([20_300_000.0])[0] == pytest.approx(expected_morgans)


def test_genetic_positions_follow_the_rate_map(panel):
    pos = panel.ds["variant_position"].values
    cm = panel.ds["variant_genetic_position"].values
    assert panel.ds["variant_genetic_position"].attrs["units"] == "cM"
    np.testing.assert_allclose(cm, 100 * panel.rate_map.get_cumulative_mass(pos - 1.0))
    np.testing.assert_allclose(panel.genetic_position_cm(pos), cm)
    assert np.all(np.diff(cm) >= 0)
    # A hotspot between two variants adds at least its own length of map distance.
    hs = panel.hotspots.iloc[0]
    left = np.searchsorted(pos - 1, hs["start"]) - 1
    right = np.searchsorted(pos - 1, hs["end"])
    hotspot_cm = 100 * hs["rate"] * (hs["end"] - hs["start"])
    assert cm[right] - cm[left] >= hotspot_cm


def test_tree_breakpoints_concentrate_in_hotspots(panel):
    ts, hs = panel.tree_sequence, panel.hotspots
    bp = ts.breakpoints(as_array=True)
    bp = bp[(bp > 20_000_000) & (bp < ts.sequence_length)]
    inside = np.zeros(len(bp), dtype=bool)
    for start, end in zip(hs["start"], hs["end"], strict=True):
        inside |= (bp >= start) & (bp < end)
    physical = (hs["end"] - hs["start"]).sum() / 300_000
    cum = panel.rate_map.get_cumulative_mass
    mass = sum(cum([e])[0] - cum([s])[0] for s, e in zip(hs["start"], hs["end"], strict=True))
    mass_fraction = mass / cum([ts.sequence_length])[0]
    assert inside.mean() > 5 * physical
    assert inside.mean() == pytest.approx(mass_fraction, abs=0.1)


def test_ld_drops_across_hotspots(panel):
    ds, hs = panel.ds, panel.hotspots
    haps = _haplotypes(ds).astype(float)
    freq = haps.mean(axis=1)
    keep = (freq > 0.1) & (freq < 0.9)
    z = haps[keep] - freq[keep, None]
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    pos = ds["variant_position"].values[keep] - 1
    across, elsewhere = [], []
    for offset in range(1, 30):
        r2 = np.einsum("ij,ij->i", z[:-offset], z[offset:]) ** 2
        a, b = pos[:-offset], pos[offset:]
        same_distance = (b - a > 3_000) & (b - a < 10_000)
        spans = np.zeros(len(a), dtype=bool)
        for start, end in zip(hs["start"], hs["end"], strict=True):
            spans |= (a < start) & (b >= end)
        across.append(r2[same_distance & spans])
        elsewhere.append(r2[same_distance & ~spans])
    across, elsewhere = np.concatenate(across), np.concatenate(elsewhere)
    assert len(across) > 30
    assert across.mean() < 0.6 * elsewhere.mean()


def test_hotspot_rate_map_validates_ranges():
    with pytest.raises(ValueError, match="spacing"):
        hotspot_rate_map(0, 100_000, spacing=(0, 10))
    rm, hs = hotspot_rate_map(0, 10_000, spacing=(50_000, 100_000), seed=1)
    assert len(hs) == 0 or hs["end"].max() < 10_000
    assert rm.sequence_length == 10_000


# ----------------------------------------------------------------------------- array markers


@pytest.mark.parametrize("density", sorted(ARRAY_DENSITIES))
def test_marker_sets_have_paper_density_and_are_common_and_even(panel, density):
    ds = panel.ds
    mask = array_marker_set(ds, density, min_maf=0.05)
    assert mask.dtype == bool and mask.shape == (ds.sizes["variants"],)
    fraction = mask.mean()
    assert fraction == pytest.approx(ARRAY_DENSITIES[density], rel=0.05)
    maf = minor_allele_frequency(ds).values
    assert np.all(maf[mask] >= 0.05)
    pos = ds["variant_position"].values
    candidates = pos[maf >= 0.05]
    bound = (candidates[-1] - candidates[0]) / mask.sum() + np.diff(candidates).max()
    assert np.diff(pos[mask]).max() <= bound


def test_paper_densities_ordered():
    assert ARRAY_DENSITIES["affy6"] == pytest.approx(0.0294, abs=1e-4)
    assert ARRAY_DENSITIES["ukb_axiom"] == pytest.approx(0.0346, abs=1e-4)
    assert ARRAY_DENSITIES["omni15"] == pytest.approx(0.0471, abs=1e-4)


def test_marker_set_population_and_errors(panel):
    ds = panel.ds
    mask = array_marker_set(ds, 0.05, min_maf=0.1, population="CEU")
    ceu = ds.isel(samples=ds["sample_population"].values == "CEU")
    assert np.all(minor_allele_frequency(ceu).values[mask] >= 0.1)
    with pytest.raises(ValueError, match="only"):
        array_marker_set(ds, 0.9)
    with pytest.raises(ValueError, match="unknown array"):
        array_marker_set(ds, "gsa")
    with pytest.raises(ValueError, match="no samples of population"):
        array_marker_set(ds, "affy6", population="JPT")


def _toy_dataset(positions):
    n = len(positions)
    gt = np.zeros((n, 4, 2), dtype=np.int8)
    gt[:, :2, 0] = 1  # alt frequency 0.25 everywhere
    return genotype_dataset(gt, positions=np.asarray(positions, dtype=np.int64), contigs=["22"],
                            variant_ids=None)


def test_even_spread_hand_computed():
    # 100 sites at 1..100, 10 markers: grid points 5.95 + 9.9k, nearest sites.
    mask = array_marker_set(_toy_dataset(np.arange(1, 101)), 0.1)
    expected = [6, 16, 26, 36, 46, 55, 65, 75, 85, 95]
    assert np.flatnonzero(mask).tolist() == [p - 1 for p in expected]


def test_even_spread_fills_clumps():
    # Two clumps: the grid points all hit the clump edges, the rest is filled by splitting gaps.
    positions = np.r_[np.arange(1, 21), np.arange(100_001, 100_021)]
    mask = array_marker_set(_toy_dataset(positions), 0.5)
    assert mask.sum() == 20
    chosen = positions[mask]
    left, right = chosen[chosen < 50_000], chosen[chosen > 50_000]
    assert 8 <= len(left) <= 12 and 8 <= len(right) <= 12
    # Inside each clump of 20 consecutive sites the ~10 markers sit every 1-3 bp.
    assert np.diff(left).max() <= 3 and np.diff(right).max() <= 3


@settings(max_examples=40, deadline=None)
@given(st.sets(st.integers(1, 1_000_000), min_size=5, max_size=300),
       st.floats(0.01, 1.0))
def test_marker_count_and_gap_bound_property(positions, fraction):
    positions = np.sort(np.fromiter(positions, dtype=np.int64))
    mask = array_marker_set(_toy_dataset(positions), fraction)
    n_target = round(fraction * len(positions))
    assert mask.sum() == n_target
    if n_target >= 2:
        bound = (positions[-1] - positions[0]) / n_target + np.diff(positions).max()
        assert np.diff(positions[mask]).max() <= bound


def test_subset_and_mask_to_array(panel):
    ds = panel.ds
    mask = array_marker_set(ds, "omni15")
    typed = subset_to_array(ds, mask)
    assert typed.sizes["variants"] == mask.sum()
    np.testing.assert_array_equal(typed["variant_position"].values,
                                  ds["variant_position"].values[mask])
    same = subset_to_array(ds, np.flatnonzero(mask))
    np.testing.assert_array_equal(same["call_genotype"].values, typed["call_genotype"].values)
    masked = mask_to_array(ds, mask)
    gt = masked["call_genotype"].values
    assert gt.dtype == np.int8 and gt.shape == ds["call_genotype"].shape
    assert np.all(gt[~mask] == -1)
    np.testing.assert_array_equal(gt[mask], ds["call_genotype"].values[mask])
    assert masked.attrs["array_markers"] == mask.sum()
    with pytest.raises(ValueError, match="variants"):
        mask_to_array(ds, mask[:-1])


# ----------------------------------------------------------------------------- offspring


def _min_switches(child, hap_a, hap_b):
    """Fewest switches explaining ``child`` (sites x T) as a mosaic of two haplotypes."""
    inf = 10**9
    cost = np.where(np.stack([hap_a[0] == child[0], hap_b[0] == child[0]]), 0, inf)
    for v in range(1, len(child)):
        stay = np.minimum(cost, cost[::-1] + 1)
        allowed = np.stack([hap_a[v] == child[v], hap_b[v] == child[v]])
        cost = np.where(allowed, stay, inf)
    return cost.min(axis=0)


@pytest.fixture(scope="module")
def long_map_children(panel):
    # A 300 cM map over the small panel, so each meiosis has about 3 crossovers.
    cm = np.linspace(0.0, 300.0, panel.ds.sizes["variants"])
    return cm, form_offspring(panel.ds, 200, genetic_map=cm, seed=11)


def test_children_are_mosaics_of_their_parents(panel, long_map_children):
    _, kids = long_map_children
    ids = panel.ds["sample_id"].values.tolist()
    parent_gt = panel.ds["call_genotype"].values
    child_gt = kids["call_genotype"].values
    pairs = np.array([[ids.index(a), ids.index(b)] for a, b in kids.attrs["offspring_parents"]])
    assert np.all(pairs[:, 0] != pairs[:, 1])
    for side in (0, 1):
        parent = parent_gt[:, pairs[:, side], :]
        allele = child_gt[:, :, side]
        assert np.all((allele == parent[:, :, 0]) | (allele == parent[:, :, 1]))
    # Mendelian consistency of unphased dosages.
    a, b = parent_gt[:, pairs[:, 0], :], parent_gt[:, pairs[:, 1], :]
    possible = np.stack([a[..., i] + b[..., j] for i in (0, 1) for j in (0, 1)])
    dosage = child_gt.sum(axis=2)
    assert np.all((possible == dosage[None]).any(axis=0))


def test_switch_counts_match_the_map_length(panel, long_map_children):
    _, kids = long_map_children
    ids = panel.ds["sample_id"].values.tolist()
    parent_gt = panel.ds["call_genotype"].values
    child_gt = kids["call_genotype"].values
    truth = np.array([[len(x) for x in pair] for pair in kids.attrs["offspring_crossovers_cM"]])
    assert truth.mean() == pytest.approx(3.0, abs=0.35)  # Poisson mean = 3 Morgans
    for side in (0, 1):
        parents = [ids.index(pair[side]) for pair in kids.attrs["offspring_parents"]]
        observed = _min_switches(child_gt[:, :, side], parent_gt[:, parents, 0],
                                 parent_gt[:, parents, 1])
        assert np.all(observed <= truth[:, side])
        assert observed.mean() >= 0.8 * truth[:, side].mean()
    xo = np.concatenate([np.concatenate(p) for p in kids.attrs["offspring_crossovers_cM"]])
    assert xo.min() >= 0.0 and xo.max() <= 300.0


def test_offspring_ids_populations_and_determinism(panel, long_map_children):
    cm, kids = long_map_children
    assert kids["sample_id"].values[0] == "child_0001"
    assert kids["sample_id"].values[-1] == "child_0200"
    pop_of = dict(zip(panel.ds["sample_id"].values, panel.ds["sample_population"].values,
                      strict=True))
    for (a, b), pop in zip(kids.attrs["offspring_parents"], kids["sample_population"].values,
                           strict=True):
        assert pop_of[a] == pop_of[b] == pop
    assert bool(kids["call_genotype_phased"].all())
    again = form_offspring(panel.ds, 200, genetic_map=cm, seed=11)
    np.testing.assert_array_equal(again["call_genotype"].values, kids["call_genotype"].values)
    assert again.attrs["offspring_parents"] == kids.attrs["offspring_parents"]


def test_rate_map_and_stored_positions_agree_and_dask_matches(panel):
    by_map = form_offspring(panel.ds, 12, genetic_map=panel.rate_map, seed=5)
    by_var = form_offspring(panel.ds, 12, seed=5)
    np.testing.assert_array_equal(by_map["call_genotype"].values, by_var["call_genotype"].values)
    lazy = form_offspring(panel.ds.chunk({"variants": 400}), 12, seed=5)
    assert lazy["call_genotype"].chunks is not None
    np.testing.assert_array_equal(lazy["call_genotype"].values, by_var["call_genotype"].values)


def test_explicit_parents_and_mixed_populations(panel):
    kids = form_offspring(panel.ds, 2, seed=1, parents=[["YRI_0001", "CEU_0002"],
                                                         ["CHB_0003", "CHB_0004"]])
    assert kids["sample_population"].values.tolist() == ["YRI/CEU", "CHB"]
    assert kids.attrs["offspring_parents"] == [["YRI_0001", "CEU_0002"], ["CHB_0003", "CHB_0004"]]
    # Without recombination (zero-length map) a child copies one whole parental haplotype.
    flat = form_offspring(panel.ds, 2, seed=1, parents=[[0, 1], [2, 3]],
                          genetic_map=np.zeros(panel.ds.sizes["variants"]))
    gt = panel.ds["call_genotype"].values
    for k, (a, b) in enumerate([(0, 1), (2, 3)]):
        assert any(np.array_equal(flat["call_genotype"].values[:, k, 0], gt[:, a, h])
                   for h in (0, 1))
        assert any(np.array_equal(flat["call_genotype"].values[:, k, 1], gt[:, b, h])
                   for h in (0, 1))
    with pytest.raises(ValueError, match="not in the dataset"):
        form_offspring(panel.ds, 1, parents=[["nobody", "YRI_0001"]])
    with pytest.raises(ValueError, match="one cM value per variant"):
        form_offspring(panel.ds, 1, genetic_map=[0.0, 1.0])
    with pytest.raises(ValueError, match="non-decreasing"):
        form_offspring(panel.ds, 1, genetic_map=-np.arange(panel.ds.sizes["variants"], dtype=float))


def test_augment_with_offspring(panel):
    augmented = augment_with_offspring(panel.ds, 10, seed=2)
    assert augmented.sizes["samples"] == 70
    assert augmented["sample_id"].values[-1] == "child_0010"
    np.testing.assert_array_equal(augmented["call_genotype"].values[:, :60],
                                  panel.ds["call_genotype"].values)
    np.testing.assert_array_equal(augmented["variant_genetic_position"].values,
                                  panel.ds["variant_genetic_position"].values)
    variables.validate(augmented, ["call_genotype", "sample_id", "sample_population"])
    with pytest.raises(ValueError, match="clash"):
        augment_with_offspring(augmented, 1, seed=2)
