"""The one-layer LCA model: switches (W_V, embeddings, tying), no residual, the fast read-out used in
training, a small training run, and the W_V swap through hooks.replace_weights."""

import pytest
import torch

from hooks.replace import replace_weights
from hooks.weights import get_weight
from mechmem.core import fastpath
from mechmem.core.config import TrainConfig
from mechmem.papers.lca.constructions import constructed_W_V, neighbour_adjacency
from mechmem.papers.lca.model import LCAModelSpec, build_lca_model, is_tied, untie_
from mechmem.papers.lca.readout import uniform_attention_accuracy, uniform_pattern_hook
from mechmem.papers.lca.task import LatentConceptTask
from mechmem.papers.lca.training import accuracy, train_lca


def small_task(**kw):
    return LatentConceptTask(**{"m": 4, "context_len": 12, "epsilon": 0.3, "d_model": 8, **kw})


def batch(task, n=16, seed=0):
    return task.sample_with_target(n, torch.Generator().manual_seed(seed))


def test_task_batches_score_only_the_last_position():
    task = small_task()
    b = task.sample(5, torch.Generator().manual_seed(0))
    assert b.tokens.shape == (5, 12) and task.d_vocab == task.d_vocab_out == 16
    assert b.mask[:, -1].all() and not b.mask[:, :-1].any(), "loss must be read at the last position only"
    assert torch.equal(b.targets[:, -1], b.labels["y"])


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("m", 1, "m"),
        ("m", 17, "m"),
        ("context_len", 0, "context_len"),
        ("epsilon", 1.5, "epsilon"),
        ("epsilon", -0.1, "epsilon"),
        ("neighbourhood", "ball(9)", "radius"),
        ("neighbourhood", "N3", "does not exist"),
    ],
)
def test_task_rejects_bad_config_naming_the_field(field, value, match):
    with pytest.raises(ValueError, match=match):
        small_task(**{field: value})


def test_identity_W_V_and_frozen_embeddings_are_frozen_at_their_values():
    task = small_task()
    model = build_lca_model(task, LCAModelSpec(d_model=8, train_W_V=False, train_embed=False))
    assert torch.equal(get_weight(model, "blocks.0.attn.W_V")[0], torch.eye(8))
    assert torch.equal(get_weight(model, "blocks.0.attn.W_O")[0], torch.eye(8))
    assert not model.blocks[0].attn.W_V.requires_grad and not model.embed.W_E.requires_grad
    assert model.blocks[0].attn.W_Q.requires_grad and model.blocks[0].attn.W_K.requires_grad


def test_tied_unembedding_follows_the_embedding_and_gets_its_gradient():
    task = small_task()
    model = build_lca_model(task, LCAModelSpec(d_model=8, tied=True))
    assert is_tied(model)
    with torch.no_grad():
        model.embed.W_E.mul_(2.0)
    assert torch.allclose(model.unembed.W_U, model.embed.W_E.T), "W_U must equal W_E^T while tied"
    tokens, y, _ = batch(task)
    torch.nn.functional.cross_entropy(model(tokens)[:, -1], y).backward()
    W_E = model.embed.W_E.detach().clone()
    untie_(model)
    assert not is_tied(model) and torch.equal(model.unembed.W_U.detach(), W_E.T), "untie_ must keep the values"
    untied = build_lca_model(task, LCAModelSpec(d_model=8, tied=False))
    assert not is_tied(untied) and untied.unembed.W_U.requires_grad


def test_logits_have_no_residual_term():
    task = small_task()
    model = build_lca_model(task, LCAModelSpec(d_model=8))
    tokens, _, _ = batch(task)
    _, cache = model.run_with_cache(tokens, names_filter=["blocks.0.hook_attn_out", "blocks.0.hook_resid_post"])
    assert torch.allclose(cache["blocks.0.hook_resid_post"], cache["blocks.0.hook_attn_out"], atol=1e-6), (
        "the read-out must see the attention output only (paper: logit = <W_E(k), W_V h>)"
    )


@pytest.mark.parametrize("tied", [True, False])
def test_fast_readout_equals_the_hooked_transformer_forward(tied):
    task = small_task(context_len=20)
    model = build_lca_model(task, LCAModelSpec(d_model=8, tied=tied, seed=3))
    tokens, _, _ = batch(task)
    assert fastpath.unsupported_reason(model) is None, (
        "the LCA model (its residual hook included) must fit the fast path"
    )
    assert torch.allclose(fastpath.last_logits(model, tokens), model(tokens)[:, -1], atol=1e-5)


