"""Data, memory schemes and the exact error of "Scaling Laws for Associative Memories"."""

import math

import pytest
import torch

from mechmem.papers.scaling.data import (
    Embeddings,
    missing_mass,
    missing_mass_formula,
    prefix_counts,
    sample_tokens,
    targets,
    zipf_probs,
)
from mechmem.papers.scaling.memories import (
    error_curve,
    fit_loglog_slope,
    loop_error_curve,
    memory_matrix,
    memory_weights,
    predict,
    recall_error,
    scheme_error_curve,
)


def tiny_memory_setup():
    """N=3 tokens, M=2 classes, d=2 with hand-picked embeddings: e_0 = (1,0), e_1 = (0,1), e_2 = (1,1);
    u_0 = (1,0), u_1 = (0,1); f = (0, 1, 0)."""
    E = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    U = torch.eye(2, dtype=torch.float64)
    f = targets(3, 2)
    p = zipf_probs(3, 1.0)  # (1, 1/2, 1/3) / (11/6)
    return E, U, f, p


def test_zipf_probs_are_normalised_and_decreasing():
    p = zipf_probs(50, 2.0)
    assert abs(float(p.sum()) - 1.0) < 1e-12
    assert (p[1:] < p[:-1]).all(), "Zipf probabilities must decrease with the token index"
    assert math.isclose(float(p[0] / p[1]), 4.0), "p(0)/p(1) must be 2^alpha = 4 at alpha = 2"


def test_tiny_memory_error_by_hand():
    E, U, f, p = tiny_memory_setup()
    # q = 1: W = u0 e0^T + u1 e1^T + u0 e2^T = [[2, 1], [0, 1]]; W e1 = (1, 1) is a tie -> class 0, wrong.
    W = memory_matrix(torch.ones(3, dtype=torch.float64), E, U, f)
    assert torch.equal(W, torch.tensor([[2.0, 1.0], [0.0, 1.0]], dtype=torch.float64)), f"wrong W: {W}"
    pred = predict(W, E, U)
    assert pred.tolist() == [0, 0, 0], f"expected predictions (0, 0, 0), got {pred.tolist()}"
    assert math.isclose(float(recall_error(pred, f, p)), 3 / 11), "error must be p(1) = 3/11"
    # q = (1, 2, 1): W e1 = (1, 2) -> class 1, every token recalled.
    q = torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64)
    pred = predict(memory_matrix(q, E, U, f), E, U)
    assert pred.tolist() == [0, 1, 0] and float(recall_error(pred, f, p)) == 0.0


def test_batched_error_matches_hand_computation():
    E, U, f, p = tiny_memory_setup()
    emb = Embeddings(E[None], U[None])
    q = torch.stack([torch.ones(3), torch.tensor([1.0, 2.0, 1.0])]).double()[:, None, None, :]  # [2, n_d=1, t=1, N]
    err = error_curve(q, emb, [2], p, f)
    assert err.shape == (2, 1, 1)
    assert torch.allclose(err.flatten(), torch.tensor([3 / 11, 0.0], dtype=torch.float64)), f"got {err.flatten()}"


def test_empty_memory_predicts_class_zero():
    g = torch.Generator().manual_seed(0)
    N, M = 20, 4
    p, f = zipf_probs(N, 2.0), targets(N, M)
    emb = Embeddings.draw(N, M, 16, 2, g)
    err = scheme_error_curve("threshold", emb, [4, 16], p, f, divisor=8)  # P = 0 at d = 4
    expected = float(p[f != 0].sum())
    assert torch.allclose(err[0], torch.full((2,), expected, dtype=torch.float64)), "empty memory must predict 0"


@pytest.mark.parametrize("scheme", ["all", "frequency", "threshold", "seen", "top_seen"])
def test_batched_curve_equals_per_trial_loop(scheme):
    g = torch.Generator().manual_seed(1)
    N, M, ds = 60, 5, [4, 9, 24, 40]
    p, f = zipf_probs(N, 1.5), targets(N, M)
    emb = Embeddings.draw(N, M, 40, 3, g)
    counts = prefix_counts(sample_tokens(p, 50, 3, g), [50], N)[0]
    kw = dict(divisor=3, counts=counts if scheme in ("seen", "top_seen") else None, rho=0.5)
    fast = scheme_error_curve(scheme, emb, ds, p, f, **kw)
    slow = loop_error_curve(scheme, emb, ds, p, f, **kw)
    assert torch.allclose(fast, slow), f"batched and loop errors differ for {scheme}: {fast} vs {slow}"
    assert (fast > 0).any() and (fast < 1).all()


