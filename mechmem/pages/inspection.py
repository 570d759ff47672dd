"""``mechmem inspect RUN_DIR``: one self-contained HTML page showing what a trained model does.

The page (``RUN_DIR/inspect/index.html``, PNG and JSON files next to it) holds, for the run's task:

- **attention**: every head's pattern on a few examples (CircuitsVis, offline), the read-out row
  (where the answer is read) first, as a coloured token strip and a heat map;
- **circuits**: every head's OV and QK circuit read through the embeddings (and the positions,
  when the model has positional embeddings), and the spectrum of each OV matrix (:mod:`hooks.circuits`);
- **ablations**: zero / mean / resample ablation of every head and layer output on the task's loss
  and accuracy (:func:`hooks.ablation.ablation_sweep`);
- **activation patching** between clean examples and the task's corrupted ones (:meth:`Task.corrupt`):
  ``resid_pre`` by layer and position, every head's output (:func:`hooks.patching.patch_sweep`);
- **provenance**: the run's config and seeds, the versions, the command.

Every check runs before any file is written; the page is built in a temporary folder that
replaces the output folder only when complete. :func:`mechmem.pages.inspect_page.inspect_run` is the Python
entry point; this module holds the options, checks, examples and metrics it uses.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from mechmem.tasks.base import Batch, Task

#: without ``max_vocab``, OV / QK maps are drawn for vocabularies up to this size
VOCAB_LIMIT = 128
#: without ``heads``, per-head views are drawn for models with up to this many heads
HEADS_LIMIT = 32
MARKER = "inspect.json"
#: the kind of output in mechmem's folder marker (``mechmem.storage.folders``)
KIND = "inspect"


@dataclass
class InspectOptions:
    """What ``mechmem inspect`` shows and where it writes (the CLI flags of the same names).

    ``heads``: ``(layer, head)`` pairs to show (default: every head); ``max_vocab``: show only the
    ``max_vocab`` tokens (and answers) most frequent in the examples; ``max_positions``: the
    longest example shown (longer sequences are cut to a prefix ending at a scored position);
    ``overwrite``: replace ``out`` even when it holds another kind of mechmem output (a folder mechmem
    did not make is never replaced); ``allow_no_manifest``: read a run without a verifiable ``manifest.json``
    (saved by an older mechmem) unchecked.
    """

    out: Path | None = None
    bridge: bool = False
    device: str = "cpu"
    n_examples: int = 3
    batch_size: int = 128
    heads: list[tuple[int, int]] | None = None
    max_vocab: int | None = None
    max_positions: int = 64
    patching: bool = True
    seed: int = 0
    progress: bool = True
    overwrite: bool = False
    allow_no_manifest: bool = False

    def __post_init__(self) -> None:
        for name, low in (("n_examples", 1), ("batch_size", 2), ("max_positions", 2), ("seed", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"inspect: {name} must be an int >= {low}, got {value!r}")
        if self.n_examples > self.batch_size:
            raise ValueError(f"inspect: n_examples ({self.n_examples}) cannot exceed batch_size ({self.batch_size})")
        if self.max_vocab is not None and (not isinstance(self.max_vocab, int) or self.max_vocab < 2):
            raise ValueError(f"inspect: max_vocab must be None or an int >= 2, got {self.max_vocab!r}")
        if self.out is not None:
            self.out = Path(self.out)


def parse_heads(spec: str) -> list[tuple[int, int]]:
    """``"0.1,2.*"`` -> ``[(0, 1), (2, -1)]`` (``-1``: every head of the layer, expanded later)."""
    heads = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        layer, dot, head = item.partition(".")
        if not dot or not layer.isdigit() or not (head.isdigit() or head == "*"):
            raise ValueError(f"--heads: {item!r} is not LAYER.HEAD or LAYER.* (e.g. --heads 0.1,1.*)")
        heads.append((int(layer), -1 if head == "*" else int(head)))
    if not heads:
        raise ValueError("--heads: give at least one LAYER.HEAD (e.g. --heads 0.1,1.*)")
    return heads


# ----------------------------------------------------------------------------- checks


def output_dir(run_dir: Path, out: Path | None) -> Path:
    """Where the page goes (default ``RUN_DIR/inspect``); it must not be the run folder itself."""
    from mechmem.storage.folders import check_name_lengths

    out = Path(out) if out is not None else run_dir / "inspect"
    check_name_lengths(out)
    if out.resolve() == run_dir.resolve() or out.resolve() in run_dir.resolve().parents:
        raise ValueError(f"--out {out} would replace the run {run_dir}; choose a folder inside it or elsewhere")
    return out


def check_run(run_dir: Path, options: InspectOptions | None = None):
    """The run at ``run_dir``, verified: not being written by another process, every file matching its
    manifest (``Run.verify``), a model file there (``FileNotFoundError`` / ``ValueError`` otherwise)."""
    from mechmem.storage.folders import LOCK_FILE
    from mechmem.storage.locking import acquire, release
    from mechmem.storage.runs import Run

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir} is not a folder (expected a run directory made by `mechmem train`)")
    run = Run(run_dir)  # no config.json -> "is not a run directory" (interrupted while being created, or damaged)
    key = acquire(run_dir / LOCK_FILE, f"run {run_dir}")  # a run still training is refused, naming its process
    try:
        run.verify(options.allow_no_manifest if options is not None else False)
        if not (run_dir / "model.safetensors").is_file():
            raise FileNotFoundError(
                f"run {run_dir} has no model file model.safetensors (training did not finish); "
                f"continue it with `{run.command('--resume')}`"
            )
    finally:
        release(key)
    return run


def run_task(config: dict) -> Task:
    """The task a run was trained on, with its recorded fields."""
    from mechmem.contract.registry import tasks

    fields = dict(config.get("task", {}))
    name = fields.pop("name", None)
    if name is None:
        raise ValueError(
            "the run records no task (its config.json has no 'task' section), so inspect cannot draw examples: "
            "mechmem.train(model, task, cfg, run=run) records it; for a run trained before that, add it with "
            "mechmem.Run(path).record_training(task, train_cfg); for a model without a run, use "
            "mechmem.inspect_model(model, examples, out=...)"
        )
    known = tasks()
    if name not in known:
        raise ValueError(
            f"the run's task {name!r} is not available here (known tasks: {sorted(known)}); "
            "inspect needs it to draw examples"
        )
    cls = known[name]
    init = {f.name for f in dataclasses.fields(cls) if f.init}
    return cls(**{k: v for k, v in fields.items() if k in init})


def check_device(device: str) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"--device {device!r} is not a torch device (e.g. cpu, cuda, cuda:1, mps)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {device}: MPS is not available on this machine; use --device cpu")
    return dev


def check_heads(model, heads: list[tuple[int, int]] | None) -> list[tuple[int, int]]:
    """The heads to show: every head, or the chosen ones (``-1`` = all heads of that layer)."""
    L, H = model.cfg.n_layers, model.cfg.n_heads
    if heads is None:
        if L * H > HEADS_LIMIT:
            raise ValueError(
                f"the model has {L * H} heads ({L} layers x {H}); the per-head views (attention, OV/QK maps, "
                f"ablations) show at most {HEADS_LIMIT}: choose heads with --heads, e.g. --heads 0.0,0.1 or "
                f"--heads {L - 1}.*"
            )
        return [(layer, head) for layer in range(L) for head in range(H)]
    out = []
    for layer, head in heads:
        if not 0 <= layer < L or not -1 <= head < H:
            raise ValueError(
                f"--heads: {layer}.{head if head >= 0 else '*'} does not exist (layers 0..{L - 1}, heads 0..{H - 1})"
            )
        out += [(layer, h) for h in range(H)] if head == -1 else [(layer, head)]
    return list(dict.fromkeys(out))


def check_vocab(model, max_vocab: int | None) -> None:
    """Refuse OV / QK maps too large to read unless ``max_vocab`` restricts them."""
    d_vocab, d_out = model.cfg.d_vocab, model.cfg.d_vocab_out
    if max_vocab is None and max(d_vocab, d_out) > VOCAB_LIMIT:
        raise ValueError(
            f"the OV / QK maps through the embeddings would be {d_vocab} x {d_out} cells per head (more than "
            f"{VOCAB_LIMIT} per axis): pass --max-vocab N to show the N tokens and answers most frequent in the "
            "examples"
        )


# ----------------------------------------------------------------------------- examples


@dataclass
class Examples:
    """The examples every section uses: ``batch`` cut to ``length`` positions (attention, patching),
    ``full`` uncut (ablations), ``corrupted`` (the task's corruption of ``batch``; None without
    patching) and one read-out position per shown example."""

    batch: Batch
    full: Batch
    corrupted: Batch | None
    readouts: list[int]
    length: int


def crop(batch: Batch, length: int) -> Batch:
    """The first ``length`` positions of ``batch`` (per-position labels cut too)."""
    labels = {
        k: v[:, :length] if v.dim() == 2 and v.shape[1] == batch.tokens.shape[1] else v
        for k, v in (batch.labels or {}).items()
    }
    return Batch(batch.tokens[:, :length], batch.targets[:, :length], batch.mask[:, :length], labels or None)


def select(batch: Batch, index: Tensor) -> Batch:
    """The examples ``index`` of ``batch``."""
    labels = {k: v[index] for k, v in (batch.labels or {}).items()}
    return Batch(batch.tokens[index], batch.targets[index], batch.mask[index], labels or None)


def corrupt(task: Task, batch: Batch, seed: int) -> Batch:
    """``task.corrupt(batch)``, checked: same shape, and a clear error for a task without a rule."""
    try:
        corrupted = task.corrupt(batch, torch.Generator().manual_seed(seed))
    except NotImplementedError as err:
        raise ValueError(f"{err}; or run inspect with --no-patching") from None
    if not isinstance(corrupted, Batch) or corrupted.tokens.shape != batch.tokens.shape:
        raise ValueError(f"task {task.name!r}: corrupt() must return a Batch of shape {tuple(batch.tokens.shape)}")
    return corrupted


def changed_answers(clean: Batch, corrupted: Batch) -> Tensor:
    """Scored positions (in both batches) where the corruption changed the answer."""
    return clean.mask & corrupted.mask & (clean.targets != corrupted.targets)


def draw_examples(task: Task, options: InspectOptions, device: torch.device) -> Examples:
    """``batch_size`` examples (seeded), cut to ``max_positions`` when longer (keeping the examples
    with a scored position in the cut), corrupted when patching; the read-out of a shown example is
    its last scored position (with patching: the last one whose answer the corruption changed)."""
    full = task.sample(options.batch_size, torch.Generator().manual_seed(options.seed)).to(device)
    length = min(full.tokens.shape[1], options.max_positions)
    keep = full.mask[:, :length].any(1)
    if keep.sum() < options.n_examples:
        first = int(full.mask.float().argmax(1).min())
        raise ValueError(
            f"task {task.name!r} scores its answers from position {first} on, beyond what --max-positions "
            f"{options.max_positions} shows: raise --max-positions to at least {first + 1}"
        )
    index = keep.nonzero().squeeze(1)
    batch, full = select(crop(full, length), index), select(full, index)
    corrupted, where = None, batch.mask
    if options.patching:
        corrupted = corrupt(task, batch, options.seed + 1)
        where = changed_answers(batch, corrupted)
        if not where.any():
            raise ValueError(
                f"task {task.name!r}: the corruption changed no scored answer, so patching measures "
                "nothing; run inspect with --no-patching"
            )
        order = torch.cat([where.any(1).nonzero().squeeze(1), (~where.any(1)).nonzero().squeeze(1)])
        batch, full, corrupted = (select(b, order) for b in (batch, full, corrupted))
        where = where[order]
    readouts = [
        int(where[i].nonzero().max()) if where[i].any() else int(batch.mask[i].nonzero().max())
        for i in range(options.n_examples)
    ]
    return Examples(batch, full, corrupted, readouts, length)


# ----------------------------------------------------------------------------- metrics


def task_loss(logits: Tensor, batch: Batch) -> Tensor:
    """Cross-entropy (nats) at the task's scored positions."""
    return torch.nn.functional.cross_entropy(logits[batch.mask].float(), batch.targets[batch.mask])


