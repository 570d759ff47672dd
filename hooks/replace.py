"""Temporarily replace weights (whole matrices, single heads, a head's whole OV circuit) and read
a head's OV / QK circuit as a ``FactoredMatrix``.

``model.W_V`` and ``model.OV`` are stacked *copies* on both model kinds; every write here goes to
the real parameter through :mod:`hooks.weights`, and every replaced parameter is restored bit
for bit on exit (also when the body raises).

Entries of :func:`replace_weights`:

- ``"blocks.0.attn.W_V": tensor`` — any weight by TransformerLens name, in TransformerLens layout
  (``W_E``, ``W_pos``, ``W_U``, ``blocks.{l}.mlp.W_in``, ...; see :func:`hooks.weights.weight_names`);
- ``("blocks.0.attn.W_V", head): tensor`` or ``Head("blocks.0.attn.W_V", head): tensor`` — one head
  of ``W_Q``/``W_K``/``W_V``/``W_O``/``b_Q``/``b_K``/``b_V`` (``W_V[head]`` is ``[d_model, d_head]``);
- ``OV(layer, head): M`` with ``M`` ``[d_model, d_model]`` — the head's whole OV circuit, so that the
  head writes ``pattern @ (x @ M)`` (row-vector convention, as TransformerLens: ``x @ W_V @ W_O``)
  plus its unchanged value-bias term ``b_V[head] @ W_O[head]``. Applied exactly whatever the rank:

  * ``method="weights"`` (the default when ``d_head >= d_model``): ``W_V[head] = [M, 0]`` and
    ``W_O[head] = [I; 0]`` (and ``b_V[head]`` set so the bias term is unchanged). Only weights change,
    so the head's ``hook_z`` / ``hook_v`` see the new values.
  * ``method="hook"`` (the default when ``d_head < d_model``): ``W_O[head]`` is zeroed and a
    permanent hook on ``blocks.{l}.hook_attn_out`` adds ``pattern[:, head] @ (x @ M) + b_V @ W_O``
    using the head's attention pattern and value input *from the same forward pass*. Exact for any
    rank; the head's own ``hook_z`` no longer carries its output (patch ``hook_attn_out`` instead).
  * ``method="factor"``: only when ``rank(M) <= d_head``: ``W_V[head] W_O[head] = M`` from an SVD
    (exact up to float32 rounding of the factorisation); the head's value-bias term moves to ``b_O``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformer_lens import FactoredMatrix

from hooks.bridge import has_live_attention, pattern_feeds_output
from hooks.checks import check_weight_name
from hooks.compat import attention_scale
from hooks.names import check_head, check_hooks_editable, check_layer
from hooks.state import add_tracked_hook, remove_tracked_hooks
from hooks.weights import check_replacement, get_weight, is_bridge, set_weight_, slot

_HEAD_WEIGHTS = ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V")
_OV_METHODS = ("auto", "weights", "hook", "factor")


@dataclass(frozen=True)
class Head:
    """One head of an attention weight: ``Head("blocks.0.attn.W_V", 2)`` is ``W_V[2]`` of layer 0."""

    name: str
    head: int


@dataclass(frozen=True)
class OV:
    """A head's whole OV circuit, ``[d_model, d_model]``; see the module docstring for ``method``."""

    layer: int
    head: int
    method: str = "auto"


def ov_circuit(model: nn.Module, layer: int, head: int) -> FactoredMatrix:
    """The OV circuit ``W_V[head] @ W_O[head]`` of one head, ``[d_model, d_model]`` (a copy)."""
    check_layer(model, layer)
    check_head(model, head)
    W_V = get_weight(model, f"blocks.{layer}.attn.W_V")
    W_O = get_weight(model, f"blocks.{layer}.attn.W_O")
    return FactoredMatrix(W_V[_kv_head(model, head)], W_O[head])


