"""The experiments of the reproduction, each a function ``ctx -> ExperimentResult`` registered in
:data:`EXPERIMENTS` (run in this order); sizes come from the preset (:mod:`.presets`). The capacity searches and
the Fig. 4 sweeps go through ``mechmem.storage.sweep.run_sweep`` (one JSON-lines row per configuration, in the seed's
folder, resumable).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from mechmem.contract.experiments import Context, ExperimentResult, Experiments
from mechmem.core.threads import torch_threads
from mechmem.pages.figures import integer_ticks, plain_log_axes, subplots
from mechmem.papers.factual import capacity
from mechmem.papers.factual.dynamics import stages, train_dynamics
from mechmem.papers.factual.fit import train_config_point
from mechmem.papers.factual.mechanism import analyse, train_corner
from mechmem.papers.factual.task import FactualRecallTask

EXPERIMENTS = Experiments()


def _sweep(ctx: Context, fn, configs: list[dict], name: str, desc: str) -> list[dict]:
    """``ctx.run_sweep`` into ``<seed folder>/<name>.jsonl`` with the run's sweep options (default: 1 worker)."""
    return ctx.run_sweep(fn, configs, ctx.out / f"{name}.jsonl", workers=1, desc=desc)


def loglog_slope(x, y) -> float:
    """Least-squares slope of ``log y`` against ``log x``."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    return float(np.polyfit(lx, ly, 1)[0]) if len(set(lx.tolist())) > 1 else float("nan")


# ----------------------------------------------------------------------------- dynamics (Fig. 5)


@EXPERIMENTS.register(name="dynamics")
def dynamics_experiment(ctx: Context) -> ExperimentResult:
    """Fig. 5: the linear-attention model learns the relation, hallucinates, then learns the subject."""
    cfg = dataclasses.replace(ctx.preset.dynamics, seed=ctx.seed)
    history = train_dynamics(cfg, progress=ctx.progress)
    st = stages(history, cfg.R, cfg.D)
    results = {"config": dataclasses.asdict(cfg), "history": history, **st}
    fig, ax = subplots(figsize=(7, 4.4))
    steps = [h["step"] for h in history]
    names = {
        "total": "total loss",
        "relation": "relation-only loss (right answer block?)",
        "subject": "subject-only loss (right slot in the block?)",
    }
    for key in ("total", "relation", "subject"):
        ax.plot(steps, [h[key] for h in history], label=names[key])
    for value, name in ((math.log(cfg.R * cfg.D), "ln(RD)"), (math.log(cfg.D), "ln D"), (math.log(cfg.R), "ln R")):
        ax.axhline(value, color="grey", lw=0.6, ls=":")
        ax.text(steps[0], value, name, fontsize=7, va="bottom", ha="left")
    ax.plot([], [], color="grey", lw=0.6, ls=":", label="reference levels ln(RD), ln D, ln R")
    for step in (st["stage1_end_step"], st["stage2_end_step"]):
        if step is not None:
            ax.axvline(step, color="k", lw=0.6, ls="--")
    ax.plot([], [], color="k", lw=0.6, ls="--", label="ends of stage 1 and stage 2")
    ax.set(
        xlabel="gradient-descent step",
        ylabel="test cross-entropy (nats)",
        title="Linear attention, orthogonal embeddings: sequential learning (Fig. 5)",
    )
    ax.legend(loc="center right", fontsize=8)
    return ExperimentResult(results, {"dynamics": fig})


# ----------------------------------------------------------------------------- capacity (Fig. 1, Fig. 6)


def capacity_point(config: dict) -> dict:
    """Sweep entry point: the largest N stored at >= 99 % for one (kind, d, m, M, seed)."""
    with torch_threads(1):
        N = capacity.max_stored(
            config["kind"],
            config["d"],
            m=config.get("m"),
            M=config.get("M"),
            seed=config["seed"],
            max_steps=config.get("max_steps"),
            hi=config.get("hi"),
        )
    return {"N": N}


def capacity_configs(p, seeds: list[int]) -> list[dict]:
    """Every capacity search of preset ``p`` at these seeds."""
    configs = [dict(kind="linear", d=d, seed=seed) for d in p.linear_d for seed in seeds]
    configs += [dict(kind="outer", d=d, seed=seeds[0] + k) for d in p.outer_d for k in range(p.outer_seeds)]
    configs += [
        dict(kind="mlp", d=d, m=r * d, seed=seed, max_steps=p.mlp_steps)
        for d in p.mlp_d
        for r in p.mlp_ratio
        for seed in seeds
    ]
    # M = 32: search up to 2 m d (the authors' m d can clip N ~ 0.83 m d at small d)
    configs += [
        dict(kind="mlp", d=d, m=d, M=32, seed=seed, max_steps=p.mlp_steps, hi=2 * d * d)
        for d in p.mlp32_d
        for seed in seeds
    ]
    return configs


@EXPERIMENTS.register(name="capacity", sweeps=True)
def capacity_experiment(ctx: Context) -> ExperimentResult:
    """Fig. 1 and Fig. 6: the largest number of associations a linear / MLP memory stores at 99 %."""
    p = ctx.preset
    seeds = [ctx.seed + k for k in p.seeds]
    rows = _sweep(ctx, capacity_point, capacity_configs(p, seeds), "capacity", "capacity searches")
    points = [{**r["config"], **r["result"]} for r in rows]
    lin = _mean_by(points, "linear", "d")
    outer = _mean_by(points, "outer", "d")
    mlp = [p for p in points if p["kind"] == "mlp" and p.get("M") is None]
    mlp32 = [p for p in points if p["kind"] == "mlp" and p.get("M") == 32]
    lin_fit = {d: N for d, N in lin.items() if d >= 11} or lin
    results = {
        "settings": {
            k: v
            for k, v in {**dataclasses.asdict(p), "seeds": seeds}.items()
            if k.startswith(("linear", "outer", "mlp", "seeds"))
        },
        "points": points,
        "linear_constant": float(np.mean([capacity.capacity_constant(N, d) for d, N in lin_fit.items()])),
        "linear_slope": loglog_slope([d * d for d in lin], [N * math.log(N) for N in lin.values()]),
        "outer_constant": float(np.mean([capacity.capacity_constant(N, d) for d, N in outer.items()])),
        "mlp_constant": float(np.mean([capacity.capacity_constant(p["N"], p["d"], p["m"]) for p in mlp])),
        "mlp32_constant": float(
            np.mean([capacity.capacity_constant(p["N"], p["d"], p["m"], log=False) for p in mlp32])
        ),
        "mlp32_at_search_ceiling": [p["d"] for p in mlp32 if p["N"] >= p["hi"]],
    }
    return ExperimentResult(results, {"capacity": _capacity_figure(lin, outer, mlp, mlp32)})


def _mean_by(points, kind, key) -> dict:
    groups: dict = {}
    for p in points:
        if p["kind"] == kind:
            groups.setdefault(p[key], []).append(p["N"])
    return {k: float(np.mean(v)) for k, v in sorted(groups.items())}


def _n_from_nlogn(target: np.ndarray) -> np.ndarray:
    """Solve ``N ln N = target`` (Newton), for the reference lines."""
    N = np.maximum(target / np.log(np.maximum(target, 3.0)), 2.0)
    for _ in range(30):
        N = N - (N * np.log(N) - target) / (np.log(N) + 1)
    return N


def _reference_range(x: np.ndarray) -> np.ndarray:
    """Where a reference line is drawn: over the measured range, and at least a factor 2 each side of a single
    point (so one measurement still reads against the paper's line)."""
    low, high = float(x.min()), float(x.max())
    if high <= low * 1.5:
        low, high = low / 2, high * 2
    return np.geomspace(low, high, 20)


def _capacity_figure(lin, outer, mlp, mlp32):
    fig, (a, b) = subplots(1, 2, figsize=(11.5, 4.4))
    d2 = np.array([d * d for d in lin])
    a.loglog(d2, list(lin.values()), "o-", label="trained linear (Adam)")
    a.loglog([d * d for d in outer], list(outer.values()), "s-", label="outer product")
    grid = np.geomspace(min(d2.min(), min(d * d for d in outer)), max(d2.max(), max(d * d for d in outer)))
    a.loglog(grid, _n_from_nlogn(grid / 1.3), "k--", label=r"paper: $N\ln N = d^2/1.3$")
    a.set(
        xlabel="$d^2$ (d: embedding dimension)",
        ylabel="associations N stored at 99 % accuracy",
        title="Linear associative memory (Fig. 1 left)",
    )
    plain_log_axes(a)
    a.legend()
    if mlp:
        md = np.array([p["m"] * p["d"] for p in mlp])
        b.loglog(md, [p["N"] for p in mlp], "o", label="MLP, M = N")
        line = _reference_range(md)
        b.loglog(line, _n_from_nlogn(line / 0.35), "k--", label=r"paper: $N\ln N = md/0.35$")
    if mlp32:
        md32 = np.array([p["m"] * p["d"] for p in mlp32])
        b.loglog(md32, [p["N"] for p in mlp32], "s", label="MLP, M = 32")
        line = _reference_range(md32)
        b.loglog(line, line / 1.2, "k:", label="paper: $N = md/1.2$")
    b.set(
        xlabel="$m d$ (m: MLP width)",
        ylabel="associations N stored at 99 % accuracy",
        title="MLP associative memory (Fig. 1 right, Fig. 6)",
    )
    if mlp or mlp32:
        plain_log_axes(b)
    b.legend()
    return fig


# ----------------------------------------------------------------------------- H x m trade-off (Fig. 4 right)


@EXPERIMENTS.register(name="tradeoff", sweeps=True)
def tradeoff_experiment(ctx: Context) -> ExperimentResult:
    """Fig. 4 right: accuracy over heads H x MLP width m (the facts fit in attention, the MLP, or both)."""
    p = ctx.preset
    d, d_h = 32, 8
    heads, widths = list(p.heads), list(p.widths)
    configs = [
        dict(
            S=p.S,
            R=p.R,
            D=p.D,
            d=d,
            H=H,
            d_h=d_h,
            m=m,
            lr=1e-2,
            steps=p.grid_steps,
            batch_size=p.batch,
            stop_at=1.0,
            seed=ctx.seed,
            table_seed=64,
        )
        for H in heads
        for m in widths
    ]
    rows = _sweep(ctx, train_config_point, configs, "tradeoff", "H x m grid")
    acc = np.array(
        [[r["result"]["accuracy"] for r in rows[i * len(widths) : (i + 1) * len(widths)]] for i in range(len(heads))]
    )  # [H, m]
    H_att, m_att = max(heads), min(widths)
    H_mlp, m_mlp = p.mlp_heavy
    results = {
        "heads": heads,
        "widths": widths,
        "accuracy": acc.tolist(),
        "S": p.S,
        "R": p.R,
        "D": p.D,
        "d": d,
        "d_h": d_h,
        "attention_only_accuracy": float(acc[heads.index(H_att), widths.index(m_att)]),
        "mlp_heavy_accuracy": float(acc[heads.index(H_mlp), widths.index(max(widths))]),
        "few_heads_accuracy": float(max(acc[i].max() for i, H in enumerate(heads) if H <= 4)),
        "corners": {"attention_only": [H_att, m_att], "mlp_heavy": [H_mlp, max(widths)]},
    }
    fig, ax = subplots(figsize=(6, 4.8))
    im = ax.imshow(acc.T, origin="lower", vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(heads)), [f"{H}\n({d * d_h * H})" for H in heads])
    ax.set_yticks(range(len(widths)), [f"{m} ({d * m})" for m in widths])
    for i in range(acc.shape[0]):
        for j in range(acc.shape[1]):
            ax.text(
                i, j, f"{acc[i, j]:.2f}", ha="center", va="center", fontsize=8, color="k" if acc[i, j] > 0.6 else "w"
            )
    ax.set(
        xlabel="heads H (attention parameters d·d_h·H)",
        ylabel="MLP width m (MLP parameters d·m)",
        title=f"Where the facts fit: S = R = {p.S}, D = {p.D}, d = {d}, d_h = {d_h}",
    )
    fig.colorbar(im, ax=ax, label="accuracy on all facts (fraction)")
    return ExperimentResult(results, {"tradeoff": fig})


