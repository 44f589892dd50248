"""Multi-head attention on ``F.scaled_dot_product_attention`` with qk-norm, 2D RoPE and low-rank logit biases.

A ``LowRankBias`` adds ``sum_k row[b,i,k] * key[b,j,k]`` to every head's logits. It is folded into
SDPA by appending its K channels to q and k (PAGE-4D's extra-channel trick): no N x N mask is ever
built, and fused/flash kernels stay usable on GPU (where a broadcast ``attn_mask`` is rejected by
flash attention and may be expanded by other kernels).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from vggt_mv.layers.rope import RotaryPositionEmbedding2D


@dataclass
class LowRankBias:
    """Additive logit bias ``row @ key^T`` shared by all heads: row ``[B, Nq, K]``, key ``[B, Nk, K]``."""

    row: torch.Tensor
    key: torch.Tensor

    def __post_init__(self) -> None:
        if self.row.shape[-1] != self.key.shape[-1]:
            raise ValueError(f"bias rank mismatch: row {tuple(self.row.shape)} vs key {tuple(self.key.shape)}")

    @staticmethod
    def concat(biases: list["LowRankBias | None"]) -> "LowRankBias | None":
        biases = [b for b in biases if b is not None]
        if not biases:
            return None
        if len(biases) == 1:
            return biases[0]
        return LowRankBias(torch.cat([b.row for b in biases], -1), torch.cat([b.key for b in biases], -1))

    def dense(self) -> torch.Tensor:
        """The explicit ``[B, Nq, Nk]`` logit bias (tests / diagnostics only)."""
        return self.row @ self.key.transpose(-1, -2)


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: LowRankBias | None = None,
    key_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """SDPA over ``[B, H, N, D]`` q/k/v with an optional low-rank bias and a per-key validity mask.

    key_mask: bool ``[B, Nk]`` (True = visible), broadcast over queries (O(Nk) memory, not N x N).
    Returns ``[B, H, Nq, D]``.
    """
    d = q.shape[-1]
    scale = d**-0.5
    if bias is not None:
        heads = q.shape[1]
        row = (bias.row / scale).to(q.dtype)[:, None].expand(-1, heads, -1, -1)
        key = bias.key.to(k.dtype)[:, None].expand(-1, heads, -1, -1)
        q = torch.cat([q, row], -1)
        k = torch.cat([k, key], -1)
        # fused kernels (flash on CPU and GPU) want q/k/v of one head size (a multiple of 8 on GPU);
        # otherwise SDPA falls back to the math kernel, which materialises the N x N weights
        width = -(-q.shape[-1] // 8) * 8 if q.is_cuda else q.shape[-1]
        q, k = F.pad(q, (0, width - q.shape[-1])), F.pad(k, (0, width - k.shape[-1]))
        v = F.pad(v, (0, width - d))
    mask = None if key_mask is None else key_mask[:, None, None, :]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    return out[..., :d]


class Attention(nn.Module):
    """VGGT attention: ``qkv`` -> per-head ``q_norm``/``k_norm`` -> RoPE -> SDPA -> ``proj``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        qk_norm: bool = False,
        qk_norm_eps: float = 1e-5,
        rope: RotaryPositionEmbedding2D | None = None,
    ):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = nn.LayerNorm(self.head_dim, eps=qk_norm_eps) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim, eps=qk_norm_eps) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.rope = rope

    def project(self, x: torch.Tensor, pos: torch.Tensor | None = None):
        """x ``[B, N, C]`` -> q, k, v ``[B, H, N, D]`` (normed, rotated)."""
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.rope is not None and pos is not None:
            q, k = self.rope(q, pos), self.rope(k, pos)
        return q, k, v

    def out(self, o: torch.Tensor) -> torch.Tensor:
        """``[B, H, N, D]`` -> ``[B, N, C]`` through ``proj``."""
        b, h, n, d = o.shape
        return self.proj(o.transpose(1, 2).reshape(b, n, h * d))

    def forward(
        self, x: torch.Tensor, pos: torch.Tensor | None = None, bias: LowRankBias | None = None
    ) -> torch.Tensor:
        q, k, v = self.project(x, pos)
        return self.out(attend(q, k, v, bias))
