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

from mechmem.storage.files import atomic_write_json, is_temp_file, remove_stale_temp_files
from mechmem.storage.locking import acquire, release

MARKER = ".mechmem.json"
LOCK_FILE = ".mechmem.lock"
RUN_KIND = "run"
#: the longest folder name mechmem writes: 255 bytes (the usual file-system limit) less room for the
#: temporary sibling a folder written whole goes through (``.<name>.tmp-<8 characters>``)
MAX_NAME = 255 - 16


def check_run_name(name: Any) -> str:
    """A run name is one path component: not empty, no separators, not ``.``/``..``, no leading dot."""
    if not isinstance(name, str):
        raise TypeError(f"run name must be a str, got {type(name).__name__}")
    bad = [sep for sep in (os.sep, os.altsep, "/", "\\", "\0") if sep and sep in name]
    if not name or bad or name.startswith(".") or len(name.encode()) > MAX_NAME:
        raise ValueError(
            f"run name {name[:40]!r} is not allowed: a name is one folder name (letters, digits, '-', '_', ...), "
            f"not empty, without '/' or '\\', not starting with '.', at most {MAX_NAME} bytes"
        )
    return name


def _check_parents(path: Path) -> None:
    """The nearest existing ancestor of ``path`` must be a folder (``--out`` naming a file)."""
    for parent in path.parents:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise ValueError(f"{parent} is a file, not a folder; cannot create {path} inside it")
            return


def _marker(folder: Path) -> dict:
    try:
        marker = json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return {}
    return marker if isinstance(marker, dict) else {}


def marker_kind(folder: Path) -> str | None:
    """What mechmem made ``folder`` for (``"run"``, ``"reproduce-lca"``, ...), or ``None``."""
    kind = _marker(folder).get("kind")
    return kind if isinstance(kind, str) else None


def marker_about(folder: Path) -> dict | None:
    """What the output in ``folder`` is of (e.g. a reproduction's paper, preset, variant and seeds), as
    recorded by :func:`prepare_output_dir`'s ``about``; ``None`` when nothing was recorded."""
    about = _marker(folder).get("about")
    return about if isinstance(about, dict) else None


#: what a run folder holds before its config.json lands: mechmem's bookkeeping and an empty figures/
_BOOKKEEPING = {MARKER, LOCK_FILE, "manifest.json"}


def run_data(path: Path) -> list[str]:
    """The files of the run folder ``path`` beyond its bookkeeping (marker, lock, manifest, temporary
    files): empty for a run interrupted while being created, whose ``--overwrite`` loses nothing."""
    found = []
    for root, _, names in os.walk(path):
        for name in names:
            rel = os.path.relpath(os.path.join(root, name), path)
            if rel not in _BOOKKEEPING and not is_temp_file(name):
                found.append(rel.replace(os.sep, "/"))
    return sorted(found)


def incomplete_run_message(path: Path) -> str:
    """Why the run folder ``path`` (marked as a run, no ``config.json``) cannot be used, and what is safe to do:
    interrupted while being created (``--overwrite`` loses nothing) or damaged (it must not be overwritten)."""
    data = run_data(path)
    if not data:
        return (
            f"run directory {path} was interrupted while being created (no config.json, no model, no results): "
            "start it again with overwrite=True (CLI: --overwrite); nothing is lost"
        )
    shown = ", ".join(data[:4]) + (f" and {len(data) - 4} more" if len(data) > 4 else "")
    return (
        f"run directory {path} has no config.json but holds {shown}: it is damaged, not interrupted (config.json "
        "was deleted after mechmem wrote it). mechmem cannot rebuild config.json: restore it from a backup, or "
        "train a new run under another name; leave this folder as it is (overwriting it would delete what it holds)"
    )


def _clear_folder(folder: Path) -> None:
    """Delete everything in ``folder`` except its lock file; links are removed, never followed."""
    for entry in os.scandir(folder):
        if entry.name == LOCK_FILE:
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)


def claim(path: Path, kind: str, overwrite: bool, reuse: bool, about: dict | None = None) -> str:
    """Make or take over ``path`` for ``kind`` (and ``about``, see :func:`prepare_output_dir`) and lock it;
    returns the lock's key.

    An empty folder is taken; a folder mechmem made for ``kind`` (and the same ``about``) is kept (``reuse``)
    or emptied (``overwrite``); a folder mechmem made for something else is emptied only with ``overwrite``;
    anything else (a file, a link, a folder mechmem did not make) is refused.
    """
    check_output_dir(path, kind, overwrite, reuse, about)  # before the lock file: a refused folder stays untouched
    path.mkdir(parents=True, exist_ok=True)
    key = acquire(path / LOCK_FILE, str(path))
    try:
        found = marker_kind(path)  # again, now that no other writer can change it
        if _holds_files(path):
            _may_replace(path, kind, found, overwrite, reuse)
            _same_about(path, about, overwrite)
            if overwrite:
                _clear_folder(path)
        remove_stale_temp_files(path)
        if found != kind or overwrite or (about is not None and not _same(marker_about(path), about)):
            marker = {"kind": kind, "made_by": "mechmem"} | ({"about": about} if about is not None else {})
            atomic_write_json(path / MARKER, marker)
    except BaseException:
        release(key)
        raise
    return key


