"""eDICE: architecture against a NumPy reference, parameter count, training, prediction, resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analysislib.epigenome.edice import (
    EDICEConfig,
    EDICEImputer,
    EDICEModel,
    _sparse_cell_targets,
    _tissue_targets,
    count_parameters,
    edice_config,
    resolve_n_targets,
    sparse_cell_validation,
)
from analysislib.epigenome.imputer import AverageImputer, get_epigenome_imputer
from analysislib.epigenome.tensor import create_signal_dataset, hide_tracks
from analysislib.errors import CheckpointError

TINY = {"embed_dim": 8, "n_heads": 2, "ffn_dim": 8, "decoder_hidden": 16, "batch_size": 64,
        "lr": 3e-3, "epochs": 3, "n_targets": 0.3, "train_bins": None, "val_bins": None}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def planted_dataset(n_cells=6, n_assays=4, n_bins=800, rank=2, seed=0):
    """A rank-``rank`` arcsinh tensor with cell factors of both signs (AVG cannot recover it)."""
    rng = np.random.default_rng(seed)
    cells = rng.normal(size=(n_cells, rank))
    assays = rng.normal(size=(n_assays, rank))
    genome = rng.normal(size=(n_bins, rank))
    signal = np.einsum("cf,af,gf->cag", cells, assays, genome) + 0.05 * rng.normal(
        size=(n_cells, n_assays, n_bins))
    return create_signal_dataset(signal.astype(np.float32),
                                 cells=[f"c{i}" for i in range(n_cells)],
                                 assays=[f"a{j}" for j in range(n_assays)], scale="arcsinh")


# --------------------------------------------------------------------------- architecture


def _reference_forward(model: EDICEModel, values, support, target_cells, target_assays):
    """The eDICE forward pass written out in NumPy from the TF code's description (eval mode)."""
    p = {k: v.detach().double().numpy() for k, v in model.state_dict().items()}

    def dense(x, name):
        return x @ p[f"{name}.weight"].T + p[f"{name}.bias"]

    def encoder(prefix, x, m, *, n_layers, n_heads, identity_min=0):
        counts = m.sum(-1)
        identity = p[f"{prefix}.global_embedding"] * (counts >= identity_min)[..., None]
        h = np.maximum(dense(np.where(m, x, 0) / np.maximum(counts, 1)[..., None],
                             f"{prefix}.project"), 0) + identity
        missing = counts == 0
        for layer in range(n_layers):
            block = f"{prefix}.blocks.{layer}"
            q, k, v = (dense(h, f"{block}.attention.{w}") for w in ("wq", "wk", "wv"))
            _, _, dim = q.shape
            depth = dim // n_heads
            heads = []
            for head in range(n_heads):
                sl = slice(head * depth, (head + 1) * depth)
                logits = q[..., sl] @ np.swapaxes(k[..., sl], 1, 2) / np.sqrt(depth)
                logits = logits + missing[:, None, :] * -1e9
                weights = np.exp(logits - logits.max(-1, keepdims=True))
                weights /= weights.sum(-1, keepdims=True)
                heads.append(weights @ v[..., sl])
            out1 = h + dense(np.concatenate(heads, -1), f"{block}.attention.dense")
            h = out1 + dense(np.maximum(dense(out1, f"{block}.ffn.0"), 0), f"{block}.ffn.2")
        return h

    n_layers = len(model.cell_encoder.blocks)
    n_heads = model.cell_encoder.blocks[0].attention.n_heads
    cell = encoder("cell_encoder", values, support, n_layers=n_layers, n_heads=n_heads,
                   identity_min=model.cell_encoder.identity_min_inputs)
    assay = encoder("assay_encoder", np.swapaxes(values, 1, 2), np.swapaxes(support, 1, 2),
                    n_layers=n_layers, n_heads=n_heads)
    rows = np.arange(values.shape[0])[:, None]
    x = np.concatenate([cell[rows, target_cells], assay[rows, target_assays]], -1)
    for index in range(0, len(model.decoder) - 1, 3):
        x = np.maximum(dense(x, f"decoder.{index}"), 0)
    return dense(x, f"decoder.{len(model.decoder) - 1}")[..., 0]


