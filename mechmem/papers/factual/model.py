"""The authors' one-layer transformer (``TF_one_layer``), built with ``mechmem.build_model``.

- ``H`` heads of size ``d_h`` read from the EOS (last) position; a causal mask lets the last position see every
  position, which is the paper's single query; no positional embeddings (``W_pos`` zero and frozen), no LayerNorm.
- ReLU MLP of width ``m`` with a trainable ``b_in``; every other bias is zero and frozen.
- Frozen random embeddings ``W_E`` and unembedding ``W_U`` (N(0, 1/d) entries), outputs over the ``R D`` answers
  only (``d_vocab_out``).
- Init as the authors: ``W_Q, W_K, W_V ~ N(0, 1/d_h)``, ``W_O ~ N(0, 1/d)``, MLP LeCun normal, ``b_in = 0``.
- **No residual from the EOS embedding.** TransformerLens adds the token embedding to the residual stream;
  the authors feed the attention output alone to the MLP and the unembedding. Two permanent hooks remove it
  exactly: ``blocks.0.hook_resid_pre`` stores the embeddings of the current forward pass and
  ``blocks.0.hook_resid_mid`` subtracts them in place (on a bridge that hook is ``ln2.hook_in``, whose tensor is
  the residual stream: only an in-place write reaches it), so ``resid_mid = attn_out`` and
  ``resid_post = attn_out + mlp_out``.
  The permanent hooks run before any user hook on the same point (they are registered first): a user patch of
  ``hook_resid_pre`` therefore still has its stored *pre-patch* embedding subtracted.

Parameter count (the paper's axis): ``P = 4 H d_h d + 2 m d`` (no biases, no embeddings).
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Float
from torch import Tensor

from hooks.compat import attention_scale
from hooks.weights import get_weight, set_weight_, weight_views
from mechmem.core.config import ModelConfig
from mechmem.core.fastpath.effects import OBSERVE, SUBTRACT_BLOCK_INPUT, declare_effect
from mechmem.core.models import build_model

FROZEN = (
    "W_E",
    "W_U",
    "b_U",
    "blocks.0.attn.b_Q",
    "blocks.0.attn.b_K",
    "blocks.0.attn.b_V",
    "blocks.0.attn.b_O",
    "blocks.0.mlp.b_out",
)


def factual_model_config(task, d: int = 32, H: int = 8, d_h: int = 8, m: int = 64, seed: int = 0) -> ModelConfig:
    """The ``ModelConfig`` of the one-layer model for ``task`` (a ``FactualRecallTask``)."""
    for name, value in (("d", d), ("H", H), ("d_h", d_h), ("m", m)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    return ModelConfig(
        n_layers=1,
        n_heads=H,
        d_model=d,
        d_head=d_h,
        d_vocab=task.d_vocab,
        d_vocab_out=task.d_vocab_out,
        n_ctx=task.seq_len,
        attn_only=False,
        d_mlp=m,
        act_fn="relu",
        normalization=None,
        positional=False,
        use_bias=True,
        freeze=FROZEN,
        embed_init="normal",
        unembed_init="normal",
        seed=seed,
    )


def parameter_count(d: int, H: int, d_h: int, m: int) -> int:
    """``P = 4 H d_h d + 2 m d``, the paper's parameter count."""
    return 4 * H * d_h * d + 2 * m * d


def build_factual_model(
    task, d: int = 32, H: int = 8, d_h: int = 8, m: int = 64, seed: int = 0, eos_residual: bool = False
):
    """Build, initialise as the authors, and (unless ``eos_residual``) remove the EOS-embedding residual."""
    return finish_factual_model_(build_model(factual_model_config(task, d, H, d_h, m, seed)), eos_residual)


def finish_factual_model_(model, eos_residual: bool = False):
    """What a ``ModelConfig`` cannot say: the authors' init (seeded by ``cfg.seed``) and the residual hooks."""
    cfg = model.mechmem_config
    _authors_init_(model, cfg, torch.Generator().manual_seed(10_007 * cfg.seed + 1))
    model.eos_residual = eos_residual
    if not eos_residual:
        remove_embedding_residual_(model)
    return model


