"""Paper C, "Birth of a Transformer: A Memory Viewpoint" (Bietti et al., NeurIPS 2023).

Global vs in-context bigrams on tiny-Shakespeare characters, the simplified two-layer model with frozen random
embeddings, memory-recall probes, the hand-built induction head, and the full model. See
``docs/readme/birth.md`` and ``../shared/papers/birth.md``.
"""
from .experiments import EXPERIMENTS
from .reproduce import reproduce
from .task import BigramTask

TASKS = {BigramTask.name: BigramTask}

__all__ = ["TASKS", "EXPERIMENTS", "reproduce", "BigramTask"]
