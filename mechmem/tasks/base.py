"""What a task is: a seeded generator of (tokens, targets, loss mask) batches.

Every task of mechmem, from the tiny built-in one to the papers', is a dataclass subclass of
``Task``. Its fields are its config (the CLI's ``--set task.<field>=...`` overrides them).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, NamedTuple

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

if TYPE_CHECKING:
    from mechmem.core.config import ModelConfig, TrainConfig


class Batch(NamedTuple):
    """One batch. Loss and accuracy are computed where ``mask`` is True.

    ``labels`` holds optional per-position annotations a task uses in ``extra_metrics``
    (e.g. which positions are in-context-predictable).
    """

    tokens: Int[Tensor, "batch pos"]
    targets: Int[Tensor, "batch pos"]
    mask: Bool[Tensor, "batch pos"]
    labels: dict[str, Tensor] | None = None

    def to(self, device: str | torch.device) -> "Batch":
        labels = None if self.labels is None else {k: v.to(device) for k, v in self.labels.items()}
        return Batch(self.tokens.to(device), self.targets.to(device), self.mask.to(device), labels)


@dataclass
class Task:
    """Base class of every task; subclasses are dataclasses whose fields are their config."""

    name: ClassVar[str] = "task"
    #: how :meth:`corrupt` changes a batch, in words (shown next to patching results)
    corruption: ClassVar[str] = "every example is replaced by a fresh example of the task (resampling)"
    #: the loss mask is True at the last position only, in every example: training then computes the logits at
    #: that position alone (``mechmem.core.fastpath.last_logits``)
    last_position_loss: ClassVar[bool] = False
    seq_len: int = 16

    @property
    def d_vocab(self) -> int:
        raise NotImplementedError

    @property
    def d_vocab_out(self) -> int:
        return self.d_vocab

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        """Draw ``batch_size`` fresh sequences using only ``generator`` for randomness."""
        raise NotImplementedError

    def model_config(self) -> "ModelConfig":
        """A sensible default model for this task."""
        raise NotImplementedError

    def build_model(self, cfg: "ModelConfig"):
        """Build this task's model from ``cfg`` (the CLI, ``load_run`` and the papers call this).

        The default is ``mechmem.build_model``; a paper's task overrides it to add what a config
        cannot say (the authors' initialisation, a permanent hook removing the residual, ...).
        """
        from mechmem.core.models import build_model

        return build_model(cfg)

    def train_config(self) -> "TrainConfig":
        """Sensible default training settings for this task."""
        from mechmem.core.config import TrainConfig

        return TrainConfig()

    def extra_metrics(self, logits: Float[Tensor, "batch pos d_vocab_out"], batch: Batch) -> dict[str, float]:
        """Task-specific metrics computed at evaluation time (default: none)."""
        return {}

    def corrupt(self, batch: Batch, generator: torch.Generator) -> Batch:
        """A corrupted copy of ``batch`` for activation patching: same shape, and the answers the
        task scores change. Uses only ``generator`` for randomness; ``batch`` is not modified.

        The default resamples: every example is replaced by a fresh one from :meth:`sample`. Tasks
        override it to change only what the answer depends on (the key, the subject, ...). A task
        that can do neither raises ``NotImplementedError``.
        """
        try:
            fresh = self.sample(batch.tokens.shape[0], generator)
        except NotImplementedError:
            raise NotImplementedError(
                f"task {self.name!r} has no corruption rule: it defines neither corrupt() nor sample(); "
                "activation patching needs corrupted examples (define Task.corrupt(batch, generator))"
            ) from None
        if fresh.tokens.shape != batch.tokens.shape:
            raise ValueError(
                f"task {self.name!r}: resampled examples have shape {tuple(fresh.tokens.shape)}, the batch "
                f"{tuple(batch.tokens.shape)}; define Task.corrupt for batches that sample() cannot reproduce"
            )
        return fresh.to(batch.tokens.device)

    def answer_positions(self, batch: Batch) -> Bool[Tensor, "batch q k"] | Bool[Tensor, "batch pos"] | None:
        """Where the information of each scored answer sits, for the gather reading of the memory map
        (``hooks.gather_store``): ``[batch, pos]`` (the same positions for every scored position) or
        ``[batch, q, k]`` (per scored position ``q``). The default, for tasks whose outputs are input
        tokens: the earlier positions holding the answer token. ``None``: the task cannot say."""
        if self.d_vocab_out != self.d_vocab:
            return None
        return batch.tokens[:, None, :] == batch.targets[:, :, None]

    def associations(self):
        """The key -> value table the task's answers come from, as a ``hooks.gather_store.Associations``
        (for the store reading of the memory map); ``None`` (the default) when there is none."""
        return None

    def batch_labels(self, batch: Batch, *names: str) -> list[Tensor]:
        """``batch.labels[name]`` for each name; a clear ``ValueError`` when a batch lacks one."""
        missing = [n for n in names if batch.labels is None or n not in batch.labels]
        if missing:
            raise ValueError(
                f"task {self.name!r}: the batch has no labels {missing} "
                f"(batches from {type(self).__name__}.sample have them)"
            )
        return [batch.labels[n] for n in names]

    def token_labels(self) -> list[str]:
        """A short name for every input token id (figure and page labels); default: the ids."""
        return [str(i) for i in range(self.d_vocab)]

    def output_labels(self) -> list[str]:
        """A short name for every output id; default: the ids."""
        return [str(i) for i in range(self.d_vocab_out)]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def check_fits(self, n_ctx: int, d_vocab: int, d_vocab_out: int) -> None:
        """Raise ``ValueError`` if this task's sequences or vocabularies do not fit a model."""
        if self.seq_len > n_ctx:
            raise ValueError(f"task {self.name}: seq_len={self.seq_len} exceeds the model's n_ctx={n_ctx}")
        if self.d_vocab > d_vocab:
            raise ValueError(f"task {self.name}: needs d_vocab >= {self.d_vocab}, the model has {d_vocab}")
        if self.d_vocab_out > d_vocab_out:
            raise ValueError(f"task {self.name}: needs d_vocab_out >= {self.d_vocab_out}, the model has {d_vocab_out}")
