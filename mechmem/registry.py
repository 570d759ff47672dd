"""Find the tasks, experiments and reproductions that the paper packages provide.

Each paper package ``mechmem.papers.<paper>`` exposes ``TASKS`` (name -> Task class),
``EXPERIMENTS`` (name -> experiment) and optionally ``add_cli(subparsers)``; its ``reproduction``
module declares the paper's ``Reproduction`` (``mechmem.reproducing``). A paper package that is not
there (or fails to import) is skipped, so the core never depends on the papers.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable

from mechmem.tasks import RecallTask, Task

PAPERS = ("lca", "birth", "scaling", "factual")


def paper_module(paper: str) -> types.ModuleType:
    """Import ``mechmem.papers.<paper>``; unknown papers raise ``ValueError``."""
    if paper not in PAPERS:
        raise ValueError(f"unknown paper {paper!r}; available papers: {list(PAPERS)}")
    return importlib.import_module(f"mechmem.papers.{paper}")


def available_papers(warn: bool = False) -> dict[str, types.ModuleType]:
    """The paper packages that import; with ``warn``, a broken one is reported on stderr and
    skipped (so one broken paper never takes the whole CLI down), otherwise its error is raised."""
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


def tasks() -> dict[str, type[Task]]:
    """Every task by name: the built-in ones and the papers'."""
    out: dict[str, type[Task]] = {RecallTask.name: RecallTask}
    for module in available_papers().values():
        out.update(getattr(module, "TASKS", {}))
    return out


def experiments() -> dict[str, dict[str, Callable]]:
    """Experiments by paper."""
    return {paper: dict(getattr(m, "EXPERIMENTS", {})) for paper, m in available_papers().items()}
