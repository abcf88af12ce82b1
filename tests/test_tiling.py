from __future__ import annotations

import itertools

import dask.array as da
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analysislib.testing import genotype_dataset
from analysislib.tiling import (
    box_scores,
    build_tiles,
    common_variant_index,
    find_ld_regions,
    hard_cap_pieces,
    hotspot_distance,
    hotspot_proximity,
    mountain_split_points,
    thresholded_ld_matrix,
    tile_genome,
    variant_tiles,
)

# ------------------------------------------------------------------------------- helpers


def corrcoef_band(haplotypes: np.ndarray, window: int) -> np.ndarray:
    """Band layout of numpy.corrcoef over rows: band[i, o - 1] = r(i, i + o), NaN past the end."""
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.corrcoef(haplotypes.astype(np.float64))
    n = len(r)
    band = np.full((n, window), np.nan)
    for o in range(1, min(window, n - 1) + 1):
        band[: n - o, o - 1] = r[np.arange(n - o), np.arange(o, n)]
    return band


def brute_force_scores(r: np.ndarray, box: int, threshold: float, pad: int = -1) -> np.ndarray:
    n = len(r)
    scores = np.full(n - 1, pad)
    strong = np.abs(np.nan_to_num(r)) >= threshold
    for b in range(box - 1, n - box):
        scores[b] = strong[b + 1 - box : b + 1, b + 1 : b + 1 + box].sum()
    return scores


def reference_walk(scores, threshold=10, hyst_v=3, hyst_m=3, pad=-1):
    """Transition starts (score indices) by the authors' FindMVMs loop, one score at a time."""
    state, trig_v, trig_m, rec, starts = "m", False, False, 0, []
    for i, raw in enumerate(scores):
        s = np.inf if raw == pad else raw
        if state == "m":
            if s > threshold + hyst_m:
                trig_v = False
            if s < threshold and not trig_v:
                rec, trig_v = i, True
            if s < threshold - hyst_v:
                state, trig_v = "v", False
                starts.append(rec)
        else:
            if s < threshold - hyst_v:
                trig_m = False
            if s > threshold and not trig_m:
                rec, trig_m = i, True
            if s > threshold + hyst_m:
                state, trig_m = "m", False
                starts.append(rec)
    return starts


