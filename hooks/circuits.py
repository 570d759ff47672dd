"""Every head's OV and QK circuit read through the embeddings: the associative-memory picture.

For head ``h`` of layer ``l`` (TransformerLens row-vector convention, weights read with
:func:`hooks.replace.ov_circuit` / :func:`hooks.replace.qk_circuit` on either model kind):

- **OV through the embeddings** ``W_E W_V W_O W_U`` [token, output]: the logits the head adds when
  it attends fully to ``token`` (a key -> value memory shows up as one bright cell per row);
- **QK through the embeddings** ``W_E W_Q W_K^T W_E^T / attn_scale`` [query token, key token]: the
  pre-softmax attention score of a query token on a key token (what the head selects);
- **QK through the positions** ``W_pos W_Q W_K^T W_pos^T / attn_scale`` [query position, key
  position], for models whose positional embedding is not zero;
- **OV spectrum**: the singular values of ``W_V W_O`` (at most ``d_head`` non-zero: its rank).

These are the direct path only: LayerNorm, biases and the other layers' contributions to the
residual stream are left out (exact for the papers' one-layer models without normalisation).
Functions take any ``HookedTransformer`` or ``TransformerBridge`` (on any device) and return CPU float
tensors; plots return pyplot figures.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor, nn

from hooks.compat import attention_scale
from hooks.names import check_head, check_layer
from hooks.plotting import grid, heatmap, style
from hooks.replace import ov_circuit, qk_circuit
from hooks.weights import get_weight, weight_names

Head = tuple[int, int]


def all_heads(model: nn.Module) -> list[Head]:
    """``[(layer, head), ...]`` for every head of ``model``."""
    return [(layer, head) for layer in range(model.cfg.n_layers) for head in range(model.cfg.n_heads)]


def check_heads(model: nn.Module, heads: Sequence[Head] | None) -> list[Head]:
    """``heads`` as a checked list of ``(layer, head)`` pairs (``None``: every head)."""
    if heads is None:
        return all_heads(model)
    out = []
    for item in heads:
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise ValueError(f"heads must be (layer, head) pairs, got {item!r}")
        out.append((check_layer(model, item[0]), check_head(model, item[1])))
    if not out:
        raise ValueError("heads is empty; pass None for every head")
    return out


def _index(values: Sequence[int] | None, size: int, what: str) -> Tensor:
    if values is None:
        return torch.arange(size)
    index = torch.as_tensor(list(values), dtype=torch.long)
    if index.numel() == 0 or index.min() < 0 or index.max() >= size:
        raise ValueError(f"{what} must be a non-empty list of ids in [0, {size - 1}], got {list(values)[:8]}...")
    return index


def positional_embedding(model: nn.Module) -> Float[Tensor, "n_ctx d_model"] | None:
    """``W_pos``, or ``None`` when the model has none or it is all zero (no positional terms)."""
    if "W_pos" not in weight_names(model):
        return None
    W_pos = get_weight(model, "W_pos")
    return None if not W_pos.any() else W_pos


def ov_through_embeddings(
    model: nn.Module, layer: int, head: int, tokens: Sequence[int] | None = None, outputs: Sequence[int] | None = None
) -> Float[Tensor, "token output"]:
    """``W_E[tokens] W_V W_O W_U[:, outputs]``: logits added per unit of attention on each token."""
    W_E, W_U = get_weight(model, "W_E"), get_weight(model, "W_U")
    rows = W_E[_index(tokens, W_E.shape[0], "tokens")]
    cols = W_U[:, _index(outputs, W_U.shape[1], "outputs")]
    return (rows @ ov_circuit(model, layer, head).AB @ cols).float().cpu()


def qk_through_embeddings(
    model: nn.Module, layer: int, head: int, queries: Sequence[int] | None = None, keys: Sequence[int] | None = None
) -> Float[Tensor, "query key"]:
    """``W_E[queries] W_Q W_K^T W_E[keys]^T / attn_scale``: pre-softmax score of each token pair."""
    W_E = get_weight(model, "W_E")
    q = W_E[_index(queries, W_E.shape[0], "queries")]
    k = W_E[_index(keys, W_E.shape[0], "keys")]
    return (q @ qk_circuit(model, layer, head).AB @ k.T / attention_scale(model)).float().cpu()


def qk_through_positions(
    model: nn.Module, layer: int, head: int, n_positions: int | None = None
) -> Float[Tensor, "query_pos key_pos"]:
    """``W_pos W_Q W_K^T W_pos^T / attn_scale`` on the first ``n_positions`` positions; the entries a
    causal mask hides (key after query) are NaN. Raises ``ValueError`` without positional terms."""
    W_pos = positional_embedding(model)
    if W_pos is None:
        raise ValueError("this model has no positional embedding (W_pos is absent or zero): no positional QK terms")
    n = W_pos.shape[0] if n_positions is None else n_positions
    if not isinstance(n, int) or not 1 <= n <= W_pos.shape[0]:
        raise ValueError(f"n_positions must be an int in [1, {W_pos.shape[0]}], got {n_positions!r}")
    P = W_pos[:n]
    scores = (P @ qk_circuit(model, layer, head).AB @ P.T / attention_scale(model)).float().cpu()
    if getattr(model.cfg, "attention_dir", "causal") == "causal":
        scores[torch.ones(n, n, dtype=torch.bool).triu(1)] = float("nan")
    return scores


def ov_spectrum(model: nn.Module, layer: int, head: int) -> Float[Tensor, " d_head"]:
    """Singular values of the head's ``W_V W_O`` [d_model, d_model], largest first (``d_head`` values)."""
    return ov_circuit(model, layer, head).S.detach().float().cpu()


