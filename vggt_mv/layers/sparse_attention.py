"""Sparse Global-SA: one block's attention over the tokens of all T*V images with a sparse key set.

At a sparse layer this *replaces* View-SA and is run by that layer's own global block (its weights
are used once; no extra block). Tokens are ``[B, T, V, P, C]`` (t-major image order), the first
``n_special`` tokens of each image are its camera/register tokens.

Key sets per query (``*_index`` functions return exactly what the forward gathers, so tests can
check the pattern directly):

* ``landmark``: every query sees the special tokens of every image plus K anchor patches per
  image. Anchors = top-K of ``scores`` (e.g. a previous run's confidence, area-pooled to patches)
  when given, else feature saliency ``||x_p - mean_p x||`` of the normed tokens. Cost ~(K+S)/P of dense.
* ``dilated``: an image at time t sees all tokens of all views at times t+o for o in ``offsets``
  that fall inside [0, T). Cost linear in T at fixed V.
* ``memory_bank``: M learnable memory tokens first gather from all tokens (M x N), then every image
  attends to its own tokens plus the memory (N x (P+M)). Cost linear in T*V. A logit ``bias``
  applies to the image's own keys in the second step (memory keys get none, like special keys; the
  memory queries of the gather step are neither pose nor geo rows, so they get none either).
"""
from __future__ import annotations

import torch

from vggt_mv.layers.attention import LowRankBias, attend
from vggt_mv.layers.block import Block


def landmark_index(scores: torch.Tensor, k: int, n_special: int) -> torch.Tensor:
    """scores ``[B, NI, Pp]`` over patches -> key token indices ``[B, NI*(n_special+k)]`` into the flat ``NI*P`` axis."""
    b, ni, pp = scores.shape
    p = n_special + pp
    k = min(k, pp)
    top = scores.topk(k, dim=-1).indices + n_special  # [B, NI, k]
    special = torch.arange(n_special, device=scores.device).expand(b, ni, n_special)
    local = torch.cat([special, top], -1)
    offset = (torch.arange(ni, device=scores.device) * p)[None, :, None]
    return (local + offset).reshape(b, -1)


