"""Tasks: seeded generators of (tokens, targets, loss mask) batches. See ``tasks/base.py``."""

from mechmem.tasks.base import Batch, Task
from mechmem.tasks.recall import RecallTask

__all__ = ["Batch", "Task", "RecallTask"]
