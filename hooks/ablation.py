"""Zero / mean / resample ablation of any hook point, optionally restricted to heads and positions,
and a sweep that ablates each component in turn.

An :class:`Ablation` says *what* to ablate (a hook point, optional heads and positions) and *how*:

- ``"zero"``: set the activation to 0;
- ``"mean"``: set it to its mean over a reference batch, per position (``per_position=True``,
  needs references as long as the ablated run) or over all positions (``per_position=False``);
- ``"resample"``: set each example's activation to that of a reference example drawn with a
  seeded ``torch.Generator`` (same draw on every forward pass: reproducible).

Several ablations compose in one run (:func:`run_with_ablations`, :func:`ablate`). Hook tensors are
``[batch, pos, ...]`` except ``hook_pattern`` / ``hook_attn_scores`` (``[batch, head, q_pos, k_pos]``,
positions = query positions); heads can be chosen on hooks with a head axis only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from hooks.checks import check_layers, check_tokens
from hooks.names import (
    HookName,
    active_hook_names,
    check_head,
    check_hooks_editable,
    check_positions,
    resolve_hook_name,
)
from hooks.state import add_tracked_hook, preserved_state, remove_tracked_hooks

KINDS = ("zero", "mean", "resample")
Metric = Callable[[Tensor], Tensor | float]


@dataclass(frozen=True)
class Ablation:
    """One ablation: ``Ablation(("z", 1), "mean", heads=[0, 2], positions=[-1], reference=tokens)``."""

    hook: HookName
    kind: str = "zero"
    heads: int | Sequence[int] | None = None
    positions: int | Sequence[int] | None = None
    reference: Tensor | None = None  # tokens [batch, pos] for "mean" / "resample"
    per_position: bool = True
    seed: int = 0


def _axes(name: str, ndim: int) -> tuple[int, int | None]:
    """(position axis, head axis) of a hook tensor."""
    if name.endswith(("hook_pattern", "hook_attn_scores")):
        return 2, 1
    return 1, (2 if ndim == 4 else None)


def _as_list(x) -> list | None:
    if x is None:
        return None
    return [x] if isinstance(x, int) else list(x)


@dataclass
class _Prepared:
    name: str
    ablation: Ablation
    heads: list[int] | None
    reference_act: Tensor | None


def _validate(model: nn.Module, ab: Ablation, seq_len: int | None) -> _Prepared:
    if not isinstance(ab, Ablation):
        raise TypeError(f"expected an Ablation, got {type(ab).__name__}")
    if ab.kind not in KINDS:
        raise ValueError(f"Ablation.kind must be one of {KINDS}, got {ab.kind!r}")
    name = resolve_hook_name(model, ab.hook)
    check_hooks_editable(model, name)  # a hook that does not feed the output would ablate nothing
    heads = _as_list(ab.heads)
    if heads is not None:
        if not name.endswith(
            (
                "hook_q",
                "hook_k",
                "hook_v",
                "hook_z",
                "hook_result",
                "hook_pattern",
                "hook_attn_scores",
                "hook_rot_q",
                "hook_rot_k",
                "_input",
                "hook_attn_in",
            )
        ):
            raise ValueError(
                f"heads can only be given for hooks with a head axis (q, k, v, z, result, pattern, ...), not {name!r}"
            )
        for h in heads:
            check_head(model, h)
    if ab.positions is not None:
        limit = seq_len if seq_len is not None else model.cfg.n_ctx
        check_positions(_as_list(ab.positions), limit)
    if ab.kind != "zero":
        if ab.reference is None or not isinstance(ab.reference, Tensor) or ab.reference.dim() != 2:
            raise ValueError(f"a {ab.kind!r} ablation needs reference tokens [batch, pos] (Ablation.reference)")
        check_tokens(model, ab.reference, "Ablation.reference")
        if ab.kind == "resample" or ab.per_position:
            if seq_len is not None and ab.reference.shape[1] != seq_len:
                raise ValueError(
                    f"a per-position {ab.kind!r} ablation needs reference tokens of the same length as the run "
                    f"({ab.reference.shape[1]} != {seq_len}); use per_position=False for a mean over all positions"
                )
    return _Prepared(name, ab, heads, None)


def _reference_activations(model: nn.Module, prepared: list[_Prepared], cache=None) -> None:
    """One cached forward pass per distinct reference batch, storing what each ablation needs
    (``cache``: activations of the reference batch already at hand, used when it has the names)."""
    groups: dict[int, list[_Prepared]] = {}
    for p in prepared:
        if p.ablation.kind != "zero":
            groups.setdefault(id(p.ablation.reference), []).append(p)
    for items in groups.values():
        names = sorted({p.name for p in items})
        if cache is None or not all(n in cache for n in names):
            with preserved_state(model), torch.no_grad():
                model.eval()
                _, cache = model.run_with_cache(items[0].ablation.reference, names_filter=names)
        for p in items:
            act = cache[p.name]
            pos_axis, _ = _axes(p.name, act.dim())
            if p.ablation.kind == "mean":
                dims = (0,) if p.ablation.per_position else (0, pos_axis)
                p.reference_act = act.mean(dim=dims, keepdim=True)
            else:
                p.reference_act = act


def _replacement(p: _Prepared, act: Tensor) -> Tensor:
    kind = p.ablation.kind
    if kind == "zero":
        return torch.zeros((), dtype=act.dtype, device=act.device)
    ref = p.reference_act
    if kind == "resample":
        gen = torch.Generator(device="cpu").manual_seed(p.ablation.seed)
        index = torch.randint(ref.shape[0], (act.shape[0],), generator=gen).to(ref.device)
        ref = ref[index]
    try:
        torch.broadcast_shapes(ref.shape, act.shape)
    except RuntimeError:
        raise ValueError(
            f"{kind} ablation of {p.name}: reference activations {tuple(ref.shape)} "
            f"do not fit the run's {tuple(act.shape)}"
        ) from None
    return ref


def _mask(p: _Prepared, act: Tensor) -> Tensor | None:
    """Boolean mask (broadcastable to ``act``) of the entries to ablate; None = everything."""
    positions = _as_list(p.ablation.positions)
    if positions is None and p.heads is None:
        return None
    pos_axis, head_axis = _axes(p.name, act.dim())
    shape = [1] * act.dim()
    mask = torch.ones(shape, dtype=torch.bool, device=act.device)
    if positions is not None:
        seq = act.shape[pos_axis]
        positions = check_positions(positions, seq)
        shape_p = list(shape)
        shape_p[pos_axis] = seq
        sel = torch.zeros(seq, dtype=torch.bool, device=act.device)
        sel[positions] = True
        mask = mask & sel.view(shape_p)
    if p.heads is not None:
        shape_h = list(shape)
        shape_h[head_axis] = act.shape[head_axis]
        sel = torch.zeros(act.shape[head_axis], dtype=torch.bool, device=act.device)
        sel[p.heads] = True
        mask = mask & sel.view(shape_h)
    return mask


def _hook_fn(p: _Prepared):
    def hook(act: Tensor, hook=None) -> Tensor:
        new = _replacement(p, act)
        mask = _mask(p, act)
        out = torch.zeros_like(act) + new if mask is None else torch.where(mask, new.to(act.dtype), act)
        if torch.is_grad_enabled():
            return out
        # without autograd write in place: on a bridge, hook_resid_mid is an alias of ln2.hook_in
        # whose tensor *is* the residual stream, so only an in-place write reaches the residual
        act.copy_(out)
        return act

    return hook


def ablation_hooks(
    model: nn.Module, ablations: Sequence[Ablation], seq_len: int | None = None, reference_cache=None
) -> list[tuple[str, Callable]]:
    """``(hook_name, hook_fn)`` pairs for ``run_with_hooks`` / ``model.hooks``; validates everything
    and computes reference activations first (one forward pass per reference batch, unless
    ``reference_cache`` already holds them)."""
    if isinstance(ablations, Ablation):
        ablations = [ablations]
    prepared = [_validate(model, ab, seq_len) for ab in ablations]
    _reference_activations(model, prepared, reference_cache)
    return [(p.name, _hook_fn(p)) for p in prepared]


def run_with_ablations(
    model: nn.Module, tokens: Int[Tensor, "batch pos"], ablations: Sequence[Ablation]
) -> Float[Tensor, "batch pos d_vocab_out"]:
    """Logits of ``model(tokens)`` with all ``ablations`` applied together (no_grad, eval mode;
    the model's hooks, mode and flags are restored afterwards)."""
    check_tokens(model, tokens)
    fwd_hooks = ablation_hooks(model, ablations, seq_len=tokens.shape[1])
    with preserved_state(model), torch.no_grad():
        model.eval()
        return model.run_with_hooks(tokens, fwd_hooks=fwd_hooks)


@contextmanager
def ablate(model: nn.Module, ablations: Sequence[Ablation]) -> Iterator[nn.Module]:
    """Keep ``ablations`` applied to every forward pass inside the ``with`` block (hooks are
    permanent for the block's duration, so a ``run_with_hooks`` inside does not drop them)."""
    fwd_hooks = ablation_hooks(model, ablations)
    handles: list = []
    try:
        for name, fn in fwd_hooks:
            handles += add_tracked_hook(model, name, fn)
        yield model
    finally:
        remove_tracked_hooks(handles)


def metric_value(metric: Metric, logits: Tensor) -> float:
    """Call ``metric(logits)`` and check it returns a scalar (a float or a one-element tensor)."""
    value = metric(logits)
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"the metric must return a scalar, got a tensor of shape {tuple(value.shape)}")
        return float(value.item())
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise ValueError(f"the metric must return a scalar (float or 1-element tensor), got {type(value).__name__}")


