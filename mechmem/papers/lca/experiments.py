"""The synthetic experiments of the paper (Sections 5-6, Fig. 3 and Appendix C), each a function
``ctx -> ExperimentResult`` registered in :data:`EXPERIMENTS` (run in this order).

Interventions use the ``hooks`` package (``replace_weights`` for W_V swaps) and TransformerLens
hooks (``run_with_cache(names_filter=...)``, a ``hook_pattern`` replacement, activation
patching of ``hook_resid_pre``); the HookedTransformer forward is always the one evaluated.

No experiment reads another's data: each asks the seed's :class:`~.lab.Lab` for the models it measures (a cache,
so a model several experiments use is trained once), which is why none declares ``needs``. Each declares the
negative controls it runs (``ctx.control``): the same measurement on models that never trained (``untrained``),
on a memory whose keys and values are shuffled (``shuffled_memory``), on a model whose attention is uniform by
construction (``uniform_attention``) or whose value matrix is fixed to the identity (``identity_W_V``).
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor, nn

from hooks.replace import replace_weights
from hooks.weights import get_weight
from mechmem.contract.experiments import Context, ExperimentResult, Experiments
from mechmem.pages.figures import integer_ticks, subplots

from .constructions import (
    affine_fit,
    bayes_accuracy,
    centred_gram_spectrum,
    constructed_W_V,
    degree_one_share,
    gram_by_mask,
    hamming_vote_accuracy,
    inner_by_hamming,
    neighbour_adjacency,
    orthonormal_embeddings,
    principal_cosines,
    spearman,
    top_energy,
    walsh_degree_energy,
)
from .constructions import uniform_attention_accuracy as closed_form_accuracy
from .finish import W_O_NAME, W_V_NAME
from .generator import hamming
from .hijacking import balance_point, hijack_rates, patching_map
from .lab import Trained, lab_of
from .presets import LCAPreset
from .readout import circuitsvis_view, readout_attention, token_scores, uniform_attention_accuracy
from .training import accuracy

EXPERIMENTS = Experiments()

#: the negative controls, in words (the README tables show these lines)
UNTRAINED = "the same models at their initialisation, never trained (random W_Q, W_K, W_V and embeddings)"
SHUFFLED_MEMORY = (
    "W_V replaced by W̄_V built from the neighbour lists of randomly relabelled tokens (the memory's keys and "
    "values shuffled)"
)
UNIFORM_ATTENTION = "the cluster-variant model trained with W_Q = 0 frozen: every score is 0, attention is uniform"
IDENTITY_W_V = (
    "both arms with W_V fixed to the identity (trained vs frozen Gaussian embeddings), at the small and largest d"
)


def _trained(ctx: Context[LCAPreset]) -> bool:
    """False under the ``untrained`` control: the experiment measures the models at initialisation."""
    return ctx.control != "untrained"


def _suffix(ctx: Context[LCAPreset]) -> str:
    """What a figure title adds under a control."""
    return "" if ctx.control is None else f" [control: {ctx.control}]"


def _model_info(t: Trained) -> dict:
    return {
        "task": t.task.to_dict(),
        "model": t.spec.to_dict(),
        "train_accuracy": t.train_accuracy,
        "train_seconds": round(t.seconds, 2),
    }


# --------------------------------------------------------------------------- wv_bar


@EXPERIMENTS.register(controls={"untrained": UNTRAINED})
def wv_bar(ctx: Context[LCAPreset]) -> ExperimentResult:
    """Accuracy with trained W_V vs W_V fixed to the identity, for each m and L (d = V / 2 < V), next to two
    decoders on the same test sequences: the Bayes-optimal predictor (the best any model can do) and the per-bit
    Hamming majority vote argmin_k sum_l D_H(k, x_l) (what W_V = identity computes on Hamming-structured embeddings)."""
    lab, p = lab_of(ctx), ctx.preset
    rows = []
    for m in p.wv_bar_m:
        for L in p.wv_bar_L:
            task = lab.task(m=m, context_len=L, d_model=max(2, 2**m // 2))
            accs = {
                name: lab.accuracy(lab.variant(task, _trained(ctx), train_W_V=flag))
                for name, flag in (("trained", True), ("identity", False))
            }
            tokens, y, _ = lab.eval_set(task)
            gen = ctx.generator(31)
            rows.append(
                {
                    "m": m,
                    "L": L,
                    "d": task.d_model,
                    "acc_trained": accs["trained"],
                    "acc_identity": accs["identity"],
                    "gap_points": 100 * (accs["trained"] - accs["identity"]),
                    "acc_bayes": bayes_accuracy(tokens, y, m, task.parsed, task.epsilon, gen),
                    "acc_hamming_vote": hamming_vote_accuracy(tokens, y, m, gen),
                }
            )
    fig, axes = subplots(1, len(p.wv_bar_L), figsize=(4 * len(p.wv_bar_L), 3.4), squeeze=False)
    for ax, L in zip(axes[0], p.wv_bar_L):
        sub = [r for r in rows if r["L"] == L]
        x = torch.arange(len(sub)).float()
        ax.bar(x - 0.2, [r["acc_trained"] for r in sub], 0.4, label="trained $W_V$")
        ax.bar(x + 0.2, [r["acc_identity"] for r in sub], 0.4, label="$W_V$ fixed to the identity")
        ax.set_xticks(x.tolist(), [f"m = {r['m']} (V = {2 ** r['m']}, d = {r['d']})" for r in sub])
        ax.set(
            ylim=(0, 1.05), title=f"context length L = {L}", xlabel="latent bits m", ylabel="test accuracy (fraction)"
        )
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="outside lower center", ncol=2)
    fig.suptitle(f"Trained vs identity value matrix (noise rate ε = {p.epsilon}){_suffix(ctx)}")
    return ExperimentResult({"epsilon": p.epsilon, "rows": rows}, {"wv_bar": fig})


# --------------------------------------------------------------------------- wv_replace


def constructed_value_matrix(model: nn.Module, task, relabel: Tensor | None = None) -> Tensor:
    """W̄_V (TransformerLens layout) built from ``model``'s W_E with ``task``'s own neighbourhood, scaled by
    the least-squares factor ``c = <W_V, W̄_V> / |W̄_V|^2`` (the construction fixes W̄_V only up to scale).

    ``relabel`` (a permutation of the V tokens): the neighbour lists of the relabelled tokens, ``A[relabel][:,
    relabel]``: each token's memory then points at the embeddings of unrelated tokens (the negative control)."""
    adjacency = neighbour_adjacency(task.parsed, task.m)
    if relabel is not None:
        adjacency = adjacency[relabel][:, relabel]
    W_bar = constructed_W_V(get_weight(model, "W_E"), adjacency)
    W_V = get_weight(model, W_V_NAME)[0]
    scale = (W_V * W_bar).sum() / (W_bar * W_bar).sum().clamp_min(1e-12)
    return scale * W_bar


