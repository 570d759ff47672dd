"""The read-out-position logits of the one-layer LCA model, computed from the model's own parameters.

A one-layer, attention-only model's output at the last position depends only on that
position's attention over the embeddings, so the other L positions' attention rows (an
O(L^2) cost that dominates a HookedTransformer forward on CPU) are not needed for training.
:func:`query_logits` computes exactly ``model(tokens)[:, -1]`` (checked by a test) in O(L),
differentiably, from the real parameters. Analysis and every intervention go through the
HookedTransformer forward and TransformerLens hooks, never through this function.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn


def query_logits(model: nn.Module, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch d_vocab_out"]:
    """``model(tokens)[:, -1]`` for a 1-layer, attention-only, no-LayerNorm HookedTransformer."""
    cfg = model.cfg
    if cfg.n_layers != 1 or not cfg.attn_only or cfg.normalization_type is not None:
        raise ValueError("query_logits needs a 1-layer, attention-only model without LayerNorm")
    attn = model.blocks[0].attn
    P = tokens.shape[1]
    resid = F.embedding(tokens, model.embed.W_E) + model.pos_embed.W_pos[:P]  # [B, P, d_model]; deterministic backward
    q = torch.einsum("bd,hde->bhe", resid[:, -1], attn.W_Q) + attn.b_Q  # [B, H, d_head]
    # score_p = (x_p W_K + b_K) . q = x_p . (W_K q) + b_K . q: no per-position keys needed
    u = torch.einsum("hde,bhe->bhd", attn.W_K, q)
    scores = (torch.einsum("bpd,bhd->bhp", resid, u) + (attn.b_K * q).sum(-1)[..., None]) / attn.attn_scale
    pattern = scores.softmax(dim=-1)  # the last position sees every position (causal mask is a no-op)
    # sum_p a_p (x_p W_V + b_V) = (sum_p a_p x_p) W_V + b_V, since the pattern sums to 1
    mixed = torch.einsum("bhp,bpd->bhd", pattern, resid)
    z = torch.einsum("bhd,hde->bhe", mixed, attn.W_V) + attn.b_V
    out = torch.einsum("bhe,hed->bd", z, attn.W_O) + attn.b_O
    if getattr(model, "lca_residual", True):  # False after model.remove_residual_
        out = out + resid[:, -1]
    return out @ model.unembed.W_U + model.unembed.b_U
