"""The same associative memory as a matrix and as the OV circuit of a one-layer HookedTransformer."""

import pytest
import torch

from hooks.replace import OV, replace_weights
from mechmem.papers.scaling.data import Embeddings, targets, zipf_probs
from mechmem.papers.scaling.memories import memory_matrix, memory_weights, predict, recall_error, scores
from mechmem.papers.scaling.optim import OptimConfig, init_parameters, logits, param_groups, run_steps, sample_stream
from mechmem.papers.scaling.transformer import memory_logits, memory_predictions, memory_transformer, train_ov_memory

N, M, D = 60, 5, 12


def setup(scheme="frequency", seed=0):
    g = torch.Generator().manual_seed(seed)
    E, U = Embeddings.draw(N, M, D, 1, g).at(D)
    p, f = zipf_probs(N, 1.5), targets(N, M)
    q = memory_weights(scheme, p, P=D // 2)
    return E[0], U[0], p, f, memory_matrix(q, E[0], U[0], f)


@pytest.mark.parametrize("scheme", ["frequency", "threshold", "all"])
def test_transformer_memory_predicts_like_the_matrix(scheme):
    E, U, p, f, W = setup(scheme)
    model = memory_transformer(W, E, U)
    with torch.no_grad():
        got = memory_logits(model, torch.arange(N))
    want = scores(W, E, U)
    assert torch.allclose(got, want, atol=1e-12), f"max logit difference {(got - want).abs().max():.3g}"
    pred = memory_predictions(model)
    assert torch.equal(pred, predict(W, E, U)), "transformer and matrix predictions differ"
    err = float(recall_error(pred, f, p))
    assert 0.0 < err < 1.0, f"the memory should be partly right and partly wrong, got error {err}"


def test_direct_path_is_really_removed():
    E, U, p, f, W = setup()
    model = memory_transformer(W, E, U)
    model.reset_hooks(including_permanent=True)  # without the removal hooks the residual adds e_x U^T
    with torch.no_grad():
        raw = memory_logits(model, torch.arange(N))
    assert torch.allclose(raw, scores(W, E, U) + E @ U.T, atol=1e-12), "the direct path should be e_x U^T"


def test_replace_weights_swaps_the_stored_memory():
    E, U, p, f, W = setup("frequency")
    W2 = memory_matrix(memory_weights("threshold", p, P=3), E, U, f)
    model = memory_transformer(W, E, U)
    assert not torch.equal(predict(W, E, U), predict(W2, E, U)), "test needs two memories that disagree"
    with replace_weights(model, {OV(0, 0): W2.T}):
        assert torch.equal(memory_predictions(model), predict(W2, E, U)), "OV replacement not applied"
    assert torch.equal(memory_predictions(model), predict(W, E, U)), "OV replacement not restored"


def test_zero_ablating_the_head_empties_the_memory():
    E, U, p, f, W = setup()
    model = memory_transformer(W, E, U)
    logits_ = model.run_with_hooks(
        torch.arange(N)[:, None], fwd_hooks=[("blocks.0.attn.hook_z", lambda z, hook: torch.zeros_like(z))]
    )[:, 0]
    assert torch.equal(logits_, torch.zeros_like(logits_)), "ablated head must leave zero logits"
    assert float(recall_error(logits_.argmax(-1), f, p)) == pytest.approx(float(p[f != 0].sum()))


@pytest.mark.parametrize("optimizer, lr", [("adam", 1.0), ("sgd", 10.0)])
def test_training_the_ov_circuit_equals_training_the_matrix(optimizer, lr):
    cfg = OptimConfig(model="matrix", optimizer=optimizer, N=N, M=M, d=D, T=640, B=64, lr=lr, alpha=1.5, seed=3)
    gen = torch.Generator().manual_seed(cfg.seed)
    params = init_parameters(cfg, gen)
    xs = sample_stream(cfg, gen)
    model = memory_transformer(params["W"][0].T, params["E"][0], params["U"][0])  # row-convention W = W_V
    ov = train_ov_memory(model, cfg, xs)
    mat = run_steps(cfg, param_groups(cfg, params), lambda x: logits(cfg, params, x), xs)
    assert ov.steps == mat.steps
    assert torch.allclose(ov.errors, mat.errors), f"error curves differ: {ov.errors.T} vs {mat.errors.T}"
    assert mat.errors[-1, 0] < mat.errors[0, 0], "training should reduce the error"
    W_V = model.blocks[0].attn.W_V.detach()[0]
    assert torch.allclose(W_V, params["W"][0].detach(), atol=1e-10), "trained W_V and W differ"
