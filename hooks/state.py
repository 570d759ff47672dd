"""Leave a model exactly as it was found: hooks, weights, ``requires_grad`` and train/eval mode.

Every tool in this package runs its work inside :func:`preserved_state`, so that after it
returns *or raises* the model has no hooks left that the tool added, every module is back in
its train/eval mode, every parameter has its old ``requires_grad`` flag and (when asked)
every parameter and buffer is bit-identical to before.

Hooks are tracked at two levels, because TransformerLens keeps two lists:

- ``HookPoint.fwd_hooks`` / ``bwd_hooks`` (``LensHandle`` objects, what ``model.add_hook`` adds);
- PyTorch's own ``module._forward_hooks`` / ``_forward_pre_hooks`` / ``_backward_hooks`` /
  ``_backward_pre_hooks`` dictionaries (what ``register_forward_hook`` adds).

Only hooks added *after* entering are removed; hooks the user had before are kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

_TORCH_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def _hook_points(model: nn.Module) -> list[nn.Module]:
    """Every HookPoint of the model (aliases included, each object once)."""
    seen: dict[int, nn.Module] = {}
    for hp in getattr(model, "hook_dict", {}).values():
        seen.setdefault(id(hp), hp)
    for module in model.modules():
        if hasattr(module, "fwd_hooks") and hasattr(module, "bwd_hooks"):
            seen.setdefault(id(module), module)
    return list(seen.values())


@dataclass
class ModelState:
    """A snapshot of everything a tool could change on a model."""

    training: dict[int, tuple[nn.Module, bool]]
    requires_grad: dict[int, tuple[nn.Parameter, bool]]
    lens_handles: dict[int, tuple[nn.Module, set[int], set[int]]]
    torch_hooks: dict[int, tuple[nn.Module, dict[str, set[int]]]]
    tensors: dict[int, tuple[Tensor, Tensor]] = field(default_factory=dict)


def snapshot_state(model: nn.Module, weights: bool = False) -> ModelState:
    """Record modes, ``requires_grad`` flags and hooks (and, with ``weights=True``, a copy of
    every parameter and buffer, which costs one model's worth of memory)."""
    modules = list(model.modules())
    hook_points = _hook_points(model)
    state = ModelState(
        training={id(m): (m, m.training) for m in modules},
        requires_grad={id(p): (p, p.requires_grad) for p in model.parameters()},
        lens_handles={id(hp): (hp, {id(h) for h in hp.fwd_hooks}, {id(h) for h in hp.bwd_hooks}) for hp in hook_points},
        torch_hooks={
            id(m): (m, {d: set(getattr(m, d, {}).keys()) for d in _TORCH_HOOK_DICTS}) for m in modules + hook_points
        },
    )
    if weights:
        for t in list(model.parameters()) + list(model.buffers()):
            state.tensors[id(t)] = (t, t.detach().clone())
    return state


def _remove_new_lens_handles(state: ModelState) -> None:
    for hp, fwd_ids, bwd_ids in state.lens_handles.values():
        for attr, keep in (("fwd_hooks", fwd_ids), ("bwd_hooks", bwd_ids)):
            handles = getattr(hp, attr)
            if len(handles) == len(keep) and all(id(h) in keep for h in handles):
                continue  # nothing added here (the common case: skip the slow nn.Module.__setattr__)
            kept = []
            for handle in handles:
                if id(handle) in keep:
                    kept.append(handle)
                else:
                    handle.hook.remove()
            setattr(hp, attr, kept)


def _is_internal(fn) -> bool:
    """A raw PyTorch hook that TransformerLens or transformers installs on a non-HookPoint module (the
    bridge wires capture hooks lazily on its first forward pass, a HuggingFace module its output
    capturing on the first ``run_with_cache``; both must keep them)."""
    return (getattr(fn, "__module__", None) or "").startswith(("transformer_lens", "transformers"))


def _remove_new_torch_hooks(state: ModelState) -> None:
    for module, dicts in state.torch_hooks.values():
        is_hook_point = hasattr(module, "fwd_hooks")
        for name, keep in dicts.items():
            hooks = getattr(module, name, None)
            if hooks is None:
                continue
            for key in [k for k in hooks.keys() if k not in keep]:
                if is_hook_point or not _is_internal(hooks[key]):
                    del hooks[key]


def restore_state(state: ModelState) -> None:
    """Put the model back as recorded: hooks added since are removed, modes, flags (and weights)."""
    _remove_new_lens_handles(state)
    _remove_new_torch_hooks(state)
    for module, was_training in state.training.values():
        if module.training != was_training:
            module.training = was_training
    for param, flag in state.requires_grad.values():
        if param.requires_grad != flag:
            param.requires_grad_(flag)
    with torch.no_grad():
        for live, saved in state.tensors.values():
            if not torch.equal(live, saved) or live.dtype != saved.dtype:
                live.copy_(saved)


@contextmanager
def preserved_state(model: nn.Module, weights: bool = False) -> Iterator[ModelState]:
    """Run the body, then restore the model whatever happened (normal exit or exception).

    Restores: hooks (only the ones added inside the body are removed), every module's train/eval
    mode, every parameter's ``requires_grad``; with ``weights=True`` also every parameter and
    buffer bit for bit (off by default: tools that change weights restore them themselves).
    """
    state = snapshot_state(model, weights=weights)
    try:
        yield state
    finally:
        restore_state(state)


def count_hooks(model: nn.Module) -> int:
    """How many hooks (TransformerLens handles + raw PyTorch hooks) are attached to the model,
    not counting the capture hooks TransformerLens's bridge installs on itself."""
    total = 0
    hook_points = _hook_points(model)
    for hp in hook_points:  # LensHandles, and raw hooks registered directly on a HookPoint
        total += max(len(hp.fwd_hooks) + len(hp.bwd_hooks), sum(len(getattr(hp, d, {})) for d in _TORCH_HOOK_DICTS))
    seen = {id(hp) for hp in hook_points}
    for m in model.modules():
        if id(m) in seen:
            continue
        for d in _TORCH_HOOK_DICTS:
            total += sum(1 for fn in getattr(m, d, {}).values() if not _is_internal(fn))
    return total


def state_fingerprint(model: nn.Module) -> dict[str, object]:
    """Everything :func:`preserved_state` promises to keep, as comparable values (for tests):
    hook count, per-module mode, per-parameter ``requires_grad`` and a copy of every tensor."""
    return {
        "hooks": count_hooks(model),
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "tensors": [t.detach().clone() for t in list(model.parameters()) + list(model.buffers())],
    }


def same_state(before: dict[str, object], after: dict[str, object]) -> list[str]:
    """Differences between two fingerprints, as readable strings (empty list: identical)."""
    problems = []
    for key in ("hooks", "training", "requires_grad"):
        if before[key] != after[key]:
            problems.append(f"{key} changed: {before[key]!r} -> {after[key]!r}")
    tb, ta = before["tensors"], after["tensors"]
    if len(tb) != len(ta):
        problems.append(f"number of tensors changed: {len(tb)} -> {len(ta)}")
    else:
        changed = [i for i, (a, b) in enumerate(zip(tb, ta)) if a.dtype != b.dtype or not torch.equal(a, b)]
        if changed:
            problems.append(f"tensors changed at indices {changed}")
    return problems


def add_tracked_hook(model: nn.Module, name: str, hook_fn) -> list[tuple[nn.Module, object]]:
    """Add a *permanent* forward hook (so that a user's ``run_with_hooks`` inside a context does
    not drop it) and return exactly the handles it created, for :func:`remove_tracked_hooks`."""
    hook_points = _hook_points(model)
    before = {id(hp): {id(h) for h in hp.fwd_hooks} for hp in hook_points}
    model.add_hook(name, hook_fn, is_permanent=True)
    return [(hp, h) for hp in hook_points for h in hp.fwd_hooks if id(h) not in before[id(hp)]]


def remove_tracked_hooks(handles: list[tuple[nn.Module, object]]) -> None:
    """Remove the hooks returned by :func:`add_tracked_hook` (and nothing else)."""
    for hp, handle in handles:
        handle.hook.remove()
        hp.fwd_hooks = [h for h in hp.fwd_hooks if h is not handle]
