"""The synthetic experiments of the paper (Sections 5-6, Fig. 3 and Appendix C), each a function
``ctx -> ExperimentResult`` registered in :data:`EXPERIMENTS` (run in this order).

Interventions use the ``hooks`` package (``replace_weights`` for W_V swaps) and TransformerLens
hooks (``run_with_cache(names_filter=...)``, a ``hook_pattern`` replacement, activation
patching of ``hook_resid_pre``); the HookedTransformer forward is always the one evaluated.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from hooks.compat import attention_scale
from hooks.replace import replace_weights
from hooks.weights import get_weight
from mechmem.contract.experiments import Context, ExperimentResult, Experiments
from mechmem.pages.figures import integer_ticks, subplots

from .constructions import (
    affine_fit,
    bayes_accuracy,
    centred_gram_spectrum,
    constructed_W_V,
    hamming_vote_accuracy,
    inner_by_hamming,
    neighbour_adjacency,
    principal_cosines,
    spearman,
    top_energy,
)
from .finish import W_O_NAME, W_V_NAME
from .generator import hamming, sample_context
from .lab import Trained, lab_of
from .training import accuracy

PATTERN = "blocks.0.attn.hook_pattern"
EXPERIMENTS = Experiments()


def _model_info(t: Trained) -> dict:
    return {
        "task": t.task.to_dict(),
        "model": t.spec.to_dict(),
        "train_accuracy": t.train_accuracy,
        "train_seconds": round(t.seconds, 2),
    }


# --------------------------------------------------------------------------- wv_bar


@EXPERIMENTS.register
def wv_bar(ctx: Context) -> ExperimentResult:
    """Accuracy with trained W_V vs W_V fixed to the identity, for each m and L (d = V / 2 < V), next to two
    decoders on the same test sequences: the Bayes-optimal predictor (the best any model can do) and the per-bit
    Hamming majority vote argmin_k sum_l D_H(k, x_l) (what W_V = identity computes on Hamming-structured embeddings)."""
    lab, p = lab_of(ctx), ctx.preset
    rows = []
    for m in p.wv_bar_m:
        for L in p.wv_bar_L:
            task = lab.task(m=m, context_len=L, d_model=max(2, 2**m // 2))
            accs = {
                name: lab.accuracy(lab.trained(task, train_W_V=flag))
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
    fig.suptitle(f"Trained vs identity value matrix (noise rate ε = {p.epsilon})")
    return ExperimentResult({"epsilon": p.epsilon, "rows": rows}, {"wv_bar": fig})


# --------------------------------------------------------------------------- wv_replace


def constructed_value_matrix(model: nn.Module, task) -> Tensor:
    """W̄_V (TransformerLens layout) built from ``model``'s W_E with ``task``'s own neighbourhood, scaled by
    the least-squares factor ``c = <W_V, W̄_V> / |W̄_V|^2`` (the construction fixes W̄_V only up to scale)."""
    W_bar = constructed_W_V(get_weight(model, "W_E"), neighbour_adjacency(task.parsed, task.m))
    W_V = get_weight(model, W_V_NAME)[0]
    scale = (W_V * W_bar).sum() / (W_bar * W_bar).sum().clamp_min(1e-12)
    return scale * W_bar


def constructed_for(trained: Trained) -> Tensor:
    """:func:`constructed_value_matrix` of a trained variant."""
    return constructed_value_matrix(trained.model, trained.task)


@EXPERIMENTS.register
def wv_replace(ctx: Context) -> ExperimentResult:
    """Trained model vs the same model with W_V replaced by W̄_V, and the principal angles between
    the top-(m+1) singular subspaces of the two matrices, as a function of d."""
    lab, p = lab_of(ctx), ctx.preset
    rows = []
    for d in p.dims:
        task = lab.task(d_model=d)
        trained = lab.trained(task)
        W_bar = constructed_for(trained)
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
    return ExperimentResult({"m": p.m, "rows": rows}, {"wv_replace": fig})


# --------------------------------------------------------------------------- geometry


@EXPERIMENTS.register
def hamming_inner(ctx: Context) -> ExperimentResult:
    """Mean <W_E(i), W_E(j)> vs D_H(i, j) (i != j) with the affine fit and Spearman correlation: the main trained
    model (d < V), the identity-W_V model, and a trained-W_V model on the preset's ``hamming_generator`` (bitflip:
    log q(j | k) is affine in D_H(j, k), so eq. (5.2) is the geometry of its Bayes kernel) at m = ``hamming_m``,
    d = ``hamming_d``."""
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
        trained = lab.trained(task, train_W_V=flag)
        m = task.m
        means = inner_by_hamming(get_weight(trained.model, "W_E"), m)
        dist = list(range(1, m + 1))
        a, b, r2 = affine_fit(dist, means[1:])
        data[key] = {
            "neighbourhood": task.neighbourhood,
            "m": m,
            "distance": list(range(m + 1)),
            "mean_inner": means.tolist(),
            "intercept": a,
            "slope": b,
            "r2": r2,
            "spearman": spearman(dist, means[1:]),
            "memory_by_distance": memory_by_hamming(trained.model, m).tolist(),
            "accuracy": lab.accuracy(trained),
            "model": _model_info(trained),
        }
        ax.plot(dist, means[1:].tolist(), "o", label=label)
        ax.plot(dist, [a + b * x for x in dist], "-", color=ax.lines[-1].get_color(), lw=0.8, label=f"R² = {r2:.2f}")
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
        title="Embedding inner products vs Hamming distance",
    )
    integer_ticks(ax)
    ax.legend(fontsize=7)
    return ExperimentResult(data, {"hamming_inner": fig})


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


@EXPERIMENTS.register
def spectrum(ctx: Context) -> ExperimentResult:
    """Eigenvalues of the centred embedding Gram matrix; energy in the top m+1 (trained vs frozen)."""
    lab, m, data = lab_of(ctx), ctx.preset.m, {}
    fig, ax = subplots(figsize=(5.2, 3.6))
    labels = {"trained_embeddings": "trained embeddings", "frozen_embeddings": "frozen Gaussian embeddings"}
    for label, flag in (("trained_embeddings", True), ("frozen_embeddings", False)):
        trained = lab.trained(lab.task(), train_embed=flag)
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
        title=f"Spectrum of $W_E W_E^T$ (V = {2**m}, d = {ctx.preset.d_model})",
    )
    ax.legend(fontsize=8)
    return ExperimentResult(data, {"spectrum": fig})


# --------------------------------------------------------------------------- attention


def uniform_pattern_hook(pattern: Tensor, hook) -> Tensor:
    """Replace the attention pattern by causal uniform attention (row q spreads 1/(q+1) on 0..q)."""
    q = pattern.shape[-2]
    causal = torch.tril(torch.ones(q, pattern.shape[-1], dtype=pattern.dtype, device=pattern.device))
    return (causal / causal.sum(-1, keepdim=True)).expand_as(pattern)


@torch.no_grad()
def uniform_attention_accuracy(model: nn.Module, tokens: Tensor, y: Tensor) -> float:
    """Accuracy when the learned pattern is replaced by uniform attention (a ``hook_pattern`` hook)."""
    with model.hooks(fwd_hooks=[(PATTERN, uniform_pattern_hook)]):
        return accuracy(model, tokens, y)


@torch.no_grad()
def readout_attention(model: nn.Module, tokens: Tensor) -> Tensor:
    """The read-out position's attention over the context, ``[batch, L]`` (run_with_cache on hook_pattern)."""
    _, cache = model.run_with_cache(tokens, names_filter=PATTERN)
    return cache[PATTERN][:, 0, -1, :]


