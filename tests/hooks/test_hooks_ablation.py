"""Zero / mean / resample ablations, their composition and ablation_sweep, on both model kinds."""

import pandas as pd
import pytest
import torch

from hooks.ablation import Ablation, ablate, ablation_sweep, run_with_ablations
from hooks.state import same_state, state_fingerprint
from hooks.testing import KINDS, models_by_kind

TOK = torch.randint(0, 24, (4, 6), generator=torch.Generator().manual_seed(0))
REF = torch.randint(0, 24, (8, 6), generator=torch.Generator().manual_seed(1))


def metric(logits):
    return logits[:, -1].log_softmax(-1)[:, 0].mean()


@pytest.fixture(scope="module")
def models():
    return models_by_kind(seed=4)


def _manual(model, name, fn):
    with torch.no_grad():
        return model.run_with_hooks(TOK, fwd_hooks=[(name, fn)])


def _zero_head(head, positions=slice(None)):
    def fn(z, hook):
        z = z.clone()
        z[:, positions, head] = 0
        return z

    return fn


@pytest.mark.parametrize("kind", KINDS)
def test_zero_ablation_of_one_head_at_one_position_matches_a_hand_written_hook(models, kind):
    model = models[kind]
    got = run_with_ablations(model, TOK, [Ablation(("z", 1), "zero", heads=2, positions=[3])])
    want = _manual(model, "blocks.1.attn.hook_z", _zero_head(2, [3]))
    assert torch.equal(got, want), "zero ablation differs from the hand-written hook"
    assert not torch.equal(got, model(TOK)), "ablating a head changed nothing"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("per_position", [True, False])
def test_mean_ablation_uses_the_reference_mean(models, kind, per_position):
    model = models[kind]
    name = "blocks.0.hook_attn_out"
    with torch.no_grad():
        _, cache = model.run_with_cache(REF, names_filter=name)
    mean = cache[name].mean(0) if per_position else cache[name].mean((0, 1))
    got = run_with_ablations(model, TOK, [Ablation(name, "mean", reference=REF, per_position=per_position)])
    want = _manual(model, name, lambda a, hook: torch.zeros_like(a) + mean)
    assert (got - want).abs().max() < 1e-6, "mean ablation does not use the reference mean"


