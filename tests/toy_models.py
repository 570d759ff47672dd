"""The papers' toy models, trained small once per test session (seconds each on one CPU core), with an untrained
twin of each for the negative controls. A pytest plugin (``pytest_plugins`` in ``tests/conftest.py``).

- ``toy_recall``: the built-in recall task's one-layer, one-head model (its default training: 150 steps);
- ``toy_birth``: Birth's simplified two-layer model (K = 5 fixed triggers, T = 64, d = 128, 200 SGD steps, as
  ``tests/papers/test_birth_training.py``): layer 0 a previous-token head, layer 1 the induction head;
- ``toy_factual``: the factual model's attention-heavy corner (H = 16 heads of 8, MLP width 1, d = 32) on
  S = R = 8, D = 4, fitted until it recalls every fact.

Each fixture returns a :class:`Toy`: the task, the trained model (eval mode), an untrained model of the same
architecture (another seed) and a batch of fresh examples.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from mechmem.tasks.base import Batch, Task


@dataclass
class Toy:
    task: Task
    trained: nn.Module
    untrained: nn.Module
    batch: Batch


def _examples(task: Task, n: int) -> Batch:
    return task.sample(n, torch.Generator().manual_seed(12345))


@pytest.fixture(scope="session")
def toy_recall() -> Toy:
    from dataclasses import replace

    from mechmem import RecallTask, train

    task = RecallTask()
    model, untrained = task.build_model(task.model_config()), task.build_model(replace(task.model_config(), seed=1))
    result = train(model, task, replace(task.train_config(), progress=False))
    assert result.final["accuracy"] > 0.99, f"the recall model did not train: {result.final}"
    return Toy(task, model.eval(), untrained.eval(), _examples(task, 128))


@pytest.fixture(scope="session")
def toy_birth() -> Toy:
    from mechmem import TrainConfig, train
    from mechmem.papers.birth.model import build_simplified
    from mechmem.papers.birth.task import BigramTask

    task = BigramTask(seq_len=64, n_triggers=5)
    model, untrained = build_simplified(d_model=128, n_ctx=64, seed=0), build_simplified(d_model=128, n_ctx=64, seed=1)
    cfg = TrainConfig(
        steps=200, batch_size=32, lr=0.1, optimizer="sgd", momentum=0.9, weight_decay=1e-4, eval_every=100,
        eval_batch_size=64, seed=0, progress=False,
    )  # fmt: skip
    result = train(model, task, cfg)
    assert result.final["acc_incontext"] > 0.6, f"the induction head did not form: {result.final}"
    return Toy(task, model.eval(), untrained.eval(), _examples(task, 64))


@pytest.fixture(scope="session")
def toy_factual() -> Toy:
    from mechmem.papers.factual.fit import fit_counts
    from mechmem.papers.factual.model import build_factual_model
    from mechmem.papers.factual.task import FactualRecallTask

    task = FactualRecallTask(S=8, R=8, D=4)
    model = build_factual_model(task, d=32, H=16, d_h=8, m=1, seed=0)
    untrained = build_factual_model(task, d=32, H=16, d_h=8, m=1, seed=1)
    fit = fit_counts(model, task, steps=1024, batch_size=256, stop_at=1.0)
    assert fit.accuracy == 1.0, f"the attention-heavy factual model did not store every fact: {fit}"
    return Toy(task, model.eval(), untrained.eval(), _examples(task, 128))
