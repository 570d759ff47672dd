"""The hand-built induction head of the paper's Section 5: the three associative memories written down, no training.

All matrices are in TransformerLens orientation (row vectors, ``QK = W_Q W_K^T``, ``OV = W_V W_O``) and
W_Q is the identity, so the layer's QK circuit is ``W_K^T``. Each construction is normalised so that its
``lam`` is the margin it creates *after* TransformerLens's 1/sqrt(d_head) attention scaling (an attention
score margin for the key memories, a logit margin for the output memory).

- Layer 1, previous-token head: QK^1 = lam1 * sum_t p_t^T p_{t-1}     (paper: W_K^1 = lam1 sum_t p_t p_{t-1}^T)
- Layer 2, induction head:      QK^2 = lam2 * sum_k w_E(k)^T w_1(k)    (w_1(k) = w_E(k) OV^1, the remapped token)
- Layer 2, output:              OV^2 = lam3 * sum_k v(k)^T w_U(k)       (v(k) = w_E(k) W_V^2;
                                                                         so OV^2 maps w_E(b) to w_U(b))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from hooks.weights import get_weight, set_weight_


@dataclass(frozen=True)
class HandbuiltScales:
    """Margins of the three memories (score or logit units after 1/sqrt(d_head) scaling)."""

    lam1: float = 40.0
    lam2: float = 40.0
    lam3: float = 20.0


def previous_token_W_K(W_pos: Float[Tensor, "T d"], lam: float, d_head: int) -> Float[Tensor, "d d"]:
    """W_K^1 (TransformerLens layout, W_Q = I) such that query p_t scores key p_{t-1} at ~lam."""
    P = W_pos
    norm2 = P.pow(2).sum(-1).mean()
    qk = P[1:].T @ P[:-1] / norm2**2  # p_t QK p_{t-1}^T ~ 1
    return (lam * math.sqrt(d_head) * qk).T


def induction_W_K(
    W_E: Float[Tensor, "N d"],
    OV_prev: Float[Tensor, "d d"],
    lam: float,
    d_head: int,
    tokens: Sequence[int] | None = None,
) -> Float[Tensor, "d d"]:
    """W_K^2 such that query w_E(a) scores a key carrying w_1(a) = w_E(a) OV^1 at ~lam (tokens: the stored keys,
    the triggers for a trigger-specific head, all tokens for a generic induction head)."""
    ids = torch.arange(W_E.shape[0]) if tokens is None else torch.as_tensor(list(tokens))
    E, W1 = W_E[ids], W_E[ids] @ OV_prev
    qk = E.T @ W1 / (E.pow(2).sum(-1).mean() * W1.pow(2).sum(-1).mean())
    return (lam * math.sqrt(d_head) * qk).T


def output_W_O(
    W_E: Float[Tensor, "N d"], W_V: Float[Tensor, "d h"], W_U: Float[Tensor, "d N"], lam: float
) -> Float[Tensor, "h d"]:
    """W_O^2 such that the value of token b, w_E(b) W_V^2, is written as ~lam * w_U(b) / |w_U|^2 (logit ~lam)."""
    V, U = W_E @ W_V, W_U.T
    return lam * V.T @ U / (V.pow(2).sum(-1).mean() * U.pow(2).sum(-1).mean())


def install_handbuilt_(
    model, scales: HandbuiltScales = HandbuiltScales(), key_tokens: Sequence[int] | None = None
) -> None:
    """Write the three memories into a 2-layer, 1-head-per-layer model with W_Q = I (in place).

    The other weights (embeddings, W_V^1, W_O^1, W_V^2, W_U) stay as they are: random and frozen.
    """
    cfg = model.cfg
    if cfg.n_layers != 2 or cfg.n_heads != 1:
        raise ValueError(
            f"the hand-built induction head needs n_layers=2, n_heads=1; got "
            f"n_layers={cfg.n_layers}, n_heads={cfg.n_heads}"
        )
    for layer in range(2):
        W_Q = get_weight(model, f"blocks.{layer}.attn.W_Q")[0]
        if W_Q.shape[0] != W_Q.shape[1] or not torch.allclose(W_Q, torch.eye(W_Q.shape[0])):
            raise ValueError("the hand-built induction head needs W_Q = identity (build with identity_W_Q=True)")
    W_E, W_pos, W_U = get_weight(model, "W_E"), get_weight(model, "W_pos"), get_weight(model, "W_U")
    OV1 = get_weight(model, "blocks.0.attn.W_V")[0] @ get_weight(model, "blocks.0.attn.W_O")[0]
    W_V2 = get_weight(model, "blocks.1.attn.W_V")[0]
    d_head = cfg.d_head
    set_weight_(model, "blocks.0.attn.W_K", previous_token_W_K(W_pos, scales.lam1, d_head)[None])
    set_weight_(model, "blocks.1.attn.W_K", induction_W_K(W_E, OV1, scales.lam2, d_head, key_tokens)[None])
    set_weight_(model, "blocks.1.attn.W_O", output_W_O(W_E, W_V2, W_U, scales.lam3)[None])
