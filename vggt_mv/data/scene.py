"""``load_scene``: multi-camera frame folders / videos / time-major dumps -> a preprocessed ``Scene``.

Accepted inputs (``views_or_root``):

* a list of cameras, each a folder of frames (natural sort: frame2 < frame10) or a video file;
* a root folder with ``cam*/`` or ``view*/`` entries (folders or videos), optional ``masks/<cam>/``;
* a time-major dump (``images/time_XX/viewN.png`` or ``time_XX/viewN.png`` directly under the
  root), with optional ``depths/ intrs/ extrs/`` ground truth and ``masks/view_N/NNN.png``.

Rules: cameras with different frame counts are truncated to the shortest one (warning on the
``vggt_mv.data`` logger, recorded in ``source["truncated"]``); frame range and stride are then
applied before any pixel is decoded; unreadable images, mixed sizes within a camera, empty
folders and mismatching mask folders raise ``ValueError`` naming the path. Views whose
preprocessed sizes differ (different aspect ratios) are padded white to a common size.
In a dump, ``masks/view_N`` become the external masks and, unless ``dynamic_masks/time_XX/viewN.png``
exists, also the ground-truth dynamic mask (``source["gt"]["dynamic_mask"]`` says which).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from . import io
from .preprocess import PreprocessPlan, check_resolution, common_size, default_resolution, plan_preprocess

log = logging.getLogger("vggt_mv.data")
PathLike = str | Path


@dataclass
class SceneGT:
    """Optional ground truth, transformed like the images (any field may be None)."""

    depth: np.ndarray | None = None          # [T,V,H,W] float32 z-depth, 0 = invalid
    intrinsic: np.ndarray | None = None      # [T,V,3,3] float32
    extrinsic: np.ndarray | None = None      # [T,V,3,4] float32 world-to-camera (OpenCV)
    dynamic_mask: np.ndarray | None = None   # [T,V,H,W] bool


@dataclass
class Scene:
    """Preprocessed multi-view sequence: ``images [T,V,3,H,W]`` float32 in [0,1]."""

    images: torch.Tensor
    ext_masks: torch.Tensor | None = None    # [T,V,H,W] float32 in {0,1}
    gt: SceneGT | None = None
    view_names: list[str] = field(default_factory=list)
    frame_names: list[str] = field(default_factory=list)
    source: dict = field(default_factory=dict)
    keypoints: torch.Tensor | None = None   # [T,V,H,W] float32 in [0,1] (vggt_mv.data.keypoints)

    @property
    def T(self) -> int:
        return int(self.images.shape[0])

    @property
    def V(self) -> int:
        return int(self.images.shape[1])

    @property
    def H(self) -> int:
        return int(self.images.shape[3])

    @property
    def W(self) -> int:
        return int(self.images.shape[4])

    def frames(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Images ``[t,V,3,H,W]`` and external masks ``[t,V,H,W]`` (or None) of timesteps ``[start, stop)``
        (views of the loaded tensors; :class:`LazyScene` decodes them instead)."""
        return self.images[start:stop], None if self.ext_masks is None else self.ext_masks[start:stop]

    def window(self, start: int, stop: int) -> "Scene":
        """Timesteps ``[start, stop)`` as a new Scene (tensors are views, not copies)."""
        sl = slice(start, stop)
        gt = None if self.gt is None else SceneGT(
            *[None if a is None else a[sl] for a in (self.gt.depth, self.gt.intrinsic,
                                                     self.gt.extrinsic, self.gt.dynamic_mask)])
        return replace(self, images=self.images[sl],
                       ext_masks=None if self.ext_masks is None else self.ext_masks[sl], gt=gt,
                       keypoints=None if self.keypoints is None else self.keypoints[sl],
                       frame_names=self.frame_names[sl], source={**self.source, "window": [start, stop]})


# ----------------------------------------------------------------------------- cameras

@dataclass
class _Camera:
    name: str
    path: Path
    frames: list[Path] | None            # None for a video
    n: int
    depth: list[Path] | None = None
    intr: list[Path] | None = None
    extr: list[Path] | None = None
    dyn: list[Path] | None = None
    masks: list[Path] | None = None
    mask_dir: Path | None = None

    def iter_frames(self, idx: list[int]) -> Iterator[np.ndarray]:
        """uint8 RGB frames ``idx`` (sorted), decoded one at a time."""
        if self.frames is None:
            yield from io.iter_video_frames(self.path, idx)
        else:
            for i in idx:
                yield io.read_rgb(self.frames[i])

    def frame_label(self, i: int) -> str:
        return str(self.frames[i]) if self.frames is not None else f"{self.path}#frame{i}"


