"""Keypoint-guided sparse global attention: the lambda_kpt bias, keypoint landmarks, keypoint sources."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import vggt_mv.layers.sparse_attention as sparse_attention
from conftest import REPO
from test_sparse_attention import TOL, explicit_masked_block
from test_user_errors import assert_user_error, run_cli
from vggt_mv.cli import main as cli_main
from vggt_mv.config import ModelConfig
from vggt_mv.data.keypoints import load_keypoints, rasterize_points
from vggt_mv.data.preprocess import plan_preprocess
from vggt_mv.data.scene import load_scene
from vggt_mv.inference.cache import PipelineCache
from vggt_mv.inference.pipeline import predict_window, reconstruct
from vggt_mv.inference.reconstruction import Reconstruction
from vggt_mv.layers import patch_positions
from vggt_mv.model.vggt_mv import VGGTMV
from vggt_mv.weights import load_model

SAMPLE = REPO / "assets" / "sample"
PSI = 5  # camera + 4 registers


def _model(mode: str = "streams", k: int = 16, seed: int = 0) -> VGGTMV:
    cfg = ModelConfig.preset("tiny").replace(mask={"mode": mode}, sparse={"strategy": "landmark", "landmark_k": k})
    torch.manual_seed(seed)
    return VGGTMV(cfg).eval()


def _images(t=2, v=2, h=42, w=56, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, t, v, 3, h, w, generator=g)


def _keypoints(t=2, v=2, h=42, w=56, seed=1, share=0.3):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(1, t, v, h, w, generator=g) < share / 196).float()  # a few pixels set


# ------------------------------------------------------------------ model
def test_presets_key_sets_and_learnability():
    vggt = VGGTMV(ModelConfig.preset("page4d")).aggregator
    assert not any("keypoint_bias" in k for k in vggt.state_dict())  # released key sets unchanged
    assert not vggt.keypoint_bias.lambda_kpt.requires_grad
    tiny = VGGTMV(ModelConfig.preset("tiny")).aggregator
    assert {k for k in tiny.state_dict() if "keypoint_bias" in k} == {
        "keypoint_bias.lambda_kpt", "keypoint_bias.lambda_kpt_pose"}
    assert tiny.keypoint_bias.lambda_kpt.requires_grad
    with pytest.raises(ValueError, match="outside the preset's bound"):
        tiny.keypoint_bias.set(lambda_kpt=9.0)
    with pytest.raises(ValueError, match="lambda_kpt"):
        ModelConfig.preset("tiny").replace(sparse={"lambda_kpt": 100.0})


@torch.no_grad()
def test_lambda_kpt_zero_is_today_and_nonzero_acts_from_the_sparse_layer_on_the_geo_stream():
    m = _model("streams")
    imgs, kp = _images(), _keypoints()
    base = m(imgs, return_aggregator=True)  # today's path: no keypoints
    zero = m(imgs, ext_keypoints=kp, return_aggregator=True)
    for a, b in zip(base["_aggregator"].geo_tokens + base["_aggregator"].pose_tokens,
                    zero["_aggregator"].geo_tokens + zero["_aggregator"].pose_tokens):
        assert torch.equal(a, b)
    m.set_keypoint_lambdas(lambda_kpt=2.0)
    on = m(imgs, ext_keypoints=kp, return_aggregator=True)
    first = min(m.config.sparse.layers)
    ga, gb = base["_aggregator"].geo_tokens, on["_aggregator"].geo_tokens
    for i in range(first):
        assert torch.equal(ga[i], gb[i]), i
    assert not torch.equal(ga[first], gb[first])
    for a, b in zip(base["_aggregator"].pose_tokens, on["_aggregator"].pose_tokens):
        assert torch.equal(a, b)  # lambda_kpt_pose = 0: the pose stream never sees the bias
    assert torch.equal(base["extrinsic"], on["extrinsic"]) and torch.equal(base["intrinsic"], on["intrinsic"])
    assert not torch.equal(base["depth"], on["depth"])  # random init: layerscale 0.01 keeps it small
    m.set_keypoint_lambdas(lambda_kpt=0.0, lambda_kpt_pose=1.0)
    pose = m(imgs, ext_keypoints=kp)
    assert not torch.equal(base["extrinsic"], pose["extrinsic"])  # the pose rows' lambda reaches the cameras
    assert torch.equal(base["depth"], pose["depth"])


@torch.no_grad()
def test_keypoint_bias_equals_explicit_logits():
    """flat layout, tokens mode, landmark K = all patches: the sparse layer is dense global attention,
    so its output must equal an explicit dense block with logits + r_i K_j written out entry by entry."""
    cfg = ModelConfig.preset("tiny").replace(
        mask={"mode": "tokens"}, sparse={"strategy": "landmark", "landmark_k": 12, "layers": [6, 7]})
    torch.manual_seed(0)
    m = VGGTMV(cfg).eval()
    lam, lam_pose = 1.5, -0.75
    m.set_keypoint_lambdas(lambda_kpt=lam, lambda_kpt_pose=lam_pose)
    imgs = _images(t=2, v=2, h=42, w=56)
    kp = torch.zeros(1, 2, 2, 42, 56)
    kp[0, 0, 0, 3, 5] = 1.0    # patch (0, 0) of image 0
    kp[0, 1, 1, 20, 50] = 0.6  # patch (1, 3) of image 3
    kp[0, 0, 1, 30, 17] = 0.3  # patch (2, 1) of image 1
    agg = m.aggregator
    seen = []
    step = agg._sparse_step
    agg._sparse_step = lambda blk, x, *a: seen.append((blk, x, step(blk, x, *a))) or seen[-1][2]
    m.run_aggregator(imgs, layout="flat", ext_keypoints=kp)
    del agg._sparse_step
    patch_map = torch.nn.functional.max_pool2d(kp.reshape(4, 1, 42, 56), 14).reshape(4, -1)  # [images, 12]
    p = PSI + 12
    n = 4 * p
    dense = torch.zeros(1, n, n)
    for i in range(n):
        r = lam_pose if i % p < PSI else lam
        for j in range(n):
            if j % p >= PSI:
                dense[0, i, j] = r * patch_map[j // p, j % p - PSI]
    assert dense.abs().sum() > 0
    pos = patch_positions(1, 3, 4, PSI, imgs.device)[0]
    blk, x, got = seen[0]
    x6 = x.reshape(1, 1, 4, p, -1)
    allowed = torch.ones(n, n, dtype=torch.bool)
    want = explicit_masked_block(blk, x6, pos, allowed, dense)
    torch.testing.assert_close(got.reshape(want.shape), want, **TOL)
    without = explicit_masked_block(blk, x6, pos, allowed, None)
    assert not torch.allclose(got.reshape(want.shape), without, **TOL)  # the bias is there


# ------------------------------------------------------------------ landmarks
def test_landmarks_keypoints_selects_the_top_k_keypoint_patches(monkeypatch):
    k = 3
    m = _model("streams", k=k)
    t, v, h, w = 2, 2, 42, 56  # 3 x 4 patches per image
    g = torch.Generator().manual_seed(5)
    values = torch.rand(t * v, 12, generator=g)  # distinct per patch
    kp = torch.zeros(1, t, v, h, w)
    for img in range(t * v):
        for patch in range(12):
            kp[0, img // v, img % v, (patch // 4) * 14 + 7, (patch % 4) * 14 + 3] = values[img, patch]
    recorded = []
    original = sparse_attention.landmark_index
    monkeypatch.setattr(sparse_attention, "landmark_index", lambda *a: recorded.append(original(*a)) or recorded[-1])
    _, info = predict_window(m, _images(t, v, h, w), None, layout="factorized", device=torch.device("cpu"),
                             autocast_dtype=None, ext_keypoints=kp, landmarks="keypoints")
    assert info["landmark_scores"] == "keypoints"
    assert len(recorded) == 2 * len(m.config.sparse.layers)  # both streams, every sparse layer
    p = PSI + 12
    for idx in recorded:
        local = idx.reshape(t * v, PSI + k) - (torch.arange(t * v) * p)[:, None]
        for img in range(t * v):
            assert local[img, :PSI].tolist() == list(range(PSI))
            assert set((local[img, PSI:] - PSI).tolist()) == set(values[img].topk(k).indices.tolist())
    with pytest.raises(ValueError, match="--landmarks keypoints needs a keypoint source"):
        predict_window(m, _images(t, v, h, w), None, layout="factorized", device=torch.device("cpu"),
                       autocast_dtype=None, landmarks="keypoints")


def test_landmarks_keypoints_without_source_is_a_one_line_error(tmp_path, capsys):
    rc, err = run_cli(capsys, "reconstruct", "--scene", str(SAMPLE), "--preset", "tiny", "--sparse", "landmark",
                      "--landmarks", "keypoints", "--no-progress", "--out", str(tmp_path / "o"))
    assert_user_error(rc, err, "reconstruct", "--landmarks keypoints needs a keypoint source", "--keypoints")
    rc, err = run_cli(capsys, "reconstruct", "--scene", str(SAMPLE), "--preset", "tiny", "--conf-landmarks",
                      "--landmarks", "saliency", "--no-progress", "--out", str(tmp_path / "o"))
    assert_user_error(rc, err, "reconstruct", "--conf-landmarks means --landmarks confidence")


# ------------------------------------------------------------------ pipeline / CLI
def _recon_argv(out, lam):
    return ["reconstruct", "--scene", str(SAMPLE), "--preset", "tiny", "--sparse", "landmark", "--keypoints", "sift",
            "--lambda-kpt", str(lam), "--resolution", "112", "--window", "10", "--overlap", "0", "--no-progress",
            "--out", str(out)]


@pytest.mark.slow
def test_reconstruct_sift_keypoints_changes_depth_not_cameras(tmp_path):
    assert cli_main(_recon_argv(tmp_path / "k0", 0)) == 0
    assert cli_main(_recon_argv(tmp_path / "k2", 2)) == 0
    a, b = Reconstruction.load(tmp_path / "k0"), Reconstruction.load(tmp_path / "k2")
    assert b.meta["keypoints"]["lambda_kpt"] == 2.0 and b.meta["keypoints"]["source"].startswith("sift")
    assert np.abs(a.depth - b.depth).max() > 1e-4
    np.testing.assert_array_equal(a.extrinsic, b.extrinsic)
    np.testing.assert_array_equal(a.intrinsic, b.intrinsic)


@pytest.mark.slow
def test_acceptance_command_across_windows_moves_cameras_only_through_the_stitching(tmp_path):
    """The issue's command (default resolution and windows: two windows on the sample). Each window's
    cameras come from the pose stream and are unchanged by λ_kpt; the second window is placed into
    the first one's frame by a Sim(3) fitted to the overlap geometry, which λ_kpt moved, so its stitched
    cameras move by exactly that Sim(3) change: un-applying each run's recorded Sim(3) gives equal cameras."""
    from vggt_mv.inference.alignment import transform_extrinsic
    from vggt_mv.inference.windows import Sim3

    def run(lam):
        out = tmp_path / f"k{lam}"
        assert cli_main(["reconstruct", "--scene", str(SAMPLE), "--preset", "tiny", "--sparse", "landmark",
                         "--keypoints", "sift", "--lambda-kpt", str(lam), "--no-progress", "--out", str(out)]) == 0
        return Reconstruction.load(out)

    a, b = run(0), run(2)
    assert np.abs(a.depth - b.depth).max() > 1e-4
    windows = a.meta["windows"]
    assert len(windows) == 2 and [w["keep_from"] for w in windows] == [0, 6], windows
    first = slice(0, windows[0]["stop"])
    np.testing.assert_array_equal(a.extrinsic[first], b.extrinsic[first])  # the first window: the pose stream alone
    np.testing.assert_array_equal(a.intrinsic, b.intrinsic)
    later = slice(windows[1]["start"] + windows[1]["keep_from"], windows[1]["stop"])

    def raw(rec):  # the second window's cameras as the model predicted them, before stitching
        sim = Sim3(**{k: np.asarray(v) for k, v in rec.meta["windows"][1]["sim3"].items()}).inverse()
        return transform_extrinsic(rec.extrinsic[later], sim.s, sim.R, sim.t)

    stitched = np.abs(a.extrinsic[later] - b.extrinsic[later]).max()
    unstitched = np.abs(raw(a) - raw(b)).max()
    print(f"\nsecond window's cameras, λ_kpt 0 vs 2: stitched differ by {stitched:.2e}, "
          f"before stitching by {unstitched:.2e}")
    assert unstitched < 2e-6 and unstitched < stitched / 5, (unstitched, stitched)


