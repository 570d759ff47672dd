"""The page of ``mechmem report`` (:mod:`mechmem.pages.report`), built from every paper's checked results.

One :class:`mechmem.pages.page.Page`: an index; "At a glance" (every paper's claims count and time); per paper
its claims table (the paper's expectation, what each seed measured and whether it holds, the mean, the
spread and the fraction of seeds at which it holds), its key figures with captions, the circuits of its
representative trained model (the sections of ``mechmem inspect``, under the paper's section) and the time
each part took; then the provenance. Written into a fresh folder with ``summary.md``.
"""

from __future__ import annotations

import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from mechmem.contract.reproducing import get_reproduction
from mechmem.pages.page import Page, Section, escape, format_cell, inline
from mechmem.pages.report_options import Collected, ReportOptions
from mechmem.storage.files import atomic_write_json, atomic_write_text

CSS = """<style>
table.claims { width: 100%; } table.claims td, table.claims th { vertical-align: top; }
table.claims td.claim { width: 46%; } table.claims td.expected { width: 20%; }
.small { font-size: 12.5px; color: #4a5163; } .muted { color: #7a8194; }
td.ok { background: #eef8f0; } td.bad { background: #fdf0ef; }
td.ok .mark { color: #17733a; font-weight: 700; } td.bad .mark { color: #b42318; font-weight: 700; }
.glance td a { text-decoration: none; color: #24459a; font-weight: 600; }
.figures { display: grid; grid-template-columns: 1fr 1fr; column-gap: 24px; align-items: start; }
.figures figure { margin: 10px 0 18px; } .figures figure.wide { grid-column: 1 / span 2; }
</style>"""

HOLDS, FAILS = "✓", "✗"
#: figures wider than this (pixels) take a whole row of the figure grid
WIDE_PX = 760
#: examples the inspect sections use for ablations and patching, per preset
INSPECT_BATCH = {"smoke": 32, "quick": 128, "full": 128}


def title_parts(title: str) -> tuple[str, str]:
    """``"Authors (venue year): Title"`` -> ``("Authors (venue year)", "Title")``."""
    authors, sep, name = title.partition("): ")
    return (authors + ")", name) if sep else ("", title)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 90:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


# ----------------------------------------------------------------------------- claims


def _measured_cell(entry: dict | None) -> str:
    if entry is None:
        return "<td>&ndash;</td>"
    ok = bool(entry.get("holds"))
    extra = "".join(
        f'<div class="small">{escape(label)}: {format_cell(value)}</div>'
        for label, value in (entry.get("conditions") or {}).items()
    )
    return (
        f'<td class="{"ok" if ok else "bad"}"><span class="mark">{HOLDS if ok else FAILS}</span> '
        f"{format_cell(entry.get('measured'))}{extra}</td>"
    )