# ----------------------------------------------------------------------------- figures


def _head_name(layer: int, head: int) -> str:
    return f"L{layer}H{head}"


def _panel(n_rows: int, n_cols: int) -> tuple[float, float]:
    """Panel size (inches) that leaves every labelled cell readable."""
    width = min(10.0, max(3.6, 1.6 + 0.075 * n_cols))
    return width, min(10.0, max(3.2, 1.2 + 0.075 * n_rows))


def _columns(panel: tuple[float, float], page_width: float = 15.0) -> int:
    """Panels per row so that a figure stays about a page wide (small panels: up to 4)."""
    return max(1, min(4, int(page_width // panel[0])))


def plot_ov_circuits(
    model: nn.Module,
    heads: Sequence[Head] | None = None,
    tokens: Sequence[int] | None = None,
    token_labels: Sequence[str] | None = None,
    outputs: Sequence[int] | None = None,
    output_labels: Sequence[str] | None = None,
):
    """One heat map per head of :func:`ov_through_embeddings` (rows: the token attended to, columns:
    the output logit). ``token_labels`` / ``output_labels`` name the rows / columns shown."""
    heads = check_heads(model, heads)
    n_rows = len(tokens) if tokens is not None else model.cfg.d_vocab
    n_cols = len(outputs) if outputs is not None else model.cfg.d_vocab_out
    panel = _panel(n_rows, n_cols)
    fig, axes = grid(len(heads), ncols=_columns(panel), panel=panel)
    for ax, (layer, head) in zip(axes, heads):
        ov = ov_through_embeddings(model, layer, head, tokens, outputs)
        heatmap(
            ax,
            ov,
            title=f"{_head_name(layer, head)} OV: W_E W_V W_O W_U",
            xlabel="output token (logit)",
            ylabel="token attended to",
            colorbar_label="logit added per unit attention",
            xticklabels=output_labels,
            yticklabels=token_labels,
        )
    return fig


def plot_qk_circuits(
    model: nn.Module,
    heads: Sequence[Head] | None = None,
    tokens: Sequence[int] | None = None,
    token_labels: Sequence[str] | None = None,
):
    """One heat map per head of :func:`qk_through_embeddings` over ``tokens`` (queries and keys)."""
    heads = check_heads(model, heads)
    n = len(tokens) if tokens is not None else model.cfg.d_vocab
    panel = _panel(n, n)
    fig, axes = grid(len(heads), ncols=_columns(panel), panel=panel)
    for ax, (layer, head) in zip(axes, heads):
        qk = qk_through_embeddings(model, layer, head, tokens, tokens)
        heatmap(
            ax,
            qk,
            title=f"{_head_name(layer, head)} QK: W_E W_Q W_K^T W_E^T",
            xlabel="key token",
            ylabel="query token",
            colorbar_label="attention score (pre-softmax)",
            xticklabels=token_labels,
            yticklabels=token_labels,
        )
    return fig


def plot_positional_qk(model: nn.Module, heads: Sequence[Head] | None = None, n_positions: int | None = None):
    """One heat map per head of :func:`qk_through_positions` (blank above the diagonal: masked)."""
    heads = check_heads(model, heads)
    fig, axes = grid(len(heads))
    for ax, (layer, head) in zip(axes, heads):
        qk = qk_through_positions(model, layer, head, n_positions)
        heatmap(
            ax,
            qk,
            title=f"{_head_name(layer, head)} QK: W_pos W_Q W_K^T W_pos^T",
            xlabel="key position",
            ylabel="query position",
            colorbar_label="attention score (pre-softmax)",
        )
    return fig


def plot_ov_spectra(model: nn.Module, heads: Sequence[Head] | None = None):
    """Singular values of every head's ``W_V W_O`` (one line per head, log scale)."""
    import matplotlib.pyplot as plt

    heads = check_heads(model, heads)
    with style():
        fig, ax = plt.subplots(figsize=(5.5, 3.4))
        for layer, head in heads:
            s = ov_spectrum(model, layer, head).clamp_min(1e-12)
            ax.plot(range(1, len(s) + 1), s.numpy(), marker="o", ms=3, label=f"layer {layer}, head {head}")
        ax.set(
            yscale="log",
            xlabel="singular value index (1 = largest)",
            ylabel="singular value of W_V W_O",
            title="OV spectra: how many directions each head copies",
        )
        if len(heads) <= 12:
            ax.legend(loc="best", ncol=1 + len(heads) // 6)
    return fig