# ----------------------------------------------------------------------------- facts vs params (Fig. 4 left)


def mix_point(config: dict) -> dict:
    """Sweep entry point: binary search of ``size`` (S = R = size) for one (alpha, beta, d) mix."""
    d, H = config["d"], config["H"]
    d_h, m = int(d * config["alpha"] / H), int(d * config["beta"])
    if d_h < 1 or m < 1:
        return {"degenerate": True, "d_h": d_h, "m": m}
    tried = {}

    def ok(size: int) -> bool:
        res = train_config_point(
            dict(
                S=size,
                R=size,
                D=config["D"],
                d=d,
                H=H,
                d_h=d_h,
                m=m,
                lr=config["lr"],
                steps=config["steps"],
                batch_size=config["batch_size"],
                stop_at=0.99,
                seed=config["seed"],
                table_seed=64,
            )
        )
        tried[size] = res["accuracy"]
        return res["accuracy"] >= 0.99

    lo, hi = config["lo"], config["hi"]
    size = lo if not ok(lo) else _coarse_search(ok, lo, hi, config["ratio"])
    from mechmem.papers.factual.model import parameter_count

    return {
        "size": size,
        "facts": size * size if tried.get(size, 0) >= 0.99 else 0,
        "d_h": d_h,
        "m": m,
        "params": parameter_count(d, H, d_h, m),
        "tried": {str(k): v for k, v in sorted(tried.items())},
        "at_range_top": size * config["ratio"] >= hi,
    }


