"""The experiments of the reproduction; each writes ``<name>.json`` and ``<name>.png`` into ``out`` and returns its
results dict. ``quick=True`` uses small sizes and coarse grids (see ``settings``); the capacity sweeps and the
Fig. 4 sweeps go through ``mechmem.sweep.run_sweep`` (one JSON-lines row per configuration, resumable).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from mechmem.io import atomic_write_bytes, atomic_write_json
from mechmem.papers.factual import capacity
from mechmem.papers.factual.dynamics import DynamicsConfig, stages, train_dynamics
from mechmem.papers.factual.fit import train_config_point
from mechmem.papers.factual.mechanism import analyse, train_corner
from mechmem.papers.factual.task import FactualRecallTask
from mechmem.reproducing import torch_threads
from mechmem.sweep import run_sweep


def settings(quick: bool, smoke: bool = False) -> dict:
    """Sizes and grids of every experiment (quick: minutes on 2 CPU cores; full: the spec's grids)."""
    if smoke:
        return dict(
            linear_d=[8, 11],
            outer_d=[16, 32],
            outer_seeds=2,
            mlp_d=[8],
            mlp_ratio=[1],
            mlp32_d=[8],
            mlp_steps=1024,
            seeds=[0],
            mixes=[(2.0, 0.25), (0.5, 2.0)],
            mix_d=[16],
            size_range=(4, 16),
            mix_steps=300,
            batch=256,
            heads=[2, 8, 16],
            widths=[1, 128],
            grid_steps=300,
            S=8,
            R=8,
            D=4,
            dynamics=DynamicsConfig(steps=2048, eval_every=128, eval_size=4096),
            attention_heavy=(16, 1),
            mlp_heavy=(8, 128),
            mech_steps=600,
            mech_n=256,
        )
    if quick:
        return dict(
            linear_d=[8, 11, 16, 22],
            outer_d=[16, 32, 64],
            outer_seeds=4,
            mlp_d=[8, 11],
            mlp_ratio=[1],
            mlp32_d=[8, 11],
            mlp_steps=2048,
            seeds=[0],
            mixes=[(2.0, 0.25), (0.5, 2.0)],
            mix_d=[16, 32],
            size_range=(4, 32),
            mix_steps=768,
            batch=256,
            heads=[4, 8, 16],
            widths=[1, 16, 128],
            grid_steps=1024,
            S=16,
            R=16,
            D=8,
            dynamics=DynamicsConfig(),
            attention_heavy=(16, 1),
            mlp_heavy=(8, 128),
            mech_steps=2048,
            mech_n=512,
        )
    return dict(
        linear_d=[8, 11, 16, 22, 32, 45, 64],
        outer_d=[16, 32, 64, 128],
        outer_seeds=5,
        mlp_d=[8, 11, 16, 22, 32],
        mlp_ratio=[1, 2, 4],
        mlp32_d=[8, 11, 16, 22, 32],
        mlp_steps=32768,
        seeds=[0, 1, 11, 111, 42],
        mixes=[(a, b) for a in (4, 2, 1, 0.5, 0.25) for b in (4, 2, 1, 0.5, 0.25)],
        mix_d=[16, 22, 32, 45, 64],
        size_range=(8, 512),
        mix_steps=16384,
        batch=1024,
        heads=[1, 2, 4, 6, 8, 10, 12, 14, 16, 20, 24, 28, 32],
        widths=[1, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128],
        grid_steps=16384,
        S=32,
        R=32,
        D=8,
        dynamics=DynamicsConfig(),
        attention_heavy=(20, 1),
        mlp_heavy=(8, 128),
        mech_steps=16384,
        mech_n=1024,
    )


def _save(out: Path, name: str, results: dict, fig) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / f"{name}.json", results)
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(out / f"{name}.png", buf.getvalue())
    return results


