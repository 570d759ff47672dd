"""The resumable sweep runner: resume after a kill, atomic rows, grid fingerprints, malformed lines."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from mechmem.storage.sweep import config_key, expand_grid, read_results, run_sweep, sidecar_path

TASK_MODULE = textwrap.dedent(
    """
    import time

    def slow_square(config):
        time.sleep(config["sleep"])
        return {"square": config["n"] ** 2}

    def failing(config):
        if config["n"] == 2:
            raise ArithmeticError("n = 2 is not allowed")
        return config["n"]

    def torch_threads(config):
        import torch

        return torch.get_num_threads()
    """
)

DRIVER = textwrap.dedent(
    """
    import sys

    if __name__ == "__main__":  # the spawn start method re-imports the main module in every worker
        import sweep_task
        from mechmem.storage.sweep import expand_grid, run_sweep

        configs = expand_grid({"n": list(range(int(sys.argv[2])))}, fixed={"sleep": float(sys.argv[3])})
        run_sweep(sweep_task.slow_square, configs, sys.argv[1], workers=int(sys.argv[4]), progress=False)
    """
)


@pytest.fixture
def task_module(tmp_path, monkeypatch):
    """A module importable by the spawned worker processes (sys.path is passed on by the spawn method)."""
    (tmp_path / "sweep_task.py").write_text(TASK_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("sweep_task", None)
    import sweep_task

    yield sweep_task
    sys.modules.pop("sweep_task", None)


def test_killed_sweep_resumes_without_loss_or_duplicates(tmp_path, task_module):
    results = tmp_path / "out" / "results.jsonl"
    (tmp_path / "driver.py").write_text(DRIVER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    n_configs, sleep = 12, 0.25
    proc = subprocess.Popen(
        [sys.executable, str(tmp_path / "driver.py"), str(results), str(n_configs), str(sleep), "2"],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            if results.exists() and len(results.read_text().splitlines()) >= 3:
                break
            if proc.poll() is not None:
                pytest.fail(f"driver exited early: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.05)
        else:
            pytest.fail("the sweep wrote fewer than 3 rows in 60 s")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # kill the driver and its worker processes mid-sweep
        proc.wait()
    n_before = len(read_results(results))
    assert 3 <= n_before < n_configs, f"the kill should happen mid-sweep, found {n_before} rows"

    configs = expand_grid({"n": list(range(n_configs))}, fixed={"sleep": sleep})
    rows = run_sweep(task_module.slow_square, configs, results, workers=1, progress=False)
    stored = read_results(results)  # raises on duplicates or malformed lines
    assert len(stored) == n_configs, f"expected {n_configs} rows after resume, got {len(stored)}"
    assert sorted(r["key"] for r in stored) == sorted(config_key(c) for c in configs), "rows lost or foreign"
    assert [r["result"]["square"] for r in rows] == [n * n for n in range(n_configs)], "rows in config order"
    # a third run does nothing and returns the same rows
    t0 = time.time()
    again = run_sweep(task_module.slow_square, configs, results, workers=1, progress=False)
    assert again == rows and time.time() - t0 < sleep, "a finished sweep must not re-run any configuration"


def test_local_parallel_processes_give_same_rows_as_serial(tmp_path, task_module):
    configs = expand_grid({"n": [1, 2, 3, 4]}, fixed={"sleep": 0.0})
    par = run_sweep(task_module.slow_square, configs, tmp_path / "par.jsonl", workers=2, progress=False)
    ser = run_sweep(task_module.slow_square, configs, tmp_path / "ser.jsonl", workers=1, progress=False)
    assert [r["result"] for r in par] == [r["result"] for r in ser] == [{"square": n * n} for n in [1, 2, 3, 4]]


def test_workers_use_one_torch_thread_each(tmp_path, task_module, monkeypatch):
    """Parallel workers must not oversubscribe the cores (torch would start one thread per core in each)."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    rows = run_sweep(
        task_module.torch_threads, expand_grid({"n": [1, 2]}), tmp_path / "t.jsonl", workers=2, progress=False
    )
    assert [r["result"] for r in rows] == [1, 1], f"workers ran with {[r['result'] for r in rows]} threads"


def test_a_sweep_removes_its_own_stale_temp_files_and_nobody_elses(tmp_path, task_module):
    mine, other = tmp_path / ".t.jsonl.grid.json.x1.tmp", tmp_path / ".figure.png.y2.tmp"
    mine.write_text("left by a kill -9"), other.write_text("another writer, mid-write")
    run_sweep(
        task_module.slow_square,
        expand_grid({"n": [1]}, fixed={"sleep": 0.0}),
        tmp_path / "t.jsonl",
        workers=1,
        progress=False,
    )
    assert not mine.exists() and other.exists()


def test_failure_keeps_finished_rows_and_names_the_config(tmp_path, task_module):
    configs = expand_grid({"n": [0, 1, 2, 3]})
    path = tmp_path / "r.jsonl"
    with pytest.raises(RuntimeError, match="'n': 2"):
        run_sweep(task_module.failing, configs, path, workers=1, progress=False)
    assert [r["result"] for r in read_results(path)] == [0, 1], "rows finished before the failure must be kept"


