"""Claims as data: each expectation tests and reads as declared, missing measurements never hold, conditions
combine, and several seeds aggregate into mean, spread and the fraction holding."""

import math

import pytest
import torch

from mechmem.contract.claims import (
    Above,
    AtLeast,
    AtMost,
    Below,
    Claim,
    Condition,
    Equals,
    Evidence,
    IsTrue,
    MissingExperiment,
    Near,
    Reported,
    Within,
    aggregate,
    check_claims,
    control_fails,
)


@pytest.mark.parametrize(
    "expect, value, holds, text",
    [
        (AtLeast(0.95), 0.95, True, "≥ 0.95"),
        (AtLeast(0.95), 0.9499, False, "≥ 0.95"),
        (AtMost(5), 5.0, True, "≤ 5"),
        (Above(1), 1.0, False, "> 1"),
        (Below(0.01), 0.0099, True, "< 0.01"),
        (Within(0.4, 1.5), 1.5, True, "in [0.4, 1.5]"),
        (Within(0.4, 1.5), 0.39, False, "in [0.4, 1.5]"),
        (Near(-1, 0.15), -1.15, True, "-1 ± 0.15"),
        (Near(-1, 0.15), -0.84, False, "-1 ± 0.15"),
        (Near(math.log(32), 0.05, label="ln 32"), 3.5, True, "ln 32 = 3.466 ± 0.05"),
        (Equals(1.0), 1.0, True, "= 1"),
        (IsTrue(), True, True, "true"),
        (IsTrue(), 1, False, "true"),
    ],
)
def test_each_expectation_tests_and_reads_as_declared(expect, value, holds, text):
    assert expect.holds(value) is holds
    assert expect.text() == text


def test_within_needs_lo_below_hi():
    with pytest.raises(ValueError, match="lo=2"):
        Within(2, 1)


def claim(expect=AtLeast(1), **kwargs):
    return Claim("k", lambda r: r["e"]["x"], expect, statement="s", source="src", **kwargs)


@pytest.mark.parametrize("value", [None, float("nan"), float("inf"), torch.tensor(float("nan"))])
def test_a_missing_or_non_finite_measurement_never_holds(value):
    assert claim(expect=AtMost(1)).score(Evidence({"e": {"x": value}})) == {"measured": None, "holds": False}


def test_tensor_and_numpy_measurements_become_plain_numbers():
    import numpy as np

    assert claim().score(Evidence({"e": {"x": torch.tensor(2.5)}})) == {"measured": 2.5, "holds": True}
    assert claim().score(Evidence({"e": {"x": np.float64(0.5)}})) == {"measured": 0.5, "holds": False}


def test_conditions_must_all_hold_and_optional_ones_may_be_missing():
    c = claim(
        unit=" points",
        also=(
            Condition("slope", lambda r: r["e"]["slope"], Below(0)),
            Condition("other", lambda r: r["e"].get("other"), AtLeast(2), required=False),
        ),
    )
    assert c.expected == "≥ 1 points; slope < 0; other ≥ 2"
    assert c.score(Evidence({"e": {"x": 3, "slope": -1}}))["holds"]
    assert not c.score(Evidence({"e": {"x": 3, "slope": 1}}))["holds"]
    assert not c.score(Evidence({"e": {"x": 3, "slope": -1, "other": 1}}))["holds"]
    assert c.score(Evidence({"e": {"x": 3, "slope": -1}}))["conditions"] == {"slope": -1, "other": None}
    required = claim(also=(Condition("slope", lambda r: r["e"].get("slope"), Below(0)),))
    assert not required.score(Evidence({"e": {"x": 3}}))["holds"], "a required condition with no measurement fails"


def test_a_reported_value_with_conditions_reads_as_its_conditions():
    c = claim(expect=Reported(), also=(Condition("share", lambda r: r["e"]["share"], Within(0.35, 0.65)),))
    assert c.expected == "share in [0.35, 0.65]"
    assert c.score(Evidence({"e": {"x": 0.1, "share": 0.5}})) == {
        "measured": 0.1,
        "holds": True,
        "conditions": {"share": 0.5},
    }


