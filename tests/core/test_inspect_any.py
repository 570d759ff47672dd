"""Every run and any model can be inspected.

- A run made from Python as the README tour makes it (``Run.create`` + ``train(..., run=run)``) records its task, so
  ``mechmem inspect`` opens it; a run that lacks its task is refused with what to add; a run made for another task
  is not trained on.
- ``mechmem.inspect_model`` writes the same page (memory map included) for the papers' trained toy models, a GPT-2-
  architecture ``HookedTransformer`` (TransformerLens 3.x) and a bridge around a HuggingFace GPT-2 module, from token
  ids, prompts (with a tokenizer) or a task's batch; bad input is refused before any folder exists.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import mechmem
from hooks.testing import KINDS, gpt2_hooked_model, hf_gpt2_bridge
from mechmem import RecallTask, Run, TrainConfig, build_model, train
from mechmem.pages.inspect_page import inspect_run
from mechmem.pages.inspection import InspectOptions

QUICK = dict(batch_size=16, n_examples=1, progress=False)


def _summary(page: Path) -> dict:
    return json.loads((page.parent / "inspect.json").read_text())


# ----------------------------------------------------------------------------- runs made from Python


def test_the_tour_run_records_its_task_and_opens_in_inspect(tmp_path):
    task = RecallTask()
    cfg = task.model_config()
    model = build_model(cfg)
    run = Run.create(tmp_path / "my-recall", {"model": cfg.to_dict()})
    train(model, task, TrainConfig(steps=20, lr=1e-2, eval_every=10, progress=False), run=run)
    recorded = Run(tmp_path / "my-recall").config
    assert recorded["task"] == {"name": "recall", **json.loads(json.dumps(task.to_dict()))}
    assert recorded["train"]["steps"] == 20 and recorded["model"] == json.loads(json.dumps(cfg.to_dict()))
    del run
    page = inspect_run(tmp_path / "my-recall", InspectOptions(**QUICK, patching=False))
    assert _summary(page)["overview"]["examples"] == 16


def test_the_readme_tour_runs_and_its_run_opens_in_mechmem_inspect(tmp_path, monkeypatch):
    """The README's tour, as written, then ``mechmem inspect`` on the run it made."""
    from mechmem.cli import main

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    tour = readme.split("## A tour of the library", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    exec(compile(tour, "README.md (tour)", "exec"), {})
    assert main(["inspect", "runs/my-recall", "--batch-size", "16", "--examples", "1", "--no-patching", "--quiet"]) == 0
    assert (tmp_path / "runs" / "my-recall" / "inspect" / "index.html").is_file()
    assert (tmp_path / "runs" / "my-page" / "index.html").is_file(), "the tour's inspect_model page"


def test_a_run_without_its_task_says_what_to_add(tmp_path):
    task = RecallTask()
    cfg = task.model_config()
    run = Run.create(tmp_path / "bare", {"model": cfg.to_dict()})
    run.save_model(build_model(cfg))
    del run
    with pytest.raises(ValueError, match=r"records no task.*train\(model, task, cfg, run=run\).*record_training"):
        inspect_run(tmp_path / "bare", InspectOptions(**QUICK))
    assert not (tmp_path / "bare" / "inspect").exists()
    Run(tmp_path / "bare").record_training(task, task.train_config())
    assert Run(tmp_path / "bare").config["task"]["name"] == "recall"
    assert Run(tmp_path / "bare").verify(), "the recorded config.json is checksummed like every run file"


def test_a_run_made_for_another_task_is_not_trained_on(tmp_path):
    cfg = RecallTask().model_config()
    run = Run.create(tmp_path / "r", {"model": cfg.to_dict(), "task": {"name": "recall", **RecallTask().to_dict()}})
    other = RecallTask(table_seed=5)
    with pytest.raises(ValueError, match="records task 'recall' with other fields"):
        train(build_model(cfg), other, TrainConfig(steps=2, progress=False), run=run)
    assert not (tmp_path / "r" / "metrics.jsonl").exists(), "nothing is written for a refused training"


# ----------------------------------------------------------------------------- inspect_model


def _toy_page(toy, out: Path, n: int = 16, heads=None, max_vocab=None) -> dict:
    batch = toy.task.sample(n, torch.Generator().manual_seed(3))
    corrupted = toy.task.corrupt(batch, torch.Generator().manual_seed(4))
    page = mechmem.inspect_model(
        toy.trained,
        batch,
        out,
        corrupt=corrupted,
        answer_positions=toy.task.answer_positions(batch),
        associations=toy.task.associations(),
        token_labels=toy.task.token_labels(),
        output_labels=toy.task.output_labels(),
        options=InspectOptions(n_examples=1, progress=False, heads=heads, max_vocab=max_vocab),
    )
    html = page.read_text()
    for title in ("Overview", "Attention", "Circuits", "Ablations", "Activation patching", "Memory map"):
        assert f">{title}</h2>" in html, f"section {title} missing"
    return _summary(page)


def test_inspect_model_on_the_recall_toy_finds_its_head(toy_recall, tmp_path):
    summary = _toy_page(toy_recall, tmp_path / "page", n=32)
    assert summary["memory_map"]["above_null"] == ["L0H0"]
    assert summary["patching"]["heads"]["restored"] == [[pytest.approx(1.0, abs=1e-4)]], "as on the run page"


@pytest.mark.parametrize("name, heads", [("toy_birth", None), ("toy_factual", [(0, 0), (0, 1)])])
def test_inspect_model_on_the_paper_toys(name, heads, request, tmp_path):
    toy = request.getfixturevalue(name)
    summary = _toy_page(toy, tmp_path / "page", heads=heads, max_vocab=16)
    listed = summary["memory_map"]["above_null"]
    assert ("L1H0" in listed) if name == "toy_birth" else (set(listed) == {"L0H0", "L0H1"}), listed


def _gpt2(kind: str):
    return hf_gpt2_bridge(seed=0) if kind == "hf_bridge" else gpt2_hooked_model(seed=0)


GPT2_KINDS = ["hf_bridge"] + (["hooked"] if "hooked" in KINDS else [])
FEW = dict(n_examples=1, progress=False, heads=[(0, 1), (1, 2)], max_vocab=12)


@pytest.mark.parametrize("kind", GPT2_KINDS)
def test_inspect_model_on_gpt2_architecture_with_token_ids(kind, tmp_path):
    """Random weights: the page is complete, answers default to the model's own predictions."""
    model = _gpt2(kind)
    tokens = torch.randint(100, (8, 10), generator=torch.Generator().manual_seed(0))
    corrupt = tokens.clone()
    corrupt[:, -1] = (tokens[:, -1] + 1) % 100  # the read-out token: the random model's prediction follows it
    metric = lambda logits: logits[:, -1].max(-1).values.mean()  # noqa: E731
    page = mechmem.inspect_model(
        model, tokens, tmp_path / "page", corrupt=corrupt, metric=metric, options=InspectOptions(**FEW)
    )
    summary = _summary(page)
    assert summary["overview"]["accuracy"] == 1.0, "the answers are the model's own predictions"
    assert "metric_clean" in summary["ablations"]["clean"], "the caller's metric is in the ablation table"
    assert [r["component"] for r in summary["memory_map"]["rows"]] == ["L0H1", "L1H2", "MLP0", "MLP1"]
    assert summary["memory_map"]["above_null"] == [], "random weights hold no association"
    assert "wrapping GPT2LMHeadModel" in page.read_text() or kind == "hooked"


def _word_tokenizer():
    """A HuggingFace tokenizer made offline: one token per word of a 100-word vocabulary."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(99)} | {"[UNK]": 99}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]")


def test_inspect_model_reads_prompts_with_a_tokenizer(tmp_path):
    tokenizer = _word_tokenizer()
    prompts = ["w1 w2 w3 w4 w5 w1", "w7 w8 w9 w10 w11 w7", "w3 w3 w4 w5 w6 w3"]
    page = mechmem.inspect_model(
        hf_gpt2_bridge(seed=0), prompts, tmp_path / "page", tokenizer=tokenizer, options=InspectOptions(**FEW)
    )
    summary = _summary(page)
    assert summary["attention"]["examples"][0]["tokens"][:2] == ["w1", "w2"], "token labels come from the tokenizer"
    with pytest.raises(ValueError, match=r"different lengths \[2, 3\]"):
        mechmem.inspect_model(hf_gpt2_bridge(seed=0), ["w1 w2", "w1 w2 w3"], tmp_path / "x", tokenizer=tokenizer)
    with pytest.raises(ValueError, match="prompts need a tokenizer"):
        mechmem.inspect_model(hf_gpt2_bridge(seed=0), prompts, tmp_path / "x")
    assert not (tmp_path / "x").exists()


@pytest.mark.own_validation
@pytest.mark.parametrize(
    "change, error, message",
    [
        (dict(model=torch.nn.Linear(2, 2)), TypeError, "model must be a TransformerLens"),
        (dict(examples=torch.zeros(2, 40, dtype=torch.long)), ValueError, "more than the model's n_ctx"),
        (dict(examples=torch.full((2, 4), 100)), ValueError, "outside the vocabulary"),
        (dict(corrupt=torch.zeros(3, 4, dtype=torch.long)), ValueError, "corrupt has shape"),
        (dict(readout=torch.zeros(2, 4, dtype=torch.bool)), ValueError, "readout marks no position"),
        (dict(metric="accuracy"), TypeError, "metric must be a callable"),
        (dict(options=InspectOptions(heads=[(5, 0)])), ValueError, "does not exist"),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(change, error, message, tmp_path):
    args = dict(model=hf_gpt2_bridge(seed=0), examples=torch.randint(100, (2, 4), generator=torch.Generator()))
    args |= change
    with pytest.raises(error, match=message):
        mechmem.inspect_model(args.pop("model"), args.pop("examples"), tmp_path / "page", **args)
    assert not (tmp_path / "page").exists()
