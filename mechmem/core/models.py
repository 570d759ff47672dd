"""Build toy transformers from a ``ModelConfig``, on TransformerLens 3.9 or 4.x.

- :func:`build_model`: a ``HookedTransformer`` on TransformerLens 3.x (the default line), a
  ``TransformerBridge.boot_native`` model on 4.x (``HookedTransformer`` was removed in 4.0);
- :func:`build_bridge`: the same model as a bridge, on both lines.

Every weight is drawn by :func:`initial_weights`, mechmem's own code, from local generators seeded
by ``cfg.seed`` (neither line's default init is used, and the caller's global RNG is never reseeded
or advanced), so a config and seed give bit-identical parameters on both kinds and both lines.
The draws replicate those of TransformerLens 3.9's ``HookedTransformer`` "gpt2" init (every
``W_*`` matrix N(0, (0.8 / sqrt(d_model))^2), in ``named_parameters`` order, biases 0, LayerNorm
scales 1) followed by the paper-specific draws, so models built before the explicit init was
introduced are reproduced bit for bit.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor, nn

from hooks.bridge import boot_bridge
from hooks.compat import has_hooked_transformer
from hooks.weights import set_weights_, weight_names, weight_parameters, weight_shapes
from mechmem.core.config import ModelConfig

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_BRIDGES_ONLY: ContextVar[bool] = ContextVar("mechmem_bridges_only", default=False)


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


def _init_vectors(kind: str, shape: tuple[int, int], d_model: int, gen: torch.Generator) -> Tensor:
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
    return eye.reshape(cfg.d_model, cfg.n_heads, cfg.head_dim).permute(1, 0, 2).contiguous()


def _base_weights(cfg: ModelConfig) -> dict[str, Tensor]:
    """TransformerLens 3.9's "gpt2" init, drawn here: ``W_*`` ~ N(0, (0.8/sqrt(d_model))^2) in
    ``HookedTransformer.named_parameters()`` order from a generator seeded by ``cfg.seed``; biases
    0; LayerNorm scales 1."""
    dtype = _DTYPES[cfg.dtype]
    std = 0.8 / math.sqrt(cfg.d_model)
    gen = torch.Generator().manual_seed(cfg.seed)
    weights = {}
    for name, shape in weight_shapes(tl_config_dict(cfg)).items():
        short = name.rsplit(".", 1)[-1]
        if short.startswith("W_"):
            weights[name] = torch.empty(shape, dtype=dtype).normal_(0.0, std, generator=gen)
        else:
            weights[name] = (torch.ones if short == "w" else torch.zeros)(shape, dtype=dtype)
    return weights


def initial_weights(cfg: ModelConfig) -> dict[str, Tensor]:
    """Every initial weight of the model for ``cfg``, by TransformerLens name and layout: the base
    init, then the paper-specific parts (from a second generator seeded by ``cfg.seed``)."""
    dtype = _DTYPES[cfg.dtype]
    weights = _base_weights(cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    inits = {
        "W_E": (cfg.embed_init, (cfg.d_vocab, cfg.d_model), False),
        "W_pos": (cfg.pos_init, (cfg.n_ctx, cfg.d_model), False),
        "W_U": (cfg.unembed_init, (cfg.d_out, cfg.d_model), True),
    }
    for name, (kind, shape, transpose) in inits.items():
        if kind != "default":
            value = _init_vectors(kind, shape, cfg.d_model, gen)
            weights[name] = (value.T if transpose else value).to(dtype).contiguous()
    if cfg.identity_W_Q:
        for layer in range(cfg.n_layers):
            weights[f"blocks.{layer}.attn.W_Q"] = _identity_W_Q(cfg).to(dtype)
    if not cfg.positional:
        weights["W_pos"] = torch.zeros(cfg.n_ctx, cfg.d_model, dtype=dtype)
    return weights  # biases are zero already (with or without use_bias)


def freeze_weights_(model: nn.Module, names: list[str]) -> None:
    """Set ``requires_grad=False`` on the real parameters behind ``names``."""
    for name in names:
        weight_parameters(model, name).requires_grad_(False)


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters an optimiser should update (frozen ones are left out)."""
    return [p for p in model.parameters() if p.requires_grad]


