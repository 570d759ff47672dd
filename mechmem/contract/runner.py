"""The one runner of every reproduction: output folder, threads, seeding, progress, timing, each experiment and
its negative controls, saving, scoring, and one ``results.json``::

    out/results.json                         paper, preset (and variant), seeds, versions, timings, claims, checks
    out/manifest.json                        the sha256 of every file above and below (``mechmem.storage.manifest``)
    out/seed-<s>/<experiment>.json           what the experiment measured
    out/seed-<s>/figures/*.png               its figures
    out/seed-<s>/*.html                      its self-contained HTML views
    out/seed-<s>/controls/<control>/...      the same for each negative control it ran
    out/seed-<s>/model/                      the seed's representative trained model (``Context.save_model``)

Several seeds run one after the other, or in parallel processes (``jobs``). A *variant* changes preset fields
(``settings``: ``--set field=value``) or runs some experiments only (``only``); it is recorded in
``results.json`` and names its default folder. :func:`rerun` runs again exactly what a ``results.json`` ran.

One output per folder: the folder's marker records what it holds (paper, preset, its sizes, variant, seeds), and a
folder holding another is refused before anything is written (unless ``overwrite``). Running again into its own
folder first deletes ``results.json`` and ``manifest.json``, which are written last (the manifest, then the
results), so a reproduction stopped midway never leaves a ``results.json`` pointing at files it did not write.
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime
import hashlib
import importlib.metadata
import json
import multiprocessing
import os
import platform
import re
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mechmem.contract.claims import aggregate
from mechmem.contract.experiments import Context, ExperimentResult, SweepOptions
from mechmem.contract.presets import Preset
from mechmem.contract.reproducing import SCHEMA, Reproduction, check_seeds, is_registered, output_kind, resolve
from mechmem.core.threads import check_threads, torch_threads
from mechmem.pages.figures import save_figure
from mechmem.storage import manifest
from mechmem.storage.files import atomic_write_json, atomic_write_text, to_jsonable
from mechmem.storage.folders import prepare_output_dir

#: the folder, in each seed's folder, holding the negative controls' outputs
CONTROLS = "controls"


def make_context(
    paper: str | type[Reproduction],
    preset: str | Preset = "quick",
    seed: int = 0,
    out: Path | None = None,
    progress: bool = True,
) -> Context:
    """A context to call a paper's experiments one at a time (in a notebook or a test): ``out`` defaults to a
    fresh temporary folder. The runner (:func:`run`) makes its own."""
    import tempfile

    repro = resolve(paper)()
    (seed,) = check_seeds([seed])
    folder = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix=f"mechmem-{repro.name}-"))
    folder.mkdir(parents=True, exist_ok=True)
    return Context(repro.name, _preset(repro, preset), seed, folder, progress)


def _preset(repro: Reproduction, preset: str | Preset) -> Preset:
    if isinstance(preset, str):
        return repro.preset(preset)
    if type(preset) is not repro.preset_class():
        raise TypeError(f"preset must be a preset name or a {repro.preset_class().__name__}, got {preset!r}")
    return preset


# --- variants --------------------------------------------------------------------------------------------


def variant_suffix(settings: Sequence[str] = (), only: Sequence[str] | None = None) -> str:
    """What a variant adds to its default folder name: ``+m=6+epsilon=0.25+only=wv_grid`` (a short hash replaces
    the tail of a long one)."""
    parts = [s.strip() for s in settings] + ([f"only={','.join(only)}"] if only else [])
    if not parts:
        return ""
    text = re.sub(r"[^A-Za-z0-9._=,+-]", "_", "+" + "+".join(parts))
    if len(text) > 80:
        text = text[:64] + "+" + hashlib.sha256(text.encode()).hexdigest()[:10]
    return text


def default_out(paper: str, preset: str, settings: Sequence[str] = (), only: Sequence[str] | None = None) -> Path:
    """``runs/<paper>-<preset>[+variant]``."""
    return Path("runs") / f"{paper}-{preset}{variant_suffix(settings, only)}"


# --- running ---------------------------------------------------------------------------------------------


def run(
    paper: str | type[Reproduction],
    preset: str | Preset = "quick",
    seeds: Sequence[int] = (0,),
    out: Path | None = None,
    *,
    jobs: int | None = None,
    progress: bool = True,
    sweep: SweepOptions = SweepOptions(),
    command: str | None = None,
    overwrite: bool = False,
    threads: int | None = None,
    settings: Sequence[str] = (),
    only: Sequence[str] | None = None,
) -> dict:
    """Reproduce ``paper`` at ``preset`` for each seed; write and return ``out/results.json``.

    ``preset``: a preset name or a preset object (e.g. one rebuilt by ``Preset.from_dict``); ``settings``:
    ``["field=value", "model.d_model=64"]`` applied to it (``--set``); ``only``: run these experiments and what
    they need (``--only``), claims that read others are left unmeasured. ``overwrite``: empty the output folder
    first (``mechmem.storage.folders.prepare_output_dir``: a folder of this paper's earlier run is reused, a
    folder mechmem did not make is refused); ``threads``: torch's threads in each seed (default: the
    reproduction's ``threads``, 1). ``jobs``: seeds run in parallel processes (default: one per seed, at most the
    number of CPUs; 1: one after the other in this process). Every argument is checked before a folder is
    created.
    """
    cls = resolve(paper)
    repro = cls()
    config, parsed = _preset(repro, preset).with_settings(settings)
    only = list(only) if only is not None else None
    names = repro.experiments.plan(config, only)
    seeds = check_seeds(seeds)
    jobs = _check_jobs(cls, jobs, len(seeds), config.name)
    threads = check_threads(threads)
    _check_sweep(repro, names, sweep)
    variant = {"set": to_jsonable(parsed), "only": only} if (parsed or only) else None
    about = {"paper": cls.name, "preset": config.name, "preset_config": config.to_dict(), "variant": variant}
    out = prepare_output_dir(
        Path(out) if out is not None else default_out(cls.name, config.name, settings, only),
        output_kind(cls.name),
        overwrite,
        about=json.loads(json.dumps(to_jsonable({**about, "seeds": seeds}))),  # another output: refused
    )
    manifest.discard(out, ("results.json", manifest.MANIFEST))  # written again last, when complete
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    t0, c0 = time.perf_counter(), _cpu_seconds()
    load, source = _load_average(), versions()
    if jobs == 1:
        runs = {s: run_seed(cls, config, s, out, progress, sweep, threads, names) for s in seeds}
    else:
        runs = _run_parallel(cls.name, config, seeds, out, jobs, progress, sweep, threads, names)
    results = {
        "schema": SCHEMA,
        "paper": cls.name,
        "title": cls.title,
        "preset": config.name,
        "variant": variant,
        "seeds": seeds,
        "command": command or _command(cls.name, config.name, seeds, settings, only),
        "started_at": started,
        "wall_s": round(time.perf_counter() - t0, 2),
        "cpu_s": round(_cpu_seconds() - c0, 2),
        "jobs": jobs,
        "threads": cls.threads if threads is None else threads,
        "versions": source,
        "machine": {**machine(), "load_average_at_start": load},
        "preset_config": config.to_dict(),
        **_scores(cls, runs, seeds),
        "runs": {str(s): {k: v for k, v in runs[s].items() if k not in ("claims", "checks")} for s in seeds},
    }
    text = json.dumps(to_jsonable(results), indent=2, allow_nan=True) + "\n"
    manifest.seal(out, {"results.json": text.encode("utf-8")})  # every file's checksum, then results.json
    return results


def _check_jobs(cls: type[Reproduction], jobs: int | None, n_seeds: int, preset: str) -> int:
    registered = is_registered(cls)
    jobs = (default_jobs(n_seeds, preset) if registered else 1) if jobs is None else jobs
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive int, got {jobs!r}")
    if min(jobs, n_seeds) > 1 and not registered:
        raise ValueError(f"{cls.__name__} is not registered: seeds of it can only run in this process (jobs=1)")
    return min(jobs, n_seeds)


def _check_sweep(repro: Reproduction, names: Sequence[str], sweep: SweepOptions) -> None:
    """Sweep options other than the default need an experiment to run that sweeps; the Ray backend connects to
    its cluster here, so that an unreachable address fails before any folder exists."""
    if not isinstance(sweep, SweepOptions):
        raise TypeError(f"sweep must be a SweepOptions, got {type(sweep).__name__}")
    if sweep == SweepOptions():
        return
    sweeping = [n for n in names if repro.experiments.sweeps(n)]
    if not sweeping:
        every = [n for n in repro.experiments if repro.experiments.sweeps(n)]
        raise ValueError(
            f"--backend / --workers / --address (sweep={sweep}) apply to experiments that sweep a grid, and none of "
            f"those to run does ({repro.name}'s that do: {', '.join(every) or 'none'})"
        )
    if sweep.backend == "ray":
        from mechmem.storage.sweep import connect_ray

        connect_ray(sweep.address)


def _command(paper: str, preset: str, seeds: list[int], settings: Sequence[str], only: Sequence[str] | None) -> str:
    parts = [f"mechmem reproduce {paper} --preset {preset} --seeds {','.join(map(str, seeds))}"]
    parts += [f"--set {s}" for s in settings]
    if only:
        parts.append(f"--only {','.join(only)}")
    return " ".join(parts)


def _scores(cls: type[Reproduction], runs: dict[int, dict], seeds: list[int]) -> dict:
    """The claims and checks over seeds, what was left unmeasured, and the summary."""
    about = cls.experiments.all_controls()

    def over_seeds(kind: str, declared) -> dict:
        keys = [c.key for c in declared if all(c.key in runs[s][kind] for s in seeds)]
        by_key = {c.key: c for c in declared}
        return {k: aggregate(by_key[k], {str(s): runs[s][kind][k] for s in seeds}, about) for k in keys}

    claims, checks = over_seeds("claims", cls.claims), over_seeds("checks", cls.checks)
    controls = [c for entry in claims.values() for c in entry.get("controls", {}).values()]
    summary = {
        "claims": len(claims),
        "hold_at_every_seed": sum(c["holds"] for c in claims.values()),
        "controls": len(controls),
        "controls_failing_at_every_seed": sum(c["fails"] for c in controls),
        "checks": len(checks),
        "checks_hold_at_every_seed": sum(c["holds"] for c in checks.values()),
    }
    unmeasured = runs[seeds[0]].get("unmeasured", {})
    return {"summary": summary, "claims": claims, "checks": checks, "unmeasured": unmeasured}


def default_jobs(n_seeds: int, preset: str = "quick") -> int:
    """One process per seed, at most one per CPU; the smoke preset in this process (a worker's start-up, mostly
    importing TransformerLens, costs more than a smoke seed: measured 81 s vs 57 s wall for two lca smoke seeds
    on 2 busy cores, while two scaling quick seeds took 126 s in parallel vs 149 s one after the other)."""
    if preset == "smoke":
        return 1
    return max(1, min(n_seeds, os.cpu_count() or 1))


def run_seed(
    paper: str | type[Reproduction],
    preset: str | Preset,
    seed: int,
    out: Path,
    progress: bool = True,
    sweep: SweepOptions = SweepOptions(),
    threads: int | None = None,
    names: Sequence[str] | None = None,
) -> dict:
    """Run the experiments ``names`` (default: every one the preset enables), each followed by its negative
    controls, at ``seed`` into ``out/seed-<seed>``: timings, files, claims and checks (with ``threads`` torch
    threads; default: the reproduction's)."""
    from tqdm.auto import tqdm

    repro = resolve(paper)()
    folder = Path(out) / f"seed-{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    ctx = Context(repro.name, _preset(repro, preset), seed, folder, progress, sweep)
    names = list(names) if names is not None else repro.experiments.plan(ctx.preset)
    timings, files = {}, {}
    w0, c0 = time.perf_counter(), _cpu_seconds()
    with torch_threads(repro.threads if threads is None else threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # a safety net: every experiment draws from its own seeded generators
        repro.start(ctx)
        try:
            bar = tqdm(
                names, desc=f"{repro.name} {ctx.preset.name} seed {seed}", unit="experiment", disable=not progress
            )
            for name in bar:
                bar.set_postfix_str(name)
                timings[name] = _run_one(repro, ctx, name, out, files)
        finally:
            repro.finish(ctx)
    if repro.saves_model and ctx.model_dir is None and (names == repro.experiments.plan(ctx.preset)):
        raise RuntimeError(
            f"{repro.name} declares saves_model, but no experiment of preset {ctx.preset.name} called ctx.save_model"
        )
    claims, unmeasured = repro.score(ctx)
    checks, unmeasured_checks = repro.score(ctx, repro.checks)
    record = {
        "dir": folder.name,
        "wall_s": round(time.perf_counter() - w0, 2),
        "cpu_s": round(_cpu_seconds() - c0, 2),
        "experiments": timings,
        "not_run": [n for n in repro.experiments if n not in names],
        "files": files,
        "claims": claims,
        "checks": checks,
        "unmeasured": {**unmeasured, **unmeasured_checks},
    }
    if ctx.model_dir is not None:
        record["model"] = str(ctx.model_dir.relative_to(out))
    return record


def _run_one(repro: Reproduction, ctx: Context, name: str, out: Path, files: dict[str, list[str]]) -> dict:
    """Run experiment ``name`` and then each of its controls; save their outputs; return their timings."""
    fn = repro.experiments[name]
    ctx.may_sweep = repro.experiments.sweeps(name)
    t, c = time.perf_counter(), _cpu_seconds()
    ctx.results[name] = _checked(fn(ctx), repro.name, name)
    files[name] = [str(p.relative_to(out)) for p in save_result(ctx.out, name, ctx.results[name])]
    timing: dict[str, Any] = {"wall_s": round(time.perf_counter() - t, 2), "cpu_s": round(_cpu_seconds() - c, 2)}
    for control in repro.experiments.controls(name):
        t, c = time.perf_counter(), _cpu_seconds()
        result = _checked(fn(ctx.for_control(control)), repro.name, f"{name} (control {control})")
        ctx.control_results.setdefault(control, {})[name] = result
        written = save_result(ctx.out / CONTROLS / control, name, result)
        files[f"{name}[{control}]"] = [str(p.relative_to(out)) for p in written]
        timing.setdefault("controls", {})[control] = {
            "wall_s": round(time.perf_counter() - t, 2),
            "cpu_s": round(_cpu_seconds() - c, 2),
        }
    return timing


def _checked(result: Any, paper: str, what: str) -> ExperimentResult:
    if not isinstance(result, ExperimentResult):
        raise TypeError(f"experiment {paper}.{what} must return an ExperimentResult, got {result!r}")
    return result


def save_result(folder: Path, name: str, result: ExperimentResult) -> list[Path]:
    """``<name>.json``, ``figures/<figure>.png`` and ``<page>.html``, each written atomically."""
    written = [atomic_write_json(folder / f"{name}.json", result.data)]
    for fig_name, fig in result.figures.items():
        written.append(save_figure(fig, folder / "figures" / f"{fig_name}.png"))
    for page, text in result.html.items():
        written.append(atomic_write_text(folder / f"{page}.html", text))
    return written


def _run_parallel(paper, preset, seeds, out, jobs, progress, sweep, threads, names) -> dict[int, dict]:
    from tqdm.auto import tqdm

    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        futures = {pool.submit(run_seed, paper, preset, s, out, False, sweep, threads, names): s for s in seeds}
        runs = {}
        with tqdm(total=len(seeds), desc=f"{paper} {preset.name} seeds", disable=not progress) as bar:
            for fut in cf.as_completed(futures):
                runs[futures[fut]] = fut.result()
                bar.update(1)
    return runs


# --- running again ---------------------------------------------------------------------------------------


def rerun_request(results_file: Path) -> dict[str, Any]:
    """What a ``results.json`` ran, as :func:`run`'s arguments: paper, the preset object rebuilt from
    ``preset_config`` (so the rerun uses exactly those sizes, whatever the named preset says today), seeds,
    ``only`` and threads. A file that is not a reproduction's results raises a ``ValueError`` saying so."""
    path = Path(results_file)
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"--from {path}: cannot read it as JSON ({err})") from None
    if not isinstance(results, dict) or results.get("schema") not in (SCHEMA, "mechmem.reproduction/1"):
        raise ValueError(f"--from {path}: not the results.json of `mechmem reproduce` (schema {SCHEMA})")
    repro = resolve(results["paper"])
    preset = repro.preset_class().from_dict(results["preset_config"])
    variant = results.get("variant") or {}
    return {
        "paper": repro.name,
        "preset": preset,
        "seeds": list(results["seeds"]),
        "only": variant.get("only"),
        "threads": results.get("threads"),
        "variant": variant,
    }


# --- what ran where --------------------------------------------------------------------------------------


def summary_lines(results: dict) -> list[str]:
    """One line per claim (value, verdict, controls) and check, for the terminal."""
    lines = []
    for kind in ("claims", "checks"):
        for key, entry in results.get(kind, {}).items():
            mark = "holds" if entry["holds"] else "FAILS"
            lines.append(f"{kind[:-1]} {key}: {mark} ({entry['fraction_holding']:.0%} of seeds)")
            for name, control in entry.get("controls", {}).items():
                verdict = "fails as it must" if control["fails"] else "DOES NOT FAIL: the claim is not calibrated"
                lines.append(f"    control {name}: {verdict} ({control['fraction_failing']:.0%} of seeds)")
    return lines


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
    root = Path(__file__).resolve().parents[2]
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
