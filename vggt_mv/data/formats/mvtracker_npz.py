"""``mvtracker_npz``: one ``.npz`` per sequence, view-major, as MVTracker's datasets hand scenes to
its model (ethz-vlg/mvtracker, ``mvtracker/datasets/*_multiview_dataset.py``: ``rgbs [V,T,3,H,W]``,
``depths [V,T,1,H,W]``, ``intrs [V,T,3,3]``, ``extrs [V,T,3,4]`` world→camera)::

    rgbs    [V,T,3,H,W] uint8
    depths  [V,T,1,H,W] float z-depth in metres, 0 (or non-finite) = invalid
    intrs   [V,T,3,3]   pixels (MVTracker projects with ``intrs @ extrs @ X`` at pixel centres)
    extrs   [V,T,3,4]   world→camera, OpenCV axes
    masks   [V,T,1,H,W] optional, P(dynamic) (uint8 0/255 or float in [0,1])

Converted: axes reordered to time-major, uint8 -> [0,1]. Lazy: members stored uncompressed
(``np.savez``) are memory-mapped, so a clip reads only its frames; compressed members
(``np.savez_compressed``) must be inflated whole on every read (logged once) — re-save them
with ``np.savez`` for training. A folder of ``.npz`` files is one source of several sequences.
"""
from __future__ import annotations

import logging
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import io
from .base import Clip, SequenceReader, clean_depth

FORMAT = "mvtracker_npz"
REQUIRED = ("rgbs", "depths", "intrs", "extrs")
log = logging.getLogger("vggt_mv.data")
_WARNED: set[str] = set()


def _npz_files(path: Path) -> list[Path]:
    if path.is_file() and path.suffix == ".npz":
        return [path]
    if path.is_dir():
        return io.natural_sorted([p for p in path.iterdir() if p.is_file() and p.suffix == ".npz"])
    return []


def _members(path: Path) -> set[str]:
    try:
        with zipfile.ZipFile(path) as z:
            return {n[:-4] for n in z.namelist() if n.endswith(".npy")}
    except (zipfile.BadZipFile, OSError):
        return set()


def detect(path: Path) -> bool:
    files = _npz_files(path)
    return bool(files) and set(REQUIRED) <= _members(files[0])


def _open_member(path: Path, name: str) -> np.ndarray:
    """``name`` of the npz at ``path``: a read-only memmap if stored uncompressed, else inflated."""
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(name + ".npy")
        if info.compress_type == zipfile.ZIP_STORED:
            with open(path, "rb") as f:
                f.seek(info.header_offset)
                local = f.read(30)
                n_name, n_extra = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
                start = info.header_offset + 30 + n_name + n_extra
                f.seek(start)
                version = np.lib.format.read_magic(f)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, fortran, dtype = read_header(f)
                offset = f.tell()
            if dtype.hasobject:
                raise ValueError(f"{path}: member {name} holds Python objects; store plain arrays")
            return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape,
                             order="F" if fortran else "C")
    if str(path) not in _WARNED:
        _WARNED.add(str(path))
        log.warning("%s is compressed: each clip inflates whole arrays; re-save it with np.savez for lazy reads",
                    path)
    with np.load(path, allow_pickle=False) as z:
        return z[name]


class NpzSequence(SequenceReader):
    format = FORMAT

    def __init__(self, path: Path) -> None:
        members = _members(path)
        missing = [k for k in REQUIRED if k not in members]
        if missing:
            raise ValueError(f"mvtracker_npz {path}: lacks {missing} (needs rgbs [V,T,3,H,W], depths [V,T,1,H,W], "
                             "intrs [V,T,3,3], extrs [V,T,3,4])")
        self.arrays = {k: _open_member(path, k) for k in (*REQUIRED, *(["masks"] if "masks" in members else []))}
        rgbs = self.arrays["rgbs"]
        if rgbs.ndim != 5 or rgbs.shape[2] != 3:
            raise ValueError(f"mvtracker_npz {path}: rgbs has shape {rgbs.shape}, expected [V,T,3,H,W]")
        V, T, _, H, W = rgbs.shape
        want = {"depths": (V, T, 1, H, W), "intrs": (V, T, 3, 3), "extrs": (V, T, 3, 4), "masks": (V, T, 1, H, W)}
        for k, a in self.arrays.items():
            if k != "rgbs" and tuple(a.shape) != want[k] and not (k == "extrs" and tuple(a.shape) == (V, T, 4, 4)):
                raise ValueError(f"mvtracker_npz {path}: {k} has shape {tuple(a.shape)}, expected {want[k]} "
                                 f"for rgbs {tuple(rgbs.shape)}")
        super().__init__(path, path.stem, T, [f"view{v}" for v in range(V)])
        self.has_masks = "masks" in self.arrays

    def read(self, frames: Sequence[int], views: Sequence[int]) -> Clip:
        self._check_index(frames, views)
        t_idx = np.asarray(frames)
        # one view at a time, frames by fancy index: a memmap reads only those frames
        sel = lambda a: np.stack([np.asarray(a[v, t_idx]) for v in views], axis=1)  # noqa: E731  [t,v,...]
        rgb = sel(self.arrays["rgbs"])
        images = (rgb.astype(np.float32) / (255.0 if rgb.dtype == np.uint8 else 1.0)).transpose(0, 1, 3, 4, 2)
        clip = Clip(images=np.ascontiguousarray(images), depth=clean_depth(sel(self.arrays["depths"])[:, :, 0]),
                    intrinsic=sel(self.arrays["intrs"]).astype(np.float64),
                    extrinsic=sel(self.arrays["extrs"]).astype(np.float64)[..., :3, :4])
        if self.has_masks:
            m = sel(self.arrays["masks"])[:, :, 0]
            clip.dynamic_mask = (m.astype(np.float32) / 255.0 if m.dtype == np.uint8 else m.astype(np.float32))
        return clip


def open_sequences(path: Path) -> list[SequenceReader]:
    return [NpzSequence(p) for p in _npz_files(path)]
