"""PREDICTD-style and Avocado-style tensor-factorisation baselines of eDICE (re-implemented).

Both baselines are **re-implementations** in torch (neither PREDICTD, a PySpark program, nor
Avocado, a Keras/Theano package, has an installable form that runs here). They follow the
papers and the authors' code (``tdurham86/PREDICTD``, ``jmschrei/avocado``) and the eDICE paper's
Methods ("Baselines"). Values are arcsinh throughout, like every imputer in
:mod:`analysislib.epigenome.imputer`.

**PREDICTD** (Durham et al. 2018; ``tdurham86/PREDICTD``, ``predictd_lib.py``): a 3-D CP
factorisation with biases,

    ŷ[c, a, g] = Σ_f C[c, f] A[a, f] G[g, f] + b_c[c] + b_a[a] + b_g[g] + mean.

The biases start from data means (``calc_dim_bias``: the global mean of the observed training
entries, then each cell type's, assay's and bin's mean deviation from it; the validation entries
are left out of these means, otherwise a bin's initial bias already averages its held-out values
and no trained state can beat the initial validation MSE), the factors from
U(−0.33, 0.33). Training is Adam (β = 0.9, 0.999, ε = 1e-8) on minibatches of observed entries
of a random ``training_fraction`` of the bins; each entry contributes its squared error plus the
L2 penalties of the factor rows it touches, ``rc·|C_c|² + ra·|A_a|² + ri·|G_g|²`` (the per-sample
SGD objective of the original; bias penalties are 0 there). Then, as in PREDICTD's final pass,
the genome factors of **every** bin are refitted in closed form with C and A fixed: a ridge
regression per bin of the observed tracks' residuals on the rows ``C_c ∘ A_a``
(λ = ``ri2`` = 2.9), the genome bias entering as an unpenalised intercept. Predictions therefore
work on any bins, streamed in chunks. Training stops by PREDICTD's rule (``predictd_lib.py``):
a validation MSE on held-out entries every ``mse_every`` minibatches, a one-sided Wilcoxon
rank-sum test between two windows of it (:func:`wilcoxon_converged`), learning-rate searches on
convergence, and a ``max_epochs`` cap; the factors of the lowest validation MSE are kept.
Neither stopping rule applies before ``min_epochs`` passes over the training entries: PREDICTD
evaluates every ``iters_per_mse`` parallel iterations of 5,000 SGD steps each, and our
minibatch-sized evaluations alone would let the rules fire before the genome rows had moved. As in
PREDICTD's ``train_bags.py`` (``tdurham86/PREDICTD``), ``n_bags`` models (8 there), each with
its own validation entries and initialisation seed, are trained and their imputed tracks
averaged. Left out: the burn-in.

**Avocado** (Schreiber et al. 2020; ``jmschrei/avocado``, ``model.py``): learned embeddings of
the cell type (32), assay (256) and genomic position at three resolutions (25 bp: 25 factors;
250 bp: 40; 5 kbp: 45) are concatenated and passed through ``n_layers`` × ``Dense(n_nodes,
relu)`` and a linear ``Dense(1)``, trained with MSE and Adam (Keras defaults, lr 1e-3). Each
training example is a random position paired with a random training track (the ``"random"``
(permuted) generator; an epoch is ``epoch_size`` batches, or one pass over the bins when
``None``). Embeddings use Keras's U(−0.05, 0.05) initialiser and dense layers Glorot-uniform.
Genome embeddings exist only for the fitted bins: to predict on other bins (another chromosome),
the network, cell and assay embeddings are frozen and new genome embeddings are fitted on the
tracks observed there (``genome_epochs``), the two-stage scheme the eDICE authors used to
retrain Avocado on their split (paper Methods; maintainer's advice in Avocado issue #7).

**New cell types** (two stages). A cell type observed in few assays (:func:`select_new_cells`:
at most half as many as the best-observed one, or ``fit(ds, new_cells=[...])``) is left out of
stage 1, which trains the whole model on the reference cell types; stage 2 (``fit_celltypes``)
fits only its own parameters with the genome and assay factors and the network frozen
(bit-identical): Avocado's ``fit_celltypes`` (Schreiber et al. 2020 Genome Biol), trained for
``celltype_epochs``; for PREDICTD the cell factor row and cell bias, the exact ridge minimiser of
PREDICTD's per-entry objective with everything else fixed (Durham et al. 2018 Nat Commun; the
authors' ``new_ct_demo.sh`` instead retrains the whole model with the new data added). When every
cell type is equally observed there is no stage 2 and the fit is the joint one.

Both models learn from every track observed at fit time; a target that was observed then has
informed the shared factors, so hide evaluation tracks before :meth:`fit` (a warning says so).
Their node sets (cell types, assays) are fixed at fit time; other targets raise ``ValueError``.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import nn

from analysislib.epigenome.edice import _dense_signal, _subset
from analysislib.epigenome.imputer import EpigenomeImputer
from analysislib.epigenome.tensor import to_arcsinh
from analysislib.errors import InvalidArgumentError, NotFittedError
from analysislib.presets import Presets

__all__ = [
    "AVOCADO_PRESETS",
    "PREDICTD_PRESETS",
    "AvocadoConfig",
    "AvocadoImputer",
    "AvocadoModel",
    "PredictdConfig",
    "PredictdImputer",
    "PredictdModel",
    "avocado_config",
    "predictd_config",
    "ridge_genome_factors",
    "select_new_cells",
    "wilcoxon_converged",
]

Track = tuple[str, str]


def _positive(obj: Any, names: Sequence[str], what: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value is not None and not value > 0:
            raise InvalidArgumentError(f"{what} {name} must be positive, got {value!r}")


def _node_index(imputer: Any, targets: Sequence[Track]) -> list[tuple[int, int]]:
    cell_id = {c: i for i, c in enumerate(imputer.cells_)}
    assay_id = {a: i for i, a in enumerate(imputer.assays_)}
    out = []
    for cell, assay in targets:
        if cell not in cell_id or assay not in assay_id:
            raise InvalidArgumentError(
                f"{imputer.name}: cannot predict {cell}.{assay}: the model's cell types and "
                f"assays are fixed at fit time (cells {imputer.cells_}, assays "
                f"{imputer.assays_}); refit on a dataset that includes them")
        out.append((cell_id[cell], assay_id[assay]))
    trained = [f"{imputer.cells_[c]}.{imputer.assays_[a]}" for c, a in out
               if imputer.train_mask_[c, a]]
    if trained:
        warnings.warn(f"{imputer.name}: target(s) {trained[:5]} were observed at fit time and "
                      "informed the shared factors; hide them before fit() for an honest "
                      "evaluation", stacklevel=4)
    return out


def _observed_inputs(imputer: Any, observed: xr.Dataset, exclude: Sequence[tuple[int, int]]
                     ) -> tuple[xr.DataArray, list[int], list[int], np.ndarray]:
    """Signal ``(bin, cell, assay)``, model/dataset index maps and the usable input mask."""
    ds_cells = [str(c) for c in observed["cell"].values]
    ds_assays = [str(a) for a in observed["assay"].values]
    cell_id = {c: i for i, c in enumerate(imputer.cells_)}
    assay_id = {a: i for i, a in enumerate(imputer.assays_)}
    mask = np.asarray(observed["observed"].transpose("cell", "assay").values, dtype=bool)
    rows = [i for i, c in enumerate(ds_cells) if c in cell_id]
    cols = [j for j, a in enumerate(ds_assays) if a in assay_id]
    support = np.zeros((len(imputer.cells_), len(imputer.assays_)), dtype=bool)
    model_rows = [cell_id[ds_cells[i]] for i in rows]
    model_cols = [assay_id[ds_assays[j]] for j in cols]
    support[np.ix_(model_rows, model_cols)] = mask[np.ix_(rows, cols)]
    for c, a in exclude:
        support[c, a] = False
    signal = observed["signal"].transpose("bin", "cell", "assay")
    signal = signal.isel(cell=rows, assay=cols)
    return signal, model_rows, model_cols, support


def _chunk_values(signal: xr.DataArray, start: int, stop: int, *, shape: tuple[int, int],
                  model_rows: list[int], model_cols: list[int], support: np.ndarray,
                  method: str) -> np.ndarray:
    chunk = np.asarray(signal.isel(bin=slice(start, stop)).values, dtype=np.float32)
    values = np.zeros((stop - start, *shape), dtype=np.float32)
    values[:, np.array(model_rows, dtype=int)[:, None], np.array(model_cols, dtype=int)[None]] = (
        chunk)
    values = np.where(support[None], values, np.float32(0))
    if not np.isfinite(values).all():
        b = int(np.argwhere(~np.isfinite(values))[0][0])
        raise InvalidArgumentError(f"{method}: an observed input track has a non-finite value at bin "
                         f"{start + b}")
    return values


class _EntryBatches:
    """Minibatches of observed entries ``(bin position, cell, assay, value)`` in random order."""

    def __init__(self, entries: tuple[np.ndarray, ...], batch_size: int,
                 generator: torch.Generator) -> None:
        self.entries, self.batch_size = entries, batch_size
        self.order = torch.randperm(len(entries[0]), generator=generator).numpy()

    def __len__(self) -> int:
        return math.ceil(len(self.order) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        for start in range(0, len(self.order), self.batch_size):
            idx = self.order[start:start + self.batch_size]
            yield tuple(torch.from_numpy(np.ascontiguousarray(e[idx])) for e in self.entries)


def _observed_entries(values: np.ndarray, mask: np.ndarray,
                      bins: np.ndarray) -> tuple[np.ndarray, ...]:
    """Flattened observed entries of ``values[bins]``: local bin index, cell, assay, value."""
    cells, assays = np.nonzero(mask)
    local = np.repeat(np.arange(len(bins)), len(cells))
    c = np.tile(cells, len(bins))
    a = np.tile(assays, len(bins))
    y = values[bins][:, cells, assays].reshape(-1)
    return local.astype(np.int64), c.astype(np.int64), a.astype(np.int64), y.astype(np.float32)


# =========================================================================== PREDICTD


@dataclass(frozen=True)
class PredictdConfig:
    """Hyperparameters of the PREDICTD-style factorisation (``train_model.py`` defaults).

    Attributes
    ----------
    n_factors
        Latent factors F (100).
    lr
        Adam learning rate (0.005).
    batch_size
        Observed entries per minibatch (PREDICTD's 5000 SGD steps per parallel iteration).
    rc, ra, ri
        L2 penalties of the cell, assay and genome factor rows (3.66, 1.23e-7, 1.23e-5).
    ri2
        Ridge penalty of the final closed-form genome-factor refit (2.9).
    training_fraction
        Share of the bins trained on (0.01 of the genome).
    min_training_bins, max_training_bins
        Bounds on the bins trained on (``None``: no upper bound), for short and long inputs.
    validation_fraction
        Share of the observed training entries held out to compute the validation MSE of the
        convergence test (our choice: PREDICTD holds out entries per bin, ``make_random_subsets``).
    mse_every
        Minibatches between validation-MSE evaluations (PREDICTD: ``iters_per_mse`` = 3).
    win_size, win_spacing, win2_shift, stop_pval
        The Wilcoxon convergence test (``--stop_winsize`` 15, ``--stop_winspacing`` 5,
        ``--stop_win2shift`` 1e-5, ``--stop_pval`` 0.05): see :func:`wilcoxon_converged`.
    min_evaluations
        Validation evaluations before the test is applied (``--min_iters`` 50).
    min_epochs
        Passes over the training entries before either stopping rule applies (our guard).
        PREDICTD's ``--min_iters`` counts parallel iterations of 5,000 SGD steps each; counted
        in our minibatch-sized evaluations alone, the rules could fire before every genome row
        had been updated a few times, and on long windows they did (:data:`PREDICTD_PRESETS`).
    lrate_search_num
        On convergence, restore the best factors, halve the learning rate and set
        β1 ← β1 − (1 − β1), this many times before stopping (``--lrate_search_num`` 3).
    max_epochs
        Cap on the passes over the training entries (the run stops earlier on convergence).
    n_bags
        Models trained and averaged (8): ``tdurham86/PREDICTD`` ``train_bags.py`` trains one
        model per validation fold (``num_folds = 8``), each with its own validation entries and
        factor initialisation seed, and averages their imputed tracks (``impute_and_avg``; its
        docstring: "The results of PREDICTD are improved by averaging the imputed data from
        multiple models"). Bag 0 is the single model of ``n_bags=1`` (same seeds).
    seed
        Seed of initialisation, bin subset, validation split and data order.
    """

    n_factors: int = 100
    lr: float = 0.005
    batch_size: int = 5000
    rc: float = 3.66
    ra: float = 1.23e-7
    ri: float = 1.23e-5
    ri2: float = 2.9
    training_fraction: float = 0.01
    min_training_bins: int = 1000
    max_training_bins: int | None = None
    validation_fraction: float = 0.1
    mse_every: int = 3
    win_size: int = 15
    win_spacing: int = 5
    win2_shift: float = 1e-5
    stop_pval: float = 0.05
    min_evaluations: int = 50
    min_epochs: int = 1
    lrate_search_num: int = 3
    max_epochs: int = 200
    n_bags: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        _positive(self, ("n_factors", "lr", "batch_size", "training_fraction", "n_bags",
                         "min_training_bins", "mse_every", "win_size", "stop_pval"), "PREDICTD")
        if min(self.rc, self.ra, self.ri, self.ri2) < 0:
            raise InvalidArgumentError("PREDICTD penalties rc, ra, ri, ri2 must be >= 0")
        if self.max_training_bins is not None and self.max_training_bins < self.min_training_bins:
            raise InvalidArgumentError("PREDICTD max_training_bins must be None or >= min_training_bins")
        if not self.training_fraction <= 1:
            raise InvalidArgumentError("PREDICTD training_fraction must be in (0, 1]")
        if not 0 < self.validation_fraction < 1:
            raise InvalidArgumentError("PREDICTD validation_fraction must be in (0, 1)")
        for name in ("max_epochs", "win_spacing", "min_evaluations", "min_epochs",
                     "lrate_search_num", "n_bags"):
            value = getattr(self, name)
            if int(value) != value or value < 0:
                raise InvalidArgumentError(f"PREDICTD {name} must be a non-negative integer, got {value!r}")

    def training_bins(self, n_bins: int) -> int:
        """How many of ``n_bins`` bins the factorisation trains on."""
        size = max(self.min_training_bins, round(self.training_fraction * n_bins))
        if self.max_training_bins is not None:
            size = min(size, self.max_training_bins)
        return min(n_bins, size)


#: ``paper``: PREDICTD's defaults; ``quick``: 16 factors on 10 % of the bins, validation every
#: 5 minibatches of 2000 entries, the paper's test windows and one learning-rate search, at most
#: 20 epochs (same code path). Retuned for a 4-cell tensor and a few hundred steps: lr 0.05
#: (the genome rows get few updates per epoch), rc 0.01 (at 3.66 the closed-form new-cell row
#: is shrunk to 0) and ri2 0.1 (with ~16 input tracks per bin a larger ridge shrinks the
#: refitted genome rows towards 0: new-cell mean Pearson on Roadmap E003/E017/E065/E116,
#: 100k bins, one H3K4me3 input, 0.38 at 0.1, 0.32 at 1, 0.26 at 2.9). 4 bags instead of
#: ``train_bags.py``'s 8 (new-cell mean Pearson on the 40k-bin window, seed 0, kept H3K4me3 /
#: H3K4me3+H3K27me3, AVG 0.399 / 0.482: 1 bag 0.299 / 0.463, 4 bags 0.351 / 0.467, 8 bags
#: 0.348 / 0.467; ``benchmarks/epigenome_accuracy.py --bins 100000``, seeds 0-2, AVG 0.407 /
#: 0.442: 1 bag 0.371 / 0.404, 4 bags 0.380 / 0.422). At most 10,000 training bins, and no
#: stopping before 5 passes: on the first 400,000 bins, 10 % of the bins (40,000) gave genome rows
#: so few updates that the validation MSE was still above its starting value when the stopping
#: rules fired (after less than one pass), so every bag kept its initial factors (mean Pearson
#: over folds E003 and E116, kept H3K4me3 / H3K4me3+H3K27me3, 0.232 / 0.216; AVG 0.393 / 0.378);
#: 5 passes first gave 0.336 / 0.319, and 10,000 bins 0.373 / 0.351.
PREDICTD_PRESETS: Presets[dict[str, Any]] = Presets("PREDICTD", {
    "paper": {},
    "quick": {"n_factors": 16, "training_fraction": 0.1, "min_training_bins": 1000,
              "max_training_bins": 10_000, "min_epochs": 5,
              "batch_size": 2000, "mse_every": 5, "min_evaluations": 35,
              "lrate_search_num": 1, "max_epochs": 20, "lr": 0.05, "rc": 0.01, "ri2": 0.1,
              "n_bags": 4},
}, aliases={"full": "paper"}, fields={f.name for f in fields(PredictdConfig)})


def predictd_config(preset: str = "paper", **overrides: Any) -> PredictdConfig:
    """Build a :class:`PredictdConfig` from a preset (:data:`PREDICTD_PRESETS`) and overrides."""
    return PredictdConfig(**PREDICTD_PRESETS.resolve(preset, **overrides))


def wilcoxon_converged(errors: Sequence[float], win_size: int = 15, win_spacing: int = 5,
                       win2_shift: float = 1e-5, pval: float = 0.05) -> bool:
    """PREDICTD's convergence test on a sequence of validation MSEs (``predictd_lib.py``).

    Two windows of ``win_size`` evaluations are compared, the latest one and the one ending
    ``win_spacing`` evaluations before it, by a one-sided Wilcoxon rank-sum test
    (:func:`scipy.stats.ranksums`) of ``earlier`` against ``latest + win2_shift``: the model has
    converged when the earlier window is significantly lower (statistic < 0 and one-sided
    p = p₂/2 < ``pval``), i.e. the latest window shows no improvement over it. While the error
    still falls the statistic is positive and training continues. Fewer than
    ``2 * win_size + win_spacing`` errors never count as converged.
    """
    from scipy.stats import ranksums

    errors = np.asarray(errors, dtype=np.float64)
    need = 2 * win_size + win_spacing
    if len(errors) < need:
        return False
    earlier = errors[len(errors) - need:len(errors) - need + win_size]
    latest = errors[len(errors) - win_size:]
    statistic, p = ranksums(earlier, latest + win2_shift)
    return bool(statistic < 0 and p / 2 < pval)


def select_new_cells(mask: np.ndarray, cells: Sequence[str], new_cells: Sequence[str] | None,
                     method: str) -> np.ndarray:
    """Which cell types are fitted as *new* ones (stage 2), as a boolean vector over ``cells``.

    ``new_cells=None`` applies the rule: a cell type is new when it is observed in fewer assays
    than the best-observed cell type **and** in at most half as many (a cell type seen in 1 or 2
    of 5 marks beside fully observed references; one hidden track per cell, as in a
    cross-validation split, keeps every cell in the joint fit, as before). When every cell type
    is equally observed none is new. A list names them explicitly (``[]``: none, joint fit).
    """
    counts = mask.sum(1)
    if new_cells is None:
        best = counts.max() if len(counts) else 0
        new = (counts < best) & (2 * counts <= best)
    else:
        index = {c: i for i, c in enumerate(cells)}
        unknown = [c for c in new_cells if str(c) not in index]
        if unknown:
            raise InvalidArgumentError(f"{method}: new_cells {unknown} are not cell types of the dataset "
                             f"({list(cells)})")
        new = np.zeros(len(cells), dtype=bool)
        new[[index[str(c)] for c in new_cells]] = True
    if not (mask & ~new[:, None]).any():
        raise InvalidArgumentError(f"{method}: no reference cell type with an observed track is left once "
                         f"the new cell types {[c for c, n in zip(cells, new, strict=True) if n]} are set "
                         "aside")
    return new


class PredictdModel(nn.Module):
    """CP factors and biases of PREDICTD over the training bins.

    Parameters
    ----------
    n_cells, n_assays, n_bins, n_factors
        Tensor and factor sizes.
    """

    def __init__(self, n_cells: int, n_assays: int, n_bins: int, n_factors: int) -> None:
        super().__init__()
        self.cell = nn.Parameter(torch.empty(n_cells, n_factors).uniform_(-0.33, 0.33))
        self.assay = nn.Parameter(torch.empty(n_assays, n_factors).uniform_(-0.33, 0.33))
        self.genome = nn.Parameter(torch.empty(n_bins, n_factors).uniform_(-0.33, 0.33))
        self.cell_bias = nn.Parameter(torch.zeros(n_cells))
        self.assay_bias = nn.Parameter(torch.zeros(n_assays))
        self.genome_bias = nn.Parameter(torch.zeros(n_bins))
        self.register_buffer("mean", torch.zeros(()))

    def init_biases(self, values: np.ndarray, mask: np.ndarray,
                    held_out: np.ndarray | None = None) -> None:
        """Biases from data means (``calc_dim_bias``) of ``values`` ``(bins, cells, assays)``.

        Only the observed entries (``mask``) not in ``held_out`` (a boolean ``(bins, cells,
        assays)`` array, the validation entries) are averaged, so that the initial genome
        biases do not already contain the validation values (a bin's bias would otherwise be
        the mean of its held-out entries too, and the initial state would look better on the
        validation set than any trained one can honestly be).
        """
        keep = np.broadcast_to(mask[None], values.shape)
        if held_out is not None:
            keep = keep & ~held_out
        obs = np.where(keep, values.astype(np.float64), np.nan)
        mean = float(obs[keep].mean())
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            cell_bias = np.nan_to_num(np.nanmean(obs, axis=(0, 2)) - mean)
            assay_bias = np.nan_to_num(np.nanmean(obs, axis=(0, 1)) - mean)
            genome_bias = np.nan_to_num(np.nanmean(obs, axis=(1, 2)) - mean)
        with torch.no_grad():
            self.mean.fill_(mean)
            self.cell_bias.copy_(torch.as_tensor(cell_bias))
            self.assay_bias.copy_(torch.as_tensor(assay_bias))
            self.genome_bias.copy_(torch.as_tensor(genome_bias))

    def forward(self, g: torch.Tensor, c: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Predictions for entries at training-bin positions ``g``, cells ``c``, assays ``a``."""
        return ((self.cell[c] * self.assay[a] * self.genome[g]).sum(-1) + self.cell_bias[c]
                + self.assay_bias[a] + self.genome_bias[g] + self.mean)


def ridge_genome_factors(residual: np.ndarray, design: np.ndarray,
                         penalty: float) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form genome factors and biases per bin with the cell and assay factors fixed.

    For every bin ``g`` solves ``min Σ_t (r[g, t] − b_g − X[t]·G_g)² + penalty·|G_g|²`` with an
    unpenalised intercept ``b_g``, where ``X[t] = C_c ∘ A_a`` for input track ``t``.

    Parameters
    ----------
    residual
        ``(n_bins, n_tracks)``: observed values minus cell bias, assay bias and global mean.
    design
        ``(n_tracks, n_factors)``: the rows ``C_c ∘ A_a`` of the input tracks.
    penalty
        Ridge λ (PREDICTD's ``ri2``).

    Returns
    -------
    factors, bias
        ``(n_bins, n_factors)`` and ``(n_bins,)``.
    """
    n_tracks, n_factors = design.shape
    if n_tracks == 0:
        raise InvalidArgumentError("PREDICTD needs at least one observed input track to refit the genome "
                         "factors")
    # Centre to absorb the unpenalised intercept, then ridge on the centred design.
    x_mean = design.mean(0)
    xc = design - x_mean
    gram = xc.T @ xc + penalty * np.eye(n_factors)
    r_mean = residual.mean(1, keepdims=True)
    factors = np.linalg.solve(gram, xc.T @ (residual - r_mean).T).T
    bias = r_mean[:, 0] - factors @ x_mean
    return factors, bias


class PredictdImputer(EpigenomeImputer):
    """PREDICTD-style CP factorisation (re-implemented; see the module docstring).

    Parameters
    ----------
    preset
        ``"paper"`` or ``"quick"`` (:data:`PREDICTD_PRESETS`).
    device
        Torch device preference (:func:`analysislib.training.select_device`).
    chunk_bins
        Bins refitted and predicted at a time.
    progress
        tqdm bars during training.
    **overrides
        :class:`PredictdConfig` fields.
    """

    name = "predictd"

    def __init__(self, preset: str = "quick", *, device: str = "auto", chunk_bins: int = 200_000,
                 progress: bool | None = None, **overrides: Any) -> None:
        super().__init__()
        self.preset = preset
        self.config = predictd_config(preset, **overrides)
        self.device_preference, self.chunk_bins, self.progress = device, int(chunk_bins), progress
        self.model: PredictdModel | None = None
        self.models_: list[PredictdModel] = []  # the bags; ``model`` is bag 0
        self.cells_: list[str] = []
        self.assays_: list[str] = []
        self.train_mask_ = np.zeros((0, 0), dtype=bool)
        self.history: list[dict[str, Any]] = []
        self.validation_mse_: list[float] = []
        self.stop_reason_ = ""
        self.new_cells_: list[str] = []

    def parameters(self) -> dict[str, Any]:
        """Preset and hyperparameters, for the results store."""
        return {"preset": self.preset, **asdict(self.config)}

    def fit(self, ds: xr.Dataset, new_cells: Sequence[str] | None = None) -> PredictdImputer:
        """Two-stage fit on a random share of the bins of ``ds``.

        Stage 1 trains all factors and biases on the reference cell types' observed tracks
        until the Wilcoxon convergence test (:func:`wilcoxon_converged`) or ``max_epochs``,
        keeping the factors of the lowest validation MSE; stage 2 (:meth:`fit_celltypes`) fits
        each new cell type's factor row and bias with everything else frozen.

        Parameters
        ----------
        ds
            Signal dataset (any scale).
        new_cells
            Cell types to fit in stage 2; ``None`` applies :func:`select_new_cells`' rule (cell
            types observed in at most half as many assays as the best-observed one), ``[]``
            fits every cell type jointly.
        """
        from analysislib.training import seed_everything, select_device

        cfg = self.config
        n_bins = ds.sizes["bin"]
        size = cfg.training_bins(n_bins)
        # Only the training bins are read (genome-length inputs may be lazy).
        values, mask = _dense_signal(ds.isel(bin=_subset(n_bins, size, cfg.seed, 3)), self.name)
        if mask.sum() < 2:
            raise InvalidArgumentError("predictd: needs at least 2 observed tracks")
        cells = [str(c) for c in ds["cell"].values]
        new = select_new_cells(mask, cells, new_cells, self.name)
        reference = mask & ~new[:, None]
        bins = np.arange(values.shape[0])
        device = select_device(self.device_preference)
        entries = _observed_entries(values, reference, bins)
        # train_bags.py: each bag has its own validation fold and factor-initialisation seed
        # (drawn from the run's seed); the bins trained on are shared.
        bag_seeds = [cfg.seed, *np.random.default_rng([cfg.seed, 6]).integers(
            2**31 - 1, size=cfg.n_bags - 1).tolist()]
        self.models_, self.bag_histories_ = [], []
        for bag, bag_seed in enumerate(bag_seeds):
            seed_everything(bag_seed)
            model = PredictdModel(mask.shape[0], mask.shape[1], len(bins), cfg.n_factors)
            stream = [cfg.seed, 5] if bag == 0 else [cfg.seed, 5, bag]
            held_out = np.random.default_rng(stream).random(len(entries[0])) < (
                cfg.validation_fraction)
            if held_out.all() or not held_out.any():
                held_out[:] = False
                held_out[bag % max(2, round(1 / cfg.validation_fraction))::
                         max(2, round(1 / cfg.validation_fraction))] = True
            held_out_cube = np.zeros(values.shape, dtype=bool)
            held_out_cube[entries[0][held_out], entries[1][held_out],
                          entries[2][held_out]] = True
            model.init_biases(values[bins], reference, held_out_cube)
            model.to(device)
            train = tuple(e[~held_out] for e in entries)
            valid = tuple(torch.from_numpy(np.ascontiguousarray(e[held_out])).to(device)
                          for e in entries)
            result = self._train(model, train, valid, bag_seed)
            self.models_.append(model.eval())
            self.bag_histories_.append(result)
        self.model = self.models_[0]
        self.history, self.validation_mse_, self.stop_reason_ = self.bag_histories_[0]
        self.cells_ = cells
        self.assays_ = [str(a) for a in ds["assay"].values]
        self.train_mask_ = mask
        self.new_cells_ = []
        self._values, self._mask = values, mask
        try:
            if new.any():
                self.fit_celltypes([c for c, n in zip(cells, new, strict=True) if n])
        finally:
            del self._values, self._mask
        self.training_data = to_arcsinh(ds)
        return self

    def _train(self, model: PredictdModel, train: tuple[np.ndarray, ...],
               valid: tuple[torch.Tensor, ...], seed: int
               ) -> tuple[list[dict[str, Any]], list[float], str]:
        """Adam on minibatches of ``train`` entries until PREDICTD's stopping rules fire.

        Every ``mse_every`` minibatches the MSE on the held-out ``valid`` entries is recorded.
        Training stops when (as in ``predictd_lib.py``) the validation MSE has not reached a new
        minimum for ``2 * win_size + win_spacing`` evaluations, or :func:`wilcoxon_converged`
        holds (after ``min_evaluations``) and no learning-rate search is left, or after
        ``max_epochs``. A search restores the best state, halves the learning rate and sets
        β1 ← β1 − (1 − β1); the test then runs on the errors up to the best one followed by
        those since the restart. The factors of the lowest validation MSE are kept.
        """
        cfg = self.config
        generator = torch.Generator().manual_seed(seed)
        lr, beta1 = cfg.lr, 0.9
        optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=(beta1, 0.999), eps=1e-8)

        def validation_mse() -> float:
            with torch.no_grad():
                g, c, a, y = valid
                return float(((model(g, c, a) - y) ** 2).mean())

        def snapshot() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
            return ({k: v.detach().clone() for k, v in model.state_dict().items()},
                    copy.deepcopy(optimizer.state_dict()))

        errors = [validation_mse()]
        best_error, best_index, best_state = errors[0], 0, snapshot()
        tested: list[float] = list(errors)  # the sequence the Wilcoxon test runs on
        restart_index, searches, step = 0, cfg.lrate_search_num, 0
        history: list[dict[str, Any]] = []
        reason = "max_epochs"
        device = next(model.parameters()).device
        for epoch in range(cfg.max_epochs):
            losses: list[float] = []
            stop = False
            for batch in _EntryBatches(train, cfg.batch_size, generator):
                g, c, a, y = (t.to(device) for t in batch)
                error = ((model(g, c, a) - y) ** 2).mean()
                penalty = (cfg.rc * (model.cell[c] ** 2).sum(-1)
                           + cfg.ra * (model.assay[a] ** 2).sum(-1)
                           + cfg.ri * (model.genome[g] ** 2).sum(-1)).mean()
                loss = error + penalty
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(float(error.detach()))
                step += 1
                if step % cfg.mse_every:
                    continue
                current = validation_mse()
                if not math.isfinite(current):
                    reason, stop = "nonfinite", True
                    break
                errors.append(current)
                tested.append(current)
                if current < best_error:
                    best_error, best_index, best_state = current, len(errors) - 1, snapshot()
                if epoch < cfg.min_epochs:  # the rules wait for min_epochs whole passes
                    continue
                window = 2 * cfg.win_size + cfg.win_spacing
                if (len(errors) > cfg.min_evaluations
                        and len(errors) - 1 - max(best_index, restart_index) > window):
                    reason, stop = "no_new_minimum", True
                    break
                if (len(errors) > cfg.min_evaluations
                        and len(errors) - 1 - restart_index > cfg.win_size
                        and wilcoxon_converged(tested, cfg.win_size, cfg.win_spacing,
                                               cfg.win2_shift, cfg.stop_pval)):
                    if not searches:
                        reason, stop = "wilcoxon", True
                        break
                    searches -= 1
                    lr, beta1 = lr / 2, beta1 - (1 - beta1)
                    model.load_state_dict(best_state[0])
                    optimizer.load_state_dict(best_state[1])
                    for group in optimizer.param_groups:
                        group["lr"], group["betas"] = lr, (beta1, group["betas"][1])
                    tested = errors[:best_index + 1]
                    restart_index = len(errors) - 1
            history.append({"epoch": epoch, "loss": float(np.mean(losses)) if losses else math.nan,
                            "valid_mse": errors[-1], "lr": lr, "steps": step})
            if stop:
                break
        model.load_state_dict(best_state[0])
        return history, errors, reason

    def fit_celltypes(self, cells: Sequence[str], ds: xr.Dataset | None = None
                      ) -> PredictdImputer:
        """Stage 2: fit the factor row and bias of each of ``cells`` with all else frozen.

        With the genome factors of the training bins, the assay factors, the assay and genome
        biases and the global mean fixed, PREDICTD's per-entry objective for a cell type ``c``,
        mean over its observed entries of ``(y − ŷ)² + rc·|C_c|²`` (the bias unpenalised,
        ``rbc`` = 0), is a ridge regression in ``(C_c, b_c)``; it is solved in closed form
        (:func:`ridge_genome_factors` with the roles of cells and bins swapped, λ = ``rc`` × the
        number of entries), the exact minimiser SGD would approach. Nothing else changes.

        Parameters
        ----------
        cells
            Cell types of the fitted model.
        ds
            Signal dataset to read their observed tracks from; by default the one given to
            :meth:`fit` (its training bins). Only the bins trained on in stage 1 are used,
            since only those have genome factors.
        """
        if self.model is None:
            raise NotFittedError("predictd: call fit() before fit_celltypes()")
        if ds is not None or not hasattr(self, "_values"):
            source = self.training_data if ds is None else ds
            if source is None:
                raise NotFittedError("predictd: call fit() before fit_celltypes()")
            n_bins = source.sizes["bin"]
            cfg = self.config
            size = cfg.training_bins(n_bins)
            values, mask = _dense_signal(source.isel(bin=_subset(n_bins, size, cfg.seed, 3)),
                                         self.name)
            if values.shape[0] != self.model.genome.shape[0]:
                raise InvalidArgumentError("predictd: fit_celltypes needs the dataset given to fit()")
        else:
            values, mask = self._values, self._mask
        index = {c: i for i, c in enumerate(self.cells_)}
        unknown = [c for c in cells if c not in index]
        if unknown:
            raise InvalidArgumentError(f"predictd: {unknown[0]} is not a cell type of the fitted model")
        for model in self.models_:  # every bag, each with its own frozen factors
            with torch.no_grad():
                a_f = model.assay.double().cpu().numpy()
                g_f = model.genome.double().cpu().numpy()
                offset = (model.assay_bias.double().cpu().numpy()[None, :]
                          + model.genome_bias.double().cpu().numpy()[:, None]
                          + float(model.mean))
            for cell in cells:
                c = index[cell]
                assays = np.nonzero(mask[c])[0]
                if not len(assays):
                    continue
                design = (a_f[assays][None, :, :] * g_f[:, None, :]).reshape(-1, g_f.shape[1])
                residual = (values[:, c, assays].astype(np.float64)
                            - offset[:, assays]).reshape(1, -1)
                factors, bias = ridge_genome_factors(residual, design,
                                                     self.config.rc * residual.shape[1])
                with torch.no_grad():
                    model.cell[c] = torch.as_tensor(factors[0], dtype=model.cell.dtype)
                    model.cell_bias[c] = torch.as_tensor(bias[0], dtype=model.cell_bias.dtype)
        for cell in cells:
            if not mask[index[cell]].any():
                continue
            if cell not in self.new_cells_:
                self.new_cells_.append(cell)
        return self

    def _predict(self, observed: xr.Dataset, targets: list[Track]) -> np.ndarray:
        if self.model is None:
            raise NotFittedError("predictd: call fit() before predict()")
        index = _node_index(self, targets)
        signal, rows, cols, support = _observed_inputs(self, observed, index)
        cells, assays = np.nonzero(support)
        t_cells = np.array([c for c, _ in index])
        t_assays = np.array([a for _, a in index])
        bags = []
        for model in self.models_:
            with torch.no_grad():
                c_f = model.cell.double().cpu().numpy()
                a_f = model.assay.double().cpu().numpy()
                c_b = model.cell_bias.double().cpu().numpy()
                a_b = model.assay_bias.double().cpu().numpy()
                mean = float(model.mean)
            bags.append((c_f[cells] * a_f[assays], c_b[cells] + a_b[assays] + mean,
                         c_f[t_cells] * a_f[t_assays], c_b[t_cells] + a_b[t_assays] + mean))
        n_bins = observed.sizes["bin"]
        out = np.empty((len(index), n_bins), dtype=np.float32)
        for start in range(0, n_bins, self.chunk_bins):
            stop = min(start + self.chunk_bins, n_bins)
            values = _chunk_values(signal, start, stop, shape=support.shape, model_rows=rows,
                                   model_cols=cols, support=support, method=self.name)
            observed_values = values[:, cells, assays].astype(np.float64)
            total = np.zeros((len(index), stop - start))
            # train_bags.py / impute_and_avg: each bag imputes (its own genome-factor refit),
            # the imputed tracks are averaged
            for design, offset, t_design, t_offset in bags:
                factors, bias = ridge_genome_factors(observed_values - offset, design,
                                                     self.config.ri2)
                total += t_design @ factors.T + bias + t_offset[:, None]
            out[:, start:stop] = total / len(bags)
        return out


# =========================================================================== Avocado


@dataclass(frozen=True)
class AvocadoConfig:
    """Hyperparameters of the Avocado-style model (``avocado/model.py`` defaults).

    Attributes
    ----------
    n_celltype_factors, n_assay_factors
        Cell-type (32) and assay (256) embedding widths.
    n_25bp_factors, n_250bp_factors, n_5kbp_factors
        Genome embedding widths at 25 bp (25), 250 bp (40) and 5 kbp (45); the coarser ones are
        shared by 10 and 200 consecutive bins.
    n_layers, n_nodes
        Dense ReLU layers and their width (2 × 2048).
    lr, batch_size
        Adam learning rate (Keras default 1e-3) and examples per batch (40,000).
    epochs, epoch_size
        Epochs, and batches per epoch (120; ``None``: one pass over the bins).
    genome_epochs
        Epochs of the genome-only stage that fits embeddings for bins not seen at fit time.
    celltype_epochs
        Epochs of the cell-type-only stage that fits the embeddings of new cell types
        (``fit_celltypes``: 200, like ``fit``).
    seed
        Seed of initialisation and sampling.
    """

    n_celltype_factors: int = 32
    n_assay_factors: int = 256
    n_25bp_factors: int = 25
    n_250bp_factors: int = 40
    n_5kbp_factors: int = 45
    n_layers: int = 2
    n_nodes: int = 2048
    lr: float = 1e-3
    batch_size: int = 40_000
    epochs: int = 200
    epoch_size: int | None = 120
    genome_epochs: int = 50
    celltype_epochs: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        _positive(self, ("n_celltype_factors", "n_assay_factors", "n_25bp_factors",
                         "n_250bp_factors", "n_5kbp_factors", "n_nodes", "lr", "batch_size",
                         "epoch_size"), "Avocado")
        for name in ("n_layers", "epochs", "genome_epochs", "celltype_epochs"):
            value = getattr(self, name)
            if int(value) != value or value < 0:
                raise InvalidArgumentError(f"Avocado {name} must be a non-negative integer, got {value!r}")


#: ``paper``: Avocado's defaults; ``quick``: the README's small CPU recipe (1 × 128 nodes,
#: factors 32/24/10/20/30, batches of 10,000), epochs of 10 batches whatever the window's length
#: (Avocado's ``epoch_size``). One pass over the bins per epoch gave a 20,000-bin window 2 batches
#: per epoch, 80 optimiser steps in all: genome-wide Pearson 0.10 against AVG's 0.50 on the
#: notebook-30 window (E065 keeping H3K4me1), 0.49 with 10-batch epochs.
#: ``celltype_epochs`` 10 (Avocado's ``fit_celltypes`` defaults to as many epochs as ``fit``):
#: the stage-2 training loss of a new cell's embedding levels off by about epoch 10 (E003 keeping
#: H3K4me3, 100k bins: 0.22 at epoch 1, 0.13 at 10, 0.13 at 20) and further epochs fit its one or
#: two tracks at the cost of its other marks. New-cell mean Pearson, 40k bins, seed 0, kept
#: H3K4me3 (AVG 0.399): 0.387 at 10, 0.369 at 20, 0.353 at 40 epochs; 100k bins, kept H3K4me3 /
#: H3K4me3+H3K27me3 (AVG 0.407 / 0.442): seed 0 0.374 / 0.410 at 20, seeds 0-2 0.389 / 0.419
#: at 10.
AVOCADO_PRESETS: Presets[dict[str, Any]] = Presets("Avocado", {
    "paper": {},
    "quick": {"n_layers": 1, "n_nodes": 128, "n_assay_factors": 24, "n_celltype_factors": 32,
              "n_25bp_factors": 10, "n_250bp_factors": 20, "n_5kbp_factors": 30,
              "batch_size": 10_000, "epochs": 40, "epoch_size": 10, "genome_epochs": 20,
              "celltype_epochs": 10},
}, aliases={"full": "paper"}, fields={f.name for f in fields(AvocadoConfig)})


def avocado_config(preset: str = "paper", **overrides: Any) -> AvocadoConfig:
    """Build an :class:`AvocadoConfig` from a preset (:data:`AVOCADO_PRESETS`) and overrides."""
    return AvocadoConfig(**AVOCADO_PRESETS.resolve(preset, **overrides))


def _embedding(n: int, dim: int) -> nn.Embedding:
    layer = nn.Embedding(n, dim)
    nn.init.uniform_(layer.weight, -0.05, 0.05)
    return layer


class AvocadoModel(nn.Module):
    """Cell, assay and three-resolution genome embeddings feeding a dense network.

    Parameters
    ----------
    n_cells, n_assays, n_bins
        Embedding table sizes (the genome tables have ``n_bins``, ``n_bins // 10 + 1`` and
        ``n_bins // 200 + 1`` rows).
    config
        Widths and depth.
    """

    def __init__(self, n_cells: int, n_assays: int, n_bins: int, config: AvocadoConfig) -> None:
        super().__init__()
        self.cell = _embedding(n_cells, config.n_celltype_factors)
        self.assay = _embedding(n_assays, config.n_assay_factors)
        self.genome = self.new_genome(n_bins, config)
        width = (config.n_celltype_factors + config.n_assay_factors + config.n_25bp_factors
                 + config.n_250bp_factors + config.n_5kbp_factors)
        layers: list[nn.Module] = []
        for _ in range(config.n_layers):
            dense = nn.Linear(width, config.n_nodes)
            nn.init.xavier_uniform_(dense.weight)
            nn.init.zeros_(dense.bias)
            layers += [dense, nn.ReLU()]
            width = config.n_nodes
        out = nn.Linear(width, 1)
        nn.init.xavier_uniform_(out.weight)
        nn.init.zeros_(out.bias)
        self.network = nn.Sequential(*layers, out)

    @staticmethod
    def new_genome(n_bins: int, config: AvocadoConfig) -> nn.ModuleList:
        """Fresh genome embeddings at 25 bp, 250 bp and 5 kbp for ``n_bins`` bins."""
        return nn.ModuleList([_embedding(n_bins, config.n_25bp_factors),
                              _embedding(n_bins // 10 + 1, config.n_250bp_factors),
                              _embedding(n_bins // 200 + 1, config.n_5kbp_factors)])

    def forward(self, g: torch.Tensor, c: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Predictions for bins ``g``, cells ``c`` and assays ``a`` (equal-length id tensors)."""
        x = torch.cat([self.cell(c), self.assay(a), self.genome[0](g), self.genome[1](g // 10),
                       self.genome[2](g // 200)], dim=-1)
        return self.network(x)[..., 0]


class AvocadoImputer(EpigenomeImputer):
    """Avocado-style deep tensor factorisation (re-implemented; see the module docstring).

    Parameters
    ----------
    preset
        ``"paper"`` or ``"quick"`` (:data:`AVOCADO_PRESETS`).
    device
        Torch device preference.
    chunk_bins
        Bins predicted at a time.
    progress
        tqdm bars during training.
    **overrides
        :class:`AvocadoConfig` fields.
    """

    name = "avocado"

    def __init__(self, preset: str = "quick", *, device: str = "auto", chunk_bins: int = 100_000,
                 progress: bool | None = None, **overrides: Any) -> None:
        super().__init__()
        self.preset = preset
        self.config = avocado_config(preset, **overrides)
        self.device_preference, self.chunk_bins, self.progress = device, int(chunk_bins), progress
        self.model: AvocadoModel | None = None
        self.cells_: list[str] = []
        self.assays_: list[str] = []
        self.train_mask_ = np.zeros((0, 0), dtype=bool)
        self.history: list[dict[str, Any]] = []
        self.celltype_history: list[dict[str, Any]] = []
        self.new_cells_: list[str] = []
        self._bins_key: tuple[Any, ...] | None = None
        self._genome_cache: dict[tuple[Any, ...], Any] = {}

    def parameters(self) -> dict[str, Any]:
        """Preset and hyperparameters, for the results store."""
        return {"preset": self.preset, **asdict(self.config)}

    @staticmethod
    def _key(ds: xr.Dataset) -> tuple[Any, ...]:
        starts = ds["bin_start"].values if "bin_start" in ds else np.arange(ds.sizes["bin"])
        chroms = ds["bin_chrom"].values if "bin_chrom" in ds else np.array([])
        return (ds.sizes["bin"], hash(np.asarray(starts).tobytes()),
                hash(tuple(np.unique(chroms).tolist())))

    def _train(self, values: np.ndarray, mask: np.ndarray, epochs: int,
               params: list[nn.Parameter]) -> list[dict[str, Any]]:
        from analysislib.training import fit

        cfg = self.config
        assert self.model is not None
        cells, assays = np.nonzero(mask)
        n_bins = values.shape[0]
        data = torch.from_numpy(values)

        class _Batches:
            def __init__(self, generator: torch.Generator) -> None:
                self.generator = generator
                self.n = (math.ceil(n_bins / cfg.batch_size) if cfg.epoch_size is None
                          else int(cfg.epoch_size))

            def __len__(self) -> int:
                return self.n

            def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
                if cfg.epoch_size is None:
                    positions = torch.randperm(n_bins, generator=self.generator)
                else:
                    positions = torch.randint(n_bins, (self.n * cfg.batch_size,),
                                              generator=self.generator)
                for start in range(0, len(positions), cfg.batch_size):
                    g = positions[start:start + cfg.batch_size]
                    track = torch.randint(len(cells), (len(g),), generator=self.generator)
                    c = torch.as_tensor(cells)[track]
                    a = torch.as_tensor(assays)[track]
                    yield g, c, a, data[g, c, a]

        def train_step(net: AvocadoModel, batch: tuple[torch.Tensor, ...], ctx: Any
                       ) -> torch.Tensor:
            g, c, a, y = batch
            return ((net(g, c, a) - y) ** 2).mean()

        optimizer = torch.optim.Adam(params, lr=cfg.lr)
        result = fit(self.model, optimizer, train_step, lambda epoch, gen: _Batches(gen),
                     epochs=epochs, seed=cfg.seed, progress=self.progress)
        return list(result.history)

    def fit(self, ds: xr.Dataset, new_cells: Sequence[str] | None = None) -> AvocadoImputer:
        """Two-stage fit on the observed tracks of ``ds``.

        Stage 1 trains every embedding and the network on the reference cell types' observed
        tracks (``epochs``); stage 2 (:meth:`fit_celltypes`) fits the embeddings of the new cell
        types with everything else frozen (``celltype_epochs``), as Avocado's ``fit_celltypes``.

        Parameters
        ----------
        ds
            Signal dataset (any scale).
        new_cells
            Cell types to fit in stage 2; ``None`` applies :func:`select_new_cells`' rule,
            ``[]`` trains every cell type jointly.
        """
        from analysislib.training import seed_everything, select_device

        values, mask = _dense_signal(ds, self.name)
        if not mask.any():
            raise InvalidArgumentError("avocado: the dataset has no observed track")
        cells = [str(c) for c in ds["cell"].values]
        new = select_new_cells(mask, cells, new_cells, self.name)
        seed_everything(self.config.seed)
        self.model = AvocadoModel(mask.shape[0], mask.shape[1], values.shape[0],
                                  self.config).to(select_device(self.device_preference))
        self.history = self._train(values, mask & ~new[:, None], self.config.epochs,
                                   list(self.model.parameters()))
        self.model.eval()
        self.cells_ = cells
        self.assays_ = [str(a) for a in ds["assay"].values]
        self.train_mask_ = mask
        self.new_cells_ = []
        self.celltype_history = []
        self._bins_key = self._key(ds)
        self._genome_cache = {self._bins_key: self.model.genome}
        self.training_data = to_arcsinh(ds)
        if new.any():
            self._fit_celltypes(values, mask, [c for c, n in zip(cells, new, strict=True) if n])
        return self

    def fit_celltypes(self, cells: Sequence[str], ds: xr.Dataset | None = None
                      ) -> AvocadoImputer:
        """Stage 2: (re)fit the embeddings of ``cells`` with everything else frozen.

        The rows of ``cells`` in the cell-type embedding are re-initialised (U(−0.05, 0.05)) and
        trained for ``celltype_epochs`` on their observed tracks in ``ds`` (default: the
        dataset given to :meth:`fit`, whose bins the genome embeddings belong to); the genome
        and assay embeddings, the network and the other cell types' rows stay bit-identical
        (their gradients are zeroed, so Adam leaves them untouched).
        """
        if self.model is None or self.training_data is None:
            raise NotFittedError("avocado: call fit() before fit_celltypes()")
        source = self.training_data if ds is None else ds
        if self._key(source) != self._bins_key:
            raise InvalidArgumentError("avocado: fit_celltypes needs the bins given to fit()")
        values, mask = _dense_signal(source, self.name)
        self._fit_celltypes(values, mask, [str(c) for c in cells])
        return self

    def _fit_celltypes(self, values: np.ndarray, mask: np.ndarray, cells: list[str]) -> None:
        from analysislib.training import seed_everything

        assert self.model is not None
        index = {c: i for i, c in enumerate(self.cells_)}
        unknown = [c for c in cells if c not in index]
        if unknown:
            raise InvalidArgumentError(f"avocado: {unknown} are not cell types of the fitted model")
        rows = torch.zeros(len(self.cells_), dtype=torch.bool)
        rows[[index[c] for c in cells]] = True
        support = mask & rows.numpy()[:, None]
        if not support.any():
            return
        weight = self.model.cell.weight
        seed_everything(self.config.seed + 2)
        with torch.no_grad():
            fresh = torch.empty_like(weight).uniform_(-0.05, 0.05)
            weight[rows.to(weight.device)] = fresh[rows.to(weight.device)]
        keep = rows.to(weight.device, weight.dtype)[:, None]
        frozen = [p for p in self.model.parameters() if p is not weight]
        for p in frozen:
            p.requires_grad_(False)
        hook = weight.register_hook(lambda grad: grad * keep)
        try:
            self.celltype_history = self._train(values, support, self.config.celltype_epochs,
                                                [weight])
        finally:
            hook.remove()
            for p in frozen:
                p.requires_grad_(True)
        self.model.eval()
        self.new_cells_ = sorted(set(self.new_cells_) | set(cells), key=self.cells_.index)

    def fit_genome(self, ds: xr.Dataset) -> nn.ModuleList:
        """Second stage: fit genome embeddings for the bins of ``ds``, all else frozen.

        Uses the tracks observed in ``ds`` (in the model's cells and assays) for
        :attr:`AvocadoConfig.genome_epochs` epochs; the result is cached for these bins.
        """
        from analysislib.training import seed_everything

        if self.model is None:
            raise NotFittedError("avocado: call fit() before fit_genome()")
        key = self._key(ds)
        if key in self._genome_cache:
            return self._genome_cache[key]
        ds = to_arcsinh(ds)
        signal, rows, cols, support = _observed_inputs(self, ds, [])
        if not support.any():
            raise InvalidArgumentError("avocado: no track of the fitted cell types and assays is observed "
                             "on these bins, so their genome embeddings cannot be fitted")
        values = _chunk_values(signal, 0, ds.sizes["bin"], shape=support.shape, model_rows=rows,
                               model_cols=cols, support=support, method=self.name)
        fitted_genome = self.model.genome
        seed_everything(self.config.seed + 1)
        device = next(self.model.parameters()).device
        self.model.genome = AvocadoModel.new_genome(values.shape[0], self.config).to(device)
        frozen = [p for name, p in self.model.named_parameters() if not name.startswith("genome")]
        for p in frozen:
            p.requires_grad_(False)
        try:
            self._train(values, support, self.config.genome_epochs,
                        list(self.model.genome.parameters()))
        finally:
            for p in frozen:
                p.requires_grad_(True)
        genome = self.model.genome
        self.model.genome = fitted_genome
        self.model.eval()
        self._genome_cache[key] = genome
        return genome

    def _predict(self, observed: xr.Dataset, targets: list[Track]) -> np.ndarray:
        if self.model is None:
            raise NotFittedError("avocado: call fit() before predict()")
        index = _node_index(self, targets)
        genome = self.fit_genome(observed)
        fitted_genome, self.model.genome = self.model.genome, genome
        device = next(self.model.parameters()).device
        n_bins = observed.sizes["bin"]
        out = np.empty((len(index), n_bins), dtype=np.float32)
        try:
            with torch.no_grad():
                for start in range(0, n_bins, self.chunk_bins):
                    g = torch.arange(start, min(start + self.chunk_bins, n_bins), device=device)
                    for row, (c, a) in enumerate(index):
                        out[row, start:start + len(g)] = self.model(
                            g, torch.full_like(g, c), torch.full_like(g, a)).cpu().numpy()
        finally:
            self.model.genome = fitted_genome
        return out
