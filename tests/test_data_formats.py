"""Training-data readers: each format written in its own layout/units/axes reads back to the GT,
and what the reader returns is geometrically consistent across views (independently of the writer)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from data_writers import write_dexycb, write_kubric_mv, write_mvtracker_npz, write_panoptic

from vggt_mv.data.formats import detect_format, open_source, parse_spec
from vggt_mv.data.formats.base import Clip
from vggt_mv.data.synthetic import SyntheticSceneConfig, render_scene, write_scene

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "assets" / "sample"


@pytest.fixture(scope="module")
def scene():
    return render_scene(SyntheticSceneConfig(T=3, V=3, H=56, W=70), seed=11)


def geometric_check(clip: Clip, t: int, a: int, b: int, abs_tol: float = 0.0) -> dict:
    """Unproject view ``a``'s depth (its K, extrinsic), project into view ``b`` and compare with
    ``b``'s depth there (inverse depth interpolated bilinearly: exact on planes) where ``b`` is
    smooth (all second differences of its inverse depth ~0 around the 2x2 cell). Points behind
    ``b``'s surface are occluded; none may lie in front of it (``see_through``)."""
    Ka, Ea, Za = clip.intrinsic[t, a], clip.extrinsic[t, a], clip.depth[t, a].astype(np.float64)
    Kb, Eb, Zb = clip.intrinsic[t, b], clip.extrinsic[t, b], clip.depth[t, b].astype(np.float64)
    H, W = Zb.shape
    vv, uu = np.nonzero(Za > 0)
    z = Za[vv, uu]
    cam = np.stack([(uu - Ka[0, 2]) / Ka[0, 0] * z, (vv - Ka[1, 2]) / Ka[1, 1] * z, z], 1)
    X = (cam - Ea[:, 3]) @ Ea[:, :3]
    Xb = X @ Eb[:, :3].T + Eb[:, 3]
    zp = Xb[:, 2]
    front = zp > 1e-6
    u = np.where(front, Kb[0, 0] * Xb[:, 0] / np.where(front, zp, 1) + Kb[0, 2], -10)
    v = np.where(front, Kb[1, 1] * Xb[:, 1] / np.where(front, zp, 1) + Kb[1, 2], -10)
    u0, v0 = np.floor(u).astype(int), np.floor(v).astype(int)
    inside = (u0 >= 1) & (v0 >= 1) & (u0 <= W - 3) & (v0 <= H - 3)
    u, v, u0, v0, zp = u[inside], v[inside], u0[inside], v0[inside], zp[inside]
    inv = np.where(Zb > 0, 1.0 / np.where(Zb > 0, Zb, 1), np.nan)
    block = np.stack([inv[v0 + dy, u0 + dx] for dy in range(-1, 3) for dx in range(-1, 3)], 1).reshape(-1, 4, 4)
    d2x = block[:, :, :-2] - 2 * block[:, :, 1:-1] + block[:, :, 2:]
    d2y = block[:, :-2, :] - 2 * block[:, 1:-1, :] + block[:, 2:, :]
    scale = np.nanmax(np.abs(block.reshape(len(block), -1)), axis=1)
    smooth = np.isfinite(block).all((1, 2)) & (np.abs(d2x).max((1, 2)) <= 1e-5 * scale) \
        & (np.abs(d2y).max((1, 2)) <= 1e-5 * scale)
    if abs_tol:  # quantised depth: its second differences are noise of that size
        q = 2 * abs_tol * scale ** 2
        smooth = np.isfinite(block).all((1, 2)) & (np.abs(d2x).max((1, 2)) <= q) & (np.abs(d2y).max((1, 2)) <= q)
    fu, fv = u - u0, v - v0
    c = block[:, 1:3, 1:3]
    inv_b = (c[:, 0, 0] * (1 - fu) * (1 - fv) + c[:, 0, 1] * fu * (1 - fv)
             + c[:, 1, 0] * (1 - fu) * fv + c[:, 1, 1] * fu * fv)
    zb = 1.0 / inv_b[smooth]
    zp = zp[smooth]
    tol = 1e-4 * zb + abs_tol
    err = np.abs(zp - zb)
    visible = zp <= zb + tol
    return {"checked": int(smooth.sum()), "visible": int(visible.sum()),
            "see_through": int((zp < zb - tol).sum()),
            "max_rel_err_visible": float((err[visible] / zb[visible]).max()) if visible.any() else np.inf,
            "max_err_visible": float(err[visible].max()) if visible.any() else np.inf}


