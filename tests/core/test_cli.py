"""The ``mechmem`` command line, called in-process through ``mechmem.cli.main`` (plus one real
subprocess for ``mechmem --help``).

A bad command must exit with status 2 and an error naming what is wrong and what is allowed,
before any run directory is created.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mechmem.cli import main
from mechmem.core.training import evaluate
from mechmem.storage.runs import Run, load_run
from mechmem.tasks.recall import RecallTask

#: A tiny, fast recall run: vocab 21, d_model 16, 20 steps.
TINY = [
    "task.n_keys=12",
    "task.n_values=6",
    "task.n_noise=8",
    "task.seq_len=8",
    "model.d_model=16",
    "steps=20",
    "batch_size=32",
    "eval_every=10",
    "eval_batch_size=64",
]


def _sets(pairs: list[str]) -> list[str]:
    return [arg for pair in pairs for arg in ("--set", pair)]


def _train(tmp_path: Path, *extra: str, name: str = "run", overrides=TINY) -> int:
    return main(["train", "recall", "--out", str(tmp_path), "--name", name, "--quiet", *_sets(overrides), *extra])


def test_mechmem_help_runs_as_a_console_command():
    """The installed ``mechmem`` entry point starts and lists its commands."""
    exe = Path(sys.executable).parent / "mechmem"
    command = [str(exe)] if exe.exists() else [shutil.which("mechmem") or "mechmem"]
    proc = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"mechmem --help failed:\n{proc.stderr}"
    for word in ("list", "train", "reproduce"):
        assert word in proc.stdout, f"`{word}` missing from mechmem --help:\n{proc.stdout}"


def test_no_command_prints_help_and_succeeds(capsys):
    assert main([]) == 0
    assert "usage: mechmem" in capsys.readouterr().out


def test_list_shows_the_builtin_recall_task(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "tasks:" in out and "recall" in out, f"`mechmem list` does not list the recall task:\n{out}"
    assert "reproduce:" in out


def test_train_writes_a_complete_run_directory_that_load_run_reads_back(tmp_path, capsys):
    """config.json (typed values and the raw overrides), metrics.jsonl, model.safetensors,
    results.json and figures/training.png; the reloaded model reproduces the reported accuracy."""
    assert _train(tmp_path, overrides=TINY + ["lr=0.02", "model.freeze=W_E"]) == 0
    out = capsys.readouterr().out
    run = tmp_path / "run"
    assert f"run saved to {run}" in out, f"unexpected output:\n{out}"
    for file in ("config.json", "metrics.jsonl", "model.safetensors", "results.json", "figures/training.png"):
        assert (run / file).is_file(), f"{file} missing from the run directory"
    assert (run / "figures" / "training.png").read_bytes()[:4] == b"\x89PNG", "training.png is not a PNG"

    config = json.loads((run / "config.json").read_text())
    assert config["overrides"] == TINY + ["lr=0.02", "model.freeze=W_E"], (
        f"overrides not recorded: {config['overrides']}"
    )
    assert config["model"]["d_model"] == 16 and config["train"]["lr"] == 0.02, "overrides not applied with their types"
    assert config["model"]["freeze"] == ["W_E"] and config["task"]["n_keys"] == 12
    assert config["task"]["name"] == "recall"

    metrics = Run(run).metrics()
    results = json.loads((run / "results.json").read_text())
    assert [r["step"] for r in metrics] == [0, 10, 20], f"metrics.jsonl steps: {[r['step'] for r in metrics]}"
    assert results["final"] == metrics[-1] and results["steps"] == 20, f"results.json disagrees with metrics: {results}"

    model, loaded_config = load_run(run)
    assert loaded_config == config
    task = RecallTask(**{k: v for k, v in config["task"].items() if k != "name"})
    eval_batch = task.sample(
        config["train"]["eval_batch_size"], torch.Generator().manual_seed(config["train"]["seed"] + 1)
    )
    accuracy = evaluate(model, task, eval_batch)["accuracy"]
    assert accuracy == results["final"]["accuracy"], (
        f"reloaded model scores {accuracy}, run reported {results['final']['accuracy']}"
    )


def test_train_refuses_to_overwrite_an_existing_run_unless_asked(tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(tmp_path, overrides=TINY + ["steps=3"]) == 0
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".mechmem.lock"}
    capsys.readouterr()
    assert _train(tmp_path, overrides=TINY + ["steps=2"]) == 2
    err = capsys.readouterr().err
    assert "already holds a finished run" in err and "--overwrite" in err and "would delete" in err, err
    after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".mechmem.lock"}
    assert after == before, "a refused train changed the existing run"
    assert _train(tmp_path, "--overwrite", overrides=TINY + ["steps=2"]) == 0
    assert json.loads((run / "config.json").read_text())["train"]["steps"] == 2, "--overwrite did not replace the run"


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["learning_rate=0.1"], ["'learning_rate' is not a config key", "train.lr", "model.d_model", "task.n_keys"]),
        (["model.width=3"], ["unknown config key", "width", "model.d_model"]),
        (["seed=3"], ["ambiguous", "model.seed", "train.seed"]),
        (["model.d_model=abc"], ["model.d_model", "expected int"]),
        (["model.n_heads=3"], ["d_model=32", "n_heads=3"]),
        (["model.act_fn=tanh"], ["act_fn", "'relu'", "'gelu'"]),
        (["optimizer=lion"], ["optimizer='lion'", "'sgd'", "'adam'", "'adamw'"]),
        (["steps=0"], ["steps must be a positive integer"]),
        (["model.d_model=0"], ["d_model must be a positive integer"]),
        (["model.freeze=W_X"], ["freeze", "'W_X'", "blocks.0.attn.W_V"]),
        (["model.n_ctx=4"], ["seq_len=12", "n_ctx=4"]),
        (["task.n_keys=0"], ["n_keys must be a positive integer"]),
        (["train.freeze_until=blocks.0.attn.W_Z:5"], ["freeze_until", "W_Z", "blocks.0.attn.W_O"]),
    ],
)
def test_bad_train_arguments_fail_with_a_helpful_error_before_any_run_is_created(tmp_path, capsys, overrides, expected):
    """Unknown/ambiguous keys list the valid ones; invalid values name the field and the allowed
    values; nothing is written to disk."""
    out = tmp_path / "runs"
    code = main(["train", "recall", "--out", str(out), "--quiet", *_sets(overrides)])
    err = capsys.readouterr().err
    assert code == 2, f"{overrides}: exit status {code}, expected 2\n{err}"
    for piece in expected:
        assert piece in err, f"{overrides}: {piece!r} missing from the error:\n{err}"
    assert not out.exists(), f"{overrides}: a run directory was created before the error: {list(out.rglob('*'))}"


def test_unknown_task_lists_the_available_ones(tmp_path, capsys):
    assert main(["train", "nosuchtask", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown task 'nosuchtask'" in err and "recall" in err, f"unhelpful error:\n{err}"


def test_resume_of_a_missing_run_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "recall", "--out", str(tmp_path), "--name", "ghost", "--resume"]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_resume_from_a_corrupted_checkpoint_fails_and_overwrites_nothing(tmp_path, capsys):
    """A damaged train_state.safetensors stops --resume with an error; no file of the run changes."""
    assert _train(tmp_path) == 0
    run = tmp_path / "run"
    state = run / "train_state.safetensors"
    state.write_bytes(state.read_bytes()[:100])
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert main(["train", "recall", "--out", str(tmp_path), "--name", "run", "--resume", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "does not match its checksum" in err and "train_state.safetensors" in err, f"unhelpful error:\n{err}"
    after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    changed = [str(p.relative_to(run)) for p in set(before) | set(after) if before.get(p) != after.get(p)]
    assert not changed, f"a failed resume changed files: {changed}"


# --- a fast CLI: no torch for help and argument errors -------------------------------------------

_NO_TORCH = """
import sys
from mechmem.cli import main
for argv in {argvs!r}:
    try:
        code = main(argv)
    except SystemExit as exit:
        code = exit.code
    print("exit", argv, code, file=sys.stderr)
