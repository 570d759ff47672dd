"""Time one training step of a toy HookedTransformer against plain PyTorch with the same math.

Model: 2 layers, attention only, d_model 128, 1 head, vocab 65, 256 positions, batch 64.
The baseline is a plain ``nn.Module`` holding copies of the same parameters and computing the
same function with ``F.scaled_dot_product_attention``. Both run in this process, alternating,
so machine load affects both alike. Prints the median time ratio as ``ratio=<value>``.

    python benchmarks/train_step.py [--reps 7] [--steps 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mechmem import ModelConfig, build_model
from mechmem.threads import DEFAULT_THREADS

CFG = ModelConfig(n_layers=2, n_heads=1, d_model=128, d_vocab=65, n_ctx=256, attn_only=True, use_bias=True)
BATCH = 64


class PlainAttnOnly(nn.Module):
    """The same attention-only transformer in plain PyTorch (parameters copied from ``hooked``)."""

    def __init__(self, hooked):
        super().__init__()
        copy = lambda t: nn.Parameter(t.detach().clone())  # noqa: E731
        self.W_E, self.W_pos, self.W_U, self.b_U = (
            copy(hooked.W_E),
            copy(hooked.W_pos),
            copy(hooked.W_U),
            copy(hooked.b_U),
        )
        self.layers = nn.ParameterList()
        for block in hooked.blocks:
            a = block.attn
            self.layers.extend(copy(w) for w in (a.W_Q, a.W_K, a.W_V, a.W_O, a.b_Q, a.b_K, a.b_V, a.b_O))

    def forward(self, tokens: Tensor) -> Tensor:
        x = self.W_E[tokens] + self.W_pos[: tokens.shape[1]]
        for i in range(0, len(self.layers), 8):
            W_Q, W_K, W_V, W_O, b_Q, b_K, b_V, b_O = self.layers[i : i + 8]
            q = torch.einsum("bpm,hmd->bhpd", x, W_Q) + b_Q[None, :, None]
            k = torch.einsum("bpm,hmd->bhpd", x, W_K) + b_K[None, :, None]
            v = torch.einsum("bpm,hmd->bhpd", x, W_V) + b_V[None, :, None]
            z = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + torch.einsum("bhpd,hdm->bpm", z, W_O) + b_O
        return x @ self.W_U + self.b_U


def step_time(model: nn.Module, tokens: Tensor, steps: int) -> float:
    """Seconds per Adam step (forward, loss on every position, backward, update)."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    for _ in range(steps):
        logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="torch threads (default: mechmem's, 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    hooked = build_model(CFG)
    plain = PlainAttnOnly(hooked)
    tokens = torch.randint(CFG.d_vocab, (BATCH, CFG.n_ctx + 1), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (hooked(tokens[:, :-1]) - plain(tokens[:, :-1])).abs().max().item()
    assert diff < 1e-4, f"the plain model does not compute the same function (max diff {diff})"

    step_time(hooked, tokens, 1), step_time(plain, tokens, 1)  # warm-up
    ratios, t_hooked, t_plain = [], [], []
    for _ in range(args.reps):
        h, p = step_time(hooked, tokens, args.steps), step_time(plain, tokens, args.steps)
        t_hooked.append(h), t_plain.append(p), ratios.append(h / p)
    print(
        f"hooked: {statistics.median(t_hooked) * 1e3:.1f} ms/step  plain: {statistics.median(t_plain) * 1e3:.1f} "
        f"ms/step  (max logit diff {diff:.2e}, {torch.get_num_threads()} threads)"
    )
    print(f"ratio={statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
