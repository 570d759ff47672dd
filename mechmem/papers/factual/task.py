"""The synthetic factual-recall task of Nichani, Lee & Bietti (ICLR 2025), as in the authors' ``task.py``.

Tokens (ids): subjects ``0..S-1``; relations ``S..S+R-1``; noise ``S+R..S+R+n_noise-1`` (``n_noise = S+R``
by default); EOS ``= S+R+n_noise``. Answers (output ids): ``R*D``, relation ``r`` owning the block
``A_r = {D r, ..., D r + D - 1}``. A fact table ``a*(s, r) in A_r`` holds ``S R`` facts.

A sequence of length ``T = seq_len`` holds i.i.d. noise at positions ``0..T-2``, the subject and the relation at
two distinct uniform positions among them, and EOS at ``T-1``; the label ``a*(s, r)`` is read at EOS only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from mechmem.tasks.base import Batch, Task

TABLES = ("random", "structured")


def token_counts(tokens: Int[Tensor, "batch pos"], d_vocab: int) -> Float[Tensor, "batch d_vocab"]:
    """How often each token occurs in each sequence."""
    counts = torch.zeros(tokens.shape[0], d_vocab)
    return counts.scatter_add_(1, tokens, torch.ones_like(tokens, dtype=counts.dtype))


def random_fact_table(S: int, R: int, D: int, seed: int) -> Int[Tensor, "S R"]:
    """``a*(s, r)`` uniform with replacement in ``A_r`` (seeded), as the authors' generator."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(D, (S, R), generator=g) + D * torch.arange(R)


