"""One writer at a time: advisory locks on run folders and sweep results files.

A lock is ``fcntl.flock`` on a lock file, taken without waiting and held until the holder
releases it or exits (the kernel releases it when the process dies, even on ``kill -9``, so a
crash never leaves a folder locked). The holder writes its pid into the lock file, so a second
writer is refused with a message naming it. Within one process a lock is shared: taking it
again only adds a reference (a notebook may open the same run twice).

This module imports neither torch nor TransformerLens (sweep workers import it).
"""

from __future__ import annotations

import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, one writer is up to the user
    fcntl = None


class LockedError(ValueError):
    """Another process holds the lock (its pid is in the message)."""


class _Held:
    """An open, flock-ed lock file and how many holders in this process share it."""

    def __init__(self, fd: int, inode: tuple[int, int]):
        self.fd, self.inode, self.count = fd, inode, 0


_HELD: dict[str, _Held] = {}


def _inode(fd_or_path) -> tuple[int, int]:
    st = os.fstat(fd_or_path) if isinstance(fd_or_path, int) else os.stat(fd_or_path)
    return st.st_dev, st.st_ino


def holder_pid(lock_file: str | Path) -> int | None:
    """The pid written in ``lock_file`` by its last holder (``None`` if unreadable)."""
    try:
        return int(Path(lock_file).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def acquire(lock_file: str | Path, what: str) -> str:
    """Take the lock ``lock_file`` (created if missing) for writing ``what``; returns its key.

    Raises :class:`LockedError` naming the holder's pid when another process holds it.
    """
    lock_file = Path(lock_file)
    key = str(lock_file.resolve())
    held = _HELD.get(key)
    if held is not None:
        try:
            same = _inode(key) == held.inode
        except FileNotFoundError:
            same = False
        if same:
            held.count += 1
            return key
        _close(key)  # the folder was deleted and made again under us: lock the new file
    fd = os.open(key, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        pid = holder_pid(key)
        holder = f"process {pid}" if pid else "another process"
        raise LockedError(
            f"{what} is being written by {holder} (lock {lock_file}); wait for it to finish or stop it first"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _HELD[key] = held = _Held(fd, _inode(fd))
    held.count = 1
    return key


def release(key: str) -> None:
    """Drop one reference to a lock taken with :func:`acquire`; the last one unlocks it."""
    held = _HELD.get(key)
    if held is None:
        return
    held.count -= 1
    if held.count <= 0:
        _close(key)


def _close(key: str) -> None:
    held = _HELD.pop(key, None)
    if held is not None:
        os.close(held.fd)  # closing the descriptor releases the flock


def is_held_here(lock_file: str | Path) -> bool:
    """True when this process holds ``lock_file``."""
    return str(Path(lock_file).resolve()) in _HELD
