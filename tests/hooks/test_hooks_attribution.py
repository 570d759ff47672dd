"""Attribution patching is the derivative of exact patching, on every sweep and both model kinds; it
gives TransformerLens 4.x's attribution_patch numbers; its check reports the agreement it measured."""

import math

import pandas as pd
import pytest
import torch
import transformer_lens.patching as tlp

from hooks.attribution import AttributionEngine, attribution_sweep, attribution_sweeps, ranks, spearman
from hooks.compat import has_hooked_transformer, tl_patching
from hooks.patching import SWEEPS, PatchingEngine, patch_sweep
from hooks.state import same_state, state_fingerprint
from hooks.testing import KINDS, models_by_kind

GEN = torch.Generator().manual_seed(0)
CLEAN = torch.randint(0, 24, (3, 5), generator=GEN)
CORRUPTED = CLEAN.clone()
CORRUPTED[:, 1] = (CLEAN[:, 1] + 1 + torch.randint(0, 22, (3,), generator=GEN)) % 24


def metric(logits):
    return (logits[:, -1, 3] - logits[:, -1, 5]).mean()


@pytest.fixture(scope="module")
def models():
    return models_by_kind(seed=6)


@pytest.fixture(scope="module")
def models64():
    """Small float64 models: the finite differences below are then exact to ~1e-9."""
    return {kind: m.to(torch.float64) for kind, m in models_by_kind(seed=6, n_heads=2, d_head=16).items()}


def _tl_sweep(model, sweep, cache, fn):
    if sweep == "resid_post":  # transformer_lens has no ready-made partial for it
        partial = lambda *a: tlp.generic_activation_patch(  # noqa: E731
            *a, patch_setter=tlp.layer_pos_patch_setter, activation_name="resid_post", index_axis_names=("layer", "pos")
        )
    else:
        partial = getattr(tlp, f"get_act_patch_{sweep}")
    return tl_patching(partial, model, CORRUPTED, cache, fn)


def _derivative_of_exact_patching(model, sweep, h=1e-5):
    """d/dt at t=0 of transformer_lens.patching with the activation a_corrupted + t (a_clean -
    a_corrupted) written at each index: a central difference. The metric is shifted by its corrupted
    value, so that transformer_lens's float32 result holds the small differences precisely."""
    _, clean = model.run_with_cache(CLEAN)
    _, corrupted = model.run_with_cache(CORRUPTED)
    with torch.no_grad():
        base = metric(model(CORRUPTED)).item()
    shifted = lambda logits: metric(logits) - base  # noqa: E731
    at = {t: {n: corrupted[n] + t * (clean[n] - corrupted[n]) for n in clean.keys()} for t in (h, -h)}
    return (_tl_sweep(model, sweep, at[h], shifted) - _tl_sweep(model, sweep, at[-h], shifted)) / (2 * h)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sweep", sorted(SWEEPS))
def test_attribution_is_the_derivative_of_exact_patching(models64, kind, sweep):
    model = models64[kind]
    want = _derivative_of_exact_patching(model, sweep)
    got = attribution_sweep(model, CLEAN, CORRUPTED, metric, sweep)
    assert got.shape == want.shape, f"shape {tuple(got.shape)} != transformer_lens {tuple(want.shape)}"
    diff = (got - want).abs().max().item()
    assert diff <= 1e-6, f"{sweep} on {kind}: attribution differs from d(exact patching)/dt by {diff:.2e}"
    assert want.abs().max() > 1e-2, "degenerate test: the patches do not move the metric"


@pytest.mark.parametrize("kind", KINDS)
def test_the_linear_estimate_is_not_the_exact_effect_here(models64, kind):
    """Negative control for the test above: on the same model the exact effect of a whole patch
    differs from its first-order estimate far beyond that test's tolerance."""
    model = models64[kind]
    engine = PatchingEngine(model, CLEAN, CORRUPTED, metric, progress=False)
    exact = engine.sweep("attn_head_out_by_pos") - engine.corrupted_metric()
    estimate = attribution_sweep(model, CLEAN, CORRUPTED, metric, "attn_head_out_by_pos")
    assert (exact - estimate).abs().max() > 1e-3


