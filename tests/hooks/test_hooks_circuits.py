"""``hooks.circuits``: OV / QK circuits through the embeddings equal TransformerLens's own factored
circuits, mean what they claim in a forward pass, agree on both model kinds, and their figures
explain themselves (title, labelled axes, a labelled colorbar per heat map). Every test runs on each
model kind the installed TransformerLens offers."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # tests only save / inspect figures

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from hooks.circuits import (  # noqa: E402
    ov_spectrum,
    ov_through_embeddings,
    plot_ov_circuits,
    plot_ov_spectra,
    plot_positional_qk,
    plot_qk_circuits,
    positional_embedding,
    qk_through_embeddings,
    qk_through_positions,
)
from hooks.compat import attention_scale  # noqa: E402
from hooks.testing import KINDS, bridge_like, hooked_model, random_bridge, tiny_config  # noqa: E402
from hooks.weights import get_weight, set_weight_, weight_names  # noqa: E402


def _plain_model(kind: str = KINDS[0], **overrides):
    """Attention-only, no LayerNorm, no biases: circuits through the embeddings are exact."""
    make = hooked_model if kind == "hooked" else random_bridge
    model = make(tiny_config(attn_only=True, normalization_type=None, **overrides), seed=1)
    for name in weight_names(model):
        if name.rsplit(".", 1)[-1].startswith("b_"):
            set_weight_(model, name, torch.zeros_like(get_weight(model, name)))
    return model


@pytest.mark.parametrize("kind", KINDS)
def test_ov_and_qk_equal_transformer_lens_factored_circuits(kind):
    model = _plain_model(kind)
    W_E, W_U = get_weight(model, "W_E"), get_weight(model, "W_U")
    for layer, head in [(0, 0), (1, 3)]:
        ov_ref = (W_E @ model.OV[layer, head] @ W_U).AB
        qk_ref = (W_E @ model.QK[layer, head] @ W_E.T).AB / attention_scale(model)
        assert torch.allclose(ov_through_embeddings(model, layer, head), ov_ref, atol=1e-4), "OV differs from model.OV"
        assert torch.allclose(qk_through_embeddings(model, layer, head), qk_ref, atol=1e-4), "QK differs from model.QK"


@pytest.mark.parametrize("kind", KINDS)
def test_ov_through_embeddings_is_the_logits_a_head_adds_when_it_attends_to_one_token(kind):
    model = _plain_model(kind, n_layers=1, n_heads=1)
    set_weight_(model, "W_pos", torch.zeros_like(get_weight(model, "W_pos")))
    ov = ov_through_embeddings(model, 0, 0)
    tokens = torch.arange(model.cfg.d_vocab)[:, None]  # one token: the head attends to it with weight 1
    with torch.no_grad():
        logits = model(tokens)[:, 0]
    direct = get_weight(model, "W_E") @ get_weight(model, "W_U")  # the residual stream's own contribution
    assert torch.allclose(logits - direct, ov, atol=1e-4), "row t must be what the head adds to the logits from token t"


@pytest.mark.parametrize("kind", KINDS)
def test_qk_through_embeddings_is_the_attention_score_of_a_token_pair(kind):
    model = _plain_model(kind, n_layers=1)
    set_weight_(model, "W_pos", torch.zeros_like(get_weight(model, "W_pos")))
    tokens = torch.tensor([[3, 7], [5, 2]])  # key first, query second
    _, cache = model.run_with_cache(tokens, names_filter="blocks.0.attn.hook_attn_scores")
    scores = cache["blocks.0.attn.hook_attn_scores"][:, :, 1, 0]  # [batch, head]
    for head in range(model.cfg.n_heads):
        qk = qk_through_embeddings(model, 0, head)
        assert torch.allclose(scores[:, head], torch.stack([qk[7, 3], qk[2, 5]]), atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_positional_qk_is_masked_above_the_diagonal_and_refused_without_positions(kind):
    model = _plain_model(kind)
    pos = qk_through_positions(model, 1, 2, n_positions=6)
    assert pos.shape == (6, 6) and torch.isnan(pos.triu(1)[torch.ones(6, 6).triu(1).bool()]).all()
    P = get_weight(model, "W_pos")[:6]
    ref = (P @ model.QK[1, 2] @ P.T).AB / attention_scale(model)
    assert torch.allclose(pos.tril(), ref.tril(), atol=1e-4, equal_nan=True)
    set_weight_(model, "W_pos", torch.zeros_like(get_weight(model, "W_pos")))
    assert positional_embedding(model) is None
    with pytest.raises(ValueError, match="no positional embedding"):
        qk_through_positions(model, 0, 0)


def test_ov_spectrum_is_the_singular_values_of_W_V_W_O():
    model = _plain_model()
    W_V, W_O = get_weight(model, "blocks.1.attn.W_V"), get_weight(model, "blocks.1.attn.W_O")
    ref = torch.linalg.svdvals(W_V[2] @ W_O[2])[: model.cfg.d_head]
    assert torch.allclose(ov_spectrum(model, 1, 2), ref, atol=1e-4)


def test_circuits_are_the_same_on_a_bridge():
    model = _plain_model(KINDS[0])
    bridge = bridge_like(model)
    for fn in (ov_through_embeddings, qk_through_embeddings):
        assert torch.allclose(fn(model, 1, 1), fn(bridge, 1, 1), atol=1e-5), f"{fn.__name__} differs on the bridge"
    assert torch.allclose(ov_spectrum(model, 0, 3), ov_spectrum(bridge, 0, 3), atol=1e-5)


def test_token_subsets_select_rows_and_columns():
    model = _plain_model()
    full = ov_through_embeddings(model, 0, 1)
    part = ov_through_embeddings(model, 0, 1, tokens=[4, 2], outputs=[0, 5, 6])
    assert torch.allclose(part, full[[4, 2]][:, [0, 5, 6]])
    with pytest.raises(ValueError, match="tokens must be"):
        ov_through_embeddings(model, 0, 1, tokens=[99])
    with pytest.raises(ValueError, match="layer must be"):
        ov_through_embeddings(model, 5, 0)


def _explains_itself(fig) -> None:
    images = [ax for ax in fig.axes if ax.images]
    assert images, "no heat map drawn"
    for ax in images:
        assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel(), "every heat map needs a title and axis labels"
    colorbars = [ax for ax in fig.axes if not ax.images and ax.get_ylabel() and ax not in images]
    assert len(colorbars) >= len(images), "every heat map needs a labelled colorbar"


def test_circuit_figures_have_titles_labelled_axes_and_colorbars():
    model = _plain_model()
    labels = [f"t{i}" for i in range(model.cfg.d_vocab)]
    for fig in (
        plot_ov_circuits(model, token_labels=labels, output_labels=labels),
        plot_qk_circuits(model, [(0, 1), (1, 0)], token_labels=labels),
        plot_positional_qk(model, n_positions=8),
    ):
        _explains_itself(fig)
        plt.close(fig)
    fig = plot_ov_spectra(model)
    ax = fig.axes[0]
    assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel() and ax.get_legend() is not None
    assert "layer 0, head 0" in [t.get_text() for t in ax.get_legend().get_texts()], "legend entries must be words"
    plt.close(fig)
