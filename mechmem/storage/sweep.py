"""A resumable sweep runner: a grid of configurations -> one JSON-lines results file.

Every finished configuration is appended to the results file as one line
``{"key": ..., "config": {...}, "result": ..., "finished_at": ...}``, written with a single ``os.write`` on an
``O_APPEND`` descriptor and fsynced, so a killed sweep leaves only whole lines behind. Re-running the same sweep
skips the configurations whose key (a stable hash of the canonical JSON of the config) is already in the file, so
a killed sweep resumes without loss or duplicates.

A sidecar file ``<results>.grid.json`` stores the grid's fingerprint (a hash of the sorted config keys and of the
function's name); running a different grid or function against an existing results file raises a ValueError
instead of mixing two sweeps. A malformed line is reported with its line number, never silently dropped.

One sweep writes a results file at a time: ``run_sweep`` holds an advisory lock (``<results>.lock``, see
``mechmem.storage.locking``) while it runs, and a second sweep on the same file is refused with the first one's pid.

Backends: ``"local"`` (default) runs ``fn`` in ``workers`` processes started with the ``spawn`` method
(``workers=1`` runs in this process); each worker uses one torch thread (so workers do not oversubscribe the
cores) and exits as soon as the process that started it dies (no orphans after a ``kill -9``). ``"ray"``
submits one Ray task per configuration (one CPU, one torch thread) to the cluster at ``address`` (``HOST:PORT``
of its head, or ``"auto"``; ``None`` starts a local Ray instance; optional extra: ``pip install 'mechmem[ray]'``).
A task whose worker process or node dies is retried ``RAY_TASK_RETRIES`` times, then the sweep stops with an
error naming the configuration; an exception raised by ``fn`` is not retried. Only this process (the driver)
writes the results file: on a cluster, results travel back to the driver. ``fn`` must be a module-level function
(picklable by reference) returning a JSON-serialisable value; on a cluster its module must be importable on every
node (``docs/design/sweeps.md``).

Example::

    configs = expand_grid({"d": [10, 100], "seed": [0, 1, 2]}, fixed={"N": 100})
    rows = run_sweep(my_module.run_one, configs, "runs/sweep/results.jsonl", workers=2)
"""

from __future__ import annotations

import concurrent.futures as cf
import glob
import hashlib
import importlib.util
import itertools
import json
import multiprocessing
import os
import pickle
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from mechmem.core.threads import limit_worker_threads
from mechmem.storage.files import atomic_write_text
from mechmem.storage.locking import acquire, release

