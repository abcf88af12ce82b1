"""eDICE: factorised cell/assay attention imputer of epigenomic tracks (torch port of the TF code).

Follows Hawkins-Hooker et al. 2023 (*Nat Commun* 14:4750), Methods "eDICE architecture" and
"Hyperparameters and training details", and the authors' TensorFlow code (``alex-hh/eDICE``,
``edice/models`` and ``edice/data_loaders``). Where the authors' PyTorch port
(``alex-hh/edice-pytorch``, marked there as not verified) differs from the TF code (no ReLU on the
node projection, gradient clipping, ``nn.Embedding`` initialisation), this module follows the TF
code.

Model, for one genomic bin at a time (no spatial context):

1. **Cell encoder** (nodes = cell types, features = assays) and **assay encoder** (nodes =
   assays, features = cell types). The observed ("support") values are scattered into a
   ``node × feature`` matrix with zeros elsewhere; each row is divided by its number of observed
   entries (a row with none stays 0); a dense layer with ReLU maps each row to ``embed_dim``, and
   a learned global embedding of the node (Keras ``"uniform"`` initialiser, U(-0.05, 0.05)) is
   added, like a position embedding.
2. ``n_attn_layers - 1`` self-attention blocks without LayerNorm (``x + Dropout(MHA(x))``, then
   ``+ Dropout(FFN)``), then a final cross-attention block whose queries are the target nodes and
   whose keys/values are all nodes; nodes with no observed entry are masked out as keys by adding
   −1e9 to their logits (so a bin with nothing observed attends uniformly instead of giving NaN).
   The multi-head attention is the TF-tutorial form: dense ``wq``, ``wk``, ``wv``, scaled
   dot-product per head, concatenation and an output dense layer.
3. **Decoder**: the target cell and assay embeddings are concatenated and passed through
   ``decoder_layers`` × (``Dense(decoder_hidden, relu)``, ``Dropout(decoder_dropout)``) and a
   linear ``Dense(1)``.

Dense layers use the Keras defaults (Glorot-uniform weights, zero biases). Computing the final
block for every node and gathering the target rows gives the same numbers as gathering the
queries first (attention is row-wise), and is cheaper when many targets share nodes.

The 1/count row scaling is the TF code's (``NodeInputMasker``: the masked row is divided by its
number of observed entries with ``divide_no_nan``). It means a cell type profiled in one mark
feeds its encoder a row on another scale than a cell type profiled in five, a case the paper's
random masking of 120 of 811 tracks almost never trains on; ``sparse_cell_fraction`` below
trains on it.

Training is masked reconstruction on arcsinh values (TF ``TrainInMemGenerator``): at every bin of a batch an
independent random permutation of the training tracks picks ``n_targets`` targets, the remaining
training tracks are the inputs, and the loss is the MSE over the targets. With a validation set
the supports are all training tracks and the targets the validation tracks (``ValInMemGenerator``),
and early stopping monitors the validation MSE. The ``"tissue"`` masking mode (one randomly chosen
cell type per batch has all its tracks masked) is the ENTEx leave-one-tissue-out generator used by
:mod:`analysislib.epigenome.transfer`.

Training for a new, sparsely profiled cell type (our addition; the paper's test cell types keep
several training tracks): with ``sparse_cell_fraction`` > 0, that fraction of the bins is masked
as such a cell type instead (one training cell type keeps as many of its marks as a sparse cell
type of the data has, or 1 to all but one of them when no cell type is sparse; the rest of its
marks are the targets, every other track is an input), and
:meth:`EDICEImputer.fit` validates, by default, on the same problem at held-out bins
(:func:`sparse_cell_validation`), which sets early stopping and the returned weights. With
``identity_min_marks``, a cell type seen through fewer marks than that at a bin gets no learned
global embedding: on the real Roadmap tracks a new cell type's embedding, trained only on its
one observed mark, shifted the level of its imputed marks by a seed-dependent amount.

Choices the paper leaves open, fixed here:

- ``n_targets`` for small datasets: the paper masks 120 of 811 tracks. An integer ``n_targets``
  that would leave fewer than half the training tracks as inputs is replaced by the paper's
  fraction 120/811 of the training tracks (at least 1); a float in (0, 1) is a fraction.
- ``train_bins``: eDICE trains on a random subset of genomic positions (paper Fig. 2d);
  ``None`` uses every bin. ``val_bins`` caps the bins used to compute the validation MSE.
- Prediction hides every requested target from the inputs at once (a target that is observed
  in the dataset is never used for any target of the same call). For leave-one-out scores of
  observed tracks, predict them one at a time.
- The model's cell and assay node sets are fixed at fit time (the global embeddings and the
  input widths depend on them). Predicting a track of an unknown cell type or assay raises
  ``ValueError``; observed tracks of unknown cells/assays are ignored with a warning.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import numpy as np
import torch
import xarray as xr
from torch import nn

from analysislib.epigenome.imputer import EpigenomeImputer
from analysislib.epigenome.tensor import to_arcsinh
from analysislib.errors import CheckpointError, InvalidArgumentError, NotFittedError
from analysislib.presets import Presets
from analysislib.results import array_checksum

__all__ = [
    "EDICE_PRESETS",
    "PAPER_TARGET_FRACTION",
    "EDICEConfig",
    "EDICEImputer",
    "EDICEModel",
    "count_parameters",
    "edice_config",
    "resolve_n_targets",
    "sparse_cell_validation",
    "train_edice",
]

Track = tuple[str, str]
MODEL_NAME = "edice"
PAPER_TARGET_FRACTION = 120 / 811
"""The paper masks 120 of its 811 training + validation tracks per bin."""

_MASK_LOGIT = -1e9


@dataclass(frozen=True)
class EDICEConfig:
    """Hyperparameters of an eDICE model and its training.

    Attributes
    ----------
    embed_dim, n_heads, n_attn_layers, ffn_dim
        Embedding width, attention heads, attention layers (the last one is the cross-attention
        block) and the hidden width of the attention block's feed-forward network.
    transformer_dropout, embedding_dropout
        Dropout after attention and FFN, and on the node embeddings.
    decoder_hidden, decoder_layers, decoder_dropout
        The output MLP.
    lr, batch_size, epochs
        Adam learning rate, bins per batch, passes over the training bins.
    n_targets
        Tracks masked as targets per bin (int) or a fraction of the training tracks (float);
        see :func:`resolve_n_targets`.
    train_bins
        Train on this many randomly chosen bins (``None``: all).
    val_bins
        Compute the validation MSE on at most this many bins (evenly spaced).
    patience
        Early-stopping patience in epochs on the monitored value (``None``: never stop).
    seed
        Seed of weight initialisation, bin subsets, data order and masks.
    grad_clip_norm
        Clip the gradient norm (the TF code does not; the PyTorch port clips at 5).
    sparse_cell_fraction
        Fraction of training bins masked as a *sparsely profiled cell type* instead of by the
        paper's random track masking: one training cell type keeps as many of its marks as
        the data's sparsely profiled cell types have (1 to all but one when none is sparse) as
        inputs, its other marks are the targets and every other track is an input. This is the
        test a new cell type with few marks poses (see :func:`_sparse_cell_targets`). 0 gives
        the paper's masking.
    identity_min_marks
        A cell type with fewer observed input marks than this at a bin is known by its signal
        alone: its learned global embedding is not added. A cell type profiled in one or two
        marks never trains its embedding on the marks it lacks, so the embedding only adds a
        level the data cannot check. 0 (the paper) always adds it.
    """

    embed_dim: int = 256
    n_heads: int = 4
    n_attn_layers: int = 1
    ffn_dim: int = 128
    transformer_dropout: float = 0.1
    embedding_dropout: float = 0.0
    decoder_hidden: int = 2048
    decoder_layers: int = 2
    decoder_dropout: float = 0.3
    lr: float = 3e-4
    batch_size: int = 256
    epochs: int = 50
    n_targets: float = 120
    train_bins: int | None = None
    val_bins: int | None = 50_000
    patience: int | None = None
    seed: int = 211
    grad_clip_norm: float | None = None
    sparse_cell_fraction: float = 0.0
    identity_min_marks: int = 0

    def __post_init__(self) -> None:
        for name in ("embed_dim", "n_heads", "n_attn_layers", "ffn_dim", "decoder_hidden",
                     "batch_size"):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise InvalidArgumentError(f"eDICE {name} must be a positive integer, got {value!r}")
        if self.embed_dim % self.n_heads:
            raise InvalidArgumentError(f"eDICE embed_dim ({self.embed_dim}) must be divisible by "
                             f"n_heads ({self.n_heads})")
        if int(self.epochs) != self.epochs or self.epochs < 0 or self.decoder_layers < 0:
            raise InvalidArgumentError("eDICE epochs and decoder_layers must be non-negative integers")
        for name in ("transformer_dropout", "embedding_dropout", "decoder_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise InvalidArgumentError(f"eDICE {name} must be in [0, 1), got {getattr(self, name)!r}")
        if not self.lr > 0:
            raise InvalidArgumentError(f"eDICE lr must be positive, got {self.lr!r}")
        if self.n_targets <= 0:
            raise InvalidArgumentError(f"eDICE n_targets must be positive, got {self.n_targets!r}")
        if int(self.identity_min_marks) != self.identity_min_marks or self.identity_min_marks < 0:
            raise InvalidArgumentError("eDICE identity_min_marks must be a non-negative integer, got "
                             f"{self.identity_min_marks!r}")
        if not 0 <= self.sparse_cell_fraction <= 1:
            raise InvalidArgumentError("eDICE sparse_cell_fraction must be in [0, 1], got "
                             f"{self.sparse_cell_fraction!r}")
        for name in ("train_bins", "val_bins"):
            value = getattr(self, name)
            if value is not None and (int(value) != value or value < 1):
                raise InvalidArgumentError(f"eDICE {name} must be a positive integer or None, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python copy, for checkpoints and the results store."""
        return asdict(self)


