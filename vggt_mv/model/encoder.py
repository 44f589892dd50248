"""DINOv2 ViT encoder (``aggregator.patch_embed.*``): patch tokens after the final LayerNorm."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from vggt_mv.config import DinoConfig
from vggt_mv.layers import Block


class PatchEmbed(nn.Module):
    """Conv patchifier: ``[N,3,H,W]`` -> ``[N, (H/p)*(W/p), C]``."""

    def __init__(self, patch_size: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class DinoEncoder(nn.Module):
    """DINOv2 with registers; ``forward`` returns ``x_norm_patchtokens`` ``[N, h*w, C]``."""

    def __init__(self, cfg: DinoConfig):
        super().__init__()
        self.cfg = cfg
        c = cfg.embed_dim
        n_pos = (cfg.img_size // cfg.patch_size) ** 2 + 1
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c))
        self.pos_embed = nn.Parameter(torch.zeros(1, n_pos, c))
        self.register_tokens = nn.Parameter(torch.zeros(1, cfg.num_register_tokens, c))
        if cfg.has_mask_token:
            self.mask_token = nn.Parameter(torch.zeros(1, c))  # unused at inference; kept for keys
        self.patch_embed = PatchEmbed(cfg.patch_size, c)
        self.blocks = nn.ModuleList(
            Block(c, cfg.num_heads, cfg.mlp_ratio, cfg.qkv_bias, cfg.proj_bias, cfg.ffn_bias,
                  init_values=cfg.init_values, qk_norm=cfg.qk_norm, norm_eps=cfg.norm_eps)
            for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(c, eps=cfg.norm_eps)
        if not self.pos_embed.is_meta:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
            nn.init.normal_(self.cls_token, std=1e-6)
            nn.init.normal_(self.register_tokens, std=1e-6)

    def interpolate_pos_encoding(self, grid_h: int, grid_w: int, dtype: torch.dtype) -> torch.Tensor:
        """pos_embed resized (bicubic, antialias as configured) to ``[1, 1 + h*w, C]``."""
        n = self.pos_embed.shape[1] - 1
        side = int(math.sqrt(n))
        if grid_h * grid_w == n and grid_h == grid_w:
            return self.pos_embed.to(dtype)
        pos = self.pos_embed.float()
        grid = pos[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
        off = self.cfg.interpolate_offset
        kw = (
            {"scale_factor": ((grid_h + off) / side, (grid_w + off) / side)}
            if off
            else {"size": (grid_h, grid_w)}
        )
        grid = F.interpolate(grid, mode="bicubic", antialias=self.cfg.interpolate_antialias, **kw)
        grid = grid.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, -1)
        return torch.cat([pos[:, :1], grid], 1).to(dtype)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images ``[N,3,H,W]`` (already normalised) -> patch tokens ``[N, h*w, C]``."""
        n, _, h, w = images.shape
        p = self.cfg.patch_size
        x = self.patch_embed(images)
        x = torch.cat([self.cls_token.expand(n, -1, -1), x], 1)
        x = x + self.interpolate_pos_encoding(h // p, w // p, x.dtype)
        x = torch.cat([x[:, :1], self.register_tokens.expand(n, -1, -1), x[:, 1:]], 1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)[:, 1 + self.cfg.num_register_tokens:]