def qk_circuit(model: nn.Module, layer: int, head: int) -> FactoredMatrix:
    """The QK circuit ``W_Q[head] @ W_K[head]^T`` of one head, ``[d_model, d_model]`` (a copy):
    the attention score of query ``x_q`` on key ``x_k`` is ``x_q @ QK @ x_k^T / attn_scale`` (no biases)."""
    check_layer(model, layer)
    check_head(model, head)
    W_Q = get_weight(model, f"blocks.{layer}.attn.W_Q")
    W_K = get_weight(model, f"blocks.{layer}.attn.W_K")
    return FactoredMatrix(W_Q[head], W_K[_kv_head(model, head)].T)


def _kv_head(model: nn.Module, head: int) -> int:
    """The key/value head serving query head ``head`` (grouped-query attention)."""
    n_kv = getattr(model.cfg, "n_key_value_heads", None) or model.cfg.n_heads
    return head // (model.cfg.n_heads // n_kv)


# ----------------------------------------------------------------------------- validation


@dataclass
class _Plan:
    """Validated entries: whole-weight writes and OV hooks, nothing applied yet."""

    writes: list[tuple[str, Tensor]]  # (weight name, full new value in TL layout), in order
    ov_hooks: list[tuple[int, int, Tensor, Tensor]]  # (layer, head, M, value-bias term)


def _check_value(name: str, value, shape, like: Tensor) -> None:
    if not isinstance(value, Tensor):
        raise TypeError(f"replacement for {name} must be a torch.Tensor, got {type(value).__name__}")
    if tuple(value.shape) != tuple(shape):
        raise ValueError(f"replacement for {name} has shape {tuple(value.shape)}, expected {tuple(shape)}")
    if value.dtype != like.dtype:
        raise TypeError(f"replacement for {name} has dtype {value.dtype}, expected {like.dtype}")
    if value.device != like.device:
        raise ValueError(f"replacement for {name} is on {value.device}, the model's weight is on {like.device}")


def _normalise_key(key) -> str | Head | OV:
    if isinstance(key, (str, Head, OV)):
        return key
    if isinstance(key, tuple) and len(key) == 2 and isinstance(key[0], str):
        return Head(*key)
    raise TypeError(
        "replace_weights keys must be a weight name (str), (name, head), Head(name, head) or OV(layer, head); "
        f"got {key!r}"
    )


def _plan(model: nn.Module, replacements: Mapping) -> _Plan:
    if not isinstance(replacements, Mapping):
        raise TypeError(f"replacements must be a mapping {{name: tensor}}, got {type(replacements).__name__}")
    plan = _Plan(writes=[], ov_hooks=[])
    current: dict[str, Tensor] = {}

    def full(name: str) -> Tensor:
        if name not in current:
            current[name] = get_weight(model, name)
        return current[name]

    for raw_key, value in replacements.items():
        key = _normalise_key(raw_key)
        if isinstance(key, (str, Head)):
            check_weight_name(model, key if isinstance(key, str) else key.name)
        if isinstance(key, str):
            check_replacement(model, key, value)
            current[key] = value.detach().clone()
            plan.writes.append((key, current[key]))
        elif isinstance(key, Head):
            _plan_head(model, key, value, full, plan)
        else:
            _plan_ov(model, key, value, full, plan)
    return plan


def _plan_head(model, key: Head, value, full, plan: _Plan) -> None:
    short = key.name.rsplit(".", 1)[-1]
    if short not in _HEAD_WEIGHTS or not key.name.startswith("blocks."):
        raise ValueError(
            f"head-level entries need an attention weight blocks.{{l}}.attn.{{{'|'.join(_HEAD_WEIGHTS)}}}, "
            f"got {key.name!r}"
        )
    slot(model, key.name)  # unknown name -> error listing the closest
    weight = full(key.name)
    if not isinstance(key.head, int) or not 0 <= key.head < weight.shape[0]:
        raise ValueError(f"head must be an int in [0, {weight.shape[0] - 1}] for {key.name}, got {key.head!r}")
    _check_value(f"{key.name}[{key.head}]", value, weight.shape[1:], weight)
    weight[key.head] = value.detach()
    plan.writes.append((key.name, weight))


