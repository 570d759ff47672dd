"""The claims, experiments and timing tables of the READMEs are generated from the committed results.json files
(`make tables`); this fails when a README is out of date, and checks how the tables read."""

import importlib.util
from pathlib import Path

import pytest

from mechmem.pages.claims_table import claim_cell


def _script(name: str):
    """A module of ``scripts/`` (the README generator lives there, outside the library)."""
    path = Path(__file__).resolve().parents[2] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_tables = _script("claims_tables")
fill, update_readmes = _tables.fill, _tables.update_readmes


def test_readmes_are_up_to_date_with_the_committed_results():
    stale = update_readmes(check=True)
    assert not stale, f"out of date: {[str(p) for p in stale]}; run `make tables` and commit the READMEs"


def test_a_cell_shows_one_seed_or_the_seeds_that_hold_with_the_range():
    one = {"expected": "≥ 1", "holds": True, "per_seed": {"0": {"measured": 1.23456, "holds": True}}}
    assert claim_cell(one, "≥ 1") == "✓ 1.235"
    three = {
        "expected": "≥ 1",
        "holds": False,
        "mean": 1.0,
        "min": 0.5,
        "max": 1.5,
        "per_seed": {
            "0": {"measured": 0.5, "holds": False},
            "1": {"measured": 1.0, "holds": True},
            "2": {"measured": 1.5, "holds": True},
        },
    }
    assert claim_cell(three, "≥ 1") == "✗ 2/3 · 1 (0.5 to 1.5)"
    assert claim_cell(None, "≥ 1") == "—"
    assert "older expectation: ≥ 2" in claim_cell({**one, "expected": "≥ 2"}, "≥ 1"), "a changed threshold shows"


def test_fill_replaces_only_between_markers_and_needs_them():
    text = "a\n<!-- generated:claims -->\nold\n<!-- /generated:claims -->\nb\n"
    assert fill(text, {"claims": "new"}) == "a\n<!-- generated:claims -->\nnew\n<!-- /generated:claims -->\nb\n"
    with pytest.raises(ValueError, match="generated:timings"):
        fill(text, {"timings": "x"})


def test_a_column_names_the_preset_it_ran_when_it_is_not_the_column_s_own():
    from mechmem.pages.claims_table import _column_title

    assert _column_title("full", {"preset": "full", "seeds": [0]}) == "full (seed 0)"
    assert _column_title("full", {"preset": "full-cpu", "seeds": [0]}) == "full (preset full-cpu, seed 0)"
    assert _column_title("quick", {"preset": "quick", "seeds": [0, 1, 2]}) == "quick (seeds 0, 1, 2)"