@EXPERIMENTS.register
def attention(ctx: Context) -> ExperimentResult:
    """Cluster variant with noise: attention on same-cluster vs other context tokens, the QK heat
    map, a CircuitsVis view, and the accuracy lost when attention is made uniform."""
    lab = lab_of(ctx)
    task = lab.task(neighbourhood="cluster2")
    trained = lab.trained(task)
    tokens, y, is_noise = lab.eval_set(task)
    alpha = readout_attention(trained.model, tokens)
    same = task.same_cluster(tokens, y)
    ratio = (alpha[same].mean() / alpha[~same].mean()).item()
    query_in = task.same_cluster(tokens[:, -1:], y)[:, 0]  # the read-out token is in the target's cluster
    ratio_query_in = (alpha[same & query_in[:, None]].mean() / alpha[~same & query_in[:, None]].mean()).item()
    acc = lab.accuracy(trained)
    acc_uniform = uniform_attention_accuracy(trained.model, tokens, y)
    main = lab.trained(lab.task())
    main_tokens, main_y, main_noise = lab.eval_set(main.task)
    main_alpha = readout_attention(main.model, main_tokens)
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
        "main_N1": {
            "accuracy": lab.accuracy(main),
            "accuracy_uniform_attention": uniform_attention_accuracy(main.model, main_tokens, main_y),
            "noise_over_signal_attention": (main_alpha[main_noise].mean() / main_alpha[~main_noise].mean()).item(),
        },
    }
    qk = _token_scores(trained.model)
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
    fig.suptitle(f"Cluster variant (ε = {task.epsilon}): same-cluster / other attention = {ratio:.2f}")
    data["attention_by_cluster"] = by_cluster.tolist()
    view = _circuitsvis_view(trained.model, tokens[0], y[0].item(), task)
    return ExperimentResult(data, {"attention": fig}, {"attention_view": view})


