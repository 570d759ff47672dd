"""``mechmem reproduce lca``: the experiments of :mod:`.experiments`, the claims they check and the checks of the
set-up.

Accuracies are fractions, gaps are accuracy points (0-100). The paper's synthetic results are
qualitative (no headline numbers), so every threshold below is ours (``ours=True``). Every claim names the
negative controls it must fail on (declared by the experiments: ``untrained``, ``shuffled_memory``,
``uniform_attention``, ``identity_W_V``).
"""

from __future__ import annotations

from mechmem.contract.claims import Above, AtLeast, AtMost, Below, Claim, Condition, Equals, IsTrue, Within
from mechmem.contract.experiments import Context
from mechmem.contract.reproducing import Reproduction

from .experiments import EXPERIMENTS, small_d
from .presets import PRESETS, LCAPreset

PAPER = "Jiang et al. 2024"


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else float("nan")


def _gap_by_L(r) -> dict[int, float]:
    """Mean trained-minus-identity gap (points) over m, for each context length L of the grid."""
    rows = r["wv_bar"]["rows"]
    return {L: _mean([row["gap_points"] for row in rows if row["L"] == L]) for L in r.preset.wv_bar_L}


def _gap_at_64(r) -> float:
    return _gap_by_L(r).get(64, float("nan"))


def _gap_at_shortest_L(r) -> float:
    gaps = _gap_by_L(r)
    return gaps[min(gaps)] if gaps else float("nan")


def _gap_shrinks(r) -> bool | None:
    """The mean gap falls strictly from each L of the grid to the next (None with a single L)."""
    gaps = [g for _, g in sorted(_gap_by_L(r).items())]
    return all(b < a for a, b in zip(gaps, gaps[1:])) if len(gaps) > 1 else None


def _dims(r) -> dict[int, dict]:
    return {row["d"]: row for row in r["dim"]["rows"]}


def _frozen_gap(r, which: str) -> float:
    dims = _dims(r)
    row = dims[max(dims)] if which == "large" else dims[small_d(r.preset)]
    return 100 * (row["acc_trained"] - row["acc_frozen"])


def _adequate_d(r) -> dict:
    return max(r["wv_replace"]["rows"], key=lambda row: row["d"])


