"""The sizes of the scaling-law reproduction: ``QUICK`` (about a minute on a CPU), ``SMOKE`` (seconds,
for tests) and ``FULL`` (alpha = 1.5, 2 and 3, the larger optimiser grid, 100 SGD steps)."""

from __future__ import annotations

from dataclasses import dataclass

from mechmem.contract.presets import Preset

D_GRID = (10, 20, 54, 112, 233, 483, 1000)
T_GRID = (10, 30, 100, 300, 1000, 3000, 10000)


@dataclass(frozen=True)
class ScalingPreset(Preset):
    """``alphas``: Zipf exponents of the error-vs-d curves (the claims read alpha = 2); ``n_trials``: independent
    draws of every theory curve; ``d_grid`` / ``t_grid``: memory sizes and sample counts; ``optim_trials``:
    trials (seeds) of each optimiser run; ``tuned_ds`` (Adam vs SGD), ``small_ds`` (batch size, SGD lr):
    memory sizes of the optimiser grid; ``optim_T``: samples of its one-pass runs; ``sgd_steps``: steps of the
    SGD-approximation comparison; ``workers``: processes of the optimiser sweep (``None``: one per CPU)."""

    alphas: tuple[float, ...] = (2.0,)
    n_trials: int = 30
    d_grid: tuple[int, ...] = D_GRID
    t_grid: tuple[int, ...] = T_GRID
    optim_trials: int = 10
    tuned_ds: tuple[int, ...] = (50, 100)
    small_ds: tuple[int, ...] = (10, 100)
    optim_T: int = 10240
    sgd_steps: int = 20
    workers: int | None = 1


QUICK = ScalingPreset()
SMOKE = QUICK.override(
    name="smoke",
    n_trials=2,
    d_grid=(10, 20, 54, 112),
    t_grid=(10, 100, 1000),
    optim_trials=2,
    tuned_ds=(50,),
    small_ds=(10,),
    optim_T=1024,
    sgd_steps=10,
)
FULL = QUICK.override(
    name="full",
    alphas=(2.0, 1.5, 3.0),
    tuned_ds=(10, 50, 100, 200, 1000),
    small_ds=(10, 100, 1000),
    sgd_steps=100,
    workers=None,
)
PRESETS = {"smoke": SMOKE, "quick": QUICK, "full": FULL}