@pytest.mark.parametrize(("n_attn_layers", "identity_min_marks"), [(1, 0), (2, 0), (1, 2)])
def test_forward_matches_numpy_reference(n_attn_layers, identity_min_marks):
    torch.manual_seed(0)
    cfg = edice_config("quick", **{**TINY, "n_attn_layers": n_attn_layers,
                                   "identity_min_marks": identity_min_marks})
    model = EDICEModel(5, 3, cfg).double().eval()
    rng = np.random.default_rng(1)
    values = rng.normal(size=(4, 5, 3))
    support = rng.random((4, 5, 3)) < 0.6
    support[0, 2] = False  # a cell type with nothing observed: masked as a key
    support[1, :, 1] = False  # an assay with nothing observed
    values[~support] = np.nan  # unobserved values must never be read
    tc, ta = rng.integers(0, 5, size=(4, 6)), rng.integers(0, 3, size=(4, 6))
    with torch.no_grad():
        got = model(torch.from_numpy(values), torch.from_numpy(support), torch.from_numpy(tc),
                    torch.from_numpy(ta)).numpy()
    np.testing.assert_allclose(got, _reference_forward(model, values, support, tc, ta),
                               rtol=1e-9, atol=1e-12)


def test_unobserved_node_is_not_a_key():
    torch.manual_seed(0)
    model = EDICEModel(4, 3, edice_config("quick", **TINY, identity_min_marks=0)).eval()
    values = torch.randn(2, 4, 3)
    support = torch.ones(2, 4, 3, dtype=torch.bool)
    support[:, 3] = False  # cell 3 unobserved everywhere
    with torch.no_grad():
        before = model.encode(values, support)[0]
        model.cell_encoder.global_embedding[3] += 10.0
        after = model.encode(values, support)[0]
    torch.testing.assert_close(before[:, :3], after[:, :3])  # others never attend to cell 3
    assert not torch.allclose(before[:, 3], after[:, 3])  # its own query row changes


def test_parameter_count_at_paper_configuration():
    # the TF model's: 368,000 per encoder plus a 5,249,025-parameter decoder for 127 x 24
    assert count_parameters(127, 24, "paper") == 2 * 368_000 + 5_249_025 == 5_985_025
    # hand count for a tiny model: encoder = F*D + D + N*D + 4(D*D + D) + (D*H + H + H*D + D)
    d, h = 8, 8
    cell_enc = 3 * d + d + 5 * d + 4 * (d * d + d) + (d * h + h + h * d + d)
    assay_enc = 5 * d + d + 3 * d + 4 * (d * d + d) + (d * h + h + h * d + d)
    decoder = (2 * d * 16 + 16) + (16 * 16 + 16) + (16 + 1)
    assert count_parameters(5, 3, "quick", **TINY) == cell_enc + assay_enc + decoder


def test_presets_and_settings():
    paper = edice_config("paper")
    assert (paper.embed_dim, paper.n_heads, paper.ffn_dim, paper.decoder_hidden,
            paper.decoder_dropout, paper.lr, paper.batch_size, paper.n_targets,
            paper.epochs) == (256, 4, 128, 2048, 0.3, 3e-4, 256, 120, 50)
    entex = edice_config("entex")
    assert (entex.embed_dim, entex.decoder_hidden, entex.seed) == (64, 512, 43)
    with pytest.raises(ValueError, match="unknown eDICE preset"):
        edice_config("huge")
    with pytest.raises(ValueError, match="unknown eDICE setting"):
        edice_config("paper", embedding=3)
    with pytest.raises(ValueError, match="divisible"):
        EDICEConfig(embed_dim=10, n_heads=4)


def test_resolve_n_targets():
    assert resolve_n_targets(120, 811) == 120
    assert resolve_n_targets(120, 709) == 120
    assert resolve_n_targets(120, 40) == round(40 * 120 / 811) == 6
    assert resolve_n_targets(0.25, 40) == 10
    assert resolve_n_targets(0.01, 10) == 1 and resolve_n_targets(1, 2) == 1
    with pytest.raises(ValueError, match="at least 2"):
        resolve_n_targets(1, 1)


