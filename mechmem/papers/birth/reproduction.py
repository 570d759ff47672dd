"""``mechmem reproduce birth``: run the experiments and check the claims of spec section 6.

``results.json`` holds ``claims`` (exactly the keys of issue 5, each ``{measured, expected, holds}``), the
settings, timings, and the per-experiment records (also saved as ``<experiment>.json`` with a PNG figure under
``figures/``). Thresholds are the spec's proposed tolerances; where the spec gives none, the threshold used is
stated in ``expected``.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from mechmem.io import atomic_write_json
from mechmem.reproducing import claim, torch_threads

from . import experiments as ex
from .experiments import Settings, settings_for

CLAIM_KEYS = (
    "data_incontext_fraction",
    "data_bigram_floor",
    "incontext_accuracy_final",
    "incontext_accuracy_before_rise",
    "recall_wo2_final",
    "recall_wk2_final",
    "recall_wk1_final",
    "wk1_learned_last",
    "global_before_incontext_ratio",
    "one_layer_incontext_accuracy",
    "two_layer_incontext_accuracy",
    "handbuilt_incontext_accuracy",
    "layer2_ablation_incontext_accuracy",
    "layer2_ablation_bigram_loss_change",
    "previous_token_head_score",
    "induction_head_score",
)


def _within(x, target, tol):
    return x is not None and abs(x - target) <= tol


def _ge(x, t):
    return x is not None and x >= t


def _le(x, t):
    return x is not None and x <= t


def build_claims(r: dict) -> dict:
    """The claims object from the experiment records ``r``."""
    data, dyn, g2 = r["data_statistics"], r["simplified_dynamics"], r["full_2layer"]
    layers, hb, mech = r["one_vs_two_layers"], r["handbuilt"], r["mechanistic_full"]
    fin = dyn["final"]
    ab = mech["ablations"]
    d_bigram = ab["layer2_zero"].get("loss_bigram", float("nan")) - ab["clean"].get(
        "loss_bigram", float("nan")
    )
    prev = max(mech["head_scores"]["previous_token"][0])
    ind = max(mech["head_scores"]["induction"][1])
    ratio = g2["ratio"]
    return {
        "data_incontext_fraction": claim(
            data["incontext_fraction"],
            "0.30 +/- 0.02 (K = 5 fixed, T = 256)",
            _within(data["incontext_fraction"], 0.30, 0.02),
        ),
        "data_bigram_floor": claim(
            data["bigram_floor"],
            "2.145 +/- 0.02 nats",
            _within(data["bigram_floor"], 2.145, 0.02),
        ),
        "incontext_accuracy_final": claim(
            fin["acc_incontext"], ">= 0.95", _ge(fin["acc_incontext"], 0.95)
        ),
        "incontext_accuracy_before_rise": claim(
            dyn["before_rise_accuracy"], "<= 0.3", _le(dyn["before_rise_accuracy"], 0.3)
        ),
        "recall_wo2_final": claim(fin["wo1"], ">= 0.95", _ge(fin["wo1"], 0.95)),
        "recall_wk2_final": claim(
            fin["wk1"], "= 1.0 (fixed triggers)", _ge(fin["wk1"], 1.0)
        ),
        "recall_wk1_final": claim(
            fin["wk0_64"],
            ">= 0.5 (first 64 positions; chance ~1/64)",
            _ge(fin["wk0_64"], 0.5),
        ),
        "wk1_learned_last": claim(
            dyn["wk1_learned_last"],
            "true (W_K^1 saturates after W_O^2 and W_K^2)",
            dyn["wk1_learned_last"] is True,
        ),
        "global_before_incontext_ratio": claim(ratio, ">= 3", _ge(ratio, 3.0)),
        "one_layer_incontext_accuracy": claim(
            layers["one_layer_acc"],
            "<= 0.5 (far below 2 layers)",
            _le(layers["one_layer_acc"], 0.5),
        ),
        "two_layer_incontext_accuracy": claim(
            layers["two_layer_acc"], ">= 0.9", _ge(layers["two_layer_acc"], 0.9)
        ),
        "handbuilt_incontext_accuracy": claim(
            hb["triggers"]["acc_incontext"],
            ">= 0.95 (no training)",
            _ge(hb["triggers"]["acc_incontext"], 0.95),
        ),
        "layer2_ablation_incontext_accuracy": claim(
            ab["layer2_zero"].get("acc_incontext"),
            "<= 0.3 (collapse; full 2-layer model, layer-2 heads zeroed)",
            _le(ab["layer2_zero"].get("acc_incontext"), 0.3),
        ),
        "layer2_ablation_bigram_loss_change": claim(
            d_bigram,
            "|change| <= 0.3 nats (global bigrams stay)",
            abs(d_bigram) <= 0.3 if d_bigram == d_bigram else False,
        ),
        "previous_token_head_score": claim(
            prev,
            ">= 0.5 (best layer-1 head, TransformerLens 'mul' score, "
            "full 2-layer model)",
            _ge(prev, 0.5),
        ),
        "induction_head_score": claim(
            ind,
            ">= 0.5 (best layer-2 head, 'mul' score at c >= 2 queries, "
            "full 2-layer model)",
            _ge(ind, 0.5),
        ),
    }


def run_reproduction(out: Path, settings: Settings, seed: int = 0) -> dict:
    """Run every experiment of ``settings`` into ``out`` and write ``out/results.json``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings, cpu, records = {}, {}, {}

    def timed(label, fn, *a, **kw):
        t0, c0 = time.perf_counter(), time.process_time()
        value = fn(*a, **kw)
        timings[label] = time.perf_counter() - t0
        cpu[label] = time.process_time() - c0
        return value

    records["data_statistics"] = timed(
        "data_statistics", ex.data_statistics, out, settings, seed
    )
    records["handbuilt"] = timed("handbuilt", ex.handbuilt, out, settings, seed)
    dyn, simple_model, simple_task = timed(
        "simplified_dynamics",
        ex.simplified_dynamics,
        out,
        settings,
        seed,
        return_model=True,
    )
    records["simplified_dynamics"] = dyn
    g2, full_model, full_task = timed(
        "full_2layer",
        ex.global_vs_incontext,
        out,
        settings,
        seed,
        n_layers=2,
        return_model=True,
    )
    records["full_2layer"] = g2
    records["one_vs_two_layers"] = timed(
        "full_1layer", ex.one_vs_two_layers, out, settings, seed, two_layer=g2
    )
    records["mechanistic_full"] = timed(
        "mechanistic",
        ex.mechanistic_checks,
        out,
        full_model,
        full_task,
        settings,
        seed,
        name="mechanistic_full",
    )
    records["mechanistic_simplified"] = timed(
        "mechanistic_simplified",
        ex.mechanistic_checks,
        out,
        simple_model,
        simple_task,
        settings,
        seed,
        name="mechanistic_simplified",
    )
    if settings.studies:
        records["data_distribution"] = timed(
            "data_distribution", ex.data_distribution, out, settings, seed
        )
    if settings.delayed:
        records["delayed_training"] = timed(
            "delayed_training", ex.delayed_training, out, settings, seed
        )
    results = {
        "paper": "birth",
        "settings": settings.name,
        "seed": seed,
        "claims": build_claims(records),
        "config": dataclasses.asdict(settings),
        "timings_s": timings,
        "total_s": sum(timings.values()),
        "cpu_s": cpu,
        "total_cpu_s": sum(cpu.values()),
        "torch_threads": torch.get_num_threads(),
        "experiments": {
            k: {kk: vv for kk, vv in v.items() if kk != "history"}
            for k, v in records.items()
        },
        "not_run": [
            n
            for n, on in (
                ("data_distribution", settings.studies),
                ("delayed_training", settings.delayed),
            )
            if not on
        ],
    }
    atomic_write_json(out / "results.json", results)
    return results


def reproduce(
    out: Path, quick: bool = True, seed: int = 0, threads: int | None = 1
) -> dict:
    """Reproduce the paper's claims: quick mode (CPU minutes) or full mode (the paper's sizes).

    ``threads``: torch intra-op threads while it runs (restored afterwards). One thread is the default: these
    small models gain nothing from a second thread, and on a shared 2-core machine two threads doubled the
    wall time per step (measured: 0.99 s vs 1.90 s per full-model step under load).
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {seed!r}")
    if not isinstance(quick, bool):
        raise TypeError(f"quick must be a bool, got {quick!r}")
    with torch_threads(threads):
        return run_reproduction(Path(out), settings_for(quick), seed)
