"""Sweep throughput on a two-node local Ray cluster vs one local worker, on the scaling reproduction's optimiser
grid (``mechmem.papers.scaling.experiments.optimiser_grid``: 31 configurations at the quick preset, here with
``--trials`` trials each, default 40 (the preset's 10 make ~0.1 s tasks, where Ray's per-task cost shows).

Usage: ``python benchmarks/ray_sweep.py [--preset quick] [--trials 40] [--reps 3] [--nodes 2]`` (needs the ``ray``
extra: ``make bench-ray`` runs it in ``.venv-ray``). Starts a Ray cluster of ``--nodes`` nodes of one CPU each on this
machine (``tests/ray_cluster.py``) and times the whole grid, each time into a fresh results file, ``--reps`` times
alternately: ``run_sweep(..., workers=1)`` (one local worker, in this process) and ``run_sweep(..., backend="ray",
address=...)``. The first Ray sweep is "cold" (it connects and starts the nodes' worker processes, which import
torch and mechmem); the later ones reuse them. Checks that every sweep gives the same rows and prints the cluster's
start-up time, configurations per second of each, and ``ratio=<local time / Ray time>`` (medians of the warm
repetitions; ``ratio_cold`` for the first).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the cluster helper of the Ray tests

from ray_cluster import LocalCluster  # noqa: E402

from mechmem.contract.reproducing import get_reproduction  # noqa: E402
from mechmem.papers.scaling.experiments import _run_point, optimiser_grid  # noqa: E402
from mechmem.storage.sweep import run_sweep  # noqa: E402


def timed_sweep(configs: list[dict], path: Path, **backend) -> tuple[float, list]:
    t0 = time.perf_counter()
    rows = run_sweep(_run_point, configs, path, progress=False, **backend)
    return time.perf_counter() - t0, [row["result"] for row in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="quick", help="scaling preset whose optimiser grid is swept")
    parser.add_argument("--trials", type=int, default=40, help="trials of each configuration (the preset's: 0)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each backend, alternated (first Ray: cold)")
    parser.add_argument("--nodes", type=int, default=2, help="Ray nodes, one CPU each (default 2)")
    args = parser.parse_args()
    if args.reps < 2:
        parser.error("--reps must be >= 2 (the first Ray repetition is the cold one)")
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    preset = get_reproduction("scaling")().preset(args.preset)
    preset = preset.override(optim_trials=args.trials) if args.trials else preset
    configs = optimiser_grid(preset, args.seed)
    print(
        f"grid: {len(configs)} configurations of the scaling optimiser grid ({args.preset}, "
        f"{preset.optim_trials} trials, seed {args.seed})"
    )
    times: dict[str, list[float]] = {"local": [], "ray": []}
    with tempfile.TemporaryDirectory() as tmp, LocalCluster() as cluster:
        for _ in range(args.nodes - 1):
            cluster.add_node()
        startup = sum(node.start_s for node in cluster.nodes)
        each = ", ".join(f"{node.name} {node.start_s:.1f} s" for node in cluster.nodes)
        print(f"cluster: {args.nodes} nodes up in {startup:.1f} s ({each})")
        reference = None
        try:
            for rep in range(args.reps):
                for name, backend in (
                    ("local", {"workers": 1}),
                    ("ray", {"backend": "ray", "address": cluster.address}),
                ):
                    seconds, results = timed_sweep(configs, Path(tmp) / f"{name}-{rep}.jsonl", **backend)
                    reference = reference if reference is not None else results
                    if results != reference:
                        raise SystemExit(f"{name} repetition {rep} gave other results than the first sweep")
                    times[name].append(seconds)
                    print(f"  rep {rep} {name:<5} {seconds:6.1f} s  {len(configs) / seconds:5.2f} configs/s")
        finally:
            ray.shutdown()
    local, cold, warm = statistics.median(times["local"]), times["ray"][0], statistics.median(times["ray"][1:])
    print(
        f"startup_s={startup:.1f} local_configs_per_s={len(configs) / local:.2f} "
        f"ray_configs_per_s={len(configs) / warm:.2f} ratio={local / warm:.2f} ratio_cold={local / cold:.2f} "
        "(identical results)"
    )


if __name__ == "__main__":
    main()
