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
- :func:`plain_log_axes`: log axes labelled in plain numbers; :func:`integer_ticks`: ticks at whole numbers;
- :func:`png_bytes`, :func:`save_figure`.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from hooks.plotting import STYLE, grid, heatmap, style
from mechmem.storage.files import atomic_write_bytes, atomic_write_json

__all__ = [
    "DPI",
    "STYLE",
    "grid",
    "heatmap",
    "style",
    "subplots",
    "plain_log_axes",
    "integer_ticks",
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


def integer_ticks(ax, x: bool = True, y: bool = False) -> None:
    """Ticks only at whole numbers on the chosen axes (layers, heads, positions, steps, counts)."""
    from matplotlib.ticker import MaxNLocator

    for axis, on in ((ax.xaxis, x), (ax.yaxis, y)):
        if on:
            axis.set_major_locator(MaxNLocator(integer=True))


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


#: the width a figure is shown at, at most (a notebook's output column, a README, the report's page): a wider
#: figure is scaled down, and its text with it
DISPLAY_PX = 1000
#: the smallest text size, in points once the figure is scaled to :data:`DISPLAY_PX`, that stays readable
MIN_TEXT_PT = 6.0


def figure_problems(fig, dpi: int = DPI) -> list[str]:
    """What keeps ``fig`` from explaining itself (empty when nothing): no title; a panel without axis labels
    (a label on a panel sharing that axis counts); a heat map (image, mesh, contour) whose colours no colorbar
    explains; heat maps of one quantity (one colorbar label) side by side on different colour scales; a legend
    entry that is empty or an internal key (no space, an underscore: ``B16_lr1``); a line that is neither in a
    legend nor drawn in the style of a line that is; fractional ticks on an axis of integer values (layers,
    heads, positions: ``-0.5, 0.5, 1.5``); a panel whose lines are single points; text smaller than
    :data:`MIN_TEXT_PT` once the figure (saved at ``dpi``) is scaled to :data:`DISPLAY_PX` wide."""
    found = _panel_problems(fig)
    found += _scale_problems(fig)
    found += _text_problems(fig, dpi)
    return found


def _panel_problems(fig) -> list[str]:
    from matplotlib.collections import QuadMesh
    from matplotlib.contour import ContourSet

    found = []
    axes = [ax for ax in fig.axes if ax.get_visible() and not hasattr(ax, "_colorbar")]
    data = [ax for ax in axes if ax.lines or ax.images or ax.collections or ax.patches or ax.containers]
    suptitle = fig._suptitle.get_text() if fig._suptitle is not None else ""
    if not suptitle and not any(ax.get_title() or ax.get_title("left") for ax in axes):
        found.append("no title (neither the figure nor a panel has one)")
    for i, ax in enumerate(data):
        name = f"panel {i} ({ax.get_title() or 'untitled'})"
        for axis, label, shared in (
            ("x", ax.get_xlabel, ax.get_shared_x_axes()),
            ("y", ax.get_ylabel, ax.get_shared_y_axes()),
        ):
            if not label() and not any(other.get_label_text() for other in _siblings(ax, axis, shared)):
                if not any(_label(o, axis) and _same_scale(o, ax, axis) for o in axes if o is not ax):
                    found.append(f"{name}: no {axis} label")
        mappables = list(ax.images) + [c for c in ax.collections if isinstance(c, (QuadMesh, ContourSet))]
        for m in mappables:
            if m.colorbar is None and not _explained_by_a_colorbar(m, fig):
                found.append(f"{name}: a heat map without a colorbar")
        legends = [ax.get_legend()] + (list(fig.legends) if i == 0 else [])
        entries = [t.get_text() for legend in legends if legend is not None for t in legend.get_texts()]
        for text in entries:
            if not text.strip() or ("_" in text and " " not in text and "$" not in text):
                found.append(f"{name}: legend entry {text!r} is not words")
        styles = {_style(line) for line in ax.lines if not line.get_label().startswith("_")}
        in_title = "line" in ax.get_title() + suptitle
        for line in ax.lines:
            unexplained = line.get_label().startswith("_") and _style(line) not in styles and not in_title
            if unexplained and len(ax.lines) > 1 and line.get_visible():
                found.append(f"{name}: a {line.get_linestyle()} line is in no legend")
        found += [f"{name}: {problem}" for problem in _tick_problems(ax)]
        drawn = [line for line in ax.lines if line.get_visible()]
        if (
            drawn
            and not (ax.images or ax.patches or ax.containers)
            and all(len(line.get_xdata()) <= 1 for line in drawn)
        ):
            found.append(f"{name}: every line is a single point (nothing to compare)")
    return found


def _tick_problems(ax) -> list[str]:
    """Fractional tick labels on an axis whose values are integers: an image's rows and columns (layers, heads,
    positions), or lines and bars whose coordinates are all whole numbers."""
    import numpy as np

    found = []
    for axis in ("x", "y"):
        scale = ax.get_xscale() if axis == "x" else ax.get_yscale()
        if scale != "linear" or not _integer_axis(ax, axis, np):
            continue
        low, high = sorted(ax.get_xlim() if axis == "x" else ax.get_ylim())
        ticks = ax.get_xticks() if axis == "x" else ax.get_yticks()
        labels = ax.get_xticklabels() if axis == "x" else ax.get_yticklabels()
        shown = [t for t, label in zip(ticks, labels) if low - 1e-9 <= t <= high + 1e-9 and label.get_visible()]
        if any(abs(t - round(t)) > 1e-9 for t in shown):
            found.append(f"fractional ticks on the {axis} axis, whose values are whole numbers")
    return found


def _integer_axis(ax, axis: str, np) -> bool:
    if ax.images:
        return True  # an image's rows and columns are indices
    if axis == "y":
        return False  # a plot's y values are measurements; only its x positions can be indices
    values = [line.get_xdata() for line in ax.lines]
    values += [[p.get_x() + p.get_width() / 2] for p in ax.patches if hasattr(p, "get_width")]
    flat = [np.asarray(v, dtype=float).ravel() for v in values if len(v)]
    if not flat:
        return False
    joined = np.concatenate(flat)
    return bool(np.all(np.isfinite(joined)) and np.all(joined == np.round(joined)) and len(np.unique(joined)) > 1)


def _scale_problems(fig) -> list[str]:
    """Heat maps of one quantity (the same colorbar label) drawn side by side on different colour ranges."""
    ranges: dict[str, set] = {}
    for ax in fig.axes:
        for m in list(ax.images) + list(ax.collections):
            bar = getattr(m, "colorbar", None)
            label = _colorbar_label(bar) if bar is not None else ""
            if label:
                ranges.setdefault(label, set()).add((round(m.norm.vmin, 9), round(m.norm.vmax, 9)))
    return [
        f"heat maps of {label!r} side by side on different colour scales: {sorted(r)}"
        for label, r in ranges.items()
        if len(r) > 1
    ]


def _colorbar_label(bar) -> str:
    return (bar.ax.get_ylabel() or bar.ax.get_xlabel()).strip()


def _text_problems(fig, dpi: int) -> list[str]:
    """Text below :data:`MIN_TEXT_PT` once the figure is shown :data:`DISPLAY_PX` wide (a wide strip is scaled
    down with its text)."""
    width_px = fig.get_figwidth() * dpi
    scale = min(1.0, DISPLAY_PX / width_px)
    texts = fig.findobj(match=lambda o: hasattr(o, "get_fontsize") and hasattr(o, "get_text"))
    small = sorted({round(t.get_fontsize() * scale, 1) for t in texts if t.get_visible() and t.get_text().strip()})
    small = [size for size in small if size < MIN_TEXT_PT]
    if not small:
        return []
    return [
        f"text as small as {small[0]} pt when the figure ({width_px:.0f} px wide) is shown {DISPLAY_PX} px wide "
        f"(at least {MIN_TEXT_PT:g} pt reads)"
    ]


def _same_scale(other, ax, axis: str) -> bool:
    """``other`` labels ``ax``'s ``axis`` too: a twin (same place) or a panel in the same row (y) or column
    (x) over the same range."""
    a, b = ax.get_position(), other.get_position()

    def same(*pairs) -> bool:
        return all(abs(u - v) < 1e-6 for u, v in pairs)

    if same(*zip(a.bounds, b.bounds)):
        return True
    if axis == "y":
        return same((a.y0, b.y0), (a.height, b.height), *zip(ax.get_ylim(), other.get_ylim()))
    return same((a.x0, b.x0), (a.width, b.width), *zip(ax.get_xlim(), other.get_xlim()))


def _label(ax, axis: str) -> str:
    return ax.get_xlabel() if axis == "x" else ax.get_ylabel()


def _siblings(ax, axis: str, shared) -> list:
    return [getattr(o, f"{axis}axis") for o in shared.get_siblings(ax) if o is not ax]


def _explained_by_a_colorbar(mappable, fig) -> bool:
    """Another mappable of ``fig`` with a colorbar uses the same colour map and range."""
    key = (mappable.get_cmap().name, mappable.norm.vmin, mappable.norm.vmax)
    return any(
        m.colorbar is not None and (m.get_cmap().name, m.norm.vmin, m.norm.vmax) == key
        for ax in fig.axes
        for m in list(ax.images) + list(ax.collections)
        if hasattr(m, "colorbar")
    )


def _style(line) -> tuple:
    return line.get_linestyle(), line.get_marker()