def _camera(path: Path) -> _Camera:
    if io.is_video(path):
        return _Camera(path.stem, path, None, io.video_frame_count(path))
    if not path.exists():
        raise ValueError(f"camera {str(path)!r} does not exist; pass a folder of frames or a video file")
    frames = io.list_images(path)
    return _Camera(path.name, path, frames, len(frames))


def _is_cam_entry(p: Path) -> bool:
    n = p.name.lower()
    return (n.startswith("cam") or n.startswith("view")) and (p.is_dir() or io.is_video(p))


def _dump_cameras(root: Path, img_root: Path) -> list[_Camera]:
    """Cameras of a time-major dump, with GT and mask paths when present."""
    tdirs = io.dump_time_dirs(img_root)
    first = io.dump_view_files(tdirs[0])
    if not first:
        raise ValueError(f"{str(tdirs[0])!r} holds no viewN.png images; expected time_XX/view0.png ...")
    names = io.natural_sorted(list(first))
    per_view: dict[str, list[Path]] = {n: [] for n in names}
    for td in tdirs:
        files = io.dump_view_files(td)
        missing = [n for n in names if n not in files]
        if missing:
            log.warning("dump %s: %s lacks %s; using the %d timesteps before it",
                        root, td.name, missing, len(per_view[names[0]]))
            break
        for n in names:
            per_view[n].append(files[n])
    cams = []
    base = img_root.parent if img_root.name == "images" else img_root
    for n in names:
        frames = per_view[n]
        cam = _Camera(n, img_root, frames, len(frames))
        tnames = [f.parent.name for f in frames]
        for attr, sub, ext in (("depth", "depths", ".npy"), ("intr", "intrs", ".npy"),
                               ("extr", "extrs", ".npy"), ("dyn", "dynamic_masks", ".png")):
            if (base / sub).is_dir():
                files = [base / sub / tn / f"{n}{ext}" for tn in tnames]
                absent = [f for f in files if not f.is_file()]
                if absent:
                    raise ValueError(f"ground truth file {str(absent[0])!r} is missing; every "
                                     f"time_XX folder of {str(base / sub)!r} needs {n}{ext} "
                                     "(or remove that folder)")
                setattr(cam, attr, files)
        mdir = base / "masks" / f"view_{io.view_index(n)}"
        if mdir.is_dir():
            cam.mask_dir = mdir
        cams.append(cam)
    return cams


def _unique_names(cams: list[_Camera]) -> list[_Camera]:
    """Cameras named alike (``A/rgb``, ``B/rgb``) take their parent folder's name too (``A_rgb``,
    ``B_rgb``), so exports (COLMAP image folders, cameras.json) keep them apart."""
    counts = Counter(c.name for c in cams)
    for c in cams:
        if counts[c.name] > 1:
            c.name = f"{c.path.parent.name}_{c.name}" if c.path.parent.name else c.name
    seen: Counter[str] = Counter()
    for c in cams:  # still alike (the same folder twice): number them
        seen[c.name] += 1
        if seen[c.name] > 1:
            log.warning("camera %s is given more than once; its copy %d is named %s_%d",
                        c.path, seen[c.name], c.name, seen[c.name])
            c.name = f"{c.name}_{seen[c.name]}"
    return cams