def constructed_for(trained: Trained) -> Tensor:
    """:func:`constructed_value_matrix` of a trained variant."""
    return constructed_value_matrix(trained.model, trained.task)


def construction_check(ctx: Context[LCAPreset]) -> dict:
    """The constructed memory on its own terms (spec §5): orthonormal embeddings (d = V), uniform attention,
    W̄_V from the generator's neighbourhood, on test sequences of the main task at the shortest L of the W_V grid,
    next to the Bayes-optimal predictor on the same sequences (the Naive-Bayes reading makes them nearly equal)."""
    lab, p = lab_of(ctx), ctx.preset
    task = lab.task(context_len=min(p.wv_bar_L))
    tokens, y, _ = lab.eval_set(task)
    E = orthonormal_embeddings(task.V, task.V, ctx.generator(43))
    W_bar = constructed_W_V(E, neighbour_adjacency(task.parsed, task.m))
    constructed = closed_form_accuracy(tokens, y, E, W_bar, ctx.generator(44))
    bayes = bayes_accuracy(tokens, y, task.m, task.parsed, task.epsilon, ctx.generator(45))
    return {"m": task.m, "L": task.context_len, "accuracy_constructed": constructed, "accuracy_bayes": bayes}


@EXPERIMENTS.register(controls={"shuffled_memory": SHUFFLED_MEMORY})
def wv_replace(ctx: Context[LCAPreset]) -> ExperimentResult:
    """Trained model vs the same model with W_V replaced by W̄_V, and the principal angles between
    the top-(m+1) singular subspaces of the two matrices, as a function of d; and the constructed memory with
    orthonormal embeddings and uniform attention against the Bayes predictor (a check of the construction)."""
    lab, p = lab_of(ctx), ctx.preset
    shuffled = ctx.control == "shuffled_memory"
    rows = []
    for d in p.dims:
        task = lab.task(d_model=d)
        trained = lab.trained(task)
        relabel = torch.randperm(task.V, generator=ctx.generator(41 + d)) if shuffled else None
        W_bar = constructed_value_matrix(trained.model, task, relabel)
        tokens, y, _ = lab.eval_set(task)
        with replace_weights(trained.model, {W_V_NAME: W_bar[None]}):
            acc_replaced = accuracy(trained.model, tokens, y)
        acc = lab.accuracy(trained)
        W_V = get_weight(trained.model, W_V_NAME)[0]
        k = min(task.m + 1, d)
        rows.append(
            {
                "d": d,
                "acc_trained": acc,
                "acc_replaced": acc_replaced,
                "lost_points": 100 * (acc - acc_replaced),
                "k": k,
                "cos_left": principal_cosines(W_V, W_bar, k, "left").tolist(),
                "cos_right": principal_cosines(W_V, W_bar, k, "right").tolist(),
            }
        )
    fig, (ax1, ax2) = subplots(1, 2, figsize=(9.5, 3.6))
    ds = [r["d"] for r in rows]
    V = 2**p.m
    ax1.plot(ds, [r["acc_trained"] for r in rows], "o-", label="trained $W_V$")
    ax1.plot(ds, [r["acc_replaced"] for r in rows], "s--", label=r"$W_V$ replaced by the constructed $\bar W_V$")
    ax1.axvline(V, color="grey", lw=0.8, ls=":", label=f"d = V = {V}")
    ax1.set(xlabel="embedding dimension d", ylabel="test accuracy (fraction)", title="Replacing $W_V$ by $\\bar W_V$")
    ax1.set_xscale("log", base=2)
    ax1.legend(fontsize=8)
    ax2.plot(ds, [min(r["cos_left"][:3]) for r in rows], "o-", label="smallest of the top 3")
    ax2.plot(
        ds, [sum(r["cos_left"]) / len(r["cos_left"]) for r in rows], "s--", label=f"mean of the top m+1 = {p.m + 1}"
    )
    ax2.set_xscale("log", base=2)
    ax2.set(
        ylim=(0, 1.02),
        xlabel="embedding dimension d",
        ylabel="cosine of the principal angle",
        title="Left singular subspaces of $W_V$ and $\\bar W_V$",
    )
    ax2.legend(fontsize=8)
    fig.suptitle(f"The constructed memory (m = {p.m}){_suffix(ctx)}")
    data = {"m": p.m, "rows": rows, "construction": None if shuffled else construction_check(ctx)}
    return ExperimentResult(data, {"wv_replace": fig})


