"""Birth of a Transformer: shipped tables, the bigram-task generator, bad input, the hand-built induction head
and the memory-recall probes (the paper's data, probes and hand-built head)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mechmem.papers.birth.generator import (
    BigramOptions,
    alias_tables,
    bigram_floor,
    expected_bigram_floor,
    fixed_triggers,
    generate,
)
from mechmem.papers.birth.model import build_handbuilt, build_simplified, full_config, simplified_config
from mechmem.papers.birth.probes import memory_probes, wk0_recall, wk_recall, wk_recall_all_keys, wo_recall
from mechmem.papers.birth.tables import CharTables, shakespeare_tables, tables_from_bigram
from mechmem.papers.birth.task import BigramTask, incontext_metrics


@pytest.fixture(scope="module")
def tables():
    return shakespeare_tables()


@pytest.fixture(scope="module")
def default_sample():
    """The reference setting: K = 5 fixed triggers, T = 256, 512 sequences."""
    return generate(BigramOptions(seq_len=256, n_triggers=5), 512, torch.Generator().manual_seed(0))


# --- shipped tables ---------------------------------------------------------------------------------------


def test_shipped_tables_match_the_spec_statistics(tables):
    assert tables.n == 65
    assert tables.vocab[0] == "\n" and tables.vocab[1] == " " and tables.vocab[13] == "A" and tables.vocab[39] == "a"
    assert int(tables.bigram_counts.sum()) == 1_115_393, "every consecutive pair of the 1,115,394-char text"
    assert int((tables.bigram_counts > 0).sum()) == 1403, "spec: 1,403 non-zero bigrams"
    assert int(tables.unigram_counts.sum()) == 1_115_394
    entropy = float(-(tables.pi_u * tables.pi_u.log()).sum())
    assert abs(entropy - 3.31) < 0.01, f"unigram entropy {entropy:.3f} nats, reference 3.31"
    assert abs(float(tables.pi_u[1]) - 0.152) < 0.001, "space frequency 0.152"


def test_shipped_table_is_plain_npy_not_pickle():
    from mechmem.papers.birth.tables import DATA_DIR

    arr = np.load(DATA_DIR / "bigram_counts.npy", allow_pickle=False)
    assert arr.shape == (65, 65) and arr.dtype == np.int64


def test_regeneration_script_rebuilds_the_same_table(tmp_path, tables):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "make_birth_tables.py"
    spec = importlib.util.spec_from_file_location("make_birth_tables", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    text = "abca ab\nc"
    vocab, unigram, bigram = mod.char_tables(text)
    assert vocab == ["\n", " ", "a", "b", "c"]
    assert bigram[2, 3] == 2, "'ab' occurs twice"
    assert unigram.sum() == bigram.sum() + 1
    text_path = tmp_path / "t.txt"
    text_path.write_text(text)
    mod.main(["--text", str(text_path), "--out", str(tmp_path / "out")])
    assert (np.load(tmp_path / "out" / "bigram_counts.npy") == bigram).all()


# --- generator statistics ---------------------------------------------------------------------------------


def test_fixed_triggers_are_the_most_frequent_characters(tables):
    assert tables.decode(fixed_triggers(tables, 5)) == " etoa"
    assert tables.decode(fixed_triggers(tables, 1)) == " "
    assert tables.decode(fixed_triggers(tables, 3)) == " et"
    assert fixed_triggers(tables, 2, offset=3) == fixed_triggers(tables, 5)[3:5], "offset skips the most frequent"


def test_incontext_fraction_matches_reference(default_sample):
    frac = float((default_sample.counts >= 2).float().mean())
    assert abs(frac - 0.30) <= 0.02, f"fraction of c >= 2 positions {frac:.3f}, reference 0.30 +/- 0.02"


def test_bigram_floor_matches_reference(default_sample):
    floor = bigram_floor(default_sample)
    assert abs(floor - 2.145) <= 0.02, f"global-bigram floor {floor:.3f} nats, reference 2.145 +/- 0.02"


def test_expected_bigram_floor_is_what_large_batches_converge_to():
    exact = expected_bigram_floor(BigramOptions(seq_len=256, n_triggers=5), n_output_draws=1024)
    assert abs(exact - 2.145) <= 0.02, f"distribution floor {exact:.3f} nats, spec 2.145 +/- 0.02"
    for opts in (
        BigramOptions(seq_len=64, n_triggers=5),
        BigramOptions(seq_len=64, n_triggers=5, trigger_mode="random"),
    ):
        exact = expected_bigram_floor(opts, n_output_draws=2048)
        sample = bigram_floor(generate(opts, 4096, torch.Generator().manual_seed(3)))
        assert abs(exact - sample) < 0.015, (
            f"{opts.trigger_mode}: distribution floor {exact:.4f} vs 4096 sequences {sample:.4f}"
        )


def test_expected_bigram_floor_of_a_two_state_chain_is_exact():
    # pi_b: from 0 always to 1 (entropy 0); from 1 to 0 or 1 with probability 1/2 (entropy ln 2); pi_u = (1/2, 1/2)
    tables = tables_from_bigram(np.array([[0, 4], [2, 2]]))
    floor = expected_bigram_floor(BigramOptions(seq_len=1, n_triggers=0), tables=tables)
    assert floor == pytest.approx(0.5 * math.log(2)), "one position: E_pi_u[H] = (1/2) ln 2"
    floor = expected_bigram_floor(BigramOptions(seq_len=2, n_triggers=0), tables=tables)
    assert floor == pytest.approx(5 / 8 * math.log(2)), "z_2 ~ (1/4, 3/4): mean of (1/2) ln 2 and (3/4) ln 2"
    floor = expected_bigram_floor(BigramOptions(seq_len=3, n_triggers=1), tables=tables)
    assert floor == pytest.approx(math.log(2)), "token 0 is the trigger: c = 0 only at token 1, entropy ln 2"
    with pytest.raises(ValueError, match="n_output_draws"):
        expected_bigram_floor(BigramOptions(seq_len=2, n_triggers=0), n_output_draws=0, tables=tables)


def test_triggers_are_always_followed_by_their_output_and_counts_are_running_counts(default_sample):
    s = default_sample
    for b in range(8):
        out_of = dict(zip(s.triggers[b].tolist(), s.outputs[b].tolist()))
        seen = dict.fromkeys(out_of, 0)
        for t, tok in enumerate(s.tokens[b].tolist()):
            if tok in out_of:
                seen[tok] += 1
                assert s.targets[b, t] == out_of[tok], f"trigger at {t} not followed by its output"
                assert s.counts[b, t] == seen[tok], f"count at {t} is {s.counts[b, t]}, expected {seen[tok]}"
            else:
                assert s.counts[b, t] == 0
        assert (s.targets[b, :-1] == s.tokens[b, 1:]).all(), "targets are the inputs shifted by one"


def test_global_transitions_follow_the_bigram_table(tables):
    s = generate(BigramOptions(seq_len=256, n_triggers=0), 256, torch.Generator().manual_seed(1))
    counts = torch.zeros(65, 65)
    counts.index_put_((s.tokens.flatten(), s.targets.flatten()), torch.ones(s.tokens.numel()), accumulate=True)
    i = 1  # space: the most frequent previous character
    empirical = counts[i] / counts[i].sum()
    tv = 0.5 * float((empirical - tables.pi_b[i].float()).abs().sum())
    assert tv < 0.05, f"total variation {tv:.3f} between sampled and true pi_b(. | space)"
    assert (counts[tables.bigram_counts == 0] == 0).all(), "a transition with zero count was sampled"


def test_alias_tables_reproduce_the_distribution():
    probs = torch.tensor([[0.5, 0.25, 0.25, 0.0], [0.1, 0.2, 0.3, 0.4]], dtype=torch.float64)
    keep, alias = alias_tables(probs)
    implied = torch.zeros_like(probs)
    for r in range(2):
        for m in range(4):
            implied[r, m] += keep[r, m] / 4
            implied[r, alias[r, m]] += (1 - keep[r, m]) / 4
    assert torch.allclose(implied, probs), f"alias tables imply {implied}, not {probs}"


def test_generation_is_seeded_and_batch_vectorised():
    opts = BigramOptions(seq_len=64)
    a = generate(opts, 16, torch.Generator().manual_seed(3))
    b = generate(opts, 16, torch.Generator().manual_seed(3))
    c = generate(opts, 16, torch.Generator().manual_seed(4))
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.counts, b.counts)
    assert not torch.equal(a.tokens, c.tokens)


def test_random_triggers_are_distinct_per_sequence():
    s = generate(BigramOptions(seq_len=64, n_triggers=5, trigger_mode="random"), 64, torch.Generator().manual_seed(0))
    assert all(len(set(row.tolist())) == 5 for row in s.triggers)
    assert len({tuple(row.tolist()) for row in s.triggers}) > 1, "random triggers differ between sequences"


def test_output_options(tables):
    g = torch.Generator().manual_seed(0)
    train = generate(BigramOptions(seq_len=16, output_split="train"), 256, g)
    test = generate(BigramOptions(seq_len=16, output_split="test"), 256, g)
    assert train.outputs.max() <= 47 and test.outputs.min() >= 48, "train outputs 0-47, test outputs 48-64"
    norep = generate(BigramOptions(seq_len=16, no_repeat=True), 512, g)
    assert (norep.outputs != norep.triggers).all()
    big = generate(BigramOptions(seq_len=16, output_mode="bigram"), 512, g)
    assert (tables.pi_b[big.triggers, big.outputs] > 0).all(), "bigram outputs have positive pi_b(o | q)"
    nocount = generate(BigramOptions(seq_len=128, output_counter=False), 8, g)
    assert set(nocount.counts.unique().tolist()) <= {0, 1}


def test_task_batch_masks_incontext_positions_and_exposes_labels():
    task = BigramTask(seq_len=64)
    batch = task.sample(8, torch.Generator().manual_seed(0))
    assert torch.equal(batch.mask, batch.labels["count"] >= 2)
    all_pos = BigramTask(seq_len=64, loss_head_only=False).sample(8, torch.Generator().manual_seed(0))
    assert all_pos.mask.all()
    perfect = torch.nn.functional.one_hot(batch.targets, 65).float() * 50
    m = incontext_metrics(perfect, batch)
    assert m["acc_incontext"] == 1.0 and m["loss_head"] < 1e-6


# --- bad input --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(n_triggers=66), "n_triggers"),
        (dict(n_triggers=5, trigger_offset=61), "trigger_offset"),
        (dict(trigger_mode="sometimes"), "trigger_mode"),
        (dict(output_mode="zipf"), "output_mode"),
        (dict(output_split="val"), "output_split"),
        (dict(seq_len=0), "seq_len"),
    ],
)
def test_bad_task_options_raise_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        BigramTask(**kwargs)


@pytest.mark.own_validation
def test_bad_count_tables_raise():
    with pytest.raises(ValueError, match="shape"):
        CharTables(tuple("abc"), np.ones(3, dtype=np.int64), np.ones((3, 4), dtype=np.int64))
    bad = np.ones((3, 3), dtype=np.int64)
    bad[0, 1] = -2
    with pytest.raises(ValueError, match="negative"):
        tables_from_bigram(bad)
    with pytest.raises(ValueError, match="square"):
        tables_from_bigram(np.ones((2, 3)))


def test_sequence_longer_than_the_model_context_raises():
    from mechmem.core.config import TrainConfig
    from mechmem.core.training import train

    model = build_simplified(d_model=16, n_ctx=32)
    with pytest.raises(ValueError, match="n_ctx"):
        train(model, BigramTask(seq_len=64), TrainConfig(steps=1, progress=False))


def test_freezing_a_matrix_the_model_lacks_raises():
    from mechmem.core.config import TrainConfig
    from mechmem.core.training import train

    model = build_simplified(d_model=16, n_ctx=32)
    with pytest.raises(ValueError, match="blocks.2.attn.W_O"):
        train(
            model, BigramTask(seq_len=32), TrainConfig(steps=1, progress=False, freeze_until={"blocks.2.attn.W_O": 1})
        )
    with pytest.raises(ValueError, match="mlp"):
        simplified_config().expand_weight_name("blocks.1.mlp.W_in")


def test_delayed_matrix_must_be_trained():
    from mechmem.contract.runner import make_context
    from mechmem.papers.birth.experiments import delayed_training

    with pytest.raises(ValueError, match="trained matrix"):
        delayed_training(make_context("birth", "smoke", progress=False), delayed="blocks.0.attn.W_V")


# --- models -----------------------------------------------------------------------------------------------


def test_simplified_model_trains_only_the_three_matrices():
    from hooks.weights import weight_names, weight_parameters

    model = build_simplified(d_model=32, n_ctx=16)
    trained = {n for n in weight_names(model) if weight_parameters(model, n).requires_grad}
    assert trained == {"blocks.0.attn.W_K", "blocks.1.attn.W_K", "blocks.1.attn.W_O"}
    assert torch.equal(model.blocks[0].attn.W_Q[0], torch.eye(32)), "W_Q is the identity"


def test_full_model_config_is_pre_ln_with_mlps():
    cfg = full_config(n_layers=1)
    assert cfg.normalization == "LN" and not cfg.attn_only and cfg.d_mlp == 4 * cfg.d_model and cfg.n_layers == 1


# --- hand-built induction head and probes -----------------------------------------------------------------


@pytest.fixture(scope="module")
def handbuilt_setup():
    task = BigramTask(seq_len=256)
    model = build_handbuilt(d_model=256, n_ctx=256, key_tokens=task.triggers)
    batch = task.sample(32, torch.Generator().manual_seed(5))
    return task, model, batch


def test_handbuilt_induction_head_predicts_incontext_bigrams_without_training(handbuilt_setup):
    task, model, batch = handbuilt_setup
    with torch.no_grad():
        m = incontext_metrics(model(batch.tokens), batch)
    assert m["acc_incontext"] >= 0.95, f"hand-built in-context accuracy {m['acc_incontext']:.3f} < 0.95"
    assert m["acc_first"] < 0.2, "first occurrences cannot be predicted in context"


def test_probes_on_handbuilt_matrices_are_perfect(handbuilt_setup):
    task, model, _ = handbuilt_setup
    probes = memory_probes(model, triggers=task.triggers)
    for name in ("wo1", "wk1", "wk0", "wk0_64"):
        assert probes[name] == 1.0, f"probe {name} = {probes[name]} on the hand-built matrices"


def test_probes_are_at_chance_on_random_matrices():
    model = build_simplified(d_model=64, n_ctx=128, seed=1)
    probes = memory_probes(model)
    assert probes["wo1"] < 0.2 and probes["wk0"] < 0.2, f"random matrices should not recall: {probes}"


def test_probe_functions_on_exact_memories():
    E = torch.eye(8)
    assert wo_recall(E, torch.eye(8), torch.eye(8)) == 1.0
    assert wo_recall(E, torch.eye(8), torch.eye(8).flip(0)) == 0.0
    shift = torch.roll(torch.eye(8), 1, 0)
    assert wk_recall(E, torch.eye(8), torch.eye(8)) == 1.0
    assert wk0_recall(E, shift) == 1.0, "query p_t -> key p_{t-1}"
    assert wk0_recall(E, shift.T) == 0.0


def _authors_test_wk1(model, key_tokens):
    """The authors' ``test_wk1`` written out on the raw weights (their ``nn.Linear`` chain
    wk(wo(wv(emb))) for the keys and wq(emb) for the queries, in TransformerLens's row-vector layout)."""
    ids = torch.as_tensor(key_tokens)
    emb = model.embed.W_E.detach()[ids]
    a0, a1 = model.blocks[0].attn, model.blocks[1].attn
    keys = emb @ a0.W_V.detach()[0] @ a0.W_O.detach()[0] @ a1.W_K.detach()[0]
    queries = emb @ a1.W_Q.detach()[0]
    return float(((queries @ keys.T).argmax(-1) == torch.arange(len(ids))).float().mean())


