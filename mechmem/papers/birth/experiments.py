"""Experiments of "Birth of a Transformer", each a function ``ctx -> ExperimentResult`` registered in
:data:`EXPERIMENTS` (run in this order). Sizes come from the preset (:mod:`.presets`).

Trained models are shared through ``ctx.state``: ``simplified_dynamics`` and ``full_2layer`` leave
``(model, task)`` there for the mechanistic checks.
"""

from __future__ import annotations

import dataclasses
from functools import partial

import torch

from hooks.weights import weight_names, weight_parameters
from mechmem.contract.experiments import Context, ExperimentResult, Experiments
from mechmem.core.config import TrainConfig
from mechmem.core.models import build_model
from mechmem.core.training import train

from .generator import BigramOptions, bigram_floor, expected_bigram_floor, generate
from .handbuilt import HandbuiltScales
from .mechanistic import (
    attention_by_offset,
    attention_patterns,
    attention_views,
    head_scores,
    induction_score_on,
    layer_ablations,
    offset_peak_ratio,
    patching_pair,
    patching_sweep,
    repeated_token_queries,
)
from .model import build_handbuilt
from .plots import plot_bars, plot_curves, plot_handbuilt, plot_patching
from .presets import BirthPreset
from .probes import memory_probes
from .tables import shakespeare_tables
from .task import BigramTask, incontext_metrics

#: probe -> (saturation threshold); the step a probe first reaches it is its "learned" step
SATURATION = {"wo1": 0.95, "wk1": 1.0, "wk0_64": 0.5}
EXPERIMENTS = Experiments()
PROBE_LABELS = {
    "acc_incontext": "in-context accuracy",
    "wo1": "recall of W_O^2",
    "wk1": "recall of W_K^2 (keys: the triggers)",
    "wk1_all_keys": "recall of W_K^2 (keys: all tokens)",
    "wk0_64": "recall of W_K^1 (first 64 positions)",
    "wk0": "recall of W_K^1 (all positions)",
    "loss_bigram": "global-bigram loss (c = 0)",
    "loss_head": "in-context loss (c ≥ 2)",
}


# --- helpers ---------------------------------------------------------------------------------------------


def first_step(history: list[dict], key: str, reached) -> int | None:
    """The first logged step at which ``reached(history[key])`` holds (None if never)."""
    for record in history:
        if key in record and reached(record[key]):
            return int(record["step"])
    return None


def value_at(history: list[dict], key: str, step: float) -> float:
    """``key`` at the logged step nearest to ``step``."""
    record = min((r for r in history if key in r), key=lambda r: abs(r["step"] - step))
    return float(record[key])


def training(cfg: TrainConfig, ctx: Context, steps: int | None = None, **changes) -> TrainConfig:
    """The preset's ``cfg`` with this seed, the run's progress setting and optional changes (which win)."""
    return dataclasses.replace(
        cfg, **{"seed": ctx.seed, "progress": ctx.progress, "steps": steps or cfg.steps, **changes}
    )


def simplified(preset: BirthPreset, seed: int, **task_options):
    """``(model, task)``: the simplified model (the authors' init, seeded) and a task of its length."""
    task = BigramTask(seq_len=preset.simplified_model.n_ctx, **{"n_triggers": 5, **task_options})
    return task.build_model(dataclasses.replace(preset.simplified_model, seed=seed)), task


def evaluate_on(model, task: BigramTask, n: int, seed: int) -> dict[str, float]:
    """In-context metrics of ``model`` on ``n`` fresh sequences of ``task``."""
    batch = task.sample(n, torch.Generator().manual_seed(seed))
    was = model.training
    model.eval()
    with torch.no_grad():
        logits = model(batch.tokens)
    model.train(was)
    return incontext_metrics(logits, batch)


def _probe_for(task: BigramTask):
    return {"memory": partial(memory_probes, triggers=task.triggers or None)}


