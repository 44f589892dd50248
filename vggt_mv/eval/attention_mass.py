"""Diagnostics: attention mass of the camera tokens on dynamic patches, per bias layer
(``camera_attention_mass``), and of the sparse layers on keypoint patches (``keypoint_attention_mass``).

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


@torch.no_grad()
def keypoint_attention_mass(model, images: torch.Tensor, keypoints: torch.Tensor, layout: str | None = None) -> list[dict]:
    """Attention mass on keypoint patches in the sparse layers, with vs without the keypoint bias.

    images ``[B,T,V,3,H,W]``, keypoints ``[B,T,V,H,W]`` in [0,1]. For every sparse layer (and stream)
    the layer's input is captured during a normal forward; its attention is then re-run with the
    layer's own key set (``sparse_attend``) and the pooled keypoint map ``K_j`` as the values, so the
    output is ``sum_j softmax_ij * K_j`` exactly (never tokens x tokens). Rows: patch queries for the
    geo stream (``main`` in tokens mode), camera queries for the pose stream. ``with`` uses the layer's
    full bias (mask + keypoint), ``without`` the mask bias alone. A positive ``lambda_kpt`` raises it.
    -> ``[{"layer", "stream", "mass_with_bias", "mass_without_bias"}]``.
    """
    from vggt_mv.layers.sparse_attention import sparse_attend

    agg, cfg = model.aggregator, model.config
    strategy = cfg.sparse.strategy
    if strategy not in ("landmark", "dilated"):
        raise ValueError(f"keypoint attention mass is measured on the landmark / dilated sparse strategies; "
                         f"this run's is {strategy!r}")
    captured: list[tuple] = []
    step = agg._sparse_step

    def capture(blk, x, pos, layer, stream, key_value, tv, scores, kpts=None):
        captured.append((blk, x, pos, layer, stream, key_value, tv, scores, kpts))
        return step(blk, x, pos, layer, stream, key_value, tv, scores, kpts)

    agg._sparse_step = capture
    try:
        model.run_aggregator(images, layout=layout, ext_keypoints=keypoints)
    finally:
        del agg._sparse_step
    psi = agg.patch_start_idx
    results = []
    for blk, x, pos, layer, stream, key_value, (t, v), scores, kpts in captured:
        b, tg, vg, n, c = x.shape
        flat = x.reshape(b, -1, c)
        h = blk.norm1(flat)
        q, k, _ = blk.attn.project(h, pos.repeat(t * v, 1)[None].expand(b, -1, -1))
        if strategy == "landmark" and scores is None:  # the saliency anchors sparse_global_block picks
            patches = h.reshape(b, t * v, n, c)[:, :, psi:]
            scores = (patches - patches.mean(2, keepdim=True)).norm(dim=-1)
        elif scores is not None:
            scores = scores.reshape(b, t * v, -1)
        kmap = torch.nn.functional.pad(kpts.reshape(b, t * v, -1), (psi, 0)).reshape(b, 1, -1, 1)
        values = kmap.expand(-1, q.shape[1], -1, q.shape[-1]).to(q.dtype)  # K_j in every channel
        rows = torch.arange(t * v * n, device=x.device) % n
        rows = rows < 1 if stream == "pose" else rows >= psi
        res = {"layer": layer, "stream": stream}
        for label, kp in (("mass_without_bias", None), ("mass_with_bias", kpts)):
            bias = agg.sparse_bias(x, layer, stream, key_value, kp)
            o = sparse_attend(q, k, values, strategy, (t, v, n), n_special=psi, bias=bias,
                              landmark_k=cfg.sparse.landmark_k, landmark_scores=scores,
                              offsets=cfg.sparse.dilated_offsets)
            res[label] = float(o[:, :, rows, 0].mean())
        results.append(res)
    return results
