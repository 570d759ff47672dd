"""Paper A: "Do LLMs dream of elephants (when told not to)?" (Jiang et al., 2024).

Latent concept association (a one-layer transformer whose value matrix acts as an associative
memory, with Hamming-structured embeddings) and context hijacking of language models.
See docs/readme/lca.md and the spec ../shared/papers/lca.md.
"""

from __future__ import annotations

from mechmem.papers import lazy_exports

__getattr__ = lazy_exports(
    __name__,
    {
        "TASKS": "task:TASKS",
        "LatentConceptTask": "task:LatentConceptTask",
        "EXPERIMENTS": "experiments:EXPERIMENTS",
        "CLAIM_KEYS": "reproduction:CLAIM_KEYS",
        "reproduce": "reproduction:reproduce",
    },
)


def add_cli(subparsers) -> None:
    """Register ``mechmem hijack`` (context hijacking of a language model on CounterFact records)."""
    from .cli import add_hijack_parser

    add_hijack_parser(subparsers)


__all__ = [
    "CLAIM_KEYS",
    "EXPERIMENTS",
    "TASKS",
    "LatentConceptTask",
    "add_cli",
    "reproduce",
]
