"""Config validation and typed ``key=value`` overrides.

Every bad config must fail on construction, with a ``ValueError`` (or ``TypeError`` for a value
of the wrong type) whose message names the offending field and says what is allowed, so the
user learns what to fix before any model is built or any file is written.
"""

from __future__ import annotations

import dataclasses
import re

import pytest

from mechmem.core.config import ACTIVATIONS, OPTIMIZERS, ModelConfig, TrainConfig, apply_overrides, split_overrides
from mechmem.tasks.recall import RecallTask

# --- ModelConfig ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes, field, allowed",
    [
        ({"d_model": 30, "n_heads": 4}, "d_model", "n_heads"),
        ({"act_fn": "tanh"}, "act_fn", str(list(ACTIVATIONS))),
        ({"normalization": "RMS"}, "normalization", "'LN'"),
        ({"embed_init": "xavier"}, "embed_init", "'unit'"),
        ({"unembed_init": "zeros"}, "unembed_init", "'normal'"),
        ({"pos_init": "sinusoidal"}, "pos_init", "'default'"),
        ({"dtype": "float16"}, "dtype", "'float32'"),
        ({"d_model": 0}, "d_model", "positive integer"),
        ({"n_layers": -1}, "n_layers", "positive integer"),
        ({"n_heads": 0}, "n_heads", "positive integer"),
        ({"d_vocab": 0}, "d_vocab", "positive integer"),
        ({"n_ctx": 0}, "n_ctx", "positive integer"),
        ({"d_head": 0}, "d_head", "positive integer"),
        ({"d_mlp": -4, "attn_only": False}, "d_mlp", "positive integer"),
        ({"d_vocab_out": 0}, "d_vocab_out", "positive integer"),
        ({"freeze": ("blocks.0.attn.W_X",)}, "freeze", "blocks.0.attn.W_V"),
        ({"freeze": ("blocks.3.attn.W_V",)}, "freeze", "blocks.0.attn.W_V"),
        ({"freeze": ("blocks.0.mlp.W_in",)}, "freeze", "valid names"),  # attn-only: no MLP
        ({"identity_W_Q": True, "d_head": 8, "n_heads": 1}, "identity_W_Q", "n_heads * d_head == d_model"),
    ],
)
def test_invalid_model_config_raises_value_error_naming_field_and_allowed_values(changes, field, allowed):
    """Each invalid field is rejected at construction with a message naming it and the fix."""
    with pytest.raises(ValueError) as info:
        ModelConfig(**{"d_model": 16, "d_vocab": 10, "n_ctx": 8, **changes})
    message = str(info.value)
    assert field in message, f"error for {changes} does not name the field {field!r}: {message}"
    assert allowed in message, f"error for {changes} does not say what is allowed ({allowed!r}): {message}"


@pytest.mark.parametrize("field, value", [("d_model", 16.0), ("n_layers", True), ("seed", "0")])
def test_model_config_rejects_wrongly_typed_sizes_and_seed(field, value):
    """A float, bool or string where an int is expected is a TypeError naming the field."""
    with pytest.raises(TypeError, match=field):
        ModelConfig(**{"d_model": 16, "d_vocab": 10, "n_ctx": 8, field: value})


@pytest.mark.own_validation
def test_model_config_resolves_defaults_and_expands_layer_wildcards():
    """d_head, d_vocab_out come from the other sizes; ``blocks.*`` names one weight per layer."""
    cfg = ModelConfig(n_layers=3, n_heads=4, d_model=32, d_vocab=10, n_ctx=8, freeze=["blocks.*.attn.W_V"])
    assert cfg.head_dim == 8, f"d_head should default to d_model // n_heads = 8, got {cfg.head_dim}"
    assert cfg.d_out == 10, f"d_vocab_out should default to d_vocab = 10, got {cfg.d_out}"
    assert cfg.freeze == ("blocks.*.attn.W_V",), "freeze given as a list should be stored as a tuple"
    assert cfg.expand_weight_name("blocks.*.attn.W_V") == [f"blocks.{l}.attn.W_V" for l in range(3)]
    frozen = cfg.frozen_weights()
    assert all(f"blocks.{l}.attn.W_V" in frozen for l in range(3)), f"wildcard not expanded: {frozen}"
    assert "W_pos" not in frozen, "W_pos is frozen although positional=True"
    assert "blocks.0.attn.b_Q" in frozen, "use_bias=False should freeze every bias"


