"""Gather vs store: which heads move the answer's information to the read-out position, and which OV
circuits (or MLPs) hold the key -> value associations, on any TransformerLens model.

The papers' picture of a transformer as an associative memory splits the work in two: attention
*gathers* (a head at the read-out position attends to the positions that carry the answer) and the
value / output weights or an MLP *store* (they map a key's embedding to its value's unembedding).
:func:`memory_map` reads both off every head and every MLP layer, with a null for each reading, and
measures what each component does to the output:

- **gather** (heads): the attention mass from the read-out positions onto the answer-carrying
  positions (``answer``, a mask), averaged over read-out positions that have at least one answer
  position in view; **null**: the mass uniform attention would put there (answer positions in view /
  positions in view). ``gather_score = (gather - null) / (1 - null)``: 0 = no better than uniform,
  1 = every read-out position attends only to answer positions. ``gather_p``: the fraction of
  ``n_null`` seeded draws, each moving every read-out position's answer positions to as many random
  positions in view, whose mass is at least as high (with the observed one counted).
- **store** (heads and MLPs): for an :class:`Associations` table ``key -> value``, the logits
  ``L[i, c]`` the component writes for key ``i`` on candidate value ``c``:

  * a head ``(l, h)``: ``x_i W_V^h W_O^h W_U[:, c]``, the OV circuit read through the embeddings (the
    direct path; LayerNorm and biases left out, as in :mod:`hooks.circuits`);
  * the MLP of layer ``l``: ``MLP_l(ln2_l(x_i)) W_U[:, c]``: what the MLP writes when the residual
    stream holds ``x_i`` alone, through the layer's own normalisation and biases (an MLP is not
    linear, so unlike a head its map cannot be read off a product of matrices: it is evaluated on
    each key's input vector, with the model's own ``ln2`` and ``mlp`` modules);

  where ``x_i`` is the key's input vector in the chosen ``basis`` (``mlp_basis`` for the MLPs, default
  the same): ``"embed"`` (the sum of the key's token embeddings ``W_E``), or per layer any
  ``[n_keys, d_model]`` vectors, e.g. :func:`head_output_basis` (keys as an earlier head writes them)
  or :func:`attention_output_basis` (keys as the layer's attention writes them: the input of an MLP
  that reads the attention output, like the factual model's).

  ``store_recall``: the fraction of keys whose argmax over the candidates is their value;
  ``store_margin``: the mean logit of the value minus the best other candidate. **Null**: the same
  readings with the table's values permuted (``n_null`` seeded permutations; the model's logits are
  fixed, only the targets move), so a map that favours one value for every key, or a table whose
  values repeat, is no better than its null. ``store_p``: the fraction of permutations recalling at
  least as well (with the observed table counted); ``store_score = (recall - null) / (1 - null)``.
- **causal**: the change of ``metric`` when the component is ablated (``ablation``: ``"mean"`` over
  the batch or ``"zero"``, via :mod:`hooks.ablation`), and for heads when its value map is replaced:
  the whole OV circuit ``W_V W_O`` (the papers' ``d x d`` ``W_V``) set to the identity (the head copies
  what it reads, storing nothing), to zero, or to a constructed memory the caller passes
  (``memories``), via :class:`hooks.replace.OV` (exact for any ``d_head``).

:func:`memory_map` returns a ``pandas.DataFrame`` (one row per head and per MLP layer);
:func:`plot_memory_map` draws it: heads placed by gather and store score, MLP layers by store score,
coloured by the ablation effect. A component at the top right gathers the answer *and* stores the
association. :func:`above_null` lists the components with a reading above its null (permutation
p-values, Bonferroni over the map). Every tool restores the model (weights, hooks, mode) afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from hooks.ablation import ablation_sweep, metric_value
from hooks.checks import check_tokens
from hooks.circuits import check_heads
from hooks.plotting import style
from hooks.replace import OV, ov_circuit, replace_weights
from hooks.state import preserved_state
from hooks.views import attention_patterns
from hooks.weights import get_weight

ABLATIONS = ("mean", "zero")
MIN_GATHER_SCORE = 0.1  # see above_null
_CHUNK = 64  # null draws computed together
REPLACEMENTS = ("identity", "zero")
Basis = str | Mapping[int, Tensor] | Callable[[int], Tensor]


@dataclass(frozen=True)
class Associations:
    """An association table: ``keys[i] -> values[i]``.

    keys: input token ids (``[n]``) or tuples of ids (``[n, k]``: a key made of several tokens, e.g. a
        subject and a relation; their embeddings are summed); values: output token ids ``[n]``;
    candidates: the output ids the argmax runs over (``None``: the table's distinct values).
    """

    keys: Int[Tensor, "n *k"]
    values: Int[Tensor, " n"]
    candidates: Int[Tensor, " c"] | None = None

    def candidate_ids(self) -> Tensor:
        return torch.unique(self.values) if self.candidates is None else self.candidates

    def key_matrix(self) -> Tensor:
        """Keys as ``[n, k]`` token ids."""
        return self.keys if self.keys.dim() == 2 else self.keys[:, None]


def check_associations(model: nn.Module, table: Associations) -> Associations:
    """Refuse a table that does not fit ``model`` (types, shapes, ids in range), before any work."""
    if not isinstance(table, Associations):
        raise TypeError(f"table must be a hooks.gather_store.Associations, got {type(table).__name__}")
    keys, values = table.keys, table.values
    for name, t in (("keys", keys), ("values", values), ("candidates", table.candidates)):
        if t is not None and (not isinstance(t, Tensor) or t.is_floating_point() or t.dtype == torch.bool):
            raise TypeError(f"Associations.{name} must be an integer tensor, got {getattr(t, 'dtype', type(t))}")
    if keys.dim() not in (1, 2) or values.dim() != 1 or len(keys) != len(values) or len(values) < 2:
        raise ValueError(
            f"Associations: keys must be [n] or [n, k] and values [n] with n >= 2 (a permutation null needs two "
            f"pairs), got keys {tuple(keys.shape)} and values {tuple(values.shape)}"
        )
    d_vocab, d_out = model.cfg.d_vocab, getattr(model.cfg, "d_vocab_out", None) or model.cfg.d_vocab
    d_out = model.cfg.d_vocab if d_out < 0 else d_out
    if keys.min() < 0 or keys.max() >= d_vocab:
        raise ValueError(f"Associations.keys must be input token ids in [0, {d_vocab - 1}]")
    candidates = table.candidate_ids()
    if candidates.dim() != 1 or len(candidates) < 2 or candidates.min() < 0 or candidates.max() >= d_out:
        raise ValueError(f"Associations.candidates must be >= 2 output ids in [0, {d_out - 1}]")
    if len(torch.unique(candidates)) != len(candidates):
        raise ValueError("Associations.candidates holds an id twice")
    if not torch.isin(values, candidates).all():
        raise ValueError("every Associations.values entry must be one of the candidates")
    return table


# ----------------------------------------------------------------------------- bases


def embedding_basis(model: nn.Module, table: Associations) -> Float[Tensor, "n d_model"]:
    """Each key's input vector: the sum of its tokens' embeddings ``W_E``."""
    return get_weight(model, "W_E")[table.key_matrix()].sum(1)


def head_output_basis(model: nn.Module, table: Associations, layer: int, head: int) -> Float[Tensor, "n d_model"]:
    """Each key as head ``(layer, head)`` writes it when it attends to the key: ``x W_V W_O`` of its
    embedding (the input a later head reads at the position the key was moved to)."""
    return embedding_basis(model, table) @ ov_circuit(model, layer, head).AB


def attention_output_basis(model: nn.Module, table: Associations, layer: int) -> Float[Tensor, "n d_model"]:
    """Each key as layer ``layer``'s attention writes it when every head attends only to the key's
    tokens, equally: ``mean_j W_E[t_j] (sum_h W_V^h W_O^h)`` (the input of an MLP that reads the
    attention output, e.g. the factual model's MLP, which gets no residual from the embeddings)."""
    OV = sum(ov_circuit(model, layer, h).AB for h in range(model.cfg.n_heads))
    return embedding_basis(model, table) / table.key_matrix().shape[1] @ OV


def _basis_for(model: nn.Module, table: Associations, basis: Basis, layer: int) -> Tensor:
    if isinstance(basis, str):
        if basis != "embed":
            raise ValueError(
                f"basis must be 'embed', a mapping layer -> [n_keys, d_model] or a callable, got {basis!r}"
            )
        x = embedding_basis(model, table)
    elif isinstance(basis, Mapping):
        x = basis[layer] if layer in basis else embedding_basis(model, table)
    else:
        x = basis(layer)
    n, d = len(table.values), model.cfg.d_model
    if not isinstance(x, Tensor) or tuple(x.shape) != (n, d) or not x.is_floating_point():
        raise ValueError(f"the basis of layer {layer} must be a float tensor [n_keys={n}, d_model={d}], got {x!r:.80}")
    return x.detach().float()


# ----------------------------------------------------------------------------- gather


def gather_readings(
    patterns: Float[Tensor, "layer batch head q k"],
    readout: Bool[Tensor, "batch q"],
    answer: Bool[Tensor, "batch k"] | Bool[Tensor, "batch q k"],
    permutations: int,
    generator: torch.Generator,
    causal: bool = True,
) -> dict[str, Tensor | int]:
    """Every head's mean attention mass from the read-out positions onto the answer positions
    (``gather`` [layer, head]), the mass uniform attention would give (``gather_null``), the fraction
    of ``permutations`` null draws (each read-out position's answer positions moved to as many random
    positions in view) whose mass is at least as high (``gather_p``), and how many read-out positions
    with an answer position in view were averaged (``n_rows``)."""
    n_pos = patterns.shape[-1]
    where = answer[:, None, :].expand(-1, n_pos, -1) if answer.dim() == 2 else answer
    in_view = (
        torch.ones(n_pos, n_pos, dtype=torch.bool).tril() if causal else torch.ones(n_pos, n_pos, dtype=torch.bool)
    )
    where = where & in_view
    rows = readout & where.any(-1)  # [batch, q]
    n_rows = int(rows.sum())
    if n_rows == 0:
        raise ValueError(
            "no read-out position has an answer position in view (answer positions must come at or before "
            "the read-out position under causal attention): the gather reading would be empty"
        )
    P = patterns.permute(0, 2, 1, 3, 4)[:, :, rows].flatten(2)  # [layer, head, row * k]
    W, V = where[rows], in_view.expand(rows.shape[0], -1, -1)[rows]  # [row, k]
    mass = P @ W.flatten().float() / n_rows
    count = W.sum(-1, keepdim=True)
    exceed = torch.zeros_like(mass)
    for start in range(0, permutations, _CHUNK):  # each draw: as many random positions in view per row
        n = min(_CHUNK, permutations - start)
        order = torch.rand((n, *V.shape), generator=generator).masked_fill(~V, 2.0).argsort(-1)
        rank = torch.empty_like(order).scatter_(-1, order, torch.arange(V.shape[-1]).expand_as(order))
        drawn = (rank < count).flatten(1).float()  # [n, row * k]
        exceed += ((P @ drawn.T / n_rows) >= mass[..., None]).sum(-1)
    uniform = (count[:, 0] / V.sum(-1)).mean()
    return {
        "gather": mass,
        "gather_null": uniform.expand_as(mass).clone(),
        "gather_p": (1 + exceed) / (1 + permutations),
        "n_rows": n_rows,
    }


# ----------------------------------------------------------------------------- store


def _margins(logits: Float[Tensor, "n c"], targets: Int[Tensor, "m n"]) -> Float[Tensor, "m n"]:
    """``logits[i, t] - max_{c != t} logits[i, c]`` for each row of targets."""
    top2 = logits.topk(2, dim=-1)
    best, best_id, second = top2.values[:, 0], top2.indices[:, 0], top2.values[:, 1]
    chosen = logits.gather(1, targets.T).T  # [m, n]
    other = torch.where(targets == best_id[None], second[None], best[None])
    return chosen - other


def store_readings(logits: Float[Tensor, "n c"], targets: Int[Tensor, " n"], permutations: Int[Tensor, "m n"]) -> dict:
    """Recall and margin of ``logits`` against ``targets`` (indices into the candidates), and the
    same under each permutation of the targets (the null)."""
    predicted = logits.argmax(-1)
    recall = float((predicted == targets).float().mean())
    permuted = targets[permutations]  # [m, n]
    recall_null = (predicted[None] == permuted).float().mean(-1)
    return {
        "store_recall": recall,
        "store_recall_null": float(recall_null.mean()),
        "store_p": float((1 + (recall_null >= recall).sum()) / (1 + len(permutations))),
        "store_margin": float(_margins(logits, targets[None]).mean()),
        "store_margin_null": float(_margins(logits, permuted).mean()),
    }


def _head_logits(model, x: Tensor, layer: int, head: int, W_U: Tensor) -> Tensor:
    return x @ ov_circuit(model, layer, head).AB.float() @ W_U


def _mlp_logits(model, x: Tensor, layer: int, W_U: Tensor) -> Tensor:
    """``MLP(ln2(x)) W_U``: the layer's own modules on a residual stream holding only ``x``, with the
    model's hooks paused (on a bridge ``ln2.hook_in`` is ``hook_resid_mid``, where a model may keep a
    permanent hook for its whole residual stream)."""
    block = model.blocks[layer]
    ln2 = getattr(block, "ln2", None)
    param = next(model.parameters())
    with preserved_state(model), torch.no_grad(), _hook_points_paused(block):
        model.eval()
        h = x.to(param.dtype).to(param.device)[None]
        h = ln2(h) if ln2 is not None else h
        out = block.mlp(h)
    return out[0].float().cpu() @ W_U


@contextmanager
def _hook_points_paused(module: nn.Module) -> Iterator[None]:
    """Run ``module``'s submodules without the hooks on its TransformerLens hook points (restored after)."""
    from transformer_lens.hook_points import HookPoint

    saved = []
    for hp in module.modules():
        if isinstance(hp, HookPoint):
            saved.append((hp, dict(hp._forward_hooks), dict(hp._forward_pre_hooks)))
            hp._forward_hooks.clear()
            hp._forward_pre_hooks.clear()
    try:
        yield
    finally:
        for hp, hooks, pre_hooks in saved:
            hp._forward_hooks.update(hooks)
            hp._forward_pre_hooks.update(pre_hooks)


def _has_mlp(model: nn.Module) -> bool:
    return not getattr(model.cfg, "attn_only", False)


# ----------------------------------------------------------------------------- causal


def _metric(metric, targets: Tensor | None, readout: Tensor) -> Callable[[Tensor], float]:
    if metric is not None:
        if not callable(metric):
            raise TypeError(f"metric must be a callable logits -> float, got {type(metric).__name__}")
        return lambda logits: metric_value(metric, logits)
    if targets is None:
        raise ValueError("give a metric (logits -> float) or the targets [batch, pos] of the read-out positions")

    def log_prob(logits: Tensor) -> float:  # mean log-probability of the target at the read-out positions
        logp = logits.float().log_softmax(-1)[readout]
        return float(logp.gather(-1, targets[readout][:, None]).mean())

    return log_prob


def _check_replacements(model, replace: Sequence[str], memories) -> dict:
    if isinstance(replace, str) or any(r not in REPLACEMENTS for r in replace):
        raise ValueError(f"replace must be a sequence drawn from {REPLACEMENTS}, got {replace!r}")
    memories = dict(memories or {})
    d = model.cfg.d_model
    for key, M in memories.items():
        if not (isinstance(key, tuple) and len(key) == 2):
            raise ValueError(f"memories keys must be (layer, head) pairs, got {key!r}")
        check_heads(model, [key])
        if not isinstance(M, Tensor) or tuple(M.shape) != (d, d):
            raise ValueError(f"memories[{key}] must be a [d_model, d_model] = [{d}, {d}] tensor (an OV circuit)")
    return memories


def _ov_effect(model, tokens, measure, clean: float, layer: int, head: int, M: Tensor) -> float:
    param = get_weight(model, f"blocks.{layer}.attn.W_O")
    with replace_weights(model, {OV(layer, head): M.to(param.dtype).to(param.device)}):
        with preserved_state(model), torch.no_grad():
            model.eval()
            return measure(model(tokens)) - clean


# ----------------------------------------------------------------------------- the map


def _check_inputs(model, tokens, readout, answer, ablation, n_null, seed) -> None:
    check_tokens(model, tokens)
    b, p = tokens.shape
    if not isinstance(readout, Tensor) or readout.dtype != torch.bool or tuple(readout.shape) != (b, p):
        raise ValueError(f"readout must be a bool mask [batch, pos] = [{b}, {p}] of the read-out positions")
    if not readout.any():
        raise ValueError("readout marks no position: nothing to read")
    shapes = ((b, p), (b, p, p))
    if not isinstance(answer, Tensor) or answer.dtype != torch.bool or tuple(answer.shape) not in shapes:
        raise ValueError(
            f"answer must be a bool mask [batch, pos] = [{b}, {p}] (the same answer positions for every read-out "
            f"position) or [batch, q, k] = [{b}, {p}, {p}] (per read-out position)"
        )
    if ablation not in ABLATIONS:
        raise ValueError(f"ablation must be one of {ABLATIONS}, got {ablation!r}")
    if not isinstance(n_null, int) or isinstance(n_null, bool) or n_null < 1:
        raise ValueError(f"n_null must be a positive int (permutations of the table), got {n_null!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an int, got {seed!r}")


def memory_map(
    model: nn.Module,
    tokens: Int[Tensor, "batch pos"],
    readout: Bool[Tensor, "batch pos"],
    answer: Bool[Tensor, "batch pos"] | Bool[Tensor, "batch q k"],
    table: Associations,
    *,
    metric: Callable[[Tensor], float | Tensor] | None = None,
    targets: Int[Tensor, "batch pos"] | None = None,
    basis: Basis = "embed",
    mlp_basis: Basis | None = None,
    heads: Sequence[tuple[int, int]] | None = None,
    ablation: str = "mean",
    replace: Sequence[str] = REPLACEMENTS,
    memories: Mapping[tuple[int, int], Tensor] | None = None,
    n_null: int = 1000,
    seed: int = 0,
):
    """Gather, store and causal readings of every head (``heads``: a subset) and every MLP layer; see
    the module docstring. ``metric(logits) -> float`` scores the model on ``tokens`` (default: the mean
    log-probability of ``targets`` at the read-out positions). Returns a ``pandas.DataFrame`` with one
    row per component; ``df.attrs`` holds the clean metric, the number of read-out positions and keys,
    and the settings. Bad input raises before the model is run."""
    import pandas as pd

    _check_inputs(model, tokens, readout, answer, ablation, n_null, seed)
    heads = check_heads(model, heads)
    table = check_associations(model, table)
    memories = _check_replacements(model, replace, memories)
    measure = _metric(metric, targets, readout)
    layers = sorted({layer for layer, _ in heads} | (set(range(model.cfg.n_layers)) if _has_mlp(model) else set()))
    bases = {layer: _basis_for(model, table, basis, layer) for layer in layers}  # checked before any forward pass
    mlp_bases = (
        bases
        if mlp_basis is None
        else {
            layer: _basis_for(model, table, mlp_basis, layer) for layer in range(model.cfg.n_layers) if _has_mlp(model)
        }
    )

    candidates = table.candidate_ids()
    target_index = (table.values[:, None] == candidates[None]).float().argmax(-1)
    permutations = torch.argsort(torch.rand(n_null, len(target_index), generator=torch.Generator().manual_seed(seed)))
    W_U = get_weight(model, "W_U").float().cpu()[:, candidates]

    device = next(model.parameters()).device
    tokens = tokens.to(device)
    patterns = attention_patterns(model, tokens)
    causal = getattr(model.cfg, "attention_dir", "causal") == "causal"
    gather = gather_readings(patterns, readout.cpu(), answer.cpu(), n_null, torch.Generator().manual_seed(seed), causal)
    with preserved_state(model), torch.no_grad():
        model.eval()
        clean = measure(model(tokens))

    sweep = ablation_sweep(
        model, tokens, measure, ("heads", "mlp_out") if _has_mlp(model) else ("heads",), ablation, progress=False
    )
    ablated = {(r.layer, -1 if pd.isna(r.head) else r.head): r.delta for r in sweep.iloc[1:].itertuples()}

    rows = []
    for layer, head in heads:
        row = {"component": f"L{layer}H{head}", "kind": "head", "layer": layer, "head": head}
        row |= {key: float(gather[key][layer, head]) for key in ("gather", "gather_null", "gather_p")}
        logits = _head_logits(model, bases[layer].cpu(), layer, head, W_U)
        row |= store_readings(logits, target_index, permutations)
        row["causal_ablate"] = ablated[(layer, head)]
        d = model.cfg.d_model
        fixed = {"identity": torch.eye(d), "zero": torch.zeros(d, d)}
        for name in replace:
            row[f"causal_ov_{name}"] = _ov_effect(model, tokens, measure, clean, layer, head, fixed[name])
        if (layer, head) in memories:
            row["causal_ov_memory"] = _ov_effect(model, tokens, measure, clean, layer, head, memories[(layer, head)])
        rows.append(row)
    if _has_mlp(model):
        for layer in range(model.cfg.n_layers):
            row = {"component": f"MLP{layer}", "kind": "mlp", "layer": layer, "head": -1}
            row |= store_readings(_mlp_logits(model, mlp_bases[layer], layer, W_U), target_index, permutations)
            row["causal_ablate"] = ablated[(layer, -1)]
            rows.append(row)

    df = pd.DataFrame(rows)
    df["gather_score"] = (df["gather"] - df["gather_null"]) / (1 - df["gather_null"])
    df["store_score"] = (df["store_recall"] - df["store_recall_null"]) / (1 - df["store_recall_null"])
    df.attrs.update(
        metric_clean=clean,
        n_readout=gather["n_rows"],
        n_keys=len(table.values),
        n_candidates=len(candidates),
        n_null=n_null,
        seed=seed,
        ablation=ablation,
        basis=_describe(basis),
        mlp_basis=_describe(basis if mlp_basis is None else mlp_basis),
    )
    return df


def _describe(basis: Basis) -> str:
    return basis if isinstance(basis, str) else "custom"


def above_null(df, alpha: float = 0.01, min_gather_score: float = MIN_GATHER_SCORE) -> list[str]:
    """The components with a reading above its null, Bonferroni-corrected over the map's readings:

    - store: ``store_p < alpha / readings``. The permutation null is exact: a table drawn
      independently of the weights gives uniform p-values, so a model holding no association has at
      most an ``alpha`` chance of any listed store.
    - gather: ``gather_p < alpha / readings`` *and* ``gather_score >= min_gather_score`` (0.1: a
      tenth of the attention uniform attention puts elsewhere moved onto the answer positions). The
      position null assumes nothing about the answer positions draws attention, but attention at
      initialisation already prefers some tokens a little (a few thousandths of the mass on the factual
      model's subject and relation tokens), which a large batch makes "significant"; the floor keeps
      such preferences out.

    ``n_null`` must let a p-value get below ``alpha / readings`` (``1 / (n_null + 1)`` smaller)."""
    p_values = [c for c in ("gather_p", "store_p") if c in df]
    n = int(df[p_values].notna().sum().sum())
    floor = 1 / (df.attrs.get("n_null", 0) + 1)
    if floor >= alpha / n:
        raise ValueError(
            f"with n_null={df.attrs.get('n_null')} no p-value can fall below alpha / readings = {alpha / n:.2g}: "
            f"run memory_map with n_null >= {int(n / alpha)}"
        )
    stores = df["store_p"] < alpha / n
    gathers = (df["gather_p"] < alpha / n) & (df["gather_score"] >= min_gather_score)
    return list(df.loc[stores | gathers, "component"])


# ----------------------------------------------------------------------------- figure


def _limits(scores) -> tuple[float, float]:
    """From the null (0) to a perfect reading (1), widened to every point."""
    low, high = float(scores.min()), float(scores.max())
    return min(-0.1, low - 0.05), max(1.05, high + 0.05)


def plot_memory_map(df, title: str = "Memory map: which heads gather, which weights store", label_top: int = 8):
    """One figure of a :func:`memory_map` table: heads placed by gather score (x) and store score (y),
    MLP layers in a narrow panel by store score, all coloured by the metric change when ablated
    (blue: the metric falls without the component). The ``label_top`` components with the largest
    gather + store scores are named. Returns the pyplot figure."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import TwoSlopeNorm

    heads, mlps = df[df["kind"] == "head"], df[df["kind"] == "mlp"]
    effect = df["causal_ablate"].abs().max()
    bound = float(effect) if effect and effect == effect else 1.0
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-bound, vmax=bound)
    with style():
        ratios = [1, 5] if len(mlps) else [5]
        fig, axes = plt.subplots(1, len(ratios), figsize=(7.5, 4.6), sharey=True, width_ratios=ratios, squeeze=False)
        axes = list(axes[0])
        ax = axes[-1]
        points = ax.scatter(
            heads["gather_score"], heads["store_score"], c=heads["causal_ablate"], cmap="RdBu", norm=norm,
            s=60, edgecolors="black", linewidths=0.6, label="attention head",
        )  # fmt: skip
        top = heads.assign(rank=heads["gather_score"] + heads["store_score"]).nlargest(label_top, "rank")
        for _, row in top.iterrows():
            ax.annotate(row["component"], (row["gather_score"], row["store_score"]), fontsize=8,
                        xytext=(4, 3), textcoords="offset points")  # fmt: skip
        (x0, x1), (y0, y1) = _limits(heads["gather_score"]), _limits(df["store_score"])
        null = dict(color="gray", lw=0.8, ls="--")  # drawn in data coordinates, over the limits
        ax.plot([x0, x1], [0.0, 0.0], label="null (uniform attention, permuted table)", **null)
        ax.plot([0.0, 0.0], [y0, y1], **null)
        ax.set(
            xlabel="gather score: attention on answer positions\n(0 = uniform, 1 = all of it)",
            title="attention heads",
            xlim=(x0, x1),
            ylim=(y0, y1),
        )
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)  # below the axis: never over a head
        if len(mlps):
            left = axes[0]
            left.scatter(range(len(mlps)), mlps["store_score"], c=mlps["causal_ablate"], cmap="RdBu", norm=norm,
                         marker="s", s=60, edgecolors="black", linewidths=0.6)  # fmt: skip
            left.set_xticks(range(len(mlps)), list(mlps["component"]), rotation=90)
            left.plot([-0.7, len(mlps) - 0.3], [0.0, 0.0], **null)
            left.set_xlim(-0.7, len(mlps) - 0.3)
            left.set(xlabel="MLP layer", title="MLPs")
        axes[0].set_ylabel("store score: recall of the table\n(0 = permuted-table null, 1 = every key)")
        colorbar = fig.colorbar(points, ax=axes, fraction=0.05, pad=0.02)
        colorbar.set_label("metric change when ablated")
        fig.suptitle(title)
    return fig
