"""The fast path computes the model's own forward: same logits and gradients as ``model(tokens)``
on every model shape the papers use, on both model kinds; anything it cannot apply falls back to
``model(tokens)`` (logged once); training through it is deterministic at 1 and 2 threads."""

from __future__ import annotations

import gc
import logging
import weakref

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hooks.bridge import boot_bridge
from hooks.compat import has_hooked_transformer
from hooks.weights import get_weight, is_bridge, set_weight_, slot, weight_parameters
from mechmem.core import fastpath
from mechmem.core.config import ModelConfig, TrainConfig
from mechmem.core.fastpath import OBSERVE, SUBTRACT_BLOCK_INPUT, declare_effect
from mechmem.core.models import build_bridge, build_model

ATOL = 1e-5

CONFIGS = {
    "attn_only": ModelConfig(n_layers=2, n_heads=1, d_model=32, d_vocab=13, n_ctx=12),
    "mlp_ln_heads_bias": ModelConfig(
        n_layers=2, n_heads=4, d_model=32, d_vocab=13, n_ctx=12, attn_only=False, normalization="LN", use_bias=True
    ),
    "lnpre_gelu_no_pos_vocab_out": ModelConfig(
        n_layers=1,
        n_heads=2,
        d_model=16,
        d_head=12,
        d_vocab=13,
        n_ctx=12,
        d_vocab_out=5,
        attn_only=False,
        normalization="LNPre",
        act_fn="gelu_new",
        positional=False,
    ),
    "identity_WQ_frozen": ModelConfig(
        n_layers=2,
        n_heads=2,
        d_model=16,
        d_vocab=13,
        n_ctx=12,
        identity_W_Q=True,
        freeze=("W_E", "W_pos", "blocks.0.attn.W_V"),
        attn_only=False,
        act_fn="silu",
    ),
    "ln_gelu_bias": ModelConfig(
        n_layers=1,
        n_heads=2,
        d_model=16,
        d_vocab=13,
        n_ctx=12,
        attn_only=False,
        normalization="LN",
        act_fn="gelu",
        use_bias=True,
        d_mlp=24,
    ),
}
BUILDERS = {"hooked": build_model, "bridge": build_bridge}


def _randomise_biases(model: nn.Module, seed: int = 1) -> None:
    """Non-zero biases and LayerNorm weights, so that every term of the forward is exercised."""
    g = torch.Generator().manual_seed(seed)
    for name, p in [(n, weight_parameters(model, n)) for n in fastpath.plan_for(model).refs]:
        short = name.rsplit(".", 1)[-1]
        if p.requires_grad and (short.startswith("b_") or short in ("w", "b")):
            set_weight_(
                model, name, get_weight(model, name) + 0.1 * torch.randn(get_weight(model, name).shape, generator=g)
            )


def assert_same_function(model: nn.Module, tokens: torch.Tensor, fast_used: bool = True) -> None:
    """Logits within ATOL of ``model(tokens)``, and the gradients of a cross-entropy loss too."""
    assert (fastpath.unsupported_reason(model) is None) == fast_used, fastpath.unsupported_reason(model)
    params = [p for p in model.parameters() if p.requires_grad]
    targets = torch.randint(model.cfg.d_vocab_out, tokens.shape, generator=torch.Generator().manual_seed(2))
    results = []
    for forward in (model, lambda t: fastpath.logits(model, t)):
        out = forward(tokens)
        loss = F.cross_entropy(out.flatten(0, 1), targets.flatten())
        results.append((out.detach(), torch.autograd.grad(loss, params)))
    (ref, ref_grads), (fast, fast_grads) = results
    diff = (ref - fast).abs().max().item()
    assert diff <= ATOL, f"logits differ from model(tokens) by {diff:.2e}"
    for p, g_ref, g_fast in zip(params, ref_grads, fast_grads):
        gdiff = (g_ref - g_fast).abs().max().item()
        assert gdiff <= ATOL, f"gradient of a {tuple(p.shape)} parameter differs by {gdiff:.2e}"
    assert_same_last_position(model, tokens, params, targets[:, -1])


