"""The interface every epigenomic imputer answers, its registry, and the AVG baseline.

Every epigenomic imputer answers one interface: it fits on the observed tracks of a
signal dataset (:mod:`analysislib.epigenome.tensor`) and predicts named ``(cell, assay)``
targets. eDICE, the PREDICTD- and Avocado-style factorisations and ChromImpute all subclass
:class:`EpigenomeImputer`, so the evaluation protocol, notebooks and benchmarks never need to
know which method they run.

Scale: methods train and predict on the arcsinh scale, as eDICE (Hawkins-Hooker et al. 2023) and
the Roadmap-era baselines do (PREDICTD, Durham et al. 2018 Nat Commun; Avocado, Schreiber et al.
2020 Genome Biol; ``tdurham86/PREDICTD`` ``quality_measures.py``). :meth:`EpigenomeImputer.predict`
converts its input with :func:`~analysislib.epigenome.tensor.to_arcsinh` and returns arcsinh
values; use :func:`~analysislib.epigenome.tensor.to_neglog10p` for the raw scale.

Range: the signal is arcsinh(−log10 p) ≥ 0, so :meth:`EpigenomeImputer.predict` clamps every
method's output at that floor (:func:`signal_floor`): one clamp for all imputers, applied after
``_predict``. A dataset that itself holds negative values (signed synthetic tensors in tests) lowers
the floor to its own smallest observed value, so such data are not distorted.

The AVG baseline is the mean of the target assay over the other cell types where that assay is
observed, at each bin: the ENCODE Imputation Challenge "average" track (Schreiber et al. 2023
Genome Biol; ``alex-hh/encode-imputation`` ``save_average_tracks.py``).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import xarray as xr

from analysislib.epigenome.tensor import to_arcsinh
from analysislib.errors import InvalidArgumentError, NotFittedError
from analysislib.genotype.imputer import ImputationRun
from analysislib.registry import IMPUTERS

__all__ = [
    "EPIGENOME_IMPUTERS",
    "AverageImputer",
    "EpigenomeImputer",
    "get_epigenome_imputer",
    "prediction_array",
    "signal_floor",
]

Track = tuple[str, str]

#: Imputer name -> ``"module:Class"`` (the ``"epigenome"`` entry of :data:`analysislib.registry.IMPUTERS`);
#: imported on first use so torch loads only when needed.
EPIGENOME_IMPUTERS = IMPUTERS["epigenome"]


def get_epigenome_imputer(name: str, **parameters: Any) -> EpigenomeImputer:
    """Instantiate the imputer registered as ``name`` with ``parameters``.

    Raises
    ------
    KeyError
        If no imputer of that name is registered; the message lists the known names.
    ValueError
        If the imputer takes no parameter of a given name.
    """
    return EPIGENOME_IMPUTERS.make(name, **parameters)


def prediction_array(values: np.ndarray, targets: Sequence[Track], like: xr.Dataset,
                     method: str) -> xr.DataArray:
    """Label predicted arcsinh values ``(target, bin)`` with the target tracks and bins of ``like``."""
    values = np.asarray(values, dtype=np.float32)
    if values.shape != (len(targets), like.sizes["bin"]):
        raise InvalidArgumentError(f"{method}: predictions have shape {values.shape}, expected "
                         f"({len(targets)}, {like.sizes['bin']})")
    coords: dict[str, Any] = {
        "cell": ("track", [cell for cell, _ in targets]),
        "assay": ("track", [assay for _, assay in targets]),
        "track": [f"{cell}.{assay}" for cell, assay in targets],
    }
    for name in ("bin_start", "bin_chrom"):
        if name in like:
            coords[name] = ("bin", like[name].values)
    return xr.DataArray(values, dims=("track", "bin"), coords=coords, name="signal",
                        attrs={"scale": "arcsinh", "method": method})


def signal_floor(observed: xr.Dataset) -> float:
    """Lowest value a prediction may take: 0 (arcsinh of −log10 p), or the data's own minimum.

    Returns ``min(0, smallest observed value)`` of the arcsinh signal in ``observed``, so genuine
    p-value tracks are floored at 0 while signed synthetic data keep their range.
    """
    signal = observed["signal"].where(observed["observed"].astype(bool))
    low = float(signal.min(skipna=True).values) if signal.size else 0.0
    return min(0.0, low) if np.isfinite(low) else 0.0


class EpigenomeImputer(ABC):
    """Base class of epigenomic imputers: fit on observed tracks, predict named targets.

    Subclasses set :attr:`name` and implement :meth:`fit` and :meth:`_predict`. :meth:`predict`
    clamps what ``_predict`` returns at :func:`signal_floor` (0 on real data). After each call
    :attr:`last_run` holds the wall time; a ``_predict`` that runs a subprocess may set
    :attr:`last_run` itself (with the tool's peak memory), and :meth:`predict` keeps it.
    """

    name: ClassVar[str] = "imputer"

    def __init__(self) -> None:
        self.last_run = ImputationRun()
        self.training_data: xr.Dataset | None = None

    @abstractmethod
    def fit(self, ds: xr.Dataset) -> EpigenomeImputer:
        """Train on the observed tracks of ``ds`` (any scale; converted to arcsinh)."""

    @abstractmethod
    def _predict(self, observed: xr.Dataset, targets: list[Track]) -> np.ndarray:
        """Arcsinh predictions ``(len(targets), n_bins)`` from the tracks observed in ``observed``."""

    def parameters(self) -> dict[str, Any]:
        """The settings that define this imputer, for the results store."""
        return {}

    def predict(self, targets: Sequence[Track], observed: xr.Dataset | None = None) -> xr.DataArray:
        """Predict the named ``(cell, assay)`` tracks from the tracks observed in ``observed``.

        Parameters
        ----------
        targets
            Tracks to impute. A target may be observed in ``observed``; its values are never used
            for its own prediction (each method hides it).
        observed
            Signal dataset whose ``observed`` mask says what the imputer may read; by default the
            dataset given to :meth:`fit`.

        Returns
        -------
        xarray.DataArray
            Arcsinh values with dims ``(track, bin)`` and ``cell``/``assay`` coordinates on
            ``track``, never below :func:`signal_floor` of ``observed`` (0 on real data).
        """
        if observed is None:
            if self.training_data is None:
                raise NotFittedError(f"{self.name}: call fit() before predict()")
            observed = self.training_data
        observed = to_arcsinh(observed)
        targets = [(str(cell), str(assay)) for cell, assay in targets]
        cells, assays = set(observed["cell"].values), set(observed["assay"].values)
        for cell, assay in targets:
            if cell not in cells or assay not in assays:
                raise InvalidArgumentError(f"target track {cell}.{assay} is not in the signal dataset "
                                       f"(cells {sorted(cells)}, assays {sorted(assays)})")
        before, start = self.last_run, time.perf_counter()
        values = self._predict(observed, targets)
        values = np.clip(np.asarray(values, dtype=np.float32), signal_floor(observed), None)
        seconds = time.perf_counter() - start
        if self.last_run is before:  # _predict did not record its own cost (e.g. a tool's memory)
            self.last_run = ImputationRun(seconds=seconds)
        elif self.last_run.seconds != self.last_run.seconds:  # NaN: keep its memory, add the time
            self.last_run.seconds = seconds
        return prediction_array(values, targets, observed, self.name)


class AverageImputer(EpigenomeImputer):
    """AVG: the mean of the target assay over the other cell types where it is observed.

    Averaging is done on the arcsinh scale, the scale every method here is trained and scored on
    (the ENCODE Imputation Challenge average, Schreiber et al. 2023). A target whose assay is observed in no other cell
    type cannot be imputed this way and raises ``ValueError``.
    """

    name = "avg"

    def fit(self, ds: xr.Dataset) -> AverageImputer:
        """Remember the training tracks (arcsinh scale); the mean is taken at prediction."""
        self.training_data = to_arcsinh(ds)
        return self

    def _predict(self, observed: xr.Dataset, targets: list[Track]) -> np.ndarray:
        out = np.empty((len(targets), observed.sizes["bin"]), dtype=np.float32)
        mask = observed["observed"]
        for row, (cell, assay) in enumerate(targets):
            donors = [str(c) for c in observed["cell"].values
                      if c != cell and bool(mask.sel(cell=c, assay=assay))]
            if not donors:
                raise InvalidArgumentError(f"avg: assay {assay} is observed in no cell type other than "
                                       f"{cell}, so {cell}.{assay} has no average to impute from")
            signal = observed["signal"].sel(assay=assay, cell=donors)
            out[row] = signal.mean("cell").values
        return out
