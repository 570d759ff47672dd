"""The ``mechmem inspect`` page: :func:`inspect_run` (the Python entry point) checks and loads the run
(:func:`mechmem.pages.inspection.prepare`), then every section is computed into a fresh folder (PNG and JSON files
next to ``index.html``; ``inspect.json`` holds every number on the page).
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hooks.ablation import KINDS, ablation_sweep
from hooks.circuits import (
    ov_spectrum,
    ov_through_embeddings,
    plot_ov_circuits,
    plot_ov_spectra,
    plot_positional_qk,
    plot_qk_circuits,
    positional_embedding,
)
from hooks.patching import patch_sweep
from hooks.state import preserved_state
from hooks.views import attention_heads_view, attention_patterns, plot_readout_attention, readout_view
from hooks.weights import is_bridge
from mechmem.pages.figures import grid, heatmap, save_figure, style
from mechmem.pages.inspection import (
    KIND,
    MARKER,
    Examples,
    InspectOptions,
    changed_answers,
    check_run,
    crop,
    logit_difference,
    output_dir,
    prepare,
    select,
    task_accuracy,
    task_loss,
)
from mechmem.pages.page import Page, Section
from mechmem.storage.files import atomic_write_json, to_jsonable
from mechmem.tasks.base import Batch, Task


@dataclass
class Inspection:
    """Everything a section needs, and where it writes."""

    folder: Path
    run: Any  # the run inspected; None for a model given to inspect_model
    config: dict
    task: Task
    model: nn.Module
    heads: list[tuple[int, int]]
    examples: Examples
    options: InspectOptions
    command: str
    started: float
    parent: Section | None = None  # put the sections under this one (e.g. a report's paper section)
    page: Page | None = None
    links: str = ""  # where ``folder`` is, seen from the page (e.g. "lca/" when a report's page is one folder up)
    summary: dict = field(default_factory=dict)
    metric: Any = None  # a caller's metric(logits) -> float, next to loss and accuracy (inspect_model)
    title: str | None = None  # default: the run's folder name

    def __post_init__(self) -> None:
        if self.parent is not None:
            self.page = self.parent.page
        elif self.page is None:
            self.page = Page(
                f"mechmem inspect: {self.title or self.run.path.name}",
                subtitle=f"task `{self.task.name}`, {model_kind(self.model)}, made by `{self.command}`",
            )
        self.token_names = self.task.token_labels()
        self.output_names = self.task.output_labels()

    @property
    def layers(self) -> list[int]:
        return sorted({layer for layer, _ in self.heads})

    def head_names(self, heads=None) -> list[str]:
        return [f"L{layer}H{head}" for layer, head in (heads or self.heads)]

    def labels(self, tokens) -> list[str]:
        return [self.token_names[int(t)] for t in tokens]

    def section(self, title: str, intro: str = "") -> Section:
        """A top-level section of the page, or a subsection of ``parent``."""
        if self.parent is not None:
            return self.parent.subsection(title, intro)
        return self.page.section(title, intro)

    def figure(self, section: Section, name: str, fig, caption: str, data: Any = None) -> None:
        """Save ``fig`` as ``name.png`` (and ``data`` as ``name.json``) and embed it in ``section``."""
        path = save_figure(fig, self.folder / f"{name}.png", data=to_jsonable(data) if data is not None else None)
        section.figure(path, caption, link=f"{self.links}{name}.json" if data is not None else None)

    def forward(self, tokens) -> torch.Tensor:
        with preserved_state(self.model), torch.no_grad():
            self.model.eval()
            return self.model(tokens)


# ----------------------------------------------------------------------------- overview


def model_kind(model: nn.Module) -> str:
    """``HookedTransformer``, ``TransformerBridge (boot_native)`` or ``TransformerBridge wrapping <class>``."""
    if not is_bridge(model):
        return type(model).__name__
    from hooks.bridge import is_native_bridge

    return (
        "TransformerBridge (boot_native)"
        if is_native_bridge(model)
        else (f"TransformerBridge wrapping {type(model.original_model).__name__}")
    )


def overview(ins: Inspection) -> dict:
    task, model, cfg = ins.task, ins.model, ins.model.cfg
    full = ins.examples.full
    logits = ins.forward(full.tokens)
    numbers = {
        "loss": float(task_loss(logits, full)),
        "accuracy": float(task_accuracy(logits, full)),
        "examples": int(full.tokens.shape[0]),
    }
    sec = ins.section("Overview")
    doc = (type(task).__doc__ or "").strip().split("\n")[0]
    sec.text(f"Task `{task.name}`: {doc}")
    sec.key_values(
        {
            "model": model_kind(model),
            "layers x heads": f"{cfg.n_layers} x {cfg.n_heads}",
            "d_model / d_head": f"{cfg.d_model} / {cfg.d_head}",
            "input / output vocabulary": f"{cfg.d_vocab} / {cfg.d_vocab_out}",
            "context (n_ctx)": cfg.n_ctx,
            "MLP": "none (attention only)" if cfg.attn_only else f"d_mlp = {cfg.d_mlp}",
            "normalisation": getattr(cfg, "normalization_type", None) or "none",
            "positional embedding": "yes" if positional_embedding(model) is not None else "none (W_pos zero)",
            "parameters": sum(p.numel() for p in model.parameters()),
            f"loss on {numbers['examples']} fresh examples (nats)": numbers["loss"],
            "accuracy on the same examples": numbers["accuracy"],
        },
        caption="Loss and accuracy at the positions the task scores, on examples drawn with the inspect seed.",
    )
    history = ins.run.metrics() if ins.run is not None else []
    if history:
        ins.figure(
            sec,
            "training",
            _training_figure(history, ins.run.path.name),
            "Training of this run: loss and accuracy on the held-out evaluation batch, and the "
            "training batch's loss, at each evaluation step (`metrics.jsonl`).",
        )
    if is_bridge(model) and ins.run is not None:
        numbers["bridge_vs_task_model"] = _bridge_check(ins, sec)
    return numbers


def _training_figure(history: list[dict], name: str):
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in history]
    with style():
        fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.2))
        ax_loss.plot(steps, [r["loss"] for r in history], marker=".", label="evaluation batch")
        train = [(r["step"], r["train_loss"]) for r in history if "train_loss" in r]
        if train:
            ax_loss.plot(*zip(*train), ls="--", marker=".", label="training batch")
        losses = [r["loss"] for r in history] + [loss for _, loss in train]
        wide = min(losses) > 0 and max(losses) / min(losses) > 10  # log scale only across decades
        ax_loss.set(
            xlabel="training step", ylabel="loss (nats)", yscale="log" if wide else "linear", title=f"{name}: loss"
        )
        ax_loss.legend()
        ax_acc.plot(steps, [r["accuracy"] for r in history], marker=".")
        ax_acc.set(
            xlabel="training step",
            ylabel="accuracy (fraction correct)",
            ylim=(0, 1.02),
            title=f"{name}: evaluation accuracy",
        )
    return fig


def _bridge_check(ins: Inspection, sec: Section) -> float:
    """Max |logit difference| between the bridge and the task's own model on the examples."""
    from mechmem.storage.runs import load_run

    reference, _ = load_run(ins.run.path, bridge=False, allow_no_manifest=ins.options.allow_no_manifest)
    tokens = ins.examples.batch.tokens
    with torch.no_grad():
        diff = float((ins.forward(tokens).cpu() - reference.eval()(tokens.cpu())).abs().max())
    if diff > 1e-4:
        sec.note(
            f"This bridge does not compute what the task's model computes (max |logit difference| {diff:.3g}): "
            "the task's build_model adds what a config cannot say (e.g. a permanent hook removing the residual), "
            "and `build_bridge` does not."
        )
    else:
        sec.text(f"The bridge computes the task model's logits (max |difference| {diff:.2g}).")
    return diff


