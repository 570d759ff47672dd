"""The READMEs' tables, generated from the committed ``results.json`` files: no number in the docs is typed by hand.

Each paper commits the ``results.json`` of its runs as ``mechmem/papers/<paper>/results/<preset>.json``. This
module renders, between markers in the READMEs (``<!-- generated:NAME -->`` ... ``<!-- /generated:NAME -->``):

- ``claims``: every declared claim, what the paper says, the expectation, its source, and what the quick
  and full presets measured (each seed, or how many seeds it holds at and the range);
- ``experiments``: each experiment, what it does (its docstring) and its wall time per preset;
- ``timings``: how long each preset took, where, when and with which command;
- ``papers`` (top README): one line per paper with how many claims hold.

``scripts/claims_tables.py`` (``make tables``) rewrites the READMEs; ``--check`` only reports stale ones.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from mechmem.io import atomic_write_text

ROOT = Path(__file__).resolve().parent.parent
PAPERS_DIR = ROOT / "mechmem" / "papers"
COLUMNS = ("quick", "full")
TIMED = ("smoke", "quick", "full")
HOLDS, FAILS = "✓", "✗"


def results_file(paper: str, preset: str) -> Path:
    return PAPERS_DIR / paper / "results" / f"{preset}.json"


def load_results(paper: str) -> dict[str, dict | None]:
    """Every preset's committed results (``None`` where a preset has not been run)."""
    out = {}
    for preset in TIMED:
        path = results_file(paper, preset)
        out[preset] = json.loads(path.read_text()) if path.is_file() else None
    return out


def _fmt(value: Any) -> str:
    if value is None:
        return "not measured"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def claim_cell(entry: dict | None, expected: str) -> str:
    """What one preset measured for one claim: ``✓ 0.957`` (one seed) or ``✗ 2/3 · 0.95 (0.93 to 0.97)``."""
    if entry is None:
        return "—"
    seeds = entry["per_seed"]
    held = sum(e["holds"] for e in seeds.values())
    mark = HOLDS if entry["holds"] else FAILS
    if len(seeds) == 1:
        text = f"{mark} {_fmt(next(iter(seeds.values()))['measured'])}"
    else:
        values = [e["measured"] for e in seeds.values()]
        if entry.get("mean") is not None and not all(isinstance(v, bool) for v in values):
            spread = f"{_fmt(entry['mean'])} ({_fmt(entry['min'])} to {_fmt(entry['max'])})"
        else:
            spread = ", ".join(_fmt(v) for v in values)
        text = f"{mark} {held}/{len(seeds)} · {spread}"
    if entry.get("expected") != expected:
        text += f" (measured against an older expectation: {entry.get('expected')})"
    return text


def _column_title(preset: str, results: dict | None) -> str:
    if results is None:
        return preset
    seeds = results["seeds"]
    return f"{preset} (seed{'s' * (len(seeds) > 1)} {', '.join(map(str, seeds))})"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|").replace("\n", " ") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def claims_table(reproduction, results: dict[str, dict | None]) -> str:
    header = ["claim", "what the paper says", "expected", "source"]
    header += [_column_title(p, results[p]) for p in COLUMNS]
    rows = []
    for claim in reproduction.claims:
        expected = claim.expected + (" (our threshold)" if claim.ours else "")
        row = [f"`{claim.key}`", claim.statement, expected, claim.source]
        for preset in COLUMNS:
            res = results[preset]
            if res is None:
                row.append("not run")
            elif not claim.applies_to(preset):
                row.append("— (not in this preset)")
            else:
                row.append(claim_cell(res["claims"].get(claim.key), claim.expected))
        rows.append(row)
    notes = []
    for preset in COLUMNS:
        res = results[preset]
        if res is not None:
            s = res["summary"]
            at = " at every seed" if len(res["seeds"]) > 1 else ""
            notes.append(f"{preset}: {s['hold_at_every_seed']}/{s['claims']} claims hold{at}")
    legend = (
        f"{HOLDS} holds, {FAILS} does not; with several seeds: the number of seeds at which it holds, the mean "
        "and the range. Generated from `results/<preset>.json` by `make tables`."
    )
    return markdown_table(header, rows) + "\n\n" + "; ".join(notes) + (". " if notes else "") + legend


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min"


