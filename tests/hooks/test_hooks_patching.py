"""The batched patching engine returns transformer_lens.patching's numbers, on both model kinds."""

import pytest
import torch
import transformer_lens.patching as tlp

from hooks.compat import tl_patching
from hooks.patching import SWEEPS, PatchingEngine, patch_sweep
from hooks.state import same_state, state_fingerprint
from hooks.testing import KINDS, models_by_kind

GEN = torch.Generator().manual_seed(0)
CLEAN = torch.randint(0, 24, (3, 7), generator=GEN)
CORRUPTED = CLEAN.clone()
CORRUPTED[:, 2] = (CLEAN[:, 2] + 1 + torch.randint(0, 22, (3,), generator=GEN)) % 24


def metric(logits):
    return (logits[:, -1, 3] - logits[:, -1, 5]).mean()


@pytest.fixture(scope="module")
def models():
    return models_by_kind(seed=6)


def _reference(model, sweep):
    _, cache = model.run_with_cache(CLEAN)
    if sweep == "resid_post":  # transformer_lens has no ready-made partial for it
        fn = lambda *a: tlp.generic_activation_patch(  # noqa: E731
            *a, patch_setter=tlp.layer_pos_patch_setter, activation_name="resid_post", index_axis_names=("layer", "pos")
        )
    else:
        fn = getattr(tlp, f"get_act_patch_{sweep}")
    return tl_patching(fn, model, CORRUPTED, cache, metric)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sweep", sorted(SWEEPS))
def test_sweep_matches_transformer_lens_patching(models, kind, sweep):
    model = models[kind]
    want = _reference(model, sweep)
    got = patch_sweep(model, CLEAN, CORRUPTED, metric, sweep, progress=False)
    assert got.shape == want.shape, f"shape {tuple(got.shape)} != transformer_lens {tuple(want.shape)}"
    diff = (got - want).abs().max().item()
    assert diff <= 1e-5, f"{sweep} on {kind}: max abs diff {diff:.2e} vs transformer_lens.patching"
    assert want.std() > 0, "degenerate test: every patch gives the same metric"


@pytest.mark.parametrize("budget", [1e-9, 1e-4, 10.0])
@pytest.mark.parametrize("kind", KINDS)
def test_chunking_and_shortcuts_do_not_change_the_numbers(models, kind, budget):
    model = models[kind]
    slow = PatchingEngine(
        model,
        CLEAN,
        CORRUPTED,
        metric,
        start_at_layer=False,
        skip_positions=False,
        memory_budget_gb=1e-9,
        progress=False,
    ).sweep("attn_head_out_by_pos")
    engine = PatchingEngine(model, CLEAN, CORRUPTED, metric, memory_budget_gb=budget, progress=False)
    assert engine.can_start and engine.can_skip, f"the {kind} model does not take the fast path"
    fast = engine.sweep("attn_head_out_by_pos")
    assert (slow - fast).abs().max() <= 1e-5


@pytest.mark.parametrize("kind", KINDS)
def test_sweep_on_a_layer_subset_and_per_example_metric(models, kind):
    model = models[kind]
    full = patch_sweep(model, CLEAN, CORRUPTED, metric, "resid_pre", progress=False)
    sub = patch_sweep(model, CLEAN, CORRUPTED, metric, "resid_pre", layers=[1], progress=False)
    assert torch.allclose(sub[0], full[1], atol=1e-6)
    per = patch_sweep(
        model, CLEAN, CORRUPTED, lambda lg: lg[:, -1, 3] - lg[:, -1, 5], "resid_pre", per_example=True, progress=False
    )
    assert per.shape == (2, 7, 3) and torch.allclose(per.mean(-1), full, atol=1e-5)


@pytest.mark.own_validation
@pytest.mark.parametrize("kind", KINDS)
def test_bad_patching_input_raises_before_any_work(models, kind):
    model = models[kind]
    fp = state_fingerprint(model)
    with pytest.raises(ValueError, match="same shape"):
        patch_sweep(model, CLEAN, CORRUPTED[:, :5], metric, progress=False)
    with pytest.raises(ValueError, match="unknown sweep"):
        patch_sweep(model, CLEAN, CORRUPTED, metric, "resid_pree", progress=False)
    with pytest.raises(ValueError, match="scalar"):
        patch_sweep(model, CLEAN, CORRUPTED, lambda lg: lg[:, -1, 0], progress=False)
    with pytest.raises(ValueError, match=r"\[batch\]"):
        patch_sweep(model, CLEAN, CORRUPTED, metric, per_example=True, progress=False)
    with pytest.raises(ValueError, match="layer"):
        patch_sweep(model, CLEAN, CORRUPTED, metric, layers=[5], progress=False)
    with pytest.raises(TypeError, match="integer tensor"):
        patch_sweep(model, CLEAN.float(), CORRUPTED, metric, progress=False)
    assert not same_state(fp, state_fingerprint(model))


def test_mlp_sweep_on_an_attention_only_model_is_refused():
    for model in models_by_kind(seed=0, attn_only=True, normalization_type=None).values():
        with pytest.raises(ValueError, match="does not fire"):
            patch_sweep(model, CLEAN, CORRUPTED, metric, "mlp_out", progress=False)


@pytest.mark.parametrize("kind", KINDS)
def test_metric_failing_mid_sweep_leaves_no_trace(models, kind):
    model = models[kind]
    model.train()
    fp = state_fingerprint(model)
    calls = []

    def flaky(logits):
        calls.append(1)
        if len(calls) == 5:
            raise RuntimeError("metric failed on purpose")
        return metric(logits)

    with pytest.raises(RuntimeError, match="on purpose"):
        patch_sweep(model, CLEAN, CORRUPTED, flaky, "attn_head_out_by_pos", progress=False)
    problems = same_state(fp, state_fingerprint(model))
    model.eval()
    assert not problems, f"state not restored: {problems}"