def test_top_seen_keeps_P_most_frequent_seen_tokens_with_ties_by_index():
    p = zipf_probs(6, 1.0)
    counts = torch.tensor([[5.0, 0.0, 2.0, 2.0, 1.0, 0.0]])
    q = memory_weights("top_seen", p, P=3, counts=counts, rho=0.0)
    assert q.tolist() == [[1.0, 0.0, 1.0, 1.0, 0.0, 0.0]], f"got {q.tolist()}"
    q = memory_weights("top_seen", p, P=2, counts=counts, rho=1.0)
    assert torch.allclose(q, torch.tensor([[0.5, 0.0, 0.2, 0.0, 0.0, 0.0]], dtype=torch.float64)), f"got {q}"
    assert memory_weights("seen", p, counts=counts).tolist() == [[1.0, 0.0, 1.0, 1.0, 1.0, 0.0]]


def test_missing_mass_formula_matches_exact_sum():
    p = zipf_probs(1_000_000, 2.0)
    exact = missing_mass(p, 10_000)
    formula = missing_mass_formula(2.0, 10_000)
    assert abs(exact - 6.909e-3) < 2e-5, f"exact missing mass {exact} (reference: 6.909e-3)"
    assert abs(formula - exact) / exact < 0.01, f"formula {formula} vs exact {exact}"
    # and the formula is a T^(-1/2) law at alpha = 2
    assert math.isclose(missing_mass_formula(2.0, 400) / missing_mass_formula(2.0, 100), 0.5)


def test_empirical_unseen_mass_matches_exact_expectation():
    g = torch.Generator().manual_seed(2)
    p = zipf_probs(1000, 2.0)
    counts = prefix_counts(sample_tokens(p, 1000, 200, g), [1000], 1000)[0]
    unseen = ((counts == 0).double() * p).sum(-1).mean()
    exact = missing_mass(p, 1000)
    assert abs(float(unseen) - exact) / exact < 0.05, f"Monte Carlo unseen mass {float(unseen)} vs exact {exact}"


def test_fit_loglog_slope_recovers_power_law():
    xs = [10, 20, 50, 100, 1000]
    slope, c = fit_loglog_slope(xs, [3.5 * x**-1.25 for x in xs])
    assert math.isclose(slope, -1.25, rel_tol=1e-9) and math.isclose(c, 3.5, rel_tol=1e-9)
    with pytest.raises(ValueError, match="positive"):
        fit_loglog_slope([1, 2], [0.1, 0.0])


def test_threshold_slope_is_minus_one_at_alpha_two():
    g = torch.Generator().manual_seed(3)
    N, M = 1000, 5
    ds = [20, 54, 112, 233, 483, 1000]
    emb = Embeddings.draw(N, M, 1000, 8, g)
    err = scheme_error_curve("threshold", emb, ds, zipf_probs(N, 2.0), targets(N, M)).mean(-1)
    slope, _ = fit_loglog_slope(ds, err.tolist())
    assert abs(slope + 1.0) < 0.15, f"threshold slope {slope}, theory -1"


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: zipf_probs(10, 0.0), "alpha"),
        (lambda: zipf_probs(10, -1.0), "alpha"),
        (lambda: targets(3, 5), "N"),
        (lambda: Embeddings.draw(10, 2, 0, 1, torch.Generator()), "d_max"),
        (lambda: Embeddings.draw(10, 2, 4, 1, torch.Generator()).at(8), "d="),
        (lambda: memory_weights("nope", zipf_probs(4, 1.0)), "unknown scheme"),
        (lambda: memory_weights("threshold", zipf_probs(4, 1.0)), "threshold P"),
        (lambda: sample_tokens(zipf_probs(4, 1.0), 0, 1, torch.Generator()), "T"),
        (lambda: missing_mass(zipf_probs(4, 2.0), -3), "T"),
    ],
)
def test_bad_input_is_rejected(call, match):
    with pytest.raises(ValueError, match=match):
        call()
