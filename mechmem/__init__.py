"""mechmem: transformers as associative memories, on TransformerLens.

Build a toy model, train it on a task, save the run::

    from mechmem import ModelConfig, TrainConfig, RecallTask, Run, build_model, train
    task = RecallTask()
    model = build_model(task.model_config())
    result = train(model, task, task.train_config())

See ``docs/ARCHITECTURE.md`` for how the pieces fit together. The names below are imported
lazily, so ``import mechmem.<module>`` (and every sweep worker process) does not pay for
TransformerLens unless it uses it.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "ModelConfig": "mechmem.core.config",
    "build_model": "mechmem.core.models",
    "build_bridge": "mechmem.core.models",
    "Run": "mechmem.storage.runs",
    "load_run": "mechmem.storage.runs",
    "load_weights": "mechmem.storage.runs",
    "save_weights": "mechmem.storage.runs",
    "Batch": "mechmem.tasks",
    "RecallTask": "mechmem.tasks",
    "Task": "mechmem.tasks",
    "TrainConfig": "mechmem.core.config",
    "TrainResult": "mechmem.core.training",
    "evaluate": "mechmem.core.training",
    "train": "mechmem.core.training",
    "inspect_model": "mechmem.pages.inspect_model",
}
__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mechmem' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
