"""The sizes of the LCA reproduction: ``QUICK`` (minutes on a CPU), ``SMOKE`` (seconds, for tests; the main model
keeps the quick m and d so that its spectrum claim can fail on random embeddings, and it runs the full preset's
frozen-embedding L sweep) and ``FULL`` (the paper-scale grids: m = 4..7, d = 2..128, L = 4..256, 3000 Adam
steps)."""

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
    """The sizes of one LCA reproduction (every threshold of the claims is in ``reproduction.py``)."""

    m: int = 5  # latent bits of the main task: V = 2^m tokens
    context_len: int = 64  # context length L of the main task
    epsilon: float = 0.5  # noise rate: a context token is uniform noise with this probability
    d_model: int = 16  # width d of the main model (< V: the underparameterised regime)
    wv_bar_m: tuple[int, ...] = (4, 5)  # m of the trained-vs-identity W_V grid (d = V / 2 there)
    wv_bar_L: tuple[int, ...] = (16, 64, 128)  # context lengths L of that grid
    dims: tuple[int, ...] = (2, 4, 8, 16, 32, 64, 128)  # the d sweep (wv_replace, dim)
    lengths: tuple[int, ...] = (8, 16, 32, 64, 128)  # the L sweep (length)
    frozen_lengths: bool = False  # the L sweep also with frozen Gaussian embeddings
    hijack_fractions: tuple[float, ...] = (0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75)  # share of the context hijacked
    n_eval: int = 2000  # test sequences per task
    n_patch: int = 64  # test sequences in the activation-patching map
    hamming_generator: str = "bitflip(0.15)"  # generator of hamming_inner's extra model (log q affine in D_H)
    hamming_m: int = 7  # its latent bits (the paper's hamming_inner_n7 size)
    hamming_d: int = 32  # its width (< V)
    # the training of every model (Adam at a constant lr; the runner sets the data seed)
    train: TrainConfig = field(default_factory=lambda: _adam(steps=400, batch_size=64, lr=1e-2))


QUICK = LCAPreset()
SMOKE = QUICK.override(
    name="smoke",
    context_len=16,
    wv_bar_m=(4,),
    wv_bar_L=(16, 64),
    dims=(8, 16, 64),
    lengths=(8, 16, 32),
    frozen_lengths=True,  # the full preset's branch, reached in the tests
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
