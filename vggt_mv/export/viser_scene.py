"""Scene-building helpers shared by the live viewer (``app/scene_view.py``) and the offline export
(``vggt_mv.export.html``): camera poses / fov for viser frustums, mask tinting, thumbnails,
per-view point clouds, the up-axis rotation, the initial camera and a temporary ``ViserServer``.

Conventions: extrinsics are camera-from-world ``[3,4]`` (OpenCV); coordinates are recentred by
the scene centre (viser stores positions as float16). Up axis ``-y`` keeps the VGGT / OpenCV frame,
``+z`` rotates the world by -90° about x (``ROOT_WXYZ``, applied to a ``/world`` frame).
"""

from __future__ import annotations

import contextlib
import io
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # the exporters never import the result class back (it calls them)
    from vggt_mv.inference.reconstruction import Reconstruction

__all__ = [
    "GHOST_RGB", "GT_RGB", "CAM_RGB", "UP_AXES", "ROOT_WXYZ", "frustum_fov_aspect", "wxyz_from_matrix",
    "frustum_pose", "tint_mask", "thumb", "cloud_for", "frustum_mesh", "initial_camera", "free_port",
    "temporary_server", "viser_client_path",
]

GHOST_RGB = (255, 140, 0)
GT_RGB = (30, 200, 90)
CAM_RGB = (40, 90, 230)
#: viewer labels -> up-axis codes
UP_AXES = {"-y (VGGT / OpenCV)": "-y", "+z": "+z"}
_SQ = float(np.sqrt(0.5))
#: rotation of the ``/world`` frame per up axis: R_x(-90°) maps -y to +z
ROOT_WXYZ = {"-y": (1.0, 0.0, 0.0, 0.0), "+z": (_SQ, -_SQ, 0.0, 0.0)}
_UP_ROT = {"-y": np.eye(3), "+z": np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])}

log = logging.getLogger(__name__)


def frustum_fov_aspect(intrinsic: np.ndarray, height: int, width: int) -> tuple[float, float]:
    """Vertical fov (radians) from fy and H, and aspect W/H."""
    fy = float(intrinsic[1, 1])
    fov = 2.0 * np.arctan2(height / 2.0, fy) if fy > 0 and np.isfinite(fy) else np.radians(60.0)
    return float(fov), float(width) / float(height)


def wxyz_from_matrix(rot: np.ndarray) -> np.ndarray:
    """Unit quaternion ``(w, x, y, z)`` of a 3x3 rotation (viser's convention)."""
    import viser.transforms as vtf

    return vtf.SO3.from_matrix(np.asarray(rot, np.float64)).wxyz


