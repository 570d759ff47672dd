"""Context hijacking inside the synthetic task (the paper's §6, App. C ``confusion_bar``): replace context tokens by
neighbours of another concept y' and see the prediction follow the evidence; activation patching of where the
answer is carried."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .generator import hamming, sample_context


def hijack_context(tokens: Tensor, y: Tensor, k: int, task, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Replace the first ``k`` context tokens by draws from N(y'), y' at Hamming distance >= 2 from y.

    Returns ``(hijacked tokens, y')``. The read-out position is the last one, so it is replaced only when k = L.
    """
    m = task.m
    masks = torch.arange(2**m)
    far = masks[hamming(masks, torch.zeros_like(masks)) >= 2]
    y_alt = y ^ far[torch.randint(0, len(far), y.shape, generator=generator)]
    out = tokens.clone()
    if k > 0:
        inserted, _ = sample_context(y_alt, k, m, task.parsed, 0.0, generator)
        out[:, :k] = inserted
    return out, y_alt


def balance_point(L: int, epsilon: float) -> float:
    """k* = (1 - epsilon) L / (2 - epsilon): the number of replaced tokens at which the k inserted neighbours of y'
    equal, in expectation, the (1 - epsilon)(L - k) neighbours of y left in the context (spec §5 (4): a memory
    that counts neighbours flips to y' there)."""
    return (1 - epsilon) * L / (2 - epsilon)


@torch.no_grad()
def hijack_rates(model: nn.Module, tokens: Tensor, y: Tensor, k: int, task, generator: torch.Generator) -> dict:
    """Replace ``k`` context tokens by neighbours of y': the fraction of predictions that become y', and that stay y."""
    hijacked, y_alt = hijack_context(tokens, y, k, task, generator)
    pred = model(hijacked)[:, -1].argmax(-1)
    return {
        "k": k,
        "flip_rate": (pred == y_alt).float().mean().item(),
        "still_correct": (pred == y).float().mean().item(),
    }


@torch.no_grad()
def patching_map(model: nn.Module, tokens: Tensor, y: Tensor, task, seed: int) -> dict:
    """Patch the clean ``hook_resid_pre`` at each position into the fully hijacked run; the metric is
    the mean logit difference y - y', normalised to 0 (hijacked) .. 1 (clean)."""
    from hooks.patching import patch_sweep

    L = tokens.shape[1]
    corrupted, y_alt = hijack_context(tokens, y, L, task, torch.Generator().manual_seed(seed + 78))

    def logit_diff(logits: Tensor) -> Tensor:
        last = logits[:, -1]
        return (last.gather(1, y[:, None]) - last.gather(1, y_alt[:, None])).mean()

    clean, corrupt = logit_diff(model(tokens)).item(), logit_diff(model(corrupted)).item()
    raw = patch_sweep(model, tokens, corrupted, logit_diff, sweep="resid_pre", progress=False)[0]
    effect = ((raw - corrupt) / (clean - corrupt)).tolist()
    return {
        "clean_logit_diff": clean,
        "corrupted_logit_diff": corrupt,
        "effect": effect,
        "effect_readout_position": effect[-1],
        "mean_effect_other_positions": sum(effect[:-1]) / max(1, len(effect) - 1),
        "sum_effect": sum(effect),
        "engine": "hooks.patching.patch_sweep(sweep='resid_pre')",
    }