def dilated_time_index(t: int, offsets: list[int], device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (time index ``[T, O]`` clamped into range, valid ``[T, O]`` bool)."""
    base = torch.arange(t, device=device)[:, None] + torch.tensor(offsets, device=device)[None]
    valid = (base >= 0) & (base < t)
    return base.clamp(0, t - 1), valid


def _gather_keys(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x ``[B, H, N, D]``, idx ``[B, K]`` -> ``[B, H, K, D]``."""
    return x.gather(2, idx[:, None, :, None].expand(-1, x.shape[1], -1, x.shape[3]))


def sparse_global_block(
    block: Block,
    x: torch.Tensor,
    pos: torch.Tensor,
    strategy: str,
    *,
    n_special: int,
    bias: LowRankBias | None = None,
    landmark_k: int = 64,
    landmark_scores: torch.Tensor | None = None,
    offsets: list[int] | None = None,
    memory: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run ``block`` as sparse global attention. x ``[B,T,V,P,C]``, pos ``[P,2]`` per image -> ``[B,T,V,P,C]``.

    bias: optional low-rank logit bias over the flat ``T*V*P`` tokens (row ``[B,N,K]``, key ``[B,N,K]``).
    """
    b, t, v, p, c = x.shape
    ni = t * v
    flat = x.reshape(b, ni * p, c)
    h = block.norm1(flat)
    pos_all = pos.repeat(ni, 1)[None].expand(b, -1, -1)
    q, k, val = block.attn.project(h, pos_all)  # [B, H, N, D]
    if strategy == "landmark" and landmark_scores is None:
        patches = h.reshape(b, ni, p, c)[:, :, n_special:]
        landmark_scores = (patches - patches.mean(2, keepdim=True)).norm(dim=-1)
    o = sparse_attend(q, k, val, strategy, (t, v, p), n_special=n_special, bias=bias, landmark_k=landmark_k,
                      landmark_scores=landmark_scores, offsets=offsets, memory=memory, block=block)
    out = flat + block.ls1(block.attn.out(o))
    return block.ffn(out).reshape(b, t, v, p, c)


def sparse_attend(
    q: torch.Tensor,
    k: torch.Tensor,
    val: torch.Tensor,
    strategy: str,
    grid: tuple[int, int, int],
    *,
    n_special: int,
    bias: LowRankBias | None = None,
    landmark_k: int = 64,
    landmark_scores: torch.Tensor | None = None,
    offsets: list[int] | None = None,
    memory: torch.Tensor | None = None,
    block: Block | None = None,
) -> torch.Tensor:
    """The attention op alone: q/k/v ``[B,H,N,D]`` over ``grid = (T, V, P)`` images -> ``[B,H,N,D]``.

    ``landmark`` needs ``landmark_scores [B, T*V, P - n_special]``; ``memory_bank`` needs ``memory``
    ``[1, M, C]`` and the ``block`` whose projections it uses.
    """
    t, v, p = grid
    b, heads, _, d = q.shape
    ni = t * v
    if strategy == "landmark":
        if landmark_scores is None:
            raise ValueError("landmark attention needs landmark_scores [B, T*V, P - n_special]")

        idx = landmark_index(landmark_scores, landmark_k, n_special)
        kb = None if bias is None else LowRankBias(bias.row, bias.key.gather(1, idx[..., None].expand(-1, -1, bias.key.shape[-1])))
        o = attend(q, _gather_keys(k, idx), _gather_keys(val, idx), kb)
    elif strategy == "dilated":
        tidx, valid = dilated_time_index(t, offsets or [0], q.device)
        n_off = tidx.shape[1]
        qt = q.reshape(b, heads, t, v * p, d).transpose(1, 2).reshape(b * t, heads, v * p, d)

        def by_time(z: torch.Tensor) -> torch.Tensor:  # [B,H,N,D] -> [B*T, H, O*V*P, D]
            z = z.reshape(b, heads, t, v * p, -1)[:, :, tidx]  # [B, H, T, O, VP, D]
            return z.permute(0, 2, 1, 3, 4, 5).reshape(b * t, heads, n_off * v * p, -1)

        key_mask = valid[:, :, None].expand(t, n_off, v * p).reshape(1, t, -1).expand(b, -1, -1).reshape(b * t, -1)
        tb = None
        if bias is not None:
            r = bias.row.shape[-1]
            tb = LowRankBias(
                bias.row.reshape(b * t, v * p, r),
                bias.key.reshape(b, t, v * p, r)[:, tidx].reshape(b * t, n_off * v * p, r),
            )
        o = attend(qt, by_time(k), by_time(val), tb, key_mask)
        o = o.reshape(b, t, heads, v * p, d).transpose(1, 2).reshape(b, heads, ni * p, d)
    elif strategy == "memory_bank":
        if memory is None or block is None:
            raise ValueError("memory_bank sparse attention needs memory tokens and the block")
        mem = memory.expand(b, -1, -1)
        zeros = torch.zeros(b, mem.shape[1], 2, dtype=torch.long, device=q.device)
        qm, _, _ = block.attn.project(block.norm1(mem), zeros)
        mem = mem + block.ls1(block.attn.out(attend(qm, k, val)))  # gather
        _, km, vm = block.attn.project(block.norm1(mem), zeros)
        m = km.shape[2]

        def per_image(z: torch.Tensor, zm: torch.Tensor) -> torch.Tensor:  # -> [B*NI, H, P+M, D]
            z = z.reshape(b, heads, ni, p, d).transpose(1, 2)
            zm = zm[:, None].expand(-1, ni, -1, -1, -1)
            return torch.cat([z, zm], 3).reshape(b * ni, heads, p + m, d)

        qi = q.reshape(b, heads, ni, p, d).transpose(1, 2).reshape(b * ni, heads, p, d)
        ib = None
        if bias is not None:  # each image's rows and its own keys; zero on the memory keys
            r = bias.row.shape[-1]
            key = bias.key.reshape(b, ni, p, r)
            key = torch.cat([key, key.new_zeros(b, ni, m, r)], 2).reshape(b * ni, p + m, r)
            ib = LowRankBias(bias.row.reshape(b * ni, p, r), key)
        o = attend(qi, per_image(k, km), per_image(val, vm), ib)  # scatter
        o = o.reshape(b, ni, heads, p, d).transpose(1, 2).reshape(b, heads, ni * p, d)
    else:
        raise ValueError(f"unknown sparse strategy {strategy!r}")
    return o
