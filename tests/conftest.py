"""Shared fixtures: a tiny recall task, a tiny model config for it, and a fast training config;
and the smoke reproductions of the papers, run once per test session.

The small things build in milliseconds and train in about a second on one CPU core, so tests
can afford to build fresh models instead of sharing state. Paper-specific fixtures belong in the
paper's own test files.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import jaxtyping
import pytest
import torch

# Run-time type checking of hooks and mechmem (tests/typechecking.py); installed before either is imported.
if os.environ.get("MECHMEM_TYPECHECK", "1") != "0":
    jaxtyping.install_import_hook(["hooks", "mechmem"], "typechecking.checker")

from mechmem.core.config import ModelConfig, TrainConfig  # noqa: E402
from mechmem.tasks.recall import RecallTask  # noqa: E402

pytest_plugins = ["toy_models"]  # the papers' toy models, trained once per session (tests/toy_models.py)

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


@pytest.fixture(scope="session")
def smoke_outputs(tmp_path_factory) -> Callable[[str], tuple[Path, dict]]:
    """``smoke_outputs(paper)`` -> ``(folder, results)``: the paper's smoke reproduction at seed 0, run
    on first use and shared by the whole session (the reproduction tests and the report tests read
    them; none may change them). ``smoke_outputs.figure_problems[paper]``: what
    :func:`mechmem.pages.figures.figure_problems` found in each figure the run saved (file name -> list)."""
    import mechmem.contract.runner
    from mechmem.pages.figures import figure_problems

    done: dict[str, tuple[Path, dict]] = {}
    problems: dict[str, dict[str, list[str]]] = {}

    def get(paper: str) -> tuple[Path, dict]:
        if paper not in done:
            out = tmp_path_factory.mktemp(f"smoke-{paper}")
            found = problems.setdefault(paper, {})
            save = mechmem.contract.runner.save_figure

            def audited(fig, path, *args, **kwargs):
                found[Path(path).name] = figure_problems(fig)
                return save(fig, path, *args, **kwargs)

            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(mechmem.contract.runner, "save_figure", audited)
                done[paper] = (out, mechmem.contract.runner.run(paper, "smoke", [0], out, progress=False))
        return done[paper]

    get.figure_problems = problems
    return get


_HOLDER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
os.ftruncate(fd, 0)
os.write(fd, f"{os.getpid()}\\n".encode())
print("locked", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def hold_lock():
    """``with hold_lock(lock_file) as pid:`` another process holds ``lock_file`` (as a mechmem writer
    would: flock, its pid inside) until the block ends."""

    @contextlib.contextmanager
    def hold(lock_file: Path):
        proc = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, str(lock_file)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        try:
            assert proc.stdout.readline().strip() == "locked", "the lock-holding process did not start"
            yield proc.pid
        finally:
            proc.stdin.close()
            proc.wait(timeout=30)

    return hold


@pytest.fixture(scope="session")
def ray_address() -> str:
    """The address of the Ray cluster the ``ray`` tests run against: ``MECHMEM_RAY_ADDRESS``, set by ``make
    test-ray``, which starts a two-node cluster on this machine for them (tests/ray_cluster.py). Without it those
    tests skip (the default suite has no Ray)."""
    address = os.environ.get("MECHMEM_RAY_ADDRESS")
    if not address:
        pytest.skip("needs a Ray cluster: `make test-ray` starts one and sets MECHMEM_RAY_ADDRESS")
    return address
