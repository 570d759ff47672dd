"""Matplotlib figures of the birth experiments (Agg backend; saved as PNG next to the JSON results)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from mechmem.io import atomic_write_bytes


def save_figure(out: Path, name: str, fig) -> Path:
    """Write ``out/figures/<name>.png`` atomically and close the figure."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(Path(out) / "figures" / f"{name}.png", buf.getvalue())


def plot_curves(
    histories,
    keys: Sequence[str],
    title: str,
    labels: dict | None = None,
    series_names: Sequence[str] | None = None,
    hline: tuple | None = None,
    vline: float | None = None,
):
    """Metrics over steps; losses (keys starting with "loss") on a second axis."""
    if histories and isinstance(histories[0], dict):
        histories = [histories]
    series_names = series_names or [""] * len(histories)
    fig, ax = plt.subplots(figsize=(7, 4))
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
            target.plot(
                *zip(*pts), label=label, ls="--" if key.startswith("loss") else "-"
            )
    if hline is not None and ax2 is not None:
        ax2.axhline(hline[1], color="gray", lw=0.8, ls=":", label=f"{hline[0]} floor")
    if vline is not None:
        ax.axvline(vline, color="gray", lw=0.8, ls=":")
    ax.set_xlabel("step")
    ax.set_ylabel("accuracy / recall")
    ax.set_ylim(-0.02, 1.02)
    handles, names = ax.get_legend_handles_labels()
    if ax2 is not None:
        ax2.set_ylabel("loss (nats)")
        h2, n2 = ax2.get_legend_handles_labels()
        handles, names = handles + h2, names + n2
    ax.legend(handles, names, fontsize=7, loc="center right")
    ax.set_title(title)
    return fig


def plot_bars(values: dict, title: str):
    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = list(values)
    ax.bar(
        range(len(names)),
        [values[n] if values[n] is not None else float("nan") for n in names],
    )
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.set_title(title)
    return fig


def plot_handbuilt(patterns, record: dict):
    """Attention of the two hand-built layers on the first tokens of one sequence."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for layer, (ax, pat) in enumerate(zip(axes, patterns)):
        ax.imshow(pat.numpy(), cmap="Blues", vmin=0, vmax=1)
        ax.set_title(f"layer {layer + 1} attention")
        ax.set_xlabel("key position")
        ax.set_ylabel("query position")
    acc = record["triggers"]["acc_incontext"]
    fig.suptitle(
        f"hand-built induction head, d={record['d_model']}: in-context accuracy {acc:.3f}"
    )
    return fig


def plot_patching(result: dict, tables):
    """Restored fraction of the logit difference per (residual stream, position)."""
    import numpy as np

    values = np.array(result["restored"])
    fig, ax = plt.subplots(figsize=(max(6, values.shape[1] * 0.3), 2.8))
    im = ax.imshow(values, cmap="RdBu", vmin=-1, vmax=1, aspect="auto")
    ax.set_yticks(range(len(result["rows"])))
    ax.set_yticklabels(result["rows"])
    toks = [repr(tables.vocab[t])[1:-1] for t in result["clean_tokens"]]
    ax.set_xticks(range(len(toks)))
    ax.set_xticklabels(toks, fontsize=7)
    ax.set_title(
        f"patching: answer changed at position {result['changed_position']}, "
        f"read at {result['query_position']}"
    )
    fig.colorbar(im, ax=ax, fraction=0.03)
    return fig
