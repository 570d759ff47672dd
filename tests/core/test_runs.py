"""Run directories, checkpoints and resuming.

- a checkpoint round-trips bit-for-bit (also across the two model kinds), and ``load_run``
  rebuilds a saved run's model in one call;
- a missing, corrupted or wrong-shape checkpoint raises a clear error and changes nothing;
- an existing run directory is never overwritten unless asked;
- a run that dies (an exception, a crash in the middle of writing a checkpoint, or a hard
  ``os._exit`` in a separate process) and is resumed ends with exactly the weights and metrics of
  an uninterrupted run with the same seeds.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hooks.weights import get_weight, weight_names
from mechmem.cli import main as cli_main
from mechmem.core.config import ModelConfig
from mechmem.core.models import build_bridge, build_model
from mechmem.core.training import train
from mechmem.storage.folders import check_run_name, prepare_output_dir
from mechmem.storage.locking import LockedError
from mechmem.storage.runs import Run, load_run, load_weights, save_weights


def _without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], what: str) -> None:
    assert sorted(a) == sorted(b), f"{what}: different weight names {sorted(a)} vs {sorted(b)}"
    differing = [n for n in a if not torch.equal(a[n], b[n])]
    assert not differing, f"{what}: weights differ bit-for-bit in {differing}"


def _weights(model) -> dict[str, torch.Tensor]:
    return {n: get_weight(model, n) for n in weight_names(model)}


def _run_config(model_cfg: ModelConfig) -> dict:
    return {"model": model_cfg.to_dict()}


# --- run directories -------------------------------------------------------------------------


def test_existing_run_directory_is_never_overwritten_unless_asked(tmp_path):
    """Run.create refuses an existing directory (leaving its files alone); overwrite=True replaces it."""
    path = tmp_path / "run"
    Run.create(path, {"model": {"d_model": 1}})
    (path / "results.json").write_text('{"keep": true}')
    with pytest.raises(FileExistsError, match="already exists.*overwrite"):
        Run.create(path, {"model": {"d_model": 2}})
    assert json.loads((path / "config.json").read_text()) == {"model": {"d_model": 1}}, "config.json was changed"
    assert (path / "results.json").read_text() == '{"keep": true}', "results.json was changed"
    run = Run.create(path, {"model": {"d_model": 3}}, overwrite=True)
    assert run.config == {"model": {"d_model": 3}}, f"overwrite=True did not replace config.json: {run.config}"
    assert not (path / "results.json").exists(), "overwrite=True kept files of the old run"


def test_opening_a_folder_without_config_json_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        Run(tmp_path)


def test_run_saves_results_figures_html_and_metrics(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = Run.create(tmp_path / "run", {"model": {}})
    run.log({"step": 0, "loss": torch.tensor(1.5)})
    run.log({"step": 1, "loss": 0.5})
    run.save_results({"acc": torch.tensor([1.0, 0.5]), "path": tmp_path})
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    png = run.save_figure(fig, "curve")
    html = run.save_html("view", "<b>hi</b>")
    assert run.metrics() == [{"step": 0, "loss": 1.5}, {"step": 1, "loss": 0.5}], f"metrics: {run.metrics()}"
    assert json.loads((run.path / "results.json").read_text()) == {"acc": [1.0, 0.5], "path": str(tmp_path)}
    assert png == run.path / "figures" / "curve.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert html.read_text() == "<b>hi</b>"


# --- checkpoints --------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [build_model, build_bridge], ids=["into_hooked", "into_bridge"])
def test_checkpoint_round_trip_is_bit_exact_across_model_kinds(tmp_path, target, tiny_model_config):
    """save_weights then load_weights into a differently seeded model restores every weight exactly."""
    cfg = dataclasses.replace(tiny_model_config, n_layers=2, attn_only=False, normalization="LN", use_bias=True)
    source = build_model(cfg)
    file = save_weights(source, tmp_path / "w.safetensors")
    dest = target(dataclasses.replace(cfg, seed=cfg.seed + 1))
    assert not torch.equal(get_weight(dest, "W_E"), get_weight(source, "W_E")), "seeds did not change the init"
    load_weights(dest, file)
    _assert_same_weights(_weights(source), _weights(dest), "after the round trip")
    tokens = torch.randint(cfg.d_vocab, (2, cfg.n_ctx), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (source.eval()(tokens) - dest.eval()(tokens)).abs().max().item()
    assert diff < 1e-5, f"reloaded model's logits differ by {diff}"


def _broken_files(tmp_path: Path, good: Path) -> dict[str, Path]:
    raw = good.read_bytes()
    files = {"missing": tmp_path / "nothing_here.safetensors"}
    for name, data in {"truncated": raw[: len(raw) // 2], "garbage": b"not a checkpoint" * 8, "empty": b""}.items():
        files[name] = tmp_path / f"{name}.safetensors"
        files[name].write_bytes(data)
    return files


@pytest.mark.parametrize(
    "kind, error, match",
    [
        ("missing", FileNotFoundError, "does not exist"),
        ("truncated", ValueError, "corrupted"),
        ("garbage", ValueError, "corrupted"),
        ("empty", ValueError, "corrupted"),
        ("wrong_shape", ValueError, r"shape .*expected"),
        ("wrong_layers", ValueError, r"does not match the model.*unexpected \['blocks\.1"),
    ],
)
def test_bad_checkpoint_raises_a_clear_error_and_changes_nothing(tmp_path, kind, error, match, tiny_model_config):
    """Nothing is written into the model unless the whole checkpoint fits it; the file stays as it was."""
    cfg = tiny_model_config
    good = save_weights(build_model(cfg), tmp_path / "good.safetensors")
    files = _broken_files(tmp_path, good)
    files["wrong_shape"] = save_weights(build_model(dataclasses.replace(cfg, d_model=32)), tmp_path / "d32.safetensors")
    files["wrong_layers"] = save_weights(build_model(dataclasses.replace(cfg, n_layers=2)), tmp_path / "l2.safetensors")
    file = files[kind]
    before_bytes = file.read_bytes() if file.exists() else None
    model = build_model(dataclasses.replace(cfg, seed=5))
    before = _weights(model)
    with pytest.raises(error, match=match):
        load_weights(model, file)
    _assert_same_weights(before, _weights(model), f"model after a failed load of a {kind} checkpoint")
    after_bytes = file.read_bytes() if file.exists() else None
    assert after_bytes == before_bytes, f"the {kind} checkpoint file was modified by the failed load"


def test_load_run_rebuilds_the_trained_model_in_one_call(tmp_path, tiny_task, tiny_model_config, fast_train_config):
    """load_run(path) returns the trained weights in eval mode, plus the saved config dict."""
    run = Run.create(tmp_path / "run", _run_config(tiny_model_config))
    model = build_model(tiny_model_config)
    train(model, tiny_task, dataclasses.replace(fast_train_config, steps=10), run=run)
    loaded, config = load_run(run.path)
    assert config == run.config
    assert not loaded.training, "load_run should return the model in eval mode"
    _assert_same_weights(_weights(model), _weights(loaded), "load_run vs the trained model")
    bridge, _ = load_run(run.path, bridge=True)
    _assert_same_weights(_weights(model), _weights(bridge), "load_run(bridge=True) vs the trained model")


def test_load_run_with_a_corrupted_model_file_fails_and_leaves_it_alone(tmp_path, tiny_model_config):
    run = Run.create(tmp_path / "run", _run_config(tiny_model_config))
    (run.path / "model.safetensors").write_bytes(b"\x00" * 40)
    with pytest.raises(ValueError, match="corrupted"):
        load_run(run.path)
    assert (run.path / "model.safetensors").read_bytes() == b"\x00" * 40


def test_load_run_without_a_model_section_says_so(tmp_path):
    Run.create(tmp_path / "run", {"task": {}})
    with pytest.raises(ValueError, match="no 'model' section"):
        load_run(tmp_path / "run")


# --- resuming -----------------------------------------------------------------------------------


class _Crash(Exception):
    """Raised by a probe to simulate a run dying in the middle of training."""


def _crash_at_evaluation(number: int):
    calls = []

    def probe(model):
        calls.append(1)
        if len(calls) == number:
            raise _Crash(f"crash at evaluation {number}")
        return {}

    return probe


def _uninterrupted(path, task, model_cfg, train_cfg):
    run = Run.create(path, _run_config(model_cfg))
    model = build_model(model_cfg)
    result = train(model, task, train_cfg, run=run)
    return model, result, run


@pytest.mark.parametrize("crash_at", [2, 3], ids=["before_any_checkpoint", "after_one_checkpoint"])
def test_resume_after_a_crash_matches_an_uninterrupted_run(
    tmp_path, crash_at, tiny_task, tiny_model_config, fast_train_config
):
    """Crash at evaluation n (before its checkpoint is written), resume from the last checkpoint:
    weights, metrics.jsonl and the returned history equal the uninterrupted run's.

    Adam's moments and a delayed weight (freeze_until at a checkpoint step) must survive the restart."""
    tcfg = dataclasses.replace(fast_train_config, freeze_until={"blocks.0.attn.W_O": 10})
    reference, ref_result, ref_run = _uninterrupted(tmp_path / "ref", tiny_task, tiny_model_config, tcfg)

    run = Run.create(tmp_path / "crashed", _run_config(tiny_model_config))
    with pytest.raises(_Crash):
        train(
            build_model(tiny_model_config), tiny_task, tcfg, probes={"crash": _crash_at_evaluation(crash_at)}, run=run
        )
    assert not (run.path / "model.safetensors").exists(), "a crashed run wrote final weights"

    resumed = build_model(tiny_model_config)
    result = train(resumed, tiny_task, tcfg, run=run, resume=True)
    _assert_same_weights(_weights(reference), _weights(resumed), "resumed vs uninterrupted")
    assert _without_timing(result.history) == _without_timing(ref_result.history), "resumed history differs"
    assert _without_timing(run.metrics()) == _without_timing(ref_run.metrics()), "metrics.jsonl differs after resume"


