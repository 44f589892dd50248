"""External keypoints (``--keypoints``) -> heat maps ``[T,V,H,W]`` in [0,1] aligned with the model input.

Sources (``spec``):

* ``sift`` or ``sift:K``: OpenCV's SIFT on each preprocessed frame; the K (default 64) strongest
  responses per frame are rasterised (computed on the model input, so aligned by construction).
* a SegAnyMo output root holding ``moseg/view_N/dynamic_traj.npy`` (or that ``moseg`` folder itself):
  ``[2, N, T]`` pixel tracks (x, y) of camera N's native frames, T = the camera's frame count.
* one folder per camera (a list, in camera order) or one folder holding a subfolder per camera
  (natural order), with one file per frame: a heat-map image (grey level / 255; colour: brightest
  channel) or a ``.npy`` ``[N, 2]`` point list (x, y) in native pixels.

Images go through the camera's preprocessing plan (resize/crop/pad) like the masks (bilinear,
padding 0); points are mapped with the plan (``PreprocessPlan.apply_pixels``) and rasterised as 1 at
their nearest pixel (points outside the image, or non-finite, are dropped). The model max-pools the
map to its patch grid, so a patch is a keypoint patch when any keypoint falls in it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import torch

from . import io
from .preprocess import PreprocessPlan

log = logging.getLogger("vggt_mv.data")

__all__ = ["KeypointSource", "parse_keypoint_source", "load_keypoints", "rasterize_points", "sift_keypoints",
           "SIFT_DEFAULT_K"]

SIFT_DEFAULT_K = 64
SEGANYMO_TRACKS = "dynamic_traj.npy"
_FILE_EXTS = io.IMAGE_EXTS + (".npy",)


@dataclass
class KeypointSource:
    """A parsed ``--keypoints`` value: kind ``sift`` / ``seganymo`` / ``folders``."""

    kind: str
    sift_k: int = SIFT_DEFAULT_K
    paths: list[Path] | None = None  # seganymo: [moseg folder]; folders: one per camera (or [root])

    def describe(self) -> str:
        if self.kind == "sift":
            return f"sift (top {self.sift_k} per frame)"
        return f"{self.kind}: {', '.join(str(p) for p in self.paths or [])}"


def parse_keypoint_source(spec: str | Sequence[str]) -> KeypointSource:
    """``--keypoints`` value(s) -> ``KeypointSource`` (listings only; one-line errors naming the path)."""
    items = [spec] if isinstance(spec, (str, Path)) else list(spec)
    if not items:
        raise ValueError("--keypoints needs a value: sift[:K], a SegAnyMo output folder, or keypoint folders")
    first = str(items[0])
    if first == "sift" or first.startswith("sift:"):
        if len(items) > 1:
            raise ValueError(f"--keypoints {first} takes no further paths, got {items[1:]}")
        k = SIFT_DEFAULT_K
        if ":" in first:
            try:
                k = int(first.split(":", 1)[1])
            except ValueError:
                k = 0
            if k < 1:
                raise ValueError(f"--keypoints {first}: K must be a positive integer (e.g. sift:64)")
        return KeypointSource("sift", sift_k=k)
    paths = [Path(p) for p in items]
    for p in paths:
        if not p.is_dir():
            raise ValueError(f"--keypoints {p}: not a folder; give sift[:K], a SegAnyMo output folder "
                             "(moseg/view_N/dynamic_traj.npy) or one keypoint folder per camera")
    if len(paths) == 1:
        root = paths[0]
        moseg = root if root.name == "moseg" else root / "moseg"
        if moseg.is_dir() and any((d / SEGANYMO_TRACKS).is_file() for d in moseg.iterdir() if d.is_dir()):
            return KeypointSource("seganymo", paths=[moseg])
    return KeypointSource("folders", paths=paths)


def rasterize_points(points: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Points ``[N, 2]`` (x, y) in output pixels -> float32 ``[H, W]`` map, 1 at each point's nearest pixel."""
    h, w = hw
    out = np.zeros((h, w), np.float32)
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    pts = pts[np.isfinite(pts).all(1)]
    x, y = np.rint(pts[:, 0]).astype(np.int64), np.rint(pts[:, 1]).astype(np.int64)
    inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    out[y[inside], x[inside]] = 1.0
    return out


def sift_keypoints(image: np.ndarray, k: int) -> np.ndarray:
    """float ``[H,W,3]`` in [0,1] (or uint8) -> the ``k`` strongest SIFT keypoints ``[n<=k, 2]`` (x, y)."""
    img = image if image.dtype == np.uint8 else np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    kps = cv2.SIFT_create().detect(gray, None)
    kps = sorted(kps, key=lambda kp: -kp.response)[:k]
    return np.array([kp.pt for kp in kps], np.float64).reshape(-1, 2)


def _plans(scene: Any) -> list[PreprocessPlan]:
    """Each view's preprocessing plan, from ``scene.source``."""
    per_view = ((getattr(scene, "source", None) or {}).get("preprocess") or {}).get("per_view")
    if not per_view:
        raise ValueError("--keypoints from files needs the scene's preprocessing plans (a scene loaded from disk); "
                         "use --keypoints sift")
    if "mode" in per_view:  # scene_from_arrays: one plan for every view
        return [PreprocessPlan.from_dict(per_view)] * scene.V
    return [PreprocessPlan.from_dict(per_view[name]) for name in scene.view_names]


def _frame_indices(scene: Any) -> list[int]:
    idx = (getattr(scene, "source", None) or {}).get("frame_indices")
    return list(idx) if idx is not None else list(range(scene.T))


