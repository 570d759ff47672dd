"""Associative-memory capacity (Fig. 1 and Fig. 6 of the paper).

Inputs ``x in [N]`` have unit-norm random embeddings ``e_x`` and outputs ``y in [M]`` unit-norm random
unembeddings ``u_y``; a memory ``F`` stores ``x -> f*(x)`` when ``argmax_y u_y^T F(e_x) = f*(x)``.

- linear memory ``F(e) = W e`` (``W: d x d``), trained full batch with Adam (lr 1000, as the authors);
- MLP memory ``F(e) = W_2 ReLU(W_1 e + b_1)`` (width ``m``), trained full batch with Adam (lr 3e-2);
- the outer-product construction ``W = sum_x u_{f*(x)} e_x^T`` (no training).

``max_stored`` binary-searches the largest ``N`` stored at ``>= 99 %`` accuracy, with fresh embeddings for
every ``N`` (drawn from ``seed`` and ``N``), and stops when ``hi / lo <= 1.01`` or ``hi - lo <= 1``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

Kind = Literal["linear", "mlp", "outer"]
KINDS = ("linear", "mlp", "outer")
SUCCESS = 0.99


@dataclass(frozen=True)
class MemoryProblem:
    """One associative-memory problem: embeddings, unembeddings and the target map."""

    E: Float[Tensor, "N d"]
    U: Float[Tensor, "M d"]
    target: Int[Tensor, "N"]


def unit_vectors(n: int, d: int, generator: torch.Generator) -> Float[Tensor, "n d"]:
    """``n`` i.i.d. points uniform on the unit sphere of R^d (normalised Gaussians)."""
    x = torch.randn(n, d, generator=generator)
    return x / x.norm(dim=1, keepdim=True)


def make_problem(N: int, d: int, M: int | None, seed: int) -> MemoryProblem:
    """Store ``f*(x) = x`` (``M=None``: M = N) or ``f*(i) = floor(i M / N)`` (fixed M, Fig. 6)."""
    if N < 1 or d < 1:
        raise ValueError(f"N and d must be >= 1, got N={N}, d={d}")
    if M is not None and M < 1:
        raise ValueError(f"M must be None (M = N) or >= 1, got {M}")
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + N * 7919 + d)
    n_out = N if M is None else M
    target = torch.arange(N) if M is None else (torch.arange(N) * M) // N
    return MemoryProblem(E=unit_vectors(N, d, g), U=unit_vectors(n_out, d, g), target=target)


def accuracy(logits: Float[Tensor, "N M"], target: Int[Tensor, "N"]) -> float:
    return (logits.argmax(-1) == target).float().mean().item()


def outer_product_accuracy(p: MemoryProblem) -> float:
    """Accuracy of the Hebbian construction ``W = sum_x u_{f*(x)} e_x^T`` (no training)."""
    W = p.U[p.target].T @ p.E  # [d, d] = sum_x u_f(x) e_x^T
    return accuracy(p.E @ W.T @ p.U.T, p.target)


def train_linear(p: MemoryProblem, lr: float = 1000.0, max_steps: int = 4096, seed: int = 0) -> float:
    """Full-batch Adam on ``W`` (LeCun-normal init); early stop at accuracy > 0.99; returns the best accuracy.

    The gradient ``dL/dW = (P U)^T E`` (``P`` = softmax minus one-hot, over N) and the Adam update are
    written out by hand: the same numbers as ``torch.optim.Adam`` at a third of the per-step overhead,
    which dominates at these sizes.
    """
    d, N = p.E.shape[1], p.E.shape[0]
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(d, d, generator=g) / math.sqrt(d)
    m1, m2 = torch.zeros_like(W), torch.zeros_like(W)
    b1, b2, eps = 0.9, 0.999, 1e-8
    rows = torch.arange(N)
    best = 0.0
    with _flush_denormal():
        for step in range(max_steps + 1):
            logits = (p.E @ W.T) @ p.U.T
            best = max(best, accuracy(logits, p.target))
            if best > SUCCESS or step == max_steps:
                break
            P = torch.softmax(logits, dim=-1)
            P[rows, p.target] -= 1.0
            grad = (P @ p.U).T @ p.E / N
            m1.mul_(b1).add_(grad, alpha=1 - b1)
            m2.mul_(b2).addcmul_(grad, grad, value=1 - b2)
            t = step + 1
            denom = (m2 / (1 - b2**t)).sqrt_().add_(eps)
            W.addcdiv_(m1, denom, value=-lr / (1 - b1**t))
    return best


def train_mlp(
    p: MemoryProblem, m: int, lr: float = 3e-2, max_steps: int = 32768, eval_every: int = 256, seed: int = 0
) -> float:
    """Full-batch Adam on ``W_1, b_1, W_2`` (Flax Dense init: LeCun normal, zero bias)."""
    if m < 1:
        raise ValueError(f"m (MLP width) must be >= 1, got {m}")
    d = p.E.shape[1]
    g = torch.Generator().manual_seed(seed)
    W1 = (torch.randn(d, m, generator=g) / math.sqrt(d)).requires_grad_(True)
    b1 = torch.zeros(m, requires_grad=True)
    W2 = (torch.randn(m, d, generator=g) / math.sqrt(m)).requires_grad_(True)
    return _fit([W1, b1, W2], lambda: torch.relu(p.E @ W1 + b1) @ W2 @ p.U.T, p.target, lr, max_steps, eval_every)


def _fit(params, logits_fn: Callable[[], Tensor], target, lr: float, max_steps: int, eval_every: int) -> float:
    """Full-batch cross-entropy with Adam; the reported accuracy is the max over evaluations (as the authors)."""
    opt = torch.optim.Adam(params, lr=lr)
    with _flush_denormal():
        return _fit_loop(params, logits_fn, target, opt, max_steps, eval_every)


def _fit_loop(params, logits_fn, target, opt, max_steps: int, eval_every: int) -> float:
    best = 0.0
    for step in range(max_steps + 1):
        logits = logits_fn()
        if step % eval_every == 0 or step == max_steps:
            best = max(best, accuracy(logits.detach(), target))
            if best > SUCCESS or step == max_steps:
                break
        loss = torch.nn.functional.cross_entropy(logits, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return best


class _flush_denormal:
    """Flush subnormal floats to zero inside the block (huge-lr Adam drives softmax tails subnormal, which is
    several times slower on CPU); restores the previous setting on exit."""

    def __enter__(self):
        torch.set_flush_denormal(True)
        return self

    def __exit__(self, *exc):
        torch.set_flush_denormal(False)
        return False


def stores(
    kind: Kind, N: int, d: int, m: int | None = None, M: int | None = None, seed: int = 0, max_steps: int | None = None
) -> float:
    """Accuracy of memory ``kind`` on a fresh problem of size ``N`` (embeddings drawn from ``seed``)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    p = make_problem(N, d, M, seed)
    if kind == "outer":
        return outer_product_accuracy(p)
    if kind == "linear":
        return train_linear(p, max_steps=max_steps or 4096, seed=seed)
    if m is None:
        raise ValueError("m (MLP width) is required for kind='mlp'")
    return train_mlp(p, m, max_steps=max_steps or 32768, seed=seed)


