"""The keypoint bias of Sparse Global-SA: ``lambda_kpt`` / ``lambda_kpt_pose`` and the bias itself.

Bias on the sparse layers' logits (DESIGN §3): ``logit_ij += r_i * K_j`` for patch keys j (special-
token keys get none), where ``K [B,T,V,h,w]`` is the external keypoint map max-pooled to the patch
grid (1 = a keypoint falls in the patch) and ``r_i = lambda_kpt`` on geo rows, ``lambda_kpt_pose`` on
pose rows (camera/register tokens in ``tokens`` mode, the whole pose stream in ``streams`` mode).
Rank 1, passed to attention as a ``LowRankBias`` concatenated with the mask bias: never N x N.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from vggt_mv.config import SparseConfig
from vggt_mv.layers import LowRankBias
from vggt_mv.model.mask_bias import BoundedLambdas

KPT_LAMBDA_NAMES = ("lambda_kpt", "lambda_kpt_pose")


def keypoint_patch_map(keypoints: torch.Tensor, patch: int) -> torch.Tensor:
    """Pixel heat map ``[B,T,V,H,W]`` in [0,1] -> per-patch max ``[B,T,V,H/patch,W/patch]``."""
    b, t, v, h, w = keypoints.shape
    pooled = F.max_pool2d(keypoints.reshape(b * t * v, 1, h, w).float(), patch)
    return pooled.reshape(b, t, v, h // patch, w // patch)


class KeypointBiasControl(BoundedLambdas):
    """Holds ``lambda_kpt`` / ``lambda_kpt_pose`` (bounded to +-``lambda_kpt_bound``).

    Learnable (``nn.Parameter``, state keys ``aggregator.keypoint_bias.*``) when
    ``sparse.learnable_kpt_lambdas``; otherwise non-persistent buffers, so the VGGT/PAGE presets keep
    the released checkpoints' key sets.
    """

    NAMES = KPT_LAMBDA_NAMES
    KIND = "keypoint lambda"

    def __init__(self, cfg: SparseConfig):
        super().__init__()
        self.bound = float(cfg.lambda_kpt_bound)
        for name in KPT_LAMBDA_NAMES:
            self._add(name, float(getattr(cfg, name)), cfg.learnable_kpt_lambdas)

    def row_weight(self, stream: str, n_tok: int, n_special: int, ref: torch.Tensor) -> torch.Tensor | None:
        """r_i per token of one image ``[n_tok]`` for ``stream`` (main/pose/geo), or None when inactive."""
        pose_on = stream in ("main", "pose") and self.is_active("lambda_kpt_pose")
        geo_on = stream in ("main", "geo") and self.is_active("lambda_kpt")
        if not (pose_on or geo_on):
            return None
        zero = torch.zeros((), dtype=ref.dtype, device=ref.device)
        r_pose = self.value("lambda_kpt_pose").to(ref) if pose_on else zero
        r_geo = self.value("lambda_kpt").to(ref) if geo_on else zero
        if stream == "pose":
            return r_pose.expand(n_tok)
        if stream == "geo":
            return r_geo.expand(n_tok)
        is_special = torch.arange(n_tok, device=ref.device) < n_special
        return torch.where(is_special, r_pose, r_geo)


def keypoint_bias(row_weight: torch.Tensor, patch_map: torch.Tensor, n_special: int) -> LowRankBias:
    """row_weight ``[n_tok]``, patch_map ``[B, NI, h*w]`` -> rank-1 bias over the flat ``NI*n_tok`` tokens."""
    b, ni, _ = patch_map.shape
    key = F.pad(patch_map, (n_special, 0)).reshape(b, -1)  # special keys: 0
    rows = row_weight.to(key.dtype).repeat(ni)[None].expand(b, -1)
    return LowRankBias(rows[..., None], key[..., None].to(rows.dtype))
