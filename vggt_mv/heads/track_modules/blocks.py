"""Pre-norm attention blocks of the track update transformer (``nn.MultiheadAttention`` based).

Note the reference convention kept for checkpoint parity: the residual is added to the
*normalized* input (``x = norm1(x); x = x + attn(x)``).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from vggt_mv.layers import Mlp


class AttnBlock(nn.Module):
    """Self-attention block on ``[B, N, C]``."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size)
        self.norm2 = nn.LayerNorm(hidden_size)
        self.attn = nn.MultiheadAttention(embed_dim=hidden_size, num_heads=num_heads, batch_first=True)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x ``[B, N, C]`` -> ``[B, N, C]``; mask: optional ``attn_mask`` for ``nn.MultiheadAttention``."""
        x = self.norm1(x)
        if mask is None:
            attn_out, _ = self.attn(x, x, x)
        else:
            attn_out, _ = self.attn(x, x, x, attn_mask=mask)
        x = x + attn_out
        return x + self.mlp(self.norm2(x))


class CrossAttnBlock(nn.Module):
    """Cross-attention block: queries ``[B, N, C]`` attend to a context ``[B, M, C]``."""

    def __init__(self, hidden_size: int, num_heads: int = 1, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size)
        self.norm_context = nn.LayerNorm(hidden_size)
        self.norm2 = nn.LayerNorm(hidden_size)
        self.cross_attn = nn.MultiheadAttention(embed_dim=hidden_size, num_heads=num_heads, batch_first=True)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x ``[B, N, C]``, context ``[B, M, C]`` -> ``[B, N, C]``."""
        x = self.norm1(x)
        context = self.norm_context(context)
        attn_out, _ = self.cross_attn(x, context, context, attn_mask=mask)
        x = x + attn_out
        return x + self.mlp(self.norm2(x))
