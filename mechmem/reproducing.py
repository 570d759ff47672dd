"""Pieces every paper's ``reproduce`` shares: claim entries and a scoped torch thread count."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch


def claim(measured: Any, expected: str, holds: bool | None) -> dict:
    """One entry of ``results.json``'s ``claims``: what was measured, the paper's expectation, and
    whether it holds. A missing or non-finite measurement is stored as ``None`` and never holds."""
    if measured is None or (
        isinstance(measured, float) and not math.isfinite(measured)
    ):
        return {"measured": None, "expected": expected, "holds": False}
    return {"measured": measured, "expected": expected, "holds": bool(holds)}


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the body with ``torch.set_num_threads(threads)`` (``None``: unchanged), then restore it.

    Tiny models train several times faster on one thread of a shared 2-core machine; sweep
    workers use one thread each so parallel workers do not oversubscribe the cores.
    """
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
