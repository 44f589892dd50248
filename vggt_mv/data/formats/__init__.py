"""Training-data readers: every format converted to one canonical convention (see :mod:`.base`).

``open_source("FORMAT:PATH@W")`` (format and weight optional) returns a :class:`DataSource`; a
path without a format is auto-detected. Formats: ``dump``, ``mvtracker_npz``, ``dexycb``,
``kubric_mv``, ``panoptic``, ``synthetic`` (README "Training data formats" has the table).
"""
from __future__ import annotations

import re

from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from . import dexycb, dump, kubric_mv, mvtracker_npz, panoptic, synthetic
from .base import Clip, SequenceReader

#: detection order (first match wins only if it is the only match)
READERS: dict[str, ModuleType] = {m.FORMAT: m for m in (dump, mvtracker_npz, dexycb, kubric_mv, panoptic)}
FORMATS = (*READERS, synthetic.FORMAT)
LAYOUTS = {
    "dump": "images/time_XX/viewN.png + depths|intrs|extrs/time_XX/viewN.npy",
    "mvtracker_npz": "a .npz (or folder of them) with rgbs, depths, intrs, extrs",
    "dexycb": "<seq>/view_XX/{rgb,depth}/ + view_XX/intrinsics_extrinsics.npz",
    "kubric_mv": "<scene>/view_K/{rgba_XXXXX.png, depth_XXXXX.tiff, metadata.json}",
    "panoptic": "<seq>/ims/<cam>/*.jpg + train_meta.json / test_meta.json",
}


@dataclass
class DataSource:
    """One ``--data`` spec: its format, path, mixture weight and sequences (none for synthetic)."""

    spec: str
    format: str
    path: Path | None
    weight: float = 1.0
    sequences: list[SequenceReader] = field(default_factory=list)

    @property
    def procedural(self) -> bool:
        return self.format == synthetic.FORMAT


def parse_spec(spec: str, option: str = "--data") -> tuple[str | None, str, float]:
    """``"FORMAT:PATH@W"`` -> (format or None, path, weight); ``"synthetic"`` / ``"synthetic@2"`` too.
    ``option`` names the command-line option in errors."""
    text, weight = spec.strip(), 1.0
    head, at, tail = text.rpartition("@")
    if at:
        try:
            weight = float(tail)
        except ValueError:
            head = ""  # an '@' inside the path
        else:
            text = head
            if not weight > 0 or weight != weight or weight == float("inf"):
                raise ValueError(f"{option} {spec}: the weight after @ must be a positive number, got {tail!r}")
    fmt, colon, rest = text.partition(":")
    if colon and fmt in FORMATS:
        return fmt, rest, weight
    if text in FORMATS:
        return text, "", weight
    if colon and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]+", fmt) and not Path(text).expanduser().exists():
        raise ValueError(f"{option} {spec}: unknown format {fmt!r}; use one of {', '.join(sorted(FORMATS))} "
                         "(FORMAT:PATH), or just PATH to detect it")
    return None, text, weight


def detect_format(path: Path, option: str = "--data") -> str:
    """The one format whose layout ``path`` has; ValueError naming the path otherwise."""
    if not path.exists():
        raise FileNotFoundError(f"{option} {path}: no such file or folder; check the path")
    hits = [name for name, mod in READERS.items() if mod.detect(path)]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        layouts = "; ".join(f"{k}: {v}" for k, v in LAYOUTS.items())
        raise ValueError(f"{option} {path}: no known training-data layout ({layouts}); give FORMAT:PATH if it is one")
    raise ValueError(f"{option} {path}: matches several layouts ({', '.join(hits)}); write FORMAT:PATH to choose")


def open_source(spec: str, option: str = "--data") -> DataSource:
    """Parse ``spec``, detect or check its format and list its sequences (no pixel decoded).
    ``option`` (``--data`` / ``--val-data``) names the command-line option in errors."""
    fmt, path_text, weight = parse_spec(spec, option)
    if fmt == synthetic.FORMAT:
        if path_text:
            raise ValueError(f"{option} {spec}: synthetic takes no path (write 'synthetic' or 'synthetic@W')")
        return DataSource(spec, fmt, None, weight)
    if not path_text:
        raise ValueError(f"{option} {spec}: no path; write FORMAT:PATH or PATH")
    path = Path(path_text).expanduser()
    if fmt is None:
        fmt = detect_format(path, option)
    elif not path.exists():
        raise FileNotFoundError(f"{option} {spec}: {path} does not exist; check the path")
    seqs = READERS[fmt].open_sequences(path)
    if not seqs:
        raise ValueError(f"{option} {spec}: {path} does not have the {fmt} layout ({LAYOUTS[fmt]})")
    return DataSource(spec, fmt, path, weight, seqs)


__all__ = ["Clip", "DataSource", "FORMATS", "SequenceReader", "detect_format", "open_source", "parse_spec"]
