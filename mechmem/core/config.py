"""Typed configs for toy models and their training, and ``key=value`` overrides checked against them.

``ModelConfig`` is everything ``mechmem.core.models.build_model`` needs to build a toy
``HookedTransformer`` for one of the papers: sizes, structure, which weights are frozen, how
embeddings are initialised, a seed and a device. ``TrainConfig`` is everything
``mechmem.core.training.train`` needs. Both are validated on construction (every number is checked
for type, range, NaN and infinity), so a bad config fails with a ``ValueError`` or ``TypeError``
naming the field before any model is built or any file is written.

This module imports neither torch nor TransformerLens at import time (the CLI parses overrides
before it needs them).
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import dataclass, field
from typing import Any

from mechmem.core.threads import DEFAULT_THREADS, check_threads
from mechmem.core.typed import dataclass_from_dict, parse_text

ACTIVATIONS = ("relu", "gelu", "gelu_new", "silu")
NORMALIZATIONS = (None, "LN", "LNPre")
INITS = ("normal", "unit", "standard", "default")
DTYPES = ("float32", "float64")
OPTIMIZERS = ("sgd", "adam", "adamw")

#: Seeds are ints in [0, MAX_SEED]: ``torch.Generator.manual_seed`` takes 64-bit values, and
#: training also uses ``seed + 1``.
MAX_SEED = 2**63 - 2

#: Weight names that can be frozen; ``{l}`` is a layer index (or ``*`` for every layer).
GLOBAL_WEIGHTS = ("W_E", "W_pos", "W_U", "b_U")
LAYER_WEIGHTS = (
    "attn.W_Q",
    "attn.W_K",
    "attn.W_V",
    "attn.W_O",
    "attn.b_Q",
    "attn.b_K",
    "attn.b_V",
    "attn.b_O",
)
MLP_WEIGHTS = ("mlp.W_in", "mlp.W_out", "mlp.b_in", "mlp.b_out")


@dataclass
class ModelConfig:
    """A toy transformer, as the papers describe it.

    Sizes: ``n_layers``, ``n_heads``, ``d_model``, ``d_head`` (``None`` -> ``d_model // n_heads``),
    ``d_vocab`` (input tokens), ``d_vocab_out`` (output classes; ``None`` -> ``d_vocab``), ``n_ctx``.

    Structure: ``attn_only`` (no MLPs), ``d_mlp`` (``None`` -> ``4 * d_model``), ``act_fn``,
    ``normalization`` (``None``, ``"LN"`` or ``"LNPre"``), ``positional`` (``False``: ``W_pos`` is
    zero and frozen, since TransformerLens has no "no positions" option), ``use_bias`` (``False``:
    every attention, MLP and unembedding bias is zero and frozen, as in the papers; LayerNorm keeps its own).

    Frozen weights: ``freeze`` lists weight names kept at their initial value, e.g.
    ``("W_E", "W_U", "blocks.0.attn.W_V", "blocks.*.attn.W_O")``; ``identity_W_Q`` sets every
    layer's ``W_Q`` to the identity and freezes it (needs ``n_heads * d_head == d_model``).

    Initialisation: ``embed_init`` (``W_E``), ``unembed_init`` (columns of ``W_U``) and
    ``pos_init`` (``W_pos``) are one of ``"normal"`` (N(0, 1/d_model) entries), ``"unit"``
    (unit-norm vectors), ``"standard"`` (N(0, 1) entries) or ``"default"`` (TransformerLens's
    init). Other weights use TransformerLens's init. ``seed`` makes the build reproducible
    without touching the caller's global RNG.
    """

    n_layers: int = 1
    n_heads: int = 1
    d_model: int = 64
    d_vocab: int = 64
    n_ctx: int = 64
    d_head: int | None = None
    d_vocab_out: int | None = None
    attn_only: bool = True
    d_mlp: int | None = None
    act_fn: str = "relu"
    normalization: str | None = None
    positional: bool = True
    use_bias: bool = False
    freeze: tuple[str, ...] = ()
    identity_W_Q: bool = False
    embed_init: str = "normal"
    unembed_init: str = "normal"
    pos_init: str = "normal"
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        self.freeze = tuple(self.freeze)
        for name in ("n_layers", "n_heads", "d_model", "d_vocab", "n_ctx"):
            _check_positive(name, getattr(self, name))
        for name in ("d_head", "d_vocab_out", "d_mlp"):
            if getattr(self, name) is not None:
                _check_positive(name, getattr(self, name))
        if self.d_head is None and self.d_model % self.n_heads:
            raise ValueError(
                f"d_model={self.d_model} is not divisible into n_heads={self.n_heads} heads; "
                "choose n_heads dividing d_model or set d_head explicitly"
            )
        _check_choice("act_fn", self.act_fn, ACTIVATIONS)
        _check_choice("normalization", self.normalization, NORMALIZATIONS)
        for name in ("embed_init", "unembed_init", "pos_init"):
            _check_choice(name, getattr(self, name), INITS)
        _check_choice("dtype", self.dtype, DTYPES)
        check_seed("seed", self.seed)
        check_device("device", self.device)
        for name in ("attn_only", "positional", "use_bias", "identity_W_Q"):
            _check_bool(name, getattr(self, name))
        if self.identity_W_Q and self.n_heads * self.head_dim != self.d_model:
            raise ValueError(
                "identity_W_Q needs n_heads * d_head == d_model, got "
                f"{self.n_heads} * {self.head_dim} != {self.d_model}"
            )
        for name in self.freeze:
            self.expand_weight_name(name)

    @property
    def head_dim(self) -> int:
        """``d_head``, or ``d_model // n_heads`` when ``d_head`` is ``None``."""
        return self.d_head if self.d_head is not None else self.d_model // self.n_heads

    @property
    def d_out(self) -> int:
        """The number of output classes (``d_vocab_out`` or ``d_vocab``)."""
        return self.d_vocab_out if self.d_vocab_out is not None else self.d_vocab

    @property
    def has_mlp(self) -> bool:
        return not self.attn_only

    def weight_names(self) -> list[str]:
        """Every weight name this config's model has (the names ``freeze`` accepts)."""
        names = list(GLOBAL_WEIGHTS)
        per_layer = LAYER_WEIGHTS + (MLP_WEIGHTS if self.has_mlp else ())
        if self.normalization == "LN":  # LNPre has no weights
            per_layer += ("ln1.w", "ln1.b") + (("ln2.w", "ln2.b") if self.has_mlp else ())
        for layer in range(self.n_layers):
            names += [f"blocks.{layer}.{w}" for w in per_layer]
        if self.normalization == "LN":
            names += ["ln_final.w", "ln_final.b"]
        return names

    def expand_weight_name(self, name: str) -> list[str]:
        """``"blocks.*.attn.W_V"`` -> one name per layer; unknown names raise ``ValueError``."""
        valid = self.weight_names()
        if "*" in name:
            pattern = re.compile("^" + re.escape(name).replace(r"\*", r"\d+") + "$")
            matches = [n for n in valid if pattern.match(n)]
        else:
            matches = [name] if name in valid else []
        if not matches:
            raise ValueError(
                f"freeze: {name!r} is not a weight of this model; valid names are {valid} "
                "(use blocks.*.<weight> for every layer)"
            )
        return matches

    def frozen_weights(self) -> list[str]:
        """The expanded list of frozen weight names (including identity W_Q and disabled parts)."""
        names = [n for pattern in self.freeze for n in self.expand_weight_name(pattern)]
        if self.identity_W_Q:
            names += [f"blocks.{layer}.attn.W_Q" for layer in range(self.n_layers)]
        if not self.positional:
            names.append("W_pos")
        if not self.use_bias:
            names += [n for n in self.weight_names() if n.split(".")[-1].startswith("b_")]
        return list(dict.fromkeys(names))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """The config ``to_dict`` saved (also through JSON); unknown fields raise a ``ValueError``."""
        return dataclass_from_dict(cls, data)


@dataclass
class TrainConfig:
    """How to train. ``freeze_until`` maps weight names to the step at which they start training
    (before it they are left out of the optimiser, so they stay exactly at their init).

    ``threads``: torch intra-op threads while training (restored afterwards); ``None`` leaves
    torch's setting alone. The result is bit-identical at any thread count (see ``mechmem.core.threads``).
    """

    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    eval_every: int = 100
    eval_batch_size: int = 512
    seed: int = 0
    progress: bool = True
    freeze_until: dict[str, int] = field(default_factory=dict)
    threads: int | None = DEFAULT_THREADS

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_every", "eval_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_number("lr", self.lr, low=0.0, low_open=True, what="a positive number")
        _check_number("momentum", self.momentum, low=0.0, high=1.0, what="a number >= 0 and < 1")
        _check_number("weight_decay", self.weight_decay, low=0.0, what="a finite number >= 0")
        _check_number("eps", self.eps, low=0.0, what="a finite number >= 0")
        if not isinstance(self.betas, (tuple, list)) or len(self.betas) != 2:
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        for index, beta in enumerate(self.betas):
            _check_number(f"betas[{index}]", beta, low=0.0, high=1.0, what="a number in [0, 1) (betas: two numbers)")
        self.betas = tuple(float(b) for b in self.betas)
        check_seed("seed", self.seed)
        _check_bool("progress", self.progress)
        check_threads(self.threads)
        if not isinstance(self.freeze_until, dict):
            kind = type(self.freeze_until).__name__
            raise TypeError(f"freeze_until must be a dict {{weight name: step}}, got {kind}")
        self.freeze_until = dict(self.freeze_until)
        for name, step in self.freeze_until.items():
            if not isinstance(step, int) or isinstance(step, bool) or step < 0:
                raise ValueError(f"freeze_until[{name!r}] must be a step >= 0, got {step!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """The config ``to_dict`` saved (also through JSON); unknown fields raise a ``ValueError``."""
        return dataclass_from_dict(cls, data)


# --- checks shared by the configs ------------------------------------------------------------


def _check_positive(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value}")


def _check_choice(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; allowed values: {list(allowed)}")


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")


def _check_number(
    name: str, value: Any, low: float, high: float = math.inf, low_open: bool = False, what: str = ""
) -> None:
    """A finite real number in ``[low, high)`` (``(low, high)`` with ``low_open``)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{name} must be {what}, got {value!r}")
    too_low = value <= low if low_open else value < low
    if not math.isfinite(value) or too_low or value >= high:
        raise ValueError(f"{name} must be {what}, got {value!r}")


def check_seed(name: str, value: Any) -> int:
    """A seed: an int in [0, MAX_SEED] (``TypeError`` / ``ValueError`` naming ``name`` otherwise)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if not 0 <= value <= MAX_SEED:
        raise ValueError(f"{name} must be an int in [0, 2**63 - 2], got {value}")
    return value


def check_device(name: str, device: Any) -> str:
    """A device this machine has: ``cpu``, or ``cuda`` / ``cuda:<i>`` / ``mps`` where available."""
    if not isinstance(device, str):
        raise TypeError(f"{name} must be a device name (str), got {device!r}")
    if device == "cpu":
        return device
    import torch

    allowed = ["cpu"]
    if torch.cuda.is_available():
        allowed += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        allowed.append("mps")
    if device not in allowed:
        reason = " ('meta' tensors hold no data)" if device == "meta" else ""
        raise ValueError(f"{name}={device!r} is not available on this machine{reason}; allowed values: {allowed}")
    return device


# --- typed key=value overrides -------------------------------------------------------------


def apply_overrides(obj: Any, assignments: dict[str, str], section: str = "") -> Any:
    """Return a copy of dataclass ``obj`` with ``{field: text}`` assignments parsed to field types.

    An unknown field raises ``ValueError`` listing the valid ones; the new object is validated
    by its own ``__post_init__``.
    """
    hints = typing.get_type_hints(type(obj))
    fields = {f.name for f in dataclasses.fields(obj) if f.init}
    changes = {}
    for key, text in assignments.items():
        if key not in fields:
            where = f"{section}." if section else ""
            raise ValueError(
                f"unknown config key {where + key!r}; valid keys: " + ", ".join(f"{where}{f}" for f in sorted(fields))
            )
        full_key = f"{section}.{key}" if section else key
        changes[key] = parse_text(text, hints[key], full_key)
        if key.endswith("seed") and isinstance(changes[key], int):
            check_seed(full_key, changes[key])  # every task's seeds, before a generator sees them
    return dataclasses.replace(obj, **changes)


def split_overrides(pairs: list[str], sections: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Sort ``["model.d_model=32", "lr=0.1", ...]`` into ``{section: {field: text}}``.

    A key without a section prefix goes to the one section that has such a field; an unknown or
    ambiguous key raises ``ValueError`` listing the valid keys.
    """
    out: dict[str, dict[str, str]] = {name: {} for name in sections}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {pair!r}")
        section, dot, field_name = key.partition(".")
        if dot and section in sections:
            out[section][field_name] = text
            continue
        owners = [s for s, obj in sections.items() if key in {f.name for f in dataclasses.fields(obj) if f.init}]
        if len(owners) > 1:
            candidates = ", ".join(f"{s}.{key}" for s in owners)
            raise ValueError(f"--set {key!r} is ambiguous; say which one: {candidates}")
        if not owners:
            valid = [f"{s}.{f.name}" for s, obj in sections.items() for f in dataclasses.fields(obj) if f.init]
            raise ValueError(f"--set {key!r} is not a config key; valid keys: {', '.join(valid)}")
        out[owners[0]][key] = text
    return out
