"""VGGT / PAGE-4D style training losses.

* camera: L1 (or Huber) on the pose encodings of every refinement iteration, weighted
  ``gamma^(n-1-i)`` (the last iteration weighs 1), split into translation / rotation / FoV terms
  (VGGT weights 1 / 1 / 0.5);
* depth and points: confidence-weighted regression ``c * ||pred - gt|| - alpha * log(c)`` on
  valid pixels, plus a multi-scale gradient term on the error (also confidence weighted);
* dynamic mask: BCE-with-logits between the mask head's own logit of P(dynamic)
  (``dynamic_logit``, before fusion with an external mask, so feeding the GT mask as external input
  cannot satisfy it through ``external_gain``) and the fraction of dynamic pixels per patch (GT or
  external masks, e.g. SegAnyMo); samples with ``has_mask`` False are skipped;
* cross-view (``cross_view``): the self-supervised depth consistency of
  :mod:`vggt_mv.train.cross_view` through the predicted cameras, on clips without GT depth (or on
  all with ``cross_view_on="all"``);
* optional View-SA correspondence term (``corr``, :mod:`vggt_mv.train.correspondence`), added by the
  trainer because it needs the attention blocks' inputs.

Shapes follow the model's 6-D outputs: ``pose_enc_list [N,B,T,V,9]``, ``depth [B,T,V,H,W,1]``,
``world_points [B,T,V,H,W,3]``, confidences ``[B,T,V,H,W]``, ``dynamic_logit [B,T,V,h,w]``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from vggt_mv.train.cross_view import cross_view_loss


@dataclass
class LossConfig:
    """Weights of the loss terms (VGGT's camera 5 : depth 1 : point 1) and their settings."""

    camera: float = 5.0
    depth: float = 1.0
    point: float = 1.0
    mask: float = 1.0
    gamma: float = 0.6          # pose iteration weighting gamma^(n-1-i)
    alpha: float = 0.2          # confidence regulariser
    grad: float = 1.0           # gradient term weight (relative, inside depth/point)
    grad_scales: int = 3
    weight_trans: float = 1.0
    weight_rot: float = 1.0
    weight_fov: float = 0.5
    camera_loss_type: str = "l1"  # "l1" | "huber"
    huber_delta: float = 0.1
    max_error: float = 100.0    # per-pixel error clamp against outliers
    mask_pos_weight: float = 3.0  # dynamic patches are ~5-10 %: favour recall (IoU at 0.5)
    corr: float = 0.0           # View-SA correspondence supervision (0 = off)
    corr_layers: list[int] = field(default_factory=lambda: [1, 2])
    corr_head: int = 0          # the attention head that is supervised
    cross_view: float = 1.0     # self-supervised cross-view depth consistency
    cross_view_on: str = "no-gt"  # "no-gt": clips without GT depth only; "all": every clip

    @classmethod
    def from_dict(cls, d: dict) -> "LossConfig":
        """From a saved config; fields of older versions that no longer exist are dropped."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def _pose_term(pred: torch.Tensor, gt: torch.Tensor, kind: str, delta: float) -> torch.Tensor:
    """Mean over cameras of the summed per-dimension error; pred/gt ``[..., D]`` -> scalar."""
    if kind == "l1":
        err = (pred - gt).abs()
    elif kind == "huber":
        err = F.huber_loss(pred, gt, reduction="none", delta=delta)
    else:
        raise ValueError(f"camera_loss_type must be 'l1' or 'huber', got {kind!r}")
    return err.sum(-1).clamp(max=100.0).mean()


def camera_loss(pose_enc_list: torch.Tensor, gt_pose_enc: torch.Tensor, cfg: LossConfig) -> dict[str, torch.Tensor]:
    """pose_enc_list ``[N,B,T,V,9]``, gt ``[B,T,V,9]`` -> ``{"camera", "cam_T", "cam_R", "cam_FL"}``.

    Iteration ``i`` of ``N`` weighs ``gamma^(N-1-i)``; the weighted sum is divided by the sum of
    weights. The quaternion's sign ambiguity is resolved by taking the closer of ``q`` / ``-q``.
    """
    n = pose_enc_list.shape[0]
    weights = [cfg.gamma ** (n - 1 - i) for i in range(n)]
    terms = {"cam_T": 0.0, "cam_R": 0.0, "cam_FL": 0.0}
    for w, pred in zip(weights, pose_enc_list):
        q_gt = gt_pose_enc[..., 3:7]
        q_gt = torch.where(((pred[..., 3:7] * q_gt).sum(-1, keepdim=True) < 0), -q_gt, q_gt)
        terms["cam_T"] = terms["cam_T"] + w * _pose_term(pred[..., :3], gt_pose_enc[..., :3], cfg.camera_loss_type, cfg.huber_delta)
        terms["cam_R"] = terms["cam_R"] + w * _pose_term(pred[..., 3:7], q_gt, cfg.camera_loss_type, cfg.huber_delta)
        terms["cam_FL"] = terms["cam_FL"] + w * _pose_term(pred[..., 7:], gt_pose_enc[..., 7:], cfg.camera_loss_type, cfg.huber_delta)
    total_w = sum(weights)
    out = {k: v / total_w for k, v in terms.items()}  # type: ignore[operator]
    out["camera"] = cfg.weight_trans * out["cam_T"] + cfg.weight_rot * out["cam_R"] + cfg.weight_fov * out["cam_FL"]
    return out


def sample_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean per sample, then the plain mean over samples: ``[B, ...]`` -> scalar.

    Each sample weighs ``1/B`` whatever its number of valid pixels (0 when it has none), so the
    loss of a batch is the mean of its samples' losses: two ranks' equal-size batches average to
    the loss of their union (DDP / FSDP gradient averaging equals one process on the union).
    """
    dims = tuple(range(1, values.dim()))
    per = (values * weights).sum(dims) / weights.sum(dims).clamp_min(1.0)
    return per.mean()


def conf_regression_loss(
    pred: torch.Tensor, gt: torch.Tensor, conf: torch.Tensor, valid: torch.Tensor, alpha: float, max_error: float = 100.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """VGGT's confidence-aware regression on valid pixels.

    pred/gt ``[B, ..., H, W, C]``, conf/valid ``[B, ..., H, W]`` -> (``mean(c*e - alpha*log c)``,
    unweighted ``mean(e)``) with ``e = ||pred - gt||_2`` clamped to ``max_error``, per sample
    (:func:`sample_mean`).
    """
    err = (pred - gt).norm(dim=-1).clamp(max=max_error)
    v = valid.to(err.dtype)
    return sample_mean(conf * err - alpha * torch.log(conf), v), sample_mean(err, v)


def gradient_loss(
    pred: torch.Tensor, gt: torch.Tensor, conf: torch.Tensor, valid: torch.Tensor, scales: int = 3, max_error: float = 100.0,
) -> torch.Tensor:
    """Multi-scale gradient matching of the error ``d = pred - gt``.

    At stride ``s = 2^k`` (k < ``scales``): ``|d(x+s) - d(x)|`` summed over channels along x and y,
    on pairs whose two pixels are valid, weighted by the mean confidence of the pair, per sample.
    pred/gt ``[B, ..., H, W, C]``, conf/valid ``[B, ..., H, W]`` -> scalar.
    """
    diff = pred - gt
    total = pred.new_zeros(())
    for k in range(scales):
        s = 2 ** k
        d, c, m = diff[..., ::s, ::s, :], conf[..., ::s, ::s], valid[..., ::s, ::s].to(pred.dtype)
        parts = []
        for dim in (-3, -2):  # y, x on the [..., H, W, C] tensor
            n = d.shape[dim]
            if n < 2:
                continue
            g = (d.narrow(dim, 1, n - 1) - d.narrow(dim, 0, n - 1)).abs().sum(-1).clamp(max=max_error)
            cd = dim + 1  # the same axis on the [..., H, W] tensors
            pair = m.narrow(cd, 1, n - 1) * m.narrow(cd, 0, n - 1)
            cw = 0.5 * (c.narrow(cd, 1, n - 1) + c.narrow(cd, 0, n - 1))
            parts.append(sample_mean(g * cw, pair))
        if parts:
            total = total + sum(parts) / len(parts)
    return total / scales


def mask_loss(logit: torch.Tensor, target: torch.Tensor, pos_weight: float = 1.0,
              has_mask: torch.Tensor | None = None) -> torch.Tensor:
    """BCE-with-logits of the logit of P(dynamic) ``[B,T,V,h,w]`` vs the target fraction (same
    shape), per sample; samples with ``has_mask [B]`` False count as 0."""
    logit = logit.float()
    bce = F.binary_cross_entropy_with_logits(logit, target.to(logit.dtype), reduction="none",
                                             pos_weight=logit.new_tensor(pos_weight))
    weights = torch.ones_like(bce)
    if has_mask is not None:
        weights = weights * has_mask.to(bce.dtype).reshape(-1, *[1] * (bce.dim() - 1))
    return sample_mean(bce, weights)


def compute_losses(out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], cfg: LossConfig | None = None) -> dict[str, torch.Tensor]:
    """All terms for model outputs ``out`` and a :mod:`vggt_mv.train.data` batch; ``"loss"`` is the total.

    Other keys: ``camera`` (+ ``cam_T/cam_R/cam_FL``), ``depth`` (``depth_reg``, ``depth_grad``,
    ``depth_err``), ``point`` (``point_reg``, ``point_grad``, ``point_err``), ``mask``,
    ``cross_view`` (+ ``cross_view_px``, the pixels it compared).
    """
    cfg = cfg or LossConfig()
    terms: dict[str, torch.Tensor] = {}
    total = 0.0
    valid = batch["valid"]
    if "pose_enc_list" in out:
        terms.update(camera_loss(out["pose_enc_list"], batch["pose_enc"], cfg))
        total = total + cfg.camera * terms["camera"]
    for name, key, gt in (("depth", "depth", batch["depth"][..., None]), ("point", "world_points", batch["world_points"])):
        if key not in out:
            continue
        pred, conf = out[key], out[f"{key}_conf"]
        reg, err = conf_regression_loss(pred, gt, conf, valid, cfg.alpha, cfg.max_error)
        grad = gradient_loss(pred, gt, conf, valid, cfg.grad_scales, cfg.max_error)
        terms[f"{name}_reg"], terms[f"{name}_grad"], terms[f"{name}_err"] = reg, grad, err.detach()
        terms[name] = reg + cfg.grad * grad
        total = total + getattr(cfg, name) * terms[name]
    if "dynamic_logit" in out and cfg.mask > 0:  # has_mask [B]: samples with a GT or external mask
        terms["mask"] = mask_loss(out["dynamic_logit"], batch["dynamic_mask_patch"], cfg.mask_pos_weight,
                                  batch.get("has_mask"))
        total = total + cfg.mask * terms["mask"]
    if cfg.cross_view > 0 and "depth" in out and "extrinsic" in out:
        if cfg.cross_view_on not in ("no-gt", "all"):
            raise ValueError(f"cross_view_on must be 'no-gt' or 'all', got {cfg.cross_view_on!r}")
        use = torch.ones(valid.shape[0], dtype=torch.bool, device=valid.device)
        if cfg.cross_view_on == "no-gt":
            use = ~valid.flatten(1).any(1)
        if bool(use.any()) and out["depth"].shape[2] > 1:
            cv, px = cross_view_loss(out["depth"][..., 0].float(), out["extrinsic"].float(),
                                     out["intrinsic"].float())
            # per sample, mean over the batch (samples it does not apply to count as 0)
            terms["cross_view"] = (cv * use).sum() / use.numel()
            terms["cross_view_px"] = (px * use).sum()
            total = total + cfg.cross_view * terms["cross_view"]
    terms["loss"] = total  # type: ignore[assignment]
    return terms
