"""Dynamic-mask heads (``aggregator.spatial_mask_head.*``) and the mask they produce.

Both heads read the patch tokens after ``mask_layer``'s frame block, reshaped to ``[N, C, h, w]``,
and return a logit per patch. ``m`` is the probability that a patch is **dynamic**:

* ``page4d`` (official PAGE-4D): per-image, per-channel standardised tokens x^ ->
  dwconv3 -> GELU -> conv1x1(C->hidden) -> GELU -> conv1x1(hidden->1) = z;  z' = z + mean_c x^;
  m = sigmoid(s * a_f * z' + b_f * M_ext).  With s = -1, PAGE's bias +alpha*(sigmoid(z') - 0.5)
  equals -alpha*(m - 0.5).
* ``fin10`` (the researcher's checkpoint_150.pt): raw tokens -> dwconv3 -> GELU -> dwconv3 -> GELU
  -> conv1x1(C->1) = z (the logit); alpha = softplus(alpha_logit)+1e-6, tau = max(softplus(tau_logit)+1e-6, 1e-3);
  m = clamp(alpha * sigmoid(s * a_f * z/tau + b_f * M_ext), 0, 1)  (s = -1 gives the head's
  ``suppress = sigmoid(-z/tau)``; its key bias -0.5*m is lambda_pose = 0.5 with c0 = 0).

a_f, b_f are the external-mask fusion gains (1.0; learnable in the vggt_mv presets); M_ext is an
optional external mask area-pooled to the patch grid (1 = dynamic). With ``mask.fusion = "gate"``
the sum ``s*a_f*z + b_f*M_ext`` is replaced by ``FusionGate(s*z, M_ext)``, a per-patch 1x1 MLP that
starts as exactly ``s*z + M_ext`` (scalar fusion with a_f = b_f = 1).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class FusionGate(nn.Module):
    """1x1 gate on (model logit, external mask) per patch: ``linear(x) + mlp(x)``, x = (s*z', M_ext).

    Initialised so it equals scalar fusion with a_f = b_f = 1 exactly: ``linear`` = (1, 1) with bias
    0 and the MLP's last layer zero. State keys ``gate.linear.*``, ``gate.mlp.{0,2}.*``.
    """

    def __init__(self, hidden: int = 8):
        super().__init__()
        self.linear = nn.Linear(2, 1)
        self.mlp = nn.Sequential(nn.Linear(2, hidden), nn.GELU(), nn.Linear(hidden, 1))
        with torch.no_grad():
            self.linear.weight.fill_(1.0)
            self.linear.bias.zero_()
            self.mlp[2].weight.zero_()
            self.mlp[2].bias.zero_()

    def forward(self, feature: torch.Tensor, external: torch.Tensor | None) -> torch.Tensor:
        """feature ``[...]`` (s*z'), external ``[...]`` or None (= 0) -> fused logit ``[...]``."""
        if external is None:
            external = torch.zeros_like(feature)
        x = torch.stack([feature, external.to(feature.dtype)], -1)
        return (self.linear(x) + self.mlp(x))[..., 0]


class _MaskHead(nn.Module):
    """Shared fusion: ``m = finish(sigmoid(s * a_f * logit' + b_f * M_ext))`` (or through a ``FusionGate``)."""

    def scaled_logit(self, logit: torch.Tensor) -> torch.Tensor:
        return logit

    def finish(self, p: torch.Tensor) -> torch.Tensor:
        return p

    def probability(self, logit: torch.Tensor, sign: float, feature_gain, external=None, external_gain=None,
                    gate: FusionGate | None = None):
        """logit ``[N, ...]`` (+ external mask of the same shape, 1 = dynamic) -> m in [0, 1]."""
        if gate is not None:
            return self.finish(torch.sigmoid(gate(sign * self.scaled_logit(logit), external)))
        z = sign * feature_gain * self.scaled_logit(logit)
        if external is not None:
            z = z + external_gain * external
        return self.finish(torch.sigmoid(z))


class PageMaskHead(_MaskHead):
    def __init__(self, dim: int, hidden: int = 256):
        super().__init__()
        self.head0 = nn.Sequential(
            nn.Conv2d(dim, dim, 3, padding=1, groups=dim),
            nn.GELU(),
            nn.Conv2d(dim, hidden, 1),
            nn.GELU(),
            nn.Conv2d(hidden, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x ``[N, C, h, w]`` -> z' ``[N, h, w]``."""
        mean = x.mean(dim=(2, 3), keepdim=True)
        std = x.std(dim=(2, 3), keepdim=True).clamp_min(1e-6)
        x_hat = (x - mean) / std
        return (self.head0(x_hat) + x_hat.mean(1, keepdim=True))[:, 0]


class Fin10MaskHead(_MaskHead):
    def __init__(self, dim: int):
        super().__init__()
        self.head0 = nn.Sequential(
            nn.Conv2d(dim, dim, 3, padding=1, groups=dim),
            nn.GELU(),
            nn.Conv2d(dim, dim, 3, padding=1, groups=dim),
            nn.GELU(),
            nn.Conv2d(dim, 1, 1),
        )
        self.alpha_logit = nn.Parameter(torch.tensor(0.0))
        self.tau_logit = nn.Parameter(torch.tensor(0.0))

    def alpha(self) -> torch.Tensor:
        return F.softplus(self.alpha_logit) + 1e-6

    def tau(self) -> torch.Tensor:
        return (F.softplus(self.tau_logit) + 1e-6).clamp_min(1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x ``[N, C, h, w]`` -> the head's logit z ``[N, h, w]`` (fixture ``mask_logit``)."""
        return self.head0(x)[:, 0]

    def scaled_logit(self, logit: torch.Tensor) -> torch.Tensor:
        return logit / self.tau()

    def finish(self, p: torch.Tensor) -> torch.Tensor:
        return (self.alpha() * p).clamp(0.0, 1.0)


def build_mask_head(kind: str, dim: int, hidden: int) -> nn.Module:
    if kind == "page4d":
        return PageMaskHead(dim, hidden)
    if kind == "fin10":
        return Fin10MaskHead(dim)
    raise ValueError(f"unknown mask head {kind!r}; expected 'page4d' or 'fin10'")
