"""Train one LCA model variant with mechmem's one training loop (``mechmem.core.training.train``).

The task's loss reads the read-out (last) position only (``LatentConceptTask.last_position_loss``), so the loop
computes the logits there alone through the fast path's read-out (``mechmem.core.fastpath.last_logits``: the
one-layer model's last query in O(L) instead of O(L^2)). :func:`accuracy` evaluates through the fast path too,
and falls back to the model's own forward whenever a hook is active (interventions, ``replace_weights`` swaps).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from mechmem.core import fastpath
from mechmem.core.config import TrainConfig
from mechmem.core.training import TrainResult, train

from .model import LCAModelSpec, build_lca_model, untie_
from .task import LatentConceptTask


def train_lca(
    task: LatentConceptTask, spec: LCAModelSpec, train_cfg: TrainConfig, seed: int = 0
) -> tuple[nn.Module, TrainResult]:
    """Build the variant ``spec`` (seeded by ``spec.seed``), train it on ``task`` with ``train_cfg`` and
    data seed ``seed``.

    Returns the trained HookedTransformer (tie frozen into a plain ``W_U``, eval mode) and the
    training history.
    """
    model = build_lca_model(task, spec)
    result = train(model, task, dataclasses.replace(train_cfg, seed=seed))
    untie_(model)
    model.eval()
    return model, result


@torch.inference_mode()
def accuracy(model: nn.Module, tokens: Tensor, y: Tensor, batch_size: int = 512) -> float:
    """Read-out accuracy of the model's forward (hooks and replacements apply), through
    ``mechmem.core.fastpath`` (the same function; the model's own forward while a hook is active)."""
    hits = 0
    for start in range(0, tokens.shape[0], batch_size):
        logits = fastpath.last_logits(model, tokens[start : start + batch_size])
        hits += (logits.argmax(-1) == y[start : start + batch_size]).sum().item()
    return hits / tokens.shape[0]