def test_results_file_of_a_different_grid_is_rejected(tmp_path, task_module):
    path = tmp_path / "r.jsonl"
    run_sweep(
        task_module.slow_square, expand_grid({"n": [1, 2]}, fixed={"sleep": 0.0}), path, workers=1, progress=False
    )
    with pytest.raises(ValueError, match="different grid"):
        run_sweep(
            task_module.slow_square, expand_grid({"n": [1, 3]}, fixed={"sleep": 0.0}), path, workers=1, progress=False
        )
    # the same grid in another order is the same sweep
    rows = run_sweep(
        task_module.slow_square, expand_grid({"n": [2, 1]}, fixed={"sleep": 0.0}), path, workers=1, progress=False
    )
    assert [r["config"]["n"] for r in rows] == [2, 1]


def test_results_file_without_sidecar_is_rejected(tmp_path, task_module):
    path = tmp_path / "r.jsonl"
    configs = expand_grid({"n": [1]}, fixed={"sleep": 0.0})
    run_sweep(task_module.slow_square, configs, path, workers=1, progress=False)
    sidecar_path(path).unlink()
    with pytest.raises(ValueError, match="without its grid sidecar"):
        run_sweep(task_module.slow_square, configs, path, workers=1, progress=False)


@pytest.mark.parametrize(
    "corrupt, match",
    [
        (lambda lines: lines[:1] + ["{not json\n"] + lines[2:], r"r\.jsonl:2: malformed JSON"),
        (lambda lines: lines[:2] + [lines[2].rstrip("\n")], r"r\.jsonl:3: truncated"),
        (lambda lines: lines + [lines[0]], r"r\.jsonl:4: configuration .* already recorded on line 1"),
        (lambda lines: lines[:1] + ['{"key": "x"}\n'] + lines[2:], r"r\.jsonl:2: .*'key' and 'config'"),
    ],
)
def test_malformed_lines_are_reported_with_their_line_number(tmp_path, task_module, corrupt, match):
    path = tmp_path / "r.jsonl"
    configs = expand_grid({"n": [1, 2, 3]}, fixed={"sleep": 0.0})
    run_sweep(task_module.slow_square, configs, path, workers=1, progress=False)
    path.write_text("".join(corrupt(path.read_text().splitlines(keepends=True))))
    with pytest.raises(ValueError, match=match):
        run_sweep(task_module.slow_square, configs, path, workers=1, progress=False)


def test_rows_are_single_json_lines(tmp_path, task_module):
    path = tmp_path / "r.jsonl"
    run_sweep(task_module.slow_square, expand_grid({"n": [5]}, fixed={"sleep": 0.0}), path, workers=1, progress=False)
    (line,) = path.read_text().splitlines()
    row = json.loads(line)
    assert (
        row["config"] == {"n": 5, "sleep": 0.0}
        and row["result"] == {"square": 25}
        and row["key"] == config_key({"sleep": 0.0, "n": 5})
    ), f"unexpected row {row}"


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(backend="slurm"), ValueError, "unknown backend 'slurm'"),
        (dict(workers=0), ValueError, "workers"),
        (dict(configs=[{"n": 1}, {"n": 1}]), ValueError, "identical"),
        (dict(configs=[]), ValueError, "empty"),
        (dict(configs=[{"n": object()}]), TypeError, "JSON-serialisable"),
        (dict(fn=lambda c: c, workers=2), TypeError, "module-level"),
        (dict(backend="ray", workers=2), ValueError, "workers is only used with backend='local'"),
        (dict(address="10.0.0.5:6379"), ValueError, "address is only used with backend='ray'"),
        (dict(backend="ray", workers=None, address="10.0.0.5"), ValueError, "HOST:PORT"),
        (dict(backend="ray", workers=None, address="ray://10.0.0.5:10001"), ValueError, "ray://"),
    ],
)
def test_bad_sweep_input_is_rejected_before_work(tmp_path, task_module, kwargs, exc, match):
    args = dict(
        fn=task_module.slow_square,
        configs=[{"n": 1, "sleep": 0.0}],
        path=tmp_path / "r.jsonl",
        workers=1,
        progress=False,
    )
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        run_sweep(args.pop("fn"), args.pop("configs"), args.pop("path"), **args)
    assert not (tmp_path / "r.jsonl").exists(), "no results file may be created for bad input"


def test_expand_grid_is_the_cartesian_product():
    configs = expand_grid({"d": [10, 20], "seed": [0, 1, 2]}, fixed={"N": 100})
    assert len(configs) == 6 and configs[0] == {"N": 100, "d": 10, "seed": 0} and configs[-1]["seed"] == 2
    with pytest.raises(ValueError, match="empty"):
        expand_grid({"d": []})


@pytest.mark.skipif(importlib.util.find_spec("ray") is not None, reason="ray is installed")
def test_ray_backend_without_ray_says_how_to_install(tmp_path, task_module):
    with pytest.raises(ImportError, match=r"mechmem\[ray\]"):
        run_sweep(
            task_module.slow_square, [{"n": 1, "sleep": 0.0}], tmp_path / "r.jsonl", backend="ray", progress=False
        )
    assert not list(tmp_path.glob("r.jsonl*")), "no results file may be created without Ray"


# the Ray backend on a real two-node cluster: tests/core/test_sweep_ray.py (make test-ray)
