"""The claims of the factual reproduction (keys and honesty of ``holds``) and the capacity search helpers."""

import json
import math

import pytest

from mechmem.contract.claims import Evidence
from mechmem.papers.factual import EXPERIMENTS, TASKS
from mechmem.papers.factual.capacity import binary_search, capacity_constant, max_stored
from mechmem.papers.factual.reproduction import CLAIMS, FactualReproduction


def claims(cap, mix, grid, dyn, mech) -> dict:
    """Every claim scored on experiment data shaped like the real one."""
    evidence = Evidence({"capacity": cap, "facts_vs_params": mix, "tradeoff": grid, "dynamics": dyn, "mechanism": mech})
    return {c.key: c.score(evidence) for c in CLAIMS}


EXPECTED_KEYS = {
    "linear_capacity_constant",
    "linear_capacity_slope",
    "outer_product_capacity_constant",
    "mlp_capacity_constant",
    "mlp_fixed_output_constant",
    "facts_vs_params_slope",
    "facts_per_param",
    "attention_only_accuracy",
    "mlp_heavy_accuracy",
    "few_heads_accuracy",
    "plateau_loss",
    "hallucination_loss",
    "hallucination_relation_loss",
    "final_loss",
    "stage1_end_step",
    "stage2_end_step",
    "distractor_flip_rate",
}


def fake_results(paper_like: bool):
    """Experiment summaries shaped like the real ones; ``paper_like`` picks values inside or outside the targets."""
    good = paper_like
    cap = {
        "linear_constant": 0.8 if good else 3.0,
        "linear_slope": 1.0 if good else 0.5,
        "outer_constant": 0.13 if good else 0.5,
        "mlp_constant": 2.9 if good else 10.0,
        "mlp32_constant": 0.83 if good else 3.0,
    }
    mix = {"slope": 1.0 if good else 0.3, "facts_per_param": 0.15 if good else 0.001}
    grid = {
        "attention_only_accuracy": 1.0 if good else 0.5,
        "mlp_heavy_accuracy": 1.0 if good else 0.5,
        "few_heads_accuracy": 0.8 if good else 1.0,
        "corners": {"attention_only": [16, 1], "mlp_heavy": [8, 128]},
    }
    dyn = {
        "plateau_loss": math.log(32) if good else 2.0,
        "hallucination_loss": math.log(8) if good else 1.0,
        "hallucination_steps": 2000 if good else 0,
        "hallucination_relation_loss": 0.01 if good else 1.0,
        "final_loss": 0.01 if good else 1.0,
        "last_step": 8192,
        "stage1_end_step": 1900 if good else 100,
        "stage2_end_step": 5000 if good else None,
    }
    mech = {"distractor_flip_rate": 0.45 if good else 0.0, "distractor_flip_share": 0.5 if good else 0.0}
    return cap, mix, grid, dyn, mech


def test_claims_have_exactly_the_issue_keys_with_measured_and_holds():
    out = claims(*fake_results(True))
    assert set(out) == EXPECTED_KEYS, f"claim keys differ: {set(out) ^ EXPECTED_KEYS}"
    for key, c in out.items():
        assert {"measured", "holds"} <= set(c), f"{key}: {set(c)}"
        assert isinstance(c["holds"], bool)
    json.dumps(out)


def test_paper_like_values_hold_and_off_values_do_not():
    assert all(c["holds"] for c in claims(*fake_results(True)).values()), [
        k for k, c in claims(*fake_results(True)).items() if not c["holds"]
    ]
    bad = claims(*fake_results(False))
    assert not any(c["holds"] for c in bad.values()), [k for k, c in bad.items() if c["holds"]]


def test_the_distractor_claim_reports_the_flip_rate_and_tests_the_flip_share():
    good = claims(*fake_results(True))["distractor_flip_rate"]
    assert good == {"measured": 0.45, "holds": True, "conditions": {"flip share": 0.5}}
    cap, mix, grid, dyn, mech = fake_results(True)
    lopsided = claims(cap, mix, grid, dyn, {**mech, "distractor_flip_share": 0.9})["distractor_flip_rate"]
    assert lopsided["measured"] == 0.45 and not lopsided["holds"]


def test_package_exposes_tasks_experiments_and_the_reproduction():
    assert "factual" in TASKS and FactualReproduction.experiments is EXPERIMENTS
    assert {"capacity", "facts_vs_params", "tradeoff", "dynamics", "mechanism"} <= set(EXPERIMENTS)


def test_binary_search_finds_the_largest_success():
    assert binary_search(lambda n: n <= 37, 2, 1000) == 37
    assert binary_search(lambda n: True, 2, 50) == 50
    with pytest.raises(ValueError, match="lo"):
        binary_search(lambda n: True, 0, 5)


def test_trained_linear_memory_stores_more_than_the_outer_product():
    d = 11
    trained = max_stored("linear", d, seed=0, max_steps=1024)
    outer = max_stored("outer", d, seed=0)
    assert trained > 2 * outer, f"training stored {trained}, outer product {outer} at d={d}"
    assert 0.3 < capacity_constant(trained, d) < 2.0


@pytest.mark.own_validation
def test_bad_capacity_inputs_raise():
    with pytest.raises(ValueError, match="kind"):
        max_stored("quadratic", 8)
    with pytest.raises(ValueError, match="m"):
        max_stored("mlp", 8)
