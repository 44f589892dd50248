"""Similarity (Sim(3)) alignment: Umeyama on points, and a camera-rig alignment."""

from __future__ import annotations

import numpy as np

from vggt_mv.inference.geometry import camera_centers

__all__ = ["umeyama", "apply_sim3", "align_cameras", "transform_extrinsic"]


def umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool = True) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity with ``dst ≈ s R src + t`` (Umeyama 1991).

    ``src, dst [N,3]`` -> ``(s, R [3,3], t [3])``. Raises ``ValueError`` for N < 3, shape
    mismatch, non-finite input or a source set collapsed to one point. For collinear input the
    rotation about the line is not determined; the returned R is one valid minimiser.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 3 or src.shape != dst.shape:
        raise ValueError(f"umeyama needs src, dst of equal shape [N,3], got {src.shape} and {dst.shape}")
    if len(src) < 3:
        raise ValueError(f"umeyama needs at least 3 point pairs, got {len(src)}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise ValueError("umeyama input contains NaN or inf")
    mu_src, mu_dst = src.mean(0), dst.mean(0)
    xs, xd = src - mu_src, dst - mu_dst
    var_src = (xs**2).sum() / len(src)
    if var_src <= 1e-20 * max(1.0, float(np.abs(src).max()) ** 2):
        raise ValueError("umeyama: source points are (numerically) identical; similarity is undefined")
    cov = xd.T @ xs / len(src)
    u, d, vt = np.linalg.svd(cov)
    sign = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[2, 2] = -1.0
    rot = u @ sign @ vt
    scale = float(np.trace(np.diag(d) @ sign) / var_src) if with_scale else 1.0
    trans = mu_dst - scale * rot @ mu_src
    return scale, rot, trans


def apply_sim3(points: np.ndarray, s: float, rot: np.ndarray, trans: np.ndarray) -> np.ndarray:
    """``s R p + t`` for points ``[..,3]``."""
    return s * np.einsum("ij,...j->...i", rot, np.asarray(points, dtype=np.float64)) + trans


def transform_extrinsic(extrinsic: np.ndarray, s: float, rot: np.ndarray, trans: np.ndarray) -> np.ndarray:
    """Express camera-from-world ``[..,3,4]`` in the world ``X' = s R X + t`` (camera units scaled by s)."""
    extrinsic = np.asarray(extrinsic, dtype=np.float64)
    r_cam = extrinsic[..., :3, :3] @ rot.T
    centers = apply_sim3(camera_centers(extrinsic), s, rot, trans)
    t_cam = -np.einsum("...ij,...j->...i", r_cam, centers)
    return np.concatenate([r_cam, t_cam[..., None]], axis=-1)


def align_cameras(
    pred_extrinsic: np.ndarray, gt_extrinsic: np.ndarray, with_scale: bool = True
) -> tuple[float, np.ndarray, np.ndarray, str]:
    """Sim(3) taking the predicted world to the GT world, from cameras ``[N,3,4]``.

    Umeyama on camera centres when they span a plane (>= 3 non-collinear distinct centres);
    otherwise (e.g. a static 2-camera rig) the rotation is the chordal mean of
    ``R_gt_i^T R_pred_i`` and scale / translation are fitted to the centres given it.
    Returns ``(s, R, t, method)`` with method ``"umeyama"`` or ``"rotation"``.
    """
    pred = np.asarray(pred_extrinsic, dtype=np.float64).reshape(-1, 3, 4)
    gt = np.asarray(gt_extrinsic, dtype=np.float64).reshape(-1, 3, 4)
    if pred.shape != gt.shape:
        raise ValueError(f"camera count mismatch: {pred.shape} vs {gt.shape}")
    if not (np.isfinite(pred).all() and np.isfinite(gt).all()):
        raise ValueError("camera extrinsics contain NaN or inf")
    c_pred, c_gt = camera_centers(pred), camera_centers(gt)
    spread = np.linalg.svd(c_pred - c_pred.mean(0), compute_uv=False) if len(pred) >= 3 else np.zeros(3)
    if len(pred) >= 3 and spread[1] > 1e-6 * max(spread[0], 1e-12) and spread[0] > 1e-9:
        s, rot, trans = umeyama(c_pred, c_gt, with_scale)
        return s, rot, trans, "umeyama"
    # X_gt = s R X_pred + t  =>  R_gt_i ≈ R_pred_i R^T  =>  R ≈ R_gt_i^T R_pred_i (averaged).
    u, _, vt = np.linalg.svd(np.einsum("nji,njk->ik", gt[:, :, :3], pred[:, :, :3]))
    rot = u @ np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))]) @ vt
    xp = (c_pred - c_pred.mean(0)) @ rot.T
    xg = c_gt - c_gt.mean(0)
    denom = float((xp**2).sum())
    s = float((xp * xg).sum() / denom) if with_scale and denom > 1e-18 else 1.0
    s = s if s > 0 else 1.0
    trans = c_gt.mean(0) - s * rot @ c_pred.mean(0)
    return s, rot, trans, "rotation"
