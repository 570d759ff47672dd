"""Run directories: everything one experiment produced, in one folder that only mechmem writes.

``runs/<name>/`` holds ``config.json`` (model, task and training configs, CLI overrides),
``metrics.jsonl`` (one line per evaluation), ``model.safetensors`` (final weights),
``train_state.safetensors`` (the resumable checkpoint, see ``mechmem.core.checkpoint``),
``results.json``, ``figures/*.png`` and ``*.html``, plus three files of mechmem's own:

- ``.mechmem.json``, the marker: mechmem made this folder (``--overwrite`` deletes nothing else);
- ``.mechmem.lock``: one writer at a time (``mechmem.storage.locking``; a second one is refused, naming
  the first one's pid);
- ``manifest.json``: the sha256 of every file the run wrote, and of itself (``mechmem.storage.manifest``).
  Every reader (``--resume``, ``load_run``, ``mechmem inspect``, ``mechmem report``) checks the whole run
  against it first and refuses, naming each file that changed and what to do (``mechmem train --repair``
  rebuilds what the verified checkpoint holds); nothing is repaired silently. A run without a manifest
  is read only when the caller says so (``allow_no_manifest=True``, CLI ``--allow-no-manifest``).

Every file is written atomically, and the manifest in two steps (the new checksum is recorded
as *pending* before the file is renamed into place, and made final after), so a process killed
at any point leaves a folder that verifies. Weights are stored under TransformerLens names in
TransformerLens layout (``hooks.weights``), so a checkpoint loads into a ``HookedTransformer`` or
a ``TransformerBridge`` alike. Nothing is ever unpickled.

Names and folders (``check_run_name``, the marker and lock rules) live in ``mechmem.storage.folders``, whose
``prepare_output_dir`` gives any other command (e.g. ``mechmem reproduce``) the same guarantees for its output
folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shlex
import weakref
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hooks.weights import check_replacement, get_weight, set_weight_, weight_names
from mechmem.core import checkpoint
from mechmem.core.config import ModelConfig, TrainConfig
from mechmem.storage import manifest
from mechmem.storage.files import (
    atomic_write_bytes,
    read_jsonl,
    remove_stale_temp_files,
    safetensors_bytes,
)
from mechmem.storage.folders import (
    LOCK_FILE,
    MARKER,
    RUN_KIND,
    check_run_name,
    claim,
    incomplete_run_message,
    marker_kind,
)
from mechmem.storage.locking import acquire, release

__all__ = [
    "Run",
    "check_run_name",
    "load_run",
    "load_weights",
    "save_weights",
]

MANIFEST = manifest.MANIFEST
STATE_FILE = "train_state.safetensors"
#: the files ``mechmem train --repair`` rebuilds from a verified checkpoint (the others cannot be rebuilt)
REBUILDABLE = ("metrics.jsonl", "model.safetensors", "figures/training.png", "results.json")


# --- the run directory --------------------------------------------------------------------------


class Run:
    """A run directory. Create it with ``Run.create`` (refuses to clobber) or open it with ``Run(path)``.

    Opening only reads. Every method that writes first takes the folder's lock (``lock``), held
    until the object is closed or garbage-collected, or the process ends.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock_key: str | None = None
        self.written: list[str] = []  # the files this object wrote (what a command says it changed)
        if not (self.path / "config.json").is_file():
            if marker_kind(self.path) == RUN_KIND:
                raise FileNotFoundError(incomplete_run_message(self.path))
            raise FileNotFoundError(f"{self.path} is not a run directory (no config.json)")

    @classmethod
    def create(cls, path: str | Path, config: dict[str, Any], overwrite: bool = False) -> "Run":
        """Make a new run directory holding ``config.json``, locked for this process.

        An existing run is never touched unless ``overwrite=True`` (then it is emptied first); a
        folder that mechmem did not make is never touched at all.
        """
        if not isinstance(config, dict):
            raise TypeError(f"config must be a dict, got {type(config).__name__}")
        path = Path(path)
        data = _json_bytes(config)
        key = claim(path, RUN_KIND, overwrite, reuse=False)
        run = cls.__new__(cls)
        run.path, run._lock_key, run.written = path, key, []
        weakref.finalize(run, release, key)
        (path / "figures").mkdir(exist_ok=True)
        run._write(MARKER, (path / MARKER).read_bytes())  # the manifest covers the marker too
        run._write("config.json", data)
        return run

    def lock(self) -> "Run":
        """Become this folder's only writer (idempotent); stale temporary files are removed."""
        if self._lock_key is None:
            key = acquire(self.path / LOCK_FILE, f"run {self.path}")
            self._lock_key = key
            weakref.finalize(self, release, key)
            remove_stale_temp_files(self.path)
        return self

    # --- config and metrics --------------------------------------------------------------

    @property
    def config(self) -> dict[str, Any]:
        return _parse_json(self.path / "config.json", (self.path / "config.json").read_bytes())

    def record_training(self, task, train_cfg: TrainConfig, model_cfg: ModelConfig | None = None) -> None:
        """Record in ``config.json`` what ``mechmem inspect`` and ``--resume`` need to rebuild the run: the
        task (``{"name": ..., **fields}``), the training config and, when known, the model config, each
        section only where it is missing (as ``mechmem train`` writes them). A recorded task that differs
        from ``task`` is refused before anything is written."""
        config = self.config
        entry = json.loads(_json_bytes({"name": task.name, **task.to_dict()}))
        recorded = config.get("task")
        if recorded is not None and recorded != entry:
            raise ValueError(
                f"run {self.path} records task {recorded.get('name')!r} with other fields than the task being "
                f"trained ({task.name!r}): train it on the task it was made for, or create a new run"
            )
        sections = {"task": entry, "train": train_cfg.to_dict()}
        if model_cfg is not None:
            sections["model"] = model_cfg.to_dict()
        missing = {name: value for name, value in sections.items() if name not in config}
        if missing:
            self._write("config.json", _json_bytes({**config, **missing}))

    def log(self, record: dict) -> None:
        """Append one record to ``metrics.jsonl``."""
        file = self.path / "metrics.jsonl"
        old = file.read_bytes() if file.exists() else b""
        self._write("metrics.jsonl", old + (json.dumps(_jsonable(record)) + "\n").encode())

    def metrics(self) -> list[dict]:
        file = self.path / "metrics.jsonl"
        return read_jsonl(file) if file.exists() else []

    def rewrite_metrics(self, records: list[dict]) -> None:
        """Replace ``metrics.jsonl`` by ``records`` (resuming drops what came after the checkpoint)."""
        self._write("metrics.jsonl", "".join(json.dumps(_jsonable(r)) + "\n" for r in records).encode())

    # --- outputs ------------------------------------------------------------------------

    def save_results(self, results: dict[str, Any]) -> Path:
        return self._write("results.json", _json_bytes(results))

    def save_figure(self, fig, name: str) -> Path:
        """Save a matplotlib figure as ``figures/<name>.png`` (atomically, at :data:`mechmem.pages.figures.DPI`,
        checksummed in the manifest) and close it."""
        import matplotlib.pyplot as plt

        from mechmem.pages.figures import png_bytes

        try:
            data = png_bytes(fig)
        finally:
            plt.close(fig)
        return self._write(f"figures/{Path(name).stem}.png", data)

    def save_html(self, name: str, html: Any) -> Path:
        """Save HTML (a string, or a CircuitsVis object: its self-contained ``local_src``)."""
        text = getattr(html, "local_src", html)
        return self._write(f"{Path(name).stem}.html", str(text).encode("utf-8"))

    # --- weights and checkpoints ------------------------------------------------------------

    def save_model(self, model: nn.Module, filename: str = "model.safetensors") -> Path:
        return self.save_weights(_weights(model), filename)

    def save_weights(self, weights: dict[str, torch.Tensor], filename: str = "model.safetensors") -> Path:
        """Save weights given by TransformerLens name (what :meth:`save_model` saves of a model)."""
        return self._write(filename, safetensors_bytes(weights))

    def has_train_state(self) -> bool:
        return (self.path / STATE_FILE).is_file()

    def save_train_state(self, model, optimizer, generator: torch.Generator, step: int, history: list[dict]) -> None:
        """The resumable checkpoint: weights, optimiser state, data-RNG state, step and metrics so far."""
        data = checkpoint.encode(_weights(model), optimizer.state_dict(), generator.get_state(), step, history)
        self._write(STATE_FILE, data)

    def load_train_state(self) -> checkpoint.TrainState | None:
        """The verified, decoded checkpoint; ``None`` if the run never wrote one (killed before its
        first checkpoint). A checkpoint that was written and is now missing or changed raises."""
        file = self.path / STATE_FILE
        if not file.exists() and STATE_FILE not in manifest.read(self.path)["files"]:
            return None  # the first checkpoint never landed (at most its checksum is pending)
        return checkpoint.decode(self.verified_bytes(STATE_FILE), file)

    # --- the manifest ---------------------------------------------------------------------

    def verified_bytes(self, name: str, allow_no_manifest: bool = False) -> bytes:
        """The bytes of the run's file ``name``, after checking the manifest and them against it (read unchecked
        when the run has no manifest and ``allow_no_manifest``)."""
        file = self.path / name
        entries = manifest.read(self.path, allow_unchecked=allow_no_manifest)
        if entries is None:
            if not file.is_file():
                raise FileNotFoundError(f"{file} does not exist")
            return file.read_bytes()
        listed = entries["files"].get(name, {}).get("sha256")
        pending = entries["pending"].get(name)
        if listed is None and not file.is_file():
            raise ValueError(
                f"{file} does not exist: the run has not written it yet (training did not finish, or stopped on "
                f"an error); continue it with `{self.command('--resume')}`"
            )
        if listed is None and pending is None:
            raise ValueError(f"{file} is not listed in {self.path / MANIFEST}: mechmem did not write it")
        data = file.read_bytes() if file.is_file() else None
        if data is None or manifest.digest(data) not in (listed, pending):
            found = {name: manifest.MISSING if data is None else manifest.CHANGED}
            raise manifest.Damaged(self.path, found, self.advice(found))
        return data

    def verify(self, allow_no_manifest: bool = False) -> list[str]:
        """Check ``manifest.json`` and every file it lists; returns their names. Every bad file is named in one
        :class:`mechmem.storage.manifest.Damaged` error, with what to do about them; a run without a manifest
        raises :class:`mechmem.storage.manifest.NoManifest` unless ``allow_no_manifest`` (then nothing is checked)."""
        found = self.problems(allow_no_manifest)
        if found:
            raise manifest.Damaged(self.path, found, self.advice(found))
        entries = manifest.read(self.path, allow_unchecked=allow_no_manifest)
        return [] if entries is None else sorted(set(entries["files"]) | set(entries["pending"]))

    def problems(self, allow_no_manifest: bool = False) -> dict[str, str]:
        """Each file of the run that does not match ``manifest.json`` (name -> what is wrong); a damaged manifest
        raises (with :meth:`advice`), a missing one too unless ``allow_no_manifest`` (then nothing is checked)."""
        try:
            entries = manifest.read(self.path, allow_unchecked=allow_no_manifest)
        except manifest.Damaged as err:
            raise manifest.Damaged(self.path, err.problems, self.advice(err.problems)) from None
        return {} if entries is None else manifest.problems(self.path, entries)

    def advice(self, problems: dict[str, str]) -> str:
        """What to do about the damaged files ``problems``: ``--repair`` when the checkpoint can rebuild every
        one of them, else what cannot be rebuilt (nothing is ever suggested that deletes the run)."""
        names = sorted(problems)
        if MANIFEST in problems:
            return (
                "mechmem cannot tell which of the run's files are intact, so it rebuilds none: restore the folder "
                "from a backup, or train a new run under another --name"
            )
        lost = [n for n in names if n not in REBUILDABLE]
        if lost:
            return (
                f"mechmem cannot rebuild {', '.join(lost)} (the checkpoint does not hold it): restore it from a "
                "backup, or train a new run under another --name"
            )
        return f"`{self.command('--repair')}` rebuilds {', '.join(names)} from the run's verified checkpoint"

    def command(self, flag: str) -> str:
        """The ``mechmem train`` command that continues (``--resume``) or repairs (``--repair``) this run."""
        try:
            task = json.loads((self.path / "config.json").read_bytes())["task"]["name"]
        except (OSError, ValueError, KeyError, TypeError):
            task = "<task>"
        return shlex.join(
            ["mechmem", "train", str(task), "--name", self.path.name, "--out", str(self.path.parent), flag]
        )

    def _write(self, name: str, data: bytes) -> Path:
        """Write the run's file ``name`` atomically, recording its checksum in two steps (a damaged manifest
        is never written over)."""
        self.lock()
        entries = manifest.read(self.path, allow_unchecked=True) or manifest.empty()
        digest = manifest.digest(data)
        entries["pending"][name] = digest
        manifest.write(self.path, entries)
        path = atomic_write_bytes(self.path / name, data)
        entries["files"][name] = {"sha256": digest, "bytes": len(data)}
        del entries["pending"][name]
        manifest.write(self.path, entries)
        if name not in self.written:
            self.written.append(name)
        return path