def test_resume_when_killed_before_the_first_checkpoint_starts_over_cleanly(
    tmp_path, tiny_task, tiny_model_config, fast_train_config
):
    """No checkpoint yet: resume trains from scratch and metrics.jsonl holds each step once."""
    _, ref_result, _ = _uninterrupted(tmp_path / "ref", tiny_task, tiny_model_config, fast_train_config)
    run = Run.create(tmp_path / "crashed", _run_config(tiny_model_config))
    with pytest.raises(_Crash):
        train(
            build_model(tiny_model_config),
            tiny_task,
            fast_train_config,
            probes={"crash": _crash_at_evaluation(2)},
            run=run,
        )
    assert not run.has_train_state() and [r["step"] for r in run.metrics()] == [0]
    train(build_model(tiny_model_config), tiny_task, fast_train_config, run=run, resume=True)
    steps = [r["step"] for r in run.metrics()]
    assert steps == [0, 10, 20, 30], f"metrics.jsonl after resume has steps {steps}"
    assert _without_timing(run.metrics()) == _without_timing(ref_result.history)


def test_crash_while_writing_a_checkpoint_keeps_the_previous_one_and_resume_is_exact(
    tmp_path, monkeypatch, tiny_task, tiny_model_config, fast_train_config
):
    """If the process dies between writing the new checkpoint's temp file and renaming it, the
    previous checkpoint is intact (atomic write), the temp file is gone, and resuming from the
    older checkpoint still reproduces the uninterrupted run."""
    import mechmem.storage.files

    reference, _, _ = _uninterrupted(tmp_path / "ref", tiny_task, tiny_model_config, fast_train_config)
    run = Run.create(tmp_path / "crashed", _run_config(tiny_model_config))
    real_replace, renames = os.replace, []

    def dying_replace(src, dst):
        if Path(dst).name == "train_state.safetensors":
            renames.append(dst)
            if len(renames) == 2:  # the second checkpoint (step 20) never lands
                raise _Crash("died while writing the checkpoint")
        return real_replace(src, dst)

    monkeypatch.setattr(mechmem.storage.files.os, "replace", dying_replace)
    with pytest.raises(_Crash):
        train(build_model(tiny_model_config), tiny_task, fast_train_config, run=run)
    monkeypatch.setattr(mechmem.storage.files.os, "replace", real_replace)

    leftovers = [p.name for p in run.path.iterdir() if p.name.endswith(".tmp")]
    assert not leftovers, f"temporary files left behind: {leftovers}"
    state = load_file(str(run.path / "train_state.safetensors"))
    assert "rng.data" in state, "the previous checkpoint is not readable"
    resumed = build_model(tiny_model_config)
    train(resumed, tiny_task, fast_train_config, run=run, resume=True)
    _assert_same_weights(_weights(reference), _weights(resumed), "resumed after a torn checkpoint write")


