"""Speed of the bigram-task generator: mechmem's vectorised generator vs a per-token Python loop.

The loop is a faithful re-implementation of the authors' approach (spec section 2.2, "Generation cost"): one
sequence at a time, one ``numpy`` draw per token (``rng.choice`` with the bigram row), triggers looked up per
token. The authors run 60 such worker processes; we report single-process throughput for both, on the same
machine, and their ratio.

Usage: ``python benchmarks/birth_datagen.py [--batch 512] [--seq-len 256] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from mechmem.papers.birth.generator import BigramOptions, fixed_triggers, generate
from mechmem.papers.birth.tables import shakespeare_tables


def python_loop_batch(batch_size: int, seq_len: int, n_triggers: int, rng: np.random.Generator):
    """One batch drawn token by token in Python (fixed triggers, uniform outputs), as the authors do."""
    tables = shakespeare_tables()
    pi_u, pi_b = tables.pi_u.numpy(), tables.pi_b.numpy()
    triggers = fixed_triggers(tables, n_triggers)
    seqs, labels = [], []
    for _ in range(batch_size):
        outs = rng.choice(tables.n, size=len(triggers), replace=True)
        out_of = dict(zip(triggers, outs))
        seen = dict.fromkeys(triggers, 0)
        x = [rng.choice(tables.n, p=pi_u)]
        c = []
        for _t in range(seq_len):
            cur = x[-1]
            if cur in out_of:
                seen[cur] += 1
                c.append(seen[cur])
                x.append(out_of[cur])
            else:
                c.append(0)
                x.append(rng.choice(tables.n, p=pi_b[cur]))
        seqs.append(x)
        labels.append(c)
    return np.array(seqs), np.array(labels)


def seqs_per_second(fn, batch_size: int, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return batch_size / best


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--loop-batch", type=int, default=64, help="sequences per timing of the slow loop")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    opts = BigramOptions(seq_len=args.seq_len, n_triggers=5)
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    fast = seqs_per_second(lambda: generate(opts, args.batch, gen), args.batch, args.repeats)
    slow = seqs_per_second(
        lambda: python_loop_batch(args.loop_batch, args.seq_len, 5, rng), args.loop_batch, args.repeats
    )
    result = {
        "vectorised_seqs_per_s": fast,
        "python_loop_seqs_per_s": slow,
        "ratio": fast / slow,
        "seq_len": args.seq_len,
        "batch": args.batch,
        "threads": 1,
    }
    print(f"vectorised generator: {fast:,.0f} sequences/s (batch {args.batch}, T={args.seq_len}, 1 thread)")
    print(f"per-token Python loop: {slow:,.0f} sequences/s")
    print(
        f"ratio: {fast / slow:.1f}x  (the authors use 60 loop workers; one vectorised process matches "
        f"{fast / slow / 60:.1f} x 60 workers)"
    )
    return result


if __name__ == "__main__":
    main()
