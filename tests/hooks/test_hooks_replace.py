"""replace_weights / ov_circuit / qk_circuit on HookedTransformer and TransformerBridge."""

import pytest
import torch

from hooks.names import resolve_hook_name
from hooks.replace import OV, Head, ov_circuit, qk_circuit, replace_weights
from hooks.state import same_state, state_fingerprint
from hooks.testing import KINDS, models_by_kind
from hooks.weights import get_weight

TOK = torch.randint(0, 24, (3, 9), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def models():
    return models_by_kind(seed=1)


@pytest.fixture(scope="module")
def wide_models():
    """d_head == d_model, so an OV circuit of any rank fits in W_V W_O."""
    return models_by_kind(seed=2, d_model=16, d_head=16, n_heads=2, attn_only=True, normalization_type=None)


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", KINDS)
def test_full_weight_replacement_changes_output_and_restores_bit_for_bit(models, kind):
    model = models[kind]
    fp, base = state_fingerprint(model), model(TOK)
    with replace_weights(model, {"W_E": _randn(24, 32), "blocks.1.mlp.W_in": _randn(32, 128)}):
        assert torch.equal(get_weight(model, "W_E"), _randn(24, 32)), "W_E was not written"
        changed = model(TOK)
    assert not torch.allclose(changed, base), "replacing W_E and W_in did not change the output"
    assert not same_state(fp, state_fingerprint(model)), same_state(fp, state_fingerprint(model))
    assert torch.equal(model(TOK), base)


@pytest.mark.parametrize("kind", KINDS)
def test_head_entry_changes_only_that_head(models, kind):
    model = models[kind]
    name = resolve_hook_name(model, ("v", 0))
    _, clean = model.run_with_cache(TOK, names_filter=name)
    with replace_weights(model, {("blocks.0.attn.W_V", 2): _randn(32, 8), Head("blocks.0.attn.b_V", 2): _randn(8)}):
        _, new = model.run_with_cache(TOK, names_filter=name)
    diff = (new[name] - clean[name]).abs().amax(dim=(0, 1, 3))
    assert diff[2] > 1e-3, "head 2's values did not change"
    assert torch.all(diff[[0, 1, 3]] == 0), f"other heads changed: {diff}"


@pytest.mark.parametrize("kind", KINDS)
def test_ov_hook_method_with_the_current_circuit_leaves_the_output_unchanged(models, kind):
    model = models[kind]
    base = model(TOK)
    M = ov_circuit(model, 1, 3).AB
    with replace_weights(model, {OV(1, 3, "hook"): M}):
        out = model(TOK)
        assert torch.all(get_weight(model, "blocks.1.attn.W_O")[3] == 0), "hook method must zero W_O[head]"
    assert (out - base).abs().max() < 1e-5, f"re-inserting the head's own OV moved logits by {(out - base).abs().max()}"


@pytest.mark.parametrize("kind", KINDS)
def test_ov_full_rank_hook_method_matches_weights_method(wide_models, kind):
    model = wide_models[kind]
    M = _randn(16, 16, seed=5)
    assert torch.linalg.matrix_rank(M) == 16
    with replace_weights(model, {OV(1, 0, "weights"): M}):
        by_weights = model(TOK)
    with replace_weights(model, {OV(1, 0, "hook"): M}):
        by_hook = model(TOK)
    assert (by_weights - by_hook).abs().max() < 1e-5, "hook and weight OV replacements disagree"
    assert not torch.allclose(by_hook, model(TOK)), "the OV replacement had no effect"


@pytest.mark.parametrize("kind", KINDS)
def test_ov_full_rank_above_d_head_changes_output_exactly_like_low_rank_factor(models, kind):
    model = models[kind]
    low = _randn(32, 8, seed=1) @ _randn(8, 32, seed=2)  # rank 8 == d_head: both methods apply
    with replace_weights(model, {OV(0, 1, "factor"): low}):
        by_factor = model(TOK)
    with replace_weights(model, {OV(0, 1): low}):  # auto -> hook (d_head < d_model)
        by_hook = model(TOK)
    assert (by_factor - by_hook).abs().max() < 1e-4, "factorised and hooked OV replacements disagree"
    with pytest.raises(ValueError, match="rank"):
        with replace_weights(model, {OV(0, 1, "factor"): _randn(32, 32)}):
            pass


@pytest.mark.parametrize("kind", KINDS)
def test_ov_hook_survives_run_with_hooks_inside_the_context(models, kind):
    model = models[kind]
    M = _randn(32, 32, seed=7)
    with replace_weights(model, {OV(1, 0): M}):
        plain = model(TOK)
        with_hooks = model.run_with_hooks(TOK, fwd_hooks=[("blocks.0.hook_resid_pre", lambda t, hook: None)])
        again = model(TOK)
    assert torch.equal(plain, with_hooks) and torch.equal(plain, again), "run_with_hooks dropped the OV hook"


@pytest.mark.parametrize("kind", KINDS)
def test_replace_weights_restores_everything_when_the_body_raises(models, kind):
    model = models[kind]
    fp = state_fingerprint(model)
    with pytest.raises(ZeroDivisionError):
        with replace_weights(
            model, {OV(1, 1): _randn(32, 32), "W_U": _randn(32, 24), ("blocks.0.attn.W_Q", 0): _randn(32, 8)}
        ):
            model(TOK)
            _ = 1 / 0
    assert not same_state(fp, state_fingerprint(model)), same_state(fp, state_fingerprint(model))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "entry, error, match",
    [
        ({"W_E": torch.zeros(24, 31)}, ValueError, "shape"),
        ({"W_E": torch.zeros(24, 32, dtype=torch.float64)}, TypeError, "dtype"),
        ({"W_E": torch.zeros(24, 32, device="meta")}, ValueError, "meta"),
        ({"W_EE": torch.zeros(24, 32)}, ValueError, "unknown weight name .W_EE.*W_E"),
        ({("blocks.0.attn.W_V", 4): torch.zeros(32, 8)}, ValueError, "head"),
        ({("blocks.0.mlp.W_in", 0): torch.zeros(128)}, ValueError, "attention weight"),
        ({OV(2, 0): torch.zeros(32, 32)}, ValueError, "layer"),
        ({OV(0, 0): torch.zeros(32, 8)}, ValueError, "shape"),
        ({OV(0, 0, "weights"): torch.zeros(32, 32)}, ValueError, "d_head"),
        ({"W_E": [[0.0]]}, TypeError, "Tensor"),
    ],
)
def test_bad_replacement_raises_before_anything_changes(models, kind, entry, error, match):
    model = models[kind]
    good = {"W_U": torch.zeros(32, 24)}  # a valid entry first: it must not be applied either
    fp = state_fingerprint(model)
    with pytest.raises(error, match=match):
        with replace_weights(model, {**good, **entry}):
            pytest.fail("the body ran despite a bad entry")
    assert not same_state(fp, state_fingerprint(model))


@pytest.mark.parametrize("kind", KINDS)
def test_circuit_readers_match_transformer_lens_stacked_properties(models, kind):
    model = models[kind]
    for layer, head in [(0, 0), (1, 3)]:
        ov, qk = ov_circuit(model, layer, head), qk_circuit(model, layer, head)
        assert torch.allclose(ov.AB, model.OV[layer, head].AB, atol=1e-6), "OV circuit differs from model.OV"
        assert torch.allclose(qk.AB, model.QK[layer, head].AB, atol=1e-6), "QK circuit differs from model.QK"
    with pytest.raises(ValueError, match="head"):
        ov_circuit(model, 0, 4)
    with pytest.raises(ValueError, match="layer"):
        qk_circuit(model, -1, 0)
