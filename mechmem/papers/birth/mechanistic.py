"""Mechanistic checks of a trained (or hand-built) bigram-task model, with the ``hooks`` tools and
TransformerLens pieces: head-detector scores, head ablations, activation patching, CircuitsVis views.

- Head scores use TransformerLens's ``head_detector`` detection patterns and its "mul" similarity score (the
  share of a head's attention that falls on the pattern). The previous-token score uses every query; the
  induction score uses the query rows where the task makes the induction pattern the right one (c >= 2), since
  with fixed triggers the induction head has nothing to do elsewhere.
- Ablation zero-ablates a layer's heads at ``blocks.{l}.attn.hook_z`` (``hooks.ablation``).
- Patching: two sequences that differ only in the output token after a trigger's first occurrence; the clean
  residual stream is patched into the corrupted run at every (layer, position) (``hooks.patching``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.head_detector import (
    compute_head_attention_similarity_score,
    get_induction_head_detection_pattern,
    get_previous_token_head_detection_pattern,
)

from hooks.ablation import Ablation, run_with_ablations
from hooks.patching import patch_sweep
from hooks.state import preserved_state
from mechmem.tasks.base import Batch

from .task import incontext_metrics


def attention_patterns(model, tokens: Int[Tensor, "batch pos"]) -> list[Float[Tensor, "batch head q k"]]:
    """Every layer's ``hook_pattern`` (cached with a ``names_filter``; eval mode, no grad, state restored)."""
    names = [f"blocks.{l}.attn.hook_pattern" for l in range(model.cfg.n_layers)]
    with preserved_state(model), torch.no_grad():
        model.eval()
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    return [cache[n] for n in names]


def head_scores(model, batch: Batch, n_sequences: int = 8) -> dict[str, list[list[float]]]:
    """Per (layer, head) scores ("mul" measure), averaged over sequences: previous-token (every query),
    previous-token after a trigger (queries whose previous token is a trigger, where the circuit needs it) and
    induction (queries at c >= 2)."""
    tokens = batch.tokens[:n_sequences]
    counts = batch.labels["count"][:n_sequences]
    patterns = attention_patterns(model, tokens)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    prev = torch.zeros(L, H)
    prev_after = torch.zeros(L, H)
    ind = torch.zeros(L, H)
    n_ind = n_after = 0
    for b in range(tokens.shape[0]):
        prev_pat = get_previous_token_head_detection_pattern(tokens[b : b + 1])
        ind_pat = get_induction_head_detection_pattern(tokens[b : b + 1])
        rows = (counts[b] >= 2).float().unsqueeze(-1)  # in-context-predictable queries only
        n_ind += int(rows.sum() > 0)
        after = torch.zeros_like(rows)  # queries right after a trigger: the keys the induction head reads
        after[1:] = (counts[b, :-1] >= 1).float().unsqueeze(-1)
        n_after += int(after.sum() > 0)
        for l in range(L):
            for h in range(H):
                A = patterns[l][b, h]
                prev[l, h] += compute_head_attention_similarity_score(
                    A, prev_pat, exclude_bos=False, exclude_current_token=False, error_measure="mul"
                )
                if after.sum() > 0:
                    prev_after[l, h] += compute_head_attention_similarity_score(
                        A * after, prev_pat * after, exclude_bos=False, exclude_current_token=False, error_measure="mul"
                    )
                if rows.sum() > 0:
                    ind[l, h] += compute_head_attention_similarity_score(
                        A * rows, ind_pat * rows, exclude_bos=False, exclude_current_token=False, error_measure="mul"
                    )
    n = tokens.shape[0]
    return {
        "previous_token": (prev / n).tolist(),
        "previous_token_after_trigger": (prev_after / max(n_after, 1)).tolist(),
        "induction": (ind / max(n_ind, 1)).tolist(),
    }


def layer_ablations(model, batch: Batch) -> dict[str, dict[str, float]]:
    """In-context accuracy and losses with no ablation and with each layer's heads zero-ablated (hook_z)."""
    out = {"clean": _metrics(model, batch, [])}
    for layer in range(model.cfg.n_layers):
        out[f"layer{layer + 1}_zero"] = _metrics(model, batch, [Ablation(("z", layer), "zero")])
    return out


