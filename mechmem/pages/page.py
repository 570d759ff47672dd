"""Self-contained HTML pages: sections with text, figures, tables, claims and CircuitsVis views,
an index on top, one file that opens offline.

Nothing on a page loads from the network: figures are embedded as ``data:`` URIs, the style sheet
is inline, and the CircuitsVis JavaScript bundle is inlined once however many views the page holds.
``mechmem inspect`` writes one page per run; a multi-paper report builds one :class:`Page` with a
section per paper (``page.section(paper)``, ``section.claims(...)``, ``section.figure(...)``,
``section.subsection(...)``) and gets the index for free.

>>> page = Page("lca reproduction", subtitle="quick preset")
>>> sec = page.section("Claims")
>>> sec.claims({"seed 0": {"accuracy": {"expected": ">= 0.9", "measured": 0.97, "holds": True}}})
>>> page.write("runs/report/index.html")
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mechmem.storage.files import atomic_write_text

CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2330;
       margin: 0; background: #f4f5f8; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 32px 64px; background: #fff; }
h1 { font-size: 26px; margin: 8px 0 2px; } .subtitle { color: #5a6275; margin: 0 0 16px; }
h2 { font-size: 21px; border-bottom: 2px solid #e3e6ee; padding-bottom: 4px; margin-top: 40px; }
h3 { font-size: 17px; margin-top: 28px; } h4 { font-size: 15px; margin: 18px 0 6px; }
nav.index { background: #f7f8fb; border: 1px solid #e3e6ee; border-radius: 6px; padding: 8px 18px; }
nav.index ol { margin: 4px 0; padding-left: 20px; } nav.index a { text-decoration: none; color: #24459a; }
figure { margin: 14px 0 22px; } figure img { max-width: 100%; height: auto; border: 1px solid #eceef3; }
figcaption { color: #4a5163; font-size: 13.5px; margin-top: 4px; max-width: 900px; }
table { border-collapse: collapse; margin: 10px 0 6px; font-size: 13.5px; }
th, td { border: 1px solid #dfe2ea; padding: 3px 9px; text-align: right; vertical-align: top; }
th { background: #f1f3f8; text-align: center; } td.text, th.text { text-align: left; }
caption { caption-side: bottom; text-align: left; color: #4a5163; font-size: 13px; padding-top: 4px; }
.holds { color: #17733a; font-weight: 600; } .fails { color: #b42318; font-weight: 600; }
.note { background: #fff7e6; border-left: 4px solid #f0a020; padding: 6px 12px; margin: 10px 0; }
pre { background: #f7f8fb; border: 1px solid #e3e6ee; padding: 8px 12px; overflow-x: auto; font-size: 12.5px; }
code { background: #f1f3f8; padding: 0 3px; border-radius: 3px; font-size: 13px; }
.view { border: 1px solid #e3e6ee; border-radius: 6px; padding: 4px 12px; margin: 8px 0 16px; overflow-x: auto; }
details > summary { cursor: pointer; color: #24459a; margin: 6px 0; }
.tokens { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 13px; word-break: break-all; }
"""

#: cells formatted by :meth:`Section.table` unless a format is given per column
NUMBER_FORMAT = "{:.4g}"


def escape(text: Any) -> str:
    """``text`` as HTML text (``<``, ``&`` and quotes escaped)."""
    return html.escape(str(text), quote=True)


def inline(text: str) -> str:
    """Escape ``text`` but render ``backticks`` as code."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escape(text))


def _slug(text: str, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"
    slug, n = base, 2
    while slug in taken:
        slug, n = f"{base}-{n}", n + 1
    taken.add(slug)
    return slug


def format_cell(value: Any, fmt: str = NUMBER_FORMAT) -> str:
    """A table cell: numbers with ``fmt`` (NaN and None as an en dash), booleans as yes / no."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "&ndash;"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return escape(fmt.format(value))
    return escape(value)


