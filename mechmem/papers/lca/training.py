"""Train one LCA model variant with mechmem's one training loop (``mechmem.core.training.train``).

The loop calls ``model(tokens)``; inside :func:`query_readout` that call computes only the read-out
position's logits (:func:`fast.query_logits`, exact, O(L)) and leaves the other positions' logits at
zero, which the task's loss mask never reads. This is cheaper than the generic fast path
(``mechmem.core.fastpath``, which computes every position), so training turns that one off; :func:`accuracy`
uses it (it falls back to the model's own forward whenever hooks are active).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from mechmem.core import fastpath
from mechmem.core.config import TrainConfig
from mechmem.core.training import TrainResult, train

from .fast import query_logits
from .model import LCAModelSpec, build_lca_model, untie_
from .task import LatentConceptTask


@contextmanager
def query_readout(model: nn.Module) -> Iterator[nn.Module]:
    """While active, ``model(tokens)`` returns logits ``[B, P, V]`` that are zero except at ``P - 1``,
    where they equal the HookedTransformer's (computed by :func:`fast.query_logits`). Implemented as an
    instance-level ``forward`` override (``mechmem.train`` needs the HookedTransformer itself for its
    weight checks); the class ``forward`` is back on exit, also after an exception."""

    def forward(tokens: Tensor, *args, **kwargs) -> Tensor:
        last = query_logits(model, tokens)
        logits = last.new_zeros(tokens.shape[0], tokens.shape[1], last.shape[-1])
        logits[:, -1] = last
        return logits

    model.forward = forward
    try:
        yield model
    finally:
        del model.forward


def train_lca(
    task: LatentConceptTask, spec: LCAModelSpec, train_cfg: TrainConfig, seed: int = 0
) -> tuple[nn.Module, TrainResult]:
    """Build the variant ``spec`` (seeded by ``spec.seed``), train it on ``task`` with ``train_cfg`` and
    data seed ``seed``.

    Returns the trained HookedTransformer (tie frozen into a plain ``W_U``, eval mode) and the
    training history.
    """
    model = build_lca_model(task, spec)
    with fastpath.fast_path_enabled(False), query_readout(model):
        result = train(model, task, dataclasses.replace(train_cfg, seed=seed))
    untie_(model)
    model.eval()
    return model, result


@torch.inference_mode()
def accuracy(model: nn.Module, tokens: Tensor, y: Tensor, batch_size: int = 512) -> float:
    """Query-position accuracy of the model's forward (hooks and replacements apply), through
    ``mechmem.core.fastpath`` (the same function; the model's own forward while a hook is active)."""
    hits = 0
    for start in range(0, tokens.shape[0], batch_size):
        logits = fastpath.logits(model, tokens[start : start + batch_size])[:, -1]
        hits += (logits.argmax(-1) == y[start : start + batch_size]).sum().item()
    return hits / tokens.shape[0]