def _metrics(model, batch: Batch, ablations) -> dict[str, float]:
    if ablations:
        logits = run_with_ablations(model, batch.tokens, ablations)
    else:
        with preserved_state(model), torch.no_grad():
            model.eval()
            logits = model(batch.tokens)
    return incontext_metrics(logits, batch)


@dataclass
class PatchingPair:
    """Clean and corrupted sequences (differing at ``changed`` only) and the query position ``query`` (the
    trigger's second occurrence), with the clean answer and the corrupted answer."""

    clean: Int[Tensor, "1 pos"]
    corrupted: Int[Tensor, "1 pos"]
    changed: int
    query: int
    answer: int
    wrong: int


def patching_pair(batch: Batch, vocab_size: int, generator: torch.Generator, min_gap: int = 4) -> PatchingPair | None:
    """Find a sequence with a trigger occurring twice where its output differs from the trigger, and build the
    corrupted copy: the output after the first occurrence replaced by another non-trigger token (the two
    occurrences at least ``min_gap`` positions apart)."""
    counts, tokens = batch.labels["count"], batch.tokens
    for b in range(tokens.shape[0]):
        for t in torch.nonzero(counts[b] == 2).flatten().tolist():
            q = int(tokens[b, t])
            first = int(torch.nonzero((tokens[b, :t] == q) & (counts[b, :t] == 1)).flatten()[0])
            answer = int(tokens[b, first + 1]) if first + 1 < tokens.shape[1] else -1
            triggers = set(batch.labels["triggers"][b].tolist())
            if answer < 0 or answer in triggers or t - first < min_gap:
                continue
            choices = [v for v in range(vocab_size) if v != answer and v not in triggers]
            wrong = choices[int(torch.randint(len(choices), (1,), generator=generator))]
            clean = tokens[b : b + 1, : t + 1].clone()
            corrupted = clean.clone()
            corrupted[0, first + 1] = wrong
            return PatchingPair(clean, corrupted, first + 1, t, answer, wrong)
    return None


def patching_sweep(model, pair: PatchingPair) -> dict:
    """Restored fraction of the clean logit difference (answer - wrong) at the query, patching the clean
    ``resid_pre`` of every layer (and the final ``resid_post``) at every position into the corrupted run."""

    def logit_diff(logits):
        return logits[:, pair.query, pair.answer] - logits[:, pair.query, pair.wrong]

    with preserved_state(model), torch.no_grad():
        model.eval()
        clean_diff = float(logit_diff(model(pair.clean)))
        corrupt_diff = float(logit_diff(model(pair.corrupted)))
    pre = patch_sweep(model, pair.clean, pair.corrupted, logit_diff, "resid_pre", progress=False)
    last = model.cfg.n_layers - 1
    post = patch_sweep(model, pair.clean, pair.corrupted, logit_diff, "resid_post", layers=[last], progress=False)
    values = torch.cat([pre, post.reshape(-1, pre.shape[1])[-1:]], 0)
    denom = clean_diff - corrupt_diff
    restored = (values - corrupt_diff) / denom if abs(denom) > 1e-6 else torch.full_like(values, float("nan"))
    return {
        "clean_logit_diff": clean_diff,
        "corrupted_logit_diff": corrupt_diff,
        "rows": [f"resid_pre {l}" for l in range(model.cfg.n_layers)] + [f"resid_post {last}"],
        "restored": restored.tolist(),
        "changed_position": pair.changed,
        "query_position": pair.query,
        "answer": pair.answer,
        "wrong": pair.wrong,
        "clean_tokens": pair.clean[0].tolist(),
    }


def attention_views(model, tokens: Int[Tensor, "pos"], token_strings: list[str]) -> dict[int, object]:
    """CircuitsVis ``attention_heads`` views, one per layer (RenderedHTML; save ``.local_src`` for offline)."""
    import circuitsvis as cv

    patterns = attention_patterns(model, tokens[None])
    return {
        l: cv.attention.attention_heads(
            attention=p[0], tokens=token_strings, attention_head_names=[f"L{l + 1}H{h}" for h in range(p.shape[1])]
        )
        for l, p in enumerate(patterns)
    }