@dataclass
class Section:
    """A titled part of a :class:`Page`; its methods append content in order and return ``self``."""

    title: str
    anchor: str
    page: "Page" = field(repr=False)
    level: int = 2
    blocks: list[str | "Section"] = field(default_factory=list)

    # --- text --------------------------------------------------------------------------------
    def text(self, text: str) -> "Section":
        """A paragraph (escaped; ``backticks`` become code)."""
        self.blocks.append(f"<p>{inline(text)}</p>")
        return self

    def note(self, text: str) -> "Section":
        """A highlighted remark (a caveat, a warning)."""
        self.blocks.append(f'<div class="note">{inline(text)}</div>')
        return self

    def code(self, text: str, summary: str = "") -> "Section":
        """Preformatted text; with ``summary``, folded under that line (click to open)."""
        block = f"<pre>{escape(text)}</pre>"
        if summary:
            block = f"<details><summary>{inline(summary)}</summary>{block}</details>"
        self.blocks.append(block)
        return self

    def html(self, fragment: str) -> "Section":
        """A trusted HTML fragment, inserted as is (it must not load anything from the network)."""
        self.blocks.append(fragment)
        return self

    # --- figures and views ---------------------------------------------------------------------
    def figure(self, png: bytes | str | Path, caption: str, link: str | None = None) -> "Section":
        """An embedded PNG (bytes or a file) with a caption; ``link``: a file next to the page
        (e.g. the figure's JSON) named in the caption."""
        data = png if isinstance(png, bytes) else Path(png).read_bytes()
        encoded = base64.b64encode(data).decode("ascii")
        extra = f' <a href="{escape(link)}">{escape(link)}</a>' if link else ""
        self.blocks.append(
            f'<figure><img alt="{escape(caption)}" src="data:image/png;base64,{encoded}">'
            f"<figcaption>{inline(caption)}{extra}</figcaption></figure>"
        )
        return self

    def view(self, view, caption: str = "", max_width: int | None = None) -> "Section":
        """A CircuitsVis view (:class:`hooks.views.CircuitsVisView`); the page includes the bundle once."""
        self.page.views.append(view)
        style = f' style="max-width: {int(max_width)}px"' if max_width else ""
        text = f"<figcaption>{inline(caption)}</figcaption>" if caption else ""
        self.blocks.append(f'<div class="view"{style}>{text}<div id="{escape(view.element_id)}"></div></div>')
        return self

    # --- tables ----------------------------------------------------------------------------
    def table(
        self,
        rows: Sequence[Mapping[str, Any]],
        columns: Mapping[str, str] | Sequence[str],
        caption: str = "",
        formats: Mapping[str, str] | None = None,
    ) -> "Section":
        """A table of ``rows`` (dicts); ``columns`` maps row keys to headers (or lists the keys).
        Text columns are left-aligned, numbers right-aligned and formatted (``formats`` per key)."""
        columns = dict(columns) if isinstance(columns, Mapping) else {c: c for c in columns}
        formats = dict(formats or {})
        head = "".join(f"<th>{inline(h)}</th>" for h in columns.values())
        body = []
        for row in rows:
            cells = []
            for key in columns:
                value = row.get(key)
                cls = ' class="text"' if isinstance(value, str) else ""
                cells.append(f"<td{cls}>{format_cell(value, formats.get(key, NUMBER_FORMAT))}</td>")
            body.append("<tr>" + "".join(cells) + "</tr>")
        cap = f"<caption>{inline(caption)}</caption>" if caption else ""
        self.blocks.append(f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")
        return self

    def key_values(self, items: Mapping[str, Any], caption: str = "") -> "Section":
        """A two-column table of names and values (provenance, settings)."""
        rows = "".join(
            f'<tr><th class="text">{escape(k)}</th><td class="text">{format_cell(v)}</td></tr>'
            for k, v in items.items()
        )
        cap = f"<caption>{inline(caption)}</caption>" if caption else ""
        self.blocks.append(f"<table>{cap}<tbody>{rows}</tbody></table>")
        return self

    def claims(self, runs: Mapping[str, Mapping[str, Mapping[str, Any]]], caption: str = "") -> "Section":
        """A claims table: one row per claim, the paper's expectation, then the measured value and
        whether it holds for each run (``runs``: run label, e.g. ``"seed 0"``, -> ``results.json``'s
        ``claims``: name -> ``{"expected", "measured", "holds"}``)."""
        names = list(dict.fromkeys(name for claims in runs.values() for name in claims))
        head = '<th class="text">claim</th><th class="text">paper expectation</th>' + "".join(
            f"<th>{escape(label)}: measured</th><th>holds</th>" for label in runs
        )
        body = []
        for name in names:
            expected = next((c[name].get("expected") for c in runs.values() if name in c), None)
            cells = [f'<td class="text">{escape(name)}</td>', f'<td class="text">{format_cell(expected)}</td>']
            for claims in runs.values():
                entry = claims.get(name)
                if entry is None:
                    cells += ["<td>&ndash;</td>", "<td>&ndash;</td>"]
                    continue
                holds = bool(entry.get("holds"))
                cells += [
                    f"<td>{format_cell(entry.get('measured'))}</td>",
                    f'<td class="{"holds" if holds else "fails"}">{"yes" if holds else "no"}</td>',
                ]
            body.append("<tr>" + "".join(cells) + "</tr>")
        cap = f"<caption>{inline(caption)}</caption>" if caption else ""
        self.blocks.append(f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")
        return self

    # --- structure -------------------------------------------------------------------------
    def subsection(self, title: str, intro: str = "") -> "Section":
        """A nested section (listed in the page's index under this one)."""
        child = Section(title, _slug(title, self.page.anchors), self.page, min(self.level + 1, 4))
        if intro:
            child.text(intro)
        self.blocks.append(child)
        return child

    def render(self) -> str:
        parts = [f'<h{self.level} id="{self.anchor}">{escape(self.title)}</h{self.level}>']
        parts += [b.render() if isinstance(b, Section) else b for b in self.blocks]
        return "\n".join(parts)

    def index(self) -> str:
        children = [b for b in self.blocks if isinstance(b, Section)]
        inner = f"<ol>{''.join(c.index() for c in children)}</ol>" if children and self.level < 3 else ""
        return f'<li><a href="#{self.anchor}">{escape(self.title)}</a>{inner}</li>'


@dataclass
class Page:
    """An HTML page: a title, an index of its sections, the sections."""

    title: str
    subtitle: str = ""
    sections: list[Section] = field(default_factory=list)
    views: list = field(default_factory=list)
    anchors: set[str] = field(default_factory=set)

    def section(self, title: str, intro: str = "") -> Section:
        """Append a top-level section (with an optional introductory paragraph)."""
        sec = Section(title, _slug(title, self.anchors), self)
        if intro:
            sec.text(intro)
        self.sections.append(sec)
        return sec

    def render(self) -> str:
        index = f'<nav class="index"><b>Contents</b><ol>{"".join(s.index() for s in self.sections)}</ol></nav>'
        body = "\n".join(s.render() for s in self.sections)
        subtitle = f'<p class="subtitle">{inline(self.subtitle)}</p>' if self.subtitle else ""
        return (
            f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(self.title)}</title><style>{CSS}</style></head>\n"
            f"<body><main><h1>{escape(self.title)}</h1>{subtitle}{index}\n{body}\n</main>\n{self._scripts()}"
            f"</body></html>\n"
        )

    def _scripts(self) -> str:
        """The CircuitsVis bundle (once) and a render call per view, at the end of the body."""
        if not self.views:
            return ""
        from hooks.views import views_script

        return views_script(self.views) + "\n"

    def write(self, path: str | Path) -> Path:
        """Write the page atomically."""
        return atomic_write_text(path, self.render())