BACKENDS = ("local", "ray")
#: How often (seconds) a worker checks that the process that started it is still alive.
PARENT_POLL_SECONDS = 0.5
#: How many times Ray re-runs a configuration whose worker process or node died (Ray's own default, made explicit).
RAY_TASK_RETRIES = 3
#: How long to wait for the cluster's head to accept a connection before calling its address wrong.
RAY_CONNECT_TIMEOUT_S = 10
RAY_MISSING = "backend='ray' needs Ray, an optional extra: pip install 'mechmem[ray]' (or use backend='local')"


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the same config always gives the same string."""
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"sweep configs and results must be JSON-serialisable (finite numbers): {exc}") from exc


def config_key(config: Mapping[str, Any]) -> str:
    """Stable 16-hex-digit key of a configuration (sha256 of its canonical JSON)."""
    if not isinstance(config, Mapping):
        raise TypeError(f"a sweep config must be a dict, got {type(config).__name__}")
    return hashlib.sha256(canonical_json(dict(config)).encode()).hexdigest()[:16]


def expand_grid(axes: Mapping[str, Sequence[Any]], fixed: Mapping[str, Any] | None = None) -> list[dict]:
    """Cartesian product of ``axes`` (name -> values), each config also holding the ``fixed`` entries."""
    fixed = dict(fixed or {})
    for name, values in axes.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            raise TypeError(f"grid axis {name!r} must be a list of values, got {values!r}")
        if name in fixed:
            raise ValueError(f"grid axis {name!r} is also a fixed entry")
    names = list(axes)
    value_lists = [list(axes[n]) for n in names]
    for n, vals in zip(names, value_lists):
        if not vals:
            raise ValueError(f"grid axis {n!r} is empty")
    return [{**fixed, **dict(zip(names, combo))} for combo in itertools.product(*value_lists)]


def function_name(fn: Callable) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def grid_fingerprint(configs: Sequence[Mapping[str, Any]], fn: Callable | None = None) -> str:
    """Hash of the sorted config keys (and of the function's name): independent of the grid's order."""
    keys = sorted(config_key(c) for c in configs)
    payload = canonical_json({"keys": keys, "function": function_name(fn) if fn is not None else None})
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def sidecar_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".grid.json")


def lock_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".lock")


def read_results(path: str | Path) -> list[dict]:
    """All rows of a results file, in file order.

    Raises ValueError with the line number for a line that is not a JSON object with a ``key`` and a ``config``
    matching that key, and for a configuration recorded twice.
    """
    path = Path(path)
    rows, seen = [], {}
    if not path.exists():
        return rows
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.endswith("\n"):
                raise ValueError(f"{path}:{lineno}: truncated last line (no newline): {line[:80]!r}")
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: malformed JSON line ({exc.msg}): {line[:80]!r}") from exc
            if not isinstance(row, dict) or "key" not in row or "config" not in row:
                raise ValueError(f"{path}:{lineno}: a results line must be an object with 'key' and 'config'")
            if config_key(row["config"]) != row["key"]:
                raise ValueError(f"{path}:{lineno}: key {row['key']} does not match its config")
            if row["key"] in seen:
                raise ValueError(
                    f"{path}:{lineno}: configuration {row['key']} already recorded on line {seen[row['key']]}"
                )
            seen[row["key"]] = lineno
            rows.append(row)
    return rows


def _check_sidecar(path: Path, fingerprint: str, n_configs: int, fn: Callable) -> None:
    """Create the grid sidecar, or check that an existing one belongs to this grid."""
    side = sidecar_path(path)
    if side.exists():
        try:
            stored = json.loads(side.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{side}: malformed sweep sidecar ({exc.msg})") from exc
        if stored.get("fingerprint") != fingerprint:
            raise ValueError(
                f"{path} was written by a different grid (fingerprint {stored.get('fingerprint')} with "
                f"{stored.get('n_configs')} configs of {stored.get('function')}; this sweep: {fingerprint} with "
                f"{n_configs} configs of {function_name(fn)}). Use another results path or delete both files."
            )
        return
    if path.exists() and path.stat().st_size > 0:
        raise ValueError(f"{path} exists without its grid sidecar {side.name}: cannot tell which grid wrote it")
    record = {"fingerprint": fingerprint, "n_configs": n_configs, "function": function_name(fn)}
    atomic_write_text(side, json.dumps(record))


class _Appender:
    """Appends whole lines to a file: one ``os.write`` per line on an O_APPEND descriptor, then fsync."""

    def __init__(self, path: Path):
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def append(self, row: dict) -> None:
        data = (canonical_json(row) + "\n").encode()
        written = os.write(self.fd, data)
        if written != len(data):  # pragma: no cover - regular files write whole buffers
            raise OSError(f"short write ({written} of {len(data)} bytes)")
        os.fsync(self.fd)

    def close(self) -> None:
        os.close(self.fd)


def check_backend(backend: str, workers: int | None = None, address: str | None = None) -> None:
    """Raise a ValueError naming the argument unless ``backend``, ``workers`` and ``address`` make a valid sweep
    backend: ``workers`` only with ``"local"``, ``address`` (``HOST:PORT`` or ``"auto"``) only with ``"ray"``;
    an ImportError saying how to install Ray for ``"ray"`` without it. Connects to nothing."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; allowed values: {', '.join(BACKENDS)}")
    if workers is not None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a positive int or None (= number of CPUs), got {workers!r}")
        if backend != "local":
            raise ValueError(
                f"workers is only used with backend='local' (backend={backend!r} runs one task per configuration "
                "on the cluster's CPUs)"
            )
    if address is not None:
        if backend != "ray":
            raise ValueError(f"address is only used with backend='ray', got backend={backend!r}")
        check_ray_address(address)
    if backend == "ray" and importlib.util.find_spec("ray") is None:
        raise ImportError(RAY_MISSING)


