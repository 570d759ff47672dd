"""One small fitting loop for what is not a sequence model trained on a task: associative memories (a matrix, an
MLP, learned embeddings), read-outs trained on token counts, several independent trials at once. Sequence models
train through :func:`mechmem.core.training.train`; both take their optimiser from :func:`make_optimizer` (SGD,
Adam or AdamW from ``torch.optim``, configured by a ``TrainConfig``), so no paper writes an optimiser by hand.

    result = fit([W], loss_at, TrainConfig(steps=4096, lr=1e3, optimizer="adam", eval_every=1),
                 evaluate=lambda step: {"accuracy": accuracy(W)}, stop=lambda record: record["accuracy"] > 0.99)

The loop: evaluate at step 0, after every ``eval_every`` steps and after the last one; stop early when ``stop``
says so; otherwise take one optimiser step on ``loss_at(step)``. A ``grad_at(step)`` callable may instead write
the gradients itself (closed-form gradients of tiny models, where autograd's overhead dominates); the update is
still ``torch.optim``'s.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from mechmem.core.config import TrainConfig

#: parameter groups: lists of tensors, or dicts as ``torch.optim`` takes them (e.g. ``{"params": [W], "lr": 0.1}``)
Groups = Sequence[Sequence[Tensor] | dict[str, Any]]


def make_optimizer(groups: Groups, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD (with momentum), Adam or AdamW from ``cfg`` over ``groups`` (a group's own ``lr`` overrides ``cfg.lr``)."""
    groups = [dict(g) if isinstance(g, dict) else {"params": list(g)} for g in groups]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    opt_cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return opt_cls(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)


@dataclass
class FitResult:
    """Every evaluation record (``{"step": s, **evaluate(s)}``), the steps taken and the wall time."""

    history: list[dict[str, Any]] = field(default_factory=list)
    steps: int = 0
    stopped_early: bool = False
    seconds: float = 0.0

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}

    def best(self, key: str) -> float:
        """The largest value of ``key`` over the evaluations (what the papers report for accuracies)."""
        return max(record[key] for record in self.history)


def fit(
    params: Iterable[Tensor] | Groups,
    loss_at: Callable[[int], Tensor] | None,
    cfg: TrainConfig,
    evaluate: Callable[[int], dict[str, Any]] | None = None,
    stop: Callable[[dict[str, Any]], bool] | None = None,
    grad_at: Callable[[int], None] | None = None,
    desc: str | None = None,
) -> FitResult:
    """Minimise ``loss_at(step)`` over ``params`` for ``cfg.steps`` optimiser steps (see the module docstring).

    ``params``: tensors that require grad, or parameter groups; ``evaluate(step)``: metrics after ``step`` steps
    (run without gradients); ``stop(record)``: end early after an evaluation; ``grad_at(step)``: sets every
    parameter's ``.grad`` itself (then ``loss_at`` is ``None``); ``desc``: a progress bar (``cfg.progress``)."""
    if (loss_at is None) == (grad_at is None):
        raise ValueError("fit: give exactly one of loss_at (autograd) and grad_at (gradients written by hand)")
    groups = _groups(params)
    optimizer = make_optimizer(groups, cfg)
    tensors = [p for g in optimizer.param_groups for p in g["params"]]
    result, t0 = FitResult(), time.perf_counter()
    bar = tqdm(total=cfg.steps, desc=desc, disable=not (cfg.progress and desc))
    for step in range(cfg.steps + 1):
        if evaluate is not None and (step % cfg.eval_every == 0 or step == cfg.steps):
            with torch.no_grad():
                result.history.append({"step": step, **evaluate(step)})
            if stop is not None and stop(result.history[-1]):
                result.stopped_early = step < cfg.steps
                break
        if step == cfg.steps:
            break
        _step(optimizer, tensors, step, loss_at, grad_at)
        result.steps = step + 1
        bar.update(1)
    bar.close()
    result.seconds = time.perf_counter() - t0
    return result


def _groups(params: Iterable[Tensor] | Groups) -> list:
    items = list(params)
    if items and all(isinstance(p, Tensor) for p in items):
        return [items]
    return items


def _step(optimizer, tensors: list[Tensor], step: int, loss_at, grad_at) -> None:
    if grad_at is not None:
        with torch.no_grad():
            grad_at(step)
    else:
        for p in tensors:
            p.grad = None
        loss_at(step).backward()
    optimizer.step()
