"""VGGT-style image preprocessing with exact intrinsics / mask / depth bookkeeping.

``crop``: resize to width = target, height = round(h * target / w / 14) * 14, then centre-crop
the height to at most ``target`` (VGGT ``load_and_preprocess_images(mode="crop")``).
``pad``: resize the longer side to ``target``, round the other to a multiple of 14, pad with
white (1.0) to ``target x target`` (VGGT ``mode="pad"``).

Pixel convention: integer coordinates are pixel centres, so a resize by ``s`` maps
``x -> (x + 0.5) * s - 0.5`` (what cv2.resize does); hence ``fx' = s fx`` and
``cx' = (cx + 0.5) s - 0.5 - crop_x + pad_x``. Images use INTER_AREA when shrinking and
INTER_CUBIC when enlarging; masks and depth use centre-aligned nearest (INTER_NEAREST_EXACT).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import cv2
import numpy as np
import torch

PATCH = 14
MODES = ("crop", "pad")


def default_resolution(device: str | torch.device | None = None) -> int:
    """518 (VGGT's training size) on CUDA, 252 on CPU; ``None``/"auto" checks CUDA availability."""
    if device is None or str(device) == "auto":
        return 518 if torch.cuda.is_available() else 252
    return 518 if str(device).startswith("cuda") else 252


def check_resolution(target: int) -> int:
    """Validate a target size (positive multiple of 14); returns it as int."""
    if int(target) != target or target <= 0 or int(target) % PATCH:
        near = sorted({max(PATCH, int(target) // PATCH * PATCH), (int(target) // PATCH + 1) * PATCH})
        raise ValueError(f"resolution {target!r} must be a positive multiple of {PATCH} "
                         f"(e.g. 518, 392, 252, 168); the nearest are {' or '.join(map(str, near))}")
    return int(target)


def _round14(x: float) -> int:
    return max(PATCH, int(round(x / PATCH)) * PATCH)


@dataclass(frozen=True)
class PreprocessPlan:
    """Geometry of one camera's preprocessing: resize, then crop, then pad (all in pixels)."""

    mode: str
    target: int
    in_hw: tuple[int, int]        # native (h, w)
    resized_hw: tuple[int, int]   # after resize
    crop_xy: tuple[int, int]      # top-left of the kept window in the resized image
    pad_ltrb: tuple[int, int, int, int]  # padding left, top, right, bottom after the crop
    out_hw: tuple[int, int]       # final (H, W)

    @property
    def scale_xy(self) -> tuple[float, float]:
        """``(sx, sy)`` resize factors."""
        return self.resized_hw[1] / self.in_hw[1], self.resized_hw[0] / self.in_hw[0]

    def to_dict(self) -> dict:
        """JSON-serialisable description (goes into ``Scene.source``)."""
        return {**asdict(self), "scale_xy": list(self.scale_xy)}

    @classmethod
    def from_dict(cls, d: dict) -> "PreprocessPlan":
        """The plan ``to_dict`` described (derived entries such as ``scale_xy`` are recomputed)."""
        return cls(mode=d["mode"], target=d["target"], in_hw=tuple(d["in_hw"]), resized_hw=tuple(d["resized_hw"]),
                   crop_xy=tuple(d["crop_xy"]), pad_ltrb=tuple(d["pad_ltrb"]), out_hw=tuple(d["out_hw"]))

    def padded_to(self, H: int, W: int) -> "PreprocessPlan":
        """Same plan with extra centred padding so the output is ``H x W`` (for stacking views)."""
        h, w = self.out_hw
        if H < h or W < w:
            raise ValueError(f"cannot pad {h}x{w} to smaller {H}x{W}")
        l, t, r, b = self.pad_ltrb
        el, et = (W - w) // 2, (H - h) // 2
        return replace(self, pad_ltrb=(l + el, t + et, r + W - w - el, b + H - h - et), out_hw=(H, W))

    # -- arrays ---------------------------------------------------------------------------
    def _geom(self, a: np.ndarray, interp: int, fill: float) -> np.ndarray:
        h, w = self.resized_hw
        if a.shape[:2] != self.in_hw:
            raise ValueError(f"array of size {a.shape[:2]} does not match the planned input {self.in_hw}")
        if (h, w) != self.in_hw:
            a = cv2.resize(a, (w, h), interpolation=interp)
        x0, y0 = self.crop_xy
        H0, W0 = self.out_hw[0] - self.pad_ltrb[1] - self.pad_ltrb[3], self.out_hw[1] - self.pad_ltrb[0] - self.pad_ltrb[2]
        a = a[y0:y0 + H0, x0:x0 + W0]
        l, t, r, b = self.pad_ltrb
        if l or t or r or b:
            pad = [(t, b), (l, r)] + [(0, 0)] * (a.ndim - 2)
            a = np.pad(a, pad, mode="constant", constant_values=fill)
        return a

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        """uint8 RGB ``[h,w,3]`` -> float32 ``[H,W,3]`` in [0,1], white padding."""
        shrink = self.resized_hw[0] * self.resized_hw[1] < self.in_hw[0] * self.in_hw[1]
        a = self._geom(img, cv2.INTER_AREA if shrink else cv2.INTER_CUBIC, 255)
        return a.astype(np.float32) / 255.0

    def apply_mask(self, mask: np.ndarray) -> np.ndarray:
        """bool ``[h,w]`` -> bool ``[H,W]`` (nearest; padding = False)."""
        return self._geom(mask.astype(np.uint8), cv2.INTER_NEAREST_EXACT, 0).astype(bool)

    def apply_heatmap(self, heat: np.ndarray) -> np.ndarray:
        """float ``[h,w]`` in [0,1] -> float32 ``[H,W]`` (bilinear; padding 0 = no keypoint)."""
        return np.clip(self._geom(heat.astype(np.float32), cv2.INTER_LINEAR, 0.0), 0.0, 1.0)

    def apply_depth(self, depth: np.ndarray) -> np.ndarray:
        """float ``[h,w]`` -> float32 ``[H,W]`` (nearest; padding = 0 = invalid)."""
        return self._geom(depth.astype(np.float32), cv2.INTER_NEAREST_EXACT, 0.0)

    def apply_intrinsic(self, K: np.ndarray) -> np.ndarray:
        """``[...,3,3]`` intrinsics of the native image -> of the output image."""
        sx, sy = self.scale_xy
        K = np.array(K, dtype=np.float64, copy=True)
        K[..., 0, :] *= sx
        K[..., 1, :] *= sy
        K[..., 0, 2] += 0.5 * sx - 0.5 - self.crop_xy[0] + self.pad_ltrb[0]
        K[..., 1, 2] += 0.5 * sy - 0.5 - self.crop_xy[1] + self.pad_ltrb[1]
        return K.astype(np.float32)

    def apply_pixels(self, uv: np.ndarray) -> np.ndarray:
        """Native pixel coordinates ``[...,2]`` (x, y) -> output pixel coordinates."""
        sx, sy = self.scale_xy
        uv = np.asarray(uv, dtype=np.float64)
        x = (uv[..., 0] + 0.5) * sx - 0.5 - self.crop_xy[0] + self.pad_ltrb[0]
        y = (uv[..., 1] + 0.5) * sy - 0.5 - self.crop_xy[1] + self.pad_ltrb[1]
        return np.stack([x, y], -1)


def plan_preprocess(h: int, w: int, mode: str = "crop", target: int = 518) -> PreprocessPlan:
    """Plan VGGT preprocessing of an ``h x w`` image to ``target`` in ``mode`` ("crop" | "pad")."""
    target = check_resolution(target)
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not one of {MODES}")
    if mode == "crop":
        nw, nh = target, _round14(h * target / w)
        y0 = max(0, (nh - target) // 2)
        oh = min(nh, target)
        return PreprocessPlan(mode, target, (h, w), (nh, nw), (0, y0), (0, 0, 0, 0), (oh, nw))
    if w >= h:
        nw, nh = target, _round14(h * target / w)
    else:
        nh, nw = target, _round14(w * target / h)
    nh, nw = min(nh, target), min(nw, target)
    l, t = (target - nw) // 2, (target - nh) // 2
    return PreprocessPlan(mode, target, (h, w), (nh, nw), (0, 0),
                          (l, t, target - nw - l, target - nh - t), (target, target))


def common_size(plans: list[PreprocessPlan]) -> list[PreprocessPlan]:
    """Pad every plan (white, centred) to the largest output so the views can be stacked."""
    H = max(p.out_hw[0] for p in plans)
    W = max(p.out_hw[1] for p in plans)
    return [p if p.out_hw == (H, W) else p.padded_to(H, W) for p in plans]


def resize_masks_to_patches(masks: torch.Tensor | np.ndarray, patch: int = PATCH):
    """Area-pool masks ``[...,H,W]`` to the patch grid ``[...,H/patch,W/patch]`` (mean per cell).

    Works for torch tensors and numpy arrays (returns the same kind, float).
    """
    H, W = masks.shape[-2:]
    if H % patch or W % patch:
        raise ValueError(f"mask size {H}x{W} is not a multiple of the patch size {patch}; "
                         "preprocess masks together with the images (load_scene does)")
    shape = tuple(masks.shape[:-2]) + (H // patch, patch, W // patch, patch)
    if isinstance(masks, torch.Tensor):
        m = masks if masks.is_floating_point() else masks.float()
        return m.reshape(shape).mean(dim=(-3, -1))
    m = np.asarray(masks, dtype=np.float32)
    return m.reshape(shape).mean(axis=(-3, -1))
