"""The experiments of "Scaling Laws for Associative Memories", each a function ``ctx -> ExperimentResult``
registered in :data:`EXPERIMENTS` (run in this order); sizes come from the preset (:mod:`.presets`).

All randomness comes from the seed. The theory experiments (error vs d, vs T, the joint table, the naive
contour) are exact batched computations over ``n_trials`` draws; the optimiser comparisons run a mini-grid
through ``ctx.run_sweep`` (resumable, one JSON-lines file in the seed's folder; ``mechmem reproduce --backend``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator

from mechmem.contract.experiments import Context, ExperimentResult, Experiments
from mechmem.core.threads import torch_threads
from mechmem.pages.figures import subplots
from mechmem.papers.scaling.data import (
    Embeddings,
    missing_mass,
    missing_mass_formula,
    prefix_counts,
    sample_tokens,
    targets,
    zipf_probs,
)
from mechmem.papers.scaling.memories import error_curve, fit_loglog_slope, memory_matrix, scheme_error_curve
from mechmem.papers.scaling.optim import (
    OptimConfig,
    batch_counts,
    config_dict,
    init_parameters,
    logits,
    param_groups,
    run_steps,
    sample_stream,
    sgd_approximation,
    train_memory,
)
from mechmem.storage.sweep import expand_grid

EXPERIMENTS = Experiments()
SCHEME_LABELS = {
    "all": "q = 1 on every token",
    "frequency": "q = p (frequency)",
    "threshold": "q = 1{x < d/8} (threshold)",
}
# the paper's table (B): threshold P = d // 12 over the seen tokens, N = 1000, M = 5, alpha = 2 (30 trials)
JOINT_DS = [10, 20, 50, 100, 200, 1000]
JOINT_TS = [10, 100, 1000, 10000]
JOINT_REFERENCE = [
    [0.361, 0.314, 0.186, 0.192, 0.191, 0.184],
    [0.361, 0.314, 0.110, 0.067, 0.059, 0.059],
    [0.361, 0.314, 0.103, 0.058, 0.032, 0.017],
    [0.361, 0.314, 0.103, 0.057, 0.030, 0.0061],
]


def theory_slopes(alpha: float) -> dict[str, float]:
    """Predicted log-log slopes in d: threshold -(alpha-1), q = p -(alpha-1)/(2 alpha); in T: -1 + 1/alpha."""
    return {"threshold": -(alpha - 1), "frequency": -(alpha - 1) / (2 * alpha), "T": -1 + 1 / alpha}


def _log_axes(ax, xs=None, y: bool = True) -> None:
    """Log axes that stay readable: x ticks at the values ``xs`` (plain numbers) or at powers of ten; y ticks at
    1, 2 and 5 times powers of ten, in plain numbers; no minor labels."""
    ax.set_xscale("log")
    if xs is not None:
        ax.set_xticks(list(xs), [f"{x:g}" for x in xs])
        ax.xaxis.set_minor_locator(NullLocator())
    else:
        ax.xaxis.set_major_locator(LogLocator(base=10, numticks=6))
        ax.xaxis.set_minor_formatter(NullFormatter())
    if y:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=12))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())


# ----------------------------------------------------------------------------------------------------------------
# theory: infinite data, finite capacity
# ----------------------------------------------------------------------------------------------------------------


@EXPERIMENTS.register
def error_vs_d(ctx: Context) -> ExperimentResult:
    """Error vs d of q = 1, q = p and q = 1{x < d/8} (N = 1000, M = 5) with fitted slopes over d >= 20."""
    p_, alphas, D_GRID = ctx.preset, ctx.preset.alphas, list(ctx.preset.d_grid)
    N, M = 1000, 5
    emb = Embeddings.draw(N, M, max(D_GRID), p_.n_trials, ctx.generator())
    f = targets(N, M)
    res: dict[str, Any] = {
        "N": N,
        "M": M,
        "ds": D_GRID,
        "n_trials": p_.n_trials,
        "threshold_divisor": 8,
        "by_alpha": {},
    }
    fig, axes = subplots(1, len(alphas), figsize=(5.2 * len(alphas), 4.2), squeeze=False)
    for ax, alpha in zip(axes[0], alphas):
        p = zipf_probs(N, alpha)
        entry: dict[str, Any] = {"theory_slopes": theory_slopes(alpha), "mean_error": {}, "slope": {}}
        for scheme in ("all", "frequency", "threshold"):
            err = scheme_error_curve(scheme, emb, D_GRID, p, f, divisor=8).mean(-1)
            entry["mean_error"][scheme] = err.tolist()
            fit = [(d, e) for d, e in zip(D_GRID, err.tolist()) if d >= 20 and e > 0]
            entry["slope"][scheme] = fit_loglog_slope(*zip(*fit))[0] if len(fit) >= 2 else float("nan")
            ax.plot(D_GRID, err.tolist(), "o-", label=f"{SCHEME_LABELS[scheme]}: slope {entry['slope'][scheme]:.2f}")
        ds = torch.tensor(D_GRID, dtype=torch.float64)
        for scheme, c, style in (("threshold", 3.5, "k--"), ("frequency", 0.35, "k:")):
            s = entry["theory_slopes"][scheme]
            ax.plot(D_GRID, (c * ds**s).tolist(), style, lw=0.8, label=f"theory for {scheme}: slope {s:.2f}")
        _log_axes(ax, D_GRID)
        ax.set(title=f"Zipf exponent α = {alpha}", xlabel="memory dimension d", ylabel="recall error (probability)")
        ax.legend(fontsize=7)
        res["by_alpha"][str(alpha)] = entry
    fig.suptitle(f"Error vs memory size (N = {N} tokens, M = {M} classes, {p_.n_trials} draws)")
    return ExperimentResult(res, {"error_vs_d": fig})


# ----------------------------------------------------------------------------------------------------------------
# theory: finite data
# ----------------------------------------------------------------------------------------------------------------


def _finite_data_errors(N, M, alpha, ds, Ts, n_trials, seed, scheme="top_seen", divisor=12):
    """Errors ``[n_T, n_d, trials]`` of a finite-data scheme, the T-prefixes of one long draw per trial."""
    gen = torch.Generator().manual_seed(seed)
    emb = Embeddings.draw(N, M, max(ds), n_trials, gen)
    p, f = zipf_probs(N, alpha), targets(N, M)
    counts = prefix_counts(sample_tokens(p, max(Ts), n_trials, gen), Ts, N)  # [n_T, trials, N]
    err = scheme_error_curve(scheme, emb, ds, p, f, divisor=divisor, counts=counts)
    return err, counts, p


@EXPERIMENTS.register
def error_vs_T(ctx: Context) -> ExperimentResult:
    """Error vs T at d = 1000 (threshold P = d/12 over the seen tokens, and all seen tokens) vs the missing mass;
    ``rel_error_seen_vs_missing_mass``: every seen token stored vs (1 - 1/M) x the exact missing mass."""
    N, M, alpha, d = 1000, 5, 2.0, 1000
    T_GRID, n_trials = list(ctx.preset.t_grid), ctx.preset.n_trials
    res: dict[str, Any] = {"N": N, "M": M, "alpha": alpha, "d": d, "Ts": T_GRID, "n_trials": n_trials}
    for scheme in ("top_seen", "seen"):
        err, counts, p = _finite_data_errors(N, M, alpha, [d], T_GRID, n_trials, ctx.seed, scheme=scheme)
        res[f"mean_error_{scheme}"] = err[:, 0].mean(-1).tolist()
    unseen = ((counts == 0).double() * p).sum(-1).mean(-1)
    res["empirical_unseen_mass"] = unseen.tolist()
    res["exact_missing_mass"] = [missing_mass(p, T) for T in T_GRID]
    res["missing_mass_formula"] = [missing_mass_formula(alpha, T) for T in T_GRID]
    window = [i for i, T in enumerate(T_GRID) if 100 <= T <= 10000]
    e = [res["mean_error_top_seen"][i] for i in window]
    mm = [res["missing_mass_formula"][i] for i in window]
    res["fit_window"] = [T_GRID[i] for i in window]
    res["slope_top_seen"] = fit_loglog_slope(res["fit_window"], e)[0]
    res["rel_error_vs_formula"] = [abs(a - b) / b for a, b in zip(e, mm)]
    # an unseen token has no stored association: its class is right by chance 1/M, so the error of a memory that
    # stores every seen token is (1 - 1/M) x the mass of the unseen tokens (the claim's comparison)
    seen = [res["mean_error_seen"][i] for i in window]
    unseen_share = [(1 - 1 / M) * res["exact_missing_mass"][i] for i in window]
    res["rel_error_seen_vs_missing_mass"] = [abs(a - b) / b for a, b in zip(seen, unseen_share)]
    res["rel_error_vs_formula_times_1_minus_1_over_M"] = [
        abs(a - b * (1 - 1 / M)) / (b * (1 - 1 / M)) for a, b in zip(e, mm)
    ]
    res["formula_vs_exact_rel_error"] = [
        abs(a - b) / b for a, b in zip(res["missing_mass_formula"], res["exact_missing_mass"])
    ]
    fig, ax = subplots(figsize=(6, 4.4))
    ax.plot(
        T_GRID,
        res["mean_error_top_seen"],
        "o-",
        label=f"the {d // 12} most frequent seen tokens stored (slope {res['slope_top_seen']:.2f})",
    )
    ax.plot(T_GRID, res["mean_error_seen"], "s-", label="every seen token stored")
    ax.plot(T_GRID, res["exact_missing_mass"], "k-", lw=0.8, label="expected mass of unseen tokens (exact)")
    ax.plot(T_GRID, res["missing_mass_formula"], "k--", lw=0.8, label="missing-mass formula (asymptotic)")
    _log_axes(ax, T_GRID)
    ax.set(
        xlabel="number of samples T",
        ylabel="recall error (probability)",
        title=f"Error vs data (d = {d}, N = {N}, α = {alpha})",
    )
    ax.legend(fontsize=7)
    return ExperimentResult(res, {"error_vs_T": fig})


@EXPERIMENTS.register
def joint_table(ctx: Context) -> ExperimentResult:
    """The (d, T) table (B) of the paper's theory, compared cell by cell with the reference values."""
    N, M, alpha, n_trials = 1000, 5, 2.0, ctx.preset.n_trials
    err, _, _ = _finite_data_errors(N, M, alpha, JOINT_DS, JOINT_TS, n_trials, ctx.seed)
    table = err.mean(-1).tolist()
    rel, within = [], []
    for row, ref_row in zip(table, JOINT_REFERENCE):
        for v, r in zip(row, ref_row):
            rel.append(abs(v - r) / r)
            within.append(abs(v - r) <= 0.2 * r or (r < 0.05 and abs(v - r) <= 0.01))
    res = {
        "N": N,
        "M": M,
        "alpha": alpha,
        "ds": JOINT_DS,
        "Ts": JOINT_TS,
        "n_trials": n_trials,
        "mean_error": table,
        "reference": JOINT_REFERENCE,
        "max_rel_error": max(rel),
        "cells_within_tolerance": sum(within),
        "n_cells": len(within),
    }
    fig, ax = subplots(figsize=(6, 4.4))
    for T, row, ref in zip(JOINT_TS, table, JOINT_REFERENCE):
        line = ax.plot(JOINT_DS, row, "o-", label=f"T = {T} samples")[0]
        ax.plot(JOINT_DS, ref, "x:", color=line.get_color())
    ax.plot([], [], "kx:", label="reference table (same colour)")
    _log_axes(ax, JOINT_DS)
    ax.set(
        xlabel="memory dimension d",
        ylabel="recall error (probability)",
        title="Threshold P = d/12 over the seen tokens: measured vs reference",
    )
    ax.legend(fontsize=7)
    return ExperimentResult(res, {"joint_table": fig})


