"""Paper A: "Do LLMs dream of elephants (when told not to)?" (Jiang et al., 2024).

Latent concept association (a one-layer transformer whose value matrix acts as an associative
memory, with Hamming-structured embeddings) and context hijacking of language models.
See docs/readme/lca.md and the spec /work/shared/papers/lca.md.
"""

from __future__ import annotations

from .experiments import EXPERIMENTS
from .reproduce import CLAIM_KEYS, reproduce
from .task import LatentConceptTask

TASKS = {LatentConceptTask.name: LatentConceptTask}


def add_cli(subparsers) -> None:
    """Register ``mechmem hijack`` (context hijacking of a language model on CounterFact records)."""
    from .cli import add_hijack_parser

    add_hijack_parser(subparsers)


__all__ = ["TASKS", "EXPERIMENTS", "CLAIM_KEYS", "reproduce", "add_cli", "LatentConceptTask"]
