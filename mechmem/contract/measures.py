"""Measurements that several papers' experiments share: the log-log slope of a scaling law."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def loglog_fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least-squares fit of ``log y = slope * log x + intercept``; returns ``(slope, exp(intercept))``.

    Every value must be positive (a zero has no logarithm) and the xs must not all be equal: a ``ValueError``
    names the offending point. A caller that reports a missing fit as NaN catches it (:func:`loglog_slope_or_nan`).
    """
    xs, ys = [float(x) for x in xs], [float(y) for y in ys]
    if len(xs) != len(ys) or len(xs) < 2:
        raise ValueError(f"need at least two (x, y) points of equal length, got {len(xs)} xs and {len(ys)} ys")
    for x, y in zip(xs, ys):
        if not (x > 0 and y > 0) or not (math.isfinite(x) and math.isfinite(y)):
            raise ValueError(f"log-log fit needs positive finite values, got point (x={x}, y={y})")
    lx, ly = np.log(np.asarray(xs)), np.log(np.asarray(ys))
    centred = lx - lx.mean()
    if not np.any(centred):
        raise ValueError(f"log-log fit needs at least two different x values, got {sorted(set(xs))}")
    slope = float((centred * (ly - ly.mean())).sum() / (centred**2).sum())
    return slope, math.exp(float(ly.mean() - slope * lx.mean()))


def loglog_slope_or_nan(xs: Sequence[float], ys: Sequence[float]) -> float:
    """The slope of :func:`loglog_fit`, or NaN where no fit exists (fewer than two distinct points, a zero):
    a claim reading NaN does not hold."""
    try:
        return loglog_fit(xs, ys)[0]
    except ValueError:
        return float("nan")
