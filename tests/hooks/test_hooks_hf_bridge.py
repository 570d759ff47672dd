"""The hook tools on GPT-2's architecture: a ``TransformerBridge`` built around a ``transformers`` module with
random weights from its config (offline, TransformerLens's ``build_bridge_from_module``), and a ``HookedTransformer``
from GPT-2's ``HookedTransformerConfig`` (TransformerLens 3.x; on 4.x the same architecture is a bridge).

Weights read through the bridge rebuild the same function in a model TransformerLens builds itself; ``replace_weights``,
``OV``, ``ov_circuit`` / ``qk_circuit`` agree with TransformerLens's own readings; a weight that cannot be written
says which and why."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hooks.bridge import boot_bridge
from hooks.names import resolve_hook_name
from hooks.replace import OV, Head, ov_circuit, qk_circuit, replace_weights
from hooks.state import same_state, state_fingerprint
from hooks.testing import (
    GPT2_SIZES,
    KINDS,
    gpt2_hooked_config,
    gpt2_hooked_model,
    hf_gpt2_bridge,
    hooked_model,
)
from hooks.weights import get_weight, weight_names

TOK = torch.randint(0, 100, (3, 12), generator=torch.Generator().manual_seed(0))
D, H, D_HEAD = GPT2_SIZES["d_model"], GPT2_SIZES["n_heads"], GPT2_SIZES["d_model"] // GPT2_SIZES["n_heads"]


@pytest.fixture(scope="module")
def bridge():
    return hf_gpt2_bridge(seed=0)


def _models(bridge) -> dict[str, nn.Module]:
    models = {"hf_bridge": bridge}
    if "hooked" in KINDS:
        models["hooked_gpt2"] = gpt2_hooked_model(seed=0)
    return models


MODELS = ["hf_bridge"] + (["hooked_gpt2"] if "hooked" in KINDS else [])


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_weights_read_through_the_bridge_rebuild_the_same_model(bridge):
    """Every weight, read in TransformerLens layout and written into a model TransformerLens builds itself
    (HookedTransformer on 3.x, boot_native on 4.x), gives the HuggingFace module's logits."""
    cfg = gpt2_hooked_config(**GPT2_SIZES)
    reference = hooked_model(cfg) if "hooked" in KINDS else boot_bridge(cfg).eval()
    weights = {name: get_weight(bridge, name) for name in weight_names(bridge)}
    weights.setdefault("b_U", torch.zeros(GPT2_SIZES["d_vocab"]))  # GPT-2's lm_head has no bias
    from hooks.weights import set_weights_

    set_weights_(reference, weights)
    with torch.no_grad():
        torch.testing.assert_close(reference(TOK), bridge(TOK), atol=1e-5, rtol=1e-5)


def test_weights_equal_transformer_lens_own_per_block_views(bridge):
    for layer in range(GPT2_SIZES["n_layers"]):
        attn = bridge.blocks[layer].attn
        for name in ("W_Q", "W_K", "W_V", "W_O"):
            torch.testing.assert_close(get_weight(bridge, f"blocks.{layer}.attn.{name}"), getattr(attn, name).detach())
    hf = bridge.original_model
    torch.testing.assert_close(get_weight(bridge, "blocks.1.mlp.W_in"), hf.transformer.h[1].mlp.c_fc.weight.detach())
    torch.testing.assert_close(get_weight(bridge, "W_U"), hf.lm_head.weight.detach().T)


@pytest.mark.parametrize("which", MODELS)
def test_ov_and_qk_circuits_equal_transformer_lens_factored_matrices(bridge, which):
    model = _models(bridge)[which]
    for layer, head in ((0, 1), (1, 3)):
        torch.testing.assert_close(ov_circuit(model, layer, head).AB, model.OV[layer, head].AB.detach())
        torch.testing.assert_close(qk_circuit(model, layer, head).AB, model.QK[layer, head].AB.detach())