def assert_geometry(clip: Clip, abs_tol: float = 0.0) -> None:
    T, V = clip.shape[:2]
    for t in (0, T - 1):
        for a in range(V):
            b = (a + 1) % V
            r = geometric_check(clip, t, a, b, abs_tol)
            assert r["checked"] > 300, r
            assert r["see_through"] == 0, r
            assert r["visible"] >= 0.5 * r["checked"], r
            if abs_tol:
                assert r["max_err_visible"] <= 1.5 * abs_tol, r  # quantisation of both depths
            else:
                assert r["max_rel_err_visible"] <= 1e-4, r


def read_all(path, fmt: str | None = None) -> tuple[str, Clip]:
    src = open_source(f"{fmt}:{path}" if fmt else str(path))
    assert len(src.sequences) == 1
    seq = src.sequences[0]
    return src.format, seq.read(list(range(seq.num_frames)), list(range(seq.num_views)))


def assert_gt(clip: Clip, scene, depth=None, image_atol: float = 0.0) -> None:
    assert np.abs(clip.extrinsic - scene.extrinsic).max() <= 1e-5
    assert np.abs(clip.intrinsic - scene.intrinsic).max() <= 1e-5
    assert np.abs(clip.depth - (scene.depth if depth is None else depth)).max() <= 1e-5
    assert np.abs(clip.images - scene.images / 255.0).max() <= image_atol + 1e-7
    if clip.dynamic_mask is not None:
        assert np.array_equal(clip.dynamic_mask, scene.dynamic_mask.astype(np.float32))


# ----------------------------------------------------------------------------- the check itself

def test_geometric_check_catches_convention_slips(scene):
    good = Clip(scene.images / 255.0, scene.depth, scene.intrinsic.astype(np.float64),
                scene.extrinsic.astype(np.float64), None)
    assert_geometry(good)
    half_px = good.intrinsic.copy()
    half_px[..., :2, 2] += 0.5                      # pixel corners instead of centres
    gl = good.extrinsic * np.array([1, -1, -1])[:, None]  # OpenGL camera axes kept
    ray = scene.depth * 1.02                        # ray distance-ish: depth too long
    for bad in (Clip(good.images, good.depth, half_px, good.extrinsic),
                Clip(good.images, good.depth, good.intrinsic, gl),
                Clip(good.images, ray, good.intrinsic, good.extrinsic)):
        with pytest.raises(AssertionError):
            assert_geometry(bad)


# ----------------------------------------------------------------------------- formats

def test_dump_round_trip_and_geometry(scene, tmp_path):
    write_scene(scene, tmp_path / "seq")
    fmt, clip = read_all(tmp_path / "seq")
    assert fmt == "dump" and clip.dynamic_mask is not None
    assert_gt(clip, scene)
    assert_geometry(clip)


def test_mvtracker_npz_round_trip_geometry_and_lazy_memmap(scene, tmp_path):
    path = write_mvtracker_npz(scene, tmp_path / "scene.npz")
    fmt, clip = read_all(path)
    assert fmt == "mvtracker_npz"
    assert_gt(clip, scene)
    assert_geometry(clip)
    seq = open_source(str(path)).sequences[0]
    assert all(isinstance(a, np.memmap) for a in seq.arrays.values())  # lazy: frames read on demand
    part = seq.read([2, 0], [1, 2])
    assert np.array_equal(part.depth, scene.depth[[2, 0]][:, [1, 2]])
    zipped = write_mvtracker_npz(scene, tmp_path / "zipped.npz", compressed=True)
    assert np.array_equal(read_all(zipped)[1].depth, clip.depth)