def structured_fact_table(S: int, R: int, D: int) -> Int[Tensor, "S R"]:
    """The Fig. 5 table ``a*(s, r) = D r + floor(s D / S)`` (``= 8 r + floor(s / 2)`` at S=16, D=8)."""
    return D * torch.arange(R)[None, :] + (torch.arange(S) * D // S)[:, None]


def check_fact_table(table: Tensor, S: int, R: int, D: int) -> None:
    """Raise ``ValueError`` unless ``table`` is an ``[S, R]`` integer table with ``a*(s, r) in A_r``."""
    if tuple(table.shape) != (S, R):
        raise ValueError(f"facts: the fact table must have shape (S, R) = ({S}, {R}), got {tuple(table.shape)}")
    if table.is_floating_point() or table.dtype == torch.bool:
        raise ValueError(f"facts: the fact table must hold integer answer ids, got dtype {table.dtype}")
    block = table - D * torch.arange(R)[None, :]
    bad = (block < 0) | (block >= D)
    if bad.any():
        s, r = [int(i) for i in bad.nonzero()[0]]
        raise ValueError(
            f"facts: a*(s={s}, r={r}) = {int(table[s, r])} lies outside relation {r}'s answer block "
            f"[{D * r}, {D * r + D - 1}] (answers of relation r must be in D*r .. D*r + D - 1)"
        )


@dataclass
class FactualRecallTask(Task):
    """Subjects ``S``, relations ``R``, ``D`` answers per relation, ``n_noise`` noise tokens (None: S + R).

    ``table`` is ``"random"`` (seeded by ``table_seed``) or ``"structured"`` (Fig. 5); ``facts`` (an ``S x R``
    nested list) overrides both with an explicit table.
    """

    name: ClassVar[str] = "factual"
    corruption: ClassVar[str] = (
        "the subject is replaced, at the same position, by another subject whose answer for the same relation "
        "differs (any other subject when none does); relation, noise and EOS unchanged"
    )
    seq_len: int = 32
    S: int = 16
    R: int = 16
    D: int = 8
    n_noise: int | None = None
    table: str = "random"
    table_seed: int = 0
    facts: list | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for name in ("S", "R", "D", "seq_len", "table_seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an int, got {value!r}")
        for name in ("S", "R", "D"):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"{name} must be >= 1 to place a subject, a relation and an answer, got {getattr(self, name)}"
                )
        if self.seq_len < 3:
            raise ValueError(
                f"seq_len must be >= 3 (subject, relation and EOS at distinct positions), got {self.seq_len}"
            )
        if self.n_noise is not None and (not isinstance(self.n_noise, int) or self.n_noise < 1):
            raise ValueError(
                f"n_noise must be None (= S + R) or >= 1 (the noise vocabulary cannot be empty), got {self.n_noise!r}"
            )
        if self.table not in TABLES:
            raise ValueError(f"table={self.table!r} is not supported; allowed values: {list(TABLES)}")
        if self.facts is not None:
            table = torch.as_tensor(self.facts)
            check_fact_table(table, self.S, self.R, self.D)
            self._table = table.long()
        elif self.table == "structured":
            self._table = structured_fact_table(self.S, self.R, self.D)
        else:
            self._table = random_fact_table(self.S, self.R, self.D, self.table_seed)

    # --- vocabulary -------------------------------------------------------------------------------
    @property
    def noise_size(self) -> int:
        return self.S + self.R if self.n_noise is None else self.n_noise

    @property
    def eos(self) -> int:
        return self.S + self.R + self.noise_size

    @property
    def d_vocab(self) -> int:
        return self.eos + 1

    @property
    def d_vocab_out(self) -> int:
        return self.R * self.D

    @property
    def fact_table(self) -> Int[Tensor, "S R"]:
        """``a*(s, r)`` as an ``[S, R]`` tensor of answer ids (a copy)."""
        return self._table.clone()

    @property
    def n_facts(self) -> int:
        return self.S * self.R

    def answer(self, s: Tensor, r: Tensor) -> Tensor:
        return self._table[s, r]

    # --- sampling ---------------------------------------------------------------------------------
    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        """``batch_size`` sequences; ``labels`` hold subject, relation and their positions."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        B, T = batch_size, self.seq_len
        s = torch.randint(self.S, (B,), generator=generator)
        r = torch.randint(self.R, (B,), generator=generator)
        subject_pos = torch.randint(T - 1, (B,), generator=generator)
        relation_pos = torch.randint(T - 2, (B,), generator=generator)
        relation_pos = relation_pos + (relation_pos >= subject_pos).long()  # uniform over the other T-2 slots
        tokens = self.S + self.R + torch.randint(self.noise_size, (B, T), generator=generator)
        rows = torch.arange(B)
        tokens[rows, subject_pos] = s
        tokens[rows, relation_pos] = self.S + r
        tokens[:, -1] = self.eos
        targets = torch.zeros(B, T, dtype=torch.long)
        targets[:, -1] = self.answer(s, r)
        mask = torch.zeros(B, T, dtype=torch.bool)
        mask[:, -1] = True
        labels = {"subject": s, "relation": r, "subject_pos": subject_pos, "relation_pos": relation_pos}
        return Batch(tokens, targets, mask, labels)

    def sample_counts(self, batch_size: int, generator: torch.Generator):
        """Token counts of ``batch_size`` fresh sequences, their answers and ``(subject, relation)``.

        For models without positional information a sequence enters only through its counts: one subject, one
        relation, ``T - 3`` i.i.d. noise tokens, one EOS -- the distribution of ``sample``, without placing tokens.
        """
        B = batch_size
        s = torch.randint(self.S, (B,), generator=generator)
        r = torch.randint(self.R, (B,), generator=generator)
        noise = self.S + self.R + torch.randint(self.noise_size, (B, self.seq_len - 3), generator=generator)
        counts = token_counts(noise, self.d_vocab)
        rows = torch.arange(B)
        counts[rows, s] += 1
        counts[rows, self.S + r] += 1
        counts[:, self.eos] += 1
        return counts, self.answer(s, r), (s, r)

    def all_facts(self, generator: torch.Generator) -> Batch:
        """One sequence per fact ``(s, r)`` (fresh noise and positions), subject-major order."""
        batch = self.sample(self.n_facts, generator)
        s = torch.arange(self.S).repeat_interleave(self.R)
        r = torch.arange(self.R).repeat(self.S)
        tokens, rows = batch.tokens.clone(), torch.arange(self.n_facts)
        tokens[rows, batch.labels["subject_pos"]] = s
        tokens[rows, batch.labels["relation_pos"]] = self.S + r
        targets = batch.targets.clone()
        targets[:, -1] = self.answer(s, r)
        labels = {**batch.labels, "subject": s, "relation": r}
        return Batch(tokens, targets, batch.mask, labels)

    def answer_positions(self, batch: Batch) -> Tensor:
        """The subject's and the relation's positions: the answer ``a*(s, r)`` depends on these two tokens."""
        s_pos, r_pos = self.batch_labels(batch, "subject_pos", "relation_pos")
        positions, rows = torch.zeros_like(batch.mask), torch.arange(len(s_pos), device=s_pos.device)
        positions[rows, s_pos] = True
        positions[rows, r_pos] = True
        return positions

    def associations(self):
        """Every fact: the key ``(s, S + r)`` (subject and relation tokens, embeddings summed) -> ``a*(s, r)``,
        over all ``R D`` answers."""
        from hooks.gather_store import Associations

        s = torch.arange(self.S).repeat_interleave(self.R)
        r = torch.arange(self.R).repeat(self.S)
        return Associations(torch.stack([s, self.S + r], 1), self.answer(s, r), torch.arange(self.d_vocab_out))

    def corrupt(self, batch: Batch, generator: torch.Generator) -> Batch:
        """Swap each example's subject for one with a different answer ``a*(s', r) != a*(s, r)``."""
        s, r, where = self.batch_labels(batch, "subject", "relation", "subject_pos")
        if self.S < 2:
            raise ValueError("factual task: S=1 subject leaves no other subject to corrupt to")
        device = batch.tokens.device
        s, r = s.cpu(), r.cpu()
        candidates = self._table[:, r].T != self.answer(s, r)[:, None]  # [batch, S]: a different answer
        other = torch.arange(self.S)[None, :] != s[:, None]
        candidates = torch.where(candidates.any(1, keepdim=True), candidates, other)
        new = torch.multinomial(candidates.float(), 1, generator=generator).squeeze(1)
        tokens, targets = batch.tokens.clone(), batch.targets.clone()
        tokens[torch.arange(len(s), device=device), where] = new.to(device)
        targets[:, -1] = self.answer(new, r).to(device)
        return Batch(tokens, targets, batch.mask.clone(), {**batch.labels, "subject": new.to(device)})

    def token_labels(self) -> list[str]:
        """``s0..`` subjects, ``r0..`` relations, ``n0..`` noise, ``EOS``."""
        return (
            [f"s{i}" for i in range(self.S)]
            + [f"r{i}" for i in range(self.R)]
            + [f"n{i}" for i in range(self.noise_size)]
            + ["EOS"]
        )

    def output_labels(self) -> list[str]:
        """``a{r}.{j}``: answer ``j`` of relation ``r``'s block."""
        return [f"a{r}.{j}" for r in range(self.R) for j in range(self.D)]

    # --- defaults and metrics ---------------------------------------------------------------------
    def model_config(self):
        """A CPU-sized configuration (d=32, H=8, d_h=8, m=64); see ``model.factual_model_config``."""
        from mechmem.papers.factual.model import factual_model_config

        return factual_model_config(self)

    def build_model(self, cfg):
        """``mechmem.build_model`` plus the authors' init and no EOS-embedding residual (``model.py``)."""
        from mechmem.core.models import build_model
        from mechmem.papers.factual.model import finish_factual_model_

        return finish_factual_model_(build_model(cfg))

    def train_config(self):
        from mechmem.core.config import TrainConfig

        return TrainConfig(steps=3000, batch_size=1024, lr=1e-2, optimizer="adam", eval_every=128, eval_batch_size=1024)

    def extra_metrics(self, logits: Float[Tensor, "batch pos d_vocab_out"], batch: Batch) -> dict[str, float]:
        """Relation-only and subject-only losses at EOS (Fig. 5's decomposition of the loss)."""
        losses = decomposed_losses(logits[:, -1], batch.targets[:, -1], self.D)
        return {"relation_loss": losses["relation"], "subject_loss": losses["subject"]}


