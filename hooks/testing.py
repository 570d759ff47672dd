"""Small twin models for tests, benchmarks and notebooks: a ``HookedTransformer`` and a
``TransformerBridge.boot_native`` model holding the same weights (copied with
:mod:`hooks.weights`), both on CPU and in eval mode.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from hooks.weights import get_weight, set_weight_, weight_names


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


def hooked_model(cfg: dict, seed: int = 0) -> nn.Module:
    """A ``HookedTransformer`` with random weights drawn from a local generator (global RNG untouched)."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        model = HookedTransformer(HookedTransformerConfig(**cfg, device="cpu"))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith((".w",)):
                param.copy_(1.0 + 0.1 * torch.randn(param.shape, generator=gen))
            else:
                param.copy_(
                    torch.randn(param.shape, generator=gen) / param.shape[-1] ** 0.5
                )
    return model.eval()


def bridge_like(model: nn.Module) -> nn.Module:
    """A ``TransformerBridge.boot_native`` model with ``model``'s config and exactly its weights."""
    from transformer_lens.model_bridge import TransformerBridge

    cfg = model.cfg
    keys = (
        "n_layers",
        "d_model",
        "d_head",
        "n_heads",
        "n_ctx",
        "d_vocab",
        "act_fn",
        "normalization_type",
        "attn_only",
    )
    bridge_cfg = {k: getattr(cfg, k) for k in keys}
    if not cfg.attn_only:
        bridge_cfg["d_mlp"] = cfg.d_mlp
    bridge = TransformerBridge.boot_native(bridge_cfg, device="cpu")
    names = set(weight_names(bridge))
    for name in weight_names(model):
        if name in names:
            set_weight_(bridge, name, get_weight(model, name))
    return bridge.eval()


def twin_models(seed: int = 0, **overrides) -> tuple[nn.Module, nn.Module]:
    """``(HookedTransformer, TransformerBridge)`` with the same random weights."""
    model = hooked_model(tiny_config(**overrides), seed=seed)
    return model, bridge_like(model)