# ----------------------------------------------------------------------------- attention


def attention(ins: Inspection) -> dict:
    ex, task = ins.examples, ins.task
    n = ins.options.n_examples
    tokens = ex.batch.tokens[:n]
    patterns = attention_patterns(ins.model, tokens)  # [layer, example, head, q, k]
    logits = ins.forward(tokens).float().cpu()
    sec = ins.section(
        "Attention",
        (
            "Every head's attention pattern on a few examples. The read-out position is where the task reads the "
            "answer; the strip and the heat map show what it attends to, the full patterns follow (rows: query "
            "position, columns: key position; the last row is the read-out)."
        ),
    )
    out = []
    for i, r in enumerate(ex.readouts):
        pattern = torch.stack([patterns[layer, i, head] for layer, head in ins.heads])[:, : r + 1, : r + 1]
        labels = ins.labels(tokens[i, : r + 1])
        probs = logits[i, r].softmax(-1)
        answer, guess = int(ex.batch.targets[i, r]), int(probs.argmax())
        sub = sec.subsection(f"Example {i + 1}")
        shown = f" (first {r + 1} of {task.seq_len} positions)" if r + 1 < task.seq_len else ""
        strip = [_escape(t) for t in labels]
        strip[r] = f"<b title='read-out position'>[{strip[r]}]</b>"
        sub.html(f'<p class="tokens">{" ".join(strip)}</p>')
        sub.text(
            f"Read-out at position {r} (token `{labels[r]}`){shown}: the answer is `{ins.output_names[answer]}`, "
            f"the model predicts `{ins.output_names[guess]}` with probability {float(probs[guess]):.3f}."
        )
        sub.view(
            readout_view(pattern, labels, r, ins.head_names()),
            "Attention from the read-out position: choose a head; hover a token to see every head's weight.",
        )
        ins.figure(
            sub,
            f"attention_example{i + 1}",
            plot_readout_attention(
                pattern, labels, r, ins.head_names(), title=f"Example {i + 1}: attention from the read-out position {r}"
            ),
            "Each row is a head, each column a key token (position in brackets); colour: attention weight from "
            "the read-out query.",
            data={"tokens": labels, "heads": ins.head_names(), "weights": pattern[:, r]},
        )
        sub.view(
            attention_heads_view(pattern, labels, ins.head_names(), readout=r),
            "Full patterns (hover a thumbnail to zoom). Colours are scaled to the largest weight of the read-out "
            "row (the last row); larger weights, common in the first rows, show at full colour.",
            max_width=640,
        )
        out.append(
            {"tokens": labels, "readout": r, "answer": answer, "prediction": guess, "probability": float(probs[guess])}
        )
    return {"examples": out}


