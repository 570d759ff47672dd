"""Attention patterns of every head, as offline CircuitsVis views and static figures, with the
read-out position (where the model's answer is read) in view.

CircuitsVis's own objects load JavaScript from a CDN when printed and probe the internet when a
notebook displays them; a :class:`CircuitsVisView` never does: its HTML inlines the package's
JavaScript bundle (``local_src``), and a page holding several views can include the bundle once
(:func:`circuitsvis_bundle` plus :meth:`CircuitsVisView.render_call`).

Patterns are read with ``run_with_cache`` (on a TransformerLens 3.9 bridge ``hook_pattern`` fires
with the pattern but editing it is inert; reading it is exact).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from hooks.names import check_positions
from hooks.state import preserved_state


def attention_patterns(model: nn.Module, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "layer batch head q k"]:
    """Every layer's attention pattern on ``tokens`` (eval mode, no gradients; the model's hooks
    and mode are left as they were)."""
    if not isinstance(tokens, Tensor) or tokens.dim() != 2:
        raise TypeError(f"tokens must be an integer tensor [batch, pos], got {getattr(tokens, 'shape', type(tokens))}")
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.cfg.n_layers)]
    with preserved_state(model), torch.no_grad():
        model.eval()
        _, cache = model.run_with_cache(tokens, names_filter=names)
    return torch.stack([cache[name].detach().float().cpu() for name in names])


# ----------------------------------------------------------------------------- CircuitsVis, offline


@lru_cache(maxsize=1)
def circuitsvis_bundle() -> str:
    """CircuitsVis's JavaScript bundle (defines ``CircuitsVis``), safe to inline in a ``<script>``."""
    import circuitsvis

    path = Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js"
    return path.read_text(encoding="utf-8").replace("</script>", "")


def _props_json(props: dict) -> str:
    """Props as JSON that cannot close the surrounding ``<script>`` (``</`` escaped)."""
    from circuitsvis.utils.convert_props import convert_props

    return convert_props(props).replace("</", "<\\/")


@dataclass
class CircuitsVisView:
    """One CircuitsVis component (``"AttentionHeads"``, ``"ColoredTokensMulti"``, ...) with its props.

    ``local_src`` is a self-contained HTML fragment (bundle inlined, no network); in a notebook the
    view displays itself from it."""

    component: str
    props: dict
    element_id: str = field(default_factory=lambda: f"circuits-vis-{uuid.uuid4().hex[:12]}")

    def render_call(self) -> str:
        """JavaScript rendering the view into ``#element_id`` with a ``CircuitsVis`` already loaded."""
        return f'CircuitsVis.render("{self.element_id}", CircuitsVis.{self.component}, {_props_json(self.props)});'

    @property
    def local_src(self) -> str:
        return view_html([self])

    def _repr_html_(self) -> str:
        return self.local_src


def attention_heads_view(
    pattern: Float[Tensor, "head q k"],
    labels: Sequence[str],
    head_names: Sequence[str] | None = None,
    max_value: float | None = None,
    readout: int | None = None,
) -> CircuitsVisView:
    """CircuitsVis ``AttentionHeads`` of one example: a thumbnail per head, the chosen one zoomed.
    ``max_value`` sets the darkest colour; by default the largest weight of the ``readout`` row (so
    a spread-out read-out row is not washed out by the first rows, where a query sees few keys and
    weights are near 1; larger weights saturate), or of the whole pattern without ``readout``."""
    _check_pattern(pattern, labels)
    if max_value is None:
        rows = pattern if readout is None else pattern[:, check_positions(readout, pattern.shape[1], "readout")]
        max_value = max(float(rows.max()), 1e-6)
    props = {
        "attention": _rounded(pattern),
        "tokens": list(labels),
        "maxValue": max_value,
        "minValue": -max_value,
        "attentionHeadNames": list(head_names) if head_names is not None else None,
    }
    return CircuitsVisView("AttentionHeads", props)


def readout_view(
    pattern: Float[Tensor, "head q k"], labels: Sequence[str], readout: int, head_names: Sequence[str] | None = None
) -> CircuitsVisView:
    """The read-out row only: tokens coloured by how much the query at ``readout`` attends to each
    (CircuitsVis ``ColoredTokensMulti``; pick the head in the view, hover a token for every head)."""
    _check_pattern(pattern, labels)
    (readout,) = check_positions(readout, pattern.shape[1], "readout")
    n_heads = pattern.shape[0]
    values = pattern[:, readout, : readout + 1].T  # [key pos, head]
    names = list(head_names) if head_names is not None else [f"head {h}" for h in range(n_heads)]
    props = {"tokens": [f" {t} " for t in labels[: readout + 1]], "values": _rounded(values), "labels": names}
    return CircuitsVisView("ColoredTokensMulti", props)


def _rounded(values: Tensor) -> Tensor:
    """4 decimals in float64, so the JSON props stay short (``0.1234``, not ``0.12340000271797180``)."""
    return torch.round(values.detach().double().cpu(), decimals=4)


def _check_pattern(pattern: Tensor, labels: Sequence[str]) -> None:
    if not isinstance(pattern, Tensor) or pattern.dim() != 3 or pattern.shape[1] != pattern.shape[2]:
        shape = getattr(pattern, "shape", type(pattern))
        raise ValueError(f"pattern must be a [head, q_pos, k_pos] tensor, got {shape}")
    if len(labels) != pattern.shape[2]:
        raise ValueError(f"{len(labels)} token labels for {pattern.shape[2]} positions")


# ----------------------------------------------------------------------------- figures


def plot_readout_attention(
    pattern: Float[Tensor, "head q k"],
    labels: Sequence[str],
    readout: int,
    head_names: Sequence[str] | None = None,
    title: str = "attention from the read-out position",
):
    """Heat map of every head's attention from the ``readout`` query to each key position of one
    example (rows: heads, columns: key tokens up to the read-out)."""
    import matplotlib.pyplot as plt

    from hooks.plotting import heatmap, style

    _check_pattern(pattern, labels)
    (readout,) = check_positions(readout, pattern.shape[1], "readout")
    rows = pattern[:, readout, : readout + 1].float()
    names = list(head_names) if head_names is not None else [f"head {h}" for h in range(pattern.shape[0])]
    width = min(11.0, 3.5 + 0.2 * (readout + 1))
    with style():
        fig, ax = plt.subplots(figsize=(width, 2.2 + 0.3 * len(names)))
        heatmap(
            ax,
            rows,
            title=title,
            xlabel="key token (position)",
            ylabel="head",
            colorbar_label="attention weight",
            xticklabels=[f"{t} ({i})" for i, t in enumerate(labels[: readout + 1])],
            yticklabels=names,
            diverging=False,
            vmin=0.0,
        )
    return fig


def views_script(views: Sequence[CircuitsVisView]) -> str:
    """One ``<script>`` rendering every view into its ``<div id=element_id>``, the bundle inlined
    once; a view that fails to render logs the error and the others still render."""
    calls = "\n".join(f"try {{ {v.render_call()} }} catch (error) {{ console.error(error); }}" for v in views)
    return f'<script type="module">\n{circuitsvis_bundle()}\n{calls}\n</script>'


def view_html(views: Sequence[CircuitsVisView]) -> str:
    """An offline HTML fragment holding ``views`` (e.g. several views in one notebook cell)."""
    divs = "\n".join(f'<div id="{v.element_id}"></div>' for v in views)
    return f"{divs}\n{views_script(views)}"