def block_dataset(block_sizes, *, n_haplotypes=400, founders=4, contigs=None, rare_every=0, seed=0):
    """Phased haplotypes in independent LD blocks: each haplotype copies one of a few founders per block.

    Returns the dataset and the dataset indices of the first variant of each block.
    """
    rng = np.random.default_rng(seed)
    rows, block_starts = [], []
    for size in block_sizes:
        block_starts.append(len(rows))
        pattern = rng.integers(0, founders, n_haplotypes)
        for _ in range(size):
            alleles = rng.permutation(np.r_[1, 0, rng.integers(0, 2, founders - 2)])  # polymorphic
            rows.append(alleles[pattern])
            if rare_every and len(rows) % rare_every == 0:
                rare = np.zeros(n_haplotypes, dtype=np.int64)
                rare[rng.integers(0, n_haplotypes)] = 1
                rows.append(rare)
    haps = np.asarray(rows, dtype=np.int8)
    n_var = len(haps)
    gt = haps.reshape(n_var, n_haplotypes // 2, 2)
    ds = genotype_dataset(gt, positions=np.arange(1, n_var + 1) * 1000, contig=contigs,
                          contigs=["21", "22"], variant_ids=None, phased=True)
    return ds, np.asarray(block_starts)


# ------------------------------------------------------------------------------- box scores


def test_box_scores_hand_computed():
    # 6 variants, box 2: boundaries b = 1, 2, 3 are scored, b = 0 and 4 are padded
    r = np.eye(6)
    strong_pairs = [(0, 2), (1, 2), (1, 3), (2, 3), (2, 4), (3, 5), (0, 5)]
    for i, j in strong_pairs:
        r[i, j] = r[j, i] = 0.5
    r[1, 4] = r[4, 1] = -0.6  # negative r counts through |r|
    r[0, 3] = r[3, 0] = 0.44  # just below the threshold
    band = np.full((6, 5), np.nan)
    for i in range(6):
        for o in range(1, 6 - i):
            band[i, o - 1] = r[i, i + o]
    scores = box_scores(band, box=2, threshold=0.45)
    # b=1: i in {0,1}, j in {2,3}: (0,2) (1,2) (1,3) -> 3
    # b=2: i in {1,2}, j in {3,4}: (1,3) (1,4) (2,3) (2,4) -> 4
    # b=3: i in {2,3}, j in {4,5}: (2,4) (3,5) -> 2
    np.testing.assert_array_equal(scores, [-1, 3, 4, 2, -1])
    np.testing.assert_array_equal(box_scores(band, box=2, threshold=0.45, pad=-9), [-9, 3, 4, 2, -9])


def test_box_scores_match_brute_force_on_corrcoef_band():
    rng = np.random.default_rng(4)
    # correlated haplotypes: a random walk of flips along variants
    base = rng.integers(0, 2, (1, 300))
    flips = rng.random((120, 300)) < 0.08
    haps = (base + np.cumsum(flips, axis=0)) % 2
    haps[17] = 0  # a monomorphic variant: NaN correlations count as weak
    for box in (1, 3, 10, 25):
        band = corrcoef_band(haps, 2 * box - 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.corrcoef(haps.astype(float))
        expected = brute_force_scores(r, box, 0.45)
        np.testing.assert_array_equal(box_scores(band, box=box), expected)
        np.testing.assert_array_equal(box_scores(band, box=box, block_rows=7), expected)
        lazy = da.from_array(band, chunks=(33, -1))
        np.testing.assert_array_equal(box_scores(lazy, box=box), expected)
    wider = corrcoef_band(haps, 60)  # extra offsets are ignored
    np.testing.assert_array_equal(box_scores(wider, box=10), box_scores(corrcoef_band(haps, 19), box=10))


def test_box_scores_validates_the_band():
    with pytest.raises(ValueError, match="2 \\* box - 1"):
        box_scores(np.zeros((50, 10)), box=10)
    with pytest.raises(ValueError, match="2-D"):
        box_scores(np.zeros(10), box=2)
    assert box_scores(np.zeros((3, 9)), box=5).tolist() == [-1, -1]  # box never fits


def test_thresholded_matrix_from_band():
    rng = np.random.default_rng(1)
    haps = rng.integers(0, 2, (30, 40))
    haps[5] = haps[6]
    haps[8] = 1 - haps[9]
    band = corrcoef_band(haps, 4)
    r = np.corrcoef(haps.astype(float))
    m = thresholded_ld_matrix(band, 2, 12, threshold=None)
    near = np.abs(np.subtract.outer(np.arange(10), np.arange(10))) <= 4
    np.testing.assert_allclose(m[near], np.abs(r[2:12, 2:12])[near])
    assert np.isnan(m[~near]).all()
    binary = thresholded_ld_matrix(band, 2, 12)
    assert binary[3, 4] == 1 and binary[6, 7] == 1   # identical and complementary pairs
    assert set(np.unique(binary[near])) <= {0.0, 1.0}


# ------------------------------------------------------------------------------- hysteresis


def test_hysteresis_hand_computed():
    scores = [-1, -1, 20, 12, 9, 11, 6, 5, 9, 12, 11, 14, 20, 8, 7, 7, 6, 20, -1, -1]
    regions = find_ld_regions(scores)
    # valley at score 6 (index 6), dated at the first score below 10 (index 4) -> starts at variant 5;
    # mountain at 14 (index 11), dated at the first score above 10 after the last low (index 9);
    # valley at 6 (index 16), dated at index 13; mountain at 20 (index 17)
    assert regions["kind"].tolist() == ["mountain", "valley", "mountain", "valley", "mountain"]
    assert regions["first_common"].tolist() == [0, 5, 10, 14, 18]
    assert regions["last_common"].tolist() == [4, 9, 13, 17, 20]
    assert regions["n_common"].sum() == len(scores) + 1
    # lowest score of the first valley: index 7 (score 5), the boundary before variant 8
    assert regions.loc[1, "min_score"] == 5 and regions.loc[1, "min_score_common"] == 8


def test_hysteresis_rearms_after_a_high_score():
    # below 10 at index 1, back above 13 at index 2 (re-arms), below 10 again at 3, below 7 at 4
    regions = find_ld_regions([20, 9, 14, 9, 6, 20])
    assert regions["first_common"].tolist() == [0, 4, 6]
    # scores between 7 and 13 never change the state
    assert find_ld_regions([20, 8, 12, 9, 11, 20])["kind"].tolist() == ["mountain"]


def test_hysteresis_thresholds_are_parameters_and_positions_are_added():
    scores = [50, 30, 19, 40, 50]
    assert len(find_ld_regions(scores)) == 1
    regions = find_ld_regions(scores, threshold=25, hysteresis_valley=5, hysteresis_mountain=10,
                              positions=[100, 200, 300, 400, 500, 600])
    assert regions["kind"].tolist() == ["mountain", "valley", "mountain"]
    # 19 < 25 - 5 at index 2 opens a valley at variant 3; 40 > 25 + 10 at index 3 closes it
    assert regions["first_common"].tolist() == [0, 3, 4]
    assert regions.loc[1, ["first_position", "last_position"]].tolist() == [400, 400]
    # the valley opens at the boundary 350 and closes at 450; its lowest score opens it
    assert regions.loc[1, "centre_position"] == 400
    assert regions.loc[1, "min_score_position"] == 350


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([-1, 0, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 20, 1000]), min_size=1, max_size=80))
def test_vectorised_walk_matches_the_authors_loop(scores):
    regions = find_ld_regions(scores)
    assert regions["first_common"].tolist()[1:] == [s + 1 for s in reference_walk(scores)]
    assert regions["n_common"].sum() == len(scores) + 1


