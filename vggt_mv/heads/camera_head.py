"""VGGT camera head: iterative pose refinement on the camera tokens (adaLN-modulated trunk)."""
from __future__ import annotations

import torch
import torch.nn as nn

from vggt_mv.config import CameraHeadConfig
from vggt_mv.heads.activations import activate_pose
from vggt_mv.layers import Block, Mlp

_TARGET_DIMS = {"absT_quaR_FoV": 9}


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """DiT-style modulation ``x * (1 + scale) + shift``."""
    return x * (1 + scale) + shift


class CameraHead(nn.Module):
    """Predicts a pose encoding ``[B, S, 9]`` per refinement iteration from the camera tokens.

    Each iteration embeds the previous (detached) estimate, modulates the normalized camera tokens
    with it (shift / scale / gate), runs the trunk and adds the predicted delta.
    """

    def __init__(self, cfg: CameraHeadConfig):
        super().__init__()
        if cfg.pose_encoding_type not in _TARGET_DIMS:
            raise ValueError(f"unsupported pose encoding type {cfg.pose_encoding_type!r}")
        self.cfg = cfg
        self.target_dim = _TARGET_DIMS[cfg.pose_encoding_type]
        if cfg.target_dim != self.target_dim:
            raise ValueError(f"target_dim {cfg.target_dim} does not match {cfg.pose_encoding_type}")
        dim = cfg.dim_in
        self.trunk = nn.Sequential(
            *[
                Block(
                    dim,
                    cfg.num_heads,
                    mlp_ratio=cfg.mlp_ratio,
                    init_values=cfg.init_values,
                    qk_norm=cfg.qk_norm,
                    norm_eps=cfg.norm_eps,
                    qk_norm_eps=cfg.norm_eps,
                    rope=None,
                )
                for _ in range(cfg.trunk_depth)
            ]
        )
        self.token_norm = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.trunk_norm = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.empty_pose_tokens = nn.Parameter(torch.zeros(1, 1, self.target_dim))
        self.embed_pose = nn.Linear(self.target_dim, dim)
        self.poseLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 3 * dim, bias=True))
        self.adaln_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=cfg.adaln_eps)
        hidden = cfg.pose_branch_hidden or dim // 2
        self.pose_branch = Mlp(dim, hidden, self.target_dim)

    def forward(
        self, aggregated_tokens_list: list[torch.Tensor | None], num_iterations: int | None = None
    ) -> list[torch.Tensor]:
        """aggregated_tokens_list: entries ``[B, S, P, 2C]``; the camera token (index 0) of the last
        entry is read. Returns ``num_iterations`` activated pose encodings ``[B, S, 9]``."""
        tokens = aggregated_tokens_list[-1]
        if tokens is None:
            raise ValueError("the camera head reads the last entry of aggregated_tokens_list, got None")
        pose_tokens = self.token_norm(tokens[:, :, 0])
        iters = self.cfg.num_iterations if num_iterations is None else num_iterations
        return self._refine(pose_tokens, iters)

    def _refine(self, pose_tokens: torch.Tensor, num_iterations: int) -> list[torch.Tensor]:
        """pose_tokens ``[B, S, C]`` -> list of ``[B, S, 9]``."""
        b, s, _ = pose_tokens.shape
        pred: torch.Tensor | None = None
        preds: list[torch.Tensor] = []
        for _ in range(num_iterations):
            if pred is None:
                cond = self.embed_pose(self.empty_pose_tokens.expand(b, s, -1))
            else:
                pred = pred.detach()
                cond = self.embed_pose(pred)
            shift, scale, gate = self.poseLN_modulation(cond).chunk(3, dim=-1)
            x = gate * modulate(self.adaln_norm(pose_tokens), shift, scale)
            x = self.trunk(x + pose_tokens)
            delta = self.pose_branch(self.trunk_norm(x))
            pred = delta if pred is None else pred + delta
            preds.append(
                activate_pose(pred, trans_act=self.cfg.trans_act, quat_act=self.cfg.quat_act, fl_act=self.cfg.fl_act)
            )
        return preds
