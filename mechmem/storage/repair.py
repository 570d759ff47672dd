"""``mechmem train --repair``: rebuild the damaged files of a run from its verified checkpoint, and say which.

Only what the checkpoint (``train_state.safetensors``) holds can be rebuilt: the metrics up to it
(``metrics.jsonl``) and, for a finished run, the final weights (``model.safetensors``: the checkpoint's weights
at the last step, the same bytes), the training curves (``figures/training.png``) and ``results.json`` (its
training time unknown). Damage to the manifest, ``config.json``, the checkpoint or any other file is refused,
naming them, before anything is written.
"""

from __future__ import annotations

from mechmem.storage import manifest
from mechmem.storage.runs import REBUILDABLE, Run, read_config, train_config_of
from mechmem.storage.summary import save_training_figure, save_training_results


def repair(run: Run) -> list[str]:
    """Rebuild every damaged file of ``run`` that its checkpoint can rebuild; returns their names (empty when
    every file matches the manifest: then nothing is written). Raises, writing nothing, when any damaged file
    cannot be rebuilt."""
    run.lock()
    found = run.problems()  # a missing or damaged manifest raises: nothing can be trusted to rebuild from
    if not found:
        return []
    if any(name not in REBUILDABLE for name in found):
        raise manifest.Damaged(run.path, found, run.advice(found))
    config_file = run.path / "config.json"
    train_cfg = train_config_of(read_config(run), config_file)
    state = run.load_train_state()
    if state is None:
        raise ValueError(
            f"{run.path} has no checkpoint yet, so nothing can be rebuilt; damaged: {', '.join(sorted(found))}"
        )
    finished = state.step == train_cfg.steps
    if not finished and set(found) != {"metrics.jsonl"}:
        raise manifest.Damaged(
            run.path,
            {n: w for n, w in found.items() if n != "metrics.jsonl"},
            f"the run is unfinished (its checkpoint is at step {state.step} of {train_cfg.steps}), so only "
            "metrics.jsonl can be rebuilt; nothing was written",
        )
    rebuilt = [name for name in REBUILDABLE if name in found]
    for name in rebuilt:
        if name == "metrics.jsonl":
            run.rewrite_metrics(state.history)
        elif name == "model.safetensors":
            run.save_weights(state.weights)
        elif name == "figures/training.png":
            save_training_figure(run, state.history)
        else:
            save_training_results(run, state.history, train_cfg.threads, seconds=None)
    return rebuilt