def _escape(text: str) -> str:
    from mechmem.pages.page import escape

    return escape(text)


# ----------------------------------------------------------------------------- circuits


def _most_frequent(values: torch.Tensor, size: int, limit: int | None) -> list[int] | None:
    """All ids (None) when they fit, else the ``limit`` most frequent in ``values`` (then lowest ids), sorted."""
    if limit is None or size <= limit:
        return None
    counts = torch.bincount(values.flatten().cpu(), minlength=size).float()
    counts += torch.linspace(1e-3, 0, size)  # ties: lower id first
    return sorted(counts.topk(limit).indices.tolist())


def circuits(ins: Inspection) -> dict:
    model, full = ins.model, ins.examples.full
    tokens = _most_frequent(full.tokens, model.cfg.d_vocab, ins.options.max_vocab)
    outputs = _most_frequent(full.targets[full.mask], model.cfg.d_vocab_out, ins.options.max_vocab)
    token_labels = [ins.token_names[t] for t in (tokens or range(model.cfg.d_vocab))]
    output_labels = [ins.output_names[o] for o in (outputs or range(model.cfg.d_vocab_out))]
    sec = ins.section(
        "Circuits",
        (
            "Each head's OV and QK circuit read through the embeddings: the associative-memory picture. Direct path "
            "only (no LayerNorm, biases or other layers); exact for one-layer models without normalisation."
        ),
    )
    if tokens is not None or outputs is not None:
        sec.note(
            f"Restricted by --max-vocab {ins.options.max_vocab}: the tokens and answers most frequent in the "
            "examples are shown."
        )
    numbers: dict = {"tokens": token_labels, "outputs": output_labels, "ov": {}, "spectra": {}}
    for layer in ins.layers:
        heads = [(l_, h) for l_, h in ins.heads if l_ == layer]
        sub = sec.subsection(f"Layer {layer}")
        ov = {
            name: ov_through_embeddings(model, l_, h, tokens, outputs)
            for name, (l_, h) in zip(ins.head_names(heads), heads)
        }
        numbers["ov"].update(ov)
        figure = plot_ov_circuits(model, heads, tokens, token_labels, outputs, output_labels)
        ins.figure(
            sub,
            f"ov_layer{layer}",
            figure,
            "OV through the embeddings (`W_E W_V W_O W_U`): row = the token the head attends to, column = an "
            "output; colour = the logit the head adds per unit of attention. A key -> value memory is one "
            "bright cell per row.",
            data={"rows": token_labels, "columns": output_labels, "heads": ov},
        )
        ins.figure(
            sub,
            f"qk_layer{layer}",
            plot_qk_circuits(model, heads, tokens, token_labels),
            "QK through the embeddings (`W_E W_Q W_K^T W_E^T / sqrt(d_head)`): row = query token, column = key "
            "token; colour = pre-softmax attention score (higher: attended more).",
        )
        if positional_embedding(model) is not None:
            n = min(model.cfg.n_ctx, ins.examples.length)
            ins.figure(
                sub,
                f"qk_positions_layer{layer}",
                plot_positional_qk(model, heads, n),
                f"QK through the positions (`W_pos W_Q W_K^T W_pos^T / sqrt(d_head)`), first {n} positions: "
                "row = query position, column = key position; blank above the diagonal (causal mask).",
            )
    spectra = {name: ov_spectrum(model, l_, h) for name, (l_, h) in zip(ins.head_names(), ins.heads)}
    numbers["spectra"] = spectra
    ins.figure(
        sec,
        "ov_spectra",
        plot_ov_spectra(model, ins.heads),
        "Singular values of each head's `W_V W_O` (log scale): the number of large values is the number of "
        "directions the head copies; a flat spectrum stores many associations.",
        data=spectra,
    )
    return numbers