# ------------------------------------------------------------------------------- splitting rules


def test_mountain_split_points_by_hand():
    scores = np.full(1000, 5000)
    scores[50] = 0      # first bin: skipped
    scores[250] = 400   # bin 2: accepted -> cut before variant 251
    scores[260] = 900   # same bin, not the minimum
    scores[330] = 10    # bin 3 but only 80 variants after the cut at 251: dropped
    scores[650] = 1500  # bin 6 minimum above the threshold: rejected
    scores[720] = 20    # bin 7: accepted
    scores[990] = 0     # last bin: skipped
    cuts = mountain_split_points(scores, 0, 1001, bin_size=100, threshold=1000, min_piece=100)
    assert cuts.tolist() == [251, 721]
    # with min_piece 300: 251 is too close to the start, 331 is kept, and 721 would leave only
    # 280 variants before the mountain end
    assert mountain_split_points(scores, 0, 1001, bin_size=100, min_piece=300).tolist() == [331]
    # padded scores are never minima
    padded = np.full(1000, -1)
    assert mountain_split_points(padded, 0, 1001, bin_size=100).size == 0


def test_hard_cap_pieces():
    assert hard_cap_pieces(10, 6009) == [(10, 6009)]
    pieces = hard_cap_pieces(0, 13_999)
    assert pieces == [(0, 5999), (2667, 8666), (5333, 11332), (8000, 13999)]
    overlaps = [a_last - b_first + 1 for (_, a_last), (b_first, _) in itertools.pairwise(pieces)]
    assert min(overlaps) >= 2500
    assert hard_cap_pieces(0, 6000) == [(0, 5999), (1, 6000)]
    assert hard_cap_pieces(0, 99, max_tile=40, overlap=10) == [(0, 39), (30, 69), (60, 99)]
    with pytest.raises(ValueError, match="overlap"):
        hard_cap_pieces(0, 100, max_tile=10, overlap=10)