def _token_scores(model: nn.Module) -> Tensor:
    """Pre-softmax score of every (query token, key token) pair: W_E W_Q W_K^T W_E^T / sqrt(d_head)."""
    from hooks.replace import qk_circuit

    W_E = get_weight(model, "W_E")
    return (W_E @ qk_circuit(model, 0, 0).AB @ W_E.T / attention_scale(model)).float()


def _circuitsvis_view(model: nn.Module, tokens: Tensor, y: int, task) -> str:
    """A self-contained (offline) CircuitsVis attention view of one example."""
    import circuitsvis as cv

    _, cache = model.run_with_cache(tokens[None], names_filter=PATTERN)
    names = [f"{t}{'*' if (t >> (task.m - 2)) == (y >> (task.m - 2)) else ''}" for t in tokens.tolist()]
    html = cv.attention.attention_heads(attention=cache[PATTERN][0], tokens=names, attention_head_names=["head 0"])
    header = f"<p>Cluster variant, target y={y}; * marks context tokens in the target's cluster.</p>"
    return f"<!DOCTYPE html><html><head><meta charset='utf-8'></head><body>{header}{html.local_src}</body></html>"


# --------------------------------------------------------------------------- trends


@EXPERIMENTS.register
def length(ctx: Context) -> ExperimentResult:
    """Accuracy vs context length L (d fixed), trained embeddings (and frozen ones in full mode)."""
    lab, p = lab_of(ctx), ctx.preset
    rows = []
    for L in p.lengths:
        task = lab.task(context_len=L)
        row = {"L": L, "acc_trained": lab.accuracy(lab.trained(task))}
        if p.frozen_lengths:
            row["acc_frozen"] = lab.accuracy(lab.trained(task, train_embed=False))
        rows.append(row)
    fig, ax = subplots(figsize=(5.2, 3.6))
    Ls = [r["L"] for r in rows]
    ax.plot(Ls, [r["acc_trained"] for r in rows], "o-", label="trained embeddings")
    if p.frozen_lengths:
        ax.plot(Ls, [r["acc_frozen"] for r in rows], "s--", label="frozen Gaussian embeddings")
    ax.set_xscale("log", base=2)
    ax.set(
        xlabel="context length L (tokens)",
        ylabel="test accuracy (fraction)",
        title=f"Accuracy vs context length (V = {2**p.m}, d = {p.d_model})",
    )
    ax.legend(fontsize=8)
    data = {"d": p.d_model, "m": p.m, "rows": rows, "spearman": spearman(Ls, [r["acc_trained"] for r in rows])}
    return ExperimentResult(data, {"length": fig})


