"""Named model presets (DESIGN §3).

``vggt``          VGGT-1B (facebook/VGGT-1B ``model.pt``), 1797 keys.
``page4d``        PAGE-4D ``checkpoint_nomask.pt``: VGGT + mask head, lambda_pose 0 (= VGGT numerics).
``page4d_mask``   PAGE-4D ``checkpoint_mask.pt``: same keys, lambda_pose +64 (PAGE's alpha = 64).
``page4d_fin10``  the researcher's ``checkpoint_150.pt`` (fin10 mask head, layers 7 / 8..23).
``vggt_mv``       the seeds' design: factorized Time-SA/View-SA, dual ``streams`` forked at layer 8.
``vggt_mv_fin10`` ``vggt_mv`` with the fin10 mask head and the track head (the notes' 1.26 B model
                  for ``checkpoint_150.pt``).
``tiny``          a small factorized dual-stream model for tests and the CPU demo.

``vggt_mv``, ``vggt_mv_fin10`` and ``tiny`` (and configs from JSON, by default) have
``follow_checkpoint``: with a checkpoint, the mask head variant and the track head follow its keys
(``vggt_mv.weights.autoconfig``). ``vggt`` and ``page4d*`` do not.
"""
from __future__ import annotations

from vggt_mv.config import (
    CameraHeadConfig,
    DinoConfig,
    DPTHeadConfig,
    MaskConfig,
    ModelConfig,
    SparseConfig,
    TrackHeadConfig,
    register_preset,
)


@register_preset
def vggt() -> ModelConfig:
    return ModelConfig(
        depth_head=DPTHeadConfig(output_dim=2, activation="exp"),
        point_head=DPTHeadConfig(output_dim=4, activation="inv_log"),
        track_head=TrackHeadConfig(
            feature_extractor=DPTHeadConfig(
                features=128, feature_only=True, down_ratio=2, pos_embed=False
            )
        ),
        layout="flat",
        follow_checkpoint=False,  # the vggt / page4d* presets are fixed architectures
    )


@register_preset
def page4d() -> ModelConfig:
    cfg = vggt()
    cfg.enable_track = False  # PAGE-4D trains and ships without the track head
    cfg.mask = MaskConfig(
        enabled=True, head="page4d", hidden=256, mask_layer=9, bias_layers=list(range(10, 20)),
        bias_blocks=["global"], mode="tokens", logit_sign=-1.0, mask_center=0.5,
        lambda_pose=0.0, lambda_bound=64.0,
    )
    return cfg


@register_preset
def page4d_mask() -> ModelConfig:
    cfg = page4d()
    cfg.mask.lambda_pose = 64.0
    return cfg


@register_preset
def page4d_fin10() -> ModelConfig:
    cfg = vggt()
    cfg.enable_track = False
    cfg.mask = MaskConfig(
        enabled=True, head="fin10", mask_layer=7, bias_layers=list(range(8, 24)),
        bias_blocks=["global"], mode="tokens", logit_sign=-1.0, mask_center=0.0,
        lambda_pose=0.5, lambda_bound=4.0,
    )
    return cfg


@register_preset
def vggt_mv() -> ModelConfig:
    cfg = vggt()
    cfg.enable_track = False
    cfg.layout = "factorized"
    cfg.mask = MaskConfig(
        enabled=True, head="page4d", hidden=256, mask_layer=7, bias_layers=list(range(8, 13)),
        bias_blocks=["global", "frame"], mode="streams", logit_sign=-1.0, mask_center=0.0,
        lambda_bound=4.0, learnable_lambdas=True, learnable_fusion=True,
    )
    cfg.sparse = SparseConfig(strategy="none", layers=[22, 23], learnable_kpt_lambdas=True)
    cfg.follow_checkpoint = True
    return cfg


@register_preset
def vggt_mv_fin10() -> ModelConfig:
    cfg = vggt_mv()
    cfg.mask.head = "fin10"
    cfg.enable_track = True
    return cfg


@register_preset
def tiny() -> ModelConfig:
    dpt = dict(dim_in=128, features=32, out_channels=[16, 32, 64, 64],
               intermediate_layer_idx=[1, 3, 5, 7])
    return ModelConfig(
        embed_dim=64, depth=8, num_heads=4,
        dino=DinoConfig(embed_dim=64, depth=2, num_heads=4, pos_embed_shape=[1, 1370, 64]),
        camera_head=CameraHeadConfig(dim_in=128, trunk_depth=2, num_heads=4),
        depth_head=DPTHeadConfig(output_dim=2, activation="exp", **dpt),
        point_head=DPTHeadConfig(output_dim=4, activation="inv_log", **dpt),
        track_head=TrackHeadConfig(
            dim_in=128, features=32, corr_levels=3, corr_radius=2, hidden_size=32,
            feature_extractor=DPTHeadConfig(
                dim_in=128, features=32, out_channels=[16, 32, 64, 64],
                intermediate_layer_idx=[1, 3, 5, 7], feature_only=True, down_ratio=2, pos_embed=False,
            ),
        ),
        enable_track=False,
        mask=MaskConfig(
            enabled=True, head="page4d", hidden=32, mask_layer=2, bias_layers=[3, 4, 5],
            bias_blocks=["global", "frame"], mode="streams", logit_sign=-1.0, mask_center=0.0,
            lambda_bound=4.0, learnable_lambdas=True, learnable_fusion=True,
        ),
        sparse=SparseConfig(strategy="none", layers=[6, 7], landmark_k=16, memory_tokens=8,
                            learnable_kpt_lambdas=True),
        layout="factorized",
        follow_checkpoint=True,
    )