# --------------------------------------------------------------------------- geometry


@EXPERIMENTS.register(controls={"untrained": UNTRAINED})
def hamming_inner(ctx: Context[LCAPreset]) -> ExperimentResult:
    """Mean <W_E(i), W_E(j)> vs D_H(i, j) (i != j) with the affine fit and Spearman correlation: the main trained
    model (d < V), the identity-W_V model, and a trained-W_V model on the preset's ``hamming_generator`` (bitflip:
    log q(j | k) is affine in D_H(j, k), so eq. (5.2) is the geometry of its Bayes kernel) at m = ``hamming_m``,
    d = ``hamming_d``; and the Walsh spectrum of each Gram matrix (eq. (5.2): degree 1 alone)."""
    lab, p = lab_of(ctx), ctx.preset
    data = {}
    fig, ax = subplots(figsize=(5.6, 3.8))
    bitflip = lab.task(m=p.hamming_m, d_model=p.hamming_d, neighbourhood=p.hamming_generator)
    variants = {
        "trained_W_V": (lab.task(), True, f"trained $W_V$ (N1, m = {p.m})"),
        "identity_W_V": (lab.task(), False, f"$W_V$ fixed to the identity (N1, m = {p.m})"),
        "generator_trained_W_V": (bitflip, True, f"trained $W_V$ ({p.hamming_generator}, m = {p.hamming_m})"),
    }
    for key, (task, flag, label) in variants.items():
        model = lab.variant(task, _trained(ctx), train_W_V=flag)
        data[key] = geometry(model, lab)
        _plot_fit(ax, data[key], label)
    if ctx.control is None:
        main = lab.trained(lab.task())
        ctx.save_model(
            main.model,
            main.task,
            train=dataclasses.replace(ctx.preset.train, seed=ctx.seed),
            history=main.history,
            about=f"the main model: trained W_V and embeddings, m = {p.m}, L = {main.task.context_len}, "
            f"d = {main.spec.d_model}",
        )
    ax.set(
        xlabel="Hamming distance $D_H(i, j)$ of the latent codes",
        ylabel=r"mean $\langle W_E(i), W_E(j)\rangle$",
        title=f"Embedding inner products vs Hamming distance{_suffix(ctx)}",
    )
    integer_ticks(ax)
    ax.legend(fontsize=7)
    return ExperimentResult(data, {"hamming_inner": fig})


