"""Latent concept association generator: neighbourhood statistics, noise, seeding, bad input,
and the constructed W̄_V reference table of the paper's Section 5 (no training)."""

import math

import pytest
import torch

from mechmem.papers.lca.constructions import (
    affine_fit,
    constructed_W_V,
    neighbour_adjacency,
    orthonormal_embeddings,
    spearman,
    uniform_attention_accuracy,
)
from mechmem.papers.lca.generator import (
    cluster_of,
    hamming,
    parse_neighbourhood,
    sample_context,
    sample_targets,
)


def draw(nb: str, m: int, L: int, eps: float, n: int = 4000, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    y = sample_targets(n, m, g)
    ctx, is_noise = sample_context(y, L, m, parse_neighbourhood(nb, m), eps, g)
    return y, ctx, is_noise


@pytest.mark.parametrize("nb", ["N1", "ball(2)", "bitflip(0.3)", "cluster2"])
@pytest.mark.parametrize("eps", [0.0, 0.5, 1.0])
def test_target_never_in_its_own_context(nb, eps):
    y, ctx, _ = draw(nb, 5, 32, eps)
    assert not (ctx == y[:, None]).any(), f"{nb}, eps={eps}: target y appeared in its own context"


def test_n1_context_tokens_are_exactly_distance_one_and_uniform_over_bits():
    y, ctx, _ = draw("N1", 6, 32, 0.0)
    d = hamming(ctx, y[:, None])
    assert (d == 1).all(), f"N1 context has Hamming distances {d.unique().tolist()}, expected only 1"
    flipped_bit = torch.log2((ctx ^ y[:, None]).double()).long().flatten()
    freq = torch.bincount(flipped_bit, minlength=6).double() / flipped_bit.numel()
    assert torch.allclose(freq, torch.full((6,), 1 / 6, dtype=torch.double), atol=0.01), f"bit flip frequencies {freq}"


def test_ball_radius_two_is_uniform_over_tokens_at_distance_one_and_two():
    m = 5
    y, ctx, _ = draw("ball(2)", m, 64, 0.0)
    d = hamming(ctx, y[:, None])
    assert set(d.unique().tolist()) == {1, 2}, f"ball(2) distances {d.unique().tolist()}"
    frac_d1 = (d == 1).double().mean().item()
    expected = 5 / (5 + 10)  # C(5,1) / (C(5,1) + C(5,2))
    assert abs(frac_d1 - expected) < 0.01, f"fraction at distance 1 is {frac_d1:.3f}, expected {expected:.3f}"


def test_bitflip_distance_law_matches_binomial_conditioned_on_at_least_one_flip():
    m, p = 5, 0.3
    y, ctx, _ = draw("bitflip(0.3)", m, 64, 0.0)
    d = hamming(ctx, y[:, None]).flatten()
    freq = torch.bincount(d, minlength=m + 1).double() / d.numel()
    binom = torch.tensor([math.comb(m, k) * p**k * (1 - p) ** (m - k) for k in range(m + 1)], dtype=torch.double)
    binom[0] = 0.0
    binom /= binom.sum()
    assert torch.allclose(freq, binom, atol=0.01), f"bitflip distance law {freq.tolist()} vs {binom.tolist()}"


def test_cluster2_context_shares_first_two_bits_and_covers_the_cluster():
    m = 5
    y, ctx, _ = draw("cluster2", m, 64, 0.0)
    assert (cluster_of(ctx, m) == cluster_of(y, m)[:, None]).all(), "cluster2 context left the target's cluster"
    rel = ctx ^ y[:, None]
    counts = torch.bincount(rel.flatten(), minlength=2**m)
    assert (counts[1 : 2 ** (m - 2)] > 0).all(), "cluster2 never drew some members of the cluster"
    assert counts[2 ** (m - 2) :].sum() == 0


@pytest.mark.parametrize("eps", [0.0, 0.25, 0.5, 0.9])
def test_noise_rate_and_noise_tokens_are_uniform_over_other_tokens(eps):
    m = 4
    y, ctx, is_noise = draw("N1", m, 64, eps)
    rate = is_noise.double().mean().item()
    assert abs(rate - eps) < 0.01, f"noise rate {rate:.3f}, expected {eps}"
    if eps > 0:
        rel = (ctx ^ y[:, None])[is_noise]
        freq = torch.bincount(rel, minlength=2**m).double() / rel.numel()
        assert freq[0] == 0
        assert torch.allclose(freq[1:], torch.full((2**m - 1,), 1 / (2**m - 1), dtype=torch.double), atol=0.01)
        assert (hamming(ctx, y[:, None])[~is_noise] == 1).all(), "non-noise tokens must follow the neighbourhood"


def test_sampling_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = draw("ball(2)", 5, 16, 0.3, n=64, seed=7)
    b = draw("ball(2)", 5, 16, 0.3, n=64, seed=7)
    c = draw("ball(2)", 5, 16, 0.3, n=64, seed=8)
    assert torch.equal(torch.rand(1), before), "sampling consumed the global torch RNG"
    assert all(torch.equal(u, v) for u, v in zip(a, b)), "same seed gave different batches"
    assert not torch.equal(a[1], c[1]), "different seeds gave the same batch"


@pytest.mark.parametrize(
    "spec, m, match",
    [
        ("N2", 5, "does not exist"),
        ("ball(0)", 5, "radius"),
        ("ball(6)", 5, "radius"),
        ("bitflip(0)", 5, "bitflip"),
        ("bitflip(1.5)", 5, "bitflip"),
        ("cluster3", 5, "does not exist"),
        ("cluster2", 2, "m >= 3"),
        ("N1", 1, r"m \(latent bits\)"),
        ("N1", 17, r"m \(latent bits\)"),
    ],
)
def test_bad_neighbourhood_or_m_raises_naming_the_field(spec, m, match):
    with pytest.raises(ValueError, match=match):
        parse_neighbourhood(spec, m)


# --- the constructed W̄_V reference table (spec §5), orthonormal embeddings, uniform attention ----------

REFERENCE = [  # (neighbourhood, m, L, eps, reference accuracy of W̄_V built from N_1)
    ("N1", 5, 8, 0.0, 0.999),
    ("N1", 5, 32, 0.0, 1.0),
    ("N1", 5, 8, 0.5, 0.63),
    ("N1", 5, 16, 0.5, 0.90),
    ("N1", 5, 32, 0.5, 0.99),
    ("N1", 5, 64, 0.5, 1.0),
    ("N1", 8, 8, 0.5, 0.78),
    ("N1", 8, 16, 0.5, 0.98),
    ("ball(2)", 5, 8, 0.0, 0.26),
    ("ball(2)", 5, 128, 0.0, 0.63),
    ("ball(2)", 8, 8, 0.0, 0.16),
    ("ball(2)", 8, 128, 0.0, 0.30),
]


@pytest.mark.parametrize("nb, m, L, eps, reference", REFERENCE)
def test_constructed_value_matrix_matches_reference_table(nb, m, L, eps, reference):
    g = torch.Generator().manual_seed(1)
    V = 2**m
    E = orthonormal_embeddings(V, V + 3, g)
    W_bar = constructed_W_V(E, neighbour_adjacency("N1", m))
    y, ctx, _ = draw(nb, m, L, eps, n=3000, seed=2)
    acc = uniform_attention_accuracy(ctx, y, E, W_bar, g)
    identity = uniform_attention_accuracy(ctx, y, E, torch.eye(V + 3), g)
    # 3000 samples: binomial standard error <= 0.009; 0.035 is ~4 standard errors.
    assert abs(acc - reference) < 0.035, f"{nb} m={m} L={L} eps={eps}: W̄_V accuracy {acc:.3f}, reference {reference}"
    assert identity < 0.01, f"identity W_V must fail on orthonormal embeddings (y never in context), got {identity:.3f}"


def test_constructed_value_matrix_logits_count_neighbours_in_context():
    m, L = 4, 5
    E = torch.eye(2**m)
    W_bar = constructed_W_V(E, neighbour_adjacency("N1", m))
    y, ctx, _ = draw("ball(2)", m, L, 0.2, n=50)
    logits = E[ctx].mean(1) @ W_bar @ E.T
    counts = (hamming(ctx[:, :, None], torch.arange(2**m)[None, None, :]) == 1).sum(1).float() / L
    assert torch.allclose(logits, counts, atol=1e-6), "<W_E(k), W̄_V h> must equal (1/L) #{l: x_l in N_1(k)}"


def test_spearman_and_affine_fit_statistics():
    assert spearman([1, 2, 3, 4], [10, 9, 7, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3, 4], [1, 1, 2, 2]) == pytest.approx(0.894427, abs=1e-5)  # scipy's value with ties
    a, b, r2 = affine_fit([0, 1, 2, 3], [1, 3, 5, 7])
    assert (a, b, r2) == pytest.approx((1.0, 2.0, 1.0))


def hamming_embedding(m: int, c0: float = 0.5, c1: float = 1.0, pad: int = 3) -> torch.Tensor:
    """Spec §5 (2): W_E(i) = [c0, c1 (2 z(i) - 1)], padded with zeros."""
    ids = torch.arange(2**m)
    z = torch.stack([(ids >> (m - 1 - k)) & 1 for k in range(m)], dim=1).float()
    return torch.cat([torch.full((2**m, 1), c0), c1 * (2 * z - 1), torch.zeros(2**m, pad)], dim=1)


def test_explicit_hamming_embedding_has_affine_inner_products_and_rank_m_spectrum():
    from mechmem.papers.lca.constructions import centred_gram_spectrum, inner_by_hamming, top_energy

    m = 5
    E = hamming_embedding(m)
    means = inner_by_hamming(E, m)
    expected = torch.tensor([0.25 + (m - 2 * d) for d in range(m + 1)])
    assert torch.allclose(means, expected, atol=1e-5), f"<W_E(i), W_E(j)> must be c0^2 + c1^2 (m - 2 D_H): {means}"
    eig = centred_gram_spectrum(E, 2**m)
    assert top_energy(eig, m) == pytest.approx(1.0, abs=1e-6) and eig[m] < 1e-4, "centred Gram must have rank m"


def test_principal_cosines_of_equal_and_orthogonal_subspaces():
    from mechmem.papers.lca.constructions import principal_cosines

    A = torch.diag(torch.tensor([3.0, 2.0, 1.0, 0.0, 0.0]))
    B = torch.diag(torch.tensor([0.0, 0.0, 0.0, 2.0, 1.0]))
    assert torch.allclose(principal_cosines(A, 5 * A, 3), torch.ones(3))
    assert torch.allclose(principal_cosines(A, B, 2), torch.zeros(2), atol=1e-6)
