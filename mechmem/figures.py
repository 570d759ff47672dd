"""Figures that explain themselves: one style and one way to save them.

Every figure mechmem writes has a title, labelled axes (with units), a labelled colorbar on every
heat map and legends in words; :func:`save_figure` writes it as a PNG at one resolution
(:data:`DPI`), atomically, optionally with the numbers it shows as JSON next to it, and closes it.

No backend is chosen at import time, so notebooks show figures inline; a command that only
saves figures calls :func:`use_file_backend` first.

- :data:`STYLE`, :func:`style`: matplotlib settings (``with style(): fig, ax = plt.subplots()``);
- :func:`grid`: a figure with one panel per item; :func:`heatmap`: a titled, labelled heat map
  with a colorbar (both shared with :mod:`hooks.plotting`, which the hook views use);
- :func:`subplots`: ``plt.subplots`` on a standalone ``Figure`` (no pyplot state: what the paper
  reproductions' experiments return, saved by the runner);
- :func:`plain_log_axes`: log axes labelled in plain numbers;
- :func:`png_bytes`, :func:`save_figure`.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from hooks.plotting import STYLE, grid, heatmap, style
from mechmem.io import atomic_write_bytes, atomic_write_json

__all__ = [
    "DPI",
    "STYLE",
    "grid",
    "heatmap",
    "style",
    "subplots",
    "plain_log_axes",
    "png_bytes",
    "save_figure",
    "use_file_backend",
]

#: the resolution of every saved figure
DPI = 120


def subplots(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = (4.8, 3.4), **kwargs):
    """``(fig, axes)`` like ``plt.subplots``, on a standalone ``Figure`` with constrained layout: no pyplot
    state, so experiments can make figures in any process and a notebook shows one with ``display(fig)``."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots(nrows, ncols, **kwargs)


def plain_log_axes(ax, x: bool = True, y: bool = True) -> None:
    """Readable log axes: ticks at 1, 2 and 5 times powers of ten written as plain numbers (``200``, not
    ``2 x 10^2``), no labels on minor ticks (they run into each other on a short range)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    for axis, on in ((ax.xaxis, x), (ax.yaxis, y)):
        if on:
            axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=12))
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(NullFormatter())


def use_file_backend() -> None:
    """Select matplotlib's non-interactive ``Agg`` backend (for commands that only save figures)."""
    import matplotlib

    matplotlib.use("Agg")


def png_bytes(fig, dpi: int = DPI) -> bytes:
    """The figure as PNG bytes; the figure stays open. Saved with a tight bounding box: a title or a
    legend wider than the panels (which constrained layout does not make room for) is kept whole."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    return buffer.getvalue()


def save_figure(fig, path: str | Path, data: Any | None = None, dpi: int = DPI) -> Path:
    """Write ``fig`` to ``path`` (``.png`` added if missing) atomically and close it; with ``data``,
    also write those numbers to the same name with ``.json``. Returns the PNG's path."""
    import matplotlib.pyplot as plt

    path = Path(path)
    if path.suffix != ".png":
        path = path.with_name(path.name + ".png")
    try:
        atomic_write_bytes(path, png_bytes(fig, dpi))
    finally:
        plt.close(fig)
    if data is not None:
        atomic_write_json(path.with_suffix(".json"), data)
    return path