def _plot_fit(ax, g: dict, label: str) -> None:
    """One model's mean inner products by distance (D_H >= 1) and its affine fit."""
    dist, means = g["distance"][1:], g["mean_inner"][1:]
    ax.plot(dist, means, "o", label=label)
    fit = [g["intercept"] + g["slope"] * x for x in dist]
    ax.plot(dist, fit, "-", color=ax.lines[-1].get_color(), lw=0.8, label=f"R² = {g['r2']:.2f}")


def geometry(t: Trained, lab) -> dict:
    """The embedding geometry of one model: mean inner product by Hamming distance, its affine fit (over
    D_H = 1..m) and Spearman correlation, the Walsh spectrum of the Gram matrix, the memory form by distance."""
    m = t.task.m
    W_E = get_weight(t.model, "W_E")
    means = inner_by_hamming(W_E, m)
    dist = list(range(1, m + 1))
    a, b, r2 = affine_fit(dist, means[1:])
    walsh = walsh_degree_energy(gram_by_mask(W_E, m), m)
    return {
        "neighbourhood": t.task.neighbourhood,
        "m": m,
        "distance": list(range(m + 1)),
        "mean_inner": means.tolist(),
        "intercept": a,
        "slope": b,
        "r2": r2,
        "spearman": spearman(dist, means[1:]),
        "walsh_energy_by_degree": walsh.tolist(),
        "walsh_degree_one_share": degree_one_share(walsh),
        "memory_by_distance": memory_by_hamming(t.model, m).tolist(),
        "accuracy": lab.accuracy(t),
        "model": _model_info(t),
    }


def memory_by_hamming(model: nn.Module, m: int) -> Tensor:
    """Mean of the value-memory form ``W_E(j) W_V W_U[:, k]`` (context token j -> logit of k) at each D_H(j, k).

    This is what the read-out does with one attended token; for an N1 memory it should peak at D_H = 1.
    """
    V = 2**m
    E = get_weight(model, "W_E")[:V]
    form = E @ get_weight(model, W_V_NAME)[0] @ get_weight(model, W_O_NAME)[0] @ get_weight(model, "W_U")
    ids = torch.arange(V)
    dist = hamming(ids[:, None], ids[None, :])
    return torch.stack([form[dist == k].mean() for k in range(m + 1)])


@EXPERIMENTS.register(controls={"untrained": UNTRAINED})
def spectrum(ctx: Context[LCAPreset]) -> ExperimentResult:
    """Eigenvalues of the centred embedding Gram matrix; energy in the top m+1 (trained vs frozen)."""
    lab, m, data = lab_of(ctx), ctx.preset.m, {}
    fig, ax = subplots(figsize=(5.2, 3.6))
    labels = {"trained_embeddings": "trained embeddings", "frozen_embeddings": "frozen Gaussian embeddings"}
    for label, flag in (("trained_embeddings", True), ("frozen_embeddings", False)):
        trained = lab.variant(lab.task(), _trained(ctx), train_embed=flag)
        eig = centred_gram_spectrum(get_weight(trained.model, "W_E"), 2**m)
        k = m + 1
        gap = (eig[k - 1] / eig[k]).item() if eig[k] > 0 else float("inf")
        data[label] = {
            "eigenvalues": eig.tolist(),
            "top_m_plus_1_energy": top_energy(eig, k),
            "gap_ratio_m_plus_1": gap,
            "model": _model_info(trained),
        }
        n = min(len(eig), ctx.preset.d_model + 2)
        ax.semilogy(range(1, n + 1), eig[:n].clamp_min(1e-8).tolist(), "o-", label=labels[label])
    ax.axvline(m + 1.5, color="grey", ls=":", lw=0.8, label=f"after the top m+1 = {m + 1}")
    ax.set(
        xlabel="eigenvalue rank",
        ylabel="eigenvalue of the centred Gram matrix",
        title=f"Spectrum of $W_E W_E^T$ (V = {2**m}, d = {ctx.preset.d_model}){_suffix(ctx)}",
    )
    ax.legend(fontsize=8)
    return ExperimentResult(data, {"spectrum": fig})