@EXPERIMENTS.register
def naive_contour(ctx: Context) -> ExperimentResult:
    """The naive scheme q = 1{seen} at alpha = 0.5, N = 100: error over (d, T)."""
    N, M, alpha = 100, 5, 0.5
    ds, Ts = [10, 30, 100, 300, 1000], [10, 100, 1000, 10000]
    err, _, _ = _finite_data_errors(N, M, alpha, ds, Ts, ctx.preset.n_trials, ctx.seed, scheme="seen")
    table = err.mean(-1)
    res = {"N": N, "M": M, "alpha": alpha, "ds": ds, "Ts": Ts, "mean_error": table.tolist()}
    fig, ax = subplots(figsize=(5.5, 4.2))
    im = ax.contourf(np.log10(ds), np.log10(Ts), table.numpy(), levels=12, cmap="viridis")
    fig.colorbar(im, ax=ax, label="recall error (probability)")
    ax.set(
        xlabel="log10 memory dimension d",
        ylabel="log10 number of samples T",
        title=f"Storing every seen token (N = {N}, α = {alpha})",
    )
    return ExperimentResult(res, {"naive_contour": fig})


# ----------------------------------------------------------------------------------------------------------------
# optimisation-based estimators
# ----------------------------------------------------------------------------------------------------------------


