"""The notebooks run top to bottom (nbclient, kernel python3) on the bundled sample, error-free."""
from __future__ import annotations

import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import REPO

NOTEBOOKS = {
    "01_quickstart.ipynb": [
        "weights:", "window t=0..3", "viser scene on port", "abs_rel", "scorecard (model vs baselines)",
        "saved:", "depth identical: True", "timeline.mp4", "offline html: scene.html", "viser server stopped",
    ],
    "02_dual_stream.ipynb": [
        "weights:", "cache hits 2/2 windows", "encoder skipped: True", "cam ctr max", "pts dyn",
        "depth change  (max |depth diff|)    : 0\n", "depth change, first window (t<6): 0\n",
        "attention mass layer 3 (pose stream)",
    ],
}


def test_every_notebook_is_covered():
    assert sorted(p.name for p in (REPO / "notebooks").glob("*.ipynb")) == sorted(NOTEBOOKS)


def _run(name: str, monkeypatch) -> tuple[str, list, float]:
    monkeypatch.setenv("VGGT_MV_ROOT", str(REPO))
    path = REPO / "notebooks" / name
    nb = nbformat.read(path, as_version=4)
    t0 = time.perf_counter()
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    elapsed = time.perf_counter() - t0
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    return text, outputs, elapsed


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_notebook_runs(name: str, monkeypatch):
    text, outputs, elapsed = _run(name, monkeypatch)
    errors = [f"{o.get('ename')}: {o.get('evalue')}" for o in outputs if o.get("output_type") == "error"]
    assert not errors, errors
    missing = [m for m in NOTEBOOKS[name] if m not in text]
    assert not missing, f"markers not printed: {missing}\n--- output ---\n{text[-3000:]}"
    kinds = {k for o in outputs for k in o.get("data", {})}
    assert "image/png" in kinds  # the plots rendered
    if name == "01_quickstart.ipynb":
        assert "text/html" in kinds  # IFrame + embedded video
    print(f"{name}: {elapsed:.0f}s")
