"""Context hijacking of a language model (the paper's Section 3): prepend k sentences, measure ES.

For every record and k = 0..K, the prompt is ``prefix * k + record.text``; the Efficacy Score
ES(k) is the fraction of records where the model prefers ``target_false`` (CounterFact's
``target_new``) over ``target_true`` after the hijacked prompt. Schemes (templates inferred,
ours; override ``RELATION_TEMPLATES`` / pass ``templates=``):

- ``generic``: "Do not think of {target_false}." (Fig. 2a: the "elephant" effect);
- ``relation``: a factually true sentence about the subject that mentions target_false (Fig. 2b);
- ``generic_reverse`` / ``relation_reverse``: the same with target_true (should push ES down).

Scoring (``score=``): ``first_token`` compares the probabilities of the two targets' first
tokens at the next position; ``sequence`` compares the full target log-probabilities (as in
ROME's evaluation). Works with any TransformerLens model and a :class:`TextCodec`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from mechmem.storage.files import atomic_write_json

from .records import CounterFactRecord

SCHEMES = ("generic", "relation", "generic_reverse", "relation_reverse")
SCORES = ("first_token", "sequence")
GENERIC_TEMPLATE = "Do not think of {target}."
#: relation-based sentences that are true and mention target_false (negations); our inference (the paper's
#: sentences are not public).
RELATION_TEMPLATES = {
    "P190": "{subject} is not a twin city of {target}.",
    "P103": "The mother tongue of {subject} is not {target}.",
    "P131": "{subject} is not located in {target}.",
    "P641": "{subject} does not play {target}.",
    "P1412": "{subject} does not speak {target}.",
}
#: reverse relation-based sentences: true statements that mention target_true.
RELATION_REVERSE_TEMPLATES = {
    "P190": "{subject} is a twin city of {target}.",
    "P103": "The mother tongue of {subject} is {target}.",
    "P131": "{subject} is located in {target}.",
    "P641": "{subject} plays {target}.",
    "P1412": "{subject} speaks {target}.",
}


@runtime_checkable
class TextCodec(Protocol):
    """What the runner needs from a tokenizer: ``encode(text) -> ids`` (raise ``ValueError`` for text
    it cannot encode), ``bos_id`` (``None``: no BOS) and ``pad_id``."""

    bos_id: int | None
    pad_id: int

    def encode(self, text: str) -> list[int]: ...


class HFCodec:
    """A Hugging Face tokenizer (e.g. ``model.tokenizer`` of a bridge from ``boot_transformers``)."""

    def __init__(self, tokenizer, prepend_bos: bool = True) -> None:
        self.tokenizer = tokenizer
        self.bos_id = tokenizer.bos_token_id if prepend_bos else None
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def encode(self, text: str) -> list[int]:
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        unk = self.tokenizer.unk_token_id
        if not ids or (unk is not None and unk in ids and self.tokenizer.unk_token not in text):
            raise ValueError(f"the tokenizer cannot encode {text!r}")
        return list(ids)


def codec_for(model: nn.Module) -> HFCodec:
    """The codec of a model (either kind) that carries a Hugging Face tokenizer."""
    if getattr(model, "tokenizer", None) is None:
        raise ValueError("the model has no tokenizer; pass a codec (e.g. mechmem.tools.hijack.local.WordTokenizer)")
    return HFCodec(model.tokenizer, prepend_bos=bool(getattr(model.cfg, "default_prepend_bos", True)))


def prefix_sentence(
    record: CounterFactRecord, scheme: str, templates: dict[str, dict[str, str]] | None = None
) -> str | None:
    """The sentence prepended by ``scheme`` for ``record`` (``None``: no template for its relation)."""
    if scheme not in SCHEMES:
        raise ValueError(f"scheme {scheme!r} does not exist; allowed schemes: {list(SCHEMES)}")
    target = record.target_true if scheme.endswith("_reverse") else record.target_false
    if scheme.startswith("generic"):
        return GENERIC_TEMPLATE.format(target=target)
    table = (templates or {}).get(scheme) or (
        RELATION_REVERSE_TEMPLATES if scheme.endswith("_reverse") else RELATION_TEMPLATES
    )
    template = table.get(record.relation_id)
    return None if template is None else template.format(subject=record.subject, target=target)


def hijacked_prompt(record: CounterFactRecord, scheme: str, k: int, templates=None) -> str:
    """``k`` copies of the scheme's sentence, then the factual prompt, joined by spaces."""
    sentence = prefix_sentence(record, scheme, templates)
    if sentence is None:
        raise ValueError(f"line {record.line}: no {scheme} template for relation {record.relation_id}")
    return " ".join([sentence] * k + [record.text])