def test_model_config_freezes_w_pos_and_w_q_when_asked_structurally():
    """positional=False and identity_W_Q=True add W_pos and every W_Q to the frozen weights."""
    cfg = ModelConfig(n_layers=2, d_model=16, d_vocab=10, n_ctx=8, positional=False, identity_W_Q=True, use_bias=True)
    frozen = cfg.frozen_weights()
    assert set(frozen) == {"W_pos", "blocks.0.attn.W_Q", "blocks.1.attn.W_Q"}, f"unexpected frozen set {frozen}"


# --- TrainConfig ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes, field, allowed",
    [
        ({"optimizer": "lion"}, "optimizer", str(list(OPTIMIZERS))),
        ({"steps": 0}, "steps", "positive integer"),
        ({"batch_size": -1}, "batch_size", "positive integer"),
        ({"eval_every": 0}, "eval_every", "positive integer"),
        ({"eval_batch_size": 0}, "eval_batch_size", "positive integer"),
        ({"lr": 0.0}, "lr", "positive number"),
        ({"lr": float("nan")}, "lr", "positive number"),
        ({"momentum": -0.1}, "momentum", ">= 0"),
        ({"weight_decay": -1.0}, "weight_decay", ">= 0"),
        ({"betas": (0.9, 1.0)}, "betas", "[0, 1)"),
        ({"betas": (0.9,)}, "betas", "two numbers"),
        ({"freeze_until": {"blocks.0.attn.W_O": -5}}, "freeze_until", "step >= 0"),
    ],
)
@pytest.mark.own_validation
def test_invalid_train_config_raises_value_error_naming_field_and_allowed_values(changes, field, allowed):
    """Bad training settings are rejected at construction, naming the field and what is allowed."""
    with pytest.raises(ValueError) as info:
        TrainConfig(**changes)
    message = str(info.value)
    assert field in message, f"error for {changes} does not name the field {field!r}: {message}"
    assert allowed in message, f"error for {changes} does not say what is allowed ({allowed!r}): {message}"


# --- tasks ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value", [("seq_len", 0), ("n_keys", -3), ("n_values", 0), ("n_noise", 1.5), ("seq_len", 1)]
)
@pytest.mark.own_validation
def test_invalid_recall_task_raises_value_error_naming_field(field, value):
    """RecallTask validates its own fields on construction."""
    with pytest.raises(ValueError, match=field):
        RecallTask(**{field: value})


@pytest.mark.parametrize(
    "sizes, field",
    [((4, 64, 64), "n_ctx"), ((64, 5, 64), "d_vocab"), ((64, 64, 2), "d_vocab_out")],
)
def test_task_that_does_not_fit_the_model_is_rejected_naming_the_size(sizes, field):
    """A task whose sequences exceed n_ctx (or whose tokens exceed the vocab) cannot be used."""
    task = RecallTask(seq_len=8, n_keys=4, n_values=3, n_noise=4)
    with pytest.raises(ValueError, match=field):
        task.check_fits(*sizes)


# --- typed overrides -----------------------------------------------------------------------


