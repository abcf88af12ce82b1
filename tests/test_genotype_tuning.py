from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysislib.genotype.tuning import (
    AUTHORS_CODE_SEARCH_SPACE,
    SEARCH_SPACE,
    TILE_FEATURES,
    TUNING_PRESETS,
    XGB_MAF_BINS,
    HyperparameterPredictor,
    best_hyperparameters,
    dataset_tile_features,
    run_random_search,
    sample_hyperparameters,
    split_validation_samples,
    tile_feature_table,
    tile_features,
    tile_genotypes,
    to_hyperparameters,
    train_candidates,
    tune_tiles,
)
from analysislib.testing import genotype_dataset

# ------------------------------------------------------------------------------- helpers


def from_haplotypes(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """(variants, samples, 2) genotypes from two (samples, variants) haplotype matrices."""
    return np.stack([np.asarray(first).T, np.asarray(second).T], axis=2).astype(np.int8)


def from_alt_counts(counts: np.ndarray) -> np.ndarray:
    """(variants, samples, 2) unphased-style genotypes with the given alt-allele counts."""
    counts = np.asarray(counts)
    return np.stack([(counts >= 2), (counts >= 1)], axis=2).astype(np.int8)


def haplotype_tile(n_variants: int, n_samples: int, seed: int) -> np.ndarray:
    """A tile with LD: haplotypes copied from a few founders with rare mutations."""
    rng = np.random.default_rng(seed)
    founders = rng.random((6, n_variants)) < rng.uniform(0.05, 0.5, n_variants)
    pick = rng.integers(0, 6, size=(2 * n_samples))
    haplotypes = founders[pick] ^ (rng.random((2 * n_samples, n_variants)) < 0.02)
    return from_haplotypes(haplotypes[0::2], haplotypes[1::2])


def synthetic_trials(n_tiles: int = 12, n_trials: int = 40, seed: int = 0) -> pd.DataFrame:
    """A trial table whose r² is a known function of hyperparameters and tile features."""
    rng = np.random.default_rng(seed)
    rows = []
    for tile in range(n_tiles):
        features = dict.fromkeys(TILE_FEATURES, 0.0)
        features["n_variants"] = float(rng.integers(100, 6000))
        features["mean_abs_r"] = float(rng.uniform(0.05, 0.4))
        draws = sample_hyperparameters(n_trials, seed=1000 + tile)
        for trial, row in draws.iterrows():
            r2 = (0.3 + 0.4 * features["mean_abs_r"]
                  + 0.2 * (row["activation"] == "tanh") - 0.15 * (row["optimizer"] == "sgd")
                  - 0.02 * abs(math.log10(row["learning_rate"]) + 3))
            rows.append({"tile": f"t{tile}", "trial": trial, **row.to_dict(), **features,
                         "val_r2": r2 + rng.normal(0, 0.005)})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------- search space


def test_search_space_follows_table_1():
    assert SEARCH_SPACE["l1"] == (1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
    assert SEARCH_SPACE["beta"] == (0.0, 0.001, 0.01, 0.05, 1.0, 5.0, 10.0)
    assert SEARCH_SPACE["learning_rate"] == (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
    assert SEARCH_SPACE["gamma"] == (0.0, 0.5, 1.0, 2.0, 3.0, 5.0)
    assert SEARCH_SPACE["activation"] == ("sigmoid", "tanh", "relu", "softplus")
    assert SEARCH_SPACE["optimizer"] == ("adam", "rmsprop", "sgd")
    assert SEARCH_SPACE["n_layers"] == (2, 4, 6, 8)  # Table 1's 1 cannot be symmetric
    assert SEARCH_SPACE["rho"][-1] == 0.7  # Table 1's 1.0 leaves the KL term undefined
    assert SEARCH_SPACE["decay_rate"] == (0.0, 0.25, 0.5, 0.75, 0.95, 0.99, 0.999, 0.9999)
    assert AUTHORS_CODE_SEARCH_SPACE["size_ratio"][-1] == 1.2
    assert "leakyrelu" in AUTHORS_CODE_SEARCH_SPACE["activation"]


def test_sample_hyperparameters_is_seeded_and_covers_the_space():
    a = sample_hyperparameters(3000, seed=5)
    pd.testing.assert_frame_equal(a, sample_hyperparameters(3000, seed=5))
    assert not a.equals(sample_hyperparameters(3000, seed=6))
    assert list(a.columns) == list(SEARCH_SPACE)
    for name, values in SEARCH_SPACE.items():
        assert set(a[name]) == set(values), name  # every value drawn, nothing else
    assert a["n_layers"].dtype == np.int64 and a["learning_rate"].dtype == np.float64
    # uniform draws: each of the 4 activations about a quarter of the time
    shares = a["activation"].value_counts(normalize=True)
    assert np.allclose(shares, 0.25, atol=0.04)
    code = sample_hyperparameters(500, seed=1, space="authors_code")
    assert set(code["optimizer"]) == set(AUTHORS_CODE_SEARCH_SPACE["optimizer"])
    with pytest.raises(ValueError, match="unknown search space"):
        sample_hyperparameters(3, space="nope")
    with pytest.raises(ValueError, match="not a DAEHyperparameters field"):
        sample_hyperparameters(3, space={"dropout": (0.1,)})


def test_every_sampled_set_is_a_valid_model_configuration():
    from analysislib.genotype.autoencoder import DAEHyperparameters

    base = DAEHyperparameters(batch_size=32, cycle_epochs=7)
    for space in ("paper", "authors_code"):
        table = sample_hyperparameters(400, seed=2, space=space)
        sets = to_hyperparameters(table, base)
        assert len(sets) == 400
        assert all(h.batch_size == 32 and h.cycle_epochs == 7 for h in sets)
        assert [h.learning_rate for h in sets] == table["learning_rate"].tolist()
        assert [h.activation for h in sets] == table["activation"].tolist()


# ------------------------------------------------------------------------------- tile features


def test_identical_haplotypes():
    haplotype = np.array([0, 1, 1, 0, 1])
    gt = from_haplotypes(np.tile(haplotype, (6, 1)), np.tile(haplotype, (6, 1)))
    f = tile_features(gt)
    assert f["unique_haplotypes"] == 1 and f["unique_diplotypes"] == 1
    assert f["maf_monomorphic"] == 1.0 and f["heterozygosity"] == 0.0
    assert f["n_pcs_90"] == 0 and math.isnan(f["pc1_pc2_variance"])
    assert math.isnan(f["mean_abs_r"])  # no polymorphic pair


def test_two_haplotypes_in_perfect_ld():
    a, b = np.array([0, 0, 1, 1]), np.array([1, 1, 0, 0])
    # samples: a/a, a/b, b/b, b/a (same unordered pair as a/b)
    gt = from_haplotypes(np.array([a, a, b, b]), np.array([a, b, b, a]))
    f = tile_features(gt)
    assert f["n_variants"] == 4
    assert f["unique_haplotypes"] == 2
    assert f["unique_diplotypes"] == 3
    assert f["mean_abs_r"] == pytest.approx(1.0) and f["mean_r2"] == pytest.approx(1.0)
    assert f["n_pcs_90"] == 1 and f["pc1_pc2_variance"] == pytest.approx(1.0)
    assert f["maf_0.4_0.5"] == 1.0  # every variant at frequency 1/2
    assert f["heterozygosity"] == pytest.approx(0.5)
    assert f["mean_maf"] == pytest.approx(0.5)


def test_unphased_diplotypes_are_multilocus_genotypes():
    # two double heterozygotes in opposite phase: 2 diplotypes phased, 1 genotype unphased
    gt = from_haplotypes(np.array([[0, 0], [0, 1]]), np.array([[1, 1], [1, 0]]))
    assert tile_features(gt)["unique_diplotypes"] == 2
    unphased = tile_features(gt, phased=False)
    assert unphased["unique_diplotypes"] == 1
    assert math.isnan(unphased["unique_haplotypes"])


def test_principal_components_of_a_constructed_matrix():
    # centred alt counts of a, b, c over 4 samples are orthogonal with squared norms 4, 4, 1;
    # a appears three times, so the eigenvalues are 12, 4 and 1 (total 17)
    a, b, c = [2, 0, 2, 0], [2, 2, 0, 0], [1, 0, 0, 1]
    f = tile_features(from_alt_counts(np.array([a, a, a, b, c])), phased=False)
    assert f["pc1_pc2_variance"] == pytest.approx(16 / 17)
    assert f["n_pcs_90"] == 2  # 12/17 = 0.71 < 0.9 <= 16/17
    f = tile_features(from_alt_counts(np.array([a, b, c])), phased=False)
    assert f["pc1_pc2_variance"] == pytest.approx(8 / 9)
    assert f["n_pcs_90"] == 3


def test_maf_bins_are_right_closed_proportions():
    # 10 samples (20 alleles); alt counts 0, 1, 2, 10, 19, 20 -> MAF 0, .05, .1, .5, .05, 0
    counts = [0, 1, 2, 10, 19, 20]
    alleles = np.zeros((6, 20), dtype=np.int8)
    for v, c in enumerate(counts):
        alleles[v, :c] = 1
    gt = alleles.reshape(6, 10, 2)
    f = tile_features(gt)
    assert f["maf_monomorphic"] == pytest.approx(2 / 6)
    assert f["maf_0.01_0.05"] == pytest.approx(2 / 6)
    assert f["maf_0.05_0.1"] == pytest.approx(1 / 6)
    assert f["maf_0.4_0.5"] == pytest.approx(1 / 6)
    bins = [name for name in TILE_FEATURES if name.startswith("maf_")]
    assert len(bins) == len(XGB_MAF_BINS)  # 11 bins plus monomorphic
    assert sum(f[name] for name in bins) == pytest.approx(1.0)
    assert f["mean_maf"] == pytest.approx((0.05 + 0.1 + 0.5 + 0.05) / 6)


def test_mean_ld_matches_numpy_corrcoef():
    gt = haplotype_tile(40, 50, seed=3)
    gt[7] = 0  # a monomorphic variant takes no part in any pair
    haplotypes = gt.reshape(40, -1).astype(float)
    keep = haplotypes.std(axis=1) > 0
    r = np.corrcoef(haplotypes[keep])
    upper = r[np.triu_indices(int(keep.sum()), 1)]
    f = tile_features(gt)
    assert f["mean_abs_r"] == pytest.approx(np.abs(upper).mean(), rel=1e-5)
    assert f["mean_r2"] == pytest.approx((upper**2).mean(), rel=1e-5)
    # unphased: correlation of per-sample alt counts
    dosage = (gt > 0).sum(axis=2).astype(float)
    r = np.corrcoef(dosage[keep])
    upper = r[np.triu_indices(int(keep.sum()), 1)]
    assert tile_features(gt, phased=False)["mean_abs_r"] == pytest.approx(np.abs(upper).mean(), rel=1e-5)


def test_recombination_rate_and_bad_input():
    gt = haplotype_tile(3, 5, seed=0)
    f = tile_features(gt, positions=[1_000_000, 1_500_000, 2_000_000], genetic_positions=[0.0, 0.2, 1.5])
    assert f["recombination_rate"] == pytest.approx(1.5)
    with pytest.raises(ValueError, match="one value per variant"):
        tile_features(gt, positions=[1, 2], genetic_positions=[0.0, 0.1])
    with pytest.raises(ValueError, match="diploid"):
        tile_features(np.zeros((3, 4), dtype=np.int8))
    with pytest.raises(ValueError, match="integer"):
        tile_features(np.zeros((3, 4, 2)))


def test_tile_tables_from_a_dataset():
    gt = haplotype_tile(30, 8, seed=1)
    ds = genotype_dataset(gt, positions=np.arange(1, 31) * 100_000, alleles=("A", "A"),
                          variant_ids=None, phased=True)
    ds["variant_genetic_position"] = ("variants", np.arange(30) * 0.05)
    tiles = pd.DataFrame({"tile": [0, 1], "first_variant": [0, 10], "last_variant": [14, 29]})
    arrays = tile_genotypes(ds, tiles)
    assert arrays[1].shape == (20, 8, 2) and np.array_equal(arrays[1], gt[10:30])
    table = dataset_tile_features(ds, tiles)
    assert list(table.columns) == list(TILE_FEATURES) and list(table.index) == [0, 1]
    assert table.loc[1, "n_variants"] == 20
    assert table.loc[0, "recombination_rate"] == pytest.approx(0.5)  # 0.05 cM per 0.1 Mb
    assert table.loc[1, "unique_haplotypes"] == tile_features(gt[10:30])["unique_haplotypes"]
    with pytest.raises(ValueError, match="outside"):
        tile_genotypes(ds, pd.DataFrame({"tile": [0], "first_variant": [25], "last_variant": [30]}))


def test_split_validation_samples():
    train, val = split_validation_samples(10, 0.2, seed=4)
    assert len(val) == 2 and len(train) == 8
    assert sorted([*train, *val]) == list(range(10))
    assert np.array_equal(val, split_validation_samples(10, 0.2, seed=4)[1])
    with pytest.raises(ValueError, match="cannot hold out"):
        split_validation_samples(2, 0.1)


# ------------------------------------------------------------------------------- predictor


def test_predictor_cross_validation_and_top_k():
    trials = synthetic_trials()
    predictor = HyperparameterPredictor(seed=0)
    cv = predictor.cross_validate(trials, k=10)
    assert len(cv.folds) == 10 and cv.folds["n_test"].sum() == len(trials)
    assert cv.predictions.notna().all()
    assert cv.r2 > 0.85 and cv.pearson_r2 > 0.85  # the signal is learnable
    assert cv.r2_se < 0.05
    assert predictor.model is None  # cross-validation leaves the predictor unfitted

    predictor.fit(trials)
    columns = predictor.design_matrix(trials).columns
    assert "activation_tanh" in columns and "activation_leakyrelu" in columns  # both spaces
    assert "optimizer_sgd" in columns and "learning_rate" in columns and "mean_abs_r" in columns

    features = trials.groupby("tile").first()[list(TILE_FEATURES)]
    candidates = sample_hyperparameters(3000, seed=9)
    chosen = predictor.top_k(features, candidates, k=5, observed=trials, batch_size=1000)
    predicted = chosen[chosen["source"] == "predicted"]
    assert len(predicted) == 5 * len(features)
    assert all(ranks == [1, 2, 3, 4, 5] for ranks in predicted.groupby("tile")["rank"].apply(list))
    # the true optimum: tanh, not sgd, learning rate near 1e-3
    assert (predicted["activation"] == "tanh").all()
    assert (predicted["optimizer"] != "sgd").all()
    for _, group in predicted.groupby("tile"):
        assert group["predicted_r2"].is_monotonic_decreasing
        row = candidates.loc[group["candidate"].iloc[0]]
        assert row["activation"] == group["activation"].iloc[0]
    observed = chosen[chosen["source"] == "observed"]
    best = trials.loc[trials.groupby("tile")["val_r2"].idxmax()]
    assert set(observed["tile"]) <= set(best["tile"])
    for _, row in observed.iterrows():
        assert row["observed_r2"] == best.set_index("tile").loc[row["tile"], "val_r2"]

    # predictions agree with the model on the same design
    assert np.allclose(predictor.predict(trials.head(3)),
                       predictor.model.predict(predictor.design_matrix(trials.head(3))))

    # include_base: the untuned set joins each tile's finalists, ranked last, with its prediction
    from analysislib.genotype.autoencoder import DAEHyperparameters
    from analysislib.genotype.dae.tuning.pipeline import _with_base_rows

    base = DAEHyperparameters(learning_rate=1e-3, activation="tanh", optimizer="adam")
    with_base = _with_base_rows(chosen, predictor, features, base)
    added = with_base[with_base["source"] == "base"].set_index("tile")
    assert len(with_base) == len(chosen) + len(features) and sorted(added.index) == sorted(features.index)
    assert (added["learning_rate"] == 1e-3).all() and (added["n_layers"] == 4).all()
    assert (added["rank"] == chosen.groupby("tile")["rank"].max() + 1).all()
    tile = features.index[0]
    expected = predictor.predict(pd.DataFrame([{**{n: getattr(base, n) for n in predictor.hyperparameters},
                                                **features.loc[tile].to_dict()}]))
    assert added.loc[tile, "predicted_r2"] == pytest.approx(float(expected[0]))
    assert to_hyperparameters(added.head(1), base)[0] == base

    # a tile won by the base row keeps the base set itself (its seed), others the trained winner
    from analysislib.genotype.dae.tuning.pipeline import _keep_base_where_it_won

    finals = with_base[with_base["tile"].isin(["t0", "t1"])].assign(seed=7, cycle_epochs=5, max_epochs=10)
    finals["val_r2"] = np.where((finals["tile"] == "t0") == (finals["source"] == "base"), 0.9, 0.1)
    best = _keep_base_where_it_won(best_hyperparameters(finals, base), finals, base)
    assert best["t0"] == base and best["t0"].seed == 0
    assert best["t1"].seed == 7 and best["t1"].max_epochs == 10 and best["t1"] != base


def test_predictor_grouped_folds_and_errors():
    trials = synthetic_trials(n_tiles=5, n_trials=12)
    cv = HyperparameterPredictor(seed=1).cross_validate(trials, k=5, group_by_tile=True)
    for fold in range(5):
        assert cv.folds.loc[fold, "n_test"] == 12  # one whole tile per fold
    with pytest.raises(ValueError, match="folds"):
        HyperparameterPredictor().cross_validate(trials.head(3), k=10)
    with pytest.raises(ValueError, match="lacks columns"):
        HyperparameterPredictor().fit(trials.drop(columns="optimizer"))
    with pytest.raises(RuntimeError, match="not been fitted"):
        HyperparameterPredictor().predict(trials)
    unscored = trials.copy()
    unscored.loc[:4, "val_r2"] = np.nan
    assert HyperparameterPredictor().fit(unscored).model is not None  # NaN rows left out


def test_best_hyperparameters_picks_the_top_row_per_tile():
    trials = synthetic_trials(n_tiles=3, n_trials=6)
    best = best_hyperparameters(trials)
    for tile, hparams in best.items():
        top = trials.loc[trials[trials["tile"] == tile]["val_r2"].idxmax()]
        assert hparams.activation == top["activation"]
        assert hparams.learning_rate == top["learning_rate"]


# ------------------------------------------------------------------------------- training runs


@pytest.fixture(scope="module")
def small_tiles() -> dict[str, np.ndarray]:
    return {"left": haplotype_tile(24, 60, seed=11), "right": haplotype_tile(30, 60, seed=12)}


@pytest.fixture(scope="module")
def search(small_tiles: dict[str, np.ndarray]) -> pd.DataFrame:
    from analysislib.genotype.autoencoder import DAEHyperparameters

    return run_random_search(small_tiles, n_trials=4, epochs_per_trial=20, seed=3,
                             base=DAEHyperparameters(batch_size=32), space="authors_code")


def test_random_search_end_to_end(search: pd.DataFrame, small_tiles: dict[str, np.ndarray]):
    assert len(search) == 8
    assert list(search["tile"]) == ["left"] * 4 + ["right"] * 4
    assert set(search["status"]) <= {"ok", "diverged"}
    ok = search["status"] == "ok"
    assert ok.any()
    assert search.loc[ok, "val_r2"].between(0, 1).all()
    assert (search.loc[ok, "epochs_trained"] == 20).all()  # one 20-epoch cycle, no stopping
    assert (search.loc[~ok, "val_r2"] == 0).all()
    # shared trials: both tiles ran the same hyperparameter sets, with different seeds
    left, right = (search[search["tile"] == t].reset_index(drop=True) for t in ("left", "right"))
    assert left["learning_rate"].equals(right["learning_rate"])
    assert not set(left["seed"]) & set(right["seed"])
    # tile features joined per tile
    expected = tile_feature_table({t: g[:, split_validation_samples(60, 0.2, 3)[0]]
                                   for t, g in small_tiles.items()})
    assert search.loc[0, "unique_haplotypes"] == expected.loc["left", "unique_haplotypes"]
    assert search.loc[4, "n_variants"] == 30


def test_random_search_is_reproducible_in_worker_processes(search, small_tiles):
    from analysislib.genotype.autoencoder import DAEHyperparameters

    again = run_random_search(small_tiles, n_trials=4, epochs_per_trial=20, seed=3, jobs=2,
                              base=DAEHyperparameters(batch_size=32), space="authors_code")
    pd.testing.assert_series_equal(again["trial"], search["trial"])
    assert np.allclose(again["val_r2"], search["val_r2"], atol=1e-6)
    assert np.allclose(again["final_loss"], search["final_loss"], rtol=1e-5, equal_nan=True)


def test_train_candidates_and_best(search, small_tiles):
    from analysislib.genotype.autoencoder import DAEHyperparameters

    chosen = search.loc[search.groupby("tile")["val_r2"].idxmax(), ["tile", *SEARCH_SPACE]]
    finals = train_candidates(small_tiles, chosen, max_epochs=30, cycle_epochs=10, seed=3,
                              base=DAEHyperparameters(batch_size=32))
    assert list(finals["tile"]) == ["left", "right"]
    assert (finals["cycle_epochs"] == 10).all() and (finals["max_epochs"] == 30).all()
    ok = finals["status"] == "ok"
    assert (finals.loc[ok, "epochs_trained"] <= 30).all()
    assert (finals.loc[ok & ~finals["stopped_early"], "epochs_trained"] == 30).all()
    best = best_hyperparameters(finals, DAEHyperparameters(batch_size=32))
    assert set(best) == {"left", "right"}
    assert best["left"].cycle_epochs == 10 and best["left"].batch_size == 32
    with pytest.raises(ValueError, match="without genotypes"):
        train_candidates(small_tiles, chosen.assign(tile="elsewhere"), max_epochs=2, cycle_epochs=1)


def test_quick_preset_runs_the_whole_pipeline(small_tiles):
    preset = TUNING_PRESETS["quick"]
    assert TUNING_PRESETS["full"].n_trials == 100 and TUNING_PRESETS["full"].epochs_per_trial == 500
    assert TUNING_PRESETS["full"].n_candidates == 500_000 and TUNING_PRESETS["full"].top_k == 10
    assert TUNING_PRESETS["full"].final_max_epochs == 35_000 and TUNING_PRESETS["full"].cv_folds == 10
    from analysislib.genotype.autoencoder import DAEHyperparameters

    result = tune_tiles(small_tiles, "quick", seed=1, base=DAEHyperparameters(batch_size=32))
    assert result.preset == preset
    assert len(result.trials) == 2 * preset.n_trials
    assert len(result.cross_validation.folds) == preset.cv_folds
    assert set(result.selected["tile"]) == {"left", "right"}
    assert set(result.selected["source"]) <= {"predicted", "observed"}
    assert len(result.finals) == len(result.selected)
    assert set(result.best) == {"left", "right"}
    assert all(h.max_epochs == preset.final_max_epochs for h in result.best.values())
    assert all(h.batch_size == 32 for h in result.best.values())
    with pytest.raises(ValueError, match="unknown autoencoder tuning preset"):
        tune_tiles(small_tiles, "huge")


# ------------------------------------------------------------------------------- old keyword names


class _Stop(Exception):
    """Ends a call once the value under test has arrived (no training)."""


def _stop_at(monkeypatch: pytest.MonkeyPatch, module: object, name: str, key: str, seen: dict) -> None:
    """Replace ``module.name`` by a function that records its ``key`` argument and stops."""
    import inspect

    parameters = list(inspect.signature(getattr(module, name)).parameters)

    def stop(*args, **kwargs):
        seen[key] = kwargs[key] if key in kwargs else args[parameters.index(key)]
        raise _Stop

    monkeypatch.setattr(module, name, stop)


def test_run_random_search_takes_n_jobs_for_one_release(small_tiles, monkeypatch):
    from analysislib.genotype.dae.tuning import trials

    seen: dict = {}
    _stop_at(monkeypatch, trials, "_train_all", "jobs", seen)
    with pytest.warns(FutureWarning, match="'n_jobs' is now called 'jobs'"), pytest.raises(_Stop):
        run_random_search(small_tiles, n_trials=1, epochs_per_trial=1, n_jobs=2)
    assert seen == {"jobs": 2}


def test_train_candidates_takes_n_jobs_for_one_release(small_tiles, monkeypatch):
    from analysislib.genotype.dae.tuning import trials

    seen: dict = {}
    _stop_at(monkeypatch, trials, "_train_all", "jobs", seen)
    candidates = sample_hyperparameters(1, 0).assign(tile="left")
    with pytest.warns(FutureWarning, match="'n_jobs' is now called 'jobs'"), pytest.raises(_Stop):
        train_candidates(small_tiles, candidates, max_epochs=2, cycle_epochs=1, n_jobs=3)
    assert seen == {"jobs": 3}


def test_tune_tiles_takes_n_jobs_for_one_release(small_tiles, monkeypatch):
    from analysislib.genotype.dae.tuning import pipeline

    seen: dict = {}
    _stop_at(monkeypatch, pipeline, "run_random_search", "jobs", seen)
    with pytest.warns(FutureWarning, match="'n_jobs' is now called 'jobs'"), pytest.raises(_Stop):
        tune_tiles(small_tiles, "quick", n_jobs=2)
    assert seen == {"jobs": 2}


def test_hyperparameter_predictor_takes_n_jobs_for_one_release():
    with pytest.warns(FutureWarning, match="'n_jobs' is now called 'threads'"):
        predictor = HyperparameterPredictor(n_jobs=2)
    assert predictor.threads == 2
    assert predictor._new_model().get_params()["n_jobs"] == 2  # XGBoost's name for its threads
