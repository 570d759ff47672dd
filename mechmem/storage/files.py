"""Atomic file writing: every file mechmem writes is either complete or absent.

Each writer writes to a temporary file in the destination folder (``.<name>.<random>.tmp``),
flushes it to disk, then renames it over the destination (``os.replace`` is atomic on POSIX and
Windows). A crash or an exception in the middle leaves the old file (or nothing), never half a
file; an exception (Ctrl-C included) also removes the temporary file, and
:func:`remove_stale_temp_files` clears those a ``kill -9`` left behind.

torch is imported only where tensors are written, so sweep workers can use this module cheaply.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _atomic(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)``, then rename ``tmp_path`` to ``path``; clean up on failure."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        if err.errno and (err.filename is None or is_temp_file(os.path.basename(str(err.filename)))):
            raise _naming(err, path) from err  # name the file being written, not its temporary name
        raise
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; results are meant to be shared
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.errno and err.filename in (None, tmp):
            raise _naming(err, path) from err  # a full disk seen by write() names no file: name the one written
        raise
    return path


def _naming(err: OSError, path: Path) -> OSError:
    """``err`` (same type and errno) naming ``path`` instead of no file or a temporary one."""
    return type(err)(err.errno, err.strerror, str(path))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    return _atomic(path, write)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def to_jsonable(obj: Any) -> Any:
    """Turn tensors, numpy values, tuples and paths into plain JSON values."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    torch = sys.modules.get("torch")  # no torch imported: obj cannot be a tensor
    if torch is not None and isinstance(obj, torch.Tensor):
        return obj.detach().cpu().tolist()
    if hasattr(obj, "tolist") and hasattr(obj, "dtype"):  # numpy arrays and scalars
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, allow_nan=True) + "\n")


def safetensors_bytes(tensors: dict, metadata: dict[str, str] | None = None) -> bytes:
    """The safetensors file holding ``tensors`` (made contiguous, detached, on the CPU)."""
    from safetensors.torch import save

    return save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=metadata)


def atomic_save_safetensors(path: str | os.PathLike, tensors: dict, metadata: dict[str, str] | None = None) -> Path:
    """Save tensors (made contiguous and detached) as safetensors, atomically."""
    return atomic_write_bytes(path, safetensors_bytes(tensors, metadata))


def is_temp_file(name: str) -> bool:
    """True for the temporary names of this module's writers (``.<name>.<random>.tmp``)."""
    return name.startswith(".") and name.endswith(".tmp")


def remove_stale_temp_files(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Delete the temporary files that a killed writer left in ``folder``; returns them.

    Call it only while holding the folder's writer lock (no other writer can be mid-write).
    Symbolic links are never followed.
    """
    folder = Path(folder)
    removed = []
    if not folder.is_dir() or folder.is_symlink():
        return removed
    for entry in os.scandir(folder):
        if entry.is_file(follow_symlinks=False) and is_temp_file(entry.name):
            os.unlink(entry.path)
            removed.append(Path(entry.path))
        elif recursive and entry.is_dir(follow_symlinks=False):
            removed += remove_stale_temp_files(entry.path)
    return removed


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line with a single ``write`` on an ``O_APPEND`` file (no torn lines)."""
    line = (json.dumps(to_jsonable(record)) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    except OSError as err:
        raise _naming(err, Path(path)) from err
    finally:
        os.close(fd)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSON-lines file; a malformed line raises ``ValueError`` with its line number."""
    records = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}: line {number} is not valid JSON ({err.msg})") from None
    return records
