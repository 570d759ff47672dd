"""Paper A: "Do LLMs dream of elephants (when told not to)?" (Jiang et al., 2024).

Latent concept association (a one-layer transformer whose value matrix acts as an associative
memory, with Hamming-structured embeddings) and context hijacking of language models. See
``mechmem/papers/lca/README.md``.
"""

from __future__ import annotations

from mechmem.papers import lazy_exports

__getattr__ = lazy_exports(
    __name__,
    {
        "TASKS": "task:TASKS",
        "LatentConceptTask": "task:LatentConceptTask",
        "EXPERIMENTS": "experiments:EXPERIMENTS",
        "PRESETS": "presets:PRESETS",
        "LCAReproduction": "reproduction:LCAReproduction",
    },
)


def add_cli(subparsers) -> None:
    """Register ``mechmem hijack`` (context hijacking of a language model on CounterFact records)."""
    from .cli import add_hijack_parser

    add_hijack_parser(subparsers)


__all__ = ["TASKS", "EXPERIMENTS", "PRESETS", "LCAReproduction", "add_cli", "LatentConceptTask"]
