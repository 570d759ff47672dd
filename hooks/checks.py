"""Argument checks shared by the hook tools, run before a model is touched.

Each check raises a ``TypeError`` (wrong kind of value) or ``ValueError`` (out of range) whose
message names the argument and says what is allowed, so a tool never silently drops a layer,
wraps a negative token id around, or fails deep inside a forward pass.
"""

from __future__ import annotations

import difflib
import math
import operator
from collections.abc import Sequence

import torch
from torch import Tensor, nn

_INT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


def check_tokens(model: nn.Module, tokens, name: str = "tokens") -> Tensor:
    """``tokens``: an integer tensor ``[batch, pos]`` with ``batch >= 1``, ``1 <= pos <= n_ctx``
    and every id in ``[0, d_vocab)``."""
    if not isinstance(tokens, Tensor) or tokens.dim() != 2:
        raise TypeError(f"{name} must be an integer tensor [batch, pos], got {getattr(tokens, 'shape', type(tokens))}")
    if tokens.dtype not in _INT_DTYPES:
        raise TypeError(f"{name} must hold integer token ids, got dtype {tokens.dtype}")
    batch, pos = tokens.shape
    if batch < 1 or pos < 1:
        raise ValueError(f"{name} is empty (shape {tuple(tokens.shape)}); give at least one sequence of one token")
    n_ctx = model.cfg.n_ctx
    if pos > n_ctx:
        raise ValueError(f"{name} has {pos} positions, more than the model's n_ctx={n_ctx}")
    d_vocab = model.cfg.d_vocab
    low, high = int(tokens.min()), int(tokens.max())
    if low < 0 or high >= d_vocab:
        bad = low if low < 0 else high
        raise ValueError(f"{name} holds token id {bad}, outside the vocabulary [0, {d_vocab - 1}]")
    return tokens


def check_layers(model: nn.Module, layers: Sequence[int] | None, name: str = "layers") -> list[int]:
    """``layers`` as a list of ints in ``[0, n_layers)`` (``None``: every layer); floats, bools and
    out-of-range entries are refused, never rounded or dropped."""
    n = model.cfg.n_layers
    if layers is None:
        return list(range(n))
    if isinstance(layers, (str, bytes)) or not hasattr(layers, "__iter__"):
        raise TypeError(f"{name} must be a list of layer indices, got {layers!r}")
    out = []
    for layer in layers:
        try:
            if isinstance(layer, bool):
                raise TypeError
            index = operator.index(layer)
        except TypeError:
            raise TypeError(f"{name} entries must be ints, got {layer!r}") from None
        if not 0 <= index < n:
            raise ValueError(f"{name} entry {index} is out of range: the model has layers 0..{n - 1}")
        out.append(index)
    if not out:
        raise ValueError(f"{name} is empty; give at least one layer (or None for all)")
    return out


def check_positive_finite(value, name: str) -> float:
    """A finite number > 0 (e.g. ``memory_budget_gb``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_weight_name(model: nn.Module, name) -> str:
    """``name`` if the model has a weight of that TransformerLens name, else a ``ValueError``
    listing the closest names."""
    from hooks.weights import weight_names

    if not isinstance(name, str):
        raise TypeError(f"a weight name must be a str, got {name!r}")
    names = weight_names(model)
    if name not in names:
        close = difflib.get_close_matches(name, names, n=5, cutoff=0.4)
        raise ValueError(f"unknown weight name {name!r}; closest valid names: {close or sorted(names)[:8]}")
    return name