def test_build_tiles_share_valleys_and_cover_rare_variants():
    # 12 common variants among 30; regions M[0,3) V[3,5) M[5,9) V[9,10) M[10,12)
    common = np.array([1, 3, 4, 8, 9, 12, 15, 16, 20, 22, 25, 29])
    regions = pd.DataFrame({"region": range(5), "kind": ["mountain", "valley"] * 2 + ["mountain"],
                            "first_common": [0, 3, 5, 9, 10], "last_common": [2, 4, 8, 9, 11]})
    scores = np.full(11, 50)
    tiles = build_tiles(scores, regions, common, 30, positions=np.arange(30) * 10 + 5)
    assert tiles["cut"].tolist() == ["vmv"] * 3
    # common ranges: [0, 5), [3, 10), [9, 12) -> overlaps are the valleys
    assert tiles["first_common"].tolist() == [0, 3, 9]
    assert tiles["last_common"].tolist() == [4, 9, 11]
    # dataset ranges: variant 0 (rare, before the first common) joins the first tile,
    # a tile ends just before the common variant after its last one
    assert tiles["first_variant"].tolist() == [0, 8, 22]
    assert tiles["last_variant"].tolist() == [11, 24, 29]
    assert tiles["first_position"].tolist() == [5, 85, 225]
    assert tiles["n_variants"].tolist() == [12, 17, 8]
    assert tiles["n_common"].tolist() == [5, 7, 3]
    membership = variant_tiles(tiles, 30)
    assert set(membership["variant"]) == set(range(30))
    assert membership.groupby("variant")["primary"].sum().eq(1).all()
    assert membership.query("variant == 9")["tile"].tolist() == [0, 1]


def test_build_tiles_split_and_cap_labels():
    n_common = 3000
    common = np.arange(n_common) * 2  # a rare variant after every common one
    scores = np.full(n_common - 1, 5000)
    scores[[600, 1500]] = 100  # internal minima of the long mountain
    scores[2499:2502] = 0      # a valley near the end
    regions = find_ld_regions(scores)
    assert regions["kind"].tolist() == ["mountain", "valley", "mountain"]
    tiles = build_tiles(scores, regions, common, 2 * n_common, max_mountain=1000, split_bin=200,
                        split_threshold=1000, min_piece=200, max_tile=2000, cap_overlap=500)
    # mountain 0 (2500 common) is split before common variants 601 and 1501; its last piece
    # (common 1501..2502 with its valley, variants 3002..5005: 2004) is then capped; mountain 2 is short
    assert tiles["cut"].tolist() == ["mountain_split", "mountain_split", "hard_cap", "hard_cap", "vmv"]
    assert tiles["first_common"].tolist()[:3] == [0, 601, 1501]
    assert tiles["n_variants"].tolist() == [1202, 1800, 2000, 2000, 1000]
    assert tiles["first_variant"].tolist() == [0, 1202, 3002, 3006, 5000]
    assert (tiles["mountain"] == [0, 0, 0, 0, 2]).all()
    membership = variant_tiles(tiles, 2 * n_common)
    assert membership["variant"].nunique() == 2 * n_common


def test_variant_tiles_reports_gaps():
    tiles = pd.DataFrame({"tile": [0, 1], "first_variant": [0, 6], "last_variant": [4, 9]})
    with pytest.raises(ValueError, match="variant 5"):
        variant_tiles(tiles, 10)
    with pytest.raises(ValueError, match="inside"):
        variant_tiles(tiles, 9)


# ------------------------------------------------------------------------------- whole chain