_KILLED_TRAINING = textwrap.dedent(
    """
    import os, sys, torch
    torch.set_num_threads(int(sys.argv[3]))
    from mechmem.cli import build_configs
    from mechmem.core.models import build_model
    from mechmem.storage.runs import Run
    from mechmem.core.training import train

    overrides = sys.argv[2].split(";")
    task, model_cfg, train_cfg = build_configs("recall", overrides)
    config = {"task": {"name": task.name, **task.to_dict()}, "model": model_cfg.to_dict(),
              "train": train_cfg.to_dict(), "overrides": overrides}
    run = Run.create(sys.argv[1], config)
    calls = []

    def die(model):
        calls.append(1)
        if len(calls) == 3:  # the evaluation after 20 steps: the last checkpoint is at step 10
            os._exit(1)
        return {}

    train(build_model(model_cfg), task, train_cfg, probes={"die": die}, run=run)
    """
)


def test_hard_killed_process_resumed_via_cli_matches_uninterrupted_run(tmp_path):
    """A separate process trains with a run directory and is killed with os._exit(1) mid-training
    (no cleanup, no exception handling). ``mechmem train --resume`` then finishes it, and its
    final weights equal, bit for bit, those of an uninterrupted ``mechmem train`` with the same seeds."""
    overrides = [
        "task.n_keys=12",
        "task.n_values=6",
        "task.n_noise=8",
        "task.seq_len=8",
        "model.d_model=16",
        "steps=30",
        "batch_size=32",
        "eval_every=10",
        "eval_batch_size=64",
    ]
    killed = tmp_path / "killed"
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_TRAINING, str(killed), ";".join(overrides), str(torch.get_num_threads())],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, (
        f"the training process was not killed as planned (rc={proc.returncode}):\n{proc.stderr[-2000:]}"
    )
    assert [r["step"] for r in Run(killed).metrics()] == [0, 10], "unexpected metrics before the kill"
    assert not (killed / "model.safetensors").exists(), "the killed run wrote final weights"

    assert cli_main(["train", "recall", "--out", str(tmp_path), "--name", "killed", "--resume", "--quiet"]) == 0
    reference = ["train", "recall", "--out", str(tmp_path), "--name", "reference", "--quiet"]
    assert cli_main(reference + [a for o in overrides for a in ("--set", o)]) == 0

    final = load_file(str(killed / "model.safetensors"))
    expected = load_file(str(tmp_path / "reference" / "model.safetensors"))
    _assert_same_weights(expected, final, "hard-killed + resumed vs uninterrupted")
    got, want = Run(killed).metrics(), Run(tmp_path / "reference").metrics()
    assert _without_timing(got) == _without_timing(want), "metrics.jsonl of the resumed run differs"


