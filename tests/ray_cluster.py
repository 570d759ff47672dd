"""A Ray cluster of several nodes on this machine, for the Ray tests (``make test-ray``) and the Ray benchmark.

``python tests/ray_cluster.py [--nodes 2] -- COMMAND ...`` starts a head node and ``nodes - 1`` more nodes with
``ray start --block`` (each node one CPU, its own custom resource ``node<i>``, a small object store and free ports;
the cluster's logs in a private temporary folder), runs COMMAND with ``MECHMEM_RAY_ADDRESS`` set to the cluster's
address, then stops every node, also when COMMAND fails or this script gets SIGINT / SIGTERM, and checks that no
process of the cluster is left. Exit status: COMMAND's, or 1 when the cluster could not start or left a process.

Every node is a ``ray start --block`` process in a session of its own: each process Ray starts for that node
(raylet, agents, worker processes; the GCS on the head) stays in that session, so "the node's processes" are
exactly the processes of that session. Stopping a node sends SIGTERM to its ``ray start`` (which stops what it
started), then SIGKILL to anything of its session still there after a grace period. ``ray stop`` is never used:
it stops every Ray process of the user, including other clusters on the machine. Each ``ray start`` also gets
SIGTERM when the process that started it dies (``PR_SET_PDEATHSIG``), so a killed test run leaves no node.

From Python (the fault tests, the benchmark)::

    with LocalCluster() as cluster:          # a head node
        cluster.add_node()                   # a second node
        victim = cluster.add_node(resources={"victim": 1})
        ...                                  # ray.init(address=cluster.address)
        cluster.kill_node(victim)            # SIGKILL to every process of that node: the machine is gone
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

#: Start-up of one node on a loaded 2-core machine: seconds measured 4-10; this is the give-up time.
START_TIMEOUT_S = 180.0
#: After SIGTERM to a node's ``ray start``, how long its processes get before SIGKILL.
STOP_GRACE_S = 20.0
#: Object store of each node (Ray's minimum is 75 MB): the sweeps pass small JSON configs and results.
OBJECT_STORE_BYTES = 100 * 1000 * 1000
READY_LINE = "Ray runtime started"


def ray_environment() -> dict[str, str]:
    """The environment of every Ray process started here: no usage statistics sent anywhere, and the patience a
    loaded 2-core machine needs to start a raylet."""
    return dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_raylet_start_wait_time_s="180")


def free_ports(n: int) -> list[int]:
    """``n`` TCP ports free right now (the OS picks them; each is released before Ray binds it)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the process that started it dies (Linux ``PR_SET_PDEATHSIG``)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux: stopping relies on stop()
        pass


