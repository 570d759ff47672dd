"""The batched activation-patching engine: the sweeps of ``transformer_lens.patching.get_act_patch_*``
with the same numbers, much faster.

For clean and corrupted tokens and a metric, :func:`patch_sweep` patches the clean activation into
the corrupted run at every index of a sweep and returns ``metric(patched logits)`` in a tensor of
the same shape as TransformerLens's (``[layer, pos]``, ``[layer, pos, head]``, ``[layer, head]``,
``[layer, head, dest_pos]``). How it saves time:

1. **Many patched variants in one forward pass**: ``K`` variants are stacked along the batch
   dimension (``[K * batch, pos]``), each with its own patch, in chunks whose estimated activation
   memory stays under ``memory_budget_gb``; the metric is then applied to each variant's slice.
2. **Start at the patched layer** (``HookedTransformer``: ``forward(start_at_layer=l)``) from the
   corrupted run's cached ``resid_pre`` — layers before the patch cannot change.
3. **Skip positions before the patch** (``HookedTransformer``, causal attention): a patch at
   position ``p`` cannot change anything at positions ``< p``, so only positions ``>= p`` are
   recomputed, attending to the corrupted run's cached keys and values (TransformerLens's
   ``past_kv_cache``); the logits at ``< p`` are the corrupted run's.

A ``TransformerBridge`` supports neither ``start_at_layer`` nor a KV cache in TransformerLens 3.9,
so there it runs full forward passes (still batched). Everything runs under ``torch.no_grad()``
in eval mode, and the model comes back with its hooks, mode and flags as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor, nn

from hooks.ablation import metric_value
from hooks.names import active_hook_names, check_layer
from hooks.state import preserved_state
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

_SUFFIX = {"resid_pre": "hook_resid_pre", "resid_mid": "hook_resid_mid", "resid_post": "hook_resid_post",
           "attn_out": "hook_attn_out", "mlp_out": "hook_mlp_out", "z": "attn.hook_z", "q": "attn.hook_q",
           "k": "attn.hook_k", "v": "attn.hook_v", "pattern": "attn.hook_pattern"}


@dataclass(frozen=True)
class Variant:
    """One patch: where the result goes (``index``) and what is patched."""

    index: tuple[int, ...]
    layer: int
    pos: Optional[int]  # position (dest position for patterns); None = all positions
    head: Optional[int]


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


class PatchingEngine:
    """Runs patching sweeps for one (clean, corrupted, metric) triple, reusing the cached runs.

    ``MIN_FLOPS``: forward passes with less work than this are merged (per-pass overhead dominates).

    >>> engine = PatchingEngine(model, clean_tokens, corrupted_tokens, metric)
    >>> resid = engine.sweep("resid_pre")                # [n_layers, pos], as get_act_patch_resid_pre
    >>> heads = engine.sweep("attn_head_out_by_pos")     # [n_layers, pos, n_heads]
    """

    MIN_FLOPS = 2e9

    def __init__(self, model: nn.Module, clean_tokens: Tensor, corrupted_tokens: Tensor, metric: Callable,
                 per_example: bool = False, memory_budget_gb: float = 2.0, start_at_layer: bool = True,
                 skip_positions: bool = True, progress: bool = True):
        _check_inputs(clean_tokens, corrupted_tokens)
        if not callable(metric):
            raise TypeError(f"metric must be callable (logits -> scalar), got {type(metric).__name__}")
        if not memory_budget_gb > 0:
            raise ValueError(f"memory_budget_gb must be > 0, got {memory_budget_gb!r}")
        self.model, self.metric, self.per_example = model, metric, per_example
        self.clean_tokens, self.corrupted_tokens = clean_tokens, corrupted_tokens
        self.budget = memory_budget_gb * 2**30
        self.progress = progress
        cfg = model.cfg
        self.can_start = start_at_layer and not is_bridge(model) and getattr(cfg, "positional_embedding_type", "standard") != "shortformer"
        self.can_skip = self.can_start and skip_positions and getattr(cfg, "attention_dir", "causal") == "causal"
        self._clean_cache = None
        self._corrupted = None

    # ------------------------------------------------------------------ caches

    def _caches(self, names: list[str]):
        """Clean activations for ``names``; corrupted resid_pre / k / v of every layer and logits."""
        model = self.model
        L = model.cfg.n_layers
        corr_names = [f"blocks.{l}.hook_resid_pre" for l in range(L)]
        if self.can_skip:
            corr_names += [f"blocks.{l}.attn.hook_{x}" for l in range(L) for x in ("k", "v")]
        need_clean = [n for n in names if self._clean_cache is None or n not in self._clean_cache]
        if need_clean:
            _, cache = model.run_with_cache(self.clean_tokens, names_filter=need_clean)
            self._clean_cache = {**(self._clean_cache or {}), **{n: cache[n] for n in need_clean}}
        if self._corrupted is None:
            logits, cache = model.run_with_cache(self.corrupted_tokens, names_filter=corr_names if self.can_start else [])
            self._corrupted = (logits, {n: cache[n] for n in (corr_names if self.can_start else [])})
            _metric_values(self.metric, logits, self.per_example, self.corrupted_tokens.shape[0])  # check it early
        return self._clean_cache, self._corrupted

    # ------------------------------------------------------------------ planning

    def _chunk_size(self, n_pos: int) -> int:
        cfg = self.model.cfg
        d_mlp = getattr(cfg, "d_mlp", None) or 0
        d_vocab_out = cfg.d_vocab_out if getattr(cfg, "d_vocab_out", -1) > 0 else cfg.d_vocab
        per_token = 4 * (3 * d_vocab_out + 3 * d_mlp + 12 * cfg.d_model + 4 * cfg.n_heads * self.corrupted_tokens.shape[1])
        per_variant = self.corrupted_tokens.shape[0] * n_pos * per_token
        return max(1, int(self.budget // per_variant))

    def _flops_per_token(self) -> float:
        cfg = self.model.cfg
        d_mlp = 0 if cfg.attn_only else (getattr(cfg, "d_mlp", None) or 0)
        d_vocab_out = cfg.d_vocab_out if getattr(cfg, "d_vocab_out", -1) > 0 else cfg.d_vocab
        per_layer = 4 * cfg.d_model * cfg.n_heads * cfg.d_head + 2 * cfg.d_model * d_mlp
        return 2.0 * (cfg.n_layers * per_layer + cfg.d_model * d_vocab_out)

    def _groups(self, variants: list[Variant]) -> list[tuple[int, int, list[Variant]]]:
        """(layer, first recomputed position, variants) chunks, each fitting the memory budget.

        Skipping positions before the patch means one forward pass per start position. On small
        models the per-pass overhead outweighs the saved compute, so consecutive start positions
        are merged (starting at the smallest) while a pass stays under ``MIN_FLOPS`` of work."""
        by_layer: dict[int, dict[int, list[Variant]]] = {}
        for v in variants:
            start = v.pos if (self.can_skip and v.pos is not None) else 0
            by_layer.setdefault(v.layer, {}).setdefault(start, []).append(v)
        seq, batch = self.corrupted_tokens.shape[1], self.corrupted_tokens.shape[0]
        flops = self._flops_per_token() * batch
        chunks = []
        for layer in sorted(by_layer):
            merged: list[tuple[int, list[Variant]]] = []
            for start in sorted(by_layer[layer]):
                vs = by_layer[layer][start]
                if merged:
                    first, group = merged[-1]
                    if (len(group) + len(vs)) * (seq - first) * flops < self.MIN_FLOPS:
                        merged[-1] = (first, group + vs)
                        continue
                merged.append((start, list(vs)))
            for start, vs in merged:
                k = self._chunk_size(seq - start)
                chunks += [(layer, start, vs[i : i + k]) for i in range(0, len(vs), k)]
        return chunks

    # ------------------------------------------------------------------ running

    def _setter(self, act_name: str, clean: Tensor, start: int, chunk: list[Variant], batch: int):
        is_pattern = act_name == "pattern"

        def hook(act: Tensor, hook=None) -> Tensor:
            # in place, like transformer_lens.patching's setters: on a bridge, hook_resid_mid is an
            # alias of ln2.hook_in whose tensor *is* the residual stream, so only an in-place write
            # reaches the residual (and matches TransformerLens's numbers)
            for k, v in enumerate(chunk):
                rows = slice(k * batch, (k + 1) * batch)
                if is_pattern:
                    if v.pos is None:
                        act[rows, v.head] = clean[:, v.head, start:]
                    else:
                        act[rows, v.head, v.pos - start] = clean[:, v.head, v.pos]
                elif v.head is None:
                    act[rows, v.pos - start] = clean[:, v.pos]
                elif v.pos is None:
                    act[rows, :, v.head] = clean[:, start:, v.head]
                else:
                    act[rows, v.pos - start, v.head] = clean[:, v.pos, v.head]
            return act

        return hook

    def _run_chunk(self, act: str, layer: int, start: int, chunk: list[Variant]) -> Tensor:
        model, B, K = self.model, self.corrupted_tokens.shape[0], len(chunk)
        name = _hook_name(act, layer)
        clean_cache, (corr_logits, corr_cache) = self._caches([name])
        hook = self._setter(act, clean_cache[name], start, chunk, B)
        fwd_hooks = [(name, hook)]
        if not self.can_start:
            logits = model.run_with_hooks(self.corrupted_tokens.repeat(K, 1), fwd_hooks=fwd_hooks)
        else:
            resid = corr_cache[f"blocks.{layer}.hook_resid_pre"][:, start:].repeat(K, 1, 1)
            kv = self._kv_cache(layer, start, K, corr_cache)
            logits = model.run_with_hooks(resid, fwd_hooks=fwd_hooks, start_at_layer=layer, past_kv_cache=kv)
        if start > 0:
            logits = torch.cat([corr_logits[:, :start].repeat(K, 1, 1), logits], dim=1)
        return torch.stack([_metric_values(self.metric, logits[k * B : (k + 1) * B], self.per_example, B) for k in range(K)])

    def _kv_cache(self, layer: int, start: int, K: int, corr_cache: dict) -> Optional[list]:
        if start == 0:
            return None
        from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry as Entry

        entries: list = [None] * self.model.cfg.n_layers
        for l in range(layer, self.model.cfg.n_layers):
            keys = corr_cache[f"blocks.{l}.attn.hook_k"][:, :start].repeat(K, 1, 1, 1)
            values = corr_cache[f"blocks.{l}.attn.hook_v"][:, :start].repeat(K, 1, 1, 1)
            entries[l] = Entry(past_keys=keys, past_values=values, frozen=True)
        return entries

    def sweep(self, sweep: str, layers: Optional[Sequence[int]] = None) -> Tensor:
        """Patch every index of ``sweep`` (a key of :data:`SWEEPS`); ``layers`` restricts the layers
        (the result's first axis then follows ``layers``). Returns a float tensor on the CPU."""
        if sweep not in SWEEPS:
            raise ValueError(f"unknown sweep {sweep!r}; allowed: {sorted(SWEEPS)}")
        model = self.model
        layers = list(range(model.cfg.n_layers)) if layers is None else [check_layer(model, int(l)) for l in layers]
        act = SWEEPS[sweep][0]
        active = active_hook_names(model)
        missing = [_hook_name(act, l) for l in layers if _hook_name(act, l) not in active]
        if missing:
            raise ValueError(f"sweep {sweep!r} needs hook points this model does not fire: {missing}")
        seq, B = self.corrupted_tokens.shape[1], self.corrupted_tokens.shape[0]
        variants = _variants(model, sweep, layers, seq)
        shape = _result_shape(model, sweep, len(layers), seq) + ((B,) if self.per_example else ())
        result = torch.zeros(shape)
        from tqdm.auto import tqdm

        with preserved_state(model), torch.no_grad():
            model.eval()
            chunks = self._groups(variants)
            bar = tqdm(total=len(variants), desc=f"patching {sweep}", disable=not self.progress or len(chunks) < 8)
            with bar:
                for layer, start, chunk in chunks:
                    values = self._run_chunk(act, layer, start, chunk)
                    for v, value in zip(chunk, values):
                        result[v.index] = value
                    bar.update(len(chunk))
        return result


def patch_sweep(model: nn.Module, clean_tokens: Tensor, corrupted_tokens: Tensor, metric: Callable,
                sweep: str = "resid_pre", layers: Optional[Sequence[int]] = None, **options) -> Tensor:
    """One patching sweep; same numbers as ``transformer_lens.patching.get_act_patch_<sweep>``
    (run on ``corrupted_tokens`` with the clean cache of ``clean_tokens``). ``options``:
    ``per_example``, ``memory_budget_gb``, ``start_at_layer``, ``skip_positions``, ``progress``
    (see :class:`PatchingEngine`)."""
    return PatchingEngine(model, clean_tokens, corrupted_tokens, metric, **options).sweep(sweep, layers)
