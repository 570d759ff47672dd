"""The sweep runner on a real Ray cluster (``make test-ray``: two nodes on this machine, by address).

The rows match the local backend's; faults on the cluster lose nothing: a worker process killed mid-task is
retried, one killed past Ray's retries stops the sweep with an error naming the configuration, a node killed
mid-sweep leaves a file a rerun completes, and a driver killed mid-sweep leaves a file the local backend resumes.
"Nothing lost or duplicated" is checked by ``read_results`` (it raises on a duplicated configuration) and by
comparing the file's keys with the grid's.

Each attempt of the test function leaves a mark ``<marks>/<n>.<pid>.<node id>`` when it starts (the nodes share
this machine's disk; a real cluster's do not, which is why the results themselves travel back to the driver).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from mechmem.storage.sweep import RAY_TASK_RETRIES, config_key, expand_grid, read_results, run_sweep

pytestmark = pytest.mark.ray

TASKS = textwrap.dedent(
    '''
    import os
    import sys
    import time
    from pathlib import Path


    def where():
        """The Ray node running this task, or "local" outside a Ray task."""
        ray = sys.modules.get("ray")
        if ray is not None and ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.WORKER_MODE:
            return ray.get_runtime_context().get_node_id()
        return "local"


    def slow_square(config):
        Path(config["marks"], f"{config['n']}.{os.getpid()}.{where()}").touch()
        time.sleep(config["sleep"])
        return {"square": config["n"] ** 2}
    '''
)

DRIVER = textwrap.dedent(
    """
    import sys

    import ray

    import ray_sweep_tasks
    from mechmem.storage.sweep import expand_grid, run_sweep

    results, address, tasks_dir, marks, n = sys.argv[1:6]
    ray.init(address=address, runtime_env={"env_vars": {"PYTHONPATH": tasks_dir}}, log_to_driver=False)
    configs = expand_grid({"n": list(range(int(n)))}, fixed={"sleep": 1.0, "marks": marks})
    run_sweep(ray_sweep_tasks.slow_square, configs, results, backend="ray", address=address, progress=False)
    """
)

#: give-up time of every wait below (a loaded 2-core machine starts a Ray worker in seconds, not minutes)
PATIENCE_S = 180


@pytest.fixture(scope="module")
def tasks(ray_address, tmp_path_factory):
    """The task module, importable here and on the cluster's workers; this process connected to the cluster."""
    import ray

    folder = tmp_path_factory.mktemp("ray_tasks")
    (folder / "ray_sweep_tasks.py").write_text(TASKS)
    sys.path.insert(0, str(folder))
    sys.modules.pop("ray_sweep_tasks", None)
    import ray_sweep_tasks

    ray.init(address=ray_address, runtime_env={"env_vars": {"PYTHONPATH": str(folder)}}, log_to_driver=False)
    ray_sweep_tasks.folder = folder
    try:
        yield ray_sweep_tasks
    finally:
        ray.shutdown()
        sys.path.remove(str(folder))
        sys.modules.pop("ray_sweep_tasks", None)


def grid(marks: Path, n: int, sleep: float) -> list[dict]:
    marks.mkdir(exist_ok=True)
    return expand_grid({"n": list(range(n))}, fixed={"sleep": sleep, "marks": str(marks)})


def attempts(marks: Path) -> list[tuple[int, int, str]]:
    """(n, pid, node) of every attempt started so far."""
    found = []
    for mark in marks.iterdir():
        n, pid, node = mark.name.split(".", 2)
        found.append((int(n), int(pid), node))
    return found


def wait_for(condition, what: str):
    deadline = time.monotonic() + PATIENCE_S
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"waited {PATIENCE_S} s for {what}")