#: Named hyperparameter sets. ``paper``: the Roadmap model (Methods; ``train_roadmap.py``);
#: ``entex``: the ENTEx transfer model of ``entex_LOO_tissue_transfer.py`` (embedding 64,
#: decoder 512, seed 43, 20 pre-training epochs; the paper text says 128 and 30); ``quick``: a
#: small CPU model trained on 40,000 bins with the paper's optimiser settings (Adam at 3e-4,
#: batches of 256; at 1e-3 and 128 a new cell type's imputed marks swung between epochs, Pearson
#: 0.31-0.52 on E017, with a flat validation MSE), same code path, with half of its training bins masked
#: as a sparsely profiled cell type, no identity embedding for a cell type seen through fewer
#: than 3 marks, and up to 16 epochs, stopped after 3 without a better validation MSE (the paper
#: presets keep the paper's random masking, identity embeddings and fixed epochs).
EDICE_PRESETS: Presets[dict[str, Any]] = Presets("eDICE", {
    "paper": {},
    "entex": {"embed_dim": 64, "decoder_hidden": 512, "seed": 43, "epochs": 20},
    "quick": {"embed_dim": 32, "ffn_dim": 64, "decoder_hidden": 128, "epochs": 16,
              "patience": 3, "n_targets": 0.25, "train_bins": 40_000, "val_bins": 5_000,
              "sparse_cell_fraction": 0.5, "identity_min_marks": 3},
}, aliases={"full": "paper"}, fields={f.name for f in fields(EDICEConfig)})


def edice_config(preset: str = "paper", **overrides: Any) -> EDICEConfig:
    """Build an :class:`EDICEConfig` from a named preset plus explicit overrides.

    Parameters
    ----------
    preset
        A key of :data:`EDICE_PRESETS`.
    **overrides
        Field values that replace the preset's.

    Raises
    ------
    PresetError
        For an unknown preset or field name (a ValueError).
    """
    return EDICEConfig(**EDICE_PRESETS.resolve(preset, **overrides))