_COMPONENTS = {
    "heads": "z",
    "z": "z",
    "q": "q",
    "k": "k",
    "v": "v",
    "pattern": "pattern",
    "attn_out": "attn_out",
    "mlp_out": "mlp_out",
    "resid_pre": "resid_pre",
    "resid_mid": "resid_mid",
    "resid_post": "resid_post",
}
_PER_HEAD = ("z", "q", "k", "v", "pattern")


def _sweep_items(model: nn.Module, components: Sequence[str], layers: Sequence[int]) -> list[dict]:
    active = active_hook_names(model)
    items = []
    for comp in components:
        if comp not in _COMPONENTS:
            raise ValueError(f"unknown sweep component {comp!r}; allowed: {sorted(_COMPONENTS)}")
        short = _COMPONENTS[comp]
        for layer in layers:
            name = (
                resolve_hook_name(model, short, layer)
                if comp not in ("mlp_out", "resid_mid")
                else f"blocks.{layer}.hook_{short}"
            )
            if name not in active:
                continue  # e.g. no MLP in an attention-only model
            heads = range(model.cfg.n_heads) if short in _PER_HEAD else [None]
            for head in heads:
                items.append({"component": comp, "layer": layer, "head": head, "hook": name})
    if not items:
        raise ValueError(f"none of the components {list(components)} exists in this model")
    return items