def test_tile_genome_finds_block_boundaries_on_two_contigs():
    sizes = [40, 35, 50, 30, 45, 40]
    contigs = np.repeat([0, 1], [sum(sizes[:3]), sum(sizes[3:])])
    ds, block_starts = block_dataset(sizes, contigs=contigs)
    tiling = tile_genome(ds, box=8, max_tile=10_000)
    tiles = tiling.tiles
    assert tiles["contig"].tolist() == ["21"] * 3 + ["22"] * 3
    # every within-contig block boundary is a valley, its centre at the boundary (+-1.5 variants)
    inner_edges = block_starts[[1, 2, 4, 5]]
    edge_positions = ds["variant_position"].values[inner_edges] - 500  # midway to the previous variant
    centres = tiling.valley_centres()
    assert len(centres) == 4
    np.testing.assert_allclose(np.sort(centres), edge_positions, atol=1500)
    # tiles never cross a contig and cover each contig
    for name, group in tiles.groupby("contig"):
        code = ["21", "22"].index(name)
        members = np.flatnonzero(contigs == code)
        assert group["first_variant"].min() == members[0] and group["last_variant"].max() == members[-1]
    membership = variant_tiles(tiles, ds.sizes["variants"])
    assert membership["variant"].nunique() == ds.sizes["variants"]
    assert set(tiling.scores.columns) >= {"variant_up", "variant_down", "position_up", "position_down", "box_score"}


def test_tile_genome_maps_rare_variants_and_matches_corrcoef_scores():
    ds, _ = block_dataset([30, 40, 30], rare_every=7, seed=3)
    tiling = tile_genome(ds, box=6)
    common = common_variant_index(ds)
    assert len(common) == 100 and ds.sizes["variants"] > 100
    haps = ds["call_genotype"].values.reshape(ds.sizes["variants"], -1)[common]
    expected = box_scores(corrcoef_band(haps, 11), box=6)
    np.testing.assert_array_equal(tiling.scores["box_score"].to_numpy(), expected)
    membership = variant_tiles(tiling.tiles, ds.sizes["variants"])
    assert membership["variant"].nunique() == ds.sizes["variants"]
    assert len(tiling.tiles) == 3 and (tiling.tiles["cut"] == "vmv").all()


def test_common_variants_use_the_authors_closed_interval():
    gt = np.zeros((3, 10, 2), np.int8)
    gt[0, 0, 0] = 1             # AF 0.05: common
    gt[1, :, :] = 1
    gt[1, 0, 0] = 0             # AF 0.95: common
    gt[2, 0, :] = 1             # AF 0.10
    gt[2, 1, 0] = -1
    ds = genotype_dataset(gt, positions=[1, 2, 3], contigs=["22"], variant_ids=None)
    assert common_variant_index(ds).tolist() == [0, 1, 2]
    assert common_variant_index(ds, min_maf=0.06).tolist() == [2]


def test_tile_genome_errors_and_threshold_scaling():
    ds, _ = block_dataset([20, 20])
    shuffled = ds.assign(variant_position=("variants", ds["variant_position"].values[::-1].copy()))
    with pytest.raises(ValueError, match="variant 1 \\(21:39000\\) comes after 21:40000"):
        tile_genome(shuffled, box=5)
    with pytest.raises(ValueError, match="threshold_scale"):
        tile_genome(ds, box=5, threshold_scale="relative")
    scaled = tile_genome(ds, box=50, threshold_scale="box_area")
    assert scaled.params["valley_threshold"] == pytest.approx(0.1)
    assert scaled.params["split_threshold"] == pytest.approx(10)
    # too few common variants for a box: one tile over everything
    assert scaled.tiles[["first_variant", "last_variant"]].values.tolist() == [[0, 39]]


