"""The read-out position's attention in the LCA model: its pattern, uniform attention in its place (a
``hook_pattern`` hook), the pre-softmax score of every token pair, and a CircuitsVis view of one example."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hooks.compat import attention_scale
from hooks.replace import qk_circuit
from hooks.weights import get_weight

from .training import accuracy

PATTERN = "blocks.0.attn.hook_pattern"


def uniform_pattern_hook(pattern: Tensor, hook) -> Tensor:
    """Replace the attention pattern by causal uniform attention (row q spreads 1/(q+1) on 0..q)."""
    q = pattern.shape[-2]
    causal = torch.tril(torch.ones(q, pattern.shape[-1], dtype=pattern.dtype, device=pattern.device))
    return (causal / causal.sum(-1, keepdim=True)).expand_as(pattern)


@torch.no_grad()
def uniform_attention_accuracy(model: nn.Module, tokens: Tensor, y: Tensor) -> float:
    """Accuracy when the learned pattern is replaced by uniform attention (a ``hook_pattern`` hook)."""
    with model.hooks(fwd_hooks=[(PATTERN, uniform_pattern_hook)]):
        return accuracy(model, tokens, y)


@torch.no_grad()
def readout_attention(model: nn.Module, tokens: Tensor) -> Tensor:
    """The read-out position's attention over the context, ``[batch, L]`` (run_with_cache on hook_pattern)."""
    _, cache = model.run_with_cache(tokens, names_filter=PATTERN)
    return cache[PATTERN][:, 0, -1, :]


def token_scores(model: nn.Module) -> Tensor:
    """Pre-softmax score of every (query token, key token) pair: W_E W_Q W_K^T W_E^T / sqrt(d_head)."""
    W_E = get_weight(model, "W_E")
    return (W_E @ qk_circuit(model, 0, 0).AB @ W_E.T / attention_scale(model)).float()


def circuitsvis_view(model: nn.Module, tokens: Tensor, y: int, task) -> str:
    """A self-contained (offline) CircuitsVis attention view of one example."""
    import circuitsvis as cv

    _, cache = model.run_with_cache(tokens[None], names_filter=PATTERN)
    names = [f"{t}{'*' if (t >> (task.m - 2)) == (y >> (task.m - 2)) else ''}" for t in tokens.tolist()]
    html = cv.attention.attention_heads(attention=cache[PATTERN][0], tokens=names, attention_head_names=["head 0"])
    header = f"<p>Cluster variant, target y={y}; * marks context tokens in the target's cluster.</p>"
    return f"<!DOCTYPE html><html><head><meta charset='utf-8'></head><body>{header}{html.local_src}</body></html>"
