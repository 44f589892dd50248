"""Training VGGT-MV on procedural multi-camera dynamic scenes (``vggt-mv train``).

``SyntheticDynamicDataset`` (data), ``compute_losses`` / ``LossConfig`` (losses),
``TrainConfig`` / ``Trainer`` (loop, checkpoints, resumption).
"""
from vggt_mv.train.data import SyntheticDynamicDataset, normalize_scene, validation_batch
from vggt_mv.train.losses import LossConfig, compute_losses
from vggt_mv.train.trainer import TrainConfig, Trainer

__all__ = ["SyntheticDynamicDataset", "normalize_scene", "validation_batch", "LossConfig",
           "compute_losses", "TrainConfig", "Trainer"]
