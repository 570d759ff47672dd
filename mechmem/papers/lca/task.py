"""The latent concept association task of the paper as a mechmem ``Task``.

One sequence is ``[x_1, ..., x_L]``: ``L`` context tokens drawn i.i.d. from q(. | y) (mixed with
noise). The model reads out the V-way prediction of the target ``y`` at the last position, so the
attention query is the last context token ``x_L``. That is what lets attention select (the
paper's Section 5): the score of ``x_l`` depends on the pair ``(x_L, x_l)``, and ``x_L`` itself is (mostly) near
``y``, so a block- or Hamming-structured QK form concentrates on informative tokens. (A dedicated
query token would give every key a score that depends on the key alone.) Every model of the task, the
default of :meth:`model_config` (``mechmem train lca``) included, is built by :meth:`build_model`: ``W_O = I``
and no residual stream (``finish.finish_lca_model_``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import torch
from jaxtyping import Int
from torch import Tensor

from mechmem.tasks.base import Batch, Task

from .generator import (
    Neighbourhood,
    check_context_len,
    check_epsilon,
    check_m,
    cluster_of,
    parse_neighbourhood,
    sample_context,
    sample_targets,
)

if TYPE_CHECKING:
    from mechmem.core.config import ModelConfig, TrainConfig


@dataclass
class LatentConceptTask(Task):
    """Predict the latent concept ``y`` from L context tokens near it in Hamming distance.

    Fields: ``m`` latent bits (V = 2^m tokens), ``context_len`` L, ``neighbourhood`` one of
    ``N1``, ``ball(r)``, ``bitflip(p)``, ``cluster2``, ``epsilon`` the noise rate, and
    ``d_model`` the default model width used by :meth:`model_config`.
    """

    name: ClassVar[str] = "lca"
    corruption: ClassVar[str] = (
        "every token x is replaced by x XOR (y XOR y') for a new target y' != y: the context of y' with the same "
        "Hamming structure and the same noise positions"
    )
    last_position_loss: ClassVar[bool] = True  # the loss reads the read-out (last) position only
    m: int = 5
    context_len: int = 64
    neighbourhood: str = "N1"
    epsilon: float = 0.0
    d_model: int = 16
    seq_len: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        check_m(self.m)
        check_context_len(self.context_len)
        check_epsilon(self.epsilon)
        self.epsilon = float(self.epsilon)
        self.parsed = parse_neighbourhood(self.neighbourhood, self.m)
        if isinstance(self.d_model, bool) or not isinstance(self.d_model, int) or self.d_model < 1:
            raise ValueError(f"d_model must be a positive int, got {self.d_model!r}")
        self.seq_len = self.context_len

    @property
    def V(self) -> int:
        """Number of latent tokens (= output classes), 2^m."""
        return 2**self.m

    @property
    def d_vocab(self) -> int:
        return self.V

    @property
    def d_vocab_out(self) -> int:
        return self.V

    def sample_with_target(
        self, batch_size: int, generator: torch.Generator, neighbourhood: Neighbourhood | None = None
    ) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, " batch"], Tensor]:
        """``(tokens [B, L], y [B], is_noise [B, L])`` drawn from ``generator`` only."""
        y = sample_targets(batch_size, self.m, generator)
        context, is_noise = sample_context(
            y, self.context_len, self.m, neighbourhood or self.parsed, self.epsilon, generator
        )
        return context, y, is_noise

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        tokens, y, is_noise = self.sample_with_target(batch_size, generator)
        return self.to_batch(tokens, y, is_noise)

    def to_batch(
        self, tokens: Int[Tensor, "batch pos"], y: Int[Tensor, " batch"], is_noise: Tensor | None = None
    ) -> Batch:
        """Targets and loss mask at the read-out (last) position only."""
        targets = torch.zeros_like(tokens)
        targets[:, -1] = y
        mask = torch.zeros_like(tokens, dtype=torch.bool)
        mask[:, -1] = True
        labels = {"y": y}
        if is_noise is not None:
            labels["is_noise"] = is_noise
        return Batch(tokens, targets, mask, labels)

    def same_cluster(self, tokens: Int[Tensor, "batch pos"], y: Int[Tensor, " batch"]) -> Tensor:
        """Which context positions hold a token of the target's cluster (first two latent bits)."""
        return cluster_of(tokens, self.m) == cluster_of(y, self.m)[:, None]

    def corrupt(self, batch: Batch, generator: torch.Generator) -> Batch:
        """Move each example to a new target ``y' != y`` by XOR-ing every latent with ``y ^ y'``: Hamming
        distances (hence the neighbourhood and the noise) are kept, the answer changes."""
        (y,) = self.batch_labels(batch, "y")
        delta = 1 + torch.randint(self.V - 1, (len(y),), generator=generator)  # non-zero XOR mask
        delta = delta.to(batch.tokens.device)
        labels = {k: v for k, v in batch.labels.items() if k != "y"}
        corrupted = self.to_batch(batch.tokens ^ delta[:, None], y ^ delta)
        return Batch(corrupted.tokens, corrupted.targets, batch.mask.clone(), {**labels, "y": y ^ delta})

    def token_labels(self) -> list[str]:
        """Each token's latent bits ``z_1..z_m`` (most significant first)."""
        return [format(t, f"0{self.m}b") for t in range(self.V)]

    def output_labels(self) -> list[str]:
        return self.token_labels()

    def model_config(self) -> ModelConfig:
        from mechmem.core.config import ModelConfig

        return ModelConfig(
            n_layers=1,
            n_heads=1,
            d_model=self.d_model,
            d_vocab=self.d_vocab,
            d_vocab_out=self.d_vocab_out,
            n_ctx=self.seq_len,
            attn_only=True,
            normalization=None,
            positional=False,
            use_bias=False,
            embed_init="normal",
            unembed_init="normal",
            freeze=("blocks.0.attn.W_O",),
        )

    def build_model(self, cfg: ModelConfig):
        """The paper's one-layer model: ``W_O = I`` (frozen by ``model_config``) and no residual stream."""
        from mechmem.core.models import build_model
        from mechmem.papers.lca.finish import finish_lca_model_

        return finish_lca_model_(build_model(cfg))

    def train_config(self) -> TrainConfig:
        from mechmem.core.config import TrainConfig

        return TrainConfig(steps=1500, batch_size=128, lr=1e-2, optimizer="adam", eval_every=500, eval_batch_size=1024)

    def to_dict(self) -> dict:
        return {
            "m": self.m,
            "context_len": self.context_len,
            "neighbourhood": self.neighbourhood,
            "epsilon": self.epsilon,
            "d_model": self.d_model,
        }


TASKS = {LatentConceptTask.name: LatentConceptTask}
