"""Inference pipeline: window planning, Sim(3) stitching, reconstruct, cache, cancel, CLI (tiny, CPU)."""
from __future__ import annotations

import dataclasses
import threading
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vggt_mv.config import ModelConfig
from vggt_mv.data.scene import Scene
from vggt_mv.inference.cache import PipelineCache, weights_fingerprint, window_key
from vggt_mv.inference.device import select_autocast_dtype, select_device
from vggt_mv.inference.geometry import unproject_depth
from vggt_mv.inference.pipeline import Cancelled, reconstruct
from vggt_mv.inference.windows import Sim3, WindowPrediction, plan_windows, stitch
from vggt_mv.model.vggt_mv import VGGTMV

T, V, H, W = 5, 3, 28, 42

def _model(seed: int = 0) -> VGGTMV:
    torch.manual_seed(seed)
    return VGGTMV(ModelConfig.preset("tiny")).eval()


@pytest.fixture(scope="module")
def model() -> VGGTMV:
    return _model()


@pytest.fixture(scope="module")
def scene() -> Scene:
    g = torch.Generator().manual_seed(1)
    return Scene(images=torch.rand(T, V, 3, H, W, generator=g), view_names=["a", "b", "c"],
                 frame_names=[f"f{t}" for t in range(T)], source={"layout": "test"})


# ---------------------------------------------------------------- windows
@pytest.mark.parametrize("t,window,overlap", [(5, 8, 2), (5, 5, 2), (5, 3, 1), (5, 2, 1), (10, 4, 2),
                                              (7, 3, 2), (9, 4, 1), (1, 8, 2), (13, 8, 2)])
def test_windows_cover_each_timestep_once(t, window, overlap):
    plans = plan_windows(t, window, overlap)
    written = np.concatenate([np.arange(p.start + p.keep_from, p.stop) for p in plans])
    assert np.array_equal(written, np.arange(t))  # each timestep written once, in order
    assert plans[0].start == 0 and plans[0].keep_from == 0 and plans[-1].stop == t
    for prev, p in zip(plans, plans[1:]):
        assert p.length == min(window, t)
        assert p.keep_from == prev.stop - p.start >= overlap  # overlap = steps already written (earlier kept)
        assert p.start > prev.start


def test_window_plan_errors():
    with pytest.raises(ValueError, match="overlap"):
        plan_windows(10, 4, 4)
    with pytest.raises(ValueError, match="overlap >= 1"):
        plan_windows(10, 4, 0)
    assert len(plan_windows(4, 4, 0)) == 1


# ---------------------------------------------------------------- stitching (model-free)
def _ground_truth(rng: np.random.Generator) -> WindowPrediction:
    depth = rng.uniform(1, 3, (T, V, 6, 8)).astype(np.float32)
    ext = np.zeros((T, V, 3, 4), np.float32)
    for t in range(T):
        for v in range(V):
            s = Sim3.random(rng)
            ext[t, v, :, :3], ext[t, v, :, 3] = s.R, s.t
    k = np.tile(np.array([[5, 0, 4], [0, 5, 3], [0, 0, 1]], np.float32), (T, V, 1, 1))
    conf = lambda: rng.uniform(1, 2, depth.shape).astype(np.float32)  # noqa: E731
    return WindowPrediction(depth, conf(), unproject_depth(depth, k, ext).astype(np.float32), conf(), ext, k,
                            rng.uniform(0, 1, depth.shape).astype(np.float32))


@pytest.mark.parametrize("window,overlap", [(3, 1), (2, 1), (4, 2)])
def test_stitching_recovers_known_sim3(window, overlap):
    rng = np.random.default_rng(window)
    gt = _ground_truth(rng)
    plans = plan_windows(T, window, overlap)
    preds = []
    for p in plans:
        local = gt.slice(p.start, p.stop)
        if p.index:  # later windows: own frame and scale; their overlap steps carry other (ignored) values
            local = local.transformed(Sim3.random(rng))
            local.dynamic_mask = local.dynamic_mask.copy()
            local.dynamic_mask[:p.keep_from] = 0.123
            local.depth_conf = local.depth_conf.copy()
            local.depth_conf[:p.keep_from] = -1.0
        preds.append(local)
    out, st = stitch(plans, preds)
    for name in ("depth", "world_points", "extrinsic", "intrinsic", "depth_conf", "world_points_conf",
                 "dynamic_mask"):
        np.testing.assert_allclose(getattr(out, name), getattr(gt, name), atol=2e-5, err_msg=name)
    assert all(i["rms"] < 1e-4 for i in st.info)