def test_wk1_probe_follows_the_authors_test_wk1():
    gen = torch.Generator().manual_seed(0)
    task = BigramTask(seq_len=64)
    model = build_handbuilt(d_model=64, n_ctx=64, key_tokens=None)
    W_K = model.blocks[1].attn.W_K
    values = []
    for noise in (0.0, 0.5, 1.0, 2.0, 4.0):
        with torch.no_grad():
            original = W_K.detach().clone()
            W_K.add_(noise * W_K.detach().std() * torch.randn(W_K.shape, generator=gen))
        for keys in (task.triggers, list(range(65)), [3, 9, 40]):
            ours = memory_probes(model, triggers=keys)["wk1"] if len(keys) < 65 else memory_probes(model)["wk1"]
            assert ours == _authors_test_wk1(model, keys), f"wk1 differs from test_wk1 (noise {noise}, keys {keys})"
            values.append(ours)
        with torch.no_grad():
            W_K.copy_(original)
    assert len(set(values)) > 2, f"the comparison should cover several recall levels, got {sorted(set(values))}"


def test_wk1_restricts_keys_to_the_triggers_and_all_keys_variant_does_not():
    E = torch.eye(6)
    QK = torch.eye(6)
    QK[0, 0], QK[0, 5] = 1.0, 2.0  # query 0 prefers the key of token 5 (not a trigger) over its own key
    triggers = [0, 1, 2]
    assert wk_recall(E, QK, torch.eye(6), triggers) == 1.0, "among the triggers' keys, query 0 still picks key 0"
    assert wk_recall_all_keys(E, QK, torch.eye(6), triggers) == pytest.approx(2 / 3), "key 5 wins over all keys"
    assert wk_recall(E, QK, torch.eye(6)) == wk_recall_all_keys(E, QK, torch.eye(6)) == pytest.approx(5 / 6)
    probes = memory_probes(build_simplified(d_model=32, n_ctx=32, seed=2), triggers=triggers)
    assert probes["wk1_all_keys"] <= probes["wk1"], "restricting the keys can only help the argmax"
