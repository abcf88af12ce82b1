"""Figures of the notebooks: atomic saving here, each paper's figures in its own module.

``plotting.genotype`` (Dias et al. 2022, BiU-Net), ``plotting.epigenome`` (eDICE) and
``plotting.gwas`` (DeepWAS) hold the figure code, so that analysis modules never import
matplotlib and notebooks stay short.

Figure files carry the paper's figure number in their name (``dias2022_fig3_r2_by_maf.png``) so a
batch run's ``build/figures/`` maps one-to-one onto the papers.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from analysislib.io.atomic import atomic_output

__all__ = ["save_figure"]


def save_figure(figure: Any, figure_dir: str | os.PathLike[str], name: str, *, dpi: int = 120) -> Path:
    """Save a matplotlib figure (or a holoviews object) as ``figure_dir/name.png``, atomically.

    Parameters
    ----------
    figure
        A ``matplotlib.figure.Figure``, or a holoviews element/layout (rendered with matplotlib).
    figure_dir
        Output folder, created if absent.
    name
        File stem, starting with the paper's figure number where there is one.

    Returns
    -------
    Path
        The written PNG.
    """
    target = Path(figure_dir) / f"{name}.png"
    if not hasattr(figure, "savefig"):
        import holoviews as hv

        figure = hv.render(figure, backend="matplotlib")
    with atomic_output(target) as tmp:
        figure.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    return target