def test_tile_genome_without_common_variants_gives_one_tile():
    gt = np.zeros((12, 50, 2), np.int8)
    gt[np.arange(12), np.arange(12), 0] = 1  # every variant is a singleton
    ds = genotype_dataset(gt, positions=np.arange(1, 13) * 10, contigs=["22"], variant_ids=None)
    tiling = tile_genome(ds, box=3)
    assert len(tiling.common_index) == 0 and tiling.regions.empty and tiling.scores.empty
    assert tiling.tiles[["first_variant", "last_variant", "n_common"]].values.tolist() == [[0, 11, 0]]


def test_hotspot_distance_uses_one_based_positions():
    hotspots = pd.DataFrame({"start": [999, 5000], "end": [2000, 5100]})  # bases 1000..2000, 5001..5100
    np.testing.assert_array_equal(hotspot_distance([999, 1000, 2000, 2001, 4000, 5200], hotspots),
                                  [1, 0, 0, 1, 1001, 100])
    prox = hotspot_proximity([1500, 9000], hotspots, span=(1, 10_000), within=1000)
    assert prox["fraction_near"] == 0.5 and prox["n"] == 2


@pytest.fixture(scope="module")
def quick_panel():
    from analysislib.simulate.genotypes import simulate_genotypes

    return simulate_genotypes("quick", seed=5)


def test_valleys_fall_at_simulated_hotspots(quick_panel):
    ds = quick_panel.ds
    # a quick panel has about 4000 common SNPs in 2 Mb: 500-SNP boxes would span most of it
    tiling = tile_genome(ds, box=25)
    positions = ds["variant_position"].values
    prox = hotspot_proximity(tiling.valley_centres(), quick_panel.hotspots,
                             span=(positions[0], positions[-1]), within=10_000, seed=1)
    assert prox["n"] >= 5
    assert prox["fraction_near"] >= 0.5
    assert prox["fraction_near"] >= 2 * prox["random_fraction_near"]
    membership = variant_tiles(tiling.tiles, ds.sizes["variants"])
    assert membership["variant"].nunique() == ds.sizes["variants"]


def test_tiling_summaries_and_figures():
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd

    from analysislib.plotting.tiling import plot_tile_chromosome, plot_tile_region, plot_tile_sizes
    from analysislib.tiling import hotspot_sweep, tile_summary, valley_window

    sizes = [40, 35, 50, 30]
    ds, block_starts = block_dataset(sizes)
    tiling = tile_genome(ds, box=8, max_tile=10_000)
    summary = tile_summary(tiling, ds.sizes["variants"])
    assert summary["tiles"] == 4 and summary["valleys"] == 3 and summary["cut vmv"] == 4
    assert summary["variants covered (%)"] == 100 and summary["variants in >1 tile (%)"] > 0
    # a 60-variant window placed on the valleys holds at least one of them
    start = valley_window(tiling, 60)
    valleys = tiling.regions.query("kind == 'valley'")
    assert ((valleys.first_common >= start) & (valleys.last_common < start + 60)).any()
    assert valley_window(tiling, 10_000) == 0
    # hotspots planted at two block edges: every valley centre within 2 kb of one of them
    edges = ds["variant_position"].values[block_starts[1:3]]
    hotspots = pd.DataFrame({"start": edges - 1000, "end": edges})
    sweep = hotspot_sweep(ds, hotspots, {"max_tile": 10_000}, [(8, "count"), (8, "count")],
                          within=2000, tilings={(8, "count"): tiling})
    assert len(sweep) == 1 and sweep["valleys"].iloc[0] == 3 and sweep["tiles"].iloc[0] == 4
    assert sweep["near hotspot (%)"].iloc[0] == pytest.approx(200 / 3)
    fig = plot_tile_region(ds, tiling, start, 60, "toy", hotspots=hotspots)
    assert len(fig.axes) == 3 and fig.axes[0].images
    assert len(plot_tile_chromosome(tiling, "toy").axes) == 2
    fig = plot_tile_sizes({"a": tiling, "b": tiling})
    assert len(fig.axes[0].get_legend().texts) == 3  # two datasets and the paper's quartiles