@pytest.mark.skipif(has_hooked_transformer(), reason="transformer_lens.tools.analysis.attribution_patching is 4.x")
def test_attribution_gives_transformer_lens_attribution_patch_numbers(models):
    from transformer_lens.tools.analysis.attribution_patching import attribution_patch

    model = models["bridge"]
    L, P, H = model.cfg.n_layers, CLEAN.shape[1], model.cfg.n_heads
    want_z, want_mlp = torch.zeros(L, P, H), torch.zeros(L, P)
    for node, score in attribution_patch(model, CLEAN, CORRUPTED, metric).node_scores.items():
        if node.kind == "attn_head_out":
            want_z[node.layer, node.position, node.head] = score
        elif node.kind == "mlp_out":
            want_mlp[node.layer, node.position] = score
    got = attribution_sweeps(model, CLEAN, CORRUPTED, metric, ["attn_head_out_by_pos", "mlp_out"])
    for name, want in (("attn_head_out_by_pos", want_z), ("mlp_out", want_mlp)):
        diff = (got[name] - want).abs().max().item()
        assert diff <= 1e-5, f"{name}: max abs diff {diff:.2e} vs transformer_lens attribution_patch"
        assert want.abs().max() > 1e-2, "degenerate test"


@pytest.mark.parametrize("kind", KINDS)
def test_several_sweeps_come_from_one_clean_and_one_corrupted_pass(models, kind):
    model = models[kind]
    names = ["resid_pre", "attn_head_out_by_pos", "attn_head_out_all_pos", "attn_head_pattern_by_pos"]
    one_by_one = {sweep: attribution_sweep(model, CLEAN, CORRUPTED, metric, sweep) for sweep in names}
    calls = []
    handle = model.blocks[0].register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        together = attribution_sweeps(model, CLEAN, CORRUPTED, metric, names)
    finally:
        handle.remove()
    assert len(calls) == 2, f"expected one clean and one corrupted forward pass, got {len(calls)}"
    for sweep in names:
        assert torch.allclose(together[sweep], one_by_one[sweep], atol=1e-6), sweep
    by_pos = together["attn_head_out_by_pos"].sum(1)  # the all-positions sweep is the sum over positions
    assert torch.allclose(together["attn_head_out_all_pos"], by_pos, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_layers_per_example_and_chunks_give_the_same_numbers(models, kind):
    model = models[kind]
    full = attribution_sweep(model, CLEAN, CORRUPTED, metric, "attn_head_out_by_pos")
    sub = attribution_sweep(model, CLEAN, CORRUPTED, metric, "attn_head_out_by_pos", layers=[1])
    assert torch.allclose(sub[0], full[1], atol=1e-6)
    per = attribution_sweep(
        model, CLEAN, CORRUPTED, lambda lg: lg[:, -1, 3] - lg[:, -1, 5], "attn_head_out_by_pos", per_example=True
    )
    assert per.shape == full.shape + (3,) and torch.allclose(per.mean(-1), full, atol=1e-6)
    engine = AttributionEngine(model, CLEAN, CORRUPTED, metric, memory_budget_gb=1e-9)
    chunked = engine.sweep("attn_head_out_by_pos")
    assert engine.chunks == 3, "a budget below one example's pass should run one example at a time"
    assert torch.allclose(chunked, full, atol=1e-6)
    last = attribution_sweep(
        model, CLEAN, CORRUPTED, lambda lg: (lg[:, 0, 3] - lg[:, 0, 5]).mean(), "resid_pre", logit_positions=[-1]
    )
    assert torch.allclose(last, attribution_sweep(model, CLEAN, CORRUPTED, metric, "resid_pre"), atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_check_reports_the_agreement_with_exact_patching_it_measured(models, kind):
    model = models[kind]
    sweep = "attn_head_out_by_pos"
    scores, found = attribution_sweep(model, CLEAN, CORRUPTED, metric, sweep, check=6, seed=1)
    exact = patch_sweep(model, CLEAN, CORRUPTED, metric, sweep, progress=False)
    with torch.no_grad():
        corrupted_metric = metric(model(CORRUPTED)).item()
    idx = tuple(found.indices.T)
    _, clean_cache = model.run_with_cache(CLEAN)
    _, corrupted_cache = model.run_with_cache(CORRUPTED)
    names = [f"blocks.{layer}.attn.hook_z" for layer in range(model.cfg.n_layers)]
    changed = torch.stack([(clean_cache[n] != corrupted_cache[n]).any(-1).any(0) for n in names])  # [layer, pos, head]
    assert found.k == 6 and found.n_changed == int(changed.sum())
    assert changed[tuple(found.indices.T)].all(), "check drew a component that the corruption does not change"
    assert torch.allclose(found.exact, exact[idx] - corrupted_metric, atol=1e-5), "exact effects are not patch_sweep's"
    assert torch.equal(found.attribution, scores[idx])
    frame = pd.DataFrame({"a": found.attribution.double().numpy(), "e": found.exact.double().numpy()})
    assert math.isclose(found.pearson, frame.corr().loc["a", "e"], abs_tol=1e-9)
    assert math.isclose(found.spearman, frame.corr(method="spearman").loc["a", "e"], abs_tol=1e-9)
    diffs = (found.attribution - found.exact).abs()
    assert math.isclose(found.max_abs_diff, diffs.max().item(), rel_tol=1e-6)
    assert found.worst == tuple(found.indices[diffs.argmax()].tolist())
    again = attribution_sweep(model, CLEAN, CORRUPTED, metric, sweep, check=6, seed=1)[1]
    assert torch.equal(again.indices, found.indices), "the same seed must draw the same components"
    first = int((CLEAN != CORRUPTED).any(0).long().argmax())  # before the corruption: exactly no effect
    assert (scores[:, :first] == 0).all() and not changed[:, :first].any()


def test_ranks_average_ties_like_pandas():
    x = torch.tensor([3.0, 1.0, 3.0, 2.0, 3.0, -1.0])
    assert ranks(x).tolist() == pd.Series(x.numpy()).rank().tolist()
    assert math.isnan(spearman(torch.ones(4), torch.arange(4.0))), "a constant input has no rank correlation"


@pytest.mark.own_validation
@pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")
@pytest.mark.parametrize("kind", KINDS)
def test_bad_attribution_input_raises_before_any_work(models, kind):
    model = models[kind]
    fp = state_fingerprint(model)
    with pytest.raises(ValueError, match="same shape"):
        attribution_sweep(model, CLEAN, CORRUPTED[:, :4], metric)
    with pytest.raises(ValueError, match="unknown sweep"):
        attribution_sweep(model, CLEAN, CORRUPTED, metric, "resid_pree")
    with pytest.raises(ValueError, match="scalar"):
        attribution_sweep(model, CLEAN, CORRUPTED, lambda lg: lg[:, -1, 0])
    with pytest.raises(ValueError, match=r"\[batch\]"):
        attribution_sweep(model, CLEAN, CORRUPTED, metric, per_example=True)
    with pytest.raises(ValueError, match="layer"):
        attribution_sweep(model, CLEAN, CORRUPTED, metric, layers=[5])
    with pytest.raises(TypeError, match="integer tensor"):
        attribution_sweep(model, CLEAN.float(), CORRUPTED, metric)
    with pytest.raises(ValueError, match="not differentiable"):
        attribution_sweep(model, CLEAN, CORRUPTED, lambda lg: (lg[:, -1].argmax(-1) == 3).float().mean())
    with pytest.raises(ValueError, match="no .item"):
        attribution_sweep(model, CLEAN, CORRUPTED, lambda lg: float(metric(lg)))
    with pytest.raises(ValueError, match="check"):
        attribution_sweep(model, CLEAN, CORRUPTED, metric, check=-1)
    with pytest.raises(TypeError, match="unknown options"):
        attribution_sweep(model, CLEAN, CORRUPTED, metric, budget=1.0)
    with pytest.raises(ValueError, match="memory_budget_gb"):
        attribution_sweep(model, CLEAN, CORRUPTED, metric, memory_budget_gb=0)
    assert not same_state(fp, state_fingerprint(model))


@pytest.mark.parametrize("kind", KINDS)
def test_model_comes_back_as_it_was_after_success_and_failure(kind):
    model = models_by_kind(seed=2)[kind].train()
    frozen = next(model.parameters())
    frozen.requires_grad_(False)
    fp = state_fingerprint(model)
    attribution_sweep(model, CLEAN, CORRUPTED, metric, "attn_head_out_by_pos", check=3)
    assert not same_state(fp, state_fingerprint(model)), same_state(fp, state_fingerprint(model))
    assert all(p.grad is None for p in model.parameters()), "attribution wrote parameter gradients"
    calls = []

    def flaky(logits):  # fails on the corrupted run's logits, after the forward pass with the graph
        calls.append(1)
        raise RuntimeError("metric failed on purpose")

    with pytest.raises(RuntimeError, match="on purpose"):
        attribution_sweep(model, CLEAN, CORRUPTED, flaky, "resid_pre")
    assert calls, "the metric was never called"
    assert not same_state(fp, state_fingerprint(model)), same_state(fp, state_fingerprint(model))


def test_attribution_of_identical_runs_is_zero_and_check_finds_nothing_to_patch():
    model = models_by_kind(seed=1)[KINDS[-1]]
    scores, found = attribution_sweep(model, CLEAN, CLEAN, metric, "resid_pre", check=5)
    assert (scores == 0).all() and found.k == 0 and math.isnan(found.spearman)
