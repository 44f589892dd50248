"""Trivial baselines computed exactly like the model's metrics, for honest scorecards.

* depth: a constant depth map (after the same per-frame median scaling);
* cameras: the mean rig (every camera given the same pose; the Sim(3) fit then reduces to the
  mean GT rotation, so its error is each camera's deviation from that mean);
* dynamic mask: all-dynamic and all-static predictions.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from vggt_mv.eval.metrics import camera_metrics, depth_metrics, mask_iou

if TYPE_CHECKING:
    from vggt_mv.inference.reconstruction import Reconstruction


def scorecard(rec: "Reconstruction") -> dict[str, dict[str, float]]:
    """``{metric: {"model": x, "baseline": y, ...}}`` for depth AbsRel, median rotation error, mask IoU."""
    gt = rec.gt or {}
    out: dict[str, dict[str, float]] = {}
    if gt.get("depth") is not None:
        g = np.asarray(gt["depth"])
        out["depth_abs_rel"] = {
            "model": depth_metrics(rec.depth, g)["abs_rel"],
            "baseline_constant_depth": depth_metrics(np.ones_like(g), g)["abs_rel"],
        }
    if gt.get("extrinsic") is not None:
        e = np.asarray(gt["extrinsic"])[..., :3, :].reshape(-1, 3, 4)
        mean_rig = np.tile(np.eye(3, 4), (len(e), 1, 1))
        out["rotation_error_median_deg"] = {
            "model": float(camera_metrics(rec.extrinsic.reshape(-1, 3, 4), e)["rot_err_median_deg"]),
            "baseline_mean_rig": float(camera_metrics(mean_rig, e)["rot_err_median_deg"]),
        }
    if gt.get("dynamic_mask") is not None and rec.dynamic_mask is not None:
        g = np.asarray(gt["dynamic_mask"]).astype(bool)
        out["mask_iou"] = {
            "model": mask_iou(rec.dynamic_mask, g),
            "baseline_all_dynamic": mask_iou(np.ones(g.shape), g),
            "baseline_all_static": mask_iou(np.zeros(g.shape), g),
        }
    return out
