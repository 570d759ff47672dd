"""The fused forward: a toy transformer's logits from its weights, in plain PyTorch.

The weights come in "row-vector" layout, ``x @ W`` (TransformerLens multiplies row vectors too):
``W_Q``/``W_K``/``W_V`` ``[d_model, n_heads * d_head]``, ``W_O`` ``[n_heads * d_head, d_model]``,
``W_in`` ``[d_model, d_mlp]``, ``W_out`` ``[d_mlp, d_model]``, ``W_U`` ``[d_model, d_vocab_out]``.
They are views of (or small differentiable functions of) the model's own parameters, so the
backward pass writes the model's own ``.grad``. ``None`` stands for an identity projection
(``W_Q = I``, frozen) or a bias that is zero and frozen: both are skipped, which changes no bit.

Per block (pre-LayerNorm, as TransformerLens):
``resid_mid = resid_pre + attn(ln1(resid_pre))``, ``resid_post = resid_mid + mlp(ln2(resid_mid))``,
with the declared hook effects applied at ``resid_mid`` and ``resid_post``.

:func:`fused_last_logits` is the read-out at the last position alone (what a task whose loss reads only that
position needs): the last block computes one query per sequence, in O(pos) instead of O(pos^2).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from .effects import HookEffect

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
}


@dataclass
class Norm:
    """A LayerNorm (``w``, ``b`` given), LNPre (both ``None``), or no norm (``eps is None``)."""

    eps: float | None = None
    w: Tensor | None = None
    b: Tensor | None = None

    def __call__(self, x: Tensor) -> Tensor:
        if self.eps is None:
            return x
        normalized = F.layer_norm(x, x.shape[-1:], eps=self.eps)
        # the affine part apart: F.layer_norm's own weight/bias gradients change with the thread count
        return normalized if self.w is None else normalized * self.w + self.b


@dataclass
class Block:
    """One block's weights (row-vector layout) and the hook effects at its residual-stream points."""

    n_heads: int
    d_head: int
    scale: float  # scores are divided by it (TransformerLens's attn_scale)
    ln1: Norm
    W_Q: Tensor | None
    b_Q: Tensor | None
    W_K: Tensor
    b_K: Tensor | None
    W_V: Tensor
    b_V: Tensor | None
    W_O: Tensor
    b_O: Tensor | None
    ln2: Norm | None = None  # None: attention only
    W_in: Tensor | None = None
    b_in: Tensor | None = None
    W_out: Tensor | None = None
    b_out: Tensor | None = None
    act_fn: str = "relu"
    effects: dict[str, tuple[HookEffect, ...]] = field(default_factory=dict)


@dataclass
class Weights:
    """Everything the fused forward reads."""

    W_E: Tensor
    W_pos: Tensor | None
    blocks: list[Block]
    ln_final: Norm
    W_U: Tensor
    b_U: Tensor | None


def linear(x: Tensor, W: Tensor | None, b: Tensor | None) -> Tensor:
    """``x @ W + b`` with ``W = None`` the identity and ``b = None`` zero (fused into one addmm)."""
    if W is not None:
        return F.linear(x, W.T, b)
    return x if b is None else x + b


def attention(blk: Block, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
    """Causal multi-head attention through ``F.scaled_dot_product_attention``."""
    batch, pos, _ = x.shape

    def heads(t: Tensor) -> Tensor:  # [batch, pos, n_heads * d_head] -> [batch, n_heads, pos, d_head]
        return t.view(batch, pos, blk.n_heads, blk.d_head).transpose(1, 2)

    q, k, v = (heads(linear(x, W, b)) for W, b in ((blk.W_Q, blk.b_Q), (blk.W_K, blk.b_K), (blk.W_V, blk.b_V)))
    z = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0 / blk.scale)
    z = z.transpose(1, 2).reshape(batch, pos, blk.n_heads * blk.d_head)
    return linear(z, blk.W_O, blk.b_O)


def apply_effects(effects: tuple[HookEffect, ...], x: Tensor, resid_pre: Tensor) -> Tensor:
    """The declared hooks at one point, in registration order (``OBSERVE`` hooks are not listed)."""
    for effect in effects:
        if effect is HookEffect.SUBTRACT_BLOCK_INPUT:
            x = x - resid_pre
        else:  # the planner only lists effects implemented here
            raise AssertionError(f"unexpected effect {effect}")
    return x


def mlp(blk: Block, resid_mid: Tensor) -> Tensor:
    """The block's MLP output (after ``ln2``) at every position of ``resid_mid``."""
    hidden = ACTIVATIONS[blk.act_fn](linear(blk.ln2(resid_mid), blk.W_in, blk.b_in))
    return linear(hidden, blk.W_out, blk.b_out)


