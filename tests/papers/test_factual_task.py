"""Factual-recall task, fact tables, bad input, the relation/subject-only losses and the outer-product memory."""

import math

import pytest
import torch

from mechmem.papers.factual.capacity import capacity_constant, make_problem, max_stored, outer_product_accuracy
from mechmem.papers.factual.dynamics import DynamicsConfig, LinearAttentionMemory, dynamics_task, gd_step_
from mechmem.papers.factual.task import (
    FactualRecallTask,
    decomposed_losses_from_logprobs,
    structured_fact_table,
    token_counts,
)


def sample(task, n=4096, seed=0):
    return task.sample(n, torch.Generator().manual_seed(seed))


def test_subject_and_relation_sit_at_distinct_positions_before_eos():
    task = FactualRecallTask(S=5, R=3, D=4, seq_len=8)
    b = sample(task)
    sp, rp = b.labels["subject_pos"], b.labels["relation_pos"]
    assert (sp != rp).all(), "subject and relation share a position"
    assert ((sp >= 0) & (sp <= 6) & (rp >= 0) & (rp <= 6)).all(), "subject/relation placed outside 0..T-2"
    rows = torch.arange(len(sp))
    assert (b.tokens[rows, sp] == b.labels["subject"]).all()
    assert (b.tokens[rows, rp] == 5 + b.labels["relation"]).all()
    assert (b.tokens[:, -1] == task.eos).all(), "EOS is not the last token"
    assert (b.tokens[:, :-1] != task.eos).all(), "EOS appears before the last position"


def test_noise_positions_hold_only_noise_tokens_and_every_slot_is_used():
    task = FactualRecallTask(S=5, R=3, D=4, seq_len=8)
    b = sample(task)
    noise = b.tokens[:, :-1].clone()
    rows = torch.arange(len(noise))
    noise[rows, b.labels["subject_pos"]] = -1
    noise[rows, b.labels["relation_pos"]] = -1
    kept = noise[noise >= 0]
    assert ((kept >= 8) & (kept < 16)).all(), "a non-noise token at a noise position"
    assert len(kept.unique()) == task.noise_size, "some noise token never appears"
    # positions uniform over 0..T-2 (7 slots): each slot gets about 1/7 of the subjects
    freq = torch.bincount(b.labels["subject_pos"], minlength=7).float() / len(rows)
    assert (freq - 1 / 7).abs().max() < 0.03, f"subject positions not uniform: {freq}"
    freq = torch.bincount(b.labels["relation_pos"], minlength=7).float() / len(rows)
    assert (freq - 1 / 7).abs().max() < 0.03, f"relation positions not uniform: {freq}"


def test_answers_lie_in_the_relations_block_and_follow_the_table():
    task = FactualRecallTask(S=7, R=5, D=3)
    b = sample(task)
    a, r, s = b.targets[:, -1], b.labels["relation"], b.labels["subject"]
    assert ((a >= 3 * r) & (a < 3 * r + 3)).all(), "an answer outside its relation's block"
    assert (a == task.fact_table[s, r]).all()
    assert b.mask[:, -1].all() and not b.mask[:, :-1].any(), "the loss mask must be True only at EOS"
    assert task.d_vocab == 2 * (7 + 5) + 1 and task.d_vocab_out == 15


def test_fact_table_is_seeded_and_draws_every_block_slot():
    t1 = FactualRecallTask(S=64, R=4, D=4, table_seed=3).fact_table
    t2 = FactualRecallTask(S=64, R=4, D=4, table_seed=3).fact_table
    t3 = FactualRecallTask(S=64, R=4, D=4, table_seed=4).fact_table
    assert torch.equal(t1, t2), "the same table_seed gave two tables"
    assert not torch.equal(t1, t3), "different table_seeds gave the same table"
    for r in range(4):
        assert set(t1[:, r].tolist()) == set(range(4 * r, 4 * r + 4)), "a block slot is never drawn"


def test_sampling_is_reproducible_from_the_generator():
    task = FactualRecallTask(S=4, R=4, D=2)
    assert torch.equal(sample(task, 64, 1).tokens, sample(task, 64, 1).tokens)
    assert not torch.equal(sample(task, 64, 1).tokens, sample(task, 64, 2).tokens)


def test_structured_table_matches_fig5():
    table = structured_fact_table(16, 4, 8)
    assert table[5, 2] == 8 * 2 + 5 // 2 and table[15, 3] == 31 and table[0, 0] == 0
    task = FactualRecallTask(S=16, R=4, D=8, table="structured")
    assert torch.equal(task.fact_table, table)


