"""Regenerate the character tables shipped with ``mechmem.papers.birth``.

Reads the tiny Shakespeare text (``--text``, e.g. karpathy/char-rnn's ``tinyshakespeare/input.txt``), and writes

- ``mechmem/papers/birth/data/bigram_counts.npy``: int64 [65, 65], counts of consecutive pairs (i, j);
- ``mechmem/papers/birth/data/vocab.json``: the sorted character list, the unigram counts (row sums of the
  bigram table plus one for the file's last character) and the source's length, for checking.

Nothing in the package reads the text at run time; this script is only run to rebuild the shipped tables.

Usage: ``python scripts/make_birth_tables.py --text PATH [--out DIR]``
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np

from mechmem.storage.files import atomic_write_bytes, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "mechmem" / "papers" / "birth" / "data"


def char_tables(text: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Return (vocab, unigram counts [N], bigram counts [N, N]) of a text, vocab sorted as the authors do."""
    vocab = sorted(set(text))
    index = {ch: i for i, ch in enumerate(vocab)}
    ids = np.fromiter((index[ch] for ch in text), dtype=np.int64, count=len(text))
    n = len(vocab)
    bigram = np.bincount(ids[:-1] * n + ids[1:], minlength=n * n).reshape(n, n).astype(np.int64)
    unigram = np.bincount(ids, minlength=n).astype(np.int64)
    return vocab, unigram, bigram


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", type=Path, required=True, help="the tiny Shakespeare text file")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    text = args.text.read_text(encoding="utf-8")
    vocab, unigram, bigram = char_tables(text)
    assert unigram.sum() == bigram.sum() + 1, "unigram must be bigram row sums plus the last character"
    args.out.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.save(buf, bigram, allow_pickle=False)
    atomic_write_bytes(args.out / "bigram_counts.npy", buf.getvalue())
    meta = {
        "vocab": vocab,
        "unigram_counts": unigram.tolist(),
        "last_char": text[-1],
        "n_chars": len(text),
        "source": "tinyshakespeare.txt",
    }
    atomic_write_text(args.out / "vocab.json", json.dumps(meta, indent=1))
    print(
        f"wrote {args.out}: {len(vocab)} characters, {len(text)} characters of text, "
        f"{int((bigram > 0).sum())} non-zero bigrams"
    )


if __name__ == "__main__":
    main()
