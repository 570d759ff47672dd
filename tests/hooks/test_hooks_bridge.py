"""Bridges whose attention hooks feed the output, and tools that refuse a hook that does not.

TransformerLens's ``NativeAttention`` (the attention of every ``boot_native`` bridge) computes
``o(pattern @ v)`` itself; ``AttentionBridge.forward`` fires ``hook_pattern`` / ``hook_attn_scores``
afterwards. 3.9: both hooks are inert. 4.3: ``hook_pattern`` is live (PR #1740), ``hook_attn_scores``
is still inert. ``hooks.bridge.boot_bridge`` (used by every bridge the project builds) makes both live.
"""

import pytest
import torch
import transformer_lens.patching as tlp

from hooks import OV, Ablation, ablation_sweep, patch_sweep, replace_weights, run_with_ablations
from hooks.bridge import boot_bridge, has_live_attention, make_attention_hooks_live_, unembed_bias_
from hooks.compat import has_hooked_transformer, tl_patching, tl_version
from hooks.names import active_hook_names, check_hooks_editable
from hooks.testing import KINDS, models_by_kind, random_weights, tiny_config
from hooks.weights import get_weight, set_weight_, set_weights_
from mechmem.core.config import ModelConfig
from mechmem.core.models import build_bridge, build_model

TOK = torch.randint(0, 24, (3, 7), generator=torch.Generator().manual_seed(0))
PATTERN, SCORES = "blocks.0.attn.hook_pattern", "blocks.0.attn.hook_attn_scores"


def _raw_bridge(seed: int = 0):
    """A plain ``TransformerBridge.boot_native`` model (TransformerLens's own attention) with the
    weights of ``models_by_kind(seed)``."""
    from transformer_lens.model_bridge import TransformerBridge

    cfg = tiny_config()
    bridge = unembed_bias_(TransformerBridge.boot_native({**cfg, "init_weights": False}, device="cpu"))
    set_weights_(bridge, random_weights(cfg, seed))
    return bridge.eval()


#: hooks that TransformerLens's own native attention fires after its output exists
INERT_ON_RAW_BRIDGE = {SCORES} | ({PATTERN} if tl_version()[0] < 4 else set())


def _zeroed(model, name):
    return model.run_with_hooks(TOK, fwd_hooks=[(name, lambda a, hook: torch.zeros_like(a))])


@pytest.fixture(scope="module")
def models():
    return models_by_kind(seed=5)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", [PATTERN, SCORES])
def test_editing_the_pattern_or_the_scores_changes_the_logits(models, kind, name):
    model = models[kind]
    with torch.no_grad():
        moved = (_zeroed(model, name) - model(TOK)).abs().max().item()
    assert moved > 1e-2, f"zeroing {name} moved the {kind} logits by only {moved}"


@pytest.mark.parametrize("builder", [build_model, build_bridge], ids=["build_model", "build_bridge"])
def test_built_models_have_live_pattern_hooks(builder):
    model = builder(ModelConfig(n_layers=2, n_heads=2, d_model=16, d_vocab=11, n_ctx=8, seed=1)).eval()
    tokens = TOK % 11
    with torch.no_grad():
        for name in (PATTERN, SCORES):
            zeroed = model.run_with_hooks(tokens, fwd_hooks=[(name, lambda a, hook: a * 0.0)])
            moved = (zeroed - model(tokens)).abs().max()
            assert moved > 1e-3, f"{name} is inert on {type(model).__name__}"


def test_live_attention_gives_the_native_logits_and_the_hooked_transformer_activations(models):
    raw = _raw_bridge(seed=5)
    live = models["bridge"]
    assert has_live_attention(live) and not has_live_attention(raw)
    with torch.no_grad():
        diff = (raw(TOK) - live(TOK)).abs().max().item()
        assert diff < 1e-5, f"live attention changed the logits by {diff}"
        if has_hooked_transformer():
            _, want = models["hooked"].run_with_cache(TOK)
            _, got = live.run_with_cache(TOK)
            for name in (PATTERN, SCORES):
                finite = torch.isfinite(want[name])
                assert torch.equal(finite, torch.isfinite(got[name])), f"{name}: masked entries differ"
                err = (want[name][finite] - got[name][finite]).abs().max().item()
                assert err < 1e-5, f"{name} on the bridge differs from HookedTransformer's by {err}"


