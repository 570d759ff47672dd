"""Pieces every paper's ``reproduce`` shares: claim entries and a scoped torch thread count."""

from __future__ import annotations

import math
from typing import Any, Optional

from mechmem.threads import torch_threads  # noqa: F401 - the papers' reproductions import it from here


def claim(measured: Any, expected: str, holds: Optional[bool]) -> dict:
    """One entry of ``results.json``'s ``claims``: what was measured, the paper's expectation, and
    whether it holds. A missing or non-finite measurement is stored as ``None`` and never holds."""
    if measured is None or (isinstance(measured, float) and not math.isfinite(measured)):
        return {"measured": None, "expected": expected, "holds": False}
    return {"measured": measured, "expected": expected, "holds": bool(holds)}