def _resolve(views_or_root: PathLike | Sequence[PathLike]) -> tuple[str, list[_Camera], Path | None]:
    """-> (layout name, cameras, root or None)."""
    if isinstance(views_or_root, (str, Path)):
        entries = [Path(views_or_root)]
        single = True
    else:
        entries = [Path(p) for p in views_or_root]
        single = len(entries) == 1
        if not entries:
            raise ValueError("no cameras given; pass camera folders/videos or a scene root folder")
    if single and not entries[0].exists():
        raise ValueError(f"{str(entries[0])!r} does not exist; pass a scene root (cam*/ or view*/ camera folders, "
                         "or images/time_XX/viewN.png) or one frame folder / video per camera")
    if single and entries[0].is_dir():
        root = entries[0]
        img_root = io.dump_image_root(root)
        if img_root is not None:
            return "dump", _dump_cameras(root, img_root), root
        subs = io.natural_sorted([p for p in root.iterdir() if _is_cam_entry(p)])
        if subs:
            cams = [_camera(p) for p in subs]
            for c in cams:
                for cand in (root / "masks" / c.name, root / "masks" / f"view_{io.view_index(c.name)}"):
                    if cand.is_dir():
                        c.mask_dir = cand
                        break
            return "camera_root", cams, root
        subdirs = io.natural_sorted([p for p in root.iterdir() if p.is_dir()])
        if subdirs and not any(p.suffix.lower() in io.IMAGE_EXTS for p in root.iterdir()):
            names = ", ".join(p.name for p in subdirs[:4]) + (", ..." if len(subdirs) > 4 else "")
            raise ValueError(f"{str(root)!r} has no images and is not a scene root: its subfolders ({names}) are "
                             "not named cam*/view* and there is no images/time_XX/viewN.png; pass the camera "
                             "folders one by one (--views) or rename them cam0, cam1, ...")
    cams = _unique_names([_camera(p) for p in entries])
    kinds = {"video" if c.frames is None else "frames" for c in cams}
    return ("videos" if kinds == {"video"} else "frame_folders" if kinds == {"frames"} else "mixed"), cams, None


def _attach_masks(cams: list[_Camera], masks) -> None:
    """Assign explicit mask folders (list per view, or a root with one subfolder per view)."""
    if masks is None:
        return
    for c in cams:
        c.mask_dir = None
    if masks is False:
        return
    if isinstance(masks, (str, Path)):
        root = Path(masks)
        if not root.is_dir():
            raise ValueError(f"mask root {str(root)!r} is not a folder; pass one mask folder per view")
        dirs = io.natural_sorted([p for p in root.iterdir() if p.is_dir()])
    else:
        dirs = [Path(m) for m in masks]
    if len(dirs) != len(cams):
        how = (f"the mask root {str(masks)!r} holds {len(dirs)} subfolder(s)" if isinstance(masks, (str, Path))
               else f"got {len(dirs)} mask folders")
        raise ValueError(f"{how} for {len(cams)} cameras; give one mask folder per camera, in camera order "
                         "(or a root holding one subfolder per camera)")
    for c, d in zip(cams, dirs):
        c.mask_dir = d


# ----------------------------------------------------------------------------- loading

def _read_preprocessed(cam: _Camera, idx: list[int], hw: tuple[int, int],
                       plan: PreprocessPlan) -> np.ndarray:
    """Decode and preprocess frames ``idx``: float32 ``[t,H,W,3]``; mixed sizes -> ValueError."""
    out = []
    for k, img in enumerate(cam.iter_frames(idx)):
        if img.shape[:2] != hw:
            raise ValueError(
                f"camera {cam.name!r} mixes image sizes: {cam.frame_label(idx[0])!r} is "
                f"{hw[1]}x{hw[0]} but {cam.frame_label(idx[k])!r} is {img.shape[1]}x{img.shape[0]} "
                "(WxH); resize all frames of one camera to the same size")
        out.append(plan.apply_image(img))
    return np.stack(out)


def _load_masks(cam: _Camera, n_total: int, idx: list[int], hw: tuple[int, int],
                plan: PreprocessPlan) -> np.ndarray:
    files = io.list_images(cam.mask_dir, what="mask folder")
    if len(files) not in (cam.n, n_total):
        raise ValueError(f"mask folder {str(cam.mask_dir)!r} has {len(files)} masks but camera "
                         f"{cam.name!r} has {cam.n} frames; provide one mask per frame")
    out = []
    for i in idx:
        m = io.read_mask(files[i])
        if m.shape != hw:
            raise ValueError(f"mask {str(files[i])!r} in folder {str(cam.mask_dir)!r} is "
                             f"{m.shape[1]}x{m.shape[0]} but the frames are {hw[1]}x{hw[0]} (WxH); "
                             "masks must have the size of their camera's frames")
        out.append(plan.apply_mask(m))
    return np.stack(out)


