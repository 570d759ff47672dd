"""``mechmem report``: the representative models the reproductions save, the completeness checks of
collected results, the plan (collect, run, refuse), the page's content against ``results.json``, and
its output folder (built aside, swapped in, never replacing what a report did not write).

The page is built from the session's smoke reproductions (``smoke_outputs``); the browser check of a
report is in ``test_inspect_browser.py``.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from mechmem.cli import main
from mechmem.contract.experiments import REPRESENTATIVE
from mechmem.contract.reproducing import get_reproduction
from mechmem.pages.report import ReportOptions, check_results, make_report, plan, problems, read_report, read_results
from mechmem.storage.runs import load_run

FAST = ["lca", "scaling"]  # the report's tests use these two: one with circuits (lca), one figures only


def copy_smoke(smoke_outputs, paper: str, dest: Path) -> Path:
    """A private copy of the session's smoke folder of ``paper`` (tests that break it must not share it)."""
    folder, _ = smoke_outputs(paper)
    return Path(shutil.copytree(folder, dest / f"{paper}-smoke"))


def forge_results(folder: Path, results: dict) -> None:
    """Write ``results`` as the folder's results.json and re-seal its manifest, as a forger who knows the
    format would: the checksums cannot catch it, so the checks of what results.json says must."""
    from mechmem.storage.manifest import seal

    seal(folder, {"results.json": json.dumps(results).encode()})


# ----------------------------------------------------------------------------- representative models


def _lca_measure(model, data, preset):
    from mechmem.papers.lca.experiments import memory_by_hamming

    return memory_by_hamming(model, preset.m).tolist(), data["hamming_inner"]["trained_W_V"]["memory_by_distance"]


def _birth_measure(model, data, preset):
    from mechmem.papers.birth.probes import memory_probes
    from mechmem.papers.birth.task import BigramTask

    task = BigramTask(seq_len=preset.simplified_model.n_ctx, n_triggers=5)
    probes = memory_probes(model, triggers=task.triggers)
    final = data["simplified_dynamics"]["history"][-1]
    return [probes[k] for k in ("wo1", "wk1", "wk0_64")], [final[k] for k in ("wo1", "wk1", "wk0_64")]


def _factual_measure(model, data, preset):
    from mechmem.papers.factual.mechanism import attention_mass
    from mechmem.papers.factual.task import FactualRecallTask

    task = FactualRecallTask(S=preset.S, R=preset.R, D=preset.D, table_seed=64)
    batch = task.sample(preset.mech_n, torch.Generator().manual_seed(0 + 100))
    with torch.no_grad():
        mass = attention_mass(model, batch)
    return [mass["subject"], mass["relation"]], [
        data["mechanism"]["models"]["attention_heavy"]["attention_mass"][k] for k in ("subject", "relation")
    ]


MEASURES = {"lca": _lca_measure, "birth": _birth_measure, "factual": _factual_measure}


@pytest.mark.parametrize("paper", sorted(MEASURES))
def test_the_saved_representative_model_is_the_model_the_experiments_measured(paper, smoke_outputs):
    """Reloaded with ``load_run`` (the task's own builder), the saved model gives the numbers the
    experiment recorded for the trained model."""
    folder, results = smoke_outputs(paper)
    run = results["runs"]["0"]
    assert run.get("model") == f"seed-0/{REPRESENTATIVE}", f"{paper}: results.json names no representative model"
    model, config = load_run(folder / run["model"])
    assert config["representative"] == {**config["representative"], "paper": paper, "preset": "smoke", "seed": 0}
    data = {name: json.loads((folder / "seed-0" / f"{name}.json").read_text()) for name in run["experiments"]}
    got, recorded = MEASURES[paper](model, data, get_reproduction(paper).presets["smoke"])
    assert got == pytest.approx(recorded, abs=1e-5), f"{paper}: the saved model measures {got}, the run {recorded}"


def test_every_sequence_model_reproduction_saves_a_model_and_scaling_does_not():
    assert {p: get_reproduction(p).saves_model for p in ("lca", "birth", "scaling", "factual")} == {
        "lca": True,
        "birth": True,
        "scaling": False,
        "factual": True,
    }


def test_every_key_figure_is_one_the_smoke_preset_draws(smoke_outputs):
    for paper in FAST:
        folder, results = smoke_outputs(paper)
        drawn = {Path(f).stem for fs in results["runs"]["0"]["files"].values() for f in fs if f.endswith(".png")}
        missing = sorted(set(get_reproduction(paper).report_figures) - drawn)
        assert not missing, f"{paper}: report_figures names figures the smoke preset does not draw: {missing}"


