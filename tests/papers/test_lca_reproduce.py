"""The LCA reproduction: its claims (exactly the issue's keys), what its experiments save (accuracies as
fractions, gaps in points, a self-contained attention view)."""

import json

import pytest

from mechmem.contract.runner import run
from mechmem.papers.lca import EXPERIMENTS, TASKS
from mechmem.papers.lca.reproduction import CHECKS, CLAIMS, LCAReproduction

EXPECTED_KEYS = [
    "wv_trained_vs_identity",
    "wv_gap_shrinks_with_L",
    "wv_constructed_replacement",
    "hamming_inner_spearman",
    "hamming_inner_r2",
    "hamming_inner_bitflip_r2",
    "spectrum_top_energy",
    "attention_cluster_ratio",
    "attention_uniform_drop",
    "length_spearman",
    "dim_monotone",
    "frozen_gap_small_d",
    "frozen_gap_large_d",
    "hijack_follows_evidence",
    "hijack_monotone",
]
EXPECTED_CHECKS = ["hijack_flip_rate_max_k", "identity_is_hamming_vote", "constructed_memory_is_bayes"]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("lca")
    return out / "seed-0", run("lca", "smoke", [0], out, progress=False)


def test_the_reproduction_declares_exactly_the_claims_of_the_issue():
    assert [c.key for c in CLAIMS] == EXPECTED_KEYS
    assert [c.key for c in CHECKS] == EXPECTED_CHECKS, "the hijack set-up and the construction are checks, not claims"
    assert LCAReproduction.experiments is EXPERIMENTS
    qualitative = {"wv_gap_shrinks_with_L"}  # the paper's own statement, no threshold
    assert all(c.ours for c in CLAIMS if c.key not in qualitative), "every numeric threshold here is ours"
    assert all(not c.ours for c in CLAIMS if c.key in qualitative)


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


def test_the_gap_claims_read_L_64_and_the_trend_over_the_whole_L_grid():
    from mechmem.contract.claims import Evidence
    from mechmem.papers.lca.presets import QUICK

    claims = {c.key: c for c in CLAIMS}
    rows = [
        {"L": 16, "gap_points": 30.0},
        {"L": 64, "gap_points": 12.0},
        {"L": 64, "gap_points": 9.0},
        {"L": 128, "gap_points": 4.0},
    ]
    scored = claims["wv_trained_vs_identity"].score(Evidence({"wv_bar": {"rows": rows}}, QUICK))
    assert scored["measured"] == pytest.approx(10.5) and scored["holds"], "mean over m of the L = 64 rows"
    assert claims["wv_gap_shrinks_with_L"].score(Evidence({"wv_bar": {"rows": rows}}, QUICK))["holds"]
    bump = rows[:3] + [{"L": 128, "gap_points": 11.0}]
    assert not claims["wv_gap_shrinks_with_L"].score(Evidence({"wv_bar": {"rows": bump}}, QUICK))["holds"], (
        "the gap must fall at every step of the L grid"
    )
    one_length = QUICK.override(wv_bar_L=(64,))
    single = claims["wv_gap_shrinks_with_L"].score(Evidence({"wv_bar": {"rows": rows[1:3]}}, one_length))
    assert single["measured"] is None and not single["holds"], "a single L cannot show a trend"


def test_dim_monotone_counts_only_drops_beyond_sampling_noise():
    from mechmem.papers.lca.experiments import drops_beyond_2_se

    # at the ceiling, 0.9985 -> 0.998 -> 0.997 on 2000 sequences is noise (Spearman would call it a fall)
    assert drops_beyond_2_se([0.27, 0.74, 0.97, 0.9985, 0.998, 0.997], 2000) == 0
    assert drops_beyond_2_se([0.27, 0.74, 0.97, 0.93, 0.998], 2000) == 1, "a 4-point fall is a real drop"
    assert drops_beyond_2_se([0.5, 0.47], 400) == 0 and drops_beyond_2_se([0.5, 0.40], 400) == 1


def test_wv_bar_rows_carry_the_bayes_and_hamming_vote_references(smoke_run):
    folder, _ = smoke_run
    for row in json.loads((folder / "wv_bar.json").read_text())["rows"]:
        assert 0 <= row["acc_hamming_vote"] <= row["acc_bayes"] + 0.05 <= 1.05, row
        assert row["acc_trained"] <= row["acc_bayes"] + 0.05, f"no model beats the Bayes predictor by much: {row}"


def test_hamming_inner_reports_the_bitflip_model(smoke_run):
    folder, _ = smoke_run
    data = json.loads((folder / "hamming_inner.json").read_text())
    assert set(data) == {"trained_W_V", "identity_W_V", "generator_trained_W_V"}
    assert data["generator_trained_W_V"]["neighbourhood"].startswith("bitflip")
    assert len(data["generator_trained_W_V"]["mean_inner"]) == data["generator_trained_W_V"]["m"] + 1


def test_package_exposes_its_task_and_experiments():
    assert set(TASKS) == {"lca"} and "hijack_synthetic" in EXPERIMENTS


def test_hijack_follows_evidence_reads_both_sides_of_the_balance_point():
    from mechmem.contract.claims import Evidence
    from mechmem.papers.lca.hijacking import balance_point
    from mechmem.papers.lca.presets import QUICK

    assert balance_point(64, 0.5) == pytest.approx(64 / 3), "k* = (1 - eps) L / (2 - eps)"
    claim = {c.key: c for c in CLAIMS}["hijack_follows_evidence"]

    def score(below: float, above: float) -> dict:
        data = {"balance": {"below": {"flip_rate": below}, "above": {"flip_rate": above}}}
        return claim.score(Evidence({"hijack_synthetic": data}, QUICK))

    assert score(0.1, 0.9)["holds"]
    assert not score(0.6, 0.9)["holds"], "a model that flips before the balance point does not follow the evidence"
    assert not score(0.1, 0.4)["holds"], "nor one that does not flip past it"


def test_controls_change_what_they_must(smoke_run):
    """Each control's data sits next to the experiment's: untrained models never trained, the shuffled memory
    loses what W̄_V keeps, uniform attention has a ratio of exactly 1."""
    folder, results = smoke_run
    controls = folder / "controls"
    untrained = json.loads((controls / "untrained" / "hamming_inner.json").read_text())
    assert all(v["model"]["train_accuracy"] is None for v in untrained.values()), "untrained models must not train"
    uniform = json.loads((controls / "uniform_attention" / "attention.json").read_text())
    assert uniform["cluster_ratio"] == pytest.approx(1.0, abs=1e-5) and uniform["uniform_drop_points"] == 0
    shuffled = json.loads((controls / "shuffled_memory" / "wv_replace.json").read_text())
    assert shuffled["rows"][-1]["lost_points"] > 20, shuffled["rows"][-1]
    assert results["summary"]["controls"] == len(EXPECTED_KEYS)
