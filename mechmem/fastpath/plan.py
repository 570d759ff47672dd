"""Decide whether the fast path can run a model, and read its weights for the fused forward.

:func:`make_plan` inspects a ``HookedTransformer`` or a ``TransformerBridge.boot_native`` model and
returns a :class:`Plan`, or raises :class:`Unsupported` with the reason. It accepts a model only
when the fused forward computes the same function:

- the architecture: standard positions, causal attention, LayerNorm / LNPre / none, a ReLU / GELU /
  SiLU MLP or none, and every other TransformerLens option at its neutral default;
- the hooks: none, or permanent forward hooks that declare an effect the fused forward applies
  (:mod:`mechmem.fastpath.effects`); no backward or global hooks, no overridden ``forward``;
- the weights: each a plain ``nn.Parameter`` found by :func:`hooks.weights.weight_slots` (a
  parametrized weight, e.g. a tied unembedding, is not one).

:func:`signature` is the cheap per-call fingerprint (modules, their classes, hooks, ``forward``
overrides, global hooks); a plan stays valid while it and the parameters are unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.modules import module as torch_module

from hooks.weights import _unwrap, is_bridge, weight_slots

from .effects import HookEffect, declared_effect
from .fused import ACTIVATIONS, Block, Norm, Weights

#: hook points where SUBTRACT_BLOCK_INPUT may sit (name after "blocks.{l}.") -> the fused location
HOOKED_POINTS = {"hook_resid_pre": "resid_pre", "hook_resid_mid": "resid_mid", "hook_resid_post": "resid_post"}
BRIDGE_POINTS = {"hook_in": "resid_pre", "ln2.hook_in": "mlp_in", "hook_out": "resid_post"}
SUBTRACT_AT = ("resid_mid", "mlp_in", "resid_post")

#: HookedTransformerConfig fields the fused forward handles; every other one must keep its default
HOOKED_FIELDS = ("n_layers", "d_model", "n_ctx", "d_head", "n_heads", "d_mlp", "d_vocab", "d_vocab_out", "act_fn",
                 "normalization_type", "attn_only", "eps", "use_attn_scale", "attn_scale", "dtype", "device",
                 "n_devices", "seed", "init_mode", "initializer_range", "init_weights", "model_name", "n_params",
                 "use_attn_result", "use_split_qkv_input", "use_hook_mlp_in", "use_attn_in", "use_hook_tokens",
                 "default_prepend_bos", "tokenizer_name", "tokenizer_prepends_bos")
_GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                 "_global_backward_pre_hooks")
_HOOK_DICTS = ("_forward_pre_hooks", "_forward_hooks", "_backward_pre_hooks", "_backward_hooks")


class Unsupported(Exception):
    """The fast path cannot run this model (the message says why); use the model's own forward.
    ``temporary``: only because of a non-permanent hook (an intervention the caller meant to run)."""

    def __init__(self, message: str, temporary: bool = False):
        super().__init__(message)
        self.temporary = temporary


def signature(model: nn.Module) -> tuple:
    """What must stay unchanged for a plan (or a refusal) to stay valid (module ids, not modules: the
    cache must not keep models alive)."""
    mods = tuple(model.modules())
    hooks = tuple((i, *(tuple(getattr(m, d)) for d in _HOOK_DICTS)) for i, m in enumerate(mods)
                  if m._forward_pre_hooks or m._forward_hooks or m._backward_pre_hooks or m._backward_hooks)
    overridden = tuple(i for i, m in enumerate(mods) if "forward" in m.__dict__)
    global_hooks = tuple(tuple(getattr(torch_module, g)) for g in _GLOBAL_HOOKS)
    return tuple(map(id, mods)), tuple(map(type, mods)), hooks, overridden, global_hooks


# --- weights ---------------------------------------------------------------------------------------------


def _row_layout(name: str, t: Tensor) -> Tensor:
    """TransformerLens layout -> the fused forward's row-vector layout (see ``fused``)."""
    short = name.rsplit(".", 1)[-1]
    if short in ("W_Q", "W_K", "W_V"):  # [H, d_model, d_head] -> [d_model, H * d_head]
        return t[0] if t.shape[0] == 1 else t.permute(1, 0, 2).reshape(t.shape[1], -1)
    if short in ("b_Q", "b_K", "b_V", "W_O"):  # [H, d_head(, d_model)] -> [H * d_head(, d_model)]
        return t.reshape(t.shape[0] * t.shape[1], *t.shape[2:])
    return t