@pytest.mark.parametrize("kind", KINDS)
def test_resample_ablation_is_seeded_and_draws_reference_examples(models, kind):
    model = models[kind]
    ab = Ablation(("v", 0), "resample", heads=[1], reference=REF, seed=5)
    first, again = run_with_ablations(model, TOK, [ab]), run_with_ablations(model, TOK, [ab])
    other = run_with_ablations(model, TOK, [Ablation(("v", 0), "resample", heads=[1], reference=REF, seed=6)])
    assert torch.equal(first, again), "the same seed gave different resamples"
    assert not torch.equal(first, other), "different seeds gave the same resample"
    index = torch.randint(8, (4,), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        _, cache = model.run_with_cache(REF, names_filter="blocks.0.attn.hook_v")
    ref_v = cache["blocks.0.attn.hook_v"][index]

    def fn(v, hook):
        v = v.clone()
        v[:, :, 1] = ref_v[:, :, 1]
        return v

    assert torch.equal(first, _manual(model, "blocks.0.attn.hook_v", fn)), "resample did not use the drawn examples"


@pytest.mark.parametrize("kind", KINDS)
def test_ablations_compose_in_one_run_and_in_the_context_manager(models, kind):
    model = models[kind]
    abl = [
        Ablation(("z", 0), heads=[0, 3]),
        Ablation("blocks.1.hook_mlp_out", "mean", reference=REF, per_position=False),
    ]
    together = run_with_ablations(model, TOK, abl)
    only_first = run_with_ablations(model, TOK, abl[:1])
    assert not torch.equal(together, only_first), "the second ablation had no effect"
    fp = state_fingerprint(model)
    with torch.no_grad(), ablate(model, abl):
        inside = model(TOK)
        inside_hooks = model.run_with_hooks(TOK, fwd_hooks=[])
    assert (inside - together).abs().max() < 1e-6 and torch.equal(inside, inside_hooks)
    assert not same_state(fp, state_fingerprint(model)), "ablate() left something behind"


@pytest.mark.parametrize("kind", KINDS)
def test_ablation_sweep_table_has_baseline_and_every_component(models, kind):
    model = models[kind]
    frame = ablation_sweep(model, TOK, metric, progress=False)
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == ["component", "layer", "head", "hook", "metric", "delta"]
    assert frame.iloc[0]["component"] == "baseline"
    with torch.no_grad():
        assert abs(frame.iloc[0]["metric"] - metric(model(TOK)).item()) < 1e-6
    counts = frame["component"].value_counts().to_dict()
    assert counts == {"baseline": 1, "heads": 8, "attn_out": 2, "mlp_out": 2}, counts
    row = frame[(frame["component"] == "heads") & (frame["layer"] == 1) & (frame["head"] == 2)].iloc[0]
    single = metric(run_with_ablations(model, TOK, [Ablation(("z", 1), heads=2)])).item()
    assert abs(row["metric"] - single) < 1e-6, "sweep row differs from a single ablation"


def test_ablation_sweep_gives_the_same_table_on_both_kinds(models):
    if len(KINDS) < 2:
        pytest.skip("TransformerLens 4.x has one model kind")
    a = ablation_sweep(models["hooked"], TOK, metric, kind="resample", seed=1, progress=False)
    b = ablation_sweep(models["bridge"], TOK, metric, kind="resample", seed=1, progress=False)
    assert (a["metric"] - b["metric"]).abs().max() < 1e-5


def test_ablation_sweep_skips_mlp_in_attention_only_models():
    for model in models_by_kind(seed=0, attn_only=True, normalization_type=None).values():
        frame = ablation_sweep(model, TOK, metric, progress=False)
        assert set(frame["component"]) == {"baseline", "heads", "attn_out"}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "ablation, error, match",
    [
        (Ablation("blocks.0.attn.hook_zz"), ValueError, "blocks.0.attn.hook_z"),
        (Ablation(("z", 2)), ValueError, "layer"),
        (Ablation(("z", 0), heads=[4]), ValueError, "head"),
        (Ablation(("z", 0), positions=[6]), ValueError, "position"),
        (Ablation("blocks.0.hook_resid_pre", heads=[0]), ValueError, "head axis"),
        (Ablation("blocks.0.hook_resid_pre", "mean"), ValueError, "reference"),
        (Ablation("blocks.0.hook_resid_pre", "mean", reference=REF[:, :4]), ValueError, "same length"),
        (Ablation("blocks.0.hook_resid_pre", "median"), ValueError, "kind"),
    ],
)
def test_bad_ablation_raises_a_clear_error_and_changes_nothing(models, kind, ablation, error, match):
    model = models[kind]
    fp = state_fingerprint(model)
    with pytest.raises(error, match=match):
        run_with_ablations(model, TOK, [ablation])
    assert not same_state(fp, state_fingerprint(model))


@pytest.mark.parametrize("kind", KINDS)
def test_sweep_with_a_failing_or_non_scalar_metric_leaves_no_trace(models, kind):
    model = models[kind]
    model.train()
    fp = state_fingerprint(model)
    calls = []

    def flaky(logits):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("metric failed on purpose")
        return metric(logits)

    with pytest.raises(RuntimeError, match="on purpose"):
        ablation_sweep(model, TOK, flaky, progress=False)
    with pytest.raises(ValueError, match="scalar"):
        ablation_sweep(model, TOK, lambda logits: logits[:, -1, 0], progress=False)
    problems = same_state(fp, state_fingerprint(model))
    model.eval()
    assert not problems, f"state not restored after a failing sweep: {problems}"