# ----------------------------------------------------------------------------- ablations

_COMPONENT = {"heads": "head", "attn_out": "attention output", "mlp_out": "MLP output"}


def ablations(ins: Inspection) -> dict:
    full, task, seed = ins.examples.batch, ins.task, ins.options.seed  # cut to the shown length (causal: exact)
    reference = task.sample(full.tokens.shape[0], torch.Generator().manual_seed(seed + 2)).to(full.tokens.device)
    reference = crop(reference, ins.examples.length)
    selected = set(ins.head_names())
    metrics = {"loss": lambda logits: task_loss(logits, full), "accuracy": lambda logits: task_accuracy(logits, full)}
    if ins.metric is not None:
        metrics["metric"] = ins.metric
    rows: dict[str, dict] = {}
    clean: dict[str, float] = {}
    for kind in KINDS:
        measured: list[dict[str, float]] = []  # every metric from the one forward pass of each ablation

        def measure(logits, measured=measured):
            measured.append({name: float(metric(logits)) for name, metric in metrics.items()})
            return measured[-1]["loss"]

        frame = ablation_sweep(
            ins.model,
            full.tokens,
            measure,
            components=("heads", "attn_out", "mlp_out"),
            kind=kind,
            reference=reference.tokens,
            layers=ins.layers,
            seed=seed,
            progress=False,
        )
        clean |= {f"{name}_clean": value for name, value in measured[0].items()}  # the unablated baseline row
        for rec, values in zip(frame.iloc[1:].to_dict("records"), measured[1:]):
            name = _component_name(rec)
            if rec["component"] != "heads" or name in selected:
                rows.setdefault(name, {"component": name}).update({f"{m}_{kind}": v for m, v in values.items()})
    table = [{**row, **clean} for row in rows.values()]
    sec = ins.section(
        "Ablations",
        (
            "Each head (its output `hook_z`) and each layer's attention and MLP output is replaced in turn, on "
            f"{full.tokens.shape[0]} examples of {ins.examples.length} positions: zero = set to 0; "
            "mean = its mean over a reference batch, per position; "
            "resample = the activation of a random reference example. Loss in nats at the scored positions."
        ),
    )
    columns = {"component": "component", "loss_clean": "loss, clean"}
    columns.update({f"loss_{k}": f"loss, {k}" for k in KINDS})
    columns["accuracy_clean"] = "accuracy, clean"
    columns.update({f"accuracy_{k}": f"accuracy, {k}" for k in KINDS})
    if ins.metric is not None:
        columns["metric_clean"] = "your metric, clean"
        columns.update({f"metric_{k}": f"your metric, {k}" for k in KINDS})
    sec.table(table, columns, caption="Loss and accuracy with one component ablated (clean: nothing ablated).")
    ins.figure(
        sec,
        "ablations",
        _ablation_figure(table, clean["loss_clean"]),
        "Loss increase over the clean loss when each component is ablated, for each kind of ablation.",
        data={"clean": clean, "rows": table},
    )
    return {"clean": clean, "rows": table}


