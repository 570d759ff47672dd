"""``mechmem report``: the four paper reproductions at one preset, on one self-contained HTML page.

For each paper the report either runs the reproduction (:func:`mechmem.contract.reproducing.run`) into
``RUNS/<paper>-<preset>``, or collects one that has finished: a folder named with ``--collect``, or that
default folder when it already holds complete, up-to-date results of the preset (:func:`problems` says
what "complete" means). Then it writes ``OUT/index.html`` (default ``runs/report-<preset>``, see
:mod:`mechmem.pages.report_page`): an index; every paper's claims at a glance; per paper the claims table, its
key figures, the circuits of its representative trained model and the time each part took. Next to the
page: ``report.json`` (every number shown), ``summary.md`` (the claims in markdown) and the circuit
figures as PNG and JSON.

Every check (preset, seeds, papers, the folders to collect, run into and write) runs before anything is
written. Folders follow :mod:`mechmem.storage.folders`: reproductions run into their folders as ``mechmem reproduce``
does (marker and lock); ``OUT`` is marked as a report's and locked while the page is built in a temporary
folder that takes its place only when complete; a folder mechmem did not make is never written.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from mechmem.contract.registry import PAPERS
from mechmem.contract.reproducing import SCHEMA, get_reproduction
from mechmem.pages.report_options import Collected, ReportOptions, Source

#: every number of the page (next to ``index.html``)
RECORD = "report.json"
#: the kind of output in mechmem's folder marker (``mechmem.storage.folders``)
KIND = "report"


# ----------------------------------------------------------------------------- complete results


def problems(
    results: dict,
    folder: Path,
    preset: str,
    seeds: list[int] | None = None,
    paper: str | None = None,
    allow_no_manifest: bool = False,
) -> list[str]:
    """Why ``results`` (a ``results.json`` in ``folder``) are not complete, current results of ``preset``
    (and ``seeds``, ``paper`` when given): empty when they can be reported.

    Complete and current: the one schema; the preset, its sizes and its claims as declared now; a record,
    every experiment the preset enables and every file listed for each seed; the representative model of
    each seed where the paper saves one, its files matching the checksums of its ``manifest.json``. (Whether
    the folder's files match its own manifest is :func:`read_results`' first check.)
    """
    if not isinstance(results, dict) or results.get("schema") != SCHEMA:
        found = results.get("schema") if isinstance(results, dict) else None
        return [
            f"it is not the output of `mechmem reproduce` (its results.json has schema {found!r}, not {SCHEMA!r}"
            + ("; a run folder of `mechmem train`?)" if found is None else ")")
        ]
    name = results.get("paper")
    if name not in PAPERS:
        return [f"it holds results of {name!r}, which is not a paper (papers: {list(PAPERS)})"]
    if paper is not None and name != paper:
        return [f"it holds results of {name}, not {paper}"]
    if results.get("preset") != preset:
        return [f"it holds the {results.get('preset')!r} preset, not {preset!r}"]
    repro = get_reproduction(name)
    config = repro.presets[preset]
    found = []
    if seeds is not None and results.get("seeds") != list(seeds):
        found.append(f"it holds seeds {results.get('seeds')}, not {list(seeds)}")
    if results.get("preset_config") != json.loads(json.dumps(_jsonable(config.to_dict()))):
        found.append(f"the {preset} preset's sizes have changed since it ran")
    declared = [c.key for c in repro.claims if c.applies_to(preset)]
    claims = list(results.get("claims", {}))
    if claims != declared:
        missing, extra = sorted(set(declared) - set(claims)), sorted(set(claims) - set(declared))
        found.append(f"its claims differ from the declared ones (missing {missing}, no longer declared {extra})")
    enabled = [n for n in repro.experiments if repro.experiments.enabled(n, config)]
    for seed in results.get("seeds", []):
        found += _seed_problems(
            results.get("runs", {}).get(str(seed)), seed, folder, enabled, repro.saves_model, allow_no_manifest
        )
    return found


def _seed_problems(
    run: dict | None, seed: int, folder: Path, enabled: list[str], saves_model: bool, allow_no_manifest: bool = False
) -> list[str]:
    if not isinstance(run, dict):
        return [f"seed {seed} has no record"]
    found = []
    missing = [n for n in enabled if n not in run.get("experiments", {})]
    if missing:
        found.append(f"seed {seed} did not run {missing}")
    lost = [f for files in run.get("files", {}).values() for f in files if not (folder / f).is_file()]
    if lost:
        found.append(f"seed {seed}: {len(lost)} of its files are missing (e.g. {lost[0]})")
    if saves_model:
        model = run.get("model")
        if model is None:
            found.append(f"seed {seed} saved no representative model (made by a mechmem before `mechmem report`)")
        elif not all((folder / model / name).is_file() for name in ("config.json", "model.safetensors")):
            found.append(f"seed {seed}: its model folder {model} has no config.json or model.safetensors")
        else:
            found += _model_problems(folder / model, seed, allow_no_manifest)
    return found


def _model_problems(model: Path, seed: int, allow_no_manifest: bool = False) -> list[str]:
    """The saved model's files checked against the checksums its run folder recorded (``manifest.json``)."""
    from mechmem.storage.runs import Run

    try:
        Run(model).verify(allow_no_manifest)
    except (OSError, ValueError) as err:
        return [f"seed {seed}: its model cannot be used ({err})"]
    return []