def _load_npy(path: Path, what: str) -> np.ndarray:
    """``np.load`` without pickles; a file that does not load is a one-line error naming it."""
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ValueError(f"--keypoints {path}: cannot read {what} ({e})") from None


def _heat(path: Path, plan: PreprocessPlan) -> np.ndarray:
    """One keypoint file (heat-map image or ``.npy`` point list) -> ``[H, W]`` map in [0,1]."""
    if path.suffix.lower() == ".npy":
        pts = _load_npy(path, "a .npy point list")
        if pts.ndim != 2 or pts.shape[1] != 2:
            raise ValueError(f"--keypoints {path}: expected an [N,2] array of (x, y) native pixels, got shape "
                             f"{pts.shape}")
        return rasterize_points(plan.apply_pixels(pts), plan.out_hw)
    a = io._to_array(io._decode(path, "keypoint map"))
    if a.ndim == 3:
        a = a[..., :3].max(axis=2)
    if a.shape != plan.in_hw:
        raise ValueError(f"--keypoints {path} is {a.shape[1]}x{a.shape[0]} but its camera's frames are "
                         f"{plan.in_hw[1]}x{plan.in_hw[0]} (WxH); heat maps must have the frames' size")
    top = 65535.0 if a.dtype == np.uint16 else 255.0 if a.max() > 1 else 1.0
    return plan.apply_heatmap(a.astype(np.float32) / top)


def _camera_folders(src: KeypointSource, num_views: int) -> list[Path]:
    dirs = src.paths or []
    if len(dirs) == 1 and num_views > 1:
        dirs = io.natural_sorted([p for p in dirs[0].iterdir() if p.is_dir()])
    if len(dirs) != num_views:
        raise ValueError(f"--keypoints: got {len(dirs)} keypoint folder(s) for {num_views} camera(s); give one "
                         "folder per camera (in camera order) or one folder holding a subfolder per camera")
    return dirs


def _files(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _FILE_EXTS and not p.name.startswith(".")]
    if not files:
        raise ValueError(f"--keypoints folder {folder} holds no heat-map image or .npy point list")
    return io.natural_sorted(files)


def _tracks(moseg: Path, view_name: str) -> tuple[Path, np.ndarray]:
    path = moseg / f"view_{io.view_index(view_name)}" / SEGANYMO_TRACKS
    if not path.is_file():
        raise ValueError(f"--keypoints: {path} is missing (SegAnyMo tracks of camera {view_name!r}); every camera "
                         "needs moseg/view_N/dynamic_traj.npy")
    tr = _load_npy(path, "the tracks")
    if tr.ndim != 3 or tr.shape[0] != 2:
        raise ValueError(f"--keypoints {path}: expected SegAnyMo tracks [2, N, T] (x/y, points, frames), got "
                         f"shape {tr.shape}")
    return path, tr


def check_keypoint_source(spec: str | Sequence[str], num_views: int, frame_count: int) -> KeypointSource:
    """Parse ``spec`` and check counts against the scene's listing (before weights load)."""
    src = parse_keypoint_source(spec)
    if src.kind == "folders":
        for d in _camera_folders(src, num_views):
            n = len(_files(d))
            if n < frame_count:
                raise ValueError(f"--keypoints folder {d} has {n} file(s) but the cameras have {frame_count} frames; "
                                 "provide one heat map or point list per frame")
    return src


def load_keypoints(spec: str | Sequence[str] | KeypointSource, scene: Any) -> torch.Tensor:
    """Keypoint heat maps ``[T, V, H, W]`` float32 in [0,1] for ``scene`` (see module doc)."""
    src = spec if isinstance(spec, KeypointSource) else parse_keypoint_source(spec)
    T, V, H, W = scene.T, scene.V, scene.H, scene.W
    out = np.zeros((T, V, H, W), np.float32)
    if src.kind == "sift":
        for t in range(T):  # a frame at a time: a LazyScene decodes it now, a Scene slices it
            frame = scene.images[t] if hasattr(scene, "images") else scene.frames(t, t + 1)[0][0]
            imgs = frame.permute(0, 2, 3, 1).numpy()
            for v in range(V):
                out[t, v] = rasterize_points(sift_keypoints(imgs[v], src.sift_k), (H, W))
        return torch.from_numpy(out)
    plans, idx = _plans(scene), _frame_indices(scene)
    counts = (getattr(scene, "source", None) or {}).get("frame_counts") or {}
    if src.kind == "seganymo":
        for v, (name, plan) in enumerate(zip(scene.view_names, plans)):
            path, tr = _tracks(src.paths[0], name)
            n_frames = counts.get(name, max(idx) + 1)
            if tr.shape[2] != n_frames:
                raise ValueError(f"--keypoints {path}: tracks cover {tr.shape[2]} frames but camera {name!r} has "
                                 f"{n_frames}; use the SegAnyMo output of this very sequence")
            for t, i in enumerate(idx):
                out[t, v] = rasterize_points(plan.apply_pixels(tr[:, :, i].T), (H, W))
        return torch.from_numpy(out)
    for v, (folder, plan) in enumerate(zip(_camera_folders(src, V), plans)):
        files = _files(folder)
        if len(files) <= max(idx):
            raise ValueError(f"--keypoints folder {folder} has {len(files)} file(s) but frame {max(idx)} is used; "
                             "provide one heat map or point list per frame")
        for t, i in enumerate(idx):
            out[t, v] = _heat(files[i], plan)
    return torch.from_numpy(out)