@dataclass
class WeightRef:
    """Where one named weight lives (``owner._parameters[attr]``) and how to read it in row layout."""

    name: str
    owner: nn.Module
    attr: str
    param: nn.Parameter
    to_tl: Callable[[Tensor], Tensor]
    checked_version: int = -1
    skippable: bool = False  # frozen and zero (a bias, W_pos) or the identity (W_Q), at checked_version

    def still_there(self) -> bool:
        return self.owner._parameters.get(self.attr) is self.param

    def read(self) -> Tensor | None:
        """The weight in row layout, or ``None`` when it is frozen and zero / the identity."""
        p = self.param
        if not p.requires_grad:
            if p._version != self.checked_version:
                self.skippable, self.checked_version = self._is_skippable(), p._version
            if self.skippable:
                return None
        return _row_layout(self.name, self.to_tl(p))

    def _is_skippable(self) -> bool:
        short = self.name.rsplit(".", 1)[-1]
        with torch.no_grad():
            value = _row_layout(self.name, self.to_tl(self.param))
            if short == "W_Q":
                eye = torch.eye(value.shape[0], dtype=value.dtype, device=value.device)
                return value.shape == eye.shape and torch.equal(value, eye)
            if short.startswith("b_") or short == "W_pos":
                return not bool(value.any())
        return False


def _weight_refs(model: nn.Module) -> dict[str, WeightRef]:
    owners = {id(p): (m, attr) for m in model.modules() for attr, p in m._parameters.items() if p is not None}
    refs = {}
    for name, slot in weight_slots(model).items():
        owner, attr = owners[id(slot.parameter)]
        refs[name] = WeightRef(name, owner, attr, slot.parameter, slot.to_tl)
    return refs


# --- architecture ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NormShape:
    eps: float | None = None  # None: no normalisation
    affine: bool = False  # LayerNorm (weight and bias) rather than LNPre


@dataclass(frozen=True)
class LayerShape:
    n_heads: int
    d_head: int
    scale: float
    norm: NormShape
    attn_only: bool
    act_fn: str


_NORMS = {"hooked": {"LayerNorm": True, "LayerNormPre": False}, "bridge": {"LayerNorm": True, "NativeLayerNormPre": False}}


def _norm_shape(module: nn.Module, kind: str) -> NormShape:
    """The shape of a supported norm module (``Identity``: none); ``Unsupported`` otherwise."""
    name = type(module).__name__
    if name == "Identity":
        return NormShape()
    affine = _NORMS[kind].get(name)
    if affine is None or (kind == "bridge" and affine and not (module.elementwise_affine and module.bias is not None)):
        raise Unsupported(f"normalisation {name} is not supported by the fast path")
    return NormShape(float(module.eps), affine)


def _hooked_layers(model: nn.Module) -> tuple[list[LayerShape], NormShape]:
    from transformer_lens import HookedTransformerConfig

    cfg = model.cfg
    if cfg.normalization_type not in (None, "LN", "LNPre"):
        raise Unsupported(f"normalization_type={cfg.normalization_type!r}")
    if not cfg.attn_only and cfg.act_fn not in ACTIVATIONS:
        raise Unsupported(f"act_fn={cfg.act_fn!r}")
    kept = {f: getattr(cfg, f) for f in HOOKED_FIELDS if hasattr(cfg, f)}
    reference = HookedTransformerConfig(**kept)
    for f in dataclasses.fields(cfg):
        if f.name not in kept and not _same(getattr(cfg, f.name), getattr(reference, f.name)):
            raise Unsupported(f"cfg.{f.name}={getattr(cfg, f.name)!r} (the fast path needs the default)")
    layers = []
    for block in model.blocks:
        if type(block.attn).__name__ != "Attention" or (not cfg.attn_only and type(block.mlp).__name__ != "MLP"):
            raise Unsupported(f"block components {type(block.attn).__name__}/{type(block.mlp).__name__}")
        norm = _norm_shape(getattr(block, "ln1", nn.Identity()), "hooked")
        layers.append(LayerShape(cfg.n_heads, cfg.d_head, float(block.attn.attn_scale), norm, cfg.attn_only, cfg.act_fn))
    return layers, _norm_shape(getattr(model, "ln_final", nn.Identity()), "hooked")


def _same(a, b) -> bool:
    try:
        return bool(a == b)
    except (RuntimeError, TypeError, ValueError):
        return a is b


