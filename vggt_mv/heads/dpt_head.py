"""VGGT DPT head: multi-layer token maps fused into a dense prediction (or a feature map).

Follows "Vision Transformers for Dense Prediction" (Ranftl et al.) as configured in VGGT; module
names (``projects``, ``resize_layers``, ``scratch.*``) match the VGGT / PAGE-4D checkpoints.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from vggt_mv.config import DPTHeadConfig
from vggt_mv.heads.activations import activate_head

_INT_MAX = 1610612736


def interpolate_chunked(
    x: torch.Tensor,
    size: tuple[int, int] | None = None,
    scale_factor: float | None = None,
    mode: str = "bilinear",
    align_corners: bool = True,
) -> torch.Tensor:
    """``F.interpolate`` on ``[N, C, H, W]``, split along N when the output would overflow int32 indexing."""
    if size is None:
        assert scale_factor is not None
        size = (int(x.shape[-2] * scale_factor), int(x.shape[-1] * scale_factor))
    n_out = size[0] * size[1] * x.shape[0] * x.shape[1]
    if n_out > _INT_MAX:
        chunks = torch.chunk(x, chunks=(n_out // _INT_MAX) + 1, dim=0)
        out = [F.interpolate(c, size=size, mode=mode, align_corners=align_corners) for c in chunks]
        return torch.cat(out, dim=0).contiguous()
    return F.interpolate(x, size=size, mode=mode, align_corners=align_corners)


def create_uv_grid(
    width: int, height: int, aspect_ratio: float | None = None,
    dtype: torch.dtype | None = None, device: torch.device | None = None,
) -> torch.Tensor:
    """UV grid ``[height, width, 2]`` spanning ``(+-span_x, +-span_y)`` normalized by the plane diagonal."""
    if aspect_ratio is None:
        aspect_ratio = float(width) / float(height)
    diag = (aspect_ratio**2 + 1.0) ** 0.5
    span_x, span_y = aspect_ratio / diag, 1.0 / diag
    xs = torch.linspace(-span_x * (width - 1) / width, span_x * (width - 1) / width, steps=width,
                        dtype=dtype, device=device)
    ys = torch.linspace(-span_y * (height - 1) / height, span_y * (height - 1) / height, steps=height,
                        dtype=dtype, device=device)
    uu, vv = torch.meshgrid(xs, ys, indexing="xy")
    return torch.stack((uu, vv), dim=-1)


def sincos_embed_1d(embed_dim: int, pos: torch.Tensor, omega_0: float = 100) -> torch.Tensor:
    """Positions ``[M]`` -> ``[M, embed_dim]`` = ``[sin(pos*w), cos(pos*w)]``, w = omega_0^(-2i/D).

    Frequencies are built in float64 (float32 on MPS), like the reference; output is float32.
    """
    if embed_dim % 2:
        raise ValueError(f"embed_dim must be even, got {embed_dim}")
    dt = torch.float32 if pos.device.type == "mps" else torch.float64
    omega = torch.arange(embed_dim // 2, dtype=dt, device=pos.device)
    omega /= embed_dim / 2.0
    omega = 1.0 / omega_0**omega
    out = torch.einsum("m,d->md", pos.reshape(-1), omega)
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1).float()


def position_grid_to_embed(pos_grid: torch.Tensor, embed_dim: int, omega_0: float = 100) -> torch.Tensor:
    """Grid ``[H, W, 2]`` -> sinusoidal embedding ``[H, W, embed_dim]`` (x half, then y half)."""
    h, w, _ = pos_grid.shape
    flat = pos_grid.reshape(-1, 2)
    emb_x = sincos_embed_1d(embed_dim // 2, flat[:, 0], omega_0)
    emb_y = sincos_embed_1d(embed_dim // 2, flat[:, 1], omega_0)
    return torch.cat([emb_x, emb_y], dim=-1).view(h, w, embed_dim)


class ResidualConvUnit(nn.Module):
    """``relu(x) + conv2(relu(conv1(relu(x))))``.

    The reference applies an in-place ReLU to its input, so its skip connection carries ``relu(x)``;
    this is reproduced explicitly here.
    """

    def __init__(self, features: int):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, kernel_size=3, stride=1, padding=1, bias=True)
        self.conv2 = nn.Conv2d(features, features, kernel_size=3, stride=1, padding=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        return self.conv2(F.relu(self.conv1(x))) + x


class FeatureFusionBlock(nn.Module):
    """Adds the (refined) skip feature, refines, upsamples x2 (or to ``size``), then a 1x1 conv."""

    def __init__(self, features: int, has_residual: bool = True):
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, kernel_size=1, stride=1, padding=0, bias=True)
        self.has_residual = has_residual
        if has_residual:
            self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)

    def forward(
        self, x: torch.Tensor, skip: torch.Tensor | None = None, size: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """x, skip ``[N, F, h, w]`` -> ``[N, F, size]`` (``2h x 2w`` when size is None)."""
        if self.has_residual:
            assert skip is not None
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        if size is None:
            x = interpolate_chunked(x, scale_factor=2, mode="bilinear", align_corners=True)
        else:
            x = interpolate_chunked(x, size=tuple(size), mode="bilinear", align_corners=True)
        return self.out_conv(x)


class DPTHead(nn.Module):
    """Dense head on 4 intermediate token layers.

    ``forward`` returns ``(preds [B, S, H, W, output_dim-1], conf [B, S, H, W])``, or, with
    ``cfg.feature_only``, the feature map ``[B, S, features, H/down_ratio, W/down_ratio]``.
    """

    def __init__(self, cfg: DPTHeadConfig):
        super().__init__()
        if len(cfg.out_channels) != 4 or len(cfg.intermediate_layer_idx) != 4:
            raise ValueError("DPTHead needs exactly 4 out_channels and 4 intermediate_layer_idx")
        self.cfg = cfg
        self.patch_size = cfg.patch_size
        self.intermediate_layer_idx = list(cfg.intermediate_layer_idx)
        oc = cfg.out_channels
        feats = cfg.features

        self.norm = nn.LayerNorm(cfg.dim_in, eps=cfg.norm_eps)
        self.projects = nn.ModuleList([nn.Conv2d(cfg.dim_in, c, kernel_size=1, stride=1, padding=0) for c in oc])
        self.resize_layers = nn.ModuleList(
            [
                nn.ConvTranspose2d(oc[0], oc[0], kernel_size=4, stride=4, padding=0),
                nn.ConvTranspose2d(oc[1], oc[1], kernel_size=2, stride=2, padding=0),
                nn.Identity(),
                nn.Conv2d(oc[3], oc[3], kernel_size=3, stride=2, padding=1),
            ]
        )
        scratch = nn.Module()
        for i, c in enumerate(oc):
            setattr(scratch, f"layer{i + 1}_rn", nn.Conv2d(c, feats, kernel_size=3, stride=1, padding=1, bias=False))
        scratch.refinenet1 = FeatureFusionBlock(feats)
        scratch.refinenet2 = FeatureFusionBlock(feats)
        scratch.refinenet3 = FeatureFusionBlock(feats)
        scratch.refinenet4 = FeatureFusionBlock(feats, has_residual=False)
        if cfg.feature_only:
            scratch.output_conv1 = nn.Conv2d(feats, feats, kernel_size=3, stride=1, padding=1)
        else:
            scratch.output_conv1 = nn.Conv2d(feats, feats // 2, kernel_size=3, stride=1, padding=1)
            scratch.output_conv2 = nn.Sequential(
                nn.Conv2d(feats // 2, cfg.head_features_2, kernel_size=3, stride=1, padding=1),
                nn.ReLU(),
                nn.Conv2d(cfg.head_features_2, cfg.output_dim, kernel_size=1, stride=1, padding=0),
            )
        self.scratch = scratch

    def forward(
        self,
        aggregated_tokens_list: list[torch.Tensor | None],
        images: torch.Tensor,
        patch_start_idx: int,
        frames_chunk_size: int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """aggregated_tokens_list: entries ``[B, S, P, 2C]`` (only ``intermediate_layer_idx`` are read);
        images ``[B, S, 3, H, W]``. ``frames_chunk_size``: frames per chunk (None -> ``cfg.frames_chunk_size``,
        <= 0 -> no chunking); the result does not depend on it."""
        s = images.shape[1]
        chunk = self.cfg.frames_chunk_size if frames_chunk_size is None else frames_chunk_size
        if chunk is None or chunk <= 0 or chunk >= s:
            return self._forward_frames(aggregated_tokens_list, images, patch_start_idx, 0, s)
        outs = [
            self._forward_frames(aggregated_tokens_list, images, patch_start_idx, f0, min(f0 + chunk, s))
            for f0 in range(0, s, chunk)
        ]
        if self.cfg.feature_only:
            return torch.cat(outs, dim=1)  # type: ignore[arg-type]
        return torch.cat([o[0] for o in outs], dim=1), torch.cat([o[1] for o in outs], dim=1)

    def _forward_frames(
        self,
        aggregated_tokens_list: list[torch.Tensor | None],
        images: torch.Tensor,
        patch_start_idx: int,
        f0: int,
        f1: int,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Frames ``f0:f1`` -> feature map or ``(preds, conf)`` for those frames."""
        b = images.shape[0]
        s = f1 - f0
        h, w = images.shape[-2:]
        ph, pw = h // self.patch_size, w // self.patch_size

        feats = []
        for i, layer_idx in enumerate(self.intermediate_layer_idx):
            tokens = aggregated_tokens_list[layer_idx]
            if tokens is None:
                raise ValueError(f"DPTHead needs aggregated_tokens_list[{layer_idx}], got None")
            x = tokens[:, f0:f1, patch_start_idx:].reshape(b * s, -1, tokens.shape[-1])
            x = self.norm(x)
            x = x.permute(0, 2, 1).reshape(x.shape[0], x.shape[-1], ph, pw)
            x = self.projects[i](x)
            if self.cfg.pos_embed:
                x = self._apply_pos_embed(x, w, h)
            feats.append(self.resize_layers[i](x))

        out = self._fuse(feats)
        size = (int(ph * self.patch_size / self.cfg.down_ratio), int(pw * self.patch_size / self.cfg.down_ratio))
        out = interpolate_chunked(out, size, mode="bilinear", align_corners=True)
        if self.cfg.pos_embed:
            out = self._apply_pos_embed(out, w, h)
        if self.cfg.feature_only:
            return out.view(b, s, *out.shape[1:])

        out = self.scratch.output_conv2(out)
        preds, conf = activate_head(out, activation=self.cfg.activation, conf_activation=self.cfg.conf_activation)
        return preds.view(b, s, *preds.shape[1:]), conf.view(b, s, *conf.shape[1:])

    @staticmethod
    def _apply_pos_embed(x: torch.Tensor, w: int, h: int, ratio: float = 0.1) -> torch.Tensor:
        """Add ``ratio`` x a UV sin/cos embedding (aspect ratio ``w/h``) to ``x [N, C, h', w']``."""
        grid = create_uv_grid(x.shape[-1], x.shape[-2], aspect_ratio=w / h, dtype=x.dtype, device=x.device)
        pe = position_grid_to_embed(grid, x.shape[1]) * ratio
        return x + pe.permute(2, 0, 1)[None].expand(x.shape[0], -1, -1, -1)

    def _fuse(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Four maps at 4x, 2x, 1x, 1/2x patch resolution -> fused map ``[N, F', 4*ph, 4*pw]``."""
        sc = self.scratch
        l1, l2, l3, l4 = sc.layer1_rn(feats[0]), sc.layer2_rn(feats[1]), sc.layer3_rn(feats[2]), sc.layer4_rn(feats[3])
        out = sc.refinenet4(l4, size=l3.shape[2:])
        out = sc.refinenet3(out, l3, size=l2.shape[2:])
        out = sc.refinenet2(out, l2, size=l1.shape[2:])
        out = sc.refinenet1(out, l1)
        return sc.output_conv1(out)