def optim_point(config: dict) -> dict:
    """Sweep worker: train one :class:`OptimConfig` (all its trials) and return the final per-trial errors."""
    cfg = OptimConfig(**{**config, "betas": tuple(config.get("betas", (0.0, 0.0)))})
    with torch_threads(1):
        result = train_memory(cfg)
    return {"final": result.final.tolist()}


def optimiser_grid(preset, seed: int) -> list[dict]:
    """The optimiser mini-grid (N = 100, M = 5, alpha = 2), tagged by study."""
    base = dict(N=100, M=5, alpha=2.0, n_trials=preset.optim_trials, seed=seed, layernorm=False)
    T, lrs = preset.optim_T, [0.1, 1.0, 10.0, 100.0]
    configs = list(
        expand_grid(
            {"d": list(preset.tuned_ds), "optimizer": ["sgd", "adam"], "lr": lrs},
            {**base, "model": "matrix", "T": T, "B": 256, "study": "tuned"},
        )
    )
    for d in preset.small_ds:
        for B, lr in ((16, 1.0), (1024, 10.0)):
            configs.append(
                {**base, "model": "matrix", "optimizer": "adam", "T": 1024, "B": B, "lr": lr, "d": d, "study": "batch"}
            )
    configs += expand_grid(
        {"d": list(preset.small_ds), "lr": lrs},
        {**base, "model": "matrix", "optimizer": "sgd", "T": T, "B": 64, "study": "lr"},
    )
    configs += expand_grid(
        {"model": ["matrix", "learnable", "exponential"]},
        {**base, "optimizer": "sgd", "lr": 1.0, "T": T, "B": 16, "d": 10, "study": "embeddings"},
    )
    for c in configs:
        c["log_every"] = c["T"] // c["B"]
    return configs


