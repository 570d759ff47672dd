"""Hook names: resolve short forms, check that a hook point exists *and fires*, check ranges.

A ``HookedTransformer`` lists hook points that never fire unless a config flag is set
(``attn.hook_result`` needs ``use_attn_result``, ``hook_v_input`` needs ``use_split_qkv_input``,
...), and a ``TransformerBridge`` lists HookedTransformer-style aliases next to its canonical
``hook_in`` / ``hook_out`` names. A hook on a point that never fires silently does nothing, so
:func:`active_hook_names` runs one 1-token forward pass, records which hook points fire, and
every tool only accepts those names.

A hook point can also fire and still not matter: on a raw ``TransformerBridge.boot_native`` model
of TransformerLens 3.9, ``hook_pattern`` fires after the attention output is computed, so editing
it changes nothing. :func:`check_hooks_editable` perturbs each hook in one tiny forward pass and
raises if the logits do not move; every tool that patches, ablates or replaces calls it first. All
names are probed in one batch, one example per name (two forward passes in all, whatever the number
of names: on a GPT-2-sized model each pass streams every weight); a hook inside the blocks counts
as live when it moves the last residual stream and that residual moves the logits.
"""

from __future__ import annotations

import difflib
import weakref
from collections.abc import Callable

import torch
from torch import nn

HookName = str | tuple

_ACTIVE_CACHE: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, frozenset[str]]]" = weakref.WeakKeyDictionary()
# model -> (config key, names whose edits were seen to change the logits); inert answers are not
# cached (they raise, and a later weight change could make the hook matter)
_EDITABLE_CACHE: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, set[str]]]" = weakref.WeakKeyDictionary()

_FLAGS = ("use_attn_result", "use_split_qkv_input", "use_attn_in", "use_hook_mlp_in", "use_hook_tokens")


def _flags_key(model: nn.Module) -> tuple:
    """What the cached answers depend on: the hook flags, the hook points, and the attention
    implementation (``hooks.bridge.make_attention_hooks_live_`` counts its swaps on the model)."""
    cfg = model.cfg
    flags = tuple(getattr(cfg, f, None) for f in _FLAGS)
    return flags + (len(model.hook_dict), getattr(model, "mechmem_attention_version", 0))


def active_hook_names(model: nn.Module) -> frozenset[str]:
    """Names in ``model.hook_dict`` whose hook point fires in a forward pass (cached per model)."""
    key = _flags_key(model)
    cached = _ACTIVE_CACHE.get(model)
    if cached is not None and cached[0] == key:
        return cached[1]
    from hooks.state import preserved_state  # local import: state imports nothing from here

    fired: set[int] = set()
    hook_points = {}
    for hp in model.hook_dict.values():
        hook_points.setdefault(id(hp), hp)
    device = next(model.parameters()).device
    with preserved_state(model), torch.no_grad():
        model.eval()
        for hp in hook_points.values():
            hp.register_forward_hook(lambda mod, inp, out, _id=id(hp): fired.add(_id))
        model(torch.zeros((1, 1), dtype=torch.long, device=device))
    names = frozenset(n for n, hp in model.hook_dict.items() if id(hp) in fired)
    if getattr(model.cfg, "attn_only", False):
        names = frozenset(n for n in names if not n.endswith(("hook_mlp_out", "hook_resid_mid", "hook_mlp_in")))
    _ACTIVE_CACHE[model] = (key, names)
    return names


def _probe_tokens(model: nn.Module) -> torch.Tensor:
    n = min(int(model.cfg.n_ctx), 4)
    device = next(model.parameters()).device
    return (torch.arange(n, device=device) % int(model.cfg.d_vocab)).unsqueeze(0)


def _final_residual(model: nn.Module, tokens: torch.Tensor, fwd_hooks: list) -> tuple[torch.Tensor, torch.Tensor]:
    """``(last block's hook_resid_post, logits)`` of a forward pass with ``fwd_hooks``."""
    name, out = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post", []

    def capture(act: torch.Tensor, hook=None) -> None:
        out.append(act.detach().clone())

    logits = model.run_with_hooks(tokens, fwd_hooks=[*fwd_hooks, (name, capture)])
    return out[0], logits


def _perturb_row(row: int) -> Callable:
    """A hook adding N(0, 1) noise (seeded, in place, as the tools write) to example ``row`` only."""

    def perturb(act: torch.Tensor, hook=None) -> torch.Tensor:
        gen = torch.Generator().manual_seed(0)
        act[row].add_(torch.randn(act[row].shape, generator=gen, dtype=act.dtype).to(act.device))
        return act

    return perturb


def _upstream_of_residual(name: str) -> bool:
    """A hook point whose edits reach the logits only through the last block's residual stream."""
    return name.startswith("blocks.") or name in ("hook_embed", "hook_pos_embed")


def _moves(model: nn.Module, names: list[str], tokens: torch.Tensor) -> list[bool]:
    """For each name, whether noise there changes the output, all in two forward passes of one
    batch: example ``i`` is perturbed at ``names[i]`` only (examples do not interact), against the
    same batch unperturbed (same shapes, hence the same arithmetic, row by row). A hook inside the
    blocks matters when it moves the last residual stream and that residual moves the logits (an
    extra example perturbed there); any other hook, when it moves the logits."""
    final = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    probes = names + ([final] if final not in names else [])
    rows = tokens.repeat(len(probes), 1)
    base_residual, base_logits = _final_residual(model, rows, [])
    residual, logits = _final_residual(model, rows, [(n, _perturb_row(i)) for i, n in enumerate(probes)])
    logits_move = [not torch.equal(logits[i], base_logits[i]) for i in range(len(probes))]
    final_matters = logits_move[probes.index(final)]
    return [
        final_matters and not torch.equal(residual[i], base_residual[i]) if _upstream_of_residual(n) else logits_move[i]
        for i, n in enumerate(names)
    ]