def summarise_dynamics(history: list[dict]) -> dict:
    """Final values, the 0.9-accuracy step, the before-rise accuracy and when each memory saturates.

    Before-rise accuracy: the in-context accuracy a quarter of the way (in steps) to the step where it first
    reaches 0.9 (the last step if it never does), i.e. on the plateau that precedes the jump.
    Saturation step of a probe: the first step at which it reaches 90 % of its final value (``saturated_step``;
    W_K^1's recall ends far below 1, so absolute thresholds would compare unlike things). The absolute
    thresholds of ``SATURATION`` are reported too (``threshold_step``). ``wk1_learned_last``: W_K^1 (probe
    wk0_64) saturates no earlier than both W_O^2 (wo1) and W_K^2 (wk1).
    """
    final = history[-1]
    t90 = first_step(history, "acc_incontext", lambda v: v >= 0.9)
    end = t90 if t90 is not None else final["step"]
    threshold = {k: first_step(history, k, lambda v, th=th: v >= th) for k, th in SATURATION.items()}
    saturated = {
        k: first_step(history, k, lambda v, f=float(final[k]): v >= 0.9 * f) if final.get(k) else None
        for k in SATURATION
    }
    last = saturated["wk0_64"]
    wk1_last = last is not None and all(saturated[k] is not None and saturated[k] <= last for k in ("wo1", "wk1"))
    return {
        "final": {
            k: final.get(k)
            for k in ("step", "acc_incontext", "loss_head", "wo1", "wk1", "wk1_all_keys", "wk0", "wk0_64")
        },
        "step_acc_0.9": t90,
        "before_rise_step": end / 4,
        "before_rise_accuracy": value_at(history, "acc_incontext", end / 4),
        "saturated_step": saturated,
        "threshold_step": threshold,
        "wk1_learned_last": bool(wk1_last),
    }


def learned_steps(history: list[dict], floor: float) -> dict[str, int | None]:
    """When the global bigrams count as learned: ``within_0.1``: the global-bigram loss first within 0.1 nats of
    ``floor``; ``90%``: the first step at which it has come 90 % of the way from its initial value to ``floor``
    (the same 90 % of the achievable improvement as the in-context accuracy's 0.9)."""
    start = history[0]["loss_bigram"]
    return {
        "within_0.1": first_step(history, "loss_bigram", lambda v: v <= floor + 0.1),
        "90%": first_step(history, "loss_bigram", lambda v: start - v >= 0.9 * (start - floor)),
    }


def global_vs_incontext(ctx: Context, n_layers: int) -> tuple[dict, object, BigramTask, object]:
    """Train the full model (loss everywhere): steps until the global bigrams are learned (:func:`learned_steps`,
    against the floor of the data distribution) vs steps until the in-context accuracy reaches 0.9.
    Returns (record, model, task, figure)."""
    p = ctx.preset
    steps = p.one_layer_steps if (n_layers == 1 and p.one_layer_steps) else p.full_train.steps
    task = BigramTask(seq_len=p.full_model.n_ctx, n_triggers=5, loss_head_only=False)
    model = build_model(dataclasses.replace(p.full_model, n_layers=n_layers, seed=ctx.seed))
    tcfg = training(p.full_train, ctx, steps)
    floor = expected_bigram_floor(task.options())
    eval_floor = bigram_floor(task.generate(tcfg.eval_batch_size, torch.Generator().manual_seed(tcfg.seed + 1)))
    result = train(model, task, tcfg)
    t_global = learned_steps(result.history, floor)
    t_incontext = first_step(result.history, "acc_incontext", lambda v: v >= 0.9)

    def ratio(t):
        return t_incontext / t if (t and t_incontext) else None

    record = {
        "n_layers": n_layers,
        "bigram_floor": floor,
        "bigram_floor_eval_batch": eval_floor,
        "step_global_within_0.1": t_global["within_0.1"],
        "step_global_90%": t_global["90%"],
        "step_incontext_0.9": t_incontext,
        "ratio": ratio(t_global["within_0.1"]),
        "ratio_90%": ratio(t_global["90%"]),
        "final": {k: result.final.get(k) for k in ("step", "acc_incontext", "acc_c2", "loss_bigram", "loss_head")},
        "model": dataclasses.asdict(model.mechmem_config),
        "train": dataclasses.asdict(tcfg),
        "history": result.history,
    }
    fig = plot_curves(
        result.history,
        ["acc_incontext", "loss_bigram", "loss_head"],
        f"Full model, {n_layers} layer{'s' * (n_layers > 1)}: global vs in-context bigrams",
        labels=PROBE_LABELS,
        hline=("global-bigram floor (data distribution)", floor),
    )
    return record, model, task, fig


# --- experiments ------------------------------------------------------------------------------------------


