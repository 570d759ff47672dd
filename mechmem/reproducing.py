"""The contract every paper reproduction follows, and the one runner that executes it.

A reproduction is a subclass of :class:`Reproduction` that declares

- ``name`` and ``title``;
- ``presets``: ``{"smoke": ..., "quick": ..., "full": ...}``, instances of its :class:`Preset`
  dataclass (``smoke``: seconds, for tests; ``quick``: minutes on a CPU; ``full``: the paper's sizes),
  plus any presets of its own (e.g. ``full-cpu``: the full experiments at sizes one CPU core finishes);
- ``experiments``: an :class:`Experiments` registry of functions ``fn(ctx) -> ExperimentResult``;
- ``claims``: a tuple of :class:`mechmem.claims.Claim`.

Subclasses register themselves by name when their module is imported (:func:`get_reproduction`
imports ``mechmem.papers.<paper>.reproduction``). :func:`run` does everything else, for every
paper alike: the output folder, torch's thread count, seeding, progress, timing, saving each
experiment's data / figures / HTML, scoring the claims and writing one ``results.json``::

    out/results.json              paper, preset, seeds, versions, timings, claims (per seed + summary)
    out/seed-<s>/<experiment>.json  what the experiment measured
    out/seed-<s>/figures/*.png      its figures
    out/seed-<s>/*.html             its self-contained HTML views
    out/seed-<s>/model/             the seed's representative trained model, a run folder (``Context.save_model``)

Several seeds run one after the other, or in parallel processes (``jobs``).
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import datetime
import importlib
import importlib.metadata
import multiprocessing
import os
import platform
import subprocess
import time
from abc import ABC
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from mechmem.claims import Claim, Evidence, aggregate, check_claims
from mechmem.figures import save_figure
from mechmem.io import atomic_write_json, atomic_write_text
from mechmem.threads import check_threads, torch_threads

SCHEMA = "mechmem.reproduction/1"
PRESET_NAMES = ("smoke", "quick", "full")

# --- presets ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preset:
    """Base of every paper's preset dataclass: a name, plus the paper's sizes as typed fields
    (``ModelConfig`` / ``TrainConfig`` where a field describes a model or its training).

    Presets are small override objects: ``SMOKE = QUICK.override(name="smoke", steps=60)``; a
    dict value replaces fields of a nested dataclass: ``QUICK.override(train={"steps": 60})``.
    """

    name: str = "quick"

    def override(self, **changes: Any) -> Preset:
        fields = {f.name: f for f in dataclasses.fields(self)}
        updates = {}
        for key, value in changes.items():
            if key not in fields:
                raise ValueError(f"{type(self).__name__} has no field {key!r}; fields: {sorted(fields)}")
            current = getattr(self, key)
            if isinstance(value, dict) and dataclasses.is_dataclass(current):
                value = _replace(current, value, f"{key}.")
            updates[key] = value
        return dataclasses.replace(self, **updates)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _replace(obj: Any, changes: dict, where: str) -> Any:
    names = {f.name for f in dataclasses.fields(obj) if f.init}
    unknown = sorted(set(changes) - names)
    if unknown:
        raise ValueError(f"{where}{unknown[0]} is not a field of {type(obj).__name__}; fields: {sorted(names)}")
    return dataclasses.replace(obj, **changes)


# --- experiments -----------------------------------------------------------------------------------------


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
    """How experiments run their grids (``mechmem.sweep.run_sweep``): backend, worker processes
    (``None``: the preset's choice) and Ray address."""

    backend: str = "local"
    workers: int | None = None
    address: str | None = None


@dataclass
class Context:
    """Everything an experiment gets: the preset, the seed, its output folder (for extra files such
    as sweep logs), whether to show progress, sweep options, the results of the experiments run so
    far for this seed, and ``state``: objects experiments share (e.g. trained models), kept for one seed."""

    paper: str
    preset: Any
    seed: int
    out: Path
    progress: bool = True
    sweep: SweepOptions = SweepOptions()
    results: dict[str, ExperimentResult] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    model_dir: Path | None = None

    def generator(self, offset: int = 0) -> torch.Generator:
        """A fresh CPU generator seeded with ``seed + offset``."""
        return torch.Generator().manual_seed(self.seed + offset)

    def data(self, experiment: str) -> dict:
        """The data of an experiment that already ran (a clear error if it did not)."""
        if experiment not in self.results:
            raise RuntimeError(f"experiment {experiment!r} must run before this one (ran: {list(self.results)})")
        return self.results[experiment].data

    def save_model(self, model, task, train: Any = None, history: Sequence[dict] = (), about: str = "") -> Path:
        """Save ``model`` (trained on ``task``) as this seed's representative model: the run folder
        ``<seed folder>/model`` (``config.json`` with the task and model configs, ``metrics.jsonl`` from
        ``history``, ``model.safetensors``), which ``mechmem inspect`` reads and ``mechmem report`` shows.

        ``train``: how it was trained (a ``TrainConfig`` or a dict); ``about``: one line saying which model
        of the paper it is. A paper saves one model per seed (a second call replaces the first)."""
        from mechmem.io import to_jsonable
        from mechmem.runs import Run

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


#: the folder, in each seed's folder, of the seed's representative trained model (``Context.save_model``)
REPRESENTATIVE = "model"

Experiment = Callable[[Context], ExperimentResult]


class Experiments(Mapping):
    """A paper's experiments, by name, in the order they run: ``@EXPERIMENTS.register`` (or
    ``@EXPERIMENTS.register(when=lambda preset: preset.studies)`` for one that only some presets run)."""

    def __init__(self) -> None:
        self._fns: dict[str, Experiment] = {}
        self._when: dict[str, Callable[[Any], bool]] = {}

    def register(
        self, fn: Experiment | None = None, *, name: str | None = None, when: Callable[[Any], bool] | None = None
    ):
        def add(f: Experiment) -> Experiment:
            key = name or f.__name__
            if key in self._fns:
                raise ValueError(f"experiment {key!r} is registered twice")
            self._fns[key] = f
            self._when[key] = when or (lambda preset: True)
            return f

        return add(fn) if fn is not None else add

    def enabled(self, name: str, preset: Any) -> bool:
        return bool(self._when[name](preset))

    def __getitem__(self, name: str) -> Experiment:
        return self._fns[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._fns)

    def __len__(self) -> int:
        return len(self._fns)


# --- the contract ----------------------------------------------------------------------------------------

_REGISTRY: dict[str, type[Reproduction]] = {}


class Reproduction(ABC):
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
        for key, preset in cls.presets.items():
            if not isinstance(preset, Preset) or preset.name != key:
                raise TypeError(f"{cls.__name__}.presets[{key!r}] must be a Preset named {key!r}, got {preset!r}")
        if not isinstance(cls.experiments, Experiments) or not len(cls.experiments):
            raise TypeError(f"{cls.__name__}.experiments must be a non-empty Experiments registry")
        check_claims(cls.claims)
        if register:
            _REGISTRY[cls.name] = cls

    def preset(self, name: str) -> Preset:
        if name not in self.presets:
            raise ValueError(f"unknown preset {name!r} for {self.name}; allowed values: {list(self.presets)}")
        return self.presets[name]

    def start(self, ctx: Context) -> None:  # noqa: B027 - an optional hook, not an abstract method
        """Called before the first experiment of a seed (default: nothing)."""

    def finish(self, ctx: Context) -> None:  # noqa: B027 - an optional hook, not an abstract method
        """Called after the last experiment of a seed, also after an error (default: nothing)."""

    def score(self, ctx: Context) -> dict[str, dict]:
        """Every claim this preset measures, scored on this seed's experiment data."""
        evidence = Evidence({name: r.data for name, r in ctx.results.items()}, ctx.preset)
        return {c.key: c.score(evidence) for c in self.claims if c.applies_to(ctx.preset.name)}


def get_reproduction(paper: str) -> type[Reproduction]:
    """The registered reproduction of ``paper`` (importing its package on first use)."""
    from mechmem.registry import paper_module

    if paper not in _REGISTRY:
        package = paper_module(paper)  # ValueError naming the known papers
        importlib.import_module(f"{package.__name__}.reproduction")
    if paper not in _REGISTRY:
        raise ValueError(f"paper package {paper!r} declares no Reproduction")
    return _REGISTRY[paper]


def reproductions() -> dict[str, type[Reproduction]]:
    """Every paper's reproduction, by name."""
    from mechmem.registry import available_papers

    return {paper: get_reproduction(paper) for paper in available_papers()}


# --- the runner ------------------------------------------------------------------------------------------


def make_context(
    paper: str | type[Reproduction],
    preset: str = "quick",
    seed: int = 0,
    out: Path | None = None,
    progress: bool = True,
) -> Context:
    """A context to call a paper's experiments one at a time (in a notebook or a test): ``out`` defaults to a
    fresh temporary folder. The runner (:func:`run`) makes its own."""
    import tempfile

    repro = _reproduction(paper)()
    (seed,) = check_seeds([seed])
    folder = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix=f"mechmem-{repro.name}-"))
    folder.mkdir(parents=True, exist_ok=True)
    return Context(repro.name, repro.preset(preset), seed, folder, progress)