def test_tissue_targets_mask_one_whole_cell_type():
    mask = np.array([[1, 1, 0], [1, 0, 1], [0, 0, 0]], dtype=bool)
    gen = torch.Generator().manual_seed(3)
    seen = set()
    for _ in range(20):
        targets = _tissue_targets(mask, 4, gen)
        assert targets.shape[0] == 4 and (targets == targets[0]).all()
        cells = set((targets[0] // 3).tolist())
        assert len(cells) == 1
        cell = cells.pop()
        assert sorted((targets[0] % 3).tolist()) == np.flatnonzero(mask[cell]).tolist()
        seen.add(cell)
    assert seen == {0, 1}  # the empty cell type is never chosen


# --------------------------------------------------------------------------- training & prediction

HELD_OUT = [("c1", "a2"), ("c4", "a0"), ("c2", "a3")]


def _fit(ds, **kw):
    settings = {**TINY, **kw}
    return EDICEImputer("quick", device="cpu", progress=False, **settings).fit(ds)


def test_fits_planted_tensor_much_better_than_avg():
    ds = planted_dataset()
    obs = hide_tracks(ds, HELD_OUT)
    imputer = _fit(obs, epochs=8, embed_dim=16, decoder_hidden=32)
    truth = np.stack([ds["signal"].sel(cell=c, assay=a).values for c, a in HELD_OUT])
    edice = np.mean((imputer.predict(HELD_OUT).values - truth) ** 2)
    avg = np.mean((AverageImputer().fit(obs).predict(HELD_OUT).values - truth) ** 2)
    assert edice < 0.5 * avg
    assert imputer.history[-1]["loss"] < imputer.history[0]["loss"]


def test_same_seed_same_model_and_other_seed_differs():
    ds = hide_tracks(planted_dataset(n_bins=300), HELD_OUT)
    a = _fit(ds, epochs=2).predict(HELD_OUT).values
    b = _fit(ds, epochs=2).predict(HELD_OUT).values
    c = _fit(ds, epochs=2, seed=5).predict(HELD_OUT).values
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_chunked_prediction_equals_unchunked():
    ds = hide_tracks(planted_dataset(n_bins=300), HELD_OUT)
    imputer = _fit(ds, epochs=1)
    whole = imputer.predict(HELD_OUT).values
    imputer.chunk_bins = 7
    np.testing.assert_allclose(imputer.predict(HELD_OUT).values, whole, rtol=1e-5, atol=1e-6)
    # dask-backed input streams through the same path
    lazy = ds.chunk({"bin": 50})
    np.testing.assert_allclose(imputer.predict(HELD_OUT, observed=lazy).values, whole,
                               rtol=1e-5, atol=1e-6)


def test_targets_are_hidden_from_the_inputs():
    ds = planted_dataset(n_bins=200)
    imputer = _fit(hide_tracks(ds, HELD_OUT), epochs=1)
    # predicting from the full dataset (targets observed) equals predicting with them hidden
    full = imputer.predict(HELD_OUT, observed=ds).values
    hidden = imputer.predict(HELD_OUT, observed=hide_tracks(ds, HELD_OUT)).values
    np.testing.assert_allclose(full, hidden, rtol=1e-6)
    # ... but other observed tracks are used
    fewer = imputer.predict(HELD_OUT, observed=hide_tracks(ds, [*HELD_OUT, ("c0", "a0")]))
    assert not np.allclose(fewer.values, full)


def test_resume_from_checkpoint_matches_uninterrupted_run(tmp_path):
    ds = hide_tracks(planted_dataset(n_bins=300), HELD_OUT)
    straight = _fit(ds, epochs=4, checkpoint_dir=str(tmp_path / "a"))
    _fit(ds, epochs=2, checkpoint_dir=str(tmp_path / "b"))  # "interrupted" after 2 epochs
    resumed = _fit(ds, epochs=4, checkpoint_dir=str(tmp_path / "b"))
    assert resumed.fit_result.resumed_from is not None
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in straight.history]
    for key, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="embed_dim"):
        _fit(ds, epochs=4, embed_dim=4, checkpoint_dir=str(tmp_path / "b"))


def test_validation_tracks_early_stopping_and_best_weights():
    ds = hide_tracks(planted_dataset(n_bins=400), HELD_OUT)
    val = [("c0", "a1"), ("c3", "a3")]
    imputer = EDICEImputer("quick", device="cpu", progress=False,
                           **{**TINY, "epochs": 6, "patience": 2})
    imputer.fit(ds, val_tracks=val, validation="none")
    history = imputer.history
    assert all("val_mse" in r for r in history)
    truth = np.stack([ds["signal"].sel(cell=c, assay=a).values for c, a in val])
    # predicting from the training tracks only (val hidden) reproduces the best val MSE
    pred = imputer.predict(val, observed=hide_tracks(ds, val)).values
    best = min(r["val_mse"] for r in history)
    assert np.mean((pred - truth) ** 2) == pytest.approx(best, rel=1e-5)
    assert imputer.fit_result.best_metric == pytest.approx(best)
    with pytest.raises(ValueError, match=r"c1\.a2 is not observed"):
        imputer.fit(ds, val_tracks=[("c1", "a2")])


