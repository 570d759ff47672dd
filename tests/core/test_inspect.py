"""``mechmem inspect``: the page of a trained run holds every section with numbers that mean what
they say (checked on the recall task, where the circuit is known), works on bridges and on every
paper task, and refuses bad input before writing anything, leaving nothing half-written."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from mechmem.cli import main
from mechmem.pages.inspect_page import inspect_run
from mechmem.pages.inspection import InspectOptions, parse_heads

FAST = ["--set", "eval_every=5", "--set", "eval_batch_size=16", "--quiet"]


def _train(out: Path, task: str, steps: int, *overrides: str) -> Path:
    sets = [arg for o in overrides for arg in ("--set", o)]
    assert main(["train", task, "--out", str(out), "--name", task, "--set", f"steps={steps}", *sets, *FAST]) == 0
    return out / task


@pytest.fixture(scope="module")
def recall_run(tmp_path_factory) -> Path:
    """A recall model trained to ~100% accuracy (one layer, one head: the head is the whole circuit)."""
    return _train(tmp_path_factory.mktemp("runs"), "recall", 60, "batch_size=64")


@pytest.fixture(scope="module")
def recall_page(recall_run) -> Path:
    return inspect_run(recall_run, InspectOptions(batch_size=32, progress=False), command="mechmem inspect test")


def _summary(page: Path) -> dict:
    return json.loads((page.parent / "inspect.json").read_text())


def test_page_has_every_section_and_opens_offline(recall_page):
    html = recall_page.read_text()
    for title in ("Overview", "Attention", "Circuits", "Ablations", "Activation patching", "Memory map", "Provenance"):
        assert f">{title}</h2>" in html, f"section {title} missing"
    assert not re.search(r"""(src|href)\s*=\s*["']?https?:""", html), "the page must not load from the network"
    assert html.count("var CircuitsVis") == 1, "the CircuitsVis bundle must be inlined exactly once"
    for name in (
        "attention_example1",
        "ov_layer0",
        "qk_layer0",
        "ov_spectra",
        "ablations",
        "patching_heads",
        "patching_resid_pre",
        "memory_map",
    ):
        assert (recall_page.parent / f"{name}.png").is_file(), f"{name}.png missing"
    assert (recall_page.parent / "ov_layer0.json").is_file(), "the numbers of a figure go next to it"


def test_provenance_records_command_seeds_and_versions(recall_page):
    prov = _summary(recall_page)["provenance"]
    assert prov["command"] == "mechmem inspect test"
    assert prov["torch"] == torch.__version__ and prov["transformer_lens"] != "not installed"
    assert prov["config"]["task"]["name"] == "recall" and prov["inspect seed"] == 0
    assert set(prov["timings"]) == {"overview", "attention", "circuits", "ablations", "patching", "memory_map"}


def test_patching_finds_the_key_and_the_head_on_the_recall_task(recall_page):
    """Clean and corrupted examples differ only in the key token, and the model's one head carries the
    key to the query: patching that head restores the clean logit difference exactly, and so does
    patching ``resid_pre`` at the key position; other positions restore nothing."""
    patching = _summary(recall_page)["patching"]
    assert patching["heads"]["restored"] == [[pytest.approx(1.0, abs=1e-4)]]
    for example in patching["resid_pre"]:
        restored = example["restored"][0]
        key = [i for i, t in enumerate(example["tokens"]) if t.endswith("*")]
        assert len(key) == 1, "the recall corruption changes one token"
        assert restored[key[0]] == pytest.approx(1.0, abs=1e-4)
        assert all(abs(v) < 1e-4 for i, v in enumerate(restored) if i != key[0])


def test_ablating_the_only_head_destroys_recall(recall_page):
    ablations = _summary(recall_page)["ablations"]
    assert ablations["clean"]["accuracy_clean"] > 0.9, "the fixture model did not learn the task"
    head = next(r for r in ablations["rows"] if r["component"] == "L0H0")
    for kind in ("zero", "mean", "resample"):
        assert head[f"loss_{kind}"] > ablations["clean"]["loss_clean"] + 1.0, f"{kind} ablation left the loss low"


