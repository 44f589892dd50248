"""Camera / point geometry in VGGT conventions (numpy, vectorised).

Conventions: ``extrinsic`` is a 3x4 ``[R|t]`` camera-from-world matrix with OpenCV axes
(x right, y down, z forward); ``intrinsic`` is a 3x3 pinhole matrix in pixels; depth is
z-depth. All functions broadcast over arbitrary leading dimensions ``[..]``.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "to_homogeneous",
    "from_homogeneous",
    "closed_form_inverse_se3",
    "camera_centers",
    "camera_to_world",
    "pixel_grid",
    "unproject_depth",
    "project_points",
    "rotation_angle_deg",
    "rotmat_to_quat",
    "quat_to_rotmat",
    "voxel_downsample",
    "remove_statistical_outliers",
]


def to_homogeneous(extrinsic: np.ndarray) -> np.ndarray:
    """``[..,3,4]`` (or ``[..,4,4]``) -> ``[..,4,4]`` with last row ``[0,0,0,1]``."""
    extrinsic = np.asarray(extrinsic)
    if extrinsic.shape[-2:] == (4, 4):
        return extrinsic.copy()
    if extrinsic.shape[-2:] != (3, 4):
        raise ValueError(f"expected [..,3,4] or [..,4,4], got {extrinsic.shape}")
    out = np.zeros(extrinsic.shape[:-2] + (4, 4), dtype=np.result_type(extrinsic, np.float32))
    out[..., :3, :] = extrinsic
    out[..., 3, 3] = 1.0
    return out


def from_homogeneous(matrix: np.ndarray) -> np.ndarray:
    """``[..,4,4]`` (or ``[..,3,4]``) -> ``[..,3,4]`` (drops the last row)."""
    matrix = np.asarray(matrix)
    if matrix.shape[-2:] not in ((4, 4), (3, 4)):
        raise ValueError(f"expected [..,4,4] or [..,3,4], got {matrix.shape}")
    return matrix[..., :3, :].copy()


def closed_form_inverse_se3(se3: np.ndarray) -> np.ndarray:
    """Inverse of rigid transforms ``[..,3,4]`` or ``[..,4,4]``; returns the same shape.

    Uses ``[R|t]^-1 = [R^T | -R^T t]`` (no general matrix inverse).
    """
    se3 = np.asarray(se3)
    if se3.shape[-2:] not in ((3, 4), (4, 4)):
        raise ValueError(f"expected [..,3,4] or [..,4,4], got {se3.shape}")
    rot = se3[..., :3, :3]
    trans = se3[..., :3, 3:]
    rot_t = np.swapaxes(rot, -1, -2)
    out = np.zeros_like(se3, dtype=np.result_type(se3, np.float32))
    out[..., :3, :3] = rot_t
    out[..., :3, 3:] = -rot_t @ trans
    if se3.shape[-2] == 4:
        out[..., 3, 3] = 1.0
    return out


def camera_centers(extrinsic: np.ndarray) -> np.ndarray:
    """Camera centres in world coordinates ``[..,3]`` (``c = -R^T t``)."""
    extrinsic = np.asarray(extrinsic)
    rot = extrinsic[..., :3, :3]
    trans = extrinsic[..., :3, 3]
    return -np.einsum("...ji,...j->...i", rot, trans)


def camera_to_world(extrinsic: np.ndarray) -> np.ndarray:
    """Camera-to-world 4x4 matrices ``[..,4,4]`` from camera-from-world ``[..,3,4]``."""
    return to_homogeneous(closed_form_inverse_se3(extrinsic))


def pixel_grid(height: int, width: int, dtype: type = np.float64) -> np.ndarray:
    """Homogeneous pixel coordinates ``[H,W,3]`` = ``(u, v, 1)`` at pixel centres' integer grid.

    Uses VGGT's convention: pixel ``(row i, col j)`` has ``u = j``, ``v = i``.
    """
    v, u = np.meshgrid(np.arange(height, dtype=dtype), np.arange(width, dtype=dtype), indexing="ij")
    return np.stack([u, v, np.ones_like(u)], axis=-1)


def unproject_depth(depth: np.ndarray, intrinsic: np.ndarray, extrinsic: np.ndarray) -> np.ndarray:
    """Depth maps ``[..,H,W]`` (or ``[..,H,W,1]``) -> world points ``[..,H,W,3]`` (float32).

    ``intrinsic`` ``[..,3,3]``, ``extrinsic`` ``[..,3,4]`` camera-from-world. Pixels with
    non-finite depth give non-finite points.
    """
    depth = np.asarray(depth)
    if depth.ndim >= 3 and depth.shape[-1] == 1:
        depth = depth[..., 0]
    intrinsic = np.asarray(intrinsic, dtype=np.float64)
    extrinsic = np.asarray(extrinsic, dtype=np.float64)
    height, width = depth.shape[-2:]
    k_inv = np.linalg.inv(intrinsic)  # [..,3,3]
    rays = np.einsum("...ij,hwj->...hwi", k_inv, pixel_grid(height, width))  # [..,H,W,3], z = 1
    cam_points = rays * depth[..., None].astype(np.float64)
    rot = extrinsic[..., :3, :3]
    trans = extrinsic[..., :3, 3]
    # world = R^T (x_cam - t)
    world = np.einsum("...ji,...hwj->...hwi", rot, cam_points - trans[..., None, None, :])
    return world.astype(np.float32)


def project_points(
    points: np.ndarray, intrinsic: np.ndarray, extrinsic: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """World points ``[..,N,3]`` -> pixel coordinates ``[..,N,2]`` and z-depth ``[..,N]``."""
    points = np.asarray(points, dtype=np.float64)
    extrinsic = np.asarray(extrinsic, dtype=np.float64)
    intrinsic = np.asarray(intrinsic, dtype=np.float64)
    cam = np.einsum("...ij,...nj->...ni", extrinsic[..., :3, :3], points) + extrinsic[..., None, :3, 3]
    pix = np.einsum("...ij,...nj->...ni", intrinsic, cam)
    z = cam[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = pix[..., :2] / pix[..., 2:3]
    return uv, z


def rotation_angle_deg(rot_a: np.ndarray, rot_b: np.ndarray) -> np.ndarray:
    """Geodesic angle (degrees) between rotation matrices ``[..,3,3]`` -> ``[..]``."""
    rel = np.einsum("...ji,...jk->...ik", np.asarray(rot_a, np.float64), np.asarray(rot_b, np.float64))
    cos = (np.trace(rel, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def rotmat_to_quat(rot: np.ndarray) -> np.ndarray:
    """Rotation matrices ``[..,3,3]`` -> unit quaternions ``[..,4]`` as ``(w, x, y, z)``, w >= 0.

    Vectorised Shepperd method (numerically stable branch per matrix).
    """
    rot = np.asarray(rot, dtype=np.float64)
    m = rot.reshape(-1, 3, 3)
    tr = np.trace(m, axis1=1, axis2=2)
    diag = np.stack([m[:, 0, 0], m[:, 1, 1], m[:, 2, 2]], axis=1)
    # Four candidate quaternions (one per largest component), pick the best-conditioned.
    cands = np.empty((m.shape[0], 4, 4))
    cands[:, 0] = np.stack([1 + tr, m[:, 2, 1] - m[:, 1, 2], m[:, 0, 2] - m[:, 2, 0], m[:, 1, 0] - m[:, 0, 1]], 1)
    cands[:, 1] = np.stack([m[:, 2, 1] - m[:, 1, 2], 1 + 2 * diag[:, 0] - tr, m[:, 0, 1] + m[:, 1, 0], m[:, 0, 2] + m[:, 2, 0]], 1)
    cands[:, 2] = np.stack([m[:, 0, 2] - m[:, 2, 0], m[:, 0, 1] + m[:, 1, 0], 1 + 2 * diag[:, 1] - tr, m[:, 1, 2] + m[:, 2, 1]], 1)
    cands[:, 3] = np.stack([m[:, 1, 0] - m[:, 0, 1], m[:, 0, 2] + m[:, 2, 0], m[:, 1, 2] + m[:, 2, 1], 1 + 2 * diag[:, 2] - tr], 1)
    choice = np.argmax(np.concatenate([tr[:, None], diag], axis=1), axis=1)
    quat = cands[np.arange(m.shape[0]), choice]
    quat /= np.linalg.norm(quat, axis=1, keepdims=True)
    quat *= np.where(quat[:, :1] < 0, -1.0, 1.0)
    return quat.reshape(rot.shape[:-2] + (4,))


def quat_to_rotmat(quat: np.ndarray) -> np.ndarray:
    """Quaternions ``[..,4]`` as ``(w, x, y, z)`` -> rotation matrices ``[..,3,3]``."""
    q = np.asarray(quat, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ]
    return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)


def _o3d_cloud(xyz: np.ndarray, rgb: np.ndarray | None):  # -> open3d.geometry.PointCloud
    import open3d as o3d

    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(xyz, dtype=np.float64)))
    if rgb is not None:
        cloud.colors = o3d.utility.Vector3dVector(np.asarray(rgb, dtype=np.float64) / 255.0)
    return cloud


def _from_o3d(cloud, with_color: bool) -> tuple[np.ndarray, np.ndarray | None]:
    xyz = np.asarray(cloud.points, dtype=np.float32).reshape(-1, 3)
    if not with_color:
        return xyz, None
    rgb = np.clip(np.rint(np.asarray(cloud.colors) * 255.0), 0, 255).astype(np.uint8).reshape(-1, 3)
    return xyz, rgb


def voxel_downsample(
    xyz: np.ndarray, rgb: np.ndarray | None = None, voxel_size: float = 0.0
) -> tuple[np.ndarray, np.ndarray | None]:
    """Voxel-grid downsample ``[N,3]`` points (open3d; colours averaged). ``voxel_size<=0``: no-op."""
    xyz = np.asarray(xyz, dtype=np.float32).reshape(-1, 3)
    if voxel_size is None or voxel_size <= 0 or len(xyz) == 0:
        return xyz, (None if rgb is None else np.asarray(rgb, dtype=np.uint8).reshape(-1, 3))
    cloud = _o3d_cloud(xyz, rgb).voxel_down_sample(float(voxel_size))
    return _from_o3d(cloud, rgb is not None)


def remove_statistical_outliers(
    xyz: np.ndarray, rgb: np.ndarray | None = None, nb_neighbors: int = 20, std_ratio: float = 2.0
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """open3d statistical outlier removal on ``[N,3]`` points.

    Returns ``(xyz, rgb, kept_index [K])``; fewer than ``nb_neighbors + 1`` points are kept as is.
    """
    xyz = np.asarray(xyz, dtype=np.float32).reshape(-1, 3)
    rgb = None if rgb is None else np.asarray(rgb, dtype=np.uint8).reshape(-1, 3)
    if len(xyz) <= nb_neighbors:
        return xyz, rgb, np.arange(len(xyz))
    _, index = _o3d_cloud(xyz, None).remove_statistical_outlier(int(nb_neighbors), float(std_ratio))
    index = np.asarray(index, dtype=np.int64)
    return xyz[index], (None if rgb is None else rgb[index]), index
