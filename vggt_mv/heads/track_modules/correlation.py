"""Multi-scale correlation pyramid sampled in a local window around each track (CoTracker style)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vggt_mv.heads.track_modules.utils import bilinear_sampler


class CorrBlock:
    """Average-pooled feature pyramid of ``fmaps [B, S, C, H, W]`` (``num_levels`` levels, x1/2 each).

    ``corr_sample`` correlates track features with every level and samples a ``(2r+1)^2`` window
    around the current coordinates, one level at a time (the full volumes are never stored).
    """

    def __init__(self, fmaps: torch.Tensor, num_levels: int = 4, radius: int = 4, padding_mode: str = "zeros"):
        self.num_levels = num_levels
        self.radius = radius
        self.padding_mode = padding_mode
        self.pyramid = [fmaps]
        cur = fmaps
        for _ in range(num_levels - 1):
            b, s, c, h, w = cur.shape
            cur = F.avg_pool2d(cur.reshape(b * s, c, h, w), kernel_size=2, stride=2)
            cur = cur.reshape(b, s, c, *cur.shape[-2:])
            self.pyramid.append(cur)
        lin = torch.linspace(-radius, radius, 2 * radius + 1, device=fmaps.device, dtype=fmaps.dtype)
        # delta[a, b] = (lin[a], lin[b]); component 0 is added to x (reference convention).
        self.delta = torch.stack(torch.meshgrid(lin, lin, indexing="ij"), dim=-1)

    def corr_sample(self, targets: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """targets ``[B, S, N, C]``, coords ``[B, S, N, 2]`` (level-0 pixels) -> ``[B, S, N, L*(2r+1)^2]``."""
        b, s, n, _ = targets.shape
        k = 2 * self.radius + 1
        delta = self.delta.to(device=coords.device, dtype=coords.dtype).view(1, k, k, 2)
        out = []
        for i, fmaps in enumerate(self.pyramid):
            _, _, c, h, w = fmaps.shape
            corrs = torch.matmul(targets, fmaps.reshape(b, s, c, h * w)) / math.sqrt(c)  # [B, S, N, HW]
            window = coords.reshape(b * s * n, 1, 1, 2) / (2**i) + delta
            sampled = bilinear_sampler(corrs.reshape(b * s * n, 1, h, w), window, padding_mode=self.padding_mode)
            out.append(sampled.view(b, s, n, -1))
        return torch.cat(out, dim=-1).contiguous()
