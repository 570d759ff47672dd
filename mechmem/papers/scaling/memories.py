"""Associative memories ``W = sum_x q(x) u_{f(x)} e_x^T``, their predictions and their exact error.

Two implementations of the same thing:

* a straightforward one (:func:`memory_matrix`, :func:`predict`, :func:`recall_error`) for one set of embeddings
  at one ``d``: it builds the ``d x d`` matrix, as the paper writes it;
* a batched one (:func:`error_curve`) for many trials, many ``d`` and any extra leading axes (e.g. several T) in
  one computation. It never forms ``W``: since ``W = sum_c u_c v_c^T`` with ``v_c = sum_{x: f(x)=c} q(x) e_x``,
  the scores are ``u_y^T W e_x = sum_c (u_y . u_c)(v_c . e_x)``, which costs ``O(M N d)`` instead of ``O(N d^2)``.
  Each ``d`` uses the first ``d`` coordinates of embeddings drawn once at ``d_max`` (a coordinate mask).

The prediction is ``argmax_y u_y^T W e_x`` with ties going to the smallest class (``torch.argmax``), so an empty
memory predicts class 0, as in the authors' notebooks. The error is exact: ``sum_x p(x) 1{f_W(x) != f*(x)}``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from mechmem.papers.scaling.data import Embeddings, check_positive_int

SCHEMES = ("all", "frequency", "threshold", "seen", "top_seen")
"""Memory schemes q(x): "all" (q = 1 on every token, infinite data), "frequency" (q = p), "threshold"
(q = 1{x < P}: the P most frequent tokens), "seen" (q = 1{x seen among the T samples}), "top_seen" (q = p_hat^rho
on the P most frequent seen tokens by count, ties broken by token index; the paper's q_hat_{rho,[P]})."""


def check_scheme(scheme: str) -> None:
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; allowed values: {', '.join(SCHEMES)}")


def threshold_P(d: int, divisor: int) -> int:
    """The notebooks' threshold ``P = floor(d / divisor)`` (divisor 8 with infinite data, 12 with finite data)."""
    check_positive_int("d", d)
    check_positive_int("divisor", divisor)
    return d // divisor


def memory_weights(
    scheme: str,
    p: Float[Tensor, "N"],
    *,
    P: int | Int[Tensor, "..."] | None = None,
    counts: Float[Tensor, "*batch N"] | None = None,
    rho: float = 0.0,
) -> Float[Tensor, "*out N"]:
    """The weights ``q(x)`` of a scheme (see :data:`SCHEMES`).

    ``P`` (thresholds) may be an int or a tensor of ints broadcast against the leading axes of the output (e.g. one
    P per d); ``counts`` are token counts of the samples (leading axes: trials, T, ...).
    """
    check_scheme(scheme)
    N = p.shape[-1]
    if scheme == "all":
        return torch.ones_like(p)
    if scheme == "frequency":
        return p.clone()
    if scheme in ("threshold", "top_seen") and P is None:
        raise ValueError(f"scheme {scheme!r} needs the threshold P")
    if scheme in ("seen", "top_seen") and counts is None:
        raise ValueError(f"scheme {scheme!r} needs the sample counts")
    if P is not None:
        P = torch.as_tensor(P)
        if (P < 0).any():
            raise ValueError(f"threshold P must be >= 0, got {P.tolist()}")
        P = P[..., None]  # broadcast over tokens
    if scheme == "threshold":
        return (torch.arange(N) < P).to(p.dtype)
    seen = (counts > 0).to(p.dtype)
    if scheme == "seen":
        return seen
    # top_seen: rank tokens by count (stable sort: ties go to the smaller token index)
    order = torch.sort(counts, dim=-1, descending=True, stable=True).indices
    rank = torch.empty_like(order).scatter_(-1, order, torch.arange(N).expand_as(order).contiguous())
    p_hat = counts / counts.sum(-1, keepdim=True).clamp_min(1)
    q = torch.where(seen > 0, p_hat.clamp_min(1e-300) ** rho, torch.zeros_like(p_hat))
    return q * (rank < P).to(p.dtype)


# ----------------------------------------------------------------------------------------------------------------
# straightforward implementation (one trial, one d)
# ----------------------------------------------------------------------------------------------------------------


def memory_matrix(
    q: Float[Tensor, "N"], E: Float[Tensor, "N d"], U: Float[Tensor, "M d"], f: Int[Tensor, "N"]
) -> Float[Tensor, "d d"]:
    """``W = sum_x q(x) u_{f(x)} e_x^T`` (column convention: ``u_y^T W e_x`` scores class y for input x)."""
    return U[f].T @ (q[:, None] * E)


def scores(W: Float[Tensor, "d d"], E: Float[Tensor, "N d"], U: Float[Tensor, "M d"]) -> Float[Tensor, "N M"]:
    """``scores[x, y] = u_y^T W e_x``."""
    return E @ W.T @ U.T


def predict(W: Float[Tensor, "d d"], E: Float[Tensor, "N d"], U: Float[Tensor, "M d"]) -> Int[Tensor, "N"]:
    """``f_W(x) = argmax_y u_y^T W e_x`` (ties to the smallest class)."""
    return scores(W, E, U).argmax(-1)


def recall_error(pred: Int[Tensor, "... N"], f: Int[Tensor, "N"], p: Float[Tensor, "N"]) -> Float[Tensor, "..."]:
    """The exact p-weighted error ``sum_x p(x) 1{pred(x) != f(x)}``."""
    return ((pred != f).to(p.dtype) * p).sum(-1)


# ----------------------------------------------------------------------------------------------------------------
# batched implementation (trials x d x anything)
# ----------------------------------------------------------------------------------------------------------------


def _dimension_mask(ds: Sequence[int], d_max: int, dtype: torch.dtype) -> Float[Tensor, "n_d d_max"]:
    for d in ds:
        check_positive_int("d", int(d))
        if d > d_max:
            raise ValueError(f"d={d} exceeds the drawn dimension d_max={d_max}")
    return (torch.arange(d_max)[None, :] < torch.as_tensor(list(ds))[:, None]).to(dtype)


def batched_predictions(
    q: Float[Tensor, "..."], emb: Embeddings, ds: Sequence[int], f: Int[Tensor, "N"]
) -> Int[Tensor, "*batch n_d trials N"]:
    """Predictions of the memories with weights ``q`` for every trial and every d in ``ds`` at once.

    ``q`` broadcasts against ``[*batch, n_d, trials, N]`` (a plain ``[N]`` vector works). The embeddings at each d are
    the first d coordinates of ``emb``; the positive scale factors of ``E`` (1/sqrt(d)) are skipped since they do not
    change the argmax, while ``U`` is normalised per d exactly.
    """
    E, U = emb.E_raw, emb.U_raw
    n_trials, N, d_max = E.shape
    M = U.shape[1]
    mask = _dimension_mask(ds, d_max, E.dtype)  # [n_d, k]
    q = q.to(E.dtype)
    shape = torch.broadcast_shapes(q.shape, (len(ds), n_trials, N))
    q = q.expand(shape)
    onehot = F.one_hot(f, M).to(E.dtype)  # [N, M]
    V = torch.einsum("...dtx,xc,txk->...dtck", q, onehot, E) * mask[:, None, None, :]  # v_c at each d
    A = torch.einsum("...dtck,txk->...dtcx", V, E)  # v_c . e_x
    U_d = U[None] * mask[:, None, None, :]
    U_d = U_d / U_d.norm(dim=-1, keepdim=True)
    G = U_d @ U_d.transpose(-1, -2)  # [n_d, t, M, M] : u_y . u_c
    S = torch.einsum("dtyc,...dtcx->...dtxy", G, A)  # scores[..., x, y]
    return S.argmax(-1)


def error_curve(
    q: Float[Tensor, "..."],
    emb: Embeddings,
    ds: Sequence[int],
    p: Float[Tensor, "N"],
    f: Int[Tensor, "N"],
) -> Float[Tensor, "*batch n_d trials"]:
    """Exact p-weighted error of every memory in the batch (see :func:`batched_predictions`)."""
    return recall_error(batched_predictions(q, emb, ds, f), f, p.to(emb.E_raw.dtype))


def scheme_error_curve(
    scheme: str,
    emb: Embeddings,
    ds: Sequence[int],
    p: Float[Tensor, "N"],
    f: Int[Tensor, "N"],
    *,
    divisor: int = 8,
    counts: Float[Tensor, "*batch trials N"] | None = None,
    rho: float = 0.0,
) -> Float[Tensor, "*batch n_d trials"]:
    """Error vs d of one scheme; thresholds are ``P = d // divisor``; ``counts`` (if any) per trial."""
    check_scheme(scheme)
    P = torch.tensor([threshold_P(int(d), divisor) for d in ds])[:, None]  # [n_d, 1] -> broadcasts over trials
    if counts is not None:
        counts = counts.unsqueeze(-3)  # [*batch, 1, trials, N]
    q = memory_weights(scheme, p, P=P if scheme in ("threshold", "top_seen") else None, counts=counts, rho=rho)
    if scheme in ("all", "frequency"):
        q = q.expand(len(ds), 1, p.shape[-1])
    return error_curve(q, emb, ds, p, f)


def loop_error_curve(
    scheme: str,
    emb: Embeddings,
    ds: Sequence[int],
    p: Float[Tensor, "N"],
    f: Int[Tensor, "N"],
    *,
    divisor: int = 8,
    counts: Float[Tensor, "trials N"] | None = None,
    rho: float = 0.0,
) -> Float[Tensor, "n_d trials"]:
    """The same as :func:`scheme_error_curve` (without extra batch axes), one trial and one d at a time, building
    each ``d x d`` matrix W: the straightforward reference used in tests and the benchmark."""
    out = torch.zeros(len(ds), emb.E_raw.shape[0], dtype=emb.E_raw.dtype)
    for i, d in enumerate(ds):
        E_all, U_all = emb.at(int(d))
        P = threshold_P(int(d), divisor)
        for t in range(E_all.shape[0]):
            q = memory_weights(scheme, p, P=P, counts=None if counts is None else counts[t], rho=rho)
            W = memory_matrix(q.to(E_all.dtype), E_all[t], U_all[t], f)
            out[i, t] = recall_error(predict(W, E_all[t], U_all[t]), f, p.to(E_all.dtype))
    return out


def fit_loglog_slope(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least-squares fit of ``log y = slope * log x + intercept``; returns ``(slope, exp(intercept))``.

    Every value must be positive (a zero error has no logarithm): a ValueError names the offending point.
    """
    xs = [float(x) for x in xs]
    ys = [float(y) for y in ys]
    if len(xs) != len(ys) or len(xs) < 2:
        raise ValueError(f"need at least two (x, y) points of equal length, got {len(xs)} xs and {len(ys)} ys")
    for x, y in zip(xs, ys):
        if not (x > 0 and y > 0):
            raise ValueError(f"log-log fit needs positive values, got point (x={x}, y={y})")
    lx = torch.tensor([math.log(x) for x in xs], dtype=torch.float64)
    ly = torch.tensor([math.log(y) for y in ys], dtype=torch.float64)
    lx_c = lx - lx.mean()
    slope = float((lx_c * (ly - ly.mean())).sum() / (lx_c**2).sum())
    intercept = float(ly.mean() - slope * lx.mean())
    return slope, math.exp(intercept)