def _inert_reason(model: nn.Module, name: str, n_tokens: int) -> str:
    if name.endswith(("attn.hook_pattern", "attn.hook_attn_scores")):
        from hooks.weights import is_bridge

        if is_bridge(model):
            from hooks.bridge import pattern_feeds_output

            if not pattern_feeds_output(model):
                return (
                    f"{name} is computed but not used by this model's attention implementation "
                    "(TransformerLens's NativeAttention fires it after the attention output exists); "
                    "build the model with mechmem.build_bridge or hooks.testing.bridge_like, or call "
                    "hooks.bridge.make_attention_hooks_live_(model) first"
                )
    return (
        f"{name} does not affect this model's output: adding noise there in a test forward pass of "
        f"{n_tokens} token(s) left the logits unchanged, so patching, ablating or replacing it would "
        "only return constants"
    )


def check_hooks_editable(model: nn.Module, names) -> None:
    """Raise a ``ValueError`` naming the hook and the reason if an edit at any of ``names`` cannot
    change the model's output. Two tiny forward passes for all of ``names`` on first use (cached per
    model)."""
    if isinstance(names, str):
        names = [names]
    key = _flags_key(model)
    cached = _EDITABLE_CACHE.get(model)
    if cached is None or cached[0] != key:
        cached = (key, set())
        _EDITABLE_CACHE[model] = cached
    todo = [n for n in dict.fromkeys(names) if n not in cached[1]]
    if not todo:
        return
    from hooks.state import preserved_state  # local import: state imports nothing from here

    tokens = _probe_tokens(model)
    with preserved_state(model), torch.no_grad():
        model.eval()
        moves = _moves(model, todo, tokens)
    for name, moved in zip(todo, moves):
        if not moved:
            raise ValueError(_inert_reason(model, name, tokens.shape[1]))
        cached[1].add(name)


def resolve_hook_name(model: nn.Module, name: HookName, layer: int | None = None) -> str:
    """Full hook name from a full name, a short name + layer, or a ``(short, layer)`` tuple.

    ``"blocks.0.attn.hook_z"``, ``("z", 0)``, ``resolve_hook_name(m, "z", 0)`` and ``"z0"`` all give
    ``"blocks.0.attn.hook_z"``. Unknown or inactive names raise a ``ValueError`` listing the
    closest valid names.
    """
    from transformer_lens.utilities import get_act_name  # 3.9 and 4.x (transformer_lens.utils is 3.x only)

    if isinstance(name, tuple):
        if len(name) != 2 or not isinstance(name[0], str):
            raise ValueError(f"a hook given as a tuple must be (short_name, layer), got {name!r}")
        name, layer = name
    if not isinstance(name, str):
        raise TypeError(f"a hook name must be a str or a (str, layer) tuple, got {type(name).__name__}")
    active = active_hook_names(model)
    if layer is not None:
        check_layer(model, layer)
    if name in active and layer is None:
        return name
    try:
        full = get_act_name(name, layer) if layer is not None or "." not in name else name
    except Exception:
        full = name
    if full in active:
        return full
    close = difflib.get_close_matches(full, sorted(active), n=6, cutoff=0.5)
    if not close:
        close = difflib.get_close_matches(name, sorted(active), n=6, cutoff=0.3)
    hint = ""
    if full in model.hook_dict:
        hint = " (this hook point exists but never fires with this model's config)"
    raise ValueError(f"unknown hook name {full!r}{hint}; closest valid names: {close}")


def hook_layer(name: str) -> int | None:
    """The layer index in a full hook name (``blocks.3.attn.hook_z`` -> 3), else None."""
    parts = name.split(".")
    if len(parts) > 1 and parts[0] == "blocks" and parts[1].isdigit():
        return int(parts[1])
    return None


def check_layer(model: nn.Module, layer: int) -> int:
    n = model.cfg.n_layers
    if not isinstance(layer, int) or isinstance(layer, bool) or not 0 <= layer < n:
        raise ValueError(f"layer must be an int in [0, {n - 1}], got {layer!r}")
    return layer


def check_head(model: nn.Module, head: int) -> int:
    n = model.cfg.n_heads
    if not isinstance(head, int) or isinstance(head, bool) or not 0 <= head < n:
        raise ValueError(f"head must be an int in [0, {n - 1}], got {head!r}")
    return head


def check_positions(positions, seq_len: int, what: str = "position") -> list[int]:
    """Positions as a list of ints in [0, seq_len); negative ints count from the end."""
    if isinstance(positions, int):
        positions = [positions]
    out = []
    for p in positions:
        if not isinstance(p, int) or isinstance(p, bool) or not -seq_len <= p < seq_len:
            raise ValueError(f"{what} must be an int in [0, {seq_len - 1}] (sequence length {seq_len}), got {p!r}")
        out.append(p % seq_len)
    return out
