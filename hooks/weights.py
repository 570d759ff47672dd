"""Address a model's weights by TransformerLens names, on both model kinds.

A ``HookedTransformer`` keeps each weight as one ``nn.Parameter`` in TransformerLens layout
(``blocks.0.attn.W_V`` is ``[n_heads, d_model, d_head]``). A ``TransformerBridge`` keeps the weights
of the module it wraps, in that module's layout: ``nn.Linear`` ``[out, in]`` (``boot_native``:
``attn.v.weight`` is ``[n_heads * d_head, d_model]``) or HuggingFace ``Conv1D`` ``[in, out]`` (GPT-2's
``c_proj`` / ``c_fc``; its joint ``c_attn`` is split by TransformerLens into q / k / v views of the same
storage). They are found through the bridge's components (``embed``, ``blocks[l].attn.q``,
``blocks[l].mlp.in``, ``ln_final``, ...), so ``boot_native`` bridges and bridges built around a
HuggingFace module (``build_bridge_from_module``) read the same way. Model-level properties such as
``model.W_V`` are *stacked copies* on both kinds: writing into them changes nothing.

This module hides the difference. Every weight has one name and one shape, HookedTransformer's:

- ``W_E`` [d_vocab, d_model], ``W_pos`` [n_ctx, d_model], ``W_U`` [d_model, d_vocab_out], ``b_U``
- ``blocks.{l}.attn.W_Q|W_K|W_V`` [n_heads, d_model, d_head], ``W_O`` [n_heads, d_head, d_model],
  ``b_Q|b_K|b_V`` [n_heads, d_head], ``b_O`` [d_model]
- ``blocks.{l}.mlp.W_in`` [d_model, d_mlp], ``W_out`` [d_mlp, d_model], ``b_in``, ``b_out`` (and ``W_gate``
  [d_model, d_mlp] for a gated MLP)
- ``blocks.{l}.ln1.w|b``, ``blocks.{l}.ln2.w|b``, ``ln_final.w|b`` (only with a learned LayerNorm)

``get_weight`` reads a detached copy, ``set_weight_`` writes the real parameter,
``weight_parameters`` returns the real ``nn.Parameter`` (to freeze it, or to hand it to an optimiser)
and ``weight_views`` gives differentiable views in TransformerLens layout (for code that computes
with the weights). A weight tied by a ``torch.nn.utils.parametrize`` parametrization reads as its
tied value and cannot be written; so does a weight that is the same tensor as another (GPT-2's
``W_U`` is its ``W_E``). A weight the bridge keeps in a form with no known layout (attention
without separate q / k / v / o projections, a projection that is neither ``nn.Linear`` nor
``Conv1D``, e.g. a quantised one) raises a ``TypeError`` naming it and the reason.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

_ATTN = ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O")
_MLP = ("W_in", "W_out", "b_in", "b_out", "W_gate")


@dataclass(frozen=True)
class WeightSlot:
    """Where a named weight really lives (``getattr(owner, attr)``), and how to convert to/from
    TransformerLens layout."""

    name: str
    owner: nn.Module
    attr: str
    to_tl: Callable[[Tensor], Tensor]
    from_tl: Callable[[Tensor], Tensor]
    shares: tuple[str, ...] = ()  # other names for the same tensor (e.g. W_U tied to W_E in GPT-2)

    @property
    def tied(self) -> bool:
        """Whether the weight is computed by a parametrization (e.g. tied to another weight)."""
        return parametrize.is_parametrized(self.owner, self.attr)

    @property
    def parameter(self) -> nn.Parameter:
        """The real ``nn.Parameter`` (a parametrization's ``original`` when tied)."""
        if self.tied:
            return getattr(self.owner.parametrizations, self.attr).original
        return getattr(self.owner, self.attr)

    @property
    def value(self) -> Tensor:
        """The weight as the model uses it, in the owner's layout (differentiable)."""
        return getattr(self.owner, self.attr)


def _has_weight(owner: nn.Module, attr: str) -> bool:
    return isinstance(getattr(owner, attr, None), nn.Parameter) or parametrize.is_parametrized(owner, attr)


def _identity(t: Tensor) -> Tensor:
    return t


def is_bridge(model: nn.Module) -> bool:
    """True for a ``TransformerBridge`` (checked by name, so the bridge module is never imported)."""
    return any(cls.__name__ == "TransformerBridge" for cls in type(model).__mro__)


def _unwrap(module: nn.Module) -> nn.Module:
    """The real torch module behind a bridge wrapper (``LinearBridge`` -> ``nn.Linear``)."""
    while "_original_component" in module._modules:
        module = module._modules["_original_component"]
    return module


def _hooked_slots(model: nn.Module) -> dict[str, WeightSlot]:
    slots: dict[str, WeightSlot] = {}

    def add(name: str, owner: nn.Module, attr: str) -> None:
        if _has_weight(owner, attr):
            slots[name] = WeightSlot(name, owner, attr, _identity, _identity)

    add("W_E", model.embed, "W_E")
    if hasattr(model, "pos_embed"):
        add("W_pos", model.pos_embed, "W_pos")
    add("W_U", model.unembed, "W_U")
    add("b_U", model.unembed, "b_U")
    for layer, block in enumerate(model.blocks):
        for attr in _ATTN:
            # grouped-query attention stores K and V as `_W_K`, `_W_V`
            real = attr if _has_weight(block.attn, attr) else f"_{attr}"
            add(f"blocks.{layer}.attn.{attr}", block.attn, real)
        if getattr(block, "mlp", None) is not None:
            for attr in _MLP:
                add(f"blocks.{layer}.mlp.{attr}", block.mlp, attr)
        for ln in ("ln1", "ln2"):
            if hasattr(block, ln):
                add(f"blocks.{layer}.{ln}.w", getattr(block, ln), "w")
                add(f"blocks.{layer}.{ln}.b", getattr(block, ln), "b")
    if hasattr(model, "ln_final"):
        add("ln_final.w", model.ln_final, "w")
        add("ln_final.b", model.ln_final, "b")
    return slots


def _layout(module: nn.Module, name: str) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]:
    """``(to [in, out], from [in, out])`` for a projection's weight: ``nn.Linear`` keeps ``[out, in]``,
    HuggingFace's ``Conv1D`` (GPT-2's attention and MLP) keeps ``[in, out]``."""
    if isinstance(module, nn.Linear):
        return (lambda w: w.T), (lambda t: t.T)
    if type(module).__name__ == "Conv1D" and hasattr(module, "nf"):
        return _identity, _identity
    raise TypeError(
        f"{name} cannot be addressed: it is the weight of a {type(module).__name__}, and only nn.Linear "
        "([out, in]) and HuggingFace Conv1D ([in, out]) projections have a known layout"
    )