def _component_name(rec: dict) -> str:
    """``L0H1`` for a head, ``attention output, layer 0`` for a layer output."""
    if rec["component"] == "heads":
        return f"L{int(rec['layer'])}H{int(rec['head'])}"
    return f"{_COMPONENT[rec['component']]}, layer {int(rec['layer'])}"


def _ablation_figure(table: list[dict], clean_loss: float):
    import matplotlib.pyplot as plt
    import numpy as np

    names = [row["component"] for row in table]
    x = np.arange(len(names))
    width = 0.8 / len(KINDS)
    with style():
        fig, ax = plt.subplots(figsize=(max(5.0, 1.0 + 0.5 * len(names)), 3.6))
        for i, kind in enumerate(KINDS):
            ax.bar(
                x + (i - 1) * width,
                [row[f"loss_{kind}"] - clean_loss for row in table],
                width,
                label=f"{kind} ablation",
            )
        ax.axhline(0, color="black", lw=0.8)
        many = len(names) > 6
        ax.set_xticks(
            x,
            [n if many else n.replace(", ", "\n") for n in names],
            rotation=45 if many else 0,
            ha="right" if many else "center",
        )
        ax.set(
            xlabel="ablated component",
            ylabel="loss increase (nats)",
            title="Loss increase when one component is ablated",
        )
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, never over them
    return fig


# ----------------------------------------------------------------------------- patching


def patching(ins: Inspection) -> dict:
    ex = ins.examples
    n = min(64, ex.batch.tokens.shape[0])
    clean, corrupted = select(ex.batch, torch.arange(n)), select(ex.corrupted, torch.arange(n))
    where = changed_answers(clean, corrupted)
    sec = ins.section(
        "Activation patching",
        (
            f"Clean examples against corrupted ones; the corruption ({ins.task.corruption}) changes the answer. "
            "A clean activation is patched into the corrupted run, one at a time; "
            "metric: logit(clean answer) - logit(corrupted answer) at the scored positions whose answer changed, "
            "shown as the fraction of the clean-minus-corrupted difference restored "
            "(1: the patch alone restores the clean behaviour, 0: no effect)."
        ),
    )
    numbers = {"heads": _patch_heads(ins, sec, clean, corrupted, where)}
    shown = [
        (i, r)
        for i, r in enumerate(ex.readouts)
        if bool(changed_answers(select(ex.batch, torch.tensor([i])), select(ex.corrupted, torch.tensor([i])))[0, r])
    ]
    numbers["resid_pre"] = _patch_examples(ins, sec, shown) if shown else []
    return numbers


def _restored(values: torch.Tensor, clean: float, corrupted: float) -> torch.Tensor:
    gap = clean - corrupted
    return (values - corrupted) / gap if abs(gap) > 1e-6 else torch.full_like(values, float("nan"))