@dataclass
class HijackResult:
    """ES per k for each scheme, with the records each scheme used and those it excluded (and why)."""

    k: list[int]
    efficacy: dict[str, list[float]]
    n_records: dict[str, int]
    excluded: dict[str, list[dict]]
    score: str
    model_name: str = ""
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "k": self.k,
            "efficacy": self.efficacy,
            "n_records": self.n_records,
            "excluded": self.excluded,
            "score": self.score,
            "model": self.model_name,
            **self.extra,
        }

    def figure(self):
        """ES vs k, one line per scheme (a standalone matplotlib ``Figure``)."""
        from mechmem.pages.figures import subplots

        fig, ax = subplots(figsize=(5.5, 3.8))
        for scheme, es in self.efficacy.items():
            ax.plot(self.k, es, "o-", label=f"{scheme.replace('_', ', ')} scheme ({self.n_records[scheme]} records)")
        ax.set(
            xlabel="number of prepended sentences k",
            ylim=(-0.02, 1.02),
            ylabel="efficacy score (fraction with P(false) > P(true))",
            title=f"Context hijacking: {self.model_name}",
        )
        ax.legend(fontsize=8)
        return fig

    def save(self, out: str | Path) -> list[Path]:
        """``out/hijack.json`` and ``out/figures/hijack.png``, written atomically."""
        from mechmem.pages.figures import save_figure

        out = Path(out)
        return [
            atomic_write_json(out / "hijack.json", self.to_dict()),
            save_figure(self.figure(), out / "figures" / "hijack.png"),
        ]


def _encode_targets(record: CounterFactRecord, codec: TextCodec) -> tuple[list[int], list[int]]:
    """Token ids of ``" " + target`` for both targets; an unencodable target names its record."""
    out = []
    for name, target in (("target_true", record.target_true), ("target_new", record.target_false)):
        try:
            ids = codec.encode(" " + target)
        except (ValueError, KeyError) as err:
            raise ValueError(f"line {record.line}: field {name!r} ({target!r}) cannot be encoded: {err}") from None
        if not ids:
            raise ValueError(f"line {record.line}: field {name!r} ({target!r}) encodes to no tokens")
        out.append(ids)
    return out[0], out[1]


@torch.no_grad()
def _sequence_logprobs(
    model: nn.Module, prompts: list[list[int]], continuations: list[list[int]], pad_id: int, batch_size: int
) -> Tensor:
    """log P(continuation | prompt) for each pair (right-padded batches; causal, so padding is inert)."""
    scores = []
    for start in range(0, len(prompts), batch_size):
        chunk = list(zip(prompts[start : start + batch_size], continuations[start : start + batch_size]))
        seqs = [p + c[:-1] for p, c in chunk]
        width = max(len(s) for s in seqs)
        tokens = torch.full((len(seqs), width), pad_id, dtype=torch.long)
        for i, s in enumerate(seqs):
            tokens[i, : len(s)] = torch.tensor(s)
        logprobs = model(tokens).log_softmax(-1)
        for i, (p, c) in enumerate(chunk):
            positions = torch.arange(len(p) - 1, len(p) - 1 + len(c))
            scores.append(logprobs[i, positions, torch.tensor(c)].sum())
    return torch.stack(scores)


def check_options(schemes: Sequence[str], max_k: int, score: str, batch_size: int) -> None:
    """Validate the runner's options (before any model is loaded or run)."""
    if not schemes:
        raise ValueError(f"schemes: give at least one of {list(SCHEMES)}")
    for scheme in schemes:
        if scheme not in SCHEMES:
            raise ValueError(f"scheme {scheme!r} does not exist; allowed schemes: {list(SCHEMES)}")
    if score not in SCORES:
        raise ValueError(f"score {score!r} does not exist; allowed: {list(SCORES)}")
    if isinstance(max_k, bool) or not isinstance(max_k, int) or max_k < 0:
        raise ValueError(f"max_k must be an int >= 0, got {max_k!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")


