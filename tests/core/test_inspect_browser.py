"""The pages a person opens, checked in a real browser (headless Chromium): an inspect page and a
``mechmem report`` (smoke preset) render (the screenshot is not blank, every CircuitsVis view draws),
make no request that leaves the machine (Chromium's own network log), and their JavaScript raises no
error (the console log).

The default run checks the smoke report of the four papers collected from the session's smoke
reproductions (the same page, in seconds once they exist); ``-m slow`` also runs the whole
``mechmem report --preset smoke`` from scratch through the CLI (what CI's extra step renders).

Skipped with a message when Chromium is not installed (Debian: ``apt-get install chromium``;
``.ci/run`` installs it). Set ``MECHMEM_SCREENSHOTS=<folder>`` to keep the screenshots.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mechmem.cli import main
from mechmem.contract.registry import PAPERS
from mechmem.pages.inspect_page import inspect_run
from mechmem.pages.inspection import InspectOptions
from mechmem.pages.report import ReportOptions, make_report

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")
BROWSER = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
pytestmark = pytest.mark.skipif(
    BROWSER is None,
    reason="headless Chromium is not installed "
    "(apt-get install -y chromium); the browser checks of the pages are skipped",
)


def chromium(page: Path, work: Path, *args: str) -> subprocess.CompletedProcess:
    """Run headless Chromium on ``page`` with every host name unresolvable, logging the console to
    stderr and the network to ``work/net.json``."""
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        f"--user-data-dir={work / 'profile'}",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--enable-logging=stderr",
        "--v=0",
        f"--log-net-log={work / 'net.json'}",
        "--virtual-time-budget=15000",
    ]
    if not any(a.startswith("--window-size") for a in args):
        flags.append("--window-size=1280,2200")
    return subprocess.run([BROWSER, *flags, *args, page.as_uri()], capture_output=True, text=True, timeout=300)


def page_requests(net_log: Path) -> list[str]:
    """URLs the page itself asked for (Chromium's background requests have no page initiator)."""
    log = json.loads(net_log.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    starts = [e.get("params", {}) for e in log["events"] if e["type"] == start]
    return [p["url"] for p in starts if "url" in p and p.get("initiator") != "not an origin"]


@pytest.fixture(scope="module")
def inspect_page(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    assert main(["train", "recall", "--out", str(runs), "--name", "demo", "--set", "steps=40", "--quiet"]) == 0
    return inspect_run(runs / "demo", InspectOptions(batch_size=32, n_examples=2, progress=False))


@pytest.fixture(scope="module")
def report_page(tmp_path_factory, smoke_outputs) -> Path:
    """The smoke report of the four papers, collected from the session's smoke reproductions (the page
    ``mechmem report --preset smoke`` writes: circuits of three trained models, scaling's figures)."""
    out = tmp_path_factory.mktemp("report") / "report"
    folders = [smoke_outputs(paper)[0] for paper in PAPERS]
    return make_report(ReportOptions(preset="smoke", collect=folders, out=out, progress=False))


@pytest.fixture(params=["inspect", "report"])
def page(request) -> tuple[str, Path]:
    return request.param, request.getfixturevalue(f"{request.param}_page")


def check_renders_offline_without_errors(page: Path, work: Path) -> None:
    """Every CircuitsVis view draws, no request leaves the machine, no JavaScript error."""
    run = chromium(page, work, "--dump-dom")
    assert run.returncode == 0, f"chromium failed: {run.stderr[-2000:]}"
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    errors = [line for line in console if re.search(r'"(Uncaught|\w*Error\b|Failed to load)', line)]
    assert not errors, f"{page}: the page's JavaScript reported errors:\n" + "\n".join(errors)
    external = [url for url in page_requests(work / "net.json") if not url.startswith(("file:", "data:", "blob:"))]
    assert not external, f"{page}: the page requested resources from the network: {external}"
    dom = run.stdout
    views = re.findall(r'<div id="(circuits-vis-[0-9a-f]+)"></div>', page.read_text())
    assert views, f"{page} holds no CircuitsVis view"
    for view in views:
        rendered = re.search(rf'<div id="{view}">(.*?)</div>', dom, re.S)
        assert rendered and rendered.group(1).strip(), f"CircuitsVis view {view} did not render"


def check_screenshot_not_blank(page: Path, work: Path, name: str, height: int = 2200) -> None:
    import numpy as np
    from PIL import Image

    shot = work / f"{name}.png"
    run = chromium(page, work, f"--screenshot={shot}", f"--window-size=1280,{height}")
    assert run.returncode == 0 and shot.is_file(), f"no screenshot: {run.stderr[-2000:]}"
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.std() > 10, f"the screenshot of {page} is (nearly) one colour"
    assert (pixels < 128).mean() > 0.005, f"the screenshot of {page} shows almost no text or figure"
    keep = os.environ.get("MECHMEM_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / shot.name)


def test_the_page_renders_every_view_without_errors_or_network(page, tmp_path):
    check_renders_offline_without_errors(page[1], tmp_path)


def test_the_screenshot_is_not_blank(page, tmp_path):
    kind, path = page
    check_screenshot_not_blank(path, tmp_path, "inspect_recall" if kind == "inspect" else "report_smoke_collected")


@pytest.mark.slow
def test_the_whole_smoke_report_renders_offline(tmp_path):
    """``mechmem report --preset smoke``: the four reproductions run from scratch, then the page."""
    args = ["report", "--preset", "smoke", "--runs", str(tmp_path / "runs"), "--quiet"]
    assert main(args) == 0
    page = tmp_path / "runs" / "report-smoke" / "index.html"
    check_renders_offline_without_errors(page, tmp_path)
    check_screenshot_not_blank(page, tmp_path, "report_smoke", height=6000)
