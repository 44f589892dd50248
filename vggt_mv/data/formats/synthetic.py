"""``synthetic``: today's procedural scenes (:func:`vggt_mv.data.synthetic.render_scene`), already
canonical (OpenCV world→camera, metres, z-depth, pixel-centre K, exact dynamic masks).

``synthetic`` (no path) is an endless source: each clip is a fresh scene whose seed and
randomised config come from the clip's generator, rendered directly at the training size.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

from ..synthetic import SyntheticSceneConfig, render_scene
from .base import Clip, SequenceReader

FORMAT = "synthetic"


def scene_clip(cfg: SyntheticSceneConfig, seed: int, views: Sequence[int] | None = None) -> Clip:
    """Render ``(cfg, seed)`` and return views ``views`` (default all) as a canonical clip."""
    s = render_scene(cfg, seed)
    v = list(range(cfg.V)) if views is None else list(views)
    return Clip(images=s.images[:, v].astype(np.float32) / 255.0, depth=s.depth[:, v].astype(np.float32),
                intrinsic=s.intrinsic[:, v].astype(np.float64), extrinsic=s.extrinsic[:, v].astype(np.float64),
                dynamic_mask=s.dynamic_mask[:, v].astype(np.float32))


class SyntheticSequence(SequenceReader):
    """One seeded procedural scene as a sequence (rendered whole on read: it is generated, not decoded)."""

    format = FORMAT
    has_masks = True

    def __init__(self, seed: int, cfg: SyntheticSceneConfig | None = None) -> None:
        self.cfg = cfg or SyntheticSceneConfig()
        self.seed = int(seed)
        super().__init__(Path(f"synthetic-{seed}"), f"synthetic-{seed}", self.cfg.T,
                         [f"view{v}" for v in range(self.cfg.V)])

    @property
    def key(self) -> str:
        return f"synthetic:{self.seed}"

    def read(self, frames: Sequence[int], views: Sequence[int]) -> Clip:
        self._check_index(frames, views)
        clip = scene_clip(replace(self.cfg, T=max(frames) + 1), self.seed, views)
        f = list(frames)
        return Clip(clip.images[f], clip.depth[f], clip.intrinsic[f], clip.extrinsic[f], clip.dynamic_mask[f])
