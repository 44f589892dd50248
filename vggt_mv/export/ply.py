"""Coloured point clouds as binary PLY (trimesh), including the empty cloud."""

from __future__ import annotations

import os

import numpy as np

from vggt_mv.export.atomic import atomic_file

__all__ = ["write_ply", "read_ply"]

_EMPTY_HEADER = (
    b"ply\nformat binary_little_endian 1.0\nelement vertex 0\n"
    b"property float x\nproperty float y\nproperty float z\n"
    b"property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
)


def ply_bytes(xyz: np.ndarray, rgb: np.ndarray | None = None) -> bytes:
    """Binary PLY bytes for ``xyz [N,3]`` and optional ``rgb [N,3] uint8``."""
    import trimesh

    xyz = np.asarray(xyz, dtype=np.float32).reshape(-1, 3)
    if len(xyz) == 0:  # trimesh cannot build an empty PointCloud
        return _EMPTY_HEADER
    colors = None if rgb is None else np.asarray(rgb, dtype=np.uint8).reshape(-1, 3)
    return trimesh.PointCloud(xyz, colors=colors).export(file_type="ply")


def write_ply(path: str | os.PathLike, xyz: np.ndarray, rgb: np.ndarray | None = None) -> None:
    """Atomically write a binary PLY point cloud ``xyz [N,3]`` with colours ``rgb [N,3] uint8``."""
    data = ply_bytes(xyz, rgb)
    with atomic_file(path, "wb") as handle:
        handle.write(data)


def read_ply(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a PLY point cloud with trimesh -> ``(xyz [N,3] f32, rgb [N,3] uint8 or None)``."""
    import trimesh

    loaded = trimesh.load(os.fspath(path), file_type="ply", process=False)
    if not hasattr(loaded, "vertices"):  # empty file loads as an empty Scene
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)
    xyz = np.asarray(loaded.vertices, dtype=np.float32)
    colors = getattr(loaded, "colors", None)
    rgb = None if colors is None or len(colors) != len(xyz) else np.asarray(colors)[:, :3].astype(np.uint8)
    return xyz, rgb