def test_errors_and_registry():
    ds = hide_tracks(planted_dataset(n_bins=100), HELD_OUT)
    imputer = get_epigenome_imputer("edice", preset="quick", device="cpu", progress=False,
                                    **{**TINY, "epochs": 1})
    assert isinstance(imputer, EDICEImputer)
    imputer.fit(ds)
    assert imputer.parameters()["embed_dim"] == 8
    bigger = create_signal_dataset(np.zeros((7, 4, 100), np.float32),
                                   cells=[f"c{i}" for i in range(7)],
                                   assays=[f"a{j}" for j in range(4)], scale="arcsinh")
    with pytest.raises(ValueError, match=r"c6\.a0.*fixed at fit time"):
        imputer.predict([("c6", "a0")], observed=bigger)
    with pytest.warns(UserWarning, match="ignoring 4 observed"):
        imputer.predict([("c1", "a2")], observed=bigger)
    with_individuals = create_signal_dataset(np.zeros((2, 3, 2, 10), np.float32),
                                             cells=["x", "y", "z"], assays=["p", "q"],
                                             individuals=["i1", "i2"], scale="arcsinh")
    with pytest.raises(ValueError, match="individual"):
        imputer.fit(with_individuals)
    with pytest.raises(RuntimeError, match="fit"):
        EDICEImputer().predict([("c1", "a2")], observed=ds)


def test_fit_reads_only_the_training_bins():
    from analysislib.epigenome.edice import _subset

    ds = hide_tracks(planted_dataset(n_bins=400), HELD_OUT)
    chosen = _subset(400, 50, 211, 1)  # the bins the quick preset's seed picks
    signal = ds["signal"].values.copy()
    others = np.setdiff1d(np.arange(400), chosen)
    signal[0, 0, others] = np.nan  # an observed track, unreadable outside the chosen bins
    ds["signal"] = (ds["signal"].dims, signal)
    imputer = EDICEImputer("quick", device="cpu", progress=False,
                           **{**TINY, "epochs": 1, "train_bins": 50})
    imputer.fit(ds, validation="none")
    assert imputer.history[0]["loss"] > 0
    with pytest.raises(ValueError, match=r"c0\.a0 has a non-finite value"):
        _fit(ds, epochs=1)
    # validating (a cell type is profiled in fewer marks) reads the validation bins too
    with pytest.raises(ValueError, match=r"c0\.a0 has a non-finite value"):
        imputer.fit(ds)


# --------------------------------------------------------------------------- sparse cell types


def _kept_marks(mask, batch, generator):
    """(marks of the reduced cell type, marks it keeps) for each row of :func:`_sparse_cell_targets`
    with every bin masked as a sparse cell type."""
    n_assays = mask.shape[1]
    targets, weights = _sparse_cell_targets(mask, batch, 4, 1.0, generator)
    per_cell = mask.sum(axis=1)
    rows = []
    for row, w in zip(targets.numpy(), weights.numpy(), strict=True):
        real = np.unique(row[w > 0])
        assert (row[w == 0] == row[0]).all() and w[0] == 1  # padding repeats a real target
        cells = real // n_assays  # flat (cell, assay) track ids
        assert len(set(cells)) == 1 and per_cell[cells[0]] >= 2  # one cell type that can be reduced
        rows.append((int(per_cell[cells[0]]), int(per_cell[cells[0]]) - len(real)))
    return rows


def test_sparse_cell_masking_keeps_as_many_marks_as_the_sparse_cell_types_have():
    generator = torch.Generator().manual_seed(0)
    mask = np.ones((4, 5), dtype=bool)
    mask[3, 1:] = False  # a new cell type profiled in one mark
    assert set(_kept_marks(mask, 500, generator)) == {(5, 1)}
    mask[3, 1] = True  # ... in two marks: reduced itself, it keeps one
    assert set(_kept_marks(mask, 500, generator)) == {(5, 2), (2, 1)}
    mask[2, 3:] = False  # sparse cell types of two and three marks: either count, evenly
    rows = np.array(_kept_marks(mask, 4000, generator))
    full = rows[rows[:, 0] == 5, 1]
    assert set(full) == {2, 3} and 0.4 < (full == 3).mean() < 0.6
    assert set(rows[rows[:, 0] == 3, 1]) == {2}  # at most all but one
    # no sparse cell type: down to one kept mark, never none
    assert {k for _, k in _kept_marks(np.ones((4, 5), dtype=bool), 2000, generator)} == {1, 2, 3, 4}
    # fraction 0 is the paper's random masking: n_targets random tracks, all weighted
    targets, weights = _sparse_cell_targets(mask, 50, 4, 0.0, generator)
    assert targets.shape == (50, 4) and bool(weights.all())
    assert all(len(set(row)) == 4 for row in targets.numpy())


