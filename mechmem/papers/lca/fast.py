"""The read-out-position logits of the one-layer LCA model, computed from the model's own parameters.

A one-layer, attention-only model's output at the last position depends only on that
position's attention over the embeddings, so the other L positions' attention rows (an
O(L^2) cost that dominates a full forward pass on CPU) are not needed for training.
:func:`query_logits` computes exactly ``model(tokens)[:, -1]`` (checked by a test) in O(L),
differentiably, from the real parameters. Analysis and every intervention go through the
model's own forward and TransformerLens hooks, never through this function.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

from hooks.compat import attention_scale
from hooks.weights import weight_views

_NAMES = ("W_E", "W_pos", "W_U", "b_U") + tuple(
    f"blocks.0.attn.{w}" for w in ("W_Q", "b_Q", "W_K", "b_K", "W_V", "b_V", "W_O", "b_O")
)


def query_logits(model: nn.Module, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch d_vocab_out"]:
    """``model(tokens)[:, -1]`` for a 1-layer, attention-only, no-LayerNorm model (either kind)."""
    cfg = model.cfg
    if cfg.n_layers != 1 or not cfg.attn_only or cfg.normalization_type is not None:
        raise ValueError("query_logits needs a 1-layer, attention-only model without LayerNorm")
    W_E, W_pos, W_U, b_U, W_Q, b_Q, W_K, b_K, W_V, b_V, W_O, b_O = weight_views(model, *_NAMES)
    P = tokens.shape[1]
    resid = F.embedding(tokens, W_E) + W_pos[:P]  # [B, P, d_model]; F.embedding: a deterministic backward
    q = torch.einsum("bd,hde->bhe", resid[:, -1], W_Q) + b_Q  # [B, H, d_head]
    # score_p = (x_p W_K + b_K) . q = x_p . (W_K q) + b_K . q: no per-position keys needed
    u = torch.einsum("hde,bhe->bhd", W_K, q)
    scores = (torch.einsum("bpd,bhd->bhp", resid, u) + (b_K * q).sum(-1)[..., None]) / attention_scale(model)
    pattern = scores.softmax(dim=-1)  # the last position sees every position (causal mask is a no-op)
    # sum_p a_p (x_p W_V + b_V) = (sum_p a_p x_p) W_V + b_V, since the pattern sums to 1
    mixed = torch.einsum("bhp,bpd->bhd", pattern, resid)
    z = torch.einsum("bhd,hde->bhe", mixed, W_V) + b_V
    out = torch.einsum("bhe,hed->bd", z, W_O) + b_O
    if getattr(model, "lca_residual", True):  # False after model.remove_residual_
        out = out + resid[:, -1]
    return out @ W_U + b_U
