"""Model builders: shapes, the paper-specific initialisation, freezing, seeding, and the two
model kinds (``HookedTransformer`` via ``build_model``, ``TransformerBridge.boot_native`` via
``build_bridge``) computing the same function from the same config.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from hooks.weights import get_weight, weight_names, weight_parameters
from mechmem.core.config import ModelConfig
from mechmem.core.models import build_bridge, build_model

#: Configs covering the structural options: multi-layer/multi-head, MLPs, LayerNorm, biases,
#: a separate output vocabulary and an explicit d_head.
VARIANTS = {
    "attn_only": dict(n_layers=1, n_heads=1, d_model=16, d_vocab=11, n_ctx=8),
    "two_layers_mlp_ln": dict(
        n_layers=2,
        n_heads=2,
        d_model=16,
        d_vocab=11,
        n_ctx=8,
        attn_only=False,
        normalization="LN",
        use_bias=True,
        act_fn="gelu",
    ),
    "lnpre_dhead_out": dict(
        n_layers=2,
        n_heads=4,
        d_model=16,
        d_head=2,
        d_vocab=11,
        d_vocab_out=5,
        n_ctx=6,
        attn_only=False,
        d_mlp=24,
        normalization="LNPre",
    ),
}


def _tokens(cfg: ModelConfig, batch: int = 3) -> torch.Tensor:
    return torch.randint(cfg.d_vocab, (batch, cfg.n_ctx), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_built_model_has_the_configured_sizes_and_logit_shape(variant):
    """model.cfg holds the resolved sizes, weights have TransformerLens shapes, logits [b, pos, d_out]."""
    cfg = ModelConfig(**VARIANTS[variant])
    model = build_model(cfg)
    tl = model.cfg
    for field, want in [
        ("n_layers", cfg.n_layers),
        ("n_heads", cfg.n_heads),
        ("d_model", cfg.d_model),
        ("d_head", cfg.head_dim),
        ("d_vocab", cfg.d_vocab),
        ("d_vocab_out", cfg.d_out),
        ("n_ctx", cfg.n_ctx),
        ("attn_only", cfg.attn_only),
        ("normalization_type", cfg.normalization),
    ]:
        assert getattr(tl, field) == want, f"model.cfg.{field} = {getattr(tl, field)!r}, expected {want!r}"
    shapes = {
        "W_E": (cfg.d_vocab, cfg.d_model),
        "W_pos": (cfg.n_ctx, cfg.d_model),
        "W_U": (cfg.d_model, cfg.d_out),
        "blocks.0.attn.W_V": (cfg.n_heads, cfg.d_model, cfg.head_dim),
        "blocks.0.attn.W_O": (cfg.n_heads, cfg.head_dim, cfg.d_model),
    }
    if not cfg.attn_only:
        d_mlp = cfg.d_mlp or 4 * cfg.d_model
        shapes["blocks.0.mlp.W_in"] = (cfg.d_model, d_mlp)
        assert tl.d_mlp == d_mlp, f"d_mlp = {tl.d_mlp}, expected {d_mlp}"
    for name, shape in shapes.items():
        got = tuple(get_weight(model, name).shape)
        assert got == shape, f"{name} has shape {got}, expected {shape}"
    logits = model(_tokens(cfg))
    assert logits.shape == (3, cfg.n_ctx, cfg.d_out), f"logits shape {tuple(logits.shape)}"


def test_attn_only_model_has_no_mlp_weights():
    model = build_model(ModelConfig(**VARIANTS["attn_only"]))
    assert not any(".mlp." in n for n in weight_names(model)), f"attn-only model has MLP weights: {weight_names(model)}"


@pytest.mark.parametrize("n_heads", [1, 4])
def test_identity_w_q_is_the_identity_across_heads_and_frozen(n_heads):
    """With identity_W_Q, head h reads coordinates h*d_head..(h+1)*d_head: together, W_Q = I."""
    cfg = ModelConfig(n_layers=2, n_heads=n_heads, d_model=16, d_vocab=11, n_ctx=8, identity_W_Q=True)
    for model in (build_model(cfg), build_bridge(cfg)):
        for layer in range(cfg.n_layers):
            name = f"blocks.{layer}.attn.W_Q"
            W_Q = get_weight(model, name)  # [n_heads, d_model, d_head]
            full = W_Q.permute(1, 0, 2).reshape(cfg.d_model, cfg.d_model)
            assert torch.equal(full, torch.eye(cfg.d_model)), f"{name} of {type(model).__name__} is not the identity"
            assert not weight_parameters(model, name).requires_grad, f"{name} is not frozen"


def test_paper_init_options_shape_the_embeddings():
    """ "unit" gives unit-norm vectors; "normal" gives N(0, 1/d_model) entries; "standard" N(0, 1)."""
    d = 32
    cfg = ModelConfig(
        d_model=d,
        d_vocab=400,
        d_vocab_out=300,
        n_ctx=300,
        embed_init="unit",
        unembed_init="normal",
        pos_init="standard",
    )
    model = build_model(cfg)
    norms = get_weight(model, "W_E").norm(dim=-1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5), f"unit W_E rows have norms {norms[:5]}"
    # 300 * 32 = 9600 entries: the sample std is within ~1.5% of the truth; 10% is a loose band.
    std_U = get_weight(model, "W_U").std().item()
    assert abs(std_U - d**-0.5) < 0.1 * d**-0.5, f"normal W_U entries have std {std_U}, expected {d**-0.5:.3f}"
    std_pos = get_weight(model, "W_pos").std().item()
    assert abs(std_pos - 1.0) < 0.1, f"standard W_pos entries have std {std_pos}, expected 1"


def test_disabled_positions_and_biases_are_zero_and_frozen():
    """positional=False zeroes and freezes W_pos; use_bias=False zeroes and freezes every bias."""
    cfg = ModelConfig(n_layers=2, d_model=16, d_vocab=11, n_ctx=8, attn_only=False, positional=False, use_bias=False)
    model = build_model(cfg)
    zero = ["W_pos"] + [n for n in weight_names(model) if n.split(".")[-1].startswith("b_")]
    assert len(zero) > 5, f"expected W_pos and the biases, got {zero}"
    for name in zero:
        assert torch.count_nonzero(get_weight(model, name)) == 0, f"{name} is not zero"
        assert not weight_parameters(model, name).requires_grad, f"{name} is not frozen"


def test_freeze_sets_requires_grad_false_only_on_the_named_weights():
    """Frozen weights (with ``*`` layer wildcards) lose requires_grad; every other weight keeps it."""
    cfg = ModelConfig(n_layers=2, d_model=16, d_vocab=11, n_ctx=8, use_bias=True, freeze=("W_E", "blocks.*.attn.W_V"))
    model = build_model(cfg)
    frozen = {"W_E", "blocks.0.attn.W_V", "blocks.1.attn.W_V"}
    for name in weight_names(model):
        trainable = weight_parameters(model, name).requires_grad
        assert trainable == (name not in frozen), f"{name}: requires_grad={trainable}, frozen={name in frozen}"


@pytest.mark.parametrize("builder", [build_model, build_bridge], ids=["hooked", "bridge"])
def test_builders_leave_the_callers_global_rng_untouched(builder):
    """Building never reseeds or advances torch's global RNG: the next draw is the one it would be."""
    cfg = ModelConfig(**VARIANTS["two_layers_mlp_ln"], seed=123)
    torch.manual_seed(2024)
    expected = torch.rand(5)
    torch.manual_seed(2024)
    builder(cfg)
    after = torch.rand(5)
    assert torch.equal(after, expected), "building a model changed the global RNG stream"


