"""Training loop for VGGT-MV on procedural scenes: AdamW, warm-up + cosine, atomic checkpoints,
exact resumption, tqdm progress, JSON log, quick validation on fixed held-out scenes.

Reproducibility: model init comes from ``torch.manual_seed(seed)``; all data randomness from the
dataset's numpy generator (seeded with ``seed``). A checkpoint holds model, optimizer, step, the
dataset generator and torch's RNG state, so resuming gives bit-identical parameters to an
uninterrupted run (same thread count).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import pickle
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vggt_mv.config import ModelConfig
from vggt_mv.export.atomic import atomic_file
from vggt_mv.heads.pose_encoding import quat_to_mat
from vggt_mv.model.vggt_mv import VGGTMV
from vggt_mv.train.correspondence import capture_view_inputs, correspondence_loss, patch_correspondences
from vggt_mv.train.data import SceneSampling, SyntheticDynamicDataset, validation_batch
from vggt_mv.train.losses import LossConfig, compute_losses

CHECKPOINT_NAME = "checkpoint.pt"
WEIGHTS_NAME = "model.safetensors"
LOG_NAME = "train_log.json"


@dataclass
class TrainConfig:
    """Everything a run depends on (saved in checkpoints and the JSON log)."""

    preset: str = "tiny"
    steps: int = 2000
    lr: float = 5e-4
    min_lr_ratio: float = 0.05       # cosine decays to lr * min_lr_ratio
    warmup: int = 100
    weight_decay: float = 0.05
    lambda_lr_mult: float = 10.0     # scalar lambdas / fusion gains: faster lr, no weight decay
    grad_clip: float = 1.0
    batch_size: int = 1
    timesteps: int = 4
    max_timesteps: int | None = None  # T drawn per step in [timesteps, max_timesteps]
    views: int = 3
    height: int = 126
    width: int = 168
    extra_sizes: list[list[int]] = field(default_factory=list)  # more (H, W) drawn per step
    ext_mask_prob: float = 0.25
    arc_deg: list[float] = field(default_factory=lambda: [40.0, 80.0])  # camera-rig arc range
    seed: int = 0
    init: str | None = None          # weights (.safetensors / .pt) to start from instead of random init
    threads: int = 2
    device: str = "cpu"              # "cpu", "cuda" (or "cuda:N"); data is always made on the CPU
    workers: int = 0                 # >0: render batches in that many processes (see batch_for_step)
    log_every: int = 10
    ckpt_every: int = 100
    val_every: int = 250             # 0 disables validation
    loss: LossConfig = field(default_factory=LossConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        d = dict(d)
        d["loss"] = LossConfig(**d.get("loss", {}))
        return cls(**d)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for (0-based) ``step``: linear warm-up to ``lr``, then cosine to ``lr * min_lr_ratio``."""
    if cfg.warmup > 0 and step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    span = max(1, cfg.steps - cfg.warmup)
    prog = min(1.0, (step - cfg.warmup) / span)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * prog)))


def param_groups(model: torch.nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """AdamW groups: matrices decay; biases/norms/tokens don't; mask/keypoint-bias scalars get ``lambda_lr_mult``."""
    decay, no_decay, scalars = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith(("aggregator.mask_bias.", "aggregator.keypoint_bias.")):
            scalars.append(p)
        elif p.dim() >= 2 and "token" not in name and "pos_embed" not in name:
            decay.append(p)
        else:
            no_decay.append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay, "lr_mult": 1.0},
        {"params": no_decay, "weight_decay": 0.0, "lr_mult": 1.0},
        {"params": scalars, "weight_decay": 0.0, "lr_mult": cfg.lambda_lr_mult},
    ]
    return [g for g in groups if g["params"]]


