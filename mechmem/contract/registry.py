"""What the paper packages provide, declared by name so the CLI can list it without importing it.

``mechmem --help`` and argument errors must not wait for torch and TransformerLens (seconds, a
minute on a loaded machine), so the names live here as plain strings and the modules are
imported only when a command uses them. ``tests/core/test_cli.py`` checks that these declarations
match what the packages really define.

Each paper package ``mechmem.papers.<paper>`` exposes ``TASKS`` (name -> Task class),
``EXPERIMENTS`` (name -> experiment) and optionally ``add_cli(subparsers)`` (as the tools of ``mechmem.tools``
do: ``COMMANDS`` names the package of each command); its ``reproduction``
module declares the paper's ``Reproduction`` (``mechmem.contract.reproducing``). A paper package that is not
there (or fails to import) is skipped by ``mechmem list``, so one broken paper never takes the whole
CLI down.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable

PAPERS = ("lca", "birth", "scaling", "factual")

#: Every task: name -> "module:class".
TASKS = {
    "recall": "mechmem.tasks.recall:RecallTask",
    "lca": "mechmem.papers.lca.task:LatentConceptTask",
    "birth_bigram": "mechmem.papers.birth.task:BigramTask",
    "factual": "mechmem.papers.factual.task:FactualRecallTask",
}

#: The sub-commands that packages add with ``add_cli``: name -> (the package, one-line help).
COMMANDS = {
    "hijack": ("mechmem.tools.hijack", "context hijacking (Jiang et al. 2024): efficacy score vs prepends k"),
}


def paper_module(paper: str) -> types.ModuleType:
    """Import ``mechmem.papers.<paper>``; unknown papers raise ``ValueError``."""
    if paper not in PAPERS:
        raise ValueError(f"unknown paper {paper!r}; available papers: {list(PAPERS)}")
    return importlib.import_module(f"mechmem.papers.{paper}")


def check_task_name(name: str) -> str:
    """``name`` if it is a declared task, else a ``ValueError`` listing them (imports nothing)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; available tasks: {sorted(TASKS)}")
    return name


def task_class(name: str) -> type:
    """The Task class called ``name`` (its module is imported now)."""
    module, _, cls = TASKS[check_task_name(name)].partition(":")
    return getattr(importlib.import_module(module), cls)


def available_papers(warn: bool = False) -> dict[str, types.ModuleType]:
    """The paper packages that import; with ``warn``, a broken one is reported on stderr and
    skipped, otherwise its error is raised."""
    found = {}
    for paper in PAPERS:
        try:
            found[paper] = paper_module(paper)
        except ModuleNotFoundError as err:
            if err.name == f"mechmem.papers.{paper}":
                continue
            if not warn:
                raise
            print(f"mechmem: warning: paper package {paper!r} failed to import: {err}", file=sys.stderr)
        except Exception as err:  # noqa: BLE001 - reported, not swallowed
            if not warn:
                raise
            print(f"mechmem: warning: paper package {paper!r} failed to import: {err!r}", file=sys.stderr)
    return found


def tasks(warn: bool = False) -> dict[str, type]:
    """Every task class by name (imports every task module); with ``warn``, one that fails to
    import is reported on stderr and left out."""
    found = {}
    for name in TASKS:
        try:
            found[name] = task_class(name)
        except Exception as err:  # noqa: BLE001 - reported, not swallowed
            if not warn:
                raise
            print(f"mechmem: warning: task {name!r} failed to import: {err!r}", file=sys.stderr)
    return found


def experiments() -> dict[str, dict[str, Callable]]:
    """Experiments by paper."""
    return {paper: dict(getattr(m, "EXPERIMENTS", {})) for paper, m in available_papers(warn=True).items()}


def add_command_parsers(subparsers, command: str | None) -> None:
    """Register the package commands: the real parser of ``command`` (importing its package), and for
    the others a placeholder carrying only the name and help line (so ``mechmem --help`` lists them)."""
    chosen = COMMANDS[command][0] if command in COMMANDS else None
    for name, (package, help_text) in COMMANDS.items():
        if package != chosen:
            subparsers.add_parser(name, help=help_text, add_help=False)
    if chosen is not None:
        importlib.import_module(chosen).add_cli(subparsers)