def resolve_n_targets(n_targets: float, n_tracks: int) -> int:
    """Number of target tracks per bin for ``n_tracks`` training tracks.

    Parameters
    ----------
    n_targets
        An integer count, or a float in (0, 1) giving a fraction of ``n_tracks``. A count that
        would leave fewer than half of the tracks as inputs is replaced by
        :data:`PAPER_TARGET_FRACTION` of the tracks.
    n_tracks
        Training tracks available.

    Returns
    -------
    int
        Between 1 and ``n_tracks - 1``.

    Examples
    --------
    >>> resolve_n_targets(120, 811), resolve_n_targets(120, 40), resolve_n_targets(0.25, 40)
    (120, 6, 10)
    """
    if n_tracks < 2:
        raise InvalidArgumentError(f"eDICE needs at least 2 observed training tracks, got {n_tracks}")
    if isinstance(n_targets, float) and not float(n_targets).is_integer():
        if not 0 < n_targets < 1:
            raise InvalidArgumentError(f"a fractional n_targets must be in (0, 1), got {n_targets}")
        count = round(n_targets * n_tracks)
    else:
        count = int(n_targets)
        if count > n_tracks // 2:
            count = round(PAPER_TARGET_FRACTION * n_tracks)
    return min(max(1, count), n_tracks - 1)


# --------------------------------------------------------------------------- torch modules


