"""An associative memory living inside a one-layer attention-only transformer (``mechmem.build_model``).

The memory ``W`` (column convention: ``u_y^T W e_x`` scores class y) becomes the OV circuit of the only head:

* ``W_E`` holds the input embeddings ``e_x`` (``[N, d]``), ``W_U`` the output embeddings (``U^T``, ``[d, M]``);
* one head with ``d_head = d_model = d``, ``W_V = W^T`` (TransformerLens multiplies row vectors, ``x W_V W_O``)
  and ``W_O = I``; no biases, zero positional embeddings, no normalisation;
* the input is a single token (sequence length 1), so the attention pattern is exactly 1 on itself and the head
  writes ``e_x W^T``.

The residual stream after the block is ``e_x + e_x W^T``: its direct path ``e_x`` would add ``e_x U^T`` to the
logits. :func:`remove_direct_path_` removes it with two permanent hooks: one on ``blocks.0.hook_resid_pre``
remembers the block's input, one on ``blocks.0.hook_resid_post`` subtracts it, so the unembedding reads exactly
the head's output (``hook_attn_out``). The hooks are permanent, so ``run_with_cache`` / ``run_with_hooks`` and
ablation or patching of the head (``hook_v``, ``hook_z``, ``hook_attn_out``) act on the memory like on any model.
(A user hook on ``blocks.0.hook_resid_pre`` itself runs after the remembering hook, so it changes the head's input
but not the removed direct path.)
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from hooks.weights import get_weight, set_weight_
from mechmem.core.config import ModelConfig
from mechmem.core.models import build_model

FROZEN = ("W_E", "W_U", "blocks.0.attn.W_Q", "blocks.0.attn.W_K", "blocks.0.attn.W_O")


def memory_model_config(N: int, M: int, d: int, seed: int = 0, dtype: str = "float64") -> ModelConfig:
    """One layer, one head of size d, attention only, vocab N in and M out, context 1; only W_V is trainable."""
    return ModelConfig(
        n_layers=1,
        n_heads=1,
        d_model=d,
        d_head=d,
        d_vocab=N,
        d_vocab_out=M,
        n_ctx=1,
        attn_only=True,
        normalization=None,
        positional=False,
        use_bias=False,
        freeze=FROZEN,
        seed=seed,
        dtype=dtype,
    )


def remove_direct_path_(model) -> None:
    """Add the two permanent hooks that subtract the block's input from ``blocks.0.hook_resid_post``."""
    store: dict[str, Tensor] = {}

    def remember(resid_pre, hook):
        store["resid_pre"] = resid_pre
        return resid_pre

    def subtract(resid_post, hook):
        return resid_post - store.pop("resid_pre")

    model.add_perma_hook("blocks.0.hook_resid_pre", remember)
    model.add_perma_hook("blocks.0.hook_resid_post", subtract)


def memory_transformer(W: Float[Tensor, "d d"], E: Float[Tensor, "N d"], U: Float[Tensor, "M d"], seed: int = 0):
    """A model whose forward on ``[[x]]`` gives the logits ``u_y^T W e_x`` (see module docstring)."""
    N, d = E.shape
    M = U.shape[0]
    if W.shape != (d, d) or U.shape[1] != d:
        raise ValueError(f"shapes do not match: W {tuple(W.shape)}, E {tuple(E.shape)}, U {tuple(U.shape)}")
    cfg = memory_model_config(N, M, d, seed=seed, dtype="float64" if E.dtype == torch.float64 else "float32")
    model = build_model(cfg)
    dtype = get_weight(model, "W_E").dtype
    set_weight_(model, "W_E", E.to(dtype))
    set_weight_(model, "W_U", U.T.contiguous().to(dtype))
    set_weight_(model, "blocks.0.attn.W_O", torch.eye(d, dtype=dtype)[None])
    set_weight_(model, "blocks.0.attn.W_V", W.T.contiguous().to(dtype)[None])
    remove_direct_path_(model)
    model.eval()
    return model


def memory_logits(model, tokens: Int[Tensor, "batch"]) -> Float[Tensor, "batch M"]:
    """Logits of every input token, each fed alone as a length-1 sequence."""
    return model(tokens[:, None])[:, 0]


def memory_predictions(model) -> Int[Tensor, "N"]:
    """``argmax_y`` of the transformer's logits for every input token."""
    with torch.no_grad():
        return memory_logits(model, torch.arange(model.cfg.d_vocab)).argmax(-1)


def train_ov_memory(model, cfg, xs: Int[Tensor, "1 T"]):
    """Train the head's ``W_V`` (the OV circuit, ``W_O = I``) exactly as the matrix model trains ``W``.

    ``cfg`` is an :class:`~mechmem.papers.scaling.optim.OptimConfig` with ``model="matrix"``, ``n_trials=1`` and
    no layernorm; ``xs`` the training stream. Row convention: the matrix model's ``W`` is ``W_V[0]``, its E is
    ``W_E`` and its U is ``W_U^T``. Returns the same :class:`OptimResult` as ``train_memory``.
    """
    from hooks.weights import weight_parameters
    from mechmem.papers.scaling.optim import run_steps

    if cfg.model != "matrix" or cfg.n_trials != 1 or cfg.layernorm:
        raise ValueError("train_ov_memory trains the matrix model only: model='matrix', n_trials=1, layernorm=False")
    W_V = weight_parameters(model, "blocks.0.attn.W_V")
    lr = cfg.lr / cfg.d if cfg.optimizer == "adam" else cfg.lr
    groups = [{"params": [W_V], "lr": lr, "name": "W_V"}]
    model.train()
    try:
        return run_steps(cfg, groups, lambda x: memory_logits(model, x[0])[None], xs)
    finally:
        model.eval()
