"""Atomic file writing: a file is either the complete new version or the untouched old one.

Failures are injected at each stage of a write (while writing the temp file, at fsync, at the
final rename, and as a KeyboardInterrupt); the old file must survive byte for byte and no
temporary file may be left behind.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import mechmem.storage.files as mio
from mechmem.storage.files import (
    append_jsonl,
    atomic_save_safetensors,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    read_jsonl,
    to_jsonable,
)


def _leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


def test_atomic_writers_create_parent_folders_and_write_the_content(tmp_path):
    target = tmp_path / "a" / "b"
    atomic_write_bytes(target / "x.bin", b"\x00\x01")
    atomic_write_text(target / "x.txt", "héllo")
    atomic_write_json(target / "x.json", {"k": (1, 2)})
    assert (target / "x.bin").read_bytes() == b"\x00\x01"
    assert (target / "x.txt").read_text(encoding="utf-8") == "héllo"
    assert json.loads((target / "x.json").read_text()) == {"k": [1, 2]}
    assert _leftovers(target, {"x.bin", "x.txt", "x.json"}) == [], "temporary files left after successful writes"


def test_atomic_safetensors_round_trip_with_metadata(tmp_path):
    """Non-contiguous tensors are saved (made contiguous) and metadata strings come back."""
    tensors = {"w": torch.arange(6.0).reshape(2, 3).T, "i": torch.tensor([1, 2], dtype=torch.int64)}
    path = atomic_save_safetensors(tmp_path / "t.safetensors", tensors, metadata={"note": "hi"})
    loaded = load_file(str(path))
    assert all(torch.equal(loaded[k], tensors[k]) for k in tensors), "tensors changed in the round trip"
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"note": "hi"}


class _Boom(Exception):
    pass


def _fail_while_writing(tmp):
    with open(tmp, "wb") as f:
        f.write(b"half of the new conte")
    raise _Boom("disk full")


@pytest.mark.parametrize("stage", ["writing", "fsync", "rename", "interrupt"])
def test_failed_write_leaves_the_old_file_intact_and_no_temp_file(tmp_path, monkeypatch, stage):
    """Whatever stage the write dies at, the destination keeps its old bytes."""
    path = tmp_path / "results.json"
    path.write_text('{"old": true}')
    if stage == "writing":
        write = lambda: mio._atomic(path, _fail_while_writing)  # noqa: E731
        error = _Boom
    else:
        error = KeyboardInterrupt if stage == "interrupt" else OSError

        def broken(*args, **kwargs):
            raise error(f"injected failure at {stage}")

        monkeypatch.setattr(mio.os, {"fsync": "fsync", "rename": "replace", "interrupt": "fsync"}[stage], broken)
        write = lambda: atomic_write_json(path, {"new": True})  # noqa: E731
    with pytest.raises(error):
        write()
    monkeypatch.undo()
    assert path.read_text() == '{"old": true}', f"failure at {stage} damaged the old file: {path.read_text()!r}"
    assert _leftovers(tmp_path, {"results.json"}) == [], f"failure at {stage} left temp files behind"


def test_failed_safetensors_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    atomic_save_safetensors(path, {"w": torch.ones(3)})
    before = path.read_bytes()
    monkeypatch.setattr(mio.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("injected")))
    with pytest.raises(OSError, match="injected"):
        atomic_save_safetensors(path, {"w": torch.zeros(3)})
    monkeypatch.undo()
    assert path.read_bytes() == before, "the previous checkpoint was damaged by a failed save"
    assert _leftovers(tmp_path, {"model.safetensors"}) == []


def test_to_jsonable_converts_tensors_numpy_tuples_and_paths():
    value = {1: torch.tensor([1.5, 2.0]), "n": np.float32(0.5), "a": np.arange(2), "t": (Path("x"), torch.tensor(3))}
    assert to_jsonable(value) == {"1": [1.5, 2.0], "n": 0.5, "a": [0, 1], "t": ["x", 3]}


def test_json_keeps_nan_and_inf_readable_by_python(tmp_path):
    path = atomic_write_json(tmp_path / "r.json", {"nan": float("nan"), "inf": float("inf")})
    back = json.loads(path.read_text())
    assert math.isnan(back["nan"]) and back["inf"] == math.inf


def test_append_jsonl_appends_one_line_per_record_and_read_jsonl_reads_them(tmp_path):
    path = tmp_path / "metrics.jsonl"
    for step in range(3):
        append_jsonl(path, {"step": step, "loss": torch.tensor(0.5)})
    assert path.read_text().count("\n") == 3
    assert read_jsonl(path) == [{"step": s, "loss": 0.5} for s in range(3)]


def test_read_jsonl_skips_blank_lines_and_names_the_malformed_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 0}\n\n{"step": 1}\n{"step": 2, "lo\n')
    with pytest.raises(ValueError, match="line 4 is not valid JSON"):
        read_jsonl(path)
    path.write_text('{"step": 0}\n\n{"step": 1}\n')
    assert read_jsonl(path) == [{"step": 0}, {"step": 1}]


def test_temp_files_are_written_next_to_the_destination(tmp_path, monkeypatch):
    """The temp file must live in the destination folder, so os.replace is a same-filesystem rename."""
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append((Path(src).parent, Path(dst).parent))
        return real_replace(src, dst)

    monkeypatch.setattr(mio.os, "replace", spy)
    atomic_write_text(tmp_path / "sub" / "f.txt", "x")
    assert seen == [(tmp_path / "sub", tmp_path / "sub")], f"temp file not in the destination folder: {seen}"
