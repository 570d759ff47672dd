"""Folders that only mechmem writes: safe run names, the marker, one writer, ``--overwrite`` rules.

A folder mechmem made holds a marker, ``.mechmem.json`` (``{"kind": "run"}``, ``"reproduce-lca"``,
...), and a lock file, ``.mechmem.lock`` (``mechmem.storage.locking``). ``--overwrite`` empties only a folder
with a marker; a file, a symbolic link or a non-empty folder without a marker is never written
into nor deleted. :func:`prepare_output_dir` is what every command that writes a folder calls
first (``mechmem train`` through ``Run.create``, ``mechmem reproduce``); a page written whole
(``mechmem inspect``, ``mechmem report``) goes through :func:`write_folder_atomically`.

This module imports neither torch nor TransformerLens (the CLI checks names with it first).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mechmem.storage.files import atomic_write_json, remove_stale_temp_files
from mechmem.storage.locking import acquire, release

MARKER = ".mechmem.json"
LOCK_FILE = ".mechmem.lock"
RUN_KIND = "run"


def check_run_name(name: Any) -> str:
    """A run name is one path component: not empty, no separators, not ``.``/``..``, no leading dot."""
    if not isinstance(name, str):
        raise TypeError(f"run name must be a str, got {type(name).__name__}")
    bad = [sep for sep in (os.sep, os.altsep, "/", "\\", "\0") if sep and sep in name]
    if not name or bad or name.startswith(".") or len(name.encode()) > 255:
        raise ValueError(
            f"run name {name!r} is not allowed: a name is one folder name (letters, digits, '-', '_', ...), "
            "not empty, without '/' or '\\', not starting with '.'"
        )
    return name


def _check_parents(path: Path) -> None:
    """The nearest existing ancestor of ``path`` must be a folder (``--out`` naming a file)."""
    for parent in path.parents:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise ValueError(f"{parent} is a file, not a folder; cannot create {path} inside it")
            return


def marker_kind(folder: Path) -> str | None:
    """What mechmem made ``folder`` for (``"run"``, ``"reproduce-lca"``, ...), or ``None``."""
    try:
        kind = json.loads((folder / MARKER).read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        return None
    return kind if isinstance(kind, str) else None


def _clear_folder(folder: Path) -> None:
    """Delete everything in ``folder`` except its lock file; links are removed, never followed."""
    for entry in os.scandir(folder):
        if entry.name == LOCK_FILE:
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)


def claim(path: Path, kind: str, overwrite: bool, reuse: bool) -> str:
    """Make or take over ``path`` for ``kind`` and lock it; returns the lock's key.

    An empty folder is taken; a folder mechmem made for ``kind`` is kept (``reuse``) or emptied
    (``overwrite``); a folder mechmem made for something else is emptied only with ``overwrite``;
    anything else (a file, a link, a folder mechmem did not make) is refused.
    """
    check_output_dir(path, kind, overwrite, reuse)  # before the lock file is made: a foreign folder stays untouched
    path.mkdir(parents=True, exist_ok=True)
    key = acquire(path / LOCK_FILE, str(path))
    try:
        found = marker_kind(path)  # again, now that no other writer can change it
        if _holds_files(path):
            _may_replace(path, kind, found, overwrite, reuse)
            if overwrite:
                _clear_folder(path)
        remove_stale_temp_files(path)
        if found != kind or overwrite:
            atomic_write_json(path / MARKER, {"kind": kind, "made_by": "mechmem"})
    except BaseException:
        release(key)
        raise
    return key


def check_output_dir(path: Path, kind: str, overwrite: bool = False, reuse: bool = True) -> None:
    """Raise unless :func:`claim` would take ``path`` for ``kind`` (the same rules; nothing is written)."""
    path = Path(path)
    _check_parents(path)
    if path.is_symlink():
        raise ValueError(f"{path} is a symbolic link; mechmem writes only into folders it made (name the target)")
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path} is a file, not a folder")
    if _holds_files(path):
        _may_replace(path, kind, marker_kind(path), overwrite, reuse)


def _holds_files(path: Path) -> bool:
    """True when ``path`` is a folder holding anything besides mechmem's lock file."""
    return path.is_dir() and any(name != LOCK_FILE for name in os.listdir(path))


