"""Reconstruction object + geometry helpers on an analytic synthetic scene."""

from __future__ import annotations

import numpy as np
import pytest

from vggt_mv.eval.synthetic import make_synthetic_reconstruction
from vggt_mv.inference.geometry import (
    camera_centers,
    closed_form_inverse_se3,
    from_homogeneous,
    project_points,
    quat_to_rotmat,
    rotation_angle_deg,
    rotmat_to_quat,
    to_homogeneous,
    unproject_depth,
)
from vggt_mv.inference.reconstruction import Reconstruction


def _random_rotations(n: int, rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=(n, 4))
    return quat_to_rotmat(q / np.linalg.norm(q, axis=1, keepdims=True))


@pytest.fixture(scope="module")
def rec() -> Reconstruction:
    return make_synthetic_reconstruction(num_timesteps=3, num_views=3, height=24, width=32)


def test_se3_helpers_roundtrip():
    rng = np.random.default_rng(0)
    ext = np.concatenate([_random_rotations(5, rng), rng.normal(size=(5, 3, 1))], axis=2)
    hom = to_homogeneous(ext)
    assert hom.shape == (5, 4, 4) and np.allclose(hom[:, 3], [0, 0, 0, 1])
    assert np.allclose(from_homogeneous(hom), ext)
    inv = closed_form_inverse_se3(ext)
    assert np.allclose(to_homogeneous(inv) @ hom, np.eye(4), atol=1e-12)
    assert np.allclose(closed_form_inverse_se3(hom), np.linalg.inv(hom), atol=1e-12)
    # centre maps to the camera origin
    c = camera_centers(ext)
    assert np.allclose(np.einsum("nij,nj->ni", ext[:, :, :3], c) + ext[:, :, 3], 0, atol=1e-12)


def test_quaternion_roundtrip_including_half_turns():
    rng = np.random.default_rng(1)
    rots = np.concatenate([_random_rotations(50, rng), np.diag([1.0, -1, -1])[None], np.diag([-1.0, 1, -1])[None],
                           np.diag([-1.0, -1, 1])[None], np.eye(3)[None]])
    q = rotmat_to_quat(rots)
    assert np.allclose(np.linalg.norm(q, axis=1), 1) and (q[:, 0] >= 0).all()
    assert np.allclose(quat_to_rotmat(q), rots, atol=1e-12)
    assert np.allclose(rotation_angle_deg(rots, rots), 0, atol=1e-5)


def test_unproject_then_project_returns_pixels_and_depth():
    rng = np.random.default_rng(2)
    ext = np.concatenate([_random_rotations(2, rng), rng.normal(size=(2, 3, 1))], axis=2)
    k = np.array([[30.0, 0, 16], [0, 28.0, 12], [0, 0, 1]])[None].repeat(2, 0)
    depth = rng.uniform(1, 5, size=(2, 24, 32))
    pts = unproject_depth(depth, k, ext)
    assert pts.shape == (2, 24, 32, 3) and pts.dtype == np.float32
    uv, z = project_points(pts.reshape(2, -1, 3), k, ext)
    v, u = np.meshgrid(np.arange(24), np.arange(32), indexing="ij")
    assert np.allclose(uv[..., 0], u.ravel(), atol=1e-3) and np.allclose(uv[..., 1], v.ravel(), atol=1e-3)
    assert np.allclose(z, depth.reshape(2, -1), rtol=1e-5)


def test_synthetic_depth_is_analytic(rec):
    gt = rec.gt
    pts = unproject_depth(gt["depth"], gt["intrinsic"], gt["extrinsic"])
    wall = ~gt["dynamic_mask"]
    assert np.allclose(pts[wall][:, 2], 6.0, atol=1e-4)  # the wall is the plane z = 6
    box = pts[gt["dynamic_mask"]]
    lo = np.array([-0.5 - 0.45, -0.45, 3.05])
    assert box[:, 1].min() >= lo[1] - 1e-4 and box[:, 2].min() >= lo[2] - 1e-4  # on the box surface
    # prediction: reference camera at the origin, points_from_depth == point head
    assert np.allclose(rec.camera_centers()[0, 0], 0, atol=1e-6)
    assert np.allclose(rec.points_from_depth(), rec.world_points, atol=1e-5)
    assert rec.points_from_depth() is rec.points_from_depth()  # cached


def test_confidence_percentile_keeps_exact_fraction(rec):
    n = rec.depth.size
    conf = np.random.default_rng(3).permutation(n).astype(np.float32).reshape(rec.depth.shape)
    r = Reconstruction(rec.images, rec.depth, conf, rec.world_points, conf, rec.extrinsic, rec.intrinsic)
    for pct in (0, 25, 50, 90):
        assert r.confidence_mask("depth", percentile=pct).sum() == n - int(np.ceil(pct / 100 * (n - 1)))
    assert r.confidence_mask(threshold=1000).sum() == n - 1000
    assert np.array_equal(r.confidence_mask(percentile=25, t=1), r.confidence_mask(percentile=25)[1])
    assert len(r.points(1, conf_percentile=25)[0]) == r.confidence_mask(percentile=25)[1].sum()
    with pytest.raises(ValueError):
        r.confidence_mask(percentile=120)
    both = r.confidence_mask("points", percentile=50, threshold=5000)
    assert both.sum() == n - 5000 and both.dtype == bool and both.shape == rec.depth.shape


