"""Save / load round trip, atomicity, PLY / GLB / COLMAP / cameras.json contents."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import vggt_mv.export.bundle as bundle
from vggt_mv.eval.synthetic import make_synthetic_reconstruction
from vggt_mv.export import (
    read_cameras_json,
    read_colmap_cameras,
    read_colmap_images,
    read_colmap_points,
    read_ply,
)
from vggt_mv.export.atomic import atomic_file
from vggt_mv.export.colmap import image_name
from vggt_mv.inference.reconstruction import ARRAY_FIELDS, Reconstruction


@pytest.fixture(scope="module")
def rec() -> Reconstruction:
    r = make_synthetic_reconstruction(num_timesteps=2, num_views=3, height=14, width=28)
    r.meta.update({"weights": {"checkpoint": "page4d.pt"}, "lambdas": {"lambda_pose": 0.5}, "timings": [1.5, 2.0]})
    return r


def _assert_same(a: Reconstruction, b: Reconstruction) -> None:
    for name in ARRAY_FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype and np.array_equal(x, y, equal_nan=True), name
    assert a.view_names == b.view_names and a.meta == b.meta
    assert (a.gt is None) == (b.gt is None)
    for key in (a.gt or {}):
        assert np.array_equal(a.gt[key], b.gt[key]) and a.gt[key].dtype == b.gt[key].dtype


def test_save_load_roundtrip_exact(rec, tmp_path):
    out = rec.save(tmp_path / "run")
    files = sorted(os.listdir(out))
    assert files == ["arrays", "cameras.json", "colmap", "manifest.json", "points", "scene.glb"]
    loaded = Reconstruction.load(out)
    _assert_same(rec, loaded)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format_version"] == bundle.FORMAT_VERSION == 2
    assert manifest["meta"]["lambdas"] == {"lambda_pose": 0.5} and "points/t001.ply" in manifest["files"]
    assert manifest["arrays"]["depth"]["shape"] == list(rec.depth.shape)
    assert "arrays/world_points.npy" in manifest["files"]
    # format 2 arrays are memory-mapped copy-on-write: editing a loaded result never touches its files
    assert isinstance(loaded.depth.base, np.memmap) or isinstance(loaded.depth, np.memmap)
    loaded.depth[0, 0, 0, 0] = -7.0
    _assert_same(rec, Reconstruction.load(out))


def test_format_1_results_still_load(rec, tmp_path):
    """A result written before format 2 (arrays in reconstruction.npz) loads with the same arrays."""
    out = rec.save(tmp_path / "new")
    old = tmp_path / "old"
    old.mkdir()
    manifest = json.loads((out / "manifest.json").read_text())
    arrays = {f.stem: np.load(f) for f in (out / "arrays").glob("*.npy")}
    np.savez(old / "reconstruction.npz", **arrays, view_names=np.array(rec.view_names, dtype=np.str_))
    manifest["format_version"] = 1
    (old / "manifest.json").write_text(json.dumps(manifest))
    _assert_same(rec, Reconstruction.load(old))
    _assert_same(rec, Reconstruction.load(old / "reconstruction.npz"))
    assert bundle.has_result_arrays(old) and bundle.has_result_arrays(out)


def test_roundtrip_without_mask_and_gt(rec, tmp_path):
    r = Reconstruction(rec.images, rec.depth, rec.depth_conf, rec.world_points, rec.world_points_conf,
                       rec.extrinsic, rec.intrinsic, view_names=["left", "mid", "right/x"])
    out = r.save(tmp_path / "plain", colmap_images=False, glb=False)
    loaded = Reconstruction.load(out)
    _assert_same(r, loaded)
    assert loaded.dynamic_mask is None and loaded.gt is None
    assert "right_x/t0001.png" in read_colmap_images(out / "colmap" / "images.txt")


def test_failed_save_leaves_no_partial_output(rec, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(bundle, "write_glb", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        rec.save(tmp_path / "run")
    assert os.listdir(tmp_path) == []  # neither the output nor a temp folder remains

    monkeypatch.undo()
    rec.save(tmp_path / "run", colmap=False)
    before = sorted(os.listdir(tmp_path / "run"))
    monkeypatch.setattr(bundle, "write_cameras_json", boom)
    with pytest.raises(RuntimeError):
        rec.save(tmp_path / "run")
    assert os.listdir(tmp_path) == ["run"] and sorted(os.listdir(tmp_path / "run")) == before  # old output intact
    with pytest.raises(FileExistsError):
        rec.save(tmp_path / "run", overwrite=False)


def test_atomic_file_keeps_old_content_on_error(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old")
    with pytest.raises(ValueError):
        with atomic_file(path, "w") as handle:
            handle.write("new")
            raise ValueError
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["a.txt"]


def test_ply_and_glb_reload_with_trimesh(rec, tmp_path):
    import trimesh

    out = rec.save(tmp_path / "run", conf_percentile=30)
    keep = rec.confidence_mask("depth", percentile=30)
    for t in range(rec.num_timesteps):
        xyz, rgb = read_ply(out / "points" / f"t{t:03d}.ply")
        ref_xyz, ref_rgb = rec.points(t, conf_percentile=30)
        assert len(xyz) == keep[t].sum() == len(ref_xyz)
        assert np.allclose(xyz, ref_xyz) and np.array_equal(rgb, ref_rgb)
    scene = trimesh.load(out / "scene.glb", file_type="glb")
    geoms = scene.geometry
    assert {f"points_t{t:03d}" for t in range(2)} <= set(geoms) and {"cameras_t000", "cameras_t001"} <= set(geoms)
    for t in range(rec.num_timesteps):
        assert len(geoms[f"points_t{t:03d}"].vertices) == keep[t].sum()
        assert len(geoms[f"cameras_t{t:03d}"].vertices) == 16 * rec.num_views  # 8 segments per frustum


def test_subsampling_and_empty_timestep(rec, tmp_path):
    conf = rec.depth_conf.copy()
    conf[1] = 0.0  # timestep 1 entirely below the threshold
    r = Reconstruction(rec.images, rec.depth, conf, rec.world_points, conf, rec.extrinsic, rec.intrinsic)
    out = r.save(tmp_path / "sub", conf_threshold=0.5, max_points_per_timestep=100, colmap_images=False)
    assert len(read_ply(out / "points" / "t000.ply")[0]) == 100
    assert len(read_ply(out / "points" / "t001.ply")[0]) == 0


def test_colmap_model_reproduces_cameras(rec, tmp_path):
    out = rec.save(tmp_path / "run", colmap_max_points=500)
    images = read_colmap_images(out / "colmap" / "images.txt")
    cameras = read_colmap_cameras(out / "colmap" / "cameras.txt")
    assert len(images) == len(cameras) == rec.num_timesteps * rec.num_views
    h, w = rec.image_size
    for t in range(rec.num_timesteps):
        for v in range(rec.num_views):
            name = image_name(rec.view_names[v], t)
            image_id, ext, cam_id = images[name]
            assert np.allclose(ext, rec.extrinsic[t, v], atol=1e-6)
            model, cw, ch, params = cameras[cam_id]
            k = rec.intrinsic[t, v]
            assert (model, cw, ch) == ("PINHOLE", w, h)
            assert np.allclose(params, [k[0, 0], k[1, 1], k[0, 2], k[1, 2]])
            assert (out / "colmap" / "images" / name).is_file()
    xyz, rgb = read_colmap_points(out / "colmap" / "points3D.txt")
    n_static_conf = rec.select(None, conf_percentile=50, dynamic="static").sum()
    assert len(xyz) == min(500, n_static_conf) and np.isfinite(xyz).all() and rgb.shape == (len(xyz), 3)


def test_cameras_json(rec, tmp_path):
    out = rec.save(tmp_path / "run", colmap=False, glb=False, ply=False)
    ext, intr, names = read_cameras_json(out / "cameras.json")
    assert np.allclose(ext, rec.extrinsic) and np.allclose(intr, rec.intrinsic) and names == rec.view_names
    data = json.loads((out / "cameras.json").read_text())
    cam = data["cameras"][4]
    c2w = np.array(cam["camera_to_world"])
    assert np.allclose(c2w @ np.vstack([np.array(cam["extrinsic"]), [0, 0, 0, 1]]), np.eye(4), atol=1e-6)
    assert (cam["width"], cam["height"]) == (rec.image_size[1], rec.image_size[0])
