"""``logits(model, tokens)``: the model's forward through the fused path when it applies.

Plans are cached per model and re-made whenever :func:`hookscan.signature` or a parameter changes,
so hooks added later (``run_with_hooks``, ``model.hooks()``, a probe's ablation) are always seen:
a model with a hook the path does not know runs through ``model(tokens)``, and the reason is
logged once per reason (logger ``mechmem.core.fastpath``): as a warning, or at INFO level when only a
temporary (non-permanent) hook is in the way, since that fallback is what an intervention wants.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from jaxtyping import Float
from torch import Tensor, nn

from .architecture import Unsupported
from .fused import fused_last_logits, fused_logits
from .hookscan import signature
from .plan import Plan, busy, make_plan

logger = logging.getLogger("mechmem.core.fastpath")

_plans: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, Plan | Unsupported]] = weakref.WeakKeyDictionary()
_logged: set[str] = set()
_enabled = [True]


@contextmanager
def fast_path_enabled(enabled: bool) -> Iterator[None]:
    """Turn the fused path on or off inside the block (off: every call is ``model(tokens)``)."""
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool, got {enabled!r}")
    previous, _enabled[0] = _enabled[0], enabled
    try:
        yield
    finally:
        _enabled[0] = previous


def plan_for(model: nn.Module) -> Plan | Unsupported:
    """The model's current :class:`Plan`, or why the fast path cannot run it."""
    try:
        reason = busy(model)
    except Unsupported as err:
        return err
    if reason is not None:
        return Unsupported(reason, temporary=True)
    cached = _plans.get(model)
    if cached is not None and cached[0] == signature(model):
        plan = cached[1]
        if not isinstance(plan, Plan) or plan.weights_unchanged():
            return plan
    try:
        plan = make_plan(model)
    except Unsupported as err:
        plan = err
    _plans[model] = (signature(model), plan)  # after make_plan: a bridge wires hooks on its first forward
    return plan


def unsupported_reason(model: nn.Module) -> str | None:
    """Why the fast path would not run ``model`` now (``None``: it would)."""
    plan = plan_for(model)
    return None if isinstance(plan, Plan) else str(plan)


def _tokens_fit(model: nn.Module, plan: Plan, tokens) -> bool:
    """A ``[batch, pos]`` integer tensor on the model's device, no longer than ``n_ctx`` (anything else,
    e.g. a string, goes to ``model(tokens)``, which handles or rejects it)."""
    return (
        isinstance(tokens, Tensor)
        and tokens.ndim == 2
        and not tokens.dtype.is_floating_point
        and tokens.dtype != torch.bool
        and 0 < tokens.shape[1] <= model.cfg.n_ctx
        and tokens.device == plan.refs["W_E"].param.device
    )


def _usable_plan(model: nn.Module, tokens) -> Plan | None:
    """The plan to run ``tokens`` through, or ``None`` (the fast path is off, or does not apply: the reason is
    logged once)."""
    if not _enabled[0]:
        return None
    plan = plan_for(model)
    if isinstance(plan, Plan):
        return plan if _tokens_fit(model, plan, tokens) else None
    if str(plan) not in _logged:
        _logged.add(str(plan))
        level = logging.INFO if plan.temporary else logging.WARNING
        logger.log(level, "fast path not used, running model(tokens): %s", plan)
    return None


def logits(model: nn.Module, tokens: Tensor) -> Float[Tensor, "batch pos d_vocab_out"]:
    """``model(tokens)``, computed by the fused forward from the model's own parameters when the fast
    path supports the model and its hooks (see :mod:`mechmem.core.fastpath.plan`), else by ``model(tokens)``."""
    plan = _usable_plan(model, tokens)
    return model(tokens) if plan is None else fused_logits(plan.weights(), tokens)


def last_logits(model: nn.Module, tokens: Tensor) -> Float[Tensor, "batch d_vocab_out"]:
    """``model(tokens)[:, -1]``, the logits at the last position: through the same plan as :func:`logits`, with
    the last block computed for that position alone (``fused.fused_last_logits``: O(pos) attention in place of
    O(pos^2), the unembedding of one position), else ``model(tokens)[:, -1]``."""
    plan = _usable_plan(model, tokens)
    return model(tokens)[:, -1] if plan is None else fused_last_logits(plan.weights(), tokens)