def _is_causal_mask(mask: Tensor) -> bool:
    """The native attention's mask buffer is the standard causal one (True above the diagonal)."""
    return bool(torch.equal(mask, torch.ones_like(mask).triu(1)))


def _bridge_layers(model: nn.Module) -> tuple[list[LayerShape], NormShape]:
    from transformer_lens.model_bridge.sources.native import model as native_module

    native = model.original_model
    if type(native).__name__ != "NativeModel":
        raise Unsupported(f"bridge over {type(native).__name__} (only boot_native models)")
    if getattr(model, "compatibility_mode", False):
        raise Unsupported("bridge in compatibility mode")
    if native.pos is None or native.rotary is not None or native.output_logits_soft_cap > 0:
        raise Unsupported("bridge without standard positions, or with a logit soft cap")
    layers = []
    for wrapped in native.layers:
        block = _unwrap(wrapped)
        attn, mlp = _unwrap(block.attn), getattr(block, "mlp", None)
        mlp = None if mlp is None else _unwrap(mlp)
        if (type(attn).__name__ != "NativeAttention" or attn.rotary is not None or attn.kv_repeats != 1
                or attn.attn_scores_soft_cap > 0 or not attn.causal or not _is_causal_mask(attn.causal_mask)):
            raise Unsupported("bridge attention with rotary, grouped queries, a soft cap or a non-causal mask")
        act = (model.cfg.act_fn or "gelu").lower()
        if mlp is not None and (type(mlp).__name__ != "NativeMLP" or act not in ACTIVATIONS
                                or mlp.act is not native_module._ACTIVATIONS.get(act)):
            raise Unsupported(f"bridge MLP {type(mlp).__name__} with act_fn={act!r}")
        norm = _norm_shape(_unwrap(block.ln1), "bridge")
        layers.append(LayerShape(attn.n_heads, attn.d_head, float(attn.scale), norm, mlp is None, act))
    return layers, _norm_shape(_unwrap(native.ln_out), "bridge")


# --- hooks -----------------------------------------------------------------------------------------------


def _bridge_internal_hooks(model: nn.Module) -> set[int]:
    """Ids of the capture hooks a bridge block wires on its first forward (``_capture_hook_handles``):
    they only store tensors or forward them to hook points, whose own hooks are checked separately."""
    return {h.id for m in model.modules() for h in getattr(m, "_capture_hook_handles", ())}


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
            if handle is not None:
                out.append((getattr(handle, "user_hook", None) or fn, handle.is_permanent, direction))
            else:
                out.append((fn, True, direction))
    return out


def _hook_effects(model: nn.Module, kind: str) -> dict[tuple[int, str], tuple[HookEffect, ...]]:
    """The declared effects to apply, by (layer, fused location); ``Unsupported`` for any other hook."""
    if any(getattr(torch_module, g) for g in _GLOBAL_HOOKS):
        raise Unsupported("global module hooks are registered")
    points = HOOKED_POINTS if kind == "hooked" else BRIDGE_POINTS
    internal = _bridge_internal_hooks(model)
    effects: dict[tuple[int, str], tuple[HookEffect, ...]] = {}
    for name, module in model.named_modules():
        if "forward" in module.__dict__:
            raise Unsupported(f"{name or 'the model'} has an overridden forward")
        for fn, permanent, direction in _hook_functions(module, internal):
            where = f"{direction} hook {getattr(fn, '__name__', fn)!r} on {name or 'the model'}"
            effect = declared_effect(fn)
            if direction != "fwd":
                raise Unsupported(f"{where}: backward hooks are not supported", temporary=not permanent)
            if not permanent:
                raise Unsupported(f"{where} is not permanent", temporary=True)
            if effect is None:
                raise Unsupported(f"{where} does not declare its effect (mechmem.fastpath.declare_effect)")
            if effect is HookEffect.OBSERVE:
                continue
            layer, location = _location(getattr(module, "name", None) or name, points)
            if location not in SUBTRACT_AT:
                raise Unsupported(f"{where}: {effect.name} is only supported on {sorted(points)}")
            effects[layer, location] = effects.get((layer, location), ()) + (effect,)
    return effects


def _location(hook_name: str, points: dict[str, str]) -> tuple[int, str | None]:
    parts = hook_name.split(".", 2)
    if len(parts) == 3 and parts[0] == "blocks" and parts[1].isdigit():
        return int(parts[1]), points.get(parts[2])
    return -1, None


