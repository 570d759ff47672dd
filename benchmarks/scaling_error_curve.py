"""Speed of one error-vs-d curve (30 trials, d up to 1000, N = 1000, M = 5, alpha = 2, threshold P = d/8):
the batched computation of ``mechmem.papers.scaling.memories.scheme_error_curve`` vs a straightforward loop that
builds each d x d memory W for one trial and one d at a time (``loop_error_curve``).

Usage: ``python benchmarks/scaling_error_curve.py [--threads 1] [--scheme threshold]``; prints both timings,
checks that both give the same errors, and prints ``ratio=<loop time / batched time>``.
"""

import argparse
import time

import torch

from mechmem.papers.scaling.data import Embeddings, targets, zipf_probs
from mechmem.papers.scaling.memories import SCHEMES, loop_error_curve, scheme_error_curve

D_GRID = [10, 20, 54, 112, 233, 483, 1000]


def best_of(fn, repeats: int) -> tuple[float, torch.Tensor]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--scheme", choices=[s for s in SCHEMES if s not in ("seen", "top_seen")], default="threshold")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    N, M = 1000, 5
    p, f = zipf_probs(N, 2.0), targets(N, M)
    emb = Embeddings.draw(N, M, max(D_GRID), args.trials, torch.Generator().manual_seed(0))
    t_fast, fast = best_of(lambda: scheme_error_curve(args.scheme, emb, D_GRID, p, f), args.repeats)
    t_loop, slow = best_of(lambda: loop_error_curve(args.scheme, emb, D_GRID, p, f), max(1, args.repeats // 2))
    if not torch.allclose(fast, slow):
        raise SystemExit(f"batched and loop errors differ by {(fast - slow).abs().max():.3g}")
    print(f"scheme={args.scheme} trials={args.trials} ds={D_GRID} threads={args.threads}")
    print(f"batched: {t_fast * 1000:.0f} ms   per-trial loop: {t_loop * 1000:.0f} ms   (same errors)")
    print(f"ratio={t_loop / t_fast:.1f}")


if __name__ == "__main__":
    main()