def task_accuracy(logits: Tensor, batch: Batch) -> Tensor:
    """Fraction of scored positions where the answer is the model's top logit."""
    return (logits[batch.mask].argmax(-1) == batch.targets[batch.mask]).float().mean()


def logit_difference(clean: Batch, corrupted: Batch, where: Tensor):
    """``metric(logits)``: mean of ``logit[clean answer] - logit[corrupted answer]`` over ``where``."""
    rows, cols = where.nonzero(as_tuple=True)
    good, bad = clean.targets[rows, cols], corrupted.targets[rows, cols]

    def metric(logits: Tensor) -> Tensor:
        return (logits[rows, cols, good] - logits[rows, cols, bad]).mean()

    return metric


# ----------------------------------------------------------------------------- writing


def prepare(run_dir: str | Path, options: InspectOptions | None = None, command: str | None = None) -> dict:
    """Every check, then the loaded model and the examples: the inputs of
    :class:`mechmem.pages.inspect_page.Inspection` (nothing is written)."""
    from mechmem.storage.runs import load_run

    options = options if options is not None else InspectOptions()
    if not isinstance(options, InspectOptions):
        raise TypeError(f"options must be an InspectOptions, got {type(options).__name__}")
    run_dir = Path(run_dir)
    started = time.time()
    run = check_run(run_dir, options)
    task = run_task(run.config)
    device = check_device(options.device)
    model, config = load_run(run_dir, bridge=options.bridge, allow_no_manifest=options.allow_no_manifest)
    if next(model.parameters()).device != device:
        model = model.to(device)
    heads = check_heads(model, options.heads)
    check_vocab(model, options.max_vocab)
    examples = draw_examples(task, options, device)  # corrupted too: fails early without a rule
    return dict(
        run=run,
        config=config,
        task=task,
        model=model,
        heads=heads,
        examples=examples,
        options=options,
        command=command or f"inspect_run({str(run_dir)!r})",
        started=started,
    )


def read_summary(out: Path) -> dict:
    """The numbers of a written inspect page (``inspect.json``)."""
    return json.loads((Path(out) / MARKER).read_text())