def test_dexycb_round_trip_millimetres_and_geometry(scene, tmp_path):
    write_dexycb(scene, tmp_path / "dex" / "20200709_seq")
    fmt, clip = read_all(tmp_path / "dex")               # a folder of sequences
    assert fmt == "dexycb"
    mm = np.round(scene.depth.astype(np.float64) * 1000) / 1000   # what uint16 mm can hold
    assert_gt(clip, scene, depth=mm)
    assert np.abs(clip.depth - scene.depth).max() <= 0.5e-3 + 1e-6  # metres, not millimetres
    assert_geometry(clip, abs_tol=1e-3)


def test_kubric_mv_from_kubric_camera_convention(scene, tmp_path):
    write_kubric_mv(scene, tmp_path / "0007")
    fmt, clip = read_all(tmp_path / "0007")
    assert fmt == "kubric_mv"
    assert_gt(clip, scene)                               # ray distance -> z, GL -> CV, normalised K -> px
    assert_geometry(clip)


def test_panoptic_round_trip_train_and_test_cameras(scene, tmp_path):
    write_panoptic(scene, tmp_path / "softball")
    fmt, clip = read_all(tmp_path / "softball")
    assert fmt == "panoptic"
    assert_gt(clip, scene, image_atol=0.05)               # JPEG images
    assert np.abs(clip.images - scene.images / 255.0).mean() < 0.02
    assert_geometry(clip)


def test_synthetic_format(scene):
    src = open_source("synthetic@2")
    assert src.procedural and src.weight == 2.0
    from vggt_mv.data.formats.synthetic import SyntheticSequence

    clip = SyntheticSequence(11, SyntheticSceneConfig(T=3, V=3, H=56, W=70)).read([0, 1, 2], [0, 1, 2])
    assert_gt(clip, scene)
    assert_geometry(clip)


# ----------------------------------------------------------------------------- sample, masks, errors

def test_bundled_sample_loads_through_dump_with_masks(tmp_path):
    src = open_source(f"dump:{SAMPLE}")
    seq = src.sequences[0]
    assert seq.has_masks and seq.has_depth and seq.has_cameras and (seq.num_frames, seq.num_views) == (10, 3)
    clip = seq.read([0, 5], [2, 0])
    assert clip.dynamic_mask.shape == (2, 2, 168, 224) and 0 < clip.dynamic_mask.mean() < 0.5
    assert_geometry(clip)
    # the same scene with SegAnyMo's mask folders instead of masks/
    copy = tmp_path / "segany"
    shutil.copytree(SAMPLE, copy, ignore=shutil.ignore_patterns("cam*"))
    (copy / "SegAnyMo" / "sam2").mkdir(parents=True)
    shutil.move(copy / "masks", copy / "SegAnyMo" / "sam2" / "mask_frames")
    clip2 = open_source(f"dump:{copy}").sequences[0].read([0, 5], [2, 0])
    assert np.array_equal(clip2.dynamic_mask, clip.dynamic_mask)


def test_specs_detection_and_one_line_errors(scene, tmp_path):
    assert parse_spec("dexycb:/d/x@0.5") == ("dexycb", "/d/x", 0.5)
    assert parse_spec("/d/a@b") == (None, "/d/a@b", 1.0)
    write_scene(scene, tmp_path / "dump")
    assert detect_format(tmp_path / "dump") == "dump"
    with pytest.raises(ValueError, match="does not have the kubric_mv layout"):
        open_source(f"kubric_mv:{tmp_path / 'dump'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no known training-data layout"):
        open_source(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError):
        open_source(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="positive"):
        parse_spec("synthetic@-1")
    # an inconsistent layout names the file that does not fit
    (tmp_path / "dump" / "depths" / "time_01" / "view2.npy").unlink()
    seq = open_source(str(tmp_path / "dump")).sequences[0]
    with pytest.raises(ValueError, match=r"time_01.*view2\.npy"):
        seq.read([1], [2])
    bad = write_kubric_mv(scene, tmp_path / "kub")
    (bad / "view_1" / "depth_00002.tiff").unlink()
    with pytest.raises(ValueError, match="view_1"):
        open_source(str(bad))