def ablation_sweep(
    model: nn.Module,
    tokens: Int[Tensor, "batch pos"],
    metric: Metric,
    components: Sequence[str] = ("heads", "attn_out", "mlp_out"),
    kind: str = "zero",
    reference: Int[Tensor, "ref_batch ref_pos"] | None = None,
    per_position: bool = True,
    positions: Sequence[int] | None = None,
    layers: Sequence[int] | None = None,
    seed: int = 0,
    progress: bool = True,
):
    """Ablate each component in turn and tabulate ``metric(logits)``.

    ``components``: ``"heads"`` (each head's ``hook_z``), ``"attn_out"``, ``"mlp_out"``, or any of
    ``z, q, k, v, pattern`` (per head) and ``resid_pre, resid_mid, resid_post`` (per layer).
    ``reference`` defaults to ``tokens`` for mean / resample ablations.

    Returns a pandas DataFrame with columns ``component, layer, head, hook, metric, delta``
    (``delta = metric - baseline``); its first row is the unablated ``baseline``.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    check_tokens(model, tokens)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if isinstance(components, str):
        components = [components]
    layers = check_layers(model, layers)
    if kind != "zero" and reference is None:
        reference = tokens
    if reference is not None:
        check_tokens(model, reference, "reference")
    items = _sweep_items(model, components, layers)
    with preserved_state(model), torch.no_grad():
        model.eval()
        baseline = metric_value(metric, model(tokens))
        ref_cache = None
        if kind != "zero":
            _, ref_cache = model.run_with_cache(reference, names_filter=sorted({i["hook"] for i in items}))
        rows = [{"component": "baseline", "layer": None, "head": None, "hook": None, "metric": baseline}]
        for item in tqdm(items, desc="ablation sweep", disable=not progress or len(items) < 20):
            ab = Ablation(
                item["hook"],
                kind,
                heads=item["head"],
                positions=positions,
                reference=reference,
                per_position=per_position,
                seed=seed,
            )
            hooks = ablation_hooks(model, [ab], seq_len=tokens.shape[1], reference_cache=ref_cache)
            logits = model.run_with_hooks(tokens, fwd_hooks=hooks)
            rows.append({**item, "metric": metric_value(metric, logits)})
    frame = pd.DataFrame(rows)
    frame["delta"] = frame["metric"] - baseline
    frame["layer"] = frame["layer"].astype("Int64")
    frame["head"] = frame["head"].astype("Int64")
    return frame