@EXPERIMENTS.register
def dim(ctx: Context) -> ExperimentResult:
    """Accuracy vs d, trained vs frozen Gaussian embeddings (V = 2^m marks the regime change)."""
    lab, p = lab_of(ctx), ctx.preset
    rows = []
    for d in p.dims:
        task = lab.task(d_model=d)
        rows.append(
            {
                "d": d,
                "acc_trained": lab.accuracy(lab.trained(task)),
                "acc_frozen": lab.accuracy(lab.trained(task, train_embed=False)),
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
        title=f"Accuracy vs embedding dimension (L = {p.context_len})",
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


def hijack_context(tokens: Tensor, y: Tensor, k: int, task, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Replace the first ``k`` context tokens by draws from N(y'), y' at Hamming distance >= 2 from y.

    Returns ``(hijacked tokens, y')``. The read-out position is the last one, so it is replaced only when k = L.
    """
    m = task.m
    masks = torch.arange(2**m)
    far = masks[hamming(masks, torch.zeros_like(masks)) >= 2]
    y_alt = y ^ far[torch.randint(0, len(far), y.shape, generator=generator)]
    out = tokens.clone()
    if k > 0:
        inserted, _ = sample_context(y_alt, k, m, task.parsed, 0.0, generator)
        out[:, :k] = inserted
    return out, y_alt


@EXPERIMENTS.register
def hijack_synthetic(ctx: Context) -> ExperimentResult:
    """Flip rate to y' as k context tokens are replaced by neighbours of y', and an activation-patching
    map (clean -> fully hijacked, per position of hook_resid_pre) of where the answer is carried."""
    lab, p = lab_of(ctx), ctx.preset
    trained = lab.trained(lab.task())
    task, model = trained.task, trained.model
    tokens, y, _ = lab.eval_set(task)
    L = task.context_len
    rows = []
    for frac in p.hijack_fractions:
        k = int(round(frac * L))
        hijacked, y_alt = hijack_context(tokens, y, k, task, ctx.generator(77))
        with torch.no_grad():
            pred = model(hijacked)[:, -1].argmax(-1)
        rows.append(
            {
                "k": k,
                "fraction": frac,
                "flip_rate": (pred == y_alt).float().mean().item(),
                "still_correct": (pred == y).float().mean().item(),
            }
        )
    flips = [r["flip_rate"] for r in rows]
    monotone = all(b >= a - 0.02 for a, b in zip(flips, flips[1:]))
    patch = _patching_map(model, tokens[: p.n_patch], y[: p.n_patch], task, ctx.seed)
    fig, (ax1, ax2) = subplots(1, 2, figsize=(10, 3.6))
    ax1.plot([r["k"] for r in rows], flips, "o-", label="prediction = y' (hijacked)")
    ax1.plot([r["k"] for r in rows], [r["still_correct"] for r in rows], "s--", label="prediction = y (correct)")
    ax1.set(
        xlabel=f"k context tokens replaced by neighbours of y' (of L = {L})",
        ylabel="fraction of test sequences",
        title="Synthetic context hijacking",
    )
    ax1.legend(fontsize=8)
    ax2.bar(range(L), patch["effect"])
    integer_ticks(ax2)
    ax2.set(
        xlabel="patched position (blocks.0.hook_resid_pre)",
        ylabel="logit difference restored (fraction)",
        title="Patching clean activations into the hijacked run",
    )
    data = {"L": L, "rows": rows, "monotone": monotone, "monotone_tolerance": 0.02, "patching": patch}
    return ExperimentResult(data, {"hijack_synthetic": fig})


@torch.no_grad()
def _patching_map(model: nn.Module, tokens: Tensor, y: Tensor, task, seed: int) -> dict:
    """Patch the clean ``hook_resid_pre`` at each position into the fully hijacked run; the metric is
    the mean logit difference y - y', normalised to 0 (hijacked) .. 1 (clean)."""
    from hooks.patching import patch_sweep

    L = tokens.shape[1]
    corrupted, y_alt = hijack_context(tokens, y, L, task, torch.Generator().manual_seed(seed + 78))

    def logit_diff(logits: Tensor) -> Tensor:
        last = logits[:, -1]
        return (last.gather(1, y[:, None]) - last.gather(1, y_alt[:, None])).mean()

    clean, corrupt = logit_diff(model(tokens)).item(), logit_diff(model(corrupted)).item()
    raw = patch_sweep(model, tokens, corrupted, logit_diff, sweep="resid_pre", progress=False)[0]
    effect = ((raw - corrupt) / (clean - corrupt)).tolist()
    return {
        "clean_logit_diff": clean,
        "corrupted_logit_diff": corrupt,
        "effect": effect,
        "effect_readout_position": effect[-1],
        "mean_effect_other_positions": sum(effect[:-1]) / max(1, len(effect) - 1),
        "sum_effect": sum(effect),
        "engine": "hooks.patching.patch_sweep(sweep='resid_pre')",
    }