def session_processes(sid: int) -> list[tuple[int, str]]:
    """(pid, command line) of every live process of session ``sid`` (read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state ppid pgrp session ...
            if int(fields[3]) != sid or fields[0] == "Z":
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, ValueError, IndexError):
            continue  # exited meanwhile
        found.append((int(entry.name), cmdline or stat.split()[1]))
    return found


@dataclass
class Node:
    """One ``ray start --block`` process: ``name``, its process (a session leader), log file, start-up seconds."""

    name: str
    proc: subprocess.Popen
    log: Path
    start_s: float = 0.0

    @property
    def sid(self) -> int:
        return self.proc.pid


class LocalCluster:
    """A head node started on entry; :meth:`add_node` adds more; :meth:`stop` (on exit) stops them all.

    ``address``: join that running cluster instead of starting a head (:meth:`add_node` adds nodes to it, and
    :meth:`stop` stops only those)."""

    def __init__(
        self,
        ray_bin: str | None = None,
        head_cpus: int = 1,
        object_store_bytes: int = OBJECT_STORE_BYTES,
        address: str | None = None,
    ):
        self.ray_bin = ray_bin or str(Path(sys.executable).with_name("ray"))
        if not Path(self.ray_bin).is_file():
            raise FileNotFoundError(f"no `ray` command at {self.ray_bin}: install the ray extra (make install-ray)")
        self.head_cpus, self.object_store_bytes = head_cpus, object_store_bytes
        self.temp_dir = Path(tempfile.mkdtemp(prefix="mmray-", dir="/tmp"))  # short: Ray's socket paths live here
        self.nodes: list[Node] = []
        self.address = address

    def __enter__(self) -> LocalCluster:
        if self.address is not None:
            return self
        try:
            self.start_head()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.stop()
        if exc_type is None:  # after a failure the logs stay, for the post-mortem
            self.remove_logs()

    def _start(self, name: str, args: list[str]) -> Node:
        log = self.temp_dir / f"{name}.log"
        t0 = time.perf_counter()
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [self.ray_bin, "start", "--block", "--disable-usage-stats", *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=ray_environment(),
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        node = Node(name, proc, log)
        self.nodes.append(node)
        while READY_LINE not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.perf_counter() - t0 > START_TIMEOUT_S:
                tail = log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"Ray node {name} did not start (exit code {proc.poll()}); its log {log}:\n{tail}")
            time.sleep(0.2)
        node.start_s = time.perf_counter() - t0
        return node

    def start_head(self) -> Node:
        if self.address is not None:
            raise RuntimeError(f"this cluster already has a head at {self.address}")
        gcs, dashboard, agent = free_ports(3)
        node = self._start(
            "head",
            [
                "--head",
                f"--port={gcs}",
                "--include-dashboard=false",
                f"--dashboard-port={dashboard}",
                f"--dashboard-agent-listen-port={agent}",
                f"--temp-dir={self.temp_dir}",
                f"--num-cpus={self.head_cpus}",
                f"--object-store-memory={self.object_store_bytes}",
                "--resources=" + json.dumps({"node0": 1}),
            ],
        )
        # the address Ray itself records (this machine's own IP, not 127.0.0.1: Ray resolves a loopback address
        # to the node's IP, and every node and driver must use the same one)
        self.address = (self.temp_dir / "ray_current_cluster").read_text().strip()
        return node

    def add_node(self, num_cpus: int = 1, resources: dict[str, float] | None = None) -> Node:
        """Start one more node joining the head (custom resources: ``node<i>``, plus ``resources``)."""
        if self.address is None:
            raise RuntimeError("start the head node first")
        name = f"node{len(self.nodes)}"
        (agent,) = free_ports(1)
        return self._start(
            name,
            [
                f"--address={self.address}",
                f"--dashboard-agent-listen-port={agent}",
                f"--num-cpus={num_cpus}",
                f"--object-store-memory={self.object_store_bytes}",
                "--resources=" + json.dumps({name: 1, **(resources or {})}),
            ],
        )

    def kill_node(self, node: Node) -> list[int]:
        """SIGKILL every process of ``node`` at once, as if its machine went away; returns their pids."""
        pids = [pid for pid, _ in session_processes(node.sid)]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        node.proc.wait()
        return pids

    def stop(self) -> list[str]:
        """Stop every node (SIGTERM, then SIGKILL after ``STOP_GRACE_S``); returns the processes that had to be
        killed or are still there (empty: a clean stop)."""
        for node in reversed(self.nodes):  # the head last
            if node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        left = []
        for node in self.nodes:
            try:
                node.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        while time.monotonic() < deadline and any(session_processes(n.sid) for n in self.nodes):
            time.sleep(0.2)
        for node in self.nodes:
            for pid, cmd in session_processes(node.sid):
                left.append(f"{node.name}: pid {pid}: {cmd[:160]}")
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if node.proc.poll() is None:
                node.proc.kill()
                node.proc.wait()
        return left

    def remove_logs(self) -> None:
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _raise_exit(signum, frame) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=2, help="nodes in all, the head included (default 2)")
    parser.add_argument("--ray", default=None, help="the `ray` command (default: the one next to this Python)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ARGS...: run with MECHMEM_RAY_ADDRESS")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if args.nodes < 1:
        parser.error(f"--nodes must be >= 1, got {args.nodes}")
    if not command:
        parser.error("give the command to run: ... -- COMMAND ARGS")
    signal.signal(signal.SIGTERM, _raise_exit)
    signal.signal(signal.SIGHUP, _raise_exit)
    cluster = LocalCluster(args.ray)
    rc, t_up = 1, time.perf_counter()
    try:
        cluster.start_head()
        for _ in range(args.nodes - 1):
            cluster.add_node()
        t_up = time.perf_counter() - t_up
        starts = ", ".join(f"{n.name} {n.start_s:.1f} s" for n in cluster.nodes)
        print(f"ray cluster: {args.nodes} nodes at {cluster.address}, up in {t_up:.1f} s ({starts})", flush=True)
        env = dict(ray_environment(), MECHMEM_RAY_ADDRESS=cluster.address)
        rc = subprocess.run(command, env=env, preexec_fn=_die_with_parent).returncode
    except (RuntimeError, OSError) as err:
        print(f"ray cluster: {err}", file=sys.stderr)
    finally:
        t_stop = time.perf_counter()
        left = cluster.stop()
        t_stop = time.perf_counter() - t_stop
        if left:
            print(f"ray cluster: {len(left)} process(es) left after stopping, killed:", *left, sep="\n  ")
            rc = rc or 1
        else:
            print(f"ray cluster: stopped in {t_stop:.1f} s, no process left")
        if rc == 0:
            cluster.remove_logs()
        else:
            print(f"ray cluster: logs kept in {cluster.temp_dir}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
