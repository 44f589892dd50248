"""``dexycb``: MVTracker's preprocessed DexYCB multi-view layout (ethz-vlg/mvtracker,
``mvtracker/datasets/dexycb_multiview_dataset.py``: RGB via ``cv2.imread``, depth via
``cv2.imread(..., IMREAD_ANYDEPTH) / 1000``, ``params["intrinsics"][:3, :3]``,
``params["extrinsics"][:3, :]`` "world to camera")::

    <seq>/view_XX/rgb/*.png|jpg                 RGB frames (natural order)
    <seq>/view_XX/depth/*.png                   uint16 z-depth in millimetres, 0 = invalid
    <seq>/view_XX/intrinsics_extrinsics.npz     intrinsics [3,3] or [4,4] (pixels),
                                                extrinsics [3,4] or [4,4] world→camera (OpenCV)
    <seq>/view_XX/mask/*.png                    optional binary dynamic masks

Converted: depth / 1000 (mm -> m); K and extrinsic cropped to ``[:3,:3]`` / ``[:3,:4]``. The
cameras are static, so every frame gets its view's K and extrinsic. A folder of sequences is one
source.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import io
from .base import Clip, SequenceReader, stack_clip, to_unit_float

FORMAT = "dexycb"
PARAMS = "intrinsics_extrinsics.npz"
MM = 1000.0
_VIEW = re.compile(r"^view_\d+$")


def _views(path: Path) -> list[Path]:
    if not path.is_dir():
        return []
    return io.natural_sorted([p for p in path.iterdir() if p.is_dir() and _VIEW.match(p.name)])


def is_sequence(path: Path) -> bool:
    views = _views(path)
    return bool(views) and (views[0] / PARAMS).is_file() and (views[0] / "rgb").is_dir()


def detect(path: Path) -> bool:
    return is_sequence(path) or (path.is_dir() and any(is_sequence(p) for p in path.iterdir() if p.is_dir()))


def read_depth_mm(path: Path) -> np.ndarray:
    """A uint16 millimetre depth PNG -> float32 metres (0 stays invalid)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            arr = np.asarray(im)
    except OSError as e:
        raise ValueError(f"cannot read depth {path} ({e}); expected a uint16 PNG in millimetres") from None
    if arr.dtype not in (np.uint16, np.int32, np.uint32) or arr.ndim != 2:
        raise ValueError(f"depth {path} is {arr.dtype} {arr.shape}; dexycb depth must be a single-channel "
                         "uint16 PNG in millimetres")
    return (arr.astype(np.float32) / MM)


class DexYCBSequence(SequenceReader):
    format = FORMAT

    def __init__(self, seq: Path) -> None:
        self.rgb, self.depth, self.mask, self.K, self.E = [], [], [], [], []
        for vd in _views(seq):
            params = vd / PARAMS
            if not params.is_file():
                raise ValueError(f"dexycb view {vd} lacks {PARAMS} (intrinsics, extrinsics world→camera)")
            with np.load(params) as p:
                if "intrinsics" not in p or "extrinsics" not in p:
                    raise ValueError(f"{params} must hold 'intrinsics' and 'extrinsics'; it has {list(p.keys())}")
                self.K.append(np.asarray(p["intrinsics"], np.float64)[:3, :3])
                self.E.append(np.asarray(p["extrinsics"], np.float64)[:3, :4])
            rgb = io.list_images(vd / "rgb", what="dexycb rgb folder")
            depth = io.list_images(vd / "depth", what="dexycb depth folder") if (vd / "depth").is_dir() else None
            if depth is not None and len(depth) != len(rgb):
                raise ValueError(f"dexycb {vd}: {len(rgb)} rgb frames but {len(depth)} depth maps; one per frame")
            mask = io.list_images(vd / "mask", what="dexycb mask folder") if (vd / "mask").is_dir() else None
            if mask is not None and len(mask) != len(rgb):
                raise ValueError(f"dexycb {vd}: {len(rgb)} rgb frames but {len(mask)} masks; one per frame")
            self.rgb.append(rgb)
            self.depth.append(depth)
            self.mask.append(mask)
        counts = {len(r) for r in self.rgb}
        if len(counts) > 1:
            raise ValueError(f"dexycb {seq}: views have different frame counts {sorted(counts)}")
        super().__init__(seq, seq.name, counts.pop(), [vd.name for vd in _views(seq)])
        self.has_depth = all(d is not None for d in self.depth)
        self.has_masks = all(m is not None for m in self.mask)

    def read(self, frames: Sequence[int], views: Sequence[int]) -> Clip:
        self._check_index(frames, views)
        per_view = []
        for v in views:
            d: dict = {"images": np.stack([to_unit_float(io.read_rgb(self.rgb[v][t])) for t in frames]),
                       "intrinsic": np.repeat(self.K[v][None], len(frames), 0),
                       "extrinsic": np.repeat(self.E[v][None], len(frames), 0)}
            if self.has_depth:
                d["depth"] = np.stack([read_depth_mm(self.depth[v][t]) for t in frames])
            if self.has_masks:
                d["dynamic_mask"] = np.stack([io.read_mask(self.mask[v][t]).astype(np.float32) for t in frames])
            per_view.append(d)
        return stack_clip(per_view, self.path)


def open_sequences(path: Path) -> list[SequenceReader]:
    if is_sequence(path):
        return [DexYCBSequence(path)]
    return [DexYCBSequence(p) for p in io.natural_sorted([p for p in path.iterdir() if p.is_dir()]) if is_sequence(p)]