def assert_same_last_position(model: nn.Module, tokens: torch.Tensor, params, targets: torch.Tensor) -> None:
    """``fastpath.last_logits`` (the read-out plan) equals ``model(tokens)[:, -1]``, gradients included."""
    results = []
    for forward in (lambda t: model(t)[:, -1], lambda t: fastpath.last_logits(model, t)):
        out = forward(tokens)
        results.append((out.detach(), torch.autograd.grad(F.cross_entropy(out, targets), params)))
    (ref, ref_grads), (fast, fast_grads) = results
    assert fast.shape == ref.shape, (
        f"last_logits has shape {tuple(fast.shape)}, model(tokens)[:, -1] {tuple(ref.shape)}"
    )
    diff = (ref - fast).abs().max().item()
    assert diff <= ATOL, f"last-position logits differ from model(tokens)[:, -1] by {diff:.2e}"
    for p, g_ref, g_fast in zip(params, ref_grads, fast_grads):
        gdiff = (g_ref - g_fast).abs().max().item()
        assert gdiff <= ATOL, f"last-position gradient of a {tuple(p.shape)} parameter differs by {gdiff:.2e}"


def _tokens(model: nn.Module, batch: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randint(model.cfg.d_vocab, (batch, model.cfg.n_ctx), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", BUILDERS)
@pytest.mark.parametrize("shape", CONFIGS)
def test_same_logits_and_gradients_as_the_models_forward(kind, shape):
    model = BUILDERS[kind](CONFIGS[shape])
    _randomise_biases(model)
    assert_same_function(model, _tokens(model))
    assert_same_function(model, _tokens(model)[:, :5])  # shorter than n_ctx


def test_frozen_weights_get_no_gradient_and_skipped_weights_are_exact():
    model = build_model(CONFIGS["identity_WQ_frozen"])
    weights = fastpath.plan_for(model).weights()
    assert weights.blocks[0].W_Q is None, "a frozen identity W_Q should be skipped (x @ I = x)"
    assert weights.blocks[0].b_Q is None, "a frozen zero bias should be skipped"
    fastpath.logits(model, _tokens(model)).sum().backward()
    for frozen in ("W_E", "W_pos", "blocks.0.attn.W_V", "blocks.0.attn.W_Q"):
        assert weight_parameters(model, frozen).grad is None, f"frozen {frozen} got a gradient"
    assert weight_parameters(model, "blocks.0.attn.W_K").grad is not None


def test_in_place_edits_of_skipped_weights_are_seen():
    model = build_model(CONFIGS["identity_WQ_frozen"])
    tokens = _tokens(model)
    fastpath.logits(model, tokens)
    set_weight_(model, "blocks.1.attn.W_Q", 0.5 * get_weight(model, "blocks.1.attn.W_Q"))
    set_weight_(model, "blocks.0.attn.b_V", torch.full_like(get_weight(model, "blocks.0.attn.b_V"), 0.3))
    weights = fastpath.plan_for(model).weights()
    assert weights.blocks[1].W_Q is not None and weights.blocks[0].b_V is not None
    assert_same_function(model, tokens)


# --- the papers' models ----------------------------------------------------------------------------------


def test_birth_models():
    from mechmem.papers.birth.model import build_full, build_simplified

    for model in (
        build_simplified(d_model=32, n_ctx=16),
        build_simplified(d_model=32, n_ctx=16, final_ffn=True),
        build_full(d_model=32, n_heads=4, n_ctx=16),
        build_full(d_model=32, n_heads=4, n_layers=1, n_ctx=16),
    ):
        assert_same_function(model, _tokens(model))


def test_factual_model_with_its_permanent_hooks():
    from mechmem.papers.factual.model import build_factual_model
    from mechmem.papers.factual.task import FactualRecallTask

    task = FactualRecallTask(S=8, R=4, D=4)
    model = build_factual_model(task, d=16, H=4, d_h=4, m=16)
    assert fastpath.plan_for(model).effects == {(0, "resid_mid"): (SUBTRACT_BLOCK_INPUT,)}
    assert_same_function(model, task.sample(8, torch.Generator().manual_seed(0)).tokens)


def test_lca_model_tied_and_untied_with_its_residual_hook():
    """The tie (a parametrization of W_U) is read as the model reads it: gradients reach W_E."""
    from mechmem.papers.lca.model import LCAModelSpec, build_lca_model, untie_
    from mechmem.papers.lca.task import LatentConceptTask

    task = LatentConceptTask(m=4, context_len=16, d_model=8)
    model = build_lca_model(task, LCAModelSpec(d_model=8))
    tokens = torch.randint(task.d_vocab, (4, model.cfg.n_ctx), generator=torch.Generator().manual_seed(0))
    assert fastpath.plan_for(model).refs["W_U"].tied
    assert_same_function(model, tokens)
    untied = untie_(model)
    assert fastpath.plan_for(untied).effects == {(0, "resid_post"): (SUBTRACT_BLOCK_INPUT,)}
    assert_same_function(untied, tokens)


# --- declared hooks on both kinds ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", BUILDERS)
@pytest.mark.parametrize("point", ["hook_resid_mid", "hook_resid_post"])
@pytest.mark.parametrize("in_place", [True, False])
def test_subtract_block_input_at_each_point(kind, point, in_place):
    """On a bridge ``hook_resid_mid`` is an alias of ``ln2.hook_in``, whose tensor is the residual stream:
    only an in-place subtraction changes the residual; a returned new tensor changes the MLP input only.
    The fast path applies the declared (residual) effect, so the second case must fall back."""
    model = BUILDERS[kind](CONFIGS["mlp_ln_heads_bias"])
    store = {}
    keep = declare_effect(lambda x, hook: store.__setitem__("x", x), OBSERVE)
    drop = declare_effect(
        (lambda x, hook: x.sub_(store["x"])) if in_place else (lambda x, hook: x - store["x"]), SUBTRACT_BLOCK_INPUT
    )
    model.add_hook("blocks.1.hook_resid_pre", keep, is_permanent=True)
    model.add_hook(f"blocks.1.{point}", drop, is_permanent=True)
    mlp_input_only = is_bridge(model) and point == "hook_resid_mid" and not in_place
    if mlp_input_only:
        assert "differs from model(tokens)" in fastpath.unsupported_reason(model)
    else:
        assert fastpath.plan_for(model).effects == {(1, point.removeprefix("hook_")): (SUBTRACT_BLOCK_INPUT,)}
    assert_same_function(model, _tokens(model), fast_used=not mlp_input_only)


def test_a_hook_that_does_not_do_what_it_declares_falls_back():
    model = build_model(CONFIGS["attn_only"])
    model.add_hook("blocks.0.hook_resid_post", declare_effect(lambda x, hook: 2 * x, OBSERVE), is_permanent=True)
    assert "differs from model(tokens)" in fastpath.unsupported_reason(model)
    assert_same_function(model, _tokens(model), fast_used=False)


def test_unknown_temporary_and_backward_hooks_fall_back_and_are_logged_once(caplog):
    """An undeclared permanent hook is a warning; a temporary one (an intervention) is logged at INFO."""
    model = build_model(CONFIGS["attn_only"])
    tokens = _tokens(model)

    def double(x, hook):
        return 2 * x

    cases = [
        ({"is_permanent": True}, logging.WARNING),
        ({"is_permanent": False}, logging.INFO),
        ({"is_permanent": True, "dir": "bwd", "hook": declare_effect(lambda g, hook: None, OBSERVE)}, logging.WARNING),
    ]
    for case, level in cases:
        hook = case.pop("hook", double)
        model.add_hook("blocks.0.hook_resid_post", hook, **case)
        reason = fastpath.unsupported_reason(model)
        assert reason is not None
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="mechmem.core.fastpath"):
            for _ in range(3):
                out = fastpath.logits(model, tokens)
        assert torch.equal(out, model(tokens)), "the fallback must be the model's own hooked forward"
        assert [r.levelno for r in caplog.records if reason in r.getMessage()] == [level], caplog.records
        model.reset_hooks(including_permanent=True)
        assert fastpath.unsupported_reason(model) is None, "removing the hook must re-enable the fast path"


def test_declared_hook_in_the_wrong_place_falls_back():
    model = build_model(CONFIGS["attn_only"])
    model.add_hook(
        "blocks.0.hook_resid_pre", declare_effect(lambda x, hook: x, SUBTRACT_BLOCK_INPUT), is_permanent=True
    )
    assert "only supported" in fastpath.unsupported_reason(model)


@pytest.mark.parametrize("kind", BUILDERS)
def test_raw_torch_hooks_and_overridden_forward_fall_back(kind):
    model = BUILDERS[kind](CONFIGS["attn_only"])
    point = model.blocks[0].hook_out if is_bridge(model) else model.blocks[0].hook_resid_post
    handle = point.register_forward_hook(lambda mod, inp, out: out * 2)
    assert "does not declare its effect" in fastpath.unsupported_reason(model)
    assert torch.equal(fastpath.logits(model, _tokens(model)), model(_tokens(model)))
    handle.remove()
    assert fastpath.unsupported_reason(model) is None
    model.forward = lambda tokens: torch.zeros(())
    assert "overridden forward" in fastpath.unsupported_reason(model)
    del model.forward
    assert fastpath.unsupported_reason(model) is None


UNSUPPORTED = (
    ({"positional_embedding_type": "rotary"}, "positional_embedding_type", "standard positions"),
    ({"attn_scores_soft_cap": 5.0}, "attn_scores_soft_cap", "soft cap"),
    ({"normalization_type": "RMS"}, "normalization_type", "RMSNorm"),
    ({"attention_dir": "bidirectional"}, "attention_dir", "causal"),
)


@pytest.mark.parametrize("kind", BUILDERS)
@pytest.mark.parametrize("extra, hooked_reason, bridge_reason", UNSUPPORTED)
def test_unsupported_architectures_fall_back(kind, extra, hooked_reason, bridge_reason):
    base = {
        "n_layers": 1,
        "d_model": 16,
        "d_head": 8,
        "n_heads": 2,
        "n_ctx": 8,
        "d_vocab": 10,
        "act_fn": "relu",
        "attn_only": False,
    }
    if kind == "bridge":
        model, reason = boot_bridge({**base, **extra}), bridge_reason
    elif has_hooked_transformer():
        from transformer_lens import HookedTransformer

        model, reason = HookedTransformer({**base, **extra, "device": "cpu"}), hooked_reason
    else:
        pytest.skip("no HookedTransformer in TransformerLens 4.x")
    assert reason in fastpath.unsupported_reason(model)
    tokens = torch.randint(10, (2, 8))
    assert torch.equal(fastpath.logits(model, tokens), model(tokens))


def test_other_modules_fall_back():
    assert "neither a HookedTransformer nor a TransformerBridge" in fastpath.unsupported_reason(nn.Linear(2, 2))


def test_replaced_parameters_are_read():
    model = build_model(CONFIGS["attn_only"])
    tokens = _tokens(model)
    fastpath.logits(model, tokens)
    s = slot(model, "W_U")
    setattr(s.owner, s.attr, nn.Parameter(torch.randn_like(s.parameter)))
    assert_same_function(model, tokens)


def test_disabled_and_odd_inputs_use_the_models_forward():
    model = build_model(CONFIGS["attn_only"])
    tokens = _tokens(model)
    with fastpath.fast_path_enabled(False):
        assert torch.equal(fastpath.logits(model, tokens), model(tokens))
    assert torch.equal(fastpath.logits(model, tokens[0]), model(tokens[0]))  # 1-D tokens: the model's forward
    with pytest.raises(TypeError, match="enabled"), fastpath.fast_path_enabled(1):
        pass
    with pytest.raises(TypeError, match="HookEffect"):
        declare_effect(lambda x, hook: x, "observe")


@pytest.mark.parametrize("kind", BUILDERS)
def test_plans_do_not_keep_models_alive(kind):
    model = BUILDERS[kind](CONFIGS["mlp_ln_heads_bias"])
    fastpath.logits(model, _tokens(model))
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None


# --- training --------------------------------------------------------------------------------------------


def _train_params(threads: int, fast: bool, steps: int = 3, optimizer=torch.optim.Adam) -> torch.Tensor:
    cfg = ModelConfig(
        n_layers=2, n_heads=4, d_model=64, d_vocab=29, n_ctx=64, attn_only=False, normalization="LN", use_bias=True
    )
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = build_model(cfg)
        opt = optimizer(model.parameters(), lr=1e-2)
        g = torch.Generator().manual_seed(0)
        with fastpath.fast_path_enabled(fast):
            for _ in range(steps):
                tokens = torch.randint(cfg.d_vocab, (32, cfg.n_ctx + 1), generator=g)
                out = fastpath.logits(model, tokens[:, :-1])
                loss = F.cross_entropy(out.flatten(0, 1), tokens[:, 1:].flatten())
                opt.zero_grad()
                loss.backward()
                opt.step()
    finally:
        torch.set_num_threads(previous)
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_training_is_bit_identical_at_one_and_two_threads():
    runs = {threads: [_train_params(threads, fast=True) for _ in range(2)] for threads in (1, 2)}
    assert torch.equal(runs[1][0], runs[1][1]), "not deterministic at 1 thread"
    assert torch.equal(runs[2][0], runs[2][1]), "not deterministic at 2 threads"
    assert torch.equal(runs[1][0], runs[2][0]), "1 and 2 threads give different weights"


def test_training_matches_the_models_forward():
    """SGD: the same updates up to float rounding (Adam would magnify the rounding of near-zero gradients)."""
    fast, plain = (_train_params(1, fast=f, optimizer=torch.optim.SGD) for f in (True, False))
    assert (fast - plain).abs().max().item() < 1e-6


def test_train_and_evaluate_use_the_fast_path(tiny_task, tiny_model_config, fast_train_config, monkeypatch):
    from mechmem.core import training
    from mechmem.core.fastpath import forward as forward_module

    inference_mode = []

    def recording(weights, tokens):
        inference_mode.append(torch.is_inference_mode_enabled())
        return fused(weights, tokens)

    fused = forward_module.fused_logits
    monkeypatch.setattr(forward_module, "fused_logits", recording)
    model = build_model(tiny_model_config)
    training.train(model, tiny_task, fast_train_config)
    assert False in inference_mode, "training steps did not use the fused forward"
    assert True in inference_mode, "evaluation did not use the fused forward under inference_mode"
    batch = tiny_task.sample(16, torch.Generator().manual_seed(5))
    with fastpath.fast_path_enabled(False):
        plain = training.evaluate(model, tiny_task, batch)
    fast = training.evaluate(model, tiny_task, batch)
    assert plain.keys() == fast.keys()
    assert all(abs(plain[k] - fast[k]) < 1e-5 for k in plain), (plain, fast)


def test_a_task_that_scores_the_last_position_trains_through_the_read_out(monkeypatch):
    """``Task.last_position_loss``: the training steps and evaluations call ``last_logits`` (the same loss as the
    masked one), and a batch whose mask scores other positions is refused."""
    from mechmem.core import training
    from mechmem.core.fastpath import forward as forward_module
    from mechmem.papers.lca.model import LCAModelSpec, build_lca_model
    from mechmem.papers.lca.task import LatentConceptTask
    from mechmem.tasks.base import Batch

    task = LatentConceptTask(m=4, context_len=16, epsilon=0.2, d_model=8)
    model = build_lca_model(task, LCAModelSpec(d_model=8))
    batch = task.sample(32, torch.Generator().manual_seed(0))
    masked = training.masked_loss(fastpath.logits(model, batch.tokens), batch)
    assert torch.allclose(training.batch_loss(model, task, batch), masked, atol=1e-6)
    calls = []  # whether each read-out call ran under inference mode (an evaluation) or not (a training step)
    fused = forward_module.fused_last_logits
    monkeypatch.setattr(
        forward_module,
        "fused_last_logits",
        lambda w, t: calls.append(torch.is_inference_mode_enabled()) or fused(w, t),
    )
    cfg = TrainConfig(
        steps=3, batch_size=8, lr=1e-2, optimizer="adam", eval_every=3, eval_batch_size=16, progress=False
    )
    training.train(model, task, cfg)
    assert calls.count(False) == 3, f"the 3 training steps made {calls.count(False)} read-out calls"
    assert calls.count(True) == 2, f"the 2 evaluations (start, end) made {calls.count(True)} read-out calls"
    wrong = Batch(batch.tokens, batch.targets, torch.ones_like(batch.mask), batch.labels)
    with pytest.raises(ValueError, match="last_position_loss"):
        training.batch_loss(model, task, wrong)


def test_bridge_with_a_modified_causal_mask_falls_back():
    from hooks.weights import _unwrap

    model = build_bridge(CONFIGS["attn_only"])
    attn = _unwrap(_unwrap(model.original_model.layers[0]).attn)
    with torch.no_grad():
        attn.causal_mask[3, 1] = True  # position 3 may no longer see position 1
    assert "mask" in fastpath.unsupported_reason(model)
    tokens = _tokens(model)
    assert torch.equal(fastpath.logits(model, tokens), model(tokens))


@pytest.mark.parametrize("kind", BUILDERS)
def test_runs_under_deterministic_algorithms(kind):
    """``train`` may run inside ``torch.use_deterministic_algorithms(True)``: no op of the path may refuse."""
    model = BUILDERS[kind](CONFIGS["mlp_ln_heads_bias"])
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        fastpath.logits(model, _tokens(model)).sum().backward()
    finally:
        torch.use_deterministic_algorithms(previous)
    assert fastpath.unsupported_reason(model) is None
