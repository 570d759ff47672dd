"""Fault injection: runs and sweeps never lose or mix data, whatever goes wrong.

Every test injects faults (``record_property("faults", n)``) and checks that each one ended
*clean*: the process was refused or recovered with a clear message, nothing outside the named
folder changed, and a resumed run ends bit-identical to an uninterrupted one. The session's
summary line reports ``fault injection: <tried> tried / <clean> clean`` (``tests/conftest.py``).

- kill -9 at seeded random write points of ``mechmem train`` (and of its first steps), then
  resume: final weights and metrics bit-identical, no temporary file left;
- kill -9 of a 2-worker sweep at seeded random times: no orphan process, 0 rows lost or duplicated;
- every corruption of a finished run (flipped bytes, NaN, a deleted state, an impossible step, a
  missing or reshaped optimiser tensor, no metadata, a garbage RNG state, a truncated or non-object
  ``config.json``), and of every file kind it holds (model, metrics, results, figure, marker, the
  manifest itself: truncated, flipped, deleted, a key renamed): ``--resume``, ``load_run`` and
  ``mechmem inspect`` refuse, naming the file and what to do, and change nothing; ``--repair``
  rebuilds exactly the damaged files its checkpoint holds (naming each) and refuses the others;
- every corruption of a reproduction's folder, and a second preset, seed set or variant into it:
  ``mechmem report`` / ``mechmem reproduce`` refuse before writing anything; a rerun stopped midway
  leaves no ``results.json`` pointing at files it did not write;
- resources: a full disk and a read-only file system at random write points (in-process faults),
  permission denied, a name too long, absurd ``--threads`` and model sizes: one line naming the
  path or field, no traceback, and the command the error prints finishes the run bit-identically;
- advice that is safe: a damaged run is never called "interrupted", nothing suggests ``--overwrite``
  where it would delete a model, hints carry ``--out``;
- two concurrent writers (``--overwrite`` twice, ``--resume`` twice, two sweeps on one file);
- bad names, folders and values: refused before any folder exists;
- Ctrl-C: a clean message with the command that resumes, which then finishes the run exactly.

The long variants (many kills) are marked ``slow``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from mechmem.cli import main
from mechmem.storage.runs import load_run

#: A tiny recall run: vocab 21, d_model 16, 20 steps, a checkpoint every 5 steps.
TINY = [
    "task.n_keys=12",
    "task.n_values=6",
    "task.n_noise=8",
    "task.seq_len=8",
    "model.d_model=16",
    "train.steps=20",
    "train.batch_size=32",
    "train.eval_every=5",
    "train.eval_batch_size=64",
]
OWN_FILES = (".mechmem.lock",)  # rewritten with the pid of each writer: not run data


def _sets(pairs: list[str]) -> list[str]:
    return [arg for pair in pairs for arg in ("--set", pair)]


def _train(out: Path, name: str, *extra: str, overrides=TINY) -> int:
    return main(["train", "recall", "--out", str(out), "--name", name, "--quiet", *_sets(overrides), *extra])


def _resume(out: Path, name: str, task: str = "recall") -> int:
    return main(["train", task, "--out", str(out), "--name", name, "--quiet", "--resume"])


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (links not followed) -> its bytes, except mechmem's lock file."""
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = Path(root) / name
            if name not in OWN_FILES and not path.is_symlink():
                out[str(path.relative_to(folder))] = path.read_bytes()
    return out


def _without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def _metrics(run: Path) -> list[dict]:
    return _without_timing([json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line])


def _temp_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*.tmp"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted run of TINY (the bits every recovered run must end with)."""
    out = tmp_path_factory.mktemp("reference")
    assert _train(out, "ref") == 0
    return out / "ref"


def _assert_same_run(run: Path, ref: Path) -> None:
    got, want = load_file(str(run / "model.safetensors")), load_file(str(ref / "model.safetensors"))
    differing = [n for n in want if n not in got or not torch.equal(got[n], want[n])]
    assert not differing, f"{run.name}: final weights differ from the uninterrupted run in {differing}"
    assert _metrics(run) == _metrics(ref), f"{run.name}: metrics.jsonl differs from the uninterrupted run"
    assert not _temp_files(run), f"{run.name}: temporary files left behind: {_temp_files(run)}"


# --- kill -9 during training, then resume ------------------------------------------------------

_DRIVER = textwrap.dedent(
    """
    import os, signal, sys, time
    at, action, flags = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    real_replace, calls = os.replace, [0]

    def replace(src, dst):  # every atomic write of mechmem ends with os.replace
        calls[0] += 1
        if calls[0] == at and action == "kill-before":
            os.kill(os.getpid(), signal.SIGKILL)
        if calls[0] == at and action == "pause":  # hold the run mid-write until told to go on
            open(os.path.join(flags, "paused"), "w").close()
            while not os.path.exists(os.path.join(flags, "go")):
                time.sleep(0.02)
        real_replace(src, dst)
        if calls[0] == at and action == "kill-after":
            os.kill(os.getpid(), signal.SIGKILL)
        if calls[0] == at and action == "ctrl-c":
            os.kill(os.getpid(), signal.SIGINT)

    os.replace = replace
    # a process started in the background of a non-interactive shell inherits SIGINT ignored, where
    # Python installs no KeyboardInterrupt handler: restore it, as in a terminal where Ctrl-C is pressed
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from mechmem.cli import main
    sys.exit(main(sys.argv[4:]))
    """
)


def _argv(out: Path, name: str, resume: bool) -> list[str]:
    argv = ["train", "recall", "--out", str(out), "--name", name, "--quiet"]
    return argv + (["--resume"] if resume else ["--overwrite", *_sets(TINY)])


def _driver(out: Path, name: str, at: int, action: str, resume: bool | None = None) -> list[str]:
    """The command running ``mechmem train`` with ``action`` at its ``at``-th file rename; by default
    it resumes a started run (one with config.json) and starts a new one with --overwrite."""
    if resume is None:
        resume = (out / name / "config.json").is_file()
    return [sys.executable, "-c", _DRIVER, str(at), action, str(out), *_argv(out, name, resume)]


def _train_process(out: Path, name: str, kill_at: int, when: str) -> subprocess.CompletedProcess:
    """``mechmem train`` in a fresh process, killed with SIGKILL right ``before`` or ``after`` its
    ``kill_at``-th file rename; a run folder without config.json is started again with --overwrite."""
    return subprocess.run(_driver(out, name, kill_at, f"kill-{when}"), capture_output=True, text=True, timeout=600)


