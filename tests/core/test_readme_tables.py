"""The claims, experiments and timing tables of the READMEs are generated from the committed results.json files
(`make tables`); this fails when a README is out of date, and checks how the tables read."""

import pytest

from mechmem.tables import claim_cell, fill, update_readmes


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
