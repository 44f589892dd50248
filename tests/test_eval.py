"""Umeyama, depth / pose / point / mask / jitter metrics and evaluate()."""

from __future__ import annotations

import numpy as np
import pytest

from vggt_mv.eval import (
    align_cameras,
    apply_sim3,
    camera_jitter,
    camera_metrics,
    chamfer_distance,
    depth_metrics,
    evaluate,
    flatten_metrics,
    make_synthetic_reconstruction,
    mask_iou,
    pose_auc,
    transform_extrinsic,
    umeyama,
)
from vggt_mv.inference.geometry import quat_to_rotmat
from vggt_mv.inference.reconstruction import Reconstruction


def _rot(axis, deg: float) -> np.ndarray:
    axis = np.asarray(axis, np.float64) / np.linalg.norm(axis)
    half = np.radians(deg) / 2
    return quat_to_rotmat(np.concatenate([[np.cos(half)], np.sin(half) * axis]))


def _cameras(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(n, 4))
    return np.concatenate([quat_to_rotmat(q), rng.normal(size=(n, 3, 1)) * 2], axis=2)


def test_umeyama_recovers_known_sim3():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(50, 3))
    s, rot, t = 2.5, _rot([1, 2, 3], 40), np.array([1.0, -2.0, 0.5])
    dst = apply_sim3(src, s, rot, t)
    s2, r2, t2 = umeyama(src, dst)
    assert np.isclose(s2, s) and np.allclose(r2, rot) and np.allclose(t2, t)
    s3, r3, _ = umeyama(src, apply_sim3(src, 1.0, rot, t), with_scale=False)
    assert s3 == 1.0 and np.allclose(r3, rot)
    mirrored = src * np.array([1, 1, -1])  # reflection must not be returned as a rotation
    assert np.isclose(np.linalg.det(umeyama(src, mirrored)[1]), 1.0)


@pytest.mark.parametrize("src, msg", [
    (np.zeros((2, 3)), "at least 3"),
    (np.array([[0, 0, np.nan], [1, 0, 0], [0, 1, 0]]), "NaN"),
    (np.ones((5, 3)), "identical"),
])
def test_umeyama_rejects_degenerate_input(src, msg):
    with pytest.raises(ValueError, match=msg):
        umeyama(src, np.asarray(src) + 1.0)
    with pytest.raises(ValueError, match="shape"):
        umeyama(np.zeros((4, 3)), np.zeros((5, 3)))


def test_align_cameras_two_camera_rig_falls_back_to_rotations():
    gt = _cameras(2)
    gt = np.concatenate([gt, gt])  # static 2-camera rig over 2 timesteps: only 2 distinct centres
    s, rot, t = 0.5, _rot([0, 1, 1], 25), np.array([0.3, 0.0, -1.0])
    pred = transform_extrinsic(gt, s, rot, t)  # pred world = Sim(3) of GT world
    s2, r2, t2, method = align_cameras(pred, gt)
    assert method == "rotation" and np.isclose(s2, 1 / s) and np.allclose(r2, rot.T)
    assert np.allclose(apply_sim3(apply_sim3(np.eye(3), s, rot, t), s2, r2, t2), np.eye(3))


def test_depth_metrics_perfect_scaled_and_noisy():
    rng = np.random.default_rng(1)
    gt = rng.uniform(1, 10, size=(4, 12, 15))
    assert depth_metrics(gt, gt) == pytest.approx({"abs_rel": 0.0, "delta_1.25": 1.0, "n_pixels": gt.size})
    scaled = gt * np.array([2.0, 0.5, 3.0, 1.0])[:, None, None]  # per-frame scale is removed
    assert depth_metrics(scaled, gt)["abs_rel"] == pytest.approx(0.0, abs=1e-12)
    assert depth_metrics(gt * 2, gt, align="none")["abs_rel"] == pytest.approx(1.0)
    assert depth_metrics(gt * 2, gt, align="median_sequence")["abs_rel"] == pytest.approx(0.0, abs=1e-12)
    # constant GT 2, prediction 2 + {-0.2, 0, +0.2} in equal thirds: median unchanged, AbsRel = 0.2*2/3/2
    flat = np.full((3, 30), 2.0)
    noise = np.tile(np.repeat([-0.2, 0.0, 0.2], 10), (3, 1))
    m = depth_metrics(flat + noise, flat)
    assert m["abs_rel"] == pytest.approx(0.2 * 2 / 3 / 2) and m["delta_1.25"] == 1.0
    big = np.tile(np.repeat([-1.0, 0.0, 1.0], 10), (3, 1))  # ratios 0.5 and 1.5 fail δ<1.25
    assert depth_metrics(flat + big, flat)["delta_1.25"] == pytest.approx(1 / 3)


def test_depth_metrics_dynamic_split_and_validity():
    gt = np.full((2, 10, 10), 4.0)
    dyn = np.zeros_like(gt, dtype=bool)
    dyn[:, :3] = True  # 30% dynamic
    pred = np.where(dyn, 4.4, 4.0)  # error only on dynamic pixels; medians stay 4
    pred[0, 9, 9] = np.nan
    m = depth_metrics(pred, gt, dynamic_mask=dyn)
    assert m["abs_rel_static"] == 0.0 and m["abs_rel_dynamic"] == pytest.approx(0.1)
    assert m["n_pixels"] == 199 and m["n_pixels_dynamic"] == 60 and m["n_pixels_static"] == 139
    m2 = depth_metrics(pred, np.where(dyn, 0.0, gt), dynamic_mask=dyn)  # gt 0 = invalid
    assert m2["n_pixels_dynamic"] == 0 and np.isnan(m2["abs_rel_dynamic"])


