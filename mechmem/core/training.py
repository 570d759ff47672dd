"""One training loop for every task: masked cross-entropy, SGD/Adam/AdamW, evaluation, probes.

A task yields ``Batch(tokens, targets, mask)``; the loss is the cross-entropy of the logits at
the positions where ``mask`` is True. Every ``eval_every`` steps the loop evaluates on a fixed
held-out batch, runs the user's probes (callables ``model -> float | dict``, e.g. memory-recall
probes), logs one metrics record, and, when a ``Run`` is given, appends it to
``metrics.jsonl`` and checkpoints everything needed to resume bit-exactly.

The steps run with ``cfg.threads`` torch threads and deterministic kernels (``mechmem.core.threads``;
both settings are restored afterwards), so the same seeds give the same bits at any thread count.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn
from tqdm.auto import tqdm

from hooks.weights import weight_names, weight_parameters
from mechmem.core import checkpoint, fastpath
from mechmem.core.config import TrainConfig
from mechmem.core.fitting import make_optimizer
from mechmem.core.models import trainable_parameters
from mechmem.core.threads import deterministic, torch_threads
from mechmem.storage.runs import load_weights_into
from mechmem.tasks.base import Batch, Task

Probe = Callable[[nn.Module], "float | dict[str, float]"]


@dataclass
class TrainResult:
    """Every evaluation record, the last one, the step training started from (> 0 when resumed;
    ``cfg.steps`` when the run had already finished) and the torch threads it used."""

    history: list[dict[str, float]]
    final: dict[str, float]
    start: int = 0
    threads: int = 1


def masked_loss(logits: Float[Tensor, "batch pos d_vocab_out"], batch: Batch) -> Tensor:
    """Mean cross-entropy over the scored positions."""
    return F.cross_entropy(logits[batch.mask], batch.targets[batch.mask])


def scored_logits(model: nn.Module, task: Task, batch: Batch) -> tuple[Tensor, Tensor]:
    """The logits and targets at the scored positions (``[n, d_vocab_out]``, ``[n]``) through the fast path. For a
    task whose loss reads only the last position (``task.last_position_loss``) the logits are computed at that
    position alone (``fastpath.last_logits``: the same numbers, a fraction of the cost)."""
    if not task.last_position_loss:
        return fastpath.logits(model, batch.tokens)[batch.mask], batch.targets[batch.mask]
    if not (batch.mask[:, -1].all() and not batch.mask[:, :-1].any()):
        raise ValueError(f"task {task.name!r} declares last_position_loss, but its batch mask scores other positions")
    return fastpath.last_logits(model, batch.tokens), batch.targets[:, -1]


def batch_loss(model: nn.Module, task: Task, batch: Batch) -> Tensor:
    """The training loss of one batch: the mean cross-entropy at the scored positions (:func:`scored_logits`)."""
    return F.cross_entropy(*scored_logits(model, task, batch))


def masked_accuracy(logits: Float[Tensor, "batch pos d_vocab_out"], batch: Batch) -> float:
    """Fraction of scored positions where the argmax is the target."""
    hits = logits[batch.mask].argmax(-1) == batch.targets[batch.mask]
    return hits.float().mean().item()


@torch.inference_mode()
def evaluate(model: nn.Module, task: Task, batch: Batch, probes: dict[str, Probe] | None = None) -> dict:
    """Loss, accuracy, the task's extra metrics and the probes, in eval mode (mode restored), under
    ``torch.inference_mode`` and through the fast path (``mechmem.core.fastpath``) where it applies."""
    was_training = model.training
    model.eval()
    try:
        metrics = _scores(model, task, batch)
        for name, probe in (probes or {}).items():
            value = probe(model)
            metrics.update(value if isinstance(value, dict) else {name: float(value)})
    finally:
        model.train(was_training)
    return metrics


def _scores(model: nn.Module, task: Task, batch: Batch) -> dict[str, float]:
    """Loss, accuracy and the task's extra metrics; a task scored at the last position only is evaluated there alone
    unless it defines extra metrics (which read every position)."""
    if task.last_position_loss and type(task).extra_metrics is Task.extra_metrics:
        logits, targets = scored_logits(model, task, batch)
        hits = logits.argmax(-1) == targets
        return {"loss": F.cross_entropy(logits, targets).item(), "accuracy": hits.float().mean().item()}
    logits = fastpath.logits(model, batch.tokens)
    metrics = {"loss": masked_loss(logits, batch).item(), "accuracy": masked_accuracy(logits, batch)}
    metrics.update(task.extra_metrics(logits, batch))
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

    With ``run`` (a ``mechmem.storage.runs.Run``, locked for this process while it trains), the task, training
    and model configs are recorded in its ``config.json`` where missing (so ``mechmem inspect`` opens it like a run
    made by ``mechmem train``), metrics go to ``metrics.jsonl``, a resumable checkpoint is written atomically at
    every evaluation, and the final weights to ``model.safetensors``. With ``resume=True`` the whole run is verified
    against its manifest first (a damaged file is refused, never rewritten: see ``mechmem train --repair``), then
    training continues from the checkpoint and ends with the same weights as an uninterrupted run with the same
    seed; a run that had finished is left as it is.
    """
    validate_training(model, task, cfg)
    if run is not None:
        run.lock()
    with torch_threads(cfg.threads), deterministic():
        return _train(model, task, cfg, probes, run, resume)


