"""The ``Reconstruction`` result object: per (t, v) depth, points, cameras, masks, images.

All arrays are numpy with leading dims ``[T, V]`` (T timesteps, V views). Predictions live in
the reference camera (t=0, v=0) frame; extrinsics are camera-from-world ``[R|t]`` (OpenCV).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np

from vggt_mv.inference.geometry import (
    camera_centers,
    remove_statistical_outliers,
    unproject_depth,
    voxel_downsample,
)

__all__ = ["Reconstruction", "ARRAY_FIELDS", "GT_KEYS"]

Source = Literal["depth", "points"]
ColorBy = Literal["image", "mask"]

#: array fields saved in ``reconstruction.npz`` (``dynamic_mask`` only when present).
ARRAY_FIELDS = (
    "images", "depth", "depth_conf", "world_points", "world_points_conf",
    "extrinsic", "intrinsic", "dynamic_mask",
)
#: ground-truth keys understood by ``vggt_mv.eval.evaluate`` (others are kept as-is).
GT_KEYS = ("depth", "extrinsic", "intrinsic", "dynamic_mask")

_DYNAMIC_RGB = np.array([255.0, 48.0, 48.0])


def _resize_maps(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinearly resize ``[T,V,h,w]`` maps (e.g. a patch-grid mask) to ``[T,V,H,W]``."""
    import cv2

    t, v, h, w = maps.shape
    flat = maps.reshape(t * v, h, w).transpose(1, 2, 0).astype(np.float32)  # cv2 wants [h,w,C]
    chunks = [cv2.resize(flat[..., i : i + 256], (width, height), interpolation=cv2.INTER_LINEAR)
              for i in range(0, t * v, 256)]  # cv2 caps channels at 512
    out = np.concatenate([c.reshape(height, width, -1) for c in chunks], axis=-1)
    return out.transpose(2, 0, 1).reshape(t, v, height, width)


