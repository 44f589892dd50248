"""Camera pose encoding ``absT_quaR_FoV`` <-> extrinsics / intrinsics, and quaternion <-> rotation.

Conventions (VGGT): quaternions are ``xyzw`` (scalar last); extrinsics are camera-from-world
``[R | t]`` in OpenCV axes; the pose encoding is ``[t (3), quat (4), fov_h, fov_w]`` and the
principal point is the image centre.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def quat_to_mat(quaternions: torch.Tensor) -> torch.Tensor:
    """Quaternions ``[..., 4]`` (xyzw, need not be unit) -> rotation matrices ``[..., 3, 3]``."""
    i, j, k, r = torch.unbind(quaternions, -1)
    two_s = 2.0 / (quaternions * quaternions).sum(-1)
    o = torch.stack(
        (
            1 - two_s * (j * j + k * k),
            two_s * (i * j - k * r),
            two_s * (i * k + j * r),
            two_s * (i * j + k * r),
            1 - two_s * (i * i + k * k),
            two_s * (j * k - i * r),
            two_s * (i * k - j * r),
            two_s * (j * k + i * r),
            1 - two_s * (i * i + j * j),
        ),
        -1,
    )
    return o.reshape(quaternions.shape[:-1] + (3, 3))


def _sqrt_positive_part(x: torch.Tensor) -> torch.Tensor:
    """``sqrt(max(0, x))`` with a zero subgradient where ``x <= 0``."""
    return torch.where(x > 0, torch.sqrt(x.clamp_min(0)), torch.zeros_like(x))


def standardize_quaternion(quaternions: torch.Tensor) -> torch.Tensor:
    """Flip xyzw quaternions ``[..., 4]`` so that the real part (last) is non-negative."""
    return torch.where(quaternions[..., 3:4] < 0, -quaternions, quaternions)


def mat_to_quat(matrix: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``[..., 3, 3]`` -> standardized quaternions ``[..., 4]`` (xyzw)."""
    if matrix.shape[-2:] != (3, 3):
        raise ValueError(f"invalid rotation matrix shape {tuple(matrix.shape)}")
    batch = matrix.shape[:-2]
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = torch.unbind(matrix.reshape(batch + (9,)), -1)
    q_abs = _sqrt_positive_part(
        torch.stack(
            [1.0 + m00 + m11 + m22, 1.0 + m00 - m11 - m22, 1.0 - m00 + m11 - m22, 1.0 - m00 - m11 + m22],
            dim=-1,
        )
    )
    # Row c is the quaternion (r, i, j, k) scaled by 2 * q_abs[c]; pick the best-conditioned row.
    quat_by_rijk = torch.stack(
        [
            torch.stack([q_abs[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01], dim=-1),
            torch.stack([m21 - m12, q_abs[..., 1] ** 2, m10 + m01, m02 + m20], dim=-1),
            torch.stack([m02 - m20, m10 + m01, q_abs[..., 2] ** 2, m12 + m21], dim=-1),
            torch.stack([m10 - m01, m20 + m02, m21 + m12, q_abs[..., 3] ** 2], dim=-1),
        ],
        dim=-2,
    )
    floor = torch.tensor(0.1, dtype=q_abs.dtype, device=q_abs.device)
    candidates = quat_by_rijk / (2.0 * q_abs[..., None].max(floor))
    best = F.one_hot(q_abs.argmax(dim=-1), num_classes=4).to(candidates.dtype)
    out = (candidates * best[..., None]).sum(-2)  # exact: one term is selected, the others are 0
    return standardize_quaternion(out[..., [1, 2, 3, 0]])


def extri_intri_to_pose_encoding(
    extrinsics: torch.Tensor,
    intrinsics: torch.Tensor,
    image_size_hw: tuple[int, int],
    pose_encoding_type: str = "absT_quaR_FoV",
) -> torch.Tensor:
    """extrinsics ``[..., 3, 4]``, intrinsics ``[..., 3, 3]`` -> pose encoding ``[..., 9]`` (float32)."""
    if pose_encoding_type != "absT_quaR_FoV":
        raise ValueError(f"pose encoding {pose_encoding_type!r} is not supported; VGGT uses 'absT_quaR_FoV'")
    rot = extrinsics[..., :3, :3]
    t = extrinsics[..., :3, 3]
    quat = mat_to_quat(rot)
    h, w = image_size_hw
    fov_h = 2 * torch.atan((h / 2) / intrinsics[..., 1, 1])
    fov_w = 2 * torch.atan((w / 2) / intrinsics[..., 0, 0])
    return torch.cat([t, quat, fov_h[..., None], fov_w[..., None]], dim=-1).float()


def pose_encoding_to_extri_intri(
    pose_encoding: torch.Tensor,
    image_size_hw: tuple[int, int] | None = None,
    pose_encoding_type: str = "absT_quaR_FoV",
    build_intrinsics: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Pose encoding ``[..., 9]`` -> (extrinsics ``[..., 3, 4]``, intrinsics ``[..., 3, 3]`` or None).

    ``fx = (W/2) / tan(fov_w/2)``, ``fy = (H/2) / tan(fov_h/2)``, principal point ``(W/2, H/2)``.
    """
    if pose_encoding_type != "absT_quaR_FoV":
        raise ValueError(f"pose encoding {pose_encoding_type!r} is not supported; VGGT uses 'absT_quaR_FoV'")
    t = pose_encoding[..., :3]
    quat = pose_encoding[..., 3:7]
    fov_h = pose_encoding[..., 7]
    fov_w = pose_encoding[..., 8]
    extrinsics = torch.cat([quat_to_mat(quat), t[..., None]], dim=-1)
    if not build_intrinsics:
        return extrinsics, None
    if image_size_hw is None:
        raise ValueError("image_size_hw is required to build intrinsics")
    h, w = image_size_hw
    fy = (h / 2.0) / torch.tan(fov_h / 2.0)
    fx = (w / 2.0) / torch.tan(fov_w / 2.0)
    zero = torch.zeros_like(fx)
    one = torch.ones_like(fx)
    intrinsics = torch.stack(
        [fx, zero, zero + w / 2, zero, fy, zero + h / 2, zero, zero, one], dim=-1
    ).reshape(fx.shape + (3, 3))
    return extrinsics, intrinsics
