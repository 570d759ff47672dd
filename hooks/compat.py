"""TransformerLens 3.9 and 4.x: what differs between the two lines, handled here and only here.

- **Model classes.** 4.0 removed ``HookedTransformer``; :func:`has_hooked_transformer` says whether
  the installed line has it (read from the package metadata, without importing TransformerLens).
- **Bridges.** Every bridge the project builds comes from :func:`hooks.bridge.boot_bridge`
  (live ``hook_pattern`` / ``hook_attn_scores`` on both lines, an unembedding bias as on
  ``HookedTransformer``).
- **Hook names.** ``get_act_name`` is imported from ``transformer_lens.utilities`` (3.9 and 4.x;
  ``transformer_lens.utils`` is 3.x only); a bridge's HookedTransformer-style names are aliases of
  its ``hook_in`` / ``hook_out`` points, and :func:`hooks.names.active_hook_names` lists the ones
  that fire.
- **Weights.** ``model.W_V`` and friends are stacked copies on both kinds; every read and write
  goes through :mod:`hooks.weights` (real parameters, one layout).
- **Attention scale.** ``attn.attn_scale`` (``HookedTransformer``) is ``attn.scale`` on the native
  bridge: :func:`attention_scale` reads it from the config on both.
- **``transformer_lens.patching``** requires eval mode in 4.3 (``require_eval_mode``):
  :func:`tl_patching` runs any of its functions in eval mode without gradients and gives the model
  back in the mode it was in.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from importlib.metadata import version

import torch
from torch import nn


@functools.cache
def tl_version() -> tuple[int, int]:
    """``(major, minor)`` of the installed TransformerLens."""
    major, minor = version("transformer-lens").split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def has_hooked_transformer() -> bool:
    """Whether the installed TransformerLens still ships ``HookedTransformer`` (3.x)."""
    return tl_version()[0] < 4


def attention_scale(model: nn.Module) -> float:
    """What attention scores are divided by: ``cfg.attn_scale`` when set, else ``sqrt(d_head)``, or 1
    without ``use_attn_scale`` (``HookedTransformer`` keeps it as ``attn.attn_scale``, the native
    bridge attention as ``attn.scale``)."""
    cfg = model.cfg
    if not getattr(cfg, "use_attn_scale", True):
        return 1.0
    scale = getattr(cfg, "attn_scale", -1.0)
    return float(scale) if scale > 0 else float(cfg.d_head) ** 0.5


def tl_patching(fn: Callable, model: nn.Module, *args, **kwargs):
    """``fn(model, *args, **kwargs)`` for a ``transformer_lens.patching`` function, in eval mode and
    without gradients (4.3 refuses a model in train mode); the model's modes and hooks come back
    as they were, also after an exception."""
    from hooks.state import preserved_state

    with preserved_state(model), torch.no_grad():
        model.eval()
        return fn(model, *args, **kwargs)
