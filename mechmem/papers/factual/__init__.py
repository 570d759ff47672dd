"""Paper: "Understanding Factual Recall in Transformers via Associative Memories" (Nichani, Lee, Bietti; ICLR 2025).

- ``capacity``: linear / MLP associative memories and the outer-product construction (Fig. 1, Fig. 6);
- ``task``: the synthetic factual-recall task; ``model``: the one-layer transformer as a HookedTransformer;
- ``fit``: fast count-based training for the sweeps; ``dynamics``: the linear-attention model of Fig. 5;
- ``mechanism``: hook experiments (attention mass, ablations, OV replacement, patching, distractors);
- ``experiments`` / ``reproduction``: everything end to end (``mechmem reproduce factual``).

See ``mechmem/papers/factual/README.md``.
"""

from mechmem.papers import lazy_exports

__getattr__ = lazy_exports(
    __name__,
    {
        "TASKS": "task:TASKS",
        "FactualRecallTask": "task:FactualRecallTask",
        "EXPERIMENTS": "experiments:EXPERIMENTS",
        "PRESETS": "presets:PRESETS",
        "FactualReproduction": "reproduction:FactualReproduction",
    },
)

__all__ = ["TASKS", "EXPERIMENTS", "PRESETS", "FactualReproduction", "FactualRecallTask"]
