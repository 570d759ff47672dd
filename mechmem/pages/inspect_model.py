"""``mechmem.inspect_model``: the inspect page for any TransformerLens model and the caller's own examples.

The page is the one ``mechmem inspect`` writes for a run (:mod:`mechmem.pages.inspect_page`: attention, OV / QK
circuits, ablations, activation patching, the memory map), computed by the same code: the caller's examples are
wrapped in a :class:`GivenExamples` task, which is all the page reads from a run's task. So it works on a
``HookedTransformer``, a ``TransformerBridge.boot_native`` model, or a bridge around a HuggingFace module
(``build_bridge_from_module``), trained by mechmem or not.

Examples are token ids ``[batch, pos]``, prompts (strings, tokenised with ``tokenizer`` or the model's own; they must
all have the same number of tokens, as the page compares examples position by position), or a ``mechmem`` ``Batch``.
The read-out positions (``readout``, default: the last position) are where answers are scored; the answers
(``targets``) default to the model's own top prediction on the clean examples, so "accuracy" then reads "the
prediction kept". ``corrupt`` (examples of the same shape) enables activation patching, whose metric is the logit of
the clean answer minus that of the corrupted answer: the model's own prediction on the corrupted examples (give a
``Batch`` with its targets to choose it).
``metric(logits) -> float`` is added to the ablation table and scores the memory map's causal readings (default:
minus the loss at the read-out positions). The memory map reads ``answer_positions`` (default: the earlier positions
holding the answer token) and ``associations`` (default: every token of the examples -> itself, the table of a
copying head).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
from jaxtyping import Bool, Int
from torch import Tensor, nn

from hooks.checks import check_tokens
from hooks.state import preserved_state
from mechmem.pages.inspection import KIND, InspectOptions, check_heads, check_vocab, draw_examples
from mechmem.tasks.base import Batch, Task


@dataclass
class GivenExamples(Task):
    """Examples given to ``inspect_model`` (not a task that can draw new ones)."""

    name: ClassVar[str] = "examples"
    corruption: ClassVar[str] = "the corrupted examples given to inspect_model"
    examples: Batch | None = field(default=None, repr=False)
    corrupted: Batch | None = field(default=None, repr=False)
    vocab: int = 0
    vocab_out: int = 0
    token_names: list[str] | None = field(default=None, repr=False)
    output_names: list[str] | None = field(default=None, repr=False)
    answers: Tensor | None = field(default=None, repr=False)
    table: Any = field(default=None, repr=False)

    @property
    def d_vocab(self) -> int:
        return self.vocab

    @property
    def d_vocab_out(self) -> int:
        return self.vocab_out

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        """The given examples, all of them (they are not drawn)."""
        return self.examples

    def corrupt(self, batch: Batch, generator: torch.Generator) -> Batch:
        if self.corrupted is None:
            raise NotImplementedError("inspect_model was given no corrupted examples (corrupt=...)")
        if not torch.equal(batch.tokens.cpu(), self.examples.tokens.cpu()):
            raise ValueError("inspect_model: the page asked to corrupt examples other than the ones given")
        return self.corrupted.to(batch.tokens.device)

    def answer_positions(self, batch: Batch):
        if self.answers is None:
            return super().answer_positions(batch)
        return self.answers[: batch.tokens.shape[0]].to(batch.tokens.device)

    def associations(self):
        return self.table

    def token_labels(self) -> list[str]:
        return self.token_names or super().token_labels()

    def output_labels(self) -> list[str]:
        return self.output_names or super().output_labels()


# ----------------------------------------------------------------------------- inputs


def _check_model(model) -> nn.Module:
    if not isinstance(model, nn.Module) or not hasattr(model, "cfg") or not hasattr(model, "run_with_cache"):
        raise TypeError(
            f"model must be a TransformerLens HookedTransformer or TransformerBridge, got {type(model).__name__}"
        )
    return model


def _tokenize(prompts: Sequence[str], tokenizer, name: str) -> Tensor:
    if tokenizer is None:
        raise ValueError(
            f"{name}: prompts need a tokenizer, and the model has none; pass token ids [batch, pos] or tokenizer=..."
        )
    ids = [list(tokenizer(prompt)["input_ids"]) for prompt in prompts]
    lengths = sorted({len(i) for i in ids})
    if len(lengths) != 1:
        raise ValueError(
            f"{name}: the prompts tokenise to different lengths {lengths}; the page compares examples position by "
            "position: give prompts of the same length in tokens (or token ids)"
        )
    return torch.tensor(ids, dtype=torch.long)


def _as_tokens(model, examples, tokenizer, name: str) -> tuple[Tensor, Batch | None]:
    """``(tokens, batch)``: token ids from ids, prompts or a ``Batch`` (then also the batch)."""
    if isinstance(examples, Batch):
        return check_tokens(model, examples.tokens, name), examples
    if isinstance(examples, str):
        examples = [examples]
    if isinstance(examples, (list, tuple)) and examples and all(isinstance(e, str) for e in examples):
        return check_tokens(model, _tokenize(examples, tokenizer, name), name), None
    if isinstance(examples, Tensor):
        return check_tokens(model, examples, name), None
    raise TypeError(
        f"{name} must be token ids [batch, pos], a list of prompts (strings) or a mechmem Batch, "
        f"got {type(examples).__name__}"
    )


def _predictions(model, tokens: Tensor, readout: Tensor) -> Tensor:
    """The model's top prediction at each read-out position (0 elsewhere)."""
    with preserved_state(model), torch.no_grad():
        model.eval()
        top = model(tokens.to(next(model.parameters()).device)).argmax(-1).cpu()
    return torch.where(readout, top, torch.zeros_like(top))