def run_hijack(
    model: nn.Module,
    records: Sequence[CounterFactRecord],
    codec: TextCodec | None = None,
    schemes: Sequence[str] = SCHEMES,
    max_k: int = 10,
    score: str = "first_token",
    batch_size: int = 16,
    templates: dict[str, dict[str, str]] | None = None,
    model_name: str = "",
    progress: bool = True,
) -> HijackResult:
    """ES(k), k = 0..max_k, for each scheme; see the module docstring.

    Records whose two targets start with the same token (``first_token`` scoring) and, for the
    relation schemes, records whose relation has no template are excluded and listed with their
    line numbers in ``result.excluded``. Every other problem raises ``ValueError`` before any
    forward pass.
    """
    schemes = list(schemes)
    check_options(schemes, max_k, score, batch_size)
    if not records:
        raise ValueError("no records")
    codec = codec or codec_for(model)
    bos = [] if codec.bos_id is None else [codec.bos_id]
    targets = {r.line: _encode_targets(r, codec) for r in records}
    plan: dict[str, list[tuple[CounterFactRecord, list[list[int]]]]] = {}
    excluded: dict[str, list[dict]] = {}
    for scheme in schemes:
        plan[scheme], excluded[scheme] = [], []
        for r in records:
            true_ids, false_ids = targets[r.line]
            if score == "first_token" and true_ids[0] == false_ids[0]:
                excluded[scheme].append({"line": r.line, "reason": "targets share their first token"})
                continue
            if prefix_sentence(r, scheme, templates) is None:
                excluded[scheme].append({"line": r.line, "reason": f"no {scheme} template for {r.relation_id}"})
                continue
            try:
                prompts = [bos + codec.encode(hijacked_prompt(r, scheme, k, templates)) for k in range(max_k + 1)]
            except (ValueError, KeyError) as err:
                raise ValueError(f"line {r.line}: the {scheme} prompt cannot be encoded: {err}") from None
            n_ctx = model.cfg.n_ctx
            longest = len(prompts[-1]) + (max(len(true_ids), len(false_ids)) if score == "sequence" else 0)
            if longest > n_ctx:
                raise ValueError(
                    f"line {r.line}: the {scheme} prompt with k={max_k} is {longest} tokens, "
                    f"longer than the model's n_ctx={n_ctx}; lower max_k"
                )
            plan[scheme].append((r, prompts))
    was_training = model.training
    model.eval()
    efficacy = {}
    try:
        for scheme in tqdm(schemes, desc="hijack schemes", disable=not progress):
            es = []
            for k in range(max_k + 1):
                es.append(
                    _efficacy(
                        model, [(p[k], targets[r.line]) for r, p in plan[scheme]], score, codec.pad_id, batch_size
                    )
                )
            efficacy[scheme] = es
    finally:
        model.train(was_training)
    return HijackResult(
        list(range(max_k + 1)), efficacy, {s: len(plan[s]) for s in schemes}, excluded, score, model_name
    )


def _efficacy(
    model, items: list[tuple[list[int], tuple[list[int], list[int]]]], score: str, pad_id: int, batch_size: int
) -> float:
    """Fraction of items where the false target scores higher than the true one (nan if no items)."""
    if not items:
        return float("nan")
    prompts = [p for p, _ in items]
    if score == "first_token":
        last = _next_token_logprobs(model, prompts, pad_id, batch_size)
        true = last.gather(1, torch.tensor([[t[0][0]] for _, t in items]))[:, 0]
        false = last.gather(1, torch.tensor([[t[1][0]] for _, t in items]))[:, 0]
    else:
        true = _sequence_logprobs(model, prompts, [t[0] for _, t in items], pad_id, batch_size)
        false = _sequence_logprobs(model, prompts, [t[1] for _, t in items], pad_id, batch_size)
    return (false > true).float().mean().item()


@torch.no_grad()
def _next_token_logprobs(model: nn.Module, prompts: list[list[int]], pad_id: int, batch_size: int) -> Tensor:
    """log P(next token | prompt) at each prompt's last position, ``[n_prompts, d_vocab]`` (right-padded)."""
    rows = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        width = max(len(p) for p in chunk)
        tokens = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        for i, p in enumerate(chunk):
            tokens[i, : len(p)] = torch.tensor(p)
        logits = model(tokens)
        rows.append(logits[torch.arange(len(chunk)), torch.tensor([len(p) - 1 for p in chunk])].log_softmax(-1))
    return torch.cat(rows)


def is_monotone(values: Sequence[float], tolerance: float = 0.0) -> bool:
    """Non-decreasing up to ``tolerance`` per step."""
    return all(b >= a - tolerance for a, b in zip(values, values[1:]))