def test_lambda_kpt_only_rerun_hits_the_cache():
    scene = load_scene(SAMPLE, resolution=56, frame_range=(0, 4))
    scene.keypoints = load_keypoints("sift:16", scene)
    assert scene.keypoints.sum() > 0
    cfg = ModelConfig.preset("tiny").replace(sparse={"strategy": "landmark"})
    m, _ = load_model(cfg, checkpoint=REPO / "assets" / "weights" / "tiny.safetensors")  # trained: a visible effect
    cache = PipelineCache()
    first = reconstruct(scene, m, window=3, overlap=1, cache=cache)
    assert all(w["cache"] == "miss" for w in first.meta["windows"])
    m.set_keypoint_lambdas(lambda_kpt=3.0)
    again = reconstruct(scene, m, window=3, overlap=1, cache=cache, landmarks="keypoints")
    assert [w["cache"] for w in again.meta["windows"]] == ["hit", "hit"]
    fresh = reconstruct(scene, m, window=3, overlap=1, landmarks="keypoints")
    np.testing.assert_allclose(again.depth, fresh.depth, rtol=1e-5, atol=1e-5)
    assert np.abs(again.depth - first.depth).max() > 1e-4
    # the app draws the run's keypoints on the per-view images (yellow crosses, counted in the caption)
    from vggt_mv_app.tracks import KEYPOINT_COLOR
    from vggt_mv_app.ui import gallery_items

    again.keypoints = scene.keypoints.numpy()
    imgs, _, _ = gallery_items(again, 1)
    y, x = np.argwhere(again.keypoints[1, 0] >= 0.5)[0]
    assert tuple(imgs[0][0][y, x]) == KEYPOINT_COLOR
    assert imgs[0][1].endswith(f"{int((again.keypoints[1, 0] >= 0.5).sum())} keypoints")


