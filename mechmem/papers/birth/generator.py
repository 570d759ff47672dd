"""Vectorised, seeded generator of the bigram task of "Birth of a Transformer" (as the authors' ``ihead_data.py``).

A sequence starts with z_1 ~ pi_u. Each of K triggers q_k is always followed by its output o_k; any other
token z_t is followed by z_{t+1} ~ pi_b(. | z_t). All sequences of a batch are stepped at once (one
``searchsorted`` per position instead of one Python draw per token), from one ``torch.Generator``.

Per-position label c_t (on input position t): the running count of trigger z_t's occurrences (1 at the first
occurrence) if z_t is a trigger, else 0. So c >= 2 marks an in-context-predictable target.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from jaxtyping import Float, Int
from torch import Tensor

from .tables import CharTables, shakespeare_tables

TRIGGER_MODES = ("fixed", "random")
OUTPUT_MODES = ("uniform", "bigram")
OUTPUT_SPLITS = (None, "train", "test")
TRAIN_OUTPUT_FRACTION = 0.75  # training outputs: ids 0..47 of 65 (the first 75 %), test outputs: ids 48..64


@dataclass(frozen=True)
class BigramSample:
    """One generated batch: inputs z_1..z_T, targets z_2..z_{T+1}, per-position counts c_t, triggers, outputs."""

    tokens: Int[Tensor, "batch pos"]
    targets: Int[Tensor, "batch pos"]
    counts: Int[Tensor, "batch pos"]
    triggers: Int[Tensor, "batch K"]
    outputs: Int[Tensor, "batch K"]


@dataclass
class BigramOptions:
    """Options of the bigram task (names follow the authors' flags where one exists).

    seq_len: T, the number of input positions (T + 1 tokens are drawn).
    n_triggers: K (0 means a pure global-bigram stream).
    trigger_mode: "fixed" = the K most frequent tokens under pi_u after skipping ``trigger_offset`` of them
        (``fixed_special_toks`` / ``special_toks_offset``); "random" = K tokens per sequence from pi_u without
        replacement.
    output_mode: "uniform" over the allowed outputs, or "bigram" = o_k ~ pi_b(. | q_k) (``bigram_outs``).
    no_repeat: force o_k != q_k.
    output_split: None (all tokens), "train" (ids below 75 % of N) or "test" (the rest): held-out outputs.
    output_counter: False gives c_t = 1 at every trigger occurrence (no running count).
    """

    seq_len: int = 256
    n_triggers: int = 5
    trigger_mode: str = "fixed"
    trigger_offset: int = 0
    output_mode: str = "uniform"
    no_repeat: bool = False
    output_split: str | None = None
    output_counter: bool = True

    def validate_options(self, n_vocab: int) -> None:
        """Raise ValueError naming the field and its allowed values, before any generation work."""
        if not isinstance(self.seq_len, int) or self.seq_len < 1:
            raise ValueError(f"seq_len must be a positive integer, got {self.seq_len!r}")
        if not isinstance(self.n_triggers, int) or not 0 <= self.n_triggers <= n_vocab:
            raise ValueError(
                f"n_triggers (K) must be an integer in [0, {n_vocab}] (the vocabulary size), got {self.n_triggers!r}"
            )
        if self.trigger_mode not in TRIGGER_MODES:
            raise ValueError(f"trigger_mode must be one of {TRIGGER_MODES}, got {self.trigger_mode!r}")
        if not isinstance(self.trigger_offset, int) or self.trigger_offset < 0:
            raise ValueError(f"trigger_offset must be a non-negative integer, got {self.trigger_offset!r}")
        if self.trigger_mode == "fixed" and self.trigger_offset + self.n_triggers > n_vocab:
            raise ValueError(
                f"trigger_offset={self.trigger_offset} leaves {n_vocab - self.trigger_offset} tokens, "
                f"too few for n_triggers={self.n_triggers} (need offset + K <= {n_vocab})"
            )
        if self.trigger_mode == "random" and self.trigger_offset:
            raise ValueError("trigger_offset applies only to trigger_mode='fixed'")
        if self.output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {OUTPUT_MODES}, got {self.output_mode!r}")
        if self.output_split not in OUTPUT_SPLITS:
            raise ValueError(f"output_split must be one of {OUTPUT_SPLITS}, got {self.output_split!r}")
        n_allowed = len(allowed_outputs(self.output_split, n_vocab))
        if n_allowed < (2 if self.no_repeat else 1):
            raise ValueError(
                f"output_split={self.output_split!r} leaves {n_allowed} output tokens; "
                f"no_repeat={self.no_repeat} needs at least {2 if self.no_repeat else 1}"
            )

    def options(self) -> BigramOptions:
        """A plain BigramOptions copy of these options (subclasses such as the Task carry extra fields)."""
        return BigramOptions(**{f.name: getattr(self, f.name) for f in fields(BigramOptions)})


def allowed_outputs(output_split: str | None, n_vocab: int) -> list[int]:
    """Output ids allowed by the train/test split (None: all ids)."""
    cut = int(round(TRAIN_OUTPUT_FRACTION * n_vocab)) - 1  # 65 -> 48: train ids 0..47
    if output_split is None:
        return list(range(n_vocab))
    return list(range(cut)) if output_split == "train" else list(range(cut, n_vocab))


def fixed_triggers(tables: CharTables, n_triggers: int, offset: int = 0) -> list[int]:
    """The K most frequent tokens under pi_u after skipping ``offset`` (ties broken by the lower id)."""
    order = sorted(range(tables.n), key=lambda i: (-int(tables.unigram_counts[i]), i))
    return order[offset : offset + n_triggers]


def _inverse_cdf(probs: Float[Tensor, "... N"]) -> Float[Tensor, "... N"]:
    """Cumulative distribution whose last entry is exactly 1.0, so searchsorted(right=True) of u in [0, 1)
    always lands on a token with positive probability."""
    cdf = probs.cumsum(-1)
    return cdf / cdf[..., -1:]


def draw_triggers(
    opts: BigramOptions, tables: CharTables, batch_size: int, generator: torch.Generator
) -> Int[Tensor, "batch K"]:
    if opts.trigger_mode == "fixed":
        q = torch.tensor(fixed_triggers(tables, opts.n_triggers, opts.trigger_offset), dtype=torch.long)
        return q.expand(batch_size, -1).clone()
    if opts.n_triggers == 0:
        return torch.zeros(batch_size, 0, dtype=torch.long)
    return torch.multinomial(
        tables.pi_u.expand(batch_size, -1), opts.n_triggers, replacement=False, generator=generator
    )


def draw_outputs(
    opts: BigramOptions, tables: CharTables, triggers: Int[Tensor, "batch K"], generator: torch.Generator
) -> Int[Tensor, "batch K"]:
    """o_k for every (sequence, trigger): uniform or pi_b(. | q_k), restricted to the allowed outputs."""
    b, k = triggers.shape
    if k == 0:
        return triggers.clone()
    allowed = torch.zeros(tables.n, dtype=torch.float64)
    allowed[allowed_outputs(opts.output_split, tables.n)] = 1.0
    if opts.output_mode == "bigram":
        probs = tables.pi_b[triggers] * allowed
        empty = probs.sum(-1, keepdim=True) == 0  # a trigger whose successors are all held out: uniform
        probs = torch.where(empty, allowed.expand_as(probs), probs)
    else:
        probs = allowed.expand(b, k, -1).clone()
    if opts.no_repeat:
        probs.scatter_(-1, triggers.unsqueeze(-1), 0.0)
        empty = probs.sum(-1, keepdim=True) == 0
        uniform_other = allowed.expand_as(probs).scatter(-1, triggers.unsqueeze(-1), 0.0)
        probs = torch.where(empty, uniform_other, probs)
    return torch.multinomial(probs.reshape(b * k, -1), 1, generator=generator).reshape(b, k)


def alias_tables(probs: Float[Tensor, "R N"]) -> tuple[Float[Tensor, "R N"], Int[Tensor, "R N"]]:
    """Walker's alias tables of each row of ``probs``: draw column m uniformly, keep it with probability
    ``keep[r, m]``, else take ``alias[r, m]``. Exact (up to float64 rounding) and O(1) per draw."""
    R, N = probs.shape
    keep = torch.ones(R, N, dtype=torch.float64)
    alias = torch.arange(N).repeat(R, 1)
    for r in range(R):
        scaled = (probs[r].double() / probs[r].sum() * N).tolist()
        small = [i for i, p in enumerate(scaled) if p < 1.0]
        large = [i for i, p in enumerate(scaled) if p >= 1.0]
        while small and large:
            s, g = small.pop(), large.pop()
            keep[r, s], alias[r, s] = scaled[s], g
            scaled[g] -= 1.0 - scaled[s]
            (small if scaled[g] < 1.0 else large).append(g)
        for i in small + large:  # leftovers are 1 up to rounding
            keep[r, i] = 1.0
    return keep, alias


def generate(
    opts: BigramOptions, batch_size: int, generator: torch.Generator, tables: CharTables | None = None
) -> BigramSample:
    """Draw ``batch_size`` sequences of the bigram task, all stepped together.

    The sequential part is a handful of batched tensor ops per position: an alias-method draw from
    pi_b(. | z_t) for every sequence at once (uniforms drawn up front), replaced by the forced output o_k where
    z_t = q_k. Counts c_t are computed afterwards with one cumulative sum.
    """
    tables = tables if tables is not None else shakespeare_tables()
    opts.validate_options(tables.n)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    T, N = opts.seq_len, tables.n
    triggers = draw_triggers(opts, tables, batch_size, generator)
    outputs = draw_outputs(opts, tables, triggers, generator)
    forced = torch.full((batch_size, N), -1, dtype=torch.long)  # forced[b, i] = o_k if i = q_k else -1
    forced.scatter_(1, triggers, outputs)
    keep, alias = _alias_cache(tables)
    keep, alias = keep.flatten(), alias.flatten()
    column = torch.randint(N, (T + 1, batch_size), generator=generator)
    u = torch.rand(T + 1, batch_size, generator=generator, dtype=torch.float64)
    z = torch.empty(T + 1, batch_size, dtype=torch.long)
    z[0] = torch.searchsorted(_inverse_cdf(tables.pi_u), u[0].contiguous(), right=True)
    rows = torch.arange(batch_size) * N
    for t in range(T):
        cell = z[t] * N + column[t + 1]
        draw = torch.where(u[t + 1] < keep[cell], column[t + 1], alias[cell])
        out = forced.view(-1)[rows + z[t]]
        z[t + 1] = torch.where(out >= 0, out, draw)
    z = z.T.contiguous()
    tokens = z[:, :T]
    hit = tokens.unsqueeze(-1) == triggers.unsqueeze(1)  # [B, T, K]
    counts = (hit.long().cumsum(1) * hit).sum(-1) if opts.output_counter else hit.any(-1).long()
    return BigramSample(tokens=tokens, targets=z[:, 1:], counts=counts, triggers=triggers, outputs=outputs)


_ALIAS: dict[int, tuple[Tensor, Tensor]] = {}


def _alias_cache(tables: CharTables) -> tuple[Tensor, Tensor]:
    key = id(tables)
    if key not in _ALIAS or _ALIAS[key][0] is not tables:
        _ALIAS[key] = (tables, alias_tables(tables.pi_b))
    return _ALIAS[key][1]


def bigram_floor(sample: BigramSample, tables: CharTables | None = None) -> float:
    """Best achievable cross-entropy (nats) at the global-bigram positions (c = 0) of a sample: the mean
    conditional entropy H(pi_b(. | z_t)) over those positions."""
    tables = tables if tables is not None else shakespeare_tables()
    pb = tables.pi_b
    h = -(pb * torch.where(pb > 0, pb.log(), torch.zeros_like(pb))).sum(-1)
    glob = sample.counts == 0
    return float(h[sample.tokens][glob].mean())
