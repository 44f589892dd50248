"""Temporal window planning and Sim(3) stitching of per-window predictions.

Windows: timesteps ``[start, stop)`` of length ``window`` advancing by ``window - overlap``; the
last window is shifted back so that it ends at T (so every window has ``min(window, T)``
timesteps and the last overlap may be larger than ``overlap``).

Overlap rule: **every timestep is written once, by the earliest window that contains it** (the
earlier window's values are kept). A later window's first ``keep_from`` timesteps are shared with
the stitched result and are used only to align that window.

Alignment: each window is predicted in its own frame (its first image's camera) and scale. Window
k is mapped into the stitched frame (= window 0's = the reference camera (t=0, v=0) frame) by the
Sim(3) ``X' = s R X + t`` fitted with Umeyama to the overlap timesteps' confident world points
(pixels whose confidence in both predictions is at or above the ``conf_quantile`` quantile) plus
the overlap cameras' centres. The window's world points are transformed, its extrinsics re-expressed
in the stitched world (translations scaled by s), its depth scaled by s; intrinsics, confidences
and the dynamic mask are unchanged. All of this is numpy and independent of the model.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np

from vggt_mv.inference.alignment import align_cameras, apply_sim3, transform_extrinsic, umeyama
from vggt_mv.inference.geometry import camera_centers

__all__ = ["WindowPlan", "plan_windows", "Sim3", "WindowPrediction", "estimate_sim3", "Stitcher", "stitch",
           "allocate"]


def allocate(store: Path | None, name: str, shape: tuple[int, ...], dtype, fill=None) -> np.ndarray:
    """A result array: in memory (filled with ``fill``), or with ``store`` a memory-mapped
    ``store/NAME.npy`` (zero-filled until written; its pages go to disk, not to process memory)."""
    if store is None:
        return np.full(shape, fill if fill is not None else 0, dtype)
    Path(store).mkdir(parents=True, exist_ok=True)
    return np.lib.format.open_memmap(Path(store) / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)


@dataclass(frozen=True)
class WindowPlan:
    """Window ``index`` covers timesteps ``[start, stop)``; local steps ``< keep_from`` are overlap."""

    index: int
    start: int
    stop: int
    keep_from: int

    @property
    def length(self) -> int:
        return self.stop - self.start


def plan_windows(num_timesteps: int, window: int = 8, overlap: int = 2) -> list[WindowPlan]:
    """Windows covering ``range(num_timesteps)``; each timestep is written exactly once (see module doc)."""
    if num_timesteps < 1:
        raise ValueError(f"need at least one timestep, got {num_timesteps}")
    if window < 1:
        raise ValueError(f"window must be >= 1 timestep, got {window}")
    if not 0 <= overlap < window:
        raise ValueError(f"overlap must be in [0, window) = [0, {window}), got {overlap}")
    if window >= num_timesteps:
        return [WindowPlan(0, 0, num_timesteps, 0)]
    if overlap == 0:
        raise ValueError(
            f"{num_timesteps} timesteps need several windows of {window}, and windows can only be aligned "
            "through shared timesteps: use overlap >= 1 (or window >= the number of timesteps)"
        )
    plans = [WindowPlan(0, 0, window, 0)]
    step = window - overlap
    while plans[-1].stop < num_timesteps:
        prev = plans[-1]
        start = min(prev.start + step, num_timesteps - window)
        plans.append(WindowPlan(len(plans), start, start + window, prev.stop - start))
    return plans


@dataclass(frozen=True)
class Sim3:
    """Similarity ``X' = s R X + t`` (``R [3,3]``, ``t [3]``)."""

    s: float = 1.0
    R: np.ndarray = None  # type: ignore[assignment]
    t: np.ndarray = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        object.__setattr__(self, "R", np.eye(3) if self.R is None else np.asarray(self.R, np.float64))
        object.__setattr__(self, "t", np.zeros(3) if self.t is None else np.asarray(self.t, np.float64))

    @classmethod
    def random(cls, rng: np.random.Generator, scale: tuple[float, float] = (0.5, 2.0)) -> "Sim3":
        """A random proper similarity (for tests)."""
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        q = q * np.sign(np.linalg.det(q))
        return cls(float(rng.uniform(*scale)), q, rng.normal(size=3))

    def inverse(self) -> "Sim3":
        return Sim3(1.0 / self.s, self.R.T, -(self.R.T @ self.t) / self.s)

    def to_dict(self) -> dict:
        return {"s": float(self.s), "R": self.R.tolist(), "t": self.t.tolist()}