def _batch(model, tokens: Tensor, given: Batch | None, readout, targets, name: str) -> tuple[Batch, bool]:
    """The examples as a ``Batch`` and whether the answers are the model's own predictions."""
    if given is not None:
        return given, False
    b, p = tokens.shape
    if readout is None:
        readout = torch.zeros(b, p, dtype=torch.bool)
        readout[:, -1] = True
    if not isinstance(readout, Tensor) or readout.dtype != torch.bool or tuple(readout.shape) != (b, p):
        raise ValueError(f"readout must be a bool mask [batch, pos] = [{b}, {p}] of the positions scored in {name}")
    if not readout.any(1).all():
        raise ValueError(f"readout marks no position in some examples of {name}: every example needs one")
    own = targets is None
    if own:
        targets = _predictions(model, tokens, readout)
    d_out = model.cfg.d_vocab_out
    if not isinstance(targets, Tensor) or tuple(targets.shape) != (b, p) or targets.is_floating_point():
        raise ValueError(f"targets must be integer answer ids [batch, pos] = [{b}, {p}] (read at the read-out)")
    if targets[readout].min() < 0 or targets[readout].max() >= d_out:
        raise ValueError(f"targets at the read-out positions must be output ids in [0, {d_out - 1}]")
    return Batch(tokens, targets.long(), readout.clone()), own


def _names(tokenizer, size: int) -> list[str] | None:
    if tokenizer is None or not hasattr(tokenizer, "convert_ids_to_tokens"):
        return None
    return [str(t) for t in tokenizer.convert_ids_to_tokens(list(range(size)))]


def _copy_table(model, tokens: Tensor):
    """Every distinct token of the examples -> itself (a copying head's table), when outputs are tokens."""
    from hooks.gather_store import Associations

    if model.cfg.d_vocab_out != model.cfg.d_vocab:
        return None
    ids = torch.unique(tokens)
    return Associations(ids, ids.clone(), ids.clone()) if len(ids) >= 2 else None


# ----------------------------------------------------------------------------- entry point