def test_pattern_sweep_on_a_bridge_equals_transformer_lens_patching(models):
    bridge = models["bridge"]
    clean, corrupted = TOK, TOK.flip(0)
    metric = lambda logits: logits[:, -1, 3].mean()  # noqa: E731
    _, cache = bridge.run_with_cache(clean)
    want = tl_patching(tlp.get_act_patch_attn_head_pattern_all_pos, bridge, corrupted, cache, metric)
    got = patch_sweep(bridge, clean, corrupted, metric, "attn_head_pattern_all_pos", progress=False)
    assert want.std() > 0, "degenerate test: every patch gives the same metric"
    assert (got - want).abs().max() <= 1e-5


@pytest.mark.filterwarnings("ignore:A hook on")  # 4.3 warns that the edit is discarded: the point of the test
@pytest.mark.parametrize("name", sorted(INERT_ON_RAW_BRIDGE))
def test_every_tool_refuses_a_hook_that_does_not_feed_the_output(name):
    raw = _raw_bridge()
    with torch.no_grad():
        assert torch.equal(_zeroed(raw, name), raw(TOK)), f"{name} is not inert on a raw bridge: fix the test"
    with pytest.raises(ValueError, match=rf"{name} is computed but not used.*build_bridge"):
        run_with_ablations(raw, TOK, [Ablation(name)])
    if name == PATTERN:
        with pytest.raises(ValueError, match="computed but not used"):
            ablation_sweep(raw, TOK, lambda lg: lg[:, -1, 0].mean(), components=["pattern"], progress=False)
        with pytest.raises(ValueError, match=rf"{name} is computed but not used"):
            patch_sweep(
                raw, TOK, TOK.flip(0), lambda lg: lg[:, -1, 0].mean(), "attn_head_pattern_all_pos", progress=False
            )
    assert raw.blocks[0].attn.hook_pattern.fwd_hooks == [], "a refused tool left a hook behind"
    make_attention_hooks_live_(raw)  # the checks' cached answers follow the swap of the attention
    with torch.no_grad():
        moved = (run_with_ablations(raw, TOK, [Ablation(name)]) - raw(TOK)).abs().max().item()
    assert moved > 1e-3, f"{name} was refused, then made live, but ablating it still changes nothing"


@pytest.mark.parametrize("kind", KINDS)
def test_a_model_whose_output_ignores_everything_is_refused_with_the_reason(kind):
    model = models_by_kind(seed=1)[kind]
    set_weight_(model, "W_U", torch.zeros_like(get_weight(model, "W_U")))  # logits = b_U, constant
    metric = lambda lg: lg[:, -1, 0].mean()  # noqa: E731
    with pytest.raises(ValueError, match=r"blocks\.0\.hook_resid_pre does not affect this model's output"):
        patch_sweep(model, TOK, TOK.flip(0), metric, "resid_pre", progress=False)
    with pytest.raises(ValueError, match="does not affect"):
        run_with_ablations(model, TOK, [Ablation(("z", 0))])
    with pytest.raises(ValueError, match=r"blocks\.0\.hook_attn_out does not affect"):
        with replace_weights(model, {OV(0, 1, method="hook"): torch.zeros(32, 32)}):
            pass


@pytest.mark.parametrize("kind", KINDS)
def test_keys_of_a_one_position_model_are_refused(kind):
    """With one position the softmax is over one key: hook_k cannot change anything."""
    model = models_by_kind(seed=1, n_ctx=1)[kind]
    with pytest.raises(ValueError, match=r"blocks\.0\.attn\.hook_k does not affect .* 1 token"):
        run_with_ablations(model, TOK[:, :1], [Ablation(("k", 0))])
    run_with_ablations(model, TOK[:, :1], [Ablation(("v", 0))])  # values still matter


def test_the_check_runs_once_per_model_and_hook(models):
    model = models[KINDS[0]]
    active_hook_names(model)  # its own one-token pass, cached too
    calls = []
    handle = model.blocks[0].register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        check_hooks_editable(model, ["blocks.1.attn.hook_v"])
        first = len(calls)
        check_hooks_editable(model, ["blocks.1.attn.hook_v"])
        run_with_ablations(model, TOK, [Ablation(("v", 1))])
    finally:
        handle.remove()
    assert first == 2, f"the first check ran {first} forward passes, expected 2 (baseline and perturbed)"
    assert len(calls) == first + 1, "the cached check ran again"


def test_boot_bridge_leaves_the_global_rng_alone():
    torch.manual_seed(11)
    want = torch.rand(3)
    torch.manual_seed(11)
    boot_bridge(tiny_config())
    assert torch.equal(torch.rand(3), want)