def claims_table(results: dict) -> str:
    """Every claim: statement and source, the expectation, each seed's measurement (✓ / ✗), and over the
    seeds the mean, the spread (standard deviation; range) and the fraction of seeds at which it holds."""
    seeds = [str(s) for s in results["seeds"]]
    several = len(seeds) > 1
    head = '<th class="text">claim</th><th class="text">paper expectation</th>'
    head += "".join(f"<th>seed {s}: measured</th>" for s in seeds)
    head += "<th>mean</th><th>spread: std (range)</th>" if several else ""
    head += "<th>holds at</th>"
    rows = []
    for key, claim in results["claims"].items():
        ours = ' <span class="small" title="the paper states no number: the threshold is ours">(our threshold)</span>'
        cells = [
            f'<td class="text claim"><b>{escape(key)}</b><div class="small">{inline(claim.get("statement", ""))}'
            f'</div><div class="small muted">{escape(claim.get("source", ""))}</div></td>',
            f'<td class="text expected">{escape(claim.get("expected", ""))}{ours if claim.get("ours") else ""}</td>',
        ]
        cells += [_measured_cell(claim["per_seed"].get(s)) for s in seeds]
        if several:
            spread = (
                f"{format_cell(claim['std'])} ({format_cell(claim['min'])} to {format_cell(claim['max'])})"
                if claim.get("std") is not None
                else "&ndash;"
            )
            cells += [f"<td>{format_cell(claim.get('mean'))}</td>", f"<td>{spread}</td>"]
        held = round(claim["fraction_holding"] * len(seeds))
        cells.append(f'<td class="{"ok" if claim["holds"] else "bad"}">{held}/{len(seeds)}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="claims"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


# ----------------------------------------------------------------------------- one paper


def _figures(results: dict, folder: Path, seed: int) -> dict[str, Path]:
    """The PNG files one seed wrote, by figure name."""
    files = results["runs"][str(seed)]["files"]
    return {Path(f).stem: folder / f for names in files.values() for f in names if f.endswith(".png")}


def _png_width(path: Path) -> int:
    """A PNG's width in pixels (from its header)."""
    return int.from_bytes(path.read_bytes()[16:20], "big")


def figures_section(sec: Section, item: Collected) -> list[str]:
    """The paper's key figures (of its first seed) with their captions, two to a row; wide ones span the row."""
    repro, results = get_reproduction(item.paper), item.results
    seed = results["seeds"][0]
    pngs = _figures(results, item.source.folder, seed)
    shown = [name for name in repro.report_figures if name in pngs]
    sub = sec.subsection(
        "Key figures",
        f"The figures of seed {seed}"
        + (" (each seed's figures are in its folder)." if len(results["seeds"]) > 1 else "."),
    )
    sub.html('<div class="figures">')
    for name in shown:
        sub.figure(pngs[name], f"{repro.report_figures[name]} (`{name}.png`)")
        if _png_width(pngs[name]) > WIDE_PX:
            sub.blocks[-1] = sub.blocks[-1].replace("<figure>", '<figure class="wide">', 1)
    sub.html("</div>")
    others = sorted(set(pngs) - set(shown))
    if others:
        sub.text(
            f"Other figures in `{item.source.folder / f'seed-{seed}' / 'figures'}`: "
            + ", ".join(f"`{n}.png`" for n in others)
            + "."
        )
    return shown


def circuits_section(sec: Section, item: Collected, folder: Path, options: ReportOptions) -> dict:
    """The inspect sections of the paper's representative model (first seed), under ``sec``."""
    from mechmem.core.threads import torch_threads
    from mechmem.pages.inspect_page import Inspection, build_sections
    from mechmem.pages.inspection import VOCAB_LIMIT, InspectOptions, prepare

    seed = item.results["seeds"][0]
    model_dir = item.source.folder / item.results["runs"][str(seed)]["model"]
    inputs = prepare(
        model_dir,
        InspectOptions(
            n_examples=options.examples,
            batch_size=INSPECT_BATCH[options.preset],
            max_vocab=VOCAB_LIMIT,
            progress=options.progress,
            allow_no_manifest=options.allow_no_manifest,
        ),
        command=f"mechmem inspect {model_dir}",
    )
    about = inputs["config"].get("representative", {}).get("about", "")
    sub = sec.subsection(
        "Circuits of a trained model",
        (
            f"{about[:1].upper() + about[1:]} (seed {seed}, saved as the run folder `{model_dir}`; "
            f"`mechmem inspect {model_dir}` draws the same views on a page of their own)."
        ),
    )
    out = folder / item.paper
    out.mkdir()
    ins = Inspection(out, parent=sub, links=f"{item.paper}/", **inputs)
    with torch_threads(1):  # tiny models: a second thread only slows a busy machine down
        summary = build_sections(ins)
    atomic_write_json(out / "inspect.json", summary)
    return {"model": str(model_dir), "about": about, "numbers": f"{item.paper}/inspect.json"}


def time_section(sec: Section, item: Collected) -> Section:
    """How long each experiment of each seed took; :func:`report_times` adds this report's parts."""
    results = item.results
    seeds = [str(s) for s in results["seeds"]]
    names = list(dict.fromkeys(n for s in seeds for n in results["runs"][s]["experiments"]))
    rows = []
    for name in names:
        row = {"part": f"experiment {name}"}
        for s in seeds:
            t = results["runs"][s]["experiments"].get(name)
            row[s] = f"{duration(t['wall_s'])} ({duration(t['cpu_s'])} CPU)" if t else None
        rows.append(row)
    rows.append(
        {
            "part": "the whole seed",
            **{
                s: f"{duration(results['runs'][s]['wall_s'])} ({duration(results['runs'][s]['cpu_s'])} CPU)"
                for s in seeds
            },
        }
    )
    sub = sec.subsection("Time")
    machine = results.get("machine", {})
    load = machine.get("load_average_at_start")
    sub.table(
        rows,
        {"part": "part of the reproduction", **{s: f"seed {s}: wall (CPU)" for s in seeds}},
        caption=(
            f"The reproduction: {duration(results['wall_s'])} wall, {duration(results['cpu_s'])} CPU in all "
            f"({results['jobs']} process{'es' * (results['jobs'] > 1)}, {machine.get('cpu_count')} CPUs"
            + (f", load {load[0]:.1f} at the start" if load else "")
            + f"), started {results['started_at']}."
        ),
    )
    return sub


def report_times(sub: Section, item: Collected, parts: dict[str, float]) -> None:
    ran = "ran the reproduction" if not item.source.collect else "collected and checked the results"
    rows = [
        {"part": f"this report {ran}", "seconds": parts["gather"]},
        {"part": "claims and figures on the page", "seconds": parts["page"]},
    ]
    if "circuits" in parts:
        rows.append({"part": "the circuits of the trained model", "seconds": parts["circuits"]})
    sub.table(rows, {"part": "part of this report", "seconds": "seconds"}, formats={"seconds": "{:.1f}"})


def paper_intro(sec: Section, item: Collected) -> None:
    """Who wrote the paper, the preset and seeds, how many claims hold, where the results are."""
    results, s = item.results, item.results["summary"]
    authors, name = title_parts(results["title"])
    at = f" at all {len(results['seeds'])} seeds" if len(results["seeds"]) > 1 else ""
    seeds = ", ".join(map(str, results["seeds"]))
    sec.html(
        f"<p>{escape(authors)}, <i>{escape(name)}</i>. The {escape(results['preset'])} preset, "
        f"seed{'s' * bool(at)} {seeds}: <b>{s['hold_at_every_seed']} of {s['claims']} claims hold{at}</b>.</p>"
        f'<p class="small">Results: <code>{escape(item.source.folder)}</code> ({_origin(item.source)}); '
        f"made by <code>{escape(results['command'])}</code>.</p>"
    )
    if not get_reproduction(item.paper).saves_model:
        sec.html(
            '<p class="small">No circuit views: this reproduction trains no sequence model (its memories are '
            "matrices studied directly).</p>"
        )


def _origin(source) -> str:
    """Where the results came from, in words: run now, or collected (and why)."""
    if source.collect:
        return f"collected: {escape(source.why)}"
    why = "--rerun was given" if source.why == "--rerun" else "no results there before"
    return f"run by this report: {why}"


def paper_record(item: Collected, figures: list[str]) -> dict:
    """What ``report.json`` keeps of one paper: where its results are, and its claims over the seeds."""
    keys = ("expected", "mean", "std", "min", "max", "fraction_holding", "holds", "per_seed")
    results = item.results
    return {
        "folder": str(item.source.folder),
        "collected": item.source.collect,
        "why": item.source.why,
        "seeds": results["seeds"],
        "summary": results["summary"],
        "figures": figures,
        "claims": {k: {key: c.get(key) for key in keys} for k, c in results["claims"].items()},
    }


def paper_section(page: Page, folder: Path, item: Collected, options: ReportOptions) -> tuple[Section, dict]:
    """One paper: intro, claims, key figures, time, and the circuits of its trained model."""
    start = time.perf_counter()
    sec = page.section(f"{item.paper}: {title_parts(item.results['title'])[1]}")
    if item.paper not in page.anchors:  # a short link: report/index.html#lca
        page.anchors.add(item.paper)
        sec.anchor = item.paper
    paper_intro(sec, item)
    claims = sec.subsection("Claims")
    claims.html(claims_table(item.results))
    claims.text(
        f"{HOLDS} holds, {FAILS} does not, at that seed; conditions under a measurement must hold too. "
        "Spread over seeds: population standard deviation, then the range."
    )
    record = paper_record(item, figures_section(sec, item))
    times = time_section(sec, item)
    parts = {"gather": item.seconds, "page": time.perf_counter() - start}
    if get_reproduction(item.paper).saves_model:
        start = time.perf_counter()
        record["circuits"] = circuits_section(sec, item, folder, options)
        parts["circuits"] = time.perf_counter() - start
    report_times(times, item, parts)
    record["timings"] = {
        **parts,
        "reproduction_wall_s": item.results["wall_s"],
        "reproduction_cpu_s": item.results["cpu_s"],
    }
    return sec, record


# ----------------------------------------------------------------------------- the page


def glance(sec: Section, collected: list[Collected], sections: list[Section]) -> None:
    rows = []
    for item, paper_sec in zip(collected, sections):
        r, s = item.results, item.results["summary"]
        authors, name = title_parts(r["title"])
        ok = s["hold_at_every_seed"] == s["claims"]
        rows.append(
            f'<tr><td class="text"><a href="#{paper_sec.anchor}">{escape(item.paper)}</a></td>'
            f'<td class="text">{escape(name)}<div class="small">{escape(authors)}</div></td>'
            f'<td class="{"ok" if ok else ""}">{s["hold_at_every_seed"]} / {s["claims"]}</td>'
            f"<td>{escape(', '.join(map(str, r['seeds'])))}</td><td>{duration(r['wall_s'])}</td>"
            f'<td class="text small">{"ran by this report" if not item.source.collect else "collected"}</td></tr>'
        )
    head = (
        "<th>paper</th><th class='text'>title</th><th>claims holding at every seed</th><th>seeds</th>"
        "<th>reproduction wall time</th><th>results</th>"
    )
    sec.html(CSS + f'<table class="glance"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>')


def provenance(page: Page, options: ReportOptions, command: str, timings: dict[str, dict], total: float) -> dict:
    from mechmem.contract.runner import versions

    info = {
        "command": command,
        "made": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "preset": options.preset,
        **versions(),
        "platform": platform.platform(),
        "report wall time (s)": round(total, 1),
    }
    sec = page.section("Provenance")
    sec.key_values(info)
    rows = [
        {"paper": p, "results": t["gather"], "circuits": t.get("circuits"), "page": t["page"]}
        for p, t in timings.items()
    ]
    sec.table(
        rows,
        {
            "paper": "paper",
            "results": "running or collecting (s)",
            "circuits": "circuits (s)",
            "page": "claims and figures (s)",
        },
        caption="Time each part of this report took.",
        formats=dict.fromkeys(("results", "circuits", "page"), "{:.1f}"),
    )
    return info


def summary_markdown(collected: list[Collected], info: dict) -> str:
    """The claims of every paper in markdown (``summary.md``): a small, committable record of the report."""
    from mechmem.pages.claims_table import claim_cell, markdown_table

    lines = [
        f"# mechmem report: {info['preset']} preset",
        "",
        f"Made by `{info['command']}` on {info['made']} (mechmem {info['mechmem']}, commit "
        f"{info.get('git_commit') or 'unknown'}). The full report, with figures and circuits, is the "
        "`index.html` next to this file.",
        "",
    ]
    rows = []
    for item in collected:
        r, s = item.results, item.results["summary"]
        rows.append(
            [
                f"`{item.paper}`",
                title_parts(r["title"])[1],
                f"{s['hold_at_every_seed']}/{s['claims']}",
                ", ".join(map(str, r["seeds"])),
                duration(r["wall_s"]),
            ]
        )
    lines += [markdown_table(["paper", "title", "claims holding at every seed", "seeds", "wall time"], rows), ""]
    for item in collected:
        r = item.results
        lines += [f"## {item.paper}: {r['title']}", ""]
        rows = [
            [f"`{k}`", c["expected"] + (" (our threshold)" if c.get("ours") else ""), claim_cell(c, c["expected"])]
            for k, c in r["claims"].items()
        ]
        lines += [
            markdown_table(["claim", "expected", f"measured (seeds {', '.join(map(str, r['seeds']))})"], rows),
            "",
        ]
    lines.append(
        f"{HOLDS} holds, {FAILS} does not; with several seeds: the number of seeds at which it holds, the "
        "mean and the range."
    )
    return "\n".join(lines) + "\n"


def build_page(folder: Path, collected: list[Collected], options: ReportOptions, command: str, started: float) -> dict:
    """The whole report in ``folder``: ``index.html``, ``summary.md`` and the circuit files; returns every
    number shown (what ``report.json`` holds)."""
    from tqdm.auto import tqdm

    count = {1: "one paper", 2: "two papers", 3: "three papers", 4: "four papers"}.get(len(collected), "papers")
    page = Page(
        f"mechmem report: {count} at the {options.preset} preset",
        subtitle=(
            "Transformers as associative memories: what each paper claims, what this code measures, the figures, "
            "and the circuits of a trained model."
        ),
    )
    intro = page.section(
        "At a glance",
        (
            "Each reproduction declares its claims: the paper's statement, an expectation (the paper's number with "
            "our tolerance, or our threshold where the paper gives none) and what the code measures. A claim holds "
            "at a seed when the measurement meets the expectation."
        ),
    )
    sections, timings, papers = [], {}, {}
    for item in tqdm(collected, desc="report", unit="paper", disable=not options.progress, file=sys.stderr):
        sec, record = paper_section(page, folder, item, options)
        sections.append(sec)
        papers[item.paper], timings[item.paper] = record, record["timings"]
    glance(intro, collected, sections)
    info = provenance(page, options, command, timings, time.time() - started)
    page.write(folder / "index.html")
    atomic_write_text(folder / "summary.md", summary_markdown(collected, info))
    return {"provenance": info, "papers": papers}