def check_ray_address(address: str) -> str:
    """``address`` if it is ``"auto"`` or ``HOST:PORT`` (the cluster's head), else a ValueError."""
    if not isinstance(address, str):
        raise ValueError(f"address must be a string HOST:PORT or 'auto', got {address!r}")
    if address == "auto":
        return address
    if address.startswith("ray://"):
        raise ValueError(
            f"address {address!r}: Ray Client addresses (ray://) are not supported; run the sweep on a node of the "
            "cluster with the head's HOST:PORT (the driver writes the results file where it runs)"
        )
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"address must be HOST:PORT of the Ray cluster's head (e.g. 10.0.0.5:6379) or 'auto', got {address!r}"
        )
    return address


def _validate(
    fn: Callable, configs: Sequence[Mapping], backend: str, workers: int | None, address: str | None
) -> list[dict]:
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    check_backend(backend, workers, address)
    configs = [dict(c) if isinstance(c, Mapping) else c for c in configs]
    keys: dict[str, int] = {}
    for i, c in enumerate(configs):
        k = config_key(c)
        if k in keys:
            raise ValueError(f"configs {keys[k]} and {i} are identical: {c}")
        keys[k] = i
    if not configs:
        raise ValueError("configs is empty: nothing to sweep")
    if backend == "ray" or workers != 1:
        try:
            pickle.dumps(fn)
        except Exception as exc:
            raise TypeError(
                f"fn {function_name(fn)} cannot be sent to worker processes (it must be a module-level function): {exc}"
            ) from exc
    return configs


def run_sweep(
    fn: Callable[[dict], Any],
    configs: Sequence[Mapping[str, Any]],
    path: str | Path,
    *,
    backend: str = "local",
    workers: int | None = None,
    address: str | None = None,
    progress: bool = True,
    desc: str = "sweep",
) -> list[dict]:
    """Run ``fn(config)`` for every config not yet in ``path``; return all rows in the order of ``configs``.

    ``workers``: processes of the local backend (None = number of CPUs; 1 = in this process). ``address``: the Ray
    cluster's head, ``HOST:PORT`` (``None`` starts a local Ray instance, or uses the one this process is already
    connected to). If ``fn`` raises, or a Ray task fails past its retries, the rows finished so far stay in the
    file and a RuntimeError names the failing config, so the sweep can be resumed (by either backend).
    """
    configs = _validate(fn, configs, backend, workers, address)
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"sweep results path {path} is a folder; name a .jsonl file")
    if backend == "ray":
        connect_ray(address)  # an unreachable or conflicting address fails before any file is made
    path.parent.mkdir(parents=True, exist_ok=True)
    key = acquire(lock_path(path), f"sweep results {path}")
    try:
        for stale in path.parent.glob(
            f".{glob.escape(path.name)}*.tmp"
        ):  # ours only: the folder may hold others' files
            stale.unlink()
        return _run_locked(fn, configs, path, backend, workers, address, progress, desc)
    finally:
        release(key)


def _run_locked(fn, configs: list[dict], path: Path, backend, workers, address, progress, desc) -> list[dict]:
    """``run_sweep`` once the results file is locked."""
    _check_sidecar(path, grid_fingerprint(configs, fn), len(configs), fn)
    done = {row["key"]: row for row in read_results(path)}
    todo = [c for c in configs if config_key(c) not in done]
    bar = tqdm(total=len(configs), initial=len(configs) - len(todo), desc=desc, disable=not progress, smoothing=0.1)
    appender = _Appender(path)
    try:
        for config, result in _execute(fn, todo, backend, workers, address):
            row = {"key": config_key(config), "config": config, "result": result, "finished_at": time.time()}
            appender.append(row)
            done[row["key"]] = json.loads(canonical_json(row))
            bar.update(1)
    finally:
        appender.close()
        bar.close()
    return [done[config_key(c)] for c in configs]