def test_sparse_cell_validation_reduces_profiled_cells_to_the_sparse_cells_marks():
    mask = np.array([[1, 1, 1], [1, 1, 1], [0, 1, 1], [0, 1, 0]], dtype=bool)
    tasks = sparse_cell_validation(mask)
    assert [t for _, t in tasks] == [[(0, 0), (0, 2)], [(1, 0), (1, 2)]]
    support, _ = tasks[0]
    np.testing.assert_array_equal(support[0], [False, True, False])
    np.testing.assert_array_equal(support[1:], mask[1:])
    assert sparse_cell_validation(np.ones((3, 4), dtype=bool)) == []


def sparse_cell_dataset():
    """Planted tensor in which cell c5 is profiled in one mark only."""
    ds = planted_dataset(n_bins=600)
    return hide_tracks(ds, [("c5", "a1"), ("c5", "a2"), ("c5", "a3")])


def test_a_sparse_cell_type_is_validated_on_by_default_and_the_best_epoch_is_kept():
    ds = sparse_cell_dataset()
    settings = {**TINY, "epochs": 8, "patience": None, "lr": 0.05, "val_bins": 200,
                "train_bins": 400, "sparse_cell_fraction": 0.5}
    imputer = _fit(ds, **settings)
    history = imputer.history
    assert all("val_mse" in r for r in history)
    best = int(np.argmin([r["val_mse"] for r in history]))
    assert imputer.fit_result.best_epoch == best + 1
    assert imputer.fit_result.best_metric == pytest.approx(history[best]["val_mse"])
    plain = EDICEImputer("quick", device="cpu", progress=False, **{**settings, "epochs": 1})
    assert "val_mse" not in plain.fit(ds, validation="none").history[0]


def test_best_weights_survive_a_resume(tmp_path):
    ds = sparse_cell_dataset()
    # seed 2: the best epoch is the last one before the interruption
    settings = {**TINY, "epochs": 8, "patience": None, "lr": 0.05, "val_bins": 200,
                "train_bins": 400, "sparse_cell_fraction": 0.5, "seed": 2}
    straight = _fit(ds, checkpoint_dir=str(tmp_path / "a"), **settings)
    first = _fit(ds, checkpoint_dir=str(tmp_path / "b"), **{**settings, "epochs": 7})
    resumed = _fit(ds, checkpoint_dir=str(tmp_path / "b"), **settings)
    assert resumed.fit_result.resumed_from is not None
    assert resumed.fit_result.best_epoch == straight.fit_result.best_epoch
    assert [r["val_mse"] for r in resumed.history] == [r["val_mse"] for r in straight.history]
    for key, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=0, atol=0)
    assert straight.fit_result.best_epoch == 7  # before the interruption: epoch 8 is worse
    for key, value in first.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=0, atol=0)


def test_a_cell_type_with_few_input_marks_is_known_by_its_signal_alone():
    config = EDICEConfig(**{**TINY, "identity_min_marks": 2})
    torch.manual_seed(0)
    model = EDICEModel(3, 4, config).eval()
    values = torch.rand(5, 3, 4)
    support = torch.ones(5, 3, 4, dtype=torch.bool)
    support[:, 2, 1:] = False  # cell 2 has one input mark, cells 0 and 1 have four
    cells, assays = torch.tensor([[2, 0]] * 5), torch.tensor([[1, 1]] * 5)
    before = model(values, support, cells, assays)
    with torch.no_grad():
        model.cell_encoder.global_embedding[2] += 1.0
    torch.testing.assert_close(model(values, support, cells, assays), before, rtol=0, atol=0)
    with torch.no_grad():
        model.cell_encoder.global_embedding[0] += 1.0
    assert not torch.allclose(model(values, support, cells, assays)[:, 1], before[:, 1])
    # with the paper's setting (0) every cell type's embedding counts
    assert EDICEModel(3, 4, EDICEConfig(**TINY)).cell_encoder.identity_min_inputs == 0
