"""The reproduction contract: every registered paper runs its smoke preset through the one runner and writes
the one ``results.json`` schema; the runner's bookkeeping (seeds, timings, files, claims over seeds) and its
input checks, on a tiny reproduction defined here."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from mechmem.contract.claims import AtLeast, Claim
from mechmem.contract.experiments import Context, ExperimentResult, Experiments
from mechmem.contract.presets import Preset
from mechmem.contract.reproducing import SCHEMA, Reproduction, reproductions
from mechmem.contract.runner import make_context, run

PAPERS = sorted(reproductions())
PNG = b"\x89PNG\r\n\x1a\n"


def strict_json(path: Path) -> dict:
    def refuse(name):
        raise AssertionError(f"{path} contains {name}, which is not valid JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture(scope="module", params=PAPERS)
def smoke(request, smoke_outputs):
    paper = request.param
    return (paper, *smoke_outputs(paper))


def test_all_four_papers_are_registered():
    assert set(PAPERS) == {"lca", "birth", "scaling", "factual"}


def test_results_json_has_the_one_schema(smoke):
    paper, out, results = smoke
    saved = strict_json(out / "results.json")
    assert saved == json.loads(json.dumps(results)), "results.json differs from what run() returned"
    for key in (
        "schema",
        "paper",
        "title",
        "preset",
        "seeds",
        "command",
        "started_at",
        "wall_s",
        "cpu_s",
        "jobs",
        "versions",
        "machine",
        "preset_config",
        "summary",
        "claims",
        "runs",
    ):
        assert key in saved, f"{paper}: results.json has no {key!r}"
    assert saved["schema"] == SCHEMA and saved["paper"] == paper and saved["preset"] == "smoke"
    assert saved["seeds"] == [0] and saved["preset_config"]["name"] == "smoke"
    assert {"mechmem", "torch", "transformer_lens", "python"} <= set(saved["versions"])
    assert saved["wall_s"] > 0 and saved["cpu_s"] > 0


def test_every_declared_claim_is_scored_with_its_declaration(smoke):
    paper, out, results = smoke
    declared = [c for c in reproductions()[paper].claims if c.applies_to("smoke")]
    assert list(results["claims"]) == [c.key for c in declared], f"{paper}: claims differ from the declaration"
    for claim in declared:
        entry = results["claims"][claim.key]
        assert entry["expected"] == claim.expected and entry["source"] == claim.source
        assert entry["statement"] and isinstance(entry["ours"], bool)
        seed = entry["per_seed"]["0"]
        assert isinstance(seed["holds"], bool), f"{paper}.{claim.key}: holds is {seed['holds']!r}"
        assert entry["holds"] == seed["holds"] and entry["fraction_holding"] == float(seed["holds"])
        if seed["measured"] is None:
            assert not seed["holds"], f"{paper}.{claim.key}: a missing measurement must not hold"
    controls = [c for entry in results["claims"].values() for c in entry.get("controls", {}).values()]
    declared_checks = [c for c in reproductions()[paper].checks if c.applies_to("smoke")]
    assert list(results["checks"]) == [c.key for c in declared_checks], f"{paper}: checks differ from the declaration"
    assert results["summary"] == {
        "claims": len(declared),
        "hold_at_every_seed": sum(c["holds"] for c in results["claims"].values()),
        "controls": sum(len(c.controls) for c in declared),
        "controls_failing_at_every_seed": sum(c["fails"] for c in controls),
        "checks": len(declared_checks),
        "checks_hold_at_every_seed": sum(c["holds"] for c in results["checks"].values()),
    }


def test_every_experiment_is_timed_and_its_files_exist(smoke):
    paper, out, results = smoke
    repro = reproductions()[paper]
    seed_run = results["runs"]["0"]
    ran = [n for n in repro.experiments if n not in seed_run["not_run"]]
    assert list(seed_run["experiments"]) == ran
    for name in ran:
        for control in repro.experiments.controls(name):
            assert control in seed_run["experiments"][name]["controls"], f"{paper}.{name}: control {control} untimed"
            assert f"seed-0/controls/{control}/{name}.json" in seed_run["files"][f"{name}[{control}]"]
        timing = seed_run["experiments"][name]
        assert timing["wall_s"] >= 0 and timing["cpu_s"] >= 0, f"{paper}.{name}: {timing}"
        files = seed_run["files"][name]
        assert f"seed-0/{name}.json" in files, f"{paper}.{name} saved no data"
        for file in files:
            path = out / file
            assert path.is_file(), f"{paper}.{name}: {file} listed but missing"
            if path.suffix == ".png":
                assert path.read_bytes()[:8] == PNG, f"{file} is not a PNG"
            if path.suffix == ".html":
                html = path.read_text()
                assert "<script" in html and "unpkg.com" not in html, f"{file} must be self-contained"
    assert any(f.endswith(".png") for fs in seed_run["files"].values() for f in fs), f"{paper} saved no figure"


# --- the runner on a tiny reproduction --------------------------------------------------------------------


@dataclass(frozen=True)
class TinyPreset(Preset):
    offset: float = 0.0
    extra: bool = False


TINY_EXPERIMENTS = Experiments()


@TINY_EXPERIMENTS.register
def measure(ctx: Context) -> ExperimentResult:
    value = float(ctx.seed) + ctx.preset.offset
    return ExperimentResult({"value": value})


@TINY_EXPERIMENTS.register(when=lambda preset: preset.extra)
def extra(ctx: Context) -> ExperimentResult:
    return ExperimentResult({"twice": 2 * ctx.data("measure")["value"]})


class Tiny(Reproduction, register=False):
    name = "tiny"
    title = "a tiny reproduction"
    presets = {
        "smoke": TinyPreset(name="smoke"),
        "quick": TinyPreset(name="quick", extra=True),
        "full": TinyPreset(name="full", offset=10.0),
    }
    experiments = TINY_EXPERIMENTS
    claims = (
        Claim("value_at_least_one", lambda r: r["measure"]["value"], AtLeast(1), statement="value", source="here"),
        Claim("twice", lambda r: r["extra"]["twice"], AtLeast(0), statement="twice", source="here", presets=("quick",)),
    )


def test_claims_over_seeds_report_every_seed_mean_spread_and_fraction(tmp_path):
    results = run(Tiny, "smoke", [0, 1, 3], tmp_path, progress=False)
    claim = results["claims"]["value_at_least_one"]
    assert {s: e["measured"] for s, e in claim["per_seed"].items()} == {"0": 0.0, "1": 1.0, "3": 3.0}
    assert claim["mean"] == pytest.approx(4 / 3) and claim["min"] == 0.0 and claim["max"] == 3.0
    assert claim["fraction_holding"] == pytest.approx(2 / 3) and claim["holds"] is False
    assert claim["std"] == pytest.approx((((0 - 4 / 3) ** 2 + (1 - 4 / 3) ** 2 + (3 - 4 / 3) ** 2) / 3) ** 0.5)
    assert set(results["runs"]) == {"0", "1", "3"} and results["runs"]["1"]["dir"] == "seed-1"
    assert "twice" not in results["claims"], "a claim of another preset must not be scored"
    assert results["runs"]["0"]["not_run"] == ["extra"]


def test_an_experiment_enabled_by_the_preset_runs_after_its_dependency(tmp_path):
    results = run(Tiny, "quick", [2], tmp_path, progress=False)
    assert results["claims"]["twice"]["per_seed"]["2"] == {"measured": 4.0, "holds": True}
    assert results["variant"] is None
    assert results["runs"]["2"]["not_run"] == []


@pytest.mark.own_validation
def test_bad_input_is_rejected_before_any_folder_is_created(tmp_path):
    out = tmp_path / "never"
    for kwargs, error, match in [
        (dict(preset="medium"), ValueError, "preset"),
        (dict(seeds=[]), ValueError, "seed"),
        (dict(seeds=[0, 0]), ValueError, "each seed once"),
        (dict(seeds=[-1]), ValueError, "seed"),
        (dict(seeds=["0"]), ValueError, "seed"),
        (dict(jobs=0), ValueError, "jobs"),
        (dict(seeds=[0, 1], jobs=2), ValueError, "not registered"),
    ]:
        with pytest.raises(error, match=match):
            run(Tiny, out=out, progress=False, **kwargs)
    with pytest.raises(ValueError, match="unknown paper"):
        run("no-such-paper", out=out)
    assert not out.exists()


def test_an_output_folder_of_another_paper_is_refused(tmp_path):
    from mechmem.contract.reproducing import output_kind
    from mechmem.storage.folders import prepare_output_dir

    out = prepare_output_dir(tmp_path / "out", output_kind("lca"))  # an earlier lca reproduction's folder
    (out / "results.json").write_text(json.dumps({"paper": "lca"}))
    with pytest.raises(FileExistsError, match="lca"):
        run(Tiny, "smoke", [0], out, progress=False)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("a folder mechmem did not make")
    with pytest.raises(FileExistsError, match="not made by mechmem"):
        run(Tiny, "smoke", [0], tmp_path / "notes", progress=False)


def test_an_experiment_that_returns_something_else_is_an_error(tmp_path):
    wrong = Experiments()
    wrong.register(lambda ctx: {"value": 1}, name="wrong")

    class Wrong(Reproduction, register=False):
        name, title, presets, experiments, claims = "wrong", "wrong", Tiny.presets, wrong, ()

    with pytest.raises(TypeError, match="ExperimentResult"):
        run(Wrong, "smoke", [0], tmp_path, progress=False)


def test_a_reproduction_must_declare_three_named_presets():
    with pytest.raises(TypeError, match="presets"):

        class Missing(Reproduction, register=False):  # noqa: F841
            name, title, experiments, claims = "m", "m", TINY_EXPERIMENTS, ()
            presets = {"quick": TinyPreset(name="quick")}

    with pytest.raises(TypeError, match="named 'full-cpu'"):

        class Misnamed(Reproduction, register=False):  # noqa: F841
            name, title, experiments, claims = "m", "m", TINY_EXPERIMENTS, ()
            presets = {**Tiny.presets, "full-cpu": TinyPreset(name="full")}


def test_a_reproduction_may_add_a_preset_of_its_own_and_runs_it_by_name(tmp_path):
    class Extra(Reproduction, register=False):
        name, title, experiments, claims = "tiny", "tiny", TINY_EXPERIMENTS, Tiny.claims
        presets = {**Tiny.presets, "full-cpu": TinyPreset(name="full-cpu", offset=5.0)}

    results = run(Extra, "full-cpu", [0], tmp_path, progress=False)
    assert results["preset"] == "full-cpu" and results["claims"]["value_at_least_one"]["per_seed"]["0"]["measured"] == 5
    with pytest.raises(ValueError, match=r"allowed values: \['smoke', 'quick', 'full', 'full-cpu'\]"):
        run(Extra, "medium", [0], tmp_path / "never", progress=False)


def test_preset_override_replaces_nested_fields_and_names_unknown_ones():
    from mechmem.papers.lca.presets import QUICK

    smaller = QUICK.override(train={"steps": 7}, m=4)
    assert smaller.train.steps == 7 and smaller.m == 4 and QUICK.train.steps == 400
    with pytest.raises(ValueError, match="no field 'colour'"):
        QUICK.override(colour=1)
    with pytest.raises(ValueError, match="train.stepz"):
        QUICK.override(train={"stepz": 7})


def test_make_context_runs_one_experiment_like_the_runner(smoke):
    paper, out, results = smoke
    if paper != "lca":
        pytest.skip("one paper is enough")
    from mechmem.papers.lca.experiments import EXPERIMENTS

    ctx = make_context("lca", "smoke", seed=0, progress=False)
    again = EXPERIMENTS["hijack_synthetic"](ctx).data
    assert json.loads(json.dumps(again)) == strict_json(out / "seed-0" / "hijack_synthetic.json"), (
        "an experiment must give the same data given its seed"
    )


def test_seeds_in_parallel_processes_measure_what_one_process_measures(smoke, tmp_path):
    paper, out, single = smoke
    if paper != "lca":
        pytest.skip("one paper is enough")
    both = run("lca", "smoke", [0, 1], tmp_path, jobs=2, progress=False)
    assert both["jobs"] == 2
    for key, claim in single["claims"].items():
        here, there = claim["per_seed"]["0"], both["claims"][key]["per_seed"]["0"]
        assert there["holds"] == here["holds"], f"{key}: holds differs across processes"
        # torch.linalg.lstsq (lca's affine fit) can differ in the last bit between processes (its LAPACK kernel
        # depends on memory alignment), so values are compared to 1e-12, not bit for bit
        flat = [(here["measured"], there["measured"])] + [
            (value, there["conditions"][label]) for label, value in here.get("conditions", {}).items()
        ]
        for mine, theirs in flat:
            assert theirs == pytest.approx(mine, rel=1e-12), f"{key} differs across processes: {here} vs {there}"
    assert set(both["claims"]["length_spearman"]["per_seed"]) == {"0", "1"}


# --- the command line ------------------------------------------------------------------------------------


def test_cli_prints_measured_against_expected_for_each_claim(tmp_path):
    from mechmem.cli import format_claims

    results = run(Tiny, "smoke", [0, 1], tmp_path, progress=False)
    text = format_claims(results)
    assert text.splitlines()[0] == "tiny (smoke, seeds 0,1): 0/1 claims hold at every seed"
    assert "[1/2] value_at_least_one  measured 0.5 (range 0 to 1)  expected ≥ 1" in text
    one = format_claims(run(Tiny, "smoke", [1], tmp_path / "one", progress=False))
    assert "[x] value_at_least_one  measured 1  expected ≥ 1" in one


@pytest.mark.parametrize(
    "argv, message",
    [
        (["reproduce", "lca", "--seeds", "0,x"], "--seeds expects comma-separated integers"),
        (["reproduce", "lca", "--seeds", "0,0"], "each seed once"),
        (["reproduce", "nope"], "unknown paper"),
    ],
)
def test_cli_rejects_bad_reproduce_arguments_before_any_work(argv, message, tmp_path, capsys):
    from mechmem.cli import main

    assert main([*argv, "--out", str(tmp_path / "never")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_cli_quick_is_an_alias_of_preset_quick():
    from mechmem.cli import _parser

    args = _parser().parse_args(["reproduce", "lca", "--quick"])
    assert args.quick and args.preset is None
    with pytest.raises(SystemExit):
        _parser().parse_args(["reproduce", "lca", "--quick", "--preset", "full"])
