"""Shared state of one seed of the LCA reproduction: a cache of trained model variants and eval data.

Several experiments use the same trained model (e.g. the main m = 5, L = 64, d = 16 model serves
``hamming_inner``, ``spectrum``, ``wv_replace`` and ``hijack_synthetic``); :class:`Lab` trains each
variant once per seed and hands out fixed, seeded evaluation sets. :func:`lab_of` keeps one in the
experiment context.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from mechmem.contract.experiments import Context

from .model import LCAModelSpec, build_lca_model, untie_
from .presets import LCAPreset
from .task import LatentConceptTask
from .training import accuracy, train_lca


@dataclass
class Trained:
    """One model variant with its task and spec: trained (with its training accuracy, wall time and history), or
    at initialisation (``train_accuracy`` ``None``: the negative controls' untrained models)."""

    model: nn.Module
    task: LatentConceptTask
    spec: LCAModelSpec
    train_accuracy: float | None
    seconds: float
    history: list[dict] = field(default_factory=list)


class Lab:
    """Trains variants on demand (each once), builds untrained ones, and serves seeded evaluation sets."""

    def __init__(self, preset: LCAPreset, seed: int = 0, progress: bool = True) -> None:
        self.preset = preset
        self.seed = seed
        self._models: dict[tuple, Trained] = {}
        self._eval: dict[tuple, tuple[Tensor, Tensor, Tensor]] = {}
        self._bar = tqdm(desc="lca models", unit="model", disable=not progress)

    def task(self, **overrides) -> LatentConceptTask:
        p = self.preset
        base = dict(m=p.m, context_len=p.context_len, neighbourhood="N1", epsilon=p.epsilon, d_model=p.d_model)
        return LatentConceptTask(**{**base, **overrides})

    def spec(self, task: LatentConceptTask, **switches) -> LCAModelSpec:
        """The variant of ``task``'s model (width ``task.d_model`` unless ``d_model`` is given) seeded by the lab."""
        return LCAModelSpec(**{"d_model": task.d_model, **switches, "seed": self.seed})

    def trained(self, task: LatentConceptTask, **switches) -> Trained:
        """The variant ``switches`` (fields of :class:`LCAModelSpec`) trained on ``task`` (once per lab)."""
        spec = self.spec(task, **switches)
        key = (tuple(sorted(task.to_dict().items())), spec, "trained")
        if key not in self._models:
            t0 = time.perf_counter()
            model, result = train_lca(task, spec, self.preset.train, seed=self.seed)
            seconds = time.perf_counter() - t0
            self._models[key] = Trained(model, task, spec, result.final["accuracy"], seconds, result.history)
            self._bar.update(1)
            self._bar.set_postfix(m=task.m, L=task.context_len, d=spec.d_model, W_V=spec.train_W_V)
        return self._models[key]

    def untrained(self, task: LatentConceptTask, **switches) -> Trained:
        """The same variant at its initialisation (the weights :meth:`trained` starts from), untied, in eval mode."""
        spec = self.spec(task, **switches)
        key = (tuple(sorted(task.to_dict().items())), spec, "untrained")
        if key not in self._models:
            model = untie_(build_lca_model(task, spec)).eval()
            self._models[key] = Trained(model, task, spec, None, 0.0)
        return self._models[key]

    def variant(self, task: LatentConceptTask, trained: bool = True, **switches) -> Trained:
        """:meth:`trained` or :meth:`untrained`."""
        return self.trained(task, **switches) if trained else self.untrained(task, **switches)

    def eval_set(self, task: LatentConceptTask) -> tuple[Tensor, Tensor, Tensor]:
        """``(tokens, y, is_noise)``: ``n_eval`` fresh examples, the same for every model of this task."""
        key = tuple(sorted(task.to_dict().items()))
        if key not in self._eval:
            gen = torch.Generator().manual_seed(self.seed + 10_007)
            self._eval[key] = task.sample_with_target(self.preset.n_eval, gen)
        return self._eval[key]

    def accuracy(self, trained: Trained) -> float:
        tokens, y, _ = self.eval_set(trained.task)
        return accuracy(trained.model, tokens, y)

    def close(self) -> None:
        self._bar.close()

    @property
    def n_models(self) -> int:
        return len(self._models)


def lab_of(ctx: Context[LCAPreset]) -> Lab:
    """The seed's :class:`Lab`, created on first use and kept in ``ctx.state``."""
    if "lab" not in ctx.state:
        ctx.state["lab"] = Lab(ctx.preset, seed=ctx.seed, progress=ctx.progress)
    return ctx.state["lab"]
