"""``evaluate(rec)``: run every metric that the reconstruction's ground truth allows."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from vggt_mv.inference.alignment import align_cameras, apply_sim3
from vggt_mv.eval.metrics import accuracy_completeness, camera_jitter, camera_metrics, depth_metrics, mask_iou
from vggt_mv.inference.geometry import unproject_depth

if TYPE_CHECKING:
    from vggt_mv.inference.reconstruction import Reconstruction

__all__ = ["evaluate", "flatten_metrics", "is_static_rig"]


def is_static_rig(extrinsic: np.ndarray, tol: float = 1e-6) -> bool:
    """True if every camera of ``[T,V,3,4]`` stays put over time (T >= 2) within ``tol``."""
    ext = np.asarray(extrinsic, np.float64)
    if ext.ndim != 4 or ext.shape[0] < 2:
        return False
    jit = camera_jitter(ext)
    scale = max(float(np.abs(ext[..., 3]).max()), 1.0)
    return jit["center_max"] <= tol * scale and jit["rotation_max_deg"] <= 1e3 * tol


def _subsample(points: np.ndarray, max_points: int, seed: int) -> np.ndarray:
    if len(points) <= max_points:
        return points
    return points[np.random.default_rng(seed).choice(len(points), max_points, replace=False)]


def _point_metrics(rec: "Reconstruction", gt_points: np.ndarray, gt_valid: np.ndarray, sim3: tuple,
                   source: str, conf_percentile: float | None, max_points: int) -> dict[str, float]:
    """Per-timestep accuracy / completeness / Chamfer, averaged over timesteps."""
    keep = rec.confidence_mask(source, conf_percentile)
    pts = rec.points_from_depth() if source == "depth" else rec.world_points
    rows = []
    for t in range(rec.num_timesteps):  # one KD-tree query per timestep
        pred = pts[t][keep[t]]
        gt = gt_points[t][gt_valid[t]]
        if len(pred) == 0 or len(gt) == 0:
            continue
        pred = apply_sim3(_subsample(pred, max_points, t), *sim3)
        rows.append(accuracy_completeness(pred, _subsample(gt, max_points, t)))
    if not rows:
        return {}
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def evaluate(
    rec: "Reconstruction",
    conf_percentile: float | None = None,
    max_points: int = 20_000,
    static_rig: bool | None = None,
) -> dict[str, Any]:
    """Metrics for ``rec`` against ``rec.gt`` (``{}`` without ground truth). Sections:

    ``depth`` (needs gt depth; split dynamic/static by gt or predicted mask), ``camera`` (gt
    extrinsic), ``points_depth`` / ``points_head`` (gt depth + intrinsic + extrinsic: predicted
    points Sim(3)-aligned by the cameras, then accuracy / completeness / Chamfer in GT units),
    ``mask`` (gt and predicted dynamic masks), ``jitter`` (static rig: ``static_rig`` argument,
    else ``meta["static_rig"]`` / ``gt["static_rig"]``, else detected from gt cameras).
    """
    gt = rec.gt or {}
    out: dict[str, Any] = {}
    if not gt:
        return out
    gt_depth = gt.get("depth")
    gt_ext = gt.get("extrinsic")
    gt_intr = gt.get("intrinsic")
    gt_mask = gt.get("dynamic_mask")
    if gt_depth is not None:
        gt_depth = np.asarray(gt_depth, np.float32)
        if gt_depth.ndim == 5 and gt_depth.shape[-1] == 1:
            gt_depth = gt_depth[..., 0]
        if gt_depth.shape != rec.depth.shape:
            raise ValueError(f"gt depth {gt_depth.shape} does not match predicted depth {rec.depth.shape}")
        split = gt_mask if gt_mask is not None else rec.dynamic_mask
        out["depth"] = depth_metrics(rec.depth, gt_depth, dynamic_mask=split)
    if gt_ext is not None:
        gt_ext = np.asarray(gt_ext, np.float64)[..., :3, :]  # also accepts 4x4 matrices
        gt_ext = gt_ext.reshape(rec.extrinsic.shape)
        out["camera"] = camera_metrics(rec.extrinsic.reshape(-1, 3, 4), gt_ext.reshape(-1, 3, 4))
        if gt_depth is not None and gt_intr is not None:
            gt_intr = np.asarray(gt_intr, np.float64).reshape(rec.intrinsic.shape)
            gt_points = unproject_depth(gt_depth, gt_intr, gt_ext)
            gt_valid = np.isfinite(gt_depth) & (gt_depth > 0)
            s, rot, trans, _ = align_cameras(rec.extrinsic.reshape(-1, 3, 4), gt_ext.reshape(-1, 3, 4))
            for source, key in (("depth", "points_depth"), ("points", "points_head")):
                res = _point_metrics(rec, gt_points, gt_valid, (s, rot, trans), source, conf_percentile, max_points)
                if res:
                    out[key] = res
        if static_rig is None:
            flag = rec.meta.get("static_rig", gt.get("static_rig"))
            static_rig = bool(flag) if flag is not None else is_static_rig(gt_ext)
    elif static_rig is None:
        static_rig = bool(rec.meta.get("static_rig", gt.get("static_rig", False)))
    if static_rig and rec.num_timesteps >= 2:
        out["jitter"] = camera_jitter(rec.extrinsic)
    if gt_mask is not None and rec.dynamic_mask is not None:
        out["mask"] = {"iou": mask_iou(rec.dynamic_mask, np.asarray(gt_mask).reshape(rec.dynamic_mask.shape))}
    return out


def flatten_metrics(metrics: dict[str, Any], sep: str = "/") -> dict[str, float | str]:
    """``{"depth": {"abs_rel": x}}`` -> ``{"depth/abs_rel": x}`` (list values are dropped)."""
    flat: dict[str, float | str] = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            flat.update({f"{key}{sep}{k}": v for k, v in flatten_metrics(value, sep).items()})
        elif not isinstance(value, (list, tuple)):
            flat[key] = value
    return flat
