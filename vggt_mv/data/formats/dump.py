"""``dump``: the time-major layout researchers' preprocessing scripts write (:mod:`vggt_mv.data.io`)::

    root/images/time_XX/viewN.png      RGB (or time_XX/ directly under root)
    root/depths/time_XX/viewN.npy      float32 [H,W] z-depth in metres, 0 = invalid
    root/intrs/time_XX/viewN.npy       [3,3] pixels, integer coordinates = pixel centres
    root/extrs/time_XX/viewN.npy       [3,4] (or [4,4]) world→camera, OpenCV axes
    root/masks/view_N/NNN.png          binary dynamic masks (0/255), or SegAnyMo's
    root/SegAnyMo/sam2/mask_frames/view_N/NNN.png

Already canonical: nothing is converted except masks (binary -> P(dynamic) in {0,1}). A folder
whose subfolders are dumps is one source of several sequences.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .. import io
from .base import Clip, SequenceReader, clean_depth, stack_clip, to_unit_float

FORMAT = "dump"
MASK_DIRS = ("masks", "SegAnyMo/sam2/mask_frames")


def is_sequence(path: Path) -> bool:
    """True if ``path`` holds a time-major dump."""
    return path.is_dir() and io.dump_image_root(path) is not None


def detect(path: Path) -> bool:
    """A dump, or a folder of dumps."""
    return is_sequence(path) or (path.is_dir() and any(is_sequence(p) for p in _subdirs(path)))


def _subdirs(path: Path) -> list[Path]:
    return io.natural_sorted([p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")])


class DumpSequence(SequenceReader):
    format = FORMAT

    def __init__(self, root: Path) -> None:
        img_root = io.dump_image_root(root)
        if img_root is None:
            raise ValueError(f"dump {root}: no time_XX/ folders (expected images/time_00/view0.png ...)")
        tdirs = io.dump_time_dirs(img_root)
        first = io.dump_view_files(tdirs[0])
        if not first:
            raise ValueError(f"dump {tdirs[0]}: holds no viewN.png images; expected time_XX/view0.png ...")
        names = io.natural_sorted(list(first))
        self.frames: list[dict[str, Path]] = []
        for td in tdirs:
            files = io.dump_view_files(td)
            missing = [n for n in names if n not in files]
            if missing:
                raise ValueError(f"dump {td}: lacks {missing[0]}.png that {tdirs[0].name} has; every time_XX "
                                 "folder needs the same views")
            self.frames.append(files)
        super().__init__(root, root.name, len(tdirs), names)
        base = img_root.parent if img_root.name == "images" else img_root
        self.gt: dict[str, Path] = {sub: base / sub for sub in ("depths", "intrs", "extrs") if (base / sub).is_dir()}
        self.has_depth = "depths" in self.gt
        self.has_cameras = "intrs" in self.gt and "extrs" in self.gt
        self.masks: dict[str, list[Path]] = {}
        for sub in MASK_DIRS:
            dirs = {n: base / sub / f"view_{io.view_index(n)}" for n in names}
            if not all(d.is_dir() for d in dirs.values()):
                continue
            for n, d in dirs.items():
                files = io.list_images(d, what="mask folder")
                if len(files) != self.num_frames:
                    raise ValueError(f"dump mask folder {d} has {len(files)} masks for {self.num_frames} "
                                     "timesteps; provide one mask per timestep")
                self.masks[n] = files
            break
        self.has_masks = bool(self.masks)

    def _gt_file(self, sub: str, t: int, name: str) -> Path:
        f = self.gt[sub] / self.frames[t][name].parent.name / f"{name}.npy"
        if not f.is_file():
            raise ValueError(f"dump ground truth file {f} is missing; every time_XX folder of "
                             f"{self.gt[sub]} needs {name}.npy (or remove that folder)")
        return f

    def read(self, frames: Sequence[int], views: Sequence[int]) -> Clip:
        self._check_index(frames, views)
        per_view = []
        for v in views:
            n = self.view_names[v]
            d: dict = {"images": np.stack([to_unit_float(io.read_rgb(self.frames[t][n])) for t in frames])}
            if self.has_depth:
                d["depth"] = np.stack([clean_depth(np.load(self._gt_file("depths", t, n))) for t in frames])
            if self.has_cameras:
                d["intrinsic"] = np.stack([np.load(self._gt_file("intrs", t, n)).astype(np.float64)[:3, :3]
                                           for t in frames])
                d["extrinsic"] = np.stack([np.load(self._gt_file("extrs", t, n)).astype(np.float64)[:3, :4]
                                           for t in frames])
            if self.has_masks:
                d["dynamic_mask"] = np.stack([io.read_mask(self.masks[n][t]).astype(np.float32) for t in frames])
            hw = d["images"].shape[1:3]
            for key in ("depth", "dynamic_mask"):
                if key in d and d[key].shape[1:] != hw:
                    raise ValueError(f"dump {self.path}: {key} of {n} is {d[key].shape[1:]} but its image is {hw}")
            per_view.append(d)
        return stack_clip(per_view, self.path)


def open_sequences(path: Path) -> list[SequenceReader]:
    """The dump at ``path``, or every dump among its subfolders."""
    if is_sequence(path):
        return [DumpSequence(path)]
    return [DumpSequence(p) for p in _subdirs(path) if is_sequence(p)]
