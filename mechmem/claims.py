"""Claims as data: what a paper says, how we measure it, and the test it must pass, declared once.

A :class:`Claim` names a measurement (``measure``: the experiments' data -> a value) and an
:class:`Expectation` (``AtLeast(0.95)``, ``Within(0.4, 1.5)``, ...). From that one declaration come
the ``expected`` text of ``results.json``, the ``holds`` flag and the README tables::

    Claim("recall_wo2_final", lambda r: r["simplified_dynamics"]["final"]["wo1"], AtLeast(0.95),
          statement="W_O^2 recalls the outputs of the triggers", source="Bietti et al. §4.2, Fig. 3")

A measurement that is missing (``None``) or not a finite number never holds. ``also`` adds
further conditions on other measurements (all must hold); a condition with ``required=False``
does not apply when its measurement is ``None`` (e.g. a comparison with a setting the preset
does not run).
``ours=True`` marks a threshold we chose where the paper states no number.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# --- expectations ----------------------------------------------------------------------------------------


def _num(x: float) -> str:
    """A threshold as it reads in a table: 0.95, 1e-05, 2.145, 10."""
    return f"{x:g}" if isinstance(x, float) else str(x)


@dataclass(frozen=True)
class Expectation:
    """A test on one measured value; ``text`` is how the test reads in a table."""

    def holds(self, value: Any) -> bool:
        raise NotImplementedError

    def text(self, unit: str = "") -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class AtLeast(Expectation):
    bound: float

    def holds(self, value) -> bool:
        return value >= self.bound

    def text(self, unit: str = "") -> str:
        return f"≥ {_num(self.bound)}{unit}"


@dataclass(frozen=True)
class AtMost(Expectation):
    bound: float

    def holds(self, value) -> bool:
        return value <= self.bound

    def text(self, unit: str = "") -> str:
        return f"≤ {_num(self.bound)}{unit}"


@dataclass(frozen=True)
class Above(Expectation):
    """Strictly greater than ``bound``."""

    bound: float

    def holds(self, value) -> bool:
        return value > self.bound

    def text(self, unit: str = "") -> str:
        return f"> {_num(self.bound)}{unit}"


@dataclass(frozen=True)
class Below(Expectation):
    """Strictly less than ``bound``."""

    bound: float

    def holds(self, value) -> bool:
        return value < self.bound

    def text(self, unit: str = "") -> str:
        return f"< {_num(self.bound)}{unit}"


@dataclass(frozen=True)
class Within(Expectation):
    """``lo <= value <= hi``."""

    lo: float
    hi: float

    def __post_init__(self) -> None:
        if not self.lo <= self.hi:
            raise ValueError(f"Within: lo={self.lo} must be <= hi={self.hi}")

    def holds(self, value) -> bool:
        return self.lo <= value <= self.hi

    def text(self, unit: str = "") -> str:
        return f"in [{_num(self.lo)}, {_num(self.hi)}]{unit}"


@dataclass(frozen=True)
class Near(Expectation):
    """``|value - target| <= tol``."""

    target: float
    tol: float
    label: str = ""  # how the target reads, e.g. "ln 32"

    def holds(self, value) -> bool:
        return abs(value - self.target) <= self.tol

    def text(self, unit: str = "") -> str:
        target = f"{self.label} = {self.target:.4g}" if self.label else _num(self.target)
        return f"{target} ± {_num(self.tol)}{unit}"


@dataclass(frozen=True)
class Equals(Expectation):
    value: Any

    def holds(self, value) -> bool:
        return value == self.value

    def text(self, unit: str = "") -> str:
        return f"= {_num(self.value)}{unit}"


@dataclass(frozen=True)
class IsTrue(Expectation):
    def holds(self, value) -> bool:
        return value is True

    def text(self, unit: str = "") -> str:
        return "true"


@dataclass(frozen=True)
class Reported(Expectation):
    """No test of its own: the value is reported and the claim rests on its ``also`` conditions."""

    def holds(self, value) -> bool:
        return True

    def text(self, unit: str = "") -> str:
        return "reported"


# --- claims ----------------------------------------------------------------------------------------------

Measure = Callable[["Evidence"], Any]


@dataclass(frozen=True)
class Evidence:
    """What a claim is measured on: every experiment's ``data`` of one seed, and the preset."""

    data: Mapping[str, Any]
    preset: Any = None

    def __getitem__(self, experiment: str) -> Any:
        return self.data[experiment]