@EXPERIMENTS.register
def data_statistics(ctx: Context) -> ExperimentResult:
    """T1: in-context fraction, bigram floor and trigger statistics of the generated data (T = 256)."""
    tables = shakespeare_tables()
    n = ctx.preset.data_batch
    gen = ctx.generator()
    sample = generate(BigramOptions(seq_len=256, n_triggers=5), n, gen)
    c = sample.counts
    trig = c >= 1
    most = torch.stack([torch.bincount(row, minlength=tables.n).max() for row in sample.tokens])
    record = {
        "n_sequences": n,
        "seq_len": 256,
        "fixed_triggers_K5": tables.decode(sample.triggers[0].tolist()),
        "incontext_fraction": float((c >= 2).float().mean()),
        "trigger_output_fraction": float(trig.float().mean()),
        "first_occurrence_share": float((c == 1).sum() / trig.sum()),
        "repeat_frac": float((sample.targets == sample.tokens)[trig].float().mean()),
        "degenerate_fraction": float((most > 128).float().mean()),
        "bigram_floor": expected_bigram_floor(BigramOptions(seq_len=256, n_triggers=5), seed=ctx.seed),
        "bigram_floor_sample": bigram_floor(sample),
        "unigram_entropy": float(-(tables.pi_u * tables.pi_u.log()).sum()),
    }
    variants = {
        "fixed K=1": dict(n_triggers=1),
        "fixed K=3": dict(n_triggers=3),
        "fixed K=5": dict(n_triggers=5),
        "fixed K=10": dict(n_triggers=10),
        "random K=5": dict(n_triggers=5, trigger_mode="random"),
    }
    record["incontext_fraction_by_setting"] = {
        name: float((generate(BigramOptions(seq_len=256, **kw), n, gen).counts >= 2).float().mean())
        for name, kw in variants.items()
    }
    fig = plot_bars(
        record["incontext_fraction_by_setting"],
        "In-context-predictable positions (T = 256)",
        "fraction of positions with c ≥ 2",
        xlabel="triggers: fixed or random, K of them",
    )
    return ExperimentResult(record, {"data_statistics": fig})


@EXPERIMENTS.register
def handbuilt(ctx: Context) -> ExperimentResult:
    """T6: the hand-built induction head (no training): in-context accuracy and recall probes, for the
    trigger-specific head (keys = the K triggers) and the generic head (keys = all tokens)."""
    p = ctx.preset
    d, T = p.handbuilt_d_model, p.handbuilt_seq_len
    task = BigramTask(seq_len=T, n_triggers=5)
    batch = task.sample(p.handbuilt_batch, ctx.generator())
    record = {"d_model": d, "seq_len": T, "scales": dataclasses.asdict(HandbuiltScales())}
    models = {}
    for kind, keys in (("triggers", task.triggers), ("generic", None)):
        model = build_handbuilt(d, T, seed=ctx.seed, key_tokens=keys)
        with torch.no_grad():
            metrics = incontext_metrics(model(batch.tokens), batch)
        record[kind] = {**metrics, **memory_probes(model, triggers=task.triggers)}
        models[kind] = model
    record["head_scores"] = head_scores(models["triggers"], batch)
    pats = [p[0, 0] for p in attention_patterns(models["triggers"], batch.tokens[:1, :48])]
    return ExperimentResult(record, {"handbuilt": plot_handbuilt(pats, record)})


@EXPERIMENTS.register
def simplified_dynamics(ctx: Context) -> ExperimentResult:
    """T3/T4: train the simplified model (loss at c >= 2) and follow accuracy and the three memory probes."""
    p = ctx.preset
    model, task = simplified(p, ctx.seed)
    tcfg = training(p.simplified_train, ctx)
    result = train(model, task, tcfg, probes=_probe_for(task))
    record = summarise_dynamics(result.history)
    record.update(model=dataclasses.asdict(p.simplified_model), train=dataclasses.asdict(tcfg), history=result.history)
    ctx.state["simplified"] = (model, task)
    ctx.save_model(
        model,
        task,
        train=tcfg,
        history=result.history,
        about="the simplified two-layer model: an induction head whose W_K^1, W_K^2 and W_O^2 are memories",
    )
    fig = plot_curves(
        result.history,
        ["acc_incontext", "wo1", "wk1", "wk1_all_keys", "wk0_64", "wk0"],
        "Simplified model: in-context accuracy and memory recall",
        labels=PROBE_LABELS,
    )
    return ExperimentResult(record, {"simplified_dynamics": fig})


