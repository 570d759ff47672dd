"""Closed-form constructions of the paper's Section 5 and the statistics used to compare them with trained models.

Convention: the paper writes the value matrix in column convention, ``logit_k = <W_E(k), W̄_V h>``.
TransformerLens multiplies row vectors (``h @ W_V @ W_O @ W_U``), so the TransformerLens-layout
matrix is the transpose; :func:`constructed_W_V` returns the TransformerLens layout.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from .generator import Neighbourhood, hamming, neighbourhood_matrix, parse_neighbourhood, popcount


def neighbour_adjacency(nb: Neighbourhood | str, m: int) -> Float[Tensor, "V V"]:
    """``A[i, j] = 1`` if ``j`` is in the neighbourhood N(i) (the support of q(. | i)), else 0."""
    if isinstance(nb, str):
        nb = parse_neighbourhood(nb, m)
    return (neighbourhood_matrix(nb, m) > 0).float()


def constructed_W_V(W_E: Float[Tensor, "V d"], adjacency: Float[Tensor, "V V"]) -> Float[Tensor, "d d"]:
    """W̄_V = Σ_i W_E(i) (Σ_{j ∈ N(i)} W_E(j))^T (paper layout), returned transposed for TransformerLens.

    Only the first V rows of ``W_E`` (the latent tokens) enter.
    """
    V = adjacency.shape[0]
    E = W_E[:V].float()
    paper = E.T @ adjacency.float() @ E  # Σ_i E_i (Σ_j A_ij E_j)^T  =  E^T A E
    return paper.T


def argmax_random_ties(logits: Float[Tensor, "batch V"], generator: torch.Generator) -> Int[Tensor, " batch"]:
    """Argmax that breaks exact ties uniformly at random (seeded), so ties do not favour low token ids."""
    top = logits.max(dim=-1, keepdim=True).values
    is_top = logits >= top
    noise = torch.rand(logits.shape, generator=generator)
    return torch.where(is_top, noise, torch.full_like(noise, -1.0)).argmax(dim=-1)


def uniform_attention_accuracy(
    context: Int[Tensor, "batch L"],
    y: Int[Tensor, " batch"],
    W_E: Float[Tensor, "V d"],
    W_V: Float[Tensor, "d d"],
    generator: torch.Generator,
) -> float:
    """Accuracy of ``logit_k = <W_E(k), h W_V>`` with uniform attention ``h = mean_l W_E(x_l)`` (TL layout W_V)."""
    h = W_E[context].mean(dim=1)
    logits = (h @ W_V) @ W_E.T
    return (argmax_random_ties(logits, generator) == y).float().mean().item()


def bayes_log_likelihood(
    context: Int[Tensor, "batch L"],
    m: int,
    neighbourhood: Neighbourhood | str,
    epsilon: float,
) -> Float[Tensor, "batch V"]:
    """``log P(context | y = k)`` for every candidate k under the generator: each context token is drawn from
    ``(1 - epsilon) q(. | k) + epsilon * uniform([V] \\ {k})``, so a candidate present in the context is impossible
    (-inf). The argmax is the Bayes-optimal prediction (the target is uniform)."""
    if isinstance(neighbourhood, str):
        neighbourhood = parse_neighbourhood(neighbourhood, m)
    V = 2**m
    q = neighbourhood_matrix(neighbourhood, m)  # [k, j] = q(j | k)
    off_diagonal = 1.0 - torch.eye(V, dtype=torch.float64)
    log_p = torch.log((1 - epsilon) * q + epsilon * off_diagonal / (V - 1))  # -inf on the diagonal
    counts = torch.zeros(context.shape[0], V, dtype=torch.float64)
    counts.scatter_add_(1, context.long(), torch.ones(context.shape, dtype=torch.float64))
    present = counts @ torch.isinf(log_p).double().T > 0  # [batch, k]: some token impossible under k
    finite = torch.where(torch.isinf(log_p), torch.zeros_like(log_p), log_p)
    return (counts @ finite.T).masked_fill(present, float("-inf"))


def bayes_accuracy(
    context: Int[Tensor, "batch L"],
    y: Int[Tensor, " batch"],
    m: int,
    neighbourhood: Neighbourhood | str,
    epsilon: float,
    generator: torch.Generator,
) -> float:
    """Accuracy of the Bayes-optimal predictor (the best any model can do on these examples, in expectation)."""
    pred = argmax_random_ties(bayes_log_likelihood(context, m, neighbourhood, epsilon), generator)
    return (pred == y).float().mean().item()


def hamming_vote_accuracy(
    context: Int[Tensor, "batch L"],
    y: Int[Tensor, " batch"],
    m: int,
    generator: torch.Generator,
) -> float:
    """Accuracy of ``argmin_k sum_l D_H(k, x_l)`` (a per-bit majority vote over the context).

    This is what W_V = identity computes with uniform attention when the embeddings have the Hamming geometry of
    eq. (5.2), ``<W_E(i), W_E(j)> = b_0 - b_1 D_H(i, j)`` with b_1 > 0: the logit of k is affine in
    ``-sum_l D_H(k, x_l)``. Unlike the Bayes predictor it cannot rule out candidates present in the context.
    """
    V = 2**m
    ids = torch.arange(V)
    dist = hamming(ids[:, None], ids[None, :]).double()
    counts = torch.zeros(context.shape[0], V, dtype=torch.float64)
    counts.scatter_add_(1, context.long(), torch.ones(context.shape, dtype=torch.float64))
    pred = argmax_random_ties(-(counts @ dist), generator)
    return (pred == y).float().mean().item()


def orthonormal_embeddings(V: int, d: int, generator: torch.Generator) -> Float[Tensor, "V d"]:
    """V orthonormal rows in R^d (needs d >= V): a random rotation of the first V basis vectors."""
    if d < V:
        raise ValueError(f"orthonormal embeddings need d >= V, got d={d}, V={V}")
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=generator))
    return q[:V]


# --- embedding geometry (eq. 5.2) -------------------------------------------------------------


def inner_by_hamming(W_E: Float[Tensor, "V d"], m: int) -> Float[Tensor, " m_plus_1"]:
    """Mean <W_E(i), W_E(j)> over token pairs at each Hamming distance 0..m (distance 0 = squared norms)."""
    V = 2**m
    E = W_E[:V].float()
    gram = E @ E.T
    ids = torch.arange(V)
    dist = hamming(ids[:, None], ids[None, :])
    return torch.stack([gram[dist == k].mean() for k in range(m + 1)])


def gram_by_mask(W_E: Float[Tensor, "V d"], m: int) -> Float[Tensor, " V"]:
    """``g(mask) = mean_i <W_E(i), W_E(i XOR mask)>``: the Gram matrix as a function of the XOR of the two latent
    codes (eq. (5.2) makes it a function of the mask's Hamming weight alone)."""
    V = 2**m
    E = W_E[:V].double()
    gram = E @ E.T
    ids = torch.arange(V)
    return torch.stack([gram[ids, ids ^ mask].mean() for mask in range(V)])


def walsh_degree_energy(g: Float[Tensor, " V"], m: int) -> Float[Tensor, " m_plus_1"]:
    """Energy of a function of the mask by Walsh degree: ``sum_{|S| = k} ghat(S)^2`` for k = 0..m, with
    ``ghat(S) = 2^-m sum_mask g(mask) (-1)^{|S & mask|}``. A function affine in the Hamming weight (eq. (5.2)) has
    energy at degrees 0 and 1 only; parity-like patterns (the indicator of D_H = 1) put it at high degrees."""
    V = 2**m
    ids = torch.arange(V)
    signs = 1.0 - 2.0 * (popcount(ids[:, None] & ids[None, :]) % 2).double()  # [S, mask]
    g_hat = signs @ g.double() / V
    degree = popcount(ids)
    return torch.stack([(g_hat[degree == k] ** 2).sum() for k in range(m + 1)]).float()


def degree_one_share(energy: Tensor) -> float:
    """The share of the non-constant Walsh energy at degree 1 (1: the geometry of eq. (5.2) exactly)."""
    rest = energy[1:].sum().item()
    return float(energy[1].item() / rest) if rest > 0 else float("nan")


def centred_gram_spectrum(W_E: Float[Tensor, "V d"], V: int) -> Float[Tensor, " V"]:
    """Eigenvalues (descending, clamped at 0) of the Gram matrix of the centred token embeddings."""
    E = W_E[:V].double()
    E = E - E.mean(dim=0, keepdim=True)
    eig = torch.linalg.eigvalsh(E @ E.T).flip(0)
    return eig.clamp_min(0.0).float()


def top_energy(eigenvalues: Tensor, k: int) -> float:
    """Fraction of the spectrum's sum carried by its top ``k`` eigenvalues."""
    total = eigenvalues.sum().item()
    return float(eigenvalues[:k].sum().item() / total) if total > 0 else float("nan")


def principal_cosines(A: Float[Tensor, "d d"], B: Float[Tensor, "d d"], k: int, side: str = "left") -> Tensor:
    """Cosines of the principal angles between the top-``k`` singular subspaces of A and B (descending)."""
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    UA, _, VhA = torch.linalg.svd(A.double())
    UB, _, VhB = torch.linalg.svd(B.double())
    SA, SB = (UA[:, :k], UB[:, :k]) if side == "left" else (VhA[:k].T, VhB[:k].T)
    return torch.linalg.svdvals(SA.T @ SB).clamp(0.0, 1.0).float()


# --- small statistics (no scipy in the environment) ---------------------------------------------


def rankdata(x: Tensor) -> Tensor:
    """Ranks 1..n with ties given their average rank (as scipy.stats.rankdata)."""
    x = x.double().flatten()
    order = torch.argsort(x, stable=True)
    ranks = torch.empty_like(x)
    ranks[order] = torch.arange(1, len(x) + 1, dtype=torch.double)
    for value in torch.unique(x):
        tie = x == value
        ranks[tie] = ranks[tie].mean()
    return ranks


def spearman(x, y) -> float:
    """Spearman rank correlation (Pearson correlation of average ranks); nan if one side is constant."""
    rx, ry = rankdata(torch.as_tensor(x)), rankdata(torch.as_tensor(y))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = (rx.norm() * ry.norm()).item()
    return float((rx @ ry).item() / denom) if denom > 0 else float("nan")


def affine_fit(x, y) -> tuple[float, float, float]:
    """Least-squares ``y ≈ a + b x``: returns (a, b, R^2)."""
    x = torch.as_tensor(x, dtype=torch.double)
    y = torch.as_tensor(y, dtype=torch.double)
    X = torch.stack([torch.ones_like(x), x], dim=1)
    coef = torch.linalg.lstsq(X, y[:, None]).solution.flatten()
    resid = y - X @ coef
    ss_tot = ((y - y.mean()) ** 2).sum().item()
    r2 = 1.0 - (resid**2).sum().item() / ss_tot if ss_tot > 0 else float("nan")
    return float(coef[0]), float(coef[1]), float(r2)
