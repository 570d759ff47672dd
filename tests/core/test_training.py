"""The training loop: freezing, delayed unfreezing, determinism, learning, and input checks.

Models are tiny (d_model 16) and runs are tens of steps, so every test trains for real.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest
import torch

from hooks.weights import get_weight, weight_names
from mechmem.core.config import ModelConfig, TrainConfig
from mechmem.core.models import build_bridge, build_model
from mechmem.core.training import evaluate, masked_accuracy, masked_loss, train
from mechmem.storage.runs import Run
from mechmem.tasks.base import Batch
from mechmem.tasks.recall import RecallTask


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {name: get_weight(model, name) for name in weight_names(model)}


def _without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


@pytest.mark.parametrize(
    "optimizer, extra",
    [("adamw", {"weight_decay": 0.1}), ("sgd", {"momentum": 0.9, "weight_decay": 0.01, "lr": 0.5})],
)
@pytest.mark.parametrize("builder", [build_model, build_bridge], ids=["hooked", "bridge"])
def test_frozen_weights_stay_bit_identical_while_the_rest_trains(
    builder, optimizer, extra, tiny_task, tiny_model_config, fast_train_config
):
    """Frozen weights are left out of the optimiser, so even weight decay and momentum cannot move
    them; identity W_Q stays exactly the identity. Trainable weights must actually change."""
    cfg = dataclasses.replace(tiny_model_config, n_heads=2, identity_W_Q=True, freeze=("W_E", "W_U"))
    model = builder(cfg)
    before = _snapshot(model)
    tcfg = dataclasses.replace(fast_train_config, optimizer=optimizer, steps=10, **extra)
    train(model, tiny_task, tcfg)
    after = _snapshot(model)
    frozen = set(cfg.frozen_weights())
    assert {"W_E", "W_U", "W_pos", "blocks.0.attn.W_Q"} <= frozen
    for name in weight_names(model):
        same = torch.equal(before[name], after[name])
        if name in frozen:
            assert same, f"frozen weight {name} changed during {optimizer} training"
        else:
            assert not same, f"trainable weight {name} did not change during {optimizer} training"
    eye = after["blocks.0.attn.W_Q"].permute(1, 0, 2).reshape(cfg.d_model, cfg.d_model)
    assert torch.equal(eye, torch.eye(cfg.d_model)), "identity W_Q is no longer the identity after training"


@pytest.mark.parametrize("start", [0, 10, 15])
def test_freeze_until_keeps_a_weight_at_init_until_its_start_step(
    start, tiny_task, tiny_model_config, fast_train_config
):
    """``freeze_until={W_O: s}``: W_O is exactly at its init after s steps and moves afterwards.

    ``start=0`` means "train from the first step"; ``start=10`` coincides with an evaluation."""
    model = build_model(tiny_model_config)
    name = "blocks.0.attn.W_O"
    init = get_weight(model, name)
    seen: dict[int, torch.Tensor] = {}
    calls = iter(range(0, 31, 5))
    probe = lambda m: seen.__setitem__(next(calls), get_weight(m, name)) or {}  # noqa: E731
    tcfg = dataclasses.replace(fast_train_config, eval_every=5, freeze_until={name: start})
    train(model, tiny_task, tcfg, probes={"w_o": probe})
    assert sorted(seen) == [0, 5, 10, 15, 20, 25, 30], f"probe ran at unexpected steps {sorted(seen)}"
    for step, value in seen.items():
        unchanged = torch.equal(value, init)
        assert unchanged == (step <= start), (
            f"freeze_until={start}: W_O after {step} steps is {'unchanged' if unchanged else 'changed'}"
        )


def test_same_seeds_give_identical_metrics_and_weights(tiny_task, tiny_model_config, fast_train_config):
    """Two runs with the same model and training seeds agree exactly; another data seed does not."""
    results, weights = [], []
    for seed in (0, 0, 1):
        model = build_model(tiny_model_config)
        results.append(train(model, tiny_task, dataclasses.replace(fast_train_config, seed=seed)))
        weights.append(_snapshot(model))
    same, other = _without_timing(results[0].history), _without_timing(results[1].history)
    assert same == other, f"same seed, different metrics:\n{same}\n{other}"
    for name in weights[0]:
        assert torch.equal(weights[0][name], weights[1][name]), f"same seed, different final {name}"
    assert _without_timing(results[2].history)[1:] != same[1:], "changing the training seed changed nothing"


def _train_with_threads(threads: int, task, model_cfg, train_cfg, run=None, resume=False, probes=None):
    model = build_model(model_cfg)
    result = train(model, task, dataclasses.replace(train_cfg, threads=threads), run=run, resume=resume, probes=probes)
    return _snapshot(model), result


def _differing(a: dict, b: dict) -> dict[str, float]:
    return {n: (a[n] - b[n]).abs().max().item() for n in a if not torch.equal(a[n], b[n])}


@pytest.fixture
def threaded_setup():
    """The built-in recall task at its default size (d_model 32, batch 128, 12 positions): large
    enough for the backward of ``W_E[tokens]`` to split over 2 threads (without deterministic
    kernels, 2-thread runs of it differ from each other by ~1e-7 after 10 steps)."""
    task = RecallTask()
    train_cfg = dataclasses.replace(task.train_config(), steps=10, eval_every=5, eval_batch_size=64, progress=False)
    return task, task.model_config(), train_cfg


def test_training_with_two_threads_is_bit_identical_from_run_to_run(threaded_setup):
    task, model_cfg, train_cfg = threaded_setup
    threads_before = torch.get_num_threads()
    runs = [_train_with_threads(2, task, model_cfg, train_cfg) for _ in range(3)]
    for attempt, (weights, result) in enumerate(runs[1:], start=2):
        assert result.threads == 2, f"training ran on {result.threads} threads, asked for 2"
        differing = _differing(runs[0][0], weights)
        assert not differing, f"2-thread run {attempt} differs from run 1 (max abs diff per weight): {differing}"
        assert _without_timing(result.history) == _without_timing(runs[0][1].history), "metrics differ"
    assert torch.get_num_threads() == threads_before, "train() did not restore the thread count"
    assert not torch.are_deterministic_algorithms_enabled(), "train() left deterministic algorithms on"


def test_resume_with_two_threads_ends_bit_identical_to_an_uninterrupted_run(tmp_path, threaded_setup):
    task, model_cfg, train_cfg = threaded_setup
    reference, _ = _train_with_threads(2, task, model_cfg, train_cfg)
    run = Run.create(tmp_path / "run", {"model": model_cfg.to_dict()})
    calls = []

    def interrupt(model):
        calls.append(1)
        if len(calls) == 3:  # the evaluation after 10 steps; the checkpoint at step 5 is on disk
            raise KeyboardInterrupt
        return {}

    with pytest.raises(KeyboardInterrupt):
        _train_with_threads(2, task, model_cfg, train_cfg, run=run, probes={"interrupt": interrupt})
    resumed, result = _train_with_threads(2, task, model_cfg, train_cfg, run=run, resume=True)
    assert result.start == 5, f"resumed from step {result.start}, expected the checkpoint at 5"
    differing = _differing(reference, resumed)
    assert not differing, f"resumed at 2 threads differs from the uninterrupted 2-thread run: {differing}"


_ONE_VS_TWO = """
import dataclasses, torch
from hooks.weights import get_weight, weight_names
from mechmem.core.models import build_model
from mechmem.tasks.recall import RecallTask
from mechmem.core.training import train

