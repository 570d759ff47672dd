"""Paper C, "Birth of a Transformer: A Memory Viewpoint" (Bietti et al., NeurIPS 2023).

Global vs in-context bigrams on tiny-Shakespeare characters, the simplified two-layer model with frozen random
embeddings, memory-recall probes, the hand-built induction head, and the full model. See
``docs/readme/birth.md`` and ``../shared/papers/birth.md``.
"""

from mechmem.papers import lazy_exports

__getattr__ = lazy_exports(
    __name__,
    {
        "TASKS": "task:TASKS",
        "BigramTask": "task:BigramTask",
        "EXPERIMENTS": "experiments:EXPERIMENTS",
        "reproduce": "reproduction:reproduce",
    },
)

__all__ = ["EXPERIMENTS", "TASKS", "BigramTask", "reproduce"]
