"""``manifest.json``: the sha256 of every file mechmem wrote in a folder, and a checksum of itself.

A run folder (``mechmem.storage.runs``) keeps its manifest up to date file by file, in two steps (a new
checksum is recorded as *pending* before the file is renamed into place, and made final after), so a process
killed at any point leaves a folder that verifies; a reproduction's folder is sealed once, when it is complete
(:func:`seal`). The manifest::

    {"format": 2,
     "files": {"config.json": {"sha256": "...", "bytes": 1188}, ...},
     "pending": {"model.safetensors": "<sha256 of the file being written>"},
     "self_sha256": "<sha256 of the manifest without this key, as written>"}

is written canonically (sorted keys, two-space indent), so a changed byte anywhere in it is caught: its own
checksum no longer matches, or its text is no longer the canonical text of what it holds. Readers check it
first (:func:`read`), then the files it lists (:func:`problems`); nothing is ever repaired silently.

This module imports neither torch nor TransformerLens.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from mechmem.storage.files import atomic_write_bytes, is_temp_file

MANIFEST = "manifest.json"
FORMAT = 2
SELF = "self_sha256"
MISSING = f"is listed in {MANIFEST} but missing: it was deleted after mechmem wrote it"
CHANGED = f"does not match its checksum in {MANIFEST}: it was changed or damaged after mechmem wrote it"
#: how a reader is told to accept a folder without a verifiable manifest
ALLOW_FLAG = (
    "read it unchecked with `mechmem inspect --allow-no-manifest`, `mechmem report --allow-no-manifest` or "
    "load_run(..., allow_no_manifest=True); it cannot be resumed or repaired"
)


class Damaged(ValueError):
    """Files of a folder that do not match its manifest: ``problems`` maps each file (relative to
    ``folder``) to what is wrong with it; the message names every one and says what to do (``advice``)."""

    def __init__(self, folder: Path, problems: dict[str, str], advice: str = ""):
        self.folder, self.problems = Path(folder), dict(problems)
        listed = "; ".join(f"{self.folder / name} {what}" for name, what in self.problems.items())
        super().__init__(listed + (f". {advice}" if advice else ""))


class NoManifest(ValueError):
    """A folder without a manifest it can be checked against (none, or one written before manifests
    checked themselves)."""


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def empty() -> dict:
    return {"format": FORMAT, "files": {}, "pending": {}}


def encode(manifest: dict) -> bytes:
    """The canonical bytes of ``manifest`` (``files`` and ``pending``), with its own checksum inside."""
    body = {"format": FORMAT, "files": manifest["files"], "pending": manifest["pending"]}
    return _canonical({**body, SELF: digest(_canonical(body))})


def _canonical(obj: dict) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8")


def write(folder: Path, manifest: dict) -> None:
    atomic_write_bytes(Path(folder) / MANIFEST, encode(manifest))


def read(folder: Path, allow_unchecked: bool = False) -> dict | None:
    """The verified manifest of ``folder``; ``None`` when it has none and ``allow_unchecked``.

    A missing manifest, or one without a checksum of its own (written by an earlier mechmem), raises
    :class:`NoManifest` unless ``allow_unchecked``; one whose bytes do not match its checksum or its
    canonical text raises :class:`Damaged`.
    """
    file = Path(folder) / MANIFEST
    if not file.is_file():
        if allow_unchecked:
            return None
        raise NoManifest(
            f"{folder} has no {MANIFEST} (deleted, or written by a mechmem before manifests), so its files cannot "
            f"be verified: {ALLOW_FLAG}"
        )
    data = file.read_bytes()
    try:
        manifest = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise Damaged(folder, {MANIFEST: "is not valid JSON: it was damaged or edited"}) from None
    if not isinstance(manifest, dict) or not _well_formed(manifest):
        raise Damaged(folder, {MANIFEST: "is malformed (expected 'files' and 'pending' objects): it was edited"})
    if SELF not in manifest and set(manifest) != {"files", "pending"}:  # not the old format: a damaged one
        raise Damaged(folder, {MANIFEST: "has lost its own checksum: it was changed or damaged"})
    if SELF not in manifest:
        if allow_unchecked:
            return manifest
        raise NoManifest(
            f"{file} has no checksum of its own (written by a mechmem before manifests checked themselves), so "
            f"it cannot be verified: {ALLOW_FLAG} (its files are still checked against it)"
        )
    body = {k: v for k, v in manifest.items() if k != SELF}
    if manifest[SELF] != digest(_canonical(body)) or data != _canonical(manifest):
        raise Damaged(folder, {MANIFEST: "does not match its own checksum: it was changed or damaged"})
    return manifest


def _well_formed(manifest: dict) -> bool:
    files, pending = manifest.get("files"), manifest.get("pending")
    if not isinstance(files, dict) or not isinstance(pending, dict):
        return False
    return all(isinstance(e, dict) and isinstance(e.get("sha256"), str) for e in files.values()) and all(
        isinstance(d, str) for d in pending.values()
    )


def problems(folder: Path, manifest: dict) -> dict[str, str]:
    """Each file ``manifest`` lists that is missing or differs from its checksum (name -> what is wrong).

    A file whose new checksum is still *pending* may hold the new or the old bytes (its writer was stopped
    around the rename), and may be missing if it was never written before.
    """
    found = {}
    for name in sorted(set(manifest["files"]) | set(manifest["pending"])):
        listed = manifest["files"].get(name, {}).get("sha256")
        pending = manifest["pending"].get(name)
        file = Path(folder) / name
        if not file.is_file():
            if listed is not None:
                found[name] = MISSING
            continue
        if digest(file.read_bytes()) not in (listed, pending):
            found[name] = CHANGED
    return found


def verify(folder: Path, allow_unchecked: bool = False, advice: str = "") -> list[str]:
    """Check ``folder``'s manifest and every file it lists; returns their names. Raises :class:`Damaged`
    naming every bad file (with ``advice``) or :class:`NoManifest`; without a manifest and with
    ``allow_unchecked``, returns ``[]``."""
    manifest = read(folder, allow_unchecked)
    if manifest is None:
        return []
    found = problems(folder, manifest)
    if found:
        raise Damaged(folder, found, advice)
    return sorted(set(manifest["files"]) | set(manifest["pending"]))


# --- a folder sealed at once -------------------------------------------------------------------------


def _is_own(rel: str) -> bool:
    """Files no manifest lists: the manifest itself, lock files (every writer rewrites them with its pid),
    temporary files of a writer."""
    name = rel.rsplit("/", 1)[-1]
    return rel == MANIFEST or name.endswith(".lock") or is_temp_file(name)


def folder_files(folder: Path) -> list[str]:
    """Every file under ``folder`` (relative, ``/``-separated; links not followed) a manifest lists."""
    found = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d))]
        for name in names:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, folder).replace(os.sep, "/")
            if not os.path.islink(path) and not _is_own(rel):
                found.append(rel)
    return sorted(found)


def seal(folder: Path, last: dict[str, bytes] | None = None) -> None:
    """Write ``folder``'s manifest listing every file in it and the files ``last`` (name -> bytes), then
    write those: ``last`` holds what says the folder is complete (a reproduction's ``results.json``), so a
    process stopped in between leaves a manifest whose ``last`` file is missing, never an unsealed
    ``results.json``."""
    folder, last = Path(folder), dict(last or {})
    files = {}
    for rel in folder_files(folder):
        if rel not in last:
            data = (folder / rel).read_bytes()
            files[rel] = {"sha256": digest(data), "bytes": len(data)}
    for rel, data in last.items():
        files[rel] = {"sha256": digest(data), "bytes": len(data)}
    write(folder, {"files": files, "pending": {}})
    for rel, data in last.items():
        atomic_write_bytes(folder / rel, data)


def discard(folder: Path, names: tuple[str, ...] = (MANIFEST,)) -> None:
    """Delete ``names`` in ``folder`` (those that exist): what marks it complete, before it is rewritten."""
    for name in names:
        try:
            os.unlink(Path(folder) / name)
        except FileNotFoundError:
            pass
