"""Run-time inputs beyond images: query points for the track head and cameras for the epipolar prior.

Query points (``--query-points FILE``, ``load_query_points``):

* ``.npy`` ``[N, 2]``: pixel ``(x, y)`` in the **reference image** (t = 0, view 0) at the model's
  input resolution, i.e. after preprocessing (integer coordinates = pixel centres). With
  ``space="original"`` they are pixels of the original (native) reference frame and are mapped
  through that camera's preprocessing plan (resize, crop, pad), exactly like its intrinsics.
* ``.npy`` ``[N, 4]``: MVTracker's ``query_points`` ``(t, x, y, z)`` world points; each is
  projected into view 0 with the scene's ground-truth camera of its timestep t (the track head
  queries the reference image, so a point with t > 0 is used where it projects at its own time:
  exact for t = 0 and for static points). Points behind the camera or outside the image are dropped
  (logged); none left is an error.

Tracks across windows are chained: window k queries the points where the previous windows put them
(view 0) at its first timestep, so every window's tracks are in the same point order.

Epipolar cameras (``--epipolar gt|previous``): per-image intrinsics ``[T,V,3,3]`` (model-input
pixels) and camera-from-world extrinsics ``[T,V,3,4]`` from the scene's ground truth or a previous
reconstruction, cut per window into an ``EpipolarPrior`` (factorized layout only).
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vggt_mv.model.epipolar import EpipolarPrior

log = logging.getLogger("vggt_mv.inference")

__all__ = ["load_query_points", "EpipolarCameras", "epipolar_cameras", "check_epipolar_layout", "EPIPOLAR_MODES"]

EPIPOLAR_MODES = ("off", "gt", "previous")


def _plan_of(scene: Any, view: int):
    from vggt_mv.data.preprocess import PreprocessPlan

    per_view = ((getattr(scene, "source", None) or {}).get("preprocess") or {}).get("per_view") or {}
    name = scene.view_names[view] if getattr(scene, "view_names", None) else None
    d = per_view.get(name)
    return None if d is None else PreprocessPlan.from_dict(d)


def read_query_file(path: str | Path) -> np.ndarray:
    """The raw ``[N,2]`` / ``[N,4]`` array of a query-point file (checked; one-line errors)."""
    path = Path(path)
    try:
        q = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ValueError(f"--query-points {path}: cannot read a .npy array ({e}); save [N,2] pixels or [N,4] (t,x,y,z)") from None
    if q.ndim != 2 or q.shape[1] not in (2, 4) or len(q) == 0 or not np.isfinite(q).all():
        raise ValueError(f"--query-points {path}: expected a finite [N,2] (x, y) or [N,4] (t, x, y, z) array, "
                         f"got shape {q.shape}")
    return q


def load_query_points(path: str | Path, scene: Any, space: str = "model") -> np.ndarray:
    """Query points ``[N, 2]`` float32 (x, y) in model-input pixels of the reference image (module doc)."""
    path = Path(path)
    if space not in ("model", "original"):
        raise ValueError(f"query-point space must be 'model' or 'original', got {space!r}")
    q = read_query_file(path)
    h, w = int(scene.H), int(scene.W)
    if q.shape[1] == 4:
        gt = getattr(scene, "gt", None)
        if gt is None or gt.intrinsic is None or gt.extrinsic is None:
            raise ValueError(f"--query-points {path}: [N,4] world points need the scene's ground-truth cameras "
                             "(intrs/ and extrs/); give [N,2] pixels instead")
        t = q[:, 0].round().astype(int)
        if (t < 0).any() or (t >= scene.T).any():
            raise ValueError(f"--query-points {path}: query times must be in 0..{scene.T - 1}, got {t.min()}..{t.max()}")
        ext, intr = gt.extrinsic[t, 0].astype(np.float64), gt.intrinsic[t, 0].astype(np.float64)
        cam = np.einsum("nij,nj->ni", ext[:, :, :3], q[:, 1:4]) + ext[:, :, 3]
        z = cam[:, 2]
        pix = np.einsum("nij,nj->ni", intr, cam)[:, :2] / np.where(np.abs(z) > 1e-9, z, 1e-9)[:, None]
    else:
        pix = q.astype(np.float64)
        z = np.ones(len(q))
        if space == "original":
            plan = _plan_of(scene, 0)
            if plan is None:
                raise ValueError(f"--query-points {path}: this scene keeps no preprocessing plan for its reference "
                                 "view, so original-image pixels cannot be mapped; give model-input pixels")
            pix = plan.apply_pixels(pix)
    inside = (z > 0) & (pix[:, 0] >= -0.5) & (pix[:, 0] <= w - 0.5) & (pix[:, 1] >= -0.5) & (pix[:, 1] <= h - 0.5)
    if not inside.all():
        log.warning("--query-points: %d of %d points are behind the reference camera or outside its %dx%d image; "
                    "dropped", int((~inside).sum()), len(q), w, h)
    if not inside.any():
        raise ValueError(f"--query-points {path}: no point falls inside the reference image ({w}x{h} model-input "
                         "pixels); check the coordinates' space (see --query-space)")
    return pix[inside].astype(np.float32)


@dataclass
class EpipolarCameras:
    """Cameras for the epipolar prior: intrinsic ``[T,V,3,3]`` (model-input pixels), extrinsic
    ``[T,V,3,4]`` camera-from-world; ``source`` is "gt" or "previous"."""

    intrinsic: np.ndarray
    extrinsic: np.ndarray
    source: str
    strength: float = 1.0
    band: float = 28.0

    def window(self, start: int, stop: int, device: torch.device | str) -> EpipolarPrior:
        """The prior for timesteps ``[start, stop)``: tensors ``[1, Tw, V, ...]``."""
        k = torch.as_tensor(np.ascontiguousarray(self.intrinsic[start:stop]), dtype=torch.float32, device=device)[None]
        e = torch.as_tensor(np.ascontiguousarray(self.extrinsic[start:stop]), dtype=torch.float32, device=device)[None]
        return EpipolarPrior(k, e, self.strength, self.band)

    def identity(self, start: int, stop: int) -> str:
        """Content hash of the window's cameras and settings (part of the pipeline cache key)."""
        h = hashlib.sha256(f"{self.strength}|{self.band}|".encode())
        for a in (self.intrinsic[start:stop], self.extrinsic[start:stop]):
            h.update(np.ascontiguousarray(a, dtype=np.float32).tobytes())
        return h.hexdigest()[:32]


