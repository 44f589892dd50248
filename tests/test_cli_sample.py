"""The README's library commands on the bundled sample."""
from __future__ import annotations

import numpy as np

from conftest import REPO
from vggt_mv.cli import main as cli_main
from vggt_mv.inference.reconstruction import Reconstruction

SAMPLE = REPO / "assets" / "sample"


def test_reconstruct_views_of_the_sample(tmp_path):
    views = [str(SAMPLE / f"cam{i}") for i in range(3)]
    out = tmp_path / "out"
    rc = cli_main(["reconstruct", "--views", *views, "--preset", "tiny", "--resolution", "56",
                   "--window", "5", "--overlap", "1", "--out", str(out), "--no-progress"])
    assert rc == 0
    rec = Reconstruction.load(out)
    assert rec.depth.shape[:2] == (10, 3) and np.isfinite(rec.depth).all()
    assert (out / "cameras.json").exists() and (out / "points").is_dir() and (out / "scene.glb").exists()