def test_a_bridge_gives_the_same_numbers(recall_run, tmp_path, recall_page):
    page = inspect_run(recall_run, InspectOptions(out=tmp_path / "bridge", bridge=True, batch_size=32, progress=False))
    hooked, bridge = _summary(recall_page), _summary(page)
    assert bridge["overview"]["bridge_vs_task_model"] < 1e-4
    for a, b in zip(hooked["ablations"]["rows"], bridge["ablations"]["rows"]):
        for key in a:
            if key != "component":
                assert b[key] == pytest.approx(a[key], rel=1e-3, abs=1e-4), f"{a['component']} {key} differs"
    restored = [torch.tensor(s["patching"]["heads"]["restored"]) for s in (hooked, bridge)]
    assert torch.allclose(*restored, atol=1e-3), "head patching differs on the bridge"


PAPER_RUNS = {
    "lca": ("lca", ["task.m=3", "task.context_len=8", "task.d_model=8"]),
    "birth_bigram": ("birth_bigram", ["task.seq_len=24"]),
    "factual": ("factual", ["task.S=4", "task.R=2", "task.D=2", "task.seq_len=8"]),
}


@pytest.mark.parametrize("name", sorted(PAPER_RUNS))
def test_every_paper_task_gets_a_page(name, tmp_path):
    task, overrides = PAPER_RUNS[name]
    run = _train(tmp_path, task, 2, "batch_size=8", *overrides)
    page = inspect_run(run, InspectOptions(batch_size=16, n_examples=1, progress=False))
    summary = _summary(page)
    assert set(summary) == {"overview", "attention", "circuits", "ablations", "patching", "memory_map", "provenance"}
    assert summary["patching"]["heads"]["examples"] >= 1


# ----------------------------------------------------------------------------- bad input


def test_a_folder_that_is_not_a_run_is_refused(tmp_path):
    (tmp_path / "notes").mkdir()
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        inspect_run(tmp_path / "notes")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        inspect_run(tmp_path / "missing")
    assert list((tmp_path / "notes").iterdir()) == [], "nothing may be written into a folder that is not a run"


def test_a_missing_or_corrupt_model_file_is_refused(recall_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(recall_run, run, ignore=shutil.ignore_patterns("inspect"))
    (run / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match=r"model\.safetensors (does not match its checksum|is corrupted)"):
        inspect_run(run, InspectOptions(progress=False))
    (run / "model.safetensors").unlink()  # a finished run's model deleted: damage, not an unfinished run
    with pytest.raises(ValueError, match=r"model\.safetensors is listed in manifest\.json but missing"):
        inspect_run(run, InspectOptions(progress=False))
    assert not (run / "inspect").exists() and not list(run.glob(".inspect*"))


def test_views_too_large_say_how_to_restrict_them(recall_run, monkeypatch, tmp_path):
    import mechmem.pages.inspection as inspect_module

    monkeypatch.setattr(inspect_module, "VOCAB_LIMIT", 16)
    with pytest.raises(ValueError, match="--max-vocab"):
        inspect_run(recall_run, InspectOptions(out=tmp_path / "a", progress=False))
    monkeypatch.setattr(inspect_module, "HEADS_LIMIT", 0)
    with pytest.raises(ValueError, match="--heads"):
        inspect_run(recall_run, InspectOptions(out=tmp_path / "a", max_vocab=8, progress=False))
    with pytest.raises(ValueError, match="does not exist"):
        inspect_run(recall_run, InspectOptions(out=tmp_path / "a", heads=[(0, 3)], progress=False))
    assert not (tmp_path / "a").exists()


def test_max_vocab_restricts_the_circuit_maps(recall_run, monkeypatch, tmp_path):
    import mechmem.pages.inspection as inspect_module

    monkeypatch.setattr(inspect_module, "VOCAB_LIMIT", 16)
    page = inspect_run(
        recall_run, InspectOptions(out=tmp_path / "v", max_vocab=6, batch_size=16, patching=False, progress=False)
    )
    circuits = _summary(page)["circuits"]
    assert len(circuits["tokens"]) == 6 and len(circuits["outputs"]) == 6
    assert "?" in circuits["tokens"], "the query token occurs in every example: it must be among the most frequent"


def test_a_task_without_a_corruption_rule_is_refused_for_patching(recall_run, monkeypatch, tmp_path):
    from mechmem.tasks import RecallTask

    def no_rule(self, batch, generator):
        raise NotImplementedError("task 'recall' has no corruption rule")

    monkeypatch.setattr(RecallTask, "corrupt", no_rule)
    with pytest.raises(ValueError, match="no corruption rule.*--no-patching"):
        inspect_run(recall_run, InspectOptions(out=tmp_path / "p", progress=False))
    assert not (tmp_path / "p").exists()


def test_bad_options_and_devices_are_refused():
    with pytest.raises(ValueError, match="n_examples"):
        InspectOptions(n_examples=0)
    with pytest.raises(ValueError, match="cannot exceed"):
        InspectOptions(n_examples=9, batch_size=4)
    with pytest.raises(ValueError, match="LAYER.HEAD"):
        parse_heads("0-1")
    assert parse_heads("0.1, 2.*") == [(0, 1), (2, -1)]
    from mechmem.pages.inspection import check_device

    with pytest.raises(ValueError, match="not a torch device"):
        check_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            check_device("cuda")


def test_a_failure_leaves_the_previous_page_and_no_temporary_files(recall_run, recall_page, monkeypatch):
    import mechmem.pages.inspect_page as page_module

    before = recall_page.read_text()
    monkeypatch.setattr(page_module, "circuits", lambda ins: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        inspect_run(recall_run, InspectOptions(batch_size=32, progress=False))
    assert recall_page.read_text() == before, "the old page must survive a failed run"
    assert not list(recall_run.glob(".inspect*")), "temporary folders must be removed"


def test_a_folder_not_written_by_inspect_is_not_replaced(recall_run, tmp_path):
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="was not made by mechmem"):
        inspect_run(recall_run, InspectOptions(out=other, progress=False, overwrite=True))
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"] and (other / "notes.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="would replace the run"):
        inspect_run(recall_run, InspectOptions(out=recall_run, progress=False))


