"""The canonical convention every training-data reader returns, and the reader interface.

Canonical convention (DESIGN.md §8):

* extrinsics: world→camera ``[R|t]`` ``[3,4]``, OpenCV camera axes (x right, y down, z forward);
* lengths in metres; depth is z-depth along the optical axis, ``0`` = invalid;
* intrinsics in pixels, integer pixel coordinates are pixel centres (the left edge of the image
  is ``u = -0.5``; a centred principal point is ``cx = (W-1)/2``);
* images float32 in [0, 1]; masks float32 = P(dynamic) in [0, 1].

A *source* (one ``--data`` path) holds one or more *sequences*; a :class:`SequenceReader` decodes
only the requested ``(frames, views)`` of one sequence (lazy: a clip, never a whole sequence).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np


@dataclass
class Clip:
    """Canonical arrays of ``t`` frames × ``v`` views (missing ground truth: None)."""

    images: np.ndarray                      # [t,v,H,W,3] float32 in [0,1]
    depth: np.ndarray | None = None         # [t,v,H,W] float32 z-depth (m), 0 = invalid
    intrinsic: np.ndarray | None = None     # [t,v,3,3] float64, pixels, pixel-centre convention
    extrinsic: np.ndarray | None = None     # [t,v,3,4] float64 world→camera, OpenCV
    dynamic_mask: np.ndarray | None = None  # [t,v,H,W] float32 P(dynamic)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(t, v, H, W)``."""
        return self.images.shape[:4]  # type: ignore[return-value]


class SequenceReader(ABC):
    """One multi-view sequence on disk. Subclasses list files in ``__init__`` (cheap, no pixel
    decoded) and decode only what :meth:`read` asks for."""

    format: str = ""
    #: ground truth this sequence provides (training needs depth, intrinsic and extrinsic)
    has_depth: bool = True
    has_cameras: bool = True
    has_masks: bool = False

    def __init__(self, path: Path, name: str, num_frames: int, view_names: list[str]) -> None:
        self.path = Path(path)
        self.name = name
        self.num_frames = int(num_frames)
        self.view_names = list(view_names)

    @property
    def num_views(self) -> int:
        return len(self.view_names)

    @property
    def key(self) -> str:
        """Identity used to split training and validation by sequence (resolved path)."""
        return str(self.path.resolve())

    @abstractmethod
    def read(self, frames: Sequence[int], views: Sequence[int]) -> Clip:
        """Decode frames ``frames`` of views ``views`` (in that order) to the canonical convention."""

    def _check_index(self, frames: Sequence[int], views: Sequence[int]) -> None:
        bad_t = [t for t in frames if not 0 <= t < self.num_frames]
        bad_v = [v for v in views if not 0 <= v < self.num_views]
        if bad_t or bad_v:
            raise IndexError(f"{self.format} sequence {self.path}: frames {bad_t} / views {bad_v} out of range "
                             f"({self.num_frames} frames, {self.num_views} views)")

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({str(self.path)!r}, frames={self.num_frames}, "
                f"views={self.num_views})")


def stack_clip(per_view: list[dict[str, np.ndarray | None]], where: Path) -> Clip:
    """Per-view dicts of ``[t,...]`` arrays -> a :class:`Clip` (views on axis 1); mixed image sizes
    within a clip are an error naming the sequence."""
    sizes = {d["images"].shape[1:3] for d in per_view}
    if len(sizes) > 1:
        raise ValueError(f"{where}: the views of one sequence have different image sizes {sorted(sizes)}; "
                         "training clips need one size per sequence (resize the views)")

    def stack(key: str) -> np.ndarray | None:
        arrs = [d.get(key) for d in per_view]
        return None if any(a is None for a in arrs) else np.stack(arrs, axis=1)

    return Clip(images=stack("images"), depth=stack("depth"), intrinsic=stack("intrinsic"),
                extrinsic=stack("extrinsic"), dynamic_mask=stack("dynamic_mask"))


def ray_distance_to_z(distance: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Euclidean distance to the camera centre ``[H,W]`` -> z-depth, with pixel-centre ``K``."""
    h, w = distance.shape
    vv, uu = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    x = (uu - K[0, 2]) / K[0, 0]
    y = (vv - K[1, 2]) / K[1, 1]
    return (distance / np.sqrt(1.0 + x * x + y * y)).astype(np.float32)


def clean_depth(depth: np.ndarray) -> np.ndarray:
    """Non-finite and non-positive depths -> 0 (invalid); float32."""
    d = np.nan_to_num(np.asarray(depth, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    d[d < 0] = 0.0
    return d


def to_unit_float(img: np.ndarray) -> np.ndarray:
    """uint8 RGB ``[...,3]`` -> float32 in [0,1]."""
    return np.asarray(img, dtype=np.float32) / 255.0
