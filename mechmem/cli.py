"""The ``mechmem`` command: list, train, reproduce (and the commands paper packages add).

Building the parser imports neither torch nor TransformerLens (the tasks, papers and paper
commands are declared by name in ``mechmem.contract.registry``), so ``mechmem --help`` and argument
errors answer at once; the heavy imports happen inside the command that needs them.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

DEFAULT_RUNS = Path("runs")

#: What each file of a run folder holds (``mechmem train`` lists them when it finishes).
RUN_FILES = {
    "config.json": "task, model and training configs (and your --set overrides)",
    "metrics.jsonl": "one line of eval metrics per evaluation",
    "model.safetensors": "the final weights (TransformerLens names)",
    "train_state.safetensors": "the resumable checkpoint (weights, optimiser, data RNG, step)",
    "results.json": "final metrics, steps, threads, training time",
    "manifest.json": "sha256 of every file the run wrote and of itself, checked by every reader",
    "figures/training.png": "eval loss and accuracy curves",
    ".mechmem.json": "marker: mechmem made this folder (--overwrite deletes nothing else)",
    ".mechmem.lock": "writer lock: one process writes this run at a time",
}


def _parser(command: str | None = None) -> argparse.ArgumentParser:
    """The full parser; the paper command ``command`` (if any) gets its real arguments."""
    from mechmem.contract.registry import PAPERS, add_command_parsers

    parser = argparse.ArgumentParser(
        prog="mechmem",
        description="Transformers as associative memories: toy models, training and hook experiments.",
    )
    parser.add_argument("--debug", action="store_true", help="on an error, show its full traceback too")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("list", help="list tasks, experiments and reproducible papers")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("train", help="train a model on a task and save a run directory")
    p.add_argument("task", help="task name (see `mechmem list`)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field: task.<f>, model.<f> or train.<f> (prefix optional "
        "when unambiguous), e.g. --set model.d_model=64 --set lr=0.01",
    )
    p.add_argument("--name", help="run name, one folder name (default: the task name)")
    p.add_argument("--out", type=Path, default=DEFAULT_RUNS, help="folder holding run directories (default: runs)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory made by mechmem")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoint")
    p.add_argument(
        "--repair",
        action="store_true",
        help="rebuild the damaged files of a run (metrics, model, results, training figure) from its verified "
        "checkpoint, naming each file rewritten; nothing else is changed",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads while training (default: train.threads, 1; results are the same at any count)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("reproduce", help="reproduce a paper's claims (writes results.json: claims, timings, versions)")
    p.add_argument("paper", nargs="?", help=f"paper name: {', '.join(PAPERS)} (not with --from)")
    add_reproduce_arguments(p)
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("inspect", help="write an HTML page of a run's circuits: attention, OV/QK, ablations, patching")
    p.add_argument("run_dir", type=Path, help="a run directory (made by `mechmem train`)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: RUN_DIR/inspect)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace --out even if it holds another kind of mechmem output"
    )
    p.add_argument("--bridge", action="store_true", help="inspect the model as a TransformerBridge (boot_native)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--examples", type=int, default=3, help="examples shown in the attention views (default 3)")
    p.add_argument("--batch-size", type=int, default=128, help="examples for ablations and patching (default 128)")
    p.add_argument("--heads", default=None, metavar="L.H,...", help="only these heads, e.g. 0.1,1.* (default: all)")
    p.add_argument(
        "--max-vocab",
        type=int,
        default=None,
        metavar="N",
        help="OV/QK maps over the N tokens most frequent in the examples (needed above 128 tokens)",
    )
    p.add_argument(
        "--max-positions",
        type=int,
        default=64,
        metavar="N",
        help="longest example shown; longer ones are cut to a prefix (default 64)",
    )
    p.add_argument("--no-patching", dest="patching", action="store_false", help="skip activation patching")
    p.add_argument(
        "--allow-no-manifest",
        action="store_true",
        help="read a run without a verifiable manifest.json (saved by an older mechmem) unchecked",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the examples (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser(
        "report",
        help="one HTML page of the four reproductions at a preset: claims, figures, "
        "circuits of a trained model, timings",
    )
    p.add_argument(
        "--preset",
        choices=("smoke", "quick", "full"),
        default="quick",
        help="smoke (minutes in all, for tests), quick (the default; an hour or so on 2 CPU cores) or full",
    )
    p.add_argument(
        "--seeds",
        default=None,
        metavar="S,S,...",
        help="seeds to run (default 0); collected results must hold exactly these (default: any)",
    )
    p.add_argument("--papers", default=None, metavar="P,P,...", help="only these papers (default: all four)")
    p.add_argument(
        "--collect",
        type=Path,
        nargs="+",
        default=[],
        metavar="DIR",
        help="finished reproduction folders (`mechmem reproduce ... --out DIR`) to report instead of "
        "running those papers",
    )
    p.add_argument(
        "--runs",
        type=Path,
        default=DEFAULT_RUNS,
        help="where reproductions run, as RUNS/<paper>-<preset>; complete, up-to-date ones there are "
        "collected (default: runs)",
    )
    p.add_argument("--out", type=Path, default=None, help="the report's folder (default: RUNS/report-<preset>)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace --out even if it holds another kind of mechmem output"
    )
    p.add_argument(
        "--rerun", action="store_true", help="run again into RUNS/<paper>-<preset> when its results cannot be reported"
    )
    p.add_argument("--jobs", type=int, default=None, help="processes per reproduction (its seeds in parallel)")
    p.add_argument("--examples", type=int, default=1, help="examples in each model's attention views (default 1)")
    p.add_argument(
        "--allow-no-manifest",
        action="store_true",
        help="collect reproductions without a verifiable manifest.json (made by an older mechmem) unchecked",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_report, seed=None)

    add_command_parsers(sub, command)
    return parser


def cmd_list(args: argparse.Namespace) -> int:
    from mechmem.contract.registry import available_papers, experiments, tasks

    print("tasks:")
    for name, cls in sorted(tasks(warn=True).items()):
        print(f"  {name:<16} {_first_line(cls.__doc__)}")
    print("experiments:")
    for paper, exps in experiments().items():
        print(f"  {paper}: {', '.join(sorted(exps)) or '(none)'}")
    print("reproduce:", ", ".join(sorted(available_papers(warn=True))) or "(no paper packages installed)")
    return 0


def _first_line(doc: str | None) -> str:
    lines = (doc or "").strip().splitlines()
    return lines[0] if lines else ""


def build_configs(task_name: str, overrides: list[str]):
    """Task, model and training configs for ``task_name`` with ``--set`` overrides applied."""
    from mechmem.contract.registry import task_class
    from mechmem.core.config import apply_overrides, split_overrides

    task = task_class(task_name)()
    sections = split_overrides(overrides, {"task": task, "model": task.model_config(), "train": task.train_config()})
    task = apply_overrides(task, sections["task"], "task")
    model_cfg = apply_overrides(task.model_config(), sections["model"], "model")
    train_cfg = apply_overrides(task.train_config(), sections["train"], "train")
    return task, model_cfg, train_cfg


def cmd_train(args: argparse.Namespace) -> int:
    from mechmem.contract.registry import check_task_name
    from mechmem.core.threads import check_threads
    from mechmem.storage.folders import check_name_lengths, check_run_name

    check_task_name(args.task)
    path = args.out / check_run_name(args.task if args.name is None else args.name)
    check_name_lengths(path)
    check_threads(args.threads, "--threads")
    if args.repair:
        return _repair(args, path)
    if args.resume:
        return _resume(args, path)
    import dataclasses

    from mechmem.core.models import check_memory
    from mechmem.core.training import validate_training
    from mechmem.storage.runs import Run

    task, model_cfg, train_cfg = build_configs(args.task, args.overrides)
    threads = _capped_threads(train_cfg.threads if args.threads is None else args.threads)
    train_cfg = dataclasses.replace(train_cfg, progress=not args.quiet, threads=threads)
    check_memory(model_cfg, _TRAINING_COPIES.get(train_cfg.optimizer, 4), "train it")
    model = task.build_model(model_cfg)
    validate_training(model, task, train_cfg)  # every config error before a run directory exists
    config = {
        "task": {"name": task.name, **task.to_dict()},
        "model": model_cfg.to_dict(),
        "train": train_cfg.to_dict(),
        "overrides": args.overrides,
    }
    try:
        run = Run.create(path, config, overwrite=args.overwrite)
    except FileExistsError as err:  # a refusal: the folder is in the way
        if (path / "config.json").is_file() and not (path / "model.safetensors").exists():
            err.add_note(f"to continue it: `{Run(path).command('--resume')}`")  # the exact command, --out included
        raise
    except FileNotFoundError:
        raise
    except OSError as err:  # disk full, read-only, ...: nothing was trained; the same command starts the run again
        again = ["mechmem", *args.argv] + ([] if args.overwrite else ["--overwrite"])
        err.add_note(f"nothing was trained; once that is fixed, start it again with `{shlex.join(again)}`")
        raise
    return _train_and_report(args, run, model, task, train_cfg, resume=False)


#: copies of the parameters training holds: weights, gradients and the optimiser's state (Adam: two moments)
_TRAINING_COPIES = {"adam": 4, "adamw": 4, "sgd": 3}


def _capped_threads(threads: int, command: str = "train") -> int:
    """``threads`` capped at the CPUs this process may use (a note says so)."""
    from mechmem.core.threads import cap_threads

    threads, note = cap_threads(threads, "--threads")
    if note:
        print(f"mechmem {command}: note: {note}", file=sys.stderr)
    return threads


def _repair(args: argparse.Namespace, path: Path) -> int:
    """``--repair``: rebuild the damaged files of ``path`` from its verified checkpoint, naming each."""
    from mechmem.storage.repair import repair
    from mechmem.storage.runs import Run

    if args.overrides or args.overwrite or args.resume:
        raise ValueError("--repair rebuilds a run as it was; it cannot be combined with --set, --overwrite or --resume")
    run = Run(path)
    rebuilt = repair(run)
    if not rebuilt:
        print(f"{run.path}: every file matches manifest.json; nothing to repair (no file changed)")
        return 0
    for name in rebuilt:
        print(f"rewrote {run.path / name} (rebuilt from the verified checkpoint)")
    print(f"{run.path}: every file matches manifest.json again")
    return 0


def _resume(args: argparse.Namespace, path: Path) -> int:
    """``--resume``: continue ``path`` with its recorded configs (the whole run verified first)."""
    import dataclasses

    from mechmem.core.training import validate_training
    from mechmem.storage.runs import Run, model_config_of, read_config, task_of, train_config_of

    if args.overrides or args.overwrite:
        raise ValueError(
            "--resume continues a run with its recorded config; it cannot be combined with --set or --overwrite"
        )
    run = Run(path).lock()
    run.verify()  # every file and the manifest: a damaged run is refused before anything is read or written
    config, file = read_config(run), run.path / "config.json"
    recorded = (config.get("task") or {}).get("name")
    if recorded != args.task:
        raise ValueError(
            f"{path} was trained on task {recorded!r}, not {args.task!r}; resume it with "
            f"`mechmem train {recorded} --name {path.name} --out {args.out} --resume`"
        )
    task, model_cfg, train_cfg = task_of(config, file), model_config_of(config, file), train_config_of(config, file)
    if args.threads is not None and args.threads != train_cfg.threads:
        print(
            f"mechmem train: note: {path} was trained on {train_cfg.threads} thread(s); on {args.threads} the "
            "last bits may differ from an uninterrupted run (MKL splits sums by thread count)",
            file=sys.stderr,
        )
    threads = _capped_threads(train_cfg.threads if args.threads is None else args.threads)
    train_cfg = dataclasses.replace(train_cfg, progress=not args.quiet, threads=threads)
    model = task.build_model(model_cfg)
    validate_training(model, task, train_cfg)
    return _train_and_report(args, run, model, task, train_cfg, resume=True)


def _train_and_report(args, run, model, task, train_cfg, resume: bool) -> int:
    from mechmem.core.training import train
    from mechmem.storage.files import remove_stale_temp_files

    resume_command = shlex.join(
        ["mechmem", "train", args.task, "--name", run.path.name, "--out", str(run.path.parent), "--resume"]
    )
    t0 = time.perf_counter()
    try:
        result = train(model, task, train_cfg, run=run, resume=resume)
        seconds = time.perf_counter() - t0
        finished_before = result.start == train_cfg.steps and (run.path / "results.json").is_file()
        if finished_before and not run.written:
            print(f"{run.path} already finished all {train_cfg.steps} steps; nothing to do (no file changed)")
            return 0
        _save_training_summary(run, result, train_cfg, seconds)
    except KeyboardInterrupt:
        remove_stale_temp_files(run.path)
        print(
            f"\nmechmem train: interrupted; {_checkpoint_note(run)}. Continue with:\n  {resume_command}",
            file=sys.stderr,
        )
        return 130
    except OSError as err:  # disk full, read-only, ...: main prints one line; the run resumes from its checkpoint
        err.add_note(f"the run is kept; once that is fixed, continue it with `{resume_command}`")
        raise
    _print_report(args, run, task, result, train_cfg, seconds)
    return 0


def _checkpoint_note(run) -> str:
    try:
        state = run.load_train_state()
    except ValueError:
        state = None
    if state is None:
        return "no checkpoint yet (resuming starts at step 0)"
    return f"the last checkpoint is at step {state.step}"


def _save_training_summary(run, result, train_cfg, seconds: float) -> None:
    from mechmem.storage.summary import save_training_figure, save_training_results

    save_training_figure(run, result.history)
    save_training_results(run, result.history, result.threads, seconds)


def _print_report(args, run, task, result, train_cfg, seconds: float) -> None:
    """What was trained, every file of the run folder, and what to try next."""
    final = result.final
    started = f" (resumed at step {result.start})" if result.start else ""
    print(f"task {task.name}: {_first_line(type(task).__doc__)}")
    threads = f"{result.threads} thread" + ("s" if result.threads != 1 else "")
    print(
        f"trained {train_cfg.steps} steps{started} in {seconds:.1f} s on {threads}: "
        f"eval loss {final['loss']:.3g}, accuracy {final['accuracy']:.4f}"
    )
    print(f"run saved to {run.path}")
    files = sorted(p for p in run.path.rglob("*") if p.is_file())
    width = max(len(str(p.relative_to(run.path))) for p in files)
    for p in files:
        name = str(p.relative_to(run.path))
        print(f"  {name:<{width}}  {_size(p.stat().st_size):>8}  {RUN_FILES.get(name, '')}")
    name, out = run.path.name, run.path.parent
    print("next:")
    print(
        f"  mechmem inspect {shlex.quote(str(run.path))}   # an HTML page of what the model does: attention, "
        "circuits, ablations, patching"
    )
    print(
        f"  mechmem train {task.name} --name {name}-d64 --out {out} --set model.d_model=64   "
        "# a new run with any config field changed"
    )
    print(
        f"  python -c \"from mechmem import load_run; model, config = load_run('{run.path}')\"   "
        "# the trained model, in Python"
    )
    print("  mechmem list                     # the other tasks and the paper reproductions")
    print("  mechmem reproduce lca --quick    # a paper's claims, measured")


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB"):
        if n < 1000 or unit == "MB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def cmd_inspect(args: argparse.Namespace) -> int:
    from mechmem.pages.figures import use_file_backend
    from mechmem.pages.inspect_page import inspect_run
    from mechmem.pages.inspection import InspectOptions, parse_heads

    options = InspectOptions(
        out=args.out,
        bridge=args.bridge,
        device=args.device,
        n_examples=args.examples,
        batch_size=args.batch_size,
        heads=parse_heads(args.heads) if args.heads is not None else None,
        max_vocab=args.max_vocab,
        max_positions=args.max_positions,
        patching=args.patching,
        seed=args.seed,
        progress=not args.quiet,
        overwrite=args.overwrite,
        allow_no_manifest=args.allow_no_manifest,
    )
    use_file_backend()
    page = inspect_run(args.run_dir, options, command=shlex.join(["mechmem", *sys.argv[1:]]))
    print(f"inspect page: {page}  (open it in a browser; figures and numbers are next to it)")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    import shlex

    from mechmem.pages.figures import use_file_backend
    from mechmem.pages.report import ReportOptions, make_report

    papers = [p.strip() for p in args.papers.split(",") if p.strip()] if args.papers is not None else None
    options = ReportOptions(
        preset=args.preset,
        seeds=parse_seeds(args) if args.seeds is not None else None,
        papers=papers,
        collect=args.collect,
        runs=args.runs,
        out=args.out,
        rerun=args.rerun,
        jobs=args.jobs,
        examples=args.examples,
        progress=not args.quiet,
        overwrite=args.overwrite,
        allow_no_manifest=args.allow_no_manifest,
    )
    use_file_backend()
    page = make_report(options, command=shlex.join(["mechmem", *args.argv]))
    print(f"report: {page}  (open it in a browser; it works offline. summary.md next to it lists the claims)")
    return 0


def add_reproduce_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``mechmem reproduce`` (also used by paper commands that run a reproduction)."""
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--preset",
        default=None,
        metavar="NAME",
        help="sizes: smoke (seconds, for tests), quick (minutes on a CPU, the default), full (the paper's sizes) "
        "or a preset of the paper's own (e.g. full-cpu: the full experiments at sizes one CPU core finishes)",
    )
    which.add_argument("--quick", action="store_true", help="same as --preset quick")
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", default=None, metavar="S,S,...", help="comma-separated seeds (default 0)")
    seeds.add_argument("--seed", type=int, default=None, help="one seed (same as --seeds S)")
    p.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="seeds run in parallel processes (default: one per seed, at most one per CPU; smoke: 1)",
    )
    p.add_argument("--out", type=Path, default=None, help="output folder (default: runs/<paper>-<preset>)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="empty the output folder first (only a folder mechmem made; by default a folder of the "
        "same paper is reused, so its sweeps resume)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads of each seed (default 1)")
    p.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="change a field of the preset (repeatable): --set m=6, --set simplified_train.steps=100, "
        "--set mixes=[[2,0.25]]; recorded in results.json; the default folder is named after the variant",
    )
    p.add_argument(
        "--only",
        default=None,
        metavar="EXP,EXP,...",
        help="run only these experiments (and those they need); claims that read others are left unmeasured",
    )
    p.add_argument(
        "--from",
        dest="from_results",
        type=Path,
        default=None,
        metavar="RESULTS_JSON",
        help="run again exactly what a results.json ran (its paper, preset sizes, variant and seeds)",
    )
    add_sweep_arguments(p)


