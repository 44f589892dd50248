"""Sinusoidal embeddings and bilinear sampling helpers of the tracker (CoTracker / VGGSfM conventions)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def sincos_pos_embed_1d(embed_dim: int, pos: torch.Tensor) -> torch.Tensor:
    """Positions (any shape, M elements) -> ``[1, M, embed_dim]`` = ``[sin(p*w), cos(p*w)]``, base 10000.

    Computed in float64 (float32 on MPS) and returned as float32, like the reference.
    """
    if embed_dim % 2:
        raise ValueError(f"embed_dim must be even, got {embed_dim}")
    dt = torch.float32 if pos.device.type == "mps" else torch.float64
    omega = torch.arange(embed_dim // 2, dtype=dt, device=pos.device)
    omega /= embed_dim / 2.0
    omega = 1.0 / 10000**omega
    out = torch.einsum("m,d->md", pos.reshape(-1), omega)
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)[None].float()


def sincos_pos_embed_2d(
    embed_dim: int, grid_size: tuple[int, int], device: torch.device | None = None
) -> torch.Tensor:
    """Fixed 2-D sin/cos embedding of an ``(H, W)`` grid -> ``[1, embed_dim, H, W]``.

    The first half of the channels encodes the column (x), the second half the row (y).
    """
    h, w = grid_size
    xs = torch.arange(w, dtype=torch.float32, device=device)
    ys = torch.arange(h, dtype=torch.float32, device=device)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")  # [H, W] each
    emb = torch.cat([sincos_pos_embed_1d(embed_dim // 2, gx), sincos_pos_embed_1d(embed_dim // 2, gy)], dim=2)
    return emb.reshape(1, h, w, embed_dim).permute(0, 3, 1, 2)


def flow_embedding(xy: torch.Tensor, c: int) -> torch.Tensor:
    """``xy [B, N, 2]`` -> ``[B, N, 2c]``: per coordinate ``c`` interleaved sin/cos at ``k * 1000 / c``."""
    x, y = xy[..., 0:1], xy[..., 1:2]
    div = (torch.arange(0, c, 2, device=xy.device, dtype=torch.float32) * (1000.0 / c)).reshape(1, 1, c // 2)

    def enc(v: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.sin(v * div), torch.cos(v * div)], dim=-1).reshape(*v.shape[:-1], c)

    return torch.cat([enc(x), enc(y)], dim=2)


def bilinear_sampler(
    inp: torch.Tensor, coords: torch.Tensor, align_corners: bool = True, padding_mode: str = "border"
) -> torch.Tensor:
    """``grid_sample`` with pixel coordinates: inp ``[B, C, H, W]``, coords ``[B, Ho, Wo, 2]`` as (x, y)
    with x in ``[0, W-1]`` (align_corners) -> ``[B, C, Ho, Wo]``. Coordinates carry no gradient."""
    coords = coords.detach().to(device=inp.device, dtype=inp.dtype)
    h, w = inp.shape[-2:]
    if align_corners:
        scale = torch.tensor([2 / max(w - 1, 1), 2 / max(h - 1, 1)], device=coords.device, dtype=coords.dtype)
    else:
        scale = torch.tensor([2 / w, 2 / h], device=coords.device, dtype=coords.dtype)
    return F.grid_sample(inp, coords * scale - 1, align_corners=align_corners, padding_mode=padding_mode)


def sample_features4d(inp: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinearly sample ``inp [B, C, H, W]`` at points ``coords [B, R, 2]`` (x, y) -> ``[B, R, C]``."""
    b = inp.shape[0]
    feats = bilinear_sampler(inp, coords.unsqueeze(2))  # [B, C, R, 1]
    return feats.permute(0, 2, 1, 3).reshape(b, -1, feats.shape[1] * feats.shape[3])
