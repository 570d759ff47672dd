"""Markdown tables of reproduction results (``results.json``): the README tables (``scripts/claims_tables.py``,
``make tables``) and the report page use them, so no number in the docs is typed by hand.

- ``claims``: every declared claim, what the paper says, the expectation, its source, its negative controls, and
  what the quick and full presets measured (each seed, or how many seeds it holds at and the range, and the
  value on each control);
- ``checks``: the checks of the data and set-up, apart from the claims;
- ``experiments``: each experiment, what it does (its docstring) and its wall time per preset;
- ``timings``: how long each preset took, where, when and with which command;
- ``papers`` (top README): one line per paper with how many claims hold.
"""

from __future__ import annotations

from typing import Any

COLUMNS = ("quick", "full")
TIMED = ("smoke", "quick", "full")
HOLDS, FAILS = "✓", "✗"


def _fmt(value: Any) -> str:
    if value is None:
        return "not measured"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _spread(entry: dict, values: list) -> str:
    """``0.95 (0.93 to 0.97)`` over seeds, ``0.95`` for one seed, the values themselves when not numbers."""
    if len(values) == 1:
        return _fmt(values[0])
    if entry.get("mean") is not None and not all(isinstance(v, bool) for v in values):
        if entry["min"] == entry["max"]:
            return _fmt(entry["mean"])
        return f"{_fmt(entry['mean'])} ({_fmt(entry['min'])} to {_fmt(entry['max'])})"
    return ", ".join(_fmt(v) for v in values)


def claim_cell(entry: dict | None, expected: str) -> str:
    """What one preset measured for one claim: ``✓ 0.957`` (one seed) or ``✗ 2/3 · 0.95 (0.93 to 0.97)``; a
    reported value reads ``reported 0.248`` with the verdict of its conditions next to them; a deterministic
    claim says so instead of counting seeds; then each negative control: ``control untrained: fails · 0.12``."""
    if entry is None:
        return "—"
    seeds = entry["per_seed"]
    held = sum(e["holds"] for e in seeds.values())
    mark = HOLDS if entry["holds"] else FAILS
    count = f"{held}/{len(seeds)} · " if len(seeds) > 1 and entry.get("seeded", True) else ""
    value = _spread(entry, [e["measured"] for e in seeds.values()])
    if not entry.get("seeded", True):
        count = "deterministic" + (" (but the seeds differ!)" if entry.get("varies_with_seed") else "") + " · "
    if entry.get("reported"):
        conditions = "; ".join(
            f"{label}: {_spread(c, [e.get('conditions', {}).get(label) for e in seeds.values()])}"
            for label, c in entry.get("conditions", {}).items()
        )
        text = f"reported {value}; {mark} {count}{conditions or 'its conditions'}"
    else:
        text = f"{mark} {count}{value}"
    if entry.get("expected") != expected:
        text += f" (measured against an older expectation: {entry.get('expected')})"
    for name, control in entry.get("controls", {}).items():
        text += "<br>" + control_cell(name, control, len(seeds))
    return text


def control_cell(name: str, control: dict, n_seeds: int) -> str:
    """One negative control of a claim: whether the claim fails on it (it must) and the value measured on it."""
    failing = round(control["fraction_failing"] * n_seeds)
    verdict = f"fails {failing}/{n_seeds}" if n_seeds > 1 else "fails"
    if not control["fails"]:
        verdict = f"⚠ does not fail ({failing}/{n_seeds} fail)" if n_seeds > 1 else "⚠ does not fail"
    values = [control["mean"]] if control.get("min") == control.get("max") else [control["min"], control["max"]]
    spread = (
        _fmt(values[0]) if len(values) == 1 else f"{_fmt(control['mean'])} ({_fmt(values[0])} to {_fmt(values[1])})"
    )
    return f"control {name}: {verdict} · {spread}"


def _column_title(preset: str, results: dict | None) -> str:
    if results is None:
        return preset
    seeds = results["seeds"]
    ran = f"preset {results['preset']}, " if results.get("preset", preset) != preset else ""
    return f"{preset} ({ran}seed{'s' * (len(seeds) > 1)} {', '.join(map(str, seeds))})"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|").replace("\n", " ") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _controls_of(reproduction, claim) -> str:
    about = reproduction.experiments.all_controls()
    return "<br>".join(f"{name}: {about.get(name, '')}" for name in claim.controls) or "none"


