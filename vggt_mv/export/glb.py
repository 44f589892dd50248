"""GLB scene: per-timestep coloured point clouds + camera frustums as line paths (trimesh)."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from vggt_mv.export.atomic import atomic_file
from vggt_mv.inference.geometry import closed_form_inverse_se3

__all__ = ["frustum_lines", "build_scene", "write_glb"]

_PALETTE = np.array(
    [[230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180],
     [70, 240, 240], [240, 50, 230], [210, 245, 60]], dtype=np.uint8)


def frustum_lines(
    extrinsic: np.ndarray, intrinsic: np.ndarray, width: int, height: int, size: float
) -> np.ndarray:
    """Frustum wireframe vertices ``[N,5,3]`` (apex + 4 image corners at depth ``size``).

    ``extrinsic [N,3,4]`` camera-from-world, ``intrinsic [N,3,3]``.
    """
    extrinsic = np.asarray(extrinsic, dtype=np.float64).reshape(-1, 3, 4)
    intrinsic = np.asarray(intrinsic, dtype=np.float64).reshape(-1, 3, 3)
    corners = np.array([[0, 0, 1], [width, 0, 1], [width, height, 1], [0, height, 1]], dtype=np.float64)
    rays = np.einsum("nij,cj->nci", np.linalg.inv(intrinsic), corners) * size  # [N,4,3] camera frame
    local = np.concatenate([np.zeros((len(rays), 1, 3)), rays], axis=1)  # [N,5,3]
    c2w = closed_form_inverse_se3(extrinsic)
    return np.einsum("nij,nkj->nki", c2w[:, :, :3], local) + c2w[:, None, :, 3]


def _frustum_path(verts: np.ndarray, view_ids: np.ndarray):  # -> trimesh.path.Path3D
    from trimesh.path import Path3D
    from trimesh.path.entities import Line

    entities, colors = [], []
    for i in range(len(verts)):  # one small set of entities per camera, not per point
        b = 5 * i
        seq = [[b, b + 1], [b, b + 2], [b, b + 3], [b, b + 4], [b + 1, b + 2, b + 3, b + 4, b + 1]]
        entities.extend(Line(np.array(s)) for s in seq)
        colors.extend([np.append(_PALETTE[view_ids[i] % len(_PALETTE)], 255)] * len(seq))
    return Path3D(entities=entities, vertices=verts.reshape(-1, 3), colors=np.array(colors, np.uint8), process=False)


def build_scene(
    clouds: Sequence[tuple[np.ndarray, np.ndarray]],
    extrinsic: np.ndarray,
    intrinsic: np.ndarray,
    width: int,
    height: int,
    frustum_size: float,
):  # -> trimesh.Scene
    """trimesh Scene with nodes ``points_t000`` (skipped when empty) and ``cameras_t000``.

    ``clouds[t] = (xyz [N,3], rgb [N,3] uint8)``; ``extrinsic [T,V,3,4]``, ``intrinsic [T,V,3,3]``.
    """
    import trimesh

    scene = trimesh.Scene()
    num_t, num_v = np.asarray(extrinsic).shape[:2]
    for t in range(num_t):
        xyz, rgb = clouds[t]
        if len(xyz):
            cloud = trimesh.PointCloud(np.asarray(xyz, np.float32), colors=np.asarray(rgb, np.uint8))
            scene.add_geometry(cloud, node_name=f"points_t{t:03d}", geom_name=f"points_t{t:03d}")
        verts = frustum_lines(extrinsic[t], intrinsic[t], width, height, frustum_size)
        path = _frustum_path(verts, np.arange(num_v))
        scene.add_geometry(path, node_name=f"cameras_t{t:03d}", geom_name=f"cameras_t{t:03d}")
    return scene


def write_glb(path: str | os.PathLike, scene) -> None:
    """Atomically export a trimesh Scene as binary glTF."""
    data = scene.export(file_type="glb")
    with atomic_file(path, "wb") as handle:
        handle.write(data)
