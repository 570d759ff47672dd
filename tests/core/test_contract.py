"""The contract below the runner: negative controls and checks, presets that round-trip and have one shape,
variants (``--set``, ``--only``) and reruns (``--from``), and committed smoke results that answer to the code.

The per-paper tests run on the shared smoke outputs (``smoke_outputs``, seed 0)."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import math
import typing
from dataclasses import dataclass
from pathlib import Path

import pytest

from mechmem.contract.claims import AtLeast, AtMost, Claim, control_fails
from mechmem.contract.experiments import Context, ExperimentResult, Experiments
from mechmem.contract.presets import Preset
from mechmem.contract.reproducing import Reproduction, reproductions
from mechmem.contract.runner import default_out, rerun_request, run
from mechmem.core.config import ModelConfig, TrainConfig

ROOT = Path(__file__).resolve().parents[2]
PAPERS = sorted(reproductions())

# --- a tiny reproduction with controls, checks and a dependency ------------------------------------------------


@dataclass(frozen=True)
class CalibratedPreset(Preset):
    signal: float = 1.0  # what the trained "model" measures


EXPERIMENTS = Experiments()


@EXPERIMENTS.register(controls={"untrained": "the same reading with no signal"})
def train(ctx: Context[CalibratedPreset]) -> ExperimentResult:
    signal = 0.0 if ctx.control == "untrained" else ctx.preset.signal
    return ExperimentResult({"recall": signal + 0.01 * ctx.seed, "data_size": 100})


@EXPERIMENTS.register(needs=("train",), controls={"untrained": "the same reading with no signal"})
def probe(ctx: Context[CalibratedPreset]) -> ExperimentResult:
    source = ctx.control_data("train") if ctx.control else ctx.data("train")
    return ExperimentResult({"margin": 2 * source["recall"]})


@EXPERIMENTS.register
def unrelated(ctx: Context[CalibratedPreset]) -> ExperimentResult:
    return ExperimentResult({"value": 1.0})


class Calibrated(Reproduction[CalibratedPreset], register=False):
    name, title, experiments = "calibrated", "a calibrated reproduction", EXPERIMENTS
    presets = {n: CalibratedPreset(name=n) for n in ("smoke", "quick", "full")}
    claims = (
        Claim("recall", lambda r: r["train"]["recall"], AtLeast(0.9), "recalls", "here", controls=("untrained",)),
        Claim("margin", lambda r: r["probe"]["margin"], AtLeast(1.5), "margin", "here", controls=("untrained",)),
        Claim("value", lambda r: r["unrelated"]["value"], AtLeast(1), "value", "here"),
    )
    checks = (Claim("data_size", lambda r: r["train"]["data_size"], AtLeast(100), "data", "here"),)


def test_controls_run_after_their_experiment_are_saved_and_fail_the_claim(tmp_path):
    results = run(Calibrated, "smoke", [0, 1], tmp_path, progress=False)
    recall = results["claims"]["recall"]
    assert recall["holds"] and recall["controls"]["untrained"]["fails"], recall
    assert recall["controls"]["untrained"]["about"] == "the same reading with no signal"
    assert results["claims"]["margin"]["per_seed"]["1"]["controls"]["untrained"] == {"measured": 0.02, "holds": False}
    assert (tmp_path / "seed-0" / "controls" / "untrained" / "probe.json").is_file()
    assert results["summary"] == {
        "claims": 3,
        "hold_at_every_seed": 3,
        "controls": 2,
        "controls_failing_at_every_seed": 2,
        "checks": 1,
        "checks_hold_at_every_seed": 1,
    }
    assert list(results["checks"]) == ["data_size"] and "data_size" not in results["claims"]


def test_a_control_the_claim_does_not_fail_is_reported_not_hidden(tmp_path):
    class Uncalibrated(Calibrated, register=False):
        claims = (Claim("low", lambda r: r["train"]["recall"], AtMost(2), "low", "here", controls=("untrained",)),)

    results = run(Uncalibrated, "smoke", [0], tmp_path, progress=False)
    control = results["claims"]["low"]["controls"]["untrained"]
    assert control["fails"] is False and results["summary"]["controls_failing_at_every_seed"] == 0


def test_only_runs_what_it_names_and_what_that_needs_and_leaves_the_rest_unmeasured(tmp_path):
    results = run(Calibrated, "smoke", [0], tmp_path / "out", progress=False, only=["probe"])
    assert list(results["runs"]["0"]["experiments"]) == ["train", "probe"]
    assert set(results["claims"]) == {"recall", "margin"} and "value" in results["unmeasured"]
    assert results["variant"] == {"set": {}, "only": ["probe"]}
    with pytest.raises(ValueError, match="unknown experiment 'nope'"):
        run(Calibrated, "smoke", [0], tmp_path / "never", progress=False, only=["nope"])
    assert not (tmp_path / "never").exists()


def test_set_changes_a_field_is_recorded_and_names_the_default_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    results = run(Calibrated, "smoke", [0], progress=False, settings=["signal=0.5"])
    assert results["variant"] == {"set": {"signal": 0.5}, "only": None}
    assert results["preset_config"]["signal"] == 0.5 and not results["claims"]["recall"]["holds"]
    assert (tmp_path / "runs" / "calibrated-smoke+signal=0.5" / "results.json").is_file()
    for bad, match in [("colour=1", "no field 'colour'"), ("signal=high", "expected float"), ("signal", "field=value")]:
        with pytest.raises(ValueError, match=match):
            run(Calibrated, "smoke", [0], tmp_path / "never", progress=False, settings=[bad])
    assert not (tmp_path / "never").exists()


def test_set_reaches_fields_of_a_nested_config_and_they_validate_themselves():
    from mechmem.papers.birth.presets import QUICK

    changed, parsed = QUICK.with_settings(["simplified_train.steps=7", "studies=true"])
    assert changed.simplified_train.steps == 7 and changed.studies is True and QUICK.simplified_train.steps != 7
    assert parsed == {"simplified_train.steps": 7, "studies": True}
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        QUICK.with_settings(["simplified_train.steps=0"])
    with pytest.raises(ValueError, match="no field 'stepz'"):
        QUICK.with_settings(["simplified_train.stepz=1"])


def test_default_folder_of_a_variant_is_a_safe_name():
    assert default_out("lca", "quick") == Path("runs/lca-quick")
    assert default_out("lca", "quick", ["m=6", "epsilon=0.25"], ["wv_grid"]).name == (
        "lca-quick+m=6+epsilon=0.25+only=wv_grid"
    )
    long = default_out("lca", "quick", [f"x{i}=[1, 2]" for i in range(20)]).name
    assert len(long) < 100 and "/" not in long and " " not in long


# --- presets of one shape ------------------------------------------------------------------------------------

#: papers whose presets are not yet of the one shape (model fields ModelConfig, training fields TrainConfig,
#: every other field a plain typed knob with a comment); emptied as each paper is ported
NOT_YET_ONE_SHAPE: set[str] = {"birth", "scaling", "factual"}
PLAIN = (bool, int, float, str, type(None))


def _plain(annotation) -> bool:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (tuple, list, typing.Union, __import__("types").UnionType):
        return all(a is Ellipsis or _plain(a) for a in args)
    return annotation in PLAIN


@pytest.mark.parametrize("paper", PAPERS)
def test_every_preset_round_trips_through_json(paper):
    for name, preset in reproductions()[paper].presets.items():
        again = type(preset).from_dict(json.loads(json.dumps(preset.to_dict())))
        assert again == preset, f"{paper}.{name}: from_dict(to_dict()) differs"


@pytest.mark.parametrize("paper", PAPERS)
def test_preset_fields_are_configs_or_plain_typed_knobs_with_a_comment(paper):
    if paper in NOT_YET_ONE_SHAPE:
        pytest.skip(f"{paper}: presets not yet ported to the one shape")
    cls = reproductions()[paper].preset_class()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        assert kind in (ModelConfig, TrainConfig) or _plain(kind), (
            f"{paper}: preset field {f.name}: {kind} is neither a ModelConfig, a TrainConfig nor a plain value"
        )
    source = inspect.getsource(cls)
    lines = source.splitlines()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            line, above = lines[node.lineno - 1], lines[node.lineno - 2].strip()
            assert "#" in line or above.startswith("#"), f"{paper}: preset field {node.target.id} has no comment"


# --- calibration: controls, checks, committed results ----------------------------------------------------------

#: papers whose claims do not all have negative controls yet; emptied as each paper is calibrated
NOT_YET_CALIBRATED: set[str] = {"birth", "scaling", "factual"}


@pytest.mark.parametrize("paper", PAPERS)
def test_every_claim_declares_a_negative_control(paper):
    if paper in NOT_YET_CALIBRATED:
        pytest.skip(f"{paper}: not yet calibrated")
    missing = [c.key for c in reproductions()[paper].claims if not c.controls]
    assert not missing, f"{paper}: claims without a negative control: {missing}"


@pytest.mark.parametrize("paper", PAPERS)
def test_every_claim_fails_on_each_of_its_controls_at_smoke_size(paper, smoke_outputs):
    if paper in NOT_YET_CALIBRATED:
        pytest.skip(f"{paper}: not yet calibrated")
    _, results = smoke_outputs(paper)
    wrong = [
        f"{key} / {name}: {entry['per_seed']['0']['controls'][name]}"
        for key, entry in results["claims"].items()
        for name in entry.get("controls", {})
        if not control_fails(entry["per_seed"]["0"]["controls"][name])
    ]
    assert not wrong, f"{paper}: controls on which the claim does not fail (a finding to report): {wrong}"


#: papers whose committed smoke.json predates the current code; emptied as each paper regenerates it
NOT_YET_REGENERATED: set[str] = {"birth", "scaling", "factual"}


def _values(entry: dict) -> list[tuple[str, object, object]]:
    seed = entry["per_seed"]["0"]
    out = [("measured", seed["measured"], seed["holds"])]
    out += [(f"condition {k}", v, None) for k, v in seed.get("conditions", {}).items()]
    out += [(f"control {k}", c["measured"], c["holds"]) for k, c in seed.get("controls", {}).items()]
    return out


@pytest.mark.parametrize("paper", PAPERS)
def test_smoke_results_match_the_committed_smoke_json(paper, smoke_outputs):
    """Regenerating the smoke results at seed 0 gives the committed numbers (within 1e-6) and verdicts: a code
    change that moves a number fails here until the results (and the README tables) are regenerated."""
    if paper in NOT_YET_REGENERATED:
        pytest.skip(f"{paper}: committed smoke.json not yet regenerated with the current runner")
    committed = json.loads((ROOT / "mechmem" / "papers" / paper / "results" / "smoke.json").read_text())
    _, fresh = smoke_outputs(paper)
    for kind in ("claims", "checks"):
        assert list(fresh[kind]) == list(committed[kind]), f"{paper}: {kind} differ from the committed smoke.json"
        for key in fresh[kind]:
            new, old = _values(fresh[kind][key]), _values(committed[kind][key])
            for (label, value, holds), (_, was, held) in zip(new, old):
                assert holds == held, f"{paper}.{key} {label}: verdict {held} committed, {holds} now"
                if isinstance(value, float) and isinstance(was, float):
                    assert math.isclose(value, was, rel_tol=1e-6, abs_tol=1e-6), (
                        f"{paper}.{key} {label}: {was} -> {value}"
                    )
                else:
                    assert value == was, f"{paper}.{key} {label}: {was!r} committed, {value!r} now"


# --- reruns ------------------------------------------------------------------------------------------------------


def test_from_reruns_exactly_what_a_results_json_ran_and_gets_the_same_numbers(tmp_path):
    from mechmem.cli import main

    first = tmp_path / "first"
    variant = ["--only", "hijack_synthetic", "--set", "hijack_fractions=0,0.5"]
    assert main(["reproduce", "lca", "--preset", "smoke", *variant, "--out", str(first), "--quiet"]) == 0
    request = rerun_request(first / "results.json")
    assert request["paper"] == "lca" and request["only"] == ["hijack_synthetic"]
    assert main(["reproduce", "--from", str(first / "results.json"), "--out", str(tmp_path / "again"), "--quiet"]) == 0
    old = json.loads((first / "results.json").read_text())
    new = json.loads((tmp_path / "again" / "results.json").read_text())
    assert new["preset_config"] == old["preset_config"] and new["variant"]["only"] == ["hijack_synthetic"]
    assert {k: c["per_seed"] for k, c in new["claims"].items()} == {k: c["per_seed"] for k, c in old["claims"].items()}


def test_from_refuses_what_is_not_a_reproduction_and_extra_options(tmp_path, capsys):
    from mechmem.cli import main

    junk = tmp_path / "results.json"
    junk.write_text(json.dumps({"schema": "something else"}))
    assert main(["reproduce", "--from", str(junk)]) == 2
    assert "not the results.json of `mechmem reproduce`" in capsys.readouterr().err
    assert main(["reproduce", "lca", "--from", str(junk)]) == 2
    assert "cannot be combined with PAPER" in capsys.readouterr().err