def _dense(n_in: int, n_out: int) -> nn.Linear:
    """A Keras-style dense layer: Glorot-uniform weights, zero bias."""
    layer = nn.Linear(n_in, n_out)
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class _MultiHeadAttention(nn.Module):
    """TF-tutorial multi-head attention with an additive key mask (no LayerNorm anywhere)."""

    def __init__(self, dim: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads, self.depth = n_heads, dim // n_heads
        self.wq, self.wk, self.wv = _dense(dim, dim), _dense(dim, dim), _dense(dim, dim)
        self.dense = _dense(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.n_heads, self.depth).transpose(1, 2)

    def forward(self, query: torch.Tensor, key: torch.Tensor,
                key_missing: torch.Tensor) -> torch.Tensor:
        q, k, v = self._split(self.wq(query)), self._split(self.wk(key)), self._split(self.wv(key))
        logits = q @ k.transpose(-1, -2) / math.sqrt(self.depth)
        logits = logits + key_missing[:, None, None, :].to(logits.dtype) * _MASK_LOGIT
        out = torch.softmax(logits, dim=-1) @ v
        batch, _, length, _ = out.shape
        return self.dense(out.transpose(1, 2).reshape(batch, length, -1))


class _AttentionBlock(nn.Module):
    """``x_q + Dropout(MHA(x_q, x))`` then ``+ Dropout(FFN)``, without LayerNorm."""

    def __init__(self, dim: int, n_heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.attention = _MultiHeadAttention(dim, n_heads)
        self.ffn = nn.Sequential(_dense(dim, ffn_dim), nn.ReLU(), _dense(ffn_dim, dim))
        self.drop1, self.drop2 = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, query: torch.Tensor, key: torch.Tensor,
                key_missing: torch.Tensor) -> torch.Tensor:
        out = query + self.drop1(self.attention(query, key, key_missing))
        return out + self.drop2(self.ffn(out))


class _SignalEncoder(nn.Module):
    """Embeds each node (cell type or assay) from its observed values at one bin."""

    def __init__(self, n_nodes: int, n_feats: int, cfg: EDICEConfig,
                 identity_min_inputs: int = 0) -> None:
        super().__init__()
        self.identity_min_inputs = identity_min_inputs
        self.project = _dense(n_feats, cfg.embed_dim)
        self.global_embedding = nn.Parameter(
            torch.empty(n_nodes, cfg.embed_dim).uniform_(-0.05, 0.05))
        self.embedding_dropout = nn.Dropout(cfg.embedding_dropout)
        self.blocks = nn.ModuleList(
            _AttentionBlock(cfg.embed_dim, cfg.n_heads, cfg.ffn_dim, cfg.transformer_dropout)
            for _ in range(cfg.n_attn_layers))

    def forward(self, values: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        """Contextual embeddings ``(batch, n_nodes, embed_dim)`` of every node."""
        counts = support.sum(-1, keepdim=True)
        scaled = torch.where(support, values, 0.0) / counts.clamp(min=1)
        identity = self.global_embedding
        if self.identity_min_inputs:
            identity = identity * (counts >= self.identity_min_inputs).to(identity.dtype)
        h = torch.relu(self.project(scaled)) + identity
        h = self.embedding_dropout(h)
        missing = counts[..., 0] == 0
        for block in self.blocks:  # the last block is the cross-attention of the TF code
            h = block(h, h, missing)
        return h


class EDICEModel(nn.Module):
    """The eDICE network: cell and assay encoders and an MLP decoder.

    Parameters
    ----------
    n_cells, n_assays
        Sizes of the node sets, fixed for the life of the model.
    config
        Architecture (the training fields are ignored here).
    """

    def __init__(self, n_cells: int, n_assays: int, config: EDICEConfig) -> None:
        super().__init__()
        self.n_cells, self.n_assays = n_cells, n_assays
        self.cell_encoder = _SignalEncoder(n_cells, n_assays, config, config.identity_min_marks)
        self.assay_encoder = _SignalEncoder(n_assays, n_cells, config)
        layers: list[nn.Module] = []
        width = 2 * config.embed_dim
        for _ in range(config.decoder_layers):
            layers += [_dense(width, config.decoder_hidden), nn.ReLU(),
                       nn.Dropout(config.decoder_dropout)]
            width = config.decoder_hidden
        layers.append(_dense(width, 1))
        self.decoder = nn.Sequential(*layers)

    def encode(self, values: torch.Tensor,
               support: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cell ``(B, n_cells, D)`` and assay ``(B, n_assays, D)`` embeddings of a batch.

        ``values`` and ``support`` have shape ``(B, n_cells, n_assays)``; values outside
        ``support`` are ignored (they may hold NaN).
        """
        return (self.cell_encoder(values, support),
                self.assay_encoder(values.transpose(1, 2), support.transpose(1, 2)))

    def forward(self, values: torch.Tensor, support: torch.Tensor, target_cells: torch.Tensor,
                target_assays: torch.Tensor) -> torch.Tensor:
        """Predicted arcsinh values of targets ``(B, T)`` given cell and assay ids ``(B, T)``."""
        cell_emb, assay_emb = self.encode(values, support)
        c = torch.take_along_dim(cell_emb, target_cells[..., None], dim=1)
        a = torch.take_along_dim(assay_emb, target_assays[..., None], dim=1)
        return self.decoder(torch.cat([c, a], dim=-1))[..., 0]


def count_parameters(n_cells: int = 127, n_assays: int = 24, preset: str = "paper",
                     **overrides: Any) -> int:
    """Trainable parameters of an eDICE model (5,985,025 at the paper configuration, 127 × 24).

    Parameters
    ----------
    n_cells, n_assays
        Node-set sizes (Roadmap: 127 cell types, 24 assays).
    preset, **overrides
        As for :func:`edice_config`.
    """
    model = EDICEModel(n_cells, n_assays, edice_config(preset, **overrides))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --------------------------------------------------------------------------- data helpers


def _dense_signal(ds: xr.Dataset, method: str) -> tuple[np.ndarray, np.ndarray]:
    """``(bin, cell, assay)`` float32 arcsinh values (0 where unobserved) and the observed mask."""
    if "signal" not in ds or "observed" not in ds:
        raise InvalidArgumentError(f"{method}: dataset needs 'signal' and 'observed' variables")
    if "individual" in ds["signal"].dims:
        raise InvalidArgumentError(f"{method}: dataset has an 'individual' dimension; select one "
                         "individual (ds.sel(individual=...)) or use "
                         "analysislib.epigenome.transfer")
    ds = to_arcsinh(ds)
    observed = np.asarray(ds["observed"].transpose("cell", "assay").values, dtype=bool)
    values = np.asarray(ds["signal"].transpose("bin", "cell", "assay").values, dtype=np.float32)
    values = np.where(observed[None], values, np.float32(0))
    bad = ~np.isfinite(values)
    if bad.any():
        b, c, a = np.argwhere(bad)[0]
        raise InvalidArgumentError(f"{method}: observed track {ds['cell'].values[c]}.{ds['assay'].values[a]}"
                         f" has a non-finite value at bin {b}")
    return np.ascontiguousarray(values), observed


def _track_index(ds: xr.Dataset, tracks: Sequence[Track], what: str) -> list[tuple[int, int]]:
    cells = {str(c): i for i, c in enumerate(ds["cell"].values)}
    assays = {str(a): i for i, a in enumerate(ds["assay"].values)}
    out = []
    for cell, assay in tracks:
        if cell not in cells or assay not in assays:
            raise InvalidArgumentError(f"{what} track {cell}.{assay} is not in the dataset")
        out.append((cells[cell], assays[assay]))
    return out


def _subset(n_bins: int, size: int | None, seed: int, stream: int) -> np.ndarray:
    if size is None or size >= n_bins:
        return np.arange(n_bins)
    rng = np.random.default_rng([seed, stream])
    return np.sort(rng.choice(n_bins, size=size, replace=False))


def _sparse_cells(counts: np.ndarray) -> np.ndarray:
    """Bool per cell type: profiled, but in fewer marks than the best-profiled one (the cell types
    to impute), from each cell type's number of observed marks ``counts``."""
    return (counts > 0) & (counts < counts.max(initial=0))


def sparse_cell_validation(observed: np.ndarray) -> list[tuple[np.ndarray, list[tuple[int, int]]]]:
    """Validation problems that pose the test of a sparsely profiled cell type.

    The sparsest cell types of ``observed`` (fewest observed marks, fewer than the best-profiled
    cell type) are the ones to impute. Each fully profiled cell type that observes a sparse cell
    type's marks is reduced to exactly those marks, and its other marks are predicted from them
    with every other track as input. Nothing is hidden from training: the tasks are scored on
    validation bins.

    Parameters
    ----------
    observed
        ``(n_cells, n_assays)`` bool mask of the training tracks.

    Returns
    -------
    list of (support, targets)
        For :func:`train_edice`'s ``val_tasks``; empty when every cell type has the same number
        of marks.

    Examples
    --------
    >>> mask = np.array([[1, 1, 1], [1, 1, 1], [1, 0, 0]], dtype=bool)
    >>> [(s.astype(int).tolist(), t) for s, t in sparse_cell_validation(mask)][0]
    ([[1, 0, 0], [1, 1, 1], [1, 0, 0]], [(0, 1), (0, 2)])
    """
    observed = np.asarray(observed, dtype=bool)
    counts = observed.sum(axis=1)
    sparse = _sparse_cells(counts)
    if not sparse.any():
        return []
    patterns = {tuple(observed[c]) for c in np.flatnonzero(counts == counts[sparse].min())}
    tasks = []
    for pattern in sorted(patterns):
        kept = np.array(pattern)
        for cell in np.flatnonzero(counts == counts.max()):
            if not observed[cell, kept].all():
                continue
            support = observed.copy()
            support[cell] = kept
            tasks.append((support, [(int(cell), int(a))
                                    for a in np.flatnonzero(observed[cell] & ~kept)]))
    return tasks


def _validation_bins(n_bins: int, train_bins: np.ndarray, size: int | None,
                     seed: int) -> np.ndarray:
    """Up to ``size`` bins for validation, outside the training bins when any are left."""
    rest = np.setdiff1d(np.arange(n_bins), train_bins)
    pool = rest if len(rest) else np.arange(n_bins)
    return pool[_subset(len(pool), size, seed, 2)]


class _BinBatches:
    """One epoch of training batches: float32 values ``(B, n_cells, n_assays)``."""

    def __init__(self, values: np.ndarray, bins: np.ndarray, batch_size: int,
                 generator: torch.Generator) -> None:
        self.values, self.batch_size = values, batch_size
        order = torch.randperm(len(bins), generator=generator).numpy()
        self.bins = bins[order]

    def __len__(self) -> int:
        return math.ceil(len(self.bins) / self.batch_size)

    def __iter__(self) -> Iterator[torch.Tensor]:
        for start in range(0, len(self.bins), self.batch_size):
            idx = np.sort(self.bins[start:start + self.batch_size])
            yield torch.from_numpy(self.values[idx])


def _random_targets(flat_tracks: torch.Tensor, batch: int, n_targets: int,
                    generator: torch.Generator) -> torch.Tensor:
    """Flat track ids ``(batch, n_targets)``: an independent random subset per bin."""
    scores = torch.rand(batch, len(flat_tracks), generator=generator)
    return flat_tracks[scores.argsort(dim=1)[:, :n_targets]]


def _sparse_cell_targets(train_mask: np.ndarray, batch: int, n_targets: int, fraction: float,
                         generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets ``(batch, T)`` (flat track ids) and their weights: random and sparse-cell bins.

    A ``fraction`` of the bins is masked like a sparsely profiled cell type: one training cell
    type with at least two marks is drawn, keeps ``k`` of its ``n`` marks as inputs (the marks
    drawn at random) and has its other ``n - k`` marks as targets; every other training track
    stays an input. ``k`` is the number of marks of one of ``train_mask``'s sparse cell types
    (:func:`_sparse_cells`: the cell types to impute), drawn at random among their distinct
    counts and at most ``n - 1``; with no sparse cell type it is uniform in 1..n-1. The other
    bins get the paper's random masking (``n_targets`` random training tracks). Rows have
    different numbers of targets, so they are padded to the longest with repeats of a real
    target at weight 0.
    """
    flat = torch.as_tensor(np.flatnonzero(train_mask.ravel()))
    n_assays = train_mask.shape[1]
    n = len(flat)
    cell_of = flat // n_assays
    per_cell = np.bincount(cell_of.numpy(), minlength=train_mask.shape[0])
    eligible = torch.as_tensor(np.flatnonzero(per_cell >= 2))
    sparse_marks = torch.as_tensor(np.unique(per_cell[_sparse_cells(per_cell)]))
    is_target = torch.rand(batch, n, generator=generator).argsort(dim=1).argsort(dim=1) < n_targets
    sparse = torch.rand(batch, generator=generator) < fraction
    if len(eligible) and bool(sparse.any()):
        chosen = eligible[torch.randint(len(eligible), (batch,), generator=generator)]
        in_cell = cell_of[None, :] == chosen[:, None]
        n_marks = in_cell.sum(dim=1)
        if len(sparse_marks):  # as many marks as a cell type to impute has
            drawn = sparse_marks[torch.randint(len(sparse_marks), (batch,), generator=generator)]
            keep = torch.minimum(drawn, n_marks - 1)
        else:
            keep = (torch.rand(batch, generator=generator) * (n_marks - 1)).long() + 1
        scores = torch.where(in_cell, torch.rand(batch, n, generator=generator), 2.0)
        rank = scores.argsort(dim=1).argsort(dim=1)
        cell_targets = in_cell & (rank >= keep[:, None])
        is_target = torch.where(sparse[:, None], cell_targets, is_target)
    width = int(is_target.sum(dim=1).max())
    order = torch.sort((~is_target).to(torch.int8), dim=1, stable=True).indices[:, :width]
    weights = is_target.gather(1, order)
    # padding slots repeat the row's first target (weight 0) so they never unmask an input
    order = torch.where(weights, order, order[:, :1])
    return flat[order], weights.float()


def _tissue_targets(train_mask: np.ndarray, batch: int,
                    generator: torch.Generator) -> torch.Tensor:
    """All training tracks of one randomly chosen cell type (with at least one other input)."""
    n_assays = train_mask.shape[1]
    eligible = [c for c in range(train_mask.shape[0])
                if train_mask[c].any() and train_mask.sum() > train_mask[c].sum()]
    if not eligible:
        raise InvalidArgumentError("tissue masking needs observed tracks in at least two cell types")
    cell = eligible[int(torch.randint(len(eligible), (1,), generator=generator))]
    flat = torch.as_tensor(cell * n_assays + np.flatnonzero(train_mask[cell]))
    return flat.expand(batch, -1)


def _predict_block(model: EDICEModel, values: torch.Tensor, support: torch.Tensor,
                   target_cells: torch.Tensor, target_assays: torch.Tensor) -> torch.Tensor:
    """Predictions ``(B, T)`` for the same ``T`` targets at every bin of a block."""
    cells, cell_pos = torch.unique(target_cells, return_inverse=True)
    assays, assay_pos = torch.unique(target_assays, return_inverse=True)
    cell_emb, assay_emb = model.encode(values, support)
    c = cell_emb[:, cells][:, cell_pos]
    a = assay_emb[:, assays][:, assay_pos]
    return model.decoder(torch.cat([c, a], dim=-1))[..., 0]


def _predict_array(model: EDICEModel, values: np.ndarray, support: np.ndarray,
                   targets: Sequence[tuple[int, int]], *, device: torch.device,
                   batch_size: int) -> np.ndarray:
    """Predictions ``(len(targets), n_bins)`` for ``values`` ``(n_bins, n_cells, n_assays)``."""
    target_cells = torch.as_tensor([c for c, _ in targets], device=device)
    target_assays = torch.as_tensor([a for _, a in targets], device=device)
    mask = torch.as_tensor(support, device=device)
    out = np.empty((len(targets), values.shape[0]), dtype=np.float32)
    for start in range(0, values.shape[0], batch_size):
        block = torch.from_numpy(values[start:start + batch_size]).to(device)
        pred = _predict_block(model, block, mask.expand(len(block), -1, -1), target_cells,
                              target_assays)
        out[:, start:start + len(block)] = pred.T.float().cpu().numpy()
    return out


# --------------------------------------------------------------------------- training


def train_edice(  # noqa: PLR0913 - the paper's training settings
    model: EDICEModel,
    values: np.ndarray,
    train_mask: np.ndarray,
    config: EDICEConfig,
    *,
    masking: Literal["random", "tissue"] = "random",
    val_tracks: Sequence[tuple[int, int]] = (),
    val_tasks: Sequence[tuple[np.ndarray, Sequence[tuple[int, int]]]] = (),
    monitor: Literal["val_mse", "loss"] | None = None,
    epochs: int | None = None,
    lr: float | None = None,
    checkpoint_dir: str | None = None,
    resume: bool = True,
    device: torch.device | None = None,
    progress: bool | None = None,
    metadata: Mapping[str, Any] | None = None,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    bins: np.ndarray | None = None,
    val_bins: np.ndarray | None = None,
) -> Any:
    """Train an eDICE model by masked reconstruction with the shared training loop.

    Parameters
    ----------
    model
        The network, already on ``device``.
    values
        ``(n_bins, n_cells, n_assays)`` float32 arcsinh values, 0 where unobserved.
    train_mask
        ``(n_cells, n_assays)`` bool: the tracks that may serve as inputs and targets.
    config
        Hyperparameters (``batch_size``, ``n_targets``, ``train_bins``, ``val_bins``,
        ``patience``, ``seed``, ``grad_clip_norm``; ``lr`` and ``epochs`` unless given).
    masking
        ``"random"``: per bin, :func:`resolve_n_targets` random training tracks are targets
        (Roadmap). ``"tissue"``: per batch, every track of one random cell type is a target
        (ENTEx leave-one-tissue-out).
    val_tracks
        ``(cell, assay)`` index pairs of validation tracks (held out of ``train_mask``),
        predicted from all training tracks at :attr:`EDICEConfig.val_bins` bins after each
        epoch.
    val_tasks
        More validation problems, each a ``(support, targets)`` pair: an ``(n_cells, n_assays)``
        bool mask of the inputs and the ``(cell, assay)`` index pairs predicted from them (for
        example a training cell type reduced to the marks a sparsely profiled cell has; see
        :func:`sparse_cell_validation`). The validation MSE is the mean over ``val_tracks``
        (predicted from all training tracks) and these tasks, each weighted by its targets.
    monitor
        ``"val_mse"`` (the default with validation tracks) or ``"loss"`` (mean training loss,
        the ENTEx fine-tuning criterion). Early stopping with ``config.patience`` and the best
        weights apply to it.
    epochs, lr
        Override the config (fine-tuning uses a lower rate and fewer epochs).
    checkpoint_dir, resume
        Checkpoint every epoch there and continue from the latest one; the run is refused if
        the checkpoint was written for other data or settings.
    device
        Device of ``model`` (default: where its parameters are).
    progress
        tqdm bars (see :func:`analysislib.training.progress_enabled`).
    metadata
        Extra run description stored in checkpoints.
    bins, val_bins
        Row indices of ``values`` to train on and to validate on; by default random subsets of
        :attr:`EDICEConfig.train_bins` and :attr:`EDICEConfig.val_bins` rows.
    on_epoch_end
        Called with each epoch's history record.

    Returns
    -------
    analysislib.training.FitResult
        With the best weights (by ``monitor``) loaded into ``model``.
    """
    from analysislib.training import EarlyStopping, fit

    device = device if device is not None else next(model.parameters()).device
    train_mask = np.asarray(train_mask, dtype=bool)
    n_tracks = int(train_mask.sum())
    n_cells, n_assays = train_mask.shape
    if masking not in ("random", "tissue"):
        raise InvalidArgumentError(f"masking must be 'random' or 'tissue', got {masking!r}")
    n_targets = resolve_n_targets(config.n_targets, n_tracks) if masking == "random" else None
    flat_tracks = torch.as_tensor(np.flatnonzero(train_mask.ravel()))
    train_support = torch.as_tensor(train_mask, device=device)
    if bins is None:
        bins = _subset(values.shape[0], config.train_bins, config.seed, 1)
    if val_bins is None:
        val_bins = _subset(values.shape[0], config.val_bins, config.seed, 2)
    bins, val_bins = np.asarray(bins, dtype=np.int64), np.asarray(val_bins, dtype=np.int64)
    val_tracks = [(int(c), int(a)) for c, a in val_tracks]
    if any(train_mask[c, a] for c, a in val_tracks):
        raise InvalidArgumentError("validation tracks must not be training tracks")
    tasks = [(train_mask, val_tracks)] if val_tracks else []
    for support, task_targets in val_tasks:
        support = np.asarray(support, dtype=bool)
        task_targets = [(int(c), int(a)) for c, a in task_targets]
        if any(support[c, a] for c, a in task_targets):
            raise InvalidArgumentError("a validation task's targets must not be among its inputs")
        if (support & ~train_mask).any():
            raise InvalidArgumentError("a validation task's inputs must be training tracks")
        tasks.append((support, task_targets))
    validating = bool(tasks)
    monitor = monitor or ("val_mse" if validating else "loss")
    if monitor == "val_mse" and not validating:
        raise InvalidArgumentError("monitor='val_mse' needs validation tracks or tasks")
    val_values = values[val_bins]
    val_truths = [np.stack([val_values[:, c, a] for c, a in task_targets])
                  for _, task_targets in tasks]

    def make_loader(epoch: int, generator: torch.Generator) -> _BinBatches:
        return _BinBatches(values, bins, config.batch_size, generator)

    def train_step(net: EDICEModel, batch: torch.Tensor, ctx: Any) -> torch.Tensor:
        size = batch.shape[0]
        weights = None
        if masking == "tissue":
            targets = _tissue_targets(train_mask, size, ctx.generator)
        elif config.sparse_cell_fraction > 0:
            targets, weights = _sparse_cell_targets(train_mask, size, n_targets,
                                                    config.sparse_cell_fraction, ctx.generator)
            weights = weights.to(ctx.device)
        else:
            targets = _random_targets(flat_tracks, size, n_targets, ctx.generator)
        targets = targets.to(ctx.device)
        support = train_support.expand(size, -1, -1).reshape(size, -1).clone()
        support.scatter_(1, targets, False)
        truth = batch.reshape(size, -1).gather(1, targets)
        pred = net(batch, support.view(size, n_cells, n_assays), targets // n_assays,
                   targets % n_assays)
        if weights is None:
            return torch.mean((pred - truth) ** 2)
        return torch.sum(weights * (pred - truth) ** 2) / weights.sum()

    def val_mse(net: EDICEModel) -> float:
        squared, count = 0.0, 0
        for (support, task_targets), truth in zip(tasks, val_truths, strict=True):
            inputs = np.where(support[None], val_values, np.float32(0))
            pred = _predict_array(net, inputs, support, task_targets, device=device,
                                  batch_size=max(config.batch_size, 1024))
            squared += float(np.sum((pred.astype(np.float64) - truth) ** 2))
            count += truth.size
        return squared / count

    best: dict[str, Any] = {}

    def epoch_end(record: dict[str, Any]) -> None:
        if validating:
            if monitor == "val_mse":
                record["val_mse"] = record["metric"]
            else:
                was_training = model.training
                model.eval()
                with torch.no_grad():
                    record["val_mse"] = val_mse(model)
                model.train(was_training)
        if record.get("improved") and checkpoint_dir is None:
            best["state"] = copy.deepcopy(model.state_dict())
            best["epoch"] = record["epoch"]
        if on_epoch_end is not None:
            on_epoch_end(record)

    run = {"model": MODEL_NAME, "config": config.to_dict(), "masking": masking,
           "monitor": monitor, "lr": lr if lr is not None else config.lr,
           "train_mask": train_mask.astype(int).tolist(), "val_tracks": val_tracks,
           "val_tasks": [(support.astype(int).tolist(), t) for support, t in tasks[bool(val_tracks):]],
           "shape": list(values.shape), **dict(metadata or {})}
    if checkpoint_dir is not None and resume:
        _check_resume(checkpoint_dir, run)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr if lr is not None else config.lr)
    result = fit(
        model, optimizer, train_step, make_loader,
        epochs=config.epochs if epochs is None else epochs,
        seed=config.seed,
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        validate=(lambda net, epoch: val_mse(net)) if monitor == "val_mse" else None,
        early_stopping=EarlyStopping(patience=config.patience),
        grad_clip_norm=config.grad_clip_norm,
        keep_last=1,
        restore_best=True,
        metadata=run,
        on_epoch_end=epoch_end,
        progress=progress,
    )
    if best and best["epoch"] != result.epochs_completed:
        model.load_state_dict(best["state"])
    return result


def _check_resume(directory: str, run: Mapping[str, Any]) -> None:
    """Refuse to resume from a checkpoint written for other data or settings."""
    from analysislib.training import latest_checkpoint, read_checkpoint_header

    latest = latest_checkpoint(directory)
    if latest is None:
        return
    saved = read_checkpoint_header(latest).get("extra", {}).get("metadata", {})
    old, new = _jsonable(saved), _jsonable(run)
    changed = sorted(key for key in set(old) | set(new)
                     if key != "config" and old.get(key) != new.get(key))
    old_cfg, new_cfg = old.get("config", {}), new.get("config", {})
    changed += sorted(f"config.{key}" for key in set(old_cfg) | set(new_cfg)
                      if old_cfg.get(key) != new_cfg.get(key))
    if changed:
        raise CheckpointError(f"{latest}: checkpoint was written for other data or settings "
                              f"({', '.join(changed)}); use another checkpoint_dir or "
                              "resume=False")


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items() if k != "epochs"}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


# --------------------------------------------------------------------------- imputer


class EDICEImputer(EpigenomeImputer):
    """eDICE behind the :class:`~analysislib.epigenome.imputer.EpigenomeImputer` interface.

    Parameters
    ----------
    preset
        ``"paper"``, ``"entex"`` or ``"quick"`` (:data:`EDICE_PRESETS`).
    device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ... (:func:`analysislib.training.select_device`).
    chunk_bins
        Bins read from the input and predicted at a time, so genome-length (dask-backed) inputs
        stream through memory.
    checkpoint_dir, resume
        Checkpoint every epoch and continue an interrupted run.
    progress
        tqdm bars during training.
    config
        A complete :class:`EDICEConfig`; replaces ``preset`` and ``overrides``.
    **overrides
        :class:`EDICEConfig` fields replacing the preset's.

    Examples
    --------
    >>> imputer = EDICEImputer("quick", epochs=2)          # doctest: +SKIP
    >>> imputer.fit(hide_tracks(ds, [("cell001", "H3K27me3")]))  # doctest: +SKIP
    >>> imputer.predict([("cell001", "H3K27me3")])         # doctest: +SKIP
    """

    name = "edice"

    def __init__(self, preset: str = "quick", *, device: str = "auto", chunk_bins: int = 100_000,
                 checkpoint_dir: str | None = None, resume: bool = True,
                 progress: bool | None = None, config: EDICEConfig | None = None,
                 **overrides: Any) -> None:
        super().__init__()
        if config is not None and overrides:
            raise InvalidArgumentError("give either config or individual settings, not both")
        self.preset = preset if config is None else "custom"
        self.config = edice_config(preset, **overrides) if config is None else config
        if int(chunk_bins) != chunk_bins or chunk_bins < 1:
            raise InvalidArgumentError(f"chunk_bins must be a positive integer, got {chunk_bins!r}")
        self.chunk_bins = int(chunk_bins)
        self.device_preference = device
        self.checkpoint_dir, self.resume, self.progress = checkpoint_dir, resume, progress
        self.model: EDICEModel | None = None
        self.cells_: list[str] = []
        self.assays_: list[str] = []
        self.history: list[dict[str, Any]] = []
        self.fit_result: Any = None

    def _device(self) -> torch.device:
        from analysislib.training import select_device

        return select_device(self.device_preference)

    def build_model(self, cells: Sequence[str], assays: Sequence[str]) -> EDICEModel:
        """Create a freshly initialised model (seeded with ``config.seed``) for these nodes."""
        from analysislib.training import seed_everything

        seed_everything(self.config.seed)
        self.cells_, self.assays_ = [str(c) for c in cells], [str(a) for a in assays]
        self.model = EDICEModel(len(cells), len(assays), self.config).to(self._device())
        return self.model

    def fit(self, ds: xr.Dataset, *, val_tracks: Sequence[Track] = (),
            validation: Literal["auto", "none"] = "auto") -> EDICEImputer:
        """Train on the observed tracks of ``ds`` (any scale; converted to arcsinh).

        Parameters
        ----------
        ds
            Signal dataset ``(cell, assay, bin)``; its cells and assays become the model's
            node sets.
        val_tracks
            Observed tracks held out of training (the paper's validation split), predicted from
            all training tracks.
        validation
            ``"auto"``: when some cell type is profiled in fewer marks than the others (a new
            cell type to impute), also validate on :func:`sparse_cell_validation` problems:
            each fully profiled cell type reduced to the sparse cell type's marks, scored at
            :attr:`EDICEConfig.val_bins` bins outside the training bins. ``"none"``: only
            ``val_tracks``.

            With any validation, early stopping (``config.patience``) and the returned
            (best) weights follow the validation MSE, also across a resume; without, the
            training loss.

        Returns
        -------
        EDICEImputer
            ``self``, with :attr:`history` holding one record per epoch.
        """
        if validation not in ("auto", "none"):
            raise InvalidArgumentError(f"validation must be 'auto' or 'none', got {validation!r}")
        # Read only the bins that are trained or validated on (genome-length inputs may be lazy).
        n_bins = ds.sizes["bin"]
        train_bins = _subset(n_bins, self.config.train_bins, self.config.seed, 1)
        val_bins = _validation_bins(n_bins, train_bins, self.config.val_bins, self.config.seed)
        observed_all = np.asarray(ds["observed"].transpose("cell", "assay").values, dtype=bool)
        val_index = _track_index(ds, [(str(c), str(a)) for c, a in val_tracks], "validation")
        for c, a in val_index:
            if not observed_all[c, a]:
                raise InvalidArgumentError(f"validation track {ds['cell'].values[c]}."
                                 f"{ds['assay'].values[a]} is not observed")
        train_mask = observed_all.copy()
        for c, a in val_index:
            train_mask[c, a] = False
        val_tasks = sparse_cell_validation(train_mask) if validation == "auto" else []
        validating = bool(val_index or val_tasks)
        needed = np.union1d(train_bins, val_bins) if validating else train_bins
        values, _ = _dense_signal(ds.isel(bin=needed) if len(needed) < n_bins else ds, self.name)
        model = self.build_model(ds["cell"].values, ds["assay"].values)
        metadata = {"cells": self.cells_, "assays": self.assays_,
                    "data_sha256": array_checksum(values)}
        self.fit_result = train_edice(
            model, values, train_mask, self.config, val_tracks=val_index, val_tasks=val_tasks,
            bins=np.searchsorted(needed, train_bins),
            val_bins=np.searchsorted(needed, val_bins) if validating else np.arange(0),
            checkpoint_dir=self.checkpoint_dir, resume=self.resume, device=self._device(),
            progress=self.progress, metadata=metadata)
        self.history = list(self.fit_result.history)
        model.eval()
        self.training_data = to_arcsinh(ds)
        return self

    def parameters(self) -> dict[str, Any]:
        """Preset, hyperparameters and chunk size, for the results store."""
        return {"preset": self.preset, **self.config.to_dict(), "chunk_bins": self.chunk_bins}

    def _predict(self, observed: xr.Dataset, targets: list[Track]) -> np.ndarray:
        if self.model is None:
            raise NotFittedError("edice: call fit() before predict()")
        cell_id = {c: i for i, c in enumerate(self.cells_)}
        assay_id = {a: i for i, a in enumerate(self.assays_)}
        for cell, assay in targets:
            if cell not in cell_id or assay not in assay_id:
                raise InvalidArgumentError(
                    f"edice: cannot predict {cell}.{assay}: the model's cell types and assays "
                    f"are fixed at fit time (cells {self.cells_}, assays {self.assays_}); refit "
                    "on a dataset that includes them")
        target_index = [(cell_id[c], assay_id[a]) for c, a in targets]
        return self.predict_from(observed, target_index)

    def predict_from(self, observed: xr.Dataset,
                     target_index: Sequence[tuple[int, int]]) -> np.ndarray:
        """Predict targets given as model node indices from the tracks observed in ``observed``.

        Parameters
        ----------
        observed
            Arcsinh signal dataset; its observed tracks in the model's cells and assays are the
            inputs (targets excluded). Read ``chunk_bins`` bins at a time.
        target_index
            ``(cell, assay)`` positions in :attr:`cells_` / :attr:`assays_`.

        Returns
        -------
        numpy.ndarray
            ``(len(target_index), n_bins)`` float32 arcsinh predictions.
        """
        if self.model is None:
            raise NotFittedError("edice: call fit() before predict()")
        observed = to_arcsinh(observed)
        ds_cells = [str(c) for c in observed["cell"].values]
        ds_assays = [str(a) for a in observed["assay"].values]
        cell_id = {c: i for i, c in enumerate(self.cells_)}
        assay_id = {a: i for i, a in enumerate(self.assays_)}
        mask = np.asarray(observed["observed"].transpose("cell", "assay").values, dtype=bool)
        unknown = [f"{c}.{a}" for i, c in enumerate(ds_cells) for j, a in enumerate(ds_assays)
                   if mask[i, j] and (c not in cell_id or a not in assay_id)]
        if unknown:
            warnings.warn(f"edice: ignoring {len(unknown)} observed track(s) of cell types or "
                          f"assays the model was not fitted on: {unknown[:5]}", stacklevel=3)
        rows = [i for i, c in enumerate(ds_cells) if c in cell_id]
        cols = [j for j, a in enumerate(ds_assays) if a in assay_id]
        model_rows = [cell_id[ds_cells[i]] for i in rows]
        model_cols = [assay_id[ds_assays[j]] for j in cols]
        support = np.zeros((len(self.cells_), len(self.assays_)), dtype=bool)
        support[np.ix_(model_rows, model_cols)] = mask[np.ix_(rows, cols)]
        for c, a in target_index:
            support[c, a] = False
        device = next(self.model.parameters()).device
        n_bins = observed.sizes["bin"]
        out = np.empty((len(target_index), n_bins), dtype=np.float32)
        signal = observed["signal"].transpose("bin", "cell", "assay")
        from tqdm.auto import tqdm

        from analysislib.training import progress_enabled

        starts = range(0, n_bins, self.chunk_bins)
        show = progress_enabled(self.progress) and len(starts) > 1
        self.model.eval()
        with torch.no_grad():
            for start in tqdm(starts, desc="edice predict", unit="chunk", disable=not show):
                stop = min(start + self.chunk_bins, n_bins)
                chunk = np.asarray(signal.isel(bin=slice(start, stop)).values, dtype=np.float32)
                values = np.zeros((stop - start, len(self.cells_), len(self.assays_)),
                                  dtype=np.float32)
                values[:, np.array(model_rows)[:, None], np.array(model_cols)[None, :]] = (
                    chunk[:, rows][:, :, cols])
                values = np.where(support[None], values, np.float32(0))
                if not np.isfinite(values).all():
                    b = int(np.argwhere(~np.isfinite(values))[0][0])
                    raise InvalidArgumentError(f"edice: an observed input track has a non-finite value at "
                                     f"bin {start + b}")
                out[:, start:stop] = _predict_array(self.model, values, support, target_index,
                                                    device=device,
                                                    batch_size=max(self.config.batch_size, 1024))
        return out
