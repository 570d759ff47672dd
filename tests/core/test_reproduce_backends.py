"""``mechmem reproduce --backend / --workers / --address``: checked before any folder exists, and passed to the
experiments that sweep (``ctx.run_sweep``). The runs on a Ray cluster: tests/papers/test_reproduce_on_ray.py."""

from __future__ import annotations

import importlib.util
import os
import re
import socket
import subprocess
import sys
import textwrap

import pytest

from mechmem.cli import main
from mechmem.contract.experiments import Context, SweepOptions
from mechmem.contract.reproducing import get_reproduction

HAS_RAY = importlib.util.find_spec("ray") is not None
SMOKE = get_reproduction("scaling")().preset("smoke")

TASKS = textwrap.dedent(
    """
    import os

    def pid(config):
        return os.getpid()
    """
)


@pytest.mark.parametrize(
    "args, message",
    [
        (["scaling", "--workers", "0"], "--workers 0: must be >= 1"),
        (["scaling", "--backend", "ray", "--workers", "2"], "--workers 2: only with --backend local"),
        (["factual", "--address", "10.0.0.5:6379"], "--address 10.0.0.5:6379: only with --backend ray"),
        (["factual", "--backend", "ray", "--address", "10.0.0.5"], "--address: address must be HOST:PORT"),
        (["scaling", "--backend", "ray", "--address", "ray://h:10001"], "--address: .*ray://"),
        (["lca", "--workers", "2"], "none of those to run does .*lca's that do: none"),
        (["birth", "--backend", "local", "--workers", "1"], "none of those to run does"),
        (["scaling", "--only", "error_vs_d", "--workers", "2"], "none of those to run does .*: optimisers"),
        pytest.param(
            ["scaling", "--backend", "ray"],
            "--backend ray needs Ray.*mechmem\\[ray\\]",
            marks=pytest.mark.skipif(HAS_RAY, reason="ray is installed"),
        ),
    ],
    ids=lambda x: " ".join(x) if isinstance(x, list) else None,
)
def test_bad_sweep_options_fail_naming_the_option_before_any_folder_exists(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert main(["reproduce", *args, "--preset", "smoke", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), f"expected /{message}/ in:\n{err}"
    assert not out.exists(), f"{out} was created although the options were refused"


def test_an_address_where_no_cluster_answers_fails_fast_before_any_folder(tmp_path, capsys):
    if not HAS_RAY:
        pytest.skip("needs Ray (the ray extra): without it --backend ray is refused earlier")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "out"
    argv = ["reproduce", "scaling", "--preset", "smoke", "--backend", "ray", "--address", f"127.0.0.1:{port}"]
    assert main([*argv, "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no Ray cluster answers there" in err and not out.exists(), err


def test_sweep_option_errors_do_not_import_torch():
    code = textwrap.dedent(
        """
        import sys
        from mechmem.cli import main
        code = main(["reproduce", "scaling", "--backend", "ray", "--workers", "2"])
        print("exit", code, "heavy:", ",".join(m for m in ("torch", "transformer_lens") if m in sys.modules))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "exit 2 heavy:", f"{proc.stdout}\n{proc.stderr[-2000:]}"


def test_scaling_sweep_is_gone_its_job_is_reproduce_backend(capsys):
    with pytest.raises(SystemExit):
        main(["scaling-sweep", "--preset", "smoke"])
    assert "invalid choice: 'scaling-sweep'" in capsys.readouterr().err


def test_the_experiments_that_sweep_are_declared():
    """scaling and factual sweep their grids through ctx.run_sweep; lca and birth sweep nothing."""
    declared = {
        paper: [n for n in get_reproduction(paper).experiments if get_reproduction(paper).experiments.sweeps(n)]
        for paper in ("lca", "birth", "scaling", "factual")
    }
    assert declared == {
        "lca": [],
        "birth": [],
        "scaling": ["optimisers"],
        "factual": ["capacity", "tradeoff", "facts_vs_params"],
    }


@pytest.fixture
def tasks(tmp_path, monkeypatch):
    (tmp_path / "backend_tasks.py").write_text(TASKS)
    monkeypatch.syspath_prepend(str(tmp_path))  # the spawned workers get sys.path
    sys.modules.pop("backend_tasks", None)
    import backend_tasks

    yield backend_tasks
    sys.modules.pop("backend_tasks", None)


@pytest.mark.parametrize(
    "sweep, default_workers, in_this_process",
    [
        (SweepOptions(), 1, True),  # the experiment's choice: 1 worker, in this process
        (SweepOptions(workers=2), 1, False),  # --workers 2 overrides it: two worker processes
        (SweepOptions(workers=1), 2, True),  # --workers 1 overrides an experiment's 2
    ],
)
def test_ctx_run_sweep_uses_the_runs_workers_else_the_experiments(
    tmp_path, tasks, sweep, default_workers, in_this_process
):
    ctx = Context("test", SMOKE, 0, tmp_path, progress=False, sweep=sweep)
    rows = ctx.run_sweep(
        tasks.pid, [{"n": n} for n in range(4)], tmp_path / "r.jsonl", workers=default_workers, desc="t"
    )
    pids = {r["result"] for r in rows}
    assert (pids == {os.getpid()}) == in_this_process, f"{sweep}, experiment default {default_workers}: pids {pids}"


def test_a_sweep_from_an_experiment_not_registered_as_sweeping_is_refused(tmp_path, tasks):
    ctx = Context("test", SMOKE, 0, tmp_path, progress=False, may_sweep=False)
    with pytest.raises(RuntimeError, match="sweeps=True"):
        ctx.run_sweep(tasks.pid, [{"n": 1}], tmp_path / "r.jsonl", desc="t")
    assert not (tmp_path / "r.jsonl").exists()
