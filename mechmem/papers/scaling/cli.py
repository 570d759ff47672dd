"""``mechmem scaling-sweep``: the scaling reproduction with a choice of sweep backend.

``mechmem scaling-sweep [--preset P | --quick] [--seeds S] [--out DIR] [--backend local|ray] [--address ADDR]
[--workers W]`` runs the same experiments and claims as ``mechmem reproduce scaling``; its optimiser grid goes
through :func:`mechmem.storage.sweep.run_sweep` on local processes (default) or on a Ray cluster (``--backend ray``,
optional extra ``mechmem[ray]``; ``--address`` joins an existing cluster, none starts a local instance). A killed
run resumes from its JSON-lines file when re-run with the same arguments.
"""

from __future__ import annotations

import argparse

from mechmem.storage.sweep import BACKENDS


def add_cli(subparsers) -> None:
    from mechmem.cli import add_reproduce_arguments

    p = subparsers.add_parser("scaling-sweep", help="scaling-law reproduction with a sweep backend (local or ray)")
    add_reproduce_arguments(p)
    p.add_argument("--backend", choices=BACKENDS, default="local", help="sweep backend (default: local processes)")
    p.add_argument("--address", default=None, help="Ray cluster address (backend ray only)")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="local worker processes of the optimiser grid (default: the preset's: 1 quick, all CPUs full)",
    )
    p.set_defaults(func=cmd_scaling_sweep, paper="scaling")


def cmd_scaling_sweep(args: argparse.Namespace) -> int:
    from mechmem.cli import cmd_reproduce
    from mechmem.contract.experiments import SweepOptions

    if args.address is not None and args.backend != "ray":
        raise ValueError("--address is only used with --backend ray")
    return cmd_reproduce(args, SweepOptions(backend=args.backend, workers=args.workers, address=args.address))
