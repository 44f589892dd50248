"""``VGGTMV``: the aggregator plus VGGT's camera / depth / point / track heads.

5-D input ``[B,S,3,H,W]`` is VGGT exactly. 6-D input ``[B,T,V,3,H,W]`` runs the ``factorized``
(Time-SA / View-SA) or ``flat`` (VGGT over all T*V images) layout; outputs are ``[B,T,V,...]``.
Heads see the T*V images flattened t-major, so the camera head's trunk attends across all cameras.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from vggt_mv.config import ModelConfig
from vggt_mv.heads import CameraHead, DPTHead, TrackHead, pose_encoding_to_extri_intri
from vggt_mv.model.aggregator import Aggregator, AggregatorOutput, AggregatorState
from vggt_mv.model.epipolar import EpipolarPrior
from vggt_mv.model.keypoint_bias import keypoint_patch_map
from vggt_mv.model.mask_bias import LAMBDA_NAMES


def _read_alias_keys(state_dict, prefix, *_args) -> None:
    """``load_state_dict`` accepts the design notes' ``time_blocks.`` / ``view_blocks.`` keys as
    ``frame_blocks.`` / ``global_blocks.`` (renamed in place before loading)."""
    from vggt_mv.weights.mapping import canonical_key

    for k in [k for k in state_dict if k.startswith(prefix)]:
        new = prefix + canonical_key(k[len(prefix):])
        if new != k:
            state_dict[new] = state_dict.pop(k)


class VGGTMV(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.aggregator = Aggregator(config)
        self.camera_head = CameraHead(config.camera_head) if config.enable_camera else None
        self.point_head = DPTHead(config.point_head) if config.enable_point else None
        self.depth_head = DPTHead(config.depth_head) if config.enable_depth else None
        self.track_head = TrackHead(config.track_head) if config.enable_track else None
        self._register_load_state_dict_pre_hook(_read_alias_keys)

    # ------------------------------------------------------------------ controls
    def set_lambdas(
        self,
        lambda_pose: float | None = None,
        lambda_geo: float | None = None,
        lambda_pose_t: float | None = None,
        lambda_geo_t: float | None = None,
    ) -> None:
        """Set the mask-bias strengths (each within +-``mask.lambda_bound``); None keeps a value."""
        if not self.config.mask.enabled:
            raise ValueError(
                f"preset {self.config.name!r} has no dynamic-mask head, so lambdas have no effect; "
                "use a page4d*/vggt_mv/tiny preset"
            )
        self.aggregator.mask_bias.set(lambda_pose=lambda_pose, lambda_geo=lambda_geo,
                                      lambda_pose_t=lambda_pose_t, lambda_geo_t=lambda_geo_t)

    def set_keypoint_lambdas(self, lambda_kpt: float | None = None, lambda_kpt_pose: float | None = None) -> None:
        """Set the keypoint-bias strengths of the sparse layers (within +-``sparse.lambda_kpt_bound``)."""
        self.aggregator.keypoint_bias.set(lambda_kpt=lambda_kpt, lambda_kpt_pose=lambda_kpt_pose)

    def keypoint_lambdas(self) -> dict[str, float]:
        return self.aggregator.keypoint_bias.as_dict()

    def lambdas(self) -> dict[str, float]:
        if not self.config.mask.enabled:
            return {n: 0.0 for n in LAMBDA_NAMES}
        return self.aggregator.mask_bias.as_dict()

    # ------------------------------------------------------------------ validation
    def _check_inputs(self, images, ext_masks, query_points, ext_keypoints=None) -> None:
        if not isinstance(images, torch.Tensor):
            raise ValueError(f"images must be a torch.Tensor, got {type(images).__name__}")
        if images.dim() not in (5, 6):
            raise ValueError(
                f"images must be [B,S,3,H,W] or [B,T,V,3,H,W], got shape {tuple(images.shape)} "
                "(add a batch dimension with images[None] for a single sequence)"
            )
        c, h, w = images.shape[-3:]
        if c != 3:
            raise ValueError(f"images must have 3 RGB channels at dim -3, got {c} (shape {tuple(images.shape)})")
        p = self.config.patch_size
        if h % p or w % p or h == 0 or w == 0:
            raise ValueError(
                f"image size {h}x{w} is not a multiple of the patch size {p}; resize/crop to e.g. "
                f"{max(p, h // p * p)}x{max(p, w // p * p)} (vggt_mv.data preprocessing does this)"
            )
        lead = images.shape[:-3]
        if ext_masks is not None and tuple(ext_masks.shape) != (*lead, h, w):
            raise ValueError(
                f"ext_masks must have shape {(*lead, h, w)} (one HxW mask per image, 1 = dynamic), "
                f"got {tuple(ext_masks.shape)}"
            )
        if ext_keypoints is not None and tuple(ext_keypoints.shape) != (*lead, h, w):
            raise ValueError(
                f"ext_keypoints must have shape {(*lead, h, w)} (one HxW keypoint heat map in [0,1] per image), "
                f"got {tuple(ext_keypoints.shape)}"
            )
        if query_points is not None:
            if query_points.dim() != 3 or query_points.shape[0] != images.shape[0] or query_points.shape[-1] != 2:
                raise ValueError(
                    f"query_points must be [B,N,2] pixel (x, y) in the reference image with B={images.shape[0]}, "
                    f"got {tuple(query_points.shape)}"
                )
            if self.track_head is None:
                raise ValueError("query_points given but this model has no track head (enable_track=False)")

    # ------------------------------------------------------------------ forward
    def run_aggregator(
        self,
        images: torch.Tensor,
        ext_masks: torch.Tensor | None = None,
        layout: str | None = None,
        ext_keypoints: torch.Tensor | None = None,
        **kw,
    ) -> AggregatorOutput:
        """Aggregator on ``[B,S,..]`` or ``[B,T,V,..]`` images; entries are ``[B,T,V,P,2C]`` (5-D: T=S, V=1).

        ext_keypoints: optional keypoint heat map shaped like ``ext_masks``, max-pooled to the patch grid.
        """
        self._check_inputs(images, ext_masks, None, ext_keypoints)
        five_d = images.dim() == 5 or images.shape[2] == 1
        imgs = images[:, :, None] if images.dim() == 5 else images
        p = self.config.patch_size
        pooled = None
        if ext_masks is not None:
            m = ext_masks[:, :, None] if ext_masks.dim() == 4 else ext_masks
            b, t, v, h, w = m.shape
            pooled = F.avg_pool2d(m.reshape(b * t * v, 1, h, w).to(imgs.dtype), p).reshape(b, t, v, h // p, w // p)
        kpts = None
        if ext_keypoints is not None:
            k = ext_keypoints[:, :, None] if ext_keypoints.dim() == 4 else ext_keypoints
            kpts = keypoint_patch_map(k, p).to(imgs.dtype).flatten(3)  # [B,T,V,h*w]
        if five_d and imgs.shape[2] == 1:
            layout = "flat"
        return self.aggregator.run(imgs, layout=layout or self.config.layout, five_d=five_d,
                                   ext_masks=pooled, keypoints=kpts, **kw)

    def forward(
        self,
        images: torch.Tensor,
        ext_masks: torch.Tensor | None = None,
        query_points: torch.Tensor | None = None,
        *,
        layout: str | None = None,
        resume: AggregatorState | None = None,
        snapshot_at: int | None = None,
        landmark_scores: torch.Tensor | None = None,
        epipolar: EpipolarPrior | None = None,
        ext_keypoints: torch.Tensor | None = None,
        return_aggregator: bool = False,
    ) -> dict[str, torch.Tensor]:
        """images ``[B,S,3,H,W]`` or ``[B,T,V,3,H,W]`` in [0,1] -> dict of VGGT outputs (+ ``dynamic_mask``,
        ``mask_logit`` and ``dynamic_logit``: the mask head's raw logit and its logit of P(dynamic)
        before fusion with ``ext_masks``, ``[B,T,V,h,w]``).

        ext_keypoints ``[B,T,V,H,W]`` (or ``[B,S,H,W]``) in [0,1]: keypoint heat map for the sparse
        layers' keypoint bias (``lambda_kpt``); no effect without a sparse strategy or at lambda 0.
        """
        self._check_inputs(images, ext_masks, query_points, ext_keypoints)
        agg = self.run_aggregator(images, ext_masks, layout, resume=resume, snapshot_at=snapshot_at,
                                  landmark_scores=landmark_scores, epipolar=epipolar, ext_keypoints=ext_keypoints)
        lead = images.shape[:-3]
        b, h, w = images.shape[0], images.shape[-2], images.shape[-1]
        n = lead.numel() // b
        flat_imgs = images.reshape(b, n, 3, h, w)

        def flat(tokens: list[torch.Tensor]) -> list[torch.Tensor]:
            return [e.reshape(b, n, *e.shape[3:]) for e in tokens]

        def unflat(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(*lead, *x.shape[2:])

        pose_tokens, geo_tokens = flat(agg.pose_tokens), flat(agg.geo_tokens)
        psi = agg.patch_start_idx
        out: dict[str, torch.Tensor] = {}
        if self.camera_head is not None:
            pose_list = self.camera_head(pose_tokens)
            out["pose_enc"] = unflat(pose_list[-1])
            out["pose_enc_list"] = torch.stack([unflat(pe) for pe in pose_list])
            ext, intr = pose_encoding_to_extri_intri(pose_list[-1], (h, w))
            out["extrinsic"], out["intrinsic"] = unflat(ext), unflat(intr)
        if self.depth_head is not None:
            depth, conf = self.depth_head(geo_tokens, flat_imgs, psi)
            out["depth"], out["depth_conf"] = unflat(depth), unflat(conf)
        if self.point_head is not None:
            pts, conf = self.point_head(geo_tokens, flat_imgs, psi)
            out["world_points"], out["world_points_conf"] = unflat(pts), unflat(conf)
        if self.track_head is not None and query_points is not None:
            track_list, vis, conf = self.track_head(geo_tokens, flat_imgs, psi, query_points)
            out["track"] = unflat(track_list[-1])
            out["track_list"] = torch.stack([unflat(tr) for tr in track_list])
            out["vis"] = unflat(vis)
            if conf is not None:
                out["conf"] = unflat(conf)
        if agg.dynamic_mask is not None:
            out["dynamic_mask"] = unflat(agg.dynamic_mask.reshape(b, n, *agg.dynamic_mask.shape[3:]))
            out["mask_logit"] = unflat(agg.mask_logit.reshape(b, n, *agg.mask_logit.shape[3:]))
            # the head's own logit of P(dynamic), before any fusion with an external mask (training target)
            head = self.aggregator.spatial_mask_head
            out["dynamic_logit"] = self.config.mask.logit_sign * head.scaled_logit(out["mask_logit"])
        if return_aggregator:
            out["_aggregator"] = agg  # type: ignore[assignment]
        return out
