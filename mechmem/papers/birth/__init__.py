"""Bietti et al. (NeurIPS 2023), "Birth of a Transformer: A Memory Viewpoint".

Global vs in-context bigrams on tiny-Shakespeare characters, the simplified two-layer model with frozen random
embeddings, memory-recall probes, the hand-built induction head, and the full model. See
``mechmem/papers/birth/README.md``.
"""

from mechmem.papers import lazy_exports

__getattr__ = lazy_exports(
    __name__,
    {
        "TASKS": "task:TASKS",
        "BigramTask": "task:BigramTask",
        "EXPERIMENTS": "experiments:EXPERIMENTS",
        "PRESETS": "presets:PRESETS",
        "BirthReproduction": "reproduction:BirthReproduction",
    },
)

__all__ = ["TASKS", "EXPERIMENTS", "PRESETS", "BirthReproduction", "BigramTask"]
