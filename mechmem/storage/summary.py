"""The files that sum a training run up once it has finished: ``figures/training.png`` (the eval loss and
accuracy curves) and ``results.json`` (final metrics, steps, threads, training time). ``mechmem train`` writes
them when training ends; ``mechmem train --repair`` rebuilds them from the metrics its checkpoint holds.
"""

from __future__ import annotations


def save_training_figure(run, history: list[dict]) -> None:
    """``figures/training.png``: eval loss (log scale) and accuracy against the training step."""
    from mechmem.pages.figures import style, subplots

    steps = [r["step"] for r in history]
    with style():
        fig, (ax_loss, ax_acc) = subplots(1, 2, figsize=(9, 3.2))
        ax_loss.plot(steps, [r["loss"] for r in history], marker=".")
        ax_loss.set(xlabel="training step", ylabel="eval loss (nats)", yscale="log", title="eval loss")
        ax_acc.plot(steps, [r["accuracy"] for r in history], marker=".")
        ax_acc.set(xlabel="training step", ylabel="eval accuracy", ylim=(0, 1.02), title="eval accuracy")
        fig.suptitle(f"run {run.path.name}: training curves")
        run.save_figure(fig, "training")


def save_training_results(run, history: list[dict], threads: int, seconds: float | None) -> None:
    """``results.json``: the last evaluation, the steps, the threads and the training time (``seconds``;
    ``None`` when it is not known, e.g. rebuilt by ``--repair``: then recorded as ``null`` and said so)."""
    results = {
        "final": history[-1],
        "steps": history[-1]["step"],
        "threads": threads,
        "train_seconds": None if seconds is None else round(seconds, 3),
        "figures": ["figures/training.png"],
    }
    if seconds is None:
        results["rebuilt"] = "by `mechmem train --repair` from the checkpoint; the training time is not known"
    run.save_results(results)
