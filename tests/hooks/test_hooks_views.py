"""``hooks.views``: attention patterns read on both model kinds, offline CircuitsVis views (no
network, the bundle inlined, props that cannot break out of their script), and the read-out row."""

from __future__ import annotations

import json
import re

import matplotlib

matplotlib.use("Agg")  # tests only save / inspect figures

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from hooks.state import count_hooks  # noqa: E402
from hooks.testing import KINDS, models_by_kind  # noqa: E402
from hooks.views import (  # noqa: E402
    CircuitsVisView,
    attention_heads_view,
    attention_patterns,
    plot_readout_attention,
    readout_view,
    view_html,
)

TOKENS = torch.tensor([[1, 5, 3, 7, 2, 9], [4, 4, 0, 8, 6, 1]])


@pytest.mark.parametrize("kind", KINDS)
def test_patterns_equal_the_cached_hook_pattern_and_leave_the_model_alone(kind):
    model = models_by_kind()[kind]
    model.train()
    hooks_before = count_hooks(model)
    patterns = attention_patterns(model, TOKENS)
    model.eval()
    with torch.no_grad():
        _, cache = model.run_with_cache(TOKENS)
    model.train()
    assert patterns.shape == (2, 2, 4, 6, 6)
    assert torch.allclose(patterns[1], cache["blocks.1.attn.hook_pattern"], atol=1e-6)
    assert model.training and count_hooks(model) == hooks_before, "mode and hooks must be restored"


def test_every_model_kind_reads_the_same_patterns():
    models = list(models_by_kind().values())
    first = attention_patterns(models[0], TOKENS)
    for other in models[1:]:
        assert torch.allclose(attention_patterns(other, TOKENS), first, atol=1e-5), "the kinds read other patterns"


def test_local_src_is_offline_and_does_not_probe_the_network(monkeypatch):
    import circuitsvis.utils.render as render

    monkeypatch.setattr(render, "internet_on", lambda: pytest.fail("the view probed the internet"))
    pattern = attention_patterns(models_by_kind()[KINDS[0]], TOKENS[:1])[:, 0].flatten(0, 1)
    view = attention_heads_view(pattern, list("abcdef"))
    html = view._repr_html_()
    assert "CircuitsVis.render" in html and len(html) > 500_000, "the JavaScript bundle must be inlined"
    assert not re.search(r"""(src|href)\s*=\s*["']?https?:""", html) and "unpkg.com" not in html
    assert "import " not in html.split("CircuitsVis.render")[-1], "no module import from a CDN"


def test_props_cannot_close_the_script_tag():
    view = CircuitsVisView("ColoredTokens", {"tokens": ["</script><b>x"], "values": [1.0]})
    call = view.render_call()
    assert "</script>" not in call and "<\\/script>" in call
    props = json.loads(call[call.index("{") : call.rindex(")")])
    assert props["tokens"] == ["</script><b>x"], "escaping must not change the value JavaScript sees"


def test_readout_view_holds_the_read_out_row_of_every_head():
    pattern = torch.rand(3, 6, 6).tril()
    view = readout_view(pattern, list("abcdef"), 4, ["h0", "h1", "h2"])
    values = view.props["values"]
    assert values.shape == (5, 3), "one row per key position up to the read-out, one column per head"
    assert torch.allclose(values, pattern[:, 4, :5].T.double(), atol=1e-4)
    with pytest.raises(ValueError, match="readout"):
        readout_view(pattern, list("abcdef"), 6)
    with pytest.raises(ValueError, match="token labels"):
        readout_view(pattern, list("abc"), 2)


def test_full_view_scales_colours_to_the_read_out_row():
    pattern = torch.zeros(1, 4, 4)
    pattern[0, 0, 0] = 1.0
    pattern[0, 3] = torch.tensor([0.1, 0.2, 0.3, 0.4])
    assert attention_heads_view(pattern, list("abcd"), readout=3).props["maxValue"] == pytest.approx(0.4)
    assert attention_heads_view(pattern, list("abcd")).props["maxValue"] == pytest.approx(1.0)


def test_several_views_share_one_bundle():
    views = [readout_view(torch.rand(2, 3, 3), list("xyz"), 2) for _ in range(3)]
    html = view_html(views)
    assert html.count("var CircuitsVis") == 1 and html.count("CircuitsVis.render(") == 3
    assert all(f'id="{v.element_id}"' in html for v in views)


def test_read_out_figure_explains_itself():
    fig = plot_readout_attention(torch.rand(2, 5, 5), list("abcde"), 4, ["L0H0", "L0H1"])
    heat = fig.axes[0]
    assert heat.get_title() and heat.get_xlabel() and heat.get_ylabel()
    assert any(ax.get_ylabel() == "attention weight" for ax in fig.axes[1:]), "the colorbar must say what it shows"
    plt.close(fig)
