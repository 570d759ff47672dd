"""The resumable training checkpoint, ``train_state.safetensors``: encoded without pickle, and
checked piece by piece before anything is restored from it.

One safetensors file holds the weights (``model.<name>``), the optimiser's tensors
(``opt.<param index>.<key>``) and the data generator's state (``rng.data``); its JSON metadata
holds the step, the optimiser's scalars and parameter groups, the metrics so far, and the list of
tensors written (so a removed tensor is noticed). :func:`decode` refuses, naming the file, a file
that is not such a checkpoint; :func:`check_fits` refuses one that does not fit the model, the
optimiser or the training config (an impossible step, a missing or reshaped optimiser entry,
non-finite numbers).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mechmem.storage.files import safetensors_bytes

FORMAT = 1
#: The per-parameter state each optimiser keeps (SGD without momentum keeps none).
OPTIMIZER_KEYS = {
    "adam": {"step", "exp_avg", "exp_avg_sq"},
    "adamw": {"step", "exp_avg", "exp_avg_sq"},
    "sgd": {"momentum_buffer"},
}


@dataclass
class TrainState:
    """A decoded checkpoint: everything needed to continue training exactly."""

    step: int
    weights: dict[str, torch.Tensor]
    rng_state: torch.Tensor
    optimizer: dict  # a torch optimiser ``state_dict``
    history: list[dict]


def encode(
    weights: dict[str, torch.Tensor], optimizer_state: dict, rng_state: torch.Tensor, step: int, history: list[dict]
) -> bytes:
    """The bytes of a checkpoint file."""
    tensors = {f"model.{k}": v for k, v in weights.items()}
    tensors["rng.data"] = rng_state
    opt_tensors, opt_meta = _flatten_optimizer(optimizer_state)
    tensors.update(opt_tensors)
    meta = {"format": FORMAT, "step": step, "optimizer": opt_meta, "history": history, "tensors": sorted(tensors)}
    return safetensors_bytes(tensors, metadata={"state": json.dumps(meta)})


def decode(data: bytes, file: Path) -> TrainState:
    """Parse checkpoint bytes read from ``file``; a ``ValueError`` naming ``file`` if they are not one."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        tensors = load(data)
    except (SafetensorError, ValueError, OSError) as err:
        raise ValueError(f"checkpoint {file} is corrupted or not a safetensors file: {err}") from None
    meta = _metadata(data, file)
    missing = sorted(set(meta["tensors"]) - set(tensors))
    if missing:
        raise ValueError(f"checkpoint {file} is incomplete: tensors {missing[:5]} are missing")
    step = meta["step"]
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise ValueError(f"checkpoint {file} records an impossible step {step!r}")
    _check_finite(tensors, file)
    rng = tensors.get("rng.data")
    if rng is None or rng.dtype != torch.uint8 or rng.dim() != 1:
        raise ValueError(f"checkpoint {file} has no valid data-generator state (rng.data)")
    try:
        torch.Generator().set_state(rng)
    except RuntimeError as err:
        raise ValueError(f"checkpoint {file}: the data-generator state is invalid ({err})") from None
    weights = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    optimizer = _unflatten_optimizer(tensors, meta["optimizer"], file)
    history = meta["history"]
    if not isinstance(history, list) or not all(isinstance(r, dict) for r in history):
        raise ValueError(f"checkpoint {file}: its metrics history is not a list of records")
    return TrainState(step, weights, rng, optimizer, history)


def _metadata(data: bytes, file: Path) -> dict:
    """The checkpoint's JSON metadata (from the safetensors header: an 8-byte length, then JSON)."""
    header_len = int.from_bytes(data[:8], "little")
    try:
        header = json.loads(data[8 : 8 + header_len])
        meta = json.loads(header["__metadata__"]["state"])
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"checkpoint {file} has no training metadata (it is not a train_state file)") from None
    needed = {"step": int, "optimizer": dict, "history": list, "tensors": list}
    for key, kind in needed.items():
        if not isinstance(meta, dict) or not isinstance(meta.get(key), kind):
            raise ValueError(f"checkpoint {file}: metadata field {key!r} is missing or malformed")
    return meta


def _check_finite(tensors: dict[str, torch.Tensor], file: Path) -> None:
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(f"checkpoint {file} holds NaN or infinite values in {bad[:5]}; refusing to resume from it")


def check_fits(
    state: TrainState, optimizer: torch.optim.Optimizer, optimizer_name: str, steps: int, eval_every: int, file: Path
) -> None:
    """Refuse a checkpoint whose step or optimiser state cannot come from this training config
    (``optimizer`` is a fresh optimiser with the parameter groups of ``state.step``)."""
    step = state.step
    if step > steps or (step % eval_every and step != steps) or step == 0:
        raise ValueError(
            f"checkpoint {file} records step {step}, impossible for this run (steps={steps}, checkpoints every "
            f"{eval_every} steps)"
        )
    params = [p for group in optimizer.param_groups for p in group["params"]]
    saved_groups = state.optimizer["param_groups"]
    sizes = [len(g["params"]) for g in optimizer.param_groups]
    if [len(g.get("params", ())) for g in saved_groups] != sizes:
        raise ValueError(f"checkpoint {file}: its optimiser parameter groups do not fit the model at step {step}")
    wanted = OPTIMIZER_KEYS[optimizer_name]
    for index, entry in state.optimizer["state"].items():
        if not 0 <= index < len(params):
            raise ValueError(f"checkpoint {file}: optimiser entry for parameter {index}, the model has {len(params)}")
        tensors = {k for k, v in entry.items() if isinstance(v, torch.Tensor)}
        if tensors != wanted:
            raise ValueError(
                f"checkpoint {file}: optimiser entry {index} holds {sorted(tensors)}, expected {sorted(wanted)}"
            )
        for key in wanted - {"step"}:
            if tuple(entry[key].shape) != tuple(params[index].shape):
                raise ValueError(
                    f"checkpoint {file}: optimiser entry opt.{index}.{key} has shape {tuple(entry[key].shape)}, "
                    f"the parameter has {tuple(params[index].shape)}"
                )


def finite_weights(model: nn.Module) -> list[str]:
    """Names of the parameters of ``model`` holding NaN or infinite values."""
    return [n for n, p in model.named_parameters() if not bool(torch.isfinite(p.detach()).all())]


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


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict, file: Path) -> dict:
    state: dict[int, dict] = {}
    try:
        for name, value in tensors.items():
            if name.startswith("opt."):
                _, index, key = name.split(".", 2)
                state.setdefault(int(index), {})[key] = value
        for name, value in meta["scalars"].items():
            index, key = name.split(".", 1)
            state.setdefault(int(index), {})[key] = value
        groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in meta["param_groups"]]
    except (KeyError, ValueError, TypeError, AttributeError):
        raise ValueError(f"checkpoint {file}: the optimiser state is malformed") from None
    for group in groups:
        for key in ("lr", "eps", "weight_decay", "momentum"):
            value = group.get(key, 0.0)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"checkpoint {file}: optimiser setting {key}={value!r} is not a finite number")
    return {"state": state, "param_groups": groups}
