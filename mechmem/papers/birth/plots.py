"""Figures of the birth experiments (standalone matplotlib figures; the runner saves them as PNG)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mechmem.pages.figures import integer_ticks, subplots


def plot_curves(
    histories,
    keys: Sequence[str],
    title: str,
    labels: dict | None = None,
    series_names: Sequence[str] | None = None,
    hline: tuple[str, float] | None = None,
    vline: tuple[str, float] | None = None,
):
    """Metrics over training steps; losses (keys starting with "loss") dashed, on a second axis.
    ``hline``: (label, value) drawn on the loss axis; ``vline``: (label, step)."""
    if histories and isinstance(histories[0], dict):
        histories = [histories]
    series_names = series_names or [""] * len(histories)
    fig, ax = subplots(figsize=(7.5, 4))
    ax2 = None
    for hist, sname in zip(histories, series_names):
        for key in keys:
            pts = [(r["step"], r[key]) for r in hist if r.get(key) is not None]
            if not pts:
                continue
            label = (labels or {}).get(key, key) + (f" ({sname})" if sname else "")
            target = ax
            if key.startswith("loss"):
                ax2 = ax2 or ax.twinx()
                target = ax2
            color = f"C{len(ax.lines) + (len(ax2.lines) if ax2 is not None else 0)}"  # one colour per curve
            target.plot(*zip(*pts), label=label, ls="--" if key.startswith("loss") else "-", color=color)
    if hline is not None and ax2 is not None:
        ax2.axhline(hline[1], color="gray", lw=0.8, ls=":", label=f"{hline[0]} ({hline[1]:.3f} nats)")
    if vline is not None:
        ax.axvline(vline[1], color="gray", lw=0.8, ls=":", label=vline[0])
    ax.set(xlabel="training step", ylabel="accuracy / recall (fraction)", ylim=(-0.02, 1.02), title=title)
    integer_ticks(ax)
    handles, names = ax.get_legend_handles_labels()
    if ax2 is not None:
        ax2.set_ylabel("cross-entropy loss (nats)")
        h2, n2 = ax2.get_legend_handles_labels()
        handles, names = handles + h2, names + n2
    # below the panel: inside it, the legend covered the curves
    fig.legend(handles, names, fontsize=7, loc="outside lower center", ncol=min(3, len(names)))
    return fig


def plot_bars(values: dict, title: str, ylabel: str, xlabel: str = ""):
    """One bar per entry of ``values`` (name -> value; ``None`` is drawn as missing)."""
    fig, ax = subplots(figsize=(7.5, 3.8))
    names = list(values)
    bars = ax.bar(range(len(names)), [values[n] if values[n] is not None else float("nan") for n in names])
    # each bar's value written on it: a bar of height 0 is still read as 0, a missing one as "not measured"
    ax.bar_label(bars, labels=[f"{values[n]:.3g}" if values[n] is not None else "not measured" for n in names])
    ax.margins(y=0.15)
    if all(not values[n] for n in names):
        ax.set_ylim(0, 1)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.set(title=title, ylabel=ylabel, xlabel=xlabel)
    return fig


def plot_handbuilt(patterns, record: dict):
    """Attention of the two hand-built layers on the first tokens of one sequence."""
    fig, axes = subplots(1, 2, figsize=(9.5, 4.2))
    for layer, (ax, pat) in enumerate(zip(axes, patterns)):
        im = ax.imshow(pat.numpy(), cmap="Blues", vmin=0, vmax=1)
        ax.set(title=f"layer {layer + 1} attention pattern", xlabel="key position", ylabel="query position")
    fig.colorbar(im, ax=list(axes), fraction=0.03, label="attention weight")
    acc = record["triggers"]["acc_incontext"]
    fig.suptitle(f"Hand-built induction head, d = {record['d_model']}: in-context accuracy {acc:.3f}")
    return fig


def plot_patching(result: dict, tables):
    """Restored fraction of the logit difference per (residual stream, position)."""
    values = np.array(result["restored"])
    fig, ax = subplots(figsize=(max(6.5, values.shape[1] * 0.3), 3.2))
    im = ax.imshow(values, cmap="RdBu", vmin=-1, vmax=1, aspect="auto")
    ax.set_yticks(range(len(result["rows"])))
    ax.set_yticklabels(result["rows"])
    toks = [repr(tables.vocab[t])[1:-1] for t in result["clean_tokens"]]
    ax.set_xticks(range(len(toks)))
    ax.set_xticklabels(toks, fontsize=7)
    ax.set(
        xlabel="position (clean token)",
        ylabel="patched activation",
        title=f"Activation patching: output token changed at position {result['changed_position']}, "
        f"read at {result['query_position']}",
    )
    fig.colorbar(im, ax=ax, fraction=0.03, label="logit difference restored (fraction)")
    return fig
