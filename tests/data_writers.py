"""Writers of procedural scenes in each training-data format's own layout, units and axes.

Test helpers, written from the formats' sources (cited in vggt_mv/data/formats/*), independently
of the readers: the kubric writer builds kubric's camera (position, quaternion, normalised K, ray
distance) and checks it with kubric's ``project_point`` formula, never with the reader's inverse.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from vggt_mv.data.synthetic import SyntheticScene


def _png(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)


def write_mvtracker_npz(scene: SyntheticScene, path: Path, compressed: bool = False) -> Path:
    """View-major arrays: rgbs [V,T,3,H,W] uint8, depths [V,T,1,H,W], intrs [V,T,3,3], extrs [V,T,3,4]."""
    save = np.savez_compressed if compressed else np.savez
    save(path, rgbs=scene.images.transpose(1, 0, 4, 2, 3), depths=scene.depth.swapaxes(0, 1)[:, :, None],
         intrs=scene.intrinsic.swapaxes(0, 1), extrs=scene.extrinsic.swapaxes(0, 1),
         masks=(scene.dynamic_mask.swapaxes(0, 1)[:, :, None] * 255).astype(np.uint8))
    return path


def write_dexycb(scene: SyntheticScene, seq: Path) -> Path:
    """view_XX/rgb/NNNNNN.jpg->png, depth/NNNNNN.png uint16 mm, intrinsics_extrinsics.npz (4x4 both)."""
    T, V = scene.depth.shape[:2]
    for v in range(V):
        vd = seq / f"view_{v:02d}"
        K4, E4 = np.eye(4), np.eye(4)
        K4[:3, :3], E4[:3, :4] = scene.intrinsic[0, v], scene.extrinsic[0, v]
        (vd / "depth").mkdir(parents=True, exist_ok=True)
        np.savez(vd / "intrinsics_extrinsics.npz", intrinsics=K4, extrinsics=E4)
        for t in range(T):
            _png(vd / "rgb" / f"{t:06d}.png", scene.images[t, v])
            mm = np.round(scene.depth[t, v].astype(np.float64) * 1000.0).astype(np.uint16)
            cv2.imwrite(str(vd / "depth" / f"{t:06d}.png"), mm)
            _png(vd / "mask" / f"{t:06d}.png", scene.dynamic_mask[t, v].astype(np.uint8) * 255)
    return seq


def _quat_wxyz(R: np.ndarray) -> np.ndarray:
    """Rotation matrix -> unit quaternion (w, x, y, z), w >= 0 (Shepperd)."""
    t = np.trace(R)
    if t > 0:
        s = math.sqrt(t + 1.0) * 2
        q = [0.25 * s, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s]
    elif R[0, 0] > R[1, 1] and R[0, 0] > R[2, 2]:
        s = math.sqrt(1.0 + R[0, 0] - R[1, 1] - R[2, 2]) * 2
        q = [(R[2, 1] - R[1, 2]) / s, 0.25 * s, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s]
    elif R[1, 1] > R[2, 2]:
        s = math.sqrt(1.0 + R[1, 1] - R[0, 0] - R[2, 2]) * 2
        q = [(R[0, 2] - R[2, 0]) / s, (R[0, 1] + R[1, 0]) / s, 0.25 * s, (R[1, 2] + R[2, 1]) / s]
    else:
        s = math.sqrt(1.0 + R[2, 2] - R[0, 0] - R[1, 1]) * 2
        q = [(R[1, 0] - R[0, 1]) / s, (R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, 0.25 * s]
    q = np.array(q) / np.linalg.norm(q)
    return q if q[0] >= 0 else -q


def _kubric_rotation(q: np.ndarray) -> np.ndarray:
    w, x, y, z = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def write_kubric_mv(scene: SyntheticScene, root: Path, sensor_width: float = 36.0) -> Path:
    """view_K/rgba_XXXXX.png, depth_XXXXX.tiff (ray distance), metadata.json with kubric's camera.

    Kubric (google-research/kubric kubric/core/cameras.py): the camera looks down -z, +y up;
    ``intrinsics = [[f/sw, 0, -0.5], [0, -f/sh, -0.5], [0, 0, -1]]`` with ``sh = sw / W * H``;
    ``project_point(X) = (K @ inv(matrix_world) @ X) / z`` in [0,1] image coordinates;
    ``z_to_depth``: distance = z * sqrt(1 + r^2 / f^2), r on the sensor at pixel centres.
    """
    T, V, H, W = scene.depth.shape
    for v in range(V):
        vd = root / f"view_{v}"
        vd.mkdir(parents=True, exist_ok=True)
        K, E = scene.intrinsic[0, v].astype(np.float64), scene.extrinsic[0, v].astype(np.float64)
        assert abs(K[0, 0] - K[1, 1]) < 1e-6 and abs(K[0, 2] - (W - 1) / 2) < 1e-6, "kubric: square pixels, centred"
        focal = K[0, 0] / W * sensor_width                   # mm, so that f/sw * W = fx
        sensor_height = sensor_width / W * H
        K_kub = np.array([[focal / sensor_width, 0, -0.5], [0, -focal / sensor_height, -0.5], [0, 0, -1]])
        R, tvec = E[:, :3], E[:, 3]
        C = -R.T @ tvec
        # camera axes in the world: right = x_cv, up = -y_cv, backward = -z_cv (looks down -z)
        R_c2w = np.stack([R[0], -R[1], -R[2]], axis=1)
        q = _quat_wxyz(R_c2w)
        matrix_world = np.eye(4)
        matrix_world[:3, :3], matrix_world[:3, 3] = _kubric_rotation(q), C
        # kubric's project_point on the scene's own points must give the scene's pixels
        Z = scene.depth[0, v].astype(np.float64)
        vv, uu = np.nonzero(Z > 0)
        sel = slice(None, None, 97)
        zc = Z[vv[sel], uu[sel]]
        cam = np.stack([(uu[sel] - K[0, 2]) / K[0, 0] * zc, (vv[sel] - K[1, 2]) / K[1, 1] * zc, zc], 1)
        X = (cam - tvec) @ R                                  # world points, R^T (cam - t)
        proj = (np.concatenate([K_kub, np.zeros((3, 1))], 1) @ np.linalg.inv(matrix_world)
                @ np.concatenate([X, np.ones((len(X), 1))], 1).T)
        img = proj[:2] / proj[2]                              # [0,1] image coordinates
        assert np.allclose(img[0] * W - 0.5, uu[sel], atol=1e-5) and np.allclose(img[1] * H - 0.5, vv[sel], atol=1e-5)
        # kubric's z_to_depth: distance along the ray from the z-depth
        px = (np.arange(-W / 2, W / 2) + 0.5) / W * sensor_width
        py = (np.arange(-H / 2, H / 2) + 0.5) / H * sensor_height
        r2 = np.sum(np.square(np.meshgrid(px, py, indexing="xy")), axis=0)
        scaling = np.sqrt(1 + r2 / focal ** 2)
        for t in range(T):
            rgba = np.concatenate([scene.images[t, v], np.full((H, W, 1), 255, np.uint8)], -1)
            _png(vd / f"rgba_{t:05d}.png", rgba)
            Image.fromarray((scene.depth[t, v].astype(np.float64) * scaling).astype(np.float32), mode="F").save(
                vd / f"depth_{t:05d}.tiff")
        meta = {"camera": {"K": K_kub.tolist(), "focal_length": focal, "sensor_width": sensor_width,
                           "field_of_view": 2 * math.atan2(sensor_width / 2, focal),
                           "positions": [C.tolist()] * T, "quaternions": [q.tolist()] * T},
                "metadata": {"resolution": [W, H], "num_frames": T}}
        (vd / "metadata.json").write_text(json.dumps(meta))
    return root


def write_panoptic(scene: SyntheticScene, seq: Path, test_cams: tuple[int, ...] = (2,)) -> Path:
    """ims/<cam>/NNNNNN.jpg, train_meta.json / test_meta.json (k, 4x4 w2c, fn, cam_id),
    seg/<cam>/NNNNNN.png, dynamic3dgs_depth/depths_XX.npy [T,H,W]."""
    T, V, H, W = scene.depth.shape
    metas = {"train_meta.json": [c for c in range(V) if c not in test_cams], "test_meta.json": list(test_cams)}
    for name, cams in metas.items():
        meta = {"w": W, "h": H, "k": [], "w2c": [], "fn": [], "cam_id": []}
        for t in range(T):
            w2c = [np.vstack([scene.extrinsic[t, c], [0, 0, 0, 1]]).tolist() for c in cams]
            meta["k"].append([scene.intrinsic[t, c].tolist() for c in cams])
            meta["w2c"].append(w2c)
            meta["fn"].append([f"{c}/{t:06d}.jpg" for c in cams])
            meta["cam_id"].append(cams)
        (seq / name).parent.mkdir(parents=True, exist_ok=True)
        (seq / name).write_text(json.dumps(meta))
    for c in range(V):
        for t in range(T):
            (seq / "ims" / str(c)).mkdir(parents=True, exist_ok=True)
            Image.fromarray(scene.images[t, c]).save(seq / "ims" / str(c) / f"{t:06d}.jpg", quality=100, subsampling=0)
            _png(seq / "seg" / str(c) / f"{t:06d}.png", scene.dynamic_mask[t, c].astype(np.uint8) * 255)
        (seq / "dynamic3dgs_depth").mkdir(exist_ok=True)
        np.save(seq / "dynamic3dgs_depth" / f"depths_{c:02d}.npy", scene.depth[:, c])
    return seq
