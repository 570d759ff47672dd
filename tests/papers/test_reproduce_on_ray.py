"""``mechmem reproduce <paper> --backend ray --address ADDR`` on the two-node cluster of ``make test-ray`` gives
the local backend's numbers, for every paper whose experiments sweep: the same claim values in ``results.json``
and the same result for every configuration of every sweep file (but the wall time some results record). The
local reference is the session's smoke run (``smoke_outputs``: the default local backend, in this process);
scaling also runs ``--backend local --workers 2`` (worker processes) through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mechmem.contract.reproducing import get_reproduction
from mechmem.storage.sweep import read_results

pytestmark = pytest.mark.ray

SWEEPING = ("scaling", "factual")
#: result fields that measure time, not the model (factual's training points record their wall time)
TIMINGS = ("seconds",)


def reproduce(paper: str, out: Path, *backend: str) -> dict:
    """The CLI, as a user runs it (its own process: its own Ray driver)."""
    argv = ["reproduce", paper, "--preset", "smoke", "--out", str(out), "--quiet", *backend]
    code = f"import sys; from mechmem.cli import main; sys.exit(main({argv!r}))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900, env=os.environ)
    assert proc.returncode == 0, f"mechmem {' '.join(argv)} failed:\n{proc.stderr[-3000:]}"
    return json.loads((out / "results.json").read_text())


def sweep_rows(out: Path) -> dict[str, dict[str, object]]:
    """Every sweep file of the run: path in the run folder -> {config key: result without its timings}."""
    files = sorted(p for p in out.rglob("*.jsonl") if (p.parent / f"{p.name}.grid.json").exists())
    return {str(p.relative_to(out)): {r["key"]: untimed(r["result"]) for r in read_results(p)} for p in files}


def untimed(result):
    return {k: v for k, v in result.items() if k not in TIMINGS} if isinstance(result, dict) else result


def claim_values(results: dict) -> dict[str, dict[str, tuple]]:
    """claim -> seed -> (measured, holds)."""
    return {
        key: {s: (e["measured"], e["holds"]) for s, e in claim["per_seed"].items()}
        for key, claim in results["claims"].items()
    }


def assert_same_numbers(paper: str, reference: tuple[Path, dict], other: tuple[Path, dict], what: str) -> None:
    rows_ref, rows = sweep_rows(reference[0]), sweep_rows(other[0])
    assert rows_ref, f"{paper} wrote no sweep file"
    assert rows == rows_ref, f"{paper}: the sweep rows of {what} differ from the local backend's"
    values_ref, values = claim_values(reference[1]), claim_values(other[1])
    assert values_ref, f"{paper}: no claim was scored"
    for key in values_ref:
        assert values.get(key) == values_ref[key], f"{paper} claim {key}: {what} {values.get(key)} vs {values_ref[key]}"
    assert values.keys() == values_ref.keys(), f"{paper}: {what} scored other claims"


def test_every_paper_that_sweeps_is_tested_here():
    def sweeps(paper: str) -> bool:
        experiments = get_reproduction(paper).experiments
        return any(experiments.sweeps(name) for name in experiments)

    assert [p for p in ("lca", "birth", "scaling", "factual") if sweeps(p)] == list(SWEEPING)


@pytest.mark.parametrize("paper", SWEEPING)
def test_reproduce_on_ray_gives_the_local_backends_numbers(paper, ray_address, smoke_outputs, tmp_path):
    reference = smoke_outputs(paper)
    on_ray = reproduce(paper, tmp_path / "ray", "--backend", "ray", "--address", ray_address)
    assert "--backend ray --address" in on_ray["command"], on_ray["command"]
    assert_same_numbers(paper, reference, (tmp_path / "ray", on_ray), "the Ray backend")
    if paper == "scaling":  # the local backend's worker processes, chosen on the command line
        local = reproduce(paper, tmp_path / "local", "--backend", "local", "--workers", "2")
        assert_same_numbers(paper, reference, (tmp_path / "local", local), "--workers 2")
