"""Evaluation: depth / pose / point / mask / rig-jitter metrics (Sim(3) alignment re-exported from
``vggt_mv.inference.alignment``, where window stitching uses it)."""

from vggt_mv.eval.evaluate import evaluate, flatten_metrics, is_static_rig
from vggt_mv.eval.metrics import (
    accuracy_completeness,
    camera_jitter,
    camera_metrics,
    chamfer_distance,
    depth_metrics,
    mask_iou,
    nearest_distances,
    pose_auc,
    relative_pose_errors,
)
from vggt_mv.eval.synthetic import make_synthetic_reconstruction
from vggt_mv.inference.alignment import align_cameras, apply_sim3, transform_extrinsic, umeyama

__all__ = [
    "umeyama", "apply_sim3", "align_cameras", "transform_extrinsic",
    "evaluate", "flatten_metrics", "is_static_rig",
    "depth_metrics", "camera_metrics", "relative_pose_errors", "pose_auc", "nearest_distances",
    "chamfer_distance", "accuracy_completeness", "camera_jitter", "mask_iou",
    "make_synthetic_reconstruction",
]