def _run_point(config: dict) -> dict:
    """Strip the ``study`` tag before building the OptimConfig."""
    return optim_point({k: v for k, v in config.items() if k != "study"})


@EXPERIMENTS.register(sweeps=True)
def optimisers(ctx: Context) -> ExperimentResult:
    """Adam vs SGD (tuned lr), batch size, SGD learning rate, learned embeddings: orderings per trial."""
    configs = optimiser_grid(ctx.preset, ctx.seed)
    path = ctx.out / "sweeps" / "optimisers.jsonl"
    rows = ctx.run_sweep(_run_point, configs, path, workers=ctx.preset.workers, desc="optimiser grid")
    final = {}
    for row in rows:
        c = row["config"]
        final[(c["study"], c["model"], c["optimizer"], c["d"], c["B"], c["lr"])] = torch.tensor(row["result"]["final"])
    res: dict[str, Any] = {"grid_size": len(configs), "sweep_file": str(path.relative_to(ctx.out))}

    # Adam vs SGD at their tuned lr (per trial), d >= 50
    tuned = {}
    for (study, _model, opt, d, _B, _lr), e in final.items():
        if study == "tuned":
            tuned[(opt, d)] = torch.minimum(tuned[(opt, d)], e) if (opt, d) in tuned else e
    tuned_ds = sorted({d for _, d in tuned})
    res["tuned"] = {opt: {str(d): tuned[(opt, d)].mean().item() for d in tuned_ds} for opt in ("sgd", "adam")}
    claim_ds = [d for d in tuned_ds if d >= 50]
    wins = torch.stack([tuned[("adam", d)] < tuned[("sgd", d)] for d in claim_ds]).all(0)
    res["adam_beats_sgd_fraction"] = wins.double().mean().item()

    # batch size at T = 1024
    batch_ds = sorted({k[3] for k in final if k[0] == "batch"})
    small = {d: final[("batch", "matrix", "adam", d, 16, 1.0)] for d in batch_ds}
    large = {d: final[("batch", "matrix", "adam", d, 1024, 10.0)] for d in batch_ds}
    res["batch"] = {
        "B16_lr1": {str(d): small[d].mean().item() for d in batch_ds},
        "B1024_lr10": {str(d): large[d].mean().item() for d in batch_ds},
    }
    res["small_batch_beats_large_fraction"] = (
        torch.stack([small[d] < large[d] for d in batch_ds]).all(0).double().mean().item()
    )

    # SGD learning rate at B = 64
    lr_ds = sorted({k[3] for k in final if k[0] == "lr"})
    lrs = sorted({k[5] for k in final if k[0] == "lr"})
    by_lr = {d: torch.stack([final[("lr", "matrix", "sgd", d, 64, lr)] for lr in lrs]) for d in lr_ds}  # [lr, trials]
    res["sgd_lr"] = {"lrs": lrs, "mean_error": {str(d): by_lr[d].mean(-1).tolist() for d in lr_ds}}
    mono = torch.stack([(by_lr[d][1:] < by_lr[d][:-1]).all(0) for d in lr_ds]).all(0)
    res["sgd_lr_monotone_fraction"] = mono.double().mean().item()
    res["sgd_lr_monotone_fraction_by_d"] = {
        str(d): (by_lr[d][1:] < by_lr[d][:-1]).all(0).double().mean().item() for d in lr_ds
    }

    # learned embeddings at d = 10
    emb = {m: final[("embeddings", m, "sgd", 10, 16, 1.0)] for m in ("matrix", "learnable", "exponential")}
    res["embeddings_d10"] = {m: e.mean().item() for m, e in emb.items()}
    res["learned_embeddings_beat_fixed_fraction"] = (emb["learnable"] < 0.5 * emb["matrix"]).double().mean().item()
    return ExperimentResult(res, {"optimisers": _optimisers_figure(res, tuned_ds, batch_ds, lr_ds, lrs, ctx.preset)})


