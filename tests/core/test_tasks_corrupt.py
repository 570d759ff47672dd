"""``Task.corrupt``: every task's corrupted batch has the clean batch's shape, changes what the
task's answer depends on (and so the answer), is itself a valid example of the task, is seeded
by the generator alone, and leaves the clean batch untouched."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

from mechmem.papers.birth.task import BigramTask
from mechmem.papers.factual.task import FactualRecallTask
from mechmem.papers.lca.generator import hamming
from mechmem.papers.lca.task import LatentConceptTask
from mechmem.tasks import Batch, RecallTask, Task

TASKS = {
    "recall": lambda: RecallTask(),
    "lca": lambda: LatentConceptTask(m=5, context_len=16, epsilon=0.1),
    "birth": lambda: BigramTask(seq_len=48),
    "factual": lambda: FactualRecallTask(S=8, R=4, D=4, seq_len=12),
}


def _pair(task: Task, n: int = 32, seed: int = 0) -> tuple[Batch, Batch]:
    clean = task.sample(n, torch.Generator().manual_seed(seed))
    return clean, task.corrupt(clean, torch.Generator().manual_seed(seed + 1))


@pytest.mark.parametrize("name", sorted(TASKS))
def test_corrupt_keeps_the_shape_and_changes_scored_answers(name):
    task = TASKS[name]()
    clean, corrupted = _pair(task)
    assert corrupted.tokens.shape == clean.tokens.shape and corrupted.targets.shape == clean.targets.shape
    scored = clean.mask & corrupted.mask
    changed = (clean.targets != corrupted.targets) & scored
    assert changed.any(1).float().mean() >= 0.9, f"{name}: the corruption left most examples' answers unchanged"


@pytest.mark.parametrize("name", sorted(TASKS))
def test_corrupt_is_seeded_by_the_generator_and_leaves_the_batch_alone(name):
    task = TASKS[name]()
    clean = task.sample(16, torch.Generator().manual_seed(3))
    before = clean.tokens.clone()
    a = task.corrupt(clean, torch.Generator().manual_seed(9))
    torch.manual_seed(123)  # the global RNG must not matter
    b = task.corrupt(clean, torch.Generator().manual_seed(9))
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.targets, b.targets), f"{name}: not reproducible"
    assert torch.equal(clean.tokens, before), f"{name}: corrupt modified the clean batch"


def test_recall_corruption_swaps_only_the_key_for_one_with_another_value():
    task = RecallTask()
    clean, corrupted = _pair(task)
    rows = torch.arange(len(clean.tokens))
    where = clean.labels["key_position"]
    assert ((clean.tokens != corrupted.tokens).sum(1) == 1).all(), "exactly one token (the key) must change"
    new_key = corrupted.tokens[rows, where]
    assert (new_key < task.n_keys).all()
    assert torch.equal(corrupted.targets[:, -1], task.values[new_key]), "targets must be the new key's values"
    assert (task.values[new_key] != task.values[clean.labels["key"]]).all()


def test_lca_corruption_is_a_context_of_the_new_target_with_the_same_hamming_structure():
    task = LatentConceptTask(m=5, context_len=16, epsilon=0.2)
    clean, corrupted = _pair(task)
    y, y_new = clean.labels["y"], corrupted.labels["y"]
    assert (y != y_new).all() and torch.equal(corrupted.targets[:, -1], y_new)
    assert torch.equal(hamming(clean.tokens, y[:, None]), hamming(corrupted.tokens, y_new[:, None])), (
        "every context token must keep its Hamming distance to the target"
    )


def test_factual_corruption_swaps_the_subject_for_one_with_another_answer():
    task = FactualRecallTask(S=8, R=4, D=4, seq_len=12)
    clean, corrupted = _pair(task)
    rows = torch.arange(len(clean.tokens))
    s_new = corrupted.tokens[rows, clean.labels["subject_pos"]]
    assert ((clean.tokens != corrupted.tokens).sum(1) == 1).all()
    assert torch.equal(corrupted.targets[:, -1], task.answer(s_new, clean.labels["relation"]))
    relation_pos = clean.labels["relation_pos"]
    assert torch.equal(corrupted.tokens[rows, relation_pos], clean.tokens[rows, relation_pos])


def test_birth_corruption_writes_the_new_output_after_every_trigger_occurrence():
    task = BigramTask(seq_len=48)
    clean, corrupted = _pair(task)
    triggers, new = corrupted.labels["triggers"], corrupted.labels["outputs"]
    assert not torch.isin(new, triggers).any(), "new outputs must not be triggers"
    assert (new != clean.labels["outputs"]).all()
    seq = torch.cat([corrupted.tokens, corrupted.targets[:, -1:]], 1)
    for b in range(seq.shape[0]):
        for k in range(triggers.shape[1]):
            after = seq[b, 1:][seq[b, :-1] == triggers[b, k]]
            assert (after == new[b, k]).all(), f"example {b}: trigger {k} is not followed by its new output"
    c = corrupted.labels["count"]
    assert torch.equal(corrupted.mask, c >= 2), "the loss mask must follow the recomputed counts"


@dataclass
class _Resampled(Task):
    name: ClassVar[str] = "resampled"
    seq_len: int = 6

    @property
    def d_vocab(self) -> int:
        return 5

    def sample(self, batch_size, generator):
        tokens = torch.randint(5, (batch_size, self.seq_len), generator=generator)
        mask = torch.zeros_like(tokens, dtype=torch.bool)
        mask[:, -1] = True
        return Batch(tokens, tokens.roll(-1, 1), mask)


def test_default_corruption_resamples_fresh_examples_from_the_task():
    task = _Resampled()
    clean = task.sample(8, torch.Generator().manual_seed(0))
    corrupted = task.corrupt(clean, torch.Generator().manual_seed(1))
    fresh = task.sample(8, torch.Generator().manual_seed(1))
    assert torch.equal(corrupted.tokens, fresh.tokens), "the default must be a fresh sample from the generator"


def _blank_batch(length: int) -> Batch:
    zeros = torch.zeros(2, length, dtype=torch.long)
    return Batch(zeros, zeros, torch.ones(2, length, dtype=torch.bool))


def test_a_task_without_a_corruption_rule_raises_a_clear_error():
    batch = _blank_batch(3)
    with pytest.raises(NotImplementedError, match="no corruption rule"):
        Task().corrupt(batch, torch.Generator())


def test_corrupt_names_the_missing_labels_of_a_batch_without_them():
    batch = _blank_batch(12)
    with pytest.raises(ValueError, match="key"):
        RecallTask().corrupt(batch, torch.Generator())


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_token_and_output_has_a_label(name):
    task = TASKS[name]()
    assert len(task.token_labels()) == task.d_vocab and len(task.output_labels()) == task.d_vocab_out
    assert len(set(task.token_labels())) == task.d_vocab, f"{name}: token labels must be distinct"
