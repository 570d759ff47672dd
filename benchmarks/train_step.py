"""Time one training step of toy HookedTransformers against plain PyTorch with the same math.

Models (vocab 65, 256 positions, batch 64):

- ``ratio``: 2 layers, attention only, d_model 128, 1 head, biases;
- ``ratio_mlp``: 2 layers with ReLU MLPs and LayerNorm, d_model 128, 4 heads.

Each step is one Adam step (forward, cross-entropy on every position, backward, update). For each
model three variants run in this process, alternating, so machine load affects them alike:

- ``fast``: the ``HookedTransformer`` trained through ``mechmem.core.fastpath.logits`` (what ``train`` does);
- ``plain``: a plain ``nn.Module`` holding copies of the same parameters, computing the same function
  with the same operations (``F.embedding``, ``F.layer_norm`` with the affine part apart, as the fast path
  does for thread-count-invariant gradients, ``F.linear``, ``F.scaled_dot_product_attention``);
- ``plain_ln`` (MLP + LN model only, for information): the plain module with the usual
  ``F.layer_norm(x, shape, w, b)``, i.e. what the affine split costs;
- ``hooked``: the ``HookedTransformer``'s own forward, ``model(tokens)`` (what users get without the path).

Prints median times and the median per-repetition ratios ``ratio=<fast/plain>``,
``ratio_mlp=<fast/plain>`` and ``ratio_hooked=<hooked/plain>`` (the attention-only model). Steps run
with ``--threads`` torch threads (default: mechmem's, 1; torch's own default is one per core) and
deterministic kernels, as ``train`` runs them. Times are process CPU time by default (``--clock cpu``:
on a shared machine other processes' load barely moves it; with several threads it sums them),
or wall time (``--clock wall``).

    python benchmarks/train_step.py [--reps 7] [--steps 5] [--threads 1] [--clock cpu|wall]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mechmem import ModelConfig, build_model
from mechmem.core.fastpath import logits, unsupported_reason
from mechmem.core.threads import DEFAULT_THREADS, deterministic

ATTN_ONLY = ModelConfig(n_layers=2, n_heads=1, d_model=128, d_vocab=65, n_ctx=256, attn_only=True, use_bias=True)
WITH_MLP = ModelConfig(
    n_layers=2, n_heads=4, d_model=128, d_vocab=65, n_ctx=256, attn_only=False, normalization="LN", use_bias=True
)
BATCH = 64
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}


def _copy(t: Tensor) -> nn.Parameter:
    return nn.Parameter(t.detach().clone())


class PlainTransformer(nn.Module):
    """The same transformer in plain PyTorch, parameters copied from ``hooked`` (row-vector layout)."""

    def __init__(self, hooked, affine_apart: bool = True):
        super().__init__()
        self.cfg, self.affine_apart = hooked.cfg, affine_apart
        self.W_E, self.W_pos = _copy(hooked.W_E), _copy(hooked.W_pos)
        self.W_U, self.b_U = _copy(hooked.W_U), _copy(hooked.b_U)
        self.blocks = nn.ModuleList(self._block(b) for b in hooked.blocks)
        self.ln_final = self._norm(getattr(hooked, "ln_final", None))

    def _block(self, block) -> nn.ParameterDict:
        a, H = block.attn, self.cfg.n_heads
        p = {f"W_{x}": getattr(a, f"W_{x}").permute(1, 0, 2).reshape(self.cfg.d_model, -1) for x in "QKV"}
        p |= {f"b_{x}": getattr(a, f"b_{x}").reshape(-1) for x in "QKV"}
        p |= {"W_O": a.W_O.reshape(H * self.cfg.d_head, -1), "b_O": a.b_O}
        if not self.cfg.attn_only:
            p |= {"W_in": block.mlp.W_in, "b_in": block.mlp.b_in, "W_out": block.mlp.W_out, "b_out": block.mlp.b_out}
            p |= {f"ln{i}_{w}": getattr(getattr(block, f"ln{i}"), w) for i in (1, 2) for w in "wb"}
        return nn.ParameterDict({k: _copy(v) for k, v in p.items()})

    def _norm(self, ln) -> nn.ParameterDict | None:
        return None if ln is None else nn.ParameterDict({w: _copy(getattr(ln, w)) for w in "wb"})

    def _ln(self, x: Tensor, w: Tensor | None, b: Tensor | None) -> Tensor:
        if w is None:
            return x
        if self.affine_apart:  # as the fast path computes it
            return F.layer_norm(x, x.shape[-1:], eps=self.cfg.eps) * w + b
        return F.layer_norm(x, x.shape[-1:], w, b, eps=self.cfg.eps)  # the usual form, affine inside

    def _attention(self, p, x: Tensor) -> Tensor:
        B, T, _ = x.shape
        H, dh = self.cfg.n_heads, self.cfg.d_head
        q, k, v = (F.linear(x, p[f"W_{n}"].T, p[f"b_{n}"]).view(B, T, H, dh).transpose(1, 2) for n in "QKV")
        z = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1 / self.cfg.attn_scale)
        return F.linear(z.transpose(1, 2).reshape(B, T, H * dh), p["W_O"].T, p["b_O"])

    def forward(self, tokens: Tensor) -> Tensor:
        x = F.embedding(tokens, self.W_E) + self.W_pos[: tokens.shape[1]]
        for p in self.blocks:
            x = x + self._attention(p, self._ln(x, p.get("ln1_w"), p.get("ln1_b")))
            if "W_in" in p:
                hidden = F.relu(F.linear(self._ln(x, p["ln2_w"], p["ln2_b"]), p["W_in"].T, p["b_in"]))
                x = x + F.linear(hidden, p["W_out"].T, p["b_out"])
        if self.ln_final is not None:
            x = self._ln(x, self.ln_final["w"], self.ln_final["b"])
        return F.linear(x, self.W_U.T, self.b_U)


def step_time(forward, params: list[nn.Parameter], tokens: Tensor, steps: int, clock=time.process_time) -> float:
    """Seconds per Adam step (forward, loss on every position, backward, update)."""
    opt = torch.optim.Adam(params, lr=1e-3)
    start = clock()
    for _ in range(steps):
        out = forward(tokens[:, :-1])
        loss = F.cross_entropy(out.reshape(-1, out.shape[-1]), tokens[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (clock() - start) / steps


def compare(cfg: ModelConfig, reps: int, steps: int, with_hooked: bool, clock) -> dict[str, list[float]]:
    """Per-repetition step times of the fast path, the plain module and (optionally) the hooked forward;
    with LayerNorm also ``plain_ln``: the plain module with ``F.layer_norm``'s own affine part."""
    model = build_model(cfg)
    if unsupported_reason(model) is not None:
        raise RuntimeError(f"the fast path does not run the benchmark model: {unsupported_reason(model)}")
    plain, plain_ln = PlainTransformer(model), PlainTransformer(model, affine_apart=False)
    tokens = torch.randint(cfg.d_vocab, (BATCH, cfg.n_ctx + 1), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = logits(model, tokens[:, :-1])
        diff = max((expected - m(tokens[:, :-1])).abs().max().item() for m in (plain, plain_ln))
    if diff > 1e-4:
        raise RuntimeError(f"the plain model does not compute the same function (max logit diff {diff})")
    variants = {
        "fast": (lambda t: logits(model, t), list(model.parameters())),
        "plain": (plain, list(plain.parameters())),
    }
    if cfg.normalization == "LN":
        variants["plain_ln"] = (plain_ln, list(plain_ln.parameters()))
    if with_hooked:
        variants["hooked"] = (model, list(model.parameters()))
    for forward, params in variants.values():  # warm-up
        step_time(forward, params, tokens, 1)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(reps):
        for name, (forward, params) in variants.items():
            times[name].append(step_time(forward, params, tokens, steps, clock))
    return times


def ms(times: list[float]) -> str:
    return f"{statistics.median(times) * 1e3:.1f} ms"


def ratio(times: dict[str, list[float]], a: str, b: str) -> float:
    return statistics.median(x / y for x, y in zip(times[a], times[b]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="torch threads (default: mechmem's, 1)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu", help="process CPU time or wall time")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clock = CLOCKS[args.clock]

    with deterministic():
        attn = compare(ATTN_ONLY, args.reps, args.steps, with_hooked=True, clock=clock)
        mlp = compare(WITH_MLP, args.reps, args.steps, with_hooked=False, clock=clock)
    print(f"{torch.get_num_threads()} threads; median ms/step ({args.clock} time)")
    print(f"attention-only: fast {ms(attn['fast'])}  plain {ms(attn['plain'])}  hooked {ms(attn['hooked'])}")
    print(f"with MLP + LN:  fast {ms(mlp['fast'])}  plain {ms(mlp['plain'])}  plain_ln {ms(mlp['plain_ln'])}")
    print(f"ratio={ratio(attn, 'fast', 'plain'):.3f}")
    print(f"ratio_mlp={ratio(mlp, 'fast', 'plain'):.3f}")
    print(f"ratio_hooked={ratio(attn, 'hooked', 'plain'):.3f}")
    print(
        f"(with MLP + LN, fast / plain_ln, F.layer_norm with its own affine part: {ratio(mlp, 'fast', 'plain_ln'):.3f})"
    )


if __name__ == "__main__":
    main()
