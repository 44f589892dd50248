"""Output activations of the VGGT heads (pose encodings and dense predictions)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def inverse_log_transform(y: torch.Tensor) -> torch.Tensor:
    """``sign(y) * (exp(|y|) - 1)``, elementwise."""
    return torch.sign(y) * (torch.exp(torch.abs(y)) - 1.0)


def base_pose_act(x: torch.Tensor, act_type: str = "linear") -> torch.Tensor:
    """One of ``linear | inv_log | exp | relu`` applied elementwise."""
    if act_type == "linear":
        return x
    if act_type == "inv_log":
        return inverse_log_transform(x)
    if act_type == "exp":
        return torch.exp(x)
    if act_type == "relu":
        return F.relu(x)
    raise ValueError(f"unknown pose activation {act_type!r}")


def activate_pose(
    pose_enc: torch.Tensor, trans_act: str = "linear", quat_act: str = "linear", fl_act: str = "linear"
) -> torch.Tensor:
    """Activate ``[..., 9] = [t(3), quat(4), fov/focal(2)]`` part by part; returns ``[..., 9]``."""
    t = base_pose_act(pose_enc[..., :3], trans_act)
    quat = base_pose_act(pose_enc[..., 3:7], quat_act)
    fl = base_pose_act(pose_enc[..., 7:], fl_act)
    return torch.cat([t, quat, fl], dim=-1)


def activate_head(
    out: torch.Tensor, activation: str = "norm_exp", conf_activation: str = "expp1"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a dense head output ``[N, C, H, W]`` into ``(preds [N, H, W, C-1], conf [N, H, W])``.

    The last channel is the confidence; the others are activated with ``activation``.
    """
    fmap = out.permute(0, 2, 3, 1)
    xyz = fmap[..., :-1]
    conf = fmap[..., -1]

    if activation == "norm_exp":
        d = xyz.norm(dim=-1, keepdim=True).clamp(min=1e-8)
        preds = (xyz / d) * (torch.exp(d) - 1.0)
    elif activation == "norm":
        preds = xyz / xyz.norm(dim=-1, keepdim=True)
    elif activation == "exp":
        preds = torch.exp(xyz)
    elif activation == "relu":
        preds = F.relu(xyz)
    elif activation == "inv_log":
        preds = inverse_log_transform(xyz)
    elif activation == "xy_inv_log":
        xy, z = xyz.split([2, 1], dim=-1)
        z = inverse_log_transform(z)
        preds = torch.cat([xy * z, z], dim=-1)
    elif activation == "sigmoid":
        preds = torch.sigmoid(xyz)
    elif activation == "linear":
        preds = xyz
    else:
        raise ValueError(f"unknown activation {activation!r}")

    if conf_activation == "expp1":
        conf_out = 1 + conf.exp()
    elif conf_activation == "expp0":
        conf_out = conf.exp()
    elif conf_activation == "sigmoid":
        conf_out = torch.sigmoid(conf)
    else:
        raise ValueError(f"unknown conf_activation {conf_activation!r}")
    return preds, conf_out
