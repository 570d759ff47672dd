"""The LCA reproduction: its claims (exactly the issue's keys), what its experiments save (accuracies as
fractions, gaps in points, a self-contained attention view), and the hijack command it adds."""

import json

import pytest

from mechmem.papers.lca import EXPERIMENTS, TASKS, add_cli
from mechmem.papers.lca.reproduction import CLAIMS, LCAReproduction
from mechmem.reproducing import run

EXPECTED_KEYS = [
    "wv_trained_vs_identity",
    "wv_constructed_replacement",
    "hamming_inner_spearman",
    "hamming_inner_r2",
    "spectrum_top_energy",
    "attention_cluster_ratio",
    "attention_uniform_drop",
    "length_spearman",
    "dim_spearman",
    "frozen_gap_small_d",
    "frozen_gap_large_d",
    "hijack_flip_rate_max_k",
    "hijack_monotone",
]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("lca")
    return out / "seed-0", run("lca", "smoke", [0], out, progress=False)


def test_the_reproduction_declares_exactly_the_claims_of_the_issue():
    assert [c.key for c in CLAIMS] == EXPECTED_KEYS
    assert LCAReproduction.experiments is EXPERIMENTS
    assert all(c.ours for c in CLAIMS), "the paper's synthetic results are qualitative: every threshold is ours"


def test_hijack_monotone_is_measured_as_a_boolean(smoke_run):
    _, results = smoke_run
    assert isinstance(results["claims"]["hijack_monotone"]["per_seed"]["0"]["measured"], bool)


def test_accuracies_are_fractions_and_gaps_are_points(smoke_run):
    folder, _ = smoke_run
    for row in json.loads((folder / "wv_bar.json").read_text())["rows"]:
        assert 0 <= row["acc_trained"] <= 1 and 0 <= row["acc_identity"] <= 1
        assert row["gap_points"] == pytest.approx(100 * (row["acc_trained"] - row["acc_identity"]))
    for row in json.loads((folder / "dim.json").read_text())["rows"]:
        assert 0 <= row["acc_frozen"] <= 1


def test_the_attention_view_is_self_contained(smoke_run):
    folder, _ = smoke_run
    html = (folder / "attention_view.html").read_text()
    assert "unpkg.com" not in html and len(html) > 100_000, "the CircuitsVis view must inline its script (local_src)"


def test_the_shorter_context_gap_condition_only_applies_when_two_lengths_run():
    from mechmem.claims import Evidence
    from mechmem.papers.lca.presets import SMOKE

    claim = CLAIMS[0]
    rows = [{"L": 16, "gap_points": 12.0}, {"L": 32, "gap_points": 4.0}]
    assert claim.score(Evidence({"wv_bar": {"rows": rows}}, SMOKE))["holds"]
    wider = [{"L": 16, "gap_points": 12.0}, {"L": 32, "gap_points": 20.0}]
    assert not claim.score(Evidence({"wv_bar": {"rows": wider}}, SMOKE))["holds"], "the gap must shrink with L"
    one_length = SMOKE.override(wv_bar_L=(16,))
    assert claim.score(Evidence({"wv_bar": {"rows": rows[:1]}}, one_length))["holds"]


def test_package_exposes_tasks_experiments_and_the_hijack_command():
    import argparse

    assert set(TASKS) == {"lca"}
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["hijack", "--model", "gpt2", "--records", "x.jsonl"])
    assert callable(args.func) and args.max_k == 10 and args.score == "first_token"
