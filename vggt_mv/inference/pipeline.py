"""``reconstruct``: a loaded ``Scene`` + a ``VGGTMV`` model -> a stitched ``Reconstruction``.

The sequence is cut into temporal windows (``vggt_mv.inference.windows``: each timestep written
once, by the earliest window containing it); each window is one model call on
``[1, Tw, V, 3, H, W]`` whose outputs are moved to CPU numpy before the next window runs (device
memory is bounded by one window), aligned to the stitched result by Sim(3) and written into the
``[T, V, ...]`` result. With a ``PipelineCache`` each window's aggregator state at the first
λ/sparse-affected layer is stored, and a re-run that changed only λ / sparse settings resumes
there (``vggt_mv.inference.cache`` documents the key rule).

Frames come from ``scene.frames(start, stop)`` per window (a ``LazyScene`` decodes them then), and
with ``store`` the stitched arrays are memory-mapped files, so memory is bounded by a window. Under
torchrun (``dist_env``) window i runs on rank i mod N and rank 0 stitches (DESIGN §9).
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from vggt_mv.distributed import DistEnv, Terminated, backend
from vggt_mv.inference.cache import PipelineCache, weights_fingerprint, window_key
from vggt_mv.inference.exchange import RankFailure, WindowPayload, receive_window, send_window
from vggt_mv.inference.device import autocast_context, select_autocast_dtype, select_device
from vggt_mv.inference.geometry import unproject_depth
from vggt_mv.inference.priors import check_epipolar_layout
from vggt_mv.inference.reconstruction import Reconstruction
from vggt_mv.inference.windows import Stitcher, WindowPlan, WindowPrediction, allocate, plan_windows
from vggt_mv.model.keypoint_bias import keypoint_patch_map
from vggt_mv.weights.loader import partial_weights_note

log = logging.getLogger("vggt_mv.inference")

__all__ = ["reconstruct", "Cancelled", "predict_window", "outputs_to_prediction", "LANDMARK_CHOICES",
           "resolve_landmarks"]

#: how ``landmark`` sparse attention picks its anchors (``--landmarks``)
LANDMARK_CHOICES = ("saliency", "confidence", "keypoints")

ProgressFn = Callable[[float, str], Any]
CancelLike = Callable[[], bool] | threading.Event | None


class Cancelled(RuntimeError):
    """Raised by ``reconstruct`` when its ``cancel`` signal is set (checked between windows)."""


def _is_cancelled(cancel: CancelLike) -> bool:
    if cancel is None:
        return False
    if hasattr(cancel, "is_set"):
        return bool(cancel.is_set())
    if callable(cancel):
        return bool(cancel())
    raise TypeError(f"cancel must be a callable or a threading.Event, got {type(cancel).__name__}")


def _package_version() -> str:
    try:
        return importlib.metadata.version("vggt-mv")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _patch_scores(conf: torch.Tensor, patch: int) -> torch.Tensor:
    """Pixel confidence ``[B,T,V,H,W]`` -> per-patch mean ``[B,T,V,h*w]`` (landmark anchor scores)."""
    b, t, v, h, w = conf.shape
    pooled = F.avg_pool2d(conf.float().reshape(b * t * v, 1, h, w), patch)
    return pooled.reshape(b, t, v, -1)


def resolve_landmarks(landmarks: str | None, conf_landmarks: bool = False) -> str:
    """``--landmarks`` value, with the older ``conf_landmarks=True`` meaning ``confidence``."""
    if landmarks is None:
        return "confidence" if conf_landmarks else "saliency"
    if landmarks not in LANDMARK_CHOICES:
        raise ValueError(f"--landmarks must be one of {'/'.join(LANDMARK_CHOICES)}, got {landmarks!r}")
    if conf_landmarks and landmarks != "confidence":
        raise ValueError(f"--conf-landmarks means --landmarks confidence, but --landmarks {landmarks} was given; "
                         "keep one of them")
    return landmarks


def outputs_to_prediction(out: dict[str, torch.Tensor], image_hw: tuple[int, int]) -> WindowPrediction:
    """Model outputs of one window (batch 1, ``[1,Tw,V,...]``) -> CPU numpy ``WindowPrediction``.

    The patch-grid ``dynamic_mask [1,Tw,V,h,w]`` is upsampled bilinearly to ``[Tw,V,H,W]``. A model
    without a point head gets world points unprojected from depth (and vice versa: depth = z of the
    world points in each camera).
    """
    if "extrinsic" not in out:
        raise ValueError("the model has no camera head (enable_camera=False); reconstruct needs cameras")
    if "depth" not in out and "world_points" not in out:
        raise ValueError("the model has neither a depth nor a point head; reconstruct needs one of them")

    def np32(x: torch.Tensor) -> np.ndarray:
        return x[0].detach().float().cpu().numpy()

    ext, intr = np32(out["extrinsic"]), np32(out["intrinsic"])
    depth = np32(out["depth"])[..., 0] if "depth" in out else None
    dconf = np32(out["depth_conf"]) if "depth_conf" in out else None
    pts = np32(out["world_points"]) if "world_points" in out else None
    pconf = np32(out["world_points_conf"]) if "world_points_conf" in out else None
    if pts is None:
        pts, pconf = unproject_depth(depth, intr, ext).astype(np.float32), dconf
    if depth is None:
        cam = np.einsum("tvij,tvhwj->tvhwi", ext[..., :3], pts) + ext[:, :, None, None, :, 3]
        depth, dconf = cam[..., 2].astype(np.float32), pconf
    ones = np.ones_like(depth)
    mask = None
    if "dynamic_mask" in out:
        m = out["dynamic_mask"][0].detach().float()
        tw, v, h, w = m.shape
        mask = F.interpolate(m.reshape(tw * v, 1, h, w), size=image_hw, mode="bilinear", align_corners=False)
        mask = mask.clamp(0, 1).reshape(tw, v, *image_hw).cpu().numpy()
    return WindowPrediction(depth=depth, depth_conf=ones if dconf is None else dconf, world_points=pts,
                            world_points_conf=ones if pconf is None else pconf, extrinsic=ext, intrinsic=intr,
                            dynamic_mask=mask)


def predict_window(model: torch.nn.Module, images: torch.Tensor, ext_masks: torch.Tensor | None, *,
                   layout: str, device: torch.device, autocast_dtype: torch.dtype | None,
                   cache: PipelineCache | None = None, conf_landmarks: bool = False,
                   query_points: torch.Tensor | None = None, epipolar: Any = None,
                   epipolar_id: str = "off", ext_keypoints: torch.Tensor | None = None,
                   landmarks: str | None = None) -> tuple[dict, dict]:
    """One window through the model: images ``[1,Tw,V,3,H,W]``, ext_masks ``[1,Tw,V,H,W]`` or None.

    query_points ``[1,N,2]`` (reference-image pixels, track head) and ``epipolar`` (an
    ``EpipolarPrior`` for this window, identified by ``epipolar_id`` in the cache key) are optional.

    Returns ``(outputs, info)``; info says whether the cache was hit. With a cache, a hit resumes
    from the stored ``AggregatorState`` (no encoder / early layers), a miss runs fully and stores
    the snapshot at ``first_affected_layer()``. ``conf_landmarks`` (``landmark`` sparse strategy
    only) passes the window's patch-grid confidence from a previous run as anchor scores: the
    cached one if any, else from a first pass of this call (resumed from its own snapshot).
    ``ext_keypoints [1,Tw,V,H,W]`` feeds the sparse layers' keypoint bias; ``landmarks`` (see
    ``resolve_landmarks``) = ``keypoints`` ranks the anchors by the keypoint map pooled to patches.
    The keypoints act only from the first sparse layer on, so they are not part of the cache key.
    """
    agg = model.aggregator
    layer = agg.first_affected_layer()
    landmarks = resolve_landmarks(landmarks, conf_landmarks)
    is_landmark = model.config.sparse.strategy == "landmark"
    use_lm = landmarks == "confidence" and is_landmark
    patch = model.config.patch_size
    info: dict[str, Any] = {"cache": "off", "landmark_scores": "none"}
    kpt_scores = None
    if landmarks == "keypoints":
        if ext_keypoints is None:
            raise ValueError("--landmarks keypoints needs a keypoint source: add --keypoints sift (or a folder)")
        if is_landmark:
            kpt_scores = keypoint_patch_map(ext_keypoints, patch).flatten(3)
            info["landmark_scores"] = "keypoints"
    kw = {"ext_keypoints": ext_keypoints}
    key = None
    entry = None
    with autocast_context(device, autocast_dtype):
        if cache is not None:
            key = window_key(model, images, ext_masks, layout=layout, device=device, autocast_dtype=autocast_dtype,
                             epipolar=epipolar_id)
            entry = cache.get(key, device)
            info["cache"] = "hit" if entry is not None else "miss"
        if entry is not None:
            scores = entry.landmark_scores if use_lm else None
            info["landmark_scores"] = "previous run (cached)" if scores is not None else "none"
            if kpt_scores is not None:
                scores = kpt_scores
                info["landmark_scores"] = "keypoints"
            out = model(images, ext_masks, query_points, layout=layout, resume=entry.state, landmark_scores=scores,
                        epipolar=epipolar, **kw)
        else:
            want_snapshot = cache is not None or use_lm
            out = model(images, ext_masks, query_points, layout=layout, snapshot_at=layer if want_snapshot else None,
                        return_aggregator=want_snapshot, epipolar=epipolar, landmark_scores=kpt_scores, **kw)
            snap = out.pop("_aggregator").snapshot if want_snapshot else None
            scores = None
            if use_lm and snap is not None and "depth_conf" in out:
                scores = _patch_scores(out["depth_conf"], patch)
                out = model(images, ext_masks, query_points, layout=layout, resume=snap, landmark_scores=scores,
                            epipolar=epipolar, **kw)
                info["landmark_scores"] = "first pass of this run"
            if cache is not None and snap is not None:
                cache.put(key, snap, model, scores)
    if cache is not None and key is not None and "depth_conf" in out:
        cache.set_landmark_scores(key, _patch_scores(out["depth_conf"], patch))
    return out, info


class _TrackStitcher:
    """Tracks of the query points over all windows: ``[T,V,N,2]`` pixels, ``[T,V,N]`` visibility.

    Each timestep is written by the earliest window containing it (like the geometry); window k's
    queries are the tracked view-0 positions at its first timestep (or the last written one).
    """

    def __init__(self, T: int, V: int, query_points: np.ndarray, model: torch.nn.Module):
        if getattr(model, "track_head", None) is None:
            raise ValueError("--query-points needs a model with a track head: load a checkpoint with track_head.* "
                             "tensors into a vggt_mv/tiny preset, or use a config with enable_track=true")
        q = np.asarray(query_points, np.float32)
        if q.ndim != 2 or q.shape[1] != 2 or not len(q):
            raise ValueError(f"query_points must be [N,2] pixel (x, y), got shape {q.shape}")
        self.q0 = q
        self.tracks = np.full((T, V, len(q), 2), np.nan, np.float32)
        self.vis = np.zeros((T, V, len(q)), np.float32)
        self.conf: np.ndarray | None = None
        self.written = 0  # timesteps [0, written) are done

    def queries(self, start: int, device: torch.device) -> torch.Tensor:
        q = self.q0 if self.written == 0 else self.tracks[min(start, self.written - 1), 0]
        return torch.as_tensor(np.ascontiguousarray(q), dtype=torch.float32, device=device)[None]

    def add(self, start: int, stop: int, out: dict) -> None:
        keep = max(start, self.written)
        sl, src = slice(keep, stop), slice(keep - start, stop - start)
        self.tracks[sl] = out["track"][0, src].detach().float().cpu().numpy()
        self.vis[sl] = out["vis"][0, src].detach().float().cpu().numpy()
        if "conf" in out:
            if self.conf is None:
                self.conf = np.zeros_like(self.vis)
            self.conf[sl] = out["conf"][0, src].detach().float().cpu().numpy()
        self.written = max(self.written, stop)

    def result(self, query_points: np.ndarray) -> dict[str, np.ndarray | None]:
        return {"tracks": self.tracks, "track_vis": self.vis, "track_conf": self.conf,
                "query_points": np.asarray(query_points, np.float32)}


def _to_uint8_hwc(images: torch.Tensor, chunk: int = 4) -> np.ndarray:
    """``[T,V,3,H,W]`` floats in [0,1] -> ``[T,V,H,W,3]`` uint8, a few timesteps at a time so no
    sequence-sized float temporaries are made (memory stays bounded by the window)."""
    t, v, _, h, w = images.shape
    out = np.empty((t, v, h, w, 3), np.uint8)
    for s in range(0, t, chunk):
        part = images[s:s + chunk].detach().float().clamp(0, 1).mul_(255).round_()
        out[s:s + chunk] = part.to(torch.uint8).permute(0, 1, 3, 4, 2).cpu().numpy()
    return out


def _maybe_die(rank: int, index: int) -> None:
    """Test hook: ``VGGT_MV_TEST_DIE_RANK=R:I`` kills rank R (SIGKILL) when rank 0 asks it for window I."""
    spec = os.environ.get("VGGT_MV_TEST_DIE_RANK", "")
    if spec and spec == f"{rank}:{index}":
        os.kill(os.getpid(), signal.SIGKILL)


def _scene_shape(scene: Any) -> tuple[int, int, int, int]:
    if hasattr(scene, "frames") and not hasattr(scene, "images"):  # LazyScene
        return scene.T, scene.V, scene.H, scene.W
    images = scene.images
    if images.dim() != 5 or images.shape[2] != 3:
        raise ValueError(f"scene.images must be [T,V,3,H,W], got {tuple(images.shape)}")
    return tuple(int(x) for x in (images.shape[0], images.shape[1], images.shape[3], images.shape[4]))


def _frames(scene: Any, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    if hasattr(scene, "frames"):
        return scene.frames(start, stop)
    return scene.images[start:stop], None if scene.ext_masks is None else scene.ext_masks[start:stop]


def reconstruct(
    scene: Any,
    model: torch.nn.Module,
    *,
    window: int = 8,
    overlap: int = 2,
    layout: str | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelLike = None,
    cache: PipelineCache | None = None,
    conf_landmarks: bool = False,
    query_points: np.ndarray | None = None,
    epipolar: Any = None,
    landmarks: str | None = None,
    store: str | os.PathLike | None = None,
    dist_env: DistEnv | None = None,
) -> Reconstruction | None:
    """Reconstruct ``scene`` window by window -> ``Reconstruction``.

    scene: a ``Scene`` (``images [T,V,3,H,W]`` in [0,1]) or a ``LazyScene`` (frames decoded per window).
    window / overlap: timesteps per model call and timesteps shared with the previous window
      (only used for alignment; the earlier window's values are kept).
    layout: ``flat`` / ``factorized`` (default: the model config's); one view always runs 5-D.
    device: ``None``/``"auto"`` = CUDA if available else CPU (the model is moved there).
    dtype: autocast dtype on CUDA (default bf16, else fp16); ignored on CPU, which runs float32.
    progress: ``progress(fraction in [0,1], message)`` after each window.
    cancel: a ``threading.Event`` or callable returning True; checked before each window, raises
      ``Cancelled``.
    cache: a ``PipelineCache`` reused across calls (λ / sparse re-runs skip the upstream layers).
    conf_landmarks: with the ``landmark`` sparse strategy, rank anchors by a previous run's confidence
      (the same as ``landmarks="confidence"``).
    landmarks: ``saliency`` (default) / ``confidence`` / ``keypoints`` anchors for ``landmark``;
      ``keypoints`` needs ``scene.keypoints``. ``scene.keypoints [T,V,H,W]`` (if any) also feeds the
      sparse layers' keypoint bias (``model.set_keypoint_lambdas``).
    query_points: ``[N,2]`` pixel (x, y) in the reference image (t=0, v=0) at the model-input
      resolution (``vggt_mv.inference.priors.load_query_points``); needs a track head. The result
      gets ``tracks [T,V,N,2]`` / ``track_vis [T,V,N]`` (chained across windows, see priors).
    epipolar: an ``EpipolarCameras`` (``priors.epipolar_cameras``) feeding ``EpipolarPrior`` per window.
    store: a folder for the result's arrays as memory-mapped ``.npy`` files (e.g. the output's temp
      folder ``arrays/``); default: in memory.
    dist_env: a multi-rank ``vggt_mv.distributed.DistEnv``: window i runs on rank i mod N and goes to
      rank 0 (``vggt_mv.inference.exchange``), which stitches in window order exactly as one process
      does. Returns the result on rank 0 and None on the other ranks.

    The result's ``meta`` holds the run manifest (scene source, config, weights identity, λ,
    layout, windows with their Sim(3) and rank, cache hits, timings, versions, world size).
    """
    t_start = time.perf_counter()
    T, V, H, W = _scene_shape(scene)
    layout = layout or model.config.layout
    if layout not in ("flat", "factorized"):
        raise ValueError(f"layout must be 'flat' or 'factorized', got {layout!r}")
    world = dist_env.world_size if dist_env is not None else 1
    rank = dist_env.rank if dist_env is not None else 0
    if world > 1 and query_points is not None:
        raise ValueError("--query-points chains each window's tracks from the previous window: run it on one "
                         "process (without torchrun)")
    if world > 1 and cache is not None:
        raise ValueError("a PipelineCache belongs to one process; pass cache=None under torchrun")
    dev = select_device(device)
    amp = select_autocast_dtype(dev, dtype)
    plans: list[WindowPlan] = plan_windows(T, window, overlap)
    first = next(iter(model.parameters()), None)
    if first is not None and first.device != dev:
        model.to(dev)
    was_training = model.training
    model.eval()
    tracks = _TrackStitcher(T, V, query_points, model) if query_points is not None else None
    if epipolar is not None:
        check_epipolar_layout(epipolar.source, layout, V)
    landmarks = resolve_landmarks(landmarks, conf_landmarks)
    keypoints = getattr(scene, "keypoints", None)
    if landmarks == "keypoints" and keypoints is None:
        raise ValueError("--landmarks keypoints needs a keypoint source: add --keypoints sift (or a folder)")
    if keypoints is not None and tuple(keypoints.shape) != (T, V, H, W):
        raise ValueError(f"scene.keypoints must be [T,V,H,W] = {(T, V, H, W)}, got {tuple(keypoints.shape)}")

    def report(fraction: float, message: str) -> None:
        if progress is not None:
            progress(float(fraction), message)

    def compute(plan: WindowPlan) -> WindowPayload:
        """Run one window here -> its prediction (all Tw steps) + uint8 images of its new steps."""
        t0 = time.perf_counter()
        imgs, masks = _frames(scene, plan.start, plan.stop)
        u8 = _to_uint8_hwc(imgs[plan.keep_from:])
        imgs = imgs[None].to(dev, torch.float32)
        masks = None if masks is None else masks[None].to(dev, torch.float32)
        qp = None if tracks is None else tracks.queries(plan.start, dev)
        prior = None if epipolar is None else epipolar.window(plan.start, plan.stop, dev)
        epi_id = "off" if epipolar is None else epipolar.identity(plan.start, plan.stop)
        kpts = None if keypoints is None else keypoints[plan.start:plan.stop][None].to(dev, torch.float32)
        out, info = predict_window(model, imgs, masks, layout=layout, device=dev, autocast_dtype=amp,
                                   cache=cache, query_points=qp, epipolar=prior, epipolar_id=epi_id,
                                   ext_keypoints=kpts, landmarks=landmarks)
        t1 = time.perf_counter()
        if tracks is not None:
            tracks.add(plan.start, plan.stop, out)
        pred = outputs_to_prediction(out, (H, W))
        del out, imgs, masks
        arrays = {f.name: getattr(pred, f.name) for f in dataclasses.fields(pred) if getattr(pred, f.name) is not None}
        arrays["images"] = u8
        return WindowPayload(plan.index, arrays, {**info, "rank": rank, "model_s": t1 - t0,
                                                  "compute_s": time.perf_counter() - t0})

    if rank != 0:  # a worker: run my windows, hand each to rank 0 when it asks for it
        try:
            with torch.inference_mode():
                for plan in plans[rank::world]:
                    payload = compute(plan)
                    send_window(payload, dst=0, timeout=dist_env.timeout_s,
                                before_send=lambda: _maybe_die(rank, plan.index))
                    del payload
        finally:
            model.train(was_training)
        return None

    stitcher = Stitcher(T, store=None if store is None else Path(store))
    images_u8 = allocate(None if store is None else Path(store), "images", (T, V, H, W, 3), np.uint8)
    win_meta: list[dict] = []
    exchange = {"bytes_received": 0, "max_windows_held": 0}
    held = 0
    report(0.0, f"{len(plans)} window(s) of {plans[0].length} timestep(s) x {V} view(s) on {dev.type}"
                + (f", {world} ranks" if world > 1 else ""))
    try:
        with torch.inference_mode():
            for plan in plans:
                if _is_cancelled(cancel):
                    raise Cancelled(f"reconstruction cancelled before window {plan.index + 1}/{len(plans)}")
                t0 = time.perf_counter()
                owner = plan.index % world
                span = f"window {plan.index} (t={plan.start}..{plan.stop - 1})"
                try:
                    if owner == 0:
                        payload = compute(plan)
                    else:
                        payload, nbytes = receive_window(plan.index, owner, timeout=dist_env.timeout_s)
                        exchange["bytes_received"] += nbytes
                except Terminated:
                    doing = "running it here" if owner == 0 else f"waiting for it from rank {owner}"
                    raise RankFailure(f"rank 0 was stopped (SIGTERM: torchrun stops every rank when one fails) "
                                      f"at {span}, {doing}; no output written") from None
                except (RuntimeError, TimeoutError) as e:
                    if owner == 0 or isinstance(e, RankFailure):
                        raise
                    raise RankFailure(f"rank {owner} failed before handing over {span} ({e}); no output "
                                      "written") from None
                held += 1  # finished windows alive on rank 0 (instrumented for the manifest / benchmark)
                exchange["max_windows_held"] = max(exchange["max_windows_held"], held)
                info, arrays = payload.info, payload.arrays
                u8 = arrays.pop("images")
                pred = WindowPrediction(**{f.name: arrays.get(f.name) for f in dataclasses.fields(WindowPrediction)})
                stitcher.add(plan, pred)
                images_u8[plan.start + plan.keep_from:plan.stop] = u8
                del pred, arrays, u8, payload  # held no longer than its stitching
                held -= 1
                win_meta.append({**stitcher.info[-1], **info, "total_s": time.perf_counter() - t0})
                report((plan.index + 1) / len(plans),
                       f"window {plan.index + 1}/{len(plans)} (t={plan.start}..{plan.stop - 1}, "
                       f"cache {info['cache']}, rank {owner})")
    finally:
        model.train(was_training)

    res = stitcher.result()
    gt = None
    if getattr(scene, "gt", None) is not None:
        gt = {k: getattr(scene.gt, k) for k in ("depth", "intrinsic", "extrinsic", "dynamic_mask")
              if getattr(scene.gt, k, None) is not None} or None
    cfg = model.config
    meta = {
        "manifest": "vggt-mv reconstruct run",
        "scene": {"source": dict(getattr(scene, "source", {}) or {}), "shape_TVHW": [T, V, H, W],
                  "view_names": list(getattr(scene, "view_names", []) or []),
                  "frame_names": list(getattr(scene, "frame_names", []) or [])},
        "preset": cfg.name,
        "config": cfg.to_dict(),
        "weights": getattr(model, "weights_identity", None) or "random init",
        "partial_weights": partial_weights_note(model),
        "lambdas": model.lambdas(),
        "sparse": {"strategy": cfg.sparse.strategy, "layers": list(cfg.sparse.layers)},
        "layout": layout if V > 1 else "flat (single view: 5-D path)",
        "window": window, "overlap": overlap,
        "windows": win_meta,
        "world_size": world,
        "distributed": None if world == 1 else {
            "backend": backend(), "rule": "window i on rank i mod world_size; rank 0 stitches in window order",
            "timeout_s": dist_env.timeout_s, "bytes_received_by_rank0": exchange["bytes_received"],
            "max_windows_held_by_rank0": exchange["max_windows_held"]},
        "device": str(dev), "autocast_dtype": str(amp) if amp is not None else "float32 (no autocast)",
        "conf_landmarks": landmarks == "confidence",
        "landmarks": landmarks,
        "keypoints": None if keypoints is None else {
            **model.keypoint_lambdas(), "source": (getattr(scene, "source", None) or {}).get("keypoints", "given"),
            "bias": "geo rows +lambda_kpt*K_j, pose rows +lambda_kpt_pose*K_j (sparse layers)"},
        "epipolar": "off" if epipolar is None else {"source": epipolar.source, "strength": epipolar.strength,
                                                    "band_px": epipolar.band, "penalty": "-strength*(d/band)^2"},
        "tracks": None if tracks is None else {"num_points": int(len(query_points)), "reference": "t=0, view 0",
                                               "chained_across_windows": len(plans) > 1},
        "timings": {"total_s": time.perf_counter() - t_start,
                    "model_s": sum(w["model_s"] for w in win_meta)},
        "versions": {"torch": torch.__version__, "vggt_mv": _package_version()},
    }
    if cache is not None:
        meta["cache"] = {**cache.stats(), "weights_fingerprint": weights_fingerprint(model),
                         "first_affected_layer": model.aggregator.first_affected_layer()}
    rec = Reconstruction(images=images_u8, depth=res.depth, depth_conf=res.depth_conf, world_points=res.world_points,
                         world_points_conf=res.world_points_conf, extrinsic=res.extrinsic, intrinsic=res.intrinsic,
                         dynamic_mask=res.dynamic_mask, view_names=list(getattr(scene, "view_names", []) or []) or None,
                         meta=meta, gt=gt,
                         **({} if tracks is None else tracks.result(query_points)))
    report(1.0, f"done in {meta['timings']['total_s']:.1f}s")
    return rec
