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

A claim is only as good as its control. ``controls`` names the *negative controls* of a claim: runs of the
same experiments on a model or data where the mechanism is absent (declared by the experiments, see
``mechmem.contract.experiments``), on which the same measurement must *fail* the claim. They are scored with
the claim and reported next to it. ``seeded=False`` says the measurement cannot depend on the seed (a
deterministic protocol): the tables say so instead of counting seeds. Measurements that test the data, the
set-up or an identity are not claims but *checks* (``Reproduction.checks``, the same class, no control).
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


class MissingExperiment(KeyError):
    """A claim read an experiment that did not run (``--only``) or that has no such control."""

    def __init__(self, experiment: str, where: str = "") -> None:
        super().__init__(experiment)
        self.experiment = experiment
        self.where = where

    def __str__(self) -> str:
        return f"experiment {self.experiment!r} did not run{self.where}"


@dataclass(frozen=True)
class Evidence:
    """What a claim is measured on: every experiment's ``data`` of one seed (or of one control), and the preset."""

    data: Mapping[str, Any]
    preset: Any = None
    control: str | None = None

    def __getitem__(self, experiment: str) -> Any:
        if experiment not in self.data:
            where = f" under control {self.control!r} (it declares no such control)" if self.control else ""
            raise MissingExperiment(experiment, where)
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
    (``None``: all); ``controls``: the negative controls on which it must fail (names declared by the
    experiments it reads); ``seeded``: ``False`` when the measurement cannot depend on the seed.
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
    controls: tuple[str, ...] = ()
    seeded: bool = True

    def __post_init__(self) -> None:
        if not self.key.isidentifier():
            raise ValueError(f"claim key {self.key!r} must be an identifier (letters, digits, underscores)")
        if not isinstance(self.expect, Expectation):
            raise TypeError(f"claim {self.key}: expect must be an Expectation, got {self.expect!r}")
        if isinstance(self.expect, Reported) and not self.also:
            raise ValueError(
                f"claim {self.key}: a Reported value tests nothing by itself; give it at least one condition (also=)"
            )
        if isinstance(self.controls, str) or len(set(self.controls)) != len(self.controls):
            raise ValueError(f"claim {self.key}: controls must be a tuple of distinct control names")

    @property
    def expected(self) -> str:
        """The expectation in words, as ``results.json`` and the tables show it."""
        own = [] if isinstance(self.expect, Reported) and self.also else [self.expect.text(self.unit)]
        return "; ".join(own + [c.text() for c in self.also])

    def applies_to(self, preset_name: str) -> bool:
        return self.presets is None or preset_name in self.presets

    @property
    def reported(self) -> bool:
        """Whether the headline value is only reported (the claim rests on its conditions)."""
        return isinstance(self.expect, Reported)

    def score(self, evidence: Evidence, controls: Mapping[str, Evidence] | None = None) -> dict:
        """``{"measured", "holds", "conditions", "controls"}`` for one seed's evidence and the evidence of each
        of its controls (a :class:`MissingExperiment` propagates when the claim's own experiments did not run)."""
        entry = self._score_one(evidence)
        if self.controls and controls is not None:
            entry["controls"] = {name: self._score_control(controls.get(name), name) for name in self.controls}
        return entry

    def _score_one(self, evidence: Evidence) -> dict:
        value = plain(self.measure(evidence))
        conditions = {c.label: plain(c.measure(evidence)) for c in self.also}
        holds = value is not None and self.expect.holds(value)
        holds = holds and all(c.holds(conditions[c.label]) for c in self.also)
        entry = {"measured": value, "holds": bool(holds)}
        if conditions:
            entry["conditions"] = conditions
        return entry

    def _score_control(self, evidence: Evidence | None, name: str) -> dict:
        if evidence is None:
            return {"measured": None, "holds": None, "missing": f"control {name!r} did not run"}
        try:
            return self._score_one(evidence)
        except MissingExperiment as err:
            return {"measured": None, "holds": None, "missing": str(err)}

    def describe(self) -> dict:
        """The declaration as JSON: what ``results.json`` stores next to the measurements."""
        return {
            "expected": self.expected,
            "statement": self.statement,
            "source": self.source,
            "ours": self.ours,
            "reported": self.reported,
            "seeded": self.seeded,
        }


