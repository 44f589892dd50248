"""``panoptic``: CMU Panoptic sequences as Dynamic3DGaussians prepared them
(JonathonLuiten/Dynamic3DGaussians ``train.py``: ``metadata['k'][t][c]``, ``metadata['w2c'][t][c]``,
``metadata['fn'][t][c]`` -> ``ims/<fn>``, ``seg/<fn as .png>``), with MVTracker's rendered depth
(ethz-vlg/mvtracker ``panoptic_studio_multiview_dataset.py``: ``dynamic3dgs_depth/depths_XX.npy``)::

    <seq>/ims/<cam>/NNNNNN.jpg               RGB
    <seq>/train_meta.json, test_meta.json    {"w", "h", "k": [T][C] 3x3 pixels, "w2c": [T][C] 4x4
                                              world→camera (OpenCV axes), "fn": [T][C] "<cam>/NNNNNN.jpg",
                                              "cam_id": [T][C]}
    <seq>/seg/<cam>/NNNNNN.png               optional foreground (people) segmentation = dynamic mask
    <seq>/dynamic3dgs_depth/depths_XX.npy    optional [T,H,W] z-depth of camera XX (memory-mapped)

Units: ``w2c`` translations and depth are taken as metres and not rescaled (Panoptic Studio's raw
``calibration_*.json`` is in centimetres: divide by 100 before writing ``train_meta.json``).
Converted: ``w2c[:3, :4]``; the cameras of both meta files are the views (ordered by camera id).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import io
from .base import Clip, SequenceReader, clean_depth, stack_clip, to_unit_float

FORMAT = "panoptic"
METAS = ("train_meta.json", "test_meta.json")


def is_sequence(path: Path) -> bool:
    return path.is_dir() and (path / "ims").is_dir() and any((path / m).is_file() for m in METAS)


def detect(path: Path) -> bool:
    return is_sequence(path) or (path.is_dir() and any(is_sequence(p) for p in path.iterdir() if p.is_dir()))


class PanopticSequence(SequenceReader):
    format = FORMAT

    def __init__(self, seq: Path) -> None:
        cams: dict[int, dict[str, list]] = {}
        n_t = None
        for name in METAS:
            f = seq / name
            if not f.is_file():
                continue
            try:
                meta = json.loads(f.read_text())
                k, w2c, fn, ids = meta["k"], meta["w2c"], meta["fn"], meta["cam_id"]
            except (OSError, ValueError, KeyError) as e:
                raise ValueError(f"panoptic {f}: cannot read k / w2c / fn / cam_id ({type(e).__name__}: {e})") from None
            if n_t is not None and len(fn) != n_t:
                raise ValueError(f"panoptic {f}: {len(fn)} timesteps but the other meta file has {n_t}")
            n_t = len(fn)
            for t in range(n_t):
                if not len(k[t]) == len(w2c[t]) == len(fn[t]) == len(ids[t]):
                    raise ValueError(f"panoptic {f}: timestep {t} lists different numbers of k / w2c / fn / cam_id")
                for c, cid in enumerate(ids[t]):
                    entry = cams.setdefault(int(cid), {"k": [], "w2c": [], "fn": []})
                    entry["k"].append(np.asarray(k[t][c], np.float64)[:3, :3])
                    entry["w2c"].append(np.asarray(w2c[t][c], np.float64)[:3, :4])
                    entry["fn"].append(str(fn[t][c]))
        bad = [cid for cid, e in cams.items() if len(e["fn"]) != n_t]
        if bad:
            raise ValueError(f"panoptic {seq}: cameras {bad[:5]} are not listed at every timestep of the meta files")
        self.cam_ids = sorted(cams)
        self.cams = [cams[c] for c in self.cam_ids]
        super().__init__(seq, seq.name, n_t or 0, [str(c) for c in self.cam_ids])
        dd = seq / "dynamic3dgs_depth"
        self.depth_files = [dd / f"depths_{c:02d}.npy" for c in self.cam_ids]
        self.has_depth = all(f.is_file() for f in self.depth_files)
        self._depth: dict[int, np.ndarray] = {}
        self.has_masks = (seq / "seg").is_dir()

    def _depth_of(self, v: int) -> np.ndarray:
        if v not in self._depth:
            d = np.load(self.depth_files[v], mmap_mode="r")
            if d.ndim == 4 and d.shape[-1] == 1:
                d = d[..., 0]
            if d.ndim != 3 or d.shape[0] != self.num_frames:
                raise ValueError(f"panoptic depth {self.depth_files[v]} has shape {d.shape}; expected "
                                 f"[{self.num_frames},H,W]")
            self._depth[v] = d
        return self._depth[v]

    def read(self, frames: Sequence[int], views: Sequence[int]) -> Clip:
        self._check_index(frames, views)
        per_view = []
        for v in views:
            cam = self.cams[v]
            d: dict = {"images": np.stack([to_unit_float(io.read_rgb(self.path / "ims" / cam["fn"][t])) for t in frames]),
                       "intrinsic": np.stack([cam["k"][t] for t in frames]),
                       "extrinsic": np.stack([cam["w2c"][t] for t in frames])}
            if self.has_depth:
                d["depth"] = np.stack([clean_depth(self._depth_of(v)[t]) for t in frames])
            if self.has_masks:
                files = [self.path / "seg" / Path(cam["fn"][t]).with_suffix(".png") for t in frames]
                missing = [f for f in files if not f.is_file()]
                if missing:
                    raise ValueError(f"panoptic mask {missing[0]} is missing; seg/ needs one PNG per image "
                                     "(or remove seg/)")
                d["dynamic_mask"] = np.stack([io.read_mask(f).astype(np.float32) for f in files])
            per_view.append(d)
        return stack_clip(per_view, self.path)


def open_sequences(path: Path) -> list[SequenceReader]:
    if is_sequence(path):
        return [PanopticSequence(path)]
    return [PanopticSequence(p) for p in io.natural_sorted([p for p in path.iterdir() if p.is_dir()]) if is_sequence(p)]
