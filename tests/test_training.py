"""The training loop: freezing, delayed unfreezing, determinism, learning, and input checks.

Models are tiny (d_model 16) and runs are tens of steps, so every test trains for real.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from hooks.weights import get_weight, weight_names
from mechmem.config import ModelConfig
from mechmem.models import build_bridge, build_model
from mechmem.runs import Run
from mechmem.tasks.base import Batch
from mechmem.training import TrainConfig, evaluate, masked_accuracy, masked_loss, train


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