def test_the_page_folder_is_marked_and_another_kind_of_output_needs_overwrite(recall_run, recall_page, tmp_path):
    from mechmem.storage.folders import LOCK_FILE, MARKER, marker_kind

    assert marker_kind(recall_page.parent) == "inspect" and (recall_page.parent / LOCK_FILE).is_file()
    other = tmp_path / "a-run"
    other.mkdir()
    (other / MARKER).write_text(json.dumps({"kind": "run", "made_by": "mechmem"}))
    (other / "config.json").write_text("{}")
    quick = dict(out=other, batch_size=16, n_examples=1, patching=False, progress=False)
    with pytest.raises(FileExistsError, match="another kind"):
        inspect_run(recall_run, InspectOptions(**quick))
    assert (other / "config.json").is_file() and not (other / "index.html").exists()
    inspect_run(recall_run, InspectOptions(**quick, overwrite=True))
    assert marker_kind(other) == "inspect" and (other / "index.html").is_file() and not (other / "config.json").exists()


def test_a_run_that_another_process_writes_is_not_inspected(recall_run, tmp_path, hold_lock):
    """One writer per run folder: inspect takes the run's lock (a run still training is refused)."""
    from mechmem.storage.folders import LOCK_FILE
    from mechmem.storage.locking import LockedError

    with hold_lock(recall_run / LOCK_FILE) as pid:
        with pytest.raises(LockedError, match=f"process {pid}"):
            inspect_run(recall_run, InspectOptions(out=tmp_path / "page", progress=False))
    assert not (tmp_path / "page").exists(), "a page folder was made for a refused inspect"


def test_cli_inspect_writes_the_page_and_reports_errors(recall_run, tmp_path, capsys):
    assert (
        main(
            [
                "inspect",
                str(recall_run),
                "--out",
                str(tmp_path / "cli"),
                "--batch-size",
                "16",
                "--examples",
                "1",
                "--no-patching",
                "--quiet",
            ]
        )
        == 0
    )
    assert "inspect page:" in capsys.readouterr().out and (tmp_path / "cli" / "index.html").is_file()
    assert main(["inspect", str(tmp_path), "--quiet"]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_the_sections_can_go_under_a_section_of_another_page(recall_run, tmp_path):
    """How a report reuses inspect: the sections become subsections of its own page."""
    from mechmem.pages.inspect_page import Inspection, build_sections
    from mechmem.pages.inspection import prepare
    from mechmem.pages.page import Page

    report = Page("report")
    paper = report.section("Recall")
    summary = build_sections(
        Inspection(
            tmp_path,
            parent=paper,
            **prepare(recall_run, InspectOptions(batch_size=16, n_examples=1, patching=False, progress=False)),
        )
    )
    html = report.render()
    assert ">Recall</h2>" in html and ">Circuits</h3>" in html and ">Provenance</h3>" in html
    assert (tmp_path / "ov_layer0.png").is_file() and "ablations" in summary
