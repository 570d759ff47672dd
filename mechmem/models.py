"""Build toy transformers from a ``ModelConfig``: a ``HookedTransformer``, or the same model as a
``TransformerBridge.boot_native`` (the TransformerLens 4.x path), with identical weights.

Construction runs inside ``torch.random.fork_rng``, seeded by ``cfg.seed``, so the caller's
global RNG is never reseeded or advanced (``HookedTransformerConfig.seed`` would reseed it).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from jaxtyping import Float
from torch import Tensor, nn

from hooks.weights import get_weight, set_weight_, weight_names, weight_parameters
from mechmem.config import ModelConfig

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def tl_config_dict(cfg: ModelConfig) -> dict:
    """The TransformerLens config fields of ``cfg`` (shared by both model kinds)."""
    out = dict(
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        d_model=cfg.d_model,
        d_head=cfg.head_dim,
        n_ctx=cfg.n_ctx,
        d_vocab=cfg.d_vocab,
        d_vocab_out=cfg.d_out,
        attn_only=cfg.attn_only,
        act_fn=cfg.act_fn,
        normalization_type=cfg.normalization,
        positional_embedding_type="standard",
    )
    if not cfg.attn_only:
        out["d_mlp"] = cfg.d_mlp if cfg.d_mlp is not None else 4 * cfg.d_model
    return out


@contextmanager
def _seeded(seed: int) -> Iterator[torch.Generator]:
    """Seed torch inside a forked RNG (the caller's RNG state is restored on exit)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield torch.Generator().manual_seed(seed)


def _init_vectors(
    kind: str, shape: tuple[int, int], d_model: int, gen: torch.Generator
) -> Tensor:
    """Rows of a ``shape`` matrix, one vector per row, drawn as ``kind`` says."""
    x = torch.randn(shape, generator=gen)
    if kind == "normal":
        return x / d_model**0.5
    if kind == "unit":
        return x / x.norm(dim=-1, keepdim=True)
    return x  # "standard"


def _identity_W_Q(cfg: ModelConfig) -> Float[Tensor, "n_heads d_model d_head"]:
    """Head h reads coordinates h*d_head..(h+1)*d_head: the heads together form the identity."""
    eye = torch.eye(cfg.d_model)
    return (
        eye.reshape(cfg.d_model, cfg.n_heads, cfg.head_dim)
        .permute(1, 0, 2)
        .contiguous()
    )


def _initialise(model: nn.Module, cfg: ModelConfig, gen: torch.Generator) -> None:
    """Apply the paper-specific parts of the init that TransformerLens does not offer."""
    dtype = _DTYPES[cfg.dtype]
    inits = {
        "W_E": (cfg.embed_init, (cfg.d_vocab, cfg.d_model), False),
        "W_pos": (cfg.pos_init, (cfg.n_ctx, cfg.d_model), False),
        "W_U": (cfg.unembed_init, (cfg.d_out, cfg.d_model), True),
    }
    for name, (kind, shape, transpose) in inits.items():
        if kind != "default":
            value = _init_vectors(kind, shape, cfg.d_model, gen)
            set_weight_(model, name, (value.T if transpose else value).to(dtype))
    if cfg.identity_W_Q:
        for layer in range(cfg.n_layers):
            set_weight_(model, f"blocks.{layer}.attn.W_Q", _identity_W_Q(cfg).to(dtype))
    if not cfg.positional:
        set_weight_(model, "W_pos", torch.zeros(cfg.n_ctx, cfg.d_model, dtype=dtype))
    if not cfg.use_bias:
        for name in weight_names(model):
            if name.split(".")[-1].startswith("b_"):
                set_weight_(model, name, torch.zeros_like(get_weight(model, name)))


def freeze_weights_(model: nn.Module, names: list[str]) -> None:
    """Set ``requires_grad=False`` on the real parameters behind ``names``."""
    for name in names:
        weight_parameters(model, name).requires_grad_(False)


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters an optimiser should update (frozen ones are left out)."""
    return [p for p in model.parameters() if p.requires_grad]


def _finish(model: nn.Module, cfg: ModelConfig) -> nn.Module:
    freeze_weights_(
        model, [n for n in cfg.frozen_weights() if n in weight_names(model)]
    )
    model.mechmem_config = cfg  # read back by runs.save_model
    return model


def build_model(cfg: ModelConfig):
    """A ``HookedTransformer`` for ``cfg``, initialised reproducibly from ``cfg.seed``.

    >>> model = build_model(ModelConfig(n_layers=2, d_model=32, d_vocab=10, n_ctx=8))
    """
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    if not isinstance(cfg, ModelConfig):
        raise TypeError(f"build_model expects a ModelConfig, got {type(cfg).__name__}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        hcfg = HookedTransformerConfig(
            **tl_config_dict(cfg), device="cpu", dtype=_DTYPES[cfg.dtype]
        )
        with _seeded(cfg.seed) as gen:
            model = HookedTransformer(hcfg, move_to_device=False)
            _initialise(model, cfg, gen)
    if cfg.device != "cpu":
        model = model.to(cfg.device)
    return _finish(model, cfg)


def build_bridge(cfg: ModelConfig):
    """The same model as ``build_model(cfg)``, built as a ``TransformerBridge.boot_native``.

    Every weight is copied from the ``HookedTransformer`` so both compute the same function;
    this lets tools be tested on both kinds. The bridge comes back in train mode, like
    ``build_model``'s model.
    """
    from transformer_lens.model_bridge import TransformerBridge

    hooked = build_model(cfg)
    with _seeded(cfg.seed):
        bridge = TransformerBridge.boot_native(
            {**tl_config_dict(cfg), "init_weights": False},
            device="cpu",
            dtype=_DTYPES[cfg.dtype],
        )
    for name in weight_names(bridge):
        set_weight_(bridge, name, get_weight(hooked, name))
    if cfg.device != "cpu":
        bridge = bridge.to(cfg.device)
    return _finish(bridge, cfg)
