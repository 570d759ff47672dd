"""The one-layer factual-recall transformer: structure, no EOS residual, count-based logits, training smoke."""

import pytest
import torch

from hooks.weights import get_weight, weight_names, weight_parameters
from mechmem import TrainConfig, train
from mechmem.papers.factual.fit import fit_counts
from mechmem.papers.factual.model import build_factual_model, eos_logits, parameter_count
from mechmem.papers.factual.task import FactualRecallTask, token_counts


@pytest.fixture(scope="module")
def task():
    return FactualRecallTask(S=4, R=4, D=2, seq_len=12)


@pytest.mark.parametrize("eos_residual", [False, True])
def test_count_based_eos_logits_equal_the_hooked_transformer(task, eos_residual):
    model = build_factual_model(task, d=16, H=3, d_h=4, m=8, eos_residual=eos_residual)
    b = task.sample(32, torch.Generator().manual_seed(0))
    full = model(b.tokens)[:, -1]
    fast = eos_logits(model, token_counts(b.tokens, task.d_vocab), task.eos)
    assert torch.allclose(full, fast, atol=1e-5), f"max diff {(full - fast).abs().max():.2e}"


def test_mlp_and_logits_see_no_eos_embedding(task):
    model = build_factual_model(task, d=16, H=2, d_h=4, m=8)
    b = task.sample(8, torch.Generator().manual_seed(1))
    _, cache = model.run_with_cache(b.tokens, names_filter=["blocks.0.hook_attn_out", "blocks.0.hook_resid_mid"])
    assert torch.allclose(cache["blocks.0.hook_resid_mid"], cache["blocks.0.hook_attn_out"], atol=1e-6), (
        "resid_mid still carries the token embedding"
    )
    with_residual = build_factual_model(task, d=16, H=2, d_h=4, m=8, eos_residual=True)
    assert not torch.allclose(model(b.tokens)[:, -1], with_residual(b.tokens)[:, -1]), (
        "removing the EOS residual changed nothing"
    )


def test_only_attention_and_mlp_weights_train_and_parameter_count(task):
    model = build_factual_model(task, d=16, H=3, d_h=4, m=8)
    trainable = {n for n in weight_names(model) if weight_parameters(model, n).requires_grad}
    assert trainable == {
        "blocks.0.attn.W_Q",
        "blocks.0.attn.W_K",
        "blocks.0.attn.W_V",
        "blocks.0.attn.W_O",
        "blocks.0.mlp.W_in",
        "blocks.0.mlp.b_in",
        "blocks.0.mlp.W_out",
    }, trainable
    real = {id(weight_parameters(model, n)) for n in trainable}
    assert {id(p) for p in model.parameters() if p.requires_grad} == real, "a parameter trains outside the weight names"
    counted = sum(get_weight(model, n).numel() for n in trainable if ".b_" not in n)
    assert parameter_count(16, 3, 4, 8) == counted == 4 * 3 * 4 * 16 + 2 * 8 * 16
    assert model.cfg.d_vocab_out == task.R * task.D and model.cfg.positional_embedding_type == "standard"
    assert torch.count_nonzero(get_weight(model, "W_pos")) == 0, "positional embeddings must be zero"


@pytest.mark.parametrize("field, kwargs", [("d_h", dict(d_h=0)), ("m", dict(m=0)), ("H", dict(H=0))])
def test_zero_sizes_are_rejected_naming_the_field(task, field, kwargs):
    with pytest.raises(ValueError, match=field):
        build_factual_model(task, **{"d": 16, "H": 2, "d_h": 4, "m": 8, **kwargs})


def test_training_smoke_with_mechmem_loop_learns_the_facts(task):
    model = build_factual_model(task, d=16, H=4, d_h=4, m=32, seed=0)
    W_E = get_weight(model, "W_E")
    cfg = TrainConfig(steps=250, batch_size=128, lr=1e-2, eval_every=50, eval_batch_size=256, progress=False)
    result = train(model, task, cfg)
    first, last = result.history[0], result.final
    assert last["loss"] < 0.5 * first["loss"], f"loss did not halve: {first['loss']:.3f} -> {last['loss']:.3f}"
    assert last["accuracy"] > 0.9, f"16 facts not learned: accuracy {last['accuracy']:.3f}"
    assert torch.equal(get_weight(model, "W_E"), W_E), "the frozen embeddings moved"
    assert "relation_loss" in last and last["relation_loss"] <= last["loss"] + 1e-6


def test_count_trainer_reaches_full_accuracy_and_stops_early(task):
    model = build_factual_model(task, d=16, H=4, d_h=4, m=32, seed=0)
    res = fit_counts(model, task, steps=1024, batch_size=256, lr=1e-2, stop_at=1.0)
    assert res.accuracy == 1.0 and res.steps < 1024, res