def _may_replace(path: Path, kind: str, found: str | None, overwrite: bool, reuse: bool) -> None:
    """Raise unless the non-empty ``path`` (made by mechmem for ``found``) may be used for ``kind``."""
    if found is None:
        raise FileExistsError(
            f"{path} is not empty and was not made by mechmem (no {MARKER}); mechmem neither writes into nor "
            "deletes such a folder, even with --overwrite: choose another name or folder"
        )
    if overwrite or (reuse and found == kind):
        return
    if found == RUN_KIND and kind == RUN_KIND and not (path / "config.json").is_file():
        raise FileExistsError(
            f"run directory {path} was never started (interrupted before its config.json was written); "
            "pass overwrite=True (CLI: --overwrite) to start it again"
        )
    if found == kind:
        raise FileExistsError(
            f"run directory {path} already exists; pass overwrite=True (CLI: --overwrite) to replace it, "
            "or --resume to continue it"
        )
    raise FileExistsError(
        f"{path} holds mechmem's output of another kind ({found!r}, not {kind!r}); pass overwrite=True "
        "(CLI: --overwrite) to replace it, or choose another folder"
    )


def release_output_dir(path: str | Path) -> None:
    """Give up this process's lock on ``path`` (taken by :func:`prepare_output_dir`) before it ends;
    for long-lived processes (a notebook) that write many folders."""
    release(str((Path(path) / LOCK_FILE).resolve()))


def prepare_output_dir(path: str | Path, kind: str, overwrite: bool = False) -> Path:
    """Make ``path`` ready for ``kind``'s output (e.g. ``"reproduce-lca"``) and lock it for this process.

    A missing or empty folder is created and marked; the folder of a previous ``kind`` output is
    reused as it is (so an interrupted job can resume); with ``overwrite`` a folder that mechmem
    made is emptied first. A file, a symbolic link, a non-empty folder that mechmem did not make,
    or (without ``overwrite``) another kind's output raise ``ValueError`` / ``FileExistsError``.
    A second process preparing the same folder gets a ``mechmem.storage.locking.LockedError``; the lock is
    held until this process ends (or :func:`release_output_dir`).
    """
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"kind must be a non-empty str naming what writes the folder, got {kind!r}")
    path = Path(path)
    claim(path, kind, overwrite, reuse=True)
    return path


def write_folder_atomically(path: str | Path, kind: str, build: Callable[[Path], Any], overwrite: bool = False) -> Path:
    """Write the whole folder ``path`` (a page and its files, e.g. ``kind="report"``) all at once.

    ``path`` is claimed as :func:`prepare_output_dir` claims it (the same refusals; the earlier output
    of ``kind`` is replaced, another kind's mechmem output only with ``overwrite``), then ``build(tmp)``
    fills a fresh temporary folder next to it, which takes ``path``'s place only when complete: after a
    failure the previous output is as it was and no temporary folder is left (a ``path`` this call
    created is removed again). The new folder keeps the marker and the very lock file (a hard link), so
    ``path`` stays locked by this process until the end of the call.
    """
    path = Path(path)
    created = not path.exists()
    prepare_output_dir(path, kind, overwrite)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        os.chmod(tmp, 0o755)
        build(tmp)
        shutil.copy2(path / MARKER, tmp / MARKER)
        os.link(path / LOCK_FILE, tmp / LOCK_FILE)
        old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if created and path.is_dir() and set(os.listdir(path)) <= {MARKER, LOCK_FILE}:
            shutil.rmtree(path, ignore_errors=True)
        raise
    finally:
        release_output_dir(path)
    return path
