"""One way to make and save figures: standalone matplotlib ``Figure`` objects saved as PNG at one DPI.

Figures are built without pyplot (``matplotlib.figure.Figure``), so no global backend is set at
import and nothing leaks between experiments; a notebook shows one inline with ``display(fig)``.
"""

from __future__ import annotations

import io
from pathlib import Path

from matplotlib.figure import Figure

from mechmem.io import atomic_write_bytes

DPI = 110


def subplots(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = (4.8, 3.4), **kwargs):
    """``(fig, axes)`` like ``plt.subplots``, on a standalone ``Figure`` with constrained layout."""
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots(nrows, ncols, **kwargs)


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG bytes at :data:`DPI`."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` (atomically, at :data:`DPI`)."""
    return atomic_write_bytes(Path(path), png_bytes(fig))
