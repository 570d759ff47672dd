"""The shared fitting loop and the shared log-log fit: ``fit`` takes torch.optim's steps exactly as a hand-written
loop would, evaluates and stops as documented, and hand-written gradients give autograd's trajectory."""

from __future__ import annotations

import math

import pytest
import torch

from mechmem.contract.measures import loglog_fit, loglog_slope_or_nan
from mechmem.core.config import TrainConfig
from mechmem.core.fitting import fit, make_optimizer


def problem():
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(32, 4, generator=g), torch.randint(0, 3, (32,), generator=g)
    W = torch.randn(4, 3, generator=g).requires_grad_(True)
    return X, y, W


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_fit_takes_the_steps_of_a_plain_torch_optim_loop(optimizer):
    cfg = TrainConfig(steps=20, lr=0.05, optimizer=optimizer, momentum=0.9 if optimizer == "sgd" else 0.0)
    X, y, W = problem()
    reference = W.detach().clone().requires_grad_(True)
    opt = make_optimizer([[reference]], cfg)
    for _ in range(cfg.steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(X @ reference, y).backward()
        opt.step()
    result = fit([W], lambda step: torch.nn.functional.cross_entropy(X @ W, y), cfg)
    assert result.steps == 20 and torch.equal(W, reference), "fit must be bit-identical to the plain loop"


def test_fit_evaluates_on_schedule_and_stops_early():
    X, y, W = problem()
    cfg = TrainConfig(steps=50, lr=0.5, optimizer="sgd", eval_every=10)
    seen = fit([W], lambda s: torch.nn.functional.cross_entropy(X @ W, y), cfg, evaluate=lambda s: {"s": s})
    assert [r["step"] for r in seen.history] == [0, 10, 20, 30, 40, 50] and not seen.stopped_early
    early = fit([W], lambda s: torch.nn.functional.cross_entropy(X @ W, y), cfg, evaluate=lambda s: {"s": s},
                stop=lambda r: r["s"] >= 20)  # fmt: skip
    assert early.steps == 20 and early.stopped_early and early.final["step"] == 20


def test_hand_written_gradients_follow_autograds_trajectory():
    X, y, W = problem()
    W2 = W.detach().clone().requires_grad_(True)
    cfg = TrainConfig(steps=15, lr=0.1, optimizer="adam")
    fit([W], lambda s: torch.nn.functional.cross_entropy(X @ W, y), cfg)

    def grad(step):
        P = torch.softmax(X @ W2, -1)
        P[torch.arange(len(y)), y] -= 1
        W2.grad = X.T @ P / len(y)

    fit([W2], None, cfg, grad_at=grad)
    torch.testing.assert_close(W2, W, rtol=1e-5, atol=1e-6)


def test_fit_needs_exactly_one_way_to_get_gradients():
    X, y, W = problem()
    with pytest.raises(ValueError, match="exactly one"):
        fit([W], None, TrainConfig(steps=1))


def test_a_group_may_carry_its_own_learning_rate():
    W = torch.zeros(2, requires_grad=True)
    opt = make_optimizer([{"params": [W], "lr": 0.5}], TrainConfig(lr=0.1, optimizer="sgd"))
    assert opt.param_groups[0]["lr"] == 0.5


def test_loglog_fit_recovers_a_power_law_and_names_a_bad_point():
    xs = [1, 2, 4, 8]
    slope, scale = loglog_fit(xs, [3 * x**-0.5 for x in xs])
    assert slope == pytest.approx(-0.5) and scale == pytest.approx(3)
    with pytest.raises(ValueError, match="x=2.0, y=0.0"):
        loglog_fit([1, 2], [1, 0])
    with pytest.raises(ValueError, match="two different x"):
        loglog_fit([2, 2], [1, 3])
    assert math.isnan(loglog_slope_or_nan([2, 2], [1, 3]))
