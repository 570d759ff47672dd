"""Benchmark: hooks.patching (batched engine) against transformer_lens.patching, same inputs, same run.

Sweeps timed on each model: the full ``resid_pre`` (layer x position) sweep and the head-output
by position (``z``: layer x position x head) sweep. On the GPT-2-shaped model the head sweep is
timed on the layer subset ``--gpt2-head-layers`` (default 3 and 8, whose mean remaining depth,
13/24 of the model, equals the full sweep's 78/144) for *both* tools, so the transformer_lens
baseline finishes in minutes on 2 CPU cores. Both tools run under ``torch.no_grad()`` (the
stronger baseline) in eval mode, in float32, on the same tokens with the same metric (the logit
difference of two answer tokens at the last position, averaged over the batch).

The engine is called with ``logit_positions=[-1]`` (the metric reads only the last position, so
it unembeds only there; the metric receives ``logits[:, [-1]]`` and reads the same ``[:, -1]``
slice as in the baseline), while transformer_lens.patching always computes the logits at every
position. On the toy model (and on gpt2-shaped with ``--all-logits both``) the engine is also
timed *without* ``logit_positions``, printed on a second, indented line.

Prints, per model, ``<model> speedup=<ratio> max_abs_diff=<value>``: the median over repetitions
of (baseline time / engine time) for the two sweeps together, and the largest difference between
the two tools' results (over every timed engine run).

``toy-bridge`` is the toy model as a ``TransformerBridge`` (``hooks.testing.random_bridge``: live
attention hooks), timed against ``transformer_lens.patching`` on the same bridge: the engine runs
the bridge's own block modules from the cached residual stream, with cached keys and values. On
TransformerLens 4.x (no ``HookedTransformer``) only ``toy-bridge`` runs.

    python benchmarks/patching.py                 # toy, toy-bridge (5 reps each) + gpt2-shaped (1 rep)
    python benchmarks/patching.py --only toy --reps-toy 9 --verbose
    python benchmarks/patching.py --only gpt2-shaped --all-logits both --verbose
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import pandas as pd
import torch
import transformer_lens.patching as tlp

from hooks.compat import has_hooked_transformer, tl_version
from hooks.patching import PatchingEngine
from hooks.testing import hooked_model, random_bridge

warnings.filterwarnings("ignore", category=DeprecationWarning)

MODELS = {
    "toy": dict(
        n_layers=2,
        d_model=64,
        d_head=16,
        n_heads=4,
        n_ctx=32,
        d_vocab=64,
        attn_only=True,
        normalization_type=None,
        act_fn="relu",
    ),
    "gpt2-shaped": dict(
        n_layers=12,
        d_model=768,
        d_head=64,
        n_heads=12,
        d_mlp=3072,
        n_ctx=1024,
        d_vocab=50257,
        act_fn="gelu_new",
        normalization_type="LN",
        attn_only=False,
    ),
}
BRIDGES = {"toy-bridge": "toy"}  # name -> the config of MODELS it is built from


def inputs(d_vocab: int, batch: int = 4, pos: int = 16, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    clean = torch.randint(0, d_vocab, (batch, pos), generator=gen)
    corrupted = clean.clone()
    corrupted[:, pos // 4] = torch.randint(0, d_vocab, (batch,), generator=gen)
    answers = torch.randint(0, d_vocab, (2,), generator=gen)

    def metric(logits):
        return (logits[:, -1, answers[0]] - logits[:, -1, answers[1]]).mean()

    return clean, corrupted, metric


def baseline(model, clean, corrupted, metric, resid_layers, head_layers):
    """transformer_lens.patching: resid_pre on ``resid_layers`` (all: the ready-made partial) and the
    z-by-pos sweep on ``head_layers`` (``generic_activation_patch`` with an ``index_df``)."""
    _, cache = model.run_with_cache(clean)
    P, H = clean.shape[1], model.cfg.n_heads
    if resid_layers == list(range(model.cfg.n_layers)):
        resid = tlp.get_act_patch_resid_pre(model, corrupted, cache, metric)
    else:
        index_df = pd.DataFrame([(l, p) for l in resid_layers for p in range(P)], columns=["layer", "pos"])
        resid = tlp.generic_activation_patch(
            model, corrupted, cache, metric, tlp.layer_pos_patch_setter, "resid_pre", index_df=index_df
        ).reshape(len(resid_layers), P)
    if not head_layers:
        return resid, torch.zeros(0)
    rows = [(l, p, h) for l in head_layers for p in range(P) for h in range(H)]
    index_df = pd.DataFrame(rows, columns=["layer", "pos", "head"])
    heads = tlp.generic_activation_patch(
        model, corrupted, cache, metric, tlp.layer_pos_head_vector_patch_setter, "z", index_df=index_df
    )
    return resid, heads.reshape(len(head_layers), P, H)


def engine(model, clean, corrupted, metric, resid_layers, head_layers, logit_positions=(-1,)):
    """hooks.patching. ``logit_positions=(-1,)``: the metric reads only the last position, so the
    engine unembeds only there (the metric receives ``logits[:, [-1]]``, and ``logits[:, -1]`` is the
    same slice as in the baseline); ``None``: all positions, like the baseline."""
    eng = PatchingEngine(model, clean, corrupted, metric, progress=False, logit_positions=logit_positions)
    resid = eng.sweep("resid_pre", layers=resid_layers)
    return resid, (eng.sweep("attn_head_out_by_pos", layers=head_layers) if head_layers else torch.zeros(0))


def timed(fn, *args):
    start = time.perf_counter()
    with torch.no_grad():
        out = fn(*args)
    return time.perf_counter() - start, out


def _diff(a, b) -> float:
    (r0, h0), (r1, h1) = a, b
    return max((r0 - r1).abs().max().item(), (h0 - h1).abs().max().item() if h0.numel() else 0.0)


def bench(name: str, reps: int, resid_layers, head_layers, all_logits: bool) -> dict:
    """Per repetition: the baseline, the engine (last-position logits) and, with ``all_logits``,
    the engine computing logits at every position; all on the same inputs, in turn."""
    model = random_bridge(MODELS[BRIDGES[name]], seed=0) if name in BRIDGES else hooked_model(MODELS[name], seed=0)
    clean, corrupted, metric = inputs(model.cfg.d_vocab)
    all_layers = list(range(model.cfg.n_layers))
    resid_layers = all_layers if resid_layers is None else resid_layers
    head_layers = all_layers if head_layers is None else head_layers
    args = (model, clean, corrupted, metric, resid_layers, head_layers)
    ratios, ratios_all, diffs, times = [], [], [], []
    for _ in range(reps):
        t_base, want = timed(baseline, *args)
        t_eng, got = timed(engine, *args)
        ratios.append(t_base / t_eng)
        diffs.append(_diff(want, got))
        times.append((round(t_base, 3), round(t_eng, 3)))
        if all_logits:
            t_all, got = timed(engine, *args, None)
            ratios_all.append(t_base / t_all)
            diffs.append(_diff(want, got))
            times[-1] += (round(t_all, 3),)
    return dict(
        ratio=statistics.median(ratios),
        diff=max(diffs),
        times=times,
        ratio_all=statistics.median(ratios_all) if ratios_all else None,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(MODELS) + sorted(BRIDGES), default=None)
    parser.add_argument("--reps-toy", type=int, default=5)
    parser.add_argument("--reps-gpt2", type=int, default=1)
    parser.add_argument(
        "--gpt2-head-layers",
        type=int,
        nargs="*",
        default=[3, 8],
        help="layers of the head-by-position sweep on gpt2-shaped (none: skip that sweep)",
    )
    parser.add_argument(
        "--gpt2-resid-layers",
        type=int,
        nargs="+",
        default=None,
        help="layers of the resid_pre sweep on gpt2-shaped (default: all 12)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: a shared 2-core machine)")
    parser.add_argument(
        "--all-logits",
        choices=("toy", "both", "none"),
        default="toy",
        help="also time the engine computing logits at every position (like the baseline)",
    )
    parser.add_argument("--verbose", action="store_true", help="also print the seconds per rep")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    plan = [
        ("toy", args.reps_toy, None, None),
        ("toy-bridge", args.reps_toy, None, None),
        ("gpt2-shaped", args.reps_gpt2, args.gpt2_resid_layers, args.gpt2_head_layers),
    ]
    print(f"TransformerLens {'.'.join(map(str, tl_version()))}", flush=True)
    for name, reps, resid_layers, head_layers in plan:
        if args.only not in (None, name):
            continue
        if name not in BRIDGES and not has_hooked_transformer():
            print(f"{name}: skipped (HookedTransformer needs TransformerLens 3.x)", flush=True)
            continue
        all_logits = args.all_logits == "both" or (args.all_logits == "toy" and name in ("toy", "toy-bridge"))
        out = bench(name, reps, resid_layers, head_layers, all_logits)
        print(f"{name} speedup={out['ratio']:.2f} max_abs_diff={out['diff']:.2e}", flush=True)
        if out["ratio_all"] is not None:
            print(
                f"  {name} speedup with logits at all positions (no logit_positions): {out['ratio_all']:.2f}",
                flush=True,
            )
        if args.verbose:
            cols = "baseline s, engine s" + (", engine all-logits s" if all_logits else "")
            print(f"  {name} ({cols}) per rep: {out['times']}", flush=True)


if __name__ == "__main__":
    main()
