"""The lambdas and fusion gains that scale the dynamic-mask attention bias, and the bias itself.

Bias on layer logits (DESIGN §3): ``logit_ij += r_i * (m_j - c0)`` for patch keys j (special-token
keys get none), with ``r_i = -lambda_pose`` on pose rows and ``+lambda_geo`` on geo rows
(``lambda_pose_t`` / ``lambda_geo_t`` in Time-SA). It is rank-1 per row group and is passed to
attention as a ``LowRankBias`` (extra q/k channel), never as an N x N mask.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from vggt_mv.config import MaskConfig
from vggt_mv.layers import LowRankBias
from vggt_mv.model.mask_head import FusionGate

LAMBDA_NAMES = ("lambda_pose", "lambda_geo", "lambda_pose_t", "lambda_geo_t")


class BoundedLambdas(nn.Module):
    """Named scalars bounded to +-``bound`` (the λs of an attention bias): ``nn.Parameter`` when
    learnable, else non-persistent buffers (so fixed presets keep the released key sets)."""

    NAMES: tuple[str, ...] = ()
    KIND = "lambda"

    def _add(self, name: str, value: float, learnable: bool) -> None:
        t = torch.tensor(value)
        if learnable:
            setattr(self, name, nn.Parameter(t))
        else:
            self.register_buffer(name, t, persistent=False)

    def value(self, name: str) -> torch.Tensor:
        return getattr(self, name).clamp(-self.bound, self.bound)

    def is_active(self, name: str) -> bool:
        """False when the lambda is 0 and cannot receive a gradient, so the bias can be skipped exactly."""
        t = getattr(self, name)
        return bool(t.requires_grad and torch.is_grad_enabled()) or bool(t.detach().ne(0).item())

    def set(self, **values: float | None) -> None:
        """Set some of ``NAMES`` (None = keep); all are checked before any is changed."""
        for name, v in values.items():
            if name not in self.NAMES:
                raise ValueError(f"unknown {self.KIND} {name!r}; expected one of {self.NAMES}")
            if v is not None and not -self.bound <= float(v) <= self.bound:
                raise ValueError(f"{name}={v} is outside the preset's bound +-{self.bound:g}; "
                                 f"choose a value in [-{self.bound:g}, {self.bound:g}]")
        with torch.no_grad():
            for name, v in values.items():
                if v is not None:
                    getattr(self, name).fill_(float(v))

    def as_dict(self) -> dict[str, float]:
        return {n: float(getattr(self, n).detach()) for n in self.NAMES}


class MaskBiasControl(BoundedLambdas):
    """Holds the four lambdas (bounded to +-``lambda_bound``) and the external-mask fusion gains (or gate).

    Learnable (``nn.Parameter``, new state_dict keys) when the config asks for it; otherwise
    non-persistent buffers, so the PAGE/VGGT presets keep the released checkpoints' exact key sets.
    """

    NAMES = LAMBDA_NAMES

    def __init__(self, cfg: MaskConfig):
        super().__init__()
        self.bound = float(cfg.lambda_bound)
        for name in LAMBDA_NAMES:
            self._add(name, float(getattr(cfg, name)), cfg.learnable_lambdas)
        scalar = cfg.fusion == "scalar"
        self._add("feature_gain", 1.0, cfg.learnable_fusion and scalar)
        self._add("external_gain", 1.0, cfg.learnable_fusion and scalar)
        # fusion = "gate": a 1x1 MLP replaces the two gains (new keys aggregator.mask_bias.gate.*)
        self.gate = None if scalar else FusionGate(cfg.gate_hidden)


def mask_bias(
    row_weight: torch.Tensor, key_value: torch.Tensor
) -> LowRankBias:
    """row_weight ``[G, N]`` (r_i), key_value ``[G, N]`` ((m_j - c0), 0 on special keys) -> rank-1 bias."""
    return LowRankBias(row_weight[..., None], key_value[..., None])


def relative_time_bias(times: torch.Tensor, strength: float) -> LowRankBias:
    """``-strength * (t_i - t_j)^2`` as a rank-2 bias (the row-constant term cancels in softmax).

    times ``[G, N]`` float -> rows ``[2 s t_i, -s]``, keys ``[t_j, t_j^2]``.
    """
    row = torch.stack([2 * strength * times, torch.full_like(times, -strength)], -1)
    key = torch.stack([times, times * times], -1)
    return LowRankBias(row, key)