@EXPERIMENTS.register(when=lambda preset: preset.random_triggers_steps > 0)
def random_triggers(ctx: Context) -> ExperimentResult:
    """T4 with random triggers (K = 5 drawn per sequence from pi_u): the simplified model of ``simplified_dynamics``
    trained ``random_triggers_steps`` steps; probes over all tokens (the authors' choice when triggers are not
    fixed); the layer-2 attention on repeated tokens that no trigger rule makes predictable (a generic induction
    head, paper Fig. 2)."""
    p = ctx.preset
    model, task = simplified(p, ctx.seed, trigger_mode="random")
    tcfg = training(p.simplified_train, ctx, p.random_triggers_steps)
    result = train(model, task, tcfg, probes=_probe_for(task))
    record = summarise_dynamics(result.history)
    sat = record["saturated_step"]
    record["wo2_before_wk2"] = sat["wo1"] is not None and sat["wk1"] is not None and sat["wo1"] < sat["wk1"]
    batch = task.sample(p.mechanistic_batch, ctx.generator(7))
    counts = batch.labels["count"]
    record["generic_induction"] = induction_score_on(model, batch.tokens, repeated_token_queries(batch.tokens, counts))
    record["incontext_induction"] = induction_score_on(model, batch.tokens, counts >= 2)
    record.update(model=dataclasses.asdict(p.simplified_model), train=dataclasses.asdict(tcfg), history=result.history)
    fig = plot_curves(
        result.history,
        ["acc_incontext", "wo1", "wk1", "wk0_64"],
        "Simplified model, random triggers: in-context accuracy and memory recall",
        labels=PROBE_LABELS,
    )
    return ExperimentResult(record, {"random_triggers": fig})


@EXPERIMENTS.register
def full_2layer(ctx: Context) -> ExperimentResult:
    """T2: the 2-layer full model: the global bigrams are learned before the in-context ones."""
    record, model, task, fig = global_vs_incontext(ctx, n_layers=2)
    ctx.state["full"] = (model, task)
    return ExperimentResult(record, {"full_2layer": fig})


@EXPERIMENTS.register
def one_vs_two_layers(ctx: Context) -> ExperimentResult:
    """T5: final in-context accuracy of the 1-layer full model vs the 2-layer one (same data and steps)."""
    two = ctx.data("full_2layer")
    one, _, _, fig_one = global_vs_incontext(ctx, n_layers=1)
    record = {
        "one_layer_acc": one["final"]["acc_incontext"],
        "two_layer_acc": two["final"]["acc_incontext"],
        "one_layer_acc_c2": one["final"].get("acc_c2"),
        "two_layer_acc_c2": two["final"].get("acc_c2"),
        "one_layer_loss_bigram": one["final"]["loss_bigram"],
        "two_layer_loss_bigram": two["final"]["loss_bigram"],
        "one_layer": one,
    }
    fig = plot_curves(
        [one["history"], two["history"]],
        ["acc_incontext"],
        "In-context accuracy: 1 layer vs 2 layers",
        labels=PROBE_LABELS,
        series_names=["1 layer", "2 layers"],
    )
    return ExperimentResult(record, {"full_1layer": fig_one, "one_vs_two_layers": fig})


def mechanistic_checks(ctx: Context, model, task: BigramTask, name: str) -> ExperimentResult:
    """Head-detector scores, layer ablations, activation patching and CircuitsVis views of a trained model."""
    tables = shakespeare_tables()
    batch = task.sample(ctx.preset.mechanistic_batch, ctx.generator(7))
    record = {"head_scores": head_scores(model, batch), "ablations": layer_ablations(model, batch)}
    profile = attention_by_offset(model, batch.tokens, layer=0)
    best = max(range(profile.shape[0]), key=lambda h: record["head_scores"]["previous_token"][0][h])
    record["layer1_attention_by_offset"] = {
        "offsets": [*range(profile.shape[1] - 1), "further"],
        "per_head": profile.tolist(),
        "best_previous_token_head": best,
        "offset1_peak_ratio": offset_peak_ratio(profile, best),
    }
    figures, html = {}, {}
    pair = patching_pair(batch, tables.n, ctx.generator())
    if pair is not None:
        record["patching"] = patching_sweep(model, pair)
        figures[f"{name}_patching"] = plot_patching(record["patching"], tables)
    n = min(64, batch.tokens.shape[1])
    views = attention_views(model, batch.tokens[0, :n], [repr(ch)[1:-1] for ch in tables.decode(batch.tokens[0, :n])])
    for layer, view in views.items():
        title = f"{name}: layer {layer + 1} attention"
        html[f"{name}_attention_layer{layer + 1}"] = html_page(title, view.local_src)
    record["attention_html"] = [f"{page}.html" for page in html]
    ab = record["ablations"]
    figures[f"{name}_ablation"] = plot_bars(
        {k.replace("_zero", " heads zeroed"): v.get("acc_incontext", float("nan")) for k, v in ab.items()},
        "In-context accuracy under ablation",
        "in-context accuracy (c ≥ 2)",
        xlabel="ablation (hook_z set to 0)",
    )
    return ExperimentResult(record, figures, html)


