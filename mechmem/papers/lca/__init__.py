"""Jiang, Rajendran, Ravikumar, Aragam (2024), "Do LLMs dream of elephants (when told not to)?".

Latent concept association: a one-layer transformer whose value matrix acts as an associative memory, with
Hamming-structured embeddings, and context hijacking inside the synthetic task. See
``mechmem/papers/lca/README.md``. Context hijacking of language models (the paper's §3) is the tool
``mechmem.tools.hijack`` (``mechmem hijack``).
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

__all__ = ["TASKS", "EXPERIMENTS", "PRESETS", "LCAReproduction", "LatentConceptTask"]
