"""``mechmem reproduce lca``: run every synthetic experiment and score the spec's claims (§6).

Writes into ``out``: one ``<experiment>.json`` and ``figures/<experiment>.png`` per experiment,
``attention_view.html`` (CircuitsVis, self-contained), ``config.json`` and ``results.json`` with
``claims``: for each claim the ``measured`` value, the ``expected`` statement (spec §6, whose
tolerances are the spec's proposals) and whether it ``holds``. Accuracies are fractions,
gaps are accuracy points (0-100).
"""

from __future__ import annotations

import time
from pathlib import Path

from mechmem.io import atomic_write_json
from mechmem.reproducing import claim, torch_threads

from .experiments import EXPERIMENTS, ExperimentResult
from .lab import Lab, Settings

CLAIM_KEYS = (
    "wv_trained_vs_identity",
    "wv_constructed_replacement",
    "hamming_inner_spearman",
    "hamming_inner_r2",
    "spectrum_top_energy",
    "attention_cluster_ratio",
    "attention_uniform_drop",
    "length_spearman",
    "dim_spearman",
    "frozen_gap_small_d",
    "frozen_gap_large_d",
    "hijack_flip_rate_max_k",
    "hijack_monotone",
)


def score_claims(data: dict[str, dict], settings: Settings) -> dict[str, dict]:
    """The ``claims`` object from the experiments' data (keys: :data:`CLAIM_KEYS`)."""
    V = 2**settings.m
    bar = data["wv_bar"]["rows"]
    short_L, long_L = (
        min(settings.wv_bar_L),
        max(settings.wv_bar_L),
    )  # 64 and 128 outside smoke settings
    gap64 = [r["gap_points"] for r in bar if r["L"] == short_L]
    gap_long = [r["gap_points"] for r in bar if r["L"] == long_L and long_L != short_L]
    mean64 = sum(gap64) / len(gap64) if gap64 else float("nan")
    replace_rows = data["wv_replace"]["rows"]
    adequate = max(replace_rows, key=lambda r: r["d"])
    ham = data["hamming_inner"]["trained_W_V"]
    att = data["attention"]
    dims = {r["d"]: r for r in data["dim"]["rows"]}
    small = dims.get(settings.d_model) or dims[min(d for d in dims if d < V)]
    large = dims[max(dims)]
    hij = data["hijack_synthetic"]
    return {
        "wv_trained_vs_identity": claim(
            mean64,
            f"trained W_V beats identity W_V by >= 10 accuracy points at L = {short_L} (d = V/2 < V; mean "
            f"over m); the gap is smaller at L = {long_L}",
            mean64 >= 10 and (not gap_long or sum(gap_long) / len(gap_long) < mean64),
        ),
        "wv_constructed_replacement": claim(
            adequate["lost_points"],
            f"replacing W_V by the constructed W̄_V loses <= 5 accuracy points at adequate d "
            f"(measured at the largest d = {adequate['d']})",
            adequate["lost_points"] <= 5,
        ),
        "hamming_inner_spearman": claim(
            ham["spearman"],
            "mean <W_E(i), W_E(j)> strictly decreasing in D_H: Spearman <= -0.9 "
            "(trained W_V and embeddings, d < V)",
            ham["spearman"] <= -0.9,
        ),
        "hamming_inner_r2": claim(
            ham["r2"],
            "affine fit of mean inner product vs D_H has R^2 >= 0.9 with a "
            "negative slope",
            ham["r2"] >= 0.9 and ham["slope"] < 0,
        ),
        "spectrum_top_energy": claim(
            data["spectrum"]["trained_embeddings"]["top_m_plus_1_energy"],
            "the top m+1 eigenvalues of the centred Gram matrix carry >= 80% of the energy",
            data["spectrum"]["trained_embeddings"]["top_m_plus_1_energy"] >= 0.8,
        ),
        "attention_cluster_ratio": claim(
            att["cluster_ratio"],
            "cluster variant: mean attention on same-cluster "
            "context tokens >= 2x the mean on other tokens",
            att["cluster_ratio"] >= 2,
        ),
        "attention_uniform_drop": claim(
            att["uniform_drop_points"],
            "learned attention beats uniform attention "
            "(accuracy drop > 1 point when the pattern is made uniform)",
            att["uniform_drop_points"] > 1,
        ),
        "length_spearman": claim(
            data["length"]["spearman"],
            "accuracy rises with L (Spearman > 0.8)",
            data["length"]["spearman"] > 0.8,
        ),
        "dim_spearman": claim(
            data["dim"]["spearman"],
            "accuracy rises with d (Spearman > 0.8)",
            data["dim"]["spearman"] > 0.8,
        ),
        "frozen_gap_small_d": claim(
            100 * (small["acc_trained"] - small["acc_frozen"]),
            f"d = {small['d']} < V = {V}: frozen Gaussian embeddings clearly worse (gap >= 10 points)",
            100 * (small["acc_trained"] - small["acc_frozen"]) >= 10,
        ),
        "frozen_gap_large_d": claim(
            100 * (large["acc_trained"] - large["acc_frozen"]),
            f"d = {large['d']} >= V = {V}: frozen Gaussian embeddings about as good (|gap| <= 5 points)",
            abs(100 * (large["acc_trained"] - large["acc_frozen"])) <= 5,
        ),
        "hijack_flip_rate_max_k": claim(
            hij["rows"][-1]["flip_rate"],
            f"replacing k = {hij['rows'][-1]['k']} of L = {hij['L']} context tokens by "
            "neighbours of y' flips the prediction to y' in most cases (rate >= 0.5)",
            hij["rows"][-1]["flip_rate"] >= 0.5,
        ),
        "hijack_monotone": claim(
            hij["monotone"],
            "the flip rate rises monotonically with k (steps >= -0.02)",
            hij["monotone"],
        ),
    }


def reproduce(
    out: Path,
    quick: bool = True,
    seed: int = 0,
    settings: Settings | None = None,
    progress: bool = True,
    threads: int | None = 1,
) -> dict:
    """Run all experiments (``quick``: small grids, minutes on 2 CPU cores) and write ``results.json``.

    ``threads``: torch intra-op threads while running (restored afterwards). The matrices here are tiny
    (d <= 128), so one thread is fastest, and it is about 2x faster than two on a shared 2-core machine;
    ``None`` keeps the current setting.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
    ):
        raise ValueError(f"threads must be a positive int or None, got {threads!r}")
    with torch_threads(threads):
        return _reproduce(Path(out), quick, seed, settings, progress)


def _reproduce(
    out: Path, quick: bool, seed: int, settings: Settings | None, progress: bool
) -> dict:
    settings = settings or (Settings.quick() if quick else Settings.full())
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        out / "config.json",
        {"paper": "lca", "quick": quick, "seed": seed, "settings": settings.to_dict()},
    )
    lab = Lab(settings, seed=seed, progress=progress)
    t0 = time.perf_counter()
    data, files, timings = {}, {}, {}
    try:
        for name, experiment in EXPERIMENTS.items():
            start = time.perf_counter()
            result: ExperimentResult = experiment(lab)
            files[name] = [str(p.relative_to(out)) for p in result.save(out)]
            data[name] = result.data
            timings[name] = round(time.perf_counter() - start, 2)
    finally:
        lab.close()
    results = {
        "paper": "lca",
        "quick": quick,
        "seed": seed,
        "settings": settings.to_dict(),
        "claims": score_claims(data, settings),
        "files": files,
        "seconds": timings,
        "total_seconds": round(time.perf_counter() - t0, 2),
        "models_trained": lab.n_models,
    }
    atomic_write_json(out / "results.json", results)
    return results
