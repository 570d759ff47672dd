"""Which architectures the fused forward computes exactly, read off a model of either kind.

A ``HookedTransformer`` qualifies when its config differs from TransformerLens's defaults only in
fields the fused forward handles (:data:`HOOKED_FIELDS`): so an option added in a later release, or
one this module does not know, makes the model fall back rather than be computed wrongly. A
``TransformerBridge.boot_native`` bridge qualifies when its native modules are the plain ones
(standard positions, causal attention with the standard mask, no rotary / grouped queries / soft
caps, LN / LNPre / no norm, a ReLU / GELU / SiLU MLP). Anything else raises :class:`Unsupported`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from hooks.weights import _unwrap, is_bridge

from .fused import ACTIVATIONS

#: HookedTransformerConfig fields the fused forward handles; every other one must keep its default
HOOKED_FIELDS = (
    "n_layers",
    "d_model",
    "n_ctx",
    "d_head",
    "n_heads",
    "d_mlp",
    "d_vocab",
    "d_vocab_out",
    "act_fn",
    "normalization_type",
    "attn_only",
    "eps",
    "use_attn_scale",
    "attn_scale",
    "dtype",
    "device",
    "n_devices",
    "seed",
    "init_mode",
    "initializer_range",
    "init_weights",
    "model_name",
    "n_params",
    "use_attn_result",
    "use_split_qkv_input",
    "use_hook_mlp_in",
    "use_attn_in",
    "use_hook_tokens",
    "default_prepend_bos",
    "tokenizer_name",
    "tokenizer_prepends_bos",
)
_NORMS = {
    "hooked": {"LayerNorm": True, "LayerNormPre": False},
    "bridge": {"LayerNorm": True, "NativeLayerNormPre": False},
}


class Unsupported(Exception):
    """The fast path cannot run this model (the message says why); use the model's own forward.
    ``temporary``: only because of a non-permanent hook (an intervention the caller meant to run)."""

    def __init__(self, message: str, temporary: bool = False):
        super().__init__(message)
        self.temporary = temporary


@dataclass(frozen=True)
class NormShape:
    eps: float | None = None  # None: no normalisation
    affine: bool = False  # LayerNorm (weight and bias) rather than LNPre


@dataclass(frozen=True)
class LayerShape:
    n_heads: int
    d_head: int
    scale: float  # attention scores are divided by it
    norm: NormShape
    attn_only: bool
    act_fn: str


def model_kind(model: nn.Module) -> str:
    """``"hooked"`` (HookedTransformer), ``"bridge"`` (TransformerBridge); ``Unsupported`` otherwise."""
    if is_bridge(model):
        return "bridge"
    if any(cls.__name__ == "HookedTransformer" for cls in type(model).__mro__):
        return "hooked"
    raise Unsupported(f"{type(model).__name__} is neither a HookedTransformer nor a TransformerBridge")


def layer_shapes(model: nn.Module, kind: str) -> tuple[list[LayerShape], NormShape]:
    """Every block's shape and the final norm's, or ``Unsupported``."""
    return _hooked_layers(model) if kind == "hooked" else _bridge_layers(model)


def _norm_shape(module: nn.Module, kind: str) -> NormShape:
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
        layers.append(
            LayerShape(cfg.n_heads, cfg.d_head, float(block.attn.attn_scale), norm, cfg.attn_only, cfg.act_fn)
        )
    return layers, _norm_shape(getattr(model, "ln_final", nn.Identity()), "hooked")


def _same(a, b) -> bool:
    try:
        return bool(a == b)
    except (RuntimeError, TypeError, ValueError):
        return a is b


def native_attentions(model: nn.Module) -> list[nn.Module]:
    """Each layer's native attention module of a bridge."""
    return [_unwrap(_unwrap(wrapped).attn) for wrapped in model.original_model.layers]


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
    act = (model.cfg.act_fn or "gelu").lower()
    layers = []
    for wrapped, attn in zip(native.layers, native_attentions(model)):
        block = _unwrap(wrapped)
        mlp = _unwrap(block.mlp) if hasattr(block, "mlp") else None
        if (
            not isinstance(attn, native_module.NativeAttention)
            or attn.rotary is not None
            or attn.kv_repeats != 1
            or attn.attn_scores_soft_cap > 0
            or not attn.causal
            or not _is_causal_mask(attn.causal_mask)
        ):
            raise Unsupported("bridge attention with rotary, grouped queries, a soft cap or a non-causal mask")
        if mlp is not None and (
            type(mlp).__name__ != "NativeMLP"
            or act not in ACTIVATIONS
            or mlp.act is not native_module._ACTIVATIONS.get(act)
        ):
            raise Unsupported(f"bridge MLP {type(mlp).__name__} with act_fn={act!r}")
        norm = _norm_shape(_unwrap(block.ln1), "bridge")
        layers.append(LayerShape(attn.n_heads, attn.d_head, float(attn.scale), norm, mlp is None, act))
    return layers, _norm_shape(_unwrap(native.ln_out), "bridge")
