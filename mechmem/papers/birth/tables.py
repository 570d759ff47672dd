"""The tiny-Shakespeare character statistics of the bigram task (pi_u and pi_b of the paper).

The shipped table (``data/bigram_counts.npy``, int64 [65, 65], and ``data/vocab.json``) is regenerated from the
text by ``scripts/make_birth_tables.py``. Nothing here reads the text itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

DATA_DIR = Path(__file__).resolve().parent / "data"
N_CHARS = 65


@dataclass(frozen=True)
class CharTables:
    """Character vocabulary with unigram counts [N] and bigram counts [N, N] (row = previous character)."""

    vocab: tuple[str, ...]
    unigram_counts: Int[np.ndarray, "N"]
    bigram_counts: Int[np.ndarray, "N N"]

    def __post_init__(self) -> None:
        validate_counts(self.unigram_counts, self.bigram_counts, len(self.vocab))

    @property
    def n(self) -> int:
        return len(self.vocab)

    @property
    def pi_u(self) -> Float[Tensor, "N"]:
        """Unigram distribution (raw character frequencies), float64."""
        u = torch.as_tensor(self.unigram_counts, dtype=torch.float64)
        return u / u.sum()

    @property
    def pi_b(self) -> Float[Tensor, "N N"]:
        """Row-normalised bigram distribution pi_b(j | i), float64. A row without counts falls back to pi_u."""
        b = torch.as_tensor(self.bigram_counts, dtype=torch.float64)
        rows = b.sum(1, keepdim=True)
        return torch.where(rows > 0, b / rows.clamp_min(1.0), self.pi_u.expand_as(b))

    def ids(self, chars: str) -> list[int]:
        """Token ids of a string of characters (ValueError for characters outside the vocabulary)."""
        index = {c: i for i, c in enumerate(self.vocab)}
        missing = sorted(set(chars) - set(index))
        if missing:
            raise ValueError(f"characters {missing!r} are not in the {self.n}-character vocabulary")
        return [index[c] for c in chars]

    def decode(self, ids) -> str:
        return "".join(self.vocab[int(i)] for i in ids)


def validate_counts(unigram: np.ndarray, bigram: np.ndarray, n: int) -> None:
    """Raise ValueError unless unigram is [n] and bigram [n, n], both finite, non-negative, with positive mass."""
    unigram, bigram = np.asarray(unigram), np.asarray(bigram)
    if unigram.shape != (n,):
        raise ValueError(f"unigram_counts must have shape ({n},) to match the vocabulary, got {unigram.shape}")
    if bigram.shape != (n, n):
        raise ValueError(f"bigram_counts must have shape ({n}, {n}) to match the vocabulary, got {bigram.shape}")
    for name, arr in (("unigram_counts", unigram), ("bigram_counts", bigram)):
        if not np.issubdtype(arr.dtype, np.number) or not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} must hold finite numbers")
        if (arr < 0).any():
            raise ValueError(f"{name} must be non-negative; found {int((arr < 0).sum())} negative entries")
        if arr.sum() <= 0:
            raise ValueError(f"{name} must have a positive total count")


def tables_from_bigram(bigram_counts, vocab=None) -> CharTables:
    """Build tables from a bigram count matrix alone (unigram = row sums), e.g. for synthetic tests."""
    bigram = np.asarray(bigram_counts)
    if bigram.ndim != 2 or bigram.shape[0] != bigram.shape[1]:
        raise ValueError(f"bigram_counts must be a square [N, N] matrix, got shape {bigram.shape}")
    vocab = tuple(vocab) if vocab is not None else tuple(str(i) for i in range(bigram.shape[0]))
    validate_counts(bigram.sum(1), bigram, len(vocab))
    return CharTables(vocab, bigram.sum(1), bigram)


@lru_cache(maxsize=1)
def shakespeare_tables() -> CharTables:
    """The shipped 65-character tiny-Shakespeare tables (unigram = bigram row sums + the file's last character)."""
    meta = json.loads((DATA_DIR / "vocab.json").read_text(encoding="utf-8"))
    bigram = np.load(DATA_DIR / "bigram_counts.npy", allow_pickle=False)
    tables = CharTables(tuple(meta["vocab"]), np.asarray(meta["unigram_counts"], dtype=np.int64), bigram)
    if tables.n != N_CHARS:
        raise ValueError(f"shipped vocabulary has {tables.n} characters, expected {N_CHARS}")
    return tables
