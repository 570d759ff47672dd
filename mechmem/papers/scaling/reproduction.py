"""``mechmem reproduce scaling``: the experiments of :mod:`.experiments` and the claims they check.

The scaling laws are the paper's; the tolerances around them are ours. ``*_alpha_1.5`` / ``*_alpha_3``
slopes are measured by the full preset only (it is the one that runs alpha = 1.5 and 3).
"""

from __future__ import annotations

from mechmem.contract.claims import AtLeast, AtMost, Below, Claim, Condition, Equals, IsTrue, Near, Reported
from mechmem.contract.reproducing import Reproduction

from .experiments import EXPERIMENTS, theory_slopes
from .presets import PRESETS

PAPER = "Cabannes et al. 2024"
SEED_FRACTION = 0.8  # "for >= 8 of 10 seeds"


def _slope(alpha: str, scheme: str):
    return lambda r: r["error_vs_d"]["by_alpha"][alpha]["slope"][scheme]


def uniform_no_decay(r) -> bool:
    """q = 1 on all N tokens: the error at every d <= N/10 stays above half its value at the smallest d."""
    d_res = r["error_vs_d"]
    ds, err = d_res["ds"], d_res["by_alpha"]["2.0"]["mean_error"]["all"]
    small = [e for d, e in zip(ds, err) if d <= d_res["N"] / 10]
    return min(small) / err[0] >= 0.5


def _fraction_claim(key: str, statement: str, source: str) -> Claim:
    return Claim(key, lambda r: r["optimisers"][key], AtLeast(SEED_FRACTION), statement=statement, source=source)


def _other_alpha_claims() -> tuple[Claim, ...]:
    claims = []
    for alpha in ("1.5", "3.0"):
        for scheme, tol in (("threshold", 0.15), ("frequency", 0.1)):
            theory = theory_slopes(float(alpha))[scheme]
            claims.append(
                Claim(
                    f"{scheme}_d_slope_alpha_{alpha.rstrip('0').rstrip('.')}".replace(".", "_"),
                    _slope(alpha, scheme),
                    Near(theory, tol, label=f"{'-(α-1)' if scheme == 'threshold' else '-(α-1)/(2α)'}"),
                    statement=f"log-log slope of the error in d, {scheme} scheme, at alpha = {alpha}",
                    source=f"{PAPER} §3 (rates in d)",
                    presets=("full",),
                )
            )
    return tuple(claims)


CLAIMS = (
    Claim(
        "threshold_d_slope",
        _slope("2.0", "threshold"),
        Near(-1, 0.15),
        statement="error ~ d^-(α-1) for q = 1{x < d/8}: log-log slope in d (α = 2, d from 20 to 1000)",
        source=f"{PAPER} §3 (finite capacity, infinite data), Fig. 1",
    ),
    Claim(
        "frequency_d_slope",
        _slope("2.0", "frequency"),
        Near(-0.25, 0.1),
        statement="error ~ d^-(α-1)/(2α) for q = p: log-log slope in d (α = 2)",
        source=f"{PAPER} §3 (finite capacity, infinite data)",
    ),
    Claim(
        "uniform_no_decay",
        uniform_no_decay,
        IsTrue(),
        statement="q = 1 on all N tokens does not decay until d ~ N: at every d <= N/10 the error keeps at "
        "least half its value at the smallest d",
        source=f"{PAPER} §3",
    ),
    Claim(
        "data_T_slope",
        lambda r: r["error_vs_T"]["slope_top_seen"],
        Near(-0.5, 0.1),
        statement="error ~ T^(-1+1/α) with enough capacity: log-log slope in T (d = 1000, T from 1e2 to 1e4)",
        source=f"{PAPER} §3 (finite data), Fig. 1",
    ),
    Claim(
        "missing_mass_rel_error",
        lambda r: max(r["error_vs_T"]["rel_error_seen_vs_missing_mass"]),
        AtMost(0.2),
        statement="with every seen token stored, the error is the missing mass times (1 - 1/M) (an unseen token "
        "gets its class by chance 1/M): largest relative difference, T from 1e2 to 1e4, d = 1000",
        source=f"{PAPER} §3 (finite data, infinite capacity: error = mass of the unseen tokens); "
        "the 1/M chance correction is ours",
        ours=True,
    ),
    Claim(
        "joint_table_max_rel_error",
        lambda r: r["joint_table"]["max_rel_error"],
        Reported(),
        statement="error over (d, T) with threshold P = d/12 over the seen tokens matches the reference table "
        "within 20 % relative (or 0.01 absolute below 0.05): largest relative difference",
        source=f"{PAPER} §3 (both finite); reference re-implementation",
        ours=True,
        also=(
            Condition(
                "cells outside the tolerance",
                lambda r: r["joint_table"]["n_cells"] - r["joint_table"]["cells_within_tolerance"],
                Equals(0),
            ),
        ),
    ),
    _fraction_claim(
        "adam_beats_sgd_fraction",
        "Adam beats SGD at their best learning rates for every d >= 50 (fraction of trials)",
        f"{PAPER} §4 (optimisation), Fig. 4",
    ),
    _fraction_claim(
        "small_batch_beats_large_fraction",
        "a small batch (16) beats a large one (1024) at T = 1024 for every d (fraction of trials)",
        f"{PAPER} §4 (batch size)",
    ),
    _fraction_claim(
        "sgd_lr_monotone_fraction",
        "the SGD error decreases strictly with the learning rate over "
        "0.1, 1, 10, 100 at B = 64, for every d (fraction of trials)",
        f"{PAPER} §4 (learning rate)",
    ),
    _fraction_claim(
        "learned_embeddings_beat_fixed_fraction",
        "learned embeddings store far more at d = 10: error below half the fixed-embedding error (fraction of trials)",
        f"{PAPER} §4 (learned embeddings)",
    ),
    Claim(
        "sgd_approximation_gap",
        lambda r: r["sgd_approximation"]["gap_first_10_steps"],
        Below(0.01),
        statement="the analytic approximation of SGD tracks real SGD over the first 10 steps (largest gap in error)",
        source=f"{PAPER} §4 (SGD approximation)",
        ours=True,
    ),
) + _other_alpha_claims()


class ScalingReproduction(Reproduction):
    name = "scaling"
    title = "Cabannes, Dohmatob, Bietti (ICLR 2024): Scaling Laws for Associative Memories"
    presets = PRESETS
    experiments = EXPERIMENTS
    claims = CLAIMS
    report_figures = {
        "error_vs_d": "Recall error of the associative memory against its dimension d (N = 1000 tokens, Zipf "
        "exponent α), for three choices of which tokens are stored, with the fitted log-log slopes and the theory's "
        "(paper §3, Fig. 1).",
        "error_vs_T": "Recall error against the number of samples T with enough capacity (d = 1000), next to the mass "
        "of the unseen tokens (paper §3: the error follows the missing mass, slope -1 + 1/α).",
        "joint_table": "Error over memory dimension d and samples T, measured against the paper's reference table.",
        "naive_contour": "Storing every seen token (the naive scheme, α = 0.5): error over d and T.",
        "optimisers": "Memories learned by optimisation (N = 100, M = 5, α = 2): Adam vs SGD at their best learning "
        "rate, batch size, SGD learning rate and learned embeddings (paper §4).",
        "sgd_approximation": "Real SGD against the paper's analytic approximation of it, on the same embeddings and "
        "batches.",
        "heatmaps": "What a memory recalls: softmax(E W Uᵀ) for two storage rules and SGD snapshots (the right class "
        "is y = x mod 5).",
    }
