"""Memory-recall probes of "Birth of a Transformer" (as in the authors' code), in TransformerLens orientation.

TransformerLens multiplies row vectors: a score is ``q . k`` with ``q = x W_Q`` and ``k = x W_K``, so the
paper's key-query matrix ``x_t^T W_K x_s`` reads as ``x_t QK x_s^T`` with ``QK = W_Q W_K^T`` (the
``qk_circuit``), and the paper's ``W_O W_V`` is TransformerLens's ``OV = W_V W_O`` (the ``ov_circuit``).

Each probe asks whether a matrix stores its associations: recall = fraction of queries whose argmax over the
candidate keys (or output rows) is the right one.

- ``wo1``: W_U^T (W_O^2 W_V^2) w_E(k) -> k, over all tokens (paper's W_O^2 as an output memory).
- ``wk1``: w_E(k)^T W_K^2 w_1(k') maximal at k' = k, with w_1 = W_O^1 W_V^1 w_E, over the triggers.
- ``wk0``: p_t^T W_K^1 p_s maximal at s = t - 1, over all key positions (``wk0_64``: the first 64).
- ``ff1``: KL(pi_b(. | i) || softmax(W_U F(w_E(i)))) over non-trigger tokens, F the feed-forward of layer 2.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from jaxtyping import Float
from torch import Tensor


def recall(scores: Float[Tensor, "query key"], targets: Tensor) -> float:
    """Fraction of rows whose argmax column equals its target."""
    return float((scores.argmax(-1) == targets).float().mean())


def wo_recall(
    W_E: Float[Tensor, "N d"], OV: Float[Tensor, "d d"], W_U: Float[Tensor, "d N"], tokens: Sequence[int] | None = None
) -> float:
    """Recall of the output memory: argmax_j of w_E(k) OV W_U[:, j] should be k."""
    ids = torch.arange(W_E.shape[0]) if tokens is None else torch.as_tensor(list(tokens))
    return recall(W_E[ids] @ OV @ W_U, ids)


def wk_recall(
    W_E: Float[Tensor, "N d"],
    QK: Float[Tensor, "d d"],
    OV_prev: Float[Tensor, "d d"],
    tokens: Sequence[int] | None = None,
) -> float:
    """Recall of the induction key memory: the query w_E(k) should score the key w_1(k) = w_E(k) OV_prev highest
    among all w_1(k')."""
    ids = torch.arange(W_E.shape[0]) if tokens is None else torch.as_tensor(list(tokens))
    keys = W_E @ OV_prev
    return recall(W_E[ids] @ QK @ keys.T, ids)


def wk0_recall(W_pos: Float[Tensor, "L d"], QK: Float[Tensor, "d d"], n_positions: int | None = None) -> float:
    """Recall of the previous-token memory: query p_t (t = 1..L-1) should score key p_{t-1} highest among the
    keys p_0..p_{L-2} (future positions included, as the authors' probe does)."""
    P = W_pos if n_positions is None else W_pos[:n_positions]
    scores = P[1:] @ QK @ P[:-1].T
    return recall(scores, torch.arange(P.shape[0] - 1))


def ff_kl(
    W_E: Float[Tensor, "N d"],
    ffn: Callable[[Tensor], Tensor],
    W_U: Float[Tensor, "d N"],
    pi_b: Float[Tensor, "N N"],
    tokens: Sequence[int],
) -> float:
    """Mean KL(pi_b(. | i) || softmax(F(w_E(i)) W_U)) over the given tokens (nats)."""
    ids = torch.as_tensor(list(tokens))
    logq = torch.log_softmax((ffn(W_E[ids]) @ W_U).double(), -1)
    p = pi_b[ids].double()
    kl = (p * (torch.where(p > 0, p.log(), torch.zeros_like(p)) - logq)).sum(-1)
    return float(kl.mean())


def _circuits(model):
    """(OV^1, QK^1, OV^2, QK^2) of head 0 in layers 0 and 1, dense [d_model, d_model] (TransformerLens layout)."""
    from hooks.replace import ov_circuit, qk_circuit

    return tuple(circuit(model, layer, 0).AB.detach() for layer in (0, 1) for circuit in (ov_circuit, qk_circuit))


def memory_probes(
    model,
    triggers: Sequence[int] | None = None,
    output_tokens: Sequence[int] | None = None,
    ff_tokens: Sequence[int] | None = None,
    pi_b: Tensor | None = None,
) -> dict[str, float]:
    """The four probes on a 2-layer model (head 0 of each layer), read with the ``hooks`` circuit readers.

    triggers: the keys of ``wk1`` (None or empty: all tokens); output_tokens: the set of ``wo1`` (None: all);
    ff_tokens / pi_b: the set and bigram table of ``ff1`` (computed only when layer 2 has an MLP).
    """
    from hooks.weights import get_weight

    OV1, QK1, OV2, QK2 = _circuits(model)
    W_E, W_pos, W_U = get_weight(model, "W_E"), get_weight(model, "W_pos"), get_weight(model, "W_U")
    out = {
        "wo1": wo_recall(W_E, OV2, W_U, output_tokens),
        "wk1": wk_recall(W_E, QK2, OV1, triggers or None),
        "wk0": wk0_recall(W_pos, QK1),
        "wk0_64": wk0_recall(W_pos, QK1, 64),
    }
    if not model.cfg.attn_only and pi_b is not None and ff_tokens is not None:
        mlp = model.blocks[1].mlp
        with torch.no_grad():
            out["ff1"] = ff_kl(W_E, lambda x: mlp(x[None])[0], W_U, pi_b, ff_tokens)
    return out
