"""A/B comparison of two runs: Sim(3)-align the previous run to the current one and measure deltas.

The previous run ("A", the ghost) is expressed in its own reference-camera frame, which in general
differs from the current run's ("B") by a similarity (scale, rotation, translation), so raw
coordinates cannot be compared. ``compare(prev, cur)`` fits that Sim(3) on the camera rig
(``vggt_mv.inference.alignment.align_cameras``: Umeyama on camera centres, or a rotation average
for degenerate rigs) and reports, in the current run's units:

* per-camera translation delta (distance between camera centres after alignment) and rotation
  delta (angle of ``R_prev_aligned^T R_cur``);
* mean per-pixel point displacement (depth unprojected with each run's own cameras, previous
  run aligned) on dynamic vs static pixels (split by the current run's dynamic mask at 0.5).

``align_reconstruction(prev, sim3)`` returns the previous run moved into the current world,
which the viewer draws as the ghost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vggt_mv.inference.alignment import align_cameras, apply_sim3, transform_extrinsic
from vggt_mv.inference.geometry import camera_centers
from vggt_mv.inference.reconstruction import Reconstruction

__all__ = ["Comparison", "compare", "align_reconstruction", "rotation_delta_deg"]

Sim3 = tuple[float, np.ndarray, np.ndarray]
IDENTITY: Sim3 = (1.0, np.eye(3), np.zeros(3))


def rotation_delta_deg(ext_a: np.ndarray, ext_b: np.ndarray) -> np.ndarray:
    """Angle in degrees between the rotations of camera-from-world ``[..,3,4]`` arrays."""
    ra = np.asarray(ext_a, np.float64)[..., :3, :3]
    rb = np.asarray(ext_b, np.float64)[..., :3, :3]
    rel = np.einsum("...ji,...jk->...ik", ra, rb)
    cos = (np.trace(rel, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


@dataclass
class Comparison:
    """What changed between the previous run and the current one (current run's units)."""

    sim3: Sim3 = IDENTITY                 # maps previous-run world -> current-run world
    method: str = "identity"
    cam_translation: np.ndarray | None = None   # [T,V]
    cam_rotation_deg: np.ndarray | None = None  # [T,V]
    point_disp_static: float | None = None
    point_disp_dynamic: float | None = None
    n_static: int = 0
    n_dynamic: int = 0
    scene_scale: float = 1.0
    view_names: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Flat dict of the headline numbers (None where not measurable)."""
        def stat(a, fn):
            return None if a is None or a.size == 0 else float(fn(a))
        return {
            "alignment": self.method,
            "sim3_scale": float(self.sim3[0]),
            "cam_translation_mean": stat(self.cam_translation, np.mean),
            "cam_translation_max": stat(self.cam_translation, np.max),
            "cam_rotation_mean_deg": stat(self.cam_rotation_deg, np.mean),
            "cam_rotation_max_deg": stat(self.cam_rotation_deg, np.max),
            "point_disp_static": self.point_disp_static,
            "point_disp_dynamic": self.point_disp_dynamic,
            "n_static": self.n_static,
            "n_dynamic": self.n_dynamic,
            "scene_scale": self.scene_scale,
        }

    def rows(self) -> list[list[str]]:
        """``[quantity, value, relative to scene scale]`` rows for a table in the page."""
        s = self.summary()
        rel = (lambda v: "" if v is None else f"{100.0 * v / self.scene_scale:.2f} %")
        fmt = (lambda v, unit="": "n/a" if v is None else f"{v:.4g}{unit}")
        out = [
            ["Sim(3) alignment (A→B)", f"{s['alignment']}, scale {s['sim3_scale']:.4g}", ""],
            ["camera translation Δ (mean)", fmt(s["cam_translation_mean"]), rel(s["cam_translation_mean"])],
            ["camera translation Δ (max)", fmt(s["cam_translation_max"]), rel(s["cam_translation_max"])],
            ["camera rotation Δ (mean)", fmt(s["cam_rotation_mean_deg"], "°"), ""],
            ["camera rotation Δ (max)", fmt(s["cam_rotation_max_deg"], "°"), ""],
            [f"point displacement, static ({s['n_static']} px)", fmt(s["point_disp_static"]),
             rel(s["point_disp_static"])],
            [f"point displacement, dynamic ({s['n_dynamic']} px)", fmt(s["point_disp_dynamic"]),
             rel(s["point_disp_dynamic"])],
        ]
        if self.cam_translation is not None and self.view_names:
            for v, name in enumerate(self.view_names):
                out.append([f"{name}: translation Δ / rotation Δ (mean over t)",
                            f"{self.cam_translation[:, v].mean():.4g} / {self.cam_rotation_deg[:, v].mean():.3g}°",
                            rel(float(self.cam_translation[:, v].mean()))])
        for note in self.notes:
            out.append(["note", note, ""])
        return out


def _fit_sim3(prev: Reconstruction, cur: Reconstruction, notes: list[str]) -> tuple[Sim3, str]:
    if prev.extrinsic.shape != cur.extrinsic.shape:
        notes.append(f"runs have different camera grids {prev.extrinsic.shape[:2]} vs "
                     f"{cur.extrinsic.shape[:2]}: ghost not aligned")
        return IDENTITY, "identity"
    try:
        s, rot, trans, method = align_cameras(prev.extrinsic.reshape(-1, 3, 4), cur.extrinsic.reshape(-1, 3, 4))
    except ValueError as exc:  # degenerate rig (e.g. one camera): identity is the honest answer
        notes.append(f"Sim(3) fit failed ({exc}); identity used")
        return IDENTITY, "identity"
    if not (np.isfinite(s) and s > 0 and np.isfinite(rot).all() and np.isfinite(trans).all()):
        notes.append("Sim(3) fit was not finite; identity used")
        return IDENTITY, "identity"
    return (float(s), np.asarray(rot, np.float64), np.asarray(trans, np.float64)), method


def align_reconstruction(prev: Reconstruction, sim3: Sim3) -> Reconstruction:
    """``prev`` expressed in the current run's world (``X' = s R X + t``; depth scaled by s)."""
    s, rot, trans = sim3
    ext = transform_extrinsic(prev.extrinsic, s, rot, trans).astype(np.float32)
    return Reconstruction(
        images=prev.images, depth=(prev.depth * s).astype(np.float32), depth_conf=prev.depth_conf,
        world_points=apply_sim3(prev.world_points, s, rot, trans).astype(np.float32),
        world_points_conf=prev.world_points_conf, extrinsic=ext, intrinsic=prev.intrinsic,
        dynamic_mask=prev.dynamic_mask, view_names=list(prev.view_names),
        meta={**prev.meta, "aligned_to_current": True}, gt=None,
    )


def compare(prev: Reconstruction, cur: Reconstruction, dynamic_threshold: float = 0.5) -> Comparison:
    """Sim(3)-align ``prev`` to ``cur`` and measure camera and point deltas (see module doc)."""
    notes: list[str] = []
    sim3, method = _fit_sim3(prev, cur, notes)
    comp = Comparison(sim3=sim3, method=method, scene_scale=cur.scene_scale(),
                      view_names=list(cur.view_names), notes=notes)
    if prev.extrinsic.shape != cur.extrinsic.shape:
        return comp
    ext_prev = transform_extrinsic(prev.extrinsic, *sim3)
    comp.cam_translation = np.linalg.norm(
        camera_centers(ext_prev) - camera_centers(cur.extrinsic.astype(np.float64)), axis=-1)
    comp.cam_rotation_deg = rotation_delta_deg(ext_prev, cur.extrinsic)
    if prev.depth.shape != cur.depth.shape:
        notes.append(f"image sizes differ {prev.image_size} vs {cur.image_size}: no per-pixel displacement")
        return comp
    p_prev = apply_sim3(prev.points_from_depth(), *sim3)
    p_cur = cur.points_from_depth().astype(np.float64)
    valid = prev.confidence_mask("depth") & cur.confidence_mask("depth")
    disp = np.linalg.norm(p_prev - p_cur, axis=-1)
    dyn = (cur.dynamic_mask >= dynamic_threshold) if cur.dynamic_mask is not None else np.zeros_like(valid)
    for name, sel in (("static", valid & ~dyn), ("dynamic", valid & dyn)):
        n = int(sel.sum())
        setattr(comp, f"n_{name}", n)
        setattr(comp, f"point_disp_{name}", float(disp[sel].mean()) if n else None)
    if cur.dynamic_mask is None:
        notes.append("current run has no dynamic mask: every pixel counted as static")
    return comp
