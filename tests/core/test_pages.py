"""``mechmem.pages.page``: a page that opens offline (figures embedded, no network), an index of its
sections, escaped text, tables and claims tables that say what they show, one CircuitsVis bundle."""

from __future__ import annotations

import base64
import re

import torch

from hooks.views import readout_view
from mechmem.pages.page import Page

PNG = base64.b64decode(  # a 1x1 white PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8/5+hHgAHggJ/PchI7wAAAABJRU5ErkJggg=="
)


def test_index_links_every_section_and_subsection():
    page = Page("t")
    sec = page.section("Circuits")
    sec.subsection("Layer 0")
    sec.subsection("Layer 0")  # a repeated title still gets its own anchor
    page.section("Provenance")
    html = page.render()
    nav = html[html.index("<nav") : html.index("</nav>")]
    for anchor in ("circuits", "layer-0", "layer-0-2", "provenance"):
        assert f'href="#{anchor}"' in nav and f'id="{anchor}"' in html, f"missing anchor {anchor}"


def test_text_is_escaped_and_backticks_become_code():
    page = Page("<t>")
    page.section("S").text("a <script>alert(1)</script> and `W_E`").note("careful & slow")
    html = page.render()
    assert "<script>alert" not in html and "&lt;script&gt;" in html
    assert "<code>W_E</code>" in html and "careful &amp; slow" in html


def test_figures_are_embedded_and_nothing_loads_from_the_network(tmp_path):
    path = tmp_path / "f.png"
    path.write_bytes(PNG)
    page = Page("t")
    page.section("S").figure(path, "a caption", link="f.json").figure(PNG, "bytes too")
    html = page.render()
    assert html.count('src="data:image/png;base64,') == 2
    assert not re.search(r"""(src|href)\s*=\s*["']?https?:""", html), "a page must not load anything from the network"


def test_tables_format_numbers_and_claims_say_whether_they_hold():
    page = Page("t")
    sec = page.section("S")
    sec.table(
        [{"name": "a", "x": 0.123456, "ok": True}, {"name": "b", "x": float("nan"), "ok": False}],
        {"name": "component", "x": "loss (nats)", "ok": "holds"},
    )
    sec.claims(
        {
            "seed 0": {"acc": {"expected": ">= 0.9", "measured": 0.95, "holds": True}},
            "seed 1": {"acc": {"expected": ">= 0.9", "measured": 0.5, "holds": False}},
        }
    )
    html = page.render()
    assert "<th>loss (nats)</th>" in html and "0.1235" in html and "&ndash;" in html
    assert "seed 0: measured" in html and "seed 1: measured" in html and ">= 0.9" not in html  # escaped
    assert '<td class="holds">yes</td>' in html and '<td class="fails">no</td>' in html


def test_views_share_one_bundle_at_the_end_of_the_page(tmp_path):
    page = Page("t")
    sec = page.section("S")
    for _ in range(3):
        sec.view(readout_view(torch.rand(1, 3, 3), list("abc"), 2), "strip")
    html = page.write(tmp_path / "index.html").read_text()
    assert html.count("var CircuitsVis") == 1 and html.count("CircuitsVis.render(") == 3
    assert html.rindex("CircuitsVis.render(") > html.rindex('class="view"'), "scripts run after the divs exist"


def test_long_text_can_be_folded():
    page = Page("t")
    page.section("S").code('{"a": 1}', summary="the config")
    html = page.render()
    assert "<details><summary>the config</summary><pre>{&quot;a&quot;: 1}</pre></details>" in html