def _kill_and_resume(tmp_path: Path, reference: Path, seed: int, kills: int, record_property) -> None:
    record_property("faults", kills)  # counted whatever the outcome
    rng = random.Random(seed)
    name = f"killed{seed}"
    for attempt in range(kills):
        proc = _train_process(tmp_path, name, rng.randint(1, 45), rng.choice(["before", "after"]))
        assert proc.returncode in (0, -signal.SIGKILL), (
            f"kill {attempt + 1}: the process failed instead of dying or finishing (rc={proc.returncode}):\n"
            f"{proc.stderr[-3000:]}"
        )
        if proc.returncode == 0:
            break
    proc = _train_process(tmp_path, name, 10**6, "after")  # no kill
    assert proc.returncode == 0, f"the final resume failed:\n{proc.stderr[-3000:]}"
    _assert_same_run(tmp_path / name, reference)


def test_kill_9_at_random_write_points_then_resume_ends_bit_identical(tmp_path, reference, record_property):
    _kill_and_resume(tmp_path, reference, seed=0, kills=3, record_property=record_property)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1, 11))
def test_many_kill_9s_at_random_write_points_then_resume_ends_bit_identical(tmp_path, reference, seed, record_property):
    _kill_and_resume(tmp_path, reference, seed, kills=6, record_property=record_property)


# --- kill -9 of a multi-worker sweep --------------------------------------------------------------

_SWEEP_TASK = textwrap.dedent(
    """
    import os, time

    def slow_square(config):
        time.sleep(config["sleep"])
        return {"square": config["n"] ** 2, "pid": os.getpid()}
    """
)
_SWEEP_DRIVER = textwrap.dedent(
    """
    import sys

    if __name__ == "__main__":
        import sweep_task
        from mechmem.storage.sweep import expand_grid, run_sweep

        configs = expand_grid({"n": list(range(int(sys.argv[2])))}, fixed={"sleep": float(sys.argv[3])})
        run_sweep(sweep_task.slow_square, configs, sys.argv[1], workers=2, progress=False)
    """
)