@torch.no_grad()
def quick_metrics(out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """Cheap progress metrics (both sides in the reference frame, no alignment):
    depth AbsRel after per-image median scaling, median camera rotation error (degrees, cameras of
    the non-reference views: view 0 repeats the reference pose), patch-level dynamic-mask IoU at
    0.5 (GT: fraction > 0.5)."""
    res: dict[str, float] = {}
    valid = batch["valid"]
    if "depth" in out:
        pred, gt = out["depth"][..., 0], batch["depth"]
        rels = []
        for p, g, m in zip(pred.flatten(0, 2), gt.flatten(0, 2), valid.flatten(0, 2)):
            if m.sum() < 10:
                continue
            s = g[m].median() / p[m].median().clamp_min(1e-8)
            rels.append(((p[m] * s - g[m]).abs() / g[m]).mean())
        res["abs_rel"] = float(torch.stack(rels).mean()) if rels else float("nan")
    if "pose_enc" in out:
        r_p = quat_to_mat(out["pose_enc"][..., 3:7])
        r_g = batch["extrinsic"][..., :3, :3]
        cos = ((r_p.transpose(-1, -2) @ r_g).diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
        ang = torch.rad2deg(torch.arccos(cos.clamp(-1, 1)))[:, :, 1:]
        res["rot_err_deg"] = float(ang.median()) if ang.numel() else 0.0
    if "dynamic_mask" in out:
        p, g = out["dynamic_mask"] > 0.5, batch["dynamic_mask_patch"] > 0.5
        union = (p | g).sum()
        res["mask_iou"] = float((p & g).sum() / union) if union > 0 else 1.0
    return res


def make_dataset(cfg: TrainConfig, seed: int) -> SyntheticDynamicDataset:
    """The scene stream of ``cfg`` seeded with ``seed``."""
    sizes = [(cfg.height, cfg.width)] + [(int(h), int(w)) for h, w in cfg.extra_sizes]
    return SyntheticDynamicDataset(cfg.timesteps, cfg.views, cfg.height, cfg.width, seed=seed,
                                   ext_mask_prob=cfg.ext_mask_prob, sizes=sizes, max_T=cfg.max_timesteps,
                                   sampling=SceneSampling(arc_deg=(float(cfg.arc_deg[0]), float(cfg.arc_deg[1]))))


def batch_for_step(cfg: TrainConfig, step: int) -> dict[str, torch.Tensor]:
    """The batch of ``step`` when ``cfg.workers > 0``: drawn from its own generator seeded with
    ``(cfg.seed, step)``, so batches can be rendered in any process and order and a resumed run
    sees the same ones."""
    seed = int(np.random.SeedSequence([cfg.seed, step]).generate_state(1)[0])
    return make_dataset(cfg, seed).batch(cfg.batch_size)


def _worker_batch(args: tuple[dict[str, Any], int]) -> dict[str, torch.Tensor]:
    torch.set_num_threads(1)
    return batch_for_step(TrainConfig.from_dict(args[0]), args[1])


def prefetched_batches(cfg: TrainConfig, start: int) -> Iterator[dict[str, torch.Tensor]]:
    """Batches of steps ``start .. cfg.steps - 1`` in order, rendered by ``cfg.workers`` spawned
    processes at most two per worker ahead (bounded memory); closing the generator stops the pool."""
    import multiprocessing as mp

    spec = cfg.to_dict()
    with mp.get_context("spawn").Pool(cfg.workers) as pool:
        pending: deque = deque()
        nxt = start
        while True:
            while len(pending) < 2 * cfg.workers and nxt < cfg.steps:
                pending.append(pool.apply_async(_worker_batch, ((spec, nxt),)))
                nxt += 1
            if not pending:
                return
            yield pending.popleft().get()


class Trainer:
    """Owns model, optimizer and data stream of one run; ``out_dir`` receives checkpoints and logs."""

    def __init__(self, cfg: TrainConfig, out_dir: str | os.PathLike | None = None,
                 model_config: ModelConfig | None = None) -> None:
        self.cfg = cfg
        self.out_dir = Path(out_dir) if out_dir is not None else None
        torch.set_num_threads(max(1, cfg.threads))
        torch.manual_seed(cfg.seed)
        self.model_config = model_config or ModelConfig.preset(cfg.preset)
        self.device = torch.device(cfg.device)
        self.model = VGGTMV(self.model_config)
        if cfg.init:
            self._load_init(cfg.init)
        self.model.to(self.device)
        self.model.train()
        self.optimizer = torch.optim.AdamW(param_groups(self.model, cfg), lr=cfg.lr, betas=(0.9, 0.95))
        self.data = make_dataset(cfg, cfg.seed)
        self.step = 0
        self.history: list[dict[str, float]] = []
        self._val: dict[str, torch.Tensor] | None = None

    def _load_init(self, path: str) -> None:
        """Start from saved weights (all tensors must be there: fine-tuning, not surgery)."""
        from vggt_mv.weights.loader import load_model

        loaded, report = load_model(self.model_config, checkpoint=path)
        if report.fraction_loaded("checkpoint") < 1.0 or report.left_at_init:
            raise ValueError(f"--init {path}: only {report.fraction_loaded('checkpoint'):.0%} of the "
                             f"{self.model_config.name} tensors were found; it must hold the whole model")
        self.model.load_state_dict(loaded.state_dict())

    # ------------------------------------------------------------------ one step
    def forward_losses(self, batch: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Model outputs and loss terms for a batch (external masks only where the batch enables them).

        With ``loss.corr > 0`` the View-SA inputs of ``loss.corr_layers`` are captured during the
        forward and the correspondence term is added (key ``corr``).
        """
        lc = self.cfg.loss
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        ext = batch["ext_masks"] if bool(batch["ext_mask_on"].any()) else None
        layers = lc.corr_layers if lc.corr > 0 and batch["images"].shape[2] > 1 else []
        with capture_view_inputs(self.model.aggregator, layers) as captured:
            out = self.model(batch["images"], ext_masks=ext)
        terms = compute_losses(out, batch, lc)
        if captured:
            key, ok = patch_correspondences(batch, self.model_config.patch_size)
            psi = self.model.aggregator.patch_start_idx
            corr = torch.stack([correspondence_loss(blk, x, pos, key, ok, psi, lc.corr_head)
                                for blk, x, pos in captured]).mean()
            terms["corr"] = corr
            terms["loss"] = terms["loss"] + lc.corr * corr
        return out, terms

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One optimizer step on ``batch``; returns the float loss terms, lr, grad norm and lambdas."""
        lr = lr_at(self.step, self.cfg)
        for g in self.optimizer.param_groups:
            g["lr"] = lr * g["lr_mult"]
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        _, terms = self.forward_losses(batch)
        loss = terms["loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss at step {self.step}: { {k: float(v) for k, v in terms.items()} }")
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        lam_grads = self.lambda_grads()
        self.optimizer.step()
        self.step += 1
        rec = {k: float(v.detach()) for k, v in terms.items()}
        rec.update(step=self.step, lr=lr, grad_norm=float(gnorm))
        rec.update(self.model.lambdas())
        rec.update({f"grad_{k}": v for k, v in lam_grads.items()})
        mb = getattr(self.model.aggregator, "mask_bias", None)
        if mb is not None:
            rec.update(feature_gain=float(mb.feature_gain.detach()), external_gain=float(mb.external_gain.detach()))
        return rec

    def lambda_grads(self) -> dict[str, float]:
        """Current gradients of the learnable mask-bias scalars (0.0 where none)."""
        mb = getattr(self.model.aggregator, "mask_bias", None)
        if mb is None:
            return {}
        return {n: float(p.grad) if p.grad is not None else 0.0 for n, p in mb.named_parameters()}

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Loss terms and :func:`quick_metrics` on two fixed held-out scenes (seeds 100, 101) at the
        first training size and ``timesteps``."""
        if self._val is None:
            c = self.cfg
            self._val = validation_batch(c.timesteps, c.views, c.height, c.width)
        self.model.eval()
        outs, metrics = [], []
        for i in range(self._val["images"].shape[0]):
            b = {k: v[i:i + 1].to(self.device) for k, v in self._val.items()}
            out, terms = self.forward_losses(b)
            outs.append({k: float(v) for k, v in terms.items()})
            metrics.append(quick_metrics(out, b))
        self.model.train()
        res = {f"val_{k}": sum(o[k] for o in outs) / len(outs) for k in ("loss", "camera", "depth", "point", "mask") if k in outs[0]}
        res.update({f"val_{k}": sum(m[k] for m in metrics) / len(metrics) for k in metrics[0]})
        return res

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "data": self.data.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "train_config": self.cfg.to_dict(),
            "model_config": self.model_config.to_dict(),
            "history": self.history,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.data.load_state_dict(state["data"])
        torch.set_rng_state(state["torch_rng"])
        self.step = int(state["step"])
        self.history = list(state.get("history", []))

    def save_checkpoint(self, path: str | os.PathLike | None = None) -> Path:
        """Atomically write the full training state (default ``out_dir/checkpoint.pt``)."""
        p = Path(path) if path is not None else self._out(CHECKPOINT_NAME)
        with atomic_file(p) as f:
            torch.save(self.state_dict(), f)
        return p

    @classmethod
    def resume(cls, path: str | os.PathLike, out_dir: str | os.PathLike | None = None,
               steps: int | None = None) -> "Trainer":
        """A trainer restored from a checkpoint; ``steps`` may extend the run (changes the cosine)."""
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            raise ValueError(f"--resume: {path} cannot be read as a vggt-mv training checkpoint with "
                             f"weights_only=True ({first}); start a new run with another --out") from None
        if not isinstance(state, dict) or not {"model", "optimizer", "train_config", "model_config"} <= set(state):
            raise ValueError(f"--resume: {path} is not a vggt-mv training checkpoint (missing keys); "
                             "start a new run with another --out")
        cfg = TrainConfig.from_dict(state["train_config"])
        if steps is not None:
            cfg.steps = int(steps)
        # the checkpoint already holds the weights: do not re-read cfg.init (it may have moved)
        trainer = cls(dataclasses.replace(cfg, init=None), out_dir, ModelConfig.from_dict(state["model_config"]))
        trainer.cfg = cfg
        trainer.load_state_dict(state)
        return trainer

    def _out(self, name: str) -> Path:
        if self.out_dir is None:
            raise ValueError("this trainer has no out_dir; pass a path explicitly")
        return self.out_dir / name

    def write_log(self, extra: dict[str, Any] | None = None) -> Path:
        """``out_dir/train_log.json``: configs, history of logged steps, ``extra`` (e.g. timings)."""
        log = {"train_config": self.cfg.to_dict(), "model_config": self.model_config.to_dict(),
               "step": self.step, "history": self.history, **(extra or {})}
        p = self._out(LOG_NAME)
        with atomic_file(p, "w") as f:
            f.write(json.dumps(log, indent=1))
        return p

    def save_weights(self) -> Path:
        """``out_dir/model.safetensors`` (+ ``.json`` manifest) via ``save_merged``."""
        from vggt_mv.weights.loader import save_merged

        self.model.eval()
        try:
            return save_merged(self.model.cpu(), self._out(WEIGHTS_NAME))
        finally:
            self.model.to(self.device)

    # ------------------------------------------------------------------ loop
    def fit(self, progress: bool = True) -> dict[str, Any]:
        """Train from ``self.step`` to ``cfg.steps``; checkpoints/logs go to ``out_dir`` if set.

        Logged rows average the terms over ``log_every`` steps. Returns a summary with
        ``sec_per_step`` (wall time of the steps run here, data generation included).
        """
        from tqdm import tqdm

        cfg = self.cfg
        t0, n0 = time.perf_counter(), self.step
        acc: dict[str, float] = {}
        n_acc = 0
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not progress, dynamic_ncols=True, desc="train")
        batches = prefetched_batches(cfg, self.step) if cfg.workers > 0 else None
        try:
            while self.step < cfg.steps:
                batch = next(batches) if batches is not None else self.data.batch(cfg.batch_size)
                rec = self.train_step(batch)
                for k, v in rec.items():
                    acc[k] = acc.get(k, 0.0) + v
                n_acc += 1
                bar.update(1)
                bar.set_postfix({k: f"{rec[k]:.3g}" for k in ("loss", "camera", "depth", "point", "mask", "lambda_pose", "lambda_geo") if k in rec})
                last = self.step == cfg.steps
                if self.step % cfg.log_every == 0 or last:
                    row = {k: v / n_acc for k, v in acc.items()}
                    row.update(step=self.step, lr=rec["lr"], sec_per_step=(time.perf_counter() - t0) / max(1, self.step - n0))
                    if cfg.val_every and (self.step % cfg.val_every == 0 or last):
                        row.update(self.validate())
                        bar.write(" ".join(f"{k}={row[k]:.4g}" for k in sorted(row) if k.startswith("val_")))
                    self.history.append(row)
                    acc, n_acc = {}, 0
                    if self.out_dir is not None:
                        self.write_log()
                if self.out_dir is not None and (self.step % cfg.ckpt_every == 0 or last):
                    self.save_checkpoint()
        finally:
            bar.close()
            if batches is not None:
                batches.close()
        elapsed = time.perf_counter() - t0
        summary = {"steps_run": self.step - n0, "seconds": elapsed,
                   "sec_per_step": elapsed / max(1, self.step - n0)}
        if self.out_dir is not None:
            self.save_weights()
            self.write_log({"summary": summary})
        return summary
