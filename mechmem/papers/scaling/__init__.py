"""Scaling Laws for Associative Memories (Cabannes, Dohmatob, Bietti, ICLR 2024).

``data`` (Zipf inputs, random embeddings), ``memories`` (schemes, predictions, exact error, batched over trials
and d), ``optim`` (matrix / learnable / exponential models under SGD and Adam, the analytic SGD approximation),
``transformer`` (the same memory as the OV circuit of a one-layer HookedTransformer), ``experiments`` and
``reproduction``. The paper has no token-sequence task, so ``TASKS`` is empty. See
``mechmem/papers/scaling/README.md``.
"""

from mechmem.papers import lazy_exports

TASKS: dict[str, type] = {}
__getattr__ = lazy_exports(
    __name__,
    {
        "EXPERIMENTS": "experiments:EXPERIMENTS",
        "PRESETS": "presets:PRESETS",
        "ScalingReproduction": "reproduction:ScalingReproduction",
    },
)

__all__ = ["EXPERIMENTS", "PRESETS", "ScalingReproduction", "TASKS"]
