"""The synthetic experiments of spec lca.md §4.2, each a function ``lab -> ExperimentResult``.

Interventions use the ``hooks`` package (``replace_weights`` for W_V swaps) and TransformerLens
hooks (``run_with_cache(names_filter=...)``, a ``hook_pattern`` replacement, activation
patching of ``hook_resid_pre``); the HookedTransformer forward is always the one evaluated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import io

import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from hooks.compat import attention_scale
from hooks.replace import replace_weights
from hooks.weights import get_weight
from mechmem.io import atomic_write_bytes, atomic_write_json, atomic_write_text

from .constructions import (
    affine_fit,
    centred_gram_spectrum,
    constructed_W_V,
    inner_by_hamming,
    neighbour_adjacency,
    principal_cosines,
    spearman,
    top_energy,
)
from .generator import hamming, sample_context
from .lab import Lab, Trained
from .model import W_O_NAME, W_V_NAME
from .training import accuracy

PATTERN = "blocks.0.attn.hook_pattern"


@dataclass
class ExperimentResult:
    """What one experiment measured (``data``, JSON-able), its figure and optional HTML views."""

    name: str
    data: dict
    figure: Figure | None = None  # built without pyplot: no global backend state
    html: dict[str, str] = field(default_factory=dict)

    def save(self, out: Path) -> list[Path]:
        """Write ``out/<name>.json``, ``out/figures/<name>.png`` and ``out/<html name>.html`` atomically."""
        out = Path(out)
        written = [atomic_write_json(out / f"{self.name}.json", self.data)]
        if self.figure is not None:
            written.append(atomic_write_bytes(out / "figures" / f"{self.name}.png", self.png()))
        for name, text in self.html.items():
            written.append(atomic_write_text(out / f"{name}.html", text))
        return written


    def png(self) -> bytes:
        """The figure as PNG bytes (for saving, or ``IPython.display.Image``)."""
        return figure_png(self.figure)


def subplots(nrows: int = 1, ncols: int = 1, figsize=(4.5, 3.2), **kwargs):
    """``(fig, axes)`` like ``plt.subplots`` but on a standalone ``Figure`` (no pyplot, any backend)."""
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots(nrows, ncols, **kwargs)


def figure_png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _model_info(t: Trained) -> dict:
    return {"task": t.task.to_dict(), "model": t.spec.to_dict(), "train_accuracy": t.train_accuracy,
            "train_seconds": round(t.seconds, 2)}


# --------------------------------------------------------------------------- wv_bar


def wv_bar(lab: Lab) -> ExperimentResult:
    """Accuracy with trained W_V vs W_V fixed to the identity, for each m and L (d = V / 2 < V)."""
    rows = []
    for m in lab.settings.wv_bar_m:
        for L in lab.settings.wv_bar_L:
            task = lab.task(m=m, context_len=L, d_model=max(2, 2**m // 2))
            accs = {name: lab.accuracy(lab.trained(task, train_W_V=flag)) for name, flag in
                    (("trained", True), ("identity", False))}
            rows.append({"m": m, "L": L, "d": task.d_model, "acc_trained": accs["trained"],
                         "acc_identity": accs["identity"], "gap_points": 100 * (accs["trained"] - accs["identity"])})
    fig, axes = subplots(1, len(lab.settings.wv_bar_L), figsize=(4 * len(lab.settings.wv_bar_L), 3.2), squeeze=False)
    for ax, L in zip(axes[0], lab.settings.wv_bar_L):
        sub = [r for r in rows if r["L"] == L]
        x = torch.arange(len(sub)).float()
        ax.bar(x - 0.2, [r["acc_trained"] for r in sub], 0.4, label="trained $W_V$")
        ax.bar(x + 0.2, [r["acc_identity"] for r in sub], 0.4, label="identity $W_V$")
        ax.set_xticks(x.tolist(), [f"m={r['m']}" for r in sub])
        ax.set_ylim(0, 1.05)
        ax.set_title(f"L = {L}")
        ax.set_ylabel("accuracy")
    axes[0][0].legend(loc="lower left")
    return ExperimentResult("wv_bar", {"epsilon": lab.settings.epsilon, "rows": rows}, fig)


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


def wv_replace(lab: Lab) -> ExperimentResult:
    """Trained model vs the same model with W_V replaced by W̄_V, and the principal angles between
    the top-(m+1) singular subspaces of the two matrices, as a function of d."""
    rows = []
    for d in lab.settings.dims:
        task = lab.task(d_model=d)
        trained = lab.trained(task)
        W_bar = constructed_for(trained)
        tokens, y, _ = lab.eval_set(task)
        with replace_weights(trained.model, {W_V_NAME: W_bar[None]}):
            acc_replaced = accuracy(trained.model, tokens, y)
        acc = lab.accuracy(trained)
        W_V = get_weight(trained.model, W_V_NAME)[0]
        k = min(task.m + 1, d)
        rows.append({"d": d, "acc_trained": acc, "acc_replaced": acc_replaced,
                     "lost_points": 100 * (acc - acc_replaced), "k": k,
                     "cos_left": principal_cosines(W_V, W_bar, k, "left").tolist(),
                     "cos_right": principal_cosines(W_V, W_bar, k, "right").tolist()})
    fig, (ax1, ax2) = subplots(1, 2, figsize=(9, 3.2))
    ds = [r["d"] for r in rows]
    ax1.plot(ds, [r["acc_trained"] for r in rows], "o-", label="trained $W_V$")
    ax1.plot(ds, [r["acc_replaced"] for r in rows], "s--", label=r"constructed $\bar W_V$")
    ax1.axvline(2**lab.settings.m, color="grey", lw=0.8, ls=":")
    ax1.set_xscale("log", base=2)
    ax1.set_xlabel("d")
    ax1.set_ylabel("accuracy")
    ax1.legend()
    ax2.plot(ds, [min(r["cos_left"][:3]) for r in rows], "o-", label="min cos, top-3 (left)")
    ax2.plot(ds, [sum(r["cos_left"]) / len(r["cos_left"]) for r in rows], "s--", label="mean cos, top-(m+1)")
    ax2.set_xscale("log", base=2)
    ax2.set_ylim(0, 1.02)
    ax2.set_xlabel("d")
    ax2.set_ylabel("cos(principal angle)")
    ax2.legend()
    return ExperimentResult("wv_replace", {"m": lab.settings.m, "rows": rows}, fig)


# --------------------------------------------------------------------------- geometry


def hamming_inner(lab: Lab) -> ExperimentResult:
    """Mean <W_E(i), W_E(j)> vs D_H(i, j) (i != j) for the main trained model (d < V), with the
    affine fit and Spearman correlation; the identity-W_V model is reported alongside."""
    data = {}
    fig, ax = subplots(figsize=(4.5, 3.2))
    m = lab.settings.m
    for label, flag in (("trained_W_V", True), ("identity_W_V", False)):
        trained = lab.trained(lab.task(), train_W_V=flag)
        means = inner_by_hamming(get_weight(trained.model, "W_E"), m)
        dist = list(range(1, m + 1))
        a, b, r2 = affine_fit(dist, means[1:])
        data[label] = {"distance": list(range(m + 1)), "mean_inner": means.tolist(), "intercept": a, "slope": b,
                       "r2": r2, "spearman": spearman(dist, means[1:]),
                       "memory_by_distance": memory_by_hamming(trained.model, m).tolist(), "model": _model_info(trained)}
        ax.plot(dist, means[1:].tolist(), "o", label=f"{label} (R²={r2:.2f})")
        ax.plot(dist, [a + b * x for x in dist], "-", color=ax.lines[-1].get_color(), lw=0.8)
    ax.set_xlabel("Hamming distance $D_H(i, j)$")
    ax.set_ylabel(r"mean $\langle W_E(i), W_E(j)\rangle$")
    ax.legend()
    return ExperimentResult("hamming_inner", data, fig)


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


def spectrum(lab: Lab) -> ExperimentResult:
    """Eigenvalues of the centred embedding Gram matrix; energy in the top m+1 (trained vs frozen)."""
    m, data = lab.settings.m, {}
    fig, ax = subplots(figsize=(4.5, 3.2))
    for label, flag in (("trained_embeddings", True), ("frozen_embeddings", False)):
        trained = lab.trained(lab.task(), train_embed=flag)
        eig = centred_gram_spectrum(get_weight(trained.model, "W_E"), 2**m)
        k = m + 1
        gap = (eig[k - 1] / eig[k]).item() if eig[k] > 0 else float("inf")
        data[label] = {"eigenvalues": eig.tolist(), "top_m_plus_1_energy": top_energy(eig, k),
                       "gap_ratio_m_plus_1": gap, "model": _model_info(trained)}
        n = min(len(eig), lab.settings.d_model + 2)
        ax.semilogy(range(1, n + 1), eig[:n].clamp_min(1e-8).tolist(), "o-", label=label)
    ax.axvline(m + 1.5, color="grey", ls=":", lw=0.8)
    ax.set_xlabel("index")
    ax.set_ylabel("eigenvalue (centred Gram)")
    ax.legend()
    return ExperimentResult("spectrum", data, fig)


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


def attention(lab: Lab) -> ExperimentResult:
    """Cluster variant with noise: attention on same-cluster vs other context tokens, the QK heat
    map, a CircuitsVis view, and the accuracy lost when attention is made uniform."""
    task = lab.task(neighbourhood="cluster2")
    trained = lab.trained(task)
    tokens, y, is_noise = lab.eval_set(task)
    alpha = readout_attention(trained.model, tokens)
    same = task.same_cluster(tokens, y)
    ratio = (alpha[same].mean() / alpha[~same].mean()).item()
    acc = lab.accuracy(trained)
    acc_uniform = uniform_attention_accuracy(trained.model, tokens, y)
    main = lab.trained(lab.task())
    main_tokens, main_y, main_noise = lab.eval_set(main.task)
    main_alpha = readout_attention(main.model, main_tokens)
    data = {
        "task": task.to_dict(), "model": _model_info(trained),
        "mean_attention_same_cluster": alpha[same].mean().item(),
        "mean_attention_other": alpha[~same].mean().item(), "cluster_ratio": ratio,
        "mean_attention_noise": alpha[is_noise].mean().item(),
        "mean_attention_signal": alpha[~is_noise].mean().item(),
        "accuracy": acc, "accuracy_uniform_attention": acc_uniform, "uniform_drop_points": 100 * (acc - acc_uniform),
        "main_N1": {"accuracy": lab.accuracy(main), "accuracy_uniform_attention":
                    uniform_attention_accuracy(main.model, main_tokens, main_y),
                    "noise_over_signal_attention": (main_alpha[main_noise].mean() / main_alpha[~main_noise].mean()).item()},
    }
    qk = _token_scores(trained.model)
    fig, (ax1, ax2) = subplots(1, 2, figsize=(9.5, 3.8))
    im = ax1.imshow(qk.numpy(), cmap="RdBu_r", vmin=-qk.abs().max().item(), vmax=qk.abs().max().item())
    fig.colorbar(im, ax=ax1, fraction=0.046)
    for b in range(1, 4):
        c = b * 2 ** (task.m - 2) - 0.5
        ax1.axhline(c, color="k", lw=0.5)
        ax1.axvline(c, color="k", lw=0.5)
    ax1.set_title("attention score: query token (row) vs key token")
    clusters = torch.arange(4)
    by_cluster = torch.stack([torch.stack([alpha[(tokens[:, -1] >> (task.m - 2) == qc)[:, None]
                                                 & (tokens >> (task.m - 2) == kc)].mean() for kc in clusters])
                              for qc in clusters])
    im2 = ax2.imshow(by_cluster.numpy(), cmap="viridis")
    fig.colorbar(im2, ax=ax2, fraction=0.046)
    ax2.set_xticks(range(4))
    ax2.set_yticks(range(4))
    ax2.set_xlabel("key token cluster")
    ax2.set_ylabel("query token cluster")
    ax2.set_title("mean attention weight")
    data["attention_by_cluster"] = by_cluster.tolist()
    return ExperimentResult("attention", data, fig, {"attention_view": _circuitsvis_view(trained.model, tokens[0], y[0].item(), task)})


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


def length(lab: Lab) -> ExperimentResult:
    """Accuracy vs context length L (d fixed), trained embeddings (and frozen ones in full mode)."""
    rows = []
    for L in lab.settings.lengths:
        task = lab.task(context_len=L)
        row = {"L": L, "acc_trained": lab.accuracy(lab.trained(task))}
        if lab.settings.frozen_lengths:
            row["acc_frozen"] = lab.accuracy(lab.trained(task, train_embed=False))
        rows.append(row)
    fig, ax = subplots(figsize=(4.5, 3.2))
    Ls = [r["L"] for r in rows]
    ax.plot(Ls, [r["acc_trained"] for r in rows], "o-", label="trained embeddings")
    if lab.settings.frozen_lengths:
        ax.plot(Ls, [r["acc_frozen"] for r in rows], "s--", label="frozen Gaussian embeddings")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("context length L")
    ax.set_ylabel("accuracy")
    ax.legend()
    return ExperimentResult("length", {"d": lab.settings.d_model, "m": lab.settings.m, "rows": rows,
                                       "spearman": spearman(Ls, [r["acc_trained"] for r in rows])}, fig)


def dim(lab: Lab) -> ExperimentResult:
    """Accuracy vs d, trained vs frozen Gaussian embeddings (V = 2^m marks the regime change)."""
    rows = []
    for d in lab.settings.dims:
        task = lab.task(d_model=d)
        rows.append({"d": d, "acc_trained": lab.accuracy(lab.trained(task)),
                     "acc_frozen": lab.accuracy(lab.trained(task, train_embed=False))})
    V = 2**lab.settings.m
    fig, ax = subplots(figsize=(4.5, 3.2))
    ds = [r["d"] for r in rows]
    ax.plot(ds, [r["acc_trained"] for r in rows], "o-", label="trained embeddings")
    ax.plot(ds, [r["acc_frozen"] for r in rows], "s--", label="frozen Gaussian embeddings")
    ax.axvline(V, color="grey", ls=":", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("d")
    ax.set_ylabel("accuracy")
    ax.legend()
    return ExperimentResult("dim", {"V": V, "L": lab.settings.context_len, "rows": rows,
                                    "spearman": spearman(ds, [r["acc_trained"] for r in rows])}, fig)


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


def hijack_synthetic(lab: Lab) -> ExperimentResult:
    """Flip rate to y' as k context tokens are replaced by neighbours of y', and an activation-patching
    map (clean -> fully hijacked, per position of hook_resid_pre) of where the answer is carried."""
    trained = lab.trained(lab.task())
    task, model = trained.task, trained.model
    tokens, y, _ = lab.eval_set(task)
    L = task.context_len
    rows = []
    for frac in lab.settings.hijack_fractions:
        k = int(round(frac * L))
        hijacked, y_alt = hijack_context(tokens, y, k, task, torch.Generator().manual_seed(lab.seed + 77))
        with torch.no_grad():
            pred = model(hijacked)[:, -1].argmax(-1)
        rows.append({"k": k, "fraction": frac, "flip_rate": (pred == y_alt).float().mean().item(),
                     "still_correct": (pred == y).float().mean().item()})
    flips = [r["flip_rate"] for r in rows]
    monotone = all(b >= a - 0.02 for a, b in zip(flips, flips[1:]))
    patch = _patching_map(model, tokens[: lab.settings.n_patch], y[: lab.settings.n_patch], task, lab.seed)
    fig, (ax1, ax2) = subplots(1, 2, figsize=(9.5, 3.2))
    ax1.plot([r["k"] for r in rows], flips, "o-", label="prediction = y'")
    ax1.plot([r["k"] for r in rows], [r["still_correct"] for r in rows], "s--", label="prediction = y")
    ax1.set_xlabel(f"k hijacked context tokens (of L={L})")
    ax1.set_ylabel("rate")
    ax1.legend()
    ax2.bar(range(L), patch["effect"])
    ax2.set_xlabel("patched position (hook_resid_pre)")
    ax2.set_ylabel("restored logit diff (fraction)")
    ax2.set_title("clean → hijacked activation patching")
    return ExperimentResult("hijack_synthetic", {"L": L, "rows": rows, "monotone": monotone,
                                                 "monotone_tolerance": 0.02, "patching": patch}, fig)


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
    return {"clean_logit_diff": clean, "corrupted_logit_diff": corrupt, "effect": effect,
            "effect_readout_position": effect[-1],
            "mean_effect_other_positions": sum(effect[:-1]) / max(1, len(effect) - 1),
            "sum_effect": sum(effect), "engine": "hooks.patching.patch_sweep(sweep='resid_pre')"}


EXPERIMENTS = {
    "wv_bar": wv_bar,
    "wv_replace": wv_replace,
    "hamming_inner": hamming_inner,
    "spectrum": spectrum,
    "attention": attention,
    "length": length,
    "dim": dim,
    "hijack_synthetic": hijack_synthetic,
}
