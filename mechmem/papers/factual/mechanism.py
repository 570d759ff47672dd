"""Where do the facts live? Hook experiments on an attention-heavy and an MLP-heavy model that both store every
fact (Fig. 4 right's two corners), plus a distractor-subject experiment (context hijacking in the toy model).

- attention mass at EOS on the subject, the relation and the noise tokens (``hook_pattern``);
- mean-ablating the MLP output at EOS (``hooks.ablation``); replacing each head's OV circuit by zero
  (``hooks.replace.replace_weights`` with ``OV(0, h)``) or mean-ablating the head's output ``hook_z`` at EOS;
- activation patching at the subject position between prompts that differ only in the subject
  (per head ``hook_v``; the whole ``hook_resid_pre`` as a sanity check). The subject's position differs between
  examples, so this uses a small per-example hook (``patch_at_positions``) rather than TransformerLens's
  ``generic_activation_patch``, which indexes one position for the whole batch;
- distractor: a second subject at a random noise position; how often the answer switches to its fact.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hooks.ablation import Ablation, run_with_ablations
from hooks.replace import OV, replace_weights
from mechmem.papers.factual.fit import fit_counts
from mechmem.papers.factual.model import build_factual_model
from mechmem.papers.factual.task import FactualRecallTask


def accuracy(logits: Tensor, answers: Tensor) -> float:
    return (logits[:, -1].argmax(-1) == answers).float().mean().item()


def attention_mass(model, batch) -> dict:
    """Mean attention (over heads and examples) from EOS to the subject, the relation, the noise and EOS."""
    _, cache = model.run_with_cache(batch.tokens, names_filter="blocks.0.attn.hook_pattern")
    pattern = cache["blocks.0.attn.hook_pattern"][:, :, -1, :]  # [B, H, T]
    rows = torch.arange(len(pattern))
    subject = pattern[rows, :, batch.labels["subject_pos"]]  # [B, H]
    relation = pattern[rows, :, batch.labels["relation_pos"]]
    eos = pattern[:, :, -1]
    noise = 1 - subject - relation - eos
    per_head = {
        "subject": subject.mean(0).tolist(),
        "relation": relation.mean(0).tolist(),
        "noise": noise.mean(0).tolist(),
    }
    return {
        "subject": subject.mean().item(),
        "relation": relation.mean().item(),
        "noise": noise.mean().item(),
        "eos": eos.mean().item(),
        "noise_per_token": noise.mean().item() / (batch.tokens.shape[1] - 3),
        "max_head_subject": max(per_head["subject"]),
        "max_head_relation": max(per_head["relation"]),
        "per_head": per_head,
    }


def ablations(model, batch, reference) -> dict:
    """Accuracy with the MLP mean-ablated, each head's OV zeroed, each head's output mean-ablated, all heads."""
    answers = batch.targets[:, -1]
    H = model.cfg.n_heads
    d = model.cfg.d_model
    with torch.no_grad():
        clean = accuracy(model(batch.tokens), answers)
        mlp = accuracy(
            run_with_ablations(
                model, batch.tokens, [Ablation("blocks.0.hook_mlp_out", "mean", positions=[-1], reference=reference)]
            ),
            answers,
        )
        ov_zero, head_mean = [], []
        for h in range(H):
            with replace_weights(model, {OV(0, h): torch.zeros(d, d)}):
                ov_zero.append(accuracy(model(batch.tokens), answers))
            head_mean.append(
                accuracy(
                    run_with_ablations(
                        model,
                        batch.tokens,
                        [Ablation("blocks.0.attn.hook_z", "mean", heads=[h], positions=[-1], reference=reference)],
                    ),
                    answers,
                )
            )
        all_mean = accuracy(
            run_with_ablations(
                model, batch.tokens, [Ablation("blocks.0.attn.hook_z", "mean", positions=[-1], reference=reference)]
            ),
            answers,
        )
    return {
        "clean": clean,
        "mlp_mean_ablated": mlp,
        "ov_zero_per_head": ov_zero,
        "head_mean_per_head": head_mean,
        "ov_zero_mean_accuracy": sum(ov_zero) / H,
        "head_mean_mean_accuracy": sum(head_mean) / H,
        "all_heads_mean_ablated": all_mean,
    }


def patch_at_positions(model, corrupted: Tensor, clean_cache, name: str, positions: Tensor, head: int | None):
    """Logits of ``corrupted`` with activation ``name`` at each example's ``positions[b]`` (and ``head``) taken
    from ``clean_cache``."""
    rows = torch.arange(len(corrupted))

    def patch(act, hook):
        act = act.clone()
        if head is None:
            act[rows, positions] = clean_cache[name][rows, positions]
        else:
            act[rows, positions, head] = clean_cache[name][rows, positions, head]
        return act

    return model.run_with_hooks(corrupted, fwd_hooks=[(name, patch)])


def subject_patching(model, task: FactualRecallTask, batch, generator: torch.Generator) -> dict:
    """Swap the subject for another one whose fact differs; patch the clean subject position back in.

    Metric: logit difference ``logit[a_clean] - logit[a_corrupt]`` at EOS, normalised so that 0 = corrupted run and
    1 = clean run (averaged over pairs).
    """
    s, r = batch.labels["subject"], batch.labels["relation"]
    other = (s + 1 + torch.randint(task.S - 1, s.shape, generator=generator)) % task.S
    a_clean, a_corr = task.answer(s, r), task.answer(other, r)
    keep = a_clean != a_corr
    clean_tokens = batch.tokens[keep]
    corrupted = clean_tokens.clone()
    pos = batch.labels["subject_pos"][keep]
    rows = torch.arange(len(pos))
    corrupted[rows, pos] = other[keep]
    a_clean, a_corr = a_clean[keep], a_corr[keep]

    def ld(logits):
        last = logits[:, -1]
        return (last[rows, a_clean] - last[rows, a_corr]).mean().item()

    names = ["blocks.0.hook_resid_pre", "blocks.0.attn.hook_v"]
    with torch.no_grad():
        clean_logits, cache = model.run_with_cache(clean_tokens, names_filter=names)
        base_clean, base_corr = ld(clean_logits), ld(model(corrupted))
        norm = lambda x: (x - base_corr) / (base_clean - base_corr)  # noqa: E731
        resid = norm(ld(patch_at_positions(model, corrupted, cache, names[0], pos, None)))
        heads = [
            norm(ld(patch_at_positions(model, corrupted, cache, names[1], pos, h))) for h in range(model.cfg.n_heads)
        ]
    return {
        "pairs": int(keep.sum()),
        "clean_logit_diff": base_clean,
        "corrupted_logit_diff": base_corr,
        "resid_pre_subject": resid,
        "value_per_head": heads,
        "value_max_head": max(heads),
        "value_sum_heads": sum(heads),
    }


def distractor_flip_rate(model, task: FactualRecallTask, batch, generator: torch.Generator) -> dict:
    """Put a second subject ``s'`` (with ``a*(s', r) != a*(s, r)``) at a random noise position.

    Returns the fraction of such prompts answered with the distractor's fact (``flip_rate``), with the original
    fact (``kept_rate``), and with anything else. The model has no positional information, so it cannot tell the
    two subjects apart: a bag-of-tokens reader should split about evenly between them.
    """
    s, r = batch.labels["subject"], batch.labels["relation"]
    other = (s + 1 + torch.randint(task.S - 1, s.shape, generator=generator)) % task.S
    keep = task.answer(s, r) != task.answer(other, r)
    tokens = batch.tokens[keep].clone()
    sp, rp = batch.labels["subject_pos"][keep], batch.labels["relation_pos"][keep]
    T = tokens.shape[1]
    # a uniform noise position: draw among the T-3 slots that are neither the subject's nor the relation's
    slot = torch.randint(T - 3, (len(tokens),), generator=generator)
    lo, hi = torch.minimum(sp, rp), torch.maximum(sp, rp)
    slot = slot + (slot >= lo).long()
    slot = slot + (slot >= hi).long()
    rows = torch.arange(len(tokens))
    tokens[rows, slot] = other[keep]
    with torch.no_grad():
        pred = model(tokens)[:, -1].argmax(-1)
    flip = (pred == task.answer(other[keep], r[keep])).float().mean().item()
    kept = (pred == task.answer(s[keep], r[keep])).float().mean().item()
    return {"prompts": len(tokens), "flip_rate": flip, "kept_rate": kept, "other_rate": 1 - flip - kept}


def train_corner(task: FactualRecallTask, H: int, m: int, steps: int, batch_size: int, seed: int = 0):
    """Train one of the two corner models (d=32, d_h=8) to full accuracy (early stop at 1.0)."""
    model = build_factual_model(task, d=32, H=H, d_h=8, m=m, seed=seed)
    fit = fit_counts(model, task, steps=steps, batch_size=batch_size, lr=1e-2, stop_at=1.0, seed=seed)
    model.eval()
    return model, fit


def analyse(model, task: FactualRecallTask, seed: int = 0, n: int = 1024) -> dict:
    """All hook measurements on one trained model."""
    g = torch.Generator().manual_seed(seed + 100)
    batch = task.sample(n, g)
    reference = task.sample(n, g).tokens
    with torch.no_grad():
        mass = attention_mass(model, batch)
    return {
        "attention_mass": mass,
        "ablations": ablations(model, batch, reference),
        "subject_patching": subject_patching(model, task, batch, g),
        "distractor": distractor_flip_rate(model, task, batch, g),
    }
