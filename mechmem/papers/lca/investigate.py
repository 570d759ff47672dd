"""The investigations behind the README's explanations of the misses, as code with committed results.

    python -m mechmem.papers.lca.investigate --sizes full --seeds 0,1,2 \
        --out mechmem/papers/lca/results/investigate.json

Each study is a function of the sizes and one seed (``smoke`` sizes run in the tests):

- ``decoder_gaps``: no training. On test sequences of the generator, the Bayes-optimal predictor against the per-bit
  Hamming majority vote (what ``W_V`` = identity computes on Hamming-structured embeddings), by m, L and noise rate
  ε: the largest gap the trained-vs-identity claim can show.
- ``n1_geometry``: trained-``W_V`` models of the N1 and the bitflip generator (and identity-``W_V`` models of N1) at
  every (m, d < V) of the grid: the affine fit of the mean inner product against D_H (R², Spearman) and the share
  of the Gram matrix's Walsh energy at degree 1 (1 under eq. (5.2)); ``kernel_walsh``: the same share for the
  generators' own kernels (no training).
- ``frozen_rows``: at d = 2V and 4V, trained embeddings vs frozen Gaussian rows vs frozen orthonormal rows, and the
  singular values of the Gaussian rows against the Marchenko-Pastur edges 1 ± sqrt(V / d).
- ``cluster_attention``: the cluster variant's attention ratio overall and when the read-out token is itself in the
  target's cluster.
- ``dim_schedule``: the trained model's accuracy at the largest two d of the grid under the preset's schedule and a
  longer one (the quick and the full preset's).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from hooks.weights import get_weight
from mechmem.core.config import TrainConfig
from mechmem.core.threads import torch_threads
from mechmem.storage.files import atomic_write_json

from .constructions import bayes_accuracy, degree_one_share, hamming_vote_accuracy, walsh_degree_energy
from .experiments import geometry
from .generator import parse_neighbourhood, popcount
from .lab import Lab
from .presets import FULL, QUICK, SMOKE, LCAPreset
from .readout import readout_attention

SCHEMA = "mechmem.lca.investigate/1"


@dataclass(frozen=True)
class Sizes:
    """What the studies run: ``preset`` (the main task, eval sizes and schedule), ``long_train`` (the longer
    schedule of ``dim_schedule``), and the grids."""

    preset: LCAPreset
    long_train: TrainConfig
    decoder_m: tuple[int, ...]
    decoder_L: tuple[int, ...]
    decoder_epsilon: tuple[float, ...]
    geometry_m: tuple[int, ...]
    geometry_d: tuple[int, ...]


SIZES = {
    "full": Sizes(QUICK, FULL.train, (4, 5, 6, 7, 8), (16, 64, 128), (0.5, 0.75), (5, 6, 7, 8), (16, 32, 64)),
    "smoke": Sizes(SMOKE, dataclasses.replace(SMOKE.train, steps=90), (4, 5), (16,), (0.5, 0.75), (4, 5), (8,)),
}


def decoder_gaps(sizes: Sizes, seed: int) -> list[dict]:
    """Bayes-optimal vs per-bit Hamming vote accuracy on ``n_eval`` sequences of the N1 generator, by (m, L, ε)."""
    rows = []
    for epsilon in sizes.decoder_epsilon:
        for m in sizes.decoder_m:
            lab = Lab(sizes.preset, seed, progress=False)
            for L in sizes.decoder_L:
                task = lab.task(m=m, context_len=L, epsilon=epsilon)
                tokens, y, _ = lab.eval_set(task)
                gen = torch.Generator().manual_seed(seed + 31)
                bayes = bayes_accuracy(tokens, y, m, task.parsed, epsilon, gen)
                vote = hamming_vote_accuracy(tokens, y, m, gen)
                rows.append({"epsilon": epsilon, "m": m, "L": L, "bayes": bayes, "hamming_vote": vote})
    for row in rows:
        row["gap_points"] = 100 * (row["bayes"] - row["hamming_vote"])
    return rows


def kernel_walsh(sizes: Sizes, seed: int) -> list[dict]:
    """The share of Walsh energy at degree 1 of each generator's kernel as a function of the XOR mask: N1's support
    indicator 1{D_H = 1} (the Bayes kernel up to an affine map) and the bitflip log-likelihood (no training)."""
    rows = []
    generator = sizes.preset.hamming_generator
    for m in sizes.geometry_m:
        weight = popcount(torch.arange(2**m)).double()
        p = parse_neighbourhood(generator, m).p
        kernels = {
            "N1": (weight == 1).double(),
            generator: weight * torch.log(torch.tensor(p)) + (m - weight) * torch.log(torch.tensor(1 - p)),
        }
        for name, g in kernels.items():
            energy = walsh_degree_energy(g, m)
            rows.append({"neighbourhood": name, "m": m, "degree_one_share": degree_one_share(energy)})
    return rows


def n1_geometry(sizes: Sizes, seed: int) -> list[dict]:
    """Trained-W_V models of N1 and of the preset's bitflip generator, and identity-W_V models of N1, at every
    (m, d < V): R², Spearman, slope and the Walsh degree-1 share of the Gram matrix, with the model's accuracy."""
    lab = Lab(sizes.preset, seed, progress=False)
    rows = []
    for m in sizes.geometry_m:
        for d in (d for d in sizes.geometry_d if d < 2**m):
            for neighbourhood, train_W_V in (("N1", True), ("N1", False), (sizes.preset.hamming_generator, True)):
                task = lab.task(m=m, d_model=d, neighbourhood=neighbourhood)
                found = geometry(lab.trained(task, train_W_V=train_W_V), lab)
                keep = ("r2", "spearman", "slope", "walsh_degree_one_share", "accuracy", "mean_inner")
                row = {"neighbourhood": neighbourhood, "W_V": "trained" if train_W_V else "identity", "m": m, "d": d}
                rows.append({**row, **{k: found[k] for k in keep}})
    return rows