def _patch_heads(ins: Inspection, sec: Section, clean: Batch, corrupted: Batch, where) -> dict:
    metric = logit_difference(clean, corrupted, where)
    m_clean, m_corr = float(metric(ins.forward(clean.tokens))), float(metric(ins.forward(corrupted.tokens)))
    values = patch_sweep(
        ins.model, clean.tokens, corrupted.tokens, metric, "attn_head_out_all_pos", layers=ins.layers, progress=False
    )
    restored = _restored(values, m_clean, m_corr)
    shown = torch.full_like(restored, float("nan"))
    for layer, head in ins.heads:
        shown[ins.layers.index(layer), head] = restored[ins.layers.index(layer), head]
    with style():
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(max(4.0, 1.8 + 0.55 * shown.shape[1]), 1.6 + 0.45 * shown.shape[0]))
        heatmap(
            ax,
            shown,
            title="Patching each head's output (all positions)",
            xlabel="head",
            ylabel="layer",
            colorbar_label="fraction restored",
            xticklabels=list(range(shown.shape[1])),
            yticklabels=[str(layer) for layer in ins.layers],
            vmin=-1.0 if shown.nan_to_num().min() > -1 else None,
            vmax=1.0 if shown.nan_to_num().max() < 1 else None,
        )
    numbers = {
        "clean": m_clean,
        "corrupted": m_corr,
        "examples": int(clean.tokens.shape[0]),
        "layers": ins.layers,
        "restored": shown,
    }
    ins.figure(
        sec,
        "patching_heads",
        fig,
        f"Each head's output `hook_z` patched from the clean into the corrupted run on {clean.tokens.shape[0]} "
        f"examples (logit difference: clean {m_clean:.3g}, corrupted {m_corr:.3g}).",
        data=numbers,
    )
    return numbers


def _patch_resid_pre(ins: Inspection, i: int, r: int) -> dict:
    """``resid_pre`` patched at every layer and position of example ``i`` (cut at its read-out ``r``),
    metric at the read-out."""
    ex = ins.examples
    clean, corrupted = (select(b, torch.tensor([i])) for b in (ex.batch, ex.corrupted))
    clean, corrupted = (crop(b, r + 1) for b in (clean, corrupted))
    where = torch.zeros_like(clean.mask)
    where[0, r] = True
    metric = logit_difference(clean, corrupted, where)
    m_clean, m_corr = float(metric(ins.forward(clean.tokens))), float(metric(ins.forward(corrupted.tokens)))
    values = patch_sweep(ins.model, clean.tokens, corrupted.tokens, metric, "resid_pre", progress=False)
    labels = [f"{a}*" if a != b else a for a, b in zip(ins.labels(clean.tokens[0]), ins.labels(corrupted.tokens[0]))]
    return {
        "example": i + 1,
        "readout": r,
        "tokens": labels,
        "clean": m_clean,
        "corrupted": m_corr,
        "restored": _restored(values, m_clean, m_corr),
    }


def _patch_examples(ins: Inspection, sec: Section, shown: list[tuple[int, int]]) -> list[dict]:
    results = [_patch_resid_pre(ins, i, r) for i, r in shown]
    longest = max(res["readout"] for res in results) + 1
    n_layers = ins.model.cfg.n_layers
    fig, axes = grid(len(results), ncols=1, panel=(min(11.0, 3.5 + 0.28 * longest), 1.9 + 0.35 * n_layers))
    for ax, res in zip(axes, results):
        heatmap(
            ax,
            res["restored"],
            title=f"Example {res['example']} (logit difference: clean {res['clean']:.3g}, "
            f"corrupted {res['corrupted']:.3g})",
            xlabel="clean token at each position (* : the corrupted token differs)",
            ylabel="layer",
            colorbar_label="fraction restored",
            xticklabels=res["tokens"],
            yticklabels=[str(layer) for layer in range(n_layers)],
        )
    ins.figure(
        sec,
        "patching_resid_pre",
        fig,
        "The clean residual stream entering a layer (`resid_pre`) at one position, patched into the corrupted "
        "run; metric at the read-out position (the last position shown). Colour: fraction of the logit "
        "difference restored.",
        data=results,
    )
    return results