def _load_gt(cam: _Camera, idx: list[int], hw: tuple[int, int], plan: PreprocessPlan) -> dict:
    gt: dict[str, np.ndarray | None] = {}
    if cam.depth:
        ds = []
        for i in idx:
            d = np.load(cam.depth[i])
            if d.shape != hw:
                raise ValueError(f"depth {str(cam.depth[i])!r} is {d.shape} but its image is {hw}; "
                                 "depth maps must be HxW like the image")
            ds.append(plan.apply_depth(np.nan_to_num(d, nan=0.0, posinf=0.0, neginf=0.0)))
        gt["depth"] = np.stack(ds)
    if cam.intr:
        Ks = np.stack([np.load(cam.intr[i]).astype(np.float64)[:3, :3] for i in idx])
        gt["intrinsic"] = plan.apply_intrinsic(Ks)
    if cam.extr:
        gt["extrinsic"] = np.stack([np.load(cam.extr[i]).astype(np.float32)[:3, :4] for i in idx])
    if cam.dyn:
        gt["dynamic_mask"] = np.stack([plan.apply_mask(io.read_mask(cam.dyn[i])) for i in idx])
    return gt


def _stack_gt(per_cam: list[dict], key: str) -> np.ndarray | None:
    if not per_cam or any(g.get(key) is None for g in per_cam):
        return None
    return np.stack([g[key] for g in per_cam], axis=1)


def _select(views_or_root, masks, frame_range, stride) -> tuple[str, list[_Camera], Path | None, int, list[int]]:
    """Cameras and the selected frame indices, from file listings only (no pixel decoded)."""
    if int(stride) != stride or stride < 1:
        raise ValueError(f"stride must be an integer >= 1, got {stride}")
    layout, cams, root = _resolve(views_or_root)
    _attach_masks(cams, masks)
    n = min(c.n for c in cams)
    start, stop = frame_range if frame_range is not None else (None, None)
    idx = list(range(n))[slice(start, stop, stride)]
    if not idx:
        raise ValueError(f"frame range {start}:{stop} with stride {stride} selects no frame of the "
                         f"{n} available; widen the range")
    return layout, cams, root, n, idx


def scan_scene(views_or_root: PathLike | Sequence[PathLike], *, masks=None,
               frame_range: tuple[int | None, int | None] | None = None, stride: int = 1) -> tuple[int, int]:
    """``(timesteps, views)`` that :func:`load_scene` would load, from file listings only.

    Cheap (no frame is decoded; videos are counted), so options can be checked against the
    scene's length before weights are loaded or frames read.
    """
    _, cams, _, _, idx = _select(views_or_root, masks, frame_range, stride)
    return len(idx), len(cams)


