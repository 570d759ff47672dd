"""The sizes of the LCA reproduction: ``QUICK`` (minutes on a CPU), ``SMOKE`` (seconds, for tests)
and ``FULL`` (the paper-scale grids: m = 4..7, d = 2..128, L = 4..256, 3000 Adam steps)."""

from __future__ import annotations

from dataclasses import dataclass, field

from mechmem.contract.presets import Preset
from mechmem.core.config import TrainConfig


def _adam(steps: int, batch_size: int, lr: float, eval_batch_size: int = 1024) -> TrainConfig:
    """Adam at a constant lr, evaluated only at the start and the end (``eval_every = steps``)."""
    return TrainConfig(
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        optimizer="adam",
        eval_every=steps,
        eval_batch_size=eval_batch_size,
        progress=False,
    )


@dataclass(frozen=True)
class LCAPreset(Preset):
    """Grids and sizes. The main model: ``m`` latent bits (V = 2^m), context length ``context_len``,
    noise rate ``epsilon``, width ``d_model`` (< V). ``wv_bar_m`` x ``wv_bar_L``: the trained-vs-identity
    W_V grid (d = V/2); ``dims`` / ``lengths``: the d and L sweeps (``frozen_lengths``: also with frozen
    embeddings); ``hijack_fractions``: fractions of the context replaced; ``n_eval`` test sequences,
    ``n_patch`` of them patched; ``train``: every model's training. ``hamming_generator`` / ``hamming_m`` /
    ``hamming_d``: the extra trained-W_V model of ``hamming_inner`` (a generator whose log-likelihood is affine in
    the Hamming distance, at the paper's ``hamming_inner_n7`` size)."""

    m: int = 5
    context_len: int = 64
    epsilon: float = 0.5
    d_model: int = 16
    wv_bar_m: tuple[int, ...] = (4, 5)
    wv_bar_L: tuple[int, ...] = (16, 64, 128)
    dims: tuple[int, ...] = (2, 4, 8, 16, 32, 64, 128)
    lengths: tuple[int, ...] = (8, 16, 32, 64, 128)
    frozen_lengths: bool = False
    hijack_fractions: tuple[float, ...] = (0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75)
    n_eval: int = 2000
    n_patch: int = 64
    hamming_generator: str = "bitflip(0.15)"
    hamming_m: int = 7
    hamming_d: int = 32
    train: TrainConfig = field(default_factory=lambda: _adam(steps=400, batch_size=64, lr=1e-2))


QUICK = LCAPreset()
SMOKE = QUICK.override(
    name="smoke",
    m=4,
    context_len=16,
    d_model=8,
    wv_bar_m=(4,),
    wv_bar_L=(16, 64),
    dims=(4, 8, 32),
    lengths=(8, 16, 32),
    n_eval=400,
    n_patch=16,
    hamming_m=5,
    hamming_d=16,
    train=_adam(steps=60, batch_size=32, lr=1e-2, eval_batch_size=256),
)
FULL = QUICK.override(
    name="full",
    wv_bar_m=(4, 5, 6, 7),
    dims=(2, 4, 8, 16, 32, 64, 128),
    lengths=(4, 8, 16, 32, 64, 128, 256),
    frozen_lengths=True,
    n_eval=5000,
    n_patch=128,
    train=_adam(steps=3000, batch_size=128, lr=3e-3),
)
PRESETS = {"smoke": SMOKE, "quick": QUICK, "full": FULL}
