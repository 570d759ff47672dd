"""The memory map (``hooks.gather_store``) on the papers' trained toy models finds the heads the papers describe,
and on the same architectures untrained finds nothing above its null.

- recall: the one head attends to the key and its OV circuit maps key -> value;
- Birth (the simplified model): the layer-1 induction head gathers the answer (the token after the trigger's
  earlier occurrence) and its ``W_O^2`` stores the identity (the paper's ``wo1``), while the layer-0 head gathers
  the previous token and stores nothing (its ``W_V^1 W_O^1`` stays frozen at random);
- factual, attention-heavy corner (16 heads, MLP width 1): the facts live in the heads: every head attends to the
  subject and relation and recalls facts above the null, the one-neuron MLP does not.

"Above its null" is :func:`hooks.gather_store.above_null`: a permutation p-value below 1 % divided by the number of
readings in the map (Bonferroni). The task supplies the answer positions and the association table
(``Task.answer_positions`` / ``Task.associations``)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

from hooks.gather_store import above_null, memory_map, plot_memory_map  # noqa: E402
from mechmem.pages.figures import figure_problems  # noqa: E402


def _map(toy, model, n_null: int, answer=None, **kwargs):
    batch, task = toy.batch, toy.task
    answer = task.answer_positions(batch) if answer is None else answer
    return memory_map(
        model, batch.tokens, batch.mask, answer, task.associations(), targets=batch.targets, n_null=n_null, **kwargs
    ).set_index("component", drop=False)


def test_recall_head_gathers_the_key_and_stores_its_value(toy_recall):
    df = _map(toy_recall, toy_recall.trained, n_null=2000)
    assert above_null(df) == ["L0H0"], df
    row = df.loc["L0H0"]
    assert row["gather"] > 0.5, "most of the read-out position's attention is on the key"
    assert row["store_recall"] == 1.0, "the OV circuit alone maps every key to its value"
    assert row["causal_ablate"] < 0 and row["causal_ov_identity"] < 0, (
        "without the head or its memory, the answer is lost"
    )
    assert above_null(_map(toy_recall, toy_recall.untrained, n_null=2000)) == []


def test_birth_induction_head_gathers_the_answer_and_its_output_matrix_stores_it(toy_birth):
    df = _map(toy_birth, toy_birth.trained, n_null=2000)
    heads = df[df["kind"] == "head"]
    assert heads["gather_score"].idxmax() == "L1H0" and heads["store_score"].idxmax() == "L1H0", heads
    assert "L1H0" in above_null(df), df
    assert df.loc["L1H0", "store_recall"] == pytest.approx(1.0), "W_O^2 recalls every token (the paper's wo1)"
    assert df.loc["L0H0", "store_p"] > 0.01 / 4, "the previous-token head's OV is frozen at random: it stores nothing"
    assert df.loc["L1H0", "causal_ablate"] < 0 and df.loc["L1H0", "causal_ov_zero"] < 0, df.loc["L1H0"]


def test_birth_previous_token_head_gathers_the_previous_position(toy_birth):
    batch = toy_birth.batch
    n, t = batch.tokens.shape
    previous = torch.zeros(n, t, t, dtype=torch.bool)
    previous[:, torch.arange(1, t), torch.arange(t - 1)] = True
    df = _map(toy_birth, toy_birth.trained, n_null=2000, answer=previous, replace=())
    assert df["gather_score"].idxmax() == "L0H0", df[["gather", "gather_null", "gather_p"]]
    assert df.loc["L0H0", "gather_p"] < 0.01 / 4, df.loc["L0H0"]


def test_factual_attention_heavy_model_stores_its_facts_in_the_heads(toy_factual):
    """Every head attends to the subject and the relation (above null), every head recalls more facts than its
    permuted-table null and more than the MLP (with no head storing anything, each would beat its null mean about
    half the time: all sixteen, about 1.5e-5), and the one-neuron MLP holds none."""
    df = _map(toy_factual, toy_factual.trained, n_null=4000)
    heads = df[df["kind"] == "head"]
    assert set(above_null(df)) == set(heads.index), df[["gather", "gather_p", "store_recall", "store_p"]]
    assert (heads["store_recall"] > heads["store_recall_null"]).all(), heads[["store_recall", "store_recall_null"]]
    assert (heads["store_score"] > df.loc["MLP0", "store_score"]).all(), df[["store_score"]]
    assert df.loc["MLP0", "store_p"] > 0.01, "a one-neuron MLP holds no facts"


@pytest.mark.parametrize("name, n_null", [("toy_recall", 1000), ("toy_birth", 1000), ("toy_factual", 4000)])
def test_untrained_models_sit_at_their_nulls(name, n_null, request):
    """The negative control: the same architectures, initialised as the papers do, before training (``n_null``:
    enough permutations for a p-value to pass the Bonferroni bound of the map's readings)."""
    toy = request.getfixturevalue(name)
    df = _map(toy, toy.untrained, n_null=n_null, replace=("zero",))
    assert above_null(df) == [], df[
        ["gather", "gather_null", "gather_p", "store_recall", "store_recall_null", "store_p"]
    ]


@pytest.mark.parametrize("toy", ["toy_recall", "toy_birth", "toy_factual"])
def test_the_memory_map_figure_explains_itself(toy, request):
    toy = request.getfixturevalue(toy)
    fig = plot_memory_map(_map(toy, toy.trained, n_null=100, replace=()))
    assert figure_problems(fig) == []
    matplotlib.pyplot.close(fig)
