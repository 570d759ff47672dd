"""Models of "Birth of a Transformer" built with ``mechmem.build_model`` (the paper's Section 4 and the authors' code).

Simplified model (paper section 4.2): 2 attention-only layers, one head each with d_head = d_model, no
LayerNorm, no biases, W_Q = identity. Frozen: token embeddings, positional embeddings, unembedding,
W_V^1, W_O^1, W_V^2. Trained: W_K^1, W_K^2, W_O^2 (optionally a layer-2 feed-forward standing in for W_F).
The authors' initialisation is restored with ``hooks.weights.set_weight_``: N(0, 1) embeddings and positions
(``sqrtd_embeddings``: N(0, 1/d)), and U(-1/sqrt(d), 1/sqrt(d)) for W_U and every d x d matrix.

Full model: 2 layers, 4 heads, pre-LayerNorm with a final LayerNorm, ReLU MLPs of width 4d, learned
embeddings and positions, no biases; ``n_layers=1`` gives the one-layer variant.
"""

from __future__ import annotations

import math

import torch

from hooks.weights import get_weight, set_weight_
from mechmem.core.config import ModelConfig
from mechmem.core.models import build_model

from .tables import N_CHARS

SIMPLIFIED_TRAINED = ("blocks.0.attn.W_K", "blocks.1.attn.W_K", "blocks.1.attn.W_O")
SIMPLIFIED_FROZEN = ("W_E", "W_pos", "W_U", "blocks.0.attn.W_V", "blocks.0.attn.W_O", "blocks.1.attn.W_V")


def simplified_config(
    d_model: int = 128, n_ctx: int = 128, final_ffn: bool = False, seed: int = 0, sqrtd_embeddings: bool = False
) -> ModelConfig:
    """The simplified model's config; ``final_ffn`` adds a ReLU MLP (width 4d) after layer 2 only (W_F)."""
    freeze = SIMPLIFIED_FROZEN
    if final_ffn:  # TransformerLens puts an MLP in every block: layer 1's is zeroed and frozen
        freeze = freeze + ("blocks.0.mlp.W_in", "blocks.0.mlp.W_out")
    init = "normal" if sqrtd_embeddings else "standard"
    return ModelConfig(
        n_layers=2,
        n_heads=1,
        d_model=d_model,
        d_head=d_model,
        d_vocab=N_CHARS,
        n_ctx=n_ctx,
        attn_only=not final_ffn,
        normalization=None,
        positional=True,
        use_bias=False,
        freeze=freeze,
        identity_W_Q=True,
        embed_init=init,
        pos_init=init,
        unembed_init="default",
        seed=seed,
    )


def _uniform(shape, bound: float, gen: torch.Generator) -> torch.Tensor:
    return (torch.rand(shape, generator=gen) * 2 - 1) * bound


def build_simplified(
    d_model: int = 128,
    n_ctx: int = 128,
    final_ffn: bool = False,
    seed: int = 0,
    sqrtd_embeddings: bool = False,
    zero_init_trained: bool = False,
):
    """The simplified 2-layer model, initialised as the authors do (``zero_init_trained``: the theory's start,
    W_K^1 = W_K^2 = W_O^2 = 0)."""
    cfg = simplified_config(d_model, n_ctx, final_ffn, seed, sqrtd_embeddings)
    return init_simplified_(build_model(cfg), zero_init_trained)


def init_simplified_(model, zero_init_trained: bool = False):
    """The authors' init of the simplified model (seeded by its config's seed): W_U and the frozen
    W_V / W_O uniform in +-1/sqrt(d); the trained W_K^1, W_K^2, W_O^2 uniform too, or zero."""
    cfg = model.mechmem_config
    gen = torch.Generator().manual_seed(10_000 + cfg.seed)
    bound = 1 / math.sqrt(cfg.d_model)
    set_weight_(model, "W_U", _uniform((cfg.d_model, N_CHARS), bound, gen))
    for name in ("blocks.0.attn.W_V", "blocks.0.attn.W_O", "blocks.1.attn.W_V") + SIMPLIFIED_TRAINED:
        shape = get_weight(model, name).shape
        value = torch.zeros(shape) if zero_init_trained and name in SIMPLIFIED_TRAINED else _uniform(shape, bound, gen)
        set_weight_(model, name, value)
    if not cfg.attn_only:  # final_ffn: layer 1's MLP is zero
        for name in ("blocks.0.mlp.W_in", "blocks.0.mlp.W_out"):
            set_weight_(model, name, torch.zeros_like(get_weight(model, name)))
    return model


def full_config(
    d_model: int = 128,
    n_heads: int = 4,
    n_layers: int = 2,
    n_ctx: int = 256,
    seed: int = 0,
    freeze_embeddings: bool = False,
) -> ModelConfig:
    """The full model (pre-LN, ReLU MLPs of width 4d, learned embeddings and positions, untied output)."""
    freeze = ("W_E", "W_pos") if freeze_embeddings else ()
    return ModelConfig(
        n_layers=n_layers,
        n_heads=n_heads,
        d_model=d_model,
        d_vocab=N_CHARS,
        n_ctx=n_ctx,
        attn_only=False,
        d_mlp=4 * d_model,
        act_fn="relu",
        normalization="LN",
        positional=True,
        use_bias=False,
        freeze=freeze,
        embed_init="standard",
        pos_init="standard",
        unembed_init="default",
        seed=seed,
    )


def build_full(
    d_model: int = 128,
    n_heads: int = 4,
    n_layers: int = 2,
    n_ctx: int = 256,
    seed: int = 0,
    freeze_embeddings: bool = False,
):
    return build_model(full_config(d_model, n_heads, n_layers, n_ctx, seed, freeze_embeddings))


def build_handbuilt(d_model: int = 256, n_ctx: int = 256, seed: int = 0, scales=None, key_tokens=None):
    """The hand-built induction head (the paper's Section 5): N(0, 1/d) embeddings, positions and unembedding,
    TransformerLens's random init for the frozen W_V^1, W_O^1, W_V^2, and the three memories written in."""
    from .handbuilt import HandbuiltScales, install_handbuilt_

    cfg = ModelConfig(
        n_layers=2,
        n_heads=1,
        d_model=d_model,
        d_head=d_model,
        d_vocab=N_CHARS,
        n_ctx=n_ctx,
        attn_only=True,
        normalization=None,
        positional=True,
        use_bias=False,
        freeze=SIMPLIFIED_FROZEN,
        identity_W_Q=True,
        embed_init="normal",
        pos_init="normal",
        unembed_init="normal",
        seed=seed,
    )
    model = build_model(cfg)
    install_handbuilt_(model, scales or HandbuiltScales(), key_tokens)
    model.eval()
    return model
