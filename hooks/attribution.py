"""Attribution patching (Nanda 2023): the first-order estimate of every activation-patching sweep of
:mod:`hooks.patching`, from one clean forward pass, one corrupted forward pass and one backward pass.

Exact patching (:func:`hooks.patching.patch_sweep`) returns, for each component of a sweep (an
index such as ``[layer, pos]``), ``metric`` of the corrupted run with the clean activation written
there. Attribution patching estimates the *effect* of that patch, ``metric(patched) -
metric(corrupted)``, by a Taylor expansion around the corrupted run:

    attribution = (a_clean - a_corrupted) . d metric / d a      (gradient of the corrupted run)

summed over the component's features (``d_model``; ``d_head`` for ``q`` / ``k`` / ``v`` / ``z``; the
key positions of a pattern row), over positions for the ``*_all_pos`` sweeps, and over the batch as
the metric does (a metric that averages over examples gives the mean per-example attribution;
``per_example=True`` keeps a ``[batch]`` axis, for a metric whose entry ``i`` reads example ``i``).
The sign convention is TransformerLens 4.x's ``attribution_patch`` (denoising: the gradient is taken
on the corrupted run and the estimate points toward the clean activation); its node scores
(``attn_head_out``: our ``attn_head_out_by_pos``; ``mlp_out``) are the numbers this module returns,
for a whole batch in one pass where TransformerLens runs one forward and backward per example.

It is a linear approximation: where the metric is far from linear in the activation (attention
patterns near saturation, a patch that flips an argmax, LayerNorm scales that move a lot) it can
be far from the exact effect. ``check=k`` measures that on the spot: ``k`` components drawn at random
among those the corruption changes are patched exactly (:class:`hooks.patching.PatchingEngine`),
and an :class:`Agreement` (Pearson, Spearman, largest difference) comes back with the result.
Measured agreements are in ``docs/design/patching-engine.md``.

How: the clean pass stops once every hooked activation has fired (no unembedding). Each hooked
activation is read from the hook point's own output in the model's forward (the
tensor the model goes on computing with, so the gradient covers every path, the residual stream's
skip connections included), converted to TransformerLens's hook layout on a bridge. The embedding
output is made a leaf that requires a gradient and every parameter's ``requires_grad`` is off for
the pass, so no weight gradient is computed and none is stored; the backward is driven with
``torch.autograd.grad`` (no ``.grad`` written). Batches too large for ``memory_budget_gb`` run in
chunks of examples: ``d metric / d logits`` is computed once on the whole batch's corrupted logits
and pushed back through each chunk (exact for any metric, since examples do not interact in a
forward pass). Edge scores and circuit faithfulness are not rewritten here: on TransformerLens 4.x
use ``transformer_lens.tools.analysis.attribution_patching.attribution_patch(...,
EdgeAttributionConfig(granularity="edge"))`` and ``faithfulness``.

>>> scores = attribution_sweep(model, clean, corrupted, metric, "resid_pre")          # [layer, pos]
>>> scores, agreement = attribution_sweep(model, clean, corrupted, metric, "attn_head_out_by_pos", check=20)
>>> all_of_them = attribution_sweeps(model, clean, corrupted, metric, ["resid_pre", "attn_head_out_all_pos"])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from hooks.patching import (
    SWEEPS,
    PatchingEngine,
    _hook_name,
    _result_shape,
    check_inputs,
    check_logit_positions,
    check_sweep,
)
from hooks.state import preserved_state


class _AllCaptured(Exception):
    """Ends the clean forward pass once every hooked activation has been captured."""


# the options of patch_sweep that only the exact patching of ``check`` uses
_PATCH_OPTIONS = ("start_at_layer", "skip_positions", "progress", "skip_unchanged")


@dataclass(frozen=True)
class Agreement:
    """Attribution against exact patching on ``k`` components of one sweep (``check=k``).

    ``exact`` is the exact effect ``metric(patched) - metric(corrupted)``; ``attribution`` its
    estimate; both ``[k]`` (``[k, batch]`` with ``per_example``); ``indices`` ``[k, n_axes]`` into the
    sweep's result. ``n_changed``: components whose clean and corrupted activations differ (the
    others have effect 0 exactly, in both methods, and are not drawn). ``worst``: the index with
    the largest difference."""

    indices: Int[Tensor, "k n_axes"]
    attribution: Float[Tensor, "k *batch"]
    exact: Float[Tensor, "k *batch"]
    n_changed: int
    pearson: float
    spearman: float
    max_abs_diff: float
    worst: tuple[int, ...] | None

    @property
    def k(self) -> int:
        return int(self.indices.shape[0])

    def __str__(self) -> str:
        return (
            f"k={self.k} of {self.n_changed} changed components: pearson={self.pearson:.3f} "
            f"spearman={self.spearman:.3f} max_abs_diff={self.max_abs_diff:.3g} at {self.worst}"
        )


def pearson(x: Tensor, y: Tensor) -> float:
    """Pearson correlation of two tensors (flattened, in float64); NaN when one is constant."""
    x, y = x.flatten().double(), y.flatten().double()
    if x.numel() < 2:
        return math.nan
    x, y = x - x.mean(), y - y.mean()
    denominator = (x.norm() * y.norm()).item()
    return (x @ y).item() / denominator if denominator > 0 else math.nan


def ranks(x: Tensor) -> Tensor:
    """Ranks from 1 (ties get their average rank), in float64."""
    x = x.flatten()
    if not x.numel():
        return torch.zeros(0, dtype=torch.float64)
    order = torch.argsort(x, stable=True)
    sorted_x = x[order]
    position = torch.arange(1, x.numel() + 1, dtype=torch.float64)
    first = torch.ones_like(sorted_x, dtype=torch.bool)
    first[1:] = sorted_x[1:] != sorted_x[:-1]
    group = torch.cumsum(first, 0) - 1  # tie group of each sorted entry
    n_groups = int(group[-1]) + 1
    total = torch.zeros(n_groups, dtype=torch.float64).scatter_add_(0, group, position)
    mean_rank = total / torch.bincount(group, minlength=n_groups)
    out = torch.empty_like(position)
    out[order] = mean_rank[group]
    return out


def spearman(x: Tensor, y: Tensor) -> float:
    """Spearman rank correlation (Pearson of the average ranks); NaN when one is constant."""
    if x.numel() < 2:
        return math.nan
    return pearson(ranks(x), ranks(y))


def agreement(
    attribution: Float[Tensor, "..."], exact: Float[Tensor, "..."]
) -> tuple[float, float, float, tuple[int, ...] | None]:
    """``(pearson, spearman, max_abs_diff, index of the max)`` of two same-shape tensors."""
    if attribution.shape != exact.shape:
        raise ValueError(f"shapes differ: {tuple(attribution.shape)} and {tuple(exact.shape)}")
    if not attribution.numel():
        return math.nan, math.nan, math.nan, None
    diff = (attribution.double() - exact.double()).abs()
    worst = tuple(int(i) for i in torch.unravel_index(diff.argmax(), diff.shape))
    return pearson(attribution, exact), spearman(attribution, exact), diff.max().item(), worst


class AttributionEngine:
    """Attribution sweeps for one (clean, corrupted, metric) triple; options as
    :class:`hooks.patching.PatchingEngine` (``per_example``, ``logit_positions``,
    ``memory_budget_gb``: the autograd graph of the corrupted pass runs in chunks of examples that
    fit it)."""

    def __init__(
        self,
        model: nn.Module,
        clean_tokens: Int[Tensor, "batch pos"],
        corrupted_tokens: Int[Tensor, "batch pos"],
        metric: Callable,
        per_example: bool = False,
        logit_positions: int | Sequence[int] | None = None,
        memory_budget_gb: float = 2.0,
    ):
        check_inputs(model, clean_tokens, corrupted_tokens, metric, memory_budget_gb)
        self.model, self.metric, self.per_example = model, metric, bool(per_example)
        self.clean_tokens, self.corrupted_tokens = clean_tokens, corrupted_tokens
        self.batch, self.seq = corrupted_tokens.shape
        self.logit_positions = None if logit_positions is None else check_logit_positions(logit_positions, self.seq)
        self.memory_budget_gb = float(memory_budget_gb)
        self.chunks = 1  # chunks of examples the last call ran in
        # sweep -> bool tensor of its result's shape (no batch axis): the components whose clean and
        # corrupted activations differ, from the last call (the others have effect 0 exactly)
        self.changed: dict[str, Tensor] = {}

    # ------------------------------------------------------------------ public

    def sweep(self, sweep: str, layers: Sequence[int] | None = None) -> Float[Tensor, "*sweep_shape"]:
        """Attribution at every index of ``sweep``: the shape of :meth:`PatchingEngine.sweep`."""
        return self.sweeps([sweep], layers)[sweep]

    def sweeps(self, sweeps: Sequence[str], layers: Sequence[int] | None = None) -> dict[str, Tensor]:
        """Several sweeps from the same three passes (and the same ``layers``)."""
        scores, self.changed = self._sweeps_and_changed(sweeps, layers)
        return scores

    def check(
        self,
        sweep: str,
        scores: Tensor,
        changed: Tensor,
        k: int,
        layers: Sequence[int] | None = None,
        seed: int = 0,
        **patch_options,
    ) -> Agreement:
        """Exact patching of ``k`` components of ``sweep`` drawn (with ``seed``) among the
        ``changed`` ones, against ``scores`` (this engine's attribution for ``sweep``)."""
        layers = check_sweep(self.model, sweep, layers)
        candidates = changed.nonzero()  # [n_changed, n_axes]
        gen = torch.Generator().manual_seed(seed)
        pick = torch.randperm(len(candidates), generator=gen)[:k]
        indices = candidates[pick.sort().values]
        approx = scores[tuple(indices.T)] if len(indices) else scores.new_zeros((0,) + scores.shape[changed.dim() :])
        if not len(indices):
            return Agreement(indices, approx, approx.clone(), 0, math.nan, math.nan, math.nan, None)
        engine = PatchingEngine(
            self.model,
            self.clean_tokens,
            self.corrupted_tokens,
            self.metric,
            per_example=self.per_example,
            memory_budget_gb=self.memory_budget_gb,
            logit_positions=self.logit_positions,
            **{"progress": False, **patch_options},
        )
        exact = engine.patch(sweep, indices, layers) - engine.corrupted_metric()
        r, rho, diff, worst = agreement(approx, exact)
        if worst is not None:
            worst = tuple(indices[worst[0]].tolist()) + worst[1:]
        return Agreement(indices, approx, exact, len(candidates), r, rho, diff, worst)

    # ------------------------------------------------------------------ the three passes

    def _sweeps_and_changed(self, sweeps: Sequence[str], layers) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        if isinstance(sweeps, str) or not len(sweeps):
            raise ValueError(f"sweeps must be a non-empty sequence of sweep names, got {sweeps!r}")
        checked = {sweep: check_sweep(self.model, sweep, layers) for sweep in sweeps}
        layers = next(iter(checked.values()))
        names = list(dict.fromkeys(_hook_name(SWEEPS[s][0], l) for s in sweeps for l in layers))
        per_name, changed = self._attribution_by_name(names)
        scores, masks = {}, {}
        for sweep in sweeps:
            act, axes = SWEEPS[sweep]
            stacked = torch.stack([per_name[_hook_name(act, l)] for l in layers])  # [layer, batch, ...]
            moved = torch.stack([changed[_hook_name(act, l)] for l in layers])
            if axes == ("layer", "head"):  # every position of a head: sum over positions / queries
                pos_axis = 3 if act == "pattern" else 2
                stacked, moved = stacked.sum(pos_axis), moved.any(pos_axis)
            stacked = stacked.movedim(1, -1)  # batch last
            out = stacked if self.per_example else stacked.sum(-1)
            shape = _result_shape(self.model, sweep, len(layers), self.seq)
            scores[sweep] = out.reshape(shape + ((self.batch,) if self.per_example else ())).float()
            masks[sweep] = moved.movedim(1, -1).any(-1).reshape(shape)
        return scores, masks

    def _attribution_by_name(self, names: list[str]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """For each hook name: ``(a_clean - a_corrupted) . grad`` summed over the features,
        ``[batch, pos]`` / ``[batch, pos, head]`` / ``[batch, head, dest]``, and whether the
        clean and corrupted activations differ there (same shape)."""
        model = self.model
        with preserved_state(model) as state:
            if any(was_training for _, was_training in state.training.values()):
                model.eval()
            for param in model.parameters():
                param.requires_grad_(False)
            chunks = self._chunk_rows(names)
            self.chunks = len(chunks)
            if len(chunks) == 1:
                return self._one_chunk(names, slice(0, self.batch), None)
            with torch.no_grad():
                logits = model(self.corrupted_tokens)
            dlogits = self._logit_gradient(logits)
            del logits
            parts = [self._one_chunk(names, rows, dlogits[rows]) for rows in chunks]
        return (
            {n: torch.cat([p[0][n] for p in parts]) for n in names},
            {n: torch.cat([p[1][n] for p in parts]) for n in names},
        )

    def _one_chunk(self, names: list[str], rows: slice, dlogits: Tensor | None):
        """Clean forward (activations), corrupted forward with the graph, one backward; for the
        examples ``rows``. ``dlogits``: ``d metric / d logits`` of those rows (``None``: from this pass)."""
        with torch.no_grad():
            clean, _ = self._forward(self.clean_tokens[rows], names, grad=False)
        corrupted, logits = self._forward(self.corrupted_tokens[rows], names, grad=True)
        if dlogits is None:
            dlogits = self._logit_gradient(logits.detach())
        live = [corrupted[n][0] for n in names]
        grads = torch.autograd.grad(logits, live, grad_outputs=dlogits, allow_unused=True)
        per_name, changed = {}, {}
        for name, grad in zip(names, grads):
            live_tensor, version, value = corrupted[name]
            if live_tensor._version != version:
                raise RuntimeError(f"{name} was modified in place after it fired; its gradient would be wrong")
            delta = self._layout(name, clean[name]) - self._layout(name, value)
            grad = torch.zeros_like(delta) if grad is None else self._layout(name, grad)
            per_name[name] = (delta * grad).sum(-1)
            changed[name] = (delta != 0).any(-1)
        return per_name, changed

    def _forward(self, tokens: Tensor, names: list[str], grad: bool):
        """Per name, the hook point's output, and the logits. With ``grad``: ``(live tensor, its
        version, detached copy)`` per name; without: a detached copy, and the pass stops once every
        name has fired (logits ``None``: the later blocks and the unembedding are not needed)."""
        model, store, handles = self.model, {}, []

        def capture(name):
            def hook(module, inputs, output):
                if grad:
                    store[name] = (output, output._version, output.detach().clone())
                    return
                store[name] = output.detach().clone()
                if len(store) == len(names):
                    raise _AllCaptured

            return hook

        logits = None
        try:
            for name in names:
                handles.append(model.hook_dict[name].register_forward_hook(capture(name)))
            if grad:  # the graph starts at the embedding: no weight takes part in it
                embed = model.hook_dict["hook_embed"]
                handles.append(embed.register_forward_hook(lambda m, i, out: out.detach().requires_grad_(True)))
            with torch.set_grad_enabled(grad):
                logits = model(tokens)
        except _AllCaptured:
            pass
        finally:
            for handle in handles:
                handle.remove()
        return store, logits

    def _layout(self, name: str, tensor: Tensor) -> Tensor:
        """``tensor`` of the hook point behind ``name`` in TransformerLens's hook layout (a bridge
        reshapes e.g. ``attn.o.hook_in`` to ``[batch, pos, head, d_head]`` for ``hook_z``)."""
        conversion = getattr(self.model.hook_dict[name], "hook_conversion", None)
        return tensor if conversion is None else conversion.convert(tensor)

    def _metric_value(self, logits: Tensor) -> tuple[Tensor, Tensor]:
        """``(metric value, logits leaf)`` with autograd on; checks that the metric returns a
        differentiable scalar (``[batch]`` with ``per_example``)."""
        leaf = logits.detach().requires_grad_(True)
        with torch.enable_grad():
            value = self.metric(leaf if self.logit_positions is None else leaf[:, self.logit_positions])
        want = f"a [batch]={logits.shape[0]} tensor" if self.per_example else "a scalar tensor"
        if not isinstance(value, Tensor):
            raise ValueError(
                f"attribution patching differentiates the metric: it must return {want}, got "
                f"{type(value).__name__} (no .item() or float())"
            )
        shape_ok = tuple(value.shape) == (logits.shape[0],) if self.per_example else value.numel() == 1
        if not shape_ok:
            with_per = "with per_example=True " if self.per_example else ""
            raise ValueError(f"{with_per}the metric must return {want}, got shape {tuple(value.shape)}")
        if not value.requires_grad:
            raise ValueError(
                "the metric is not differentiable in the logits (argmax, accuracy, a comparison or a "
                "detached value): attribution patching needs d metric / d logits; use patch_sweep"
            )
        return value, leaf

    def _logit_gradient(self, logits: Tensor) -> Float[Tensor, "batch pos d_vocab_out"]:
        """``d metric / d logits`` (of the metric's sum over examples with ``per_example``)."""
        value, leaf = self._metric_value(logits)
        (grad,) = torch.autograd.grad(value.sum(), leaf, allow_unused=True)
        return torch.zeros_like(leaf) if grad is None else grad

    def _chunk_rows(self, names: list[str]) -> list[slice]:
        """Slices of examples whose corrupted pass fits ``memory_budget_gb`` by
        :meth:`bytes_per_example` and :meth:`fixed_bytes` (all examples in one slice when they fit;
        else the whole batch's ``d metric / d logits`` is held too)."""
        per_example, fixed = self.bytes_per_example(names), self.fixed_bytes()
        budget = self.memory_budget_gb * 2**30 - fixed
        if self.batch * per_example <= budget:
            return [slice(0, self.batch)]
        n = max(1, int((budget - 2 * self.batch * self._logit_bytes()) // per_example))
        return [slice(i, min(i + n, self.batch)) for i in range(0, self.batch, n)]

    def _logit_bytes(self) -> int:
        cfg = self.model.cfg
        d_vocab_out = cfg.d_vocab_out if getattr(cfg, "d_vocab_out", -1) > 0 else cfg.d_vocab
        return 4 * self.seq * d_vocab_out

    def fixed_bytes(self) -> int:
        """Memory that does not grow with the batch: two copies of the unembedding (TransformerLens
        3.x's ``Unembed`` copies ``W_U.T`` in every forward pass, and the graph keeps one)."""
        return 2 * self._logit_bytes() // self.seq * self.model.cfg.d_model

    def bytes_per_example(self, names: Sequence[str]) -> int:
        """Estimated float32 memory of one example's corrupted pass: what autograd keeps per token
        and layer (LayerNorm inputs, q / k / v, attention scores and pattern, z, MLP pre- and
        post-activation; coefficients measured on a GPT-2-shaped model at 128 positions), the logits
        and their gradients, and the captured activations (clean, corrupted, gradient)."""
        cfg, P = self.model.cfg, self.seq
        d_mlp = 0 if getattr(cfg, "attn_only", False) else (getattr(cfg, "d_mlp", None) or 0)
        per_token_layer = 16 * cfg.d_model + 6 * cfg.n_heads * cfg.d_head + 5 * d_mlp + 4 * cfg.n_heads * P
        captured = 0
        for name in names:
            per_token = cfg.n_heads * P if name.endswith("hook_pattern") else cfg.d_model
            if name.endswith(("hook_q", "hook_k", "hook_v", "hook_z")):
                per_token = cfg.n_heads * cfg.d_head
            captured += 3 * P * per_token
        return 4 * (P * cfg.n_layers * per_token_layer + captured) + 3 * self._logit_bytes()


def attribution_sweeps(
    model: nn.Module,
    clean_tokens: Int[Tensor, "batch pos"],
    corrupted_tokens: Int[Tensor, "batch pos"],
    metric: Callable,
    sweeps: Sequence[str],
    layers: Sequence[int] | None = None,
    **options,
) -> dict[str, Tensor]:
    """Several attribution sweeps (same ``layers``) from one clean forward, one corrupted forward
    and one backward. ``options``: ``per_example``, ``logit_positions``, ``memory_budget_gb``."""
    return AttributionEngine(model, clean_tokens, corrupted_tokens, metric, **options).sweeps(sweeps, layers)


def attribution_sweep(
    model: nn.Module,
    clean_tokens: Int[Tensor, "batch pos"],
    corrupted_tokens: Int[Tensor, "batch pos"],
    metric: Callable,
    sweep: str = "resid_pre",
    layers: Sequence[int] | None = None,
    check: int = 0,
    seed: int = 0,
    **options,
):
    """Attribution patching of one sweep: the interface and result shape of
    :func:`hooks.patching.patch_sweep` (same sweep names, same metric), holding the estimated effect
    ``metric(patched) - metric(corrupted)`` of each patch.

    ``check=k`` (> 0) also patches ``k`` components exactly, drawn with ``seed`` among those whose
    activation the corruption changes, and returns ``(scores, Agreement)``. ``options``:
    ``per_example``, ``logit_positions``, ``memory_budget_gb``, and patch_sweep's
    ``start_at_layer``, ``skip_positions``, ``skip_unchanged``, ``progress`` for the check."""
    if not isinstance(check, int) or isinstance(check, bool) or check < 0:
        raise ValueError(f"check must be an int >= 0 (components to patch exactly), got {check!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an int, got {seed!r}")
    patch_options = {k: options.pop(k) for k in _PATCH_OPTIONS if k in options}
    unknown = sorted(set(options) - {"per_example", "logit_positions", "memory_budget_gb"})
    if unknown:
        raise TypeError(
            f"unknown options {unknown}; allowed: per_example, logit_positions, memory_budget_gb, "
            f"{', '.join(_PATCH_OPTIONS)}"
        )
    engine = AttributionEngine(model, clean_tokens, corrupted_tokens, metric, **options)
    scores = engine.sweep(sweep, layers)
    if not check:
        return scores
    return scores, engine.check(sweep, scores, engine.changed[sweep], check, layers, seed, **patch_options)