def experiments_table(reproduction, results: dict[str, dict | None]) -> str:
    header = ["experiment", "what it does"] + [f"{p} (wall, per seed)" for p in TIMED]
    rows = []
    for name, fn in reproduction.experiments.items():
        doc = " ".join((fn.__doc__ or "").split())
        row = [f"`{name}`", doc]
        for preset in TIMED:
            res = results[preset]
            if res is None:
                row.append("not run")
                continue
            walls = [r["experiments"][name]["wall_s"] for r in res["runs"].values() if name in r["experiments"]]
            row.append(_duration(sum(walls) / len(walls)) if walls else "not in this preset")
        rows.append(row)
    return markdown_table(header, rows)


def timings_table(results: dict[str, dict | None]) -> str:
    header = ["preset", "seeds", "wall time", "CPU time", "machine", "versions", "date", "command"]
    rows = []
    for preset in TIMED:
        res = results[preset]
        if res is None:
            rows.append([preset] + ["not run"] + [""] * 6)
            continue
        m, v = res["machine"], res["versions"]
        load = m.get("load_average_at_start")
        machine = f"{m['cpu_count']} CPUs" + (f", load {load[0]:.1f} at start" if load else "")
        rows.append(
            [
                preset,
                ", ".join(map(str, res["seeds"])) + f" ({res['jobs']} process{'es' * (res['jobs'] > 1)})",
                _duration(res["wall_s"]),
                _duration(res["cpu_s"]),
                machine,
                f"torch {v['torch']}, TransformerLens {v['transformer_lens']}",
                res["started_at"][:10],
                f"`{res['command']}`",
            ]
        )
    return markdown_table(header, rows)


def papers_table(reproductions: dict) -> str:
    header = ["paper", "reproduction", "quick", "full"]
    rows = []
    for paper, repro in reproductions.items():
        results = load_results(paper)
        cells = []
        for preset in COLUMNS:
            res = results[preset]
            if res is None:
                cells.append("not run")
                continue
            s, seeds = res["summary"], res["seeds"]
            cells.append(
                f"{s['hold_at_every_seed']}/{s['claims']} claims hold"
                + (f" at all {len(seeds)} seeds" if len(seeds) > 1 else f" (seed {seeds[0]})")
            )
        rows.append([repro.title, f"[`mechmem/papers/{paper}`](mechmem/papers/{paper}/README.md)", *cells])
    return markdown_table(header, rows)


# --- README blocks -----------------------------------------------------------------------------------------

BLOCK = re.compile(r"(<!-- generated:(?P<name>[a-z]+) -->\n)(?P<body>.*?)(<!-- /generated:(?P=name) -->)", re.S)


def fill(text: str, blocks: dict[str, str], where: str = "README") -> str:
    """``text`` with each generated block replaced by ``blocks[name]`` (every block must be there)."""
    found = {m.group("name") for m in BLOCK.finditer(text)}
    missing = sorted(set(blocks) - found)
    if missing:
        raise ValueError(f"{where}: no <!-- generated:{missing[0]} --> ... <!-- /generated:{missing[0]} --> markers")
    return BLOCK.sub(
        lambda m: m.group(1) + blocks.get(m.group("name"), m.group("body").rstrip("\n")) + "\n" + m.group(4), text
    )


def paper_blocks(paper: str, reproduction) -> dict[str, str]:
    results = load_results(paper)
    return {
        "claims": claims_table(reproduction, results),
        "experiments": experiments_table(reproduction, results),
        "timings": timings_table(results),
    }


def update_readmes(check: bool = False) -> list[Path]:
    """Regenerate every README's tables; returns the files that were (``check``: would be) changed."""
    from mechmem.reproducing import reproductions

    repros = reproductions()
    targets = {PAPERS_DIR / paper / "README.md": paper_blocks(paper, repro) for paper, repro in repros.items()}
    targets[ROOT / "README.md"] = {"papers": papers_table(repros)}
    changed = []
    for path, blocks in targets.items():
        old = path.read_text()
        new = fill(old, blocks, str(path.relative_to(ROOT)))
        if new != old:
            changed.append(path)
            if not check:
                atomic_write_text(path, new)
    return changed
