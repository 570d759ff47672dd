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
submits one Ray task per configuration to a local Ray instance or to the cluster at ``address`` (optional extra:
``pip install 'mechmem[ray]'``). ``fn`` must be a module-level function (picklable by reference) returning a
JSON-serialisable value.

Example::

    configs = expand_grid({"d": [10, 100], "seed": [0, 1, 2]}, fixed={"N": 100})
    rows = run_sweep(my_module.run_one, configs, "runs/sweep/results.jsonl", workers=2)
"""

from __future__ import annotations

import concurrent.futures as cf
import glob
import hashlib
import itertools
import json
import multiprocessing
import os
import pickle
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


def _validate(fn: Callable, configs: Sequence[Mapping], backend: str, workers: int | None) -> list[dict]:
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; allowed values: {', '.join(BACKENDS)}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be a positive int or None (= number of CPUs), got {workers!r}")
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
    cluster (``None`` starts or joins a local instance). If ``fn`` raises, the rows finished so far stay in the file
    and the exception propagates (with the failing config in its message), so the sweep can be resumed.
    """
    configs = _validate(fn, configs, backend, workers)
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"sweep results path {path} is a folder; name a .jsonl file")
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


def _execute_ray(fn, todo, address) -> Iterable[tuple[dict, Any]]:
    try:
        import ray
    except ImportError as exc:
        raise ImportError(
            "backend='ray' needs Ray, an optional extra: pip install 'mechmem[ray]' (or use backend='local')"
        ) from exc
    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    remote_fn = ray.remote(fn)
    pending = {remote_fn.remote(config): config for config in todo}
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                config = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as exc:
                    raise RuntimeError(f"sweep function failed on config {config}: {exc!r}") from exc
                yield config, result
    finally:
        for ref in pending:
            ray.cancel(ref)