def frustum_pose(extrinsic: np.ndarray, center: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(wxyz, position)`` of the camera-to-world pose of camera-from-world ``[3,4]``, recentred."""
    ext = np.asarray(extrinsic, np.float64)
    r_c2w = ext[:3, :3].T
    pos = -r_c2w @ ext[:3, 3] - np.asarray(center, np.float64)
    return wxyz_from_matrix(r_c2w), pos


def tint_mask(image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Image ``[H,W,3] uint8`` with the dynamic-mask probability painted red."""
    if mask is None:
        return image
    prob = np.clip(mask, 0, 1)[..., None]
    red = np.array([255.0, 40.0, 40.0])
    return np.clip(image * (1.0 - 0.6 * prob) + red * 0.6 * prob, 0, 255).astype(np.uint8)


def thumb(image: np.ndarray, max_side: int = 96) -> np.ndarray:
    """Integer-stride thumbnail with the longer side at most ``max_side`` (cheap, for live uploads)."""
    h, w = image.shape[:2]
    step = max(1, int(np.ceil(max(h, w) / max_side)))
    return np.ascontiguousarray(image[::step, ::step])


def cloud_for(rec: Reconstruction, keep: np.ndarray, t: int, v: int, source: str, color_by: str,
              center: np.ndarray, max_points: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Recentred points / colours of view ``v`` at timestep ``t`` (``keep`` = [T,V,H,W] filter).

    ``color_by="mask"`` tints the image colours with the dynamic mask (as the viewer does);
    ``max_points`` subsamples uniformly with a seed fixed per (t, v).
    """
    sel = np.zeros(keep.shape[2:], bool)
    sel[...] = keep[t, v]
    pts = (rec.points_from_depth() if source == "depth" else rec.world_points)[t, v][sel]
    if color_by == "mask" and rec.dynamic_mask is not None:
        col = tint_mask(rec.images[t, v], rec.dynamic_mask[t, v])[sel]
    else:
        col = rec.images[t, v][sel]
    if max_points is not None and len(pts) > max_points:
        idx = np.random.default_rng(t * 1009 + v).choice(len(pts), max_points, replace=False)
        idx.sort()
        pts, col = pts[idx], col[idx]
    return (pts - center).astype(np.float32), np.ascontiguousarray(col, dtype=np.uint8)


def frustum_mesh(ext: np.ndarray, intr: np.ndarray, h: int, w: int, scale: float,
                 center: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pyramid (apex + 4 image corners at depth ``scale``) of a camera, world coords, recentred."""
    ext = np.asarray(ext, np.float64)
    k = np.asarray(intr, np.float64)
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64)
    rays = np.stack([(corners[:, 0] - k[0, 2]) / k[0, 0], (corners[:, 1] - k[1, 2]) / k[1, 1],
                     np.ones(4)], -1)
    rays = rays / rays[:, 2:3] * scale
    cam = np.concatenate([np.zeros((1, 3)), rays])  # [5,3] in camera frame
    r_c2w = ext[:3, :3].T
    world = cam @ r_c2w.T + (-r_c2w @ ext[:3, 3]) - center
    faces = np.array([[0, 1, 2], [0, 2, 3], [0, 3, 4], [0, 4, 1], [1, 2, 3], [1, 3, 4]])
    return world, faces


def initial_camera(extrinsic: np.ndarray, center: np.ndarray, scale: float,
                   up: str = "-y") -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """``(position, look_at, up_direction)`` of a viewer camera a little behind and above the
    camera ``extrinsic`` (the reference camera), looking at the recentred scene centre (origin),
    in the display frame of ``up`` (the ``/world`` rotation applied)."""
    ext = np.asarray(extrinsic, np.float64)
    r_c2w = ext[:3, :3].T
    cam = -r_c2w @ ext[:3, 3] - np.asarray(center, np.float64)
    fwd, down = r_c2w[:, 2], r_c2w[:, 1]
    pos = cam - 0.25 * scale * fwd - 0.12 * scale * down
    if np.linalg.norm(pos) < 1e-6 * max(scale, 1e-12):  # camera at the centre: step back along -z
        pos = pos - 0.5 * scale * fwd
    up_dir = (0.0, -1.0, 0.0) if up == "-y" else (0.0, 0.0, 1.0)
    return tuple(float(x) for x in _UP_ROT[up] @ pos), (0.0, 0.0, 0.0), up_dir


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def temporary_server(host: str = "127.0.0.1") -> Iterator[Any]:
    """A fresh ``viser.ViserServer`` on a free port of ``host`` (no clients), stopped on exit.

    Used to record a scene with ``get_scene_serializer`` without touching a live session's scene.
    """
    import viser

    banner = io.StringIO()  # viser prints its address and "Server stopped": keep stdout clean
    with contextlib.redirect_stdout(banner):
        server = viser.ViserServer(host=host, port=free_port(host), verbose=False)
    try:
        yield server
    finally:
        try:
            with contextlib.redirect_stdout(banner):
                server.stop()
        except Exception as exc:  # noqa: BLE001 - stopping must never mask the real error
            log.debug("stopping the temporary viser server failed: %s", exc)
        log.debug("temporary viser server: %s", banner.getvalue().strip())


def viser_client_path() -> Path:
    """The single-file viser web client shipped in the installed viser wheel (``client/build``)."""
    import viser

    path = Path(viser.__file__).parent / "client" / "build" / "index.html"
    if not path.is_file():
        raise FileNotFoundError(f"viser client build not found at {path} (reinstall viser)")
    return path