def _plan_ov(model, key: OV, value, full, plan: _Plan) -> None:
    check_layer(model, key.layer)
    check_head(model, key.head)
    if key.method not in _OV_METHODS:
        raise ValueError(f"OV method must be one of {_OV_METHODS}, got {key.method!r}")
    cfg = model.cfg
    prefix = f"blocks.{key.layer}.attn"
    W_O = full(f"{prefix}.W_O")
    _check_value(f"OV({key.layer}, {key.head})", value, (cfg.d_model, cfg.d_model), W_O)
    if getattr(cfg, "n_key_value_heads", None) not in (None, cfg.n_heads):
        raise ValueError("OV replacement is not supported with grouped-query attention (shared value heads)")
    method = key.method
    if method == "auto":
        method = "weights" if cfg.d_head >= cfg.d_model else "hook"
    if method == "weights" and cfg.d_head < cfg.d_model:
        raise ValueError(
            f"OV method 'weights' needs d_head >= d_model ({cfg.d_head} < {cfg.d_model}); use 'hook' or 'factor'"
        )
    h, M = key.head, value.detach()
    W_V = full(f"{prefix}.W_V")
    b_V = full(f"{prefix}.b_V") if _has(model, f"{prefix}.b_V") else None
    if method == "hook":
        check_hooks_editable(model, f"blocks.{key.layer}.hook_attn_out")
        bias_term = b_V[h] @ W_O[h] if b_V is not None else torch.zeros_like(M[0])
        W_O[h] = 0.0
        plan.writes.append((f"{prefix}.W_O", W_O))
        plan.ov_hooks.append((key.layer, h, M, bias_term))
        return
    if method == "weights":
        A = torch.zeros_like(W_V[h])
        A[:, : cfg.d_model] = M
        B = torch.zeros_like(W_O[h])
        B[: cfg.d_model] = torch.eye(cfg.d_model, dtype=M.dtype, device=M.device)
    else:
        A, B = _factorise(M, cfg.d_head)
    if b_V is not None:
        new_b = torch.zeros_like(b_V[h])
        bias_term = b_V[h] @ W_O[h]
        if method == "weights":
            new_b[: cfg.d_model] = bias_term
        elif _has(model, f"{prefix}.b_O"):  # the value-bias term is constant over positions: move it to b_O
            b_O = full(f"{prefix}.b_O")
            b_O += bias_term
            plan.writes.append((f"{prefix}.b_O", b_O))
        else:
            raise ValueError("OV method 'factor' with a value bias needs an output bias b_O; use 'hook'")
        b_V[h] = new_b
        plan.writes.append((f"{prefix}.b_V", b_V))
    W_V[h], W_O[h] = A, B
    plan.writes += [(f"{prefix}.W_V", W_V), (f"{prefix}.W_O", W_O)]


def _factorise(M: Tensor, d_head: int) -> tuple[Tensor, Tensor]:
    """``A @ B == M`` with ``A`` ``[d_model, d_head]``, ``B`` ``[d_head, d_model]``; rank must fit."""
    U, S, Vh = torch.linalg.svd(M.double())
    tol = S.max().clamp_min(1e-30) * max(M.shape) * torch.finfo(M.dtype).eps
    rank = int((S > tol).sum())
    if rank > d_head:
        raise ValueError(f"OV method 'factor' needs rank(M) <= d_head, got rank {rank} > d_head {d_head}; use 'hook'")
    k = min(d_head, S.numel())
    root = S[:k].sqrt()
    A = torch.zeros(M.shape[0], d_head, dtype=torch.float64, device=M.device)
    B = torch.zeros(d_head, M.shape[1], dtype=torch.float64, device=M.device)
    A[:, :k] = U[:, :k] * root
    B[:k] = root[:, None] * Vh[:k]
    return A.to(M.dtype), B.to(M.dtype)


def _has(model, name: str) -> bool:
    try:
        slot(model, name)
        return True
    except KeyError:
        return False


# ----------------------------------------------------------------------------- OV hook


