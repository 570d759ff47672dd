"""One training loop for every task: masked cross-entropy, SGD/Adam/AdamW, evaluation, probes.

A task yields ``Batch(tokens, targets, mask)``; the loss is the cross-entropy of the logits at
the positions where ``mask`` is True. Every ``eval_every`` steps the loop evaluates on a fixed
held-out batch, runs the user's probes (callables ``model -> float | dict``, e.g. memory-recall
probes), logs one metrics record, and, when a ``Run`` is given, appends it to
``metrics.jsonl`` and checkpoints everything needed to resume bit-exactly.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn
from tqdm.auto import tqdm

from hooks.weights import weight_names, weight_parameters
from mechmem.models import trainable_parameters
from mechmem.tasks.base import Batch, Task

OPTIMIZERS = ("sgd", "adam", "adamw")
Probe = Callable[[nn.Module], "float | dict[str, float]"]


@dataclass
class TrainConfig:
    """How to train. ``freeze_until`` maps weight names to the step at which they start training
    (before it they are left out of the optimiser, so they stay exactly at their init)."""

    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    eval_every: int = 100
    eval_batch_size: int = 512
    seed: int = 0
    progress: bool = True
    freeze_until: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_every", "eval_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer={self.optimizer!r} is not supported; allowed values: {list(OPTIMIZERS)}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        for name in ("momentum", "weight_decay", "eps"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        self.betas = tuple(float(b) for b in self.betas)
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas}")
        self.freeze_until = dict(self.freeze_until)
        for name, step in self.freeze_until.items():
            if not isinstance(step, int) or isinstance(step, bool) or step < 0:
                raise ValueError(f"freeze_until[{name!r}] must be a step >= 0, got {step!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TrainResult:
    history: list[dict[str, float]]
    final: dict[str, float]


def masked_loss(logits: Float[Tensor, "batch pos d_vocab_out"], batch: Batch) -> Tensor:
    """Mean cross-entropy over the scored positions."""
    return F.cross_entropy(logits[batch.mask], batch.targets[batch.mask])


def masked_accuracy(logits: Float[Tensor, "batch pos d_vocab_out"], batch: Batch) -> float:
    """Fraction of scored positions where the argmax is the target."""
    hits = logits[batch.mask].argmax(-1) == batch.targets[batch.mask]
    return hits.float().mean().item()


@torch.no_grad()
def evaluate(model: nn.Module, task: Task, batch: Batch, probes: dict[str, Probe] | None = None) -> dict:
    """Loss, accuracy, the task's extra metrics and the probes, in eval mode (mode restored)."""
    was_training = model.training
    model.eval()
    try:
        logits = model(batch.tokens)
        metrics = {"loss": masked_loss(logits, batch).item(), "accuracy": masked_accuracy(logits, batch)}
        metrics.update(task.extra_metrics(logits, batch))
        for name, probe in (probes or {}).items():
            value = probe(model)
            metrics.update(value if isinstance(value, dict) else {name: float(value)})
    finally:
        model.train(was_training)
    return metrics


def validate_training(model: nn.Module, task: Task, cfg: TrainConfig) -> None:
    """Check that ``task`` fits ``model`` and ``cfg`` names real weights (``ValueError`` if not)."""
    if not isinstance(task, Task):
        raise TypeError(f"task must be a mechmem Task, got {type(task).__name__}")
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    mcfg = model.cfg
    task.check_fits(mcfg.n_ctx, mcfg.d_vocab, mcfg.d_vocab_out)
    names = weight_names(model)
    for name in cfg.freeze_until:
        if name not in names:
            raise ValueError(f"freeze_until: {name!r} is not a weight of this model; valid names: {names}")


def param_groups(model: nn.Module, cfg: TrainConfig, step: int) -> list[list[nn.Parameter]]:
    """The optimiser's parameter groups just before optimiser step ``step`` runs (i.e. after
    ``step`` steps are done): the always-trained parameters first, then one group per delayed
    weight whose start step is earlier than ``step`` (in start order). A weight whose start is
    exactly ``step`` is added by ``_unfreeze_due`` inside the loop, so it is not listed here."""
    delayed = sorted(cfg.freeze_until.items(), key=lambda kv: (kv[1], kv[0]))
    delayed_ids = {id(weight_parameters(model, name)) for name, _ in delayed}
    groups = [[p for p in trainable_parameters(model) if id(p) not in delayed_ids]]
    for name, start in delayed:
        param = weight_parameters(model, name)
        if start < step and param.requires_grad:
            groups.append([param])
    return groups


def make_optimizer(groups: list[list[nn.Parameter]], cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD (with momentum), Adam or AdamW over ``groups``."""
    groups = [{"params": g} for g in groups]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    opt_cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return opt_cls(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)


def _unfreeze_due(optimizer, model: nn.Module, cfg: TrainConfig, step: int) -> None:
    for name, start in sorted(cfg.freeze_until.items(), key=lambda kv: (kv[1], kv[0])):
        param = weight_parameters(model, name)
        if start == step and param.requires_grad:
            optimizer.add_param_group({"params": [param]})


def train(
    model: nn.Module,
    task: Task,
    cfg: TrainConfig,
    probes: dict[str, Probe] | None = None,
    run=None,
    resume: bool = False,
) -> TrainResult:
    """Train ``model`` on ``task``; see the module docstring.

    With ``run`` (a ``mechmem.runs.Run``), metrics go to ``metrics.jsonl``, a resumable
    checkpoint is written atomically at every evaluation, and the final weights to
    ``model.safetensors``. With ``resume=True`` training continues from the run's checkpoint and
    ends with the same weights as an uninterrupted run with the same seed.
    """
    validate_training(model, task, cfg)
    data_gen = torch.Generator().manual_seed(cfg.seed)
    eval_batch = task.sample(cfg.eval_batch_size, torch.Generator().manual_seed(cfg.seed + 1))
    device = next(model.parameters()).device
    eval_batch = eval_batch.to(device)
    start, history = 0, []
    optimizer = make_optimizer(param_groups(model, cfg, 0), cfg)
    if resume and run is not None and run.has_train_state():
        start, optimizer, history = run.load_train_state(
            model, data_gen, lambda step: make_optimizer(param_groups(model, cfg, step), cfg)
        )
    if start == 0:
        if resume and run is not None and (run.path / "metrics.jsonl").exists():
            # killed before the first checkpoint: start the log afresh instead of appending to it
            (run.path / "metrics.jsonl").unlink()
        history = [_log(run, {"step": 0, **evaluate(model, task, eval_batch, probes)})]

    model.train()
    bar = tqdm(
        range(start, cfg.steps), desc=f"train {task.name}", disable=not cfg.progress, initial=start, total=cfg.steps
    )
    running, t0 = [], time.perf_counter()
    for step in bar:
        _unfreeze_due(optimizer, model, cfg, step)
        batch = task.sample(cfg.batch_size, data_gen).to(device)
        loss = masked_loss(model(batch.tokens), batch)
        model.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        running.append(loss.item())
        done = step + 1
        if done % cfg.eval_every == 0 or done == cfg.steps:
            record = {
                "step": done,
                "train_loss": sum(running) / len(running),
                **evaluate(model, task, eval_batch, probes),
                "seconds": time.perf_counter() - t0,
            }
            history.append(_log(run, record))
            running = []
            bar.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{record['accuracy']:.3f}")
            if run is not None:
                run.save_train_state(model, optimizer, data_gen, done, history)
    bar.close()
    if run is not None:
        run.save_model(model)
    return TrainResult(history=history, final=history[-1])


def _log(run, record: dict) -> dict:
    if run is not None:
        run.log(record)
    return record
