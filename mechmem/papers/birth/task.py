"""The bigram task of "Birth of a Transformer" as a mechmem ``Task``.

Loss positions (``Batch.mask``): the in-context-predictable positions c >= 2 (``loss_head_only``, the
authors' default and the setting of their Figure 3), or every position. ``Batch.labels`` exposes the
per-position count ``c`` so ``extra_metrics`` can report the in-context accuracy (c >= 2), the global-bigram
loss (c = 0) and the in-context loss (c >= 2) whatever the loss mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from mechmem.core.config import ModelConfig
from mechmem.core.models import build_model
from mechmem.tasks.base import Batch, Task

from .generator import BigramOptions, BigramSample, allowed_outputs, generate
from .tables import N_CHARS, shakespeare_tables


@dataclass
class BigramTask(BigramOptions, Task):
    """Global bigrams from tiny Shakespeare plus K in-context trigger -> output bigrams (the authors' data generator).

    Fields: see ``BigramOptions``; ``loss_head_only`` puts the loss only on c >= 2 positions.
    """

    name: ClassVar[str] = "birth_bigram"
    corruption: ClassVar[str] = (
        "each trigger's output o_k is replaced, after every occurrence of the trigger, by another token o'_k "
        "(not a trigger of the sequence): the in-context answers change, the global-bigram text does not"
    )
    loss_head_only: bool = True

    def __post_init__(self) -> None:
        self.validate_options(N_CHARS)
        if not isinstance(self.loss_head_only, bool):
            raise TypeError(f"loss_head_only must be a bool, got {self.loss_head_only!r}")

    @property
    def d_vocab(self) -> int:
        return N_CHARS

    @property
    def triggers(self) -> list[int]:
        """The fixed triggers (empty for random triggers, drawn per sequence)."""
        from .generator import fixed_triggers

        if self.trigger_mode != "fixed":
            return []
        return fixed_triggers(shakespeare_tables(), self.n_triggers, self.trigger_offset)

    def generate(self, batch_size: int, generator: torch.Generator) -> BigramSample:
        return generate(self.options(), batch_size, generator)

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        return to_batch(self.generate(batch_size, generator), self.loss_head_only)

    def corrupt(self, batch: Batch, generator: torch.Generator) -> Batch:
        """Give every trigger a new output ``o'_k`` (an allowed output, not a trigger, not ``o_k``) and write it
        after each occurrence of the trigger; counts (hence the loss mask) are recomputed."""
        triggers, outputs = self.batch_labels(batch, "triggers", "outputs")
        if triggers.shape[1] == 0:
            raise ValueError("birth task: n_triggers=0 has no in-context answer to corrupt")
        device, (B, K) = batch.tokens.device, triggers.shape
        triggers, outputs = triggers.cpu(), outputs.cpu()
        allowed = torch.zeros(B, K, N_CHARS)
        allowed[..., allowed_outputs(self.output_split, N_CHARS)] = 1.0
        allowed.scatter_(2, triggers[:, None, :].expand(B, K, K), 0.0)
        allowed.scatter_(2, outputs[:, :, None], 0.0)
        if not allowed.sum(-1).gt(0).all():
            raise ValueError(f"birth task: output_split={self.output_split!r} leaves no other output to corrupt to")
        new = torch.multinomial(allowed.reshape(B * K, -1), 1, generator=generator).reshape(B, K)
        seq = torch.cat([batch.tokens, batch.targets[:, -1:]], 1).cpu()  # z_1 .. z_{T+1}
        forced = torch.full((B, N_CHARS), -1, dtype=torch.long).scatter_(1, triggers, new)  # q_k -> o'_k
        rows = torch.arange(B)
        for t in range(seq.shape[1] - 1):  # in order: a replaced output is no longer a trigger occurrence
            out = forced[rows, seq[:, t]]
            seq[:, t + 1] = torch.where(out >= 0, out, seq[:, t + 1])
        tokens, after = seq[:, :-1], seq[:, 1:]
        hit = tokens.unsqueeze(-1) == triggers.unsqueeze(1)
        counts = (hit.long().cumsum(1) * hit).sum(-1) if self.output_counter else hit.any(-1).long()
        sample = BigramSample(tokens=tokens, targets=after, counts=counts, triggers=triggers, outputs=new)
        return to_batch(sample, self.loss_head_only).to(device)

    def associations(self):
        """Every token -> itself: the induction head's output memory ``W_O^2`` maps the attended token's
        embedding to its own unembedding (the paper's ``wo1`` probe), over all N tokens."""
        from hooks.gather_store import Associations

        return Associations(torch.arange(N_CHARS), torch.arange(N_CHARS))

    def token_labels(self) -> list[str]:
        """The characters, with space, newline and tab shown as ``␣``, ``↵``, ``⇥``."""
        shown = {" ": "\u2423", "\n": "\u21b5", "\t": "\u21e5"}
        return [shown.get(ch, ch) for ch in shakespeare_tables().vocab]

    def output_labels(self) -> list[str]:
        return self.token_labels()

    def model_config(self) -> ModelConfig:
        from .model import simplified_config

        return simplified_config(d_model=128, n_ctx=self.seq_len)

    def build_model(self, cfg: ModelConfig):
        """The simplified model with the authors' initialisation (``model.init_simplified_``)."""
        from .model import init_simplified_

        return init_simplified_(build_model(cfg))

    def train_config(self):
        from mechmem.core.config import TrainConfig

        return TrainConfig(
            steps=300,
            batch_size=64,
            lr=0.1,
            optimizer="sgd",
            momentum=0.9,
            weight_decay=1e-4,
            eval_every=25,
            eval_batch_size=256,
        )

    def extra_metrics(self, logits: Float[Tensor, "batch pos d_vocab_out"], batch: Batch) -> dict[str, float]:
        return incontext_metrics(logits, batch)


def to_batch(sample: BigramSample, loss_head_only: bool = True) -> Batch:
    """A training batch: mask = (c >= 2) if ``loss_head_only`` else everywhere; labels carry c and the
    per-sequence triggers and outputs."""
    mask = sample.counts >= 2 if loss_head_only else torch.ones_like(sample.counts, dtype=torch.bool)
    labels = {"count": sample.counts, "triggers": sample.triggers, "outputs": sample.outputs}
    return Batch(sample.tokens, sample.targets, mask, labels)


def incontext_metrics(logits: Float[Tensor, "batch pos d_vocab_out"], batch: Batch) -> dict[str, float]:
    """acc_incontext (acc_end: accuracy at c >= 2), acc_c2 (c = 2: the first position an induction head can
    predict, where the bag of earlier tokens helps least), acc_first (c = 1), acc_bigram (c = 0), loss_bigram
    (c = 0) and loss_head (c >= 2), in nats."""
    c = batch.labels["count"]
    logits = logits.float()
    nll = F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(), reduction="none").view_as(c)
    correct = (logits.argmax(-1) == batch.targets).float()
    out = {}
    for name, where in (("incontext", c >= 2), ("c2", c == 2), ("first", c == 1), ("bigram", c == 0)):
        if where.any():
            out[f"acc_{name}"] = float(correct[where].mean())
    if (c == 0).any():
        out["loss_bigram"] = float(nll[c == 0].mean())
    if (c >= 2).any():
        out["loss_head"] = float(nll[c >= 2].mean())
    return out


TASKS = {BigramTask.name: BigramTask}