def binary_search(succeeds: Callable[[int], bool], lo: int, hi: int) -> int:
    """Largest ``N`` in ``[lo, hi]`` with ``succeeds(N)``, assuming monotonicity, as the authors' ``run.py``.

    ``lo`` is taken as a success without being tried (as the authors' search); the search stops when
    ``hi / lo <= 1.01`` or ``hi - lo <= 1``. ``hi`` is tried first, so a range that is too small shows up
    as ``N == hi`` (callers report it).
    """
    if lo < 1 or hi < lo:
        raise ValueError(f"need 1 <= lo <= hi, got lo={lo}, hi={hi}")
    if succeeds(hi):
        return hi
    while hi / lo > 1.01 and hi - lo > 1:
        mid = (lo + hi) // 2
        if succeeds(mid):
            lo = mid
        else:
            hi = mid
    return lo


def max_stored(
    kind: Kind,
    d: int,
    m: int | None = None,
    M: int | None = None,
    seed: int = 0,
    lo: int | None = None,
    hi: int | None = None,
    max_steps: int | None = None,
) -> int:
    """Largest ``N`` stored at >= 99 % accuracy; default range as the authors (linear ``[d, d^2/2]``,
    MLP ``[d, m d]``, outer product ``[2, d^2/2]``)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if d < 2:
        raise ValueError(f"d must be >= 2, got {d}")
    if kind == "mlp" and (m is None or m < 1):
        raise ValueError(f"m (MLP width) must be >= 1 for kind='mlp', got {m}")
    default_lo = 2 if kind == "outer" else d
    default_hi = max(default_lo + 1, d * d // 2 if kind != "mlp" else m * d)
    lo = default_lo if lo is None else lo
    hi = default_hi if hi is None else hi
    return binary_search(lambda N: stores(kind, N, d, m, M, seed, max_steps) >= SUCCESS, lo, hi)


def capacity_constant(N: int | float, d: int, m: int | None = None, log: bool = True) -> float:
    """``N ln N / d^2`` (linear), ``N ln N / (m d)`` (MLP, M = N) or ``N / (m d)`` (``log=False``)."""
    size = d * d if m is None else m * d
    return (N * math.log(N) if log else N) / size
