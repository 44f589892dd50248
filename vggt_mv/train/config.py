"""``TrainConfig``: everything a training run depends on (saved in checkpoints and the run log),
and the learning-rate schedule."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from vggt_mv.config import ModelConfig
from vggt_mv.train.losses import LossConfig
from vggt_mv.train.recipes import Rule, recipe_rules


@dataclass
class TrainConfig:
    """Everything a run depends on (saved in checkpoints and the JSON log)."""

    preset: str = "tiny"
    steps: int = 2000
    lr: float = 5e-4
    min_lr_ratio: float = 0.05       # cosine decays to lr * min_lr_ratio
    warmup: int = 100
    weight_decay: float = 0.05
    lambda_lr_mult: float = 10.0     # scalar lambdas / fusion gains: faster lr, no weight decay
    grad_clip: float = 1.0
    batch_size: int = 1
    timesteps: int = 4
    max_timesteps: int | None = None  # T drawn per step in [timesteps, max_timesteps]
    views: int = 3
    height: int = 126
    width: int = 168
    extra_sizes: list[list[int]] = field(default_factory=list)  # more (H, W) drawn per step
    ext_mask_prob: float = 0.25
    arc_deg: list[float] = field(default_factory=lambda: [40.0, 80.0])  # camera-rig arc range
    seed: int = 0
    init: str | None = None          # weights to start from (anything load_model takes as checkpoint)
    init_pi3: str | None = None      # + Pi3 weights, combined with ``init`` by the seed recipe
    train_recipe: str = "all"        # what trains (vggt_mv.train.recipes)
    rules: list[dict[str, Any]] = field(default_factory=list)  # --trainable/--frozen after the recipe
    threads: int | None = 2          # torch threads; None: torch's default (OMP_NUM_THREADS under torchrun)
    device: str = "cpu"              # "cpu", "cuda" (or "cuda:N"); data is always made on the CPU
    workers: int = 0                 # >0: render batches in that many processes (see batch_for_step)
    log_every: int = 10
    ckpt_every: int = 100
    val_every: int = 250             # 0 disables validation
    data: list[str] = field(default_factory=list)      # --data specs; empty: procedural scenes
    val_data: list[str] = field(default_factory=list)  # --val-data specs (held-out sequences)
    max_stride: int = 3              # --data clips: time stride drawn in [1, max_stride]
    strategy: str = "auto"           # auto (ddp under torchrun, none alone) | none | ddp | fsdp
    precision: str = "auto"          # auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16
    checkpointing: bool = False      # recompute aggregator blocks in backward (activation checkpointing)
    accum: int = 1                   # micro-batches of batch_size per optimizer step
    loss: LossConfig = field(default_factory=LossConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        d = dict(d)
        d["loss"] = LossConfig.from_dict(d.get("loss", {}))
        return cls(**d)

    def training_rules(self, model_config: ModelConfig) -> list[Rule]:
        """The recipe's rules followed by the ``--trainable`` / ``--frozen`` ones."""
        return recipe_rules(self.train_recipe, model_config) + [Rule(**r) for r in self.rules]


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for (0-based) ``step``: linear warm-up to ``lr``, then cosine to ``lr * min_lr_ratio``."""
    if cfg.warmup > 0 and step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    span = max(1, cfg.steps - cfg.warmup)
    prog = min(1.0, (step - cfg.warmup) / span)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * prog)))
