"""The one-layer transformer of the paper (its Sections 5-6), built with ``mechmem.build_model``.

One attention head, no MLP, no layer norm, no positional embedding, no biases, logits read at
the query (last) position. ``d_head = d_model`` and ``W_O`` is fixed to the identity, so the
head's ``W_V`` *is* the paper's d x d value matrix (TransformerLens row convention: the paper's
matrix transposed). Switches:

- ``train_W_V``: trained, or fixed to the identity (Fig. 3a ablation);
- ``train_embed``: trained, or frozen at the Gaussian initialisation N(0, 1/d);
- ``orthonormal_embed``: the embedding rows start as V orthonormal vectors (needs d >= V) instead of Gaussian
  ones (with ``train_embed=False``: frozen orthonormal rows);
- ``uniform_attention``: ``W_Q = 0``, frozen, so every attention score is 0 and attention is uniform (a
  negative control of the attention claims);
- ``tied``: the unembedding is the (first V rows of the) embedding, ``W_U = W_E^T``.

Tying choice: ``torch.nn.utils.parametrize`` turns the real parameter behind ``W_U``
(``unembed.W_U`` of a ``HookedTransformer``, the unembedding ``nn.Linear.weight`` of a bridge) into a
function of the one behind ``W_E`` while training (gradients from the read-out flow into ``W_E``).
:func:`untie_` then freezes the tie into an ordinary parameter holding the same values, so the
trained model is a plain model for the ``hooks`` tools and for safetensors checkpoints.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from hooks.weights import get_weight, set_weight_, slot
from mechmem.core.config import ModelConfig
from mechmem.tasks.base import Task

from .constructions import orthonormal_embeddings
from .finish import W_O_NAME, W_V_NAME
from .task import LatentConceptTask

W_Q_NAME = "blocks.0.attn.W_Q"


@dataclass(frozen=True)
class LCAModelSpec:
    """Which variant of the one-layer model to build (see module docstring)."""

    d_model: int = 16
    train_W_V: bool = True
    train_embed: bool = True
    tied: bool = True
    seed: int = 0
    orthonormal_embed: bool = False
    uniform_attention: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.d_model, bool) or not isinstance(self.d_model, int) or self.d_model < 1:
            raise ValueError(f"d_model must be a positive int, got {self.d_model!r}")
        for name in ("train_W_V", "train_embed", "tied", "orthonormal_embed", "uniform_attention"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def lca_model_config(task: LatentConceptTask, spec: LCAModelSpec) -> ModelConfig:
    """The ``ModelConfig`` of the variant: frozen W_O (identity), optionally frozen W_V / W_E / W_Q."""
    freeze = [W_O_NAME]
    if not spec.train_W_V:
        freeze.append(W_V_NAME)
    if not spec.train_embed:
        freeze.append("W_E")
    if spec.uniform_attention:
        freeze.append(W_Q_NAME)
    return ModelConfig(
        n_layers=1,
        n_heads=1,
        d_model=spec.d_model,
        d_head=spec.d_model,
        d_vocab=task.d_vocab,
        d_vocab_out=task.d_vocab_out,
        n_ctx=task.seq_len,
        attn_only=True,
        normalization=None,
        positional=False,
        use_bias=False,
        freeze=tuple(freeze),
        embed_init="normal",
        unembed_init="normal",
        seed=spec.seed,
    )


class _TiedToEmbedding(nn.Module):
    """Parametrization ``W_U := W_E[:n_out]^T`` (in the unembedding owner's own layout); holds the
    embedding's owner without registering it."""

    def __init__(self, model: nn.Module, n_out: int) -> None:
        super().__init__()
        embed = slot(model, "W_E")
        self.__dict__["_embed"] = embed  # not a submodule: no duplicate weights in state_dict
        self.__dict__["_from_tl"] = slot(model, "W_U").from_tl
        self.n_out = n_out

    def forward(self, original: Tensor) -> Tensor:
        return self._from_tl(self._embed.to_tl(self._embed.value)[: self.n_out].T)


def tie_unembedding_(model: nn.Module, n_out: int) -> None:
    """Make ``W_U`` equal ``W_E[:n_out]^T`` (gradients go to ``W_E``), on either model kind."""
    unembed = slot(model, "W_U")
    parametrize.register_parametrization(unembed.owner, unembed.attr, _TiedToEmbedding(model, n_out))
    unembed.parameter.requires_grad_(False)


def is_tied(model: nn.Module) -> bool:
    return slot(model, "W_U").tied


def untie_(model: nn.Module) -> nn.Module:
    """Replace the tie by a plain ``W_U`` parameter with the same values (no-op if untied)."""
    unembed = slot(model, "W_U")
    if unembed.tied:
        requires_grad = slot(model, "W_E").parameter.requires_grad
        parametrize.remove_parametrizations(unembed.owner, unembed.attr, leave_parametrized=True)
        unembed.parameter.requires_grad_(requires_grad)
    return model


def build_lca_model(task: LatentConceptTask, spec: LCAModelSpec) -> nn.Module:
    """A seeded model for ``task`` in the variant ``spec`` (tied models stay tied): the task's one builder
    (``LatentConceptTask.build_model``) on :func:`lca_model_config`, plus the tie."""
    if not isinstance(task, Task) or task.name != "lca":
        raise TypeError(f"task must be a LatentConceptTask, got {type(task).__name__}")
    if spec.orthonormal_embed and spec.d_model < task.V:
        raise ValueError(f"orthonormal_embed needs d_model >= V = {task.V}, got d_model={spec.d_model}")
    model = task.build_model(lca_model_config(task, spec))
    if spec.orthonormal_embed:
        rows = orthonormal_embeddings(task.V, spec.d_model, torch.Generator().manual_seed(spec.seed))
        set_weight_(model, "W_E", rows)
    if spec.uniform_attention:
        set_weight_(model, W_Q_NAME, torch.zeros_like(get_weight(model, W_Q_NAME)))
    if spec.tied:
        tie_unembedding_(model, task.V)
    model.lca_spec = spec
    return model
