"""Depth, camera-pose, point-cloud, mask and rig-stability metrics (numpy / open3d)."""

from __future__ import annotations

import warnings
from typing import Literal, Sequence

import numpy as np

from vggt_mv.inference.alignment import align_cameras, apply_sim3
from vggt_mv.inference.geometry import camera_centers, closed_form_inverse_se3, rotation_angle_deg

__all__ = [
    "depth_metrics", "camera_metrics", "relative_pose_errors", "pose_auc",
    "nearest_distances", "chamfer_distance", "accuracy_completeness", "camera_jitter", "mask_iou",
]


def _frame_medians(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per-frame median of ``values[F,P]`` over ``valid`` pixels (NaN where none)."""
    masked = np.where(valid, values, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN frames -> NaN
        return np.nanmedian(masked, axis=1)


def depth_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    valid: np.ndarray | None = None,
    dynamic_mask: np.ndarray | None = None,
    align: Literal["median_frame", "median_sequence", "none"] = "median_frame",
    dynamic_threshold: float = 0.5,
) -> dict[str, float]:
    """AbsRel and δ<1.25 of depth maps ``[..,H,W]`` (leading dims = frames).

    Valid pixels: finite, ``gt > 0``, ``pred > 0`` and ``valid``. Prediction is scaled by
    ``median(gt)/median(pred)`` per frame (``align="median_frame"``), over all frames, or not
    at all. Metrics are pooled over pixels. With ``dynamic_mask`` (probability or bool, same
    shape) ``*_dynamic`` / ``*_static`` variants split at ``dynamic_threshold``.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape or pred.ndim < 2:
        raise ValueError(f"pred and gt depth must have the same [..,H,W] shape, got {pred.shape} vs {gt.shape}")
    frames = int(np.prod(pred.shape[:-2]))
    p, g = pred.reshape(frames, -1), gt.reshape(frames, -1)
    ok = np.isfinite(p) & np.isfinite(g) & (g > 0) & (p > 0)
    if valid is not None:
        ok &= np.asarray(valid, dtype=bool).reshape(frames, -1)
    if align == "median_frame":
        scale = _frame_medians(g, ok) / _frame_medians(p, ok)
    elif align == "median_sequence":
        scale = np.full(frames, np.median(g[ok]) / np.median(p[ok]) if ok.any() else np.nan)
    elif align == "none":
        scale = np.ones(frames)
    else:
        raise ValueError(f"unknown align {align!r}")
    ok &= np.isfinite(scale)[:, None]
    scaled = p * np.where(np.isfinite(scale), scale, 1.0)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        abs_rel = np.abs(scaled - g) / g
        ratio = np.maximum(scaled / g, g / scaled)

    def pooled(sel: np.ndarray, suffix: str) -> dict[str, float]:
        n = int(sel.sum())
        return {
            f"abs_rel{suffix}": float(abs_rel[sel].mean()) if n else float("nan"),
            f"delta_1.25{suffix}": float((ratio[sel] < 1.25).mean()) if n else float("nan"),
            f"n_pixels{suffix}": n,
        }

    out = pooled(ok, "")
    if dynamic_mask is not None:
        dyn = np.asarray(dynamic_mask, dtype=np.float64).reshape(frames, -1) >= dynamic_threshold
        out.update(pooled(ok & dyn, "_dynamic"))
        out.update(pooled(ok & ~dyn, "_static"))
    return out


def pose_auc(rot_err: np.ndarray, trans_err: np.ndarray, max_threshold: int = 30) -> float:
    """VGGT's pose AUC: mean over 1..max_threshold° of the fraction with max(rot, trans) error below."""
    err = np.maximum(np.asarray(rot_err, np.float64), np.asarray(trans_err, np.float64))
    if err.size == 0:
        return float("nan")
    hist, _ = np.histogram(err, bins=np.arange(max_threshold + 1))
    return float(np.mean(np.cumsum(hist.astype(np.float64) / err.size)))


def relative_pose_errors(
    pred_extrinsic: np.ndarray, gt_extrinsic: np.ndarray, min_translation: float = 1e-6
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Relative rotation / translation-direction angle errors (deg) over all pairs i < j.

    ``[N,3,4]`` inputs. Relative pose ``E_i E_j^-1``; translation angle uses VGGT's sign
    ambiguity ``min(e, 180 - e)``. Pairs whose GT relative translation is below
    ``min_translation`` x (largest GT relative translation) have no direction: their translation
    error is 0 and they are flagged in the returned ``degenerate [P]`` bool array.
    """
    pred = np.asarray(pred_extrinsic, np.float64).reshape(-1, 3, 4)
    gt = np.asarray(gt_extrinsic, np.float64).reshape(-1, 3, 4)
    i, j = np.triu_indices(len(pred), k=1)

    def rel(e: np.ndarray) -> np.ndarray:
        inv = closed_form_inverse_se3(e[j])
        rot = e[i, :, :3] @ inv[:, :, :3]
        return np.concatenate([rot, (e[i, :, :3] @ inv[:, :, 3:] + e[i, :, 3:])], axis=-1)

    rel_p, rel_g = rel(pred), rel(gt)
    rot_err = rotation_angle_deg(rel_g[:, :, :3], rel_p[:, :, :3])
    tp, tg = rel_p[:, :, 3], rel_g[:, :, 3]
    ng, np_ = np.linalg.norm(tg, axis=1), np.linalg.norm(tp, axis=1)
    degenerate = ng <= min_translation * max(float(ng.max(initial=0.0)), 1e-12)
    cos = np.einsum("ni,ni->n", tp, tg) / np.maximum(ng * np_, 1e-12)
    t_err = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    t_err = np.minimum(t_err, np.abs(180.0 - t_err))
    t_err = np.where(degenerate, 0.0, t_err)
    return rot_err, t_err, degenerate


def camera_metrics(
    pred_extrinsic: np.ndarray,
    gt_extrinsic: np.ndarray,
    thresholds: Sequence[float] = (5.0, 15.0, 30.0),
    auc_thresholds: Sequence[int] = (30,),
) -> dict[str, float | str]:
    """Pose metrics for ``[N,3,4]`` camera-from-world extrinsics (any two world frames).

    Absolute: Sim(3)-align predicted camera centres to GT (``align_cameras``), then per-camera
    rotation error (deg) and centre error (GT units; ``ate_rmse``). Relative (VGGT eval, all
    pairs): ``RRA@x`` / ``RTA@x`` = fraction of pairs under x degrees, ``AUC@x``.
    """
    pred = np.asarray(pred_extrinsic, np.float64).reshape(-1, 3, 4)
    gt = np.asarray(gt_extrinsic, np.float64).reshape(-1, 3, 4)
    if pred.shape != gt.shape:
        raise ValueError(f"camera count mismatch: {pred.shape} vs {gt.shape}")
    s, rot, trans, method = align_cameras(pred, gt)
    centers = apply_sim3(camera_centers(pred), s, rot, trans)
    trans_err = np.linalg.norm(centers - camera_centers(gt), axis=1)
    rot_err = rotation_angle_deg(gt[:, :, :3], pred[:, :, :3] @ rot.T)
    out: dict[str, float | str] = {
        "n_cameras": len(pred), "alignment": method, "sim3_scale": s,
        "rot_err_mean_deg": float(rot_err.mean()), "rot_err_median_deg": float(np.median(rot_err)),
        "trans_err_mean": float(trans_err.mean()), "trans_err_median": float(np.median(trans_err)),
        "ate_rmse": float(np.sqrt((trans_err**2).mean())),
    }
    if len(pred) >= 2:
        r_rel, t_rel, degenerate = relative_pose_errors(pred, gt)
        out["n_pairs"] = len(r_rel)
        out["n_pairs_no_translation"] = int(degenerate.sum())
        for thr in thresholds:
            out[f"RRA@{thr:g}"] = float((r_rel < thr).mean())
            out[f"RTA@{thr:g}"] = float((t_rel[~degenerate] < thr).mean()) if (~degenerate).any() else float("nan")
        for thr in auc_thresholds:
            out[f"AUC@{thr:g}"] = pose_auc(r_rel, t_rel, int(thr))
    return out


def nearest_distances(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Distance from each ``src [N,3]`` point to its nearest ``dst [M,3]`` point (open3d KD-tree)."""
    import open3d as o3d

    src = np.asarray(src, np.float64).reshape(-1, 3)
    dst = np.asarray(dst, np.float64).reshape(-1, 3)
    if len(src) == 0 or len(dst) == 0:
        raise ValueError(f"nearest_distances needs non-empty point sets, got {len(src)} and {len(dst)}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise ValueError("point sets contain NaN or inf")
    a = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(src))
    b = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(dst))
    return np.asarray(a.compute_point_cloud_distance(b), dtype=np.float64)


def accuracy_completeness(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """``accuracy`` = mean pred->GT distance, ``completeness`` = mean GT->pred distance,
    ``chamfer`` = their average (DUSt3R / 7-Scenes convention); medians too."""
    acc = nearest_distances(pred, gt)
    comp = nearest_distances(gt, pred)
    return {
        "accuracy": float(acc.mean()), "accuracy_median": float(np.median(acc)),
        "completeness": float(comp.mean()), "completeness_median": float(np.median(comp)),
        "chamfer": float(0.5 * (acc.mean() + comp.mean())),
    }


def chamfer_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric Chamfer distance ``(mean_a d(a,B) + mean_b d(b,A)) / 2`` for ``[N,3]``, ``[M,3]``."""
    return accuracy_completeness(a, b)["chamfer"]


def camera_jitter(extrinsic: np.ndarray) -> dict[str, float | list[float]]:
    """Frame-to-frame motion of each camera of a rig that should be static.

    ``extrinsic [T,V,3,4]``. Centre steps ``|c_{t+1} - c_t|`` and rotation steps (deg) per view:
    mean / max overall, per-view means, and ``center_mean_rel`` = mean step / median
    inter-camera distance (scale-free; NaN for V = 1). All zero when T < 2.
    """
    ext = np.asarray(extrinsic, np.float64)
    if ext.ndim != 4 or ext.shape[-2:] != (3, 4):
        raise ValueError(f"camera_jitter needs [T,V,3,4], got {ext.shape}")
    num_t, num_v = ext.shape[:2]
    centers = camera_centers(ext)  # [T,V,3]
    if num_t < 2:
        dc = np.zeros((1, num_v))
        dr = np.zeros((1, num_v))
    else:
        dc = np.linalg.norm(np.diff(centers, axis=0), axis=-1)  # [T-1,V]
        dr = rotation_angle_deg(ext[1:, :, :, :3], ext[:-1, :, :, :3])
    if num_v > 1:
        iu, ju = np.triu_indices(num_v, k=1)
        baseline = float(np.median(np.linalg.norm(centers[:, iu] - centers[:, ju], axis=-1)))
    else:
        baseline = float("nan")
    return {
        "center_mean": float(dc.mean()), "center_max": float(dc.max()),
        "rotation_mean_deg": float(dr.mean()), "rotation_max_deg": float(dr.max()),
        "center_mean_rel": float(dc.mean() / baseline) if baseline > 0 else float("nan"),
        "per_view_center_mean": dc.mean(axis=0).tolist(),
        "per_view_rotation_mean_deg": dr.mean(axis=0).tolist(),
    }


def mask_iou(pred: np.ndarray, gt: np.ndarray, threshold: float = 0.5) -> float:
    """IoU of ``pred >= threshold`` and ``gt >= threshold`` (bool gt as is); 1.0 if both empty."""
    p = np.asarray(pred, np.float64) >= threshold
    g = np.asarray(gt)
    g = g.astype(bool) if g.dtype == bool else np.asarray(g, np.float64) >= threshold
    if p.shape != g.shape:
        raise ValueError(f"mask shapes differ: {p.shape} vs {g.shape}")
    union = int(np.logical_or(p, g).sum())
    return float(np.logical_and(p, g).sum() / union) if union else 1.0
