"""Issue 20: query points -> tracks stored / exported / lifted; ``--epipolar gt`` on the sample (the
View-SA bias follows the band, end to end, cache key); ``--time-bias``."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vggt_mv.cli import main
from vggt_mv.config import ModelConfig
from vggt_mv.data.scene import load_scene
from vggt_mv.inference.cache import window_key
from vggt_mv.inference.priors import epipolar_cameras, load_query_points
from vggt_mv.inference.reconstruction import Reconstruction
from vggt_mv.model.vggt_mv import VGGTMV

SAMPLE = Path(__file__).resolve().parents[1] / "assets" / "sample"
RES = 112  # sample 224x168 -> 112x84 (8x6 patches)


@pytest.fixture(scope="module")
def scene():
    return load_scene(SAMPLE, resolution=RES, frame_range=(0, 4))


def _tiny_track_config(tmp_path: Path) -> Path:
    cfg = ModelConfig.preset("tiny").replace(enable_track=True)
    path = tmp_path / "tiny_track.json"
    cfg.to_json(path)
    return path


# ---------------------------------------------------------------- query points
def test_original_pixels_map_like_the_intrinsics(scene, tmp_path):
    k_orig = np.load(SAMPLE / "intrs" / "time_00" / "view0.npy")
    np.save(tmp_path / "q.npy", np.array([[k_orig[0, 2], k_orig[1, 2]], [10.0, 20.0]], np.float32))
    q = load_query_points(tmp_path / "q.npy", scene, space="original")
    # the original principal point lands on the preprocessed principal point (same transform as K)
    np.testing.assert_allclose(q[0], scene.gt.intrinsic[0, 0, :2, 2], atol=1e-4)
    np.testing.assert_allclose(q[1], [(10 + 0.5) * 0.5 - 0.5, (20 + 0.5) * 0.5 - 0.5], atol=1e-5)
    same = load_query_points(tmp_path / "q.npy", scene)  # model-input pixels: unchanged
    np.testing.assert_array_equal(same, np.load(tmp_path / "q.npy"))


def test_mvtracker_world_points_project_to_their_pixels(scene, tmp_path):
    gt = scene.gt
    px = np.array([[20, 30], [60, 10], [90, 70]])
    out = []
    for t in (0, 2):
        z = gt.depth[t, 0, px[:, 1], px[:, 0]]
        cam = np.linalg.inv(gt.intrinsic[t, 0]) @ np.stack([px[:, 0], px[:, 1], np.ones(3)]) * z
        r, tr = gt.extrinsic[t, 0, :, :3], gt.extrinsic[t, 0, :, 3]
        world = (r.T @ (cam - tr[:, None])).T
        out.append(np.concatenate([np.full((3, 1), t), world], 1))
    np.save(tmp_path / "q4.npy", np.concatenate(out).astype(np.float32))
    q = load_query_points(tmp_path / "q4.npy", scene)
    np.testing.assert_allclose(q, np.concatenate([px, px]).astype(np.float32), atol=2e-3)


def test_query_point_errors(scene, tmp_path):
    np.save(tmp_path / "bad.npy", np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"--query-points .*\[N,2\]"):
        load_query_points(tmp_path / "bad.npy", scene)
    np.save(tmp_path / "out.npy", np.array([[1e4, 1e4]]))
    with pytest.raises(ValueError, match="no point falls inside"):
        load_query_points(tmp_path / "out.npy", scene)


def test_reconstruct_with_query_points_stores_and_exports_tracks(tmp_path):
    q = np.array([[20.0, 30.0], [55.0, 40.0], [90.0, 60.0]], np.float32)
    np.save(tmp_path / "q.npy", q)
    out = tmp_path / "out"
    rc = main(["reconstruct", "--scene", str(SAMPLE), "--config", str(_tiny_track_config(tmp_path)),
               "--resolution", str(RES), "--frames", "0:5", "--window", "3", "--overlap", "1",
               "--query-points", str(tmp_path / "q.npy"), "--out", str(out), "--no-progress"])
    assert rc == 0
    assert np.load(out / "arrays" / "tracks.npy").shape == (5, 3, 3, 2)
    assert np.load(out / "arrays" / "track_vis.npy").shape == (5, 3, 3)
    np.testing.assert_array_equal(np.load(out / "arrays" / "query_points.npy"), q)
    rec = Reconstruction.load(out)
    assert rec.tracks.shape == (5, 3, 3, 2) and np.isfinite(rec.tracks).all()
    np.testing.assert_allclose(rec.tracks[0, 0], q, atol=1e-4)  # the track head's frame 0 = the queries
    assert ((rec.track_vis >= 0) & (rec.track_vis <= 1)).all()
    assert rec.meta["tracks"]["num_points"] == 3 and rec.meta["tracks"]["chained_across_windows"]
    # lifted tracks: a fully visible point at t=0 in view 0 is the unprojected depth at its pixel
    rec.track_vis[...] = 0.0
    rec.track_vis[0, 0, 1] = 1.0
    p3 = rec.track_points_3d()
    assert np.isnan(p3[1:]).all() and np.isnan(p3[0, [0, 2]]).all()
    x, y = np.rint(q[1]).astype(int)
    np.testing.assert_allclose(p3[0, 1], rec.points_from_depth()[0, 0, y, x], rtol=1e-4, atol=1e-4)


def test_old_results_without_tracks_load(tmp_path):
    rng = np.random.default_rng(0)
    rec = Reconstruction(images=rng.random((1, 2, 14, 14, 3)), depth=1 + rng.random((1, 2, 14, 14)),
                         depth_conf=None, world_points=None, world_points_conf=None,
                         extrinsic=np.tile(np.eye(3, 4), (1, 2, 1, 1)),
                         intrinsic=np.tile(np.diag([10.0, 10.0, 1.0]), (1, 2, 1, 1)))
    rec.save(tmp_path / "old")
    assert not (tmp_path / "old" / "arrays" / "tracks.npy").exists()
    assert Reconstruction.load(tmp_path / "old").tracks is None


def test_query_points_need_a_track_head(tmp_path, capsys):
    np.save(tmp_path / "q.npy", np.array([[5.0, 5.0]], np.float32))
    rc = main(["reconstruct", "--scene", str(SAMPLE), "--preset", "tiny", "--resolution", str(RES),
               "--frames", "0:2", "--query-points", str(tmp_path / "q.npy"), "--out", str(tmp_path / "o"),
               "--no-progress"])
    assert rc == 2 and "track head" in capsys.readouterr().err


# ---------------------------------------------------------------- epipolar prior from the GT cameras
def _explicit_band_penalty(scene, t, patch, strength, band, n_special):
    """Expected View-SA bias [V*n, V*n] from geometry alone: for a query patch i of view a, take two
    points on its ray (GT depth z and 2z), project them into view b; the key patch j's penalty is
    -strength * (distance of j's centre from that line / band)^2 (0 for same view / special tokens)."""
    gt = scene.gt
    _, v, _, h, w = scene.images.shape
    gh, gw = h // patch, w // patch
    ys, xs = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
    ctr = np.stack([(xs.ravel() + 0.5) * patch, (ys.ravel() + 0.5) * patch], -1)
    n = n_special + gh * gw
    out = np.zeros((v * n, v * n))
    for a in range(v):
        k_a, e_a = gt.intrinsic[t, a].astype(np.float64), gt.extrinsic[t, a].astype(np.float64)
        rays = np.linalg.inv(k_a) @ np.concatenate([ctr, np.ones((len(ctr), 1))], 1).T  # [3,P]
        for b in range(v):
            if a == b:
                continue
            k_b, e_b = gt.intrinsic[t, b].astype(np.float64), gt.extrinsic[t, b].astype(np.float64)
            proj = []
            for z in (1.0, 2.0):
                world = e_a[:, :3].T @ (rays * z - e_a[:, 3:])
                cam = e_b[:, :3] @ world + e_b[:, 3:]
                proj.append((k_b @ cam)[:2] / (k_b @ cam)[2])
            p1, p2 = proj  # [2,P] each
            d = p2 - p1
            dist = np.abs(d[0][:, None] * (ctr[None, :, 1] - p1[1][:, None])
                          - d[1][:, None] * (ctr[None, :, 0] - p1[0][:, None])) / np.linalg.norm(d, axis=0)[:, None]
            rows = a * n + n_special + np.arange(gh * gw)
            cols = b * n + n_special + np.arange(gh * gw)
            out[np.ix_(rows, cols)] = -strength * (dist / band) ** 2
    return out


def test_epipolar_gt_changes_view_logits_only_where_the_band_says(scene):
    cams = epipolar_cameras("gt", scene, layout="factorized", strength=2.0, band=20.0)
    torch.manual_seed(0)
    model = VGGTMV(ModelConfig.preset("tiny")).eval()
    captured = []
    hook = model.aggregator.global_blocks[0].register_forward_pre_hook(lambda m, args: captured.append(args[2]))
    images = scene.images[:2][None]
    with torch.no_grad():
        model.aggregator.run(images, layout="factorized", epipolar=cams.window(0, 2, "cpu"), stop_after=0)
        base = model.aggregator.run(images, layout="factorized", stop_after=0)
        with_prior = model.aggregator.run(images, layout="factorized", epipolar=cams.window(0, 2, "cpu"), stop_after=0)
    hook.remove()
    assert captured[1] is None  # no prior: View-SA gets no bias in layer 0
    dense = captured[0].dense().numpy()  # [B*T, V*n, V*n]: the logits added to View-SA
    for t in range(2):
        expected = _explicit_band_penalty(scene, t, 14, 2.0, 20.0, 5)
        np.testing.assert_allclose(dense[t], expected, rtol=1e-4, atol=1e-4)  # observed 1.4e-5 (float32)
        assert (dense[t][expected == 0] == 0).all()  # same view / special tokens: untouched
        assert np.abs(expected).max() > 10  # far from the line the penalty is large
    assert (with_prior.geo_tokens[0] - base.geo_tokens[0]).abs().max() > 1e-4


def test_epipolar_gt_end_to_end_and_cache_key(scene, tmp_path, capsys):
    out = tmp_path / "epi"
    rc = main(["reconstruct", "--scene", str(SAMPLE), "--preset", "tiny", "--resolution", str(RES),
               "--frames", "0:3", "--window", "3", "--epipolar", "gt", "--out", str(out), "--no-progress"])
    assert rc == 0
    rec = Reconstruction.load(out)
    assert rec.meta["epipolar"]["source"] == "gt"
    off = tmp_path / "off"
    main(["reconstruct", "--scene", str(SAMPLE), "--preset", "tiny", "--resolution", str(RES),
          "--frames", "0:3", "--window", "3", "--out", str(off), "--no-progress"])
    assert np.abs(Reconstruction.load(off).depth - rec.depth).max() > 1e-6
    rc = main(["reconstruct", "--scene", str(SAMPLE), "--preset", "tiny", "--resolution", str(RES),
               "--frames", "0:3", "--layout", "flat", "--epipolar", "gt", "--out", str(tmp_path / "x"), "--no-progress"])
    assert rc == 2 and "--epipolar gt" in capsys.readouterr().err
    # the cache key includes the prior
    torch.manual_seed(0)
    model = VGGTMV(ModelConfig.preset("tiny")).eval()
    cams = epipolar_cameras("gt", scene, layout="factorized")
    imgs = scene.images[:2][None]
    kw = dict(layout="factorized", device=torch.device("cpu"), autocast_dtype=None)
    k_off = window_key(model, imgs, None, **kw)
    k_gt = window_key(model, imgs, None, epipolar=cams.identity(0, 2), **kw)
    cams.strength = 3.0
    assert len({k_off, k_gt, window_key(model, imgs, None, epipolar=cams.identity(0, 2), **kw)}) == 3


def test_epipolar_previous_uses_a_previous_run(scene, tmp_path, capsys):
    first = tmp_path / "first"
    main(["reconstruct", "--scene", str(SAMPLE), "--preset", "tiny", "--resolution", str(RES),
          "--frames", "0:3", "--out", str(first), "--no-progress"])
    prev = Reconstruction.load(first)
    small = load_scene(SAMPLE, resolution=RES, frame_range=(0, 3))
    cams = epipolar_cameras("previous", small, prev)
    np.testing.assert_array_equal(cams.extrinsic, prev.extrinsic)
    second = tmp_path / "second"
    rc = main(["reconstruct", "--scene", str(SAMPLE), "--preset", "tiny", "--resolution", str(RES),
               "--frames", "0:3", "--epipolar", "previous", "--epipolar-from", str(first), "--out", str(second),
               "--no-progress"])
    assert rc == 0 and Reconstruction.load(second).meta["epipolar"]["source"] == "previous"
    rc = main(["reconstruct", "--scene", str(SAMPLE), "--preset", "tiny", "--resolution", str(RES),
               "--frames", "0:3", "--epipolar", "previous", "--out", str(tmp_path / "y"), "--no-progress"])
    assert rc == 2 and "--epipolar-from" in capsys.readouterr().err


# ---------------------------------------------------------------- time bias from the CLI
def test_cli_time_bias_sets_the_config(tmp_path):
    out = tmp_path / "tb"
    rc = main(["reconstruct", "--scene", str(SAMPLE), "--preset", "tiny", "--resolution", str(RES),
               "--frames", "0:3", "--time-bias", "0.75", "--out", str(out), "--no-progress"])
    assert rc == 0
    rec = Reconstruction.load(out)
    assert rec.meta["config"]["time_bias"]["strength"] == 0.75
    base = tmp_path / "base"
    main(["reconstruct", "--scene", str(SAMPLE), "--preset", "tiny", "--resolution", str(RES),
          "--frames", "0:3", "--out", str(base), "--no-progress"])
    assert np.abs(Reconstruction.load(base).depth - rec.depth).max() > 1e-6
    assert json.loads((out / "manifest.json").read_text())["meta"]["cli"]["time_bias"] == 0.75
