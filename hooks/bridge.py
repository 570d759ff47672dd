"""Bridges whose attention hooks are live: the one place where a ``TransformerBridge.boot_native``
model is made fit for the hook tools, on TransformerLens 3.9 and 4.x alike.

Why: ``boot_native`` builds ``NativeAttention`` (``transformer_lens/model_bridge/sources/native/
model.py``), whose ``forward`` computes ``o(pattern @ v)`` itself and returns ``(out, pattern)``.
``AttentionBridge.forward`` (``model_bridge/generalized_components/attention.py``) then fires
``hook_pattern`` and ``hook_attn_scores`` on the returned pattern, after ``out`` exists:

- TransformerLens 3.9: editing either hook changes nothing downstream (the hooks are inert);
- TransformerLens 4.3 passes ``hook_pattern`` into the computation (``pattern_fn``, PR #1740),
  but still fires ``hook_attn_scores`` after the fact, on the *pattern* (not the scores).

:func:`make_attention_hooks_live_` swaps each layer's ``NativeAttention`` for
:class:`LiveAttention` (same parameters, same submodules, same numbers), which calls the bridge's
own ``hook_attn_scores`` (masked, pre-softmax scores) and ``hook_pattern`` HookPoints before the
value product, as ``HookedTransformer`` does, and returns ``(out, None)`` so that the bridge does
not fire them a second time (``AttentionBridge.forward`` fires them only on a 4-D second element).

:class:`LiveAttention` also accepts keys and values of earlier positions (:func:`past_keys_values`),
which lets the patching engine run a bridge's blocks on the later positions only.

:func:`unembed_bias_` gives the bridge's unembedding the bias ``b_U`` that ``HookedTransformer``
has (``NativeModel.head`` is built without one), so both kinds hold the same set of weights.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from jaxtyping import Float
from torch import Tensor, nn

from hooks.weights import _unwrap, is_bridge


@functools.cache
def live_attention_class() -> type:
    """:class:`LiveAttention`, defined on first use (it subclasses TransformerLens's NativeAttention,
    and importing the bridge costs seconds)."""
    from transformer_lens.model_bridge.sources.native import model as native

    class LiveAttention(native.NativeAttention):
        """``NativeAttention`` that runs the bridge's ``hook_attn_scores`` and ``hook_pattern``
        inside the computation. Returns ``(out, None)``."""

        accepts_pattern_fn = False  # TransformerLens 4.x: do not pass hook_pattern as pattern_fn

        def forward(
            self,
            hidden_states: Tensor,
            attention_mask: Tensor | None = None,
            position_ids: Tensor | None = None,
            **kwargs,
        ) -> tuple[Tensor, None]:
            hook_attn_scores, hook_pattern = self.mechmem_hooks
            batch, seq, _ = hidden_states.shape
            q = self.q(hidden_states).view(batch, seq, self.n_heads, self.d_head).transpose(1, 2)
            k = self.k(hidden_states).view(batch, seq, self.n_kv_heads, self.d_head).transpose(1, 2)
            v = self.v(hidden_states).view(batch, seq, self.n_kv_heads, self.d_head).transpose(1, 2)
            if self.rotary is not None:
                q, k = self.rotary.apply_rope(q, k, position_ids=position_ids)
            past = self.mechmem_past_kv
            n_past = 0
            if past is not None:  # [batch, n_kv_heads, n_past, d_head] each
                n_past = past[0].shape[2]
                k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
            if self.kv_repeats > 1:
                k = k.repeat_interleave(self.kv_repeats, dim=1)
                v = v.repeat_interleave(self.kv_repeats, dim=1)
            scores = torch.matmul(q, k.transpose(-2, -1)) / self.scale
            scores = native.apply_softcap(scores, self.attn_scores_soft_cap)
            n_keys = n_past + seq
            if self.causal:
                mask = self.causal_mask[n_past:n_keys, :n_keys]
            else:
                mask = torch.zeros(seq, n_keys, dtype=torch.bool, device=scores.device)
            if attention_mask is not None:
                mask = self._combine_attention_mask(mask, attention_mask, batch=batch)
            scores = hook_attn_scores(scores.masked_fill(mask, float("-inf")))
            pattern = torch.softmax(scores, dim=-1)
            # a fully masked (padding) query row is NaN after the softmax: it attends to nothing
            pattern = hook_pattern(torch.where(torch.isnan(pattern), torch.zeros_like(pattern), pattern))
            z = torch.matmul(pattern, v).transpose(1, 2).contiguous().view(batch, seq, -1)
            return self.o(z), None

    return LiveAttention


def _native_attention(block: nn.Module) -> nn.Module:
    attn = block.attn.original_component
    from transformer_lens.model_bridge.sources.native.model import NativeAttention

    if not isinstance(attn, NativeAttention):
        raise TypeError(
            "live attention hooks need a TransformerBridge.boot_native model; this bridge's attention is "
            f"{type(attn).__name__}"
        )
    return attn


def make_attention_hooks_live_(bridge: nn.Module) -> nn.Module:
    """Make ``hook_attn_scores`` and ``hook_pattern`` of every layer feed the output (in place;
    idempotent). Parameters, submodules and outputs are unchanged. Returns ``bridge``."""
    if not is_bridge(bridge):
        raise TypeError(f"expected a TransformerBridge, got {type(bridge).__name__}")
    live = live_attention_class()
    for block in bridge.blocks:
        attn = _native_attention(block)
        attn.__class__ = live
        # a plain tuple attribute: the HookPoints stay registered once, under the AttentionBridge
        attn.mechmem_hooks = (block.attn.hook_attn_scores, block.attn.hook_pattern)
        attn.mechmem_past_kv = None
    # the hook checks of hooks.names cache their answers per model and this number
    bridge.mechmem_attention_version = getattr(bridge, "mechmem_attention_version", 0) + 1
    return bridge


def is_native_bridge(model: nn.Module) -> bool:
    """True for a ``TransformerBridge.boot_native`` model (its attention is TransformerLens's own
    ``NativeAttention``, live or not); False for a bridge around a HuggingFace module."""
    if not is_bridge(model):
        return False
    from transformer_lens.model_bridge.sources.native.model import NativeAttention

    return any(isinstance(block.attn.original_component, NativeAttention) for block in model.blocks)


def pattern_feeds_output(model: nn.Module) -> bool:
    """Whether ``hook_pattern`` is applied before the value product, as on ``HookedTransformer``:
    False only for a ``boot_native`` bridge whose attention was not made live. A bridge around a
    HuggingFace module recomputes attention from its q / k / v projections with the hooks inside
    (``_reconstruct_attention``); ``hooks.names.check_hooks_editable`` confirms it per model."""
    return not is_native_bridge(model) or has_live_attention(model)


def has_live_attention(model: nn.Module) -> bool:
    """True for a bridge whose every layer runs :class:`LiveAttention`."""
    if not is_bridge(model):
        return False
    live = live_attention_class()
    return all(type(block.attn.original_component) is live for block in model.blocks)


def unembed_bias_(bridge: nn.Module) -> nn.Module:
    """Give the bridge's unembedding a trainable zero bias ``b_U``, as ``HookedTransformer`` has, in
    place (``NativeModel.head`` is built without one; the bridge may add a non-trainable buffer)."""
    head = _unwrap(bridge.original_model.head)
    if not isinstance(head.bias, nn.Parameter):
        weight = head.weight
        head._buffers.pop("bias", None)
        head.__dict__.pop("bias", None)
        head.bias = nn.Parameter(torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device))
    return bridge


def boot_bridge(config: dict, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A ``TransformerBridge.boot_native`` model for ``config`` (``HookedTransformerConfig`` field
    names), on the CPU, with live attention hooks and an unembedding bias: the one constructor of
    every bridge in this project. Its weights are *not* initialised (TransformerLens's native init
    is never used): write them with :func:`hooks.weights.set_weights_`. The caller's global RNG is
    neither reseeded nor advanced. Comes back in train mode, like ``HookedTransformer``."""
    from transformer_lens.model_bridge import TransformerBridge

    with torch.random.fork_rng(devices=[]):  # nn.Linear's own init draws from the global RNG
        bridge = TransformerBridge.boot_native({**config, "init_weights": False}, device="cpu", dtype=dtype)
    make_attention_hooks_live_(bridge)
    unembed_bias_(bridge)
    return bridge.train()


@contextmanager
def past_keys_values(
    model: nn.Module,
    layer: int,
    keys: Float[Tensor, "batch n_past n_kv_heads d_head"],
    values: Float[Tensor, "batch n_past n_kv_heads d_head"],
) -> Iterator[None]:
    """Inside the block, layer ``layer`` attends to ``keys`` / ``values`` of positions
    ``0..n_past-1`` before the positions it is called on (which are ``n_past..``). Keys and values
    are in hook layout (``hook_k`` / ``hook_v``); standard positional embeddings only."""
    attn = model.blocks[layer].attn.original_component
    if type(attn) is not live_attention_class():
        raise TypeError("past keys and values need a bridge built with live attention hooks")
    attn.mechmem_past_kv = (keys.transpose(1, 2), values.transpose(1, 2))
    try:
        yield
    finally:
        attn.mechmem_past_kv = None