# ------------------------------------------------------------------ data
def _camera_root(tmp_path, n=3, hw=(60, 90)):
    """cam0/cam1 with n frames of a non-14-multiple size, so preprocessing resizes and crops."""
    g = np.random.default_rng(0)
    for c in range(2):
        (tmp_path / f"cam{c}").mkdir(parents=True)
        for i in range(n):
            Image.fromarray(g.integers(0, 255, (*hw, 3), dtype=np.uint8)).save(tmp_path / f"cam{c}" / f"{i:02d}.png")
    return tmp_path


def test_point_lists_heat_maps_and_seganymo_tracks_align_like_the_images(tmp_path):
    root = _camera_root(tmp_path / "scene")
    scene = load_scene(root, resolution=56, mode="crop")
    plan = plan_preprocess(60, 90, "crop", 56)
    assert scene.images.shape[-2:] == plan.out_hw
    pts = {c: [np.array([[10.0 + 7 * i + c, 30.0 - i], [80.0, 5.0], [-40.0, 3.0]]) for i in range(3)] for c in range(2)}
    npy, png = tmp_path / "npy", tmp_path / "png"
    for c in range(2):
        (npy / f"cam{c}").mkdir(parents=True)
        (png / f"cam{c}").mkdir(parents=True)
        for i in range(3):
            np.save(npy / f"cam{c}" / f"{i:02d}.npy", pts[c][i])
            heat = np.zeros((60, 90), np.uint8)
            heat[30 - i - 2:30 - i + 3, 10 + 7 * i + c - 2:10 + 7 * i + c + 3] = 255
            Image.fromarray(heat).save(png / f"cam{c}" / f"{i:02d}.png")
    got = load_keypoints([str(npy / "cam0"), str(npy / "cam1")], scene)
    assert torch.equal(got, load_keypoints(str(npy), scene))  # one root with a subfolder per camera
    for c in range(2):
        for i in range(3):
            want = rasterize_points(plan.apply_pixels(pts[c][i]), plan.out_hw)
            assert torch.equal(got[i, c], torch.from_numpy(want)), (c, i)
            assert 1 <= want.sum() <= 2  # the point left of the image is dropped
    heat = load_keypoints(str(png), scene)
    for c in range(2):
        for i in range(3):  # the heat blob's centroid lands where the point does
            hm = heat[i, c].numpy()
            ys, xs = np.mgrid[:hm.shape[0], :hm.shape[1]]
            x, y = (hm * xs).sum() / hm.sum(), (hm * ys).sum() / hm.sum()
            px, py = plan.apply_pixels(pts[c][i][0])
            assert abs(x - px) < 0.3 and abs(y - py) < 0.3, (x, y, px, py)
    seg = tmp_path / "seganymo"
    for c in range(2):
        (seg / "moseg" / f"view_{c}").mkdir(parents=True)
        tracks = np.stack([pts[c][i] for i in range(3)], -1).transpose(1, 0, 2)  # [2, N, T]
        np.save(seg / "moseg" / f"view_{c}" / "dynamic_traj.npy", tracks)
    assert torch.equal(load_keypoints(str(seg), scene), got)
    sub = load_scene(root, resolution=56, frame_range=(1, 3))
    assert torch.equal(load_keypoints(str(seg), sub), got[1:3])  # frame selection follows the scene


