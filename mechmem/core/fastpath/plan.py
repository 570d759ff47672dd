"""A :class:`Plan`: how to run one model's forward through the fused function, if it can be.

:func:`make_plan` accepts a model when its architecture is covered (:mod:`.architecture`), every
hook on it is a declared one the fused forward applies (:mod:`.hookscan`), and every parameter is
a weight found by :func:`hooks.weights.weight_slots` (a tied weight, computed by a parametrization,
is read as the model reads it). It then checks once that the fused logits equal ``model(tokens)``
on random tokens, so that a wrong declaration, or a model detail no check here knows about,
makes the model fall back instead of training on a different function.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from hooks.weights import weight_slots

from .architecture import LayerShape, NormShape, Unsupported, layer_shapes, model_kind, native_attentions
from .fused import Block, Norm, Weights, fused_logits
from .hookscan import Effects, hook_effects

SKIPPABLE = ("W_Q", "b_Q", "b_K", "b_V", "b_O", "b_in", "b_out", "b_U", "W_pos")
CHECK_TOLERANCE = 1e-4  # relative to the logits' scale; a wrong plan is off by O(1)


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
    """One named weight: ``getattr(owner, attr)`` (the parameter ``param``, or a parametrization of it
    when ``tied``) and how to read it in row layout."""

    name: str
    owner: nn.Module
    attr: str
    param: nn.Parameter
    tied: bool
    to_tl: Callable[[Tensor], Tensor]
    checked_version: int = -1
    skippable: bool = False  # frozen and zero (a bias, W_pos) or the identity (W_Q), at checked_version

    def still_there(self) -> bool:
        if self.tied:
            return (
                parametrize.is_parametrized(self.owner, self.attr)
                and getattr(self.owner.parametrizations, self.attr).original is self.param
            )
        return self.owner._parameters.get(self.attr) is self.param

    def read(self) -> Tensor | None:
        """The weight in row layout, or ``None`` when it is frozen and zero / the identity."""
        if self.tied:
            return _row_layout(self.name, self.to_tl(getattr(self.owner, self.attr)))
        p = self.param
        if not p.requires_grad and self.name.rsplit(".", 1)[-1] in SKIPPABLE:
            if p._version != self.checked_version:
                self.skippable, self.checked_version = self._is_skippable(), p._version
            if self.skippable:
                return None
        return _row_layout(self.name, self.to_tl(p))

    def _is_skippable(self) -> bool:
        with torch.no_grad():
            value = _row_layout(self.name, self.to_tl(self.param))
            if self.name.endswith("W_Q"):
                eye = torch.eye(value.shape[0], dtype=value.dtype, device=value.device)
                return value.shape == eye.shape and bool(torch.equal(value, eye))
            return not bool(value.any())


def _weight_refs(model: nn.Module) -> dict[str, WeightRef]:
    return {
        name: WeightRef(name, s.owner, s.attr, s.parameter, s.tied, s.to_tl) for name, s in weight_slots(model).items()
    }


@dataclass
class Plan:
    """How to compute one model's forward with the fused function (see the module docstring)."""

    kind: str
    layers: list[LayerShape]
    final: NormShape
    effects: Effects
    refs: dict[str, WeightRef]

    def weights_unchanged(self) -> bool:
        """True while every weight is still the parameter the plan found."""
        return all(ref.still_there() for ref in self.refs.values())

    def weights(self) -> Weights:
        """The model's weights in the fused forward's layout (differentiable views of the parameters)."""
        r = {name: ref.read() for name, ref in self.refs.items()}
        blocks = [self._block(layer, shape, r) for layer, shape in enumerate(self.layers)]
        final = self._norm(self.final, r, "ln_final")
        return Weights(
            W_E=r["W_E"], W_pos=r.get("W_pos"), blocks=blocks, ln_final=final, W_U=r["W_U"], b_U=r.get("b_U")
        )

    def _norm(self, shape: NormShape, r: dict, prefix: str) -> Norm:
        return Norm(shape.eps, r[f"{prefix}.w"], r[f"{prefix}.b"]) if shape.affine else Norm(shape.eps)

    def _block(self, layer: int, shape: LayerShape, r: dict) -> Block:
        a, m = f"blocks.{layer}.attn.", f"blocks.{layer}.mlp."
        blk = Block(
            shape.n_heads,
            shape.d_head,
            shape.scale,
            self._norm(shape.norm, r, f"blocks.{layer}.ln1"),
            *(r.get(a + w) for w in ("W_Q", "b_Q", "W_K", "b_K", "W_V", "b_V", "W_O", "b_O")),
            act_fn=shape.act_fn,
            effects={loc: fx for (lay, loc), fx in self.effects.items() if lay == layer},
        )
        if not shape.attn_only:
            blk.ln2 = self._norm(shape.norm, r, f"blocks.{layer}.ln2")
            blk.W_in, blk.b_in, blk.W_out, blk.b_out = (r.get(m + w) for w in ("W_in", "b_in", "W_out", "b_out"))
        return blk


def busy(model: nn.Module) -> str | None:
    """A passing state in which the model's forward computes something else (``None``: none): a
    bridge layer attending to keys and values of earlier positions (``hooks.bridge.past_keys_values``)."""
    if model_kind(model) == "bridge":
        for layer, attn in enumerate(native_attentions(model)):
            if getattr(attn, "mechmem_past_kv", None) is not None:
                return f"layer {layer} attends to past keys and values"
    return None


def make_plan(model: nn.Module) -> Plan:
    """A :class:`Plan` for ``model``, or ``Unsupported`` saying why the fast path cannot run it."""
    kind = model_kind(model)
    layers, final = layer_shapes(model, kind)
    effects = hook_effects(model, kind)
    try:
        refs = _weight_refs(model)
    except (KeyError, TypeError, AttributeError) as err:
        raise Unsupported(f"weights not addressable: {err}") from None
    missing = [n for n in _expected_names(layers, final) if n not in refs]
    if missing:
        raise Unsupported(f"weights {missing} are missing")
    unread = {id(p) for p in model.parameters()} - {id(ref.param) for ref in refs.values()}
    if unread:
        raise Unsupported(f"{len(unread)} parameters have no TransformerLens weight name")
    plan = Plan(kind, layers, final, effects, refs)
    _check_against_model(model, plan)
    return plan


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


def _check_against_model(model: nn.Module, plan: Plan) -> None:
    """``Unsupported`` unless the fused logits equal ``model(tokens)`` on 2 random sequences."""
    cfg = model.cfg
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(cfg.d_vocab, (2, min(cfg.n_ctx, 128)), generator=generator)
    tokens = tokens.to(plan.refs["W_E"].param.device)
    with torch.no_grad():
        expected, fused = model(tokens), fused_logits(plan.weights(), tokens)
    diff = (expected - fused).abs().max().item()
    if not diff <= CHECK_TOLERANCE * (1 + expected.abs().max().item()):
        raise Unsupported(
            f"the fused forward differs from model(tokens) by {diff:.3g} (a hook whose declared "
            "effect is not what it does, or an unknown model detail)"
        )