@pytest.mark.parametrize(
    "task_name, overrides",
    [
        ("lca", ["task.m=3", "task.context_len=6", "model.d_model=8"]),
        (
            "factual",
            [
                "task.S=3",
                "task.R=2",
                "task.D=2",
                "task.seq_len=6",
                "model.d_model=8",
                "model.n_heads=2",
                "model.d_head=4",
                "model.d_mlp=8",
            ],
        ),
    ],
)
def test_load_run_rebuilds_a_paper_model_with_its_own_builder(tmp_path, task_name, overrides):
    """A paper task's ``build_model`` adds what a ModelConfig cannot say (permanent hooks removing the
    residual stream, the authors' init); ``load_run`` must rebuild through it, so the reloaded model
    computes exactly what the trained one did."""
    from mechmem.cli import build_configs, main

    rc = main(
        [
            "train",
            task_name,
            "--out",
            str(tmp_path),
            "--name",
            "r",
            "--quiet",
            "--set",
            "train.steps=2",
            "--set",
            "train.eval_every=2",
            "--set",
            "train.eval_batch_size=8",
            *sum((["--set", o] for o in overrides), []),
        ]
    )
    assert rc == 0, f"mechmem train {task_name} failed"
    loaded, config = load_run(tmp_path / "r")
    task, model_cfg, _ = build_configs(task_name, overrides)
    fresh = task.build_model(model_cfg)
    load_weights(fresh, tmp_path / "r" / "model.safetensors")
    fresh.eval()
    tokens = task.sample(4, torch.Generator().manual_seed(0)).tokens
    with torch.no_grad():
        assert torch.equal(loaded(tokens), fresh(tokens)), "load_run did not rebuild the task's own model"
        plain = build_model(model_cfg)
        load_weights(plain, tmp_path / "r" / "model.safetensors")
        assert not torch.allclose(plain.eval()(tokens), loaded(tokens)), (
            f"the {task_name} model should differ from a plain build_model (its builder adds hooks)"
        )