# ----------------------------------------------------------------------------- complete results


def test_complete_smoke_results_have_no_problems(smoke_outputs):
    for paper in FAST:
        folder, _ = smoke_outputs(paper)
        assert problems(read_results(folder), folder, "smoke", [0], paper) == []


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda f, r: (f / "seed-0" / "figures" / "wv_bar.png").unlink(), "missing (e.g. seed-0/figures/wv_bar.png)"),
        (lambda f, r: shutil.rmtree(f / "seed-0" / "model"), "has no config.json or model.safetensors"),
        (lambda f, r: r["runs"]["0"].pop("model"), "saved no representative model"),
        (lambda f, r: r["preset_config"].update(m=99), "the smoke preset's sizes have changed"),
        (lambda f, r: r["claims"].pop("hijack_monotone"), "missing ['hijack_monotone']"),
        (lambda f, r: r["runs"]["0"]["experiments"].pop("dim"), "did not run ['dim']"),
        (lambda f, r: r.update(seeds=[0, 1]), "seed 1 has no record"),
        (lambda f, r: r.update(schema="other/0"), "schema 'other/0'"),
    ],
)
def test_incomplete_or_stale_results_are_named(damage, expected, smoke_outputs, tmp_path):
    folder = copy_smoke(smoke_outputs, "lca", tmp_path)
    results = read_results(folder)
    damage(folder, results)
    forge_results(folder, results)
    with pytest.raises(ValueError, match=re.escape(expected)):
        check_results(folder, "smoke")


def test_results_of_another_preset_seeds_or_paper_are_refused(smoke_outputs):
    folder, _ = smoke_outputs("lca")
    with pytest.raises(ValueError, match="holds the 'smoke' preset, not 'quick'"):
        check_results(folder, "quick")
    with pytest.raises(ValueError, match=re.escape("holds seeds [0], not [0, 1]")):
        check_results(folder, "smoke", [0, 1])
    with pytest.raises(ValueError, match="holds results of lca, not birth"):
        check_results(folder, "smoke", paper="birth")
    with pytest.raises(FileNotFoundError, match="has no results.json"):
        check_results(folder / "seed-0", "smoke")


# ----------------------------------------------------------------------------- the plan


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(preset="medium"), "--preset: 'medium' is not a preset"),
        (dict(seeds=[0, 0]), "each seed once"),
        (dict(seeds=[-1]), "every seed must be an int >= 0"),
        (dict(papers=["lca", "gpt"]), "--papers: give each paper once"),
        (dict(papers=[]), "--papers: give each paper once"),
        (dict(examples=0), "--examples must be an int >= 1"),
        (dict(jobs=0), "--jobs must be an int >= 1"),
    ],
)
def test_bad_options_are_refused_before_anything_is_written(options, message, tmp_path):
    with pytest.raises(ValueError, match=re.escape(message)):
        ReportOptions(runs=tmp_path / "runs", **options)
    assert not (tmp_path / "runs").exists()


def test_the_plan_collects_named_and_up_to_date_folders_and_runs_the_rest(smoke_outputs, tmp_path):
    lca, _ = smoke_outputs("lca")
    scaling = copy_smoke(smoke_outputs, "scaling", tmp_path / "runs")  # runs/scaling-smoke: up to date
    sources = plan(ReportOptions(preset="smoke", runs=tmp_path / "runs", collect=[lca]))
    assert [(s.paper, s.collect, s.why) for s in sources] == [
        ("lca", True, "named by --collect"),
        ("birth", False, "no finished results there yet"),
        ("scaling", True, "complete and up to date"),
        ("factual", False, "no finished results there yet"),
    ]
    assert sources[2].folder == scaling
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["scaling-smoke"], "the plan wrote something"