def _decode(cams: list[_Camera], plans: list[PreprocessPlan], sizes: list[tuple[int, int]], n: int,
            idx: list[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Frames ``idx`` of every camera: images ``[t,V,3,H,W]`` and external masks ``[t,V,H,W]`` or None."""
    images, ext = [], []
    for c, plan, hw in zip(cams, plans, sizes):
        images.append(_read_preprocessed(c, idx, hw, plan))
        ext.append(_load_masks(c, n, idx, hw, plan) if c.mask_dir is not None else None)
    imgs = torch.from_numpy(np.stack(images, axis=1)).permute(0, 1, 4, 2, 3).contiguous()
    ext_masks = None if ext[0] is None else torch.from_numpy(np.stack(ext, axis=1).astype(np.float32))
    return imgs, ext_masks


def _load_all_gt(cams: list[_Camera], plans: list[PreprocessPlan], sizes: list[tuple[int, int]], idx: list[int],
                 layout: str, ext_masks: np.ndarray | None) -> tuple[SceneGT | None, dict]:
    """Ground truth of frames ``idx`` -> ``(SceneGT or None, which fields exist)``."""
    gts = [_load_gt(c, idx, hw, plan) for c, plan, hw in zip(cams, plans, sizes)]
    gt = SceneGT(*[_stack_gt(gts, k) for k in ("depth", "intrinsic", "extrinsic", "dynamic_mask")])
    gt_src = {k: getattr(gt, k) is not None for k in ("depth", "intrinsic", "extrinsic", "dynamic_mask")}
    if gt.dynamic_mask is None and layout == "dump" and ext_masks is not None:
        gt.dynamic_mask = ext_masks > 0.5
        gt_src["dynamic_mask"] = "masks/"
    return (gt if any(v for v in gt_src.values()) else None), gt_src


@dataclass
class _Prepared:
    """Everything ``load_scene`` knows before decoding more than one frame per camera."""

    layout: str
    cams: list[_Camera]
    n: int
    idx: list[int]
    plans: list[PreprocessPlan]
    sizes: list[tuple[int, int]]
    source: dict
    frame_names: list[str]


def _prepare(views_or_root, masks, resolution, mode, frame_range, stride, device_hint) -> _Prepared:
    target = check_resolution(resolution if resolution is not None else default_resolution(device_hint))
    layout, cams, root, n, idx = _select(views_or_root, masks, frame_range, stride)
    counts = {c.name: c.n for c in cams}
    source: dict = {"layout": layout, "root": str(root) if root else None,
                    "cameras": {c.name: str(c.path) for c in cams}, "frame_counts": counts}
    if len(set(counts.values())) > 1:
        log.warning("cameras have different frame counts (%s); truncating all to the shortest: %d frames",
                    ", ".join(f"{k}={v}" for k, v in counts.items()), n)
        source["truncated"] = {"rule": "truncate to the shortest camera", "to": n}
    with_masks = [c.mask_dir is not None for c in cams]
    if any(with_masks) and not all(with_masks):
        missing = [c.name for c, m in zip(cams, with_masks) if not m]
        raise ValueError(f"masks found for some cameras but not for {missing}; give every "
                         "camera a mask folder, or pass masks=False")

    sizes = [next(c.iter_frames(idx[:1])).shape[:2] for c in cams]   # first selected frame
    final = common_size([plan_preprocess(h, w, mode, target) for h, w in sizes])
    frame_names = [cams[0].frames[i].parent.name if layout == "dump"
                   else (cams[0].frames[i].stem if cams[0].frames is not None else f"{i:06d}") for i in idx]
    source.update({
        "frame_indices": idx, "frame_range": list(frame_range) if frame_range else None, "stride": stride,
        "masks": {c.name: str(c.mask_dir) for c in cams if c.mask_dir is not None} or None,
        "preprocess": {"mode": mode, "resolution": target, "out_hw": list(final[0].out_hw),
                       "per_view": {c.name: p.to_dict() for c, p in zip(cams, final)},
                       "pixel_convention": "integer coordinates are pixel centres"},
    })
    return _Prepared(layout, cams, n, idx, final, sizes, source, frame_names)


def load_scene(views_or_root: PathLike | Sequence[PathLike], *, masks=None,
               resolution: int | None = None, mode: str = "crop",
               frame_range: tuple[int | None, int | None] | None = None, stride: int = 1,
               device_hint: str | None = None, lazy: bool = False) -> "Scene | LazyScene":
    """Load and preprocess a multi-view sequence (see module doc for layouts and rules).

    masks: None = auto (dump ``masks/view_N``, camera-root ``masks/<cam>``), False = none,
    a list of per-camera mask folders, or a folder holding one subfolder per camera.
    resolution: target size (multiple of 14); None -> ``default_resolution(device_hint)``.
    frame_range: ``(start, stop)`` python-slice bounds over the (truncated) frame indices.
    lazy: return a :class:`LazyScene` that decodes frames per window (``scene.frames(start, stop)``)
      instead of the whole sequence now; only the first frame of each camera is decoded here.
    """
    prep = _prepare(views_or_root, masks, resolution, mode, frame_range, stride, device_hint)
    if lazy:
        return LazyScene(prep)
    imgs, ext_masks = _decode(prep.cams, prep.plans, prep.sizes, prep.n, prep.idx)
    gt, gt_src = _load_all_gt(prep.cams, prep.plans, prep.sizes, prep.idx, prep.layout,
                              None if ext_masks is None else ext_masks.numpy())
    source = {**prep.source, "gt": gt_src if gt is not None else None}
    return Scene(images=imgs, ext_masks=ext_masks, gt=gt, view_names=[c.name for c in prep.cams],
                 frame_names=prep.frame_names, source=source)


class LazyScene:
    """A scene decoded per window: ``frames(start, stop)`` decodes timesteps ``[start, stop)`` only.

    Same metadata as :class:`Scene` (``T, V, H, W, view_names, frame_names, source``); ``gt`` (optional
    ground truth) is read whole on first access. Memory is bounded by the largest window asked for.
    """

    def __init__(self, prep: _Prepared):
        self._prep = prep
        h, w = prep.plans[0].out_hw
        self.T, self.V, self.H, self.W = len(prep.idx), len(prep.cams), int(h), int(w)
        self.view_names = [c.name for c in prep.cams]
        self.frame_names = list(prep.frame_names)
        self.has_ext_masks = prep.cams[0].mask_dir is not None
        has_gt = {"depth": all(c.depth for c in prep.cams), "intrinsic": all(c.intr for c in prep.cams),
                  "extrinsic": all(c.extr for c in prep.cams), "dynamic_mask": all(c.dyn for c in prep.cams)}
        if not has_gt["dynamic_mask"] and prep.layout == "dump" and self.has_ext_masks:
            has_gt["dynamic_mask"] = "masks/"
        self.source = {**prep.source, "gt": has_gt if any(has_gt.values()) else None, "decoded": "per window"}
        self._gt: SceneGT | None = None
        self._gt_loaded = not any(has_gt.values())

    def frames(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Images ``[t,V,3,H,W]`` float32 in [0,1] and external masks ``[t,V,H,W]`` (or None) of
        timesteps ``[start, stop)``, decoded now."""
        if not 0 <= start < stop <= self.T:
            raise IndexError(f"frames [{start}, {stop}) outside the scene's 0..{self.T}")
        p = self._prep
        return _decode(p.cams, p.plans, p.sizes, p.n, p.idx[start:stop])

    @property
    def gt(self) -> SceneGT | None:
        if not self._gt_loaded:
            p = self._prep
            ext = None
            if self.has_ext_masks and p.layout == "dump":
                ext = np.stack([_load_masks(c, p.n, p.idx, hw, plan)
                                for c, plan, hw in zip(p.cams, p.plans, p.sizes)], axis=1)
            self._gt, _ = _load_all_gt(p.cams, p.plans, p.sizes, p.idx, p.layout, ext)
            self._gt_loaded = True
        return self._gt


def scene_from_arrays(images: np.ndarray, *, depth: np.ndarray | None = None,
                      intrinsic: np.ndarray | None = None, extrinsic: np.ndarray | None = None,
                      dynamic_mask: np.ndarray | None = None, ext_masks: np.ndarray | None = None,
                      resolution: int | None = None, mode: str = "crop",
                      view_names: list[str] | None = None) -> Scene:
    """In-memory arrays (e.g. a ``SyntheticScene``) -> preprocessed Scene, no disk round trip.

    images ``[T,V,h,w,3]`` uint8; depth/dynamic_mask/ext_masks ``[T,V,h,w]``;
    intrinsic ``[T,V,3,3]``; extrinsic ``[T,V,3,4]``. resolution None keeps the width
    (rounded to a multiple of 14).
    """
    T, V, h, w = images.shape[:4]
    target = check_resolution(resolution) if resolution is not None else max(14, round(w / 14) * 14)
    plan = plan_preprocess(h, w, mode, target)
    per = lambda a, f: None if a is None else np.stack(  # noqa: E731
        [np.stack([f(a[t, v]) for v in range(V)]) for t in range(T)])
    imgs = torch.from_numpy(per(images, plan.apply_image)).permute(0, 1, 4, 2, 3).contiguous()
    gt = SceneGT(per(depth, plan.apply_depth),
                 None if intrinsic is None else plan.apply_intrinsic(intrinsic),
                 None if extrinsic is None else np.asarray(extrinsic, np.float32)[..., :3, :4],
                 per(dynamic_mask, plan.apply_mask))
    em = per(ext_masks, plan.apply_mask)
    has_gt = any(a is not None for a in (gt.depth, gt.intrinsic, gt.extrinsic, gt.dynamic_mask))
    return Scene(images=imgs, ext_masks=None if em is None else torch.from_numpy(em.astype(np.float32)),
                 gt=gt if has_gt else None, view_names=view_names or [f"view{v}" for v in range(V)],
                 frame_names=[f"time_{t:02d}" for t in range(T)],
                 source={"layout": "arrays", "preprocess": {"mode": mode, "resolution": target,
                                                            "out_hw": list(plan.out_hw),
                                                            "per_view": plan.to_dict()}})
