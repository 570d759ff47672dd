"""Optimisation-based estimators, the analytic SGD approximation, and the experiments/claims plumbing."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from mechmem.contract.claims import Evidence
from mechmem.contract.runner import make_context
from mechmem.papers.scaling import EXPERIMENTS, TASKS
from mechmem.papers.scaling.data import targets
from mechmem.papers.scaling.optim import (
    OptimConfig,
    batch_counts,
    hidden,
    init_parameters,
    logits,
    param_groups,
    run_steps,
    sample_stream,
    sgd_approximation,
    train_memory,
)
from mechmem.papers.scaling.reproduction import CLAIMS, ScalingReproduction
from mechmem.storage.files import to_jsonable

QUICK_KEYS = (
    "threshold_d_slope",
    "frequency_d_slope",
    "uniform_no_decay",
    "data_T_slope",
    "missing_mass_rel_error",
    "joint_table_max_rel_error",
    "adam_beats_sgd_fraction",
    "small_batch_beats_large_fraction",
    "sgd_lr_monotone_fraction",
    "learned_embeddings_beat_fixed_fraction",
    "sgd_approximation_gap",
)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(T=1000, B=300), "B=300 must divide T=1000"),
        (dict(model="mlp"), "unknown model 'mlp'"),
        (dict(optimizer="lbfgs"), "unknown optimizer 'lbfgs'"),
        (dict(alpha=0.0), "alpha"),
        (dict(N=3, M=5), "N"),
        (dict(d=0), "d must be"),
        (dict(T=0), "T must be"),
        (dict(lr=-1.0), "lr"),
        (dict(init="ones"), "unknown init"),
    ],
)
def test_bad_optim_config_is_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        OptimConfig(**kwargs)


def test_integer_betas_are_accepted_as_floats():
    assert OptimConfig(betas=(0, 0)).betas == (0.0, 0.0), "torch rejects integer betas; the config must convert"


def test_adam_with_zero_betas_is_sign_like():
    cfg = OptimConfig(model="matrix", optimizer="adam", N=20, M=4, d=6, T=32, B=32, lr=3.0, seed=1)
    gen = torch.Generator().manual_seed(cfg.seed)
    params = init_parameters(cfg, gen)
    xs = sample_stream(cfg, gen)
    W0 = params["W"].clone()
    W = W0.clone().requires_grad_(True)
    loss = F.cross_entropy(
        (logits(cfg, {**params, "W": W}, xs)).reshape(-1, cfg.M), targets(cfg.N, cfg.M)[xs].reshape(-1)
    )
    (g,) = torch.autograd.grad(loss, W)
    run_steps(cfg, param_groups(cfg, params), lambda x: logits(cfg, params, x), xs)
    expected = W0 - (cfg.lr / cfg.d) * g / (g.abs() + cfg.eps)
    assert torch.allclose(params["W"].detach(), expected, atol=1e-9), "Adam(0, 0) step must be lr/d * g/(|g| + eps)"


def test_learning_rates_are_rescaled_by_d_for_adam_only():
    def lrs(**kw):
        cfg = OptimConfig(d=16, lr=2.0, **kw)
        return {g["name"]: g["lr"] for g in param_groups(cfg, init_parameters(cfg, torch.Generator().manual_seed(0)))}

    assert lrs(model="matrix", optimizer="adam") == {"W": 2.0 / 16}
    assert lrs(model="learnable", optimizer="adam") == {"W": 2.0 / 16, "E": 0.5, "U": 0.5}
    assert lrs(model="exponential", optimizer="adam") == {"E": 0.5, "U": 0.5}
    assert lrs(model="learnable", optimizer="sgd") == {"W": 2.0, "E": 2.0, "U": 2.0}


def test_trials_train_independently():
    cfg = OptimConfig(model="learnable", optimizer="sgd", N=30, M=3, d=5, T=64, B=8, lr=5.0, n_trials=2, seed=4)
    gen = torch.Generator().manual_seed(cfg.seed)
    params = init_parameters(cfg, gen)
    xs = sample_stream(cfg, gen)
    singles = []
    for t in range(2):
        one = {k: v[t : t + 1].clone() for k, v in params.items()}
        c1 = OptimConfig(**{**cfg.__dict__, "n_trials": 1})
        singles.append(
            run_steps(c1, param_groups(c1, one), lambda x, c1=c1, one=one: logits(c1, one, x), xs[t : t + 1]).errors
        )
    both = run_steps(cfg, param_groups(cfg, params), lambda x: logits(cfg, params, x), xs).errors
    assert torch.allclose(both, torch.cat(singles, dim=1)), "a trial's trajectory must not depend on the others"


def test_layernorm_normalises_the_hidden_vector():
    cfg = OptimConfig(model="exponential", layernorm=True, N=10, M=2, d=8)
    params = init_parameters(cfg, torch.Generator().manual_seed(0))
    h = hidden(cfg, params, torch.arange(10)[None])
    assert torch.allclose(h.norm(dim=-1), torch.ones(1, 10, dtype=torch.float64), atol=1e-3)


@pytest.mark.parametrize("model", ["matrix", "learnable", "exponential"])
def test_training_reduces_the_error(model):
    res = train_memory(
        OptimConfig(model=model, optimizer="adam", N=50, M=5, d=16, T=2048, B=64, lr=1.0, n_trials=3, log_every=8)
    )
    assert res.steps[0] == 0 and res.steps[-1] == 32 and len(res.steps) == 5
    assert (res.final < res.errors[0]).all(), f"{model}: error {res.errors[0]} -> {res.final} did not decrease"


def test_sgd_approximation_first_step_is_the_frequency_memory():
    counts = torch.tensor([[[5.0, 3.0, 0.0]]])  # one step, one trial
    q = sgd_approximation(counts, lr=2.0, B=8, M=5)
    assert torch.allclose(q[1, 0], 2.0 / 8 * counts[0, 0] * (1 - 1 / 5)), "q_1 = lr n / B (1 - 1/M)"
    many = sgd_approximation(torch.full((200, 1, 1), 8.0), lr=1.0, B=8, M=5)[:, 0, 0]
    assert (many[1:] > many[:-1]).all() and many[-1] < math.log(4) + math.log(200), "q must grow like a log"


def test_batch_counts_count_each_batch():
    xs = torch.tensor([[0, 1, 1, 2, 2, 2]])
    c = batch_counts(xs, 3, 3)
    assert c.shape == (2, 1, 3) and c[:, 0].tolist() == [[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]]
    with pytest.raises(ValueError, match="B=4 must divide"):
        batch_counts(xs, 3, 4)


def test_package_exposes_experiments_and_claims():
    assert TASKS == {} and ScalingReproduction.experiments is EXPERIMENTS
    assert set(EXPERIMENTS) >= {
        "error_vs_d",
        "error_vs_T",
        "joint_table",
        "naive_contour",
        "optimisers",
        "sgd_approximation",
        "heatmaps",
    }


@pytest.mark.parametrize("name", ["naive_contour", "heatmaps"])
def test_cheap_experiments_return_data_and_a_figure(tmp_path, name):
    result = EXPERIMENTS[name](make_context("scaling", "quick", out=tmp_path, progress=False))
    assert list(result.figures) == [name], f"{name} should return one figure named after it"
    json.dumps(to_jsonable(result.data), allow_nan=False)  # the runner writes it as strict JSON


def test_claims_have_the_issue_keys_and_honest_holds():
    fake = {
        "error_vs_d": {
            "N": 1000,
            "ds": [10, 20, 54, 112],
            "by_alpha": {
                "2.0": {"slope": {"threshold": -1.3, "frequency": -0.28}, "mean_error": {"all": [0.8, 0.7, 0.3, 0.2]}}
            },
        },
        "error_vs_T": {"slope_top_seen": -0.47, "rel_error_seen_vs_missing_mass": [0.1, 0.25]},
        "joint_table": {"max_rel_error": 0.3, "cells_within_tolerance": 23, "n_cells": 24},
        "optimisers": {
            "adam_beats_sgd_fraction": 0.9,
            "small_batch_beats_large_fraction": 0.8,
            "sgd_lr_monotone_fraction": 0.4,
            "learned_embeddings_beat_fixed_fraction": 1.0,
        },
        "sgd_approximation": {"gap_first_10_steps": 0.005},
    }
    claims = {c.key: c.score(Evidence(fake)) for c in CLAIMS if c.applies_to("quick")}
    assert tuple(claims) == QUICK_KEYS
    holds = {k: c["holds"] for k, c in claims.items()}
    assert holds == {
        "threshold_d_slope": False,
        "frequency_d_slope": True,
        "uniform_no_decay": False,
        "data_T_slope": True,
        "missing_mass_rel_error": False,
        "joint_table_max_rel_error": False,
        "adam_beats_sgd_fraction": True,
        "small_batch_beats_large_fraction": True,
        "sgd_lr_monotone_fraction": False,
        "learned_embeddings_beat_fixed_fraction": True,
        "sgd_approximation_gap": True,
    }, f"wrong holds: {holds}"
