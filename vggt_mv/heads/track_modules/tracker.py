"""Iterative point tracker on dense feature maps (VGGSfM / CoTracker style), as used by VGGT."""
from __future__ import annotations

import torch
import torch.nn as nn

from vggt_mv.heads.track_modules.correlation import CorrBlock
from vggt_mv.heads.track_modules.update_former import EfficientUpdateFormer
from vggt_mv.heads.track_modules.utils import flow_embedding, sample_features4d, sincos_pos_embed_2d
from vggt_mv.layers import Mlp


class BaseTrackerPredictor(nn.Module):
    """Refines tracks of query points through all frames.

    Per iteration: sample correlations around the current positions, embed the flow from the query
    frame, run the update transformer, and update coordinates and track features.
    """

    def __init__(
        self,
        stride: int = 1,
        corr_levels: int = 5,
        corr_radius: int = 4,
        latent_dim: int = 128,
        hidden_size: int = 384,
        use_spaceatt: bool = True,
        depth: int = 6,
        num_heads: int = 8,
        num_virtual_tracks: int = 64,
        mlp_ratio: float = 4.0,
        max_scale: int = 518,
        predict_conf: bool = True,
    ):
        super().__init__()
        self.stride = stride
        self.latent_dim = latent_dim
        self.corr_levels = corr_levels
        self.corr_radius = corr_radius
        self.hidden_size = hidden_size
        self.max_scale = max_scale
        self.predict_conf = predict_conf
        self.flows_emb_dim = latent_dim // 2

        self.corr_mlp = Mlp(corr_levels * (2 * corr_radius + 1) ** 2, hidden_size, latent_dim)
        self.transformer_dim = 3 * latent_dim + 4
        self.query_ref_token = nn.Parameter(torch.randn(1, 2, self.transformer_dim))
        self.updateformer = EfficientUpdateFormer(
            space_depth=depth if use_spaceatt else 0,
            time_depth=depth,
            input_dim=self.transformer_dim,
            hidden_size=hidden_size,
            num_heads=num_heads,
            output_dim=latent_dim + 2,
            mlp_ratio=mlp_ratio,
            add_space_attn=use_spaceatt,
            num_virtual_tracks=num_virtual_tracks,
        )
        self.fmap_norm = nn.LayerNorm(latent_dim)
        self.ffeat_norm = nn.GroupNorm(1, latent_dim)
        self.ffeat_updater = nn.Sequential(nn.Linear(latent_dim, latent_dim), nn.GELU())
        self.vis_predictor = nn.Sequential(nn.Linear(latent_dim, 1))
        if predict_conf:
            self.conf_predictor = nn.Sequential(nn.Linear(latent_dim, 1))

    def forward(
        self,
        query_points: torch.Tensor,
        fmaps: torch.Tensor,
        iters: int = 6,
        down_ratio: int = 1,
        apply_sigmoid: bool = True,
        query_img_idx: int = 0,
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor | None]:
        """query_points ``[B, N, 2]`` (image pixels, x y), fmaps ``[B, S, C, h, w]``.

        Returns (coords per iteration ``[B, S, N, 2]`` in image pixels, vis ``[B, S, N]``,
        conf ``[B, S, N]`` or None). The query frame's coordinates stay at the query points.
        """
        b, n, d = query_points.shape
        _, s, c, hh, ww = fmaps.shape
        if d != 2:
            raise ValueError(f"query points must be [B, N, 2], got {tuple(query_points.shape)}")
        lat = self.latent_dim

        fmaps = self.fmap_norm(fmaps.permute(0, 1, 3, 4, 2)).permute(0, 1, 4, 2, 3)
        if down_ratio > 1:
            query_points = query_points / float(down_ratio)
        query_points = query_points / float(self.stride)

        coords = query_points.clone().reshape(b, 1, n, 2).repeat(1, s, 1, 1)
        query_feat = sample_features4d(fmaps[:, query_img_idx], coords[:, 0])  # [B, N, C]
        track_feats = query_feat.unsqueeze(1).repeat(1, s, 1, 1)  # [B, S, N, C]
        coords_query = coords[:, :1].clone()
        corr_fn = CorrBlock(fmaps, num_levels=self.corr_levels, radius=self.corr_radius)

        # Fixed 2-D position of each query point, and the query-frame / other-frame marker tokens.
        pos_embed = sincos_pos_embed_2d(self.transformer_dim, (hh, ww), device=query_points.device)
        pos_embed = pos_embed.to(query_points.dtype)
        query_pos = sample_features4d(pos_embed.expand(b, -1, -1, -1), coords[:, 0]).reshape(b * n, 1, -1)
        ref_token = torch.cat(
            [self.query_ref_token[:, 0:1], self.query_ref_token[:, 1:2].expand(-1, s - 1, -1)], dim=1
        )

        coord_preds: list[torch.Tensor] = []
        for _ in range(iters):
            coords = coords.detach()
            fcorrs = corr_fn.corr_sample(track_feats, coords)  # [B, S, N, L]
            fcorrs = self.corr_mlp(fcorrs.permute(0, 2, 1, 3).reshape(b * n, s, fcorrs.shape[3]))

            flows = (coords - coords[:, 0:1]).permute(0, 2, 1, 3).reshape(b * n, s, 2)
            flows_emb = flow_embedding(flows, self.flows_emb_dim)
            flows_emb = torch.cat([flows_emb, flows / self.max_scale, flows / self.max_scale], dim=-1)

            feats = track_feats.permute(0, 2, 1, 3).reshape(b * n, s, lat)
            x = torch.cat([flows_emb, fcorrs, feats], dim=2) + query_pos
            x = x + ref_token.to(device=x.device, dtype=x.dtype)

            delta = self.updateformer(x.reshape(b, n, s, -1)).reshape(b * n, s, -1)
            delta_coords, delta_feats = delta[:, :, :2], delta[:, :, 2:]

            feats = feats.reshape(b * n * s, lat)
            feats = self.ffeat_updater(self.ffeat_norm(delta_feats.reshape(b * n * s, lat))) + feats
            track_feats = feats.reshape(b, n, s, lat).permute(0, 2, 1, 3)  # [B, S, N, C]

            coords = coords + delta_coords.reshape(b, n, s, 2).permute(0, 2, 1, 3)
            coords = torch.cat([coords_query, coords[:, 1:]], dim=1)  # frame 0 stays at the query points
            coord_preds.append(coords * self.stride * (down_ratio if down_ratio > 1 else 1))

        flat = track_feats.reshape(b * s * n, lat)
        vis = self.vis_predictor(flat).reshape(b, s, n)
        conf = self.conf_predictor(flat).reshape(b, s, n) if self.predict_conf else None
        if apply_sigmoid:
            vis = torch.sigmoid(vis)
            conf = torch.sigmoid(conf) if conf is not None else None
        return coord_preds, vis, conf
