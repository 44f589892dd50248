"""The VGGT-MV aggregator: DINO patch tokens + special tokens -> alternating Time-SA / View-SA layers.

Internally tokens are ``[B, Tg, Vg, P, C]`` "attention groups":

* factorized 6-D input: (Tg, Vg) = (T, V); Time-SA (``frame_blocks[i]``) runs on ``[B*V, T*P, C]``,
  View-SA (``global_blocks[i]``) on ``[B*T, V*P, C]``.
* flat 6-D input and 5-D input: (Tg, Vg) = (1, N) with N = T*V (or S) images in t-major order, so
  Time-SA is VGGT's per-frame attention and View-SA is VGGT's global attention over all images.

Layer i's output entry is ``cat([time_out, view_out], -1)`` (VGGT's ``[frame, global]`` order).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from vggt_mv.config import ModelConfig
from vggt_mv.layers import Block, LowRankBias, RotaryPositionEmbedding2D, patch_positions
from vggt_mv.layers.sparse_attention import sparse_global_block
from vggt_mv.model.encoder import DinoEncoder
from vggt_mv.model.epipolar import EpipolarPrior, epipolar_bias
from vggt_mv.model.keypoint_bias import KeypointBiasControl, keypoint_bias
from vggt_mv.model.mask_bias import MaskBiasControl, mask_bias, relative_time_bias
from vggt_mv.model.mask_head import build_mask_head


@dataclass
class AggregatorState:
    """Everything needed to resume the layer loop at the input of ``layer`` (pipeline cache)."""

    layer: int
    streams: dict[str, torch.Tensor]
    outputs: list[torch.Tensor]
    mask_logit: torch.Tensor | None
    external: torch.Tensor | None


@dataclass
class AggregatorOutput:
    """pose_tokens / geo_tokens: per layer ``[B,T,V,P,2C]`` (identical lists unless ``streams`` mode)."""

    pose_tokens: list[torch.Tensor]
    geo_tokens: list[torch.Tensor]
    patch_start_idx: int
    mask_logit: torch.Tensor | None = None  # [B,T,V,h,w]
    dynamic_mask: torch.Tensor | None = None  # [B,T,V,h,w], probability a patch is dynamic
    snapshot: AggregatorState | None = None
    extras: dict = field(default_factory=dict)


def _slot_tokens(token: torch.Tensor, b: int, tg: int, vg: int) -> torch.Tensor:
    """token ``[1, 2, n, C]`` -> ``[B, Tg, Vg, n, C]``: slot 0 for the reference image (0, 0), slot 1 elsewhere."""
    slot = torch.ones(tg * vg, dtype=torch.long, device=token.device)
    slot[0] = 0
    n, c = token.shape[2:]
    return token[0, slot].expand(b, -1, -1, -1).reshape(b, tg, vg, n, c)


class Aggregator(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        c = cfg.embed_dim
        self.patch_embed = DinoEncoder(cfg.dino)
        if cfg.dino.embed_dim != c:
            raise ValueError(f"dino.embed_dim {cfg.dino.embed_dim} must equal embed_dim {c}")
        self.rope = RotaryPositionEmbedding2D(cfg.rope_freq) if cfg.rope_freq > 0 else None

        def block() -> Block:
            return Block(c, cfg.num_heads, cfg.mlp_ratio, cfg.qkv_bias, cfg.proj_bias, cfg.ffn_bias,
                         init_values=cfg.layerscale_init, qk_norm=cfg.qk_norm, norm_eps=cfg.norm_eps,
                         qk_norm_eps=cfg.qk_norm_eps, rope=self.rope)

        self.frame_blocks = nn.ModuleList(block() for _ in range(cfg.depth))
        self.global_blocks = nn.ModuleList(block() for _ in range(cfg.depth))
        self.camera_token = nn.Parameter(torch.zeros(1, 2, 1, c))
        self.register_token = nn.Parameter(torch.zeros(1, 2, cfg.num_register_tokens, c))
        if not self.camera_token.is_meta:
            nn.init.normal_(self.camera_token, std=1e-6)
            nn.init.normal_(self.register_token, std=1e-6)
        self.patch_start_idx = 1 + cfg.num_register_tokens
        self.register_buffer("_resnet_mean", torch.tensor(cfg.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_resnet_std", torch.tensor(cfg.image_std).view(1, 3, 1, 1), persistent=False)

        m = cfg.mask
        self.fork_layer: int | None = None
        if m.enabled:
            self.spatial_mask_head = build_mask_head(m.head, c, m.hidden)
            self.mask_bias = MaskBiasControl(m)
            self.bias_layers = frozenset(m.bias_layers)
            if m.mode == "streams":
                self.fork_layer = min(m.bias_layers)
                if m.separate_stream_blocks:  # pose-stream copies, initialised by copying at load time
                    self.pose_frame_blocks = nn.ModuleList(block() for _ in range(self.fork_layer, cfg.depth))
                    self.pose_global_blocks = nn.ModuleList(block() for _ in range(self.fork_layer, cfg.depth))
        else:
            self.bias_layers = frozenset()
        s = cfg.sparse
        self.keypoint_bias = KeypointBiasControl(s)
        if s.strategy == "memory_bank":
            self.memory_tokens = nn.Parameter(torch.zeros(len(s.layers), s.memory_tokens, c))
            if not self.memory_tokens.is_meta:
                nn.init.normal_(self.memory_tokens, std=0.02)

    # ------------------------------------------------------------------ helpers
    @property
    def sparse_layers(self) -> frozenset[int]:
        """Layers whose View-SA is replaced by sparse global attention (read live from the config,
        so switching ``config.sparse.strategy`` between runs takes effect)."""
        s = self.cfg.sparse
        return frozenset(s.layers) if s.strategy != "none" else frozenset()

    def copy_stream_blocks(self) -> None:
        """Initialise the separate pose-stream blocks as copies of the shared ones."""
        if hasattr(self, "pose_frame_blocks"):
            for i, (pf, pg) in enumerate(zip(self.pose_frame_blocks, self.pose_global_blocks)):
                pf.load_state_dict(self.frame_blocks[self.fork_layer + i].state_dict())
                pg.load_state_dict(self.global_blocks[self.fork_layer + i].state_dict())

    def _blocks(self, layer: int, stream: str) -> tuple[Block, Block]:
        if stream == "pose" and hasattr(self, "pose_frame_blocks"):
            j = layer - self.fork_layer
            return self.pose_frame_blocks[j], self.pose_global_blocks[j]
        return self.frame_blocks[layer], self.global_blocks[layer]

    def first_affected_layer(self) -> int:
        """First layer whose computation depends on lambdas or sparse settings (cache boundary)."""
        cands = [self.cfg.depth]
        if self.cfg.mask.enabled:
            cands.append(min(self.cfg.mask.bias_layers))
        cands.append(min(self.cfg.sparse.layers))  # a strategy switched on later starts here
        return min(cands)

    def embed(self, images: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """images ``[B, N, 3, H, W]`` in [0, 1] -> tokens ``[B, Tg, Vg, P, C]``."""
        b, n, _, h, w = images.shape
        x = (images.reshape(b * n, 3, h, w) - self._resnet_mean) / self._resnet_std
        patches = self.patch_embed(x).reshape(b, *grid, -1, self.cfg.embed_dim)
        tg, vg = grid
        cam = _slot_tokens(self.camera_token, b, tg, vg)
        reg = _slot_tokens(self.register_token, b, tg, vg)
        return torch.cat([cam, reg, patches], 3)

    # ------------------------------------------------------------------ forward
    def forward(self, images: torch.Tensor, **kw) -> tuple[list[torch.Tensor], int]:
        """VGGT-style: images ``[B,S,3,H,W]`` or ``[B,T,V,3,H,W]`` -> (per-layer ``[.., P, 2C]`` list, patch_start_idx).

        In ``streams`` mode the list is the geo stream (what the depth/point heads read).
        """
        five_d = images.dim() == 5
        imgs = images[:, :, None] if five_d else images
        layout = kw.pop("layout", "flat" if five_d else self.cfg.layout)
        out = self.run(imgs, layout=layout, five_d=five_d, **kw)
        tokens = out.geo_tokens
        if five_d:
            tokens = [t[:, :, 0] for t in tokens]
        return tokens, out.patch_start_idx

    def run(
        self,
        images: torch.Tensor,
        layout: str = "flat",
        *,
        five_d: bool = False,
        ext_masks: torch.Tensor | None = None,
        resume: AggregatorState | None = None,
        snapshot_at: int | None = None,
        landmark_scores: torch.Tensor | None = None,
        stop_after: int | None = None,
        epipolar: EpipolarPrior | None = None,
        keypoints: torch.Tensor | None = None,
    ) -> AggregatorOutput:
        """images ``[B, T, V, 3, H, W]`` (5-D input as V=1, T=S) -> ``AggregatorOutput`` with ``[B,T,V,P,2C]`` entries.

        ext_masks: optional ``[B, T, V, h, w]`` external dynamic mask already pooled to the patch grid.
        resume/snapshot_at: cache support (``AggregatorState`` at the input of a layer).
        landmark_scores: optional ``[B, T, V, h*w]`` anchor scores for ``landmark`` sparse attention.
        epipolar: optional calibrated-rig prior added to every (non-sparse) View-SA step (factorized only).
        keypoints: optional ``[B, T, V, h*w]`` keypoint map pooled to the patch grid (keypoint bias of
          the sparse layers; see ``vggt_mv.model.keypoint_bias``).
        """
        cfg = self.cfg
        b, t, v, _, h, w = images.shape
        p = cfg.patch_size
        gh, gw = h // p, w // p
        flat = layout == "flat" or five_d
        tg, vg = (1, t * v) if flat else (t, v)
        n_tok = self.patch_start_idx + gh * gw
        epi_bias = None
        if epipolar is not None:
            if flat:
                raise ValueError("the epipolar prior acts on factorized View-SA; use layout='factorized' with V > 1")
            epi_bias = epipolar_bias(epipolar, gh, gw, p, self.patch_start_idx)
        pos = patch_positions(1, gh, gw, self.patch_start_idx, images.device)[0]  # [P, 2]

        if resume is not None:
            streams = dict(resume.streams)
            shared = list(resume.outputs)
            mask_logit, external = resume.mask_logit, resume.external
            start = resume.layer
        else:
            x = self.embed(images.reshape(b, t * v, *images.shape[3:]), (tg, vg))
            streams = {"main": x}
            shared = []
            mask_logit = None
            external = None if ext_masks is None else ext_masks.reshape(b, tg, vg, gh * gw)
            start = 0
        per_stream: dict[str, list[torch.Tensor]] = {k: [] for k in streams}
        snapshot = None
        stop = cfg.depth if stop_after is None else stop_after + 1

        for i in range(start, stop):
            if snapshot_at == i and len(streams) == 1:
                snapshot = AggregatorState(i, dict(streams), list(shared), mask_logit, external)
            if i == self.fork_layer and "main" in streams:
                streams = {"pose": streams["main"], "geo": streams["main"]}
                per_stream = {"pose": [], "geo": []}
            key_value = None
            if i in self.bias_layers:
                key_value = self._key_value(mask_logit, external)  # [B, Tg, Vg, P]
            for name in list(streams):
                xs = streams[name]
                fblk, gblk = self._blocks(i, name)
                outs = {}
                for step in cfg.aa_order:
                    if step == "time":
                        xs = self._time_step(fblk, xs, pos, i, name, key_value)
                        if i == cfg.mask.mask_layer and cfg.mask.enabled and mask_logit is None:
                            mask_logit = self._mask_logit(xs, gh, gw)
                    elif i in self.sparse_layers:
                        xs = self._sparse_step(gblk, xs, pos, i, name, key_value, (t, v),
                                               landmark_scores, keypoints)
                    else:
                        xs = self._view_step(gblk, xs, pos, i, name, key_value, epi_bias)
                    outs[step] = xs
                streams[name] = xs
                entry = torch.cat([outs["time"], outs["view"]], -1)
                (shared if len(streams) == 1 else per_stream[name]).append(entry)

        def to_tv(lst: list[torch.Tensor]) -> list[torch.Tensor]:
            return [e.reshape(b, t, v, n_tok, -1) for e in lst]

        if "main" in streams:
            pose = geo = to_tv(shared)
        else:
            pose, geo = to_tv(shared + per_stream["pose"]), to_tv(shared + per_stream["geo"])
        out = AggregatorOutput(pose, geo, self.patch_start_idx, snapshot=snapshot)
        if mask_logit is not None:
            out.mask_logit = mask_logit.reshape(b, t, v, gh, gw)
            out.dynamic_mask = self._probability(mask_logit, external).reshape(b, t, v, gh, gw)
        return out

    # ------------------------------------------------------------------ steps
    def _mask_logit(self, x: torch.Tensor, gh: int, gw: int) -> torch.Tensor:
        """Patch tokens of ``x [B,Tg,Vg,P,C]`` (detached) -> logit ``[B, Tg, Vg, h*w]``."""
        b, tg, vg, _, c = x.shape
        patches = x[:, :, :, self.patch_start_idx:].detach()
        grid = patches.reshape(b * tg * vg, gh, gw, c).permute(0, 3, 1, 2)
        return self.spatial_mask_head(grid).reshape(b, tg, vg, gh * gw)

    def _probability(self, logit: torch.Tensor, external: torch.Tensor | None) -> torch.Tensor:
        mb = self.mask_bias
        return self.spatial_mask_head.probability(
            logit, self.cfg.mask.logit_sign, mb.feature_gain, external, mb.external_gain, gate=mb.gate
        )

    def _key_value(self, logit: torch.Tensor | None, external: torch.Tensor | None) -> torch.Tensor:
        """(m_j - c0) on patch keys, 0 on special keys: ``[B, Tg, Vg, P]``."""
        if logit is None:
            raise RuntimeError("mask bias requested before the mask was computed; check mask_layer < bias_layers")
        m = self._probability(logit, external) - self.cfg.mask.mask_center
        return F.pad(m, (self.patch_start_idx, 0))

    def _row_weight(self, stream: str, n_tok: int, block_kind: str, ref: torch.Tensor) -> torch.Tensor | None:
        """r_i per token of one image ``[P]``, or None when the bias is inactive for this step."""
        m = self.cfg.mask
        if block_kind not in m.bias_blocks:
            return None
        pose_name, geo_name = ("lambda_pose", "lambda_geo") if block_kind == "global" else ("lambda_pose_t", "lambda_geo_t")
        mb = self.mask_bias
        pose_on = stream in ("main", "pose") and mb.is_active(pose_name)
        geo_on = stream in ("main", "geo") and mb.is_active(geo_name)
        if not (pose_on or geo_on):
            return None
        zero = torch.zeros((), dtype=ref.dtype, device=ref.device)
        r_pose = -mb.value(pose_name).to(ref) if pose_on else zero
        r_geo = mb.value(geo_name).to(ref) if geo_on else zero
        if stream == "pose":
            return r_pose.expand(n_tok)
        if stream == "geo":
            return r_geo.expand(n_tok)
        is_special = torch.arange(n_tok, device=ref.device) < self.patch_start_idx
        return torch.where(is_special, r_pose, r_geo)

    def _bias(self, stream, layer, kind, key_value, n_tok, ref, groups_fn) -> LowRankBias | None:
        if key_value is None:
            return None
        r = self._row_weight(stream, n_tok, kind, ref)
        if r is None:
            return None
        b, tg, vg, _ = key_value.shape
        rows = r.expand(b, tg, vg, n_tok)
        return mask_bias(groups_fn(rows), groups_fn(key_value))

    def _time_step(self, blk, x, pos, layer, stream, key_value):
        b, tg, vg, n, c = x.shape
        group = lambda z: z.transpose(1, 2).reshape(b * vg, tg * n, *z.shape[4:])  # noqa: E731
        bias = self._bias(stream, layer, "frame", key_value, n, x, group)
        if self.cfg.time_bias.strength and tg > 1:
            times = torch.arange(tg, device=x.device, dtype=x.dtype).repeat_interleave(n)
            bias = LowRankBias.concat([bias, relative_time_bias(times.expand(b * vg, -1), self.cfg.time_bias.strength)])
        y = blk(group(x), pos.repeat(tg, 1).expand(b * vg, -1, -1), bias)
        return y.reshape(b, vg, tg, n, c).transpose(1, 2)

    def _view_step(self, blk, x, pos, layer, stream, key_value, extra_bias=None):
        b, tg, vg, n, c = x.shape
        group = lambda z: z.reshape(b * tg, vg * n, *z.shape[4:])  # noqa: E731
        bias = LowRankBias.concat([self._bias(stream, layer, "global", key_value, n, x, group), extra_bias])
        y = blk(group(x), pos.repeat(vg, 1).expand(b * tg, -1, -1), bias)
        return y.reshape(b, tg, vg, n, c)

    def sparse_bias(self, x, layer, stream, key_value, keypoints=None) -> LowRankBias | None:
        """The sparse layer's logit bias over the flat ``T*V*P`` tokens of ``x [B,Tg,Vg,P,C]``:
        the mask bias (bias layers) concatenated with the keypoint bias (``keypoints [B,T,V,h*w]``)."""
        b, tg, vg, n, _ = x.shape
        flat_fn = lambda z: z.reshape(b, tg * vg * n, *z.shape[4:])  # noqa: E731
        bias = self._bias(stream, layer, "global", key_value, n, x, flat_fn)
        if keypoints is not None:
            r = self.keypoint_bias.row_weight(stream, n, self.patch_start_idx, x)
            if r is not None:
                bias = LowRankBias.concat([bias, keypoint_bias(r, keypoints.reshape(b, tg * vg, -1),
                                                               self.patch_start_idx)])
        return bias

    def _sparse_step(self, blk, x, pos, layer, stream, key_value, tv, landmark_scores, keypoints=None):
        b, tg, vg, n, c = x.shape
        t, v = tv
        bias = self.sparse_bias(x, layer, stream, key_value, keypoints)
        s = self.cfg.sparse
        memory = None
        if s.strategy == "memory_bank":
            if not hasattr(self, "memory_tokens"):
                raise ValueError("sparse strategy 'memory_bank' needs memory tokens, which exist only in a model "
                                 "built with that strategy: build VGGTMV with config.sparse.strategy='memory_bank'")
            memory = self.memory_tokens[sorted(s.layers).index(layer)][None]
        scores = None if landmark_scores is None else landmark_scores.reshape(b, t * v, -1)
        y = sparse_global_block(
            blk, x.reshape(b, t, v, n, c), pos, s.strategy, n_special=self.patch_start_idx,
            bias=bias, landmark_k=s.landmark_k, landmark_scores=scores, offsets=s.dilated_offsets,
            memory=memory,
        )
        return y.reshape(b, tg, vg, n, c)