def _jsonable(obj: Any) -> Any:
    from mechmem.storage.files import to_jsonable

    return to_jsonable(obj)


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(_jsonable(obj), indent=2, allow_nan=True) + "\n").encode("utf-8")


def _parse_json(file: Path, data: bytes) -> dict:
    """A JSON object from ``file``'s bytes; ``ValueError`` naming the file otherwise."""
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{file} is not valid JSON ({err}); it was damaged or edited") from None
    if not isinstance(value, dict):
        raise ValueError(f"{file} must hold a JSON object, found a {type(value).__name__}")
    return value


# --- weights files -----------------------------------------------------------------------


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: get_weight(model, name) for name in weight_names(model)}


def save_weights(model: nn.Module, path: str | Path) -> Path:
    """Save every weight of ``model`` under its TransformerLens name (safetensors, atomic)."""
    return atomic_write_bytes(path, safetensors_bytes(_weights(model)))


def _decode_weights(data: bytes, path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        return load(data)
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"checkpoint {path} is corrupted or not a safetensors file: {err}") from None


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return _decode_weights(path.read_bytes(), path)


def load_weights_into(model: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Copy ``weights`` into ``model``; every name and shape is checked before anything is written."""
    names = weight_names(model)
    missing = sorted(set(names) - set(weights))
    unexpected = sorted(set(weights) - set(names))
    if missing or unexpected:
        raise ValueError(f"checkpoint does not match the model: missing {missing}, unexpected {unexpected}")
    dtype = next(model.parameters()).dtype
    converted = {name: weights[name].to(dtype) for name in names}
    for name in names:
        check_replacement(model, name, converted[name])
    for name in names:
        set_weight_(model, name, converted[name])


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a ``save_weights`` file into ``model`` (a clear error, and no change, if it does not fit)."""
    load_weights_into(model, _load_safetensors(Path(path)))
    return model


def load_run(
    path: str | Path,
    bridge: bool = False,
    filename: str = "model.safetensors",
    device: str | None = None,
    allow_no_manifest: bool = False,
):
    """Rebuild a saved run's model in one call: returns ``(model, config_dict)``.

    The whole run is checked against its ``manifest.json`` first (``Run.verify``: a damaged file or manifest
    is refused, naming it and what to do), and weights holding NaN or infinity are refused. A run without a
    manifest (saved before mechmem kept one, or its manifest deleted) is refused unless ``allow_no_manifest``
    (then it is read unchecked). When the run records a known task, the
    task's own ``build_model`` rebuilds the model (so a paper's permanent hooks come back too);
    ``bridge=True`` builds a ``TransformerBridge`` instead. ``device`` overrides the recorded one.
    """
    from mechmem.core.models import bridges_only

    run = Run(path)
    config_file, weights_file = run.path / "config.json", run.path / filename
    run.verify(allow_no_manifest)  # every file, the manifest too: a damaged run is refused whatever is read
    config = _parse_json(config_file, run.verified_bytes("config.json", allow_no_manifest))
    if not isinstance(config.get("model"), dict):
        raise ValueError(f"{config_file} has no 'model' section; cannot rebuild the model")
    weights = _decode_weights(run.verified_bytes(filename, allow_no_manifest), weights_file)
    bad = [n for n, w in weights.items() if w.is_floating_point() and not bool(torch.isfinite(w).all())]
    if bad:
        raise ValueError(f"{weights_file} holds NaN or infinite weights in {bad[:5]}; the run diverged")
    model_cfg = model_config_of(config, config_file, device)
    with bridges_only() if bridge else contextlib.nullcontext():
        model = task_of(config, config_file).build_model(model_cfg)
    load_weights_into(model, weights)
    model.eval()
    return model, config


def read_config(run: Run) -> dict:
    """The run's ``config.json``, verified against its manifest."""
    return _parse_json(run.path / "config.json", run.verified_bytes("config.json"))


def train_config_of(config: dict, file: Path) -> TrainConfig:
    """The ``TrainConfig`` recorded in a run's ``config.json`` (errors name ``file``)."""
    fields = dict(config.get("train") or {})
    if "betas" in fields and isinstance(fields["betas"], list):
        fields["betas"] = tuple(fields["betas"])
    try:
        return TrainConfig(**fields)
    except TypeError as err:
        raise ValueError(f"{file}: the 'train' section does not describe a TrainConfig ({err})") from None
    except ValueError as err:
        raise ValueError(f"{file}: train.{err}") from None


def model_config_of(config: dict, file: Path, device: str | None = None) -> ModelConfig:
    """The ``ModelConfig`` recorded in a run's ``config.json`` (errors name ``file``)."""
    fields = dict(config.get("model") or {})
    if device is not None:
        fields["device"] = device
    fields["freeze"] = tuple(fields.get("freeze", ()))
    try:
        return ModelConfig(**fields)
    except TypeError as err:
        raise ValueError(f"{file}: the 'model' section does not describe a ModelConfig ({err})") from None
    except ValueError as err:
        raise ValueError(f"{file}: model.{err}") from None


def task_of(config: dict, file: Path | None = None):
    """The task a run was trained on (the built-in ``Task`` base when it is not known here)."""
    from mechmem.contract.registry import TASKS, task_class
    from mechmem.tasks import Task

    fields = dict(config.get("task") or {})
    name = fields.pop("name", None)
    if name not in TASKS:
        return Task()
    cls = task_class(name)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    try:
        return cls(**{k: v for k, v in fields.items() if k in names})
    except (TypeError, ValueError) as err:
        raise ValueError(f"{file or 'config.json'}: the 'task' section is not a valid {name} task ({err})") from None
