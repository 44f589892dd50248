"""Auxiliary View-SA correspondence supervision (training only).

A tiny model trained from scratch on a CPU budget learns per-view depth quickly but does not
discover cross-view matching by itself: its camera and point heads collapse to the mean rig (the
same relative rotation for every non-reference camera, whatever the images). This loss teaches the
View-SA attention of a few early layers *where* to look: for every patch of view ``a`` with a
visible ground-truth correspondence in view ``c`` (same timestep), the attention logits of one head
(``head``), soft-maxed over the patches of view ``c``, should put their mass on that patch. The
value it then reads carries the matched patch's position, which is what relative pose needs.

Only the View-SA blocks' inputs are captured (forward pre-hooks registered for one forward pass,
then removed); q and k are recomputed with the block's own ``norm1`` and ``attn.project`` so the
loss differentiates through exactly the weights the model uses.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F


def patch_correspondences(batch: dict[str, torch.Tensor], patch: int = 14,
                          depth_tol: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """Ground-truth patch matches between the views of each timestep.

    Uses ``world_points [B,T,V,H,W,3]`` (common frame), ``valid``, ``depth [B,T,V,H,W]``,
    ``extrinsic [B,T,V,3,4]`` (camera-from-common) and ``intrinsic [B,T,V,3,3]``. Each patch is
    represented by its centre pixel; its 3D point is projected into every other view ``c`` and
    kept when it lands inside the image in front of the camera and agrees with view ``c``'s depth
    there within ``depth_tol`` (relative), i.e. is not occluded.

    Returns ``key [B,T,Va,Vc,h*w]`` (index of the matching patch in view ``c``, row-major) and
    ``ok [B,T,Va,Vc,h*w]`` (bool; always False for ``a == c``).
    """
    depth = batch["depth"]
    b, t, v, hh, ww = depth.shape
    h, w = hh // patch, ww // patch
    dev = depth.device
    ys = torch.arange(h, device=dev) * patch + patch // 2
    xs = torch.arange(w, device=dev) * patch + patch // 2
    pts = batch["world_points"][:, :, :, ys][:, :, :, :, xs]          # [B,T,Va,h,w,3]
    valid = batch["valid"][:, :, :, ys][:, :, :, :, xs]                # [B,T,Va,h,w]
    ext, intr = batch["extrinsic"], batch["intrinsic"]
    rot, trans = ext[..., :3], ext[..., 3]                              # [B,T,Vc,3,3], [B,T,Vc,3]
    cam = torch.einsum("btcij,btahwj->btcahwi", rot, pts) + trans[:, :, :, None, None, None, :]
    z = cam[..., 2]                                                     # [B,T,Vc,Va,h,w]
    fx, fy = intr[..., 0, 0], intr[..., 1, 1]
    cx, cy = intr[..., 0, 2], intr[..., 1, 2]
    zs = z.clamp(min=1e-6)
    u = torch.round(fx[..., None, None, None] * cam[..., 0] / zs + cx[..., None, None, None])
    vv = torch.round(fy[..., None, None, None] * cam[..., 1] / zs + cy[..., None, None, None])
    inside = (z > 1e-6) & (u >= 0) & (u <= ww - 1) & (vv >= 0) & (vv <= hh - 1)
    ui, vi = u.clamp(0, ww - 1).long(), vv.clamp(0, hh - 1).long()
    pix = (vi * ww + ui).reshape(b, t, v, -1)                           # [B,T,Vc,Va*h*w]
    d_c = torch.gather(depth.reshape(b, t, v, hh * ww), 3, pix).reshape_as(z)
    visible = (d_c > 0) & ((z - d_c).abs() <= depth_tol * d_c)
    key = (vi // patch) * w + ui // patch                               # [B,T,Vc,Va,h,w]
    same = torch.eye(v, dtype=torch.bool, device=dev)[:, :, None, None]  # [Vc,Va,1,1]
    ok = inside & visible & valid[:, :, None] & ~same
    # -> [B,T,Va,Vc,h*w]
    return key.transpose(2, 3).reshape(b, t, v, v, h * w), ok.transpose(2, 3).reshape(b, t, v, v, h * w)


def correspondence_loss(block: torch.nn.Module, x: torch.Tensor, pos: torch.Tensor | None,
                        key: torch.Tensor, ok: torch.Tensor, patch_start: int, head: int = 0) -> torch.Tensor:
    """Cross-entropy of one View-SA block's attention logits against GT patch matches.

    ``x [B*T, V*P, C]`` / ``pos`` are the block's inputs (views contiguous, ``P = patch_start +
    h*w`` tokens each); ``key`` / ``ok`` ``[B,T,Va,Vc,h*w]`` from :func:`patch_correspondences`.
    The logits of ``head`` for query patches of view ``a`` are soft-maxed over the patches of view
    ``c``; the loss is the mean negative log-probability of the true match over ``ok`` entries.
    """
    bt, n, _ = x.shape
    b, t, v, _, hw = key.shape
    p = n // v
    if bt != b * t or p * v != n or p - patch_start != hw:
        raise ValueError(f"View-SA input {tuple(x.shape)} does not match {v} views of {hw} patches "
                         f"(+{patch_start} special tokens) for B*T={b * t}")
    q, k, _ = block.attn.project(block.norm1(x), pos)                  # [BT, H, N, D]
    q, k = q[:, head], k[:, head]
    logits = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5          # [BT, N, N]
    logits = logits.reshape(bt, v, p, v, p)[:, :, patch_start:, :, patch_start:]  # [BT,Va,hw,Vc,hw]
    logp = F.log_softmax(logits.permute(0, 1, 3, 2, 4).float(), dim=-1)  # [BT,Va,Vc,hw_q,hw_k]
    key = key.reshape(bt, v, v, hw)
    ok = ok.reshape(bt, v, v, hw)
    picked = torch.gather(logp, 4, key[..., None]).squeeze(-1)         # [BT,Va,Vc,hw]
    if not bool(ok.any()):
        return logits.sum() * 0.0
    return -(picked * ok).sum() / ok.sum()


@contextmanager
def capture_view_inputs(aggregator: torch.nn.Module, layers: list[int]) -> Iterator[list[tuple[torch.nn.Module, torch.Tensor, torch.Tensor | None]]]:
    """Within the context, record ``(block, x, pos)`` each time ``global_blocks[i]`` (View-SA in
    the factorized layout) runs for ``i`` in ``layers``; hooks are removed on exit."""
    captured: list[tuple[torch.nn.Module, torch.Tensor, torch.Tensor | None]] = []
    blocks = aggregator.global_blocks
    for i in layers:
        if not 0 <= i < len(blocks):
            raise ValueError(f"correspondence layer {i} out of range (the model has {len(blocks)} layers)")

    def hook(module: torch.nn.Module, args: tuple) -> None:
        captured.append((module, args[0], args[1] if len(args) > 1 else None))

    handles = [blocks[i].register_forward_pre_hook(hook) for i in layers]
    try:
        yield captured
    finally:
        for h in handles:
            h.remove()
