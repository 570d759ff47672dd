"""Context hijacking of language models (Jiang et al. 2024, §3): prepend k sentences to CounterFact prompts and
measure the efficacy score ES(k) (``mechmem hijack``).

- :mod:`.records`: CounterFact-format records (ROME's ``requested_rewrite`` layout or flat), checked line by line;
- :mod:`.runner`: prompt schemes, scoring (first token or whole target) and :func:`.runner.run_hijack`;
- :mod:`.local`: a word tokenizer and small local models (no downloads), for tests and notebooks;
- :mod:`.cli`: the ``mechmem hijack`` command (a pretrained model from local files only, or a saved mechmem run).

``data/counterfact_tiny.jsonl`` holds a few records in ROME's layout.
"""

from __future__ import annotations


def add_cli(subparsers) -> None:
    """Register ``mechmem hijack`` (context hijacking of a language model on CounterFact records)."""
    from .cli import add_hijack_parser

    add_hijack_parser(subparsers)


__all__ = ["add_cli"]
