"""The sizes of the Birth reproduction: ``QUICK`` (the CPU budget: minutes), ``SMOKE`` (seconds, for
tests and the notebook), ``FULL`` (the authors' README configuration, plus the data-distribution
studies and delayed training) and ``FULL_CPU`` (preset ``full-cpu``: the full experiments at the quick sizes).

Models are ``ModelConfig``s (``simplified_config`` / ``full_config``; the runner sets their seed) and
their training ``TrainConfig``s (the runner sets seed and progress).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mechmem.contract.presets import Preset
from mechmem.core.config import ModelConfig, TrainConfig

from .model import full_config, simplified_config


def sgd(steps: int, batch_size: int, lr: float, eval_every: int, eval_batch_size: int) -> TrainConfig:
    """The simplified model's optimiser, as the authors': SGD, momentum 0.9, weight decay 1e-4."""
    return TrainConfig(
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        optimizer="sgd",
        momentum=0.9,
        weight_decay=1e-4,
        eval_every=eval_every,
        eval_batch_size=eval_batch_size,
    )


def adamw(steps: int, batch_size: int, lr: float, eval_every: int, eval_batch_size: int) -> TrainConfig:
    """The full model's optimiser, as the authors': AdamW, betas (0.9, 0.99), weight decay 0.01."""
    return TrainConfig(
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        optimizer="adamw",
        betas=(0.9, 0.99),
        weight_decay=0.01,
        eval_every=eval_every,
        eval_batch_size=eval_batch_size,
    )


@dataclass(frozen=True)
class BirthPreset(Preset):
    """Sizes of every experiment. The task's sequence length is the model's ``n_ctx``.

    ``simplified_model`` / ``simplified_train``: the simplified 2-layer model (Figure 3 dynamics, probes);
    ``full_model`` / ``full_train``: the full model (global vs in-context, mechanistic checks; the
    one-layer variant trains ``one_layer_steps`` steps, ``None``: as many as the 2-layer one);
    ``handbuilt_*``: the hand-built induction head; ``data_batch``: sequences for the data statistics;
    ``mechanistic_batch``: sequences for head scores and ablations; ``studies`` / ``study_steps``: the
    data-distribution studies; ``delayed`` / ``delayed_steps`` / ``delay``: W_O^2 frozen until ``delay``;
    ``random_triggers_steps``: steps of the simplified model with random triggers (0: not run).
    """

    simplified_model: ModelConfig = field(default_factory=lambda: simplified_config(d_model=128, n_ctx=128))
    simplified_train: TrainConfig = field(default_factory=lambda: sgd(300, 64, 0.1, 25, 128))
    full_model: ModelConfig = field(default_factory=lambda: full_config(d_model=64, n_heads=4, n_ctx=128))
    full_train: TrainConfig = field(default_factory=lambda: adamw(300, 64, 0.01, 10, 256))
    one_layer_steps: int | None = None
    handbuilt_d_model: int = 256
    handbuilt_seq_len: int = 256
    handbuilt_batch: int = 64
    data_batch: int = 512
    mechanistic_batch: int = 64
    studies: bool = False
    study_steps: int = 300
    delayed: bool = False
    delayed_steps: int = 600
    delay: int = 300
    random_triggers_steps: int = 500


QUICK = BirthPreset()
SMOKE = QUICK.override(
    name="smoke",
    simplified_model=simplified_config(d_model=128, n_ctx=64),
    simplified_train=sgd(60, 32, 0.1, 20, 32),
    full_model=full_config(d_model=32, n_heads=2, n_ctx=64),
    full_train=adamw(20, 16, 0.01, 10, 16),
    handbuilt_d_model=128,
    handbuilt_seq_len=64,
    handbuilt_batch=16,
    data_batch=64,
    mechanistic_batch=16,
    study_steps=20,
    delayed_steps=20,
    delay=10,
    random_triggers_steps=60,
)
FULL = QUICK.override(
    name="full",
    simplified_model=simplified_config(d_model=256, n_ctx=256),
    simplified_train=sgd(1000, 512, 0.03, 25, 512),
    full_model=full_config(d_model=128, n_heads=4, n_ctx=256),
    full_train=adamw(300, 64, 0.01, 10, 128),
    studies=True,
    study_steps=400,
    delayed=True,
    delayed_steps=1000,
    delay=300,
)
#: the full preset's experiments (data-distribution studies, delayed training) at the quick sizes: the README
#: configuration (d 256, T 256, batch 512, 1000 steps) takes about 6 hours on a CPU, this about 20 CPU-minutes
FULL_CPU = QUICK.override(name="full-cpu", studies=True, study_steps=300, delayed=True, delayed_steps=600, delay=300)
PRESETS = {"smoke": SMOKE, "quick": QUICK, "full": FULL, "full-cpu": FULL_CPU}