def control_fails(entry: dict) -> bool:
    """Whether a control's entry fails the claim as a negative control must: the claim does not hold on it, and
    every measurement the test needs is a real number (a control that could not be measured proves nothing)."""
    if entry.get("holds") is not False or entry.get("measured") is None:
        return False
    return all(value is not None for value in entry.get("conditions", {}).values())


def plain(value: Any) -> Any:
    """A JSON-ready measurement: tensors and numpy scalars become numbers; NaN and inf become ``None``."""
    if hasattr(value, "item") and hasattr(value, "dtype"):  # torch / numpy scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def check_claims(claims: Sequence[Claim], known_controls: set[str] | None = None, what: str = "claim") -> None:
    """Every key once; every control a claim names is one the experiments declare (``known_controls``)."""
    seen = set()
    for c in claims:
        if not isinstance(c, Claim):
            raise TypeError(f"{what}s must be Claim objects, got {c!r}")
        if c.key in seen:
            raise ValueError(f"{what} {c.key!r} is declared twice")
        seen.add(c.key)
        unknown = sorted(set(c.controls) - known_controls) if known_controls is not None else []
        if unknown:
            raise ValueError(
                f"{what} {c.key!r} names control {unknown[0]!r}, which no experiment declares; "
                f"declared controls: {sorted(known_controls)}"
            )


# --- several seeds ---------------------------------------------------------------------------------------


def spread(values: Sequence[Any]) -> dict[str, Any]:
    """Mean / std / min / max of numeric values (booleans count as 0/1); all ``None`` unless every value is a
    number."""
    numbers = [float(v) for v in values if isinstance(v, (int, float)) and v is not None]
    if not numbers or len(numbers) != len(values):
        return {"mean": None, "std": None, "min": None, "max": None}
    return {
        "mean": statistics.fmean(numbers),
        "std": statistics.pstdev(numbers) if len(numbers) > 1 else 0.0,
        "min": min(numbers),
        "max": max(numbers),
    }


def aggregate(claim: Claim, per_seed: Mapping[str, dict], control_about: Mapping[str, str] | None = None) -> dict:
    """One claim over seeds: its declaration, every seed's entry, mean / std / min / max of numeric
    measurements (booleans count as 0/1), the fraction of seeds at which it holds, and ``holds``
    (true when it holds at every seed); each condition's spread; each control's spread and the fraction of
    seeds at which it fails the claim as it must (``fails``: at every seed); for a claim with ``seeded=False``,
    whether the seeds gave different values (they should not)."""
    entries = list(per_seed.values())
    fraction = sum(e["holds"] for e in entries) / len(entries) if entries else 0.0
    out = {
        **claim.describe(),
        "per_seed": dict(per_seed),
        **spread([e["measured"] for e in entries]),
        "fraction_holding": fraction,
        "holds": bool(entries) and fraction == 1.0,
    }
    if claim.also:
        out["conditions"] = {
            c.label: {
                "expected": c.text(),
                **spread([e.get("conditions", {}).get(c.label) for e in entries]),
                "fraction_holding": sum(c.holds(e.get("conditions", {}).get(c.label)) for e in entries)
                / max(1, len(entries)),
            }
            for c in claim.also
        }
    if claim.controls:
        out["controls"] = {name: _aggregate_control(name, entries, control_about) for name in claim.controls}
    if not claim.seeded:
        out["varies_with_seed"] = len({repr(e["measured"]) for e in entries}) > 1
    return out


def _aggregate_control(name: str, entries: list[dict], about: Mapping[str, str] | None) -> dict:
    found = [e.get("controls", {}).get(name, {"measured": None, "holds": None}) for e in entries]
    failing = sum(control_fails(f) for f in found) / len(found) if found else 0.0
    return {
        "about": (about or {}).get(name, ""),
        **spread([f["measured"] for f in found]),
        "fraction_failing": failing,
        "fails": bool(found) and failing == 1.0,
    }
