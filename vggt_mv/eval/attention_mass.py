"""Diagnostic: how much attention the camera tokens put on dynamic patches, per bias layer.

For every View-SA (global) block in ``mask.bias_layers`` the block's input is captured during a
normal forward; the camera-token query rows (one per image, what the camera head reads) are then
re-scored against all keys with and without the dynamic-mask bias. The reported mass is
``sum_j softmax_ij * m_j`` over patch keys (m = probability a patch is dynamic), averaged over
heads and camera rows: a positive ``lambda_pose`` should push it down. Only the camera rows are
scored, so the cost is O(images x tokens), never tokens x tokens.
"""
from __future__ import annotations

import torch

from vggt_mv.layers.attention import LowRankBias


@torch.no_grad()
def camera_attention_mass(model, images: torch.Tensor, layout: str | None = None) -> list[dict]:
    """images ``[B,T,V,3,H,W]`` (or 5-D) -> one row per (bias layer, stream):
    ``{"layer", "stream", "mass_with_bias", "mass_without_bias"}``."""
    agg = model.aggregator
    cfg = model.config
    if not cfg.mask.enabled:
        raise ValueError(f"preset {cfg.name!r} has no dynamic-mask head: nothing to diagnose")
    layers = sorted(i for i in cfg.mask.bias_layers if i not in agg.sparse_layers)
    captured: dict[int, list[tuple]] = {i: [] for i in layers}
    hooks = []
    blocks = {}
    for i in layers:
        for name in ("global_blocks", "pose_global_blocks"):
            mods = getattr(agg, name, None)
            if mods is None:
                continue
            j = i if name == "global_blocks" else i - agg.fork_layer
            if 0 <= j < len(mods):
                blk = mods[j]
                blocks.setdefault(i, []).append(blk)
                hooks.append(blk.register_forward_pre_hook(
                    lambda m, args, i=i: captured[i].append((m, args[0], args[1], args[2] if len(args) > 2 else None))))
    try:
        out = model.run_aggregator(images, layout=layout)
    finally:
        for h in hooks:
            h.remove()
    if out.dynamic_mask is None:
        raise ValueError("the model produced no dynamic mask")
    m = out.dynamic_mask  # [B,T,V,h,w]
    b, t, v = m.shape[:3]
    five_d = images.dim() == 5 or images.shape[2] == 1
    flat = five_d or (layout or cfg.layout) == "flat"
    groups, per_group = (b, t * v) if flat else (b * t, v)
    psi = agg.patch_start_idx
    m_keys = torch.nn.functional.pad(m.reshape(groups, per_group, -1), (psi, 0)).reshape(groups, -1)  # [G, n_img*P]
    n = m_keys.shape[1] // per_group
    rows = torch.arange(per_group, device=m.device) * n  # camera token of each image in the group
    streams = ["pose", "geo"] if cfg.mask.mode == "streams" else ["main"]
    results = []
    for i in layers:
        for call, stream in zip(captured[i], streams):
            blk, x, pos, bias = call
            q, k, _ = blk.attn.project(blk.norm1(x), pos)
            q = q[:, :, rows]
            logits = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5  # [G, H, rows, N]
            res = {"layer": i, "stream": stream}
            for label, bb in (("mass_without_bias", None), ("mass_with_bias", bias)):
                lg = logits
                if isinstance(bb, LowRankBias):
                    lg = lg + (bb.row[:, rows] @ bb.key.transpose(-1, -2))[:, None]
                p = lg.softmax(-1)
                res[label] = float((p * m_keys[:, None, None]).sum(-1).mean())
            results.append(res)
    return results
