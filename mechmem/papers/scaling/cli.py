"""``mechmem scaling-sweep``: the scaling reproduction with a choice of sweep backend.

``mechmem scaling-sweep [--quick] [--seed S] [--out DIR] [--backend local|ray] [--address ADDR] [--workers W]``
runs the same experiments and claims as ``mechmem reproduce scaling``; its optimiser grid goes through
:func:`mechmem.sweep.run_sweep` on local processes (default) or on a Ray cluster (``--backend ray``, optional extra
``mechmem[ray]``; ``--address`` joins an existing cluster, none starts a local instance). A killed run resumes from
its JSON-lines file when re-run with the same arguments.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mechmem.sweep import BACKENDS


def add_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "scaling-sweep",
        help="scaling-law reproduction with a sweep backend (local or ray)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="small settings that finish in minutes on a CPU",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of every random draw (default 0)"
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: runs/scaling[-quick])",
    )
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="local",
        help="sweep backend (default: local processes)",
    )
    p.add_argument(
        "--address", default=None, help="Ray cluster address (backend ray only)"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="local worker processes (default: 1 quick, all CPUs full)",
    )
    p.set_defaults(func=cmd_scaling_sweep)


def cmd_scaling_sweep(args: argparse.Namespace) -> int:
    from mechmem.papers.scaling.reproduction import reproduce

    if args.address is not None and args.backend != "ray":
        raise ValueError("--address is only used with --backend ray")
    out = args.out or Path("runs") / ("scaling-quick" if args.quick else "scaling")
    results = reproduce(
        out,
        quick=args.quick,
        seed=args.seed,
        workers=args.workers,
        backend=args.backend,
        address=args.address,
    )
    claims = results["claims"]
    print(
        f"scaling: {sum(c['holds'] for c in claims.values())}/{len(claims)} claims hold"
    )
    for name, c in claims.items():
        print(f"  [{'x' if c['holds'] else ' '}] {name}: measured {c['measured']}")
    print(f"results saved to {out / 'results.json'}")
    return 0
