"""``hooks.gather_store``: gather / store / causal readings equal a direct computation, find the roles of a
hand-built model's heads (one gathers and stores, one only gathers, one only stores), sit at their nulls on
randomly initialised models, refuse bad input before running the model, and leave the model as it was.
Every model test runs on each model kind the installed TransformerLens offers."""

from __future__ import annotations

import re

import pytest
import torch

from hooks.gather_store import (
    Associations,
    above_null,
    embedding_basis,
    gather_readings,
    head_output_basis,
    memory_map,
    store_readings,
)
from hooks.replace import ov_circuit
from hooks.state import same_state, state_fingerprint
from hooks.testing import (
    KINDS,
    gpt2_hooked_model,
    hf_gpt2_bridge,
    hooked_model,
    models_by_kind,
    random_bridge,
    tiny_config,
)
from hooks.weights import get_weight, set_weight_, weight_names

N_KEYS, N_NOISE, N_VALUES, SEQ = 8, 8, 4, 8
QUERY = N_KEYS + N_NOISE  # the read-out token, last in every sequence
VALUES = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])  # value[k]: every value stored twice
D_MODEL, D_HEAD = 32, 8
LAMBDA = 30.0  # attention score of the query on a key: softmax mass ~1 on the key


def _batch(n: int = 64, seed: int = 0):
    """Noise, one key at a random position, the query last; targets: the key's value at the query."""
    g = torch.Generator().manual_seed(seed)
    tokens = N_KEYS + torch.randint(N_NOISE, (n, SEQ), generator=g)
    keys = torch.randint(N_KEYS, (n,), generator=g)
    where = torch.randint(SEQ - 1, (n,), generator=g)
    tokens[torch.arange(n), where] = keys
    tokens[:, -1] = QUERY
    readout = torch.zeros(n, SEQ, dtype=torch.bool)
    readout[:, -1] = True
    answer = torch.zeros_like(readout)
    answer[torch.arange(n), where] = True
    targets = torch.zeros(n, SEQ, dtype=torch.long)
    targets[:, -1] = VALUES[keys]
    return tokens, readout, answer, targets


def _handbuilt(kind: str):
    """One layer, three heads, one-hot embeddings: head 0 attends from the query to the key and maps
    key -> value (gathers and stores), head 1 attends to the key but writes nothing (gathers only),
    head 2 attends uniformly and maps key -> value (stores only)."""
    cfg = tiny_config(
        n_layers=1, n_heads=3, d_model=D_MODEL, d_head=D_HEAD, d_vocab=QUERY + 1, d_vocab_out=N_VALUES,
        n_ctx=SEQ, attn_only=True, normalization_type=None,
    )  # fmt: skip
    model = (hooked_model if kind == "hooked" else random_bridge)(cfg, seed=0)
    for name in weight_names(model):
        set_weight_(model, name, torch.zeros_like(get_weight(model, name)))
    eye = torch.eye(D_MODEL)
    set_weight_(model, "W_E", eye[: QUERY + 1])
    W_U = torch.zeros(D_MODEL, N_VALUES)
    W_U[20 + torch.arange(N_VALUES), torch.arange(N_VALUES)] = 1.0
    set_weight_(model, "W_U", W_U)
    W_Q, W_K = torch.zeros(3, D_MODEL, D_HEAD), torch.zeros(3, D_MODEL, D_HEAD)
    W_V, W_O = torch.zeros(3, D_MODEL, D_HEAD), torch.zeros(3, D_HEAD, D_MODEL)
    for head in (0, 1):  # the query looks for keys
        W_Q[head, QUERY, 0] = LAMBDA * D_HEAD**0.5
        W_K[head, :N_KEYS, 0] = 1.0
    for head in (0, 2):  # key k -> value[k]: e_k W_V W_O = e_{20 + value[k]}
        W_V[head, torch.arange(N_KEYS), torch.arange(N_KEYS)] = 1.0
        W_O[head, torch.arange(N_KEYS), 20 + VALUES] = 1.0
    for name, value in (("W_Q", W_Q), ("W_K", W_K), ("W_V", W_V), ("W_O", W_O)):
        set_weight_(model, f"blocks.0.attn.{name}", value)
    return model.eval()


TABLE = Associations(torch.arange(N_KEYS), VALUES, torch.arange(N_VALUES))


def _accuracy(logits):
    return (logits[:, -1].argmax(-1) == _batch()[3][:, -1]).float().mean()


def _correct_logit(logits):
    """The metric: the mean logit of the right value at the read-out (1 from head 0, 1/8 from head 2)."""
    return logits[:, -1].gather(-1, _batch()[3][:, -1:]).mean()