def decomposed_losses(logits: Float[Tensor, "batch answers"], target: Int[Tensor, "batch"], D: int) -> dict:
    """Mean total, relation-only and subject-only cross-entropies.

    - total: ``-log p(a*)``;
    - relation-only: ``-log sum_{a in A_r} p(a)``, the mass on the right relation's block (``a // D``);
    - subject-only: ``-log sum_{a : a mod D = a* mod D} p(a)``, the mass on the right within-block slot.
    """
    logp = F.log_softmax(logits.float(), dim=-1)
    return decomposed_losses_from_logprobs(logp, target, D)


def decomposed_losses_from_logprobs(logp: Float[Tensor, "batch answers"], target: Int[Tensor, "batch"], D: int) -> dict:
    """As ``decomposed_losses`` from log-probabilities (e.g. ``log`` of hand-made probabilities)."""
    B, n_answers = logp.shape
    if n_answers % D:
        raise ValueError(f"D={D} must divide the number of answers {n_answers}")
    blocks = logp.view(B, n_answers // D, D)  # [batch, R, D]
    rows = torch.arange(B)
    total = -logp[rows, target]
    relation = -torch.logsumexp(blocks[rows, target // D], dim=-1)
    subject = -torch.logsumexp(blocks[rows, :, target % D], dim=-1)
    return {"total": total.mean().item(), "relation": relation.mean().item(), "subject": subject.mean().item()}


TASKS = {FactualRecallTask.name: FactualRecallTask}
