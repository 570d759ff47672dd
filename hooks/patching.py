"""The batched activation-patching engine: the sweeps of ``transformer_lens.patching.get_act_patch_*``
with the same numbers, much faster.

For clean and corrupted tokens and a metric, :func:`patch_sweep` patches the clean activation into
the corrupted run at every index of a sweep and returns ``metric(patched logits)`` in a tensor of
the same shape as TransformerLens's (``[layer, pos]``, ``[layer, pos, head]``, ``[layer, head]``,
``[layer, head, dest_pos]``). How it saves time:

0. **No pass for a patch that changes nothing**: where the clean activation equals the corrupted
   one bit for bit (positions before the first corrupted token, unchanged tokens at layer 0), the
   patched run is the corrupted run; its metric is returned without a pass (``skip_unchanged``).
1. **Many patched variants in one forward pass**: ``K`` variants are stacked along the batch
   dimension (``[K * batch, pos]``), each with its own patch, in chunks whose estimated activation
   memory stays under ``memory_budget_gb``. The metric is applied to each variant's slice (in one
   ``torch.func.vmap`` call per pass when that gives the same numbers as calling it per variant).
2. **Start at the patched layer**: the engine runs the model's own blocks
   from the corrupted run's cached ``resid_pre`` of the patched layer; layers before the patch
   cannot change. Patches of different layers with the same start position share a pass: each
   joins the batch at its own layer, so the later blocks run on one large batch.
3. **Skip positions before the patch** (causal attention): a patch at position ``p`` cannot
   change anything at positions ``< p``, so only positions ``>= p`` are recomputed, attending to
   the corrupted run's cached keys and values (TransformerLens's ``past_kv_cache`` on a
   ``HookedTransformer``, :func:`hooks.bridge.past_keys_values` on a bridge); the logits at
   ``< p`` are the corrupted run's.
4. **Recompute only the patched position in the patched layer** when the patch is local to it
   (``z``, ``q``, a pattern row, ``attn_out``, ``mlp_out``, ``resid_mid``, ``resid_post`` at one
   position): the patched layer's output changes only at ``p``; later positions of that layer come
   from the corrupted cache, and the later layers recompute positions ``>= p``.
5. **Logits only where the metric reads them** (optional ``logit_positions=``): the metric then
   receives ``logits[:, logit_positions]`` instead of all positions, and the unembedding (the
   largest matrix of a language model) runs only at those positions. Either way the logits are
   written once, without the copy of ``W_U.T`` that TransformerLens 3.x's ``Unembed`` makes per call.

On small models a forward pass costs more in Python overhead than in arithmetic, so patches with
nearby start positions share a pass (a small dynamic programme over start positions trades
recomputed positions against per-pass overhead, :attr:`PatchingEngine.PASS_OVERHEAD_FLOPS`).

2-4 run the model's own block modules from the cached residual stream, on a ``HookedTransformer``
and on a bridge with live attention hooks (:mod:`hooks.bridge`), on TransformerLens 3.9 and 4.x
alike (the bridge's own ``start_at_layer`` would still run the earlier blocks). Passes are sized
by ``memory_budget_gb`` less the memory the cached runs hold. Elsewhere (a bridge without live
attention, rotary or shortformer positions, logit soft-capping, a model with hooks already
attached, which could depend on positions) the engine runs full forward passes (still batched).
Every patched hook is checked first to feed the output (:func:`hooks.names.check_hooks_editable`).
Everything runs under ``torch.no_grad()`` in eval mode, and the model comes back with its hooks,
mode and flags as before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from hooks.ablation import metric_value
from hooks.bridge import has_live_attention, past_keys_values
from hooks.checks import check_layers, check_positive_finite, check_tokens
from hooks.names import active_hook_names, check_hooks_editable, check_positions
from hooks.state import count_hooks, preserved_state
from hooks.weights import is_bridge

# sweep -> (activation, index axes): the partials of transformer_lens.patching
SWEEPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "resid_pre": ("resid_pre", ("layer", "pos")),
    "resid_mid": ("resid_mid", ("layer", "pos")),
    "resid_post": ("resid_post", ("layer", "pos")),
    "attn_out": ("attn_out", ("layer", "pos")),
    "mlp_out": ("mlp_out", ("layer", "pos")),
    "attn_head_out_by_pos": ("z", ("layer", "pos", "head")),
    "attn_head_q_by_pos": ("q", ("layer", "pos", "head")),
    "attn_head_k_by_pos": ("k", ("layer", "pos", "head")),
    "attn_head_v_by_pos": ("v", ("layer", "pos", "head")),
    "attn_head_pattern_by_pos": ("pattern", ("layer", "head", "dest")),
    "attn_head_out_all_pos": ("z", ("layer", "head")),
    "attn_head_q_all_pos": ("q", ("layer", "head")),
    "attn_head_k_all_pos": ("k", ("layer", "head")),
    "attn_head_v_all_pos": ("v", ("layer", "head")),
    "attn_head_pattern_all_pos": ("pattern", ("layer", "head")),
}

_SUFFIX = {
    "resid_pre": "hook_resid_pre",
    "resid_mid": "hook_resid_mid",
    "resid_post": "hook_resid_post",
    "attn_out": "hook_attn_out",
    "mlp_out": "hook_mlp_out",
    "z": "attn.hook_z",
    "q": "attn.hook_q",
    "k": "attn.hook_k",
    "v": "attn.hook_v",
    "pattern": "attn.hook_pattern",
}

# a patch of these at position p changes the patched layer's output at p only (k / v / resid_pre
# change every later position of the patched layer through attention)
_LOCAL = frozenset({"z", "q", "pattern", "attn_out", "mlp_out", "resid_mid", "resid_post"})


@dataclass(frozen=True)
class Variant:
    """One patch: where the result goes (``index``) and what is patched."""

    index: tuple[int, ...]
    layer: int
    pos: int | None  # position (dest position for patterns); None = all positions
    head: int | None


@dataclass(frozen=True)
class Pass:
    """One batched forward pass from position ``start``: ``variants`` (sorted by layer) join the
    batch at their patched layer; ``ends[layer]`` is the last position the patched layer must
    recompute for them (the later layers recompute ``start..`` to the end)."""

    start: int
    ends: tuple[tuple[int, int], ...]  # (layer, end)
    variants: tuple[Variant, ...]


def _hook_name(act: str, layer: int) -> str:
    return f"blocks.{layer}.{_SUFFIX[act]}"


def _variants(model: nn.Module, sweep: str, layers: Sequence[int], seq_len: int) -> list[Variant]:
    _, axes = SWEEPS[sweep]
    H = model.cfg.n_heads
    out = []
    for li, layer in enumerate(layers):
        if axes == ("layer", "pos"):
            out += [Variant((li, p), layer, p, None) for p in range(seq_len)]
        elif axes == ("layer", "pos", "head"):
            out += [Variant((li, p, h), layer, p, h) for p in range(seq_len) for h in range(H)]
        elif axes == ("layer", "head", "dest"):
            out += [Variant((li, h, p), layer, p, h) for h in range(H) for p in range(seq_len)]
        else:
            out += [Variant((li, h), layer, None, h) for h in range(H)]
    return out


def _result_shape(model: nn.Module, sweep: str, n_layers: int, seq_len: int) -> tuple[int, ...]:
    sizes = {"layer": n_layers, "pos": seq_len, "dest": seq_len, "head": model.cfg.n_heads}
    return tuple(sizes[a] for a in SWEEPS[sweep][1])


def check_sweep(model: nn.Module, sweep: str, layers: Sequence[int] | None = None) -> list[int]:
    """The checked ``layers`` of ``sweep``; a ``ValueError`` for an unknown sweep, a layer out of
    range, or a hook point that the model does not fire or whose edits cannot reach the output."""
    if sweep not in SWEEPS:
        raise ValueError(f"unknown sweep {sweep!r}; allowed: {sorted(SWEEPS)}")
    layers = check_layers(model, layers)
    act = SWEEPS[sweep][0]
    active = active_hook_names(model)
    missing = [_hook_name(act, l) for l in layers if _hook_name(act, l) not in active]
    if missing:
        raise ValueError(f"sweep {sweep!r} needs hook points this model does not fire: {missing}")
    check_hooks_editable(model, [_hook_name(act, l) for l in layers])
    return layers


def check_logit_positions(positions, seq_len: int) -> list[int]:
    """``logit_positions`` as non-negative ints (``None``: every position)."""
    if positions is None:
        return list(range(seq_len))
    if isinstance(positions, int) or not len(positions):
        raise ValueError(f"logit_positions must be a non-empty sequence of ints or None, got {positions!r}")
    return check_positions(list(positions), seq_len, what="logit_positions entry")


def check_inputs(model: nn.Module, clean_tokens, corrupted_tokens, metric, memory_budget_gb) -> None:
    """The checks shared by exact and attribution patching, before any work."""
    _check_inputs(clean_tokens, corrupted_tokens)
    check_tokens(model, clean_tokens, "clean_tokens")
    check_tokens(model, corrupted_tokens, "corrupted_tokens")
    if not callable(metric):
        raise TypeError(f"metric must be callable (logits -> scalar), got {type(metric).__name__}")
    check_positive_finite(memory_budget_gb, "memory_budget_gb")


def _check_inputs(clean_tokens, corrupted_tokens) -> None:
    for label, t in (("clean_tokens", clean_tokens), ("corrupted_tokens", corrupted_tokens)):
        if not isinstance(t, Tensor) or t.dim() != 2 or t.dtype not in (torch.long, torch.int32, torch.int64):
            raise TypeError(f"{label} must be an integer tensor [batch, pos], got {getattr(t, 'shape', type(t))}")
    if clean_tokens.shape != corrupted_tokens.shape:
        raise ValueError(
            f"clean and corrupted tokens must have the same shape, got {tuple(clean_tokens.shape)} "
            f"and {tuple(corrupted_tokens.shape)}"
        )


def _metric_values(metric: Callable, logits: Tensor, per_example: bool, batch: int) -> Tensor:
    if not per_example:
        return torch.tensor(metric_value(metric, logits))
    value = metric(logits)
    if not isinstance(value, Tensor) or tuple(value.shape) != (batch,):
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"with per_example=True the metric must return a [batch]={batch} tensor, got {shape}")
    return value.detach().float().cpu()


def _setter(act_name: str, clean: Tensor, start: int, chunk: Sequence[Variant], batch: int, row0: int = 0) -> Callable:
    """A hook writing each variant's clean activation into its rows, in place (vectorised).

    In place like transformer_lens.patching's setters: on a bridge, ``hook_resid_mid`` is an alias
    of ``ln2.hook_in`` whose tensor *is* the residual stream, so only an in-place write reaches the
    residual. ``start`` is the first position the hooked activation holds (a KV-cached pass);
    ``row0`` the first row of ``chunk`` in the hooked batch."""
    K = len(chunk)
    rows = torch.arange(row0, row0 + K * batch, device=clean.device)
    ex = torch.arange(batch, device=clean.device).repeat(K)
    head = pos = None
    if chunk[0].head is not None:
        head = torch.tensor([v.head for v in chunk], device=clean.device).repeat_interleave(batch)
    if chunk[0].pos is not None:
        pos = torch.tensor([v.pos for v in chunk], device=clean.device).repeat_interleave(batch)
    is_pattern = act_name == "pattern"

    def hook(act: Tensor) -> Tensor:
        n = act.shape[1] if not is_pattern else act.shape[2]  # positions held (queries for patterns)
        if is_pattern:
            keys = act.shape[-1]
            if pos is None:
                act[rows, head] = clean[ex, head, start : start + n, :keys]
            else:
                act[rows, head, pos - start] = clean[ex, head, pos, :keys]
        elif head is None:
            act[rows, pos - start] = clean[ex, pos]
        elif pos is None:
            act[rows, :, head] = clean[ex, start : start + n, head]
        else:
            act[rows, pos - start, head] = clean[ex, pos, head]
        return act

    return hook


class PatchingEngine:
    """Runs patching sweeps for one (clean, corrupted, metric) triple, reusing the cached runs.

    ``logit_positions``: positions whose logits the metric reads (ints, negative from the end). The
    metric then receives ``logits[:, logit_positions]`` (``[batch, len(logit_positions), d_vocab]``)
    and the engine unembeds only there. Default ``None``: all positions, as TransformerLens.

    ``PASS_OVERHEAD_FLOPS``: the Python cost of one block call, in floating-point operations;
    patches whose start positions are close share a pass when that is cheaper overall.

    >>> engine = PatchingEngine(model, clean_tokens, corrupted_tokens, metric)
    >>> resid = engine.sweep("resid_pre")                # [n_layers, pos], as get_act_patch_resid_pre
    >>> heads = engine.sweep("attn_head_out_by_pos")     # [n_layers, pos, n_heads]
    """

    PASS_OVERHEAD_FLOPS = 1.5e7

    def __init__(
        self,
        model: nn.Module,
        clean_tokens: Int[Tensor, "batch pos"],
        corrupted_tokens: Int[Tensor, "batch pos"],
        metric: Callable,
        per_example: bool = False,
        memory_budget_gb: float = 2.0,
        start_at_layer: bool = True,
        skip_positions: bool = True,
        progress: bool = True,
        logit_positions: int | Sequence[int] | None = None,
        skip_unchanged: bool = True,
    ):
        check_inputs(model, clean_tokens, corrupted_tokens, metric, memory_budget_gb)
        self.model, self.metric, self.per_example = model, metric, per_example
        self.clean_tokens, self.corrupted_tokens = clean_tokens, corrupted_tokens
        self.batch, self.seq = corrupted_tokens.shape
        self.logit_positions = check_logit_positions(logit_positions, self.seq)
        self.budget = memory_budget_gb * 2**30
        self.progress, self.skip_unchanged = progress, skip_unchanged
        cfg = model.cfg
        self.bridge = is_bridge(model)
        self.can_start = (
            start_at_layer
            and (not self.bridge or has_live_attention(model))
            and getattr(cfg, "positional_embedding_type", "standard") == "standard"
            and not (getattr(cfg, "output_logits_soft_cap", None) or -1) > 0
            and count_hooks(model) == 0
        )
        self.can_skip = self.can_start and skip_positions and getattr(cfg, "attention_dir", "causal") == "causal"
        self._clean_cache: dict[str, Tensor] = {}
        self._corrupted: tuple[Tensor, dict[str, Tensor]] | None = None
        self._vmap_ok: bool | None = None
        self._bytes_per_token: tuple[int, int] | None = None
        # the last sweep: patches answered without a forward pass; passes; most patches in one pass
        self.n_unchanged = self.n_passes = self.max_pass_variants = 0

    # ------------------------------------------------------------------ caches

    def _capture(self, tokens: Tensor, names: list[str]) -> tuple[Tensor, dict[str, Tensor]]:
        """Logits and the activations at ``names`` of one plain forward pass."""
        if self.bridge or not self.can_start:  # TransformerLens's own cache (a bridge's hook layouts)
            logits, cache = self.model.run_with_cache(tokens, names_filter=names)
            return logits, {n: cache[n] for n in names}
        store: dict[str, Tensor] = {}
        handles = []
        try:
            for n in names:
                handles.append(
                    self.model.hook_dict[n].register_forward_hook(
                        lambda mod, inp, out, n=n: store.__setitem__(n, out.detach())
                    )
                )
            logits = self.model(tokens)
        finally:
            for h in handles:
                h.remove()
        return logits, store

    def _caches(self, names: list[str]):
        """Clean activations for ``names``; corrupted logits, resid_pre / k / v of every layer (the
        fast path) and the corrupted activations at ``names`` (to find patches that change nothing)."""
        L = self.model.cfg.n_layers
        need = [n for n in names if n not in self._clean_cache]
        if need:
            spare = self._spare_names(need) if not self._clean_cache else []
            self._clean_cache.update(self._capture(self.clean_tokens, need + spare)[1])
        if self._corrupted is None:
            corr = []
            if self.can_start:
                corr = [f"blocks.{l}.hook_resid_pre" for l in range(L)] + [f"blocks.{L - 1}.hook_resid_post"]
            if self.can_skip:
                corr += [f"blocks.{l}.attn.hook_{x}" for l in range(L) for x in ("k", "v")]
            if self.skip_unchanged:
                corr += [n for n in names + self._spare_names(names) if n not in corr]
            logits, cache = self._capture(self.corrupted_tokens, corr)
            logits = logits[:, self.logit_positions]
            _metric_values(self.metric, logits, self.per_example, self.batch)  # check it early
            self._corrupted = (logits, cache)
        elif self.skip_unchanged and any(n not in self._corrupted[1] for n in names):
            missing = [n for n in names if n not in self._corrupted[1]]
            self._corrupted[1].update(self._capture(self.corrupted_tokens, missing)[1])
        return self._clean_cache, self._corrupted

    def _spare_names(self, need: list[str]) -> list[str]:
        """Every other patchable activation of a run, when all of them together take under 5% of
        the memory budget: a later sweep then needs no capture forward pass of its own."""
        cfg = self.model.cfg
        H, d_head, P = cfg.n_heads, cfg.d_head, self.seq
        size = 4 * cfg.n_layers * self.batch * P * (5 * cfg.d_model + 4 * H * d_head + H * P)
        if size > 0.05 * self.budget:
            return []
        active = active_hook_names(self.model)
        names = [_hook_name(a, l) for l in range(cfg.n_layers) for a in _SUFFIX]
        return [n for n in names if n in active and n not in need]

    def corrupted_metric(self) -> Tensor:
        """``metric`` of the corrupted run (``[batch]`` with ``per_example``): what a patch that
        changes nothing returns."""
        with preserved_state(self.model) as state, torch.no_grad():
            if any(was_training for _, was_training in state.training.values()):
                self.model.eval()
            _, (logits, _) = self._caches([])
        return _metric_values(self.metric, logits, self.per_example, self.batch)

    def _unchanged(self, act: str, variants: Sequence[Variant]) -> list[bool]:
        """For each variant, whether its clean activation equals the corrupted one exactly (every
        example): the patched run is then the corrupted run, bit for bit."""
        if not self.skip_unchanged:
            return [False] * len(variants)
        _, (_, corr) = self._caches([])
        same: dict[int, Tensor] = {}
        for layer in sorted({v.layer for v in variants}):
            name = _hook_name(act, layer)
            eq = (self._clean_cache[name] == corr[name]).all(0)  # [pos, d] / [pos, head, d] / [head, q, k]
            same[layer] = eq.all(-1)  # [pos] / [pos, head] / [head, q]
        out = []
        for v in variants:
            eq = same[v.layer]
            if act == "pattern":  # [head, dest]
                eq = eq[v.head] if v.pos is None else eq[v.head, v.pos]
            elif v.head is None:  # [pos]
                eq = eq[v.pos]
            else:  # [pos, head]
                eq = eq[:, v.head] if v.pos is None else eq[v.pos, v.head]
            out.append(bool(eq.all()))
        return out

    # ------------------------------------------------------------------ planning

    def _d_vocab_out(self) -> int:
        cfg = self.model.cfg
        return cfg.d_vocab_out if getattr(cfg, "d_vocab_out", -1) > 0 else cfg.d_vocab

    def _cache_bytes(self) -> int:
        """Memory held by the cached runs (clean and corrupted activations, corrupted logits)."""
        tensors = list(self._clean_cache.values())
        if self._corrupted is not None:
            tensors += [self._corrupted[0], *self._corrupted[1].values()]
        return sum(t.numel() * t.element_size() for t in tensors)

    def _chunk_size(self, n_pos: int, n_logits: int) -> int:
        """How many variants fit the memory budget, less the cached runs, in a pass over ``n_pos``
        positions (float32 activations of one block at a time, plus the logits)."""
        if self._bytes_per_token is None:
            cfg = self.model.cfg
            d_mlp = getattr(cfg, "d_mlp", None) or 0
            self._bytes_per_token = (
                4 * (3 * d_mlp + 12 * cfg.d_model + 4 * cfg.n_heads * self.seq),
                4 * 3 * self._d_vocab_out(),
            )
        per_token, per_logit = self._bytes_per_token
        # the pass returns logits at every logit position (the corrupted run's below the start)
        per_variant = self.batch * (n_pos * per_token + max(n_logits, len(self.logit_positions)) * per_logit)
        return max(1, int((self.budget - self._cache_bytes()) // per_variant))

    def _layer_flops(self) -> float:
        """Floating-point operations of one block at one token (attention over the full length)."""
        cfg = self.model.cfg
        d_mlp = 0 if cfg.attn_only else (getattr(cfg, "d_mlp", None) or 0)
        return 2.0 * (
            4 * cfg.d_model * cfg.n_heads * cfg.d_head
            + 2 * cfg.d_model * d_mlp
            + 2 * cfg.n_heads * cfg.d_head * self.seq
        )

    def _span(self, act: str, v: Variant) -> tuple[int, int]:
        """(first, last) position of the patched layer that a patch changes."""
        if not self.can_skip or v.pos is None:
            return 0, self.seq - 1
        return v.pos, (v.pos if act in _LOCAL else self.seq - 1)

    def _n_logits(self, start: int) -> int:
        """How many logit positions a pass from ``start`` recomputes (the others are the corrupted run's)."""
        return self._logits_from[start]

    def _pass_cost(self, start: int, group: dict[int, list[int]], flops: tuple[float, float], chunk: int) -> float:
        """Estimated cost (floating-point operations plus per-call overhead) of passes from
        ``start`` over ``group`` (layer -> [last recomputed position of that layer, variants]), at
        most ``chunk`` variants a pass."""
        L, P = self.model.cfg.n_layers, self.seq
        per_variant_logits = self._n_logits(start) * flops[1]
        work, calls, n = 0.0, L - min(group) + 1, 0
        for layer, (end, k) in group.items():
            tokens = end - start + 1 + (L - layer - 1) * (P - start)
            work += k * (tokens * flops[0] + per_variant_logits)
            calls += end < P - 1
            n += k
        return self.batch * work + -(-n // chunk) * calls * self.PASS_OVERHEAD_FLOPS

    def _plan(self, act: str, variants: list[Variant]) -> list[Pass]:
        """Passes covering ``variants``, each fitting the memory budget, of least estimated cost.

        Patches with the same start position share a pass, whatever their layer: each joins the
        batch at its patched layer, so the later blocks run on large batches. Consecutive start
        positions are merged into one pass (from the smallest) when the saved per-pass overhead
        outweighs the recomputed positions (a dynamic programme over the sorted start positions)."""
        by_start: dict[int, list[Variant]] = {}
        ends: dict[tuple[int, int], int] = {}
        counts: dict[int, dict[int, int]] = {}  # start -> layer -> variants
        for v in variants:
            start, end = self._span(act, v)
            by_start.setdefault(start, []).append(v)
            ends[start, v.layer] = max(end, ends.get((start, v.layer), end))
            layers = counts.setdefault(start, {})
            layers[v.layer] = layers.get(v.layer, 0) + 1
        self._logits_from = [sum(1 for q in self.logit_positions if q >= x) for x in range(self.seq + 1)]
        flops = (self._layer_flops(), 2.0 * self.model.cfg.d_model * self._d_vocab_out())
        starts = sorted(by_start)
        chunk = {s0: self._chunk_size(self.seq - s0, self._n_logits(s0)) for s0 in starts}
        best = [0.0] + [float("inf")] * len(starts)  # best[j]: cost of starts[:j]
        cut = [0] * (len(starts) + 1)
        for j in range(1, len(starts) + 1):
            group: dict[int, list[int]] = {}  # layer -> [end, count]
            for i in range(j, 0, -1):  # one pass for starts[i-1 : j]
                s0 = starts[i - 1]
                for layer, k in counts[s0].items():
                    entry = group.setdefault(layer, [ends[s0, layer], 0])
                    entry[0], entry[1] = max(entry[0], ends[s0, layer]), entry[1] + k
                cost = best[i - 1] + self._pass_cost(s0, group, flops, chunk[s0])
                if cost < best[j]:
                    best[j], cut[j] = cost, i - 1
        j, groups = len(starts), []
        while j > 0:
            groups.append(starts[cut[j] : j])
            j = cut[j]
        passes = []
        for group in reversed(groups):
            start = group[0]
            vs = sorted((v for s0 in group for v in by_start[s0]), key=lambda v: v.layer)
            layer_end = {}
            for s0 in group:
                for v in by_start[s0]:
                    layer_end[v.layer] = max(layer_end.get(v.layer, -1), ends[s0, v.layer])
            k = self._chunk_size(self.seq - start, self._n_logits(start))
            for i in range(0, len(vs), k):
                chunk = tuple(vs[i : i + k])
                passes.append(Pass(start, tuple((l, layer_end[l]) for l in sorted({v.layer for v in chunk})), chunk))
        return passes

    # ------------------------------------------------------------------ running

    def _run_pass(self, act: str, p: Pass) -> Tensor:
        """Patched logits ``[K * batch, len(logit_positions), d_vocab]`` of one pass, rows in the
        order of ``p.variants``."""
        names = [_hook_name(act, layer) for layer, _ in p.ends]
        clean_cache, (corr_logits, corr) = self._caches(names)
        if not self.can_start:
            return self._full_forward(act, p, clean_cache)[:, self.logit_positions]
        return self._partial_forward(act, p, corr_logits, corr, clean_cache)

    def _full_forward(self, act: str, p: Pass, clean_cache: dict[str, Tensor]) -> Tensor:
        """Full forward passes of the stacked corrupted tokens, one hook per patched layer (the
        variants are sorted by layer, so each layer's rows are contiguous)."""
        fwd_hooks, row0 = [], 0
        for layer, _ in p.ends:
            joining = [v for v in p.variants if v.layer == layer]
            name = _hook_name(act, layer)
            setter = _setter(act, clean_cache[name], 0, joining, self.batch, row0)
            fwd_hooks.append((name, lambda a, hook=None, setter=setter: setter(a)))
            row0 += len(joining) * self.batch
        return self.model.run_with_hooks(self.corrupted_tokens.repeat(len(p.variants), 1), fwd_hooks=fwd_hooks)

    def _block(self, layer: int, resid: Tensor, start: int, corr: dict[str, Tensor], hook=None) -> Tensor:
        """The model's own block ``layer`` on positions ``start..`` of ``resid`` (corrupted keys and
        values below ``start``), with ``hook`` (if any) on the patched hook point."""
        if self.bridge:
            return self._bridge_block(layer, resid, start, corr, hook)
        kv = self._kv_entry(layer, start, resid.shape[0] // self.batch, corr)
        if hook is None:
            return self.model.blocks[layer](resid, past_kv_cache_entry=kv)
        name, fn = hook
        handle = self.model.hook_dict[name].register_forward_hook(lambda mod, inp, out: fn(out))
        try:
            return self.model.blocks[layer](resid, past_kv_cache_entry=kv)
        finally:
            handle.remove()

    def _bridge_block(self, layer: int, resid: Tensor, start: int, corr: dict[str, Tensor], hook=None) -> Tensor:
        """:meth:`_block` on a bridge: its ``BlockBridge`` module (hooks fire in their usual layouts);
        positions below ``start`` come from the corrupted run's keys and values."""
        block, handles = self.model.blocks[layer], []
        if hook is not None:
            name, fn = hook
            hp = self.model.hook_dict[name]
            before = list(hp.fwd_hooks)
            hp.add_hook(lambda act, hook=None: fn(act))
            handles = [h for h in hp.fwd_hooks if h not in before]
        try:
            if start == 0:
                out = block(resid)
            else:
                K = resid.shape[0] // self.batch
                keys = corr[f"blocks.{layer}.attn.hook_k"][:, :start].repeat(K, 1, 1, 1)
                values = corr[f"blocks.{layer}.attn.hook_v"][:, :start].repeat(K, 1, 1, 1)
                with past_keys_values(self.model, layer, keys, values):
                    out = block(resid)
        finally:
            for h in handles:
                h.hook.remove()
            if handles:
                hp.fwd_hooks = [h for h in hp.fwd_hooks if h not in handles]
        return out[0] if isinstance(out, tuple) else out

    def _partial_forward(
        self, act: str, p: Pass, corr_logits: Tensor, corr: dict[str, Tensor], clean_cache: dict[str, Tensor]
    ) -> Tensor:
        """Run the model's own blocks on positions ``p.start..`` (KV-cached below), each variant
        joining the batch at its patched layer, then the final norm and unembedding at the logit
        positions the pass can change."""
        P, L, B, s = self.seq, self.model.cfg.n_layers, self.batch, p.start
        ends = dict(p.ends)
        resid: Tensor | None = None  # rows of the variants in flight, positions s..P-1
        for layer in range(min(ends), L):
            joining = [v for v in p.variants if v.layer == layer]
            if not joining:
                resid = self._block(layer, resid, s, corr)
                continue
            name, end, K = _hook_name(act, layer), ends[layer], len(joining)
            fresh = corr[f"blocks.{layer}.hook_resid_pre"][:, s : end + 1].repeat(K, 1, 1)
            if end == P - 1:  # the patch changes every later position: join before the block
                row0 = 0 if resid is None else resid.shape[0]
                resid = fresh if resid is None else torch.cat([resid, fresh])
                hook = _setter(act, clean_cache[name], s, joining, B, row0)
                resid = self._block(layer, resid, s, corr, (name, hook))
                continue
            # local patch: the patched layer changes positions s..end only; the rest is corrupted
            out = self._block(layer, fresh, s, corr, (name, _setter(act, clean_cache[name], s, joining, B)))
            after = corr[f"blocks.{layer + 1}.hook_resid_pre" if layer < L - 1 else f"blocks.{L - 1}.hook_resid_post"]
            out = torch.cat([out, after[:, end + 1 :].repeat(K, 1, 1)], dim=1)
            if resid is not None:
                resid = self._block(layer, resid, s, corr)
            resid = out if resid is None else torch.cat([resid, out])
        return self._logits(resid, s, corr_logits, len(p.variants))

    def _logits(self, resid: Tensor, s: int, corr_logits: Tensor, K: int) -> Tensor:
        """Logits ``[K * batch, len(logit_positions), d_vocab_out]`` of ``K`` variants whose residual
        stream ``resid`` holds positions ``s..``: the corrupted run's below ``s``, the final norm and
        unembedding at the others. Built position-major (``[pos, rows, vocab]``, returned as a
        transposed view), so that the unembedding writes its rows in place, once."""
        lp, B = self.logit_positions, self.batch
        where = [i for i, q in enumerate(lp) if q >= s]
        k = len(lp) - len(where)
        if where != list(range(k, len(lp))):  # unsorted logit_positions: assemble by index
            logits = corr_logits.repeat(K, 1, 1)
            logits[:, where] = self._unembed(self._final_norm(resid[:, torch.tensor([lp[i] - s for i in where])]))
            return logits
        out = torch.empty(len(lp), K * B, corr_logits.shape[-1], dtype=corr_logits.dtype)
        if k:  # positions below s: the corrupted logits, for every variant
            out[:k].view(k, K, B, -1).copy_(corr_logits[:, :k].transpose(0, 1).unsqueeze(1))
        if where:
            x = self._final_norm(resid[:, torch.tensor([lp[i] - s for i in where])])
            self._unembed(x.transpose(0, 1), out=out[k:])
        return out.transpose(0, 1)

    def _final_norm(self, x: Tensor) -> Tensor:
        return x if self.model.cfg.normalization_type is None else self.model.ln_final(x)

    def _unembed(self, x: Float[Tensor, "a b d_model"], out: Tensor | None = None) -> Float[Tensor, "a b d_vocab_out"]:
        """The model's unembedding (into ``out`` when given). On a ``HookedTransformer`` the same
        product as its ``Unembed`` without the copy of ``W_U.T`` that it makes on every call (seconds
        per sweep on a GPT-2-sized vocabulary); the fast path runs only on a model without hooks, so
        no hook is skipped."""
        if self.bridge:
            logits = self.model.unembed(x)
            return logits if out is None else out.copy_(logits)
        unembed = self.model.unembed
        rows = x.reshape(-1, x.shape[-1])
        if out is None:
            return torch.addmm(unembed.b_U, rows, unembed.W_U).reshape(*x.shape[:-1], -1)
        torch.addmm(unembed.b_U, rows, unembed.W_U, out=out.view(rows.shape[0], -1))
        return out

    def _kv_entry(self, layer: int, start: int, K: int, corr: dict[str, Tensor]):
        if start == 0:
            return None
        from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry as Entry

        keys = corr[f"blocks.{layer}.attn.hook_k"][:, :start].repeat(K, 1, 1, 1)
        values = corr[f"blocks.{layer}.attn.hook_v"][:, :start].repeat(K, 1, 1, 1)
        return Entry(past_keys=keys, past_values=values, frozen=True)

    def _metric_per_variant(self, logits: Tensor, K: int) -> Tensor:
        """``metric`` of each variant's ``[batch, ...]`` slice: one ``vmap`` call when that works and
        agrees with calling the metric per variant (checked on the first pass), else a loop."""
        B = self.batch
        want = (K, B) if self.per_example else (K,)
        if self._vmap_ok is not False and K > 1:
            try:
                out = torch.func.vmap(self.metric)(logits.reshape(K, B, *logits.shape[1:]))
                ok = isinstance(out, Tensor) and out.numel() == K * (B if self.per_example else 1)
            except Exception:  # vmap cannot batch this metric (.item(), Python control flow, ...)
                out, ok = None, False
            if ok and self._vmap_ok:
                return out.reshape(want).detach().float().cpu()
            if not ok:
                self._vmap_ok = False
            else:
                loop = self._metric_loop(logits, K)
                self._vmap_ok = bool(
                    torch.allclose(out.reshape(want).detach().float().cpu(), loop, rtol=1e-6, atol=1e-6)
                )
                return loop
        return self._metric_loop(logits, K)

    def _metric_loop(self, logits: Tensor, K: int) -> Tensor:
        B = self.batch
        return torch.stack(
            [_metric_values(self.metric, logits[k * B : (k + 1) * B], self.per_example, B) for k in range(K)]
        )

    def sweep(self, sweep: str, layers: Sequence[int] | None = None) -> Float[Tensor, "*sweep_shape"]:
        """Patch every index of ``sweep`` (a key of :data:`SWEEPS`); ``layers`` restricts the layers
        (the result's first axis then follows ``layers``). Returns a float tensor on the CPU."""
        layers = check_sweep(self.model, sweep, layers)
        variants = _variants(self.model, sweep, layers, self.seq)
        shape = _result_shape(self.model, sweep, len(layers), self.seq) + ((self.batch,) if self.per_example else ())
        result = torch.zeros(shape)
        values = self._run(sweep, variants, layers)
        result[tuple(torch.tensor([v.index for v in variants]).T)] = values
        return result

    def patch(
        self, sweep: str, indices: Int[Tensor, "k n_axes"], layers: Sequence[int] | None = None
    ) -> Float[Tensor, "k *batch"]:
        """Patch only the given ``indices`` of ``sweep`` (rows of indices into its result, e.g.
        ``[layer, pos]``; the layer axis follows ``layers``): ``[k]`` values (``[k, batch]`` with
        ``per_example``), the numbers :meth:`sweep` gives there."""
        layers = check_sweep(self.model, sweep, layers)
        shape = _result_shape(self.model, sweep, len(layers), self.seq)
        if not isinstance(indices, Tensor) or indices.dim() != 2 or indices.shape[1] != len(shape):
            raise ValueError(f"indices must be a [k, {len(shape)}] integer tensor for sweep {sweep!r}")
        if ((indices < 0) | (indices >= torch.tensor(shape))).any():
            raise ValueError(f"indices out of range for sweep {sweep!r} of shape {shape}")
        by_index = {v.index: v for v in _variants(self.model, sweep, layers, self.seq)}
        unique, inverse = torch.unique(indices, dim=0, return_inverse=True)
        return self._run(sweep, [by_index[tuple(i)] for i in unique.tolist()], layers)[inverse]

    def _run(self, sweep: str, variants: list[Variant], layers: list[int]) -> Tensor:
        """Values of ``variants`` in their order (``[n]`` or ``[n, batch]``); a patch whose clean
        activation equals the corrupted one gets the corrupted run's metric without a pass."""
        from tqdm.auto import tqdm

        model, act = self.model, SWEEPS[sweep][0]
        out = torch.zeros((len(variants), self.batch) if self.per_example else (len(variants),))
        with preserved_state(model) as state, torch.no_grad():
            if any(was_training for _, was_training in state.training.values()):
                model.eval()
            _, (corr_logits, _) = self._caches([_hook_name(act, l) for l in layers])
            unchanged = self._unchanged(act, variants)
            self.n_unchanged = sum(unchanged)
            if self.n_unchanged:
                out[torch.tensor(unchanged)] = _metric_values(self.metric, corr_logits, self.per_example, self.batch)
            todo = [i for i, same in enumerate(unchanged) if not same]
            row = {variants[i]: i for i in todo}
            passes = self._plan(act, [variants[i] for i in todo]) if todo else []
            self.n_passes, self.max_pass_variants = len(passes), max((len(p.variants) for p in passes), default=0)
            bar = tqdm(total=len(todo), desc=f"patching {sweep}", disable=not self.progress or len(passes) < 8)
            with bar:
                for p in passes:
                    values = self._metric_per_variant(self._run_pass(act, p), len(p.variants))
                    out[torch.tensor([row[v] for v in p.variants])] = values
                    bar.update(len(p.variants))
        return out


def patch_sweep(
    model: nn.Module,
    clean_tokens: Int[Tensor, "batch pos"],
    corrupted_tokens: Int[Tensor, "batch pos"],
    metric: Callable,
    sweep: str = "resid_pre",
    layers: Sequence[int] | None = None,
    **options,
) -> Float[Tensor, "*sweep_shape"]:
    """One patching sweep; same numbers as ``transformer_lens.patching.get_act_patch_<sweep>``
    (run on ``corrupted_tokens`` with the clean cache of ``clean_tokens``). ``options``:
    ``per_example``, ``memory_budget_gb``, ``start_at_layer``, ``skip_positions``, ``progress``,
    ``logit_positions`` (see :class:`PatchingEngine`)."""
    return PatchingEngine(model, clean_tokens, corrupted_tokens, metric, **options).sweep(sweep, layers)
