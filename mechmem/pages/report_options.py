"""What ``mechmem report`` is asked to do (:class:`ReportOptions`) and what it gathers (:class:`Source`,
:class:`Collected`): the data that :mod:`mechmem.pages.report` (planning, running, checking) hands to
:mod:`mechmem.pages.report_page` (the page)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mechmem.contract.presets import PRESET_NAMES
from mechmem.contract.registry import PAPERS
from mechmem.contract.reproducing import check_seeds


@dataclass
class ReportOptions:
    """What ``mechmem report`` does (the CLI flags of the same names).

    ``seeds``: the seeds to run (default: seed 0) and that collected results must hold (default: any);
    ``papers``: the papers in the report (default: all four); ``collect``: finished reproduction folders to
    report instead of running those papers; ``runs``: where reproductions run (``RUNS/<paper>-<preset>``);
    ``out``: the report's folder (default ``RUNS/report-<preset>``); ``rerun``: run again into a default
    folder whose results cannot be reported; ``jobs``: processes per reproduction (its seeds in parallel);
    ``examples``: task examples in each model's attention views; ``overwrite``: replace ``out`` even when it
    holds another kind of mechmem output (a folder mechmem did not make, or one this report reads, never);
    ``allow_no_manifest``: collect reproductions (and read their models) without a verifiable ``manifest.json``
    (made by an older mechmem), unchecked.
    """

    preset: str = "quick"
    seeds: list[int] | None = None
    papers: list[str] | None = None
    collect: list[Path] = field(default_factory=list)
    runs: Path = Path("runs")
    out: Path | None = None
    rerun: bool = False
    jobs: int | None = None
    examples: int = 1
    progress: bool = True
    overwrite: bool = False
    allow_no_manifest: bool = False

    def __post_init__(self) -> None:
        if self.preset not in PRESET_NAMES:
            raise ValueError(f"--preset: {self.preset!r} is not a preset; allowed values: {list(PRESET_NAMES)}")
        if self.seeds is not None:
            self.seeds = check_seeds(self.seeds)
        if self.papers is not None:
            unknown = [p for p in self.papers if p not in PAPERS]
            if unknown or not self.papers or len(set(self.papers)) != len(self.papers):
                raise ValueError(f"--papers: give each paper once, from {list(PAPERS)}; got {self.papers}")
        for name, low in (("examples", 1), ("jobs", 1)):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
                raise ValueError(f"--{name} must be an int >= {low}, got {value!r}")
        self.collect = [Path(c) for c in self.collect]
        self.runs = Path(self.runs)
        self.out = Path(self.out) if self.out is not None else self.runs / f"report-{self.preset}"


@dataclass
class Source:
    """Where one paper's results come from: ``folder``, read as it is (``collect``) or run into; ``why``."""

    paper: str
    folder: Path
    collect: bool
    why: str


@dataclass
class Collected:
    """One paper's finished results: where they are, whether this report ran them, and how long that took."""

    source: Source
    results: dict
    seconds: float

    @property
    def paper(self) -> str:
        return self.source.paper