def claims_table(reproduction, results: dict[str, dict | None], kind: str = "claims") -> str:
    """The claims (``kind="checks"``: the checks) of a paper with what each preset measured."""
    checks = kind == "checks"
    header = ["check" if checks else "claim", "what it tests" if checks else "what the paper says", "expected"]
    header += [] if checks else ["source", "negative control (the claim must fail on it)"]
    header += [_column_title(p, results[p]) for p in COLUMNS]
    rows = []
    for claim in reproduction.checks if checks else reproduction.claims:
        expected = claim.expected + (" (our threshold)" if claim.ours else "")
        row = [f"`{claim.key}`", claim.statement, expected]
        row += [] if checks else [claim.source, _controls_of(reproduction, claim)]
        for preset in COLUMNS:
            res = results[preset]
            if res is None:
                row.append("not run")
            elif not claim.applies_to(preset):
                row.append("— (not in this preset)")
            else:
                found = res.get(kind, {}).get(claim.key)
                row.append(claim_cell(found, claim.expected) if found else "not measured by this run")
        rows.append(row)
    return markdown_table(header, rows) + "\n\n" + _legend(results, kind)


def _legend(results: dict[str, dict | None], kind: str) -> str:
    notes = []
    for preset in COLUMNS:
        res = results[preset]
        if res is None:
            continue
        s, at = res["summary"], " at every seed" if len(res["seeds"]) > 1 else ""
        if kind == "checks":
            notes.append(f"{preset}: {s.get('checks_hold_at_every_seed', 0)}/{s.get('checks', 0)} checks hold{at}")
            continue
        note = f"{preset}: {s['hold_at_every_seed']}/{s['claims']} claims hold{at}"
        if "controls" in s:
            note += f", {s['controls_failing_at_every_seed']}/{s['controls']} controls fail them{at}"
        notes.append(note)
    what = (
        "checks test the data, the set-up or an identity; they are not claims and are not counted as such"
        if kind == "checks"
        else "a negative control is the same measurement where the mechanism is absent: the claim must fail on it"
    )
    legend = (
        f"{HOLDS} holds, {FAILS} does not; with several seeds: the number of seeds at which it holds, the mean "
        f"and the range; {what}. Generated from `results/<preset>.json` by `make tables`."
    )
    return "; ".join(notes) + (". " if notes else "") + legend


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min"


def experiments_table(reproduction, results: dict[str, dict | None]) -> str:
    header = ["experiment", "what it does", "negative controls it runs"] + [f"{p} (wall, per seed)" for p in TIMED]
    rows = []
    for name, fn in reproduction.experiments.items():
        doc = " ".join((fn.__doc__ or "").split())
        controls = reproduction.experiments.controls(name)
        row = [f"`{name}`", doc, "<br>".join(f"`{c}`: {about}" for c, about in controls.items()) or "—"]
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


def papers_table(reproductions: dict, results_by_paper: dict[str, dict[str, dict | None]]) -> str:
    """One row per paper: how many claims hold in the quick and full results."""
    header = ["paper", "reproduction", "quick", "full"]
    rows = []
    for paper, repro in reproductions.items():
        results = results_by_paper[paper]
        cells = []
        for preset in COLUMNS:
            res = results[preset]
            if res is None:
                cells.append("not run")
                continue
            s, seeds = res["summary"], res["seeds"]
            ran = f"preset {res['preset']}, " if res.get("preset", preset) != preset else ""
            cell = f"{s['hold_at_every_seed']}/{s['claims']} claims hold"
            cell += f" at all {len(seeds)} seeds" if len(seeds) > 1 else f" ({ran}seed {seeds[0]})"
            if "controls" in s:
                cell += f"; {s['controls_failing_at_every_seed']}/{s['controls']} controls fail them"
                cell += f"; {s['checks_hold_at_every_seed']}/{s['checks']} checks hold" if s["checks"] else ""
            cells.append(cell)
        rows.append([repro.title, f"[`mechmem/papers/{paper}`](mechmem/papers/{paper}/README.md)", *cells])
    return markdown_table(header, rows)
