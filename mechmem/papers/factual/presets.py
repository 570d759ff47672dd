"""The sizes of the factual-recall reproduction: ``QUICK`` (minutes on a CPU), ``SMOKE`` (seconds, for tests and
the notebook), ``FULL`` (the paper's grids; GPU-scale) and ``FULL_CPU`` (preset ``full-cpu``: the trade-off at the
paper's S = R = 32 with the authors' budget, the rest at the quick sizes)."""

from __future__ import annotations

from dataclasses import dataclass, field

from mechmem.contract.presets import Preset
from mechmem.papers.factual.dynamics import DynamicsConfig


@dataclass(frozen=True)
class FactualPreset(Preset):
    """Capacity searches (Fig. 1, Fig. 6): ``linear_d``, ``outer_d`` (with ``outer_seeds`` seeds), ``mlp_d`` x
    ``mlp_ratio`` (m = ratio d), ``mlp32_d`` (M = 32 outputs), ``mlp_steps`` Adam steps; ``seeds``: offsets added
    to the run's seed. Facts vs parameters (Fig. 4 left): ``mixes`` of (alpha, beta) at widths ``mix_d``,
    searching S = R in ``size_range`` to ratio ``search_ratio`` with ``mix_steps`` steps of batch ``batch``.
    Trade-off grid (Fig. 4 right): ``heads`` x ``widths`` at S, R, D with ``grid_steps`` steps. ``dynamics``:
    the Fig. 5 run. Mechanism: the ``attention_heavy`` and ``mlp_heavy`` (H, m) models, ``mech_steps`` steps,
    ``mech_n`` test sequences."""

    linear_d: tuple[int, ...] = (8, 11, 16, 22)
    outer_d: tuple[int, ...] = (16, 32, 64)
    outer_seeds: int = 4
    mlp_d: tuple[int, ...] = (8, 11)
    mlp_ratio: tuple[int, ...] = (1,)
    mlp32_d: tuple[int, ...] = (8, 11)
    mlp_steps: int = 2048
    seeds: tuple[int, ...] = (0,)
    mixes: tuple[tuple[float, float], ...] = ((2.0, 0.25), (0.5, 2.0))
    mix_d: tuple[int, ...] = (16, 32)
    size_range: tuple[int, int] = (4, 32)
    search_ratio: float = 1.3
    mix_steps: int = 768
    batch: int = 256
    heads: tuple[int, ...] = (4, 8, 16)
    widths: tuple[int, ...] = (1, 16, 128)
    grid_steps: int = 1024
    S: int = 16
    R: int = 16
    D: int = 8
    dynamics: DynamicsConfig = field(default_factory=DynamicsConfig)
    attention_heavy: tuple[int, int] = (16, 1)
    mlp_heavy: tuple[int, int] = (8, 128)
    mech_steps: int = 2048
    mech_n: int = 512


QUICK = FactualPreset()
SMOKE = QUICK.override(
    name="smoke",
    linear_d=(8, 11),
    outer_d=(16, 32),
    outer_seeds=2,
    mlp_d=(8,),
    mlp32_d=(8,),
    mlp_steps=256,
    mix_d=(16,),
    size_range=(4, 16),
    mix_steps=100,
    heads=(2, 8),
    widths=(1, 128),
    grid_steps=100,
    S=8,
    R=8,
    D=4,
    dynamics=DynamicsConfig(steps=2048, eval_every=128, eval_size=4096),
    mech_steps=200,
    mech_n=128,
)
FULL = QUICK.override(
    name="full",
    linear_d=(8, 11, 16, 22, 32, 45, 64),
    outer_d=(16, 32, 64, 128),
    outer_seeds=5,
    mlp_d=(8, 11, 16, 22, 32),
    mlp_ratio=(1, 2, 4),
    mlp32_d=(8, 11, 16, 22, 32),
    mlp_steps=32768,
    seeds=(0, 1, 11, 111, 42),
    mixes=tuple((a, b) for a in (4, 2, 1, 0.5, 0.25) for b in (4, 2, 1, 0.5, 0.25)),
    mix_d=(16, 22, 32, 45, 64),
    size_range=(8, 512),
    search_ratio=1.1,
    mix_steps=16384,
    batch=1024,
    heads=(1, 2, 4, 6, 8, 10, 12, 14, 16, 20, 24, 28, 32),
    widths=(1, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128),
    grid_steps=16384,
    S=32,
    R=32,
    D=8,
    attention_heavy=(20, 1),
    mech_steps=16384,
    mech_n=1024,
)
#: the quick grids, except the Fig. 4 right trade-off at the paper's S = R = 32 with the authors' budget (batch 1024,
#: up to 16384 Adam steps, stopped at accuracy 1) on heads 4 / 8 / 32 x widths 1 / 128: about 25 CPU-minutes, where
#: the full grids (13 x 13 cells, 32768-step capacity searches) need a GPU
FULL_CPU = QUICK.override(
    name="full-cpu", S=32, R=32, heads=(4, 8, 32), widths=(1, 128), grid_steps=16384, batch=1024, mech_steps=4096
)
PRESETS = {"smoke": SMOKE, "quick": QUICK, "full": FULL, "full-cpu": FULL_CPU}