heavy = sorted(m for m in ("torch", "transformer_lens", "transformers") if m in sys.modules)
print("heavy:", ",".join(heavy))
"""


@pytest.mark.parametrize(
    "argvs",
    [
        [["--help"]],
        [[]],
        [["train", "--help"]],
        [["reproduce", "--help"]],
        [["train"]],
        [["train", "recall", "--threads", "x"]],
        [["train", "nosuchtask"]],
        [["train", "recall", "--name", "../x"]],
        [["train", "recall", "--threads", "0"]],
        [["reproduce", "nosuchpaper"]],
        [["nosuchcommand"]],
    ],
    ids=lambda argvs: " ".join(argvs[0]) or "(no arguments)",
)
def test_help_and_argument_errors_do_not_import_torch(argvs):
    """The parser, --help and argument errors answer without importing torch or TransformerLens
    (4-12 s here, a minute under load): the tasks, papers and paper commands are declared by name."""
    proc = subprocess.run(
        [sys.executable, "-c", _NO_TORCH.format(argvs=argvs)], capture_output=True, text=True, timeout=120
    )
    assert "heavy:" in proc.stdout, f"the check did not run:\n{proc.stderr[-2000:]}"
    heavy = proc.stdout.split("heavy:")[1].strip()
    assert heavy == "", f"{argvs[0]} imported {heavy}"
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]


def test_registry_declarations_match_the_packages():
    """mechmem.contract.registry names the tasks and paper commands without importing them; the names must
    be what the packages really define."""
    from mechmem.cli import _parser
    from mechmem.contract.registry import COMMANDS, PAPERS, TASKS, paper_module, task_class
    from mechmem.tasks.recall import RecallTask

    defined = {RecallTask.name: RecallTask}
    for paper in PAPERS:
        defined.update(getattr(paper_module(paper), "TASKS", {}))
    assert {name: task_class(name) for name in TASKS} == defined, "registry.TASKS is out of date"
    for command, (package, help_text) in COMMANDS.items():
        sub = next(a for a in _parser(command)._actions if isinstance(a, argparse._SubParsersAction))
        helps = {action.dest: action.help for action in sub._choices_actions}
        assert helps.get(command) == help_text, f"{package} registers {command!r} with help {helps.get(command)!r}"
        assert sub.choices[command].get_default("func") is not None, f"{command} has no real parser"


def test_ambiguous_key_lists_only_its_candidates(tmp_path, capsys):
    assert main(["train", "recall", "--out", str(tmp_path), "--set", "seed=3"]) == 2
    err = capsys.readouterr().err
    assert "model.seed, train.seed" in err, f"the candidates are not listed:\n{err}"
    assert "model.d_model" not in err, f"the ambiguity error lists every key:\n{err}"


def test_threads_are_applied_recorded_and_restored(tmp_path, capsys):
    before = torch.get_num_threads()
    assert _train(tmp_path, "--threads", "2", overrides=TINY + ["steps=5", "eval_every=5"]) == 0
    out = capsys.readouterr().out
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert config["train"]["threads"] == 2, f"config.json records threads={config['train']['threads']}"
    assert results["threads"] == 2, f"training ran on {results['threads']} threads, asked for 2"
    assert "on 2 threads" in out
    assert torch.get_num_threads() == before, "mechmem train did not restore torch's thread count"
    assert _train(tmp_path, "--overwrite", overrides=TINY + ["steps=5", "eval_every=5"]) == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["threads"] == 1, "default is not 1"


def test_train_reports_the_task_every_file_of_the_run_and_what_to_try_next(tmp_path, capsys):
    assert _train(tmp_path, overrides=TINY + ["steps=5", "eval_every=5"]) == 0
    out = capsys.readouterr().out
    assert "task recall: Recall a key's value from a noisy context" in out, out
    run = tmp_path / "run"
    assert f"run saved to {run}" in out
    for path in run.rglob("*"):
        if path.is_file():
            assert str(path.relative_to(run)) in out, f"{path.relative_to(run)} is not listed:\n{out}"
    assert "config.json" in out and "next:" in out and "load_run" in out and "mechmem list" in out
    assert f"mechmem inspect {run}" in out
