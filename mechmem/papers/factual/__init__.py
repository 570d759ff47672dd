"""Paper: "Understanding Factual Recall in Transformers via Associative Memories" (Nichani, Lee, Bietti; ICLR 2025).

- ``capacity``: linear / MLP associative memories and the outer-product construction (Fig. 1, Fig. 6);
- ``task``: the synthetic factual-recall task; ``model``: the one-layer transformer as a HookedTransformer;
- ``fit``: fast count-based training for the sweeps; ``dynamics``: the linear-attention model of Fig. 5;
- ``mechanism``: hook experiments (attention mass, ablations, OV replacement, patching, distractors);
- ``experiments`` / ``reproduce``: everything end to end (``mechmem reproduce factual``).
"""
from mechmem.papers.factual import experiments as _ex
from mechmem.papers.factual.reproduce import CLAIM_KEYS, reproduce
from mechmem.papers.factual.task import FactualRecallTask

TASKS = {"factual": FactualRecallTask}
EXPERIMENTS = {
    "capacity": _ex.capacity_experiment,
    "facts_vs_params": _ex.facts_vs_params_experiment,
    "tradeoff": _ex.tradeoff_experiment,
    "dynamics": _ex.dynamics_experiment,
    "mechanism": _ex.mechanism_experiment,
}

__all__ = ["TASKS", "EXPERIMENTS", "CLAIM_KEYS", "reproduce", "FactualRecallTask"]