def test_same_seed_builds_identical_weights_and_another_seed_different_ones():
    cfg = ModelConfig(**VARIANTS["two_layers_mlp_ln"], seed=7)
    a, b = build_model(cfg), build_model(cfg)
    c = build_model(dataclasses.replace(cfg, seed=8))
    for name in weight_names(a):
        assert torch.equal(get_weight(a, name), get_weight(b, name)), f"{name} differs between two builds of seed 7"
    differing = [n for n in weight_names(a) if not torch.equal(get_weight(a, n), get_weight(c, n))]
    assert {"W_E", "W_U", "blocks.0.attn.W_V"} <= set(differing), f"seed 8 left weights unchanged: {differing}"


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_bridge_and_hooked_model_compute_the_same_logits(variant):
    """build_bridge(cfg) holds build_model(cfg)'s weights, so both give the same logits."""
    cfg = ModelConfig(**VARIANTS[variant], seed=3)
    hooked, bridge = build_model(cfg).eval(), build_bridge(cfg).eval()
    assert sorted(weight_names(hooked)) == sorted(weight_names(bridge)), "the two kinds expose different weights"
    for name in weight_names(hooked):
        assert torch.equal(get_weight(hooked, name), get_weight(bridge, name)), f"{name} differs between kinds"
    tokens = _tokens(cfg)
    with torch.no_grad():
        diff = (hooked(tokens) - bridge(tokens)).abs().max().item()
    assert diff < 1e-5, f"bridge logits differ from HookedTransformer logits by {diff}"


def test_bridge_freezes_the_same_weights_as_the_hooked_model():
    cfg = ModelConfig(
        n_layers=2,
        d_model=16,
        d_vocab=11,
        n_ctx=8,
        positional=False,
        identity_W_Q=True,
        freeze=("W_U", "blocks.1.attn.W_O"),
    )
    hooked, bridge = build_model(cfg), build_bridge(cfg)
    for name in weight_names(hooked):
        h, b = weight_parameters(hooked, name).requires_grad, weight_parameters(bridge, name).requires_grad
        assert h == b, f"{name}: requires_grad is {h} on the HookedTransformer but {b} on the bridge"


def test_build_model_rejects_a_config_dict():
    with pytest.raises(TypeError, match="ModelConfig"):
        build_model(VARIANTS["attn_only"])
