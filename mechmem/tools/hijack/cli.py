"""``mechmem hijack``: context hijacking of a language model on CounterFact-format records.

    mechmem hijack --model gpt2 --records counterfact.jsonl --limit 500 --max-k 10 --out runs/hijack-gpt2
    mechmem hijack --run runs/my-lm --records mechmem/tools/hijack/data/counterfact_tiny.jsonl

``--model NAME`` loads a Hugging Face causal language model (a hub name or a local folder) from
local files only: ``from_pretrained(..., local_files_only=True)``, safetensors where offered, and
wraps it with ``TransformerBridge.boot_transformers`` (the same on TransformerLens 3.9 and 4.x; no
``HookedTransformer.from_pretrained``, which unpickles some checkpoints). Nothing is downloaded: a
model that is not on disk is refused with the command that fetches it. ``--run DIR`` loads a saved
mechmem run (``mechmem.storage.runs.load_run``) and its word tokenizer ``DIR/tokenizer.json``
(:class:`mechmem.tools.hijack.local.WordTokenizer`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .runner import SCHEMES, SCORES


def add_hijack_parser(subparsers) -> None:
    p = subparsers.add_parser("hijack", help="context hijacking (Jiang et al. 2024): efficacy score vs prepends k")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--model",
        help="a Hugging Face model name or folder, e.g. gpt2 (local files only: fetch with `hf download NAME`)",
    )
    source.add_argument("--run", type=Path, help="a saved mechmem run directory holding tokenizer.json")
    p.add_argument("--records", type=Path, required=True, help="CounterFact-format JSON lines")
    p.add_argument("--schemes", default=",".join(SCHEMES), help=f"comma-separated subset of {','.join(SCHEMES)}")
    p.add_argument("--max-k", type=int, default=10, help="largest number of prepended sentences (default 10)")
    p.add_argument(
        "--score", choices=SCORES, default="first_token", help="compare first-token or whole-target probabilities"
    )
    p.add_argument("--limit", type=int, default=None, help="use only the first N records")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--out", type=Path, default=None, help="output folder (default runs/hijack-<model>)")
    p.set_defaults(func=cmd_hijack)


def load_language_model(model: str | None = None, run: Path | None = None):
    """``(model, codec, name)`` from a pretrained TransformerLens name or a saved mechmem run."""
    if (model is None) == (run is None):
        raise ValueError("give exactly one of --model and --run")
    if model is not None:
        from .runner import codec_for

        lm = load_local_pretrained(model)
        return lm.eval(), codec_for(lm), model
    from mechmem.storage.runs import load_run

    from .local import WordTokenizer

    run = Path(run)
    if not (run / "tokenizer.json").is_file():
        raise FileNotFoundError(f"--run {run}: no tokenizer.json (a WordTokenizer saved with .save())")
    lm, _ = load_run(run)
    return lm, WordTokenizer.load(run / "tokenizer.json"), run.name


def fetch_command(name: str) -> str:
    return f"hf download {name}"


def load_local_pretrained(name: str):
    """A Hugging Face causal LM and its tokenizer from local files only, as a ``TransformerBridge``.

    Weights load through ``transformers`` with ``local_files_only=True`` (safetensors preferred;
    ``transformers`` never unpickles arbitrary objects), so no network access is attempted; a model
    that is not on disk raises a ``ValueError`` naming the command that fetches it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=True)
        hf_model = AutoModelForCausalLM.from_pretrained(name, local_files_only=True, attn_implementation="eager")
    except (OSError, ValueError) as err:
        raise ValueError(
            f"--model {name}: not found in local files ({type(err).__name__}: {str(err).splitlines()[0]}). "
            f"mechmem never downloads; fetch it first with `{fetch_command(name)}` (Hugging Face CLI, package "
            "huggingface_hub) or give the path of a folder saved with save_pretrained"
        ) from None
    from transformer_lens.model_bridge import TransformerBridge

    return TransformerBridge.boot_transformers(name, hf_model=hf_model.float(), tokenizer=tokenizer, device="cpu")


def cmd_hijack(args: argparse.Namespace) -> int:
    from .records import load_records
    from .runner import check_options, is_monotone, run_hijack

    schemes = [s.strip() for s in args.schemes.split(",") if s.strip()]
    check_options(schemes, args.max_k, args.score, args.batch_size)
    records = load_records(args.records, limit=args.limit)
    lm, codec, name = load_language_model(args.model, args.run)
    result = run_hijack(
        lm,
        records,
        codec,
        schemes=schemes,
        max_k=args.max_k,
        score=args.score,
        batch_size=args.batch_size,
        model_name=name,
    )
    out = args.out or Path("runs") / f"hijack-{Path(name).name}"
    result.save(out)
    for scheme, es in result.efficacy.items():
        trend = "monotone" if is_monotone(es) else "not monotone"
        print(
            f"{scheme:17s} n={result.n_records[scheme]:4d}  ES(k=0..{args.max_k}): "
            + " ".join(f"{e:.2f}" for e in es)
            + f"  ({trend})"
        )
    print(f"saved {out / 'hijack.json'} and {out / 'figures' / 'hijack.png'}")
    return 0