def check_seeds(seeds: Sequence[int]) -> list[int]:
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


def prepare_output_dir(out: Path, paper: str, overwrite: bool = False) -> Path:
    """Create (or take over) the output folder and lock it for this process (``mechmem.folders``):
    a folder of this paper's earlier run is reused (sweeps resume from their logs), ``overwrite``
    empties one mechmem made; another paper's folder, a file, a link or a folder mechmem did not
    make is refused."""
    from mechmem.folders import prepare_output_dir as prepare

    return prepare(out, f"reproduce-{paper}", overwrite=overwrite)


def _reproduction(paper: str | type[Reproduction]) -> type[Reproduction]:
    """A registered reproduction by name, or a ``Reproduction`` subclass itself (e.g. one defined in a test)."""
    if isinstance(paper, type) and issubclass(paper, Reproduction):
        return paper
    if not isinstance(paper, str):
        raise TypeError(f"paper must be a paper name or a Reproduction class, got {paper!r}")
    return get_reproduction(paper)


def run(
    paper: str | type[Reproduction],
    preset: str = "quick",
    seeds: Sequence[int] = (0,),
    out: Path | None = None,
    *,
    jobs: int | None = None,
    progress: bool = True,
    sweep: SweepOptions = SweepOptions(),
    command: str | None = None,
    overwrite: bool = False,
    threads: int | None = None,
) -> dict:
    """Reproduce ``paper`` at ``preset`` for each seed; write and return ``out/results.json``.

    ``overwrite``: empty the output folder first (see :func:`prepare_output_dir`); ``threads``: torch's
    threads in each seed (default: the reproduction's ``threads``, 1).

    ``jobs``: seeds run in parallel processes (default: one per seed, at most the number of CPUs;
    1: one after the other in this process). Every argument is checked before a folder is created.
    """
    cls = _reproduction(paper)
    config = cls().preset(preset)
    seeds = check_seeds(seeds)
    registered = _REGISTRY.get(cls.name) is cls
    jobs = (default_jobs(len(seeds), preset) if registered else 1) if jobs is None else jobs
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive int, got {jobs!r}")
    if min(jobs, len(seeds)) > 1 and not registered:
        raise ValueError(f"{cls.__name__} is not registered: seeds of it can only run in this process (jobs=1)")
    threads = check_threads(threads)
    out = prepare_output_dir(
        Path(out) if out is not None else Path("runs") / f"{cls.name}-{preset}", cls.name, overwrite
    )
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    t0, c0 = time.perf_counter(), _cpu_seconds()
    load, source = _load_average(), versions()
    jobs = min(jobs, len(seeds))
    if jobs == 1:
        runs = {s: run_seed(cls, preset, s, out, progress=progress, sweep=sweep, threads=threads) for s in seeds}
    else:
        runs = _run_parallel(cls.name, preset, seeds, out, jobs, progress, sweep, threads)
    per_seed = {str(s): runs[s] for s in seeds}
    claims = {
        c.key: aggregate(c, {str(s): runs[s]["claims"][c.key] for s in seeds})
        for c in cls.claims
        if c.applies_to(preset)
    }
    results = {
        "schema": SCHEMA,
        "paper": cls.name,
        "title": cls.title,
        "preset": preset,
        "seeds": seeds,
        "command": command or f"mechmem reproduce {cls.name} --preset {preset} --seeds {','.join(map(str, seeds))}",
        "started_at": started,
        "wall_s": round(time.perf_counter() - t0, 2),
        "cpu_s": round(_cpu_seconds() - c0, 2),
        "jobs": jobs,
        "threads": cls.threads if threads is None else threads,
        "versions": source,
        "machine": {**machine(), "load_average_at_start": load},
        "preset_config": config.to_dict(),
        "summary": {"claims": len(claims), "hold_at_every_seed": sum(c["holds"] for c in claims.values())},
        "claims": claims,
        "runs": {s: {k: v for k, v in r.items() if k != "claims"} for s, r in per_seed.items()},
    }
    atomic_write_json(out / "results.json", results)
    return results