@pytest.mark.parametrize("kind", KINDS)
def test_handbuilt_heads_read_as_gatherer_and_store(kind):
    model = _handbuilt(kind)
    tokens, readout, answer, targets = _batch()
    assert _accuracy(model(tokens)) == 1.0, "the hand-built model should solve its task"
    df = memory_map(model, tokens, readout, answer, TABLE, metric=_correct_logit, n_null=2000).set_index("component")
    threshold = 0.01 / 6  # Bonferroni over the six readings (three heads, gather and store)
    gathers = set(df.index[df["gather_p"] < threshold])
    stores = set(df.index[df["store_p"] < threshold])
    assert gathers == {"L0H0", "L0H1"}, f"heads gathering: {sorted(gathers)}\n{df}"
    assert stores == {"L0H0", "L0H2"}, f"heads storing: {sorted(stores)}\n{df}"
    assert df.loc["L0H0", "gather"] > 0.99 and df.loc["L0H0", "store_recall"] == 1.0, df.loc["L0H0"]
    assert df.loc["L0H2", "gather"] == pytest.approx(df.loc["L0H2", "gather_null"], abs=1e-6), "uniform attention"
    assert df.loc["L0H1", "store_margin"] == 0.0, "a head that writes nothing has zero logits everywhere"
    # causal: head 0's memory gives the answer a logit of 1; an identity OV copies the key, which W_U does not read;
    # head 1 writes nothing, so ablating it or zeroing its OV changes nothing
    assert df.attrs["metric_clean"] == pytest.approx(1.125, abs=1e-3) and df.attrs["n_readout"] == len(tokens)
    for effect in ("causal_ov_zero", "causal_ov_identity"):
        assert df.loc["L0H0", effect] == pytest.approx(-1.0, abs=1e-3), df.loc["L0H0"]
    assert df.loc["L0H1", "causal_ablate"] == 0.0 and df.loc["L0H1", "causal_ov_zero"] == 0.0, df.loc["L0H1"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_constructed_memory_equal_to_the_heads_own_circuit_changes_nothing(kind):
    model = _handbuilt(kind)
    tokens, readout, answer, _ = _batch()
    own = ov_circuit(model, 0, 0).AB
    shuffled = own[torch.randperm(D_MODEL, generator=torch.Generator().manual_seed(1))]
    for memory, changes in ((own, False), (shuffled, True)):
        df = memory_map(
            model, tokens, readout, answer, TABLE, metric=_correct_logit, heads=[(0, 0)], memories={(0, 0): memory}
        )
        effect = float(df.loc[0, "causal_ov_memory"])
        assert (effect != 0.0) == changes, f"OV replaced by {'a shuffled' if changes else 'its own'} memory: {effect}"


def test_gather_equals_a_loop_over_read_out_rows():
    g = torch.Generator().manual_seed(0)
    patterns = torch.rand(2, 3, 4, 6, 6, generator=g).tril()
    patterns = patterns / patterns.sum(-1, keepdim=True)  # [layer, batch, head, q, k], causal rows
    readout = torch.rand(3, 6, generator=g) > 0.4
    answer = torch.rand(3, 6, 6, generator=g) > 0.6
    got = gather_readings(patterns, readout, answer, 10, torch.Generator().manual_seed(0))
    mass, uniform, n = torch.zeros(2, 4), 0.0, 0
    for b in range(3):
        for q in range(6):
            seen = [k for k in range(q + 1) if answer[b, q, k]]
            if readout[b, q] and seen:
                mass += patterns[:, b, :, q, seen].sum(-1)
                uniform += len(seen) / (q + 1)
                n += 1
    assert got["n_rows"] == n
    torch.testing.assert_close(got["gather"], mass / n)
    torch.testing.assert_close(got["gather_null"], torch.full((2, 4), uniform / n))
    assert ((got["gather_p"] > 0) & (got["gather_p"] <= 1)).all()


def test_store_readings_equal_a_loop_and_a_perfect_memory_beats_every_permutation():
    logits = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([0, 1, 2, 3, 0, 1])
    perms = torch.stack([torch.randperm(6, generator=torch.Generator().manual_seed(s)) for s in range(5)])
    got = store_readings(logits, targets, perms)

    def margin(t):
        return sum(float(logits[i, t[i]] - max(logits[i, c] for c in range(4) if c != t[i])) for i in range(6)) / 6

    assert got["store_recall"] == pytest.approx(float((logits.argmax(-1) == targets).float().mean()))
    assert got["store_margin"] == pytest.approx(margin(targets), abs=1e-6)
    assert got["store_margin_null"] == pytest.approx(sum(margin(targets[p]) for p in perms) / 5, abs=1e-6)
    perfect = store_readings(torch.eye(4)[targets] * 5.0, targets, perms)
    assert perfect["store_recall"] == 1.0 and perfect["store_margin"] == 5.0
    assert perfect["store_p"] == pytest.approx((1 + sum(bool((targets[p] == targets).all()) for p in perms)) / 6)


def _random_map(model, n_keys: int, n_null: int, seed: int = 0):
    """The memory map of ``model`` on random tokens, with a random table over the first ``n_keys`` tokens
    (drawn independently of the weights) and the positions holding them as the answer positions."""
    g = torch.Generator().manual_seed(seed)
    d_vocab = model.cfg.d_vocab
    tokens = torch.randint(d_vocab, (32, 16), generator=g)
    readout = torch.zeros(32, 16, dtype=torch.bool)
    readout[:, -1] = True
    table = Associations(torch.arange(n_keys), torch.randint(d_vocab, (n_keys,), generator=g), torch.arange(d_vocab))
    return memory_map(
        model, tokens, readout, tokens < n_keys, table, targets=tokens.roll(-1, 1), replace=("zero",), n_null=n_null
    )


@pytest.mark.parametrize("kind", ["hf_bridge"] + (["hooked"] if "hooked" in KINDS else []))
def test_gpt2_models_at_initialisation_gather_and_store_nothing(kind):
    """The negative control: GPT-2's architecture as initialised (HuggingFace's init behind a bridge, or
    TransformerLens's on a HookedTransformer) holds no association and attends to no token in particular."""
    model = hf_gpt2_bridge(seed=0) if kind == "hf_bridge" else gpt2_hooked_model(seed=0)
    df = _random_map(model, n_keys=10, n_null=2000)
    assert above_null(df) == [], df[["component", "gather", "gather_null", "gather_p", "store_p"]]
    assert (df["gather_score"].dropna().abs() < 0.05).all(), df[["component", "gather", "gather_null"]]


@pytest.mark.parametrize("kind", KINDS)
def test_store_readings_of_random_weights_sit_at_their_null(kind):
    """Weights drawn at random (N(0, 1/fan), larger than an initialisation: some heads prefer some tokens, so
    attention is not uniform) still hold no association with a table drawn independently of them."""
    df = _random_map(models_by_kind(seed=3)[kind], n_keys=8, n_null=2000)
    assert (df["store_p"] > 0.01 / len(df)).all(), df[["component", "store_recall", "store_recall_null", "store_p"]]


@pytest.mark.parametrize("kind", KINDS)
def test_the_model_comes_back_as_it_was(kind):
    model = _handbuilt(kind)
    tokens, readout, answer, _ = _batch()
    model.train()
    before = state_fingerprint(model)
    memory_map(model, tokens, readout, answer, TABLE, metric=_accuracy, memories={(0, 1): torch.eye(D_MODEL)})
    assert same_state(before, state_fingerprint(model)) == []


def test_bases_are_the_embeddings_and_an_earlier_heads_output():
    model = _handbuilt(KINDS[0])
    pairs = Associations(torch.tensor([[0, 9], [1, 10]]), torch.tensor([0, 1]), torch.arange(N_VALUES))
    W_E = get_weight(model, "W_E")
    torch.testing.assert_close(embedding_basis(model, pairs), W_E[[0, 1]] + W_E[[9, 10]])
    torch.testing.assert_close(head_output_basis(model, TABLE, 0, 0), W_E[:N_KEYS] @ ov_circuit(model, 0, 0).AB)


@pytest.mark.own_validation
@pytest.mark.parametrize(
    "change, message",
    [
        (dict(readout=torch.ones(64, 7, dtype=torch.bool)), "readout must be a bool mask"),
        (dict(readout=torch.zeros(64, SEQ, dtype=torch.bool)), "readout marks no position"),
        (dict(answer=torch.ones(64, SEQ)), "answer must be a bool mask"),
        (dict(table=Associations(torch.arange(N_KEYS) + 20, VALUES)), "keys must be input token ids"),
        (dict(table=Associations(torch.arange(N_KEYS), VALUES, torch.arange(2))), "must be one of the candidates"),
        (dict(table=Associations(torch.arange(1), VALUES[:1])), "n >= 2"),
        (dict(metric=None), "give a metric"),
        (dict(replace=("identity", "copy")), "replace must be a sequence"),
        (dict(memories={(0, 0): torch.eye(3)}), "memories[(0, 0)] must be a [d_model, d_model]"),
        (dict(memories={(0, 5): torch.eye(D_MODEL)}), "head must be an int"),
        (dict(n_null=0), "n_null must be a positive int"),
        (dict(ablation="resample"), "ablation must be one of"),
        (dict(basis="unembed"), "basis must be 'embed'"),
        (dict(basis={0: torch.zeros(3, D_MODEL)}), "the basis of layer 0 must be"),
    ],
)
def test_bad_input_is_refused_before_the_model_runs(change, message):
    model = _handbuilt(KINDS[0])
    tokens, readout, answer, _ = _batch()
    calls = []
    model.register_forward_pre_hook(lambda *_: calls.append(1))
    args = dict(readout=readout, answer=answer, table=TABLE, metric=_accuracy) | change
    with pytest.raises((ValueError, TypeError), match=re.escape(message)):
        memory_map(model, tokens, args.pop("readout"), args.pop("answer"), args.pop("table"), **args)
    assert calls == [], "the model ran before the input was checked"