def _optimisers_figure(res: dict, tuned_ds, batch_ds, lr_ds, lrs, preset):
    T = preset.optim_T
    fig, axes = subplots(1, 4, figsize=(19, 4.4))
    names = {"sgd": "SGD", "adam": "Adam (sign-like)"}
    for opt in ("sgd", "adam"):
        axes[0].plot(tuned_ds, [res["tuned"][opt][str(d)] for d in tuned_ds], "o-", label=f"{names[opt]}, best lr")
    axes[0].set(title=f"Adam vs SGD at the best lr (B = 256, T = {T})", xlabel="memory dimension d")
    batch_names = {"B16_lr1": "batch 16, lr 1", "B1024_lr10": "batch 1024, lr 10"}
    for key, vals in res["batch"].items():
        axes[1].plot(batch_ds, [vals[str(d)] for d in batch_ds], "o-", label=f"Adam, {batch_names[key]}")
    axes[1].set(title="Batch size (Adam, T = 1024)", xlabel="memory dimension d")
    for d in lr_ds:
        axes[2].plot(lrs, res["sgd_lr"]["mean_error"][str(d)], "o-", label=f"d = {d}")
    axes[2].set(title=f"SGD learning rate (B = 64, T = {T})", xlabel="learning rate")
    _log_axes(axes[0], tuned_ds)
    _log_axes(axes[1], batch_ds)
    _log_axes(axes[2], lrs)
    model_names = {
        "matrix": "fixed embeddings\n(matrix W)",
        "learnable": "learned\nembeddings",
        "exponential": "exponential\nmodel",
    }
    axes[3].bar([model_names[m] for m in res["embeddings_d10"]], list(res["embeddings_d10"].values()))
    axes[3].set(title="Learned embeddings (SGD lr 1, B = 16, d = 10)", xlabel="memory model", yscale="log")
    axes[3].yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=12))
    axes[3].yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axes[3].yaxis.set_minor_formatter(NullFormatter())
    for ax in axes:
        ax.set_ylabel("final recall error (mean over trials)")
    for ax in axes[:3]:
        ax.legend(fontsize=7)
    fig.suptitle(f"Optimisation-based memories (N = 100 tokens, M = 5 classes, α = 2, {preset.optim_trials} trials)")
    return fig


