"""The tiny built-in task: recall a key's value from a noisy context.

Each sequence holds noise tokens, one *key* token at a random position, and a final *query*
token. The target at the query position is ``value[key]``, where ``value`` is a fixed random
table (the facts). A one-layer model solves it the way the papers describe: attention
*gathers* the key into the query position, and the OV circuit (``W_V W_O``, read out by
``W_U``) acts as the *associative memory* key -> value. It trains to ~100% in seconds on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from jaxtyping import Bool
from torch import Tensor

from mechmem.core.config import ModelConfig, TrainConfig, check_seed
from mechmem.tasks.base import Batch, Task


@dataclass
class RecallTask(Task):
    """Recall a key's value from a noisy context (the tiny built-in task).

    Token ids: keys ``0..n_keys-1``, noise ``n_keys..n_keys+n_noise-1``, the query token last.
    """

    name: ClassVar[str] = "recall"
    corruption: ClassVar[str] = (
        "the key is replaced, at the same position, by another key whose value differs (noise and query unchanged)"
    )
    seq_len: int = 12
    n_keys: int = 24
    n_values: int = 8
    n_noise: int = 16
    table_seed: int = 0

    def __post_init__(self) -> None:
        for field in ("seq_len", "n_keys", "n_values", "n_noise"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"recall task: {field} must be a positive integer, got {value!r}")
        check_seed("recall task: table_seed", self.table_seed)
        if self.seq_len < 2:
            raise ValueError(f"recall task: seq_len must be >= 2 (a key and the query), got {self.seq_len}")
        gen = torch.Generator().manual_seed(self.table_seed)
        self.values = torch.randint(self.n_values, (self.n_keys,), generator=gen)

    @property
    def query_token(self) -> int:
        return self.n_keys + self.n_noise

    @property
    def d_vocab(self) -> int:
        return self.n_keys + self.n_noise + 1

    @property
    def d_vocab_out(self) -> int:
        return self.n_values

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        b, t = batch_size, self.seq_len
        tokens = self.n_keys + torch.randint(self.n_noise, (b, t), generator=generator)
        keys = torch.randint(self.n_keys, (b,), generator=generator)
        where = torch.randint(t - 1, (b,), generator=generator)
        rows = torch.arange(b)
        tokens[rows, where] = keys
        tokens[:, -1] = self.query_token
        targets = torch.zeros(b, t, dtype=torch.long)
        targets[:, -1] = self.values[keys]
        mask = torch.zeros(b, t, dtype=torch.bool)
        mask[:, -1] = True
        return Batch(tokens, targets, mask, labels={"key": keys, "key_position": where})

    def corrupt(self, batch: Batch, generator: torch.Generator) -> Batch:
        """Swap each example's key for a key with a different value: the recalled answer changes."""
        keys, where = self.batch_labels(batch, "key", "key_position")
        keys, device = keys.cpu(), batch.tokens.device
        differs = self.values[None, :] != self.values[keys][:, None]  # [batch, n_keys]
        if not differs.any(1).all():
            raise ValueError(
                "recall task: every key has the same value (n_values=1?); no corruption changes the answer"
            )
        new_keys = torch.multinomial(differs.float(), 1, generator=generator).squeeze(1)
        tokens, targets = batch.tokens.clone(), batch.targets.clone()
        tokens[torch.arange(len(keys), device=device), where] = new_keys.to(device)
        targets[:, -1] = self.values[new_keys].to(device)
        return Batch(tokens, targets, batch.mask.clone(), {**batch.labels, "key": new_keys.to(device)})

    def answer_positions(self, batch: Batch) -> Bool[Tensor, "batch pos"]:
        """The key's position: the only token the answer depends on."""
        (where,) = self.batch_labels(batch, "key_position")
        positions = torch.zeros_like(batch.mask)
        positions[torch.arange(len(where), device=where.device), where] = True
        return positions

    def associations(self):
        """Every key -> its value (the table the model must store), over the ``n_values`` outputs."""
        from hooks.gather_store import Associations

        return Associations(torch.arange(self.n_keys), self.values.clone(), torch.arange(self.n_values))

    def token_labels(self) -> list[str]:
        """``k0..`` keys, ``n0..`` noise, ``?`` the query."""
        return [f"k{i}" for i in range(self.n_keys)] + [f"n{i}" for i in range(self.n_noise)] + ["?"]

    def output_labels(self) -> list[str]:
        return [f"v{i}" for i in range(self.n_values)]

    def model_config(self) -> ModelConfig:
        return ModelConfig(
            n_layers=1,
            n_heads=1,
            d_model=32,
            d_vocab=self.d_vocab,
            d_vocab_out=self.d_vocab_out,
            n_ctx=self.seq_len,
            attn_only=True,
            positional=False,
        )

    def train_config(self) -> TrainConfig:
        return TrainConfig(steps=150, batch_size=128, lr=1e-2, optimizer="adam", eval_every=25)