def _matrix_slots(name: str, module: nn.Module, bias_name: str | None = None) -> list[WeightSlot]:
    """A projection's weight in TransformerLens ``[in, out]`` layout (and its bias, if it has one)."""
    to_io, from_io = _layout(module, name)
    slots = [WeightSlot(name, module, "weight", to_io, from_io)]
    return slots + (_plain(bias_name, module, "bias") if bias_name else [])


def _projection_slots(prefix: str, module: nn.Module, d_head: int, kind: str) -> list[WeightSlot]:
    """Slots for one attention projection of a bridge (kind: Q, K, V or O), ``nn.Linear`` or ``Conv1D``."""
    to_io, from_io = _layout(module, f"{prefix}.W_{kind}")
    if kind == "O":  # [n_heads * d_head, d_model] <-> [n_heads, d_head, d_model]

        def to_w(w: Tensor) -> Tensor:
            io = to_io(w)
            return io.reshape(io.shape[0] // d_head, d_head, io.shape[1])

        def from_w(t: Tensor) -> Tensor:
            return from_io(t.reshape(-1, t.shape[-1]))

        to_b, from_b = _identity, _identity
    else:  # [d_model, n * d_head] <-> [n, d_model, d_head] (n < n_heads for grouped-query K and V)

        def to_w(w: Tensor) -> Tensor:
            io = to_io(w)
            return io.reshape(io.shape[0], -1, d_head).transpose(0, 1)

        def from_w(t: Tensor) -> Tensor:
            return from_io(t.transpose(0, 1).reshape(t.shape[1], -1))

        to_b = lambda b: b.reshape(-1, d_head)  # noqa: E731
        from_b = lambda t: t.reshape(-1)  # noqa: E731
    slots = [WeightSlot(f"{prefix}.W_{kind}", module, "weight", to_w, from_w)]
    if _has_weight(module, "bias"):
        slots.append(WeightSlot(f"{prefix}.b_{kind}", module, "bias", to_b, from_b))
    return slots


def _plain(name: str, owner: nn.Module, attr: str) -> list[WeightSlot]:
    return [WeightSlot(name, owner, attr, _identity, _identity)] if _has_weight(owner, attr) else []


def _child(module: nn.Module, name: str) -> nn.Module | None:
    """``module.<name>`` (bridge components forward attribute access to the wrapped module), or None."""
    try:
        return getattr(module, name)
    except AttributeError:
        return None


def _wrapped(model: nn.Module) -> str:
    original = getattr(model, "original_model", None)
    return type(original).__name__ if original is not None else type(model).__name__


def _attention_slots(model: nn.Module, layer: int, attn: nn.Module) -> list[WeightSlot]:
    prefix = f"blocks.{layer}.attn"
    parts = {kind: _child(attn, kind.lower()) for kind in ("Q", "K", "V", "O")}
    missing = [f"W_{kind}" for kind, part in parts.items() if part is None]
    if missing:
        raise TypeError(
            f"{prefix}.{missing[0]} cannot be addressed: this bridge's attention ({type(attn).__name__}, wrapping "
            f"{_wrapped(model)}) has no separate q / k / v / o projections to read {', '.join(missing)} from"
        )
    joint = _child(attn, "qkv")
    if joint is not None:  # GPT-2's c_attn: TransformerLens splits it into q / k / v views at boot
        q, qkv = _unwrap(parts["Q"]).weight, _unwrap(joint).weight
        if q.untyped_storage().data_ptr() != qkv.untyped_storage().data_ptr():
            raise TypeError(
                f"{prefix}.W_Q / W_K / W_V cannot be written on this bridge: its q / k / v projections are copies "
                f"of the joint qkv projection of {_wrapped(model)}, so a write would leave the wrapped module's "
                "own weight unchanged"
            )
    slots: list[WeightSlot] = []
    for kind, part in parts.items():
        slots += _projection_slots(prefix, _unwrap(part), model.cfg.d_head, kind)
    return slots


def _mlp_slots(layer: int, mlp: nn.Module) -> list[WeightSlot]:
    prefix = f"blocks.{layer}.mlp"
    fc_in, fc_out, gate = _child(mlp, "in"), _child(mlp, "out"), _child(mlp, "gate")
    if fc_in is None or fc_out is None:
        raise TypeError(
            f"{prefix}.W_in / W_out cannot be addressed: this bridge's MLP ({type(mlp).__name__}) has no "
            "separate input and output projections"
        )
    fc_in, fc_out = _unwrap(fc_in), _unwrap(fc_out)
    slots = _matrix_slots(f"{prefix}.W_in", fc_in) + _matrix_slots(f"{prefix}.W_out", fc_out)
    if gate is not None:  # a gated MLP (Llama's gate_proj): HookedTransformer's W_gate
        slots += _matrix_slots(f"{prefix}.W_gate", _unwrap(gate))
    return slots + _plain(f"{prefix}.b_in", fc_in, "bias") + _plain(f"{prefix}.b_out", fc_out, "bias")


def _bridge_slots(model: nn.Module) -> dict[str, WeightSlot]:
    """A bridge's weights through its TransformerLens components (``embed``, ``blocks[l].attn.q``, ...):
    the same code for ``boot_native`` bridges and bridges that wrap a HuggingFace module."""
    slots = _plain("W_E", _unwrap(model.embed), "weight")
    if _child(model, "pos_embed") is not None:
        slots += _plain("W_pos", _unwrap(model.pos_embed), "weight")
    slots += _matrix_slots("W_U", _unwrap(model.unembed), "b_U")
    for layer, block in enumerate(model.blocks):
        slots += _attention_slots(model, layer, block.attn)
        mlp = _child(block, "mlp")
        if mlp is not None and not getattr(model.cfg, "attn_only", False):
            slots += _mlp_slots(layer, mlp)
        for ln in ("ln1", "ln2"):
            slots += _norm_slots(f"blocks.{layer}.{ln}", _child(block, ln))
    slots += _norm_slots("ln_final", _child(model, "ln_final"))
    return {slot.name: slot for slot in slots}


def _norm_slots(prefix: str, wrapped: nn.Module | None) -> list[WeightSlot]:
    if wrapped is None:
        return []
    norm = _unwrap(wrapped)
    return _plain(f"{prefix}.w", norm, "weight") + _plain(f"{prefix}.b", norm, "bias")


def _mark_shared(slots: dict[str, WeightSlot]) -> dict[str, WeightSlot]:
    """Note on each slot the other names whose parameter is the same tensor (tied weights)."""
    by_tensor: dict[tuple, list[str]] = {}
    for s in slots.values():
        p = s.parameter
        by_tensor.setdefault((p.data_ptr(), tuple(p.shape), p.stride()), []).append(s.name)
    out = {}
    for name, s in slots.items():
        p = s.parameter
        others = tuple(n for n in by_tensor[(p.data_ptr(), tuple(p.shape), p.stride())] if n != name)
        out[name] = replace(s, shares=others) if others else s
    return out


def weight_slots(model: nn.Module) -> dict[str, WeightSlot]:
    """Every addressable weight of ``model``, by TransformerLens name."""
    if is_bridge(model):
        return _mark_shared(_bridge_slots(model))
    if hasattr(model, "blocks") and hasattr(model, "embed") and hasattr(model, "unembed"):
        return _mark_shared(_hooked_slots(model))
    raise TypeError(f"expected a HookedTransformer or a TransformerBridge, got {type(model).__name__}")


def weight_names(model: nn.Module) -> list[str]:
    """All weight names of ``model`` (e.g. ``['W_E', 'W_pos', 'W_U', 'blocks.0.attn.W_Q', ...]``)."""
    return list(weight_slots(model))


def slot(model: nn.Module, name: str) -> WeightSlot:
    """The slot of one weight; an unknown name raises a ``KeyError`` listing the closest names."""
    slots = weight_slots(model)
    if name not in slots:
        close = difflib.get_close_matches(name, list(slots), n=5, cutoff=0.4)
        raise KeyError(f"unknown weight name {name!r}; closest valid names: {close or sorted(slots)[:8]}")
    return slots[name]


def get_weight(model: nn.Module, name: str) -> Tensor:
    """A detached copy of the weight ``name`` in TransformerLens layout."""
    s = slot(model, name)
    return s.to_tl(s.value.detach()).clone()


def weight_parameters(model: nn.Module, name: str) -> nn.Parameter:
    """The real ``nn.Parameter`` holding ``name`` (in the model's own layout)."""
    return slot(model, name).parameter


def check_replacement(model: nn.Module, name: str, value: Tensor) -> WeightSlot:
    """Validate a replacement for ``name`` (type, shape, dtype, device) without changing anything."""
    s = slot(model, name)
    if not isinstance(value, Tensor):
        raise TypeError(f"replacement for {name!r} must be a torch.Tensor, got {type(value).__name__}")
    if s.tied:
        raise ValueError(f"{name!r} is tied to another weight (a parametrization); it cannot be written")
    if s.shares:
        raise ValueError(
            f"{name!r} cannot be written: it is the same tensor as {', '.join(map(repr, s.shares))} in this model "
            "(tied weights, e.g. a HuggingFace model with tie_word_embeddings=True), so writing it would change "
            "both; untie them first (transformers: config.tie_word_embeddings=False before building the model)"
        )
    expected = tuple(s.to_tl(s.parameter.detach()).shape)
    if tuple(value.shape) != expected:
        raise ValueError(f"replacement for {name!r} has shape {tuple(value.shape)}, expected {expected}")
    if value.dtype != s.parameter.dtype:
        raise TypeError(f"replacement for {name!r} has dtype {value.dtype}, expected {s.parameter.dtype}")
    if value.device != s.parameter.device:
        raise ValueError(
            f"replacement for {name!r} is on {value.device}, the model's weight is on {s.parameter.device}"
        )
    return s


def set_weight_(model: nn.Module, name: str, value: Tensor) -> None:
    """Write ``value`` (TransformerLens layout) into the real parameter behind ``name``, in place."""
    s = check_replacement(model, name, value)
    with torch.no_grad():
        s.parameter.copy_(s.from_tl(value))


def weight_views(model: nn.Module, *names: str) -> tuple[Tensor, ...]:
    """The weights ``names`` in TransformerLens layout, as differentiable views of the real
    parameters (tied weights as their tied value): for code that computes with the weights."""
    slots = weight_slots(model)
    for name in names:
        if name not in slots:
            slot(model, name)  # the error listing the closest names
    return tuple(slots[name].to_tl(slots[name].value) for name in names)


def set_weights_(model: nn.Module, weights: dict[str, Tensor]) -> None:
    """Write every weight of ``model`` from ``weights`` (TransformerLens names and layout): all
    names, shapes, dtypes and devices are checked before anything is written."""
    slots = weight_slots(model)
    missing, unexpected = sorted(set(slots) - set(weights)), sorted(set(weights) - set(slots))
    if missing or unexpected:
        raise ValueError(f"weights do not fit the model: missing {missing}, unexpected {unexpected}")
    for name, value in weights.items():
        check_replacement(model, name, value)
    with torch.no_grad():
        for name, value in weights.items():
            slots[name].parameter.copy_(slots[name].from_tl(value))


def weight_shapes(cfg) -> dict[str, tuple[int, ...]]:
    """Every weight name and TransformerLens shape of a toy model with config ``cfg`` (a dict or an
    object with the ``HookedTransformerConfig`` fields), in the order of ``HookedTransformer
    .named_parameters()`` (TransformerLens 3.9). Standard positions, LN / LNPre / no norm."""
    get = cfg.get if isinstance(cfg, dict) else lambda k, d=None: getattr(cfg, k, d)
    L, H, d, d_head = get("n_layers"), get("n_heads"), get("d_model"), get("d_head")
    d_vocab, n_ctx = get("d_vocab"), get("n_ctx")
    d_out = get("d_vocab_out", -1)
    d_out = d_vocab if d_out is None or d_out <= 0 else d_out
    ln = get("normalization_type") == "LN"
    mlp = not get("attn_only", False)
    d_mlp = get("d_mlp") or 4 * d
    shapes: dict[str, tuple[int, ...]] = {"W_E": (d_vocab, d), "W_pos": (n_ctx, d)}
    for layer in range(L):
        p = f"blocks.{layer}"
        if ln:
            shapes.update({f"{p}.ln1.w": (d,), f"{p}.ln1.b": (d,)})
            if mlp:
                shapes.update({f"{p}.ln2.w": (d,), f"{p}.ln2.b": (d,)})
        shapes.update(
            {
                f"{p}.attn.W_Q": (H, d, d_head),
                f"{p}.attn.W_O": (H, d_head, d),
                f"{p}.attn.b_Q": (H, d_head),
                f"{p}.attn.b_O": (d,),
                f"{p}.attn.W_K": (H, d, d_head),
                f"{p}.attn.W_V": (H, d, d_head),
                f"{p}.attn.b_K": (H, d_head),
                f"{p}.attn.b_V": (H, d_head),
            }
        )
        if mlp:
            shapes.update(
                {
                    f"{p}.mlp.W_in": (d, d_mlp),
                    f"{p}.mlp.b_in": (d_mlp,),
                    f"{p}.mlp.W_out": (d_mlp, d),
                    f"{p}.mlp.b_out": (d,),
                }
            )
    if ln:
        shapes.update({"ln_final.w": (d,), "ln_final.b": (d,)})
    shapes.update({"W_U": (d, d_out), "b_U": (d_out,)})
    return shapes
