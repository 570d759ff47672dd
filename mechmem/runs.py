"""Run directories: everything one experiment produced, in one folder.

``runs/<name>/`` holds ``config.json`` (model, task and training configs, CLI overrides),
``metrics.jsonl`` (one line per evaluation), ``model.safetensors`` (final weights),
``train_state.safetensors`` (the resumable checkpoint: weights, optimiser state, data-generator
state, step), ``results.json``, ``figures/*.png`` and ``*.html``.

Weights are stored under TransformerLens names in TransformerLens layout (``hooks.weights``),
so a checkpoint loads into a ``HookedTransformer`` or a ``TransformerBridge`` alike. Every file
is written atomically; nothing is ever unpickled.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn

from hooks.weights import check_replacement, get_weight, set_weight_, weight_names
from mechmem.config import ModelConfig
from mechmem.io import (
    append_jsonl,
    atomic_save_safetensors,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    read_jsonl,
)


class Run:
    """A run directory. Create it with ``Run.create`` (refuses to clobber) or open it with ``Run(path)``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not (self.path / "config.json").is_file():
            raise FileNotFoundError(f"{self.path} is not a run directory (no config.json)")

    @classmethod
    def create(cls, path: str | Path, config: dict[str, Any], overwrite: bool = False) -> "Run":
        """Make a new run directory holding ``config.json``.

        An existing directory is never touched unless ``overwrite=True`` (then it is replaced).
        """
        path = Path(path)
        if path.exists():
            if overwrite and path.is_dir() and not (path / "config.json").is_file() and any(path.iterdir()):
                raise FileExistsError(
                    f"{path} exists and is not a run directory (no config.json); refusing to delete it"
                )
            if not overwrite:
                raise FileExistsError(
                    f"run directory {path} already exists; pass overwrite=True (CLI: --overwrite) "
                    "to replace it, or --resume to continue it"
                )
            shutil.rmtree(path)
        (path / "figures").mkdir(parents=True)
        atomic_write_json(path / "config.json", config)
        return cls(path)

    # --- config and metrics --------------------------------------------------------------

    @property
    def config(self) -> dict[str, Any]:
        return json.loads((self.path / "config.json").read_text())

    def log(self, record: dict) -> None:
        append_jsonl(self.path / "metrics.jsonl", record)

    def metrics(self) -> list[dict]:
        file = self.path / "metrics.jsonl"
        return read_jsonl(file) if file.exists() else []

    # --- outputs ------------------------------------------------------------------------

    def save_results(self, results: dict[str, Any]) -> Path:
        return atomic_write_json(self.path / "results.json", results)

    def save_figure(self, fig, name: str) -> Path:
        """Save a matplotlib figure as ``figures/<name>.png`` (atomically) and close it."""
        import io

        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
        import matplotlib.pyplot as plt

        plt.close(fig)
        return atomic_write_bytes(self.path / "figures" / f"{Path(name).stem}.png", buffer.getvalue())

    def save_html(self, name: str, html: Any) -> Path:
        """Save HTML (a string, or a CircuitsVis object: its self-contained ``local_src``)."""
        text = getattr(html, "local_src", html)
        return atomic_write_text(self.path / f"{Path(name).stem}.html", str(text))

    # --- weights ------------------------------------------------------------------------

    def save_model(self, model: nn.Module, filename: str = "model.safetensors") -> Path:
        return save_weights(model, self.path / filename)

    def has_train_state(self) -> bool:
        return (self.path / "train_state.safetensors").is_file()

    def save_train_state(self, model, optimizer, generator: torch.Generator, step: int, history: list[dict]) -> None:
        """The resumable checkpoint, in one atomically written safetensors file: weights, optimiser
        tensors and data-RNG state as tensors; step, optimiser scalars and metrics so far as JSON
        metadata."""
        tensors = {f"model.{k}": v for k, v in _weights(model).items()}
        tensors["rng.data"] = generator.get_state()
        opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
        tensors.update(opt_tensors)
        meta = {"step": step, "optimizer": opt_meta, "history": history}
        atomic_save_safetensors(self.path / "train_state.safetensors", tensors, metadata={"state": json.dumps(meta)})

    def load_train_state(self, model, generator: torch.Generator, make_optimizer: Callable[[int], Any]):
        """Restore the checkpoint into ``model`` and ``generator``; returns (step, optimizer, history).

        ``metrics.jsonl`` is rewritten to the checkpoint's history, dropping records logged after it.
        """
        file = self.path / "train_state.safetensors"
        tensors = _load_safetensors(file)
        with safe_open(str(file), framework="pt") as f:
            meta = json.loads(f.metadata()["state"])
        load_weights_into(model, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        generator.set_state(tensors["rng.data"])
        optimizer = make_optimizer(meta["step"])
        optimizer.load_state_dict(_unflatten_optimizer(tensors, meta["optimizer"]))
        history = meta["history"]
        atomic_write_text(self.path / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))
        return meta["step"], optimizer, history


# --- weights files -----------------------------------------------------------------------


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: get_weight(model, name) for name in weight_names(model)}


def save_weights(model: nn.Module, path: str | Path) -> Path:
    """Save every weight of ``model`` under its TransformerLens name (safetensors, atomic)."""
    return atomic_save_safetensors(path, _weights(model))


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"checkpoint {path} is corrupted or not a safetensors file: {err}") from None


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


def load_run(path: str | Path, bridge: bool = False, filename: str = "model.safetensors"):
    """Rebuild a saved run's model in one call: returns ``(model, config_dict)``.

    When the run records a known task, the task's own ``build_model`` rebuilds the model (so a
    paper's permanent hooks come back too); ``bridge=True`` builds a ``TransformerBridge`` instead.
    """
    from mechmem.models import bridges_only

    run = Run(path)
    config = run.config
    if "model" not in config:
        raise ValueError(f"{run.path / 'config.json'} has no 'model' section; cannot rebuild the model")
    model_cfg = ModelConfig(**{**config["model"], "freeze": tuple(config["model"].get("freeze", ()))})
    with bridges_only() if bridge else contextlib.nullcontext():
        model = _task_of(config).build_model(model_cfg)
    load_weights(model, run.path / filename)
    model.eval()
    return model, config


def _task_of(config: dict):
    """The task a run was trained on (the built-in ``Task`` base when it is not known here)."""
    from mechmem.registry import tasks
    from mechmem.tasks import Task

    fields = dict(config.get("task", {}))
    cls = tasks().get(fields.pop("name", None))
    if cls is None:
        return Task()
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    return cls(**{k: v for k, v in fields.items() if k in names})


# --- optimiser state without pickle ---------------------------------------------------------


def _flatten_optimizer(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for index, entries in state_dict["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"opt.{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("opt."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    for name, value in meta["scalars"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}