def _execute(fn, todo, backend, workers, address) -> Iterable[tuple[dict, Any]]:
    if not todo:
        return
    if backend == "ray":
        yield from _execute_ray(fn, todo, address)
        return
    workers = workers or os.cpu_count() or 1
    if workers == 1:
        for config in todo:
            yield config, _call(fn, config)
        return
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(
        max_workers=min(workers, len(todo)), mp_context=ctx, initializer=_init_worker, initargs=(os.getpid(),)
    ) as pool:
        futures = {pool.submit(fn, config): config for config in todo}
        try:
            for fut in cf.as_completed(futures):
                config = futures[fut]
                try:
                    result = fut.result()
                except Exception as exc:
                    raise RuntimeError(f"sweep function failed on config {config}: {exc!r}") from exc
                yield config, result
        finally:
            for fut in futures:
                fut.cancel()


def _init_worker(parent_pid: int) -> None:
    """In each worker: one torch thread, and exit as soon as ``parent_pid`` is gone."""
    limit_worker_threads()
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True, name="exit-with-parent").start()


def _exit_with_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_SECONDS)
    os._exit(1)  # the sweep that started us died: its results file is resumed by the next run


def _call(fn, config):
    try:
        return fn(config)
    except Exception as exc:
        raise RuntimeError(f"sweep function failed on config {config}: {exc!r}") from exc


def connect_ray(address: str | None):
    """Ray, connected to the cluster at ``address`` (``None``: a local instance, or the connection this process
    already has). A ValueError if this process is connected to another cluster: one driver, one cluster."""
    try:
        import ray
    except ImportError as exc:
        raise ImportError(RAY_MISSING) from exc
    if not ray.is_initialized():
        if address not in (None, "auto"):
            _check_reachable(address)  # ray.init waits for an absent cluster for many minutes
        ray.init(address=address, log_to_driver=False)
    elif address is not None and not _same_cluster(address, ray.get_runtime_context().gcs_address):
        raise ValueError(
            f"address {address!r}: this process is already connected to the Ray cluster at "
            f"{ray.get_runtime_context().gcs_address} (call ray.shutdown() first to sweep on another one)"
        )
    return ray


def _check_reachable(address: str) -> None:
    """A ValueError unless something accepts TCP connections at ``address`` (``HOST:PORT``) within
    ``RAY_CONNECT_TIMEOUT_S``."""
    host, _, port = check_ray_address(address).rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=RAY_CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise ValueError(
            f"address {address!r}: no Ray cluster answers there ({exc}); start one with `ray start --head` and pass "
            "the address it prints"
        ) from exc


def _same_cluster(address: str, connected: str) -> bool:
    """Whether ``address`` names the cluster whose head is ``connected`` (Ray records a loopback address as the
    node's own IP, so a loopback host matches any host on the same port)."""
    if address == "auto":
        return True
    host, _, port = address.rpartition(":")
    connected_host, _, connected_port = connected.rpartition(":")
    if port != connected_port:
        return False
    try:
        ip, connected_ip = socket.gethostbyname(host), socket.gethostbyname(connected_host)
    except OSError:
        return host == connected_host
    return ip == connected_ip or ip.startswith("127.")


def _ray_task(fn, config):
    """What a Ray worker runs: ``fn(config)`` with one torch thread, like a local worker."""
    limit_worker_threads()
    return fn(config)


def _execute_ray(fn, todo, address) -> Iterable[tuple[dict, Any]]:
    ray = connect_ray(address)
    task = ray.remote(num_cpus=1, max_retries=RAY_TASK_RETRIES, retry_exceptions=False)(_ray_task)
    pending = {task.remote(fn, config): config for config in todo}
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                config = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    raise RuntimeError(f"sweep function failed on config {config}: {exc}") from exc
                except ray.exceptions.RayError as exc:
                    raise RuntimeError(
                        f"the Ray worker or node running config {config} died or could not run it, and Ray's "
                        f"{RAY_TASK_RETRIES} retries did not help ({type(exc).__name__}: {_first_line(exc)}); the "
                        "rows finished so far are kept: run the same sweep again to resume"
                    ) from exc
                yield config, result
    finally:
        for ref in pending:
            ray.cancel(ref)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""