def _session_processes(sid: int) -> list[str]:
    """The live processes of session ``sid`` (the killed driver's workers, its resource tracker)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text.rsplit(")", 1)[1].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            alive.append(text.split(")", 1)[0] + ")")
    return alive


def _kill_sweep(tmp_path: Path, seed: int, kills: int, record_property) -> None:
    record_property("faults", kills)  # counted whatever the outcome
    (tmp_path / "sweep_task.py").write_text(_SWEEP_TASK)
    (tmp_path / "driver.py").write_text(_SWEEP_DRIVER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    results, n = tmp_path / "results.jsonl", 12
    rng = random.Random(seed)
    command = [sys.executable, str(tmp_path / "driver.py"), str(results), str(n), "0.4"]
    for _ in range(kills):
        proc = subprocess.Popen(command, env=env, start_new_session=True, stderr=subprocess.PIPE)
        deadline = time.time() + 120
        while not results.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)  # wait until the workers run (the first row lands)
        time.sleep(rng.uniform(0.0, 1.2))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 10
        while _session_processes(proc.pid) and time.time() < deadline:
            time.sleep(0.1)
        orphans = _session_processes(proc.pid)
        for line in orphans:  # do not leave them running whatever the verdict
            os.kill(int(line.split()[0]), signal.SIGKILL)
        assert not orphans, f"processes of the killed sweep still alive 10 s later: {orphans}"
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"resuming the sweep failed:\n{proc.stderr[-3000:]}"
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    ns = sorted(r["config"]["n"] for r in rows)
    assert ns == list(range(n)), f"rows lost or duplicated after {kills} kills: n values {ns}"
    assert all(r["result"]["square"] == r["config"]["n"] ** 2 for r in rows)


def test_kill_9_of_a_two_worker_sweep_leaves_no_orphans_and_resumes_without_loss(tmp_path, record_property):
    _kill_sweep(tmp_path, seed=0, kills=2, record_property=record_property)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1, 5))
def test_many_kill_9s_of_a_two_worker_sweep(tmp_path, seed, record_property):
    _kill_sweep(tmp_path, seed=seed, kills=4, record_property=record_property)


# --- corrupted checkpoints and configs ----------------------------------------------------------


def _manifest_agrees(run: Path, name: str) -> None:
    """Record ``name``'s new checksum in the manifest and re-seal it (a forger who knows the format:
    the checksums cannot catch it, the checks behind them must). Without a manifest there is nothing to do."""
    from mechmem.storage import manifest

    if (run / "manifest.json").exists():
        data = json.loads((run / "manifest.json").read_text())
        data["files"][name] = {
            "sha256": hashlib.sha256((run / name).read_bytes()).hexdigest(),
            "bytes": (run / name).stat().st_size,
        }
        manifest.write(run, data)


def _edit_state(run: Path, edit) -> None:
    """Rewrite train_state.safetensors with ``edit(tensors, meta) -> (tensors, metadata or None)``."""
    file = run / "train_state.safetensors"
    tensors = load_file(str(file))
    with safe_open(str(file), framework="pt") as f:
        meta = json.loads(f.metadata()["state"])
    tensors, meta = edit(tensors, meta)
    save_file(tensors, str(file), metadata=None if meta is None else {"state": json.dumps(meta)})
    _manifest_agrees(run, "train_state.safetensors")


def _flip_bytes(run: Path, name: str, count: int = 200) -> None:
    path = run / name
    data = bytearray(path.read_bytes())
    rng = random.Random(0)
    for i in rng.sample(range(len(data) // 2, len(data)), count):  # the tensor data, after the header
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _set_nan(tensors, meta):
    key = next(k for k in tensors if k.startswith("model."))
    tensors[key] = tensors[key].clone()
    tensors[key].view(-1)[0] = float("nan")
    return tensors, meta


def _opt_key(tensors, suffix):
    return next(k for k in sorted(tensors) if k.startswith("opt.") and k.endswith(suffix))


def _drop_exp_avg(tensors, meta):
    tensors.pop(_opt_key(tensors, ".exp_avg"))
    return tensors, meta


def _drop_exp_avg_everywhere(tensors, meta):  # also from the metadata's list of tensors
    key = _opt_key(tensors, ".exp_avg")
    tensors.pop(key)
    meta.get("tensors", []).remove(key) if key in meta.get("tensors", []) else None
    return tensors, meta


def _reshape_exp_avg(tensors, meta):
    key = _opt_key(tensors, ".exp_avg")
    tensors[key] = torch.zeros(3, 2)
    return tensors, meta


def _step(value):
    def edit(tensors, meta):
        meta["step"] = value
        return tensors, meta

    return edit


def _garbage_rng(tensors, meta):
    tensors["rng.data"] = torch.randint(
        0, 255, tensors["rng.data"].shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    return tensors, meta


CORRUPTIONS = {
    "200 flipped bytes in the state": (lambda run: _flip_bytes(run, "train_state.safetensors"), "train_state"),
    "state deleted": (lambda run: (run / "train_state.safetensors").unlink(), "train_state"),
    "state truncated": (
        lambda run: (run / "train_state.safetensors").write_bytes((run / "train_state.safetensors").read_bytes()[:300]),
        "train_state",
    ),
    "NaN in the state's weights": (lambda run: _edit_state(run, _set_nan), "train_state"),
    "step = -5": (lambda run: _edit_state(run, _step(-5)), "train_state"),
    "step = 205 of 20": (lambda run: _edit_state(run, _step(205)), "train_state"),
    "step between checkpoints": (lambda run: _edit_state(run, _step(7)), "train_state"),
    "optimiser tensor removed": (lambda run: _edit_state(run, _drop_exp_avg), "train_state"),
    "optimiser tensor removed from the list too": (
        lambda run: _edit_state(run, _drop_exp_avg_everywhere),
        "train_state",
    ),
    "optimiser tensor reshaped": (lambda run: _edit_state(run, _reshape_exp_avg), "train_state"),
    "state without metadata": (lambda run: _edit_state(run, lambda t, m: (t, None)), "train_state"),
    "garbage RNG state": (lambda run: _edit_state(run, _garbage_rng), "train_state"),
    "config.json truncated": (lambda run: (run / "config.json").write_text('{"task": {"na'), "config.json"),
    "config.json is a list": (lambda run: (run / "config.json").write_text("[1, 2]"), "config.json"),
    "config.json is a list (manifest agrees)": (
        lambda run: ((run / "config.json").write_text("[1, 2]"), _manifest_agrees(run, "config.json")),
        "config.json",
    ),
    "manifest.json deleted": (lambda run: (run / "manifest.json").unlink(), "manifest.json"),
}


def _truncate(run: Path, name: str) -> None:
    (run / name).write_bytes((run / name).read_bytes()[: (run / name).stat().st_size // 2])


def _flip_one(run: Path, name: str) -> None:
    """One byte changed in the middle of the file (a bit rot no parser notices)."""
    data = bytearray((run / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (run / name).write_bytes(bytes(data))


def _rename_key(run: Path) -> None:
    """A byte flipped in the manifest that keeps it valid JSON: ``figures/`` becomes ``figuses/``."""
    text = (run / "manifest.json").read_text()
    (run / "manifest.json").write_text(text.replace("figures/training.png", "figuses/training.png"))


def _drop_self_checksum(run: Path) -> None:
    """The manifest of a mechmem before manifests checked themselves ('files' and 'pending' only)."""
    data = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({"files": data["files"], "pending": data["pending"]}))


#: damage to every kind of file a finished run holds -> (damage, the file the refusal must name,
#: whether ``--repair`` rebuilds it from the checkpoint)
EVERY_FILE = {
    "model truncated": (lambda run: _truncate(run, "model.safetensors"), "model.safetensors", True),
    "model, one byte flipped": (lambda run: _flip_one(run, "model.safetensors"), "model.safetensors", True),
    "model deleted": (lambda run: (run / "model.safetensors").unlink(), "model.safetensors", True),
    "metrics truncated": (lambda run: _truncate(run, "metrics.jsonl"), "metrics.jsonl", True),
    "metrics, one byte flipped": (lambda run: _flip_one(run, "metrics.jsonl"), "metrics.jsonl", True),
    "metrics deleted": (lambda run: (run / "metrics.jsonl").unlink(), "metrics.jsonl", True),
    "results truncated": (lambda run: _truncate(run, "results.json"), "results.json", True),
    "results, one byte flipped": (lambda run: _flip_one(run, "results.json"), "results.json", True),
    "results deleted": (lambda run: (run / "results.json").unlink(), "results.json", True),
    "figure, one byte flipped": (lambda run: _flip_one(run, "figures/training.png"), "training.png", True),
    "figure deleted": (lambda run: (run / "figures/training.png").unlink(), "training.png", True),
    "marker, one byte flipped": (lambda run: _flip_one(run, ".mechmem.json"), ".mechmem.json", False),
    "state, one byte flipped": (lambda run: _flip_one(run, "train_state.safetensors"), "train_state", False),
    "config, one byte flipped": (lambda run: _flip_one(run, "config.json"), "config.json", False),
    "manifest: a key renamed": (_rename_key, "manifest.json", False),
    "manifest truncated": (lambda run: _truncate(run, "manifest.json"), "manifest.json", False),
    "manifest, one byte flipped": (lambda run: _flip_one(run, "manifest.json"), "manifest.json", False),
    "manifest without its own checksum": (_drop_self_checksum, "manifest.json", False),
    "manifest deleted": (lambda run: (run / "manifest.json").unlink(), "manifest.json", False),
}
CORRUPTIONS.update({name: (damage, named) for name, (damage, named, _) in EVERY_FILE.items()})


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finished")
    assert _train(out, "done") == 0
    return out / "done"


def _copy_run(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for rel, data in _files(src).items():
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        (dst / rel).write_bytes(data)
    return dst


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_resume_of_a_corrupted_run_refuses_naming_the_file_and_changes_nothing(
    tmp_path, finished, corruption, capsys, record_property
):
    record_property("faults", 1)  # counted whatever the outcome
    run = _copy_run(finished, tmp_path / "out" / "done")
    damage, named = CORRUPTIONS[corruption]
    damage(run)
    before = _files(run)
    code = _resume(tmp_path / "out", "done")
    err = capsys.readouterr().err
    assert code == 2, f"{corruption}: --resume exited {code}, expected a refusal (2)\n{err}"
    assert named in err, f"{corruption}: the error does not name {named}:\n{err}"
    assert "Traceback" not in err, f"{corruption}: a traceback instead of an error message:\n{err}"
    assert _files(run) == before, f"{corruption}: the refused --resume changed files of the run"


LOAD_CORRUPTIONS = {
    "200 flipped bytes in the model": (lambda run: _flip_bytes(run, "model.safetensors"), "model.safetensors"),
    "NaN in the model (manifest agrees)": (lambda run: _nan_model(run), "model.safetensors"),
    "config.json truncated": (CORRUPTIONS["config.json truncated"][0], "config.json"),
    "config.json is a list": (CORRUPTIONS["config.json is a list"][0], "config.json"),
    "model.safetensors deleted": (lambda run: (run / "model.safetensors").unlink(), "model.safetensors"),
}


def _nan_model(run: Path) -> None:
    tensors = load_file(str(run / "model.safetensors"))
    tensors["W_E"][0, 0] = float("inf")
    save_file(tensors, str(run / "model.safetensors"))
    _manifest_agrees(run, "model.safetensors")


LOAD_CORRUPTIONS.update({name: (damage, named) for name, (damage, named, _) in EVERY_FILE.items()})


@pytest.mark.parametrize("corruption", list(LOAD_CORRUPTIONS))
def test_load_run_of_a_corrupted_run_refuses_naming_the_file(tmp_path, finished, corruption, record_property):
    record_property("faults", 1)  # counted whatever the outcome
    run = _copy_run(finished, tmp_path / "done")
    damage, named = LOAD_CORRUPTIONS[corruption]
    damage(run)
    with pytest.raises(ValueError, match=named.replace(".", r"\.")):
        load_run(run)


@pytest.mark.parametrize("corruption", list(EVERY_FILE))
def test_inspect_of_a_damaged_run_refuses_naming_the_file_and_writes_nothing(
    tmp_path, finished, corruption, capsys, record_property
):
    record_property("faults", 1)  # counted whatever the outcome
    run = _copy_run(finished, tmp_path / "done")
    damage, named, _ = EVERY_FILE[corruption]
    damage(run)
    before = _files(run)
    code = main(["inspect", str(run), "--out", str(tmp_path / "page"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2, f"{corruption}: inspect exited {code}, expected a refusal (2)\n{err}"
    assert named in err and "Traceback" not in err, f"{corruption}: the error does not name {named}:\n{err}"
    assert not (tmp_path / "page").exists() and _files(run) == before, f"{corruption}: inspect wrote something"


def _repair(out: Path, name: str) -> int:
    return main(["train", "recall", "--out", str(out), "--name", name, "--repair"])


@pytest.mark.parametrize("corruption", [name for name, (_, _, rebuilt) in EVERY_FILE.items() if rebuilt])
def test_repair_rebuilds_exactly_the_damaged_file_from_the_checkpoint_and_names_it(
    tmp_path, finished, corruption, capsys, record_property
):
    """The file comes back bit for bit (results.json: all but its training time, unknown, said so);
    no other file changes; the repaired run resumes as finished and loads."""
    record_property("faults", 1)  # counted whatever the outcome
    run = _copy_run(finished, tmp_path / "done")
    original = _files(run)
    damage, named, _ = EVERY_FILE[corruption]
    damage(run)
    assert _resume(tmp_path, "done") == 2, f"{corruption}: --resume did not refuse the damaged run"
    assert "--repair" in capsys.readouterr().err, f"{corruption}: the refusal does not point to --repair"
    assert _repair(tmp_path, "done") == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    rewritten = [line.split()[1] for line in out.splitlines() if line.startswith("rewrote ")]
    name = next(n for n in original if n.endswith(named))
    assert rewritten == [str(run / name)], f"{corruption}: --repair reported {rewritten}, not {name}:\n{out}"
    after = _files(run)
    changed = sorted(n for n in set(original) | set(after) if original.get(n) != after.get(n))
    if name == "results.json":
        assert changed == ["manifest.json", "results.json"], f"{corruption}: --repair changed {changed}"
        got, want = json.loads(after[name]), json.loads(original[name])
        assert got.pop("train_seconds") is None and "not known" in got.pop("rebuilt")
        want.pop("train_seconds")
        assert got == want, f"{corruption}: the rebuilt results.json differs: {got} vs {want}"
    else:
        assert changed == [], f"{corruption}: after --repair these files differ from the original: {changed}"
    assert _resume(tmp_path, "done") == 0 and "no file changed" in capsys.readouterr().out
    load_run(run)


@pytest.mark.parametrize(
    "corruption",
    [name for name, (_, _, rebuilt) in EVERY_FILE.items() if not rebuilt] + ["model and config damaged"],
)
def test_repair_refuses_what_the_checkpoint_cannot_rebuild_and_writes_nothing(
    tmp_path, finished, corruption, capsys, record_property
):
    record_property("faults", 1)  # counted whatever the outcome
    run = _copy_run(finished, tmp_path / "done")
    if corruption == "model and config damaged":
        _flip_one(run, "model.safetensors")
        _flip_one(run, "config.json")
        named = "config.json"
    else:
        damage, named, _ = EVERY_FILE[corruption]
        damage(run)
    before = _files(run)
    code = _repair(tmp_path, "done")
    captured = capsys.readouterr()
    assert code == 2, f"{corruption}: --repair exited {code}, expected a refusal (2)\n{captured.out}"
    assert named in captured.err and "Traceback" not in captured.err, f"{corruption}:\n{captured.err}"
    assert "--overwrite" not in captured.err, f"{corruption}: advice that would delete the run:\n{captured.err}"
    assert _files(run) == before, f"{corruption}: a refused --repair changed files"


def test_resume_of_a_finished_run_changes_nothing_and_says_so(tmp_path, finished, capsys, record_property):
    record_property("faults", 2)  # counted whatever the outcome
    run = _copy_run(finished, tmp_path / "done")
    (run / ".model.safetensors.x1y2.tmp").write_bytes(b"half a file")  # what a kill -9 mid-write leaves
    before = _files(run)
    assert _resume(tmp_path, "done") == 0
    out = capsys.readouterr().out
    assert "already finished" in out and "nothing to do" in out, f"no word that the run had finished:\n{out}"
    after = _files(run)
    del before[".model.safetensors.x1y2.tmp"]
    assert after == before, f"--resume of a finished run changed {sorted(set(after) ^ set(before))} or their bytes"


def test_a_finished_run_that_lost_its_config_is_called_damaged_and_no_advice_deletes_it(
    tmp_path, finished, capsys, record_property
):
    """Every command names it damaged (a model and results exist), none says "interrupted" or
    suggests --overwrite; the model is still there afterwards."""
    record_property("faults", 5)  # counted whatever the outcome
    run = _copy_run(finished, tmp_path / "done")
    (run / "config.json").unlink()
    before = _files(run)
    commands = {
        "train": ["train", "recall", "--out", str(tmp_path), "--name", "done", "--quiet", *_sets(TINY)],
        "resume": ["train", "recall", "--out", str(tmp_path), "--name", "done", "--resume"],
        "repair": ["train", "recall", "--out", str(tmp_path), "--name", "done", "--repair"],
        "inspect": ["inspect", str(run), "--out", str(tmp_path / "page"), "--quiet"],
    }
    for what, argv in commands.items():
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2 and "damaged" in err, f"{what}: not called damaged (exit {code}):\n{err}"
        assert "while being created" not in err and "--overwrite" not in err, f"{what}: unsafe advice:\n{err}"
    with pytest.raises(FileNotFoundError, match="damaged, not interrupted"):
        load_run(run)
    assert _files(run) == before and (run / "model.safetensors").is_file()


def test_the_refusal_to_retrain_a_finished_run_says_overwrite_would_delete_it(
    tmp_path, finished, capsys, record_property
):
    record_property("faults", 1)  # counted whatever the outcome
    run = _copy_run(finished, tmp_path / "done")
    before = _files(run)
    assert _train(tmp_path, "done") == 2
    err = capsys.readouterr().err
    assert "finished run" in err and "would delete" in err and "another name" in err, err
    assert _files(run) == before


def test_resume_with_the_wrong_task_names_the_recorded_one(tmp_path, finished, capsys, record_property):
    record_property("faults", 1)  # counted whatever the outcome
    run = _copy_run(finished, tmp_path / "done")
    before = _files(run)
    assert _resume(tmp_path, "done", task="lca") == 2
    err = capsys.readouterr().err
    assert "trained on task 'recall'" in err, f"unhelpful error:\n{err}"
    assert _files(run) == before


# --- concurrent writers ------------------------------------------------------------------------


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        if proc.poll() is not None or time.time() > deadline:
            raise AssertionError(f"{path} never appeared (rc={proc.poll()}): {proc.stderr.read()[-2000:]}")
        time.sleep(0.02)


def _paused_writer(out: Path, name: str, at: int, resume: bool) -> subprocess.Popen:
    """A ``mechmem train`` process paused in the middle of its ``at``-th file write (it holds the
    run); it goes on when the file ``out/go`` appears."""
    proc = subprocess.Popen(
        _driver(out, name, at, "pause", resume=resume), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _wait_for(out / "paused", proc)
    return proc


def _go_on(out: Path, proc: subprocess.Popen) -> None:
    (out / "go").touch()
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, f"the first writer failed after the refused second one:\n{err[-2000:]}"


def test_a_second_overwrite_while_a_run_trains_is_refused_naming_the_first_pid(
    tmp_path, reference, capsys, record_property
):
    record_property("faults", 1)  # counted whatever the outcome
    first = _paused_writer(tmp_path, "ow", at=12, resume=False)  # after its first checkpoints
    try:
        code = _train(tmp_path, "ow", "--overwrite", overrides=TINY + ["train.steps=10"])
        err = capsys.readouterr().err
        assert code == 2, f"a second writer was let in (exit {code}):\n{err}"
        assert str(first.pid) in err, f"the refusal does not name the writer's pid {first.pid}:\n{err}"
        _go_on(tmp_path, first)
    finally:
        first.kill()
    _assert_same_run(tmp_path / "ow", reference)  # the first writer's run, unmixed


def test_two_simultaneous_resumes_let_one_in(tmp_path, reference, capsys, record_property):
    record_property("faults", 1)  # counted whatever the outcome
    killed = _train_process(tmp_path, "r", kill_at=16, when="after")  # after the checkpoint at step 10
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    first = _paused_writer(tmp_path, "r", at=2, resume=True)
    try:
        code = _resume(tmp_path, "r")
        err = capsys.readouterr().err
        assert code == 2 and str(first.pid) in err, f"the second resume was not refused (exit {code}):\n{err}"
        _go_on(tmp_path, first)
    finally:
        first.kill()
    _assert_same_run(tmp_path / "r", reference)  # each step once, the uninterrupted bits


_SWEEP_HOLDER = textwrap.dedent(
    """
    import sys

    if __name__ == "__main__":
        import sweep_task
        from mechmem.storage.sweep import expand_grid, run_sweep

        configs = expand_grid({"n": list(range(4))}, fixed={"sleep": 2.0})
        run_sweep(sweep_task.slow_square, configs, sys.argv[1], workers=1, progress=False)
    """
)


def test_a_second_sweep_on_the_same_results_file_is_refused(tmp_path, monkeypatch, record_property):
    record_property("faults", 1)  # counted whatever the outcome
    from mechmem.storage.sweep import expand_grid, read_results, run_sweep

    (tmp_path / "sweep_task.py").write_text(_SWEEP_TASK)
    (tmp_path / "holder.py").write_text(_SWEEP_HOLDER)
    monkeypatch.syspath_prepend(str(tmp_path))
    import sweep_task

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    results = tmp_path / "results.jsonl"
    first = subprocess.Popen(
        [sys.executable, str(tmp_path / "holder.py"), str(results)], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        _wait_for(tmp_path / "results.jsonl.grid.json", first)
        configs = expand_grid({"n": list(range(4))}, fixed={"sleep": 2.0})
        with pytest.raises(ValueError, match=str(first.pid)):
            run_sweep(sweep_task.slow_square, configs, results, workers=1, progress=False)
        assert first.wait(timeout=300) == 0, first.stderr.read()[-2000:]
    finally:
        first.kill()
    rows = read_results(results)  # raises on a duplicated configuration
    assert sorted(r["config"]["n"] for r in rows) == [0, 1, 2, 3]


# --- bad names, folders and values --------------------------------------------------------------

BAD_NAMES = ["", ".", "..", "../../escape", "a/b", ".hidden", "<tmp>/an/absolute/path", "x" * 300]


@pytest.mark.parametrize("name", BAD_NAMES, ids=lambda n: n[:20] or "(empty)")
def test_bad_run_names_are_refused_before_anything_is_written(tmp_path, name, capsys, record_property):
    record_property("faults", 1)  # counted whatever the outcome
    name = name.replace("<tmp>", str(tmp_path))  # an absolute path, inside this test's folder
    out = tmp_path / "deep" / "runs"
    code = main(["train", "recall", "--out", str(out), "--name", name, "--quiet", *_sets(TINY)])
    err = capsys.readouterr().err
    assert code == 2, f"--name {name!r} was accepted (exit {code})"
    assert "name" in err, f"the error does not say the name is the problem:\n{err}"
    assert sorted(os.listdir(tmp_path)) == [], f"--name {name!r}: files were created: {list(tmp_path.rglob('*'))}"


BAD_VALUES = {
    "model.device=cuda": "device",
    "model.device=foo": "device",
    "model.device=meta": "device",
    "train.seed=1180591620717411303424": "train.seed",
    "model.seed=-1": "seed",
    "task.table_seed=99999999999999999999999": "table_seed",
    "train.momentum=nan": "momentum",
    "train.momentum=inf": "momentum",
    "train.weight_decay=inf": "weight_decay",
    "train.weight_decay=nan": "weight_decay",
    "train.eps=inf": "eps",
    "train.eps=nan": "eps",
    "train.lr=inf": "lr",
    "train.betas=nan,0.9": "betas",
    "train.threads=0": "threads",
}


@pytest.mark.parametrize("pair", list(BAD_VALUES))
def test_bad_values_are_refused_naming_the_field_before_any_folder_exists(tmp_path, pair, capsys, record_property):
    record_property("faults", 1)  # counted whatever the outcome
    if pair == "model.device=cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code = main(["train", "recall", "--out", str(tmp_path / "runs"), "--quiet", *_sets(TINY + [pair])])
    err = capsys.readouterr().err
    assert code == 2, f"--set {pair} was accepted (exit {code})"
    assert BAD_VALUES[pair] in err and "Traceback" not in err, f"--set {pair}: unhelpful error:\n{err}"
    assert not (tmp_path / "runs").exists(), f"--set {pair}: a folder was created before the error"


def test_threads_option_rejects_zero_before_anything(tmp_path, capsys, record_property):
    record_property("faults", 1)  # counted whatever the outcome
    assert main(["train", "recall", "--out", str(tmp_path / "runs"), "--threads", "0", "--quiet"]) == 2
    assert "--threads" in capsys.readouterr().err and not (tmp_path / "runs").exists()


def test_overwrite_never_deletes_a_folder_mechmem_did_not_make(tmp_path, capsys, record_property):
    record_property("faults", 1)  # counted whatever the outcome
    precious = tmp_path / "runs" / "mine"
    precious.mkdir(parents=True)
    (precious / "config.json").write_text('{"my": "notes"}')
    (precious / "thesis.tex").write_text("years of work")
    before = _files(precious)
    assert _train(tmp_path / "runs", "mine", "--overwrite") == 2
    assert "not made by mechmem" in capsys.readouterr().err
    assert _files(precious) == before
    assert sorted(os.listdir(precious)) == ["config.json", "thesis.tex"], "mechmem wrote into a foreign folder"


def test_overwrite_of_a_symlinked_run_folder_is_refused_and_the_target_untouched(tmp_path, capsys, record_property):
    record_property("faults", 1)  # counted whatever the outcome
    target = tmp_path / "elsewhere"
    assert _train(tmp_path, "elsewhere") == 0
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "link").symlink_to(target, target_is_directory=True)
    before = _files(target)
    assert _train(tmp_path / "runs", "link", "--overwrite") == 2
    err = capsys.readouterr().err
    assert "symbolic link" in err and "Traceback" not in err, err
    assert _files(target) == before and (tmp_path / "runs" / "link").is_symlink()


def test_out_naming_a_file_is_refused(tmp_path, capsys, record_property):
    record_property("faults", 2)  # counted whatever the outcome
    (tmp_path / "file").write_text("x")
    assert _train(tmp_path / "file", "r") == 2
    assert "is a file" in capsys.readouterr().err
    assert main(["reproduce", "scaling", "--quick", "--out", str(tmp_path / "file")]) == 2
    assert "is a file" in capsys.readouterr().err
    assert (tmp_path / "file").read_text() == "x"


def test_reproduce_into_a_training_run_is_refused_and_the_run_untouched(tmp_path, finished, capsys, record_property):
    record_property("faults", 1)  # counted whatever the outcome
    run = _copy_run(finished, tmp_path / "run")
    before = _files(run)
    t0 = time.perf_counter()
    assert main(["reproduce", "scaling", "--quick", "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert "overwrite" in err and time.perf_counter() - t0 < 60, f"not refused up front:\n{err}"
    assert _files(run) == before, "reproduce changed the training run"


def test_a_half_created_run_folder_is_recoverable_with_overwrite(tmp_path, capsys, record_property):
    """Killed between mkdir and config.json: a rerun and --resume say what to do, --overwrite works."""
    record_property("faults", 3)  # counted whatever the outcome
    half = tmp_path / "half"
    proc = _train_process(tmp_path, "half", kill_at=1, when="after")  # right after the first rename
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert half.is_dir() and not (half / "config.json").exists()
    assert _train(tmp_path, "half") == 2
    assert "--overwrite" in capsys.readouterr().err
    assert _resume(tmp_path, "half") == 2
    assert "--overwrite" in capsys.readouterr().err
    assert _train(tmp_path, "half", "--overwrite") == 0


# --- Ctrl-C ---------------------------------------------------------------------------------------


def test_ctrl_c_stops_cleanly_and_prints_the_command_that_resumes_exactly(tmp_path, reference, record_property):
    record_property("faults", 1)  # counted whatever the outcome
    proc = subprocess.run(
        _driver(tmp_path, "c", at=14, action="ctrl-c", resume=False), capture_output=True, text=True, timeout=600
    )  # SIGINT to itself in the middle of training
    err = proc.stderr
    assert proc.returncode == 130, f"Ctrl-C: exit {proc.returncode}\n{err[-2000:]}"
    assert "Traceback" not in err, f"Ctrl-C printed a traceback:\n{err[-3000:]}"
    command = next((line.strip() for line in err.splitlines() if "--resume" in line), "")
    assert command.startswith("mechmem train recall"), f"no resume command printed:\n{err}"
    assert not _temp_files(tmp_path / "c"), f"temporary files left: {_temp_files(tmp_path / 'c')}"
    assert main(shlex.split(command)[1:] + ["--quiet"]) == 0, "the printed command did not resume the run"
    _assert_same_run(tmp_path / "c", reference)


# --- reproductions: damage, a second output in one folder, a rerun stopped midway -----------------


def _reproduction(smoke_outputs, paper: str, dest: Path) -> Path:
    """A private copy of the session's finished smoke reproduction of ``paper``."""
    folder, _ = smoke_outputs(paper)
    return Path(shutil.copytree(folder, dest / f"{paper}-smoke"))


