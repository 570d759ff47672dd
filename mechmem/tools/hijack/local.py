"""Small local language models and a word-level tokenizer for the hijack runner (no downloads).

- :class:`WordTokenizer`: words and punctuation, a fixed vocabulary, JSON save/load; unknown
  words raise ``ValueError`` (the runner turns that into a line-numbered record error).
- :func:`bag_of_words_model`: a 1-layer HookedTransformer whose next-token logits at position t
  are the token counts of positions 0..t divided by t+1 (uniform attention, identity OV, one-hot
  embeddings) — an associative memory driven only by context tokens, for which prepending
  "Do not think of X" provably favours X (a test of the runner with a known answer).
- :func:`tiny_random_model`: a randomly initialised small HookedTransformer (mechanics tests).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from hooks.weights import set_weight_
from mechmem.core.config import ModelConfig
from mechmem.core.models import build_model
from mechmem.storage.files import atomic_write_json

_WORD = re.compile(r"\w+|[^\w\s]")
SPECIALS = ("<pad>", "<bos>")


class WordTokenizer:
    """Whitespace/punctuation word tokenizer over a fixed vocabulary (ids 0, 1 = <pad>, <bos>)."""

    def __init__(self, vocab: Iterable[str]) -> None:
        words = list(dict.fromkeys([*SPECIALS, *vocab]))
        self.vocab = words
        self.ids = {w: i for i, w in enumerate(words)}
        self.pad_id, self.bos_id = 0, 1

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> WordTokenizer:
        return cls(sorted({w for t in texts for w in _WORD.findall(t)}))

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        words = _WORD.findall(text)
        unknown = [w for w in words if w not in self.ids]
        if unknown:
            raise ValueError(f"words not in the vocabulary: {unknown}")
        return [self.ids[w] for w in words]

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(self.vocab[i] for i in ids)

    def save(self, path: str | Path) -> Path:
        return atomic_write_json(path, {"kind": "word", "vocab": self.vocab})

    @classmethod
    def load(cls, path: str | Path) -> WordTokenizer:
        data = json.loads(Path(path).read_text())
        if data.get("kind") != "word" or not isinstance(data.get("vocab"), list):
            raise ValueError(f"{path}: not a WordTokenizer file (expected kind='word' and a vocab list)")
        return cls(data["vocab"][len(SPECIALS) :])


def tokenizer_for_records(records, extra_texts: Iterable[str] = ()) -> WordTokenizer:
    """A vocabulary covering every record's prompt, subject, targets and the hijack templates."""
    from .runner import GENERIC_TEMPLATE, RELATION_REVERSE_TEMPLATES, RELATION_TEMPLATES

    texts = [GENERIC_TEMPLATE, *RELATION_TEMPLATES.values(), *RELATION_REVERSE_TEMPLATES.values(), *extra_texts]
    for r in records:
        texts += [r.text, r.target_true, r.target_false, r.subject]
    return WordTokenizer.from_texts(texts)


def bag_of_words_model(d_vocab: int, n_ctx: int = 512) -> nn.Module:
    """Logits at position t = counts of each token among positions 0..t, divided by t+1 (see module doc)."""
    cfg = ModelConfig(
        n_layers=1,
        n_heads=1,
        d_model=d_vocab,
        d_vocab=d_vocab,
        n_ctx=n_ctx,
        attn_only=True,
        normalization=None,
        positional=False,
        use_bias=False,
        seed=0,
    )
    model = build_model(cfg)
    eye = torch.eye(d_vocab)
    set_weight_(model, "W_E", eye)
    set_weight_(model, "W_U", eye)
    set_weight_(model, "blocks.0.attn.W_Q", torch.zeros(1, d_vocab, d_vocab))
    set_weight_(model, "blocks.0.attn.W_K", torch.zeros(1, d_vocab, d_vocab))
    set_weight_(model, "blocks.0.attn.W_V", eye[None])
    set_weight_(model, "blocks.0.attn.W_O", eye[None])
    from mechmem.papers.lca.finish import remove_residual_  # the paper model's read-out: no residual stream

    remove_residual_(model)
    return model.eval()


def tiny_random_model(d_vocab: int, d_model: int = 32, n_layers: int = 2, n_ctx: int = 256, seed: int = 0) -> nn.Module:
    """A randomly initialised 2-layer HookedTransformer with MLPs (for mechanics tests)."""
    cfg = ModelConfig(
        n_layers=n_layers,
        n_heads=4,
        d_model=d_model,
        d_vocab=d_vocab,
        n_ctx=n_ctx,
        attn_only=False,
        normalization="LN",
        positional=True,
        use_bias=True,
        seed=seed,
    )
    return build_model(cfg).eval()