def _train(model: nn.Module, task: Task, cfg: TrainConfig, probes, run, resume: bool) -> TrainResult:
    data_gen = torch.Generator().manual_seed(cfg.seed)
    device = next(model.parameters()).device
    eval_batch = task.sample(cfg.eval_batch_size, torch.Generator().manual_seed(cfg.seed + 1)).to(device)
    if resume and run is not None:
        run.verify()
    if run is not None:  # after verifying: a damaged config.json is refused, never rewritten
        run.record_training(task, cfg, getattr(model, "mechmem_config", None))  # what `mechmem inspect` rebuilds
    state = run.load_train_state() if resume and run is not None else None
    start, optimizer, history = _start(model, cfg, state, run, data_gen)
    if state is None:
        history = [_log(run, {"step": 0, **evaluate(model, task, eval_batch, probes)}, fresh=True)]

    model.train()
    bar = tqdm(
        range(start, cfg.steps), desc=f"train {task.name}", disable=not cfg.progress, initial=start, total=cfg.steps
    )
    running, t0 = [], time.perf_counter()
    for step in bar:
        _unfreeze_due(optimizer, model, cfg, step)
        batch = task.sample(cfg.batch_size, data_gen).to(device)
        loss = batch_loss(model, task, batch)  # through model(tokens), fused when unhooked
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
    if run is not None and not (start == cfg.steps and _has_verified_model(run)):
        run.save_model(model)
    return TrainResult(history=history, final=history[-1], start=start, threads=torch.get_num_threads())


def _start(model: nn.Module, cfg: TrainConfig, state, run, data_gen: torch.Generator):
    """(start step, optimiser, history so far) for a fresh run (``state`` None) or a resumed one:
    the checkpoint is checked against the model and config before anything is restored."""
    if state is None:
        return 0, make_optimizer(param_groups(model, cfg, 0), cfg), []
    file = run.path / "train_state.safetensors"
    optimizer = make_optimizer(param_groups(model, cfg, state.step), cfg)
    checkpoint.check_fits(state, optimizer, cfg.optimizer, cfg.steps, cfg.eval_every, file)
    try:
        load_weights_into(model, state.weights)
    except ValueError as err:
        raise ValueError(f"checkpoint {file}: {err}") from None
    optimizer.load_state_dict(state.optimizer)
    data_gen.set_state(state.rng_state)
    if run.metrics() != state.history:
        run.rewrite_metrics(state.history)  # drop the records logged after the checkpoint (verified: not damage)
    return state.step, optimizer, list(state.history)


def _has_verified_model(run) -> bool:
    try:
        run.verified_bytes("model.safetensors")
    except ValueError:
        return False
    return True


def _log(run, record: dict, fresh: bool = False) -> dict:
    if run is not None:
        if fresh:
            run.rewrite_metrics([record])
        else:
            run.log(record)
    return record