def _report_argv(paper: str, folder: Path, out: Path) -> list[str]:
    return ["report", "--preset", "smoke", "--papers", paper, "--collect", str(folder), "--out", str(out), "--quiet"]


REPRODUCTION_DAMAGE = {
    "results.json, one byte flipped": (lambda f: _flip_one(f, "results.json"), "results.json"),
    "results.json truncated": (lambda f: _truncate(f, "results.json"), "results.json"),
    "a measurement changed": (lambda f: _flip_one(f, "seed-0/dim.json"), "dim.json"),
    "a figure deleted": (lambda f: next((f / "seed-0" / "figures").glob("*.png")).unlink(), "figures/"),
    "the model's weights flipped": (lambda f: _flip_one(f, "seed-0/model/model.safetensors"), "model.safetensors"),
    "the model's manifest truncated": (lambda f: _truncate(f, "seed-0/model/manifest.json"), "manifest.json"),
    "marker, one byte flipped": (lambda f: _flip_one(f, ".mechmem.json"), ".mechmem.json"),
    "manifest, one byte flipped": (lambda f: _flip_one(f, "manifest.json"), "manifest.json"),
    "manifest deleted": (lambda f: (f / "manifest.json").unlink(), "manifest.json"),
}


@pytest.mark.parametrize("damage", list(REPRODUCTION_DAMAGE))
def test_report_of_a_damaged_reproduction_refuses_naming_the_file_and_writes_nothing(
    smoke_outputs, tmp_path, damage, capsys, record_property
):
    record_property("faults", 1)  # counted whatever the outcome
    folder = _reproduction(smoke_outputs, "lca", tmp_path)
    hurt, named = REPRODUCTION_DAMAGE[damage]
    hurt(folder)
    before = _files(folder)
    code = main(_report_argv("lca", folder, tmp_path / "r"))
    err = capsys.readouterr().err
    assert code == 2, f"{damage}: report exited {code}, expected a refusal (2)\n{err}"
    assert named in err and "Traceback" not in err, f"{damage}: the error does not name {named}:\n{err}"
    assert not (tmp_path / "r").exists() and _files(folder) == before, f"{damage}: report wrote something"