@EXPERIMENTS.register(name="sgd_approximation")
def sgd_vs_approximation(ctx: Context) -> ExperimentResult:
    """Real SGD (W = 0 at start) vs the analytic recursion of the paper, on the same embeddings and batches."""
    steps = ctx.preset.sgd_steps
    cfg = OptimConfig(
        model="matrix",
        optimizer="sgd",
        N=100,
        M=5,
        alpha=2.0,
        d=10,
        T=1000 * steps,
        B=1000,
        lr=1.0,
        init="zero",
        n_trials=100,
        seed=ctx.seed,
    )
    gen = ctx.generator()
    params = init_parameters(cfg, gen)
    xs = sample_stream(cfg, gen)
    real = run_steps(cfg, param_groups(cfg, params), lambda x: logits(cfg, params, x), xs)
    q = sgd_approximation(batch_counts(xs, cfg.N, cfg.B), cfg.lr, cfg.B, cfg.M)  # [steps+1, trials, N]
    emb = Embeddings(params["E"].detach(), params["U"].detach())
    p, f = zipf_probs(cfg.N, cfg.alpha), targets(cfg.N, cfg.M)
    approx = error_curve(q[:, None], emb, [cfg.d], p, f)[:, 0]  # [steps+1, trials]
    real_mean, approx_mean = real.errors.mean(-1)[1:], approx.mean(-1)[1:]
    gap = (real_mean - approx_mean).abs()
    res = {
        "steps": list(range(1, steps + 1)),
        "real_error": real_mean.tolist(),
        "approx_error": approx_mean.tolist(),
        "gap_first_10_steps": gap[:10].max().item(),
        "gap_all_steps": gap.max().item(),
        "config": config_dict(cfg),
    }
    fig, ax = subplots(figsize=(6, 4.2))
    ax.plot(res["steps"], res["real_error"], label="SGD")
    ax.plot(res["steps"], res["approx_error"], "--", label="analytic approximation of SGD")
    ax.set(
        xlabel="SGD step",
        ylabel="recall error (mean over 100 trials)",
        title="SGD vs its approximation (N = 100, d = 10, B = 1000, lr = 1)",
    )
    ax.legend()
    return ExperimentResult(res, {"sgd_approximation": fig})


@EXPERIMENTS.register
def heatmaps(ctx: Context) -> ExperimentResult:
    """softmax(E W U^T) for q = 1 vs q = p_hat (N 10, M 5, d 10, alpha 1, T 1000), and SGD snapshots
    (N 10, d 5, alpha 1.5, lr 0.1, batch 1)."""
    N, M, d = 10, 5, 10
    gen = ctx.generator()
    E, U = Embeddings.draw(N, M, d, 1, gen).at(d)
    E, U = E[0], U[0]
    p, f = zipf_probs(N, 1.0), targets(N, M)
    counts = prefix_counts(sample_tokens(p, 1000, 1, gen), [1000], N)[0, 0]
    maps = {}
    for name, q in (("q=1", torch.ones(N, dtype=torch.float64)), ("q=p_hat", counts / counts.sum())):
        W = memory_matrix(q, E, U, f)
        maps[name] = torch.softmax(E @ W.T @ U.T, -1)
    cfg = OptimConfig(
        model="matrix",
        optimizer="sgd",
        N=10,
        M=5,
        alpha=1.5,
        d=5,
        T=200,
        B=1,
        lr=0.1,
        init="zero",
        seed=ctx.seed,
        snapshot_every=50,
        log_every=50,
    )
    snaps = train_memory(cfg).snapshots
    res = {
        "association_maps": {k: v.tolist() for k, v in maps.items()},
        "sgd_snapshots": {str(s): m.tolist() for s, m in snaps},
    }
    titles = {"q=1": "q = 1 (d = 10)", "q=p_hat": "q = empirical frequency\n(d = 10, T = 1000)"}
    panels = [(titles[k], m) for k, m in maps.items()] + [
        (f"SGD, step {s}\n(d = 5, lr 0.1, batch 1)", m) for s, m in snaps
    ]
    fig, axes = subplots(1, len(panels), figsize=(2.9 * len(panels) + 1, 3.6))
    for ax, (title, m) in zip(axes, panels):
        im = ax.imshow(torch.as_tensor(m).numpy(), cmap="magma", vmin=0, vmax=1, aspect="auto")
        ax.set_title(title, fontsize=9)
        ax.set_xticks(range(M))
        ax.set_yticks(range(N))
        ax.set_xlabel("class y")
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("input token x (most frequent first)")
    fig.colorbar(im, ax=list(axes), fraction=0.02, label="probability of class y given x")
    fig.suptitle("What the memory recalls: softmax(E W Uᵀ) (right class: y = x mod 5)")
    return ExperimentResult(res, {"heatmaps": fig})