def test_bad_keypoint_inputs_are_one_line_errors_naming_the_file(tmp_path, capsys):
    root = _camera_root(tmp_path / "scene")
    scene = load_scene(root, resolution=56)
    bad = tmp_path / "bad"
    for c in range(2):
        (bad / f"cam{c}").mkdir(parents=True)
        for i in range(3):
            np.save(bad / f"cam{c}" / f"{i:02d}.npy", np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"bad/cam0/00.npy: expected an \[N,2\]"):
        load_keypoints(str(bad), scene)
    seg = tmp_path / "seg" / "moseg"
    for c in range(2):
        (seg / f"view_{c}").mkdir(parents=True)
        np.save(seg / f"view_{c}" / "dynamic_traj.npy", np.zeros((2, 5, 7)))
    with pytest.raises(ValueError, match=r"view_0/dynamic_traj.npy: tracks cover 7 frames but camera 'cam0' has 3"):
        load_keypoints(str(seg.parent), scene)
    rc, err = run_cli(capsys, "reconstruct", "--scene", str(root), "--preset", "tiny", "--keypoints",
                      str(bad / "cam0"), "--no-progress", "--out", str(tmp_path / "o"))
    assert_user_error(rc, err, "reconstruct", "keypoint folder(s) for 2 camera(s)")
    rc, err = run_cli(capsys, "reconstruct", "--scene", str(root), "--preset", "tiny", "--keypoints", "sift:0",
                      "--no-progress", "--out", str(tmp_path / "o"))
    assert_user_error(rc, err, "reconstruct", "--keypoints sift:0")


def test_keypoint_attention_mass_diagnostic():
    from vggt_mv.eval.attention_mass import keypoint_attention_mass

    m = _model("streams", k=4)
    imgs, kp = _images(), torch.zeros(1, 2, 2, 42, 56)
    kp[..., 3, 5] = kp[..., 30, 40] = 1.0
    off = keypoint_attention_mass(m, imgs, kp)
    assert all(r["mass_with_bias"] == r["mass_without_bias"] for r in off)  # lambda_kpt = 0
    m.set_keypoint_lambdas(lambda_kpt=3.0)
    on = keypoint_attention_mass(m, imgs, kp)
    assert [(r["layer"], r["stream"]) for r in on] == [(6, "pose"), (6, "geo"), (7, "pose"), (7, "geo")]
    for r in on:
        if r["stream"] == "geo":  # 2 of 12 patches: the bias pulls the geo rows' attention onto them
            assert r["mass_with_bias"] > r["mass_without_bias"] + 0.2
        else:
            assert r["mass_with_bias"] == r["mass_without_bias"]
