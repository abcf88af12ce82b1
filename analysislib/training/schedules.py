"""Masking-rate curricula, early stopping and learning-rate decay for the deep imputers.

Follows the papers and the authors' code. Dias et al. 2022 (Methods, "Data augmentation" and
"Hyperparameter tuning"; ``autoencoder_tuning_pipeline/DSAE_TORCH_ARG.py`` in
``TorkamaniLab/Imputation_Autoencoder``) draw one masking rate per epoch from
``linspace(0.80, (V-5)/V, 500)`` and cycle through it, stop as soon as a 500-epoch cycle fails
to improve the summed loss, and decay the learning rate at each cycle; BiU-Net raises its
masking rate from 5 % to 25 % (Methods 5.4, "Model training"); eDICE fine-tuning uses early
stopping with patience 5 (``scripts/entex_LOO_tissue_transfer.py`` in ``alex-hh/eDICE``).

Nothing here imports torch: the classes are plain Python so they can be configured, pickled and
inspected without loading the deep-learning stack. State lives in ``state_dict()`` so the
training loop can checkpoint it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from analysislib.errors import InvalidArgumentError

__all__ = [
    "CurriculumSchedule",
    "EarlyStopping",
    "all_but_k_rate",
    "decay_learning_rate",
    "linear_curriculum",
    "step_curriculum",
]


@dataclass(frozen=True)
class CurriculumSchedule:
    """A value (typically a masking rate) that moves from ``start`` to ``end`` over ``n_steps``.

    Parameters
    ----------
    start, end
        Values at the first and last step. ``end`` may be below ``start`` (a falling schedule).
    n_steps
        Number of distinct steps (epochs, cycles or optimizer steps, as the caller decides).
    mode
        ``"linear"``: step ``t`` gives ``start + (end - start) * t / (n_steps - 1)``, exactly the
        entries of ``numpy.linspace(start, end, n_steps)``. ``"step"``: ``n_levels`` equal
        plateaus, the first at ``start`` and the last at ``end``.
    n_levels
        Number of plateaus in ``"step"`` mode (at least 1; default ``n_steps``, which makes the
        two modes agree).
    cycle
        If true, step ``t`` wraps around to ``t mod n_steps`` (Dias et al. cycle through their
        500 masking rates); otherwise steps past the end stay at ``end`` and negative steps are
        an error.

    Examples
    --------
    >>> schedule = CurriculumSchedule(0.05, 0.25, n_steps=5)
    >>> [round(schedule(t), 2) for t in range(6)]
    [0.05, 0.1, 0.15, 0.2, 0.25, 0.25]
    """

    start: float
    end: float
    n_steps: int
    mode: Literal["linear", "step"] = "linear"
    n_levels: int | None = None
    cycle: bool = False

    def __post_init__(self) -> None:
        if int(self.n_steps) != self.n_steps or self.n_steps < 1:
            raise InvalidArgumentError(f"n_steps must be a positive integer, got {self.n_steps!r}")
        if self.mode not in ("linear", "step"):
            raise InvalidArgumentError(f"mode must be 'linear' or 'step', got {self.mode!r}")
        if self.n_levels is not None and (
            int(self.n_levels) != self.n_levels or not 1 <= self.n_levels <= self.n_steps
        ):
            raise InvalidArgumentError(
                f"n_levels must be an integer between 1 and n_steps={self.n_steps}, "
                f"got {self.n_levels!r}"
            )
        for name in ("start", "end"):
            if not math.isfinite(getattr(self, name)):
                raise InvalidArgumentError(f"{name} must be finite, got {getattr(self, name)!r}")

    def position(self, t: int) -> int:
        """Map step ``t`` to an index in ``[0, n_steps)`` (wrapping if ``cycle``, else clamping)."""
        if int(t) != t:
            raise InvalidArgumentError(f"curriculum step must be an integer, got {t!r}")
        t = int(t)
        if self.cycle:
            return t % self.n_steps
        if t < 0:
            raise InvalidArgumentError(f"curriculum step must be >= 0, got {t}")
        return min(t, self.n_steps - 1)

    def __call__(self, t: int) -> float:
        """Value at step ``t``."""
        i = self.position(t)
        if self.mode == "linear":
            fraction = i / (self.n_steps - 1) if self.n_steps > 1 else 0.0
        else:
            levels = self.n_levels if self.n_levels is not None else self.n_steps
            level = min(i * levels // self.n_steps, levels - 1)
            fraction = level / (levels - 1) if levels > 1 else 0.0
        if fraction == 1.0:  # hit the endpoint exactly, free of rounding
            return float(self.end)
        return float(self.start + (self.end - self.start) * fraction)

    def values(self) -> list[float]:
        """All ``n_steps`` values of one pass, in order."""
        return [self(t) for t in range(self.n_steps)]


def linear_curriculum(
    start: float, end: float, n_steps: int, *, cycle: bool = False
) -> CurriculumSchedule:
    """A linear ramp from ``start`` to ``end`` over ``n_steps`` steps (``numpy.linspace`` values).

    Parameters
    ----------
    start, end
        First and last values.
    n_steps
        Number of steps in one pass.
    cycle
        Wrap around after the last step instead of holding ``end``.

    Returns
    -------
    CurriculumSchedule
    """
    return CurriculumSchedule(start, end, n_steps, mode="linear", cycle=cycle)


def step_curriculum(
    start: float, end: float, n_steps: int, n_levels: int, *, cycle: bool = False
) -> CurriculumSchedule:
    """A staircase from ``start`` to ``end`` with ``n_levels`` equal plateaus over ``n_steps``.

    Parameters
    ----------
    start, end
        Values of the first and last plateau.
    n_steps
        Number of steps in one pass.
    n_levels
        Number of plateaus; for example 5 levels from 0.05 to 0.25 gives
        0.05, 0.10, 0.15, 0.20, 0.25 (the BiU-Net range).
    cycle
        Wrap around after the last step instead of holding ``end``.

    Returns
    -------
    CurriculumSchedule
    """
    return CurriculumSchedule(start, end, n_steps, mode="step", n_levels=n_levels, cycle=cycle)


def all_but_k_rate(n_variants: int, k: int = 5) -> float:
    """Masking rate that hides all but ``k`` of ``n_variants`` variants: ``(n_variants - k) / n_variants``.

    This is the final masking rate of Dias et al. (``max_mask`` in their tuning pipeline).

    Parameters
    ----------
    n_variants
        Number of variants in the tile.
    k
        Number of variants left visible.

    Returns
    -------
    float
    """
    if n_variants <= 0 or not 0 <= k <= n_variants:
        raise InvalidArgumentError(f"need 0 <= k <= n_variants and n_variants > 0, got {k=} {n_variants=}")
    return (n_variants - k) / n_variants


class EarlyStopping:
    """Stop training after ``patience`` consecutive updates without improvement.

    Parameters
    ----------
    patience
        Number of consecutive non-improving updates that triggers a stop. ``1`` stops at the
        first cycle that fails to improve (Dias et al.); ``None`` never stops and only tracks
        the best value.
    min_delta
        Minimum change that counts as an improvement (``>= 0``).
    mode
        ``"min"`` when smaller is better (losses), ``"max"`` when larger is better (r²).

    Examples
    --------
    >>> stopper = EarlyStopping(patience=2, mode="min")
    >>> [stopper.update(v) for v in (1.0, 0.5, 0.6, 0.7)]
    [True, True, False, False]
    >>> stopper.should_stop, stopper.best
    (True, 0.5)
    """

    def __init__(
        self,
        patience: int | None = 1,
        min_delta: float = 0.0,
        mode: Literal["min", "max"] = "min",
    ) -> None:
        if patience is not None and (int(patience) != patience or patience < 1):
            raise InvalidArgumentError(f"patience must be a positive integer or None, got {patience!r}")
        if not min_delta >= 0:
            raise InvalidArgumentError(f"min_delta must be >= 0, got {min_delta!r}")
        if mode not in ("min", "max"):
            raise InvalidArgumentError(f"mode must be 'min' or 'max', got {mode!r}")
        self.patience = patience
        self.min_delta = float(min_delta)
        self.mode = mode
        self.best: float | None = None
        self.best_index: int | None = None
        self.num_bad = 0
        self.num_updates = 0

    def is_improvement(self, value: float) -> bool:
        """Whether ``value`` beats the best so far by more than ``min_delta`` (NaN never does)."""
        if math.isnan(value):
            return False
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def update(self, value: float) -> bool:
        """Record one monitored value; return whether it improved on the best so far."""
        value = float(value)
        improved = self.is_improvement(value)
        if improved:
            self.best, self.best_index, self.num_bad = value, self.num_updates, 0
        else:
            self.num_bad += 1
        self.num_updates += 1
        return improved

    @property
    def should_stop(self) -> bool:
        """True once ``patience`` consecutive updates have failed to improve."""
        return self.patience is not None and self.num_bad >= self.patience

    def state_dict(self) -> dict[str, Any]:
        """Plain-Python state for checkpoints."""
        return {
            "patience": self.patience,
            "min_delta": self.min_delta,
            "mode": self.mode,
            "best": self.best,
            "best_index": self.best_index,
            "num_bad": self.num_bad,
            "num_updates": self.num_updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the counters saved by :meth:`state_dict` (the configuration stays as built)."""
        if state.get("mode", self.mode) != self.mode:
            raise InvalidArgumentError(
                f"early-stopping state was saved with mode={state['mode']!r}, "
                f"this instance uses mode={self.mode!r}"
            )
        self.best = state["best"]
        self.best_index = state["best_index"]
        self.num_bad = int(state["num_bad"])
        self.num_updates = int(state["num_updates"])

    def __repr__(self) -> str:
        return (
            f"EarlyStopping(patience={self.patience}, min_delta={self.min_delta}, "
            f"mode={self.mode!r}, best={self.best}, num_bad={self.num_bad})"
        )


def decay_learning_rate(optimizer: Any, factor: float, *, min_lr: float = 0.0) -> list[float]:
    """Multiply every parameter group's learning rate by ``factor``, not going below ``min_lr``.

    The learning rate lives in the optimizer's state, so a checkpoint of the optimizer keeps the
    decayed value.

    Parameters
    ----------
    optimizer
        A ``torch.optim.Optimizer`` (anything with ``param_groups``).
    factor
        Multiplier in ``(0, 1]``.
    min_lr
        Floor for the new learning rates.

    Returns
    -------
    list of float
        The new learning rate of each parameter group.
    """
    if not 0 < factor <= 1:
        raise InvalidArgumentError(f"learning-rate decay factor must be in (0, 1], got {factor!r}")
    groups: Iterable[dict[str, Any]] = optimizer.param_groups
    new_rates = []
    for group in groups:
        group["lr"] = max(group["lr"] * factor, min_lr)
        new_rates.append(group["lr"])
    return new_rates