CLAIMS = (
    Claim(
        "wv_trained_vs_identity",
        _gap_at_64,
        AtLeast(10),
        unit=" points",
        statement="trained W_V beats W_V fixed to the identity at L = 64 (d = V/2 < V; mean over the m of the grid)",
        source=f"{PAPER} §5, Fig. 3a (Wv_bar_l64)",
        ours=True,
        controls=("untrained",),
    ),
    Claim(
        "wv_gap_shrinks_with_L",
        _gap_shrinks,
        IsTrue(),
        statement="freezing W_V costs much accuracy at short L and the gap shrinks as L grows (mean gap over m "
        "falls at each step of the L grid, from at least 10 points at the shortest L)",
        source=f"{PAPER} App. C (Wv_bar_l64, Wv_bar_l128)",
        also=(Condition("gap at the shortest L (points)", _gap_at_shortest_L, AtLeast(10)),),
        controls=("untrained",),
    ),
    Claim(
        "wv_constructed_replacement",
        lambda r: _adequate_d(r)["lost_points"],
        AtMost(5),
        unit=" points",
        statement="replacing W_V by the constructed W̄_V costs little accuracy at adequate d "
        "(measured at the largest d)",
        source=f"{PAPER} §5, App. C (wv_replace_dim)",
        ours=True,
        controls=("shuffled_memory",),
    ),
    Claim(
        "hamming_inner_spearman",
        lambda r: r["hamming_inner"]["trained_W_V"]["spearman"],
        AtMost(-0.9),
        statement="mean <W_E(i), W_E(j)> strictly decreases with the Hamming distance D_H (trained W_V and "
        "embeddings, d < V; the N1 generator of the other claims): Spearman correlation",
        source=f"{PAPER} §5 eq. 5.2, Fig. 3b",
        ours=True,
        controls=("untrained",),
    ),
    Claim(
        "hamming_inner_r2",
        lambda r: r["hamming_inner"]["trained_W_V"]["r2"],
        AtLeast(0.9),
        statement="an affine fit of the mean inner product against D_H explains it (R²), with a negative slope",
        source=f"{PAPER} §5 eq. 5.2, Fig. 3b",
        ours=True,
        also=(Condition("slope", lambda r: r["hamming_inner"]["trained_W_V"]["slope"], Below(0)),),
        controls=("untrained",),
    ),
    Claim(
        "hamming_inner_bitflip_r2",
        lambda r: r["hamming_inner"]["generator_trained_W_V"]["r2"],
        AtLeast(0.9),
        statement="the same geometry with a generator whose log-likelihood is affine in D_H (bitflip: each bit "
        "flipped with probability 0.15; m = 7, d = 32 < V = 128, trained W_V): R² of the affine fit, with a "
        "negative slope and Spearman ≤ -0.9",
        source=f"{PAPER} §5 eq. 5.2, Fig. 3b (hamming_inner_n7); the generator is ours",
        ours=True,
        also=(
            Condition("slope", lambda r: r["hamming_inner"]["generator_trained_W_V"]["slope"], Below(0)),
            Condition("Spearman", lambda r: r["hamming_inner"]["generator_trained_W_V"]["spearman"], AtMost(-0.9)),
        ),
        controls=("untrained",),
    ),
    Claim(
        "spectrum_top_energy",
        lambda r: r["spectrum"]["trained_embeddings"]["top_m_plus_1_energy"],
        AtLeast(0.8),
        statement="the top m+1 eigenvalues of the centred Gram matrix W_E W_E^T carry most of the energy (fraction)",
        source=f"{PAPER} §5, App. C (spectrum)",
        ours=True,
        controls=("untrained",),
    ),
    Claim(
        "attention_cluster_ratio",
        lambda r: r["attention"]["cluster_ratio"],
        AtLeast(2),
        unit="x",
        statement="cluster variant: mean attention on same-cluster context tokens over the mean on other tokens",
        source=f"{PAPER} Fig. 3c, App. C (heat_map)",
        ours=True,
        controls=("uniform_attention",),
    ),
    Claim(
        "attention_uniform_drop",
        lambda r: r["attention"]["uniform_drop_points"],
        Above(1),
        unit=" points",
        statement="learned attention beats uniform attention: accuracy lost when the pattern is made uniform "
        "(cluster variant)",
        source=f"{PAPER} §6, Fig. 3c",
        ours=True,
        controls=("uniform_attention",),
    ),
    Claim(
        "length_spearman",
        lambda r: r["length"]["spearman"],
        Above(0.8),
        statement="accuracy rises with the context length L (Spearman correlation), and the longest L beats the "
        "shortest beyond sampling noise",
        source=f"{PAPER} App. C (length)",
        ours=True,
        also=(
            Condition(
                "rise from the shortest to the longest L (standard errors)",
                lambda r: r["length"]["rise_in_se"],
                Above(2),
            ),
        ),
        controls=("untrained",),
    ),
    Claim(
        "dim_monotone",
        lambda r: r["dim"]["drops_beyond_2_se"],
        Equals(0),
        statement="accuracy rises with the embedding dimension d: no step of the d grid loses more than two "
        "standard errors (accuracies near 1 are ranked by noise, so no rank correlation), and the largest d beats "
        "the smallest beyond sampling noise",
        source=f"{PAPER} App. C (dim)",
        ours=True,
        also=(
            Condition(
                "rise from the smallest to the largest d (standard errors)", lambda r: r["dim"]["rise_in_se"], Above(2)
            ),
        ),
        controls=("untrained",),
    ),
    Claim(
        "frozen_gap_small_d",
        lambda r: _frozen_gap(r, "small"),
        AtLeast(10),
        unit=" points",
        statement="d < V: frozen Gaussian embeddings are clearly worse than trained ones (accuracy gap)",
        source=f"{PAPER} App. C (dim)",
        ours=True,
        controls=("untrained",),
    ),
    Claim(
        "frozen_gap_large_d",
        lambda r: _frozen_gap(r, "large"),
        Within(-5, 5),
        unit=" points",
        statement="d ≥ V: frozen Gaussian embeddings are about as good as trained ones (accuracy gap at the largest "
        "d, 4V), because the trained W_V does the work",
        source=f"{PAPER} App. C (dim)",
        ours=True,
        controls=("identity_W_V",),
    ),
    Claim(
        "hijack_follows_evidence",
        lambda r: r["hijack_synthetic"]["balance"]["above"]["flip_rate"],
        AtLeast(0.5),
        statement="hijacking follows the evidence: replacing k* = (1-ε)L/(2-ε) context tokens by neighbours of y' "
        "leaves as many neighbours of y as it inserts; most predictions flip to y' at k = 2k* and most do not at "
        "k = k*/2 (flip rate at 2k*, and at k*/2)",
        source=f"{PAPER} §6, App. C (confusion_bar); k* from the constructed memory (spec §5 (4))",
        ours=True,
        also=(
            Condition(
                "flip rate at k*/2", lambda r: r["hijack_synthetic"]["balance"]["below"]["flip_rate"], Below(0.5)
            ),
        ),
        controls=("untrained",),
    ),
    Claim(
        "hijack_monotone",
        lambda r: r["hijack_synthetic"]["monotone"],
        IsTrue(),
        statement="the flip rate rises monotonically with k (each step >= -0.02), by at least half of the test "
        "sequences over the k grid",
        source=f"{PAPER} §6, App. C (confusion_bar)",
        ours=True,
        also=(
            Condition("rise of the flip rate over the k grid", lambda r: r["hijack_synthetic"]["rise"], AtLeast(0.5)),
        ),
        controls=("untrained",),
    ),
)

