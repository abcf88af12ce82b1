"""Old import path of the autoencoder tuning, kept for one release.

Its names live in :mod:`analysislib.genotype.dae.tuning`.
"""

# Kept for one release: re-exports of every public name of the new home.
from __future__ import annotations

from analysislib.genotype.dae import tuning as _tuning
from analysislib.genotype.dae.tuning import *

__all__ = list(_tuning.__all__)