def _coarse_search(ok, lo: int, hi: int, ratio: float) -> int:
    """Largest size in ``[lo, hi)`` with ``ok`` (``ok(lo)`` known true, ``hi`` assumed to fail: the caller picks
    a range that contains the capacity), bisecting geometrically until ``hi / lo <= ratio``."""
    while hi / lo > ratio and hi - lo > 1:
        mid = int(round(math.sqrt(lo * hi)))
        mid = min(max(mid, lo + 1), hi - 1)
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return lo


@EXPERIMENTS.register(name="facts_vs_params", sweeps=True)
def facts_vs_params_experiment(ctx: Context) -> ExperimentResult:
    """Fig. 4 left: the number of facts stored grows linearly with the parameter count."""
    p = ctx.preset
    lo, hi = p.size_range
    configs = [
        dict(
            alpha=a,
            beta=b,
            d=d,
            H=8,
            D=8,
            lr=1e-2,
            steps=p.mix_steps,
            batch_size=p.batch,
            seed=ctx.seed,
            lo=lo,
            hi=hi,
            ratio=p.search_ratio,
        )
        for a, b in p.mixes
        for d in p.mix_d
    ]
    rows = _sweep(ctx, mix_point, configs, "facts_vs_params", "alpha/beta searches")
    points = [{**r["config"], **r["result"]} for r in rows if not r["result"].get("degenerate")]
    good = [p for p in points if p["facts"] > 0]
    ratio = [p["facts"] / p["params"] for p in good]
    results = {
        "points": points,
        "slope": loglog_slope([p["params"] for p in good], [p["facts"] for p in good]),
        "facts_per_param": float(np.exp(np.mean(np.log(ratio)))) if ratio else float("nan"),
        "note": f"lr 1e-2 only (the authors try 1e-3, 3e-3, 1e-2); batch {p.batch}, "
        f"{p.mix_steps} steps at most, search ratio {p.search_ratio}",
    }
    fig, ax = subplots(figsize=(6, 4.4))
    for a, b in p.mixes:
        pts = sorted((p["params"], p["facts"]) for p in good if p["alpha"] == a and p["beta"] == b)
        if pts:
            ax.loglog(*zip(*pts), "o-", label=f"α = {a} (d_h = α d / H), β = {b} (m = β d)")
    if good:
        grid = np.geomspace(min(p["params"] for p in good), max(p["params"] for p in good))
        ax.loglog(grid, 0.15 * grid, "k--", label="paper: facts = 0.15 params")
    ax.set(
        xlabel="parameters P = 4 H d_h d + 2 m d",
        ylabel="facts stored at 99 % accuracy",
        title="Facts stored vs parameters (Fig. 4 left)",
    )
    if good:
        plain_log_axes(ax)
    ax.legend(fontsize=8)
    return ExperimentResult(results, {"facts_vs_params": fig})


