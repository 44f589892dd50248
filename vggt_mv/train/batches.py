"""Training batches: a pure function of ``(seed, step, rank)`` (procedural scenes or the ``--data``
mixture), made in the training process or in worker processes."""
from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from vggt_mv.data.mixture import ClipConfig, MixtureData
from vggt_mv.train.config import TrainConfig
from vggt_mv.train.data import SceneSampling, SyntheticDynamicDataset

_MIXTURES: dict[str, MixtureData] = {}


def mixture_for(cfg: TrainConfig) -> MixtureData:
    """The ``--data`` mixture of ``cfg`` (opened once per process: listings only)."""
    key = json.dumps([cfg.data, cfg.val_data, cfg.to_dict()], sort_keys=True, default=str)
    if key not in _MIXTURES:
        sizes = [(cfg.height, cfg.width)] + [(int(h), int(w)) for h, w in cfg.extra_sizes]
        clip = ClipConfig(timesteps=(cfg.timesteps, cfg.max_timesteps or cfg.timesteps),
                          views=(2, max(2, cfg.views)), sizes=sizes, max_stride=cfg.max_stride,
                          ext_mask_prob=cfg.ext_mask_prob, arc_deg=(float(cfg.arc_deg[0]), float(cfg.arc_deg[1])))
        _MIXTURES[key] = MixtureData(cfg.data or ["synthetic"], clip, cfg.val_data)
    return _MIXTURES[key]


def synthetic_stream(cfg: TrainConfig, seed: int) -> SyntheticDynamicDataset:
    """The procedural scene stream of ``cfg`` seeded with ``seed``."""
    sizes = [(cfg.height, cfg.width)] + [(int(h), int(w)) for h, w in cfg.extra_sizes]
    return SyntheticDynamicDataset(cfg.timesteps, cfg.views, cfg.height, cfg.width, seed=seed,
                                   ext_mask_prob=cfg.ext_mask_prob, sizes=sizes, max_T=cfg.max_timesteps,
                                   sampling=SceneSampling(arc_deg=(float(cfg.arc_deg[0]), float(cfg.arc_deg[1]))))


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """A 32-bit seed that is a pure function of ``(seed, step, rank)`` (rank 0 keeps ``(seed, step)``)."""
    key = [seed, step] + ([rank] if rank else [])
    return int(np.random.SeedSequence(key).generate_state(1)[0])


def batch_for_step(cfg: TrainConfig, step: int, rank: int = 0) -> dict[str, torch.Tensor]:
    """The ``[batch_size * accum, ...]`` batch of ``step`` on ``rank``: a pure function of
    ``(cfg.seed, step, rank)``, so batches can be made in any process and order, each rank sees its
    own and a resumed run sees the same ones."""
    size = cfg.batch_size * cfg.accum
    if cfg.data:
        return mixture_for(cfg).batch_at(cfg.seed, step, size, rank)
    return synthetic_stream(cfg, step_seed(cfg.seed, step, rank)).batch(size)


def _worker_batch(args: tuple[dict[str, Any], int, int]) -> dict[str, torch.Tensor]:
    torch.set_num_threads(1)
    return batch_for_step(TrainConfig.from_dict(args[0]), args[1], args[2])


def batches(cfg: TrainConfig, start: int, rank: int = 0) -> Iterator[dict[str, torch.Tensor]]:
    """Batches of steps ``start .. cfg.steps - 1`` in order: made here, or with ``cfg.workers > 0``
    by that many spawned processes at most two per worker ahead (bounded memory); closing the
    generator stops the pool."""
    if cfg.workers <= 0:
        for step in range(start, cfg.steps):
            yield batch_for_step(cfg, step, rank)
        return
    import multiprocessing as mp

    spec = cfg.to_dict()
    with mp.get_context("spawn").Pool(cfg.workers) as pool:
        pending: deque = deque()
        nxt = start
        while True:
            while len(pending) < 2 * cfg.workers and nxt < cfg.steps:
                pending.append(pool.apply_async(_worker_batch, ((spec, nxt, rank),)))
                nxt += 1
            if not pending:
                return
            yield pending.popleft().get()
