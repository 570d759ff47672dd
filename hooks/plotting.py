"""Plot primitives shared by the hook views and mechmem's figures: one style, heat maps that say
what they show (title, labelled axes, a labelled colorbar, token labels that do not collide).

Figures are made with ``matplotlib.pyplot`` so that notebooks show them inline; nothing here
selects a backend (a script or the CLI that only saves figures may call ``matplotlib.use("Agg")``).
``mechmem.pages.figures`` re-exports these names next to its ``save_figure``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np

#: matplotlib settings of every mechmem / hooks figure
STYLE = {
    "figure.dpi": 100,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "figure.constrained_layout.use": True,
    "image.cmap": "viridis",
}


@contextmanager
def style() -> Iterator[None]:
    """Apply :data:`STYLE` for the figures made inside the ``with`` block."""
    import matplotlib

    with matplotlib.rc_context(STYLE):
        yield


def grid(n_panels: int, ncols: int = 4, panel: tuple[float, float] = (3.6, 3.2)):
    """A pyplot figure with ``n_panels`` axes in rows of at most ``ncols`` (extra axes hidden);
    returns ``(fig, axes)`` with ``axes`` a flat list of the ``n_panels`` visible axes."""
    import matplotlib.pyplot as plt

    ncols = max(1, min(ncols, n_panels))
    nrows = -(-n_panels // ncols)
    with style():
        fig, axes = plt.subplots(nrows, ncols, figsize=(panel[0] * ncols, panel[1] * nrows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n_panels:]:
        ax.set_visible(False)
    return fig, flat[:n_panels]


def _ticks(ax, axis: str, labels: Sequence[object] | None, n: int, max_labels: int) -> None:
    """Label every cell when there are few, else every k-th (keeping the last), small font."""
    set_ticks, set_labels = (ax.set_xticks, ax.set_xticklabels) if axis == "x" else (ax.set_yticks, ax.set_yticklabels)
    if labels is None:
        return
    step = max(1, -(-n // max_labels))
    where = list(range(0, n, step))
    if where[-1] != n - 1:
        where.append(n - 1)
    size = 8 if len(where) <= 24 else 6 if len(where) <= 48 else 5
    set_ticks(where)
    set_labels([str(labels[i]) for i in where], fontsize=size, rotation=90 if axis == "x" else 0)


def heatmap(
    ax,
    values,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    colorbar_label: str,
    xticklabels: Sequence[object] | None = None,
    yticklabels: Sequence[object] | None = None,
    diverging: bool = True,
    vmin: float | None = None,
    vmax: float | None = None,
    max_labels: int = 80,
    cmap: str | None = None,
):
    """Draw ``values`` [rows, cols] on ``ax`` with a title, axis labels, tick labels and a labelled
    colorbar. ``diverging``: a red/blue map symmetric around 0 (for signed quantities); else
    ``viridis`` from ``vmin`` (default: the minimum). NaN cells (e.g. a causal mask) stay blank.
    Returns the image."""
    if hasattr(values, "detach"):  # a tensor, possibly on a GPU
        values = values.detach().float().cpu().numpy()
    with style():
        return _heatmap(
            ax,
            np.asarray(values, dtype=float),
            title,
            xlabel,
            ylabel,
            colorbar_label,
            xticklabels,
            yticklabels,
            diverging,
            vmin,
            vmax,
            max_labels,
            cmap,
        )


def _heatmap(
    ax, data, title, xlabel, ylabel, colorbar_label, xticklabels, yticklabels, diverging, vmin, vmax, max_labels, cmap
):
    finite = data[np.isfinite(data)]
    if diverging:
        bound = float(np.abs(finite).max()) if finite.size else 1.0
        bound = bound if bound > 0 else 1.0
        vmin, vmax = (-bound if vmin is None else vmin), (bound if vmax is None else vmax)
        cmap = cmap or "RdBu_r"
    else:
        vmin = float(finite.min()) if vmin is None and finite.size else vmin
        vmax = float(finite.max()) if vmax is None and finite.size else vmax
        cmap = cmap or "viridis"
    image = ax.imshow(data, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
    colorbar = ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.03)
    colorbar.set_label(colorbar_label)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    _ticks(ax, "x", xticklabels, data.shape[1], max_labels)
    _ticks(ax, "y", yticklabels, data.shape[0], max_labels)
    for side in ("top", "right"):
        ax.spines[side].set_visible(True)
    return image
