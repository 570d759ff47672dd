"""Train and evaluate TransformerLens models at the speed of plain PyTorch.

``logits(model, tokens)`` equals ``model(tokens)`` (within float32 rounding), but when nothing is
hooked, or only permanent hooks that declare their effect (:mod:`.effects`), it computes the
forward with one fused function (:mod:`.fused`: ``F.embedding``, ``F.layer_norm``, fused linear
layers, ``F.scaled_dot_product_attention``) from the model's own parameters, so gradients, the
optimiser state and checkpoints are exactly those of the model. It works on ``HookedTransformer``
and ``TransformerBridge.boot_native`` models; any other model, option or hook falls back to
``model(tokens)`` (:mod:`.plan` says what is supported; the reason is logged once). ``last_logits(model,
tokens)`` equals ``model(tokens)[:, -1]`` through the same plan, with the last block run for the last position
alone (for tasks whose loss reads only that position).
"""

from .effects import OBSERVE, SUBTRACT_BLOCK_INPUT, HookEffect, declare_effect, declared_effect
from .forward import fast_path_enabled, last_logits, logits, plan_for, unsupported_reason

__all__ = [
    "OBSERVE",
    "SUBTRACT_BLOCK_INPUT",
    "HookEffect",
    "declare_effect",
    "declared_effect",
    "fast_path_enabled",
    "last_logits",
    "logits",
    "plan_for",
    "unsupported_reason",
]