# --------------------------------------------------------------------------- attention


@EXPERIMENTS.register(controls={"uniform_attention": UNIFORM_ATTENTION})
def attention(ctx: Context[LCAPreset]) -> ExperimentResult:
    """Cluster variant with noise: attention on same-cluster vs other context tokens, the QK heat
    map, a CircuitsVis view, and the accuracy lost when attention is made uniform."""
    lab = lab_of(ctx)
    task = lab.task(neighbourhood="cluster2")
    trained = lab.trained(task, uniform_attention=ctx.control == "uniform_attention")
    tokens, y, is_noise = lab.eval_set(task)
    alpha = readout_attention(trained.model, tokens)
    same = task.same_cluster(tokens, y)
    ratio = (alpha[same].mean() / alpha[~same].mean()).item()
    query_in = task.same_cluster(tokens[:, -1:], y)[:, 0]  # the read-out token is in the target's cluster
    ratio_query_in = (alpha[same & query_in[:, None]].mean() / alpha[~same & query_in[:, None]].mean()).item()
    acc = lab.accuracy(trained)
    acc_uniform = uniform_attention_accuracy(trained.model, tokens, y)
    data = {
        "task": task.to_dict(),
        "model": _model_info(trained),
        "mean_attention_same_cluster": alpha[same].mean().item(),
        "mean_attention_other": alpha[~same].mean().item(),
        "cluster_ratio": ratio,
        "cluster_ratio_query_in_target_cluster": ratio_query_in,
        "fraction_query_in_target_cluster": query_in.float().mean().item(),
        "mean_attention_noise": alpha[is_noise].mean().item(),
        "mean_attention_signal": alpha[~is_noise].mean().item(),
        "accuracy": acc,
        "accuracy_uniform_attention": acc_uniform,
        "uniform_drop_points": 100 * (acc - acc_uniform),
        "main_N1": main_model_attention(lab) if ctx.control is None else None,
    }
    qk = token_scores(trained.model)
    fig, (ax1, ax2) = subplots(1, 2, figsize=(10, 4.2))
    im = ax1.imshow(qk.numpy(), cmap="RdBu_r", vmin=-qk.abs().max().item(), vmax=qk.abs().max().item())
    fig.colorbar(im, ax=ax1, fraction=0.046, label="pre-softmax attention score")
    for b in range(1, 4):
        c = b * 2 ** (task.m - 2) - 0.5
        ax1.axhline(c, color="k", lw=0.5)
        ax1.axvline(c, color="k", lw=0.5)
    ax1.set(
        title="Attention score by token pair\n(lines: cluster boundaries)", xlabel="key token", ylabel="query token"
    )
    integer_ticks(ax1, x=True, y=True)
    clusters = torch.arange(4)
    by_cluster = torch.stack(
        [
            torch.stack(
                [
                    alpha[(tokens[:, -1] >> (task.m - 2) == qc)[:, None] & (tokens >> (task.m - 2) == kc)].mean()
                    for kc in clusters
                ]
            )
            for qc in clusters
        ]
    )
    im2 = ax2.imshow(by_cluster.numpy(), cmap="viridis")
    fig.colorbar(im2, ax=ax2, fraction=0.046, label="mean attention weight")
    ax2.set_xticks(range(4))
    ax2.set_yticks(range(4))
    ax2.set(
        xlabel="key token's cluster",
        ylabel="query token's cluster",
        title="Read-out attention by cluster\n(first two latent bits)",
    )
    fig.suptitle(f"Cluster variant (ε = {task.epsilon}): same-cluster / other attention = {ratio:.2f}{_suffix(ctx)}")
    data["attention_by_cluster"] = by_cluster.tolist()
    view = circuitsvis_view(trained.model, tokens[0], y[0].item(), task)
    return ExperimentResult(data, {"attention": fig}, {"attention_view": view})


