"""vggt-mv: multi-view, multi-timestep VGGT / PAGE-4D / Pi3 reconstruction.

Public surface (DESIGN §3)::

    cfg = vggt_mv.ModelConfig.preset("tiny")
    model, report = vggt_mv.load_model(cfg, checkpoint=None, pi3=None, device="cpu")
    scene = vggt_mv.load_scene(["cam0", "cam1", "cam2"])
    rec = vggt_mv.reconstruct(scene, model, window=8, overlap=2)
    rec.save("out/")

Names are imported lazily so ``import vggt_mv`` stays light (open3d, trimesh, cv2 load on use).
"""
from __future__ import annotations

import importlib

from vggt_mv import presets as _presets  # noqa: F401 - registers the named presets (ModelConfig.preset)

__version__ = "0.1.0"

_EXPORTS = {
    "ModelConfig": "vggt_mv.config",
    "VGGTMV": "vggt_mv.model.vggt_mv",
    "load_model": "vggt_mv.weights.loader",
    "save_merged": "vggt_mv.weights.loader",
    "LoadReport": "vggt_mv.weights.report",
    "load_scene": "vggt_mv.data.scene",
    "Scene": "vggt_mv.data.scene",
    "reconstruct": "vggt_mv.inference.pipeline",
    "Reconstruction": "vggt_mv.inference.reconstruction",
    "evaluate": "vggt_mv.eval.evaluate",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'vggt_mv' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