def block_forward(blk: Block, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
    """One transformer block (see the module docstring)."""
    fx, resid_pre = blk.effects, x
    resid_mid = resid_pre + attention(blk, blk.ln1(resid_pre))
    resid_mid = apply_effects(fx.get("resid_mid", ()), resid_mid, resid_pre)
    resid_post = resid_mid if blk.ln2 is None else resid_mid + mlp(blk, resid_mid)
    return apply_effects(fx.get("resid_post", ()), resid_post, resid_pre)


def embed(w: Weights, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_model"]:
    """Token (and position) embeddings (``F.embedding``: a deterministic backward, unlike ``W_E[tokens]``)."""
    x = F.embedding(tokens, w.W_E)
    return x if w.W_pos is None else x + w.W_pos[: tokens.shape[1]]


def fused_logits(w: Weights, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_vocab_out"]:
    """The model's logits."""
    x = embed(w, tokens)
    for blk in w.blocks:
        x = block_forward(blk, x)
    return linear(w.ln_final(x), w.W_U, w.b_U)


# --- the read-out at the last position ---------------------------------------------------------------------


def _per_head(W: Tensor, n_heads: int) -> Tensor:
    """``[d_model, n_heads * d_head]`` (row layout) -> ``[n_heads, d_model, d_head]`` (a view)."""
    return W.view(W.shape[0], n_heads, -1).permute(1, 0, 2)


def last_query_attention(blk: Block, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch d_model"]:
    """The attention output at the last position alone, in O(pos) rather than :func:`attention`'s O(pos^2).

    The last query attends to every position (the causal mask is a no-op for it), and two identities avoid
    computing a key and a value at each position: ``score_p = (x_p W_K + b_K) . q = x_p . (W_K q) + b_K . q``
    and ``sum_p a_p (x_p W_V + b_V) = (sum_p a_p x_p) W_V + b_V`` (the pattern sums to 1)."""
    H, d_head = blk.n_heads, blk.d_head
    x_last = x[:, -1]
    if blk.W_Q is None:  # the identity
        q = x_last.view(x.shape[0], H, d_head)
    else:
        q = torch.einsum("bd,hde->bhe", x_last, _per_head(blk.W_Q, H))
    if blk.b_Q is not None:
        q = q + blk.b_Q.view(H, d_head)
    u = torch.einsum("hde,bhe->bhd", _per_head(blk.W_K, H), q)  # [batch, n_heads, d_model]
    scores = torch.einsum("bpd,bhd->bhp", x, u)
    if blk.b_K is not None:
        scores = scores + (blk.b_K.view(H, d_head) * q).sum(-1)[..., None]
    pattern = (scores / blk.scale).softmax(dim=-1)
    mixed = torch.einsum("bhp,bpd->bhd", pattern, x)
    z = torch.einsum("bhd,hde->bhe", mixed, _per_head(blk.W_V, H))
    if blk.b_V is not None:
        z = z + blk.b_V.view(H, d_head)
    out = torch.einsum("bhe,hed->bd", z, blk.W_O.view(H, d_head, -1))
    return out if blk.b_O is None else out + blk.b_O


def last_block_forward(blk: Block, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch d_model"]:
    """:func:`block_forward` at the last position only. An attention-only block whose one declared hook removes
    the residual (``SUBTRACT_BLOCK_INPUT`` at ``resid_post``) gives its attention output itself: the exact value
    of ``(resid_pre + attn) - resid_pre``, one rounding fewer."""
    fx, resid_pre = blk.effects, x[:, -1]
    attn = last_query_attention(blk, blk.ln1(x))
    if blk.ln2 is None and not fx.get("resid_mid") and fx.get("resid_post") == (HookEffect.SUBTRACT_BLOCK_INPUT,):
        return attn
    resid_mid = apply_effects(fx.get("resid_mid", ()), resid_pre + attn, resid_pre)
    resid_post = resid_mid if blk.ln2 is None else resid_mid + mlp(blk, resid_mid)
    return apply_effects(fx.get("resid_post", ()), resid_post, resid_pre)


def fused_last_logits(w: Weights, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch d_vocab_out"]:
    """``fused_logits(w, tokens)[:, -1]``, the logits at the last position: every block but the last runs at
    every position, the last one at the last position alone (:func:`last_block_forward`)."""
    x = embed(w, tokens)
    for blk in w.blocks[:-1]:
        x = block_forward(blk, x)
    return linear(w.ln_final(last_block_forward(w.blocks[-1], x)), w.W_U, w.b_U)
