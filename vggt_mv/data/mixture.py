"""A training stream over a weighted mixture of data sources (``--data SPEC[@W]``, repeatable).

Every batch is a pure function of ``(seed, step, rank)``: the batch's ``(T, V, H, W)`` come from a
generator seeded with ``(seed, step, rank)``, sample ``i``'s source, sequence, frames, views and
crops from one seeded with ``(seed, step, rank, i)``. Nothing depends on what was drawn before, so
any process can build any step's batch (workers) and a resumed run sees the same clips.

Sources are split by sequence: a sequence that is also under ``--val-data`` is never trained on.
Decoding is lazy: a sample decodes only its ``T × V`` frames.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from .clips import crop_clip, frame_indices, random_crop
from .formats import DataSource, open_source
from .formats.base import SequenceReader
from .formats.synthetic import scene_clip
from .normalize import PATCH, normalize_arrays
from .synthetic import SyntheticSceneConfig

SAMPLE_SEED = 7                      # assets/sample: never trained on
VAL_SEEDS = tuple(range(100, 108))   # synthetic validation scenes
_EXCLUDED = frozenset({SAMPLE_SEED, *VAL_SEEDS})
_TAG_BATCH, _TAG_VAL = 0, 1          # keep batch-level / validation streams apart from sample streams


@dataclass
class ClipConfig:
    """Shape and augmentation ranges of training clips."""

    timesteps: tuple[int, int] = (4, 4)          # T drawn per batch, inclusive
    views: tuple[int, int] = (2, 3)              # V drawn per batch, inclusive (>= 2)
    sizes: list[tuple[int, int]] = field(default_factory=lambda: [(126, 168)])  # (H, W) drawn per batch
    max_stride: int = 3                          # time stride drawn in [1, max_stride]
    min_crop: float = 0.7                        # crop share of the largest box of the aspect
    aspect_jitter: float = 1.15                  # crop aspect = W/H × [1/j, j]
    ext_mask_prob: float = 0.0                   # share of masked samples that also get it as ext mask
    arc_deg: tuple[float, float] = (40.0, 80.0)  # synthetic camera arc

    def __post_init__(self) -> None:
        if self.views[0] < 2 or self.views[1] < self.views[0]:
            raise ValueError(f"clip views {self.views}: need 2 <= lo <= hi (a clip has at least 2 views)")
        if self.timesteps[0] < 1 or self.timesteps[1] < self.timesteps[0]:
            raise ValueError(f"clip timesteps {self.timesteps}: need 1 <= lo <= hi")
        for h, w in self.sizes:
            if h <= 0 or w <= 0 or h % PATCH or w % PATCH:
                raise ValueError(f"training size {h}x{w} must be positive multiples of {PATCH}")
        if self.max_stride < 1:
            raise ValueError(f"max_stride must be >= 1, got {self.max_stride}")


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in key]))


def _training_seed(rng: np.random.Generator) -> int:
    """A procedural-scene seed that is neither the sample's nor a validation scene's."""
    seed = int(rng.integers(1_000, 2**31 - 1))
    while seed in _EXCLUDED:
        seed = int(rng.integers(1_000, 2**31 - 1))
    return seed


def _check_trainable(src: DataSource, option: str = "--data") -> None:
    for s in src.sequences:
        if not (s.has_depth and s.has_cameras):
            need = [n for n, ok in (("depth", s.has_depth), ("intrinsics + extrinsics", s.has_cameras)) if not ok]
            raise ValueError(f"{option} {src.spec}: sequence {s.path} has no {' or '.join(need)}; training needs "
                             "depth, intrinsics and extrinsics (add them or leave that sequence out)")


class MixtureData:
    """Training (and validation) clips over weighted sources; see the module doc."""

    def __init__(self, data: list[str], clip: ClipConfig, val_data: list[str] | None = None) -> None:
        if not data:
            raise ValueError("no --data source given")
        self.clip = clip
        self.val_sources = [open_source(s, "--val-data") for s in (val_data or [])]
        held_out = {seq.key for src in self.val_sources for seq in src.sequences}
        self.sources: list[DataSource] = []
        for spec in data:
            src = open_source(spec)
            if not src.procedural:
                src.sequences = [s for s in src.sequences if s.key not in held_out]
                if not src.sequences:
                    raise ValueError(f"--data {spec}: every sequence of it is also in --val-data; "
                                     "validate on other sequences")
                _check_trainable(src)
            self.sources.append(src)
        for src in self.val_sources:
            _check_trainable(src, "--val-data")
        w = np.array([s.weight for s in self.sources], dtype=np.float64)
        self.probs = w / w.sum()

    # ------------------------------------------------------------------ drawing
    def batch_shape(self, seed: int, step: int, rank: int) -> tuple[int, int, int, int]:
        """``(T, V, H, W)`` of step ``step``'s batch on ``rank``."""
        rng = _rng(seed, step, rank, _TAG_BATCH)
        c = self.clip
        T = int(rng.integers(c.timesteps[0], c.timesteps[1] + 1))
        V = int(rng.integers(c.views[0], c.views[1] + 1))
        H, W = c.sizes[int(rng.integers(len(c.sizes)))]
        return T, V, H, W

    def _eligible(self, src: DataSource, T: int, V: int) -> list[SequenceReader]:
        return [s for s in src.sequences if s.num_frames >= T and s.num_views >= V]

    def _choose_source(self, rng: np.random.Generator, T: int, V: int) -> int:
        ok = [i for i, s in enumerate(self.sources) if s.procedural or self._eligible(s, T, V)]
        if not ok:
            raise ValueError(f"no --data source has a sequence with >= {T} frames and >= {V} views; "
                             "lower --timesteps / --views")
        p = self.probs[ok] / self.probs[ok].sum()
        return ok[int(rng.choice(len(ok), p=p))]

    def source_index(self, seed: int, step: int, rank: int, index: int) -> int:
        """Which source sample ``index`` of ``(seed, step, rank)`` comes from (what :meth:`sample`
        draws first, without decoding anything)."""
        T, V, _, _ = self.batch_shape(seed, step, rank)
        return self._choose_source(_rng(seed, step, rank, index + 2), T, V)

    def sample(self, seed: int, step: int, rank: int, index: int,
               shape: tuple[int, int, int, int] | None = None) -> dict[str, torch.Tensor]:
        """Sample ``index`` of the batch of ``(seed, step, rank)`` (normalised GT, see
        :mod:`vggt_mv.data.normalize`; plus ``ext_masks``, ``ext_mask_on``, ``has_mask``, ``source``)."""
        T, V, H, W = shape or self.batch_shape(seed, step, rank)
        rng = _rng(seed, step, rank, index + 2)
        si = self._choose_source(rng, T, V)
        out = self._draw(self.sources[si], rng, T, V, H, W, what=f"--data {self.sources[si].spec}")
        out["source"] = torch.tensor(si, dtype=torch.long)
        return out

    def _draw(self, src: DataSource, rng: np.random.Generator, T: int, V: int, H: int, W: int, what: str,
              synthetic_seeds: tuple[int, ...] | None = None, clip: ClipConfig | None = None) -> dict[str, torch.Tensor]:
        c = clip or self.clip
        if src.procedural:
            if synthetic_seeds is not None:
                seed = synthetic_seeds[int(rng.integers(len(synthetic_seeds)))]
                cfg = SyntheticSceneConfig(T=T, V=V, H=H, W=W)
            else:
                seed = _training_seed(rng)
                cfg = SyntheticSceneConfig(
                    T=T, V=V, H=H, W=W, fov_deg=float(rng.uniform(50.0, 70.0)),
                    n_moving=int(rng.integers(1, 4)), n_static_boxes=int(rng.integers(1, 4)),
                    fps=float(rng.uniform(6.0, 14.0)), arc_deg=float(rng.uniform(*c.arc_deg)))
            clip = scene_clip(cfg, seed, views=[int(v) for v in rng.permutation(V)])
            name = f"synthetic seed {seed}"
        else:
            seqs = self._eligible(src, T, V)
            seq = seqs[int(rng.integers(len(seqs)))]
            frames = frame_indices(rng, seq.num_frames, T, c.max_stride)
            views = [int(v) for v in rng.permutation(seq.num_views)[:V]]
            clip = seq.read(frames, views)
            boxes = [random_crop(rng, clip.images.shape[2:4], (H, W), c.min_crop, c.aspect_jitter)
                     for _ in range(V)]
            clip = crop_clip(clip, boxes)
            name, seed = f"{what} sequence {seq.path} frames {frames} views {views}", 0
        out = normalize_arrays(clip.images, clip.depth, clip.intrinsic, clip.extrinsic, clip.dynamic_mask,
                               seed=seed, what=name)
        has_mask = clip.dynamic_mask is not None
        use_ext = has_mask and bool(rng.uniform() < c.ext_mask_prob)
        out["ext_masks"] = out["dynamic_mask"].clone() if use_ext else torch.zeros_like(out["dynamic_mask"])
        out["ext_mask_on"] = torch.tensor(use_ext)
        out["has_mask"] = torch.tensor(has_mask)
        return out

    def batch_at(self, seed: int, step: int, batch_size: int, rank: int = 0) -> dict[str, torch.Tensor]:
        """The ``[B,...]`` batch of ``(seed, step, rank)``."""
        shape = self.batch_shape(seed, step, rank)
        samples = [self.sample(seed, step, rank, i, shape) for i in range(batch_size)]
        return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}

    def validation_batch(self, count: int = 2) -> dict[str, torch.Tensor] | None:
        """``count`` fixed clips from the ``--val-data`` sources (round robin; first size, lowest T,
        no crop jitter; V = the highest every source allows); None without ``--val-data``."""
        if not self.val_sources:
            return None
        c = self.clip
        T, (H, W) = c.timesteps[0], c.sizes[0]
        V = min([c.views[1]] + [max(s.num_views for s in src.sequences) for src in self.val_sources
                                if not src.procedural])
        plain = replace(c, min_crop=1.0, aspect_jitter=1.0, ext_mask_prob=0.0)
        samples = []
        for i in range(count):
            src = self.val_sources[i % len(self.val_sources)]
            if not src.procedural and not self._eligible(src, T, V):
                raise ValueError(f"--val-data {src.spec}: no sequence has >= {T} frames and >= {V} views")
            samples.append(self._draw(src, _rng(0, i, 0, _TAG_VAL), T, V, H, W, what=f"--val-data {src.spec}",
                                      synthetic_seeds=VAL_SEEDS, clip=plain))
        return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}


class MixtureStream:
    """Stateful wrapper for the training loop: ``batch()`` returns the next step's batch;
    ``state_dict`` is the step counter (the batches themselves are pure in (seed, step, rank))."""

    def __init__(self, data: MixtureData, seed: int, rank: int = 0) -> None:
        self.data, self.seed, self.rank, self.step = data, int(seed), int(rank), 0

    def batch(self, batch_size: int = 1) -> dict[str, torch.Tensor]:
        out = self.data.batch_at(self.seed, self.step, batch_size, self.rank)
        self.step += 1
        return out

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