def default_jobs(n_seeds: int, preset: str = "quick") -> int:
    """One process per seed, at most one per CPU; the smoke preset in this process (a worker's start-up, mostly
    importing TransformerLens, costs more than a smoke seed: measured 81 s vs 57 s wall for two lca smoke seeds
    on 2 busy cores, while two scaling quick seeds took 126 s in parallel vs 149 s one after the other)."""
    if preset == "smoke":
        return 1
    return max(1, min(n_seeds, os.cpu_count() or 1))


def run_seed(
    paper: str | type[Reproduction],
    preset: str,
    seed: int,
    out: Path,
    progress: bool = True,
    sweep: SweepOptions = SweepOptions(),
    threads: int | None = None,
) -> dict:
    """Run every experiment of ``preset`` at ``seed`` into ``out/seed-<seed>``: timings, files, claims
    (with ``threads`` torch threads; default: the reproduction's)."""
    from tqdm.auto import tqdm

    repro = _reproduction(paper)()
    paper = repro.name
    folder = Path(out) / f"seed-{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    ctx = Context(paper, repro.preset(preset), seed, folder, progress, sweep)
    names = [n for n in repro.experiments if repro.experiments.enabled(n, ctx.preset)]
    timings, files = {}, {}
    w0, c0 = time.perf_counter(), _cpu_seconds()
    with torch_threads(repro.threads if threads is None else threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # a safety net: every experiment draws from its own seeded generators
        repro.start(ctx)
        try:
            bar = tqdm(names, desc=f"{paper} {preset} seed {seed}", unit="experiment", disable=not progress)
            for name in bar:
                bar.set_postfix_str(name)
                t, c = time.perf_counter(), _cpu_seconds()
                result = repro.experiments[name](ctx)
                if not isinstance(result, ExperimentResult):
                    raise TypeError(f"experiment {paper}.{name} must return an ExperimentResult, got {result!r}")
                ctx.results[name] = result
                files[name] = [str(p.relative_to(out)) for p in save_result(folder, name, result)]
                timings[name] = {"wall_s": round(time.perf_counter() - t, 2), "cpu_s": round(_cpu_seconds() - c, 2)}
        finally:
            repro.finish(ctx)
    if repro.saves_model and ctx.model_dir is None:
        raise RuntimeError(f"{paper} declares saves_model, but no experiment of preset {preset} called ctx.save_model")
    record = {
        "dir": folder.name,
        "wall_s": round(time.perf_counter() - w0, 2),
        "cpu_s": round(_cpu_seconds() - c0, 2),
        "experiments": timings,
        "not_run": [n for n in repro.experiments if n not in names],
        "files": files,
        "claims": repro.score(ctx),
    }
    if ctx.model_dir is not None:
        record["model"] = str(ctx.model_dir.relative_to(out))
    return record


def save_result(folder: Path, name: str, result: ExperimentResult) -> list[Path]:
    """``<name>.json``, ``figures/<figure>.png`` and ``<page>.html``, each written atomically."""
    written = [atomic_write_json(folder / f"{name}.json", result.data)]
    for fig_name, fig in result.figures.items():
        written.append(save_figure(fig, folder / "figures" / f"{fig_name}.png"))
    for page, text in result.html.items():
        written.append(atomic_write_text(folder / f"{page}.html", text))
    return written


def _run_parallel(paper, preset, seeds, out, jobs, progress, sweep, threads=None) -> dict[int, dict]:
    from tqdm.auto import tqdm

    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        futures = {pool.submit(run_seed, paper, preset, s, out, False, sweep, threads): s for s in seeds}
        runs = {}
        with tqdm(total=len(seeds), desc=f"{paper} {preset} seeds", disable=not progress) as bar:
            for fut in cf.as_completed(futures):
                runs[futures[fut]] = fut.result()
                bar.update(1)
    return runs


def _cpu_seconds() -> float:
    """User + system time of this process and of its finished child processes."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on every platform
        return None


def versions() -> dict[str, str | None]:
    """mechmem, torch, TransformerLens and Python versions, and the git commit of the source if known."""
    import mechmem

    def dist(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {
        "mechmem": mechmem.__version__,
        "torch": torch.__version__,
        "transformer_lens": dist("transformer-lens"),
        "python": platform.python_version(),
        "git_commit": _git_commit(),
    }


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "") if head else None


def machine() -> dict[str, Any]:
    return {"platform": platform.platform(), "processor": platform.machine(), "cpu_count": os.cpu_count()}