def test_the_plan_refuses_what_it_cannot_report_or_would_overwrite(smoke_outputs, tmp_path):
    lca, _ = smoke_outputs("lca")
    runs = tmp_path / "runs"
    with pytest.raises(ValueError, match="both hold lca"):
        plan(ReportOptions(preset="smoke", runs=runs, collect=[lca, lca]))
    with pytest.raises(ValueError, match="which --papers scaling leaves out"):
        plan(ReportOptions(preset="smoke", runs=runs, collect=[lca], papers=["scaling"]))
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        plan(ReportOptions(preset="smoke", runs=runs, collect=[tmp_path / "nowhere"]))
    stale = copy_smoke(smoke_outputs, "lca", runs)
    with pytest.raises(ValueError, match=r"holds seeds \[0\], not \[1\].*pass --rerun"):
        plan(ReportOptions(preset="smoke", runs=runs, papers=["lca"], seeds=[1]))
    assert plan(ReportOptions(preset="smoke", runs=runs, papers=["lca"], seeds=[1], rerun=True))[0].collect is False
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="was not made by mechmem"):
        plan(ReportOptions(preset="smoke", runs=runs, papers=["lca"], out=foreign))
    with pytest.raises(ValueError, match="would replace"):
        plan(ReportOptions(preset="smoke", runs=runs, papers=["lca"], out=runs))
    assert (foreign / "notes.txt").read_text() == "keep me" and (stale / "results.json").is_file()


# ----------------------------------------------------------------------------- the page


@pytest.fixture(scope="module")
def report(smoke_outputs, tmp_path_factory) -> Path:
    """The report of the lca and scaling smoke reproductions (collected)."""
    folders = [smoke_outputs(p)[0] for p in FAST]
    out = tmp_path_factory.mktemp("report") / "report"
    return make_report(ReportOptions(preset="smoke", papers=FAST, collect=folders, out=out, progress=False))


def test_the_page_shows_every_claim_with_each_seeds_measurement_and_the_papers_figures(report, smoke_outputs):
    html = report.read_text()
    for paper in FAST:
        _, results = smoke_outputs(paper)
        section = html[html.index(f'id="{paper}"') :]
        for key, claim in results["claims"].items():
            row = section[section.index(f"<b>{key}</b>") :].split("</tr>")[0]
            measured = claim["per_seed"]["0"]["measured"]
            shown = (
                "yes"
                if measured is True
                else "no"
                if measured is False
                else ("&ndash;" if measured is None else f"{measured:.4g}")
            )
            assert shown in row, f"{paper}.{key}: the row does not show the measurement {shown}:\n{row}"
            assert ("✓" if claim["per_seed"]["0"]["holds"] else "✗") in row, f"{paper}.{key}: wrong mark"
        for name in get_reproduction(paper).report_figures:
            assert f"(<code>{name}.png</code>)" in section, f"{paper}: key figure {name} is not on the page"
    assert html.count("data:image/png;base64,") >= sum(len(get_reproduction(p).report_figures) for p in FAST)
    assert not re.search(r"""(src|href)=["']https?://""", html), "the page loads something from the network"


def test_the_page_holds_the_circuits_of_the_representative_model(report):
    html = report.read_text()
    lca = html[html.index('id="lca"') : html.index('id="scaling"')]
    assert "Circuits of a trained model" in lca and 'id="circuits-vis-' in lca, "no circuit views under lca"
    assert html.count('<script type="module">') == 1, "the CircuitsVis bundle must be inlined exactly once"
    assert (report.parent / "lca" / "inspect.json").is_file() and (report.parent / "lca" / "ov_layer0.png").is_file()
    for link in re.findall(r'<a href="([^"#]+)"', html):
        assert (report.parent / link).is_file(), f"the page links to {link}, which is not next to it"
    scaling = html[html.index('id="scaling"') :]
    assert "trains no sequence model" in scaling


def test_report_json_and_summary_hold_the_numbers_of_results_json(report, smoke_outputs):
    record = read_report(report.parent)
    summary = (report.parent / "summary.md").read_text()
    for paper in FAST:
        _, results = smoke_outputs(paper)
        mine = record["papers"][paper]
        assert mine["summary"] == results["summary"] and mine["seeds"] == [0] and mine["collected"] is True
        for key, claim in results["claims"].items():
            assert mine["claims"][key]["per_seed"] == claim["per_seed"], f"{paper}.{key}: per-seed entries differ"
            assert mine["claims"][key]["holds"] == claim["holds"], f"{paper}.{key}: holds differs"
            assert f"`{key}`" in summary
        assert set(mine["timings"]) >= {"gather", "page", "reproduction_wall_s"}
    assert record["papers"]["lca"]["timings"]["circuits"] > 0
    assert record["provenance"]["preset"] == "smoke"