@pytest.mark.parametrize(
    "change", [["--preset", "quick"], ["--seeds", "0,1"], ["--set", "n_trials=3"]], ids=["preset", "seeds", "variant"]
)
def test_a_second_reproduction_into_one_folder_is_refused_before_anything_is_written(
    smoke_outputs, tmp_path, change, capsys, record_property
):
    """scaling smoke, then another preset, seed set or variant into the same --out: refused at once,
    naming what differs and --overwrite; every file (the lock included) as it was."""
    record_property("faults", 1)  # counted whatever the outcome
    folder = _reproduction(smoke_outputs, "scaling", tmp_path)
    before = {**_files(folder), "lock": (folder / ".mechmem.lock").read_bytes()}
    preset = [] if "--preset" in change else ["--preset", "smoke"]
    t0 = time.perf_counter()
    code = main(["reproduce", "scaling", *preset, *change, "--out", str(folder), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and time.perf_counter() - t0 < 60, f"{change}: not refused up front (exit {code}):\n{err}"
    assert "--overwrite" in err and "never mixes" in err and "Traceback" not in err, f"{change}:\n{err}"
    assert {**_files(folder), "lock": (folder / ".mechmem.lock").read_bytes()} == before, f"{change}: files changed"


def test_a_rerun_stopped_midway_leaves_no_results_pointing_at_files_it_did_not_write(
    smoke_outputs, tmp_path, monkeypatch, capsys, record_property
):
    """The same reproduction again into its folder, the disk full at its second result: one line naming
    the folder; no results.json nor manifest left (the old ones would describe a mix of two runs), so the
    report refuses the folder as unfinished."""
    record_property("faults", 2)  # counted whatever the outcome
    import mechmem.contract.runner as runner

    folder = _reproduction(smoke_outputs, "scaling", tmp_path)
    real, calls = runner.save_result, [0]

    def full_disk(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "save_result", full_disk)
    code = main(["reproduce", "scaling", "--preset", "smoke", "--out", str(folder), "--quiet"])
    _assert_one_line_error(capsys.readouterr().err, code, "No space left on device", str(folder))
    assert not (folder / "results.json").exists() and not (folder / "manifest.json").exists()
    assert main(_report_argv("scaling", folder, tmp_path / "r")) == 2
    assert "not a finished reproduction" in capsys.readouterr().err


# --- resources: full disk, read-only file system, permissions, names, threads, sizes --------------


def _assert_one_line_error(err: str, code: int, *pieces: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code not in (0, None), f"the command succeeded (exit {code}):\n{err}"
    assert "Traceback" not in err and len(lines) == 1, f"not a one-line error (exit {code}):\n{err}"
    for piece in pieces:
        assert piece in lines[0], f"{piece!r} missing from the error:\n{err}"


def _printed_command(err: str) -> list[str]:
    """The mechmem command an error says to run (between backticks), as ``main``'s argv."""
    commands = [c for c in err.split("`")[1::2] if c.startswith("mechmem ")]
    assert commands, f"the error prints no command to run:\n{err}"
    return shlex.split(commands[-1])[1:] + ["--quiet"]


def _os_fault(monkeypatch, at: int, number: int, inside: Path) -> None:
    """From the ``at``-th file rename on, every write under ``inside`` fails with ``OSError(number)``:
    the rename itself (named: no file, as a full disk seen by ``write``), opening a file for writing and
    making a folder (naming the path, as the kernel does)."""
    real_replace, real_open, real_mkdir, calls = os.replace, os.open, os.mkdir, [0]
    failing = [at <= 0]
    reason = os.strerror(number)

    def replace(src, dst, **kwargs):
        calls[0] += 1
        failing[0] = failing[0] or calls[0] >= at
        if failing[0] and str(dst).startswith(str(inside)):
            raise OSError(number, reason)
        return real_replace(src, dst, **kwargs)

    def open_(path, flags, *args, **kwargs):
        if failing[0] and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and str(path).startswith(str(inside)):
            raise OSError(number, reason, str(path))
        return real_open(path, flags, *args, **kwargs)

    def mkdir(path, *args, **kwargs):
        if failing[0] and str(path).startswith(str(inside)):
            raise OSError(number, reason, str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(os, "mkdir", mkdir)


def _fault_then_rerun(tmp_path, reference, monkeypatch, capsys, at: int, number: int) -> None:
    """``mechmem train`` with the fault from its ``at``-th rename on: a one-line error naming a path
    under the run's folder and the command to run; once the fault is gone that command finishes the run,
    bit-identical to an uninterrupted one."""
    out = tmp_path / "runs"
    with monkeypatch.context() as patch:
        _os_fault(patch, at, number, tmp_path)
        code = _train(out, "r")
    err = capsys.readouterr().err
    if code == 0:  # the fault came after the last write: nothing to check but the bits
        _assert_same_run(out / "r", reference)
        return
    _assert_one_line_error(err, code, os.strerror(number), str(out))
    assert main(_printed_command(err)) == 0, f"the printed command did not finish the run:\n{capsys.readouterr()}"
    _assert_same_run(out / "r", reference)


@pytest.mark.parametrize("at", [0, 2, 11, 27], ids=lambda at: f"from rename {at}")
def test_a_full_disk_is_one_line_and_the_printed_command_finishes_the_run(
    tmp_path, reference, monkeypatch, capsys, at, record_property
):
    record_property("faults", 1)  # counted whatever the outcome
    _fault_then_rerun(tmp_path, reference, monkeypatch, capsys, at, errno.ENOSPC)


@pytest.mark.parametrize("number", [errno.EROFS, errno.EACCES], ids=["read-only", "permission denied"])
@pytest.mark.parametrize("at", [0, 17], ids=lambda at: f"from rename {at}")
def test_a_read_only_or_forbidden_folder_is_one_line_and_the_printed_command_finishes_the_run(
    tmp_path, reference, monkeypatch, capsys, at, number, record_property
):
    record_property("faults", 1)  # counted whatever the outcome
    _fault_then_rerun(tmp_path, reference, monkeypatch, capsys, at, number)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1, 9))
def test_full_disks_and_read_only_file_systems_at_random_write_points(
    tmp_path, reference, monkeypatch, capsys, seed, record_property
):
    record_property("faults", 1)  # counted whatever the outcome
    rng = random.Random(seed)
    number = rng.choice([errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT])
    _fault_then_rerun(tmp_path, reference, monkeypatch, capsys, rng.randint(1, 45), number)


def test_reproduce_on_a_read_only_file_system_is_one_line_and_creates_nothing(
    tmp_path, monkeypatch, capsys, record_property
):
    record_property("faults", 1)  # counted whatever the outcome
    out = tmp_path / "rp" / "lca"
    with monkeypatch.context() as patch:
        _os_fault(patch, 0, errno.EROFS, tmp_path)
        code = main(["reproduce", "lca", "--preset", "smoke", "--out", str(out), "--quiet"])
    _assert_one_line_error(capsys.readouterr().err, code, "Read-only file system", str(tmp_path / "rp"))
    assert os.listdir(tmp_path) == [], "files were created on the read-only file system"


@pytest.mark.parametrize("command", ["train", "reproduce", "inspect"])
def test_a_name_too_long_is_refused_in_one_line_before_anything_is_made(
    tmp_path, finished, command, capsys, record_property
):
    record_property("faults", 1)  # counted whatever the outcome
    long = tmp_path / "out" / ("x" * 300)
    argv = {
        "train": ["train", "recall", "--out", str(long), "--quiet", *_sets(TINY)],
        "reproduce": ["reproduce", "lca", "--preset", "smoke", "--out", str(long), "--quiet"],
        "inspect": ["inspect", str(finished), "--out", str(long), "--quiet"],
    }[command]
    code = main(argv)
    _assert_one_line_error(capsys.readouterr().err, code, "300 bytes long", "choose a shorter one")
    assert not (tmp_path / "out").exists()


def test_absurd_threads_are_capped_at_the_cpus_with_a_note_and_the_run_finishes(tmp_path, record_property):
    """--threads 100000 segfaulted (rc 139) and left a run folder; in a process of its own, in case it still does."""
    record_property("faults", 1)  # counted whatever the outcome
    argv = ["train", "recall", "--out", str(tmp_path), "--name", "t", "--quiet", "--threads", "100000", *_sets(TINY)]
    proc = subprocess.run([sys.executable, "-m", "mechmem.cli", *argv], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{proc.stderr[-3000:]}"
    cpus = len(os.sched_getaffinity(0))
    assert f"--threads 100000 is more than the {cpus} CPU(s)" in proc.stderr, proc.stderr
    assert json.loads((tmp_path / "t" / "config.json").read_text())["train"]["threads"] == cpus


@pytest.mark.parametrize("sizes", [["model.d_model=10000000"], ["task.n_keys=2000000000"]], ids=lambda s: s[0])
def test_sizes_beyond_memory_are_refused_in_one_line_before_anything_is_allocated(
    tmp_path, sizes, capsys, record_property
):
    record_property("faults", 1)  # counted whatever the outcome
    code = main(["train", "recall", "--out", str(tmp_path / "runs"), "--quiet", *_sets(TINY + sizes)])
    _assert_one_line_error(capsys.readouterr().err, code, "too large for this machine", "GB available")
    assert not (tmp_path / "runs").exists()


def test_debug_shows_the_traceback_the_one_line_error_hides(tmp_path, capsys, record_property):
    record_property("faults", 1)  # counted whatever the outcome
    argv = ["train", "recall", "--out", str(tmp_path), "--quiet", *_sets(TINY + ["model.d_model=10000000"])]
    assert main(["--debug", *argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().splitlines()[-1].startswith("mechmem train: error: model sizes")


# --- hints that carry every option, runs without a manifest --------------------------------------


def test_inspect_of_an_unfinished_run_prints_a_resume_command_with_out_that_finishes_it(
    tmp_path, reference, capsys, record_property
):
    record_property("faults", 2)  # counted whatever the outcome
    out = tmp_path / "cc"
    killed = _train_process(out, "busy", kill_at=20, when="after")  # after a checkpoint, before the model
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert _train(out, "busy") == 2  # the first command again: refused, with the command that continues it
    err = capsys.readouterr().err
    assert f"mechmem train recall --name busy --out {out} --resume" in err, f"no exact command to continue it:\n{err}"
    assert main(["inspect", str(out / "busy"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"--out {out}" in err, f"the hint drops --out:\n{err}"
    with pytest.raises(ValueError, match=f"--out {out}"):
        load_run(out / "busy")
    assert main(_printed_command(err)) == 0
    _assert_same_run(out / "busy", reference)


def test_inspect_while_the_run_trains_is_refused_naming_the_writer(tmp_path, reference, capsys, record_property):
    record_property("faults", 1)  # counted whatever the outcome
    first = _paused_writer(tmp_path, "busy", at=12, resume=False)
    try:
        code = main(["inspect", str(tmp_path / "busy"), "--quiet"])
        err = capsys.readouterr().err
        assert code == 2 and str(first.pid) in err and "Traceback" not in err, f"exit {code}:\n{err}"
        _go_on(tmp_path, first)
    finally:
        first.kill()
    _assert_same_run(tmp_path / "busy", reference)


def test_a_run_without_a_manifest_is_read_only_when_the_caller_says_so(tmp_path, finished, capsys, record_property):
    """The runs saved on TransformerLens 3.9 before manifests (tests/data) and a run whose manifest was deleted."""
    record_property("faults", 3)  # counted whatever the outcome
    old = Path(__file__).resolve().parents[1] / "data" / "run_tl39_recall"
    with pytest.raises(ValueError, match=r"has no manifest\.json.*allow_no_manifest=True"):
        load_run(old)
    load_run(old, allow_no_manifest=True)
    run = _copy_run(finished, tmp_path / "done")
    (run / "manifest.json").unlink()
    assert main(["inspect", str(run), "--out", str(tmp_path / "page"), "--quiet"]) == 2
    assert "--allow-no-manifest" in capsys.readouterr().err and not (tmp_path / "page").exists()
    model, _ = load_run(run, allow_no_manifest=True)
    assert torch.equal(model.W_E.detach(), load_file(str(finished / "model.safetensors"))["W_E"])