def add_sweep_arguments(p: argparse.ArgumentParser) -> None:
    """``--backend / --workers / --address``: where the experiments that sweep a grid run it (scaling, factual)."""
    p.add_argument(
        "--backend",
        choices=("local", "ray"),
        default=None,
        help="where the grids of the experiments that sweep run: local processes (the default) or a Ray cluster "
        "(the ray extra; the results are written here, by this process)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="local worker processes of each grid (--backend local; default: the experiment's, e.g. 1 at quick)",
    )
    p.add_argument(
        "--address",
        default=None,
        metavar="HOST:PORT",
        help="the Ray cluster's head, as `ray start --head` prints it (--backend ray; default: start a local Ray)",
    )


def sweep_options(args: argparse.Namespace) -> dict:
    """``--backend / --workers / --address``, checked (a ValueError names the option; torch is not imported):
    the keyword arguments of ``mechmem.contract.experiments.SweepOptions``."""
    import importlib.util

    from mechmem.storage.sweep import check_ray_address

    backend = args.backend or "local"
    if args.workers is not None and (args.workers < 1 or backend != "local"):
        raise ValueError(
            f"--workers {args.workers}: "
            + ("must be >= 1" if args.workers < 1 else "only with --backend local (Ray uses the cluster's CPUs)")
        )
    if args.address is not None:
        if backend != "ray":
            raise ValueError(f"--address {args.address}: only with --backend ray")
        try:
            check_ray_address(args.address)
        except ValueError as err:
            raise ValueError(f"--address: {err}") from None
    if backend == "ray" and importlib.util.find_spec("ray") is None:
        raise ValueError("--backend ray needs Ray, an optional extra: pip install 'mechmem[ray]' (or make install-ray)")
    return {"backend": backend, "workers": args.workers, "address": args.address}


def parse_seeds(args: argparse.Namespace) -> list[int]:
    if args.seed is not None:
        return [args.seed]
    if args.seeds is None:
        return [0]
    try:
        return [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--seeds expects comma-separated integers, e.g. 0,1,2; got {args.seeds!r}") from None


def cmd_reproduce(args: argparse.Namespace) -> int:
    from mechmem.contract.registry import paper_module
    from mechmem.core.threads import check_threads

    sweep = sweep_options(args)
    check_threads(args.threads, "--threads")
    args.threads = _capped_threads(args.threads, "reproduce") if args.threads is not None else None
    if args.from_results is not None:
        return _rerun(args, sweep)
    if args.paper is None:
        raise ValueError("reproduce: name a paper (e.g. `mechmem reproduce lca`) or give --from RESULTS_JSON")
    paper_module(args.paper)  # an unknown paper or a bad --threads fails before torch is imported
    from mechmem.contract.experiments import SweepOptions
    from mechmem.contract.runner import default_out, run

    preset, only = args.preset or "quick", _parse_only(args.only)
    out = args.out or default_out(args.paper, preset, args.settings, only)
    command = "mechmem " + " ".join(args.argv) if getattr(args, "argv", None) else None
    results = run(
        args.paper,
        preset,
        parse_seeds(args),
        out,
        jobs=args.jobs,
        progress=not args.quiet,
        sweep=SweepOptions(**sweep),
        command=command,
        overwrite=args.overwrite,
        threads=args.threads,
        settings=args.settings,
        only=only,
    )
    return _report_results(results, out)


def _rerun(args: argparse.Namespace, sweep: dict) -> int:
    """``--from RESULTS_JSON``: the same paper, preset sizes, variant and seeds (other options keep their meaning)."""
    clashing = [
        flag
        for flag, value in (
            ("PAPER", args.paper),
            ("--preset", args.preset),
            ("--quick", args.quick),
            ("--seeds", args.seeds),
            ("--seed", args.seed),
            ("--set", args.settings),
            ("--only", args.only),
        )
        if value
    ]
    if clashing:
        raise ValueError(f"--from reruns what the file says; it cannot be combined with {', '.join(clashing)}")
    from mechmem.contract.experiments import SweepOptions
    from mechmem.contract.runner import default_out, rerun_request, run

    request = rerun_request(args.from_results)
    settings = [f"{k}={v}" for k, v in ((request["variant"] or {}).get("set") or {}).items()]
    default = default_out(request["paper"], request["preset"].name, settings, request["only"])
    out = args.out or default.with_name(default.name + "-rerun")
    results = run(
        request["paper"],
        request["preset"],
        request["seeds"],
        out,
        jobs=args.jobs,
        progress=not args.quiet,
        sweep=SweepOptions(**sweep),
        command="mechmem " + " ".join(args.argv) if getattr(args, "argv", None) else None,
        overwrite=args.overwrite,
        threads=args.threads if args.threads is not None else request["threads"],
        only=request["only"],
    )
    return _report_results(results, out)


def _report_results(results: dict, out: Path) -> int:
    print(format_claims(results))
    if results["preset"] == "smoke":
        print(
            "note: smoke sizes test the code, not the claims (a model trained for seconds); "
            "the verdicts above are not evidence: run --preset quick or full for that"
        )
    print(f"results saved to {Path(out) / 'results.json'}")
    return 0


def _parse_only(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ValueError("--only expects comma-separated experiment names, e.g. --only wv_grid,hijack")
    return names


def format_claims(results: dict) -> str:
    """Each claim: holds (at how many seeds), measured (mean over seeds and range) against expected, and each of
    its negative controls (which must fail it); then the checks, apart."""
    seeds, claims, summary = results["seeds"], results["claims"], results["summary"]
    at = " at every seed" if len(seeds) > 1 else ""
    head = f"{results['paper']} ({results['preset']}, seed{'s' * (len(seeds) > 1)} {','.join(map(str, seeds))}): "
    head += f"{summary['hold_at_every_seed']}/{len(claims)} claims hold{at}"
    if summary.get("controls"):
        head += f"; {summary['controls_failing_at_every_seed']}/{summary['controls']} controls fail them{at}"
    lines = [head]
    width = max((len(k) for k in [*claims, *results.get("checks", {})]), default=0)
    for key, c in claims.items():
        lines.append(_claim_line(key, c, len(seeds), width))
        for name, control in c.get("controls", {}).items():
            verdict = "fails, as it must" if control["fails"] else "DOES NOT FAIL the claim"
            lines.append(f"        control {name}: {_measured(control)}, {verdict}")
    checks = results.get("checks", {})
    if checks:
        lines.append(f"checks (the data and set-up, not claims): {summary['checks_hold_at_every_seed']}/{len(checks)}")
        lines += [_claim_line(key, c, len(seeds), width) for key, c in checks.items()]
    for key, why in results.get("unmeasured", {}).items():
        lines.append(f"  [-] {key}: not measured ({why})")
    return "\n".join(lines)


def _claim_line(key: str, c: dict, n_seeds: int, width: int) -> str:
    held = sum(e["holds"] for e in c["per_seed"].values())
    mark = ("x" if c["holds"] else " ") if n_seeds == 1 else f"{held}/{n_seeds}"
    what = "reported" if c.get("reported") else "measured"
    return f"  [{mark}] {key:<{width}}  {what} {_measured(c)}  expected {c['expected']}"


def _measured(c: dict) -> str:
    if "per_seed" in c:
        values = [e["measured"] for e in c["per_seed"].values()]
        if len(values) == 1 or c["mean"] is None:
            return ", ".join(_short(v) for v in values)
    elif c["mean"] is None or c["min"] == c["max"]:
        return _short(c["mean"])
    return f"{_short(c['mean'])} (range {_short(c['min'])} to {_short(c['max'])})"


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "not measured" if value is None else str(value)


def _command_of(argv: list[str]) -> str | None:
    """The sub-command named in ``argv`` (its first word that is not an option)."""
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _parser(_command_of(argv))
    args = parser.parse_args(argv)
    args.argv = argv  # recorded in results.json by `reproduce`
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return args.func(args) or 0
    except (ValueError, TypeError, FileExistsError, FileNotFoundError) as err:
        return _error(args, err, _os_error(err, None) if isinstance(err, OSError) and err.errno else str(err), 2)
    except OSError as err:  # disk full, read-only file system, name too long, permission denied, ...
        if args.command == "reproduce" and not getattr(err, "__notes__", None):  # its folder is reused: it goes on
            err.add_note(f"once that is fixed, run the same command again: `{shlex.join(['mechmem', *argv])}`")
        return _error(args, err, _os_error(err, getattr(args, "out", None)), 1)
    except MemoryError:
        return _error(args, None, "out of memory: choose smaller sizes (or fewer --jobs)", 1)
    except KeyboardInterrupt:
        print(f"\nmechmem {args.command}: interrupted", file=sys.stderr)
        return 130


def _error(args: argparse.Namespace, err: BaseException | None, message: str, code: int) -> int:
    """One line on stderr (the traceback before it with ``--debug``); returns the exit code."""
    if args.debug:
        import traceback

        traceback.print_exc()
    notes = "".join(f"; {note}" for note in getattr(err, "__notes__", None) or [])
    print(f"mechmem {args.command}: error: {message}{notes}", file=sys.stderr)
    return code


def _os_error(err: OSError, out: Path | None) -> str:
    """What the operating system refused and where: ``<path>: <reason>`` (the output folder when the error
    does not name its file, e.g. a full disk seen by ``write``)."""
    reason = err.strerror or str(err)
    paths = [str(p) for p in (err.filename, err.filename2) if p is not None]
    where = " -> ".join(paths) if paths else (f"while writing under {out}" if out is not None else "")
    return f"{where}: {reason}" if where else reason


if __name__ == "__main__":
    sys.exit(main())