def loglog_slope(x, y) -> float:
    """Least-squares slope of ``log y`` against ``log x``."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    return (
        float(np.polyfit(lx, ly, 1)[0]) if len(set(lx.tolist())) > 1 else float("nan")
    )


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


def capacity_configs(s: dict) -> list[dict]:
    configs = [
        dict(kind="linear", d=d, seed=seed)
        for d in s["linear_d"]
        for seed in s["seeds"]
    ]
    configs += [
        dict(kind="outer", d=d, seed=s["seeds"][0] + k)
        for d in s["outer_d"]
        for k in range(s["outer_seeds"])
    ]
    configs += [
        dict(kind="mlp", d=d, m=r * d, seed=seed, max_steps=s["mlp_steps"])
        for d in s["mlp_d"]
        for r in s["mlp_ratio"]
        for seed in s["seeds"]
    ]
    # M = 32: search up to 2 m d (the authors' m d can clip N ~ 0.83 m d at small d)
    configs += [
        dict(
            kind="mlp",
            d=d,
            m=d,
            M=32,
            seed=seed,
            max_steps=s["mlp_steps"],
            hi=2 * d * d,
        )
        for d in s["mlp32_d"]
        for seed in s["seeds"]
    ]
    return configs


def capacity_experiment(
    out: Path, quick: bool = True, smoke: bool = False, workers: int = 1, seed: int = 0
) -> dict:
    s = settings(quick, smoke)
    s["seeds"] = [seed + k for k in s["seeds"]]
    rows = run_sweep(
        capacity_point,
        capacity_configs(s),
        out / "capacity.jsonl",
        workers=workers,
        desc="capacity searches",
    )
    points = [{**r["config"], **r["result"]} for r in rows]
    lin = _mean_by(points, "linear", "d")
    outer = _mean_by(points, "outer", "d")
    mlp = [p for p in points if p["kind"] == "mlp" and p.get("M") is None]
    mlp32 = [p for p in points if p["kind"] == "mlp" and p.get("M") == 32]
    lin_fit = {d: N for d, N in lin.items() if d >= 11} or lin
    results = {
        "settings": {
            k: v
            for k, v in s.items()
            if k.startswith(("linear", "outer", "mlp", "seeds"))
        },
        "points": points,
        "linear_constant": float(
            np.mean([capacity.capacity_constant(N, d) for d, N in lin_fit.items()])
        ),
        "linear_slope": loglog_slope(
            [d * d for d in lin], [N * math.log(N) for N in lin.values()]
        ),
        "outer_constant": float(
            np.mean([capacity.capacity_constant(N, d) for d, N in outer.items()])
        ),
        "mlp_constant": float(
            np.mean([capacity.capacity_constant(p["N"], p["d"], p["m"]) for p in mlp])
        ),
        "mlp32_constant": float(
            np.mean(
                [
                    capacity.capacity_constant(p["N"], p["d"], p["m"], log=False)
                    for p in mlp32
                ]
            )
        ),
        "mlp32_at_search_ceiling": [p["d"] for p in mlp32 if p["N"] >= p["hi"]],
    }
    return _save(out, "capacity", results, _capacity_figure(lin, outer, mlp, mlp32))


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


def _capacity_figure(lin, outer, mlp, mlp32):
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    d2 = np.array([d * d for d in lin])
    a.loglog(d2, list(lin.values()), "o-", label="trained linear (Adam)")
    a.loglog([d * d for d in outer], list(outer.values()), "s-", label="outer product")
    grid = np.geomspace(
        min(d2.min(), min(d * d for d in outer)),
        max(d2.max(), max(d * d for d in outer)),
    )
    a.loglog(grid, _n_from_nlogn(grid / 1.3), "k--", label=r"paper: $N\ln N = d^2/1.3$")
    a.set(xlabel="$d^2$", ylabel="largest N at 99 %", title="linear associative memory")
    a.legend()
    if mlp:
        md = np.array([p["m"] * p["d"] for p in mlp])
        b.loglog(md, [p["N"] for p in mlp], "o", label="MLP, M = N")
        b.loglog(
            np.sort(md),
            _n_from_nlogn(np.sort(md) / 0.35),
            "k--",
            label=r"paper: $N\ln N = md/0.35$",
        )
    if mlp32:
        md32 = np.array([p["m"] * p["d"] for p in mlp32])
        b.loglog(md32, [p["N"] for p in mlp32], "s", label="MLP, M = 32")
        b.loglog(np.sort(md32), np.sort(md32) / 1.2, "k:", label="paper: $N = md/1.2$")
    b.set(xlabel="$m d$", ylabel="largest N at 99 %", title="MLP associative memory")
    b.legend()
    return fig


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


def facts_vs_params_experiment(
    out: Path, quick: bool = True, smoke: bool = False, workers: int = 1, seed: int = 0
) -> dict:
    s = settings(quick, smoke)
    lo, hi = s["size_range"]
    configs = [
        dict(
            alpha=a,
            beta=b,
            d=d,
            H=8,
            D=8,
            lr=1e-2,
            steps=s["mix_steps"],
            batch_size=s["batch"],
            seed=seed,
            lo=lo,
            hi=hi,
            ratio=1.1 if not quick else 1.3,
        )
        for a, b in s["mixes"]
        for d in s["mix_d"]
    ]
    rows = run_sweep(
        mix_point,
        configs,
        out / "facts_vs_params.jsonl",
        workers=workers,
        desc="alpha/beta searches",
    )
    points = [
        {**r["config"], **r["result"]}
        for r in rows
        if not r["result"].get("degenerate")
    ]
    good = [p for p in points if p["facts"] > 0]
    ratio = [p["facts"] / p["params"] for p in good]
    results = {
        "points": points,
        "slope": loglog_slope([p["params"] for p in good], [p["facts"] for p in good]),
        "facts_per_param": float(np.exp(np.mean(np.log(ratio))))
        if ratio
        else float("nan"),
        "note": "lr 1e-2 only (the authors try 1e-3, 3e-3, 1e-2); quick mode: batch 256, "
        f"{s['mix_steps']} steps at most, search ratio 1.3",
    }
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for a, b in s["mixes"]:
        pts = sorted(
            (p["params"], p["facts"])
            for p in good
            if p["alpha"] == a and p["beta"] == b
        )
        if pts:
            ax.loglog(*zip(*pts), "o-", label=f"alpha={a}, beta={b}")
    if good:
        grid = np.geomspace(
            min(p["params"] for p in good), max(p["params"] for p in good)
        )
        ax.loglog(grid, 0.15 * grid, "k--", label="paper: facts = 0.15 params")
    ax.set(
        xlabel="parameters P = 4 H d_h d + 2 m d",
        ylabel="facts stored at 99 %",
        title="facts vs parameters",
    )
    ax.legend(fontsize=8)
    return _save(out, "facts_vs_params", results, fig)


# ----------------------------------------------------------------------------- H x m trade-off (Fig. 4 right)


def tradeoff_experiment(
    out: Path, quick: bool = True, smoke: bool = False, workers: int = 1, seed: int = 0
) -> dict:
    s = settings(quick, smoke)
    d, d_h = 32, 8
    configs = [
        dict(
            S=s["S"],
            R=s["R"],
            D=s["D"],
            d=d,
            H=H,
            d_h=d_h,
            m=m,
            lr=1e-2,
            steps=s["grid_steps"],
            batch_size=s["batch"],
            stop_at=1.0,
            seed=seed,
            table_seed=64,
        )
        for H in s["heads"]
        for m in s["widths"]
    ]
    rows = run_sweep(
        train_config_point,
        configs,
        out / "tradeoff.jsonl",
        workers=workers,
        desc="H x m grid",
    )
    acc = np.array(
        [
            [
                r["result"]["accuracy"]
                for r in rows[i * len(s["widths"]) : (i + 1) * len(s["widths"])]
            ]
            for i in range(len(s["heads"]))
        ]
    )  # [H, m]
    H_att, m_att = max(s["heads"]), min(s["widths"])
    H_mlp, m_mlp = s["mlp_heavy"]
    results = {
        "heads": s["heads"],
        "widths": s["widths"],
        "accuracy": acc.tolist(),
        "S": s["S"],
        "R": s["R"],
        "D": s["D"],
        "d": d,
        "d_h": d_h,
        "attention_only_accuracy": float(
            acc[s["heads"].index(H_att), s["widths"].index(m_att)]
        ),
        "mlp_heavy_accuracy": float(
            acc[s["heads"].index(H_mlp), s["widths"].index(max(s["widths"]))]
        ),
        "few_heads_accuracy": float(
            max(acc[i].max() for i, H in enumerate(s["heads"]) if H <= 4)
        ),
        "corners": {
            "attention_only": [H_att, m_att],
            "mlp_heavy": [H_mlp, max(s["widths"])],
        },
    }
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    im = ax.imshow(acc.T, origin="lower", vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(s["heads"])), [f"{H}\n({d * d_h * H})" for H in s["heads"]])
    ax.set_yticks(range(len(s["widths"])), [f"{m} ({d * m})" for m in s["widths"]])
    for i in range(acc.shape[0]):
        for j in range(acc.shape[1]):
            ax.text(
                i,
                j,
                f"{acc[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="w",
            )
    ax.set(
        xlabel="heads H (attention params d d_h H)",
        ylabel="MLP width m (MLP params d m)",
        title=f"accuracy, S=R={s['S']}, D={s['D']}, d={d}, d_h={d_h}",
    )
    fig.colorbar(im)
    return _save(out, "tradeoff", results, fig)


# ----------------------------------------------------------------------------- dynamics (Fig. 5)


def dynamics_experiment(
    out: Path, quick: bool = True, smoke: bool = False, seed: int = 0
) -> dict:
    s = settings(quick, smoke)
    cfg = dataclasses.replace(s["dynamics"], seed=seed)
    history = train_dynamics(cfg)
    st = stages(history, cfg.R, cfg.D)
    results = {"config": cfg.__dict__, "history": history, **st}
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    steps = [h["step"] for h in history]
    for key in ("total", "relation", "subject"):
        ax.plot(steps, [h[key] for h in history], label=f"{key} loss")
    for value, name in (
        (math.log(cfg.R * cfg.D), "ln(RD)"),
        (math.log(cfg.D), "ln D"),
        (math.log(cfg.R), "ln R"),
    ):
        ax.axhline(value, color="grey", lw=0.6, ls=":")
        ax.text(steps[-1], value, name, fontsize=7, va="bottom", ha="right")
    for step in (st["stage1_end_step"], st["stage2_end_step"]):
        if step is not None:
            ax.axvline(step, color="k", lw=0.6, ls="--")
    ax.set(
        xlabel="GD step",
        ylabel="test cross-entropy",
        title="linear attention, orthogonal embeddings (Fig. 5)",
    )
    ax.legend(loc="center right")
    return _save(out, "dynamics", results, fig)


# ----------------------------------------------------------------------------- mechanism (hooks)


def mechanism_experiment(
    out: Path, quick: bool = True, smoke: bool = False, seed: int = 0
) -> dict:
    """Attention mass, ablations, OV replacement, subject patching and distractors on the two corner models."""
    s = settings(quick, smoke)
    task = FactualRecallTask(S=s["S"], R=s["R"], D=s["D"], table_seed=64)
    results = {"task": {"S": task.S, "R": task.R, "D": task.D}, "models": {}}
    for label, (H, m) in (
        ("attention_heavy", s["attention_heavy"]),
        ("mlp_heavy", s["mlp_heavy"]),
    ):
        model, fit = train_corner(task, H, m, s["mech_steps"], s["batch"], seed=seed)
        results["models"][label] = {
            "H": H,
            "m": m,
            "d": 32,
            "d_h": 8,
            "train_accuracy": fit.accuracy,
            "train_steps": fit.steps,
            **analyse(model, task, seed=seed, n=s["mech_n"]),
        }
    dis = [results["models"][k]["distractor"] for k in results["models"]]
    results["distractor_flip_rate"] = sum(x["flip_rate"] for x in dis) / len(dis)
    results["distractor_flip_share"] = sum(
        x["flip_rate"] / max(x["flip_rate"] + x["kept_rate"], 1e-9) for x in dis
    ) / len(dis)
    return _save(out, "mechanism", results, _mechanism_figure(results))


def _mechanism_figure(results: dict):
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    labels = list(results["models"])
    x = np.arange(len(labels))
    for k, key in enumerate(("subject", "relation", "noise_per_token", "eos")):
        axes[0].bar(
            x + 0.2 * k - 0.3,
            [results["models"][l]["attention_mass"][key] for l in labels],
            0.2,
            label=key,
        )
    axes[0].set(
        xticks=x,
        xticklabels=labels,
        ylabel="attention from EOS",
        title="attention mass",
    )
    axes[0].legend(fontsize=8)
    keys = (
        "clean",
        "mlp_mean_ablated",
        "ov_zero_mean_accuracy",
        "head_mean_mean_accuracy",
        "all_heads_mean_ablated",
    )
    for k, key in enumerate(keys):
        axes[1].bar(
            x + 0.16 * k - 0.32,
            [results["models"][l]["ablations"][key] for l in labels],
            0.16,
            label=key,
        )
    axes[1].set(
        xticks=x,
        xticklabels=labels,
        ylabel="accuracy",
        title="ablations (per-head: mean over heads)",
    )
    axes[1].legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)
    for l in labels:
        heads = results["models"][l]["subject_patching"]["value_per_head"]
        axes[2].plot(range(len(heads)), heads, "o-", label=l)
    axes[2].set(
        xlabel="head",
        ylabel="logit diff. recovered",
        title="patching hook_v at the subject position",
    )
    axes[2].legend(fontsize=8)
    return fig


EXPERIMENTS = {
    "capacity": capacity_experiment,
    "facts_vs_params": facts_vs_params_experiment,
    "tradeoff": tradeoff_experiment,
    "dynamics": dynamics_experiment,
    "mechanism": mechanism_experiment,
}
