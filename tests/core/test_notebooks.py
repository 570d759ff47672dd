"""Every notebook in notebooks/ runs top to bottom (in its smoke setting, MECHMEM_SMOKE=1).

A notebook that raises fails this test with the failing cell's error. Outputs are not written
back: the committed notebooks stay output-free.
"""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom_in_smoke_mode(path: Path, tmp_path: Path, monkeypatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("MECHMEM_SMOKE", "1")
    monkeypatch.setenv("MECHMEM_RUNS", str(tmp_path))  # notebooks write their runs here
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()
