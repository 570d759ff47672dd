"""Scaling Laws for Associative Memories (Cabannes, Dohmatob, Bietti, ICLR 2024).

``data`` (Zipf inputs, random embeddings), ``memories`` (schemes, predictions, exact error, batched over trials
and d), ``optim`` (matrix / learnable / exponential models under SGD and Adam, the analytic SGD approximation),
``transformer`` (the same memory as the OV circuit of a one-layer HookedTransformer), ``experiments`` and
``reproduce``. The paper has no token-sequence task, so ``TASKS`` is empty.
"""

from mechmem.papers.scaling.cli import add_cli
from mechmem.papers.scaling.experiments import EXPERIMENTS
from mechmem.papers.scaling.reproduce import CLAIM_KEYS, reproduce

TASKS: dict[str, type] = {}

__all__ = ["CLAIM_KEYS", "EXPERIMENTS", "TASKS", "add_cli", "reproduce"]