def frozen_rows(sizes: Sizes, seed: int) -> list[dict]:
    """At d = 2V and 4V (m of the preset): trained, frozen Gaussian and frozen orthonormal embeddings (W_V, W_Q, W_K
    trained), and the singular values of the Gaussian rows against the Marchenko-Pastur edges."""
    p = sizes.preset
    lab = Lab(p, seed, progress=False)
    V, rows = 2**p.m, []
    for d in (2 * V, 4 * V):
        task = lab.task(d_model=d)
        gaussian = lab.trained(task, train_embed=False)
        singular = torch.linalg.svdvals(get_weight(gaussian.model, "W_E")[:V].double())
        rows.append(
            {
                "m": p.m,
                "d": d,
                "acc_trained": lab.accuracy(lab.trained(task)),
                "acc_frozen_gaussian": lab.accuracy(gaussian),
                "acc_frozen_orthonormal": lab.accuracy(lab.trained(task, train_embed=False, orthonormal_embed=True)),
                "gaussian_singular_values": [singular.min().item(), singular.max().item()],
                "marchenko_pastur_edges": [1 - (V / d) ** 0.5, 1 + (V / d) ** 0.5],
            }
        )
    return rows


def cluster_attention(sizes: Sizes, seed: int) -> dict:
    """The cluster variant's same-cluster / other attention ratio, overall and when the read-out token is in the
    target's cluster (the model of the ``attention`` experiment at this seed)."""
    lab = Lab(sizes.preset, seed, progress=False)
    task = lab.task(neighbourhood="cluster2")
    tokens, y, _ = lab.eval_set(task)
    alpha = readout_attention(lab.trained(task).model, tokens)
    same = task.same_cluster(tokens, y)
    query_in = task.same_cluster(tokens[:, -1:], y)[:, 0][:, None]
    return {
        "cluster_ratio": (alpha[same].mean() / alpha[~same].mean()).item(),
        "cluster_ratio_query_in_target_cluster": (
            alpha[same & query_in].mean() / alpha[~same & query_in].mean()
        ).item(),
        "fraction_query_in_target_cluster": query_in.float().mean().item(),
    }


def dim_schedule(sizes: Sizes, seed: int) -> list[dict]:
    """The trained model's accuracy at the two largest d of the grid, with the preset's schedule and the longer one."""
    rows = []
    for name, train in (("preset", sizes.preset.train), ("long", sizes.long_train)):
        lab = Lab(sizes.preset.override(train=train), seed, progress=False)
        for d in sorted(sizes.preset.dims)[-2:]:
            acc = lab.accuracy(lab.trained(lab.task(d_model=d)))
            rows.append({"schedule": name, "steps": train.steps, "batch_size": train.batch_size, "d": d, "acc": acc})
    return rows


STUDIES = {
    "decoder_gaps": decoder_gaps,
    "kernel_walsh": kernel_walsh,
    "n1_geometry": n1_geometry,
    "frozen_rows": frozen_rows,
    "cluster_attention": cluster_attention,
    "dim_schedule": dim_schedule,
}


def investigate(sizes: str = "full", seeds: tuple[int, ...] = (0,), progress: bool = False) -> dict:
    """Every study at every seed: ``{"studies": {name: {seed: result}}, "seconds": {name: ...}}``."""
    if sizes not in SIZES:
        raise ValueError(f"sizes must be one of {sorted(SIZES)}, got {sizes!r}")
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise ValueError(f"seeds must be non-negative ints, got {seeds!r}")
    studies, seconds = {}, {}
    for name, study in STUDIES.items():
        t0 = time.process_time()
        studies[name] = {str(s): study(SIZES[sizes], s) for s in seeds}
        seconds[name] = round(time.process_time() - t0, 2)
        if progress:
            print(f"{name}: {seconds[name]} CPU seconds", file=sys.stderr)
    return {"schema": SCHEMA, "sizes": sizes, "seeds": list(seeds), "cpu_seconds": seconds, "studies": studies}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mechmem.papers.lca.investigate", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--sizes", choices=sorted(SIZES), default="full")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    parser.add_argument("--out", type=Path, required=True, help="the JSON file to write (its folder must exist)")
    args = parser.parse_args(argv)
    try:
        seeds = tuple(int(s) for s in args.seeds.split(","))
    except ValueError:
        parser.error(f"--seeds expects comma-separated integers, got {args.seeds!r}")
    if not args.out.parent.is_dir():
        parser.error(f"--out {args.out}: folder {args.out.parent} does not exist")
    from mechmem.contract.runner import versions

    with torch_threads(1):
        result = investigate(args.sizes, seeds, progress=True)
    command = "python -m mechmem.papers.lca.investigate " + " ".join(argv if argv is not None else sys.argv[1:])
    atomic_write_json(args.out, {**result, "command": command, "versions": versions()})
    print(f"saved {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
