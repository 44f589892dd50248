"""Update transformer of the tracker: alternating time attention and virtual-track space attention."""
from __future__ import annotations

import torch
import torch.nn as nn

from vggt_mv.heads.track_modules.blocks import AttnBlock, CrossAttnBlock


class EfficientUpdateFormer(nn.Module):
    """Maps track tokens ``[B, N, T, input_dim]`` to updates ``[B, N, T, output_dim]``.

    Every layer attends over time per track; every ``time_depth // space_depth`` layers, a set of
    learned virtual tracks gathers from the points, self-attends, and is read back by the points.
    (The ``virual_tracks`` spelling is the checkpoint key.)
    """

    def __init__(
        self,
        space_depth: int = 6,
        time_depth: int = 6,
        input_dim: int = 320,
        hidden_size: int = 384,
        num_heads: int = 8,
        output_dim: int = 130,
        mlp_ratio: float = 4.0,
        add_space_attn: bool = True,
        num_virtual_tracks: int = 64,
    ):
        super().__init__()
        self.num_heads = num_heads
        self.hidden_size = hidden_size
        self.add_space_attn = add_space_attn
        self.num_virtual_tracks = num_virtual_tracks
        self.input_norm = nn.LayerNorm(input_dim)
        self.input_transform = nn.Linear(input_dim, hidden_size, bias=True)
        self.output_norm = nn.LayerNorm(hidden_size)
        self.flow_head = nn.Linear(hidden_size, output_dim, bias=True)
        self.virual_tracks: nn.Parameter | None = (
            nn.Parameter(torch.randn(1, num_virtual_tracks, 1, hidden_size)) if add_space_attn else None
        )
        self.time_blocks = nn.ModuleList(
            [AttnBlock(hidden_size, num_heads, mlp_ratio=mlp_ratio) for _ in range(time_depth)]
        )
        if add_space_attn:
            if space_depth < 1 or time_depth < space_depth:
                raise ValueError(f"need 1 <= space_depth ({space_depth}) <= time_depth ({time_depth})")
            self.space_virtual_blocks = nn.ModuleList(
                [AttnBlock(hidden_size, num_heads, mlp_ratio=mlp_ratio) for _ in range(space_depth)]
            )
            self.space_point2virtual_blocks = nn.ModuleList(
                [CrossAttnBlock(hidden_size, num_heads, mlp_ratio=mlp_ratio) for _ in range(space_depth)]
            )
            self.space_virtual2point_blocks = nn.ModuleList(
                [CrossAttnBlock(hidden_size, num_heads, mlp_ratio=mlp_ratio) for _ in range(space_depth)]
            )
        self._init_weights()

    def _init_weights(self) -> None:
        """Xavier-uniform linears with zero bias; a near-zero flow head."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)
        nn.init.trunc_normal_(self.flow_head.weight, std=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x ``[B, N, T, input_dim]`` -> ``[B, N, T, output_dim]``."""
        tokens = self.input_transform(self.input_norm(x))
        init_tokens = tokens
        b, _, t, _ = tokens.shape
        if self.virual_tracks is not None:
            tokens = torch.cat([tokens, self.virual_tracks.repeat(b, 1, t, 1)], dim=1)
        n = tokens.shape[1]
        n_pts = n - self.num_virtual_tracks if self.add_space_attn else n
        every = len(self.time_blocks) // len(self.space_virtual_blocks) if self.add_space_attn else 0

        j = 0
        for i, time_block in enumerate(self.time_blocks):
            tokens = time_block(tokens.contiguous().view(b * n, t, -1)).view(b, n, t, -1)
            if self.add_space_attn and i % every == 0:
                space = tokens.permute(0, 2, 1, 3).contiguous().view(b * t, n, -1)
                points, virtual = space[:, :n_pts], space[:, n_pts:]
                virtual = self.space_virtual2point_blocks[j](virtual, points)
                virtual = self.space_virtual_blocks[j](virtual)
                points = self.space_point2virtual_blocks[j](points, virtual)
                tokens = torch.cat([points, virtual], dim=1).view(b, t, n, -1).permute(0, 2, 1, 3)
                j += 1

        tokens = tokens[:, :n_pts] + init_tokens
        return self.flow_head(self.output_norm(tokens))
