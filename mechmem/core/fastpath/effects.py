"""How a permanent hook tells the fast path what it does.

The fast path (``mechmem.core.fastpath``) computes a model's forward without calling its hook points,
so it can only run a model whose hooks it can apply itself. A hook function declares its effect
with :func:`declare_effect`; a hook without a declaration is unknown, and the model then runs
through its own forward (``model(tokens)``), never through the fast path.

Effects (a small, closed vocabulary; each one is implemented by the fast path):

- ``OBSERVE``: the hook reads the activation (e.g. stores it) and returns ``None`` or the activation
  unchanged. The fast path skips it: its stores are not filled by fast-path calls.
- ``SUBTRACT_BLOCK_INPUT``: the residual stream at the hook becomes ``activation - resid_pre`` of the
  same block, where ``resid_pre`` is the block's input after any hook on ``hook_resid_pre``; e.g. to keep
  only the attention output. Allowed on ``blocks.{l}.hook_resid_mid`` and ``blocks.{l}.hook_resid_post``.
  On a bridge these are ``blocks.{l}.ln2.hook_in`` and ``blocks.{l}.hook_out``; ``ln2.hook_in``'s tensor
  *is* the residual stream, so a hook there must subtract in place (a returned new tensor only reaches
  the MLP input).

A declaration is a claim: the fast path checks it once per plan (the fused logits must equal
``model(tokens)``) and falls back when it does not hold.

Example (the factual model's pair of hooks)::

    def keep_embedding(resid_pre, hook):
        store["embedding"] = resid_pre

    def drop_embedding(resid_mid, hook):
        return resid_mid - store["embedding"]

    declare_effect(keep_embedding, OBSERVE)
    declare_effect(drop_embedding, SUBTRACT_BLOCK_INPUT)
    model.add_hook("blocks.0.hook_resid_pre", keep_embedding, is_permanent=True)
    model.add_hook("blocks.0.hook_resid_mid", drop_embedding, is_permanent=True)
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)

ATTRIBUTE = "mechmem_fastpath_effect"


class HookEffect(enum.Enum):
    """What a declared hook does to the activation it sees (see the module docstring)."""

    OBSERVE = "observe"
    SUBTRACT_BLOCK_INPUT = "subtract_block_input"


OBSERVE = HookEffect.OBSERVE
SUBTRACT_BLOCK_INPUT = HookEffect.SUBTRACT_BLOCK_INPUT


def declare_effect(fn: F, effect: HookEffect) -> F:
    """Mark ``fn`` (a hook function) as having ``effect``; returns ``fn`` (usable as a decorator's body)."""
    if not isinstance(effect, HookEffect):
        raise TypeError(f"effect must be a HookEffect ({[e.name for e in HookEffect]}), got {effect!r}")
    if not callable(fn):
        raise TypeError(f"declare_effect needs a callable hook, got {type(fn).__name__}")
    setattr(fn, ATTRIBUTE, effect)
    return fn


def declared_effect(fn: Callable) -> HookEffect | None:
    """The effect ``fn`` declares, or ``None`` for an unknown hook."""
    effect = getattr(fn, ATTRIBUTE, None)
    return effect if isinstance(effect, HookEffect) else None