# --- folders mechmem owns: markers, locks, manifests -----------------------------------------------


def test_prepare_output_dir_reuses_its_own_output_and_refuses_anything_else(tmp_path):
    """An empty or missing folder is taken; the same kind's folder is kept as it is (resumable);
    another kind's folder needs overwrite (then it is emptied); a folder mechmem did not make, a
    file or a symbolic link is refused even with overwrite."""
    out = tmp_path / "out"
    assert prepare_output_dir(out, "reproduce-lca") == out
    (out / "results.json").write_text("{}")
    prepare_output_dir(out, "reproduce-lca")
    assert (out / "results.json").exists(), "its own previous output was deleted"
    with pytest.raises(FileExistsError, match="another kind.*overwrite"):
        prepare_output_dir(out, "reproduce-birth")
    prepare_output_dir(out, "reproduce-birth", overwrite=True)
    assert not (out / "results.json").exists(), "overwrite kept the other kind's files"

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match="not made by mechmem"):
            prepare_output_dir(foreign, "reproduce-lca", overwrite=overwrite)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        prepare_output_dir(tmp_path / "file", "reproduce-lca")
    with pytest.raises(ValueError, match="is a file"):
        prepare_output_dir(tmp_path / "file" / "below", "reproduce-lca")
    (tmp_path / "link").symlink_to(out, target_is_directory=True)
    with pytest.raises(ValueError, match="symbolic link"):
        prepare_output_dir(tmp_path / "link", "reproduce-birth", overwrite=True)


_HOLD_LOCK = """
import sys, time
from mechmem.storage.folders import prepare_output_dir
prepare_output_dir(sys.argv[1], "reproduce-lca")
print("locked", flush=True)
time.sleep(60)
"""


