"""Data layer: synthetic generator, load_scene layouts and errors, VGGT preprocessing."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from vggt_mv.data import (SyntheticSceneConfig, default_resolution, load_scene, natural_sorted,
                          plan_preprocess, render_scene, resize_masks_to_patches, scene_from_arrays,
                          write_scene)
from vggt_mv.data.preprocess import check_resolution

ROOT = Path(__file__).resolve().parents[1]
CFG = SyntheticSceneConfig(T=6, V=3, H=126, W=168)


@pytest.fixture(scope="module")
def syn():
    return render_scene(CFG, seed=3)


def _write_png(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def _cam_folders(root: Path, syn, n_frames: list[int] | None = None) -> list[Path]:
    """Write frames as root/camV/frameT.png (names that sort wrongly lexicographically)."""
    cams = []
    for v in range(syn.images.shape[1]):
        d = root / f"cam{v}"
        for t in range(n_frames[v] if n_frames else syn.images.shape[0]):
            _write_png(d / f"frame{t}.png", syn.images[t, v])
        cams.append(d)
    return cams


# ----------------------------------------------------------------------------- generator

def test_render_deterministic_and_shapes(tmp_path, syn):
    again = render_scene(CFG, seed=3)
    for k in ("images", "depth", "intrinsic", "extrinsic", "dynamic_mask"):
        np.testing.assert_array_equal(getattr(syn, k), getattr(again, k))
    assert syn.images.shape == (6, 3, 126, 168, 3) and syn.images.dtype == np.uint8
    assert syn.depth.shape == (6, 3, 126, 168) and syn.depth.dtype == np.float32
    assert syn.intrinsic.shape == (6, 3, 3, 3) and syn.extrinsic.shape == (6, 3, 3, 4)
    assert syn.dynamic_mask.dtype == bool and 0.005 < syn.dynamic_mask.mean() < 0.5
    assert not np.array_equal(render_scene(CFG, seed=4).images, syn.images)
    # something moves: the masks change over time, the static background does not
    assert not np.array_equal(syn.dynamic_mask[0], syn.dynamic_mask[-1])
    static = ~syn.dynamic_mask[0] & ~syn.dynamic_mask[-1]
    np.testing.assert_array_equal(syn.depth[0][static], syn.depth[-1][static])
    a, b = write_scene(syn, tmp_path / "a"), write_scene(again, tmp_path / "b")
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 6 * 3 * 4 + 6 * 3
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


def test_render_is_fast():
    cfg = SyntheticSceneConfig(T=8, V=3, H=126, W=168)
    render_scene(cfg, seed=0)
    t0 = time.perf_counter()
    render_scene(cfg, seed=1)
    assert time.perf_counter() - t0 < 1.0  # ~0.06 s on one core; loose bound for slow CI


def test_gt_depth_reprojects_across_views(syn):
    """Unproject view-0 depth with K/[R|t], project into view 1: depths agree on static pixels."""
    t = 0
    K0, K1 = syn.intrinsic[t, 0].astype(np.float64), syn.intrinsic[t, 1].astype(np.float64)
    E0, E1 = syn.extrinsic[t, 0].astype(np.float64), syn.extrinsic[t, 1].astype(np.float64)
    H, W = syn.depth.shape[2:]
    v, u = np.mgrid[0:H, 0:W]
    d0 = syn.depth[t, 0]
    ok = (d0 > 0) & ~syn.dynamic_mask[t, 0]
    pix = np.stack([u[ok], v[ok], np.ones(ok.sum())], 0)
    cam0 = np.linalg.inv(K0) @ pix * d0[ok]
    world = E0[:, :3].T @ (cam0 - E0[:, 3:])
    cam1 = E1[:, :3] @ world + E1[:, 3:]
    proj = K1 @ cam1
    u1, v1 = np.round(proj[0] / proj[2]).astype(int), np.round(proj[1] / proj[2]).astype(int)
    inb = (cam1[2] > 0) & (u1 >= 0) & (u1 < W) & (v1 >= 0) & (v1 < H)
    u1, v1, z = u1[inb], v1[inb], cam1[2][inb]
    d1 = syn.depth[t, 1][v1, u1]
    static1 = ~syn.dynamic_mask[t, 1][v1, u1]
    rel = (z - d1)[static1] / d1[static1]
    assert inb.mean() > 0.5
    assert (np.abs(rel) < 0.01).mean() > 0.85          # visible in both views: same point
    assert (rel < -0.03).mean() < 0.02                 # never in front of view 1's surface


# ----------------------------------------------------------------------------- layouts

def test_natural_sort():
    names = ["frame10.png", "frame2.png", "frame1.png", "Frame3.png"]
    assert natural_sorted(names) == ["frame1.png", "frame2.png", "Frame3.png", "frame10.png"]


def test_load_camera_folders_natural_order(tmp_path, syn, caplog):
    cams = _cam_folders(tmp_path, syn)
    (cams[0] / "notes.txt").write_text("not an image")
    np.save(cams[0] / "extra.npy", np.zeros(3))
    with caplog.at_level(logging.DEBUG, logger="vggt_mv.data"):
        sc = load_scene(cams, resolution=168)
    assert "non-image" in caplog.text
    assert (sc.T, sc.V, sc.H, sc.W) == (6, 3, 126, 168)
    assert sc.images.dtype == torch.float32 and tuple(sc.images.shape) == (6, 3, 3, 126, 168)
    want = torch.from_numpy(syn.images).permute(0, 1, 4, 2, 3).float() / 255
    assert torch.equal(sc.images, want)  # identity resize: exact, and frame order frame2 < frame10
    assert sc.frame_names == [f"frame{t}" for t in range(6)] and sc.view_names == ["cam0", "cam1", "cam2"]
    assert sc.gt is None and sc.ext_masks is None and sc.source["layout"] == "frame_folders"
    # same cameras through a scene root, with per-camera masks under root/masks/<cam>
    for v in range(3):
        for t in range(6):
            d = tmp_path / "masks" / f"cam{v}"
            d.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(d / f"{t:03d}.png"), syn.dynamic_mask[t, v].astype(np.uint8) * 255)
    sr = load_scene(tmp_path, resolution=168, frame_range=(1, 6), stride=2)
    assert sr.source["layout"] == "camera_root" and sr.frame_names == ["frame1", "frame3", "frame5"]
    assert torch.equal(sr.images, want[1:6:2])
    np.testing.assert_array_equal(sr.ext_masks.numpy() > 0.5, syn.dynamic_mask[1:6:2])


def test_cameras_with_the_same_folder_name_get_distinct_names(tmp_path, syn, caplog):
    """A/rgb and B/rgb: the views are named A_rgb and B_rgb (COLMAP image folders and cameras.json
    would otherwise mix the two cameras); the same folder twice is numbered, with a warning."""
    folders = []
    for v, rig in enumerate(("A", "B")):
        for t in range(2):
            _write_png(tmp_path / rig / "rgb" / f"{t}.png", syn.images[t, v])
        folders.append(tmp_path / rig / "rgb")
    assert load_scene(folders, resolution=168).view_names == ["A_rgb", "B_rgb"]
    with caplog.at_level(logging.WARNING, logger="vggt_mv.data"):
        names = load_scene([folders[0], folders[0]], resolution=168).view_names
    assert names == ["A_rgb", "A_rgb_2"] and "more than once" in caplog.text


def test_load_videos(tmp_path, syn):
    vids = []
    for v in range(3):
        p = tmp_path / f"cam{v}.mp4"
        w = cv2.VideoWriter(str(p), cv2.VideoWriter_fourcc(*"mp4v"), 10, (168, 126))
        assert w.isOpened()
        for t in range(6):
            w.write(cv2.cvtColor(syn.images[t, v], cv2.COLOR_RGB2BGR))
        w.release()
        vids.append(p)
    sc = load_scene(vids, resolution=168, stride=2)
    assert tuple(sc.images.shape) == (3, 3, 3, 126, 168) and sc.source["layout"] == "videos"
    want = torch.from_numpy(syn.images[::2]).permute(0, 1, 4, 2, 3).float() / 255
    assert (sc.images - want).abs().mean() < 0.06  # lossy codec
    s252 = load_scene(tmp_path, resolution=252)   # root of videos named cam*
    assert (s252.T, s252.V, s252.W) == (6, 3, 252) and s252.H % 14 == 0


def test_load_dump_with_gt(tmp_path, syn):
    root = write_scene(syn, tmp_path / "dump")
    sc = load_scene(root, resolution=168)
    assert sc.source["layout"] == "dump" and sc.view_names == ["view0", "view1", "view2"]
    assert sc.frame_names == [f"time_{t:02d}" for t in range(6)]
    np.testing.assert_array_equal(sc.gt.depth, syn.depth)
    np.testing.assert_allclose(sc.gt.intrinsic, syn.intrinsic, atol=1e-5)
    np.testing.assert_array_equal(sc.gt.extrinsic, syn.extrinsic)
    np.testing.assert_array_equal(sc.gt.dynamic_mask, syn.dynamic_mask)
    assert sc.ext_masks.shape == (6, 3, 126, 168) and sc.ext_masks.dtype == torch.float32
    # lower resolution: everything transformed consistently, fields keep their shapes
    lo = load_scene(root, resolution=112, frame_range=(2, None))
    assert lo.images.shape[-2:] == (84, 112) and lo.gt.depth.shape == (4, 3, 84, 112)
    assert lo.gt.dynamic_mask.shape == (4, 3, 84, 112) and lo.ext_masks.shape == (4, 3, 84, 112)
    np.testing.assert_allclose(lo.gt.intrinsic[0, 0, 0, 0], syn.intrinsic[0, 0, 0, 0] * 112 / 168, rtol=1e-6)
    mem = scene_from_arrays(syn.images, depth=syn.depth, intrinsic=syn.intrinsic,
                            extrinsic=syn.extrinsic, dynamic_mask=syn.dynamic_mask, resolution=112)
    assert mem.T == 6 and mem.source["layout"] == "arrays"
    ts = syn.to_scene(resolution=112)
    assert torch.equal(ts.images, mem.images) and tuple(ts.ext_masks.shape) == (6, 3, 84, 112)
    np.testing.assert_allclose(mem.gt.intrinsic[2:], lo.gt.intrinsic, atol=1e-5)
    assert torch.allclose(mem.images[2:], lo.images, atol=1 / 255 + 1e-6)


def test_shipped_sample_loads():
    sc = load_scene(ROOT / "assets" / "sample", resolution=224)
    assert (sc.T, sc.V, sc.H, sc.W) == (10, 3, 168, 224)
    assert sc.gt is not None and all(getattr(sc.gt, k) is not None
                                     for k in ("depth", "intrinsic", "extrinsic", "dynamic_mask"))
    assert sc.ext_masks is not None and 0.005 < float(sc.ext_masks.mean()) < 0.5
    assert (sc.gt.depth > 0).mean() > 0.9
    json.dumps(sc.source)  # goes into run manifests
    d = load_scene(ROOT / "assets" / "sample")  # default CPU resolution
    assert d.W == default_resolution("cpu") == 252


# ----------------------------------------------------------------------------- errors

def test_frame_count_mismatch_truncates_and_logs(tmp_path, syn, caplog):
    cams = _cam_folders(tmp_path, syn, n_frames=[6, 4, 5])
    with caplog.at_level(logging.WARNING, logger="vggt_mv.data"):
        sc = load_scene(cams, resolution=168)
    assert sc.T == 4 and sc.source["truncated"]["to"] == 4
    assert "cam0=6" in caplog.text and "cam1=4" in caplog.text and "cam2=5" in caplog.text


def test_corrupt_image_names_file(tmp_path, syn):
    cams = _cam_folders(tmp_path, syn)
    (cams[1] / "frame3.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(ValueError, match=r"frame3\.png"):
        load_scene(cams, resolution=168)


def test_mixed_sizes_names_both_files(tmp_path, syn):
    cams = _cam_folders(tmp_path, syn)
    _write_png(cams[2] / "frame4.png", syn.images[4, 2][:100, :150])
    with pytest.raises(ValueError, match=r"frame0\.png.*frame4\.png") as e:
        load_scene(cams, resolution=168)
    assert "150x100" in str(e.value) and "168x126" in str(e.value)


def test_empty_folder_names_folder(tmp_path, syn):
    cams = _cam_folders(tmp_path, syn)
    empty = tmp_path / "cam_empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match="cam_empty"):
        load_scene([cams[0], empty], resolution=168)
    with pytest.raises(ValueError, match="does not exist"):
        load_scene([tmp_path / "nope", cams[0]])


def test_mask_folder_mismatch_names_folder(tmp_path, syn):
    cams = _cam_folders(tmp_path, syn)
    mdirs = []
    for v in range(3):
        d = tmp_path / f"m{v}"
        d.mkdir()
        for t in range(6 if v != 1 else 5):
            cv2.imwrite(str(d / f"{t:03d}.png"), syn.dynamic_mask[t, v].astype(np.uint8) * 255)
        mdirs.append(d)
    with pytest.raises(ValueError, match=r"m1.*5 masks"):
        load_scene(cams, masks=mdirs, resolution=168)
    cv2.imwrite(str(mdirs[1] / "005.png"), np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match=r"005\.png.*m1"):
        load_scene(cams, masks=mdirs, resolution=168)
    with pytest.raises(ValueError, match=r"mask folder .*nomask.* does not exist"):
        load_scene(cams, masks=[mdirs[0], tmp_path / "nomask", mdirs[2]], resolution=168)
    with pytest.raises(ValueError, match="one mask folder per camera"):
        load_scene(cams, masks=mdirs[:2], resolution=168)
    with pytest.raises(ValueError, match="multiple of 14"):
        load_scene(cams, resolution=250)


# ----------------------------------------------------------------------------- preprocessing

@pytest.mark.parametrize("mode,hw", [("crop", (300, 400)), ("crop", (500, 300)),
                                     ("pad", (300, 400)), ("pad", (400, 300))])
def test_preprocess_keeps_intrinsics_consistent(mode, hw):
    """Render a blob at the projection of a 3D point; after preprocessing its centroid is at
    the projection through the transformed intrinsics."""
    h, w = hw
    K = np.array([[0.9 * w, 0, 0.47 * w], [0, 0.85 * w, 0.55 * h], [0, 0, 1]])
    P = np.array([0.13, -0.07, 2.0])
    uv = (K @ P)[:2] / P[2]
    yy, xx = np.mgrid[0:h, 0:w]
    blob = np.exp(-((xx - uv[0]) ** 2 + (yy - uv[1]) ** 2) / (2 * 7.0 ** 2))
    img = np.repeat((255 * (1 - blob))[..., None], 3, 2).round().astype(np.uint8)  # dark blob, white bg
    plan = plan_preprocess(h, w, mode, 252)
    out = plan.apply_image(img)
    H, W = plan.out_hw
    assert H % 14 == 0 and W % 14 == 0 and max(H, W) <= 252
    if mode == "pad":
        assert (H, W) == (252, 252) and np.allclose(out[0, 0], 1.0) and np.allclose(out[-1, -1], 1.0)
    Kp = plan.apply_intrinsic(K)
    uvp = (Kp @ P)[:2] / P[2]
    np.testing.assert_allclose(plan.apply_pixels(uv), uvp, atol=1e-4)
    wgt = 1 - out[..., 0]
    Y, X = np.mgrid[0:H, 0:W]
    cen = np.array([(wgt * X).sum(), (wgt * Y).sum()]) / wgt.sum()
    np.testing.assert_allclose(cen, uvp, atol=0.08)
    dm = plan.apply_depth(np.full((h, w), 2.0, np.float32))
    assert dm.shape == (H, W) and set(np.unique(dm)) <= {0.0, 2.0}


def test_crop_matches_vggt_rule():
    p = plan_preprocess(480, 640, "crop", 518)
    assert p.resized_hw == (392, 518) and p.out_hw == (392, 518)
    p = plan_preprocess(640, 360, "crop", 518)  # portrait: resized height 924 -> centre crop
    assert p.resized_hw == (924, 518) and p.out_hw == (518, 518) and p.crop_xy == (0, 203)
    p = plan_preprocess(480, 640, "pad", 518)
    assert p.resized_hw == (392, 518) and p.pad_ltrb == (0, 63, 0, 63)


def test_resize_masks_to_patches_and_resolution():
    m = torch.zeros(2, 3, 28, 42)
    m[..., :14, :7] = 1
    m[..., 14:, 28:] = 1
    pooled = resize_masks_to_patches(m)
    assert pooled.shape == (2, 3, 2, 3)
    assert torch.allclose(pooled[0, 0], torch.tensor([[0.5, 0, 0], [0, 0, 1.0]]))
    np.testing.assert_allclose(resize_masks_to_patches(m.numpy().astype(bool)), pooled.numpy())
    with pytest.raises(ValueError, match="multiple"):
        resize_masks_to_patches(torch.zeros(20, 28))
    assert default_resolution("cuda:0") == 518 and default_resolution("cpu") == 252
    assert check_resolution(392) == 392


def test_other_layouts_and_padding(tmp_path, syn):
    # time_XX/viewN.png directly under the root, plus a separate GT dynamic-mask folder
    root = tmp_path / "flat"
    for t in range(3):
        for v in range(3):
            _write_png(root / f"time_{t:02d}" / f"view{v}.png", syn.images[t, v])
            p = root / "dynamic_masks" / f"time_{t:02d}" / f"view{v}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(p), syn.dynamic_mask[t, v].astype(np.uint8))  # 0/1 encoding
    sc = load_scene(root, resolution=168)
    assert sc.source["layout"] == "dump" and sc.T == 3 and sc.ext_masks is None
    assert sc.gt.depth is None and sc.source["gt"]["dynamic_mask"] is True
    np.testing.assert_array_equal(sc.gt.dynamic_mask, syn.dynamic_mask[:3])
    # view*/ root whose cameras have different aspect ratios: padded white to a common size
    vr = tmp_path / "vroot"
    for t in range(3):
        _write_png(vr / "view0" / f"{t}.png", syn.images[t, 0])
        _write_png(vr / "view1" / f"{t}.png", syn.images[t, 1][:, 20:148])   # 126x128
    s2 = load_scene(vr, resolution=140)
    assert s2.view_names == ["view0", "view1"] and s2.source["layout"] == "camera_root"
    assert (s2.H, s2.W) == (140, 140)  # view1 crops to 140x140, view0 (112x140) is padded
    assert torch.all(s2.images[:, 0, :, :14] == 1.0)
    pad = load_scene(vr, resolution=140, mode="pad")
    assert (pad.H, pad.W) == (140, 140)


@pytest.mark.parametrize("mode", ["crop", "pad"])
def test_preprocess_plan_round_trips_through_its_dict(mode):
    from vggt_mv.data.preprocess import PreprocessPlan, plan_preprocess

    plan = plan_preprocess(480, 640, mode, 252)
    plan = plan.padded_to(252, 252) if mode == "pad" else plan
    again = PreprocessPlan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again == plan and again.scale_xy == plan.scale_xy