# --- the plan --------------------------------------------------------------------------------------------


def model_kind(model: nn.Module) -> str:
    """``"hooked"`` (HookedTransformer), ``"bridge"`` (TransformerBridge); ``Unsupported`` otherwise."""
    if is_bridge(model):
        return "bridge"
    if any(cls.__name__ == "HookedTransformer" for cls in type(model).__mro__):
        return "hooked"
    raise Unsupported(f"{type(model).__name__} is neither a HookedTransformer nor a TransformerBridge")


@dataclass
class Plan:
    """How to compute one model's forward with the fused function (see the module docstring)."""

    kind: str
    layers: list[LayerShape]
    final: NormShape
    effects: dict[tuple[int, str], tuple[HookEffect, ...]]
    refs: dict[str, WeightRef]

    def weights_unchanged(self) -> bool:
        """True while every weight is still the parameter the plan found."""
        return all(ref.still_there() for ref in self.refs.values())

    def weights(self) -> Weights:
        """The model's weights in the fused forward's layout (differentiable views of the parameters)."""
        r = {name: ref.read() for name, ref in self.refs.items()}
        blocks = [self._block(layer, shape, r) for layer, shape in enumerate(self.layers)]
        final = self._norm(self.final, r, "ln_final")
        return Weights(W_E=r["W_E"], W_pos=r.get("W_pos"), blocks=blocks, ln_final=final, W_U=r["W_U"],
                       b_U=r.get("b_U"))

    def _norm(self, shape: NormShape, r: dict, prefix: str) -> Norm:
        if not shape.affine:
            return Norm(shape.eps)
        return Norm(shape.eps, r[f"{prefix}.w"], r[f"{prefix}.b"])

    def _block(self, layer: int, shape: LayerShape, r: dict) -> Block:
        a, m = f"blocks.{layer}.attn.", f"blocks.{layer}.mlp."
        blk = Block(shape.n_heads, shape.d_head, shape.scale, self._norm(shape.norm, r, f"blocks.{layer}.ln1"),
                    *(r.get(a + w) for w in ("W_Q", "b_Q", "W_K", "b_K", "W_V", "b_V", "W_O", "b_O")),
                    act_fn=shape.act_fn,
                    effects={loc: fx for (lay, loc), fx in self.effects.items() if lay == layer})
        if not shape.attn_only:
            blk.ln2 = self._norm(shape.norm, r, f"blocks.{layer}.ln2")
            blk.W_in, blk.b_in, blk.W_out, blk.b_out = (r.get(m + w) for w in ("W_in", "b_in", "W_out", "b_out"))
        return blk


def make_plan(model: nn.Module) -> Plan:
    """A :class:`Plan` for ``model``, or ``Unsupported`` saying why the fast path cannot run it."""
    kind = model_kind(model)
    layers, final = _hooked_layers(model) if kind == "hooked" else _bridge_layers(model)
    effects = _hook_effects(model, kind)
    try:
        refs = _weight_refs(model)
    except (KeyError, TypeError) as err:
        raise Unsupported(f"weights not addressable: {err}") from None
    missing = [n for n in _expected_names(layers, final) if n not in refs]
    unread = {id(p) for p in model.parameters()} - {id(ref.param) for ref in refs.values()}
    if missing:
        raise Unsupported(f"weights {missing} are not plain parameters (parametrized, e.g. tied?)")
    if unread:
        raise Unsupported(f"{len(unread)} parameters have no TransformerLens weight name (parametrizations?)")
    return Plan(kind, layers, final, effects, refs)


def _expected_names(layers: list[LayerShape], final: NormShape) -> list[str]:
    """Weights the architecture needs (biases may be absent on a bridge: ``nn.Linear(bias=False)``)."""
    names = ["W_E", "W_pos", "W_U"] + (["ln_final.w", "ln_final.b"] if final.affine else [])
    for i, shape in enumerate(layers):
        names += [f"blocks.{i}.attn.{w}" for w in ("W_Q", "W_K", "W_V", "W_O")]
        if shape.norm.affine:
            names += [f"blocks.{i}.{ln}.{w}" for ln in ("ln1",) + (() if shape.attn_only else ("ln2",)) for w in "wb"]
        if not shape.attn_only:
            names += [f"blocks.{i}.mlp.{w}" for w in ("W_in", "W_out")]
    return names
