"""The investigations behind the README's explanations (``python -m mechmem.papers.lca.investigate``), at smoke
sizes: every study runs, the closed-form numbers are right, and bad arguments are refused before any work."""

import json

import pytest

from mechmem.papers.lca.investigate import STUDIES, investigate, main


@pytest.fixture(scope="module")
def smoke():
    return investigate("smoke", (0,))


def test_every_study_runs_at_smoke_size(smoke):
    assert set(smoke["studies"]) == set(STUDIES) and all(set(v) == {"0"} for v in smoke["studies"].values())


def test_walsh_shares_of_the_generators_kernels(smoke):
    """N1's support indicator 1{D_H = 1} has a third of its non-constant Walsh energy at degree 1 (its Walsh
    coefficients are m - 2|S|); the bitflip log-likelihood is affine in D_H, so all of it."""
    for row in smoke["studies"]["kernel_walsh"]["0"]:
        expected = 1 / 3 if row["neighbourhood"] == "N1" else 1.0
        assert row["degree_one_share"] == pytest.approx(expected, abs=1e-9), row


def test_decoders_and_frozen_rows_are_consistent(smoke):
    for row in smoke["studies"]["decoder_gaps"]["0"]:
        assert row["hamming_vote"] <= row["bayes"] + 0.05, f"the Bayes predictor is the best decoder: {row}"
    for row in smoke["studies"]["frozen_rows"]["0"]:
        low, high = row["marchenko_pastur_edges"]
        assert 0.5 * low <= row["gaussian_singular_values"][0] <= row["gaussian_singular_values"][1] <= 1.5 * high, row
    for row in smoke["studies"]["n1_geometry"]["0"]:
        assert 0 <= row["walsh_degree_one_share"] <= 1 and row["d"] < 2 ** row["m"], row


def test_the_command_refuses_bad_arguments_before_running(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--sizes", "smoke", "--seeds", "0,x", "--out", str(tmp_path / "out.json")])
    assert "--seeds expects comma-separated integers" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--sizes", "smoke", "--out", str(tmp_path / "missing" / "out.json")])
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(ValueError, match="sizes must be one of"):
        investigate("huge", (0,))
    assert not list(tmp_path.iterdir())


def test_the_committed_investigation_holds_every_study():
    from pathlib import Path

    committed = Path(__file__).resolve().parents[2] / "mechmem" / "papers" / "lca" / "results" / "investigate.json"
    results = json.loads(committed.read_text())
    assert set(results["studies"]) == set(STUDIES) and results["sizes"] == "full", results["command"]
