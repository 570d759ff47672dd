"""Generic hook tools for any TransformerLens model (HookedTransformer or TransformerBridge).

This package imports nothing from ``mechmem``. Submodules load lazily, so ``import hooks`` is
cheap; ``from hooks import replace_weights`` loads only what it needs.

- :mod:`hooks.weights`: read/write weights by TransformerLens name on both model kinds.
- :mod:`hooks.state`: :func:`preserved_state` (no hooks left, weights/modes/flags restored).
- :mod:`hooks.names`: hook-name resolution, range checks, :func:`check_hooks_editable` (no silent no-ops).
- :mod:`hooks.bridge`: :func:`boot_bridge`, bridges whose ``hook_pattern`` / ``hook_attn_scores`` feed the output.
- :mod:`hooks.compat`: what differs between TransformerLens 3.9 and 4.x, in one place.
- :mod:`hooks.replace`: :func:`replace_weights`, :func:`ov_circuit`, :func:`qk_circuit`.
- :mod:`hooks.ablation`: zero / mean / resample ablations, :func:`ablation_sweep`.
- :mod:`hooks.patching`: the batched activation-patching engine.
- :mod:`hooks.attribution`: attribution patching, the gradient estimate of every patching sweep.
- :mod:`hooks.circuits`: OV / QK circuits through the embeddings, OV spectra, and their figures.
- :mod:`hooks.gather_store`: :func:`memory_map`: which heads gather the answer, which OV circuits / MLPs store it.
- :mod:`hooks.views`: attention patterns, offline CircuitsVis views with the read-out row in view.
- :mod:`hooks.plotting`: the shared figure style and a heat map that always has a labelled colorbar.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "weight_names": "hooks.weights",
    "get_weight": "hooks.weights",
    "set_weight_": "hooks.weights",
    "weight_parameters": "hooks.weights",
    "is_bridge": "hooks.weights",
    "preserved_state": "hooks.state",
    "state_fingerprint": "hooks.state",
    "same_state": "hooks.state",
    "count_hooks": "hooks.state",
    "resolve_hook_name": "hooks.names",
    "active_hook_names": "hooks.names",
    "check_hooks_editable": "hooks.names",
    "boot_bridge": "hooks.bridge",
    "make_attention_hooks_live_": "hooks.bridge",
    "replace_weights": "hooks.replace",
    "Head": "hooks.replace",
    "OV": "hooks.replace",
    "ov_circuit": "hooks.replace",
    "qk_circuit": "hooks.replace",
    "memory_map": "hooks.gather_store",
    "Associations": "hooks.gather_store",
    "plot_memory_map": "hooks.gather_store",
    "above_null": "hooks.gather_store",
    "Ablation": "hooks.ablation",
    "ablate": "hooks.ablation",
    "ablation_hooks": "hooks.ablation",
    "run_with_ablations": "hooks.ablation",
    "ablation_sweep": "hooks.ablation",
    "patch_sweep": "hooks.patching",
    "PatchingEngine": "hooks.patching",
    "attribution_sweep": "hooks.attribution",
    "attribution_sweeps": "hooks.attribution",
    "AttributionEngine": "hooks.attribution",
    "Agreement": "hooks.attribution",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hooks' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