def test_a_folder_locked_by_another_process_is_refused_naming_its_pid(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(tmp_path / "out")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(LockedError, match=f"process {proc.pid}"):
            prepare_output_dir(tmp_path / "out", "reproduce-lca")
        with pytest.raises(LockedError, match=f"process {proc.pid}"):
            Run.create(tmp_path / "out", {"model": {}}, overwrite=True)
    finally:
        proc.kill()
        proc.wait()
    prepare_output_dir(tmp_path / "out", "reproduce-lca")  # the kernel released the dead holder's lock


def test_manifest_lists_every_file_a_run_writes_and_catches_a_changed_one(
    tmp_path, tiny_task, tiny_model_config, fast_train_config
):
    run = Run.create(tmp_path / "run", _run_config(tiny_model_config))
    train(build_model(tiny_model_config), tiny_task, fast_train_config, run=run)
    run.save_results({"ok": True})
    listed = run.verify()
    written = sorted(
        str(p.relative_to(run.path))
        for p in run.path.rglob("*")
        if p.is_file() and p.name not in ("manifest.json", ".mechmem.lock")  # the marker is covered too
    )
    assert listed == written, f"manifest lists {listed}, the run holds {written}"
    (run.path / "results.json").write_text('{"ok": false}')
    with pytest.raises(ValueError, match="results.json does not match its checksum"):
        run.verify()


def test_the_manifest_checks_itself_byte_for_byte(tmp_path):
    """Any changed byte of manifest.json is caught (its own checksum, or its canonical text); one without
    a checksum of its own, or none at all, is accepted only when the reader says so."""
    from mechmem.storage import manifest

    (tmp_path / "a.txt").write_text("a")
    manifest.seal(tmp_path)
    assert manifest.verify(tmp_path) == ["a.txt"]
    good = (tmp_path / "manifest.json").read_bytes()
    for i in range(len(good)):  # every single byte, changed
        (tmp_path / "manifest.json").write_bytes(good[:i] + bytes([good[i] ^ 0x20]) + good[i + 1 :])
        with pytest.raises(manifest.Damaged, match="manifest.json"):
            manifest.verify(tmp_path)
    old = {k: v for k, v in json.loads(good).items() if k in ("files", "pending")}  # the format before this one
    (tmp_path / "manifest.json").write_text(json.dumps(old))
    with pytest.raises(manifest.NoManifest, match="no checksum of its own"):
        manifest.verify(tmp_path)
    assert manifest.verify(tmp_path, allow_unchecked=True) == ["a.txt"]
    (tmp_path / "a.txt").write_text("b")
    with pytest.raises(manifest.Damaged, match="a.txt does not match"):
        manifest.verify(tmp_path, allow_unchecked=True)  # the files are still checked against an old manifest
    (tmp_path / "manifest.json").unlink()
    with pytest.raises(manifest.NoManifest, match="has no manifest.json"):
        manifest.verify(tmp_path)
    assert manifest.verify(tmp_path, allow_unchecked=True) == []


def test_an_output_folder_holds_one_output_recorded_in_its_marker(tmp_path):
    """The same ``about`` reuses the folder; another one (or none recorded) is refused, naming what
    differs and the flag, before anything changes; ``overwrite`` empties it first."""
    out = tmp_path / "out"
    smoke = {"paper": "lca", "preset": "smoke", "seeds": [0]}
    prepare_output_dir(out, "reproduce-lca", about=smoke)
    (out / "results.json").write_text("{}")
    prepare_output_dir(out, "reproduce-lca", about=smoke)
    assert (out / "results.json").exists(), "its own output was deleted"
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(FileExistsError, match=r'preset "smoke" there, "quick" now.*--overwrite'):
        prepare_output_dir(out, "reproduce-lca", about={**smoke, "preset": "quick"})
    with pytest.raises(FileExistsError, match=r"seeds \[0\] there, \[0, 1\] now"):
        prepare_output_dir(out, "reproduce-lca", about={**smoke, "seeds": [0, 1]})
    assert sorted(p.name for p in out.iterdir()) == before and (out / "results.json").exists()
    prepare_output_dir(out, "reproduce-lca", overwrite=True, about={**smoke, "preset": "quick"})
    assert not (out / "results.json").exists(), "overwrite kept the other output's files"
    legacy = tmp_path / "legacy"  # made by a mechmem that recorded nothing
    prepare_output_dir(legacy, "reproduce-lca")
    (legacy / "results.json").write_text("{}")
    with pytest.raises(FileExistsError, match="settings were not recorded"):
        prepare_output_dir(legacy, "reproduce-lca", about=smoke)


def test_run_names_are_single_path_components():
    for good in ("demo", "r64", "a-b_c.d", "ü"):
        assert check_run_name(good) == good
    for bad in ("", ".", "..", "a/b", "../x", "/abs", ".hidden", "a\\b", "x" * 256):
        with pytest.raises(ValueError, match="not allowed"):
            check_run_name(bad)
    with pytest.raises(TypeError):
        check_run_name(None)
