"""Save / load a ``Reconstruction`` as one output folder, written atomically.

Layout::

    arrays/NAME.npy      one memory-mappable .npy per array (+ ``gt__<key>.npy`` ground truth); view
                         names in the manifest. Format version 1 held them in ``reconstruction.npz``
                         instead (still read).
    points/t000.ply ...  per-timestep fused coloured point cloud
    scene.glb            per-timestep point clouds + camera frustums
    cameras.json         per (t, v) extrinsic, camera_to_world, intrinsic, size, view name
    colmap/              cameras.txt, images.txt, points3D.txt (+ images/)
    manifest.json        meta (run manifest), export options, array shapes, file list
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Sequence

import numpy as np

from vggt_mv.export.cameras import write_cameras_json
from vggt_mv.export.colmap import write_colmap_text
from vggt_mv.export.glb import build_scene, write_glb
from vggt_mv.export.output import RESULT_FORMAT, is_result_dir, output_dir
from vggt_mv.export.ply import write_ply

if TYPE_CHECKING:
    from vggt_mv.inference.reconstruction import Reconstruction

__all__ = ["save_reconstruction", "write_reconstruction", "read_reconstruction", "has_result_arrays", "json_safe",
           "FORMAT_NAME", "FORMAT_VERSION", "ARRAYS_DIR"]

FORMAT_NAME = RESULT_FORMAT
#: 2: arrays as ``arrays/NAME.npy`` (memory-mapped when stitched and when loaded); 1: ``reconstruction.npz``
FORMAT_VERSION = 2
ARRAYS_DIR = "arrays"
_GT_PREFIX = "gt__"
_REQUIRED = ("images", "depth", "depth_conf", "world_points", "world_points_conf", "extrinsic", "intrinsic")


def json_safe(obj: Any) -> Any:
    """Recursively convert numpy scalars/arrays, paths and tuples to JSON-native values."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return repr(obj)


def _subsample(n: int, max_points: int | None, seed: int = 0) -> np.ndarray:
    """Sorted random subset of ``range(n)`` of size ``min(n, max_points)``."""
    if max_points is None or n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def save_reconstruction(
    rec: "Reconstruction",
    out_dir: str | os.PathLike,
    *,
    overwrite: bool = True,
    inputs: Sequence[str | os.PathLike | None] = (),
    **options: Any,
) -> Path:
    """Write ``rec`` to ``out_dir`` atomically (temp sibling folder + ``os.replace``); ``options`` are
    :func:`write_reconstruction`'s (source, confidence filters, ply / glb / colmap switches).

    Point exports (PLY / GLB) use ``source`` and the confidence filters of
    ``Reconstruction.points``; ``max_points_per_timestep`` randomly subsamples (seeded).
    COLMAP ``points3D.txt`` holds up to ``colmap_max_points`` static points above the
    ``colmap_conf_percentile`` confidence percentile. ``rec.meta`` is stored as JSON in
    ``manifest.json`` (tuples become lists, numpy values Python values, other objects their
    ``repr``). ``out_dir`` follows the output rule (``vggt_mv.export.output``): written when new
    or empty, replaced as a whole only when it holds a previous result (and ``overwrite``), never
    when it is the current directory or an input / an ancestor of ``inputs``. Returns the path.
    """
    out_dir = Path(out_dir)
    if not overwrite and out_dir.exists() and not (out_dir.is_dir() and not any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir} exists (overwrite=False)")
    with output_dir(out_dir, inputs=inputs, is_ours=is_result_dir) as tmp:
        write_reconstruction(rec, tmp, **options)
    return out_dir


class _Lazy:
    """A read-only sequence whose item ``i`` is ``make(i)``, computed when asked for."""

    def __init__(self, make, length: int):
        self.make, self.length = make, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        if not -self.length <= i < self.length:
            raise IndexError(i)
        return self.make(i % self.length)

    def __iter__(self):
        return (self.make(i) for i in range(self.length))


def _static_points(rec: "Reconstruction", source: str, percentile: float | None, threshold: float | None,
                   max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """The seeded ``_subsample`` of all confident static points (in (t, v, y, x) order), gathered a
    timestep at a time, so the sequence's full point set is never built."""
    def keep(t: int) -> np.ndarray:
        return rec._select_timestep(t, None, source, percentile, threshold, "static")

    counts = [int(keep(t).sum()) for t in range(rec.num_timesteps)]
    idx = _subsample(sum(counts), max_points)
    xyz, rgb, offset = [], [], 0
    for t, n in enumerate(counts):
        local = idx[(idx >= offset) & (idx < offset + n)] - offset
        if len(local):
            p, c = rec.gather(keep(t), source, "image", t=t)
            xyz.append(p[local])
            rgb.append(c[local])
        offset += n
    if not xyz:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)
    return np.concatenate(xyz), np.concatenate(rgb)