def _finish(model: nn.Module, cfg: ModelConfig) -> nn.Module:
    freeze_weights_(model, [n for n in cfg.frozen_weights() if n in weight_names(model)])
    model.mechmem_config = cfg  # read back by runs.save_model
    return model


def _hooked_transformer(cfg: ModelConfig) -> nn.Module:
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        hcfg = HookedTransformerConfig(
            **tl_config_dict(cfg), device="cpu", dtype=_DTYPES[cfg.dtype], init_weights=False
        )
        return HookedTransformer(hcfg, move_to_device=False)


def parameter_count(cfg: ModelConfig) -> int:
    """The number of parameters of the model for ``cfg`` (its TransformerLens weights), without building it."""
    return sum(math.prod(shape) for shape in weight_shapes(tl_config_dict(cfg)).values())


def available_memory() -> int | None:
    """Bytes of memory new allocations may take: ``MemAvailable`` (Linux), lowered to the cgroup's limit
    when there is one; ``None`` when this platform does not say."""
    found = []
    try:
        with open("/proc/meminfo") as f:
            found += [int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:")]
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            found.append(int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def check_memory(cfg: ModelConfig, copies: int = 2, purpose: str = "build it") -> None:
    """Refuse, before anything is allocated, sizes whose ``copies`` of the parameters (2 to build a model: its
    weights and their initial values; more to train it) exceed the memory available (``ValueError``)."""
    count = parameter_count(cfg)
    need, available = count * _DTYPES[cfg.dtype].itemsize * copies, available_memory()
    if available is not None and need > available:
        raise ValueError(
            f"model sizes too large for this machine: {count:.3g} parameters (n_layers={cfg.n_layers}, "
            f"d_model={cfg.d_model}, n_heads={cfg.n_heads}, d_vocab={cfg.d_vocab}, n_ctx={cfg.n_ctx}); to {purpose} "
            f"needs {need / 1e9:.3g} GB ({copies} copies as {cfg.dtype}), more than the {available / 1e9:.3g} GB "
            "available: choose smaller sizes"
        )


def _build(cfg: ModelConfig, bridge: bool) -> nn.Module:
    if not isinstance(cfg, ModelConfig):
        raise TypeError(f"expected a ModelConfig, got {type(cfg).__name__}")
    check_memory(cfg)
    if bridge:
        model = boot_bridge(tl_config_dict(cfg), dtype=_DTYPES[cfg.dtype])
    else:
        model = _hooked_transformer(cfg)
    set_weights_(model, initial_weights(cfg))
    if cfg.device != "cpu":
        model = model.to(cfg.device)
    return _finish(model, cfg)


@contextmanager
def bridges_only() -> Iterator[None]:
    """Inside the block, :func:`build_model` builds bridges on every line (so a paper's own builder,
    with its permanent hooks, can rebuild a run as a bridge)."""
    token = _BRIDGES_ONLY.set(True)
    try:
        yield
    finally:
        _BRIDGES_ONLY.reset(token)


def build_model(cfg: ModelConfig) -> nn.Module:
    """The model for ``cfg``, initialised reproducibly from ``cfg.seed``, in train mode: a
    ``HookedTransformer`` on TransformerLens 3.x, a ``TransformerBridge`` on 4.x (and inside
    :func:`bridges_only`).

    >>> model = build_model(ModelConfig(n_layers=2, d_model=32, d_vocab=10, n_ctx=8))
    """
    return _build(cfg, bridge=_BRIDGES_ONLY.get() or not has_hooked_transformer())


def build_bridge(cfg: ModelConfig) -> nn.Module:
    """The same model as ``build_model(cfg)`` (bit-identical weights), as a
    ``TransformerBridge.boot_native`` model with live attention hooks, on either line."""
    return _build(cfg, bridge=True)
