"""On-the-fly training data: procedural multi-camera dynamic scenes with VGGT-normalised GT.

Every sample is a fresh :func:`vggt_mv.data.synthetic.render_scene` scene drawn from a seeded
``numpy`` generator (the shipped sample's seed 7 and the validation seeds are never drawn).
Ground truth is expressed like VGGT's training targets:

* frame: the reference camera (t=0, v=0) — its extrinsic becomes ``[I | 0]``;
* scale: translations, depths and points are divided by the mean distance of the valid GT points
  (all T*V images) to the reference camera origin, so that mean distance becomes 1.

Shapes per sample (``T, V, H, W``; ``h, w = H/14, W/14``):
``images [T,V,3,H,W]`` float in [0,1], ``depth [T,V,H,W]`` (0 where invalid), ``valid [T,V,H,W]``
bool, ``world_points [T,V,H,W,3]``, ``extrinsic [T,V,3,4]`` (camera-from-reference, OpenCV),
``intrinsic [T,V,3,3]``, ``pose_enc [T,V,9]`` (absT_quaR_FoV), ``dynamic_mask [T,V,H,W]`` float,
``dynamic_mask_patch [T,V,h,w]`` (fraction of dynamic pixels per patch), ``ext_masks [T,V,H,W]``
(the GT mask given as the model's optional external mask, or zeros), ``ext_mask_on [()]`` bool,
``scale [()]`` and ``seed [()]``. :meth:`SyntheticDynamicDataset.batch` stacks them to ``[B,...]``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from vggt_mv.data.synthetic import SyntheticScene, SyntheticSceneConfig, render_scene
from vggt_mv.data.normalize import normalize_arrays, to_homogeneous, unproject_depth  # noqa: F401 (re-exported)

PATCH = 14
SAMPLE_SEED = 7  # assets/sample (scripts/make_sample.py): held out, never used for training
VAL_SEEDS = tuple(range(100, 108))  # fixed validation scenes, never drawn for training
EXCLUDED_SEEDS = frozenset({SAMPLE_SEED, *VAL_SEEDS})
_SEED_LO, _SEED_HI = 1_000, 2**31 - 1


@dataclass
class SceneSampling:
    """Ranges of the per-scene randomisation on top of :class:`SyntheticSceneConfig`."""

    fov_deg: tuple[float, float] = (50.0, 70.0)
    n_moving: tuple[int, int] = (1, 3)        # inclusive
    n_static_boxes: tuple[int, int] = (1, 3)  # inclusive
    fps: tuple[float, float] = (6.0, 14.0)    # speed of motion per timestep
    arc_deg: tuple[float, float] = (40.0, 80.0)  # angle spanned by the camera arc


def normalize_scene(scene: SyntheticScene, patch: int = PATCH) -> dict[str, torch.Tensor]:
    """A rendered scene -> GT tensors in the reference-camera frame at VGGT's scale (module doc)."""
    return normalize_arrays(scene.images.astype(np.float32) / np.float32(255.0), scene.depth, scene.intrinsic,
                            scene.extrinsic, scene.dynamic_mask.astype(np.float32), seed=scene.seed, patch=patch,
                            what=f"scene seed {scene.seed}")


class SyntheticDynamicDataset:
    """Infinite stream of random scenes; reproducible from ``seed`` and resumable via ``state_dict``.

    ``ext_mask_prob``: probability that a sample carries its GT dynamic mask as the model's
    external mask (teaches the learnable fusion gain to use user masks); otherwise zeros.
    """

    def __init__(
        self, T: int = 4, V: int = 3, H: int = 126, W: int = 168, seed: int = 0,
        sampling: SceneSampling | None = None, ext_mask_prob: float = 0.0,
        sizes: list[tuple[int, int]] | None = None, max_T: int | None = None,
    ) -> None:
        """``sizes``: ``(H, W)`` choices drawn per batch (default ``[(H, W)]``); ``max_T``: draw T
        per batch uniformly in ``[T, max_T]`` (default: always ``T``)."""
        self.sizes = [tuple(s) for s in (sizes or [(H, W)])]
        for h, w in self.sizes:
            if h % PATCH or w % PATCH or h <= 0 or w <= 0:
                raise ValueError(f"training size {h}x{w} must be positive multiples of {PATCH}")
        if not 0.0 <= ext_mask_prob <= 1.0:
            raise ValueError(f"ext_mask_prob must be in [0, 1], got {ext_mask_prob}")
        self.T_range = (T, max(T, max_T or T))
        self.base = SyntheticSceneConfig(T=T, V=V, H=self.sizes[0][0], W=self.sizes[0][1])
        self.sampling = sampling or SceneSampling()
        self.ext_mask_prob = float(ext_mask_prob)
        self.rng = np.random.default_rng(seed)

    # ------------------------------------------------------------------ sampling
    def next_seed(self) -> int:
        """Next scene seed from the generator, never one of :data:`EXCLUDED_SEEDS`."""
        while True:
            s = int(self.rng.integers(_SEED_LO, _SEED_HI))
            if s not in EXCLUDED_SEEDS:
                return s

    def scene_config(self) -> SyntheticSceneConfig:
        """A randomised copy of the base config (drawn from the generator)."""
        sp = self.sampling
        return replace(
            self.base,
            fov_deg=float(self.rng.uniform(*sp.fov_deg)),
            n_moving=int(self.rng.integers(sp.n_moving[0], sp.n_moving[1] + 1)),
            n_static_boxes=int(self.rng.integers(sp.n_static_boxes[0], sp.n_static_boxes[1] + 1)),
            fps=float(self.rng.uniform(*sp.fps)),
            arc_deg=float(self.rng.uniform(*sp.arc_deg)),
        )

    def sample(self) -> dict[str, torch.Tensor]:
        """One normalised scene (shapes in the module doc)."""
        cfg = self.scene_config()
        seed = self.next_seed()
        use_ext = bool(self.rng.uniform() < self.ext_mask_prob)
        out = normalize_scene(render_scene(cfg, seed))
        out["ext_masks"] = out["dynamic_mask"].clone() if use_ext else torch.zeros_like(out["dynamic_mask"])
        out["ext_mask_on"] = torch.tensor(use_ext)
        return out

    def batch(self, batch_size: int = 1) -> dict[str, torch.Tensor]:
        """``batch_size`` samples stacked on a new leading dim ``B``; with several sizes / a T range,
        one ``(T, H, W)`` is drawn per batch (shared by its samples)."""
        if len(self.sizes) > 1 or self.T_range[0] != self.T_range[1]:
            h, w = self.sizes[int(self.rng.integers(len(self.sizes)))]
            t = int(self.rng.integers(self.T_range[0], self.T_range[1] + 1))
            self.base = replace(self.base, T=t, H=h, W=w)
        samples = [self.sample() for _ in range(batch_size)]
        return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, "ext_mask_prob": self.ext_mask_prob}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]


def validation_batch(T: int, V: int, H: int, W: int, seeds: tuple[int, ...] = VAL_SEEDS[:2]) -> dict[str, torch.Tensor]:
    """Fixed held-out scenes (default config, no external masks) stacked to ``[B,...]``."""
    cfg = SyntheticSceneConfig(T=T, V=V, H=H, W=W)
    samples = []
    for s in seeds:
        if s == SAMPLE_SEED:
            raise ValueError(f"seed {SAMPLE_SEED} is the shipped sample and must stay unseen")
        d = normalize_scene(render_scene(cfg, s))
        d["ext_masks"] = torch.zeros_like(d["dynamic_mask"])
        d["ext_mask_on"] = torch.tensor(False)
        samples.append(d)
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}