def test_camera_metrics_perfect_under_sim3():
    gt = _cameras(6)
    pred = transform_extrinsic(gt, 0.3, _rot([1, 0, 1], 70), np.array([5.0, 1.0, 2.0]))
    m = camera_metrics(pred, gt)
    assert m["alignment"] == "umeyama" and m["AUC@30"] == 1.0 and m["RRA@5"] == 1.0 and m["RTA@5"] == 1.0
    assert m["rot_err_mean_deg"] < 1e-5 and m["ate_rmse"] < 1e-9 and m["n_pairs"] == 15
    assert pose_auc(np.zeros(4), np.zeros(4)) == 1.0


def test_camera_metrics_known_rotation_perturbation():
    n = 5
    gt = _cameras(n, seed=3)
    pred = gt.copy()
    pred[0, :, :3] = _rot([0.2, 1, 0.3], 10.5) @ gt[0, :, :3]  # turn camera 0 about its centre
    pred[0, :, 3] = -pred[0, :, :3] @ (-gt[0, :, :3].T @ gt[0, :, 3])
    m = camera_metrics(pred, gt)
    assert m["rot_err_mean_deg"] == pytest.approx(10.5 / n) and m["ate_rmse"] < 1e-9
    f = (n - 1) / (n * (n - 1) / 2)  # fraction of pairs touching camera 0
    assert m["RRA@5"] == pytest.approx(1 - f) and m["RRA@15"] == 1.0
    assert m["AUC@30"] == pytest.approx(1 - f / 3)  # error 10.5 in every perturbed pair


def test_chamfer_known_offset():
    grid = np.stack(np.meshgrid(*[np.arange(5.0)] * 3, indexing="ij"), -1).reshape(-1, 3)
    assert chamfer_distance(grid, grid) == 0.0
    assert chamfer_distance(grid, grid + [0.1, 0, 0]) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        chamfer_distance(grid, np.zeros((0, 3)))


def test_camera_jitter_static_vs_jittered():
    rig = _cameras(3)
    static = np.broadcast_to(rig, (6, 3, 3, 4)).copy()
    j0 = camera_jitter(static)
    assert j0["center_max"] == 0 and j0["rotation_max_deg"] == 0
    rng = np.random.default_rng(0)
    means = []
    for sigma in (0.01, 0.1):
        noisy = static.copy()
        noisy[..., 3] += rng.normal(size=noisy[..., 3].shape) * sigma
        means.append(camera_jitter(noisy)["center_mean"])
    assert 0 < means[0] < means[1]
    turned = static.copy()
    turned[2, 1, :, :3] = _rot([0, 1, 0], 2.0) @ turned[2, 1, :, :3]
    j = camera_jitter(turned)
    assert j["rotation_max_deg"] == pytest.approx(2.0) and j["per_view_rotation_mean_deg"][0] == 0.0
    assert camera_jitter(static[:1])["center_mean"] == 0.0


def test_mask_iou():
    gt = np.zeros((8, 8))
    gt[:4, :4] = 1
    pred = np.zeros((8, 8))
    pred[:4] = 0.9
    assert mask_iou(pred, gt) == pytest.approx(0.5)
    assert mask_iou(gt, gt.astype(bool)) == 1.0 and mask_iou(np.zeros(4), np.zeros(4)) == 1.0


def test_evaluate_synthetic_perfect_and_perturbed():
    rec = make_synthetic_reconstruction(num_timesteps=3, num_views=3, height=14, width=21)
    m = evaluate(rec)
    assert set(m) == {"depth", "camera", "points_depth", "points_head", "jitter", "mask"}
    assert m["depth"]["abs_rel"] < 1e-6 and m["depth"]["abs_rel_dynamic"] < 1e-6
    assert m["camera"]["AUC@30"] == 1.0 and m["camera"]["sim3_scale"] == pytest.approx(2.0)
    assert m["points_depth"]["chamfer"] < 1e-5 and m["mask"]["iou"] == 1.0 and m["jitter"]["center_max"] < 1e-6
    flat = flatten_metrics(m)
    assert flat["camera/AUC@30"] == 1.0 and "jitter/per_view_center_mean" not in flat

    depth = rec.depth.copy()
    depth[rec.dynamic_mask > 0.5] *= 1.1  # the moving box is 10% too far
    bad = Reconstruction(rec.images, depth, rec.depth_conf, rec.world_points, rec.world_points_conf,
                         rec.extrinsic, rec.intrinsic, rec.dynamic_mask, meta=rec.meta, gt=rec.gt)
    mb = evaluate(bad)
    assert mb["depth"]["abs_rel_dynamic"] == pytest.approx(0.1, rel=1e-4) and mb["depth"]["abs_rel_static"] < 1e-6
    assert mb["points_depth"]["chamfer"] > 1e-3 and mb["points_head"]["chamfer"] < 1e-5
    gt4 = dict(rec.gt, extrinsic=np.concatenate([rec.gt["extrinsic"], np.broadcast_to([0, 0, 0, 1.0], (3, 3, 1, 4))], 2))
    r4 = Reconstruction(rec.images, rec.depth, rec.depth_conf, None, None, rec.extrinsic, rec.intrinsic, gt=gt4)
    assert evaluate(r4)["camera"]["AUC@30"] == 1.0
    no_gt = Reconstruction(rec.images, rec.depth, None, None, None, rec.extrinsic, rec.intrinsic)
    assert evaluate(no_gt) == {}
