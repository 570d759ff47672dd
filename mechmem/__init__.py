"""mechmem: transformers as associative memories, on TransformerLens.

Build a toy model, train it on a task, save the run::

    from mechmem import ModelConfig, TrainConfig, RecallTask, Run, build_model, train
    task = RecallTask()
    model = build_model(task.model_config())
    result = train(model, task, task.train_config())

See ``docs/ARCHITECTURE.md`` for how the pieces fit together.
"""

from mechmem.config import ModelConfig
from mechmem.models import build_bridge, build_model
from mechmem.runs import Run, load_run, load_weights, save_weights
from mechmem.tasks import Batch, RecallTask, Task
from mechmem.training import TrainConfig, TrainResult, evaluate, train

__all__ = [
    "Batch", "ModelConfig", "RecallTask", "Run", "Task", "TrainConfig", "TrainResult",
    "build_bridge", "build_model", "evaluate", "load_run", "load_weights", "save_weights", "train",
]
__version__ = "0.1.0"