def test_a_failed_report_leaves_the_previous_one_and_no_temporary_folder(report, smoke_outputs, tmp_path, monkeypatch):
    out = tmp_path / "report"
    shutil.copytree(report.parent, out)
    before = (out / "index.html").read_bytes()
    broken = copy_smoke(smoke_outputs, "lca", tmp_path)
    import mechmem.pages.report_page as page_module

    def fail(*args, **kwargs):
        raise RuntimeError("stopped while building the page")

    monkeypatch.setattr(page_module, "circuits_section", fail)
    with pytest.raises(RuntimeError, match="stopped while building the page"):
        make_report(ReportOptions(preset="smoke", papers=["lca"], collect=[broken], out=out, progress=False))
    assert (out / "index.html").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lca-smoke", "report"], "a temporary folder was left"
    assert not (tmp_path / "new").exists()
    with pytest.raises(RuntimeError, match="stopped while building the page"):
        make_report(
            ReportOptions(preset="smoke", papers=["lca"], collect=[broken], out=tmp_path / "new", progress=False)
        )
    assert not (tmp_path / "new").exists(), "a failed first report left its folder behind"


def test_a_corrupt_model_or_results_file_is_refused_before_anything_is_written(smoke_outputs, tmp_path):
    broken = copy_smoke(smoke_outputs, "lca", tmp_path)
    (broken / "seed-0" / "model" / "model.safetensors").write_bytes(b"not a safetensors file")
    out = tmp_path / "report"
    with pytest.raises(ValueError, match=r"seed-0/model/model\.safetensors does not match its checksum"):
        make_report(ReportOptions(preset="smoke", papers=["lca"], collect=[broken], out=out, progress=False))
    forge_results(broken, json.loads((broken / "results.json").read_text()))  # the folder's manifest agrees
    with pytest.raises(ValueError, match="seed 0: its model cannot be used .*does not match its checksum"):
        make_report(ReportOptions(preset="smoke", papers=["lca"], collect=[broken], out=out, progress=False))
    (broken / "results.json").write_text('{"schema": ')
    with pytest.raises(ValueError, match="results.json does not match its checksum"):
        make_report(ReportOptions(preset="smoke", papers=["lca"], collect=[broken], out=out, progress=False))
    assert not out.exists(), "a refused report wrote its folder"


def test_the_report_runs_missing_reproductions_then_collects_them(tmp_path, capsys):
    args = ["report", "--preset", "smoke", "--papers", "scaling", "--runs", str(tmp_path), "--quiet"]
    assert main(args) == 0, capsys.readouterr().err
    first = read_report(tmp_path / "report-smoke")["papers"]["scaling"]
    assert first["collected"] is False and (tmp_path / "scaling-smoke" / "results.json").is_file()
    made = (tmp_path / "scaling-smoke" / "results.json").stat().st_mtime_ns
    assert main(args) == 0, capsys.readouterr().err
    second = read_report(tmp_path / "report-smoke")["papers"]["scaling"]
    assert second["collected"] is True and second["why"] == "complete and up to date"
    assert (tmp_path / "scaling-smoke" / "results.json").stat().st_mtime_ns == made, "it ran scaling again"
    assert "report: " in capsys.readouterr().out


def test_cli_bad_report_arguments_fail_with_a_clear_error_before_any_work(tmp_path, capsys):
    assert main(["report", "--preset", "smoke", "--seeds", "0,x", "--runs", str(tmp_path / "r")]) == 2
    assert "--seeds expects comma-separated integers" in capsys.readouterr().err
    assert main(["report", "--preset", "smoke", "--papers", "lca,nope", "--runs", str(tmp_path / "r")]) == 2
    assert "--papers: give each paper once" in capsys.readouterr().err
    assert main(["report", "--preset", "smoke", "--collect", str(tmp_path), "--runs", str(tmp_path / "r")]) == 2
    assert "has no results.json" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["report", "--preset", "medium", "--runs", str(tmp_path / "r")])
    assert "invalid choice: 'medium'" in capsys.readouterr().err
    run = tmp_path / "a-run"  # what `mechmem train` writes: a results.json of another kind
    run.mkdir()
    (run / "config.json").write_text("{}")
    (run / "results.json").write_text(json.dumps({"final": {"loss": 0.1}}))
    collect = ["report", "--preset", "smoke", "--collect", str(run), "--runs", str(tmp_path / "r")]
    assert main(collect) == 2
    assert "has no manifest.json" in capsys.readouterr().err
    assert main([*collect, "--allow-no-manifest"]) == 2
    assert "is not the output of `mechmem reproduce`" in capsys.readouterr().err
    (run / "results.json").write_text('{"schema": "mechmem.repro')
    assert main([*collect, "--allow-no-manifest"]) == 2
    assert "results.json is not valid JSON" in capsys.readouterr().err
    assert not (tmp_path / "r").exists(), "a refused report wrote something"
