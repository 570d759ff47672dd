"""Shared fixtures: a tiny recall task, a tiny model config for it, and a fast training config;
and the smoke reproductions of the papers, run once per test session.

The small things build in milliseconds and train in about a second on one CPU core, so tests
can afford to build fresh models instead of sharing state. Paper-specific fixtures belong in the
paper's own test files.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from mechmem.config import ModelConfig
from mechmem.tasks.recall import RecallTask
from mechmem.training import TrainConfig

# Test models are tiny: a second intra-op thread buys nothing, and on a shared 2-core machine two
# OpenMP threads per process slow training down ~10x. Set MECHMEM_TEST_THREADS to change it.
torch.set_num_threads(int(os.environ.get("MECHMEM_TEST_THREADS", "1")))


@pytest.fixture
def tiny_task() -> RecallTask:
    """Recall with 12 keys, 6 values, 8 noise tokens and length-8 sequences (vocab 21)."""
    return RecallTask(seq_len=8, n_keys=12, n_values=6, n_noise=8)


@pytest.fixture
def tiny_model_config(tiny_task: RecallTask) -> ModelConfig:
    """A one-layer, one-head attention-only model (d_model 16) that fits ``tiny_task``."""
    return ModelConfig(
        n_layers=1,
        n_heads=1,
        d_model=16,
        d_vocab=tiny_task.d_vocab,
        d_vocab_out=tiny_task.d_vocab_out,
        n_ctx=tiny_task.seq_len,
        attn_only=True,
        positional=False,
        seed=0,
    )


@pytest.fixture
def fast_train_config() -> TrainConfig:
    """30 Adam steps of batch 32, evaluated every 10 steps on 64 sequences, no progress bar."""
    return TrainConfig(
        steps=30,
        batch_size=32,
        lr=1e-2,
        optimizer="adam",
        eval_every=10,
        eval_batch_size=64,
        seed=0,
        progress=False,
    )


@pytest.fixture(scope="session")
def smoke_outputs(tmp_path_factory) -> Callable[[str], tuple[Path, dict]]:
    """``smoke_outputs(paper)`` -> ``(folder, results)``: the paper's smoke reproduction at seed 0, run
    on first use and shared by the whole session (the reproduction tests and the report tests read
    them; none may change them)."""
    from mechmem.reproducing import run

    done: dict[str, tuple[Path, dict]] = {}

    def get(paper: str) -> tuple[Path, dict]:
        if paper not in done:
            out = tmp_path_factory.mktemp(f"smoke-{paper}")
            done[paper] = (out, run(paper, "smoke", [0], out, progress=False))
        return done[paper]

    return get
