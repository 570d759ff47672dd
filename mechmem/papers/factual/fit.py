"""Fast training of the factual-recall transformer for the sweeps (Fig. 4), on token counts.

The model's EOS logits depend on a sequence only through its token counts (``model.eos_logits``), so the sweeps
train the ``HookedTransformer``'s own parameters on counts drawn by ``FactualRecallTask.sample_counts``: the same
data distribution, loss and optimiser as ``mechmem.train`` with batches of 1024, at a fraction of the cost. The
protocol is the authors': Adam (no weight decay) at a constant lr, evaluation every 128 steps on a fixed test set
of 1024 fresh samples, early stop once test accuracy exceeds ``stop_at``, reported accuracy = the max over
evaluations.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mechmem.core.models import trainable_parameters
from mechmem.core.threads import torch_threads
from mechmem.papers.factual.model import build_factual_model, eos_logits, parameter_count
from mechmem.papers.factual.task import FactualRecallTask


@dataclass
class FitResult:
    accuracy: float  # max test accuracy over evaluations
    loss: float  # test loss at the last evaluation
    steps: int  # steps run
    seconds: float


def fit_counts(
    model,
    task: FactualRecallTask,
    steps: int = 4096,
    batch_size: int = 1024,
    lr: float = 1e-2,
    eval_every: int = 128,
    test_size: int = 1024,
    stop_at: float | None = 0.99,
    seed: int = 0,
) -> FitResult:
    """Adam on the trainable parameters; see the module docstring."""
    if steps < 1 or batch_size < 1 or eval_every < 1:
        raise ValueError(f"steps, batch_size and eval_every must be >= 1, got {steps}, {batch_size}, {eval_every}")
    t0 = time.perf_counter()
    opt = torch.optim.Adam(trainable_parameters(model), lr=lr)
    data = torch.Generator().manual_seed(seed)
    test_counts, test_answers, _ = task.sample_counts(test_size, torch.Generator().manual_seed(seed + 1))
    best, loss, step = 0.0, float("nan"), 0
    for step in range(steps + 1):
        if step % eval_every == 0 or step == steps:
            with torch.no_grad():
                logits = eos_logits(model, test_counts, task.eos)
            loss = F.cross_entropy(logits, test_answers).item()
            best = max(best, (logits.argmax(-1) == test_answers).float().mean().item())
            if step == steps or (stop_at is not None and best >= stop_at):
                break
        counts, answers, _ = task.sample_counts(batch_size, data)
        batch_loss = F.cross_entropy(eos_logits(model, counts, task.eos), answers)
        opt.zero_grad(set_to_none=True)
        batch_loss.backward()
        opt.step()
    return FitResult(accuracy=best, loss=loss, steps=step, seconds=time.perf_counter() - t0)


def train_config_point(config: dict) -> dict:
    """Sweep entry point: build and train one (task, model) configuration, return a JSON-able result.

    Keys: ``S, R, D, d, H, d_h, m`` (sizes), ``lr, steps, batch_size, stop_at, seed`` (training), optional
    ``table_seed``.
    """
    task = FactualRecallTask(S=config["S"], R=config["R"], D=config["D"], table_seed=config.get("table_seed", 64))
    model = build_factual_model(
        task, d=config["d"], H=config["H"], d_h=config["d_h"], m=config["m"], seed=config.get("seed", 0)
    )
    with torch_threads(1):
        res = fit_counts(
            model,
            task,
            steps=config.get("steps", 4096),
            batch_size=config.get("batch_size", 1024),
            lr=config.get("lr", 1e-2),
            stop_at=config.get("stop_at", 0.99),
            seed=config.get("seed", 0),
        )
    return {
        "accuracy": res.accuracy,
        "loss": res.loss,
        "steps": res.steps,
        "seconds": res.seconds,
        "params": parameter_count(config["d"], config["H"], config["d_h"], config["m"]),
        "facts": config["S"] * config["R"],
    }