@dataclass(eq=False)
class Reconstruction:
    """Multi-view multi-timestep reconstruction (see module docstring for conventions).

    Shapes: ``images [T,V,H,W,3] uint8``, ``depth / depth_conf [T,V,H,W] f32``,
    ``world_points [T,V,H,W,3]`` (point head), ``world_points_conf [T,V,H,W]``,
    ``extrinsic [T,V,3,4]``, ``intrinsic [T,V,3,3]``, ``dynamic_mask [T,V,H,W]`` in [0,1]
    (probability a pixel is dynamic; a patch-grid ``[T,V,h,w]`` mask is upsampled) or None.
    ``world_points=None`` falls back to unprojected depth, ``*_conf=None`` to ones.
    ``gt`` optionally holds ground-truth ``depth``, ``extrinsic``, ``intrinsic``, ``dynamic_mask``.
    Optional point tracks (``--query-points``): ``tracks [T,V,N,2]`` pixel (x, y) of each query point
    in every image, ``track_vis [T,V,N]`` and ``track_conf [T,V,N]`` in [0,1], ``query_points [N,2]``
    (reference-image pixels, model-input resolution).
    """

    images: np.ndarray
    depth: np.ndarray
    depth_conf: np.ndarray | None
    world_points: np.ndarray | None
    world_points_conf: np.ndarray | None
    extrinsic: np.ndarray
    intrinsic: np.ndarray
    dynamic_mask: np.ndarray | None = None
    view_names: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    gt: dict[str, Any] | None = None
    tracks: np.ndarray | None = None
    track_vis: np.ndarray | None = None
    track_conf: np.ndarray | None = None
    query_points: np.ndarray | None = None
    _cache: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    # ------------------------------------------------------------------ construction
    def __post_init__(self) -> None:
        depth = np.asarray(self.depth, dtype=np.float32)
        if depth.ndim == 5 and depth.shape[-1] == 1:  # VGGT heads give [..,H,W,1]
            depth = depth[..., 0]
        if depth.ndim != 4:
            raise ValueError(f"depth must be [T,V,H,W], got {depth.shape}")
        t, v, h, w = depth.shape
        self.depth = depth
        images = np.asarray(self.images)
        if images.ndim == 5 and images.shape[2] == 3 and images.shape[-1] != 3:  # [T,V,3,H,W]
            images = np.moveaxis(images, 2, -1)
        if images.dtype != np.uint8:  # float images in [0,1]
            images = np.clip(np.rint(images.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
        self.images = images
        self.depth_conf = self._map(self.depth_conf, "depth_conf", np.ones_like(depth))
        self.extrinsic = np.asarray(self.extrinsic, dtype=np.float32)
        self.intrinsic = np.asarray(self.intrinsic, dtype=np.float32)
        self._check("images", self.images, (t, v, h, w, 3))
        self._check("extrinsic", self.extrinsic, (t, v, 3, 4))
        self._check("intrinsic", self.intrinsic, (t, v, 3, 3))
        if self.world_points is None:
            self.world_points = self.points_from_depth().copy()
        self.world_points = np.asarray(self.world_points, dtype=np.float32)
        self._check("world_points", self.world_points, (t, v, h, w, 3))
        self.world_points_conf = self._map(self.world_points_conf, "world_points_conf", self.depth_conf.copy())
        if self.dynamic_mask is not None:
            mask = np.asarray(self.dynamic_mask, dtype=np.float32)
            if mask.ndim == 5 and mask.shape[-1] == 1:
                mask = mask[..., 0]
            if mask.ndim != 4 or mask.shape[:2] != (t, v):
                raise ValueError(f"dynamic_mask must be [T,V,H,W] or [T,V,h,w], got {mask.shape}")
            if mask.shape[2:] != (h, w):
                mask = _resize_maps(mask, h, w)
            if mask.size and not (np.nanmin(mask) >= 0.0 and np.nanmax(mask) <= 1.0):
                mask = np.clip(mask, 0.0, 1.0)  # copy only when needed: masks are sequence-sized
            self.dynamic_mask = mask
        if self.view_names is None:
            self.view_names = [f"cam{i}" for i in range(v)]
        self.view_names = [str(n) for n in self.view_names]
        if len(self.view_names) != v:
            raise ValueError(f"{len(self.view_names)} view_names for {v} views")
        if self.gt is not None:
            self.gt = {k: (np.asarray(val) if k in GT_KEYS else val) for k, val in self.gt.items()}
        self.meta = dict(self.meta or {})
        self._check_tracks(t, v)

    def _check_tracks(self, t: int, v: int) -> None:
        if self.tracks is None:
            for name in ("track_vis", "track_conf", "query_points"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name} given without tracks")
            return
        self.tracks = np.asarray(self.tracks, dtype=np.float32)
        if self.tracks.ndim != 4 or self.tracks.shape[:2] != (t, v) or self.tracks.shape[3] != 2:
            raise ValueError(f"tracks must be [T={t},V={v},N,2], got {self.tracks.shape}")
        n = self.tracks.shape[2]
        vis = np.ones((t, v, n), np.float32) if self.track_vis is None else self.track_vis
        self.track_vis = np.asarray(vis, dtype=np.float32)
        self._check("track_vis", self.track_vis, (t, v, n))
        if self.track_conf is not None:
            self.track_conf = np.asarray(self.track_conf, dtype=np.float32)
            self._check("track_conf", self.track_conf, (t, v, n))
        q = self.tracks[0, 0] if self.query_points is None else self.query_points
        self.query_points = np.asarray(q, dtype=np.float32)
        self._check("query_points", self.query_points, (n, 2))

    def track_points_3d(self, vis_threshold: float = 0.5) -> np.ndarray:
        """Tracks lifted to 3D with the predicted depth: ``[T, N, 3]`` world points (NaN where the
        point is visible in no view). Each visible (t, v) track pixel is unprojected with that image's
        depth (nearest pixel) and camera; the views that see the point are averaged."""
        if self.tracks is None:
            raise ValueError("this reconstruction has no tracks (run with query points)")
        t, v, h, w = self.depth.shape
        xy = np.nan_to_num(self.tracks, nan=-1.0)
        px = np.clip(np.rint(xy[..., 0]), 0, w - 1).astype(int)
        py = np.clip(np.rint(xy[..., 1]), 0, h - 1).astype(int)
        ti, vi = np.meshgrid(np.arange(t), np.arange(v), indexing="ij")
        z = self.depth[ti[..., None], vi[..., None], py, px]  # [T,V,N]
        k_inv = np.linalg.inv(self.intrinsic.astype(np.float64))  # [T,V,3,3]
        pix = np.stack([xy[..., 0], xy[..., 1], np.ones_like(xy[..., 0])], -1).astype(np.float64)
        cam = np.einsum("tvij,tvnj->tvni", k_inv, pix) * z[..., None]
        r, tr = self.extrinsic[..., :3].astype(np.float64), self.extrinsic[..., 3].astype(np.float64)
        world = np.einsum("tvji,tvnj->tvni", r, cam - tr[:, :, None])  # R^T (x_cam - t)
        inside = (xy[..., 0] >= -0.5) & (xy[..., 0] <= w - 0.5) & (xy[..., 1] >= -0.5) & (xy[..., 1] <= h - 0.5)
        ok = (self.track_vis >= vis_threshold) & inside & np.isfinite(self.tracks).all(-1) & (z > 0)
        wsum = ok.sum(1)  # [T,N]
        mean = np.where(ok[..., None], world, 0.0).sum(1) / np.maximum(wsum, 1)[..., None]
        return np.where((wsum > 0)[..., None], mean, np.nan).astype(np.float32)

    def _map(self, value: Any, name: str, default: np.ndarray) -> np.ndarray:
        if value is None:
            return default
        arr = np.asarray(value, dtype=np.float32)
        if arr.ndim == 5 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        self._check(name, arr, self.depth.shape)
        return arr

    @staticmethod
    def _check(name: str, arr: np.ndarray, shape: tuple[int, ...]) -> None:
        if tuple(arr.shape) != tuple(shape):
            raise ValueError(f"{name} has shape {tuple(arr.shape)}, expected {tuple(shape)}")

    def __repr__(self) -> str:
        t, v, h, w = self.depth.shape
        gt = "None" if self.gt is None else sorted(self.gt)
        return (f"Reconstruction(T={t}, V={v}, H={h}, W={w}, views={self.view_names}, "
                f"dynamic_mask={self.dynamic_mask is not None}, gt={gt}, meta_keys={sorted(self.meta)})")

    # ------------------------------------------------------------------ shape helpers
    @property
    def num_timesteps(self) -> int:
        return int(self.depth.shape[0])

    @property
    def num_views(self) -> int:
        return int(self.depth.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)``."""
        return int(self.depth.shape[2]), int(self.depth.shape[3])

    def invalidate_cache(self) -> None:
        """Drop cached derived arrays (call after editing depth / cameras in place)."""
        self._cache.clear()

    # ------------------------------------------------------------------ derived geometry
    def points_from_depth(self) -> np.ndarray:
        """World points ``[T,V,H,W,3]`` unprojected from depth + cameras (cached)."""
        if "points_from_depth" not in self._cache:
            self._cache["points_from_depth"] = unproject_depth(self.depth, self.intrinsic, self.extrinsic)
        return self._cache["points_from_depth"]

    def camera_centers(self) -> np.ndarray:
        """Camera centres ``[T,V,3]`` in the world frame."""
        return camera_centers(self.extrinsic).astype(np.float32)

    def _source(self, source: Source) -> tuple[np.ndarray, np.ndarray]:
        if source == "depth":
            return self.points_from_depth(), self.depth_conf
        if source == "points":
            return self.world_points, self.world_points_conf
        raise ValueError(f"source must be 'depth' or 'points', got {source!r}")

    def _source_at(self, source: Source, t: int) -> tuple[np.ndarray, np.ndarray]:
        """``_source`` of one timestep ``([V,H,W,3], [V,H,W])``, unprojecting only that timestep
        (so exports of a memory-mapped result never build sequence-sized point arrays)."""
        if source == "depth":
            if "points_from_depth" in self._cache:
                return self._cache["points_from_depth"][t], self.depth_conf[t]
            sl = slice(t, t + 1)
            return unproject_depth(self.depth[sl], self.intrinsic[sl], self.extrinsic[sl])[0], self.depth_conf[t]
        if source == "points":
            return self.world_points[t], self.world_points_conf[t]
        raise ValueError(f"source must be 'depth' or 'points', got {source!r}")

    def _valid(self, source: Source, t: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(valid bool, conf)`` for all timesteps ``[T,V,H,W]`` or one timestep ``[V,H,W]``
        (computed a timestep at a time)."""
        if t is None:
            valid = np.empty(self.depth.shape, dtype=bool)
            for i in range(self.num_timesteps):
                valid[i] = self._valid(source, i)[0]
            if source not in ("depth", "points"):
                raise ValueError(f"source must be 'depth' or 'points', got {source!r}")
            return valid, self.depth_conf if source == "depth" else self.world_points_conf
        points, conf = self._source_at(source, t)
        depth = self.depth[t]
        valid = np.isfinite(conf) & np.all(np.isfinite(points), axis=-1)
        if source == "depth":
            valid &= np.isfinite(depth) & (depth > 0)
        return valid, conf

    def percentile_threshold(self, source: Source, percentile: float) -> float:
        """Confidence at ``percentile`` (0-100) of the valid confidences of the whole sequence
        (cached, so per-timestep queries agree and a viewer slider stays cheap)."""
        if not 0.0 <= percentile <= 100.0:
            raise ValueError(f"percentile must be in [0, 100], got {percentile}")
        key = f"percentile:{source}:{float(percentile)!r}"
        if key not in self._cache:
            # the valid confidences gathered a timestep at a time into one buffer, sorted in place
            per_t = [self._valid(source, t) for t in range(self.num_timesteps)]
            values = np.empty(sum(int(v.sum()) for v, _ in per_t), np.float32)
            offset = 0
            for valid, conf in per_t:
                n = int(valid.sum())
                values[offset:offset + n] = conf[valid]
                offset += n
            del per_t
            self._cache[key] = np.percentile(values, percentile, overwrite_input=True) if len(values) else -np.inf
        return self._cache[key]

    def confidence_mask(
        self,
        source: Source = "depth",
        percentile: float | None = None,
        threshold: float | None = None,
        t: int | None = None,
    ) -> np.ndarray:
        """Boolean keep-mask ``[T,V,H,W]`` (``[V,H,W]`` for a single timestep ``t``).

        Always drops non-finite points / confidences (and zero or negative depth for
        ``source="depth"``). ``percentile`` (0-100, VGGT style) keeps pixels whose confidence is
        ``>=`` that percentile of the valid confidences of the whole sequence, so the kept
        fraction is ``1 - percentile/100`` up to ties; ``threshold`` keeps ``conf >= threshold``.
        Both may be combined (logical and).
        """
        valid, conf = self._valid(source, t)
        if percentile is not None:
            valid &= conf >= self.percentile_threshold(source, percentile)
        if threshold is not None:
            valid &= conf >= threshold
        return valid

    def _colors(self, keep: np.ndarray | tuple[np.ndarray, ...], color_by: ColorBy) -> np.ndarray:
        rgb = self.images[keep]
        if color_by == "image":
            return rgb
        if color_by != "mask":
            raise ValueError(f"color_by must be 'image' or 'mask', got {color_by!r}")
        if self.dynamic_mask is None:
            return rgb
        prob = self.dynamic_mask[keep][:, None]
        gray = rgb.astype(np.float32).mean(axis=1, keepdims=True) * 0.6 + 40.0
        return np.clip(np.rint((1.0 - prob) * gray + prob * _DYNAMIC_RGB), 0, 255).astype(np.uint8)

    def select(
        self,
        timesteps: int | Sequence[int] | None = None,
        views: Sequence[int] | None = None,
        source: Source = "depth",
        conf_percentile: float | None = None,
        conf_threshold: float | None = None,
        dynamic: Literal["all", "static", "dynamic"] = "all",
        dynamic_threshold: float = 0.5,
    ) -> np.ndarray:
        """Boolean pixel selection ``[T,V,H,W]`` combining time/view/confidence/dynamic filters.

        ``dynamic="static"`` keeps ``mask < dynamic_threshold`` (everything if no mask),
        ``"dynamic"`` keeps ``mask >= dynamic_threshold`` (nothing if no mask).
        """
        keep = self.confidence_mask(source, conf_percentile, conf_threshold)
        sel = np.zeros(keep.shape[:2], dtype=bool)
        t_idx = slice(None) if timesteps is None else np.atleast_1d(np.asarray(timesteps, dtype=int))
        v_idx = slice(None) if views is None else np.asarray(list(views), dtype=int)
        if isinstance(t_idx, np.ndarray) and isinstance(v_idx, np.ndarray):
            sel[np.ix_(t_idx, v_idx)] = True
        else:
            sel[t_idx, v_idx] = True
        keep &= sel[:, :, None, None]
        return self._apply_dynamic(keep, self.dynamic_mask, dynamic, dynamic_threshold)

    @staticmethod
    def _apply_dynamic(keep: np.ndarray, mask: np.ndarray | None, dynamic: str, threshold: float) -> np.ndarray:
        if dynamic not in ("all", "static", "dynamic"):
            raise ValueError(f"dynamic must be 'all', 'static' or 'dynamic', got {dynamic!r}")
        if dynamic == "static" and mask is not None:
            keep &= mask < threshold
        elif dynamic == "dynamic":
            keep &= (mask >= threshold) if mask is not None else False
        return keep

    def _select_timestep(
        self, t: int, views: Sequence[int] | None, source: Source, conf_percentile: float | None,
        conf_threshold: float | None, dynamic: str = "all", dynamic_threshold: float = 0.5,
    ) -> np.ndarray:
        """``select`` restricted to one timestep: bool ``[V,H,W]`` (touches only that timestep)."""
        if not -self.num_timesteps <= t < self.num_timesteps:
            raise IndexError(f"timestep {t} out of range for T={self.num_timesteps}")
        t = t % self.num_timesteps
        keep = self.confidence_mask(source, conf_percentile, conf_threshold, t=t)
        if views is not None:
            sel = np.zeros(self.num_views, dtype=bool)
            sel[np.asarray(list(views), dtype=int)] = True
            keep &= sel[:, None, None]
        mask = None if self.dynamic_mask is None else self.dynamic_mask[t]
        return self._apply_dynamic(keep, mask, dynamic, dynamic_threshold)

    def gather(
        self, keep: np.ndarray, source: Source = "depth", color_by: ColorBy = "image", t: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Points and colours ``([N,3] f32, [N,3] uint8)`` where ``keep [T,V,H,W]`` is True.

        With ``t`` given, ``keep`` is ``[V,H,W]`` and only timestep ``t`` is read.
        """
        if t is not None:
            idx = (np.full(int(keep.sum()), t),) + np.nonzero(keep)
            return self._source_at(source, t)[0][keep].astype(np.float32), self._colors(idx, color_by)
        pts = [self._source_at(source, i)[0][keep[i]].astype(np.float32) for i in range(self.num_timesteps)]
        return (np.concatenate(pts) if pts else np.zeros((0, 3), np.float32)), self._colors(keep, color_by)

    def points(
        self,
        t: int,
        views: Sequence[int] | None = None,
        source: Source = "depth",
        conf_percentile: float | None = None,
        conf_threshold: float | None = None,
        color_by: ColorBy = "image",
    ) -> tuple[np.ndarray, np.ndarray]:
        """Fused point cloud of timestep ``t`` over ``views`` (all by default).

        Returns ``(xyz [N,3] float32, rgb [N,3] uint8)``; see ``confidence_mask`` for filters.
        """
        keep = self._select_timestep(t, views, source, conf_percentile, conf_threshold)
        return self.gather(keep, source, color_by, t=t % self.num_timesteps)

    def static_background(
        self,
        voxel_size: float | None = None,
        dynamic_threshold: float = 0.5,
        source: Source = "depth",
        conf_percentile: float | None = None,
        conf_threshold: float | None = None,
        views: Sequence[int] | None = None,
        color_by: ColorBy = "image",
    ) -> tuple[np.ndarray, np.ndarray]:
        """Static pixels (``dynamic_mask < dynamic_threshold``) of all timesteps, fused.

        Voxel-downsampled with open3d; ``voxel_size=None`` uses ``scene_scale() / 512``,
        ``voxel_size=0`` disables downsampling. Returns ``(xyz [N,3] f32, rgb [N,3] uint8)``.
        """
        keep = self.select(None, views, source, conf_percentile, conf_threshold, "static", dynamic_threshold)
        xyz, rgb = self.gather(keep, source, color_by)
        if voxel_size is None:
            voxel_size = self.scene_scale() / 512.0
        xyz, rgb = voxel_downsample(xyz, rgb, voxel_size)
        return xyz, rgb

    def dynamic_points(
        self,
        t: int,
        dynamic_threshold: float = 0.5,
        views: Sequence[int] | None = None,
        source: Source = "depth",
        conf_percentile: float | None = None,
        conf_threshold: float | None = None,
        color_by: ColorBy = "image",
    ) -> tuple[np.ndarray, np.ndarray]:
        """Dynamic pixels (``dynamic_mask >= dynamic_threshold``) of timestep ``t`` (empty if no mask)."""
        keep = self._select_timestep(t, views, source, conf_percentile, conf_threshold, "dynamic", dynamic_threshold)
        return self.gather(keep, source, color_by, t=t % self.num_timesteps)

    @staticmethod
    def clean(
        points: np.ndarray,
        voxel_size: float | None = None,
        nb_neighbors: int = 20,
        std_ratio: float = 2.0,
        colors: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Optional voxel downsampling, then open3d statistical outlier removal.

        ``points [N,3]``, ``colors [N,3] uint8`` or None -> ``(xyz [K,3], rgb [K,3] or None)``.
        """
        xyz, rgb = voxel_downsample(points, colors, voxel_size or 0.0)
        xyz, rgb, _ = remove_statistical_outliers(xyz, rgb, nb_neighbors, std_ratio)
        return xyz, rgb

    def scene_center(self) -> np.ndarray:
        """Robust scene centre ``[3]``: median of valid unprojected points (camera centres if none)."""
        pts = self._sample_valid_points()
        if len(pts) == 0:
            return np.median(self.camera_centers().reshape(-1, 3), axis=0).astype(np.float32)
        return np.median(pts, axis=0).astype(np.float32)

    def scene_scale(self) -> float:
        """Robust scene extent (> 0, cached): twice the 90th-percentile distance of valid points
        and camera centres from ``scene_center()``; 1.0 for an empty scene."""
        if "scene_scale" not in self._cache:
            pts = np.concatenate([self._sample_valid_points(), self.camera_centers().reshape(-1, 3)], axis=0)
            dist = np.linalg.norm(pts - self.scene_center(), axis=1)
            scale = float(2.0 * np.percentile(dist, 90)) if len(dist) else 0.0
            self._cache["scene_scale"] = scale if np.isfinite(scale) and scale > 1e-8 else 1.0
        return self._cache["scene_scale"]

    def _sample_valid_points(self, max_points: int = 200_000) -> np.ndarray:
        """Every k-th valid unprojected point (k = ceil(count / max_points)), a timestep at a time."""
        counts = [int(self._valid("depth", t)[0].sum()) for t in range(self.num_timesteps)]
        step = int(np.ceil(sum(counts) / max_points)) if sum(counts) > max_points else 1
        out, offset = [], 0
        for t, n in enumerate(counts):
            if n:
                pts = self._source_at("depth", t)[0][self._valid("depth", t)[0]]
                out.append(pts[(-offset) % step::step])
            offset += n
        return np.concatenate(out) if out else np.zeros((0, 3), np.float32)

    # ------------------------------------------------------------------ persistence
    def save(self, out_dir: str | os.PathLike, **export_options: Any) -> Path:
        """Write npz + per-timestep PLY + GLB + cameras.json + COLMAP + manifest, atomically.

        See ``vggt_mv.export.bundle.save_reconstruction`` for ``export_options``.
        """
        from vggt_mv.export.bundle import save_reconstruction

        return save_reconstruction(self, out_dir, **export_options)

    @classmethod
    def load(cls, out_dir: str | os.PathLike) -> "Reconstruction":
        """Restore a reconstruction written by ``save`` (arrays bit-exact, meta from manifest)."""
        from vggt_mv.export.bundle import read_reconstruction

        return cls(**read_reconstruction(out_dir))

    def to_html(self, path: str | os.PathLike, **options: Any) -> Path:
        """Share as one offline HTML player (or ``format="viser"``: a folder for static hosting).

        See ``vggt_mv.export.html.export_html`` for ``options`` (``color_by``, ``fps``,
        ``conf_percentile``, ``max_mb``, ...). Returns the written path.
        """
        from vggt_mv.export.html import export_html

        return export_html(self, path, **options).path
