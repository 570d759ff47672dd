"""Fig. 5: sequential learning and the hallucination stage, on the paper's linear-attention model (eq. 15).

One-hot (orthogonal) embeddings, so ``d`` = vocabulary size; linear attention read at EOS,
``out = sum_t (e_EOS^T A e_{z_t}) e_{z_t}``, and ``logits = V^T out`` over the ``R D`` answers. Only the EOS row
``a = A[EOS]`` of ``A`` enters the output, so the module keeps that row only (the other rows get zero gradient).
With token counts ``c[v]`` of a sequence, ``out = a * c`` exactly, which makes a step a pair of tiny matmuls.

Training as the authors' notebook: ``A = V = 1e-5`` (all ones), plain gradient descent, lr 0.1, fresh
minibatches of 1024, 8192 steps, the structured table ``a*(s, r) = 8 r + floor(s / 2)`` at S=16, R=4, D=8.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn
from tqdm.auto import tqdm

from mechmem.papers.factual.task import FactualRecallTask, decomposed_losses, token_counts


class LinearAttentionMemory(nn.Module):
    """The eq. 15 model: ``logits = V^T (a * counts)`` with ``a = A[EOS]`` (one-hot embeddings)."""

    def __init__(self, d_vocab: int, n_answers: int, init: float = 1e-5):
        super().__init__()
        self.d_vocab = d_vocab
        self.a = nn.Parameter(torch.full((d_vocab,), float(init)))
        self.V = nn.Parameter(torch.full((d_vocab, n_answers), float(init)))

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch answers"]:
        return self.forward_counts(token_counts(tokens, self.d_vocab))

    def forward_counts(self, counts: Float[Tensor, "batch d_vocab"]) -> Float[Tensor, "batch answers"]:
        return (counts * self.a) @ self.V


@dataclass
class DynamicsConfig:
    """Fig. 5's protocol (the authors' ``sequential-learning.ipynb``)."""

    S: int = 16
    R: int = 4
    D: int = 8
    seq_len: int = 32
    steps: int = 8192
    batch_size: int = 1024
    lr: float = 0.1
    init: float = 1e-5
    eval_every: int = 64
    eval_size: int = 16384
    seed: int = 0

    def __post_init__(self):
        for name in ("steps", "batch_size", "eval_every", "eval_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


def dynamics_task(cfg: DynamicsConfig) -> FactualRecallTask:
    return FactualRecallTask(S=cfg.S, R=cfg.R, D=cfg.D, seq_len=cfg.seq_len, table="structured")


@torch.no_grad()
def gd_step_(model: LinearAttentionMemory, counts: Tensor, target: Tensor, lr: float) -> None:
    """One plain gradient-descent step on the mean cross-entropy, gradients written out by hand
    (``dL/dV = X^T P``, ``dL/da = sum_b c * (P V^T)`` with ``X = a * c`` and ``P = softmax - onehot``, over B):
    the same update as autograd + ``torch.optim.SGD`` at a fraction of the per-step overhead."""
    X = counts * model.a
    P = torch.softmax(X @ model.V, dim=-1)
    P[torch.arange(len(target)), target] -= 1.0
    P /= len(target)
    grad_a = ((P @ model.V.T) * counts).sum(0)
    model.V.sub_(X.T @ P, alpha=lr)
    model.a.sub_(grad_a, alpha=lr)


def train_dynamics(cfg: DynamicsConfig, progress: bool = True) -> list[dict]:
    """Plain GD on fresh minibatches; returns one record per evaluation (step, total, relation, subject, accuracy)."""
    task = dynamics_task(cfg)
    model = LinearAttentionMemory(task.d_vocab, task.d_vocab_out, cfg.init)
    data = torch.Generator().manual_seed(cfg.seed)
    test = task.sample(cfg.eval_size, torch.Generator().manual_seed(cfg.seed + 1))
    test_counts, test_target = token_counts(test.tokens, task.d_vocab), test.targets[:, -1]
    history = []
    for step in tqdm(range(cfg.steps + 1), desc="fig5 dynamics", disable=not progress):
        if step % cfg.eval_every == 0 or step == cfg.steps:
            with torch.no_grad():
                logits = model.forward_counts(test_counts)
            acc = (logits.argmax(-1) == test_target).float().mean().item()
            history.append({"step": step, **decomposed_losses(logits, test_target, task.D), "accuracy": acc})
        if step == cfg.steps:
            break
        counts, answers, _ = task.sample_counts(cfg.batch_size, data)
        gd_step_(model, counts, answers, cfg.lr)
    return history


def stages(history: list[dict], R: int, D: int, threshold: float = 0.1, band: float = 0.1) -> dict:
    """Read the three stages off the loss curves.

    - ``stage1_end_step``: first evaluation with relation-only loss ``< threshold`` (the answer block is known);
    - ``stage2_end_step``: first evaluation with total loss ``< threshold`` (the facts are known);
    - ``plateau_loss``: mean total loss over the evaluations before half of stage 1;
    - hallucination window: evaluations after stage 1 whose subject-only loss is still within ``band`` of
      ``ln D`` (the subject is ignored); ``hallucination_loss`` / ``hallucination_relation_loss`` are the
      medians of the total / relation-only losses there, ``hallucination_steps`` its length.
    """
    steps = [h["step"] for h in history]
    s1 = next((h["step"] for h in history if h["relation"] < threshold), None)
    s2 = next((h["step"] for h in history if h["total"] < threshold), None)
    plateau = [h["total"] for h in history if s1 is None or h["step"] <= s1 / 2]
    window = [h for h in history if s1 is not None and h["step"] >= s1 and h["subject"] > math.log(D) - band]
    median = lambda xs: float(torch.tensor(xs).median()) if xs else float("nan")  # noqa: E731
    return {
        "stage1_end_step": s1,
        "stage2_end_step": s2,
        "plateau_loss": sum(plateau) / len(plateau) if plateau else float("nan"),
        "hallucination_loss": median([h["total"] for h in window]),
        "hallucination_relation_loss": median([h["relation"] for h in window]),
        "hallucination_steps": (window[-1]["step"] - window[0]["step"]) if window else 0,
        "final_loss": history[-1]["total"],
        "final_accuracy": history[-1]["accuracy"],
        "last_step": steps[-1],
        "ln_answers": math.log(R * D),
        "ln_D": math.log(D),
        "ln_R": math.log(R),
    }
