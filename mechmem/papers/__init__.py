"""One sub-package per paper; see docs/ARCHITECTURE.md.

A paper package exposes ``TASKS``, ``EXPERIMENTS``, ``PRESETS`` and its ``Reproduction`` (and optionally
``add_cli``); see ``docs/design/reproductions.md``.
They are loaded lazily with :func:`lazy_exports`, so the CLI can register a paper's commands
(``mechmem --help``) without importing TransformerLens and the paper's experiments.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` importing ``exports[name] = "submodule:attribute"`` on first use."""

    def __getattr__(name: str) -> object:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attribute = exports[name].partition(":")
        return getattr(importlib.import_module(f"{package}.{module}"), attribute)

    return __getattr__