@pytest.mark.parametrize("which", MODELS)
def test_replace_weights_changes_one_head_and_restores_bit_for_bit(bridge, which):
    model = _models(bridge)[which]
    name = resolve_hook_name(model, ("v", 1))
    before, (base, clean) = state_fingerprint(model), model.run_with_cache(TOK, names_filter=name)
    with replace_weights(
        model, {("blocks.1.attn.W_V", 2): _randn(D, D_HEAD), Head("blocks.1.attn.b_V", 2): _randn(D_HEAD)}
    ):
        changed, new = model.run_with_cache(TOK, names_filter=name)
    diff = (new[name] - clean[name]).abs().amax(dim=(0, 1, 3))
    assert diff[2] > 1e-3 and torch.all(diff[[0, 1, 3]] == 0), f"per-head change of the values: {diff}"
    assert not torch.allclose(changed, base), "replacing W_V[2] did not change the logits"
    assert same_state(before, state_fingerprint(model)) == []
    assert torch.equal(model(TOK), base)


@pytest.mark.parametrize("which", MODELS)
@pytest.mark.parametrize("method", ["hook", "factor"])
def test_ov_replaced_by_its_own_circuit_leaves_the_output_unchanged(bridge, which, method):
    model = _models(bridge)[which]
    base = model(TOK)
    with replace_weights(model, {OV(1, 2, method): ov_circuit(model, 1, 2).AB}):
        torch.testing.assert_close(model(TOK), base, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("which", MODELS)
def test_a_zero_ov_circuit_is_a_head_whose_values_are_zero(bridge, which):
    """OV = 0 keeps the value-bias term b_V W_O; zeroing W_V[h] alone does the same."""
    model = _models(bridge)[which]
    with replace_weights(model, {OV(0, 1): torch.zeros(D, D)}):
        via_ov = model(TOK)
    with replace_weights(model, {("blocks.0.attn.W_V", 1): torch.zeros(D, D_HEAD)}):
        via_w_v = model(TOK)
    torch.testing.assert_close(via_ov, via_w_v, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(via_ov, model(TOK)), "zeroing a head's OV circuit changed nothing"


def test_a_tied_unembedding_refuses_writes_and_says_why():
    tied = hf_gpt2_bridge(seed=0)
    with pytest.raises(
        ValueError, match=r"'W_U' cannot be written: it is the same tensor as 'W_E'.*tie_word_embeddings"
    ):
        with replace_weights(tied, {"W_U": torch.zeros(D, 100)}):
            pass
    untied = hf_gpt2_bridge(seed=0, tie_word_embeddings=False)
    base = untied(TOK)
    with replace_weights(untied, {"W_U": torch.zeros(D, 100)}):
        assert torch.all(untied(TOK) == 0), "W_U = 0 (GPT-2 has no b_U): every logit is 0"
    assert torch.equal(untied(TOK), base)


def test_a_projection_without_a_known_layout_is_named_with_the_reason():
    bridge = hf_gpt2_bridge(seed=0)

    class Quantised(nn.Module):  # stands for e.g. an 8-bit linear layer
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(D, D))

    bridge.blocks[1].attn.v._modules["_original_component"] = Quantised()
    with pytest.raises(TypeError, match=r"blocks\.1\.attn\.W_V cannot be addressed: it is the weight of a Quantised"):
        weight_names(bridge)


def test_a_gated_mlp_and_grouped_keys_read_as_in_the_huggingface_module():
    """Llama's architecture behind a bridge: W_gate / W_in are its gate_proj / up_proj, grouped K has n_kv heads."""
    import transformers
    from transformer_lens.model_bridge.sources._bridge_builder import build_bridge_from_module

    config = transformers.LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=100, max_position_embeddings=32,
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        hf = transformers.LlamaForCausalLM(config).eval()
    bridge = build_bridge_from_module(hf, "LlamaForCausalLM", hf_config=config)
    mlp = hf.model.layers[0].mlp
    assert torch.equal(get_weight(bridge, "blocks.0.mlp.W_gate"), mlp.gate_proj.weight.T)
    assert torch.equal(get_weight(bridge, "blocks.0.mlp.W_in"), mlp.up_proj.weight.T)
    assert get_weight(bridge, "blocks.1.attn.W_K").shape == (2, 64, 16)
    assert "W_pos" not in weight_names(bridge), "rotary positions: no W_pos"
