"""Camera JSON export: per (t, v) extrinsic (camera-from-world), camera-to-world, intrinsic."""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import numpy as np

from vggt_mv.export.atomic import atomic_file
from vggt_mv.inference.geometry import camera_centers, camera_to_world

__all__ = ["cameras_dict", "write_cameras_json", "read_cameras_json"]


def cameras_dict(
    extrinsic: np.ndarray, intrinsic: np.ndarray, width: int, height: int, view_names: Sequence[str]
) -> dict[str, Any]:
    """JSON-ready dict for ``extrinsic [T,V,3,4]``, ``intrinsic [T,V,3,3]``."""
    extrinsic = np.asarray(extrinsic, dtype=np.float64)
    intrinsic = np.asarray(intrinsic, dtype=np.float64)
    num_t, num_v = extrinsic.shape[:2]
    c2w = camera_to_world(extrinsic)
    centers = camera_centers(extrinsic)
    cams = [
        {
            "t": t, "v": v, "view": str(view_names[v]), "width": int(width), "height": int(height),
            "extrinsic": extrinsic[t, v].tolist(), "camera_to_world": c2w[t, v].tolist(),
            "intrinsic": intrinsic[t, v].tolist(), "center": centers[t, v].tolist(),
            "fx": float(intrinsic[t, v, 0, 0]), "fy": float(intrinsic[t, v, 1, 1]),
            "cx": float(intrinsic[t, v, 0, 2]), "cy": float(intrinsic[t, v, 1, 2]),
        }
        for t in range(num_t) for v in range(num_v)
    ]
    return {
        "convention": "extrinsic = 3x4 [R|t] camera-from-world, OpenCV axes (x right, y down, "
                      "z forward); camera_to_world = its 4x4 inverse; intrinsic in pixels",
        "num_timesteps": int(num_t), "num_views": int(num_v), "view_names": [str(n) for n in view_names],
        "width": int(width), "height": int(height), "cameras": cams,
    }


def write_cameras_json(path: str | os.PathLike, **kwargs: Any) -> None:
    """Atomically write ``cameras_dict(**kwargs)`` as JSON."""
    with atomic_file(path, "w") as handle:
        json.dump(cameras_dict(**kwargs), handle, indent=1)


def read_cameras_json(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read ``cameras.json`` -> ``(extrinsic [T,V,3,4], intrinsic [T,V,3,3], view_names)``."""
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    num_t, num_v = data["num_timesteps"], data["num_views"]
    ext = np.zeros((num_t, num_v, 3, 4))
    intr = np.zeros((num_t, num_v, 3, 3))
    for cam in data["cameras"]:
        ext[cam["t"], cam["v"]] = cam["extrinsic"]
        intr[cam["t"], cam["v"]] = cam["intrinsic"]
    return ext, intr, list(data["view_names"])