def test_all_facts_lists_every_subject_relation_pair_once():
    task = FactualRecallTask(S=3, R=4, D=2)
    b = task.all_facts(torch.Generator().manual_seed(0))
    pairs = set(zip(b.labels["subject"].tolist(), b.labels["relation"].tolist()))
    assert len(pairs) == 12 and len(b.tokens) == 12
    assert (b.targets[:, -1] == task.fact_table[b.labels["subject"], b.labels["relation"]]).all()


@pytest.mark.parametrize(
    "field, kwargs",
    [
        ("S", dict(S=0)),
        ("R", dict(R=0)),
        ("D", dict(D=0)),
        ("seq_len", dict(seq_len=2)),
        ("n_noise", dict(n_noise=0)),
        ("table", dict(table="zipf")),
    ],
)
def test_bad_task_settings_raise_naming_the_field(field, kwargs):
    with pytest.raises(ValueError, match=field):
        FactualRecallTask(**kwargs)


def test_fact_table_with_answer_outside_its_block_is_rejected():
    facts = [[0, 2], [1, 3]]  # D=2: relation 1 owns {2, 3}
    FactualRecallTask(S=2, R=2, D=2, facts=facts)
    with pytest.raises(ValueError, match="outside relation 1's answer block"):
        FactualRecallTask(S=2, R=2, D=2, facts=[[0, 2], [1, 1]])
    with pytest.raises(ValueError, match="shape"):
        FactualRecallTask(S=2, R=2, D=2, facts=[[0, 2]])


def test_relation_and_subject_only_losses_on_hand_made_probabilities():
    # R=2, D=2; target answer 1 (relation 0, slot 1). p = [0.1, 0.2, 0.3, 0.4]
    p = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    out = decomposed_losses_from_logprobs(p.log(), torch.tensor([1]), D=2)
    assert out["total"] == pytest.approx(-math.log(0.2))
    assert out["relation"] == pytest.approx(-math.log(0.1 + 0.2)), "relation-only loss is not -log p(block)"
    assert out["subject"] == pytest.approx(-math.log(0.2 + 0.4)), "subject-only loss is not -log p(slot)"
    # hallucination: uniform within the right block -> relation 0, total ln D
    p = torch.tensor([[0.5, 0.5, 0.0, 0.0]]).clamp_min(1e-30)
    out = decomposed_losses_from_logprobs(p.log(), torch.tensor([0]), D=2)
    assert out["relation"] == pytest.approx(0.0, abs=1e-6) and out["total"] == pytest.approx(math.log(2))


def test_count_sampler_matches_token_sampler_statistics():
    task = dynamics_task(DynamicsConfig())
    counts, target, _ = task.sample_counts(4096, torch.Generator().manual_seed(0))
    b = sample(task)
    ref = token_counts(b.tokens, task.d_vocab)
    assert torch.equal(counts.sum(1), ref.sum(1)[:1].expand(4096))
    assert (counts.mean(0) - ref.mean(0)).abs().max() < 0.1, "count sampler's token frequencies differ"


def test_hand_written_gd_step_matches_autograd_sgd():
    task = dynamics_task(DynamicsConfig())
    counts, target, _ = task.sample_counts(32, torch.Generator().manual_seed(0))
    m1, m2 = LinearAttentionMemory(41, 32, 0.01), LinearAttentionMemory(41, 32, 0.01)
    with torch.no_grad():
        m1.V.normal_(generator=torch.Generator().manual_seed(1))
        m2.V.copy_(m1.V)
    opt = torch.optim.SGD(m1.parameters(), lr=0.1)
    torch.nn.functional.cross_entropy(m1.forward_counts(counts), target).backward()
    opt.step()
    gd_step_(m2, counts, target, 0.1)
    assert torch.allclose(m1.a, m2.a, atol=1e-6) and torch.allclose(m1.V, m2.V, atol=1e-6)


def test_outer_product_memory_capacity_matches_reference_at_small_d():
    # reference (independent re-implementation): d=32 -> N=35, d=64 -> N=105 (N ln N / d^2 ~ 0.12)
    for d, ref in [(32, 35), (64, 105)]:
        Ns = [max_stored("outer", d, seed=s) for s in range(4)]
        mean = sum(Ns) / len(Ns)
        assert 0.6 * ref <= mean <= 1.6 * ref, f"outer-product capacity at d={d}: {Ns}, reference {ref}"
        assert 0.06 <= capacity_constant(mean, d) <= 0.25


def test_outer_product_stores_few_and_fails_many():
    assert outer_product_accuracy(make_problem(8, 64, None, 0)) == 1.0
    assert outer_product_accuracy(make_problem(2000, 32, None, 0)) < 0.5
