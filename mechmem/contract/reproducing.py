"""The contract every paper reproduction follows.

A reproduction is a subclass of :class:`Reproduction` (typed by its preset class, ``Reproduction[MyPreset]``)
that declares

- ``name`` and ``title``;
- ``presets``: ``{"smoke": ..., "quick": ..., "full": ...}``, instances of its :class:`Preset`
  dataclass (``smoke``: seconds, for tests; ``quick``: minutes on a CPU; ``full``: the paper's sizes),
  plus any presets of its own (e.g. ``full-cpu``: the full experiments at sizes one CPU core finishes);
- ``experiments``: an :class:`Experiments` registry of functions ``fn(ctx) -> ExperimentResult``, each with the
  negative controls it can run;
- ``claims``: a tuple of :class:`mechmem.contract.claims.Claim`, each naming the controls it must fail on;
- ``checks`` (optional): measurements of the data, the set-up or an identity, scored like claims but shown apart
  and not counted as claims.

Subclasses register themselves by name when their module is imported (:func:`get_reproduction`
imports ``mechmem.papers.<paper>.reproduction``). :mod:`mechmem.contract.runner` does everything else, for every
paper alike.
"""

from __future__ import annotations

import importlib
from abc import ABC
from collections.abc import Mapping
from typing import Any, ClassVar, Generic

from mechmem.contract.claims import Claim, Evidence, MissingExperiment, check_claims
from mechmem.contract.experiments import Context, Experiments
from mechmem.contract.presets import PRESET_NAMES, P, Preset

#: the schema of ``results.json`` (2: negative controls, checks, variants)
SCHEMA = "mechmem.reproduction/2"

_REGISTRY: dict[str, type[Reproduction]] = {}


class Reproduction(ABC, Generic[P]):
    """Base class of every paper's reproduction (see the module docstring).

    ``threads``: torch's intra-op threads while it runs (``None``: leave as is); the models are small
    and one thread is fastest on a shared machine. ``report_figures``: figure name -> caption, the key
    figures ``mechmem report`` shows, in order; ``saves_model``: whether each seed saves a representative
    trained model (``Context.save_model``), whose circuits the report shows. ``start(ctx)`` / ``finish(ctx)``
    run before the first and after the last experiment of each seed (``finish`` also after an error).
    """

    name: ClassVar[str]
    title: ClassVar[str]
    presets: ClassVar[Mapping[str, Preset]]
    experiments: ClassVar[Experiments]
    claims: ClassVar[tuple[Claim, ...]]
    checks: ClassVar[tuple[Claim, ...]] = ()
    threads: ClassVar[int | None] = 1
    report_figures: ClassVar[Mapping[str, str]] = {}
    saves_model: ClassVar[bool] = False

    def __init_subclass__(cls, register: bool = True, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for attr in ("name", "title", "presets", "experiments", "claims"):
            if not hasattr(cls, attr):
                raise TypeError(f"{cls.__name__} must declare `{attr}`")
        if not set(PRESET_NAMES) <= set(cls.presets):
            raise TypeError(f"{cls.__name__}.presets must have at least {PRESET_NAMES}, got {sorted(cls.presets)}")
        kinds = {type(p) for p in cls.presets.values()}
        for key, preset in cls.presets.items():
            if not isinstance(preset, Preset) or preset.name != key:
                raise TypeError(f"{cls.__name__}.presets[{key!r}] must be a Preset named {key!r}, got {preset!r}")
        if len(kinds) != 1:
            raise TypeError(
                f"{cls.__name__}.presets must all be of one Preset class, got {sorted(k.__name__ for k in kinds)}"
            )
        if not isinstance(cls.experiments, Experiments) or not len(cls.experiments):
            raise TypeError(f"{cls.__name__}.experiments must be a non-empty Experiments registry")
        known = set(cls.experiments.all_controls())
        check_claims(cls.claims, known, "claim")
        check_claims(cls.checks, known, "check")
        clash = sorted({c.key for c in cls.claims} & {c.key for c in cls.checks})
        if clash:
            raise ValueError(f"{cls.__name__}: {clash[0]!r} is declared both as a claim and as a check")
        if register:
            _REGISTRY[cls.name] = cls

    @classmethod
    def preset_class(cls) -> type[Preset]:
        """The paper's preset dataclass."""
        return type(next(iter(cls.presets.values())))

    def preset(self, name: str) -> Preset:
        if name not in self.presets:
            raise ValueError(f"unknown preset {name!r} for {self.name}; allowed values: {list(self.presets)}")
        return self.presets[name]

    def start(self, ctx: Context) -> None:  # noqa: B027 - an optional hook, not an abstract method
        """Called before the first experiment of a seed (default: nothing)."""

    def finish(self, ctx: Context) -> None:  # noqa: B027 - an optional hook, not an abstract method
        """Called after the last experiment of a seed, also after an error (default: nothing)."""

    def score(self, ctx: Context, claims: tuple[Claim, ...] | None = None) -> tuple[dict[str, dict], dict[str, str]]:
        """Every claim (or ``claims``, e.g. the checks) this preset measures, scored on this seed's data and on
        the data of each control; and the claims left unmeasured because an experiment they read did not run."""
        evidence = Evidence({name: r.data for name, r in ctx.results.items()}, ctx.preset)
        controls = {
            control: Evidence({name: r.data for name, r in results.items()}, ctx.preset, control)
            for control, results in ctx.control_results.items()
        }
        scored, unmeasured = {}, {}
        for claim in self.claims if claims is None else claims:
            if not claim.applies_to(ctx.preset.name):
                continue
            try:
                scored[claim.key] = claim.score(evidence, controls)
            except MissingExperiment as err:
                unmeasured[claim.key] = str(err)
        return scored, unmeasured


def get_reproduction(paper: str) -> type[Reproduction]:
    """The registered reproduction of ``paper`` (importing its package on first use)."""
    from mechmem.contract.registry import paper_module

    if paper not in _REGISTRY:
        package = paper_module(paper)  # ValueError naming the known papers
        importlib.import_module(f"{package.__name__}.reproduction")
    if paper not in _REGISTRY:
        raise ValueError(f"paper package {paper!r} declares no Reproduction")
    return _REGISTRY[paper]


def reproductions() -> dict[str, type[Reproduction]]:
    """Every paper's reproduction, by name."""
    from mechmem.contract.registry import available_papers

    return {paper: get_reproduction(paper) for paper in available_papers()}


def is_registered(cls: type[Reproduction]) -> bool:
    return _REGISTRY.get(cls.name) is cls


def resolve(paper: str | type[Reproduction]) -> type[Reproduction]:
    """A registered reproduction by name, or a ``Reproduction`` subclass itself (e.g. one defined in a test)."""
    if isinstance(paper, type) and issubclass(paper, Reproduction):
        return paper
    if not isinstance(paper, str):
        raise TypeError(f"paper must be a paper name or a Reproduction class, got {paper!r}")
    return get_reproduction(paper)


def check_seeds(seeds) -> list[int]:
    """Distinct non-negative ints, at least one."""
    if isinstance(seeds, int):
        seeds = [seeds]
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds: give at least one seed")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise ValueError(f"seeds: every seed must be an int >= 0, got {s!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds: each seed once, got {seeds}")
    return seeds


def output_kind(paper: str) -> str:
    """The kind of output a reproduction's folder holds (``mechmem.storage.folders``' marker): one per paper."""
    return f"reproduce-{paper}"