# ----------------------------------------------------------------------------- memory map

#: the memory map reads at most this many examples (its null draws scale with read-out rows x positions)
MEMORY_MAP_EXAMPLES = 32


def memory_map_section(ins: Inspection) -> dict:
    """Which heads gather the answer and which OV circuits / MLPs store the task's associations
    (:mod:`hooks.gather_store`), with enough null draws for the Bonferroni bound of the map's readings."""
    from hooks.gather_store import above_null, memory_map, plot_memory_map

    batch = select(ins.examples.full, torch.arange(min(MEMORY_MAP_EXAMPLES, ins.examples.full.tokens.shape[0])))
    answer, table = ins.task.answer_positions(batch), ins.task.associations()
    sec = ins.section(
        "Memory map",
        (
            "Gather vs store, per head and MLP layer (`hooks.gather_store`). Gather: attention from the read-out "
            "positions onto the positions that carry the answer, against uniform attention. Store: how many keys of "
            "the association table the component's map (a head's OV circuit `x W_V W_O W_U` on the key's embedding, "
            "an MLP's `MLP(ln2(x)) W_U`) sends to their value, against the same reading with the values permuted. "
            "Causal: the change of the metric when the component is mean-ablated, or a head's OV circuit set to the "
            "identity or zero."
        ),
    )
    if answer is None or table is None:
        missing = (
            "where its answers' information sits (Task.answer_positions)"
            if answer is None
            else ("its key -> value table (Task.associations)")
        )
        sec.note(f"No memory map: the task does not say {missing}.")
        return {"skipped": missing}
    if table.candidates is None and len(torch.unique(table.values)) < 2:
        sec.note("No memory map: the association table has fewer than two distinct values.")
        return {"skipped": "table"}
    readings = 2 * len(ins.heads) + (0 if ins.model.cfg.attn_only else ins.model.cfg.n_layers)
    n_null = max(1000, int(1.5 * readings / 0.01))
    metric = ins.metric if ins.metric is not None else (lambda logits: -task_loss(logits, batch))
    try:
        df = memory_map(
            ins.model, batch.tokens, batch.mask, answer, table, metric=metric, heads=ins.heads, n_null=n_null,
            seed=ins.options.seed,
        )  # fmt: skip
    except ValueError as err:  # e.g. no answer position in view of a read-out position in these examples
        sec.note(f"No memory map on these examples: {err}")
        return {"skipped": str(err)}
    listed = above_null(df)
    ins.figure(
        sec,
        "memory_map",
        plot_memory_map(df),
        "Heads placed by gather score (0: uniform attention, 1: all attention on answer positions) and store score "
        "(0: the permuted-table null, 1: every key recalled); MLP layers by store score. Colour: change of the "
        f"metric when the component is mean-ablated. Above their null (Bonferroni over the map): "
        f"{', '.join(listed) or 'none'}.",
        data={"rows": df.to_dict("records"), "attrs": df.attrs, "above_null": listed},
    )
    columns = {
        "component": "component",
        "gather": "gather",
        "gather_null": "gather, uniform",
        "gather_p": "gather p",
        "store_recall": "store recall",
        "store_recall_null": "store recall, null",
        "store_p": "store p",
        "causal_ablate": "metric change, ablated",
    }
    columns |= {c: f"metric change, OV {c.rsplit('_', 1)[1]}" for c in df.columns if c.startswith("causal_ov_")}
    sec.table(
        df.to_dict("records"),
        columns,
        caption=f"{len(table.values)} associations, {df.attrs['n_readout']} read-out positions, {n_null} null draws.",
    )
    return {"rows": df.to_dict("records"), "attrs": dict(df.attrs), "above_null": listed}


