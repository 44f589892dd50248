"""Bundled demo weights (``assets/weights/<preset>*.safetensors``), trained by ``vggt-mv train``
on procedural scenes. Found next to the package in a source checkout / editable install."""
from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "assets" / "weights"


def demo_weights(preset: str) -> Path | None:
    """The bundled weights for ``preset`` (e.g. ``tiny``), or None when there are none."""
    if not WEIGHTS_DIR.is_dir():
        return None
    hits = sorted(WEIGHTS_DIR.glob(f"{preset}*.safetensors")) + sorted(WEIGHTS_DIR.glob(f"{preset}*.pt"))
    return hits[0] if hits else None