def test_confidence_mask_drops_invalid_depth(rec):
    depth = rec.depth.copy()
    depth[0, 0, 0, :4] = [0.0, -1.0, np.nan, np.inf]
    r = Reconstruction(rec.images, depth, rec.depth_conf, None, None, rec.extrinsic, rec.intrinsic)
    keep = r.confidence_mask("depth")
    assert keep.sum() == depth.size - 4 and not keep[0, 0, 0, :4].any()
    assert r.confidence_mask("points").sum() == depth.size - 2  # zero/negative depth still finite points


def test_points_per_timestep_and_colors(rec):
    h, w = rec.image_size
    xyz, rgb = rec.points(1)
    assert xyz.shape == (3 * h * w, 3) and rgb.shape == (3 * h * w, 3) and rgb.dtype == np.uint8
    assert np.array_equal(rgb, rec.images[1].reshape(-1, 3))
    xyz0, _ = rec.points(1, views=[0], source="points")
    assert np.allclose(xyz0, rec.world_points[1, 0].reshape(-1, 3))
    xyz_p, _ = rec.points(0, conf_percentile=50)
    assert len(xyz_p) < len(xyz)
    _, mask_rgb = rec.points(1, color_by="mask")
    dyn = rec.dynamic_mask[1].reshape(-1) > 0.5
    assert (mask_rgb[dyn] == [255, 48, 48]).all() and (mask_rgb[~dyn, 0] == mask_rgb[~dyn, 1]).all()
    with pytest.raises(IndexError):
        rec.points(7)


def test_static_dynamic_split(rec):
    mask = rec.dynamic_mask > 0.5
    xyz_s, rgb_s = rec.static_background(voxel_size=0)
    assert len(xyz_s) == (~mask).sum() and len(rgb_s) == len(xyz_s)
    for t in range(rec.num_timesteps):
        xyz_d, _ = rec.dynamic_points(t)
        assert len(xyz_d) == mask[t].sum() > 0
        assert len(xyz_d) + len(rec.select(t, dynamic="static").nonzero()[0]) == mask[t].size
    xyz_v, _ = rec.static_background(voxel_size=0.2)
    assert 0 < len(xyz_v) < len(xyz_s)
    auto, _ = rec.static_background()
    assert 0 < len(auto) <= len(xyz_s)
    no_mask = Reconstruction(rec.images, rec.depth, rec.depth_conf, None, None, rec.extrinsic, rec.intrinsic)
    assert len(no_mask.dynamic_points(0)[0]) == 0
    assert len(no_mask.static_background(voxel_size=0)[0]) == rec.depth.size


def test_patch_grid_mask_is_upsampled(rec):
    t, v, h, w = rec.depth.shape
    grid = np.zeros((t, v, h // 4, w // 4), np.float32)
    grid[..., :, : w // 8] = 1.0
    r = Reconstruction(rec.images, rec.depth, None, None, None, rec.extrinsic, rec.intrinsic, dynamic_mask=grid)
    assert r.dynamic_mask.shape == (t, v, h, w)
    assert (r.dynamic_mask[..., :, :2] == 1).all() and (r.dynamic_mask[..., :, -2:] == 0).all()


def test_mask_is_clipped_only_when_needed(rec):
    t, v, h, w = rec.depth.shape
    in_range = np.full((t, v, h, w), 0.25, np.float32)
    r = Reconstruction(rec.images, rec.depth, None, None, None, rec.extrinsic, rec.intrinsic, dynamic_mask=in_range)
    assert np.shares_memory(r.dynamic_mask, in_range)  # no sequence-sized copy
    wild = np.linspace(-1.0, 2.0, t * v * h * w, dtype=np.float32).reshape(t, v, h, w)
    r = Reconstruction(rec.images, rec.depth, None, None, None, rec.extrinsic, rec.intrinsic, dynamic_mask=wild)
    assert r.dynamic_mask.min() == 0.0 and r.dynamic_mask.max() == 1.0
    assert wild.min() == -1.0 and not np.shares_memory(r.dynamic_mask, wild)  # the input is left alone


def test_shape_validation_and_defaults(rec):
    with pytest.raises(ValueError, match="extrinsic"):
        Reconstruction(rec.images, rec.depth, None, None, None, rec.extrinsic[:, :2], rec.intrinsic)
    with pytest.raises(ValueError, match="view_names"):
        Reconstruction(rec.images, rec.depth, None, None, None, rec.extrinsic, rec.intrinsic, view_names=["a"])
    floats = rec.images.astype(np.float32) / 255.0
    r = Reconstruction(np.moveaxis(floats, -1, 2), rec.depth[..., None], None, None, None, rec.extrinsic, rec.intrinsic)
    assert np.array_equal(r.images, rec.images) and r.depth.shape == rec.depth.shape
    assert r.view_names == ["cam0", "cam1", "cam2"] and (r.depth_conf == 1).all()


def test_scene_scale_and_clean(rec):
    scale = rec.scene_scale()
    assert 1.0 < scale < 10.0  # wall at ~3 units (pred scale 0.5) from a rig 1 unit wide
    xyz, rgb = rec.points(0)
    noisy = np.concatenate([xyz, [[100.0, 100.0, 100.0]]]).astype(np.float32)
    colors = np.concatenate([rgb, [[1, 2, 3]]]).astype(np.uint8)
    clean_xyz, clean_rgb = Reconstruction.clean(noisy, None, 10, 2.0, colors=colors)
    assert not (clean_xyz > 50).any() and len(clean_xyz) == len(clean_rgb) and len(clean_xyz) > 0.9 * len(xyz)
    down, none_rgb = Reconstruction.clean(noisy, voxel_size=0.3)
    assert none_rgb is None and len(down) < len(xyz)
