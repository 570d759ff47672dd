"""Vectorised, seeded sampler for the latent concept association task.

Every token ``t`` in ``[V]``, ``V = 2**m``, is paired with a binary latent ``z(t)``: bit ``z_k``
(k = 1..m) is bit ``m - k`` of the integer ``t``, so ``z_1`` is the most significant bit and the
"first two bits" of the cluster variant are ``t >> (m - 2)``.

Every neighbourhood kind is a distribution over XOR masks: a context token is ``y ^ mask`` with
``mask != 0``, so the target never appears in its own context. Noise tokens (probability
``epsilon``) are uniform over ``[V] \\ {y}``. The whole batch is drawn with a handful of torch
calls on a caller-owned ``torch.Generator``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from jaxtyping import Int
from torch import Tensor

M_MIN, M_MAX = 2, 16
NEIGHBOURHOOD_KINDS = ("N1", "ball(r)", "bitflip(p)", "cluster2")

_BALL = re.compile(r"^ball\((\d+)\)$")
_BITFLIP = re.compile(r"^bitflip\(([0-9]*\.?[0-9]+(?:[eE][-+]?\d+)?)\)$")


@dataclass(frozen=True)
class Neighbourhood:
    """A parsed neighbourhood kind: ``kind`` in N1 | ball | bitflip | cluster2, with its parameter."""

    kind: str
    radius: int = 1
    p: float = 0.0

    def __str__(self) -> str:
        if self.kind == "ball":
            return f"ball({self.radius})"
        if self.kind == "bitflip":
            return f"bitflip({self.p:g})"
        return self.kind


def parse_neighbourhood(spec: str, m: int) -> Neighbourhood:
    """Parse ``"N1"``, ``"ball(r)"`` (1 <= r <= m), ``"bitflip(p)"`` (0 < p <= 1) or ``"cluster2"`` (m >= 3)."""
    check_m(m)
    if not isinstance(spec, str):
        raise TypeError(f"neighbourhood must be a str, one of {NEIGHBOURHOOD_KINDS}, got {type(spec).__name__}")
    s = spec.strip()
    if s == "N1":
        return Neighbourhood("N1", radius=1)
    if s == "cluster2":
        if m < 3:
            raise ValueError(f"neighbourhood 'cluster2' needs m >= 3 (a cluster of 2^(m-2) >= 2 tokens), got m={m}")
        return Neighbourhood("cluster2")
    if match := _BALL.match(s):
        r = int(match.group(1))
        if not 1 <= r <= m:
            raise ValueError(f"neighbourhood ball(r): radius r must be in 1..m={m}, got r={r}")
        return Neighbourhood("ball", radius=r)
    if match := _BITFLIP.match(s):
        p = float(match.group(1))
        if not 0.0 < p <= 1.0:
            raise ValueError(f"neighbourhood bitflip(p): p must be in (0, 1], got p={p}")
        return Neighbourhood("bitflip", p=p)
    raise ValueError(f"neighbourhood {spec!r} does not exist; allowed kinds: {', '.join(NEIGHBOURHOOD_KINDS)}")


def check_m(m: int) -> None:
    """Latent bits: an int in [2, 16] (vocabulary 4 .. 65536)."""
    if isinstance(m, bool) or not isinstance(m, int):
        raise TypeError(f"m (latent bits) must be an int, got {type(m).__name__}")
    if not M_MIN <= m <= M_MAX:
        raise ValueError(f"m (latent bits) must be in [{M_MIN}, {M_MAX}], got {m}")


def check_epsilon(epsilon: float) -> None:
    """Noise rate: a float in [0, 1]."""
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or math.isnan(epsilon):
        raise TypeError(f"epsilon (noise rate) must be a number in [0, 1], got {epsilon!r}")
    if not 0.0 <= float(epsilon) <= 1.0:
        raise ValueError(f"epsilon (noise rate) must be in [0, 1], got {epsilon}")


def check_context_len(L: int) -> None:
    """Context length: an int >= 1."""
    if isinstance(L, bool) or not isinstance(L, int):
        raise TypeError(f"context_len (L) must be an int, got {type(L).__name__}")
    if L < 1:
        raise ValueError(f"context_len (L) must be >= 1, got {L}")


def popcount(x: Int[Tensor, "..."]) -> Int[Tensor, "..."]:
    """Number of set bits of each (non-negative, < 2**16) integer."""
    x = x.long()
    count = torch.zeros_like(x)
    for bit in range(M_MAX):
        count += (x >> bit) & 1
    return count


def hamming(a: Int[Tensor, "..."], b: Int[Tensor, "..."]) -> Int[Tensor, "..."]:
    """Hamming distance D_H(z(a), z(b)) between token latents."""
    return popcount(a.long() ^ b.long())


def cluster_of(tokens: Int[Tensor, "..."], m: int) -> Int[Tensor, "..."]:
    """The cluster id (first two latent bits z_1 z_2) of each token."""
    return tokens.long() >> (m - 2)


def mask_weights(nb: Neighbourhood, m: int) -> Tensor:
    """Probability of each XOR mask in [0, 2**m) under q(. | y): a float64 vector summing to 1, mask 0 has 0."""
    masks = torch.arange(2**m)
    ones = popcount(masks)
    if nb.kind in ("N1", "ball"):
        w = ((ones >= 1) & (ones <= nb.radius)).double()
    elif nb.kind == "cluster2":
        w = ((masks >> (m - 2)) == 0).double()
        w[0] = 0.0
    elif nb.kind == "bitflip":
        w = (nb.p ** ones.double()) * ((1 - nb.p) ** (m - ones).double())
        w[0] = 0.0
    else:  # pragma: no cover - parse_neighbourhood guards this
        raise ValueError(f"unknown neighbourhood kind {nb.kind!r}")
    return w / w.sum()


def neighbourhood_matrix(nb: Neighbourhood, m: int) -> Tensor:
    """``Q[k, j] = q(j | k)`` without noise: a [V, V] float64 matrix (rows sum to 1, zero diagonal)."""
    V = 2**m
    w = mask_weights(nb, m)
    idx = torch.arange(V)
    return w[idx[:, None] ^ idx[None, :]]


def sample_context(
    y: Int[Tensor, " batch"],
    L: int,
    m: int,
    neighbourhood: Neighbourhood,
    epsilon: float,
    generator: torch.Generator,
) -> tuple[Int[Tensor, "batch L"], Tensor]:
    """Draw ``L`` i.i.d. context tokens per target from q(. | y) mixed with noise.

    Returns ``(context, is_noise)``; neither ever contains ``y`` itself.
    """
    V = 2**m
    B = y.shape[0]
    w = mask_weights(neighbourhood, m).float()
    masks = torch.multinomial(w, B * L, replacement=True, generator=generator).view(B, L)
    context = y[:, None] ^ masks
    is_noise = torch.rand(B, L, generator=generator) < epsilon
    u = torch.randint(0, V - 1, (B, L), generator=generator)
    noise = u + (u >= y[:, None]).long()
    return torch.where(is_noise, noise, context), is_noise


def sample_targets(batch_size: int, m: int, generator: torch.Generator) -> Int[Tensor, " batch"]:
    """Targets y uniform over [V]."""
    return torch.randint(0, 2**m, (batch_size,), generator=generator)