@pytest.fixture(scope="module")
def deep_models():
    return models_by_kind(seed=3, n_layers=3)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sweep", sorted(SWEEPS))
def test_one_pass_per_start_position_matches_transformer_lens(deep_models, kind, sweep):
    """With no per-pass overhead assumed, every start position gets its own pass, patches of all
    layers share it (joining at their layer), and local patches recompute one position of their layer."""
    deep_model = deep_models[kind]
    engine = PatchingEngine(deep_model, CLEAN, CORRUPTED, metric, progress=False)
    engine.PASS_OVERHEAD_FLOPS = 0.0
    if sweep.endswith("by_pos") or sweep in ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out"):
        from hooks.patching import _variants

        engine._caches([])
        passes = engine._plan(SWEEPS[sweep][0], _variants(deep_model, sweep, [0, 1, 2], CLEAN.shape[1]))
        assert len({p.start for p in passes}) == CLEAN.shape[1], "expected one pass per start position"
        assert any(len(p.ends) > 1 for p in passes), "expected passes shared by several layers"
    got = engine.sweep(sweep)
    want = _reference(deep_model, sweep)
    diff = (got - want).abs().max().item()
    assert diff <= 1e-5, f"{sweep}: max abs diff {diff:.2e} vs transformer_lens.patching"


@pytest.mark.parametrize("kind", KINDS)
def test_logit_positions_give_the_same_numbers_and_only_those_logits(models, kind):
    model = models[kind]
    shapes = []

    def last_only(logits):
        shapes.append(tuple(logits.shape))
        return (logits[:, -1, 3] - logits[:, -1, 5]).mean()

    for sweep in ("resid_pre", "attn_head_out_by_pos", "attn_head_v_all_pos"):
        full = patch_sweep(model, CLEAN, CORRUPTED, metric, sweep, progress=False)
        last = patch_sweep(model, CLEAN, CORRUPTED, last_only, sweep, logit_positions=[-1], progress=False)
        diff = (full - last).abs().max().item()
        assert diff <= 1e-5, f"{sweep}: logit_positions=[-1] changed the numbers by {diff:.2e}"
    assert shapes and all(s[1:] == (1, model.cfg.d_vocab) for s in shapes), f"metric saw logits of shapes {set(shapes)}"
    for bad in ([], [7], [-8], 3):
        with pytest.raises(ValueError, match="logit_positions"):
            patch_sweep(model, CLEAN, CORRUPTED, metric, logit_positions=bad, progress=False)


@pytest.mark.parametrize("kind", KINDS)
def test_metric_that_vmap_cannot_batch_is_called_per_variant(models, kind):
    model = models[kind]
    want = patch_sweep(model, CLEAN, CORRUPTED, metric, "attn_head_out_by_pos", progress=False)
    python_float = lambda lg: float((lg[:, -1, 3] - lg[:, -1, 5]).mean())  # noqa: E731
    got = patch_sweep(model, CLEAN, CORRUPTED, python_float, "attn_head_out_by_pos", progress=False)
    assert (got - want).abs().max() <= 1e-6, "the per-variant fallback gave different numbers"


@pytest.mark.parametrize("kind", KINDS)
def test_patches_that_change_nothing_are_answered_without_a_pass_and_the_same_numbers(models, kind):
    """Positions before the corruption (and every unchanged activation) give the corrupted metric;
    skipping their passes changes no number (the reference: the same engine without the skip)."""
    model = models[kind]
    for sweep in ("resid_pre", "attn_head_out_by_pos", "attn_head_pattern_all_pos"):
        engine = PatchingEngine(model, CLEAN, CORRUPTED, metric, progress=False)
        fast = engine.sweep(sweep)
        full = PatchingEngine(model, CLEAN, CORRUPTED, metric, progress=False, skip_unchanged=False).sweep(sweep)
        assert (fast - full).abs().max() <= 1e-6, f"{sweep}: skipping unchanged patches changed the numbers"
        if sweep == "resid_pre":  # clean and corrupted tokens agree at positions 0 and 1
            assert engine.n_unchanged >= 2 * model.cfg.n_layers, engine.n_unchanged
            assert (fast[:, :2] == engine.corrupted_metric()).all()


@pytest.mark.parametrize("kind", KINDS)
def test_patch_gives_the_sweep_numbers_at_the_given_indices(models, kind):
    model = models[kind]
    engine = PatchingEngine(model, CLEAN, CORRUPTED, metric, progress=False)
    full = engine.sweep("attn_head_v_by_pos")
    indices = torch.tensor([[1, 6, 2], [0, 3, 1], [1, 6, 2], [0, 0, 0]])
    got = engine.patch("attn_head_v_by_pos", indices)
    assert torch.allclose(got, full[tuple(indices.T)], atol=1e-6)
    with pytest.raises(ValueError, match="out of range"):
        engine.patch("attn_head_v_by_pos", torch.tensor([[2, 0, 0]]))


@pytest.mark.parametrize("kind", KINDS)
def test_unsorted_logit_positions_give_the_same_numbers(models, kind):
    model = models[kind]

    def two(logits):  # reads positions 5 and 2 of the full logits
        return (logits[:, 5, 3] - logits[:, 2, 5]).mean()

    full = patch_sweep(model, CLEAN, CORRUPTED, two, "resid_pre", progress=False)
    picked = patch_sweep(
        model, CLEAN, CORRUPTED, lambda lg: (lg[:, 0, 3] - lg[:, 1, 5]).mean(), "resid_pre", logit_positions=[5, 2]
    )
    assert (full - picked).abs().max() <= 1e-5
