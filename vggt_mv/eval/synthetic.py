"""Analytic synthetic scene (wall + moving box seen by a camera rig) with exact ground truth.

Used by tests, demos and benchmarks: depth is ray-cast in closed form, so every quantity of a
``Reconstruction`` (depth, points, cameras, dynamic mask) is known exactly.
"""

from __future__ import annotations

import numpy as np

from vggt_mv.inference.alignment import transform_extrinsic
from vggt_mv.inference.geometry import camera_centers, pixel_grid, unproject_depth

__all__ = ["look_at_extrinsic", "render_scene", "make_synthetic_reconstruction"]


def look_at_extrinsic(center: np.ndarray, target: np.ndarray, up: np.ndarray = np.array([0.0, -1.0, 0.0])) -> np.ndarray:
    """Camera-from-world ``[3,4]`` (OpenCV axes) of a camera at ``center`` looking at ``target``."""
    center = np.asarray(center, np.float64)
    z = np.asarray(target, np.float64) - center
    z /= np.linalg.norm(z)
    x = np.cross(z, np.asarray(up, np.float64))  # OpenCV: x right, y down, z forward
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    rot = np.stack([x, y, z])  # rows = camera axes in world
    return np.concatenate([rot, (-rot @ center)[:, None]], axis=1)


def render_scene(
    extrinsic: np.ndarray, intrinsic: np.ndarray, height: int, width: int,
    box_lo: np.ndarray, box_hi: np.ndarray, wall_z: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ray-cast a wall ``z = wall_z`` and an axis-aligned box for cameras ``[N,3,4]``/``[N,3,3]``.

    ``box_lo / box_hi [N,3]`` (the box may differ per camera, e.g. per timestep).
    Returns ``(depth [N,H,W] f32, box_hit [N,H,W] bool, images [N,H,W,3] uint8)``.
    """
    ext = np.asarray(extrinsic, np.float64)
    rays_cam = np.einsum("nij,hwj->nhwi", np.linalg.inv(np.asarray(intrinsic, np.float64)), pixel_grid(height, width))
    dirs = np.einsum("nji,nhwj->nhwi", ext[:, :, :3], rays_cam)  # world directions, z_cam = 1 scaling
    origin = camera_centers(ext)[:, None, None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        lam_wall = (wall_z - origin[..., 2]) / dirs[..., 2]
        t1 = (box_lo[:, None, None, :] - origin) / dirs
        t2 = (box_hi[:, None, None, :] - origin) / dirs
    lam_wall = np.where(lam_wall > 0, lam_wall, np.inf)
    t_near = np.nanmax(np.minimum(t1, t2), axis=-1)
    t_far = np.nanmin(np.maximum(t1, t2), axis=-1)
    box_hit = (t_far >= np.maximum(t_near, 0.0)) & (t_near > 0) & (t_near < lam_wall)
    depth = np.where(box_hit, t_near, lam_wall)  # ray parameter == z-depth since z_cam = 1
    points = origin + dirs * depth[..., None]
    checker = ((np.floor(points[..., 0] * 2) + np.floor(points[..., 1] * 2)) % 2)[..., None]
    wall_rgb = 90 + 110 * checker * np.array([1.0, 1.0, 1.0]) + np.array([0, 20, 40])
    box_rgb = np.array([230.0, 120.0, 30.0]) * (0.7 + 0.3 * checker)
    images = np.where(box_hit[..., None], box_rgb, wall_rgb)
    return depth.astype(np.float32), box_hit, np.clip(images, 0, 255).astype(np.uint8)


def make_synthetic_reconstruction(
    num_timesteps: int = 3, num_views: int = 3, height: int = 24, width: int = 32,
    box_speed: float = 0.4, pred_scale: float = 0.5, seed: int = 0,
):  # -> Reconstruction
    """A perfect "prediction" of a static rig watching a wall and a box moving along x.

    GT lives in an arbitrary world; the prediction is expressed, like VGGT's, in the reference
    camera (t=0, v=0) frame and scaled by ``pred_scale``, so it equals GT up to a Sim(3).
    ``depth_conf`` / ``world_points_conf`` are distinct random values in [1, 2);
    ``dynamic_mask`` and ``gt["dynamic_mask"]`` mark box pixels.
    """
    from vggt_mv.inference.reconstruction import Reconstruction

    rng = np.random.default_rng(seed)
    xs = np.linspace(-1.0, 1.0, num_views) if num_views > 1 else np.zeros(1)
    rig = np.stack([look_at_extrinsic(np.array([x, 0.3 * np.sin(3 * x), 0.2 * x * x]), np.array([0.0, 0.0, 5.0]))
                    for x in xs])  # [V,3,4]
    gt_ext = np.broadcast_to(rig, (num_timesteps, num_views, 3, 4)).copy()
    focal = 0.9 * width
    k = np.array([[focal, 0, width / 2.0], [0, focal, height / 2.0], [0, 0, 1]])
    gt_intr = np.broadcast_to(k, (num_timesteps, num_views, 3, 3)).copy()
    centers = np.array([[-0.5 + box_speed * t, 0.0, 3.5] for t in range(num_timesteps)])
    lo = np.repeat(centers - 0.45, num_views, axis=0)
    hi = np.repeat(centers + 0.45, num_views, axis=0)
    depth, hit, images = render_scene(gt_ext.reshape(-1, 3, 4), gt_intr.reshape(-1, 3, 3), height, width, lo, hi, 6.0)
    shape = (num_timesteps, num_views, height, width)
    depth, hit, images = depth.reshape(shape), hit.reshape(shape), images.reshape(shape + (3,))
    # Prediction frame: X_pred = s * (R0 X + t0), the reference camera's frame scaled by s.
    ref = gt_ext[0, 0]
    pred_ext = transform_extrinsic(gt_ext, pred_scale, ref[:, :3], pred_scale * ref[:, 3]).astype(np.float32)
    pred_depth = (depth * pred_scale).astype(np.float32)
    conf = (1.0 + rng.random(shape)).astype(np.float32)
    return Reconstruction(
        images=images, depth=pred_depth, depth_conf=conf,
        world_points=unproject_depth(pred_depth, gt_intr, pred_ext), world_points_conf=conf.copy(),
        extrinsic=pred_ext, intrinsic=gt_intr.astype(np.float32), dynamic_mask=hit.astype(np.float32),
        view_names=[f"cam{v}" for v in range(num_views)],
        meta={"source": "synthetic", "static_rig": True, "pred_scale": pred_scale, "seed": seed},
        gt={"depth": depth, "extrinsic": gt_ext, "intrinsic": gt_intr, "dynamic_mask": hit},
    )