# ----------------------------------------------------------------------------- mechanism (hooks)


@EXPERIMENTS.register(name="mechanism")
def mechanism_experiment(ctx: Context) -> ExperimentResult:
    """Attention mass, ablations, OV replacement, subject patching and distractors on the two corner models."""
    p = ctx.preset
    task = FactualRecallTask(S=p.S, R=p.R, D=p.D, table_seed=64)
    results = {"task": {"S": task.S, "R": task.R, "D": task.D}, "models": {}}
    for label, (H, m) in (("attention_heavy", p.attention_heavy), ("mlp_heavy", p.mlp_heavy)):
        model, fit = train_corner(task, H, m, p.mech_steps, p.batch, seed=ctx.seed)
        if label == "attention_heavy":
            train = {
                "optimizer": "adam",
                "lr": 1e-2,
                "batch_size": p.batch,
                "max_steps": p.mech_steps,
                "steps": fit.steps,
                "stop_at": 1.0,
                "seed": ctx.seed,
            }
            ctx.save_model(
                model,
                task,
                train=train,
                about=f"the attention-heavy model (H = {H} heads, MLP width m = {m}): facts stored in the "
                "heads' OV circuits",
            )
        results["models"][label] = {
            "H": H,
            "m": m,
            "d": 32,
            "d_h": 8,
            "train_accuracy": fit.accuracy,
            "train_steps": fit.steps,
            **analyse(model, task, seed=ctx.seed, n=p.mech_n),
        }
    dis = [results["models"][k]["distractor"] for k in results["models"]]
    results["distractor_flip_rate"] = sum(x["flip_rate"] for x in dis) / len(dis)
    results["distractor_flip_share"] = sum(
        x["flip_rate"] / max(x["flip_rate"] + x["kept_rate"], 1e-9) for x in dis
    ) / len(dis)
    return ExperimentResult(results, {"mechanism": _mechanism_figure(results)})