def _jsonable(obj):
    from mechmem.storage.files import to_jsonable

    return to_jsonable(obj)


def read_results(folder: Path, allow_no_manifest: bool = False) -> dict:
    """``folder/results.json``, after checking every file of ``folder`` against its ``manifest.json`` (a clear
    error when ``folder`` is not a finished reproduction or a file was changed; a folder without a manifest,
    made by an older mechmem, is read unchecked only with ``allow_no_manifest``)."""
    from mechmem.storage import manifest

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder} is not a folder (expected a reproduction's output folder, made by "
            f"`mechmem reproduce PAPER --out {folder}`)"
        )
    file = folder / "results.json"
    if not file.is_file():
        raise FileNotFoundError(
            f"{folder} has no results.json: it is not a finished reproduction (one that was stopped finishes when "
            "its command runs again)"
        )
    manifest.verify(
        folder,
        allow_no_manifest,
        advice="The reproduction was changed after it finished: run its `mechmem reproduce` command again (it "
        "rewrites the folder), or restore the folder from a backup",
    )
    try:
        return json.loads(file.read_text())
    except ValueError as err:
        raise ValueError(f"{file} is not valid JSON ({err})") from None


def check_results(
    folder: Path,
    preset: str,
    seeds: list[int] | None = None,
    paper: str | None = None,
    allow_no_manifest: bool = False,
) -> dict:
    """The results in ``folder`` when they are complete, current results of ``preset`` (else ``ValueError``
    naming every problem)."""
    results = read_results(folder, allow_no_manifest)
    found = problems(results, Path(folder), preset, seeds, paper, allow_no_manifest)
    if found:
        raise ValueError(f"{folder} cannot be reported as the {preset} preset: " + "; ".join(found))
    return results


# ----------------------------------------------------------------------------- the plan


def plan(options: ReportOptions) -> list[Source]:
    """Where each paper's results come from; every check, nothing written."""
    collected: dict[str, Source] = {}
    for folder in options.collect:
        paper = check_results(folder, options.preset, options.seeds, allow_no_manifest=options.allow_no_manifest)[
            "paper"
        ]
        if paper in collected:
            raise ValueError(
                f"--collect: {collected[paper].folder} and {folder} both hold {paper}; name one folder per paper"
            )
        if options.papers is not None and paper not in options.papers:
            raise ValueError(f"--collect: {folder} holds {paper}, which --papers {','.join(options.papers)} leaves out")
        collected[paper] = Source(paper, Path(folder), True, "named by --collect")
    sources = [collected.get(paper) or _default_source(paper, options) for paper in options.papers or PAPERS]
    _check_output(options.out, sources, options.overwrite)
    return sources