def _install_ov_hook(model: nn.Module, layer: int, head: int, M: Tensor, bias_term: Tensor) -> list:
    """Hooks that add ``pattern[:, head] @ (x @ M) + bias_term`` to ``blocks.{layer}.hook_attn_out``."""
    seen: dict[str, Tensor] = {}
    handles: list = []

    def keep(key):
        def hook(tensor, hook=None):
            seen[key] = tensor[:, :, head] if tensor.dim() == 4 else tensor  # per-head tensors: this head

        return hook

    def add_head(attn_out, hook):
        x = seen.pop("x")
        pattern = seen.pop("pattern") if "pattern" in seen else _pattern_from_qk(model, seen.pop("q"), seen.pop("k"))
        return attn_out + pattern @ (x @ M) + bias_term

    prefix = f"blocks.{layer}.attn"
    if pattern_feeds_output(model):
        if is_bridge(model) and not has_live_attention(model):  # a HuggingFace module's attention
            check_hooks_editable(model, f"{prefix}.hook_pattern")
        handles += add_tracked_hook(
            model, f"{prefix}.hook_pattern", lambda t, hook: seen.__setitem__("pattern", t[:, head])
        )
    else:
        # a raw boot_native bridge fires hook_pattern only after hook_attn_out: recompute it from q and k
        if getattr(model.cfg, "positional_embedding_type", "standard") != "standard":
            raise ValueError(
                "OV method 'hook' on a TransformerBridge needs standard positional embeddings; use 'factor'"
            )
        handles += add_tracked_hook(model, f"{prefix}.q.hook_out", keep("q"))
        handles += add_tracked_hook(model, f"{prefix}.k.hook_out", keep("k"))
    if is_bridge(model):
        handles += add_tracked_hook(model, f"{prefix}.v.hook_in", keep("x"))
    else:
        ln1 = model.blocks[layer].ln1  # nn.Identity without normalisation: its output is the value input
        handle = ln1.register_forward_hook(lambda mod, inp, out: keep("x")(out))
        handles.append((None, handle))
    handles += add_tracked_hook(model, f"blocks.{layer}.hook_attn_out", add_head)
    return handles


def _pattern_from_qk(model: nn.Module, q: Tensor, k: Tensor) -> Tensor:
    """Causal softmax attention pattern ``[batch, q_pos, k_pos]`` of one head from its q and k."""
    cfg = model.cfg
    scores = q @ k.transpose(-1, -2) / attention_scale(model)
    if getattr(cfg, "attention_dir", "causal") == "causal":
        n_q, n_k = scores.shape[-2:]
        mask = torch.ones(n_q, n_k, dtype=torch.bool, device=scores.device).tril(n_k - n_q)
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(dim=-1)


def _remove(handles: list) -> None:
    remove_tracked_hooks([(hp, h) for hp, h in handles if hp is not None])
    for hp, h in handles:
        if hp is None:
            h.remove()


# ----------------------------------------------------------------------------- context manager


@contextmanager
def replace_weights(model: nn.Module, replacements: Mapping) -> Iterator[nn.Module]:
    """Temporarily set weights; on exit (normal or exception) restore them bit for bit.

    Every entry is validated (name, head, shape, dtype, device) before anything changes.
    Entries apply in order, so a later entry on the same weight wins. Yields the model.

    >>> with replace_weights(model, {("blocks.0.attn.W_V", 1): torch.zeros(d_model, d_head)}):
    ...     logits = model(tokens)
    """
    plan = _plan(model, replacements)
    names = list(dict.fromkeys(name for name, _ in plan.writes))
    saved = {name: slot(model, name).parameter.detach().clone() for name in names}
    handles: list = []
    try:
        for name, value in plan.writes:
            set_weight_(model, name, value)
        for layer, head, M, bias_term in plan.ov_hooks:
            handles += _install_ov_hook(model, layer, head, M, bias_term)
        yield model
    finally:
        _remove(handles)
        with torch.no_grad():
            for name, old in saved.items():
                slot(model, name).parameter.copy_(old)
