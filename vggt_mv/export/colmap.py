"""COLMAP text model (``cameras.txt``, ``images.txt``, ``points3D.txt``) + optional images.

One PINHOLE camera per (t, v). ``images.txt`` stores world-to-camera poses as
``QW QX QY QZ TX TY TZ`` (COLMAP's convention = VGGT's camera-from-world extrinsic).
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from vggt_mv.export.atomic import atomic_file
from vggt_mv.inference.geometry import quat_to_rotmat, rotmat_to_quat

__all__ = ["image_name", "write_colmap_text", "read_colmap_cameras", "read_colmap_images", "read_colmap_points"]


def image_name(view_name: str, t: int) -> str:
    """Image path used in ``images.txt`` for view ``view_name`` at timestep ``t``."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(view_name)) or "view"
    return f"{safe}/t{t:04d}.png"


def write_colmap_text(
    out_dir: str | os.PathLike,
    extrinsic: np.ndarray,
    intrinsic: np.ndarray,
    width: int,
    height: int,
    view_names: Sequence[str],
    points_xyz: np.ndarray | None = None,
    points_rgb: np.ndarray | None = None,
    images: np.ndarray | None = None,
) -> None:
    """Write a COLMAP text model into ``out_dir``.

    ``extrinsic [T,V,3,4]`` camera-from-world, ``intrinsic [T,V,3,3]``, ``points_xyz [N,3]``,
    ``points_rgb [N,3] uint8``; ``images [T,V,H,W,3] uint8`` are written under ``images/``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    extrinsic = np.asarray(extrinsic, dtype=np.float64)
    intrinsic = np.asarray(intrinsic, dtype=np.float64)
    num_t, num_v = extrinsic.shape[:2]
    n = num_t * num_v
    ids = np.arange(1, n + 1)
    k = intrinsic.reshape(n, 3, 3)
    cam_rows = np.column_stack([ids, np.full(n, width), np.full(n, height), k[:, 0, 0], k[:, 1, 1], k[:, 0, 2], k[:, 1, 2]])
    buf = io.StringIO()
    buf.write(f"# Camera list with one line of data per camera:\n#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n# Number of cameras: {n}\n")
    np.savetxt(buf, cam_rows, fmt="%d PINHOLE %d %d %.10g %.10g %.10g %.10g")
    with atomic_file(out / "cameras.txt", "w") as handle:
        handle.write(buf.getvalue())

    ext = extrinsic.reshape(n, 3, 4)
    quat = rotmat_to_quat(ext[:, :, :3])
    names = [image_name(view_names[v], t) for t in range(num_t) for v in range(num_v)]
    lines = [
        f"{i} {q[0]:.12g} {q[1]:.12g} {q[2]:.12g} {q[3]:.12g} {tr[0]:.12g} {tr[1]:.12g} {tr[2]:.12g} {i} {name}\n\n"
        for i, q, tr, name in zip(ids, quat, ext[:, :, 3], names)
    ]
    header = ("# Image list with two lines of data per image:\n"
              "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME\n"
              "#   POINTS2D[] as (X, Y, POINT3D_ID)\n"
              f"# Number of images: {n}, mean observations per image: 0\n")
    with atomic_file(out / "images.txt", "w") as handle:
        handle.write(header + "".join(lines))

    xyz = np.zeros((0, 3)) if points_xyz is None else np.asarray(points_xyz, dtype=np.float64).reshape(-1, 3)
    rgb = np.full((len(xyz), 3), 128) if points_rgb is None else np.asarray(points_rgb).reshape(-1, 3)
    buf = io.StringIO()
    buf.write("# 3D point list with one line of data per point:\n"
              "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)\n"
              f"# Number of points: {len(xyz)}, mean track length: 0\n")
    if len(xyz):
        rows = np.column_stack([np.arange(1, len(xyz) + 1), xyz, rgb, np.zeros(len(xyz))])
        np.savetxt(buf, rows, fmt="%d %.7g %.7g %.7g %d %d %d %.1f")
    with atomic_file(out / "points3D.txt", "w") as handle:
        handle.write(buf.getvalue())

    if images is not None:
        import cv2

        images = np.asarray(images)
        for t in range(num_t):
            for v in range(num_v):
                path = out / "images" / image_name(view_names[v], t)
                path.parent.mkdir(parents=True, exist_ok=True)
                ok, data = cv2.imencode(".png", np.ascontiguousarray(images[t, v, ..., ::-1]))
                if not ok:
                    raise OSError(f"could not encode {path}")
                with atomic_file(path, "wb") as handle:
                    handle.write(data.tobytes())


def _data_lines(path: str | os.PathLike) -> list[str]:
    with open(path, encoding="utf-8") as handle:
        return [ln.rstrip("\n") for ln in handle if not ln.startswith("#")]


def read_colmap_cameras(path: str | os.PathLike) -> dict[int, tuple[str, int, int, np.ndarray]]:
    """``cameras.txt`` -> ``{camera_id: (model, width, height, params)}``."""
    out = {}
    for line in _data_lines(path):
        if line.strip():
            parts = line.split()
            out[int(parts[0])] = (parts[1], int(parts[2]), int(parts[3]), np.array(parts[4:], dtype=np.float64))
    return out


def read_colmap_images(path: str | os.PathLike) -> dict[str, tuple[int, np.ndarray, int]]:
    """``images.txt`` -> ``{name: (image_id, extrinsic [3,4] world-to-camera, camera_id)}``."""
    lines = _data_lines(path)
    out = {}
    for line in lines[0::2]:  # every image has a second (points2D) line
        parts = line.split()
        if len(parts) < 10:
            continue
        q = np.array(parts[1:5], dtype=np.float64)
        tr = np.array(parts[5:8], dtype=np.float64)
        ext = np.concatenate([quat_to_rotmat(q), tr[:, None]], axis=1)
        out[" ".join(parts[9:])] = (int(parts[0]), ext, int(parts[8]))
    return out


def read_colmap_points(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``points3D.txt`` -> ``(xyz [N,3] f64, rgb [N,3] uint8)`` (tracks ignored)."""
    rows = [ln.split()[:7] for ln in _data_lines(path) if ln.strip()]
    if not rows:
        return np.zeros((0, 3)), np.zeros((0, 3), np.uint8)
    arr = np.array(rows, dtype=np.float64)
    return arr[:, 1:4], arr[:, 4:7].astype(np.uint8)
