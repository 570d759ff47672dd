"""Birth of a Transformer: a small training run of the simplified model (probes logged by the training loop)
and the schema of ``results.json`` (a smoke-sized reproduction)."""
from __future__ import annotations

import json

import pytest
import torch

from mechmem.papers.birth.experiments import SMOKE, summarise_dynamics
from mechmem.papers.birth.model import build_simplified
from mechmem.papers.birth.probes import memory_probes
from mechmem.papers.birth.reproduction import CLAIM_KEYS, run_reproduction
from mechmem.papers.birth.task import BigramTask
from mechmem.config import TrainConfig
from mechmem.training import train


def test_simplified_model_learns_incontext_bigrams_and_logs_probes():
    torch.set_num_threads(1)
    task = BigramTask(seq_len=64, n_triggers=5)
    model = build_simplified(d_model=128, n_ctx=64, seed=0)
    frozen_before = model.blocks[0].attn.W_V.detach().clone()
    cfg = TrainConfig(steps=200, batch_size=32, lr=0.1, optimizer="sgd", momentum=0.9, weight_decay=1e-4,
                      eval_every=50, eval_batch_size=64, seed=0, progress=False)
    result = train(model, task, cfg, probes={"memory": lambda m: memory_probes(m, triggers=task.triggers)})
    first, final = result.history[0], result.final
    for key in ("acc_incontext", "loss_bigram", "loss_head", "wo1", "wk1", "wk0", "wk0_64"):
        assert key in final, f"metric {key} missing from the training log"
    assert first["acc_incontext"] < 0.1
    assert final["acc_incontext"] > 0.6, f"in-context accuracy {final['acc_incontext']:.3f} after 200 steps"
    assert final["wo1"] > first["wo1"] and final["wk1"] > first["wk1"], "memories should form"
    assert torch.equal(model.blocks[0].attn.W_V.detach(), frozen_before), "frozen W_V^1 changed"


def test_summarise_dynamics_finds_the_rise_and_the_order():
    hist = [{"step": s, "acc_incontext": a, "wo1": o, "wk1": k, "wk0_64": p}
            for s, a, o, k, p in [(0, 0.0, 0.0, 0.0, 0.0), (100, 0.25, 0.5, 1.0, 0.1), (200, 0.6, 0.96, 1.0, 0.3),
                                  (300, 0.92, 1.0, 1.0, 0.6), (400, 0.97, 1.0, 1.0, 0.7)]]
    s = summarise_dynamics(hist)
    assert s["step_acc_0.9"] == 300
    assert s["before_rise_accuracy"] == 0.25, "a quarter of the way to step 300 is the plateau at step 100"
    assert s["threshold_step"] == {"wo1": 200, "wk1": 100, "wk0_64": 300}
    assert s["saturated_step"] == {"wo1": 200, "wk1": 100, "wk0_64": 400}, "90 % of the final value"
    assert s["wk1_learned_last"] is True


def test_results_json_has_exactly_the_claims_of_the_issue(tmp_path):
    torch.set_num_threads(1)
    results = run_reproduction(tmp_path, SMOKE, seed=0)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert set(saved["claims"]) == set(CLAIM_KEYS)
    assert len(CLAIM_KEYS) == 16
    for name, entry in saved["claims"].items():
        assert set(entry) == {"measured", "expected", "holds"}, f"claim {name} has keys {set(entry)}"
        assert isinstance(entry["holds"], bool)
    assert saved["claims"] == json.loads(json.dumps(results["claims"]))
    for fig in ("data_statistics", "simplified_dynamics", "full_2layer", "one_vs_two_layers", "handbuilt"):
        assert (tmp_path / "figures" / f"{fig}.png").stat().st_size > 0, f"figure {fig} missing"
        assert (tmp_path / f"{fig}.json").exists(), f"record {fig}.json missing"
    html = (tmp_path / "mechanistic_full_attention_layer1.html").read_text()
    assert "<script" in html and "unpkg.com" not in html[:5000] and len(html) > 100_000, "self-contained HTML"
