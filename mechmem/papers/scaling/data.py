"""Zipf data and random embeddings of "Scaling Laws for Associative Memories".

Inputs ``x in {0..N-1}`` follow ``p(x) ∝ (x+1)^-alpha`` (token 0 is the most frequent); the target map is
``f*(x) = x mod M``. Input embeddings ``e_x ~ N(0, I/d)``, output embeddings ``u_y`` uniform on the unit sphere.

To sweep ``d`` without redrawing, :class:`Embeddings` holds raw standard Gaussians at ``d_max`` and
:meth:`Embeddings.at` keeps the first ``d`` coordinates and rescales them. The first ``d`` coordinates of a
Gaussian vector are a Gaussian vector, so the truncated embeddings have exactly the right distribution at every
``d`` (the unit-norm ``u_y`` are normalised *after* truncation, not before).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor


def check_positive_int(name: str, value: int) -> None:
    """Raise a ValueError/TypeError naming ``name`` unless ``value`` is a positive int."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a positive int, got {value!r} ({type(value).__name__})")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int (> 0), got {value}")


def check_data_params(N: int, M: int, alpha: float) -> None:
    """Validate the data parameters: N >= M >= 1 and alpha > 0."""
    check_positive_int("N", N)
    check_positive_int("M", M)
    if N < M:
        raise ValueError(f"N (number of input tokens) must be >= M (number of classes), got N={N} < M={M}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise TypeError(f"alpha must be a positive float, got {alpha!r}")
    if not alpha > 0 or not math.isfinite(alpha):
        raise ValueError(f"alpha (Zipf exponent) must be a finite number > 0, got {alpha}")


def zipf_probs(N: int, alpha: float, dtype: torch.dtype = torch.float64) -> Float[Tensor, "N"]:
    """``p(x) = (x+1)^-alpha / sum_{x'<N} (x'+1)^-alpha`` for x = 0..N-1."""
    check_positive_int("N", N)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise ValueError(f"alpha (Zipf exponent) must be > 0, got {alpha!r}")
    weights = torch.arange(1, N + 1, dtype=dtype) ** (-float(alpha))
    return weights / weights.sum()


def targets(N: int, M: int) -> Int[Tensor, "N"]:
    """The deterministic association ``f*(x) = x mod M``."""
    check_data_params(N, M, 1.0)
    return torch.arange(N) % M


def sample_tokens(p: Float[Tensor, "N"], T: int, n_trials: int, generator: torch.Generator) -> Int[Tensor, "trials T"]:
    """``n_trials`` independent sequences of ``T`` i.i.d. draws from ``p``."""
    check_positive_int("T", T)
    check_positive_int("n_trials", n_trials)
    return torch.multinomial(p.float().expand(n_trials, -1), T, replacement=True, generator=generator)


def prefix_counts(tokens: Int[Tensor, "trials T_max"], Ts: list[int], N: int) -> Float[Tensor, "n_T trials N"]:
    """Token counts ``n_T(x)`` of the prefixes ``tokens[:, :T]`` for each T in ``Ts`` (the notebooks' reuse of
    one long draw across values of T)."""
    for T in Ts:
        check_positive_int("T", T)
        if T > tokens.shape[1]:
            raise ValueError(f"T={T} is larger than the number of drawn samples {tokens.shape[1]}")
    out = torch.zeros(len(Ts), tokens.shape[0], N, dtype=torch.float64)
    for i, T in enumerate(Ts):
        prefix = tokens[:, :T]
        out[i].scatter_add_(1, prefix, torch.ones_like(prefix, dtype=torch.float64))
    return out


def missing_mass(p: Float[Tensor, "N"], T: int) -> float:
    """Exact expected mass of the tokens never seen in T draws: ``sum_x p(x) (1 - p(x))^T``."""
    check_positive_int("T", T)
    p = p.double()
    return float((p * torch.exp(T * torch.log1p(-p))).sum())


def missing_mass_formula(alpha: float, T: int, N: int | None = None) -> float:
    """Asymptotic missing mass ``(1/alpha) Gamma(1 - 1/alpha) Z^(-1/alpha) T^(-1 + 1/alpha)`` (needs alpha > 1).

    ``Z = zeta(alpha)`` (N -> infinity); with ``N`` given, ``Z`` is the finite normaliser ``sum_{x<N}(x+1)^-alpha``
    of the Zipf law actually used. Derivation: ``sum_x p(x) e^{-T p(x)}`` with ``p(x) = x^-alpha / Z`` turned into
    an integral over x.
    """
    check_positive_int("T", T)
    if not alpha > 1:
        raise ValueError(f"alpha must be > 1 for the missing-mass law, got {alpha}")
    if N is None:
        Z = float(
            torch.special.zeta(torch.tensor(float(alpha), dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))
        )
    else:
        Z = float((torch.arange(1, N + 1, dtype=torch.float64) ** (-float(alpha))).sum())
    return (1.0 / alpha) * math.gamma(1.0 - 1.0 / alpha) * Z ** (-1.0 / alpha) * T ** (-1.0 + 1.0 / alpha)


@dataclass
class Embeddings:
    """Raw Gaussian draws for ``n_trials`` independent embedding sets, at dimension ``d_max``.

    ``E_raw[t, x]`` and ``U_raw[t, y]`` are i.i.d. N(0, 1) vectors; use :meth:`at` for the embeddings at a given d.
    """

    E_raw: Float[Tensor, "trials N d_max"]
    U_raw: Float[Tensor, "trials M d_max"]

    @classmethod
    def draw(
        cls, N: int, M: int, d_max: int, n_trials: int, generator: torch.Generator, dtype: torch.dtype = torch.float64
    ) -> Embeddings:
        check_data_params(N, M, 1.0)
        check_positive_int("d_max", d_max)
        check_positive_int("n_trials", n_trials)
        E_raw = torch.randn(n_trials, N, d_max, generator=generator, dtype=dtype)
        U_raw = torch.randn(n_trials, M, d_max, generator=generator, dtype=dtype)
        return cls(E_raw, U_raw)

    @property
    def d_max(self) -> int:
        return self.E_raw.shape[-1]

    def check_d(self, d: int) -> None:
        check_positive_int("d", d)
        if d > self.d_max:
            raise ValueError(f"d={d} exceeds the drawn dimension d_max={self.d_max}")

    def at(self, d: int) -> tuple[Float[Tensor, "trials N d"], Float[Tensor, "trials M d"]]:
        """``(E, U)`` at dimension d: ``E ~ N(0, I/d)`` rows, ``U`` unit-norm rows (normalised after truncation)."""
        self.check_d(d)
        E = self.E_raw[..., :d] / math.sqrt(d)
        U = self.U_raw[..., :d]
        return E, U / U.norm(dim=-1, keepdim=True)