class Background:
    """``run_sweep`` in a thread, so that the test can inject a fault while it runs."""

    def __init__(self, *args, **kwargs):
        self.rows, self.error = None, None
        self.thread = threading.Thread(target=self._run, args=args, kwargs=kwargs, daemon=True)
        self.thread.start()

    def _run(self, *args, **kwargs):
        try:
            self.rows = run_sweep(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - handed to the test
            self.error = exc

    def join(self):
        self.thread.join(PATIENCE_S)
        assert not self.thread.is_alive(), f"the sweep did not finish within {PATIENCE_S} s"
        return self


def assert_complete(path: Path, configs: list[dict]) -> list[dict]:
    rows = read_results(path)  # raises on a duplicated or malformed row
    assert sorted(r["key"] for r in rows) == sorted(config_key(c) for c in configs), (
        f"{len(rows)} rows for {len(configs)} configurations: some lost or foreign"
    )
    assert all(r["result"] == {"square": r["config"]["n"] ** 2} for r in rows), "a row holds a wrong result"
    return rows


def test_a_sweep_on_two_nodes_gives_the_local_rows_and_resumes(tasks, ray_address, tmp_path):
    configs = grid(tmp_path / "marks", 6, sleep=1.0)
    rows = run_sweep(
        tasks.slow_square, configs, tmp_path / "ray.jsonl", backend="ray", address=ray_address, progress=False
    )
    local = run_sweep(tasks.slow_square, configs, tmp_path / "local.jsonl", workers=1, progress=False)
    assert [r["result"] for r in rows] == [r["result"] for r in local], "Ray and local rows differ"
    nodes = {node for _, _, node in attempts(tmp_path / "marks")} - {"local"}
    assert len(nodes) == 2, f"the sweep ran on {len(nodes)} node(s) of the two-node cluster"
    started = len(attempts(tmp_path / "marks"))
    again = run_sweep(
        tasks.slow_square, configs, tmp_path / "ray.jsonl", backend="ray", address=ray_address, progress=False
    )
    assert again == rows and len(attempts(tmp_path / "marks")) == started, "a finished sweep re-ran configurations"


def test_a_worker_killed_mid_task_is_retried_and_nothing_is_lost(tasks, ray_address, tmp_path):
    marks, path = tmp_path / "marks", tmp_path / "r.jsonl"
    configs = grid(marks, 6, sleep=2.0)
    sweep = Background(tasks.slow_square, configs, path, backend="ray", address=ray_address, progress=False)
    n, pid, _ = wait_for(lambda: attempts(marks), "a first task to start")[0]
    assert str(n) not in {str(r["config"]["n"]) for r in read_results(path)}, "the task finished before the kill"
    os.kill(pid, signal.SIGKILL)
    sweep.join()
    assert sweep.error is None, f"the sweep failed instead of retrying the killed task: {sweep.error!r}"
    assert_complete(path, configs)
    tries = [p for m, p, _ in attempts(marks) if m == n]
    assert len(tries) >= 2 and tries.count(pid) == 1, f"config n={n} should have been retried, attempts: {tries}"
    started = len(attempts(marks))
    rerun = run_sweep(tasks.slow_square, configs, path, backend="ray", address=ray_address, progress=False)
    assert rerun == sweep.rows and len(attempts(marks)) == started, "the rerun re-ran finished configurations"


def test_a_worker_killed_past_the_retries_stops_with_a_clear_error_and_a_rerun_completes(tasks, ray_address, tmp_path):
    marks, path = tmp_path / "marks", tmp_path / "r.jsonl"
    configs = grid(marks, 4, sleep=3.0)
    sweep = Background(tasks.slow_square, configs, path, backend="ray", address=ray_address, progress=False)
    n, _, _ = wait_for(lambda: attempts(marks), "a first task to start")[0]
    killed: set[int] = set()

    def new_attempts() -> set[int]:
        return {p for m, p, _ in attempts(marks) if m == n} - killed

    while len(killed) <= RAY_TASK_RETRIES:  # every attempt of config n, the first and each retry
        tries = wait_for(new_attempts, f"attempt {len(killed) + 1} of config n={n}")
        for pid in tries:
            os.kill(pid, signal.SIGKILL)
        killed |= tries
    sweep.join()
    assert isinstance(sweep.error, RuntimeError), f"expected the sweep to stop with an error, got {sweep.error!r}"
    message = str(sweep.error)
    assert re.search(f"'n': {n}[,}}]", message) and "died" in message and "again" in message, f"unclear: {message}"
    kept = read_results(path)
    assert all(r["config"]["n"] != n for r in kept), "a row was written for the configuration that failed"
    rerun = run_sweep(tasks.slow_square, configs, path, backend="ray", address=ray_address, progress=False)
    rows = assert_complete(path, configs)
    assert rows[: len(kept)] == kept and [r["result"] for r in rerun] == [{"square": c["n"] ** 2} for c in configs]


def test_a_node_killed_mid_sweep_loses_nothing(tasks, ray_address, tmp_path):
    import ray
    from ray_cluster import LocalCluster

    marks, path = tmp_path / "marks", tmp_path / "r.jsonl"
    configs = grid(marks, 9, sleep=2.0)
    with LocalCluster(address=ray_address) as extra:
        victim = extra.add_node(num_cpus=1, resources={"victim": 1})
        victim_id = wait_for(
            lambda: next((n["NodeID"] for n in ray.nodes() if n["Alive"] and "victim" in n["Resources"]), None),
            "the third node to join",
        )
        sweep = Background(tasks.slow_square, configs, path, backend="ray", address=ray_address, progress=False)
        on_victim = wait_for(lambda: [a for a in attempts(marks) if a[2] == victim_id], "a task on the third node")
        killed = extra.kill_node(victim)
        print(f"killed the third node ({len(killed)} processes) while it ran config n={on_victim[0][0]}")
        sweep.join()
    if sweep.error is not None:  # Ray gave up on a task of the dead node: the error says what to do
        assert "died" in str(sweep.error) and "again" in str(sweep.error), f"unclear error: {sweep.error}"
        print(f"the sweep stopped: {sweep.error}")
    run_sweep(tasks.slow_square, configs, path, backend="ray", address=ray_address, progress=False)
    assert_complete(path, configs)
    n = on_victim[0][0]
    elsewhere = [node for m, _, node in attempts(marks) if m == n and node != victim_id]
    assert elsewhere, f"config n={n}, running on the killed node, was never run again elsewhere"


def test_a_driver_killed_mid_sweep_leaves_a_file_the_local_backend_resumes(tasks, ray_address, tmp_path):
    marks, path = tmp_path / "marks", tmp_path / "r.jsonl"
    configs = grid(marks, 10, sleep=1.0)
    (tmp_path / "driver.py").write_text(DRIVER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tasks.folder), os.environ.get("PYTHONPATH", "")]))
    args = [str(path), ray_address, str(tasks.folder), str(marks), str(len(configs))]
    proc = subprocess.Popen(
        [sys.executable, str(tmp_path / "driver.py"), *args],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: proc.poll() is not None or (path.exists() and len(read_results(path)) >= 3), "3 rows")
        assert proc.poll() is None, f"the driver exited early: {proc.stderr.read().decode()[-2000:]}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the driver (and only it: its tasks run on the cluster's nodes)
        proc.wait()
    before = read_results(path)
    assert 3 <= len(before) < len(configs), f"the kill should come mid-sweep, found {len(before)} rows"
    rows = run_sweep(tasks.slow_square, configs, path, workers=1, progress=False)
    stored = assert_complete(path, configs)
    assert stored[: len(before)] == before, "the rows the driver wrote before it died were changed"
    assert [r["result"]["square"] for r in rows] == [c["n"] ** 2 for c in configs]