def _mechanism_figure(results: dict):
    fig, grid = subplots(2, 2, figsize=(11, 8.6))
    axes = [grid[0, 0], grid[0, 1], grid[1, 0]]
    grid[1, 1].set_visible(False)
    labels = list(results["models"])
    names = {
        label: "{} (H = {}, m = {})".format(
            label.replace("_", "-"), results["models"][label]["H"], results["models"][label]["m"]
        )
        for label in labels
    }
    x = np.arange(len(labels))
    mass = {
        "subject": "the subject",
        "relation": "the relation",
        "noise_per_token": "one noise token (mean)",
        "eos": "EOS itself",
    }
    for k, (key, name) in enumerate(mass.items()):
        axes[0].bar(x + 0.2 * k - 0.3, [results["models"][m]["attention_mass"][key] for m in labels], 0.2, label=name)
    axes[0].set(
        xticks=x,
        xticklabels=[names[m] for m in labels],
        xlabel="trained model (H: heads, m: MLP width)",
        ylabel="attention weight from EOS (mean over heads)",
        title="Where EOS attends",
    )
    axes[0].legend(fontsize=8, title="attention on", title_fontsize=8)
    ablations = {
        "clean": "no ablation",
        "mlp_mean_ablated": "MLP mean-ablated",
        "ov_zero_mean_accuracy": "one head's OV set to 0 (mean over heads)",
        "head_mean_mean_accuracy": "one head mean-ablated (mean over heads)",
        "all_heads_mean_ablated": "all heads mean-ablated",
    }
    for k, (key, name) in enumerate(ablations.items()):
        axes[1].bar(x + 0.16 * k - 0.32, [results["models"][m]["ablations"][key] for m in labels], 0.16, label=name)
    axes[1].set(
        xticks=x,
        xticklabels=[names[m] for m in labels],
        xlabel="trained model (H: heads, m: MLP width)",
        ylabel="accuracy on all facts (fraction)",
        title="Ablations: where the facts are stored",
    )
    axes[1].legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    for m in labels:
        heads = results["models"][m]["subject_patching"]["value_per_head"]
        axes[2].plot(range(len(heads)), heads, "o-", label=names[m])
    axes[2].set(
        xlabel="attention head",
        ylabel="logit difference recovered (fraction)",
        title="Patching one head's values (hook_v) at the subject",
    )
    integer_ticks(axes[2])
    axes[2].legend(fontsize=8)
    return fig