def test_training_smoke_learns_far_above_chance_and_is_seeded():
    task = LatentConceptTask(m=4, context_len=32, epsilon=0.0, d_model=8)
    schedule = TrainConfig(
        steps=150, batch_size=32, lr=1e-2, optimizer="adam", eval_every=150, eval_batch_size=256, progress=False
    )
    model, result = train_lca(task, LCAModelSpec(d_model=8), schedule, seed=0)
    tokens, y, _ = batch(task, n=500, seed=5)
    acc = accuracy(model, tokens, y)
    assert acc > 0.5, f"150 steps on m=4, L=32, eps=0 should beat chance (1/16) by far, got {acc:.3f}"
    again, _ = train_lca(task, LCAModelSpec(d_model=8), schedule, seed=0)
    assert torch.equal(model.embed.W_E, again.embed.W_E), "same seeds must give the same weights"
    assert not is_tied(model) and not model.training


def test_constructed_W_V_swap_goes_through_replace_weights_and_is_restored():
    task = small_task()
    model = build_lca_model(task, LCAModelSpec(d_model=16))
    untie_(model)
    before = get_weight(model, "blocks.0.attn.W_V").clone()
    W_bar = constructed_W_V(model.embed.W_E.detach(), neighbour_adjacency("N1", task.m))
    tokens, _, _ = batch(task)
    with replace_weights(model, {"blocks.0.attn.W_V": W_bar[None]}):
        swapped = model(tokens)[:, -1]
        h = model.run_with_cache(tokens, names_filter="blocks.0.attn.hook_pattern")[1]["blocks.0.attn.hook_pattern"]
        mixed = torch.einsum("bp,bpd->bd", h[:, 0, -1], model.embed.W_E[tokens])
        expected = mixed @ W_bar @ model.unembed.W_U
    assert torch.allclose(swapped, expected, atol=1e-4), "logits must be <W_E(k), h W̄_V> with the swapped W_V"
    assert torch.equal(get_weight(model, "blocks.0.attn.W_V"), before), "replace_weights must restore W_V"


def test_uniform_attention_hook_spreads_attention_evenly():
    task = small_task()
    model = build_lca_model(task, LCAModelSpec(d_model=8))
    tokens, y, _ = batch(task)
    with model.hooks(fwd_hooks=[("blocks.0.attn.hook_pattern", uniform_pattern_hook)]):
        _, cache = model.run_with_cache(tokens, names_filter="blocks.0.attn.hook_pattern")
    last = cache["blocks.0.attn.hook_pattern"][:, 0, -1]
    assert torch.allclose(last, torch.full_like(last, 1 / 12)), "the last row must be uniform over all positions"
    assert 0.0 <= uniform_attention_accuracy(model, tokens, y) <= 1.0


def test_uniform_attention_and_orthonormal_rows_switches():
    task = small_task()
    model = build_lca_model(task, LCAModelSpec(d_model=16, uniform_attention=True, orthonormal_embed=True))
    tokens, _, _ = batch(task)
    _, cache = model.run_with_cache(tokens, names_filter="blocks.0.attn.hook_pattern")
    last = cache["blocks.0.attn.hook_pattern"][:, 0, -1]
    assert torch.allclose(last, torch.full_like(last, 1 / 12)), "W_Q = 0 must make the read-out attention uniform"
    assert not model.blocks[0].attn.W_Q.requires_grad, "W_Q must stay frozen at 0"
    E = get_weight(model, "W_E")[: task.V]
    assert torch.allclose(E @ E.T, torch.eye(task.V), atol=1e-5), "orthonormal_embed: V orthonormal rows"
    with pytest.raises(ValueError, match="orthonormal_embed needs d_model >= V"):
        build_lca_model(task, LCAModelSpec(d_model=8, orthonormal_embed=True))


def test_the_untrained_control_is_the_trained_models_starting_point():
    from mechmem.papers.lca.lab import Lab
    from mechmem.papers.lca.presets import SMOKE

    lab = Lab(SMOKE, seed=3, progress=False)
    task = lab.task()
    untrained, again = lab.untrained(task), build_lca_model(task, LCAModelSpec(d_model=task.d_model, seed=3))
    assert torch.equal(get_weight(untrained.model, "W_E"), get_weight(again, "W_E")), "not the initial weights"
    assert untrained.train_accuracy is None and not untrained.model.training
    trained = lab.trained(task)
    assert not torch.equal(get_weight(trained.model, "W_E"), get_weight(untrained.model, "W_E"))
