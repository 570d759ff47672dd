"""Experiments of "Birth of a Transformer" (spec sections 4 and 6). Each writes ``<name>.json`` and
``figures/<name>.png`` under ``out`` and returns its record.

Sizes come from a ``Settings`` preset: ``SMOKE`` (tests and the notebook), ``QUICK`` (the CPU budget of spec
section 7) and ``FULL`` (the paper's / authors' configurations).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Optional

import torch

from hooks.weights import weight_names, weight_parameters
from mechmem.io import atomic_write_json
from mechmem.config import TrainConfig
from mechmem.training import train

from .generator import BigramOptions, bigram_floor, generate
from .handbuilt import HandbuiltScales
from .mechanistic import (attention_patterns, attention_views, head_scores, layer_ablations, patching_pair,
                          patching_sweep)
from .model import build_full, build_handbuilt, build_simplified
from .plots import plot_curves, plot_bars, plot_handbuilt, plot_patching, save_figure
from .probes import memory_probes
from .tables import shakespeare_tables
from .task import BigramTask, incontext_metrics

#: probe -> (saturation threshold); the step a probe first reaches it is its "learned" step
SATURATION = {"wo1": 0.95, "wk1": 1.0, "wk0_64": 0.5}


@dataclass(frozen=True)
class Simplified:
    d_model: int = 128
    seq_len: int = 128
    batch_size: int = 64
    steps: int = 300
    lr: float = 0.1
    eval_every: int = 25
    eval_batch_size: int = 128


@dataclass(frozen=True)
class Full:
    d_model: int = 64
    n_heads: int = 4
    seq_len: int = 128
    batch_size: int = 64
    steps: int = 200
    lr: float = 0.01
    eval_every: int = 10
    eval_batch_size: int = 64


@dataclass(frozen=True)
class Settings:
    """Sizes of every experiment (see the module docstring for the presets)."""

    name: str = "quick"
    simplified: Simplified = Simplified()
    full: Full = Full()
    one_layer_steps: Optional[int] = None  # None: as many steps as the 2-layer full model
    handbuilt_d_model: int = 256
    handbuilt_seq_len: int = 256
    handbuilt_batch: int = 64
    data_batch: int = 512
    mechanistic_batch: int = 64
    studies: bool = False
    study_steps: int = 300
    delayed: bool = False
    delayed_steps: int = 600
    delay: int = 300


SMOKE = Settings(name="smoke", simplified=Simplified(d_model=128, seq_len=64, batch_size=32, steps=60, eval_every=20,
                                                      eval_batch_size=32),
                 full=Full(d_model=32, n_heads=2, seq_len=64, batch_size=16, steps=20, eval_every=10, eval_batch_size=16),
                 handbuilt_d_model=128, handbuilt_seq_len=64, handbuilt_batch=16, data_batch=64,
                 mechanistic_batch=16, study_steps=20, delayed_steps=20, delay=10)
QUICK = Settings()
FULL = Settings(name="full", simplified=Simplified(d_model=256, seq_len=256, batch_size=512, steps=1000, lr=0.03,
                                                   eval_every=25, eval_batch_size=512),
                full=Full(d_model=128, n_heads=4, seq_len=256, batch_size=64, steps=300, eval_every=10,
                          eval_batch_size=128),
                studies=True, study_steps=400, delayed=True, delayed_steps=1000, delay=300)
PRESETS = {"smoke": SMOKE, "quick": QUICK, "full": FULL}


def settings_for(quick: bool | str) -> Settings:
    """A preset by name ("smoke", "quick", "full") or by the reproduce flag (True: quick, False: full)."""
    if isinstance(quick, str):
        if quick not in PRESETS:
            raise ValueError(f"settings must be one of {sorted(PRESETS)}, got {quick!r}")
        return PRESETS[quick]
    if not isinstance(quick, bool):
        raise TypeError(f"quick must be a bool or a preset name, got {quick!r}")
    return QUICK if quick else FULL


# --- helpers ---------------------------------------------------------------------------------------------


def first_step(history: list[dict], key: str, reached) -> Optional[int]:
    """The first logged step at which ``reached(history[key])`` holds (None if never)."""
    for record in history:
        if key in record and reached(record[key]):
            return int(record["step"])
    return None


def value_at(history: list[dict], key: str, step: float) -> float:
    """``key`` at the logged step nearest to ``step``."""
    record = min((r for r in history if key in r), key=lambda r: abs(r["step"] - step))
    return float(record[key])


def _save(out: Path, name: str, record: dict) -> dict:
    atomic_write_json(Path(out) / f"{name}.json", record)
    return record


def _simplified_train_config(s: Simplified, seed: int, steps: Optional[int] = None, **kw) -> TrainConfig:
    return TrainConfig(steps=steps or s.steps, batch_size=s.batch_size, lr=s.lr, optimizer="sgd", momentum=0.9,
                       weight_decay=1e-4, eval_every=s.eval_every, eval_batch_size=s.eval_batch_size, seed=seed, **kw)


def _full_train_config(f: Full, seed: int, steps: Optional[int] = None) -> TrainConfig:
    return TrainConfig(steps=steps or f.steps, batch_size=f.batch_size, lr=f.lr, optimizer="adamw",
                       betas=(0.9, 0.99), weight_decay=0.01, eval_every=f.eval_every,
                       eval_batch_size=f.eval_batch_size, seed=seed)


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


# --- experiments ------------------------------------------------------------------------------------------


def data_statistics(out: Path, settings: Settings = QUICK, seed: int = 0) -> dict:
    """T1: in-context fraction, bigram floor and trigger statistics of the generated data (T = 256)."""
    tables = shakespeare_tables()
    n = settings.data_batch
    gen = torch.Generator().manual_seed(seed)
    sample = generate(BigramOptions(seq_len=256, n_triggers=5), n, gen)
    c = sample.counts
    trig = c >= 1
    most = torch.stack([torch.bincount(row, minlength=tables.n).max() for row in sample.tokens])
    record = {
        "n_sequences": n, "seq_len": 256,
        "fixed_triggers_K5": tables.decode(sample.triggers[0].tolist()),
        "incontext_fraction": float((c >= 2).float().mean()),
        "trigger_output_fraction": float(trig.float().mean()),
        "first_occurrence_share": float((c == 1).sum() / trig.sum()),
        "repeat_frac": float((sample.targets == sample.tokens)[trig].float().mean()),
        "degenerate_fraction": float((most > 128).float().mean()),
        "bigram_floor": bigram_floor(sample),
        "unigram_entropy": float(-(tables.pi_u * tables.pi_u.log()).sum()),
    }
    variants = {"fixed K=1": dict(n_triggers=1), "fixed K=3": dict(n_triggers=3), "fixed K=5": dict(n_triggers=5),
                "fixed K=10": dict(n_triggers=10), "random K=5": dict(n_triggers=5, trigger_mode="random")}
    record["incontext_fraction_by_setting"] = {
        name: float((generate(BigramOptions(seq_len=256, **kw), n, gen).counts >= 2).float().mean())
        for name, kw in variants.items()}
    save_figure(out, "data_statistics", plot_bars(record["incontext_fraction_by_setting"],
                                                  "fraction of positions with c >= 2 (T = 256)"))
    return _save(out, "data_statistics", record)


def simplified_dynamics(out: Path, settings: Settings = QUICK, seed: int = 0, return_model: bool = False):
    """T3/T4: train the simplified model (loss at c >= 2) and follow accuracy and the three memory probes."""
    s = settings.simplified
    task = BigramTask(seq_len=s.seq_len, n_triggers=5)
    model = build_simplified(s.d_model, s.seq_len, seed=seed)
    result = train(model, task, _simplified_train_config(s, seed), probes=_probe_for(task))
    record = summarise_dynamics(result.history)
    record.update(settings=dataclasses.asdict(s), history=result.history)
    save_figure(out, "simplified_dynamics", plot_curves(
        result.history, ["acc_incontext", "wo1", "wk1", "wk0_64", "wk0"],
        "simplified model: in-context accuracy and memory recall",
        labels={"acc_incontext": "in-context accuracy", "wo1": "recall W_O^2", "wk1": "recall W_K^2",
                "wk0_64": "recall W_K^1 (first 64)", "wk0": "recall W_K^1 (all)"}))
    _save(out, "simplified_dynamics", record)
    return (record, model, task) if return_model else record


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
    saturated = {k: first_step(history, k, lambda v, f=float(final[k]): v >= 0.9 * f) if final.get(k) else None
                 for k in SATURATION}
    last = saturated["wk0_64"]
    wk1_last = last is not None and all(saturated[k] is not None and saturated[k] <= last for k in ("wo1", "wk1"))
    return {"final": {k: final.get(k) for k in ("step", "acc_incontext", "loss_head", "wo1", "wk1", "wk0", "wk0_64")},
            "step_acc_0.9": t90, "before_rise_step": end / 4,
            "before_rise_accuracy": value_at(history, "acc_incontext", end / 4),
            "saturated_step": saturated, "threshold_step": threshold, "wk1_learned_last": bool(wk1_last)}


def global_vs_incontext(out: Path, settings: Settings = QUICK, seed: int = 0, n_layers: int = 2,
                        return_model: bool = False, name: Optional[str] = None):
    """T2: the full model (loss everywhere): steps until the global-bigram loss is within 0.1 nats of its floor
    vs steps until the in-context accuracy reaches 0.9."""
    f = settings.full
    steps = settings.one_layer_steps if (n_layers == 1 and settings.one_layer_steps) else f.steps
    task = BigramTask(seq_len=f.seq_len, n_triggers=5, loss_head_only=False)
    model = build_full(f.d_model, f.n_heads, n_layers, f.seq_len, seed=seed)
    tcfg = _full_train_config(f, seed, steps)
    floor = bigram_floor(task.generate(tcfg.eval_batch_size, torch.Generator().manual_seed(tcfg.seed + 1)))
    result = train(model, task, tcfg)
    t_global = first_step(result.history, "loss_bigram", lambda v: v <= floor + 0.1)
    t_incontext = first_step(result.history, "acc_incontext", lambda v: v >= 0.9)
    ratio = t_incontext / t_global if (t_global and t_incontext) else None
    name = name or f"full_{n_layers}layer"
    record = {"n_layers": n_layers, "bigram_floor": floor, "step_global_within_0.1": t_global,
              "step_incontext_0.9": t_incontext, "ratio": ratio,
              "final": {k: result.final.get(k) for k in ("step", "acc_incontext", "loss_bigram", "loss_head")},
              "settings": dataclasses.asdict(f), "history": result.history}
    save_figure(out, name, plot_curves(result.history, ["acc_incontext", "loss_bigram", "loss_head"],
                                       f"full model, {n_layers} layer(s): global vs in-context",
                                       hline=("loss_bigram", floor)))
    _save(out, name, record)
    return (record, model, task) if return_model else record


def one_vs_two_layers(out: Path, settings: Settings = QUICK, seed: int = 0, two_layer: Optional[dict] = None) -> dict:
    """T5: final in-context accuracy of the 1-layer full model vs the 2-layer one (same data and steps)."""
    two = two_layer or global_vs_incontext(out, settings, seed, n_layers=2)
    one = global_vs_incontext(out, settings, seed, n_layers=1)
    record = {"one_layer_acc": one["final"]["acc_incontext"], "two_layer_acc": two["final"]["acc_incontext"],
              "one_layer_loss_bigram": one["final"]["loss_bigram"], "two_layer_loss_bigram": two["final"]["loss_bigram"]}
    save_figure(out, "one_vs_two_layers", plot_curves(
        [one["history"], two["history"]], ["acc_incontext"], "in-context accuracy: 1 layer vs 2 layers",
        series_names=["1 layer", "2 layers"]))
    return _save(out, "one_vs_two_layers", record)


def handbuilt(out: Path, settings: Settings = QUICK, seed: int = 0, return_model: bool = False):
    """T6: the hand-built induction head (no training): in-context accuracy and recall probes, for the
    trigger-specific head (keys = the K triggers) and the generic head (keys = all tokens)."""
    d, T = settings.handbuilt_d_model, settings.handbuilt_seq_len
    task = BigramTask(seq_len=T, n_triggers=5)
    batch = task.sample(settings.handbuilt_batch, torch.Generator().manual_seed(seed))
    record = {"d_model": d, "seq_len": T, "scales": dataclasses.asdict(HandbuiltScales())}
    models = {}
    for kind, keys in (("triggers", task.triggers), ("generic", None)):
        model = build_handbuilt(d, T, seed=seed, key_tokens=keys)
        with torch.no_grad():
            metrics = incontext_metrics(model(batch.tokens), batch)
        record[kind] = {**metrics, **memory_probes(model, triggers=task.triggers)}
        models[kind] = model
    scores = head_scores(models["triggers"], batch)
    record["head_scores"] = scores
    pats = [p[0, 0] for p in attention_patterns(models["triggers"], batch.tokens[:1, :48])]
    save_figure(out, "handbuilt", plot_handbuilt(pats, record))
    _save(out, "handbuilt", record)
    return (record, models["triggers"], task) if return_model else record


def mechanistic_checks(out: Path, model, task: BigramTask, settings: Settings = QUICK, seed: int = 0,
                       name: str = "mechanistic") -> dict:
    """Head-detector scores, layer ablations, activation patching and CircuitsVis views of a trained model."""
    tables = shakespeare_tables()
    batch = task.sample(settings.mechanistic_batch, torch.Generator().manual_seed(seed + 7))
    record = {"head_scores": head_scores(model, batch), "ablations": layer_ablations(model, batch)}
    pair = patching_pair(batch, tables.n, torch.Generator().manual_seed(seed))
    if pair is not None:
        record["patching"] = patching_sweep(model, pair)
        save_figure(out, f"{name}_patching", plot_patching(record["patching"], tables))
    n = min(64, batch.tokens.shape[1])
    views = attention_views(model, batch.tokens[0, :n], [repr(ch)[1:-1] for ch in tables.decode(batch.tokens[0, :n])])
    from mechmem.io import atomic_write_text

    record["attention_html"] = []
    for layer, view in views.items():
        path = Path(out) / f"{name}_attention_layer{layer + 1}.html"
        atomic_write_text(path, html_page(f"{name}: layer {layer + 1} attention", view.local_src))
        record["attention_html"].append(path.name)
    ab = record["ablations"]
    save_figure(out, f"{name}_ablation", plot_bars(
        {k: v.get("acc_incontext", float("nan")) for k, v in ab.items()}, "in-context accuracy under ablation"))
    return _save(out, name, record)


def html_page(title: str, body: str) -> str:
    """A complete offline HTML page around a CircuitsVis ``local_src`` (the JS bundle is inlined)."""
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head>\n"
            f"<body>\n<h3>{title}</h3>\n{body}\n</body></html>\n")


def data_distribution(out: Path, settings: Settings = FULL, seed: int = 0) -> dict:
    """Fig. 4-style studies on the simplified model: trigger frequency (K = 1, most frequent vs rarer), number
    of triggers, bigram-drawn vs uniform outputs (tested on uniform outputs) and held-out output tokens."""
    s = settings.simplified
    steps = settings.study_steps
    studies = {
        "K=1, most frequent trigger (space)": (dict(n_triggers=1), None),
        "K=1, rarer trigger (offset 20)": (dict(n_triggers=1, trigger_offset=20), None),
        "K=3": (dict(n_triggers=3), None),
        "K=5": (dict(n_triggers=5), None), "K=10": (dict(n_triggers=10), None),
        "bigram outputs -> uniform test": (dict(output_mode="bigram"), dict(output_mode="uniform")),
        "uniform outputs -> uniform test": (dict(output_mode="uniform"), dict(output_mode="uniform")),
        "train outputs 0-47 -> test outputs 48-64": (dict(output_split="train"), dict(output_split="test")),
    }
    record = {"steps": steps, "studies": {}}
    for name, (train_kw, test_kw) in studies.items():
        task = BigramTask(seq_len=s.seq_len, **{"n_triggers": 5, **train_kw})
        model = build_simplified(s.d_model, s.seq_len, seed=seed)
        res = train(model, task, _simplified_train_config(s, seed, steps, progress=False))
        entry = {"train_acc_incontext": res.final.get("acc_incontext")}
        if test_kw is not None:
            test = BigramTask(seq_len=s.seq_len, **{"n_triggers": 5, **train_kw, **test_kw})
            entry["test_acc_incontext"] = evaluate_on(model, test, s.eval_batch_size, seed + 99).get("acc_incontext")
        record["studies"][name] = entry
    bars = {k: v.get("test_acc_incontext", v["train_acc_incontext"]) for k, v in record["studies"].items()}
    save_figure(out, "data_distribution", plot_bars(bars, f"in-context accuracy after {steps} steps (test where given)"))
    return _save(out, "data_distribution", record)


def delayed_training(out: Path, settings: Settings = FULL, seed: int = 0,
                     delayed: str = "blocks.1.attn.W_O") -> dict:
    """Freeze one matrix (default W_O^2) until step ``settings.delay``: do the others wait for it?"""
    s = settings.simplified
    task = BigramTask(seq_len=s.seq_len, n_triggers=5)
    model = build_simplified(s.d_model, s.seq_len, seed=seed)
    trainable = [n for n in weight_names(model) if weight_parameters(model, n).requires_grad]
    if delayed not in trainable:
        raise ValueError(f"delayed={delayed!r} is not a trained matrix of the simplified model; "
                         f"choose one of {trainable}")
    tcfg = _simplified_train_config(s, seed, settings.delayed_steps, freeze_until={delayed: settings.delay})
    result = train(model, task, tcfg, probes=_probe_for(task))
    record = {"delayed": delayed, "delay": settings.delay, **summarise_dynamics(result.history),
              "history": result.history}
    save_figure(out, "delayed_training", plot_curves(result.history, ["acc_incontext", "wo1", "wk1", "wk0_64"],
                                                     f"{delayed} frozen until step {settings.delay}",
                                                     vline=settings.delay))
    return _save(out, "delayed_training", record)


EXPERIMENTS = {
    "data_statistics": data_statistics,
    "simplified_dynamics": simplified_dynamics,
    "global_vs_incontext": global_vs_incontext,
    "one_vs_two_layers": one_vs_two_layers,
    "handbuilt": handbuilt,
    "data_distribution": data_distribution,
    "delayed_training": delayed_training,
}
