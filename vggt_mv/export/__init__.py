"""Exports of a ``Reconstruction``: NPZ bundle, PLY, GLB, camera JSON, COLMAP text model."""

from vggt_mv.export.atomic import atomic_dir, atomic_file
from vggt_mv.export.bundle import read_reconstruction, save_reconstruction
from vggt_mv.export.cameras import cameras_dict, read_cameras_json, write_cameras_json
from vggt_mv.export.colmap import read_colmap_cameras, read_colmap_images, read_colmap_points, write_colmap_text
from vggt_mv.export.glb import build_scene, frustum_lines, write_glb
from vggt_mv.export.ply import read_ply, write_ply

__all__ = [
    "atomic_dir", "atomic_file", "save_reconstruction", "read_reconstruction",
    "cameras_dict", "read_cameras_json", "write_cameras_json",
    "read_colmap_cameras", "read_colmap_images", "read_colmap_points", "write_colmap_text",
    "build_scene", "frustum_lines", "write_glb", "read_ply", "write_ply",
]
