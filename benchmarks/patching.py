"""Benchmark: exact patching (hooks.patching) against transformer_lens.patching, attribution patching
(hooks.attribution) against exact patching, and the memory of sweeps at sequence length 128.

Every comparison runs both sides on the same inputs, in the same run, under ``torch.no_grad()`` (the
stronger baseline) in eval mode, float32, ``--threads 1``. Output: one parseable line per model and
mode, a name and then ``key=value`` fields, no progress bars:

    <model> speedup=S max_abs_diff=D unchanged=U/N hook_checks_s=C speedup_without_skip=S2
        the engine (logit_positions=[-1]) vs transformer_lens.patching: median over repetitions of
        baseline time / engine time for the two sweeps together; the largest difference between the
        two tools' results; patches whose clean activation equals the corrupted one (answered
        without a forward pass, exactly); the engine's once-per-model hook checks (not in the
        timings); the speed-up with the unchanged-patch shortcut off.
    <model>-all-logits speedup=S max_abs_diff=D
        the engine computing logits at every position, as transformer_lens.patching does.
    <model>-attribution sweep=W speedup=S speedup_vs_tl=T spearman=R pearson=P max_abs_diff=D n=N
        exact_range=E attn_max=A
        (one line) hooks.attribution.attribution_sweep vs exact patching of the same sweep: speed-up over the
        engine and over transformer_lens.patching; Spearman / Pearson correlation and largest
        difference between the attribution and the exact effect (patched - corrupted metric) over
        the N components whose activation the corruption changes and where either method sees an
        effect (the others are exactly 0 in both); the largest exact effect; the mean largest
        attention weight of the corrupted run (near 1: patterns near saturation).
    <model>-attribution-vs-tl speedup=S max_abs_diff=D        (TransformerLens 4.x)
        attribution_sweeps(attn_head_out_by_pos, mlp_out) vs transformer_lens.tools.analysis
        attribution_patch (node granularity), same numbers; on gpt2-shaped-bridge and tiny-bridge
        (hooks.testing.tiny_config: 2 layers, d_model 32, MLPs, LayerNorm; attribution_patch needs
        MLPs, so not on the attention-only toy).
    <task> trained steps=K accuracy=A seconds=T
        a trained toy model of the papers (mechmem's public API: registry task, build_model, train).
    gpt2-shaped-memory mode=M seq=128 batch=B budget_gb=G chunks=C working_gb=W peak_rss_gb=P seconds=T
        a sweep at sequence length 128 in a fresh process: the engine's memory budget, the memory
        taken on top of the built model (peak RSS minus the RSS before the sweep) and the peak RSS.

Models: ``toy`` (2-layer attention-only, d_model 64, random weights), ``gpt2-shaped`` (12 layers,
d_model 768, 12 heads, d_mlp 3072, vocab 50257, random weights), each as a ``HookedTransformer``
(TransformerLens 3.x) and as a ``TransformerBridge`` (``-bridge``; both lines), and ``gpt2-init`` (the
GPT-2-shaped model with GPT-2's initialisation, for attribution only); batch 4, 16 positions,
one position corrupted (``pos // 4``), metric: the logit difference of two tokens at the last
position, averaged over the batch. Sweeps timed: the full ``resid_pre`` sweep and head outputs by
position (``attn_head_out_by_pos``), on ``--gpt2-head-layers`` (3 and 8) for the GPT-2-shaped models.
The trained toys (recall, lca, birth_bigram, factual; the scaling paper trains no sequence model)
get every sweep their hooks allow; their corrupted inputs come from the task's own ``corrupt``.

    python benchmarks/patching.py                          # everything (about half an hour on 2 cores)
    python benchmarks/patching.py --only toy toy-bridge    # names of models, tasks or "memory"
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import gc
import json
import os
import statistics
import subprocess
import sys
import time
import warnings

os.environ.setdefault("TQDM_DISABLE", "1")  # no progress bars (transformer_lens.patching has them); before tqdm loads

import pandas as pd  # noqa: E402
import torch  # noqa: E402
import transformer_lens.patching as tlp  # noqa: E402

from hooks.attribution import AttributionEngine, agreement, attribution_sweeps  # noqa: E402
from hooks.compat import has_hooked_transformer, tl_patching, tl_version  # noqa: E402
from hooks.names import active_hook_names  # noqa: E402
from hooks.patching import SWEEPS, PatchingEngine, _hook_name, _result_shape, _variants, check_sweep  # noqa: E402
from hooks.testing import hooked_model, random_bridge, tiny_config  # noqa: E402

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
BRIDGES = {"toy-bridge": "toy", "gpt2-shaped-bridge": "gpt2-shaped"}  # name -> the config it is built from
# GPT-2-shaped with GPT-2's initialisation instead of hooks.testing's (attribution only; see bench_gpt2_init)
GPT2_INIT = {"gpt2-init": "gpt2-shaped", "gpt2-init-bridge": "gpt2-shaped"}

# the trained toys: task options and training settings (small: each trains in seconds to a minute)
TASKS = {
    "recall": ({}, {}),
    "lca": ({}, {}),
    "birth_bigram": ({"seq_len": 64}, {"steps": 300}),
    "factual": ({"S": 8, "R": 8, "D": 4}, {"steps": 600, "batch_size": 256}),
}


def say(line: str) -> None:
    print(line, flush=True)


def fmt(x: float) -> str:
    return f"{x:.3g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def build(name: str):
    if name in GPT2_INIT:
        return gpt2_init(name)
    if name in BRIDGES:
        return random_bridge(MODELS[BRIDGES[name]], seed=0)
    return hooked_model(MODELS[name], seed=0)


def gpt2_init(name: str):
    """The GPT-2-shaped model with GPT-2's initialisation (``initializer_range`` 0.02): every weight
    matrix N(0, 0.02^2), LayerNorm scales 1, biases 0. ``hooks.testing``'s weights (N(0, 1/fan), fan
    the last dimension, so W_Q / W_K have std 1/8) give attention patterns near saturation."""
    from hooks.weights import set_weights_, weight_shapes

    cfg = MODELS[GPT2_INIT[name]]
    model = random_bridge(cfg, seed=0) if name.endswith("bridge") else hooked_model(cfg, seed=0)
    gen = torch.Generator().manual_seed(0)
    weights = {}
    for key, shape in weight_shapes(cfg).items():
        if key.split(".")[-1].startswith("W_"):
            weights[key] = 0.02 * torch.randn(shape, generator=gen)
        else:
            weights[key] = torch.ones(shape) if key.endswith(".w") else torch.zeros(shape)
    set_weights_(model, weights)
    return model


def attention_max(model, tokens) -> float:
    """Mean over layers, heads, examples and query positions >= 1 of the largest attention weight:
    near 1 when the patterns are near saturation (the softmax is then far from linear)."""
    names = [f"blocks.{l}.attn.hook_pattern" for l in range(model.cfg.n_layers)]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=names)
    return torch.stack([cache[n][:, :, 1:].max(-1).values.mean() for n in names]).mean().item()


def inputs(d_vocab: int, batch: int = 4, pos: int = 16, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    clean = torch.randint(0, d_vocab, (batch, pos), generator=gen)
    corrupted = clean.clone()
    corrupted[:, pos // 4] = torch.randint(0, d_vocab, (batch,), generator=gen)
    answers = torch.randint(0, d_vocab, (2,), generator=gen)

    def metric(logits):
        return (logits[:, -1, answers[0]] - logits[:, -1, answers[1]]).mean()

    return clean, corrupted, metric


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out


# ----------------------------------------------------------------------------- exact patching


def tl_sweep(model, clean, corrupted, metric, sweep: str, layers: list[int]) -> torch.Tensor:
    """transformer_lens.patching on ``layers``: the ready-made partial for all layers, else
    ``generic_activation_patch`` with an ``index_df`` (the same forward passes, fewer of them)."""
    _, cache = model.run_with_cache(clean)
    act, axes = SWEEPS[sweep]
    if layers == list(range(model.cfg.n_layers)) and sweep != "resid_post":
        return tl_patching(getattr(tlp, f"get_act_patch_{sweep}"), model, corrupted, cache, metric)
    variants = _variants(model, sweep, layers, clean.shape[1])
    rows = [(layers[v.index[0]],) + v.index[1:] for v in variants]
    index_df = pd.DataFrame(rows, columns=list(axes))
    setter = {
        ("layer", "pos"): tlp.layer_pos_patch_setter,
        ("layer", "pos", "head"): tlp.layer_pos_head_vector_patch_setter,
        ("layer", "head"): tlp.layer_head_vector_patch_setter,
        ("layer", "head", "dest"): tlp.layer_head_pos_pattern_patch_setter,
    }[axes]
    if act == "pattern" and axes == ("layer", "head"):
        setter = tlp.layer_head_pattern_patch_setter
    out = tl_patching(tlp.generic_activation_patch, model, corrupted, cache, metric, setter, act, index_df=index_df)
    return out.reshape(_result_shape(model, sweep, len(layers), clean.shape[1]))


def exact_sweeps(model, clean, corrupted, metric, plan, **options):
    """``{sweep: (seconds, result)}`` of one PatchingEngine (its captures are timed in the first
    sweep) and the number of patches answered without a pass."""
    out, unchanged = {}, 0
    with torch.no_grad():
        start = time.perf_counter()
        engine = PatchingEngine(model, clean, corrupted, metric, progress=False, **options)
        for sweep, layers in plan:
            result = engine.sweep(sweep, layers=layers)
            now = time.perf_counter()
            out[sweep], start = (now - start, result), now
            unchanged += engine.n_unchanged
    return out, unchanged


def _diff(a: dict, b: dict) -> float:
    return max((a[s][1] - b[s][1]).abs().max().item() for s in a)


def _total(times: dict) -> float:
    return sum(t for t, _ in times.values())


def bench_exact(name: str, reps: int, plan, all_logits: bool, without_skip: bool) -> dict:
    """Per repetition: transformer_lens.patching, then the engine (last-position logits), then
    (optionally) with logits at every position and without the unchanged-patch shortcut."""
    model = build(name)
    clean, corrupted, metric = inputs(model.cfg.d_vocab)
    args = (model, clean, corrupted, metric)
    # the engine's once-per-model hook checks (a few tiny forward passes, cached), outside the timings
    check_s, _ = timed(lambda: [check_sweep(model, sweep, layers) for sweep, layers in plan])
    runs = {"ratio": [], "all": [], "noskip": [], "diff": []}
    for _ in range(reps):
        base = {}
        for sweep, layers in plan:
            with torch.no_grad():
                base[sweep] = timed(tl_sweep, *args, sweep, layers)
        fast, unchanged = exact_sweeps(*args, plan, logit_positions=(-1,))
        runs["ratio"].append(_total(base) / _total(fast))
        runs["diff"].append(_diff(base, fast))
        if all_logits:
            every, _ = exact_sweeps(*args, plan)
            runs["all"].append(_total(base) / _total(every))
            runs["diff"].append(_diff(base, every))
        if without_skip:
            slow, _ = exact_sweeps(*args, plan, logit_positions=(-1,), skip_unchanged=False)
            runs["noskip"].append(_total(base) / _total(slow))
            runs["diff"].append(_diff(base, slow))
    n = sum(v.shape.numel() for _, v in fast.values())
    line = f"{name} speedup={statistics.median(runs['ratio']):.2f} max_abs_diff={max(runs['diff']):.2e}"
    line += f" unchanged={unchanged}/{n} hook_checks_s={check_s:.2f}"
    if without_skip:
        line += f" speedup_without_skip={statistics.median(runs['noskip']):.2f}"
    say(line)
    if all_logits:
        say(f"{name}-all-logits speedup={statistics.median(runs['all']):.2f} max_abs_diff={max(runs['diff']):.2e}")
    return dict(model=model, inputs=(clean, corrupted, metric), base=base, fast=fast)


# ----------------------------------------------------------------------------- attribution


def attribution_line(
    label: str, sweep: str, exact_s: float, tl_s: float | None, attr_s: float, found, attn_max: float
) -> str:
    """The agreement over the components that the corruption changes and where either method sees
    an effect (the others are exactly 0 in both: an unchanged activation, or one the metric does
    not read)."""
    scores, exact, changed = found
    changed = changed & ((scores != 0) | (exact != 0))
    r, rho, diff, _ = agreement(scores[changed], exact[changed])
    line = f"{label}-attribution sweep={sweep} speedup={exact_s / attr_s:.1f}"
    line += f" speedup_vs_tl={tl_s / attr_s:.1f}" if tl_s is not None else ""
    line += f" spearman={rho:.3f} pearson={r:.3f} max_abs_diff={fmt(diff)} n={int(changed.sum())}"
    return line + f" exact_range={fmt(exact.abs().max().item())} attn_max={attn_max:.2f}"


def attribute(model, clean, corrupted, metric, sweep, layers, **options):
    """``(seconds, scores, changed)`` of one attribution sweep."""
    start = time.perf_counter()
    engine = AttributionEngine(model, clean, corrupted, metric, **options)
    scores = engine.sweep(sweep, layers)
    return time.perf_counter() - start, scores, engine.changed[sweep]


def bench_attribution(label: str, run: dict, plan, with_tl: bool) -> None:
    """Attribution of each sweep of ``plan`` against the exact results ``run`` holds (the engine's,
    last-position logits, and transformer_lens.patching's times)."""
    model, (clean, corrupted, metric) = run["model"], run["inputs"]
    with torch.no_grad():
        corrupted_metric = metric(model(corrupted)).item()
    saturation = attention_max(model, corrupted)
    for sweep, layers in plan:
        attr_s, scores, changed = attribute(model, clean, corrupted, metric, sweep, layers, logit_positions=(-1,))
        exact_s, exact = run["fast"][sweep]
        tl_s = run["base"][sweep][0] if with_tl else None
        found = (scores, exact - corrupted_metric, changed)
        say(attribution_line(label, sweep, exact_s, tl_s, attr_s, found, saturation))


def bench_gpt2_init(name: str, plan) -> None:
    """Attribution against the engine on the GPT-2-shaped model with GPT-2's initialisation (no
    transformer_lens.patching baseline: the engine's exact numbers are the reference)."""
    model = build(name)
    clean, corrupted, metric = inputs(model.cfg.d_vocab)
    [check_sweep(model, sweep, layers) for sweep, layers in plan]  # once-per-model checks, untimed
    fast, _ = exact_sweeps(model, clean, corrupted, metric, plan, logit_positions=(-1,))
    run = dict(model=model, inputs=(clean, corrupted, metric), fast=fast)
    bench_attribution(name, run, plan, with_tl=False)


def bench_vs_transformer_lens(name: str, run: dict, reps: int) -> None:
    """TransformerLens 4.x's own attribution_patch (node granularity: attn_head_out, mlp_out, embed)
    against attribution_sweeps of the same two node families, same inputs."""
    from transformer_lens.tools.analysis.attribution_patching import attribution_patch

    model, (clean, corrupted, metric) = run["model"], run["inputs"]
    L, P, H = model.cfg.n_layers, clean.shape[1], model.cfg.n_heads
    if getattr(model.cfg, "attn_only", False):
        say(f"{name}-attribution-vs-tl skipped: attribution_patch needs hook_mlp_out (attention-only model)")
        return
    [check_sweep(model, sweep) for sweep in ("attn_head_out_by_pos", "mlp_out")]  # once-per-model checks, untimed
    ratios, diffs = [], []
    for _ in range(reps):
        tl_s, result = timed(attribution_patch, model, clean, corrupted, metric)
        want = {"attn_head_out_by_pos": torch.zeros(L, P, H), "mlp_out": torch.zeros(L, P)}
        for node, score in result.node_scores.items():
            if node.kind == "attn_head_out":
                want["attn_head_out_by_pos"][node.layer, node.position, node.head] = score
            elif node.kind == "mlp_out":
                want["mlp_out"][node.layer, node.position] = score
        ours_s, got = timed(attribution_sweeps, model, clean, corrupted, metric, list(want))
        ratios.append(tl_s / ours_s)
        diffs.append(max((got[k] - want[k]).abs().max().item() for k in want))
    tl_s, diff = statistics.median(ratios), max(diffs)
    say(f"{name}-attribution-vs-tl speedup={tl_s:.2f} max_abs_diff={diff:.2e} reps={reps}")


# ----------------------------------------------------------------------------- trained toys


def train_task(name: str):
    """A small trained model of ``name`` through mechmem's public API, and its clean / corrupted
    batch and logit-difference metric (clean answer minus corrupted answer, at the scored
    positions whose answer the corruption changes)."""
    import mechmem
    from mechmem.contract.registry import task_class

    task_options, train_options = TASKS[name]
    task = task_class(name)(**task_options)
    model = task.build_model(task.model_config())
    cfg = dataclasses.replace(task.train_config(), progress=False, threads=1, **train_options)
    seconds, result = timed(mechmem.train, model, task, cfg)
    model.eval()
    say(f"{name} trained steps={cfg.steps} accuracy={result.history[-1]['accuracy']:.3f} seconds={seconds:.1f}")
    clean = task.sample(32, torch.Generator().manual_seed(123))
    corrupted = task.corrupt(clean, torch.Generator().manual_seed(124))
    rows, cols = (clean.mask & (clean.targets != corrupted.targets)).nonzero(as_tuple=True)
    good, bad = clean.targets[rows, cols], corrupted.targets[rows, cols]

    def metric(logits):
        return (logits[rows, cols, good] - logits[rows, cols, bad]).mean()

    return model, clean.tokens, corrupted.tokens, metric


def bench_task(name: str) -> None:
    model, clean, corrupted, metric = train_task(name)
    active = active_hook_names(model)
    layers = list(range(model.cfg.n_layers))
    plan = [(s, layers) for s in SWEEPS if all(_hook_name(SWEEPS[s][0], l) in active for l in layers)]
    with torch.no_grad():
        corrupted_metric = metric(model(corrupted)).item()
    saturation = attention_max(model, corrupted)
    for sweep, layers in plan:
        with torch.no_grad():
            tl_s, _ = timed(tl_sweep, model, clean, corrupted, metric, sweep, layers)
        exact, _ = exact_sweeps(model, clean, corrupted, metric, [(sweep, layers)])
        exact_s, values = exact[sweep]
        attr_s, scores, changed = attribute(model, clean, corrupted, metric, sweep, layers)
        found = (scores, values - corrupted_metric, changed)
        say(attribution_line(name, sweep, exact_s, tl_s, attr_s, found, saturation))


# ----------------------------------------------------------------------------- memory at 128 positions


MEMORY_BUDGET_GB = {"exact": 0.3, "attribution": 1.0}  # the stated budgets of the two sweeps at 128 positions


def memory_child(mode: str, budget_gb: float) -> None:
    """In a fresh process: build the GPT-2-shaped model, reset the peak-RSS counter, run one sweep at
    sequence length 128 within ``budget_gb``, print one JSON line."""
    name = "gpt2-shaped" if has_hooked_transformer() else "gpt2-shaped-bridge"
    model = build(name)
    batch = 2 if mode == "exact" else 8
    clean, corrupted, metric = inputs(model.cfg.d_vocab, batch=batch, pos=128)
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # give freed memory back: RSS = what is live (glibc)
    with open("/proc/self/clear_refs", "w") as f:  # peak RSS from here on (Linux)
        f.write("5")
    before = _status_kb("VmRSS")
    start = time.perf_counter()
    if mode == "exact":  # all-position logits: the memory-hungry setting
        engine = PatchingEngine(model, clean, corrupted, metric, memory_budget_gb=budget_gb, progress=False)
        with torch.no_grad():
            engine.sweep("resid_pre", layers=[0, 11])
        chunks = f"{engine.n_passes}passes<={engine.max_pass_variants}x{batch}rows"
        what = "resid_pre layers=0,11 logits=all"
    else:
        engine = AttributionEngine(model, clean, corrupted, metric, memory_budget_gb=budget_gb)
        engine.sweeps(["resid_pre", "attn_head_out_by_pos", "attn_head_pattern_by_pos"])
        chunks, what = engine.chunks, "resid_pre+attn_head_out_by_pos+attn_head_pattern_by_pos"
    seconds = time.perf_counter() - start
    peak = _status_kb("VmHWM")
    print(json.dumps(dict(model=name, what=what, batch=batch, chunks=chunks, before=before, peak=peak, s=seconds)))


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def bench_memory() -> None:
    for mode, budget_gb in MEMORY_BUDGET_GB.items():
        cmd = [sys.executable, __file__, "--memory-child", mode, "--memory-budget-gb", str(budget_gb)]
        # large blocks always mmap'ed (glibc): memory freed during the sweep goes back, RSS follows what is live
        env = {**os.environ, "TQDM_DISABLE": "1", "MALLOC_MMAP_THRESHOLD_": "131072"}
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if done.returncode:
            say(f"gpt2-shaped-memory mode={mode} failed: {done.stderr.strip().splitlines()[-1]}")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        gb = 2**20  # kB per GiB
        say(
            f"{r['model']}-memory mode={mode} seq=128 batch={r['batch']} budget_gb={budget_gb} chunks={r['chunks']} "
            f"working_gb={(r['peak'] - r['before']) / gb:.2f} peak_rss_gb={r['peak'] / gb:.2f} "
            f"model_rss_gb={r['before'] / gb:.2f} seconds={r['s']:.1f} sweep={r['what'].replace(' ', ',')}"
        )


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", default=None, help="models, tasks or 'memory' to run (default: all)")
    parser.add_argument("--reps-toy", type=int, default=5)
    parser.add_argument("--reps-gpt2", type=int, default=1)
    parser.add_argument("--gpt2-head-layers", type=int, nargs="+", default=[3, 8])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: a shared 2-core machine)")
    parser.add_argument("--memory-budget-gb", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--no-without-skip", action="store_true", help="skip the run without the unchanged shortcut")
    parser.add_argument("--memory-child", choices=("exact", "attribution"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        return memory_child(args.memory_child, args.memory_budget_gb)
    wanted = lambda name: args.only is None or name in args.only  # noqa: E731
    say(f"TransformerLens {'.'.join(map(str, tl_version()))} torch {torch.__version__} threads={args.threads}")
    say(f"load_average_start={os.getloadavg()[0]:.1f}")
    for name in ("toy", "toy-bridge", "gpt2-shaped", "gpt2-shaped-bridge"):
        if not wanted(name):
            continue
        if name not in BRIDGES and not has_hooked_transformer():
            say(f"{name}: skipped (HookedTransformer needs TransformerLens 3.x)")
            continue
        gpt2 = name.startswith("gpt2")
        cfg = MODELS[BRIDGES.get(name, name)]
        plan = [("resid_pre", list(range(cfg["n_layers"]))), ("attn_head_out_by_pos", None)]
        plan[1] = ("attn_head_out_by_pos", args.gpt2_head_layers if gpt2 else list(range(cfg["n_layers"])))
        run = bench_exact(name, args.reps_gpt2 if gpt2 else args.reps_toy, plan, True, not args.no_without_skip)
        if gpt2:
            bench_attribution(name, run, plan, with_tl=True)
        if name in BRIDGES and not has_hooked_transformer():
            bench_vs_transformer_lens(name, run, args.reps_gpt2 if gpt2 else args.reps_toy)
        say(f"load_average={os.getloadavg()[0]:.1f}")
    if wanted("tiny-bridge") and not has_hooked_transformer():  # a small model with MLPs and LayerNorm
        model = random_bridge(tiny_config(), seed=0)
        bench_vs_transformer_lens("tiny-bridge", dict(model=model, inputs=inputs(model.cfg.d_vocab)), args.reps_toy)
    for name in GPT2_INIT:
        if wanted(name) and (name.endswith("bridge") or has_hooked_transformer()):
            bench_gpt2_init(name, [("resid_pre", None), ("attn_head_out_by_pos", args.gpt2_head_layers)])
    for name in TASKS:
        if wanted(name):
            bench_task(name)
    if wanted("memory"):
        bench_memory()
    say(f"load_average_end={os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