@dataclass
class WindowPrediction:
    """One window's outputs as CPU numpy (``Tw`` timesteps, ``V`` views).

    depth / depth_conf / world_points_conf ``[Tw,V,H,W]``, world_points ``[Tw,V,H,W,3]``,
    extrinsic ``[Tw,V,3,4]`` camera-from-world, intrinsic ``[Tw,V,3,3]``,
    dynamic_mask ``[Tw,V,H,W]`` (pixels) or None.
    """

    depth: np.ndarray
    depth_conf: np.ndarray
    world_points: np.ndarray
    world_points_conf: np.ndarray
    extrinsic: np.ndarray
    intrinsic: np.ndarray
    dynamic_mask: np.ndarray | None = None

    def transformed(self, sim: Sim3) -> "WindowPrediction":
        """This prediction expressed in the world ``X' = s R X + t`` (depth scaled by s)."""
        return replace(
            self,
            depth=(self.depth * sim.s).astype(np.float32),
            world_points=apply_sim3(self.world_points, sim.s, sim.R, sim.t).astype(np.float32),
            extrinsic=transform_extrinsic(self.extrinsic, sim.s, sim.R, sim.t).astype(np.float32),
        )

    def slice(self, a: int, b: int) -> "WindowPrediction":
        """Local timesteps ``[a, b)``."""
        return WindowPrediction(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[a:b]
                                   for f in fields(self)})