def main_model_attention(lab) -> dict:
    """The main (N1) model: accuracy with its learned and with uniform attention, and the attention on noise over
    the attention on signal tokens."""
    main = lab.trained(lab.task())
    tokens, y, is_noise = lab.eval_set(main.task)
    alpha = readout_attention(main.model, tokens)
    return {
        "accuracy": lab.accuracy(main),
        "accuracy_uniform_attention": uniform_attention_accuracy(main.model, tokens, y),
        "noise_over_signal_attention": (alpha[is_noise].mean() / alpha[~is_noise].mean()).item(),
    }


# --------------------------------------------------------------------------- trends


def rise_in_standard_errors(first: float, last: float, n: int) -> float:
    """``(last - first)`` in standard errors of the difference of two accuracies on ``n`` test sequences each,
    ``sqrt(p1 (1 - p1) / n + p2 (1 - p2) / n)``: a rise beyond sampling noise is > 2."""
    se = (first * (1 - first) / n + last * (1 - last) / n) ** 0.5
    return (last - first) / se if se > 0 else (0.0 if last == first else math.copysign(math.inf, last - first))


@EXPERIMENTS.register(controls={"untrained": UNTRAINED})
def length(ctx: Context[LCAPreset]) -> ExperimentResult:
    """Accuracy vs context length L (d fixed), trained embeddings (and frozen ones in full mode)."""
    lab, p = lab_of(ctx), ctx.preset
    frozen = p.frozen_lengths and ctx.control is None
    rows = []
    for L in p.lengths:
        task = lab.task(context_len=L)
        row = {"L": L, "acc_trained": lab.accuracy(lab.variant(task, _trained(ctx)))}
        if frozen:
            row["acc_frozen"] = lab.accuracy(lab.trained(task, train_embed=False))
        rows.append(row)
    fig, ax = subplots(figsize=(5.2, 3.6))
    Ls = [r["L"] for r in rows]
    ax.plot(Ls, [r["acc_trained"] for r in rows], "o-", label="trained embeddings")
    if frozen:
        ax.plot(Ls, [r["acc_frozen"] for r in rows], "s--", label="frozen Gaussian embeddings")
    ax.set_xscale("log", base=2)
    ax.set(
        xlabel="context length L (tokens)",
        ylabel="test accuracy (fraction)",
        title=f"Accuracy vs context length (V = {2**p.m}, d = {p.d_model}){_suffix(ctx)}",
    )
    ax.legend(fontsize=8)
    accs = [r["acc_trained"] for r in rows]
    data = {
        "d": p.d_model,
        "m": p.m,
        "n_eval": p.n_eval,
        "rows": rows,
        "spearman": spearman(Ls, accs),
        "rise_in_se": rise_in_standard_errors(accs[0], accs[-1], p.n_eval),
    }
    return ExperimentResult(data, {"length": fig})


def small_d(p: LCAPreset) -> int:
    """The d < V at which ``frozen_gap_small_d`` compares trained and frozen embeddings: the main model's width
    (the smallest d of the grid below V when the grid lacks it)."""
    return p.d_model if p.d_model in p.dims else min(d for d in p.dims if d < 2**p.m)


@EXPERIMENTS.register(controls={"untrained": UNTRAINED, "identity_W_V": IDENTITY_W_V})
def dim(ctx: Context[LCAPreset]) -> ExperimentResult:
    """Accuracy vs d, trained vs frozen Gaussian embeddings (V = 2^m marks the regime change)."""
    lab, p = lab_of(ctx), ctx.preset
    identity = ctx.control == "identity_W_V"
    dims = (small_d(p), max(p.dims)) if identity else p.dims
    rows = []
    for d in dims:
        task = lab.task(d_model=d)
        rows.append(
            {
                "d": d,
                "acc_trained": lab.accuracy(lab.variant(task, _trained(ctx), train_W_V=not identity)),
                "acc_frozen": lab.accuracy(lab.variant(task, _trained(ctx), train_W_V=not identity, train_embed=False)),
            }
        )
    V = 2**p.m
    fig, ax = subplots(figsize=(5.2, 3.6))
    ds = [r["d"] for r in rows]
    ax.plot(ds, [r["acc_trained"] for r in rows], "o-", label="trained embeddings")
    ax.plot(ds, [r["acc_frozen"] for r in rows], "s--", label="frozen Gaussian embeddings")
    ax.axvline(V, color="grey", ls=":", lw=0.8, label=f"d = V = {V} (number of tokens)")
    ax.set_xscale("log", base=2)
    ax.set(
        xlabel="embedding dimension d",
        ylabel="test accuracy (fraction)",
        title=f"Accuracy vs embedding dimension (L = {p.context_len}){_suffix(ctx)}",
    )
    ax.legend(fontsize=8)
    accs = [r["acc_trained"] for r in rows]
    data = {
        "V": V,
        "L": p.context_len,
        "n_eval": p.n_eval,
        "rows": rows,
        "spearman": spearman(ds, accs),
        "drops_beyond_2_se": drops_beyond_2_se(accs, p.n_eval),
        "rise_points": 100 * (accs[-1] - accs[0]),
        "rise_in_se": rise_in_standard_errors(accs[0], accs[-1], p.n_eval),
    }
    return ExperimentResult(data, {"dim": fig})