task = RecallTask(seq_len=8, n_keys=12, n_values=6, n_noise=8)
model_cfg = dataclasses.replace(task.model_config(), d_model=16)
weights = []
for threads in (1, 2):
    model = build_model(model_cfg)
    cfg = dataclasses.replace(task.train_config(), steps=10, batch_size=32, eval_every=5, eval_batch_size=64,
                              progress=False, threads=threads)
    train(model, task, cfg)
    weights.append({n: get_weight(model, n) for n in weight_names(model)})
print(sorted(n for n in weights[0] if not torch.equal(weights[0][n], weights[1][n])))
"""


def test_one_and_two_threads_agree_bit_for_bit_under_mkls_reproducible_mode():
    """Across thread counts MKL's matrix product may split its sum differently (measured: the
    gradient of ``W_U``, summed over batch x positions, differs by ~2e-8 between 1 and 2 threads);
    MKL's conditional numerical reproducibility mode (``MKL_CBWR=COMPATIBLE,STRICT``, set before
    the process starts) removes that, as the README says."""
    if not torch.backends.mkl.is_available():
        pytest.skip("torch is not built with MKL")
    env = dict(os.environ, MKL_CBWR="COMPATIBLE,STRICT")
    proc = subprocess.run([sys.executable, "-c", _ONE_VS_TWO], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    differing = proc.stdout.strip().splitlines()[-1]
    assert differing == "[]", f"with MKL_CBWR=COMPATIBLE,STRICT, 1 and 2 threads differ in {differing}"


def test_history_has_one_record_per_evaluation_and_final_is_the_last(tiny_task, tiny_model_config, fast_train_config):
    result = train(build_model(tiny_model_config), tiny_task, dataclasses.replace(fast_train_config, steps=25))
    steps = [r["step"] for r in result.history]
    assert steps == [0, 10, 20, 25], f"evaluations at {steps}; expected 0, every 10 steps and the last step"
    assert result.final == result.history[-1]
    assert {"loss", "accuracy", "train_loss", "seconds"} <= set(result.final), f"missing metrics: {result.final}"


def test_tiny_recall_task_is_learned_to_at_least_99_percent(tiny_task):
    """The built-in recall task is solvable by one attention head: 80 Adam steps suffice.

    Accuracy is measured on 512 held-out sequences (one eval batch), so 99% means at most 5 errors."""
    cfg = ModelConfig(
        n_layers=1,
        n_heads=1,
        d_model=32,
        d_vocab=tiny_task.d_vocab,
        d_vocab_out=tiny_task.d_vocab_out,
        n_ctx=tiny_task.seq_len,
        positional=False,
        seed=0,
    )
    tcfg = TrainConfig(steps=80, batch_size=64, lr=1e-2, eval_every=40, eval_batch_size=512, seed=0, progress=False)
    result = train(build_model(cfg), tiny_task, tcfg)
    assert result.history[0]["accuracy"] < 0.5, f"untrained model already scores {result.history[0]['accuracy']}"
    assert result.final["accuracy"] >= 0.99, f"recall accuracy {result.final['accuracy']:.4f} < 0.99 after training"


def test_training_leaves_the_global_rng_untouched(tiny_task, tiny_model_config, fast_train_config):
    """All training randomness comes from generators seeded by TrainConfig.seed."""
    model = build_model(tiny_model_config)
    torch.manual_seed(99)
    expected = torch.rand(4)
    torch.manual_seed(99)
    train(model, tiny_task, dataclasses.replace(fast_train_config, steps=5))
    assert torch.equal(torch.rand(4), expected), "train() consumed or reseeded the global RNG"


def test_task_longer_than_n_ctx_is_rejected_before_any_work(tmp_path, tiny_task, tiny_model_config, fast_train_config):
    """seq_len > n_ctx raises a ValueError naming both; no weight moves and no metrics are logged."""
    model = build_model(dataclasses.replace(tiny_model_config, n_ctx=tiny_task.seq_len - 1))
    before = _snapshot(model)
    run = Run.create(tmp_path / "run", {"model": {}})
    with pytest.raises(ValueError, match=r"seq_len=8.*n_ctx=7"):
        train(model, tiny_task, fast_train_config, run=run)
    assert all(torch.equal(before[n], get_weight(model, n)) for n in before), "weights changed before the error"
    assert not (run.path / "metrics.jsonl").exists(), "metrics were logged before the config error"


def test_task_with_more_output_classes_than_the_model_is_rejected(tiny_task, tiny_model_config, fast_train_config):
    model = build_model(dataclasses.replace(tiny_model_config, d_vocab_out=tiny_task.d_vocab_out - 1))
    with pytest.raises(ValueError, match="d_vocab_out"):
        train(model, tiny_task, fast_train_config)


def test_freeze_until_unknown_weight_is_rejected_listing_valid_names(tiny_task, tiny_model_config, fast_train_config):
    model = build_model(tiny_model_config)
    tcfg = dataclasses.replace(fast_train_config, freeze_until={"blocks.0.attn.W_Z": 5})
    with pytest.raises(ValueError, match=r"freeze_until.*W_Z.*blocks\.0\.attn\.W_O"):
        train(model, tiny_task, tcfg)


def test_train_rejects_a_non_task_and_a_non_config(tiny_task, tiny_model_config, fast_train_config):
    model = build_model(tiny_model_config)
    with pytest.raises(TypeError, match="Task"):
        train(model, "recall", fast_train_config)
    with pytest.raises(TypeError, match="TrainConfig"):
        train(model, tiny_task, {"steps": 5})


def test_loss_and_accuracy_count_only_masked_positions():
    """Unmasked positions may hold anything: they must not change the loss or the accuracy."""
    logits = torch.zeros(2, 3, 4)
    logits[:, -1, 2] = 5.0  # predicts class 2 at the last position
    targets = torch.tensor([[0, 1, 2], [3, 3, 2]])
    mask = torch.tensor([[False, False, True], [False, False, True]])
    batch = Batch(torch.zeros(2, 3, dtype=torch.long), targets, mask)
    assert masked_accuracy(logits, batch) == 1.0, "unmasked wrong predictions lowered the accuracy"
    expected = torch.nn.functional.cross_entropy(logits[:, -1], targets[:, -1])
    assert torch.allclose(masked_loss(logits, batch), expected), "loss includes unmasked positions"


def test_evaluate_runs_probes_and_restores_train_mode(tiny_task, tiny_model_config):
    """Probes may return a float (stored under its name) or a dict; evaluate runs in eval mode."""
    model = build_model(tiny_model_config).train()
    modes = []
    probes = {"scalar": lambda m: modes.append(m.training) or 0.5, "many": lambda m: {"a": 1.0, "b": 2.0}}
    batch = tiny_task.sample(16, torch.Generator().manual_seed(0))
    metrics = evaluate(model, tiny_task, batch, probes)
    assert metrics["scalar"] == 0.5 and metrics["a"] == 1.0 and metrics["b"] == 2.0, f"probe values lost: {metrics}"
    assert modes == [False], "probes did not run in eval mode"
    assert model.training, "evaluate did not restore train mode"
