"""Shared state of one reproduction: settings, a cache of trained model variants, eval data.

Several experiments use the same trained model (e.g. the main m=5, L=64, d=16 model serves
wv_bar, hamming_inner, spectrum, wv_replace and hijack_synthetic); :class:`Lab` trains each
variant once per reproduction and hands out fixed, seeded evaluation sets.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .model import LCAModelSpec
from .task import LatentConceptTask
from .training import Schedule, accuracy, train_lca


@dataclass(frozen=True)
class Settings:
    """Grids and sizes of a reproduction (``quick()`` for CI/CPU, ``full()`` for the spec's grids)."""

    m: int = 5  # main setting: V = 32
    context_len: int = 64
    epsilon: float = 0.5
    d_model: int = 16  # d < V
    wv_bar_m: tuple[int, ...] = (4, 5)
    wv_bar_L: tuple[int, ...] = (64, 128)
    dims: tuple[int, ...] = (2, 4, 8, 16, 32, 64)
    lengths: tuple[int, ...] = (8, 16, 32, 64, 128)
    frozen_lengths: bool = False  # frozen-embedding length sweep (full mode)
    hijack_fractions: tuple[float, ...] = (0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75)
    n_eval: int = 2000
    n_patch: int = 64
    schedule: Schedule = field(
        default_factory=lambda: Schedule(steps=400, batch_size=64, lr=1e-2)
    )

    @classmethod
    def quick(cls) -> Settings:
        return cls()

    @classmethod
    def smoke(cls) -> Settings:
        """Tiny settings for tests and the notebook's CI run (numbers are not meaningful)."""
        return cls(
            m=4,
            context_len=16,
            d_model=8,
            wv_bar_m=(4,),
            wv_bar_L=(16, 32),
            dims=(4, 8, 32),
            lengths=(8, 16, 32),
            n_eval=400,
            n_patch=16,
            schedule=Schedule(steps=60, batch_size=32, lr=1e-2, eval_batch_size=256),
        )

    @classmethod
    def full(cls) -> Settings:
        return cls(
            wv_bar_m=(4, 5, 6, 7),
            dims=(2, 4, 8, 16, 32, 64, 128),
            lengths=(4, 8, 16, 32, 64, 128, 256),
            frozen_lengths=True,
            n_eval=5000,
            n_patch=128,
            schedule=Schedule(steps=3000, batch_size=128, lr=3e-3),
        )

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Trained:
    """One trained variant with its task, spec, training accuracy and wall time."""

    model: nn.Module
    task: LatentConceptTask
    spec: LCAModelSpec
    train_accuracy: float
    seconds: float


class Lab:
    """Trains variants on demand (each once) and serves seeded evaluation sets."""

    def __init__(
        self, settings: Settings, seed: int = 0, progress: bool = True
    ) -> None:
        self.settings = settings
        self.seed = seed
        self.progress = progress
        self._models: dict[tuple, Trained] = {}
        self._eval: dict[tuple, tuple[Tensor, Tensor, Tensor]] = {}
        self._bar = tqdm(desc="lca models", unit="model", disable=not progress)

    def task(self, **overrides) -> LatentConceptTask:
        s = self.settings
        base = dict(
            m=s.m,
            context_len=s.context_len,
            neighbourhood="N1",
            epsilon=s.epsilon,
            d_model=s.d_model,
        )
        return LatentConceptTask(**{**base, **overrides})

    def trained(
        self,
        task: LatentConceptTask,
        d_model: int | None = None,
        train_W_V: bool = True,
        train_embed: bool = True,
        tied: bool = True,
    ) -> Trained:
        spec = LCAModelSpec(
            d_model=d_model or task.d_model,
            train_W_V=train_W_V,
            train_embed=train_embed,
            tied=tied,
            seed=self.seed,
        )
        key = (tuple(sorted(task.to_dict().items())), spec)
        if key not in self._models:
            t0 = time.perf_counter()
            model, result = train_lca(
                task, spec, self.settings.schedule, seed=self.seed
            )
            self._models[key] = Trained(
                model, task, spec, result.final["accuracy"], time.perf_counter() - t0
            )
            self._bar.update(1)
            self._bar.set_postfix(
                m=task.m,
                L=task.context_len,
                d=spec.d_model,
                W_V=train_W_V,
                emb=train_embed,
            )
        return self._models[key]

    def eval_set(self, task: LatentConceptTask) -> tuple[Tensor, Tensor, Tensor]:
        """``(tokens, y, is_noise)``: ``n_eval`` fresh examples, the same for every model of this task."""
        key = tuple(sorted(task.to_dict().items()))
        if key not in self._eval:
            gen = torch.Generator().manual_seed(self.seed + 10_007)
            self._eval[key] = task.sample_with_target(self.settings.n_eval, gen)
        return self._eval[key]

    def accuracy(self, trained: Trained) -> float:
        tokens, y, _ = self.eval_set(trained.task)
        return accuracy(trained.model, tokens, y)

    def close(self) -> None:
        self._bar.close()

    @property
    def n_models(self) -> int:
        return len(self._models)
