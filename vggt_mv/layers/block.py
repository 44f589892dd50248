"""Pre-norm transformer block with LayerScale (VGGT / DINOv2 key names)."""
from __future__ import annotations

import torch
import torch.nn as nn

from vggt_mv.layers.attention import Attention, LowRankBias
from vggt_mv.layers.mlp import LayerScale, Mlp
from vggt_mv.layers.rope import RotaryPositionEmbedding2D


class Block(nn.Module):
    """``x + ls1(attn(norm1(x))) ; x + ls2(mlp(norm2(x)))``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        ffn_bias: bool = True,
        init_values: float | None = 0.01,
        qk_norm: bool = False,
        norm_eps: float = 1e-5,
        qk_norm_eps: float = 1e-5,
        rope: RotaryPositionEmbedding2D | None = None,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias, proj_bias, qk_norm, qk_norm_eps, rope)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), bias=ffn_bias)
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()

    def forward(
        self, x: torch.Tensor, pos: torch.Tensor | None = None, bias: LowRankBias | None = None
    ) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), pos, bias))
        return self.ffn(x)

    def ffn(self, x: torch.Tensor) -> torch.Tensor:
        """The second residual branch alone (used by the sparse global-attention variants)."""
        return x + self.ls2(self.mlp(self.norm2(x)))