def test_stitching_camera_fallback_without_points():
    rng = np.random.default_rng(3)
    gt = _ground_truth(rng)
    gt.world_points[:] = np.nan  # no usable points: the overlap cameras alone align the windows
    plans = plan_windows(T, 3, 2)
    preds = [gt.slice(p.start, p.stop) if p.index == 0 else gt.slice(p.start, p.stop).transformed(Sim3.random(rng))
             for p in plans]
    out, st = stitch(plans, preds)
    np.testing.assert_allclose(out.extrinsic, gt.extrinsic, atol=1e-4)
    np.testing.assert_allclose(out.depth, gt.depth, atol=1e-4)


# ---------------------------------------------------------------- reconstruct
def test_single_window_equals_direct_model_call(model, scene):
    rec = reconstruct(scene, model, window=8, overlap=2)
    with torch.no_grad():
        out = model(scene.images[None])
    np.testing.assert_allclose(rec.depth, out["depth"][0, ..., 0].numpy(), atol=1e-5)
    np.testing.assert_allclose(rec.depth_conf, out["depth_conf"][0].numpy(), atol=1e-5)
    np.testing.assert_allclose(rec.world_points, out["world_points"][0].numpy(), atol=1e-5)
    np.testing.assert_allclose(rec.extrinsic, out["extrinsic"][0].numpy(), atol=1e-5)
    np.testing.assert_allclose(rec.intrinsic, out["intrinsic"][0].numpy(), atol=1e-5)
    m = out["dynamic_mask"][0]
    up = F.interpolate(m.reshape(T * V, 1, *m.shape[-2:]), size=(H, W), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(rec.dynamic_mask, up.reshape(T, V, H, W).numpy(), atol=1e-6)
    assert rec.images.shape == (T, V, H, W, 3) and rec.images.dtype == np.uint8
    meta = rec.meta
    assert meta["weights"] == "random init" and meta["preset"] == "tiny" and meta["layout"] == "factorized"
    assert meta["window"] == 8 and len(meta["windows"]) == 1 and "torch" in meta["versions"]
    assert meta["config"]["embed_dim"] == 64 and set(meta["lambdas"]) >= {"lambda_pose", "lambda_geo"}


def test_windows_progress_and_first_window_frame(model, scene):
    calls = []
    rec = reconstruct(scene, model, window=3, overlap=1, progress=lambda f, msg: calls.append((f, msg)))
    fractions = [f for f, _ in calls]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and fractions == sorted(fractions)
    assert [w["start"] for w in rec.meta["windows"]] == [0, 2]
    with torch.no_grad():  # the first window defines the frame: its timesteps equal a direct call on them
        out = model(scene.images[None, :3])
    np.testing.assert_allclose(rec.extrinsic[:3], out["extrinsic"][0].numpy(), atol=1e-5)
    assert np.isfinite(rec.depth).all() and np.isfinite(rec.extrinsic).all()


def test_cancel_raises(model, scene):
    ev = threading.Event()
    ev.set()
    with pytest.raises(Cancelled, match="cancelled"):
        reconstruct(scene, model, window=3, overlap=1, cancel=ev)
    seen = []
    with pytest.raises(Cancelled, match="window 2/2"):
        reconstruct(scene, model, window=3, overlap=1, cancel=lambda: len(seen) > 1,
                    progress=lambda f, m: seen.append(f))


def test_device_selection():
    assert select_device("cpu").type == "cpu"
    assert select_autocast_dtype(torch.device("cpu"), "bf16") is None  # never autocast on CPU
    if not torch.cuda.is_available():
        assert select_device(None).type == "cpu"
        with pytest.raises(ValueError, match="CUDA is not available"):
            select_device("cuda")


# ---------------------------------------------------------------- cache
def _key(model, images, masks=None, layout="factorized"):
    return window_key(model, images, masks, layout=layout, device=torch.device("cpu"), autocast_dtype=None)


def test_cache_key_rule(scene):
    m = _model()
    imgs = scene.images[None, :3]
    k0 = _key(m, imgs)
    m.set_lambdas(lambda_pose=1.0, lambda_geo_t=-0.5)
    m.config.sparse.landmark_k = 8
    m.config.depth_head.features = 99  # head-only setting
    assert _key(m, imgs) == k0
    assert _key(m, imgs.clone()) == k0  # content, not identity
    assert _key(m, imgs, layout="flat") != k0
    assert _key(m, imgs.flip(-1)) != k0
    assert _key(m, imgs[..., :28]) != k0  # resolution
    assert _key(m, imgs, torch.zeros(1, 3, V, H, W)) != k0
    assert weights_fingerprint(_model()) == weights_fingerprint(m)  # stable across identical models
    with torch.no_grad():
        m.aggregator.patch_embed.patch_embed.proj.bias.add_(1e-3)  # in-place weight change
    k1 = _key(m, imgs)
    assert k1 != k0
    m.config.mask.mask_layer = 1
    assert _key(m, imgs) != k1


def test_cache_lru_byte_budget():
    def state(n):
        return types.SimpleNamespace(layer=3, streams={"main": torch.zeros(n)}, outputs=[torch.zeros(n)],
                                     mask_logit=None, external=None)
    c = PipelineCache(max_bytes=3 * 800)
    for i in range(3):
        assert c.put(f"k{i}", state(100))  # 800 bytes each
    assert c.get("k0") is not None  # k0 is now most recently used
    assert c.put("k3", state(100))
    assert "k1" not in c and {"k0", "k2", "k3"} <= set(c._entries) and c.evictions == 1
    assert not c.put("big", state(1000)) and c.nbytes <= c.max_bytes


def test_cache_hit_on_lambda_change(scene):
    m = _model()
    encoder_calls = []
    m.aggregator.patch_embed.register_forward_hook(lambda *a: encoder_calls.append(1))
    cache = PipelineCache()
    first = reconstruct(scene, m, window=3, overlap=1, cache=cache)
    assert len(encoder_calls) == 2 and len(cache) == 2
    m.set_lambdas(lambda_pose=1.5, lambda_geo=-1.0)
    encoder_calls.clear()
    rerun = reconstruct(scene, m, window=3, overlap=1, cache=cache)
    assert encoder_calls == [] and [w["cache"] for w in rerun.meta["windows"]] == ["hit", "hit"]
    fresh = reconstruct(scene, m, window=3, overlap=1)
    for name in ("depth", "world_points", "extrinsic", "intrinsic", "depth_conf", "dynamic_mask"):
        np.testing.assert_array_equal(getattr(rerun, name), getattr(fresh, name), err_msg=name)
    assert np.abs(first.depth - fresh.depth).max() > 1e-4  # the lambda really changed the output


def test_cache_miss_on_image_or_mask_layer_change(scene):
    m = _model()
    encoder_calls = []
    m.aggregator.patch_embed.register_forward_hook(lambda *a: encoder_calls.append(1))
    cache = PipelineCache()
    reconstruct(scene, m, window=8, cache=cache)
    other = dataclasses.replace(scene, images=scene.images.flip(0))
    rec = reconstruct(other, m, window=8, cache=cache)
    assert len(encoder_calls) == 2 and rec.meta["windows"][0]["cache"] == "miss"
    m.config.mask.mask_layer = 1
    rec = reconstruct(other, m, window=8, cache=cache)
    assert len(encoder_calls) == 3 and rec.meta["windows"][0]["cache"] == "miss"


# ---------------------------------------------------------------- CLI
def test_cli_reconstruct_end_to_end(tmp_path: Path):
    cv2 = pytest.importorskip("cv2")
    from vggt_mv.cli import main
    from vggt_mv.inference.reconstruction import Reconstruction

    rng = np.random.default_rng(0)
    views = []
    for v in range(V):
        d = tmp_path / f"cam{v}"
        d.mkdir()
        for t in range(T):
            cv2.imwrite(str(d / f"frame{t}.png"), rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
        views.append(str(d))
    out = tmp_path / "out"
    rc = main(["reconstruct", "--views", *views, "--preset", "tiny", "--resolution", str(W), "--window", "3",
               "--overlap", "1", "--lambda-pose", "0.5", "--out", str(out), "--no-progress"])
    assert rc == 0
    assert (out / "arrays" / "depth.npy").is_file() and (out / "cameras.json").is_file()
    assert (out / "manifest.json").is_file()
    rec = Reconstruction.load(out)
    assert rec.depth.shape == (T, V, H, W) and rec.view_names == ["cam0", "cam1", "cam2"]
    assert rec.meta["lambdas"]["lambda_pose"] == 0.5 and rec.meta["window"] == 3


def test_conf_landmarks_uses_previous_confidence(scene):
    cfg = ModelConfig.preset("tiny")
    cfg.sparse.strategy = "landmark"
    cfg.sparse.landmark_k = 2  # fewer anchors than the 6 patches per image, so the ranking matters
    torch.manual_seed(0)
    m = VGGTMV(cfg).eval()
    cache = PipelineCache()
    first = reconstruct(scene, m, window=8, cache=cache, conf_landmarks=True)
    assert first.meta["windows"][0]["landmark_scores"] == "first pass of this run"
    again = reconstruct(scene, m, window=8, cache=cache, conf_landmarks=True)
    assert again.meta["windows"][0]["cache"] == "hit"
    assert again.meta["windows"][0]["landmark_scores"] == "previous run (cached)"
    plain = reconstruct(scene, m, window=8, conf_landmarks=False)
    assert np.isfinite(first.depth).all() and np.isfinite(plain.depth).all()