def inspect_model(
    model: nn.Module,
    examples: Int[Tensor, "batch pos"] | Sequence[str] | Batch,
    out: str | Path,
    *,
    corrupt: Int[Tensor, "batch pos"] | Sequence[str] | Batch | None = None,
    metric: Callable[[Tensor], float | Tensor] | None = None,
    readout: Bool[Tensor, "batch pos"] | None = None,
    targets: Int[Tensor, "batch pos"] | None = None,
    answer_positions: Tensor | None = None,
    associations=None,
    tokenizer=None,
    token_labels: Sequence[str] | None = None,
    output_labels: Sequence[str] | None = None,
    options: InspectOptions | None = None,
) -> Path:
    """Write the inspect page of ``model`` on ``examples`` into the folder ``out``; returns ``out/index.html``.
    See the module docstring for the arguments; ``options`` (an ``InspectOptions``) chooses heads, the
    vocabulary shown, the number of examples shown, the seed and ``overwrite``. Every check runs before anything
    is written; the folder is written whole (never over a folder mechmem did not make)."""
    from mechmem.pages.inspect_page import build_page, model_kind
    from mechmem.storage.folders import write_folder_atomically

    model = _check_model(model)
    if options is not None and not isinstance(options, InspectOptions):
        raise TypeError(f"options must be an InspectOptions, got {type(options).__name__}")
    options = options or InspectOptions()
    tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    tokens, given = _as_tokens(model, examples, tokenizer, "examples")
    batch, own = _batch(model, tokens, given, readout, targets, "examples")
    corrupted = None
    if corrupt is not None:
        bad_tokens, bad_given = _as_tokens(model, corrupt, tokenizer, "corrupt")
        if bad_tokens.shape != tokens.shape:
            raise ValueError(
                f"corrupt has shape {tuple(bad_tokens.shape)}; it must match examples {tuple(tokens.shape)}"
            )
        corrupted, _ = _batch(model, bad_tokens, bad_given, batch.mask, None, "corrupt")  # its own predictions
        if not (batch.mask & corrupted.mask & (batch.targets != corrupted.targets)).any():
            raise ValueError(
                "corrupt changes no answer at the read-out positions (the model predicts the same there), so "
                "patching would measure nothing: give corrupted examples whose answer differs, or corrupt=None"
            )
    if metric is not None and not callable(metric):
        raise TypeError(f"metric must be a callable logits -> float, got {type(metric).__name__}")
    cfg = model.cfg
    task = GivenExamples(
        seq_len=tokens.shape[1],
        examples=batch,
        corrupted=corrupted,
        vocab=cfg.d_vocab,
        vocab_out=cfg.d_vocab_out,
        token_names=list(token_labels) if token_labels is not None else _names(tokenizer, cfg.d_vocab),
        output_names=list(output_labels) if output_labels is not None else _names(tokenizer, cfg.d_vocab_out),
        answers=answer_positions,
        table=associations if associations is not None else _copy_table(model, tokens),
    )
    options = replace(
        options,
        out=Path(out),
        patching=corrupt is not None,
        batch_size=max(2, tokens.shape[0]),
        n_examples=min(options.n_examples, tokens.shape[0]),
        max_positions=max(options.max_positions, tokens.shape[1]),  # never cut: the answers are where given
    )
    heads = check_heads(model, options.heads)
    check_vocab(model, options.max_vocab)
    device = next(model.parameters()).device
    inputs = dict(
        run=None,
        config={},
        task=task,
        model=model,
        heads=heads,
        examples=draw_examples(task, options, device),
        options=options,
        command="inspect_model(...)",
        started=0.0,
        metric=metric,
        title=f"{model_kind(model)} on {tokens.shape[0]} examples",
    )
    if own:
        inputs["title"] += " (answers: its own predictions)"
    write_folder_atomically(Path(out), KIND, lambda tmp: build_page(tmp, **inputs), options.overwrite)
    return Path(out) / "index.html"