def _backing_file(array: np.ndarray) -> Path | None:
    """The file a memory-mapped array (or a view of one) lives in, else None."""
    a = array
    while a is not None:
        if isinstance(a, np.memmap) and a.filename:
            return Path(a.filename).resolve()
        a = a.base if isinstance(a.base, np.ndarray) else None
    return None


def _write_array(path: Path, array: np.ndarray) -> None:
    """``array`` as ``path`` (.npy); an array already memory-mapped there (stitched in place) is flushed."""
    if _backing_file(array) == path.resolve() and array.flags.c_contiguous:
        base = array
        while not isinstance(base, np.memmap):
            base = base.base
        base.flush()
        return
    np.save(path, np.ascontiguousarray(array))


def write_reconstruction(
    rec: "Reconstruction",
    tmp: Path,
    *,
    source: Literal["depth", "points"] = "depth",
    conf_percentile: float | None = None,
    conf_threshold: float | None = None,
    max_points_per_timestep: int | None = None,
    color_by: Literal["image", "mask"] = "image",
    ply: bool = True,
    glb: bool = True,
    colmap: bool = True,
    colmap_images: bool = True,
    colmap_max_points: int = 100_000,
    colmap_conf_percentile: float = 50.0,
) -> None:
    """Write every file of the result into ``tmp`` (a folder being written, e.g. ``output_dir``'s temp
    folder; see :func:`save_reconstruction` for the options). Arrays already memory-mapped at
    ``tmp/arrays/NAME.npy`` (a stitched result) are kept in place; exports read one timestep at a time."""
    tmp = Path(tmp)
    height, width = rec.image_size
    options = dict(source=source, conf_percentile=conf_percentile, conf_threshold=conf_threshold,
                   max_points_per_timestep=max_points_per_timestep, color_by=color_by,
                   colmap_max_points=colmap_max_points, colmap_conf_percentile=colmap_conf_percentile)
    arrays = {name: getattr(rec, name) for name in
              ("images", "depth", "depth_conf", "world_points", "world_points_conf", "extrinsic", "intrinsic")}
    if rec.dynamic_mask is not None:
        arrays["dynamic_mask"] = rec.dynamic_mask
    for name in TRACK_FIELDS:  # optional point tracks (query points)
        if getattr(rec, name, None) is not None:
            arrays[name] = getattr(rec, name)
    gt_extra: dict[str, Any] = {}
    for key, value in (rec.gt or {}).items():
        if isinstance(value, np.ndarray) and value.dtype != object:
            arrays[_GT_PREFIX + key] = value
        else:
            gt_extra[key] = json_safe(value)
    (tmp / ARRAYS_DIR).mkdir(exist_ok=True)
    for name, value in arrays.items():
        _write_array(tmp / ARRAYS_DIR / f"{name}.npy", value)

    def cloud(t: int) -> tuple[np.ndarray, np.ndarray]:
        xyz, rgb = rec.points(t, None, source, conf_percentile, conf_threshold, color_by)
        idx = _subsample(len(xyz), max_points_per_timestep, seed=t)
        return xyz[idx], rgb[idx]

    clouds = _Lazy(cloud, rec.num_timesteps)  # recomputed per use: the sequence's points are never all held
    files = [f"{ARRAYS_DIR}/{name}.npy" for name in arrays]
    if ply:
        for t, (xyz, rgb) in enumerate(clouds):
            write_ply(tmp / "points" / f"t{t:03d}.ply", xyz, rgb)
            files.append(f"points/t{t:03d}.ply")
    if glb:
        scene = build_scene(clouds, rec.extrinsic, rec.intrinsic, width, height, 0.05 * rec.scene_scale())
        write_glb(tmp / "scene.glb", scene)
        files.append("scene.glb")
    write_cameras_json(tmp / "cameras.json", extrinsic=rec.extrinsic, intrinsic=rec.intrinsic,
                       width=width, height=height, view_names=rec.view_names)
    files.append("cameras.json")
    if colmap:
        xyz, rgb = _static_points(rec, source, colmap_conf_percentile, conf_threshold, colmap_max_points)
        write_colmap_text(tmp / "colmap", rec.extrinsic, rec.intrinsic, width, height, rec.view_names,
                          xyz, rgb, rec.images if colmap_images else None)
        files += ["colmap/cameras.txt", "colmap/images.txt", "colmap/points3D.txt"]
        if colmap_images:
            files.append("colmap/images/")
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "num_timesteps": rec.num_timesteps, "num_views": rec.num_views, "height": height, "width": width,
        "view_names": list(rec.view_names),
        "arrays": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in arrays.items()},
        "gt_keys": sorted(k for k in (rec.gt or {}) if k not in gt_extra),
        "gt_extra": gt_extra if rec.gt is not None else None,
        "has_gt": rec.gt is not None,
        "export": options,
        "files": files + ["manifest.json"],
        "meta": json_safe(rec.meta),
    }
    with open(tmp / "manifest.json", "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=1)


#: optional arrays of point tracks, saved when present
TRACK_FIELDS = ("tracks", "track_vis", "track_conf", "query_points")


def has_result_arrays(folder: str | os.PathLike) -> bool:
    """True when ``folder`` holds a result's arrays (format 2 ``arrays/depth.npy`` or format 1 npz)."""
    folder = Path(folder)
    return (folder / ARRAYS_DIR / "depth.npy").is_file() or (folder / "reconstruction.npz").is_file()


def _read_npy_folder(arrays_dir: Path) -> dict[str, np.ndarray]:
    """Format 2: every ``arrays/NAME.npy`` memory-mapped copy-on-write (edits stay in memory)."""
    out = {}
    for f in sorted(arrays_dir.glob("*.npy")):
        try:
            out[f.stem] = np.load(f, mmap_mode="c", allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise ValueError(f"{f} cannot be read ({type(e).__name__}: {e}); the result is incomplete or corrupt: "
                             "reconstruct it again") from None
    return out


def read_reconstruction(path: str | os.PathLike) -> dict[str, Any]:
    """Read an output folder written by ``save_reconstruction`` (format 2: ``arrays/*.npy``, memory-mapped;
    format 1: its ``reconstruction.npz``, also accepted as ``path``): the keyword arguments of
    ``Reconstruction(...)`` (``Reconstruction.load`` builds it)."""
    path = Path(path)
    folder = path.parent if path.suffix == ".npz" else path
    npz_path = path if path.suffix == ".npz" else path / "reconstruction.npz"
    arrays_dir = folder / ARRAYS_DIR
    if not npz_path.is_file() and not arrays_dir.is_dir():
        raise FileNotFoundError(f"no {ARRAYS_DIR}/ (or reconstruction.npz) in {folder}")
    manifest: dict[str, Any] = {}
    if (folder / "manifest.json").is_file():
        try:
            with open(folder / "manifest.json", encoding="utf-8") as handle:
                manifest = json.load(handle)
        except ValueError as e:
            raise ValueError(f"{folder / 'manifest.json'} is not valid JSON ({e}); reconstruct the result again") from None
        if manifest.get("format") != FORMAT_NAME or manifest.get("format_version", 0) > FORMAT_VERSION:
            raise ValueError(f"{folder}: unsupported format {manifest.get('format')!r} "
                             f"v{manifest.get('format_version')}")
    if arrays_dir.is_dir() and not (path.suffix == ".npz" or manifest.get("format_version", 2) < 2):
        arrays = _read_npy_folder(arrays_dir)
        source = arrays_dir
    else:
        source = npz_path
        try:
            with np.load(npz_path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise ValueError(f"{npz_path} cannot be read ({type(e).__name__}: {e}); the result is incomplete or "
                             "corrupt: reconstruct it again") from None
    missing = [k for k in _REQUIRED if k not in arrays]
    if missing:
        raise ValueError(f"{source} lacks {', '.join(missing)}; it is not a complete vggt-mv result")
    gt = {k[len(_GT_PREFIX):]: v for k, v in arrays.items() if k.startswith(_GT_PREFIX)}
    gt.update(manifest.get("gt_extra") or {})
    has_gt = manifest.get("has_gt", bool(gt))
    view_names = [str(n) for n in arrays["view_names"]] if "view_names" in arrays else manifest.get("view_names")
    return dict(
        images=arrays["images"], depth=arrays["depth"], depth_conf=arrays["depth_conf"],
        world_points=arrays["world_points"], world_points_conf=arrays["world_points_conf"],
        extrinsic=arrays["extrinsic"], intrinsic=arrays["intrinsic"],
        dynamic_mask=arrays.get("dynamic_mask"), view_names=view_names,
        meta=manifest.get("meta", {}), gt=gt if has_gt else None,
        **{name: arrays.get(name) for name in TRACK_FIELDS},  # absent in older results
    )
