"""Regenerate the saved-run fixtures of tests/core/test_tl_lines.py (run with TransformerLens 3.9, from
the repository root: ``.venv/bin/python tests/data/make_tl39_runs.py``).

Each fixture is a small trained run (``config.json``, ``model.safetensors``) and ``expected.safetensors``:
fixed input tokens and the logits a ``HookedTransformer`` (TransformerLens 3.9) gives on them.
The test loads the run with ``load_run`` on whichever line is installed and compares the logits.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from hooks.compat import tl_version
from mechmem.cli import main
from mechmem.storage.runs import load_run

HERE = Path(__file__).parent
RUNS = {
    "run_tl39_factual": [
        "factual",
        "task.S=4",
        "task.R=4",
        "task.D=4",
        "task.seq_len=8",
        "model.d_model=16",
        "model.n_heads=2",
        "model.d_head=4",
        "model.d_mlp=16",
    ],
    "run_tl39_recall": [
        "recall",
        "model.normalization=LN",
        "model.attn_only=false",
        "model.use_bias=true",
        "model.n_layers=2",
        "model.n_heads=2",
    ],
}
TRAIN = ["train.steps=30", "train.batch_size=64", "train.eval_every=30", "train.eval_batch_size=64"]


def fixture_tokens(n_ctx: int, d_vocab: int) -> torch.Tensor:
    """Two fixed input sequences of length ``n_ctx``."""
    return (torch.arange(2 * n_ctx).reshape(2, n_ctx) * 7 + 3) % d_vocab


def make(name: str, args: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sets = [a for item in args[1:] + TRAIN for a in ("--set", item)]
        assert main(["train", args[0], *sets, "--name", name, "--out", tmp, "--quiet", "--overwrite"]) == 0
        out = HERE / name
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        for f in ("config.json", "model.safetensors"):
            shutil.copy(Path(tmp) / name / f, out / f)
    model, config = load_run(out)
    tokens = fixture_tokens(model.cfg.n_ctx, model.cfg.d_vocab)
    with torch.no_grad():
        logits = model(tokens)
    save_file(
        {"tokens": tokens, "logits": logits.contiguous()},
        str(out / "expected.safetensors"),
        metadata={"model": type(model).__name__, "transformer_lens": ".".join(map(str, tl_version()))},
    )
    print(f"{out}: {type(model).__name__}, logits {tuple(logits.shape)}")


if __name__ == "__main__":
    if tl_version()[0] != 3:
        sys.exit("run this with TransformerLens 3.9 (the fixtures record HookedTransformer's logits)")
    torch.set_num_threads(1)
    for name, args in RUNS.items():
        make(name, args)