def _correspondences(ref: WindowPrediction, cur: WindowPrediction, conf_quantile: float,
                     max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Confident world-point pairs + camera-centre pairs ``([N,3], [N,3])`` of two aligned slices."""
    conf = np.minimum(ref.world_points_conf, cur.world_points_conf)
    valid = np.isfinite(conf) & np.isfinite(ref.world_points).all(-1) & np.isfinite(cur.world_points).all(-1)
    src = np.zeros((0, 3))
    dst = np.zeros((0, 3))
    if valid.any():
        keep = valid & (conf >= np.quantile(conf[valid], conf_quantile))
        idx = np.flatnonzero(keep)
        if len(idx) > max_points:  # deterministic even subsample
            idx = idx[np.linspace(0, len(idx) - 1, max_points).astype(np.int64)]
        src = cur.world_points.reshape(-1, 3)[idx].astype(np.float64)
        dst = ref.world_points.reshape(-1, 3)[idx].astype(np.float64)
    c_src = camera_centers(cur.extrinsic.astype(np.float64)).reshape(-1, 3)
    c_dst = camera_centers(ref.extrinsic.astype(np.float64)).reshape(-1, 3)
    ok = np.isfinite(c_src).all(-1) & np.isfinite(c_dst).all(-1)
    return np.concatenate([src, c_src[ok]]), np.concatenate([dst, c_dst[ok]])


def estimate_sim3(ref: WindowPrediction, cur: WindowPrediction, conf_quantile: float = 0.5,
                  max_points: int = 20000) -> tuple[Sim3, dict]:
    """Sim(3) taking ``cur`` (a window's overlap slice) onto ``ref`` (the stitched overlap slice).

    Both hold the same timesteps/views. Returns ``(sim, info)``; info has the method
    (``umeyama`` on points + centres, or ``cameras`` when too few valid points), the number of
    correspondences and the RMS residual in the stitched frame's units.
    """
    src, dst = _correspondences(ref, cur, conf_quantile, max_points)
    try:
        s, rot, t = umeyama(src, dst, with_scale=True)
        method = "umeyama"
    except ValueError:  # degenerate point set: fall back to the overlap cameras alone
        s, rot, t, how = align_cameras(cur.extrinsic.reshape(-1, 3, 4), ref.extrinsic.reshape(-1, 3, 4))
        method = f"cameras/{how}"
    sim = Sim3(float(s), rot, t)
    resid = float(np.sqrt(np.mean(np.sum((apply_sim3(src, s, rot, t) - dst) ** 2, -1)))) if len(src) else float("nan")
    return sim, {"method": method, "correspondences": int(len(src)), "rms": resid}


class Stitcher:
    """Accumulates window predictions into ``[T, V, ...]`` arrays in the first window's frame.

    Output arrays are allocated on the first ``add``; only the window being added is held besides
    them, so memory beyond the result itself is bounded by one window. With ``store`` (a folder) the
    arrays are memory-mapped ``.npy`` files there (see :func:`allocate`), so not even the result
    itself stays in memory.
    """

    def __init__(self, num_timesteps: int, conf_quantile: float = 0.5, max_points: int = 20000,
                 store: Path | None = None):
        self.T = num_timesteps
        self.store = store
        self.conf_quantile = conf_quantile
        self.max_points = max_points
        self.arrays: dict[str, np.ndarray | None] = {}
        self.written = np.zeros(num_timesteps, dtype=bool)
        self.sims: list[Sim3] = []
        self.info: list[dict] = []

    def _allocate(self, pred: WindowPrediction) -> None:
        for f in fields(pred):
            a = getattr(pred, f.name)
            self.arrays[f.name] = None if a is None else allocate(self.store, f.name, (self.T, *a.shape[1:]),
                                                                  np.float32, np.nan)

    def add(self, plan: WindowPlan, pred: WindowPrediction) -> Sim3:
        """Align ``pred`` (timesteps ``plan.start:plan.stop``) to the stitched result and write its new steps."""
        if pred.depth.shape[0] != plan.length:
            raise ValueError(f"window {plan.index} has {pred.depth.shape[0]} timesteps, plan says {plan.length}")
        if not self.arrays:
            self._allocate(pred)
        k = plan.keep_from
        if not self.written[plan.start:plan.start + k].all():
            raise ValueError(f"window {plan.index}: overlap timesteps {plan.start}..{plan.start + k - 1} "
                             "are not stitched yet; add windows in plan order")
        if k == 0:
            sim, info = Sim3(), {"method": "identity (first window)", "correspondences": 0, "rms": 0.0}
        else:
            ref = WindowPrediction(**{n: None if a is None else a[plan.start:plan.start + k]
                                      for n, a in self.arrays.items()})
            sim, info = estimate_sim3(ref, pred.slice(0, k), self.conf_quantile, self.max_points)
        aligned = pred.slice(k, plan.length).transformed(sim)
        for name, arr in self.arrays.items():
            if arr is not None:
                arr[plan.start + k:plan.stop] = getattr(aligned, name)
        self.written[plan.start + k:plan.stop] = True
        self.sims.append(sim)
        self.info.append({"start": plan.start, "stop": plan.stop, "keep_from": k, "sim3": sim.to_dict(), **info})
        return sim

    def result(self) -> WindowPrediction:
        """The stitched ``[T, V, ...]`` prediction (all timesteps must have been written)."""
        if not self.written.all():
            raise ValueError(f"timesteps {np.flatnonzero(~self.written).tolist()} were never written")
        return WindowPrediction(**self.arrays)  # type: ignore[arg-type]


def stitch(plans: list[WindowPlan], preds: list[WindowPrediction], conf_quantile: float = 0.5) -> tuple[WindowPrediction, Stitcher]:
    """Stitch a full list of per-window predictions (model-free; used by tests and offline tools)."""
    if len(plans) != len(preds):
        raise ValueError(f"{len(plans)} plans but {len(preds)} predictions")
    st = Stitcher(plans[-1].stop if plans else 0, conf_quantile)
    for plan, pred in zip(plans, preds):
        st.add(plan, pred)
    return st.result(), st
