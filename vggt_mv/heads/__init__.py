"""Prediction heads (VGGT-compatible key names and arithmetic): camera, DPT (depth / points), track."""
from vggt_mv.heads.activations import activate_head, activate_pose
from vggt_mv.heads.camera_head import CameraHead
from vggt_mv.heads.dpt_head import DPTHead
from vggt_mv.heads.pose_encoding import (
    extri_intri_to_pose_encoding,
    mat_to_quat,
    pose_encoding_to_extri_intri,
    quat_to_mat,
)
from vggt_mv.heads.track_head import TrackHead

__all__ = [
    "CameraHead",
    "DPTHead",
    "TrackHead",
    "activate_head",
    "activate_pose",
    "extri_intri_to_pose_encoding",
    "mat_to_quat",
    "pose_encoding_to_extri_intri",
    "quat_to_mat",
]
