"""Small models for tests, benchmarks and notebooks, on whichever TransformerLens line is installed:
a ``HookedTransformer`` (3.x only) and a ``TransformerBridge.boot_native`` model (both lines, built
by :func:`hooks.bridge.boot_bridge`, so its attention hooks are live) holding the same random
weights, drawn from a local generator (the global RNG is untouched), on CPU and in eval mode.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from hooks.bridge import boot_bridge
from hooks.compat import has_hooked_transformer
from hooks.weights import get_weight, set_weights_, weight_names, weight_shapes

#: the model kinds the installed TransformerLens offers
KINDS: tuple[str, ...] = ("hooked", "bridge") if has_hooked_transformer() else ("bridge",)

_BRIDGE_KEYS = (
    "n_layers",
    "d_model",
    "d_head",
    "n_heads",
    "n_ctx",
    "d_vocab",
    "d_vocab_out",
    "act_fn",
    "normalization_type",
    "attn_only",
    "d_mlp",
)


def tiny_config(**overrides) -> dict:
    """A small config dict accepted by both ``HookedTransformerConfig`` and ``boot_native``."""
    cfg = dict(
        n_layers=2,
        d_model=32,
        d_head=8,
        n_heads=4,
        n_ctx=16,
        d_vocab=24,
        act_fn="relu",
        normalization_type="LN",
        attn_only=False,
    )
    cfg.update(overrides)
    return cfg


def random_weights(cfg: dict, seed: int = 0) -> dict[str, Tensor]:
    """Random weights for ``cfg`` by TransformerLens name: LayerNorm scales 1 + N(0, 0.01), every
    other weight N(0, 1/fan) with fan its last dimension."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in weight_shapes(cfg).items():
        if name.endswith(".w"):
            out[name] = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        else:
            out[name] = torch.randn(shape, generator=gen) / shape[-1] ** 0.5
    return out


def hooked_model(cfg: dict, seed: int = 0) -> nn.Module:
    """A ``HookedTransformer`` (TransformerLens 3.x) with :func:`random_weights`."""
    if not has_hooked_transformer():
        raise RuntimeError("HookedTransformer was removed in TransformerLens 4.0; use random_bridge")
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        hcfg = HookedTransformerConfig(**cfg, device="cpu", init_weights=False)
        model = HookedTransformer(hcfg, move_to_device=False)
    set_weights_(model, random_weights(cfg, seed))
    return model.eval()


def random_bridge(cfg: dict, seed: int = 0) -> nn.Module:
    """A bridge (live attention hooks) with :func:`random_weights`: the same weights as
    ``hooked_model(cfg, seed)``."""
    bridge = boot_bridge(cfg)
    set_weights_(bridge, random_weights(cfg, seed))
    return bridge.eval()


def bridge_like(model: nn.Module) -> nn.Module:
    """A bridge (live attention hooks) with ``model``'s config and exactly its weights; ``model`` is
    a ``HookedTransformer`` or a bridge."""
    cfg = model.cfg
    bridge_cfg = {k: getattr(cfg, k) for k in _BRIDGE_KEYS}
    if cfg.attn_only or bridge_cfg["d_mlp"] is None:
        bridge_cfg.pop("d_mlp")
    bridge = boot_bridge(bridge_cfg, dtype=next(model.parameters()).dtype)
    set_weights_(bridge, {name: get_weight(model, name) for name in weight_names(model)})
    return bridge.eval()


def twin_models(seed: int = 0, **overrides) -> tuple[nn.Module, nn.Module]:
    """``(HookedTransformer, TransformerBridge)`` with the same random weights (TransformerLens 3.x)."""
    model = hooked_model(tiny_config(**overrides), seed=seed)
    return model, bridge_like(model)


def models_by_kind(seed: int = 0, **overrides) -> dict[str, nn.Module]:
    """``{kind: model}`` for every kind in :data:`KINDS`, all with the same random weights."""
    cfg = tiny_config(**overrides)
    return {kind: hooked_model(cfg, seed) if kind == "hooked" else random_bridge(cfg, seed) for kind in KINDS}


# ----------------------------------------------------------------------------- GPT-2 architecture

#: a GPT-2-architecture model small enough for tests (seconds): 2 layers, d_model 64, 4 heads, vocab 100
GPT2_SIZES = dict(n_layers=2, d_model=64, n_heads=4, d_vocab=100, n_ctx=32)


def gpt2_hooked_config(n_layers: int, d_model: int, n_heads: int, d_vocab: int, n_ctx: int) -> dict:
    """The ``HookedTransformerConfig`` fields of GPT-2's architecture (pre-LayerNorm, learned
    positions, GELU (tanh) MLPs of width 4 d_model, biases) at the given sizes."""
    return dict(
        n_layers=n_layers,
        d_model=d_model,
        n_heads=n_heads,
        d_head=d_model // n_heads,
        d_mlp=4 * d_model,
        d_vocab=d_vocab,
        n_ctx=n_ctx,
        act_fn="gelu_new",
        normalization_type="LN",
        positional_embedding_type="standard",
    )


def hf_gpt2(seed: int = 0, tie_word_embeddings: bool = True, **sizes) -> nn.Module:
    """A ``transformers.GPT2LMHeadModel`` with random weights from its config (offline: nothing is
    downloaded), drawn under ``torch.manual_seed(seed)`` inside a forked RNG (the caller's RNG is
    untouched), in eval mode. ``sizes``: :data:`GPT2_SIZES` fields to change."""
    import transformers

    s = {**GPT2_SIZES, **sizes}
    config = transformers.GPT2Config(
        n_layer=s["n_layers"],
        n_embd=s["d_model"],
        n_head=s["n_heads"],
        vocab_size=s["d_vocab"],
        n_positions=s["n_ctx"],
        tie_word_embeddings=tie_word_embeddings,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.GPT2LMHeadModel(config)
    return model.eval()


def hf_gpt2_bridge(seed: int = 0, tie_word_embeddings: bool = True, **sizes) -> nn.Module:
    """A ``TransformerBridge`` wrapping :func:`hf_gpt2` (TransformerLens's
    ``build_bridge_from_module``, as a user wraps their own HuggingFace module), in eval mode."""
    from transformer_lens.model_bridge.sources._bridge_builder import build_bridge_from_module

    hf = hf_gpt2(seed, tie_word_embeddings, **sizes)
    return build_bridge_from_module(hf, "GPT2LMHeadModel", hf_config=hf.config).eval()


def gpt2_hooked_model(seed: int = 0, **sizes) -> nn.Module:
    """A ``HookedTransformer`` (TransformerLens 3.x) of GPT-2's architecture, initialised by
    TransformerLens (its GPT-2 init: N(0, 0.8 / sqrt(d_model)) weights, zero biases) under
    ``torch.manual_seed(seed)`` inside a forked RNG (the caller's RNG is untouched), in eval mode.
    On TransformerLens 4.x, where ``HookedTransformer`` is gone, the same architecture is a bridge:
    :func:`hf_gpt2_bridge` (a HuggingFace module) or ``boot_bridge(gpt2_hooked_config(...))``."""
    if not has_hooked_transformer():
        raise RuntimeError("HookedTransformer was removed in TransformerLens 4.0; use hf_gpt2_bridge")
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.manual_seed(seed)
        cfg = HookedTransformerConfig(**gpt2_hooked_config(**{**GPT2_SIZES, **sizes}), device="cpu")
        model = HookedTransformer(cfg, move_to_device=False)
    return model.eval()
