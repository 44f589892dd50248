"""Size budget of a shared scene (``vggt-mv export-html``): estimate the bytes of a recording before
it is made, and choose how many points per timestep and how large the frustum images can be.

Point clouds travel as float16 positions + uint8 colours (9 bytes a point, what viser sends); frustum
images as JPEG. The estimate counts those raw bytes (viser's zstd only shrinks them), the base64
growth of the single HTML (4/3), the viser client and a per-node overhead, so a plan that fits the
estimate normally fits the file; the exporter still checks the real size and rebuilds if not.

Subsampling is per timestep with one factor ``f`` for all timesteps: each keeps ``ceil(f * n_t)``
of its ``n_t`` points, chosen first by confidence (the least confident go first, down to half of
the points) and then uniformly at random among the confident half (seeded per timestep).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["SizePlan", "BYTES_PER_POINT", "MIN_POINT_FACTOR", "MIN_IMAGE_SIDE", "plan_size",
           "select_points", "resize_image", "jpeg_bytes", "MB"]

MB = 1_000_000
#: float16 xyz + uint8 rgb
BYTES_PER_POINT = 9
#: the smallest point factor / frustum image side tried before giving up
MIN_POINT_FACTOR = 0.005
MIN_IMAGE_SIDE = 32
#: per scene node (msgpack metadata of a point cloud / frustum / frame / visibility message)
NODE_OVERHEAD = 600
#: images may take this share of the budget before they are made smaller
IMAGE_SHARE = 0.25
#: the confidence ranking removes at most this fraction of a timestep's points
CONF_DROP_MAX = 0.5
JPEG_QUALITY = 80


@dataclass(frozen=True)
class SizePlan:
    """How a scene is sampled to fit the budget and what it is expected to weigh."""

    point_factor: float  # fraction of each timestep's (confidence-filtered) points kept
    image_side: int  # longer side of the frustum JPEGs (0: no images)
    points: int  # points kept over all timesteps
    points_total: int  # points before subsampling
    estimated_bytes: int  # expected size of the output
    budget_bytes: int

    def describe(self) -> str:
        """One log line: the subsampling factor, point counts, image size and the estimate."""
        how = ("all points kept" if self.point_factor >= 1.0 else
               f"points subsampled x{self.point_factor:.3f} per timestep "
               f"(by confidence, then uniformly)")
        return (f"{how}: {self.points_total:,} -> {self.points:,} points; frustum images "
                f"{self.image_side}px; estimated {self.estimated_bytes / MB:.1f} MB of "
                f"{self.budget_bytes / MB:.1f} MB")


def resize_image(image: np.ndarray, max_side: int) -> np.ndarray:
    """``[H,W,3] uint8`` resized (area filter) so that its longer side is at most ``max_side``."""
    import cv2

    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return np.ascontiguousarray(image)
    s = max_side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return np.ascontiguousarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA))


def jpeg_bytes(images: list[np.ndarray], max_side: int) -> float:
    """Mean JPEG size (bytes) of ``images`` resized to ``max_side`` (the encoder viser uses)."""
    import cv2

    if not images or max_side <= 0:
        return 0.0
    sizes = []
    for img in images:
        ok, buf = cv2.imencode(".jpeg", resize_image(img, max_side)[..., ::-1],
                               [int(cv2.IMWRITE_JPEG_QUALITY), JPEG_QUALITY])
        sizes.append(len(buf) if ok else img.size)
    return float(np.mean(sizes))


def _kept(counts: np.ndarray, factor: float) -> int:
    return int(sum(min(int(n), math.ceil(factor * int(n))) for n in counts))


def plan_size(counts_per_t: np.ndarray, sample_images: list[np.ndarray], num_images: int,
              image_side: int, budget_bytes: int, fixed_bytes: int, base64: bool,
              num_nodes: int, compression: float = 1.0) -> SizePlan:
    """The largest point factor (<= 1) and image side (<= ``image_side``) whose estimate fits
    ``budget_bytes``.

    ``counts_per_t``: points per timestep after the confidence filter; ``sample_images``: a few
    frustum images to measure JPEG sizes on; ``num_images``: how many frustum images the scene has;
    ``fixed_bytes``: bytes that do not shrink (the viser client); ``base64``: payload grows by 4/3;
    ``compression``: measured size / raw size of a previous recording of this scene (1: raw bytes).
    Raises ``ValueError`` if the budget is not met even at ``MIN_POINT_FACTOR`` / ``MIN_IMAGE_SIDE``.
    """
    counts = np.asarray(counts_per_t, np.int64)
    total = int(counts.sum())
    grow = 4.0 / 3.0 if base64 else 1.0
    payload = (budget_bytes - fixed_bytes) / grow - NODE_OVERHEAD * num_nodes  # raw bytes we may use

    per_point = BYTES_PER_POINT * compression

    def estimate(points: int, img: float) -> int:
        return int(fixed_bytes + grow * (per_point * points + img * num_images + NODE_OVERHEAD * num_nodes))

    side = image_side if num_images else 0
    img = compression * jpeg_bytes(sample_images, side) if side else 0.0
    while side > MIN_IMAGE_SIDE and img * num_images > IMAGE_SHARE * payload:
        side = max(MIN_IMAGE_SIDE, side // 2)
        img = compression * jpeg_bytes(sample_images, side)
    point_room = payload - img * num_images - per_point * len(counts)  # ceil: one more point a timestep
    factor = min(1.0, point_room / (per_point * total)) if total else 1.0
    if factor < MIN_POINT_FACTOR:
        lowest = estimate(_kept(counts, MIN_POINT_FACTOR), img)
        raise ValueError(
            f"the scene does not fit --max-mb {budget_bytes / MB:g} even at the minimum sampling "
            f"({MIN_POINT_FACTOR:g} of the points, {side}px images: about {lowest / MB:.1f} MB); "
            f"raise --max-mb or raise --conf-percentile")
    kept = _kept(counts, factor)
    return SizePlan(point_factor=float(factor), image_side=int(side), points=kept, points_total=total,
                    estimated_bytes=estimate(kept, img), budget_bytes=int(budget_bytes))


def select_points(conf: np.ndarray, factor: float, seed: int) -> np.ndarray:
    """Sorted indices of the points of one timestep to keep: ``ceil(factor * n)`` of the ``n``
    confidences ``conf``, the most confident first (at most ``CONF_DROP_MAX`` of them dropped by
    confidence), the rest of the reduction uniformly at random (``seed``)."""
    n = int(len(conf))
    k = min(n, math.ceil(factor * n))
    if k >= n:
        return np.arange(n)
    n_conf = max(k, math.ceil((1.0 - CONF_DROP_MAX) * n))
    order = np.argsort(-np.nan_to_num(np.asarray(conf, np.float64), nan=-np.inf), kind="stable")
    top = order[:n_conf]
    if k < n_conf:
        top = np.random.default_rng(seed).choice(top, size=k, replace=False)
    return np.sort(top)
