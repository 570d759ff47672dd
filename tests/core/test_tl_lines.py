"""TransformerLens 3.9 and 4.x: same config and seed -> bit-identical initial weights (checksums
committed here, computed on 3.9 before the explicit init existed), a run saved on 3.9 loads with
the same logits, and the behaviour changes of 4.x are handled in one place (``hooks.compat``).
The same file runs in both environments (``make test`` and ``make test-tl4``)."""

import hashlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hooks.compat import has_hooked_transformer, tl_patching, tl_version
from hooks.testing import KINDS, models_by_kind
from hooks.weights import get_weight, weight_names, weight_shapes
from mechmem.core.config import ModelConfig
from mechmem.core.models import build_bridge, build_model, initial_weights, tl_config_dict
from mechmem.storage.runs import load_run

DATA = Path(__file__).resolve().parents[1] / "data"

#: sha256 (first 16 hex digits) of every initial weight, by sorted TransformerLens name; computed
#: with TransformerLens 3.9's HookedTransformer init (mechmem before the explicit init)
CHECKSUMS = {
    "attn_only": (dict(n_layers=1, n_heads=1, d_model=16, d_vocab=11, n_ctx=8), "2972b62681f5a855"),
    "mlp_ln_bias": (
        dict(
            n_layers=2,
            n_heads=2,
            d_model=16,
            d_vocab=11,
            n_ctx=8,
            attn_only=False,
            normalization="LN",
            use_bias=True,
            act_fn="gelu",
            seed=3,
        ),
        "7781029b9603d6a2",
    ),
    "lnpre_dhead_out": (
        dict(
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
            seed=1,
        ),
        "900ae14028cd5855",
    ),
    "float64_paper_inits": (
        dict(
            n_layers=3,
            n_heads=4,
            d_model=64,
            d_vocab=50,
            n_ctx=32,
            identity_W_Q=True,
            positional=False,
            embed_init="unit",
            unembed_init="default",
            pos_init="standard",
            seed=5,
            dtype="float64",
        ),
        "2b3b0a70853d6403",
    ),
}


def digest(model) -> str:
    h = hashlib.sha256()
    for name in sorted(weight_names(model)):
        h.update(name.encode())
        h.update(get_weight(model, name).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@pytest.mark.parametrize("builder", [build_model, build_bridge], ids=["build_model", "build_bridge"])
@pytest.mark.parametrize("config", list(CHECKSUMS))
def test_initial_weights_match_the_committed_checksums(config, builder):
    fields, want = CHECKSUMS[config]
    got = digest(builder(ModelConfig(**fields)))
    line = ".".join(map(str, tl_version()))
    assert got == want, f"{config}: initial weights on TransformerLens {line} hash to {got}, committed {want}"


def test_build_model_gives_the_kind_of_the_installed_line():
    model = build_model(ModelConfig(**CHECKSUMS["attn_only"][0]))
    want = "HookedTransformer" if has_hooked_transformer() else "TransformerBridge"
    assert type(model).__name__ == want


@pytest.mark.skipif(not has_hooked_transformer(), reason="HookedTransformer needs TransformerLens 3.x")
@pytest.mark.parametrize("config", list(CHECKSUMS))
def test_explicit_init_replicates_hooked_transformer_39_draws(config):
    """mechmem's base init = HookedTransformer's own "gpt2" init from the same seeded global RNG."""
    import warnings

    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = ModelConfig(**CHECKSUMS[config][0])
    with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.manual_seed(cfg.seed)
        dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
        ht = HookedTransformer(
            HookedTransformerConfig(**tl_config_dict(cfg), device="cpu", dtype=dtype), move_to_device=False
        )
    order = [
        n.replace("embed.W_E", "W_E")
        .replace("pos_W_pos", "W_pos")
        .replace("pos_embed.W_pos", "W_pos")
        .replace("unembed.", "")
        for n, _ in ht.named_parameters()
    ]
    assert order == list(weight_shapes(tl_config_dict(cfg))), "weight_shapes is not in named_parameters order"
    from mechmem.core.models import _base_weights

    base = _base_weights(cfg)
    for name in weight_names(ht):
        assert torch.equal(base[name], get_weight(ht, name)), f"{name} differs from HookedTransformer's init"


def test_initial_weights_leave_the_global_rng_alone():
    torch.manual_seed(3)
    want = torch.rand(4)
    torch.manual_seed(3)
    initial_weights(ModelConfig(**CHECKSUMS["mlp_ln_bias"][0]))
    assert torch.equal(torch.rand(4), want)


@pytest.mark.parametrize("bridge", [False, True], ids=["load_run", "load_run_bridge"])
@pytest.mark.parametrize("fixture", ["run_tl39_factual", "run_tl39_recall"])
def test_a_run_saved_on_39_loads_with_the_same_logits(fixture, bridge):
    """The fixtures were saved before runs kept a manifest: load_run reads them only when told to."""
    expected = load_file(str(DATA / fixture / "expected.safetensors"))
    with pytest.raises(ValueError, match="has no manifest.json"):
        load_run(DATA / fixture, bridge=bridge)
    model, config = load_run(DATA / fixture, bridge=bridge, allow_no_manifest=True)
    with torch.no_grad():
        logits = model(expected["tokens"])
    diff = (logits - expected["logits"]).abs().max().item()
    assert diff <= 1e-5, f"{fixture} on {type(model).__name__}: logits differ from 3.9's by {diff:.2e}"
    assert expected["logits"].std() > 0.1, "degenerate fixture"


@pytest.mark.parametrize("kind", KINDS)
def test_tl_patching_needs_no_eval_mode_and_restores_train_mode(kind):
    """transformer_lens.patching refuses a train-mode model on 4.3; tl_patching runs it in eval mode."""
    import transformer_lens.patching as tlp

    model = models_by_kind(seed=2)[kind].train()
    tokens = torch.randint(0, 24, (2, 5), generator=torch.Generator().manual_seed(0))
    _, cache = model.run_with_cache(tokens)
    result = tl_patching(tlp.get_act_patch_resid_pre, model, tokens.flip(0), cache, lambda lg: lg[:, -1, 0].mean())
    assert result.shape == (2, 5) and model.training and all(m.training for m in model.modules())
