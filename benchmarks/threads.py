"""Training time at 1 thread against more threads, for mechmem's default (``TrainConfig.threads=1``).

Trains the built-in recall task (its default model: 1 layer, d_model 32, batch 128) and a larger
toy model (2 layers with MLPs, d_model 128, 4 heads, 32 positions, batch 64) for ``--steps`` steps with
``mechmem.train``, alternating thread counts in this process so machine load affects each alike.
Prints median seconds and the ratio ``<n> threads / 1 thread`` (above 1: more threads are slower).

    python benchmarks/threads.py [--steps 50] [--reps 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time

import torch

from mechmem import ModelConfig, RecallTask, build_model, train


def _setups(steps: int):
    recall = RecallTask()
    yield (
        "recall (d_model 32)",
        recall,
        recall.model_config(),
        dataclasses.replace(recall.train_config(), steps=steps, eval_every=steps, eval_batch_size=128, progress=False),
    )
    big = RecallTask(seq_len=32, n_keys=200, n_values=50, n_noise=200)
    cfg = ModelConfig(
        n_layers=2, n_heads=4, d_model=128, d_vocab=big.d_vocab, d_vocab_out=big.d_vocab_out, n_ctx=32, attn_only=False
    )
    yield (
        "2 layers, d_model 128",
        big,
        cfg,
        dataclasses.replace(
            big.train_config(), steps=steps, batch_size=64, eval_every=steps, eval_batch_size=64, progress=False
        ),
    )


def _seconds(task, model_cfg, train_cfg, threads: int) -> float:
    model = build_model(model_cfg)
    start = time.perf_counter()
    train(model, task, dataclasses.replace(train_cfg, threads=threads))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--threads",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="the thread count compared with 1 (default: the CPUs this process may use)",
    )
    args = parser.parse_args()
    print(
        f"{args.steps} training steps, median of {args.reps}; torch's own default here: "
        f"{torch.get_num_threads()} threads"
    )
    for name, task, model_cfg, train_cfg in _setups(args.steps):
        _seconds(task, model_cfg, dataclasses.replace(train_cfg, steps=2, eval_every=2), 1)  # warm-up
        times: dict[int, list[float]] = {1: [], args.threads: []}
        for _ in range(args.reps):
            for threads in times:
                times[threads].append(_seconds(task, model_cfg, train_cfg, threads))
        one, many = statistics.median(times[1]), statistics.median(times[args.threads])
        print(
            f"{name:<22} 1 thread: {one:6.2f} s   {args.threads} threads: {many:6.2f} s   ratio={many / one:.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
