"""Find every hook on a model and what it does, for the fast path.

TransformerLens keeps a hook twice: as a ``LensHandle`` in ``HookPoint.fwd_hooks`` / ``bwd_hooks``
(with ``is_permanent`` and the user's function) and as a PyTorch hook in the module's
``_forward_hooks`` / ``_forward_pre_hooks`` / ``_backward_*`` dictionaries (where raw
``register_forward_hook`` hooks live too). :func:`hook_effects` reads both: a permanent forward hook
that declares an effect the fused forward applies is kept; anything else raises ``Unsupported``.
The capture hooks a bridge block wires for itself (``_capture_hook_handles``) are the bridge's own
plumbing (they store tensors or call hook points, whose hooks are checked here too) and are skipped.

:func:`signature` is the cheap per-call fingerprint of everything this module reads.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn
from torch.nn.modules import module as torch_module

from .architecture import Unsupported
from .effects import HookEffect, declared_effect

#: hook points where SUBTRACT_BLOCK_INPUT may sit (name after "blocks.{l}.") -> the fused location.
#: A bridge's ``ln2.hook_in`` (its ``hook_resid_mid``) carries the residual stream itself: a hook
#: declaring a residual effect there must write in place (plan.py's check catches one that does not).
HOOKED_POINTS = {"hook_resid_pre": "resid_pre", "hook_resid_mid": "resid_mid", "hook_resid_post": "resid_post"}
BRIDGE_POINTS = {"hook_in": "resid_pre", "ln2.hook_in": "resid_mid", "hook_out": "resid_post"}
SUBTRACT_AT = ("resid_mid", "resid_post")

_GLOBAL_HOOKS = (
    "_global_forward_hooks",
    "_global_forward_pre_hooks",
    "_global_backward_hooks",
    "_global_backward_pre_hooks",
)
_HOOK_DICTS = ("_forward_pre_hooks", "_forward_hooks", "_backward_pre_hooks", "_backward_hooks")

Effects = dict[tuple[int, str], tuple[HookEffect, ...]]


def signature(model: nn.Module) -> tuple:
    """What must stay unchanged for a plan (or a refusal) to stay valid: the modules (by id, so that
    a cache keyed on it keeps no model alive) and their classes, the hooks, ``forward`` overrides."""
    mods = tuple(model.modules())
    hooks = tuple(
        (i, *(tuple(getattr(m, d)) for d in _HOOK_DICTS))
        for i, m in enumerate(mods)
        if m._forward_pre_hooks or m._forward_hooks or m._backward_pre_hooks or m._backward_hooks
    )
    overridden = tuple(i for i, m in enumerate(mods) if "forward" in m.__dict__)
    global_hooks = tuple(tuple(getattr(torch_module, g)) for g in _GLOBAL_HOOKS)
    return tuple(map(id, mods)), tuple(map(type, mods)), hooks, overridden, global_hooks


def hook_effects(model: nn.Module, kind: str) -> Effects:
    """The declared effects to apply, by (layer, fused location); ``Unsupported`` for any other hook."""
    if any(getattr(torch_module, g) for g in _GLOBAL_HOOKS):
        raise Unsupported("global module hooks are registered")
    points = HOOKED_POINTS if kind == "hooked" else BRIDGE_POINTS
    internal = {h.id for m in model.modules() for h in getattr(m, "_capture_hook_handles", ())}
    effects: Effects = {}
    for name, module in model.named_modules():
        if "forward" in module.__dict__:
            raise Unsupported(f"{name or 'the model'} has an overridden forward")
        for fn, permanent, direction in _hook_functions(module, internal):
            effect = _checked_effect(fn, permanent, direction, f"{direction} hook {_fn_name(fn)} on {name}")
            if effect is HookEffect.OBSERVE:
                continue
            layer, location = _location(getattr(module, "name", None) or name, points)
            if location not in SUBTRACT_AT:
                raise Unsupported(
                    f"{effect.name} hook {_fn_name(fn)} on {name}: only supported on "
                    f"{[p for p, loc in points.items() if loc in SUBTRACT_AT]} of a block"
                )
            effects[layer, location] = effects.get((layer, location), ()) + (effect,)
    return effects


def _fn_name(fn: Callable) -> str:
    return repr(getattr(fn, "__name__", type(fn).__name__))


def _checked_effect(fn: Callable, permanent: bool, direction: str, where: str) -> HookEffect:
    if direction != "fwd":
        raise Unsupported(f"{where}: backward hooks are not supported", temporary=not permanent)
    if not permanent:
        raise Unsupported(f"{where} is not permanent", temporary=True)
    effect = declared_effect(fn)
    if effect is None:
        raise Unsupported(f"{where} does not declare its effect (mechmem.core.fastpath.declare_effect)")
    return effect


def _hook_functions(module: nn.Module, internal: set[int]) -> list[tuple[Callable, bool, str]]:
    """``(user function, permanent, direction)`` of every hook on ``module`` but the ``internal`` ones;
    TransformerLens's wrappers are unwrapped through their ``LensHandle``."""
    lens = {h.hook.id: h for h in getattr(module, "fwd_hooks", []) + getattr(module, "bwd_hooks", [])}
    out = []
    for attr in _HOOK_DICTS:
        direction = "fwd" if "forward" in attr else "bwd"
        for key, fn in getattr(module, attr).items():
            if key in internal:
                continue
            handle = lens.get(key)
            if handle is None:  # a raw PyTorch hook: it stays until removed, like a permanent one
                out.append((fn, True, direction))
            else:
                out.append((getattr(handle, "user_hook", None) or fn, handle.is_permanent, direction))
    return out


def _location(hook_name: str, points: dict[str, str]) -> tuple[int, str | None]:
    parts = hook_name.split(".", 2)
    if len(parts) == 3 and parts[0] == "blocks" and parts[1].isdigit():
        return int(parts[1]), points.get(parts[2])
    return -1, None