def test_aggregate_over_seeds():
    entries = {
        "0": {"measured": 1.0, "holds": True},
        "1": {"measured": 3.0, "holds": True},
        "2": {"measured": None, "holds": False},
    }
    out = aggregate(claim(), entries)
    assert out["fraction_holding"] == pytest.approx(2 / 3) and out["holds"] is False
    assert out["mean"] is None, "no mean when a seed has no measurement"
    both = aggregate(claim(), {"0": {"measured": 1.0, "holds": True}, "1": {"measured": 3.0, "holds": True}})
    assert (both["mean"], both["std"], both["min"], both["max"], both["holds"]) == (2.0, 1.0, 1.0, 3.0, True)
    flags = aggregate(
        claim(IsTrue()), {"0": {"measured": True, "holds": True}, "1": {"measured": False, "holds": False}}
    )
    assert flags["mean"] == 0.5, "booleans average as 0/1"


def test_claim_keys_are_identifiers_and_declared_once():
    with pytest.raises(ValueError, match="identifier"):
        Claim("not a key", lambda r: 0, AtLeast(0), statement="s", source="s")
    with pytest.raises(ValueError, match="twice"):
        check_claims([claim(), claim()])


def test_a_reported_value_needs_a_condition_to_test():
    with pytest.raises(ValueError, match="Reported value tests nothing"):
        claim(expect=Reported())


def test_a_claim_is_scored_on_each_of_its_controls_and_a_control_must_fail_it_with_real_numbers():
    c = claim(controls=("untrained", "shuffled"))
    own = Evidence({"e": {"x": 3}})
    controls = {
        "untrained": Evidence({"e": {"x": 0.2}}, control="untrained"),
        "shuffled": Evidence({}, control="shuffled"),
    }
    entry = c.score(own, controls)
    assert entry["holds"] and entry["controls"]["untrained"] == {"measured": 0.2, "holds": False}
    assert control_fails(entry["controls"]["untrained"]), "the claim fails on the untrained control, as it must"
    missing = entry["controls"]["shuffled"]
    assert missing["holds"] is None and "under control 'shuffled'" in missing["missing"]
    assert not control_fails(missing), "a control that could not be measured proves nothing"
    assert not control_fails({"measured": 5, "holds": True}), "a control on which the claim holds does not fail it"
    needs = claim(controls=("u",), also=(Condition("c", lambda r: r["e"].get("c"), AtLeast(0)),))
    assert not control_fails(needs.score(Evidence({"e": {"x": 0}}), {"u": Evidence({"e": {"x": 0}})})["controls"]["u"])


def test_a_claim_whose_experiment_did_not_run_is_not_measured():
    with pytest.raises(MissingExperiment, match="'e' did not run"):
        claim().score(Evidence({}))


def test_aggregate_reports_each_control_and_whether_it_fails_at_every_seed():
    c = claim(controls=("untrained",))
    per_seed = {
        "0": {"measured": 2, "holds": True, "controls": {"untrained": {"measured": 0.1, "holds": False}}},
        "1": {"measured": 3, "holds": True, "controls": {"untrained": {"measured": 1.5, "holds": True}}},
    }
    out = aggregate(c, per_seed, {"untrained": "the model at initialisation"})["controls"]["untrained"]
    assert out["about"] == "the model at initialisation" and out["fraction_failing"] == 0.5 and out["fails"] is False
    assert (out["mean"], out["min"], out["max"]) == (0.8, 0.1, 1.5)


def test_a_deterministic_claim_says_whether_its_seeds_disagree():
    same = {"0": {"measured": 1.0, "holds": True}, "1": {"measured": 1.0, "holds": True}}
    assert aggregate(claim(seeded=False), same)["varies_with_seed"] is False
    differ = {"0": {"measured": 1.0, "holds": True}, "1": {"measured": 2.0, "holds": True}}
    assert aggregate(claim(seeded=False), differ)["varies_with_seed"] is True
    assert "varies_with_seed" not in aggregate(claim(), same)


def test_a_claim_may_only_name_controls_the_experiments_declare():
    with pytest.raises(ValueError, match="no experiment declares"):
        check_claims([claim(controls=("nowhere",))], known_controls={"untrained"})
    check_claims([claim(controls=("untrained",))], known_controls={"untrained"})
