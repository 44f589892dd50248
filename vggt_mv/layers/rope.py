"""VGGT's 2D rotary position embedding and the per-image patch positions it uses."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def patch_positions(
    batch: int, grid_h: int, grid_w: int, num_special: int, device: torch.device
) -> torch.Tensor:
    """Positions ``[batch, num_special + h*w, 2]`` as (y, x): special tokens (0, 0), patch (r, c) -> (r+1, c+1)."""
    ys = torch.arange(grid_h, device=device)
    xs = torch.arange(grid_w, device=device)
    pos = torch.cartesian_prod(ys, xs) + 1
    special = torch.zeros(num_special, 2, dtype=pos.dtype, device=device)
    return torch.cat([special, pos], 0).unsqueeze(0).expand(batch, -1, -1)


class RotaryPositionEmbedding2D(nn.Module):
    """2D RoPE: first half of each head's channels rotated by y, second half by x (base ``frequency``)."""

    def __init__(self, frequency: float = 100.0):
        super().__init__()
        self.frequency = frequency

    def _cos_sin(self, dim: int, n_pos: int, device: torch.device, dtype: torch.dtype):
        inv_freq = 1.0 / (self.frequency ** (torch.arange(0, dim, 2, device=device).float() / dim))
        angles = torch.outer(torch.arange(n_pos, device=device, dtype=inv_freq.dtype), inv_freq)
        angles = torch.cat([angles, angles], -1).to(dtype)
        return angles.cos(), angles.sin()

    @staticmethod
    def _rotate_half(x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat([-x2, x1], -1)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """x ``[B, H, N, D]``, pos ``[B, N, 2]`` integer (y, x) -> rotated x."""
        half = x.shape[-1] // 2
        cos, sin = self._cos_sin(half, int(pos.max()) + 1, x.device, x.dtype)
        out = []
        for feats, p in zip(x.chunk(2, dim=-1), (pos[..., 0], pos[..., 1])):
            c = F.embedding(p, cos)[:, None]
            s = F.embedding(p, sin)[:, None]
            out.append(feats * c + self._rotate_half(feats) * s)
        return torch.cat(out, -1)
