"""Birth of a Transformer: a small training run of the simplified model (probes logged by the training loop),
the dynamics summary and the claims the reproduction declares."""

from __future__ import annotations

import torch

from mechmem.config import TrainConfig
from mechmem.papers.birth.experiments import summarise_dynamics
from mechmem.papers.birth.model import build_simplified
from mechmem.papers.birth.probes import memory_probes
from mechmem.papers.birth.reproduction import CLAIMS
from mechmem.papers.birth.task import BigramTask
from mechmem.training import train


def test_simplified_model_learns_incontext_bigrams_and_logs_probes():
    torch.set_num_threads(1)
    task = BigramTask(seq_len=64, n_triggers=5)
    model = build_simplified(d_model=128, n_ctx=64, seed=0)
    frozen_before = model.blocks[0].attn.W_V.detach().clone()
    cfg = TrainConfig(
        steps=200,
        batch_size=32,
        lr=0.1,
        optimizer="sgd",
        momentum=0.9,
        weight_decay=1e-4,
        eval_every=50,
        eval_batch_size=64,
        seed=0,
        progress=False,
    )
    result = train(model, task, cfg, probes={"memory": lambda m: memory_probes(m, triggers=task.triggers)})
    first, final = result.history[0], result.final
    for key in ("acc_incontext", "loss_bigram", "loss_head", "wo1", "wk1", "wk0", "wk0_64"):
        assert key in final, f"metric {key} missing from the training log"
    assert first["acc_incontext"] < 0.1
    assert final["acc_incontext"] > 0.6, f"in-context accuracy {final['acc_incontext']:.3f} after 200 steps"
    assert final["wo1"] > first["wo1"] and final["wk1"] > first["wk1"], "memories should form"
    assert torch.equal(model.blocks[0].attn.W_V.detach(), frozen_before), "frozen W_V^1 changed"


def test_summarise_dynamics_finds_the_rise_and_the_order():
    hist = [
        {"step": s, "acc_incontext": a, "wo1": o, "wk1": k, "wk0_64": p}
        for s, a, o, k, p in [
            (0, 0.0, 0.0, 0.0, 0.0),
            (100, 0.25, 0.5, 1.0, 0.1),
            (200, 0.6, 0.96, 1.0, 0.3),
            (300, 0.92, 1.0, 1.0, 0.6),
            (400, 0.97, 1.0, 1.0, 0.7),
        ]
    ]
    s = summarise_dynamics(hist)
    assert s["step_acc_0.9"] == 300
    assert s["before_rise_accuracy"] == 0.25, "a quarter of the way to step 300 is the plateau at step 100"
    assert s["threshold_step"] == {"wo1": 200, "wk1": 100, "wk0_64": 300}
    assert s["saturated_step"] == {"wo1": 200, "wk1": 100, "wk0_64": 400}, "90 % of the final value"
    assert s["wk1_learned_last"] is True


def test_the_reproduction_declares_exactly_the_claims_of_the_issue():
    assert [c.key for c in CLAIMS] == [
        "data_incontext_fraction",
        "data_bigram_floor",
        "incontext_accuracy_final",
        "incontext_accuracy_before_rise",
        "recall_wo2_final",
        "recall_wk2_final",
        "recall_wk1_final",
        "wk1_learned_last",
        "global_before_incontext_ratio",
        "one_layer_incontext_accuracy",
        "two_layer_incontext_accuracy",
        "handbuilt_incontext_accuracy",
        "layer2_ablation_incontext_accuracy",
        "layer2_ablation_bigram_loss_change",
        "previous_token_head_score",
        "induction_head_score",
    ]
