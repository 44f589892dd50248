"""Ground truth of a canonical clip expressed like VGGT's training targets.

* frame: the reference camera (t=0, v=0) — its extrinsic becomes ``[I | 0]``;
* scale: translations, depths and points are divided by the mean distance of the valid GT points
  (all T*V images) to the reference camera origin, so that mean distance becomes 1.

Returns (``T, V, H, W``; ``h, w = H/14, W/14``): ``images [T,V,3,H,W]`` float in [0,1],
``depth [T,V,H,W]`` (0 where invalid), ``valid [T,V,H,W]`` bool, ``world_points [T,V,H,W,3]``,
``extrinsic [T,V,3,4]`` (camera-from-reference, OpenCV), ``intrinsic [T,V,3,3]``, ``pose_enc
[T,V,9]`` (absT_quaR_FoV), ``dynamic_mask [T,V,H,W]`` float, ``dynamic_mask_patch [T,V,h,w]``
(fraction of dynamic pixels per patch), ``scale [()]`` and ``seed [()]``.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from vggt_mv.heads.pose_encoding import extri_intri_to_pose_encoding

PATCH = 14


def to_homogeneous(ext: torch.Tensor) -> torch.Tensor:
    """``[..., 3, 4]`` -> ``[..., 4, 4]``."""
    bottom = torch.zeros(*ext.shape[:-2], 1, 4, dtype=ext.dtype, device=ext.device)
    bottom[..., 0, 3] = 1.0
    return torch.cat([ext, bottom], dim=-2)


def unproject_depth(depth: torch.Tensor, intrinsic: torch.Tensor, extrinsic: torch.Tensor) -> torch.Tensor:
    """Depth ``[..., H, W]``, intrinsic ``[..., 3, 3]``, extrinsic (camera-from-world) ``[..., 3, 4]``
    -> world points ``[..., H, W, 3]`` (integer pixel coordinates are pixel centres)."""
    h, w = depth.shape[-2:]
    vv, uu = torch.meshgrid(torch.arange(h, dtype=depth.dtype), torch.arange(w, dtype=depth.dtype), indexing="ij")
    fx, fy = intrinsic[..., 0, 0, None, None], intrinsic[..., 1, 1, None, None]
    cx, cy = intrinsic[..., 0, 2, None, None], intrinsic[..., 1, 2, None, None]
    cam = torch.stack([(uu - cx) / fx * depth, (vv - cy) / fy * depth, depth], dim=-1)  # [..., H, W, 3]
    rot, t = extrinsic[..., :3, :3], extrinsic[..., :3, 3]
    # world = R^T (cam - t)
    return torch.einsum("...ji,...hwj->...hwi", rot, cam - t[..., None, None, :])


def normalize_arrays(images: np.ndarray, depth: np.ndarray, intrinsic: np.ndarray, extrinsic: np.ndarray,
                     dynamic_mask: np.ndarray | None, seed: int = 0, patch: int = PATCH,
                     what: str = "clip") -> dict[str, torch.Tensor]:
    """Canonical arrays (``images [T,V,H,W,3]`` float in [0,1]; depth, K, world→camera extrinsic,
    P(dynamic) or None = zeros) -> GT tensors in the reference-camera frame at VGGT's scale."""
    images_t = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).permute(0, 1, 4, 2, 3)
    depth_t = torch.from_numpy(np.asarray(depth)).double()                          # [T,V,H,W]
    intr = torch.from_numpy(np.asarray(intrinsic)).double()
    ext = to_homogeneous(torch.from_numpy(np.asarray(extrinsic)).double())          # [T,V,4,4]
    valid = depth_t > 0
    rel = ext @ torch.linalg.inv(ext[0, 0])                                         # cam-from-ref
    pts = unproject_depth(depth_t, intr, rel[..., :3, :])                           # ref frame
    dist = pts.norm(dim=-1)[valid]
    if dist.numel() == 0:
        raise ValueError(f"{what} has no valid depth")
    scale = dist.mean()
    rel_s = rel[..., :3, :].clone()
    rel_s[..., :3, 3] /= scale
    depth_s = depth_t / scale
    pts_s = torch.where(valid[..., None], pts / scale, torch.zeros_like(pts))
    h, w = depth_t.shape[-2:]
    pose_enc = extri_intri_to_pose_encoding(rel_s.float(), intr.float(), (h, w))
    dyn = (torch.zeros(depth_t.shape, dtype=torch.float32) if dynamic_mask is None
           else torch.from_numpy(np.asarray(dynamic_mask)).float())
    t, v = dyn.shape[:2]
    dyn_patch = F.avg_pool2d(dyn.reshape(t * v, 1, h, w), patch).reshape(t, v, h // patch, w // patch)
    return {
        "images": images_t.float(), "depth": depth_s.float(), "valid": valid, "world_points": pts_s.float(),
        "extrinsic": rel_s.float(), "intrinsic": intr.float(), "pose_enc": pose_enc,
        "dynamic_mask": dyn, "dynamic_mask_patch": dyn_patch,
        "scale": scale.float(), "seed": torch.tensor(seed, dtype=torch.long),
    }