def test_overrides_are_parsed_to_the_declared_field_types():
    """``--set`` text becomes int, float, bool, None, tuple and dict values as the fields declare."""
    model = apply_overrides(
        ModelConfig(d_model=16, d_vocab=10, n_ctx=8),
        {
            "d_model": "32",
            "attn_only": "false",
            "normalization": "none",
            "d_head": "8",
            "freeze": "W_E,blocks.*.attn.W_V",
        },
        "model",
    )
    assert model.d_model == 32 and isinstance(model.d_model, int), f"d_model parsed as {model.d_model!r}"
    assert model.attn_only is False, f"attn_only parsed as {model.attn_only!r}"
    assert model.normalization is None and model.d_head == 8
    assert model.freeze == ("W_E", "blocks.*.attn.W_V"), f"freeze parsed as {model.freeze!r}"
    train = apply_overrides(
        TrainConfig(), {"lr": "0.05", "betas": "0.8,0.9", "freeze_until": "blocks.0.attn.W_O:20"}, "train"
    )
    assert train.lr == 0.05 and isinstance(train.lr, float), f"lr parsed as {train.lr!r}"
    assert train.betas == (0.8, 0.9), f"betas parsed as {train.betas!r}"
    assert train.freeze_until == {"blocks.0.attn.W_O": 20}, f"freeze_until parsed as {train.freeze_until!r}"


def test_overrides_return_a_copy_and_leave_the_original_untouched():
    """apply_overrides must not mutate the config it was given."""
    original = TrainConfig(lr=0.1)
    changed = apply_overrides(original, {"lr": "0.2"})
    assert original.lr == 0.1 and changed.lr == 0.2, "the original config was modified"


@pytest.mark.parametrize("text", ["abc", "1.5"])
def test_override_with_a_value_of_the_wrong_type_names_the_key(text):
    """``d_model=abc`` is an error naming ``model.d_model`` and the expected type."""
    with pytest.raises(ValueError, match=r"model\.d_model.*expected int"):
        apply_overrides(ModelConfig(d_model=16, d_vocab=10, n_ctx=8), {"d_model": text}, "model")


def test_override_is_validated_by_the_config_itself():
    """An override that parses but is invalid (n_heads not dividing d_model) still fails."""
    with pytest.raises(ValueError, match="n_heads"):
        apply_overrides(ModelConfig(d_model=16, d_vocab=10, n_ctx=8), {"n_heads": "3"}, "model")


def test_unknown_override_key_lists_the_valid_keys():
    """An unknown field is rejected with every valid key of that section in the message."""
    with pytest.raises(ValueError) as info:
        apply_overrides(TrainConfig(), {"learning_rate": "0.1"}, "train")
    message = str(info.value)
    assert "learning_rate" in message, f"the bad key is not named: {message}"
    for name in (f.name for f in dataclasses.fields(TrainConfig)):
        assert f"train.{name}" in message, f"valid key train.{name} missing from: {message}"


def _sections():
    task = RecallTask()
    return {"task": task, "model": task.model_config(), "train": task.train_config()}


def test_split_overrides_routes_unprefixed_keys_to_their_only_owner():
    """``lr`` can only be a training field; ``model.d_model`` names its section explicitly."""
    out = split_overrides(["lr=0.1", "model.d_model=8", "n_keys=5", "train.seed=3"], _sections())
    assert out == {"task": {"n_keys": "5"}, "model": {"d_model": "8"}, "train": {"lr": "0.1", "seed": "3"}}, out


@pytest.mark.parametrize(
    "pair, problem",
    [("seed=1", "is ambiguous"), ("nonsense=1", "is not a config key"), ("lr", "key=value"), ("=3", "key=value")],
)
def test_split_overrides_rejects_unknown_ambiguous_and_malformed_keys(pair, problem):
    """Ambiguous (``seed`` is in model and train) and unknown keys list the valid keys."""
    with pytest.raises(ValueError) as info:
        split_overrides([pair], _sections())
    message = str(info.value)
    assert problem in message, f"{pair!r}: expected {problem!r} in: {message}"
    if "key=value" not in problem:
        assert re.search(r"model\.seed.*train\.seed", message), f"valid keys not listed: {message}"