def drops_beyond_2_se(accs: list[float], n: int) -> int:
    """How many steps of ``accs`` (accuracies on ``n`` test sequences each) fall by more than two standard errors of
    the difference, sqrt(p1 (1 - p1) / n + p2 (1 - p2) / n): "non-decreasing up to sampling noise"."""
    drops = 0
    for a, b in zip(accs, accs[1:]):
        se = (a * (1 - a) / n + b * (1 - b) / n) ** 0.5
        drops += int(b < a - 2 * se)
    return drops


# --------------------------------------------------------------------------- synthetic hijacking


@EXPERIMENTS.register(controls={"untrained": UNTRAINED})
def hijack_synthetic(ctx: Context[LCAPreset]) -> ExperimentResult:
    """Flip rate to y' as k context tokens are replaced by neighbours of y' (and at k*/2 and 2k*, either side of the
    balance point k* where the inserted evidence equals what is left of y's), and an activation-patching map (clean
    -> fully hijacked, per position of hook_resid_pre) of where the answer is carried."""
    lab, p = lab_of(ctx), ctx.preset
    trained = lab.variant(lab.task(), _trained(ctx))
    task, model = trained.task, trained.model
    tokens, y, _ = lab.eval_set(task)
    L = task.context_len
    rows = []
    for frac in p.hijack_fractions:
        k = int(round(frac * L))
        rows.append({**hijack_rates(model, tokens, y, k, task, ctx.generator(77)), "fraction": frac})
    flips = [r["flip_rate"] for r in rows]
    monotone = all(b >= a - 0.02 for a, b in zip(flips, flips[1:]))
    k_star = balance_point(L, task.epsilon)
    balance = {
        "k_star": k_star,
        "below": hijack_rates(model, tokens, y, int(round(k_star / 2)), task, ctx.generator(77)),
        "above": hijack_rates(model, tokens, y, min(L, int(round(2 * k_star))), task, ctx.generator(77)),
    }
    patch = patching_map(model, tokens[: p.n_patch], y[: p.n_patch], task, ctx.seed) if ctx.control is None else None
    fig, axes = subplots(1, 1 if patch is None else 2, figsize=(5 if patch is None else 10, 3.6), squeeze=False)
    ax1 = axes[0][0]
    ax1.plot([r["k"] for r in rows], flips, "o-", label="prediction = y' (hijacked)")
    ax1.plot([r["k"] for r in rows], [r["still_correct"] for r in rows], "s--", label="prediction = y (correct)")
    ax1.axvline(k_star, color="grey", lw=0.8, ls=":", label=f"balance point k* = {k_star:.1f}")
    ax1.set(
        xlabel=f"k context tokens replaced by neighbours of y' (of L = {L})",
        ylabel="fraction of test sequences",
        title=f"Synthetic context hijacking{_suffix(ctx)}",
    )
    ax1.legend(fontsize=8)
    if patch is not None:
        axes[0][1].bar(range(L), patch["effect"])
        integer_ticks(axes[0][1])
        axes[0][1].set(
            xlabel="patched position (blocks.0.hook_resid_pre)",
            ylabel="logit difference restored (fraction)",
            title="Patching clean activations into the hijacked run",
        )
    data = {
        "L": L,
        "rows": rows,
        "monotone": monotone,
        "monotone_tolerance": 0.02,
        "rise": flips[-1] - flips[0],
        "balance": balance,
        "patching": patch,
    }
    return ExperimentResult(data, {"hijack_synthetic": fig})