def check_epipolar_layout(mode: str, layout: str, num_views: int) -> None:
    """The epipolar prior acts on View-SA of the factorized layout: a one-line error otherwise."""
    if mode != "off" and (layout != "factorized" or num_views < 2):
        raise ValueError(f"--epipolar {mode} acts on View-SA of the factorized layout with 2+ views; this run has "
                         f"layout={layout!r} and {num_views} view(s): use --layout factorized or --epipolar off")


def epipolar_cameras(mode: str, scene: Any, previous: Any = None, *, layout: str = "factorized",
                     strength: float = 1.0, band: float = 28.0) -> EpipolarCameras | None:
    """Cameras for ``--epipolar mode`` ("off" -> None; "gt": the scene's ground truth; "previous":
    a previous ``Reconstruction`` of the same scene). Raises a one-line ValueError when unusable."""
    if mode not in EPIPOLAR_MODES:
        raise ValueError(f"--epipolar must be one of {'/'.join(EPIPOLAR_MODES)}, got {mode!r}")
    if mode == "off":
        return None
    check_epipolar_layout(mode, layout, scene.V)
    if mode == "gt":
        gt = getattr(scene, "gt", None)
        if gt is None or gt.intrinsic is None or gt.extrinsic is None:
            raise ValueError("--epipolar gt needs the scene's ground-truth cameras (intrs/ and extrs/ of a dump "
                             "layout); use --epipolar previous or off")
        intr, ext = gt.intrinsic, gt.extrinsic
    else:
        if previous is None:
            raise ValueError("--epipolar previous needs a previous run of this scene (run once, then re-run); "
                             "use --epipolar gt or off")
        intr, ext = previous.intrinsic, previous.extrinsic
        if tuple(previous.image_size) != (scene.H, scene.W):
            raise ValueError(f"--epipolar previous: the previous run is {previous.image_size[1]}x{previous.image_size[0]}, "
                             f"this one {scene.W}x{scene.H}; re-run at the same resolution or use --epipolar off")
    want = (scene.T, scene.V)
    if tuple(intr.shape[:2]) != want or tuple(ext.shape[:2]) != want:
        raise ValueError(f"--epipolar {mode}: cameras are for {tuple(intr.shape[:2])} (T, V), the scene is {want}; "
                         "re-run without --epipolar first")
    return EpipolarCameras(np.asarray(intr, np.float32), np.asarray(ext, np.float32)[..., :3, :4], mode, strength, band)