# ----------------------------------------------------------------------------- provenance


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def provenance(ins: Inspection, timings: dict[str, float]) -> dict:
    cfg = ins.config
    info = {
        "command": ins.command,
        "made": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
    }
    if ins.run is not None:
        model_file = ins.run.path / "model.safetensors"
        info |= {
            "run folder": str(ins.run.path),
            "model file (sha256)": f"model.safetensors ({hashlib.sha256(model_file.read_bytes()).hexdigest()[:16]}...)",
            "training seed / model seed": f"{cfg.get('train', {}).get('seed')} / {cfg.get('model', {}).get('seed')}",
        }
    else:
        info |= {"model": model_kind(ins.model), "examples": f"{tuple(ins.examples.full.tokens.shape)} token ids"}
    info |= {
        "inspect seed": ins.options.seed,
        "device": str(next(ins.model.parameters()).device),
        "mechmem": _version("mechmem"),
        "torch": torch.__version__,
        "transformer_lens": _version("transformer-lens"),
        "circuitsvis": _version("circuitsvis"),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    sec = ins.section("Provenance")
    sec.key_values(info)
    sec.table(
        [{"part": k, "seconds": v} for k, v in timings.items()],
        ["part", "seconds"],
        caption="Time each part of this page took.",
        formats={"seconds": "{:.2f}"},
    )
    if ins.run is not None:
        sec.code(json.dumps(cfg, indent=2), summary="The run's config (config.json)")
    return {
        **info,
        "timings": timings,
        "config": cfg,
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(ins.options).items()},
    }


# ----------------------------------------------------------------------------- the page


def build_sections(ins: Inspection) -> dict:
    """Compute every section of ``ins`` (figures into ``ins.folder``, sections onto ``ins.page`` or under
    ``ins.parent``); returns every number shown (what ``inspect.json`` holds)."""
    from tqdm.auto import tqdm

    stages = [("overview", overview), ("attention", attention), ("circuits", circuits), ("ablations", ablations)]
    if ins.options.patching:
        stages.append(("patching", patching))
    stages.append(("memory_map", memory_map_section))
    timings: dict[str, float] = {}
    with tqdm(stages, desc="inspect", disable=not ins.options.progress, file=sys.stderr) as bar:
        for name, make in bar:
            bar.set_postfix_str(name)
            start = time.perf_counter()
            ins.summary[name] = make(ins)
            timings[name] = time.perf_counter() - start
    ins.summary["provenance"] = provenance(ins, timings)
    return ins.summary


def build_page(folder: Path, **inputs) -> Path:
    """The whole inspect page: every section computed into ``folder``, then ``index.html`` and
    ``inspect.json`` written there (``inputs``: what :func:`mechmem.pages.inspection.prepare` returns)."""
    ins = Inspection(folder, **inputs)
    build_sections(ins)
    ins.page.write(folder / "index.html")
    atomic_write_json(folder / MARKER, ins.summary)
    return folder / "index.html"


def inspect_run(run_dir: str | Path, options: InspectOptions | None = None, command: str | None = None) -> Path:
    """Write the inspect page of the run at ``run_dir``; returns the path of ``index.html``.

    The run is locked while its model is read and its page written (one writer per run folder: a run
    still training is refused); the page's folder is written whole
    (:func:`mechmem.storage.folders.write_folder_atomically`: never a folder mechmem did not make, another kind of
    mechmem output only with ``options.overwrite``).
    ``command`` is recorded as the command that made the page (default: this function call).
    """
    from mechmem.storage.folders import LOCK_FILE, write_folder_atomically
    from mechmem.storage.locking import acquire, release

    run_dir = Path(run_dir)
    out = output_dir(run_dir, options.out if isinstance(options, InspectOptions) else None)
    check_run(run_dir, options if isinstance(options, InspectOptions) else None)
    key = acquire(run_dir / LOCK_FILE, f"run {run_dir}")
    try:
        inputs = prepare(run_dir, options, command)
        write_folder_atomically(out, KIND, lambda tmp: build_page(tmp, **inputs), inputs["options"].overwrite)
    finally:
        release(key)
    return out / "index.html"