@EXPERIMENTS.register
def mechanistic_full(ctx: Context) -> ExperimentResult:
    """Mechanistic checks of the 2-layer full model trained by ``full_2layer``."""
    model, task = ctx.state["full"]
    return mechanistic_checks(ctx, model, task, "mechanistic_full")


@EXPERIMENTS.register
def mechanistic_simplified(ctx: Context) -> ExperimentResult:
    """Mechanistic checks of the simplified model trained by ``simplified_dynamics``."""
    model, task = ctx.state["simplified"]
    return mechanistic_checks(ctx, model, task, "mechanistic_simplified")


def html_page(title: str, body: str) -> str:
    """A complete offline HTML page around a CircuitsVis ``local_src`` (the JS bundle is inlined)."""
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{title}</title></head>\n'
        f"<body>\n<h3>{title}</h3>\n{body}\n</body></html>\n"
    )


@EXPERIMENTS.register(when=lambda preset: preset.studies)
def data_distribution(ctx: Context) -> ExperimentResult:
    """Fig. 4-style studies on the simplified model: trigger frequency (K = 1, most frequent vs rarer), number
    of triggers, bigram-drawn vs uniform outputs (tested on uniform outputs) and held-out output tokens."""
    p = ctx.preset
    steps = p.study_steps
    studies = {
        "K=1, most frequent trigger (space)": (dict(n_triggers=1), None),
        "K=1, rarer trigger (offset 20)": (dict(n_triggers=1, trigger_offset=20), None),
        "K=3": (dict(n_triggers=3), None),
        "K=5": (dict(n_triggers=5), None),
        "K=10": (dict(n_triggers=10), None),
        "bigram outputs -> uniform test": (dict(output_mode="bigram"), dict(output_mode="uniform")),
        "uniform outputs -> uniform test": (dict(output_mode="uniform"), dict(output_mode="uniform")),
        "train outputs 0-47 -> test outputs 48-64": (dict(output_split="train"), dict(output_split="test")),
    }
    record = {"steps": steps, "studies": {}}
    for name, (train_kw, test_kw) in studies.items():
        model, task = simplified(p, ctx.seed, **train_kw)
        res = train(model, task, training(p.simplified_train, ctx, steps, progress=False))
        entry = {"train_acc_incontext": res.final.get("acc_incontext")}
        if test_kw is not None:
            test = BigramTask(seq_len=task.seq_len, **{"n_triggers": 5, **train_kw, **test_kw})
            entry["test_acc_incontext"] = evaluate_on(
                model, test, p.simplified_train.eval_batch_size, ctx.seed + 99
            ).get("acc_incontext")
        record["studies"][name] = entry
    bars = {k: v.get("test_acc_incontext", v["train_acc_incontext"]) for k, v in record["studies"].items()}
    fig = plot_bars(
        bars,
        f"Data distribution: in-context accuracy after {steps} steps",
        "in-context accuracy (test set where given)",
        xlabel="training data",
    )
    return ExperimentResult(record, {"data_distribution": fig})


@EXPERIMENTS.register(when=lambda preset: preset.delayed)
def delayed_training(ctx: Context, delayed: str = "blocks.1.attn.W_O") -> ExperimentResult:
    """Freeze one matrix (default W_O^2) until step ``preset.delay``: do the others wait for it?"""
    p = ctx.preset
    model, task = simplified(p, ctx.seed)
    trainable = [n for n in weight_names(model) if weight_parameters(model, n).requires_grad]
    if delayed not in trainable:
        raise ValueError(
            f"delayed={delayed!r} is not a trained matrix of the simplified model; choose one of {trainable}"
        )
    tcfg = training(p.simplified_train, ctx, p.delayed_steps, freeze_until={delayed: p.delay})
    result = train(model, task, tcfg, probes=_probe_for(task))
    record = {"delayed": delayed, "delay": p.delay, **summarise_dynamics(result.history), "history": result.history}
    fig = plot_curves(
        result.history,
        ["acc_incontext", "wo1", "wk1", "wk0_64"],
        f"{delayed} frozen until step {p.delay}",
        labels=PROBE_LABELS,
        vline=(f"{delayed} starts training", p.delay),
    )
    return ExperimentResult(record, {"delayed_training": fig})
