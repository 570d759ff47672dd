"""Shared fixtures: a tiny recall task, a tiny model config for it, and a fast training config.

Everything here is small enough that a model builds in milliseconds and trains in about a
second on one CPU core, so tests can afford to build fresh models instead of sharing state.
Paper-specific fixtures belong in the paper's own test files.
"""

from __future__ import annotations

import os

import jaxtyping
import pytest
import torch

# Run-time type checking of hooks and mechmem (tests/typechecking.py); installed before either is imported.
if os.environ.get("MECHMEM_TYPECHECK", "1") != "0":
    jaxtyping.install_import_hook(["hooks", "mechmem"], "typechecking.checker")

from mechmem.config import ModelConfig, TrainConfig  # noqa: E402
from mechmem.tasks.recall import RecallTask  # noqa: E402

# Test models are tiny: a second intra-op thread buys nothing, and on a shared 2-core machine two
# OpenMP threads per process slow training down ~10x. Set MECHMEM_TEST_THREADS to change it.
torch.set_num_threads(int(os.environ.get("MECHMEM_TEST_THREADS", "1")))

# --- the fault-injection summary (tests/core/test_faults.py) ----------------------------------------
# Each fault test records how many faults it injected (record_property("faults", n)); a fault is
# "clean" when its test passed. The summary line is quoted in the README's Reliability section.
_FAULTS = {"tried": 0, "clean": 0}


def pytest_runtest_logreport(report) -> None:
    faults = dict(report.user_properties).get("faults")
    if faults is None or report.when != "call":
        return
    _FAULTS["tried"] += faults
    _FAULTS["clean"] += faults if report.passed else 0


def pytest_terminal_summary(terminalreporter) -> None:
    if _FAULTS["tried"]:
        terminalreporter.write_line(f"fault injection: {_FAULTS['tried']} tried / {_FAULTS['clean']} clean")


@pytest.fixture(autouse=True)
def _own_validation(request):
    """Tests marked ``own_validation`` pass arguments outside their annotation on purpose, to check the clear
    error a user gets from the library's own validation; the run-time type checker, which would
    reject those arguments first, is paused for them."""
    if request.node.get_closest_marker("own_validation") is None:
        yield
        return
    jaxtyping.config.update("jaxtyping_disable", True)
    try:
        yield
    finally:
        jaxtyping.config.update("jaxtyping_disable", False)


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