@dataclass(frozen=True)
class Condition:
    """A further test a claim needs, on its own measurement (``label`` names it in the tables).
    ``required=False``: a ``None`` measurement means the condition does not apply (it holds)."""

    label: str
    measure: Measure
    expect: Expectation
    required: bool = True

    def holds(self, measured: Any) -> bool:
        if measured is None:
            return not self.required
        return self.expect.holds(measured)

    def text(self) -> str:
        return f"{self.label} {self.expect.text()}"


@dataclass(frozen=True)
class Claim:
    """One claim of a paper and how the reproduction checks it.

    ``key``: its name in ``results.json``; ``measure``: the measured value from the :class:`Evidence`;
    ``expect``: the test; ``unit``: appended to numbers in the text (e.g. " points"); ``statement``:
    what the paper says, in words; ``source``: where (section, figure); ``ours``: the threshold is our
    choice, not the paper's; ``also``: further conditions; ``presets``: the presets that measure it
    (``None``: all).
    """

    key: str
    measure: Measure
    expect: Expectation
    statement: str
    source: str
    ours: bool = False
    unit: str = ""
    also: tuple[Condition, ...] = ()
    presets: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not self.key.isidentifier():
            raise ValueError(f"claim key {self.key!r} must be an identifier (letters, digits, underscores)")
        if not isinstance(self.expect, Expectation):
            raise TypeError(f"claim {self.key}: expect must be an Expectation, got {self.expect!r}")

    @property
    def expected(self) -> str:
        """The expectation in words, as ``results.json`` and the tables show it."""
        own = [] if isinstance(self.expect, Reported) and self.also else [self.expect.text(self.unit)]
        return "; ".join(own + [c.text() for c in self.also])

    def applies_to(self, preset_name: str) -> bool:
        return self.presets is None or preset_name in self.presets

    def score(self, evidence: Evidence) -> dict:
        """``{"measured", "holds", "conditions"}`` for one seed's evidence."""
        value = plain(self.measure(evidence))
        conditions = {c.label: plain(c.measure(evidence)) for c in self.also}
        holds = value is not None and self.expect.holds(value)
        holds = holds and all(c.holds(conditions[c.label]) for c in self.also)
        entry = {"measured": value, "holds": bool(holds)}
        if conditions:
            entry["conditions"] = conditions
        return entry

    def describe(self) -> dict:
        """The declaration as JSON: what ``results.json`` stores next to the measurements."""
        return {"expected": self.expected, "statement": self.statement, "source": self.source, "ours": self.ours}


def plain(value: Any) -> Any:
    """A JSON-ready measurement: tensors and numpy scalars become numbers; NaN and inf become ``None``."""
    if hasattr(value, "item") and hasattr(value, "dtype"):  # torch / numpy scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def check_claims(claims: Sequence[Claim]) -> None:
    """Every key once."""
    seen = set()
    for c in claims:
        if not isinstance(c, Claim):
            raise TypeError(f"claims must be Claim objects, got {c!r}")
        if c.key in seen:
            raise ValueError(f"claim {c.key!r} is declared twice")
        seen.add(c.key)


# --- several seeds ---------------------------------------------------------------------------------------


def aggregate(claim: Claim, per_seed: Mapping[str, dict]) -> dict:
    """One claim over seeds: its declaration, every seed's entry, mean / std / min / max of numeric
    measurements (booleans count as 0/1), the fraction of seeds at which it holds, and ``holds``
    (true when it holds at every seed)."""
    values = [e["measured"] for e in per_seed.values()]
    numbers = [float(v) for v in values if isinstance(v, (int, float)) and v is not None]
    fraction = sum(e["holds"] for e in per_seed.values()) / len(per_seed) if per_seed else 0.0
    stats: dict[str, Any] = {"mean": None, "std": None, "min": None, "max": None}
    if numbers and len(numbers) == len(values):
        stats = {
            "mean": statistics.fmean(numbers),
            "std": statistics.pstdev(numbers) if len(numbers) > 1 else 0.0,
            "min": min(numbers),
            "max": max(numbers),
        }
    return {
        **claim.describe(),
        "per_seed": dict(per_seed),
        **stats,
        "fraction_holding": fraction,
        "holds": bool(per_seed) and fraction == 1.0,
    }
