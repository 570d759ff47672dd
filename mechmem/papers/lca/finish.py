"""What a ``ModelConfig`` cannot say about the LCA model (Jiang et al. 2024): ``W_O = I`` (the paper's d x d value
matrix is ``W_V`` alone), ``W_V = I`` in the identity-W_V variant, and no residual stream."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hooks.weights import set_weight_
from mechmem.core.fastpath.effects import OBSERVE, SUBTRACT_BLOCK_INPUT, declare_effect

W_V_NAME = "blocks.0.attn.W_V"
W_O_NAME = "blocks.0.attn.W_O"


def finish_lca_model_(model: nn.Module) -> nn.Module:
    """What a ``ModelConfig`` cannot say: ``W_O = I`` (the paper's d x d value matrix is ``W_V``
    alone), ``W_V = I`` when the config freezes it (the identity-W_V variant), and no residual stream
    (``remove_residual_``)."""
    set_weight_(model, W_O_NAME, torch.eye(model.cfg.d_model)[None])
    if W_V_NAME in model.mechmem_config.frozen_weights():
        set_weight_(model, W_V_NAME, torch.eye(model.cfg.d_model)[None])
    remove_residual_(model)
    return model


def remove_residual_(model: nn.Module) -> None:
    """Make ``blocks.0.hook_resid_post`` carry the attention output only (``resid_post - resid_pre``).

    TransformerLens always adds the residual; the paper's read-out has none. A permanent hook on
    ``hook_resid_post`` subtracts the block's *final* ``resid_pre`` (after any user hook on it),
    captured as the attention module's input (``ln1`` is the identity here; the ``query_input``
    keyword of a ``HookedTransformer``, the first argument of a bridge's attention). User hooks on
    ``hook_attn_out``, ``hook_z`` or ``hook_pattern`` therefore act on the logits as usual.
    ``hooks.state.preserved_state`` keeps these pre-existing hooks.
    """
    store: dict[str, Tensor] = {}

    def keep_resid_pre(module, args, kwargs):
        store["resid_pre"] = kwargs["query_input"] if "query_input" in kwargs else args[0]

    def drop_residual(resid_post, hook):
        return resid_post - store.pop("resid_pre")

    declare_effect(keep_resid_pre, OBSERVE)  # what the hooks do, for mechmem.core.fastpath
    declare_effect(drop_residual, SUBTRACT_BLOCK_INPUT)
    model.blocks[0].attn.register_forward_pre_hook(keep_resid_pre, with_kwargs=True)
    model.add_hook("blocks.0.hook_resid_post", drop_residual, is_permanent=True)
