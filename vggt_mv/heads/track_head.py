"""VGGT track head: a feature-only DPT head followed by the iterative point tracker."""
from __future__ import annotations

import torch
import torch.nn as nn

from vggt_mv.config import DPTHeadConfig, TrackHeadConfig
from vggt_mv.heads.dpt_head import DPTHead
from vggt_mv.heads.track_modules.tracker import BaseTrackerPredictor


def default_feature_extractor_config(cfg: TrackHeadConfig) -> DPTHeadConfig:
    """VGGT's track feature extractor: feature-only DPT, half resolution, no positional embedding."""
    return DPTHeadConfig(
        dim_in=cfg.dim_in,
        patch_size=cfg.patch_size,
        features=cfg.features,
        out_channels=[256, 512, 1024, 1024],
        feature_only=True,
        down_ratio=2,
        pos_embed=False,
    )


class TrackHead(nn.Module):
    """Tracks query points through all frames: ``feature_extractor`` (DPT) + ``tracker``."""

    def __init__(self, cfg: TrackHeadConfig):
        super().__init__()
        self.cfg = cfg
        fe_cfg = cfg.feature_extractor if cfg.feature_extractor is not None else default_feature_extractor_config(cfg)
        if not fe_cfg.feature_only:
            raise ValueError("the track head's feature extractor must be feature_only")
        if fe_cfg.features != cfg.features:
            raise ValueError(f"feature extractor features {fe_cfg.features} != track head features {cfg.features}")
        self.feature_extractor = DPTHead(fe_cfg)
        self.tracker = BaseTrackerPredictor(
            stride=cfg.stride,
            corr_levels=cfg.corr_levels,
            corr_radius=cfg.corr_radius,
            latent_dim=cfg.features,
            hidden_size=cfg.hidden_size,
            depth=cfg.updateformer_depth,
            num_heads=cfg.updateformer_num_heads,
            num_virtual_tracks=cfg.num_virtual_tracks,
            mlp_ratio=cfg.mlp_ratio,
            max_scale=cfg.max_scale,
            predict_conf=cfg.predict_conf,
        )
        self.iters = cfg.iters

    def forward(
        self,
        aggregated_tokens_list: list[torch.Tensor | None],
        images: torch.Tensor,
        patch_start_idx: int,
        query_points: torch.Tensor,
        iters: int | None = None,
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor | None]:
        """tokens ``[B, S, P, 2C]`` entries, images ``[B, S, 3, H, W]``, query_points ``[B, N, 2]``
        (pixels of frame 0, x y). Returns (coords per iteration ``[B, S, N, 2]``, vis ``[B, S, N]``,
        conf ``[B, S, N]`` or None)."""
        fmaps = self.feature_extractor(aggregated_tokens_list, images, patch_start_idx)  # [B, S, F, H/2, W/2]
        return self.tracker(query_points=query_points, fmaps=fmaps, iters=self.iters if iters is None else iters)
