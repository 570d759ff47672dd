"""The ``mechmem`` command: list, train, reproduce (and the commands paper packages add).

Heavy imports (torch, TransformerLens) happen inside the commands, so ``mechmem --help`` is fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_RUNS = Path("runs")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mechmem",
        description="Transformers as associative memories: toy models, training and hook experiments.",
    )
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
    p.add_argument("--name", help="run name (default: the task name)")
    p.add_argument("--out", type=Path, default=DEFAULT_RUNS, help="folder holding run directories (default: runs)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("reproduce", help="reproduce a paper's claims (writes results.json: claims, timings, versions)")
    p.add_argument("paper", help="paper name: lca, birth, scaling or factual")
    add_reproduce_arguments(p)
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("inspect", help="write an HTML page of a run's circuits: attention, OV/QK, ablations, patching")
    p.add_argument("run_dir", type=Path, help="a run directory (made by `mechmem train`)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: RUN_DIR/inspect)")
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
        "--rerun", action="store_true", help="run again into RUNS/<paper>-<preset> when its results cannot be reported"
    )
    p.add_argument("--jobs", type=int, default=None, help="processes per reproduction (its seeds in parallel)")
    p.add_argument("--examples", type=int, default=1, help="examples in each model's attention views (default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_report, seed=None)

    from mechmem.registry import available_papers

    for module in available_papers(warn=True).values():
        if hasattr(module, "add_cli"):
            module.add_cli(sub)
    return parser


def cmd_list(args: argparse.Namespace) -> int:
    from mechmem.registry import available_papers, experiments, tasks

    print("tasks:")
    for name, cls in sorted(tasks().items()):
        doc = (cls.__doc__ or "").strip().splitlines()
        print(f"  {name:<16} {doc[0] if doc else ''}")
    print("experiments:")
    for paper, exps in experiments().items():
        print(f"  {paper}: {', '.join(sorted(exps)) or '(none)'}")
    print("reproduce:", ", ".join(sorted(available_papers())) or "(no paper packages installed)")
    return 0


def build_configs(task_name: str, overrides: list[str]):
    """Task, model and training configs for ``task_name`` with ``--set`` overrides applied."""
    from mechmem.config import apply_overrides, split_overrides
    from mechmem.registry import tasks

    known = tasks()
    if task_name not in known:
        raise ValueError(f"unknown task {task_name!r}; available tasks: {sorted(known)}")
    task = known[task_name]()
    sections = split_overrides(overrides, {"task": task, "model": task.model_config(), "train": task.train_config()})
    task = apply_overrides(task, sections["task"], "task")
    model_cfg = apply_overrides(task.model_config(), sections["model"], "model")
    train_cfg = apply_overrides(task.train_config(), sections["train"], "train")
    return task, model_cfg, train_cfg


def cmd_train(args: argparse.Namespace) -> int:
    from mechmem.runs import Run
    from mechmem.training import train, validate_training

    path = args.out / (args.name or args.task)
    if args.resume and args.overrides:
        raise ValueError("--resume continues a run with its recorded config; --set cannot be combined with it")
    overrides = Run(path).config.get("overrides", []) if args.resume else args.overrides
    task, model_cfg, train_cfg = build_configs(args.task, overrides)
    train_cfg.progress = not args.quiet
    model = task.build_model(model_cfg)
    validate_training(model, task, train_cfg)  # every config error before a run directory exists
    if args.resume:
        run = Run(path)
    else:
        config = {
            "task": {"name": task.name, **task.to_dict()},
            "model": model_cfg.to_dict(),
            "train": train_cfg.to_dict(),
            "overrides": args.overrides,
        }
        run = Run.create(path, config, overwrite=args.overwrite)
    result = train(model, task, train_cfg, run=run, resume=args.resume)
    _save_training_summary(run, result)
    print(f"final: loss={result.final['loss']:.4f} accuracy={result.final['accuracy']:.4f}")
    print(f"run saved to {run.path}  (results.json, metrics.jsonl, model.safetensors, figures/training.png)")
    return 0


def _save_training_summary(run, result) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in result.history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.2))
    ax_loss.plot(steps, [r["loss"] for r in result.history], marker=".")
    ax_loss.set(xlabel="step", ylabel="eval loss", yscale="log", title="loss")
    ax_acc.plot(steps, [r["accuracy"] for r in result.history], marker=".")
    ax_acc.set(xlabel="step", ylabel="eval accuracy", ylim=(0, 1.02), title="accuracy")
    fig.suptitle(run.path.name)
    run.save_figure(fig, "training")
    run.save_results({"final": result.final, "steps": steps[-1], "figures": ["figures/training.png"]})


def cmd_inspect(args: argparse.Namespace) -> int:
    import shlex

    from mechmem.figures import use_file_backend
    from mechmem.inspect import InspectOptions, inspect_run, parse_heads

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
    )
    use_file_backend()
    page = inspect_run(args.run_dir, options, command=shlex.join(["mechmem", *sys.argv[1:]]))
    print(f"inspect page: {page}  (open it in a browser; figures and numbers are next to it)")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    import shlex

    from mechmem.figures import use_file_backend
    from mechmem.report import ReportOptions, make_report

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
        choices=("smoke", "quick", "full"),
        default=None,
        help="sizes: smoke (seconds, for tests), quick (minutes on a CPU, the default) or full (the paper's sizes)",
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


def parse_seeds(args: argparse.Namespace) -> list[int]:
    if args.seed is not None:
        return [args.seed]
    if args.seeds is None:
        return [0]
    try:
        return [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--seeds expects comma-separated integers, e.g. 0,1,2; got {args.seeds!r}") from None


def cmd_reproduce(args: argparse.Namespace, sweep=None) -> int:
    from mechmem.reproducing import SweepOptions, run

    preset = args.preset or "quick"
    seeds = parse_seeds(args)
    out = args.out or DEFAULT_RUNS / f"{args.paper}-{preset}"
    command = "mechmem " + " ".join(args.argv) if getattr(args, "argv", None) else None
    results = run(
        args.paper,
        preset,
        seeds,
        out,
        jobs=args.jobs,
        progress=not args.quiet,
        sweep=sweep or SweepOptions(),
        command=command,
    )
    print(format_claims(results))
    print(f"results saved to {Path(out) / 'results.json'}")
    return 0


def format_claims(results: dict) -> str:
    """Each claim: holds (at how many seeds), measured (mean over seeds and range) against expected."""
    seeds, claims = results["seeds"], results["claims"]
    lines = [
        f"{results['paper']} ({results['preset']}, seed{'s' * (len(seeds) > 1)} "
        f"{','.join(map(str, seeds))}): {results['summary']['hold_at_every_seed']}/{len(claims)} claims hold"
        + (" at every seed" if len(seeds) > 1 else "")
    ]
    width = max((len(k) for k in claims), default=0)
    for key, c in claims.items():
        held = sum(e["holds"] for e in c["per_seed"].values())
        mark = ("x" if c["holds"] else " ") if len(seeds) == 1 else f"{held}/{len(seeds)}"
        lines.append(f"  [{mark}] {key:<{width}}  measured {_measured(c)}  expected {c['expected']}")
    return "\n".join(lines)


def _measured(c: dict) -> str:
    values = [e["measured"] for e in c["per_seed"].values()]
    if len(values) == 1 or c["mean"] is None:
        return ", ".join(_short(v) for v in values)
    return f"{_short(c['mean'])} (range {_short(c['min'])} to {_short(c['max'])})"


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "not measured" if value is None else str(value)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]  # recorded in results.json by `reproduce`
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return args.func(args) or 0
    except (ValueError, TypeError, FileExistsError, FileNotFoundError) as err:
        print(f"mechmem {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
