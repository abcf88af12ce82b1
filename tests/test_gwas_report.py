"""Tables, verdicts and figures of the DeepWAS comparison (gwas.report, plotting.gwas)."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import numpy as np
import pandas as pd
import pytest

from analysislib.gwas import report
from analysislib.plotting.gwas import plot_ablation, plot_enrichment_recovery, plot_model_size


def _scores(effect: dict[tuple[str, str], float], seeds=(0, 1, 2)) -> pd.DataFrame:
    """Stored-style prior rows: held-out delta_nll = effect + seed noise; train rows too."""
    rng = np.random.default_rng(0)
    rows = []
    for objective in report.OBJECTIVES:
        for model in report.MODEL_ORDER:
            for s in seeds:
                value = effect.get((objective, model), 0.0) + 1e-4 * rng.standard_normal()
                base = {"method": f"{objective}_{model}", "scenario": "features_all", "seed": s,
                        "objective": objective, "model": model, "features": "all",
                        "runtime_s": 1.0, "parameters_n": 10 * (1 + report.MODEL_ORDER.index(model)),
                        "parameters": json.dumps({"n_parameters": 10})}
                rows += [{**base, "stratum": "test", "metric": "delta_nll", "value": value},
                         {**base, "stratum": "test", "metric": "log_f_r", "value": -value},
                         {**base, "stratum": "test", "metric": "f_rel_l1", "value": 0.5},
                         {**base, "stratum": "train", "metric": "delta_nll", "value": value - 0.01}]
    return pd.DataFrame(rows)


def test_t_interval():
    mean, half = report.t_interval([1.0, 2.0, 3.0, np.nan])
    assert mean == 2.0 and half == pytest.approx(4.302653 * 1 / np.sqrt(3), rel=1e-5)
    assert np.isnan(report.t_interval([5.0])[1]) and report.t_interval([5.0])[0] == 5.0


def test_grid_and_scale_runs():
    assert len(report.prior_grid("quick", ablation=False)) == 8
    assert len(report.prior_grid("quick", ablation=True)) == 11
    assert ("ldsr", "conv", "few") in report.prior_grid("full", ablation=True)
    assert report.scale_runs("standard") == ([0, 1, 2], False)
    assert report.scale_runs("quick", seed=4) == ([4], True)
    assert report.scale_runs("full", seeds=[1, 2], ablation="no") == ([1, 2], False)
    with pytest.raises(ValueError, match="scale"):
        report.scale_runs("huge")
    with pytest.raises(ValueError, match="ablation"):
        report.scale_runs("quick", ablation="maybe")


def test_tables_and_verdict_find_a_planted_likelihood_only_gain():
    scores = _scores({("likelihood", "conv"): -0.01, ("likelihood", "mlp"): -0.01})
    per_seed, stats, table = report.model_size_tables(scores)
    assert stats.loc[("likelihood", "conv"), ("delta_nll", "mean")] == pytest.approx(-0.01, abs=1e-3)
    assert stats.loc[("ldsr", "conv"), ("seeds", "n")] == 3
    assert per_seed.loc[("likelihood", "linear", 0), "train delta_nll"] == pytest.approx(
        per_seed.loc[("likelihood", "linear", 0), "delta_nll"] - 0.01)
    assert " ± " in table.loc[("likelihood", "conv"), "delta_nll"]
    differences = report.paired_differences(per_seed)
    assert differences.loc[("likelihood", "conv − linear", "delta_nll"), "call"] == "larger better"
    assert differences.loc[("ldsr", "conv − linear", "delta_nll"), "call"] == "no clear difference"
    assert differences.loc[("likelihood", "conv − linear", "log_f_r"), "seeds better"] == "3/3"
    verdict = report.size_verdict(per_seed, stats, differences, "standard")
    assert "help only under the full likelihood" in verdict and "3 seed(s)" in verdict


def test_verdict_with_one_seed_gives_none():
    scores = _scores({("likelihood", "conv"): -0.01}, seeds=(0,))
    per_seed, stats, _ = report.model_size_tables(scores)
    differences = report.paired_differences(per_seed)
    assert (differences["call"] == "one seed: no interval").all()
    assert "no verdict" in report.size_verdict(per_seed, stats, differences, "quick")


def test_ablation_table_ranks_the_paper_rows():
    scores = _scores({("likelihood", "conv"): -0.02})
    table = report.ablation_table(scores)
    assert list(table.index) == list(report.ABLATION_ROWS)
    assert table.loc[("likelihood", "conv", "all"), "rank (Δ NLL)"] == 1
    assert table.loc[("likelihood", "conv", "few")].isna().all()  # not trained here


def test_enrichment_comparison_errors_are_log_ratios():
    rows = [{"method": m, "stratum": c, "metric": "enrichment", "value": v}
            for m, values in {"truth": [2.0, 1.0], "s_ldsc": [4.0, -1.0], "p": [2.0, 1.0]}.items()
            for c, v in zip(["a", "b"], values, strict=True)]
    rows.append({"method": "s_ldsc", "stratum": "a", "metric": "enrichment_se", "value": 0.5})
    wide, se, errors = report.enrichment_comparison(pd.DataFrame(rows), ["b", "a"], ["s_ldsc", "p"])
    assert list(wide.index) == ["b", "a"] and se["a"] == 0.5
    assert errors.loc["a", "s_ldsc"] == pytest.approx(np.log(2.0))
    assert errors.loc["b", "s_ldsc"] == pytest.approx(abs(np.log(1e-3)))  # negative: clipped
    assert (errors["p"] == 0).all()


def test_figures_draw_every_series():
    scores = _scores({("likelihood", "conv"): -0.01})
    _, stats, _ = report.model_size_tables(scores)
    fig = plot_model_size(stats, title="t")
    assert len(fig.axes) == 2 and all(len(ax.containers) == 2 for ax in fig.axes)
    fig = plot_ablation(report.ablation_table(scores))
    assert len(fig.axes[0].patches) == len(report.ABLATION_ROWS)
    wide = pd.DataFrame({"truth": [1.0, 2.0], "s_ldsc": [1.1, 2.2], "p": [0.9, 1.8]}, index=["a", "b"])
    fig = plot_enrichment_recovery(wide, pd.Series({"a": 0.1, "b": 0.2}), ["s_ldsc", "p"])
    assert len(fig.axes[0].containers) == 2
