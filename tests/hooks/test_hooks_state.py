"""preserved_state: hooks, modes, requires_grad and (optionally) weights come back as they were."""

import pytest
import torch

from hooks.state import count_hooks, preserved_state, same_state, state_fingerprint
from hooks.testing import KINDS, models_by_kind


@pytest.fixture(scope="module")
def models():
    return models_by_kind(seed=3)


@pytest.mark.parametrize("kind", KINDS)
def test_preserved_state_removes_hooks_added_inside_and_keeps_earlier_ones(models, kind):
    model = models[kind]
    model.add_hook("blocks.0.hook_resid_pre", lambda t, hook: None)  # the user's own hook
    before = count_hooks(model)
    try:
        with preserved_state(model):
            model.add_hook("blocks.1.hook_resid_pre", lambda t, hook: None)
            model.add_hook("blocks.0.attn.hook_z", lambda t, hook: None, is_permanent=True)
            model.blocks[0].register_forward_hook(lambda *a: None)
            assert count_hooks(model) > before, "hooks added in the body were not counted"
        assert count_hooks(model) == before, "hooks added inside preserved_state were left on the model"
    finally:
        model.reset_hooks(including_permanent=True)


@pytest.mark.parametrize("kind", KINDS)
def test_preserved_state_restores_mode_flags_and_weights_after_exception(models, kind):
    model = models[kind]
    fp = state_fingerprint(model)
    with pytest.raises(RuntimeError, match="on purpose"):
        with preserved_state(model, weights=True):
            model.train()
            for p in model.parameters():
                p.requires_grad_(False)
            with torch.no_grad():
                next(model.parameters()).add_(1.0)
            model.add_hook("blocks.0.hook_resid_pre", lambda t, hook: t * 0)
            raise RuntimeError("on purpose")
    problems = same_state(fp, state_fingerprint(model))
    assert not problems, f"state not restored: {problems}"


@pytest.mark.parametrize("kind", KINDS)
def test_same_state_detects_a_changed_weight(models, kind):
    model = models[kind]
    fp = state_fingerprint(model)
    param = next(model.parameters())
    with torch.no_grad():
        param.add_(1.0)
    try:
        assert same_state(fp, state_fingerprint(model)), "a changed weight went unnoticed"
    finally:
        with torch.no_grad():
            param.sub_(1.0)
