"""`reproduce` for the LCA paper: results.json schema (exactly the issue's claim keys, each with
measured / expected / holds), one JSON + PNG per experiment, strict JSON, and seeding."""

import json
import time

import pytest

from mechmem.papers.lca import CLAIM_KEYS, EXPERIMENTS, TASKS, add_cli, reproduce
from mechmem.papers.lca.lab import Settings

EXPECTED_KEYS = {
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
}


def strict_json(path):
    def refuse(name):
        raise AssertionError(f"{path} contains {name}, which is not valid JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("lca")
    return out, reproduce(
        out, quick=True, seed=0, settings=Settings.smoke(), progress=False
    )


def test_results_json_has_exactly_the_claim_keys_with_measured_expected_holds(
    smoke_run,
):
    out, results = smoke_run
    on_disk = strict_json(out / "results.json")
    assert set(on_disk["claims"]) == EXPECTED_KEYS == set(CLAIM_KEYS)
    for name, claim in on_disk["claims"].items():
        assert set(claim) == {"measured", "expected", "holds"}, (
            f"claim {name} has keys {set(claim)}"
        )
        assert (
            isinstance(claim["holds"], bool)
            and isinstance(claim["expected"], str)
            and claim["expected"]
        )
    assert isinstance(on_disk["claims"]["hijack_monotone"]["measured"], bool)
    assert on_disk["claims"] == json.loads(json.dumps(results["claims"]))


def test_every_experiment_writes_json_and_png_and_the_attention_view(smoke_run):
    out, results = smoke_run
    for name in EXPERIMENTS:
        assert name in results["files"], f"experiment {name} wrote nothing"
        strict_json(out / f"{name}.json")
        png = out / "figures" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{png} is not a PNG"
    html = (out / "attention_view.html").read_text()
    assert "unpkg.com" not in html and len(html) > 100_000, (
        "the CircuitsVis view must be self-contained (local_src)"
    )


def test_accuracies_are_fractions_and_gaps_are_points(smoke_run):
    out, _ = smoke_run
    for row in strict_json(out / "wv_bar.json")["rows"]:
        assert 0 <= row["acc_trained"] <= 1 and 0 <= row["acc_identity"] <= 1
        assert row["gap_points"] == pytest.approx(
            100 * (row["acc_trained"] - row["acc_identity"])
        )
    for row in strict_json(out / "dim.json")["rows"]:
        assert 0 <= row["acc_frozen"] <= 1


def test_same_seed_same_measurements(smoke_run):
    _, first = smoke_run
    from mechmem.papers.lca.lab import Lab

    again = EXPERIMENTS["hijack_synthetic"](
        Lab(Settings.smoke(), seed=0, progress=False)
    ).data
    original = json.loads(
        json.dumps(strict_json(smoke_run[0] / "hijack_synthetic.json"))
    )
    assert json.loads(json.dumps(again)) == original, (
        "an experiment must be deterministic given its seed"
    )


def test_package_exposes_tasks_experiments_and_the_hijack_command():
    import argparse

    assert set(TASKS) == {"lca"}
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["hijack", "--model", "gpt2", "--records", "x.jsonl"])
    assert callable(args.func) and args.max_k == 10 and args.score == "first_token"


def test_bad_seed_is_rejected_before_any_work(tmp_path):
    with pytest.raises(TypeError, match="seed"):
        reproduce(tmp_path / "never", quick=True, seed="0")
    assert not (tmp_path / "never").exists()


@pytest.mark.slow
def test_quick_mode_finishes_within_five_minutes(tmp_path):
    start = time.perf_counter()
    results = reproduce(tmp_path, quick=True, seed=0, progress=False)
    assert time.perf_counter() - start < 300, (
        f"quick mode took {time.perf_counter() - start:.0f}s"
    )
    assert set(results["claims"]) == EXPECTED_KEYS
