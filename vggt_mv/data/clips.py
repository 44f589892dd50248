"""Training clips from canonical sequences: which frames and views, and a crop per view that keeps
intrinsics, depth and masks consistent.

A clip is ``T`` timesteps (every ``stride``-th frame from ``start``) × a random subset of ``V >= 2``
views in random order. Each view gets one crop box (the same at every timestep: the camera's K is
one per view) whose aspect is the training aspect times a random jitter, resized to ``H × W``.

Pixel-centre convention: a crop at ``(x0, y0)`` followed by a resize by ``(sx, sy)`` maps
``x -> (x - x0 + 0.5) * sx - 0.5`` (what ``cv2.resize`` does), hence ``fx' = sx fx`` and
``cx' = (cx - x0 + 0.5) sx - 0.5``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .formats.base import Clip


@dataclass(frozen=True)
class CropBox:
    """Integer crop ``[y0:y0+h, x0:x0+w]`` of the source image, resized to ``out_hw``."""

    x0: int
    y0: int
    w: int
    h: int
    out_hw: tuple[int, int]

    @property
    def scale_xy(self) -> tuple[float, float]:
        return self.out_hw[1] / self.w, self.out_hw[0] / self.h

    def apply_intrinsic(self, K: np.ndarray) -> np.ndarray:
        """``[...,3,3]`` of the source image -> of the output image."""
        sx, sy = self.scale_xy
        K = np.array(K, dtype=np.float64, copy=True)
        K[..., 0, 2] = (K[..., 0, 2] - self.x0 + 0.5) * sx - 0.5
        K[..., 1, 2] = (K[..., 1, 2] - self.y0 + 0.5) * sy - 0.5
        K[..., 0, 0] *= sx
        K[..., 0, 1] *= sx
        K[..., 1, 1] *= sy
        return K

    def _resize(self, a: np.ndarray, interp: int) -> np.ndarray:
        a = a[self.y0:self.y0 + self.h, self.x0:self.x0 + self.w]
        H, W = self.out_hw
        if (self.h, self.w) == (H, W):
            return np.ascontiguousarray(a)
        return cv2.resize(a, (W, H), interpolation=interp)

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        """``[h,w,C]`` or ``[h,w]`` float -> ``[H,W,...]`` (area when shrinking, linear otherwise);
        also used for P(dynamic) masks, so a mask pixel stays the share of dynamic source area."""
        shrink = self.out_hw[0] * self.out_hw[1] < self.h * self.w
        return self._resize(img, cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)

    def apply_depth(self, depth: np.ndarray) -> np.ndarray:
        """Nearest (centre-aligned): depths are never blended across edges."""
        return self._resize(depth, cv2.INTER_NEAREST_EXACT)


def random_crop(rng: np.random.Generator, in_hw: tuple[int, int], out_hw: tuple[int, int],
                min_scale: float = 0.7, aspect_jitter: float = 1.15) -> CropBox:
    """A crop of ``in_hw`` with aspect ``W/H × jitter`` (jitter log-uniform in [1/j, j]) covering a
    share in ``[min_scale, 1]`` of the largest such box, at a uniform position."""
    h0, w0 = in_hw
    H, W = out_hw
    aspect = (W / H) * math.exp(rng.uniform(-math.log(aspect_jitter), math.log(aspect_jitter)))
    full_w = min(w0, h0 * aspect)                      # largest box of that aspect
    s = rng.uniform(min_scale, 1.0)
    cw = max(1, min(w0, int(round(full_w * s))))
    ch = max(1, min(h0, int(round(full_w * s / aspect))))
    x0 = int(rng.integers(0, w0 - cw + 1))
    y0 = int(rng.integers(0, h0 - ch + 1))
    return CropBox(x0, y0, cw, ch, (H, W))


def crop_clip(clip: Clip, boxes: list[CropBox]) -> Clip:
    """Apply one box per view (axis 1) to every array of ``clip``."""
    t, v = clip.shape[:2]
    per = lambda a, f: None if a is None else np.stack(  # noqa: E731
        [np.stack([f(boxes[j], a[i, j]) for j in range(v)]) for i in range(t)])
    return Clip(images=per(clip.images, CropBox.apply_image),
                depth=per(clip.depth, CropBox.apply_depth),
                intrinsic=None if clip.intrinsic is None else np.stack(
                    [boxes[j].apply_intrinsic(clip.intrinsic[:, j]) for j in range(v)], axis=1),
                extrinsic=clip.extrinsic,
                dynamic_mask=per(clip.dynamic_mask, CropBox.apply_image))


def frame_indices(rng: np.random.Generator, num_frames: int, T: int, max_stride: int) -> list[int]:
    """``T`` frames ``start + stride * k`` with a random stride in ``[1, max_stride]`` that fits."""
    if num_frames < T:
        raise ValueError(f"a sequence of {num_frames} frames cannot give {T} timesteps")
    top = max(1, min(max_stride, (num_frames - 1) // max(1, T - 1) if T > 1 else max_stride))
    stride = int(rng.integers(1, top + 1))
    start = int(rng.integers(0, num_frames - (T - 1) * stride))
    return [start + stride * k for k in range(T)]