def _authors_init_(model, cfg: ModelConfig, g: torch.Generator) -> None:
    H, d, d_h, m = cfg.n_heads, cfg.d_model, cfg.head_dim, cfg.d_mlp
    normal = lambda shape, std: torch.randn(shape, generator=g) * std  # noqa: E731
    for w in ("W_Q", "W_K", "W_V"):
        set_weight_(model, f"blocks.0.attn.{w}", normal((H, d, d_h), 1 / math.sqrt(d_h)))
    set_weight_(model, "blocks.0.attn.W_O", normal((H, d_h, d), 1 / math.sqrt(d)))
    set_weight_(model, "blocks.0.mlp.W_in", normal((d, m), 1 / math.sqrt(d)))
    set_weight_(model, "blocks.0.mlp.W_out", normal((m, d), 1 / math.sqrt(m)))
    for name in ("blocks.0.mlp.b_in",) + FROZEN[2:]:
        set_weight_(model, name, torch.zeros_like(get_weight(model, name)))


def remove_embedding_residual_(model) -> None:
    """Permanent hooks making ``resid_mid = attn_out`` (see the module docstring)."""
    store: dict[str, Tensor] = {}

    def keep_embedding(resid_pre, hook):
        store["embedding"] = resid_pre

    def drop_embedding(resid_mid, hook):
        return resid_mid.sub_(store["embedding"])

    declare_effect(keep_embedding, OBSERVE)  # what the hooks do, for mechmem.core.fastpath
    declare_effect(drop_embedding, SUBTRACT_BLOCK_INPUT)
    model.add_hook("blocks.0.hook_resid_pre", keep_embedding, is_permanent=True)
    model.add_hook("blocks.0.hook_resid_mid", drop_embedding, is_permanent=True)


def eos_logits(model, counts: Float[Tensor, "batch d_vocab"], eos: int) -> Float[Tensor, "batch d_vocab_out"]:
    """The model's logits at the EOS position computed from token counts alone (exact, differentiable).

    With no positional information and the query always EOS, the attention score of a position depends only on
    its token, so ``softmax_t`` over positions equals ``softmax_v(log c_v + s_{h,v})`` over the vocabulary. This
    costs ``O(batch * vocab * H * d_h)`` instead of TransformerLens's ``O(batch * T^2)`` attention and MLP at every
    position, and it uses (and trains) the model's own parameters. Tested equal to ``model(tokens)[:, -1]``.
    """
    names = ["W_E", "W_U", "b_U"] + [
        f"blocks.0.attn.{w}" for w in ("W_Q", "b_Q", "W_K", "b_K", "W_V", "b_V", "W_O", "b_O")
    ]
    E, W_U, b_U, W_Q, b_Q, W_K, b_K, W_V, b_V, W_O, b_O = weight_views(model, *names)  # E: [V, d]
    q = E[eos] @ W_Q + b_Q  # [H, d_h]   (W_Q: [H, d, d_h])
    k = E @ W_K + b_K[:, None]  # [H, V, d_h]
    v = E @ W_V + b_V[:, None]  # [H, V, d_h]
    scores = (k @ q[:, :, None]).squeeze(-1) / attention_scale(model)  # [H, V]
    ov = v @ W_O  # [H, V, d]: what head h writes when it attends to token v
    pattern = torch.softmax(counts.log()[:, None, :] + scores[None], dim=-1)  # [B, H, V]
    resid = pattern.reshape(len(counts), -1) @ ov.reshape(-1, ov.shape[-1]) + b_O
    if getattr(model, "eos_residual", True):
        resid = resid + E[eos]
    if not model.cfg.attn_only:
        mlp_names = (f"blocks.0.mlp.{w}" for w in ("W_in", "b_in", "W_out", "b_out"))
        W_in, b_in, W_out, b_out = weight_views(model, *mlp_names)
        resid = resid + torch.relu(resid @ W_in + b_in) @ W_out + b_out
    return resid @ W_U + b_U
