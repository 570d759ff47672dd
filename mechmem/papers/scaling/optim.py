"""Optimisation-based estimators (the paper's optimisation experiments): the matrix, learnable-embeddings and
exponential models trained with SGD or Adam in one pass over T samples, plus the analytic approximation of SGD.

All ``n_trials`` independent runs (own embeddings, data and init, from one seed) are trained at once: every
parameter carries a leading trial axis, the loss is the sum over trials of each trial's mean cross-entropy, and
SGD and Adam are element-wise, so each trial follows exactly the trajectory it would follow alone.

Models (row convention of the authors' code: ``logits = h(x) U^T``):

* ``"matrix"``: ``h(x) = e_x W``; W learned, E and U fixed;
* ``"learnable"``: the same with W, E and U learned;
* ``"exponential"``: ``h(x) = ReLU(e_x)``; E and U learned (no W).

``layernorm=True`` divides ``h(x)`` by ``sqrt(|h(x)|^2 + 1e-6)`` (an L2 normalisation, as in the authors' code).
Adam learning rates are rescaled as in the code: ``lr/d`` for W, ``lr/sqrt(d)`` for E and U; SGD uses ``lr``.
Adam's default betas are ``(0.0, 0.0)``: the update is ``g / (|g| + eps)``, a sign-like descent.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from mechmem.papers.scaling.data import check_data_params, check_positive_int, targets, zipf_probs
from mechmem.papers.scaling.memories import recall_error

MODELS = ("matrix", "learnable", "exponential")
OPTIMIZERS = ("sgd", "adam")
INITS = ("grid", "zero")


@dataclass
class OptimConfig:
    """One optimisation run (repeated over ``n_trials`` independent trials).

    ``init="grid"``: E, U, W all N(0, 1/d) (the authors' grid); ``init="zero"``: W = 0, E ~ N(0, 1/d) and unit-norm
    U (the theory notebooks, used for the SGD approximation). ``T`` must be a multiple of ``B`` (one pass over the
    T samples in T/B steps). ``log_every``: steps between exact error evaluations (the last step is always logged).
    """

    model: str = "matrix"
    optimizer: str = "adam"
    N: int = 100
    M: int = 5
    alpha: float = 2.0
    d: int = 10
    T: int = 10240
    B: int = 1024
    lr: float = 1.0
    layernorm: bool = False
    betas: tuple[float, float] = (0.0, 0.0)
    eps: float = 1e-8
    init: str = "grid"
    n_trials: int = 1
    seed: int = 0
    log_every: int = 1
    snapshot_every: int = 0

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; allowed values: {', '.join(MODELS)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; allowed values: {', '.join(OPTIMIZERS)}")
        if self.init not in INITS:
            raise ValueError(f"unknown init {self.init!r}; allowed values: {', '.join(INITS)}")
        check_data_params(self.N, self.M, self.alpha)
        for name in ("d", "T", "B", "n_trials", "log_every"):
            check_positive_int(name, getattr(self, name))
        if self.T % self.B:
            raise ValueError(f"B={self.B} must divide T={self.T} (one pass over the T samples in T/B full batches)")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        self.betas = tuple(float(b) for b in self.betas)  # torch rejects integer betas (0, 0)
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be two floats in [0, 1), got {self.betas}")

    @property
    def steps(self) -> int:
        return self.T // self.B


@dataclass
class OptimResult:
    """``steps`` (the logged step numbers, 0 = init) and ``errors[i, t]``: exact p-weighted error of trial t."""

    steps: list[int]
    errors: Float[Tensor, "n_logged trials"]
    snapshots: list[tuple[int, Tensor]] = field(default_factory=list)

    @property
    def final(self) -> Float[Tensor, "trials"]:
        return self.errors[-1]


def _normal(shape, d: int, gen: torch.Generator) -> Tensor:
    return torch.randn(shape, generator=gen, dtype=torch.float64) / math.sqrt(d)


def init_parameters(cfg: OptimConfig, gen: torch.Generator) -> dict[str, Tensor]:
    """E ``[t, N, d]``, U ``[t, M, d]`` and (matrix / learnable) W ``[t, d, d]``, drawn from ``gen``."""
    t, N, M, d = cfg.n_trials, cfg.N, cfg.M, cfg.d
    E = _normal((t, N, d), d, gen)
    U = _normal((t, M, d), d, gen)
    params = {"E": E}
    if cfg.init == "zero":
        U = U / U.norm(dim=-1, keepdim=True)
    params["U"] = U
    if cfg.model != "exponential":
        params["W"] = torch.zeros(t, d, d, dtype=torch.float64) if cfg.init == "zero" else _normal((t, d, d), d, gen)
    return params


def hidden(
    cfg: OptimConfig, params: dict[str, Tensor], x: Int[Tensor, "trials batch"]
) -> Float[Tensor, "trials batch d"]:
    """``h(x)``: ``e_x W`` or ``ReLU(e_x)``, optionally L2-normalised."""
    e = torch.gather(params["E"], 1, x[..., None].expand(-1, -1, cfg.d))
    h = torch.relu(e) if cfg.model == "exponential" else e @ params["W"]
    if cfg.layernorm:
        h = h / torch.sqrt((h**2).sum(-1, keepdim=True) + 1e-6)
    return h


def logits(
    cfg: OptimConfig, params: dict[str, Tensor], x: Int[Tensor, "trials batch"]
) -> Float[Tensor, "trials batch M"]:
    return hidden(cfg, params, x) @ params["U"].transpose(-1, -2)


def param_groups(cfg: OptimConfig, params: dict[str, Tensor]) -> list[dict]:
    """Trainable tensors with their learning rates (Adam: lr/d for W, lr/sqrt(d) for E and U)."""
    trainable = ["W"] if cfg.model == "matrix" else (["W", "E", "U"] if cfg.model == "learnable" else ["E", "U"])
    groups = []
    for name in trainable:
        scale = 1.0
        if cfg.optimizer == "adam":
            scale = 1.0 / cfg.d if name == "W" else 1.0 / math.sqrt(cfg.d)
        groups.append({"params": [params[name]], "lr": cfg.lr * scale, "name": name})
    return groups


def make_optimizer(cfg: OptimConfig, groups: list[dict]) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.0, weight_decay=0.0)
    return torch.optim.Adam(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=0.0)


def sample_stream(cfg: OptimConfig, gen: torch.Generator) -> Int[Tensor, "trials T"]:
    """The T training inputs of each trial, drawn i.i.d. from the Zipf law."""
    p = zipf_probs(cfg.N, cfg.alpha)
    return torch.multinomial(p.float().expand(cfg.n_trials, -1), cfg.T, replacement=True, generator=gen)


def run_steps(
    cfg: OptimConfig,
    groups: list[dict],
    batch_logits: Callable[[Int[Tensor, "trials batch"]], Float[Tensor, "trials batch M"]],
    xs: Int[Tensor, "trials T"],
    snapshot: Callable[[], Tensor] | None = None,
) -> OptimResult:
    """One pass over ``xs`` in batches of B, logging the exact error of ``batch_logits`` on all N tokens."""
    p, f = zipf_probs(cfg.N, cfg.alpha), targets(cfg.N, cfg.M)
    all_tokens = torch.arange(cfg.N).expand(cfg.n_trials, -1)
    for g in groups:
        for prm in g["params"]:
            prm.requires_grad_(True)
    opt = make_optimizer(cfg, groups)
    steps, errors, snaps = [], [], []

    def log(step: int) -> None:
        with torch.no_grad():
            pred = batch_logits(all_tokens).argmax(-1)
        steps.append(step)
        errors.append(recall_error(pred, f, p))
        if snapshot is not None and cfg.snapshot_every and step % cfg.snapshot_every == 0:
            snaps.append((step, snapshot()))

    log(0)
    for step in range(1, cfg.steps + 1):
        x = xs[:, (step - 1) * cfg.B : step * cfg.B]
        out = batch_logits(x)
        loss = F.cross_entropy(out.reshape(-1, cfg.M), f[x].reshape(-1), reduction="sum") / cfg.B
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % cfg.log_every == 0 or step == cfg.steps:
            log(step)
    return OptimResult(steps, torch.stack(errors), snaps)


def train_memory(cfg: OptimConfig) -> OptimResult:
    """Train ``cfg.model`` on a fresh one-pass stream of T samples; all randomness from ``cfg.seed``."""
    gen = torch.Generator().manual_seed(cfg.seed)
    params = init_parameters(cfg, gen)
    xs = sample_stream(cfg, gen)

    def snapshot() -> Tensor:
        with torch.no_grad():
            return torch.softmax(logits(cfg, params, torch.arange(cfg.N).expand(cfg.n_trials, -1)), -1)[0].clone()

    return run_steps(cfg, param_groups(cfg, params), lambda x: logits(cfg, params, x), xs, snapshot)


def config_dict(cfg: OptimConfig) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()}


# ----------------------------------------------------------------------------------------------------------------
# analytic approximation of SGD (the paper's recursion)
# ----------------------------------------------------------------------------------------------------------------


def batch_counts(xs: Int[Tensor, "trials T"], N: int, B: int) -> Float[Tensor, "steps trials N"]:
    """``n_t(x)``: how often token x appears in batch t."""
    check_positive_int("B", B)
    if xs.shape[1] % B:
        raise ValueError(f"B={B} must divide the number of samples {xs.shape[1]}")
    steps = xs.shape[1] // B
    batches = xs.reshape(xs.shape[0], steps, B).transpose(0, 1)  # [steps, trials, B]
    counts = torch.zeros(steps, xs.shape[0], N, dtype=torch.float64)
    return counts.scatter_add_(2, batches, torch.ones_like(batches, dtype=torch.float64))


def sgd_approximation(
    counts: Float[Tensor, "steps trials N"], lr: float, B: int, M: int
) -> Float[Tensor, "steps+1 trials N"]:
    """``q_{t+1}(x) = q_t(x) + (lr/B) n_t(x) / (1 + e^{q_t(x)}/(M-1))`` from ``q_0 = 0``: the weight of each
    association under SGD when the embeddings are nearly orthogonal (the softmax gives the correct class
    probability ``e^q / (e^q + M - 1)``)."""
    if M < 2:
        raise ValueError(f"the SGD approximation needs M >= 2 classes, got M={M}")
    qs = [torch.zeros_like(counts[0])]
    for n_t in counts:
        q = qs[-1]
        qs.append(q + (lr / B) * n_t / (1.0 + torch.exp(q) / (M - 1)))
    return torch.stack(qs)