CHECKS = (
    Claim(
        "hijack_flip_rate_max_k",
        lambda r: r["hijack_synthetic"]["rows"][-1]["flip_rate"],
        AtLeast(0.5),
        statement="the hijack set-up works: at the largest k, 75 % of the context is noise-free neighbours of y' "
        "(three times the evidence left for y), so any model that does the task flips (fraction flipping; it cannot "
        "fail for a trained model: a check, not a claim)",
        source=f"{PAPER} §6, App. C (confusion_bar)",
        ours=True,
    ),
    Claim(
        "identity_is_hamming_vote",
        lambda r: max(abs(100 * (row["acc_identity"] - row["acc_hamming_vote"])) for row in r["wv_bar"]["rows"]),
        AtMost(3),
        unit=" points",
        statement="the model with W_V fixed to the identity decodes as the per-bit Hamming vote argmin_k sum_l "
        "D_H(k, x_l) (what it computes on embeddings with the geometry of eq. 5.2; largest accuracy difference over "
        "the W_V grid): the premise of the explanation of wv_trained_vs_identity, not a claim of the paper",
        source=f"{PAPER} §5 eq. 5.2 (the vote: ours)",
        ours=True,
    ),
    Claim(
        "constructed_memory_is_bayes",
        lambda r: (
            100
            * (
                r["wv_replace"]["construction"]["accuracy_bayes"]
                - r["wv_replace"]["construction"]["accuracy_constructed"]
            )
        ),
        AtMost(5),
        unit=" points",
        statement="the construction on its own terms: W̄_V with orthonormal embeddings (d = V) and uniform attention is "
        "nearly the Bayes-optimal predictor of the generator (accuracy below Bayes, at the shortest L of the W_V "
        "grid; an identity of the Naive-Bayes reading, not a claim about trained models)",
        source=f"{PAPER} §5 (the constructed W̄_V)",
        ours=True,
    ),
)


class LCAReproduction(Reproduction[LCAPreset]):
    name = "lca"
    title = (
        "Jiang, Rajendran, Ravikumar, Aragam (2024): Do LLMs dream of elephants (when told not to)? "
        "Latent concept association and associative memory in transformers"
    )
    presets = PRESETS
    experiments = EXPERIMENTS
    claims = CLAIMS
    checks = CHECKS
    saves_model = True
    report_figures = {
        "wv_bar": "Test accuracy with a trained value matrix `W_V` and with `W_V` fixed to the identity, for each "
        "number of latent bits m and context length L (d = V/2 < V). The paper (Fig. 3a): the trained `W_V` is better.",
        "hamming_inner": "Mean inner product of two tokens' embeddings against the Hamming distance of their latent "
        "codes, with an affine fit, for a trained and an identity `W_V`. The paper (eq. 5.2, Fig. 3b): it decreases "
        "with the distance.",
        "spectrum": "Eigenvalues of the centred Gram matrix `W_E W_E^T`, trained vs frozen Gaussian embeddings; the "
        "dotted line separates the top m+1, which the paper predicts carry most of the energy once trained.",
        "wv_replace": "Left: accuracy of the trained model and of the same model with `W_V` replaced by the "
        "constructed `W̄_V` (built from the embeddings and the neighbourhood), against d. Right: cosines of the "
        "principal angles between the top singular subspaces of `W_V` and `W̄_V` (1: the same subspace).",
        "attention": "Cluster variant with noise. Left: pre-softmax attention score of each (query, key) token pair "
        "through the embeddings, lines at the cluster boundaries. Right: mean read-out attention from each query "
        "cluster to each key cluster. The paper (Fig. 3c): attention selects the target's cluster.",
        "dim": "Test accuracy against the embedding dimension d, trained vs frozen Gaussian embeddings; the dotted "
        "line marks d = V, the number of tokens: below it, trained embeddings matter.",
        "length": "Test accuracy against the context length L (d fixed).",
        "hijack_synthetic": "Left: context hijacking: the fraction of predictions that flip to y' as k context tokens "
        "are replaced by neighbours of y'. Right: activation patching of `hook_resid_pre` at each position, clean "
        "into the fully hijacked run: the fraction of the logit difference restored (the read-out is the last "
        "position).",
    }

    def finish(self, ctx: Context[LCAPreset]) -> None:
        lab = ctx.state.pop("lab", None)
        if lab is not None:
            lab.close()
