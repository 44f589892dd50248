"""Optional epipolar prior for View-SA on calibrated rigs (DESIGN §3, seeds §3.1).

For a query patch i in view a and a key patch j in view b != a, let d_ij be the distance (pixels)
of j's centre from the epipolar line F_ab x_i. The prior adds ``-strength * (d_ij / band)^2`` to
the View-SA logit. Deviation from the seeds' *hard* band (constant penalty beyond the band): a hard
band is not low-rank, so it would need an N x N mask; the quadratic penalty is exactly rank 6 per
key view ((l.x)^2 expands into 6 monomials of x = (u, v, 1)), so it rides the same extra q/k
channels as the mask bias (6*V channels), with no N x N tensor. Same-view pairs and special tokens
get no penalty.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from vggt_mv.layers import LowRankBias


@dataclass
class EpipolarPrior:
    """Cameras of a calibrated rig: intrinsic ``[B,T,V,3,3]`` (pixels of the model input), extrinsic
    ``[B,T,V,3,4]`` camera-from-world (OpenCV); ``strength`` in logits, ``band`` in pixels."""

    intrinsic: torch.Tensor
    extrinsic: torch.Tensor
    strength: float = 1.0
    band: float = 28.0


def _skew(t: torch.Tensor) -> torch.Tensor:
    z = torch.zeros_like(t[..., 0])
    return torch.stack([
        torch.stack([z, -t[..., 2], t[..., 1]], -1),
        torch.stack([t[..., 2], z, -t[..., 0]], -1),
        torch.stack([-t[..., 1], t[..., 0], z], -1),
    ], -2)


def fundamental_matrices(intrinsic: torch.Tensor, extrinsic: torch.Tensor) -> torch.Tensor:
    """``[..., V, 3, 3]``, ``[..., V, 3, 4]`` -> F ``[..., V(a), V(b), 3, 3]`` with x_b^T F_ab x_a = 0."""
    r, t = extrinsic[..., :3, :3], extrinsic[..., :3, 3]
    r_ab = r[..., None, :, :, :] @ r[..., :, None, :, :].transpose(-1, -2)  # R_b R_a^T, indexed [a, b]
    t_ab = t[..., None, :, :] - (r_ab @ t[..., :, None, :, None])[..., 0]
    k_inv = torch.linalg.inv(intrinsic)
    e = _skew(t_ab) @ r_ab
    return k_inv[..., None, :, :, :].transpose(-1, -2) @ e @ k_inv[..., :, None, :, :]


def epipolar_bias(prior: EpipolarPrior, grid_h: int, grid_w: int, patch: int, n_special: int) -> LowRankBias:
    """The prior as a rank-6V ``LowRankBias`` over View-SA groups ``[B*T, V*P, .]``."""
    k, e = prior.intrinsic.double(), prior.extrinsic.double()
    b, t, v = k.shape[:3]
    f = fundamental_matrices(k, e)  # [B,T,V,V,3,3]
    ys, xs = torch.meshgrid(torch.arange(grid_h, device=k.device), torch.arange(grid_w, device=k.device), indexing="ij")
    x = torch.stack([(xs.flatten() + 0.5) * patch, (ys.flatten() + 0.5) * patch, torch.ones(grid_h * grid_w, device=k.device)], -1).double()
    lines = torch.einsum("ntabij,pj->ntapbi", f, x)  # line in view b of patch p of view a
    lines = lines / lines[..., :2].norm(dim=-1, keepdim=True).clamp_min(1e-12)
    # work in coordinates x' = x / s (s = image size) so the 6 monomials stay O(1) for conditioning:
    # d / band = a . (u', v', 1) with a = (s n1, s n2, n3) / band
    s = float(max(grid_h, grid_w) * patch)
    a1, a2, a3 = (lines * lines.new_tensor([s, s, 1.0]) / prior.band).unbind(-1)
    row = -prior.strength * torch.stack([a1 * a1, a2 * a2, a3 * a3, 2 * a1 * a2, 2 * a1 * a3, 2 * a2 * a3], -1)
    same = torch.eye(v, dtype=torch.bool, device=k.device)[:, None, :, None]  # [a,1,b,1]
    row = row.masked_fill(same, 0.0)
    u, w = x[:, 0] / s, x[:, 1] / s
    mono = torch.stack([u * u, w * w, torch.ones_like(u), u * w, u, w], -1)  # [P, 6]
    key = torch.zeros(v, grid_h * grid_w, v, 6, dtype=mono.dtype, device=k.device)
    key[torch.arange(v), :, torch.arange(v)] = mono  # key in view b fills slot b only
    pad = (0, 0, 0, 0, n_special, 0)
    row = torch.nn.functional.pad(row, pad)  # special query rows: no penalty
    key = torch.nn.functional.pad(key, pad)  # special keys: no penalty
    n = n_special + grid_h * grid_w
    row = row.reshape(b * t, v * n, v * 6)
    key = key.reshape(1, v * n, v * 6).expand(b * t, -1, -1)
    return LowRankBias(row.float(), key.float())
