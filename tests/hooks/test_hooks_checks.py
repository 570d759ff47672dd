"""Bad arguments to the hook tools are refused before the model is touched, naming the argument.

Each case was a silent wrong answer or a late, nameless crash: a layer 9 of a 2-layer model
dropped from a sweep, ``layers=[1.7]`` run as layer 1, an empty batch dividing by zero,
out-of-vocabulary or negative token ids (an ``IndexError``, or a silent wrap-around), a float
ablation reference, an unknown weight name as a ``KeyError``, ``memory_budget_gb=inf`` failing
with a NaN conversion. On both model kinds the model must come back unchanged.
"""

from __future__ import annotations

import math

import pytest
import torch

from hooks.ablation import Ablation, ablation_sweep, run_with_ablations
from hooks.patching import patch_sweep
from hooks.replace import replace_weights
from hooks.state import same_state, state_fingerprint
from hooks.testing import KINDS, models_by_kind

# models_by_kind: 2 layers, n_ctx 16, d_vocab 24
TOK = torch.randint(0, 24, (3, 6), generator=torch.Generator().manual_seed(0))
CORRUPT = torch.randint(0, 24, (3, 6), generator=torch.Generator().manual_seed(1))


def metric(logits):
    return logits[:, -1].log_softmax(-1)[:, 0].mean()


@pytest.fixture(scope="module")
def models():
    return models_by_kind(seed=2)


def _tokens(kind: str) -> torch.Tensor:
    return {
        "empty batch": TOK[:0],
        "no positions": TOK[:, :0],
        "longer than n_ctx": torch.zeros(2, 17, dtype=torch.long),
        "id = d_vocab": torch.full((2, 4), 24),
        "negative id": torch.full((2, 4), -1),
    }[kind]


TOKEN_CASES = ["empty batch", "no positions", "longer than n_ctx", "id = d_vocab", "negative id"]
TOKEN_WORDS = {
    "empty batch": "empty",
    "no positions": "empty",
    "longer than n_ctx": "n_ctx=16",
    "id = d_vocab": "token id 24",
    "negative id": "token id -1",
}

CALLS = {
    "run_with_ablations": lambda m, t: run_with_ablations(m, t, [Ablation(("z", 0), "zero")]),
    "ablation_sweep": lambda m, t: ablation_sweep(m, t, metric, components=("heads",), progress=False),
    "patch_sweep (clean)": lambda m, t: patch_sweep(m, t, torch.zeros_like(t), metric, "resid_pre", progress=False),
}
CALL_ARG = {"run_with_ablations": "tokens", "ablation_sweep": "tokens", "patch_sweep (clean)": "clean_tokens"}


def _refused(model, call, error, *words):
    before = state_fingerprint(model)
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    for word in words:
        assert word in message, f"the error does not mention {word!r}: {message}"
    problems = same_state(before, state_fingerprint(model))
    assert not problems, f"the model changed although the call was refused: {problems}"
    return message


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", TOKEN_CASES)
@pytest.mark.parametrize("tool", list(CALLS))
def test_bad_tokens_are_refused_naming_the_argument(models, kind, case, tool):
    model = models[kind]
    _refused(model, lambda: CALLS[tool](model, _tokens(case)), ValueError, CALL_ARG[tool], TOKEN_WORDS[case])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "layers, error, word",
    [([0, 9], ValueError, "9"), ([1.7], TypeError, "1.7"), ([True], TypeError, "True"), ([], ValueError, "empty")],
)
def test_ablation_sweep_refuses_bad_layers_instead_of_dropping_or_rounding_them(models, kind, layers, error, word):
    model = models[kind]
    for components in (("heads",), ("mlp_out",), ("resid_mid",)):
        _refused(
            model,
            lambda c=components: ablation_sweep(model, TOK, metric, components=c, layers=layers, progress=False),
            error,
            "layers",
            word,
        )


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "layers, error, word", [([0, 9], ValueError, "9"), ([1.7], TypeError, "1.7"), ([-1], ValueError, "-1")]
)
def test_patch_sweep_refuses_bad_layers(models, kind, layers, error, word):
    model = models[kind]
    _refused(
        model,
        lambda: patch_sweep(model, TOK, CORRUPT, metric, "resid_pre", layers=layers, progress=False),
        error,
        "layers",
        word,
    )


@pytest.mark.parametrize("kind", KINDS)
def test_patch_sweep_refuses_bad_corrupted_tokens(models, kind):
    model = models[kind]
    bad = CORRUPT.clone()
    bad[0, 0] = 99
    _refused(
        model,
        lambda: patch_sweep(model, TOK, bad, metric, "resid_pre", progress=False),
        ValueError,
        "corrupted_tokens",
        "99",
    )


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("budget", [math.inf, math.nan, 0.0, -1.0])
def test_memory_budget_must_be_finite_and_positive(models, kind, budget):
    model = models[kind]
    _refused(
        model,
        lambda: patch_sweep(model, TOK, CORRUPT, metric, "resid_pre", memory_budget_gb=budget, progress=False),
        ValueError,
        "memory_budget_gb",
    )


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("how", ["run_with_ablations", "ablation_sweep"])
def test_float_ablation_reference_is_refused_naming_it(models, kind, how):
    model = models[kind]
    reference = CORRUPT.float()

    def call():
        if how == "run_with_ablations":
            return run_with_ablations(model, TOK, [Ablation(("z", 0), "mean", reference=reference)])
        return ablation_sweep(
            model, TOK, metric, components=("heads",), kind="mean", reference=reference, progress=False
        )

    _refused(model, call, TypeError, "reference", "float")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("key", ["blocks.0.attn.W_X", ("blocks.7.attn.W_V", 0), "W_EE"])
def test_replace_weights_with_an_unknown_name_is_a_value_error(models, kind, key):
    model = models[kind]
    value = torch.zeros(1)
    with pytest.raises(ValueError, match="unknown weight name") as info:
        with replace_weights(model, {key: value}):
            pass
    assert "closest valid names" in str(info.value)