def check_output_dir(
    path: Path, kind: str, overwrite: bool = False, reuse: bool = True, about: dict | None = None
) -> None:
    """Raise unless :func:`claim` would take ``path`` for ``kind`` (the same rules; nothing is written)."""
    path = Path(path)
    check_name_lengths(path)
    _check_parents(path)
    if path.is_symlink():
        raise ValueError(f"{path} is a symbolic link; mechmem writes only into folders it made (name the target)")
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path} is a file, not a folder")
    if _holds_files(path):
        _may_replace(path, kind, marker_kind(path), overwrite, reuse)
        _same_about(path, about, overwrite)


def check_name_lengths(path: Path) -> None:
    """Refuse a path with a component longer than the file system allows (before anything is made)."""
    for part in Path(path).parts:
        if len(part.encode()) > MAX_NAME:
            raise ValueError(
                f"{path}: the name {part[:24]}... is {len(part.encode())} bytes long; folder names may have at "
                f"most {MAX_NAME} (file systems allow 255, mechmem adds a temporary suffix): choose a shorter one"
            )


def _holds_files(path: Path) -> bool:
    """True when ``path`` is a folder holding anything besides mechmem's lock file."""
    return path.is_dir() and any(name != LOCK_FILE for name in os.listdir(path))


def _same_about(path: Path, about: dict | None, overwrite: bool) -> None:
    """Refuse (unless ``overwrite``) a folder holding output of the same kind but not of ``about``."""
    if about is None or overwrite or not any(n not in (LOCK_FILE, MARKER) for n in os.listdir(path)):
        return
    recorded = marker_about(path)
    if _same(recorded, about):
        return
    if recorded is None:
        what = "output whose settings were not recorded (made by an earlier mechmem)"
    else:
        keys = [k for k in sorted(set(recorded) | set(about)) if not _same(recorded.get(k), about.get(k))]
        what = "another output (" + "; ".join(_difference(k, recorded.get(k), about.get(k)) for k in keys) + ")"
    raise FileExistsError(
        f"{path} holds {what}; mechmem never mixes two in one folder and has written nothing: pass "
        "overwrite=True (CLI: --overwrite) to delete that output and start again, or choose another folder (--out)"
    )


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON (so a NaN setting equals itself)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _difference(key: str, there: Any, now: Any) -> str:
    there, now = json.dumps(there, sort_keys=True), json.dumps(now, sort_keys=True)
    return f"{key} {there} there, {now} now" if len(there) + len(now) <= 80 else f"its {key} differs"


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
        raise FileExistsError(incomplete_run_message(path))
    if found == kind == RUN_KIND and (path / "model.safetensors").exists():
        raise FileExistsError(
            f"run directory {path} already holds a finished run (model.safetensors): choose another name for a new "
            "run; overwrite=True (CLI: --overwrite) would delete this one"
        )
    if found == kind:
        raise FileExistsError(
            f"run directory {path} already exists, unfinished (no model.safetensors yet): continue it with --resume, "
            "or start it again with overwrite=True (CLI: --overwrite), which deletes its checkpoint"
        )
    raise FileExistsError(
        f"{path} holds mechmem's output of another kind ({found!r}, not {kind!r}); pass overwrite=True "
        "(CLI: --overwrite) to replace it, or choose another folder"
    )


def release_output_dir(path: str | Path) -> None:
    """Give up this process's lock on ``path`` (taken by :func:`prepare_output_dir`) before it ends;
    for long-lived processes (a notebook) that write many folders."""
    release(str((Path(path) / LOCK_FILE).resolve()))


def prepare_output_dir(path: str | Path, kind: str, overwrite: bool = False, about: dict | None = None) -> Path:
    """Make ``path`` ready for ``kind``'s output (e.g. ``"reproduce-lca"``) and lock it for this process.

    A missing or empty folder is created and marked; the folder of a previous ``kind`` output is
    reused as it is (so an interrupted job can resume); with ``overwrite`` a folder that mechmem
    made is emptied first. A file, a symbolic link, a non-empty folder that mechmem did not make,
    or (without ``overwrite``) another kind's output raise ``ValueError`` / ``FileExistsError``.
    ``about`` (a JSON-able dict, e.g. a reproduction's paper, preset, variant and seeds) is recorded in the
    marker; a folder holding output of the same kind recorded with another ``about`` (or none) is refused,
    before anything is written, unless ``overwrite``.
    A second process preparing the same folder gets a ``mechmem.storage.locking.LockedError``; the lock is
    held until this process ends (or :func:`release_output_dir`).
    """
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"kind must be a non-empty str naming what writes the folder, got {kind!r}")
    path = Path(path)
    claim(path, kind, overwrite, reuse=True, about=about)
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