def _default_source(paper: str, options: ReportOptions) -> Source:
    """``RUNS/<paper>-<preset>``: collected when up to date, else run into (see :class:`ReportOptions`)."""
    folder = options.runs / f"{paper}-{options.preset}"
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{folder} exists and is not a folder; choose another --runs folder")
    if not (folder / "results.json").is_file():
        return Source(paper, folder, False, "no finished results there yet")
    if options.rerun:
        return Source(paper, folder, False, "--rerun")
    results = read_results(folder, options.allow_no_manifest)
    found = problems(results, folder, options.preset, options.seeds, paper, options.allow_no_manifest)
    if not found:
        return Source(paper, folder, True, "complete and up to date")
    raise ValueError(
        f"{folder} holds results that cannot be reported as the {options.preset} preset ({'; '.join(found)}); "
        f"pass --rerun to run {paper} again into it, or --runs DIR to run into another folder"
    )


def _check_output(out: Path, sources: list[Source], overwrite: bool) -> None:
    """The report may not replace what it reports, nor a folder :mod:`mechmem.storage.folders` would refuse."""
    from mechmem.storage.folders import check_output_dir

    for source in sources:
        if out.resolve() == source.folder.resolve() or out.resolve() in source.folder.resolve().parents:
            raise ValueError(
                f"--out {out} would replace {source.folder}, the results of {source.paper}; choose another --out"
            )
    check_output_dir(out, KIND, overwrite)


# ----------------------------------------------------------------------------- running and writing


def gather(source: Source, options: ReportOptions) -> Collected:
    """Run the reproduction of ``source`` (unless collected) and return its checked results."""
    from mechmem.contract.runner import run

    start = time.perf_counter()
    if not source.collect:
        seeds = options.seeds or [0]
        command = (
            f"mechmem reproduce {source.paper} --preset {options.preset} "
            f"--seeds {','.join(map(str, seeds))} --out {source.folder}"
        )
        run(
            source.paper,
            options.preset,
            seeds,
            source.folder,
            jobs=options.jobs,
            progress=options.progress,
            command=command,
            overwrite=options.rerun,  # --rerun: its earlier output there is replaced, whatever it held
        )
    results = check_results(
        source.folder,
        options.preset,
        options.seeds or (None if source.collect else [0]),
        source.paper,
        options.allow_no_manifest,
    )
    return Collected(source, results, time.perf_counter() - start)


def make_report(options: ReportOptions | None = None, command: str | None = None) -> Path:
    """Run or collect every paper of ``options``, then write the report; returns the path of ``index.html``.

    ``command`` is recorded as the command that made the report (default: this function call)."""
    from mechmem.contract.reproducing import output_kind
    from mechmem.pages.report_page import build_page
    from mechmem.storage.files import atomic_write_json
    from mechmem.storage.folders import prepare_output_dir, write_folder_atomically

    options = options if options is not None else ReportOptions()
    if not isinstance(options, ReportOptions):
        raise TypeError(f"options must be a ReportOptions, got {type(options).__name__}")
    started = time.time()
    sources = plan(options)
    for source in sources:
        if not source.collect:
            prepare_output_dir(source.folder, output_kind(source.paper))
    collected = [gather(source, options) for source in sources]
    command = command or f"make_report({options!r})"

    def build(tmp: Path) -> None:
        atomic_write_json(tmp / RECORD, build_page(tmp, collected, options, command, started))

    write_folder_atomically(options.out, KIND, build, options.overwrite)
    return options.out / "index.html"


def read_report(out: Path) -> dict:
    """The numbers of a written report (``report.json``)."""
    return json.loads((Path(out) / RECORD).read_text())
