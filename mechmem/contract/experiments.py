"""Experiments: what a reproduction runs. One signature, ``fn(ctx: Context[P]) -> ExperimentResult``.

An experiment is registered with what it needs and the negative controls it can run::

    @EXPERIMENTS.register(needs=("train_main",), controls={"untrained": "the same probe on the initial model"})
    def probes(ctx: Context[MyPreset]) -> ExperimentResult:
        model = ctx.state["untrained" if ctx.control == "untrained" else "trained"]
        ...

The runner calls it once as itself (``ctx.control is None``), then once per control with ``ctx.control`` set:
the experiment makes the same measurement on a model or data where the mechanism is absent (untrained
weights, ``W_V`` replaced, shuffled keys, uniform attention, ...), and the claims that name the control must
fail on it (``mechmem.contract.claims``). A control run sees the experiments' results so far
(``ctx.data``), the data of the controls of the same name so far (``ctx.control_data``) and a copy of
``ctx.state`` (what it adds there is dropped; what it changes in a shared object it must put back).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic

import torch

from mechmem.contract.presets import P


@dataclass
class ExperimentResult:
    """What one experiment produced: ``data`` (JSON-able measurements, which the claims read),
    ``figures`` (name -> matplotlib ``Figure``, saved as ``figures/<name>.png``) and ``html``
    (name -> a self-contained page, saved as ``<name>.html``)."""

    data: dict
    figures: dict[str, Any] = field(default_factory=dict)
    html: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SweepOptions:
    """How experiments run their grids (:meth:`Context.run_sweep`; ``mechmem reproduce --backend --workers
    --address``): ``backend`` ``"local"`` (processes on this machine) or ``"ray"`` (the cluster at ``address``,
    its head's ``HOST:PORT``; ``None``: a local Ray instance); ``workers``: local worker processes (``None``: the
    experiment's choice). Checked on creation (``mechmem.storage.sweep.check_backend``)."""

    backend: str = "local"
    workers: int | None = None
    address: str | None = None

    def __post_init__(self) -> None:
        from mechmem.storage.sweep import check_backend

        check_backend(self.backend, self.workers, self.address)


#: the folder, in each seed's folder, of the seed's representative trained model (``Context.save_model``)
REPRESENTATIVE = "model"


@dataclass
class Context(Generic[P]):
    """Everything an experiment gets: the preset, the seed, its output folder (for extra files such
    as sweep logs), whether to show progress, sweep options, the results of the experiments run so
    far for this seed, and ``state``: objects experiments share (e.g. trained models), kept for one seed.
    ``control``: the negative control this call runs (``None``: the experiment itself)."""

    paper: str
    preset: P
    seed: int
    out: Path
    progress: bool = True
    sweep: SweepOptions = SweepOptions()
    results: dict[str, ExperimentResult] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    model_dir: Path | None = None
    control: str | None = None
    control_results: dict[str, dict[str, ExperimentResult]] = field(default_factory=dict)
    #: whether the experiment running now may call :meth:`run_sweep` (the runner sets it from ``sweeps=``)
    may_sweep: bool = True

    def generator(self, offset: int = 0) -> torch.Generator:
        """A fresh CPU generator seeded with ``seed + offset``."""
        return torch.Generator().manual_seed(self.seed + offset)

    def data(self, experiment: str) -> dict:
        """The data of an experiment that already ran (a clear error if it did not)."""
        if experiment not in self.results:
            raise RuntimeError(
                f"experiment {experiment!r} must run before this one (ran: {list(self.results)}); "
                "declare it in the experiment's needs="
            )
        return self.results[experiment].data

    def control_data(self, experiment: str) -> dict:
        """The data of ``experiment`` under this call's control (it must declare the control and have run)."""
        found = self.control_results.get(self.control or "", {})
        if experiment not in found:
            raise RuntimeError(f"experiment {experiment!r} has not run under control {self.control!r}")
        return found[experiment].data

    def for_control(self, control: str) -> Context[P]:
        """This context for a run of ``control``: the same results so far, a copy of ``state``."""
        return dataclasses.replace(self, control=control, state=dict(self.state))

    def run_sweep(self, fn, configs: Sequence[Mapping], path: Path, *, desc: str, workers: int | None = None):
        """``mechmem.storage.sweep.run_sweep(fn, configs, path)`` with this run's sweep options (backend, Ray
        address; ``workers``: the experiment's own number of local processes, used when the run names none,
        ``None`` = one per CPU); returns the rows in the order of ``configs``. Only an experiment registered with
        ``sweeps=True`` may call it: the runner checks the sweep options against those experiments."""
        from mechmem.storage.sweep import run_sweep

        if not self.may_sweep:
            raise RuntimeError(
                f"{self.paper}: an experiment registered without sweeps=True ran a sweep ({desc}); register it with "
                "@EXPERIMENTS.register(sweeps=True) so that --backend / --workers / --address are checked for it"
            )
        local = self.sweep.backend == "local"
        return run_sweep(
            fn,
            configs,
            path,
            backend=self.sweep.backend,
            workers=(workers if self.sweep.workers is None else self.sweep.workers) if local else None,
            address=self.sweep.address,
            progress=self.progress,
            desc=desc,
        )

    def save_model(self, model, task, train: Any = None, history: Sequence[dict] = (), about: str = "") -> Path:
        """Save ``model`` (trained on ``task``) as this seed's representative model: the run folder
        ``<seed folder>/model`` (``config.json`` with the task and model configs, ``metrics.jsonl`` from
        ``history``, ``model.safetensors``), which ``mechmem inspect`` reads and ``mechmem report`` shows.

        ``train``: how it was trained (a ``TrainConfig`` or a dict); ``about``: one line saying which model
        of the paper it is. A paper saves one model per seed (a second call replaces the first); a control run
        cannot save one."""
        from mechmem.storage.files import to_jsonable
        from mechmem.storage.runs import Run

        if self.control is not None:
            raise RuntimeError(f"control {self.control!r} cannot save the seed's representative model")
        train = train.to_dict() if hasattr(train, "to_dict") else dict(train or {})
        config = {
            "task": {"name": task.name, **task.to_dict()},
            "model": model.mechmem_config.to_dict(),
            "train": to_jsonable(train),
            "representative": {"paper": self.paper, "preset": self.preset.name, "seed": self.seed, "about": about},
        }
        run = Run.create(self.out / REPRESENTATIVE, config, overwrite=True)
        for record in history:
            run.log(to_jsonable(record))
        run.save_model(model)
        self.model_dir = run.path
        return run.path


Experiment = Callable[[Context], ExperimentResult]


@dataclass(frozen=True)
class Registration:
    """How an experiment was registered: when it runs, what it needs, the controls it can run."""

    fn: Experiment
    when: Callable[[Any], bool]
    needs: tuple[str, ...] = ()
    controls: Mapping[str, str] = field(default_factory=dict)
    sweeps: bool = False


class Experiments(Mapping):
    """A paper's experiments, by name, in the order they run: ``@EXPERIMENTS.register`` (or
    ``@EXPERIMENTS.register(when=lambda preset: preset.studies)`` for one that only some presets run).

    ``needs``: experiments whose data or state it uses (``--only`` runs them too); ``controls``: the negative
    controls it can run, name -> what the control is (one line); ``sweeps``: it runs a grid through
    ``ctx.run_sweep`` (so ``mechmem reproduce --backend / --workers / --address`` apply to it)."""

    def __init__(self) -> None:
        self._entries: dict[str, Registration] = {}

    def register(
        self,
        fn: Experiment | None = None,
        *,
        name: str | None = None,
        when: Callable[[Any], bool] | None = None,
        needs: Sequence[str] = (),
        controls: Mapping[str, str] | None = None,
        sweeps: bool = False,
    ):
        def add(f: Experiment) -> Experiment:
            key = name or f.__name__
            if key in self._entries:
                raise ValueError(f"experiment {key!r} is registered twice")
            unknown = [n for n in needs if n not in self._entries]
            if unknown:
                raise ValueError(f"experiment {key!r} needs {unknown[0]!r}, which is not registered before it")
            for control, about in (controls or {}).items():
                if not control.isidentifier() or not isinstance(about, str) or not about:
                    raise ValueError(f"experiment {key!r}: control {control!r} needs an identifier name and a line")
            when_ = when or (lambda preset: True)
            self._entries[key] = Registration(f, when_, tuple(needs), dict(controls or {}), bool(sweeps))
            return f

        return add(fn) if fn is not None else add

    def enabled(self, name: str, preset: Any) -> bool:
        return bool(self._entries[name].when(preset))

    def needs(self, name: str) -> tuple[str, ...]:
        return self._entries[name].needs

    def sweeps(self, name: str) -> bool:
        """Whether ``name`` runs a grid through ``ctx.run_sweep``."""
        return self._entries[name].sweeps

    def controls(self, name: str) -> Mapping[str, str]:
        """The controls ``name`` can run: control name -> what it is."""
        return self._entries[name].controls

    def all_controls(self) -> dict[str, str]:
        """Every control some experiment declares, with its description (the first one given)."""
        out: dict[str, str] = {}
        for entry in self._entries.values():
            for control, about in entry.controls.items():
                out.setdefault(control, about)
        return out

    def plan(self, preset: Any, only: Sequence[str] | None = None) -> list[str]:
        """The experiments to run, in order: every one the preset enables, or ``only`` those and what they need
        (a ``ValueError`` names an unknown experiment or one this preset does not run)."""
        enabled = [n for n in self if self.enabled(n, preset)]
        if only is None:
            return enabled
        wanted: set[str] = set()
        todo = list(only)
        while todo:
            name = todo.pop()
            if name not in self._entries:
                raise ValueError(f"--only: unknown experiment {name!r}; experiments: {list(self)}")
            if name not in enabled:
                raise ValueError(f"--only: experiment {name!r} does not run in preset {preset.name!r}")
            if name not in wanted:
                wanted.add(name)
                todo.extend(self.needs(name))
        return [n for n in enabled if n in wanted]

    def __getitem__(self, name: str) -> Experiment:
        return self._entries[name].fn

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
