"""``kubric_mv``: MV-Kubric scenes as kubric's worker writes them (ethz-vlg/kubric, branch
``multiview-point-tracking``; read by ethz-vlg/mvtracker ``kubric_multiview_dataset.py``)::

    <scene>/view_K/rgba_XXXXX.png      RGBA frames
    <scene>/view_K/depth_XXXXX.tiff    float32 *distance to the camera centre* along the ray (kubric "depth")
    <scene>/view_K/metadata.json       camera: K (normalised), positions [T,3], quaternions [T,4] (w,x,y,z);
                                       metadata: resolution [W, H]

Kubric's camera convention (google-research/kubric ``kubric/core/cameras.py``): the camera looks
down its −z axis with +y up (Blender/OpenGL); ``matrix_world`` = [R(q) | position] is
camera→world; ``intrinsics`` is normalised to a 1×1 image with the signs folded in::

    K_kubric = [[fx, 0, -0.5], [0, -fy, -0.5], [0, 0, -1]],   fx = focal_length / sensor_width
    project_point(X) = (K_kubric @ inv(matrix_world) @ X) / z   -> image coords in [0, 1]

where (0, 0) is the top-left image *corner*. Converted to the canonical convention (the same
algebra as MVTracker's loader, ``diag(1,-1,-1)`` both sides):

* extrinsic = ``diag(1,-1,-1) @ inv(matrix_world)[:3]`` (OpenGL camera -> OpenCV camera);
* K = ``diag(W, H, 1) @ K_kubric @ diag(1,-1,-1)``, then ``cx -= 0.5, cy -= 0.5`` because
  kubric's normalised coordinates put pixel ``i``'s centre at ``(i + 0.5) / W``;
* z-depth = distance / ``|K⁻¹ [u, v, 1]|`` (inverse of kubric's ``z_to_depth``).

Units are kubric's scene units (metres by construction). Masks are not read (kubric's
segmentation ids need the instance table; MV-Kubric training has none to give P(dynamic)).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import io
from .base import Clip, SequenceReader, clean_depth, ray_distance_to_z, stack_clip, to_unit_float

FORMAT = "kubric_mv"
_VIEW = re.compile(r"^view_\d+$")
GL_TO_CV = np.diag([1.0, -1.0, -1.0])


def _views(path: Path) -> list[Path]:
    if not path.is_dir():
        return []
    return io.natural_sorted([p for p in path.iterdir() if p.is_dir() and _VIEW.match(p.name)])


def is_sequence(path: Path) -> bool:
    views = _views(path)
    return bool(views) and (views[0] / "metadata.json").is_file() and any(views[0].glob("rgba_*.png"))


def detect(path: Path) -> bool:
    return is_sequence(path) or (path.is_dir() and any(is_sequence(p) for p in path.iterdir() if p.is_dir()))


def quat_wxyz_to_matrix(q: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z) -> rotation ``[3,3]`` (pyquaternion / kornia convention)."""
    w, x, y, z = np.asarray(q, np.float64) / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def kubric_to_opencv(K_kubric: np.ndarray, position: np.ndarray, quaternion: np.ndarray,
                     width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Kubric's normalised K and camera pose -> (K ``[3,3]`` pixels, pixel-centre convention;
    world→camera OpenCV ``[3,4]``) — see the module doc."""
    c2w = np.eye(4)
    c2w[:3, :3], c2w[:3, 3] = quat_wxyz_to_matrix(quaternion), position
    ext = GL_TO_CV @ np.linalg.inv(c2w)[:3, :4]
    K = np.diag([float(width), float(height), 1.0]) @ np.asarray(K_kubric, np.float64) @ GL_TO_CV
    K[0, 2] -= 0.5
    K[1, 2] -= 0.5
    return K, ext


class KubricSequence(SequenceReader):
    format = FORMAT

    def __init__(self, scene: Path) -> None:
        self.rgb, self.depth, self.K, self.E = [], [], [], []
        for vd in _views(scene):
            meta_file = vd / "metadata.json"
            try:
                meta = json.loads(meta_file.read_text())
                cam = meta["camera"]
                W, H = (int(x) for x in meta["metadata"]["resolution"])
                Kk = np.asarray(cam["K"], np.float64).reshape(3, 3)
                pos, quat = np.asarray(cam["positions"], np.float64), np.asarray(cam["quaternions"], np.float64)
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise ValueError(f"kubric_mv {meta_file}: cannot read camera K/positions/quaternions and "
                                 f"metadata.resolution ({type(e).__name__}: {e})") from None
            rgb = io.natural_sorted(list(vd.glob("rgba_*.png")))
            depth = io.natural_sorted(list(vd.glob("depth_*.tiff")))
            if len(depth) != len(rgb) or len(pos) < len(rgb) or len(quat) < len(rgb):
                raise ValueError(f"kubric_mv {vd}: {len(rgb)} rgba frames, {len(depth)} depth tiffs, "
                                 f"{len(pos)} camera positions; need one of each per frame")
            Ks, Es = zip(*[kubric_to_opencv(Kk, pos[t], quat[t], W, H) for t in range(len(rgb))])
            self.rgb.append(rgb)
            self.depth.append(depth)
            self.K.append(np.stack(Ks))
            self.E.append(np.stack(Es))
        counts = {len(r) for r in self.rgb}
        if len(counts) != 1:
            raise ValueError(f"kubric_mv {scene}: views have different frame counts {sorted(counts)}")
        super().__init__(scene, scene.name, counts.pop(), [vd.name for vd in _views(scene)])

    def _read_distance(self, path: Path) -> np.ndarray:
        from PIL import Image

        try:
            with Image.open(path) as im:
                arr = np.asarray(im, dtype=np.float32)
        except OSError as e:
            raise ValueError(f"cannot read kubric depth {path} ({e}); expected a float32 TIFF") from None
        if arr.ndim == 3:
            arr = arr[..., 0]
        return arr

    def read(self, frames: Sequence[int], views: Sequence[int]) -> Clip:
        self._check_index(frames, views)
        per_view = []
        for v in views:
            K = self.K[v][list(frames)]
            per_view.append({
                "images": np.stack([to_unit_float(io.read_rgb(self.rgb[v][t])) for t in frames]),
                "depth": np.stack([ray_distance_to_z(clean_depth(self._read_distance(self.depth[v][t])), K[i])
                                   for i, t in enumerate(frames)]),
                "intrinsic": K, "extrinsic": self.E[v][list(frames)],
            })
        return stack_clip(per_view, self.path)


def open_sequences(path: Path) -> list[SequenceReader]:
    if is_sequence(path):
        return [KubricSequence(path)]
    return [KubricSequence(p) for p in io.natural_sorted([p for p in path.iterdir() if p.is_dir()]) if is_sequence(p)]
