"""Training loop: AdamW, warm-up + cosine, what trains by recipe, one process or many (DDP / FSDP2
through :mod:`vggt_mv.train.parallel`), gradient accumulation, exact resumption, rank-0 logging.

Reproducibility: model init comes from ``torch.manual_seed(seed)`` (the same on every rank); each
step's batch and torch RNG are pure functions of ``(seed, step, rank)``
(:mod:`vggt_mv.train.batches`), so a checkpoint needs only model, optimizer and step to resume to
bit-identical parameters (same world size and thread count).
"""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from vggt_mv.config import ModelConfig
from vggt_mv.distributed import DistEnv
from vggt_mv.heads.pose_encoding import quat_to_mat
from vggt_mv.model.vggt_mv import VGGTMV
import vggt_mv.train.checkpoint as checkpoint
from vggt_mv.train.batches import batch_for_step, batches, mixture_for, step_seed
from vggt_mv.train.checkpoint import CHECKPOINT_NAME
from vggt_mv.train.config import TrainConfig, lr_at
from vggt_mv.train.correspondence import capture_view_inputs, correspondence_loss, patch_correspondences
from vggt_mv.train.data import validation_batch
from vggt_mv.train.losses import compute_losses
from vggt_mv.train.parallel import DataParallel, apply_activation_checkpointing, autocast_dtype, peak_memory_bytes
from vggt_mv.train.recipes import Rule, module_key, select, set_train_mode, trainable_table
from vggt_mv.train.run_log import RunLog

__all__ = ["TrainConfig", "Trainer", "lr_at", "param_groups", "quick_metrics", "batch_for_step",
           "CHECKPOINT_NAME", "WEIGHTS_NAME"]

WEIGHTS_NAME = "model.safetensors"
#: new modules whose initial values reproduce the model without them (λ = 0, fusion gains 1, the
#: gate's identity): they may stay at init when frozen; other new modules (a fresh mask head) may not
NEUTRAL_AT_INIT = ("aggregator.mask_bias.", "aggregator.keypoint_bias.")
#: test hook "RANK:STEP": that rank's loss is made non-finite at that (1-based) step
_TEST_NAN_AT = "VGGT_MV_TEST_NAN_AT"


def param_groups(model: torch.nn.Module, cfg: TrainConfig, lrs: dict[str, float | None]) -> list[dict[str, Any]]:
    """AdamW groups of the trained parameters (``lrs``: name -> base lr, None = ``cfg.lr``), per base
    lr: matrices decay; biases/norms/tokens don't; mask/keypoint-bias scalars get ``lambda_lr_mult`` x the lr.
    Each group's ``base_lr`` is scaled by the schedule (:func:`lr_at`)."""
    groups: dict[tuple[float, str], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if name not in lrs:
            continue
        base = cfg.lr if lrs[name] is None else lrs[name]
        if name.startswith(("aggregator.mask_bias.", "aggregator.keypoint_bias.")):
            key = (base * cfg.lambda_lr_mult, "scalar")
        elif p.dim() >= 2 and "token" not in name and "pos_embed" not in name:
            key = (base, "decay")
        else:
            key = (base, "no_decay")
        groups.setdefault(key, []).append(p)
    order = {"decay": 0, "no_decay": 1, "scalar": 2}
    return [{"params": ps, "weight_decay": cfg.weight_decay if kind == "decay" else 0.0, "base_lr": lr}
            for (lr, kind), ps in sorted(groups.items(), key=lambda kv: (order[kv[0][1]], -kv[0][0]))]


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


class Trainer:
    """Owns model, optimizer and data of one run (one rank of it); ``out_dir`` receives checkpoints
    and the log. ``env``: this process's place in a torchrun world (default: a single process)."""

    def __init__(self, cfg: TrainConfig, out_dir: str | os.PathLike | None = None,
                 model_config: ModelConfig | None = None, env: DistEnv | None = None) -> None:
        self.env = env or DistEnv()
        strategy = cfg.strategy if cfg.strategy != "auto" else ("ddp" if self.env.distributed else "none")
        if self.env.distributed and strategy == "none":
            raise ValueError(f"--strategy none with {self.env.world_size} ranks would train "
                             f"{self.env.world_size} separate copies; use --strategy ddp or fsdp")
        if strategy == "fsdp" and cfg.loss.corr > 0:
            raise ValueError("--corr-weight with --strategy fsdp: the View-SA correspondence loss calls block "
                             "layers outside the block's forward, which FSDP2 cannot gather; use --strategy ddp")
        self.cfg = dataclasses.replace(cfg, strategy=strategy)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        if cfg.threads:
            torch.set_num_threads(max(1, cfg.threads))
        torch.manual_seed(cfg.seed)
        self.model_config = model_config or ModelConfig.preset(cfg.preset)
        if strategy == "fsdp" and self.model_config.sparse.strategy != "none":
            raise ValueError(f"sparse strategy {self.model_config.sparse.strategy!r} with --strategy fsdp: sparse "
                             "layers call block layers outside the block's forward; use --strategy ddp")
        self.device = self.env.device if self.env.distributed else torch.device(cfg.device)
        rules = cfg.training_rules(self.model_config)
        if cfg.init or cfg.init_pi3:
            self.model = self._load_init(rules)
            self.model_config = self.model.config
        else:
            self.model = VGGTMV(self.model_config)
        self.trained_lrs = select(self.model, rules)
        self.model.to(self.device)
        set_train_mode(self.model)
        if cfg.checkpointing:
            apply_activation_checkpointing(self.model)
        self.parallel = DataParallel(self.model, strategy, self.env)
        self.optimizer = torch.optim.AdamW(param_groups(self.model, cfg, self.trained_lrs), lr=cfg.lr, betas=(0.9, 0.95))
        self.autocast = autocast_dtype(cfg.precision, self.device)
        self.step = 0
        self.history: list[dict[str, float]] = []
        self._val: dict[str, torch.Tensor] | None = None
        self.log = RunLog(self.out_dir, enabled=self.is_main)

    @property
    def is_main(self) -> bool:
        return self.env.is_main

    def _load_init(self, rules: list[Rule]) -> VGGTMV:
        """The model with ``cfg.init`` (+ ``cfg.init_pi3``, seed recipe) loaded strictly: every tensor
        must come from the files except new modules (DESIGN §3), and those only where ``rules`` train
        them or their init is neutral (a frozen mask head left at random init would spoil the run)."""
        from vggt_mv.weights.loader import load_model

        cfg = self.cfg
        model, report = load_model(self.model_config, checkpoint=cfg.init, pi3=cfg.init_pi3, recipe="seed")
        trained = select(model, rules)
        params = dict(model.named_parameters())
        frozen_at_init = sorted({module_key(k) for k in report.left_at_init
                                 if k in params and k not in trained and not k.startswith(NEUTRAL_AT_INIT)})
        if frozen_at_init:
            names = " + ".join(f"{flag} {v}" for flag, v in (("--init", cfg.init), ("--pi3", cfg.init_pi3)) if v)
            raise ValueError(f"{names}: {len(frozen_at_init)} new modules have no weights in the files and "
                             f"--train-recipe {cfg.train_recipe} leaves them frozen at random init "
                             f"({', '.join(frozen_at_init[:4])}{', ...' if len(frozen_at_init) > 4 else ''}); "
                             "train them (--trainable GLOB or another "
                             "--train-recipe) or start from weights that have them")
        return model

    def trainable_rows(self) -> list[dict[str, Any]]:
        """Per module: trainable / total parameters and lr (:func:`~vggt_mv.train.recipes.trainable_table`)."""
        return trainable_table(self.model, self.trained_lrs, self.cfg.lr)

    # ------------------------------------------------------------------ one step
    def forward_losses(self, batch: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Model outputs and loss terms for a batch (external masks only where the batch enables them).

        With ``loss.corr > 0`` the View-SA inputs of ``loss.corr_layers`` are captured during the
        forward and the correspondence term is added (key ``corr``). The forward runs under the
        run's autocast; the losses in float32.
        """
        lc = self.cfg.loss
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        ext = batch["ext_masks"] if bool(batch["ext_mask_on"].any()) else None
        layers = lc.corr_layers if lc.corr > 0 and batch["images"].shape[2] > 1 else []
        with capture_view_inputs(self.model.aggregator, layers) as captured, \
                torch.autocast(self.device.type, dtype=self.autocast or torch.float32, enabled=self.autocast is not None):
            out = self.parallel.module(batch["images"], ext_masks=ext)
        out = {k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in out.items()}
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
        """One optimizer step on ``batch`` (``cfg.accum`` micro-batches along its first dimension);
        returns this rank's float loss terms (averaged over micro-batches), lr, gradient norms and λ.

        A loss that is not finite on any rank stops every rank before its backward with
        ``FloatingPointError`` naming the rank(s) and step (no rank is left waiting in a collective).
        """
        cfg = self.cfg
        lr = lr_at(self.step, cfg)
        for g in self.optimizer.param_groups:
            g["lr"] = g["base_lr"] * lr / cfg.lr
        set_train_mode(self.model)
        self.optimizer.zero_grad(set_to_none=True)
        torch.manual_seed(step_seed(cfg.seed, self.step, self.env.rank))
        n = batch["images"].shape[0]
        if n % cfg.accum:
            raise ValueError(f"a batch of {n} does not split into --accum {cfg.accum} micro-batches")
        size = n // cfg.accum
        rec: dict[str, float] = {}
        for i in range(cfg.accum):
            micro = {k: v[i * size:(i + 1) * size] for k, v in batch.items()}
            with self.parallel.gradient_sync(i == cfg.accum - 1):
                _, terms = self.forward_losses(micro)
                loss = terms["loss"]
                if os.environ.get(_TEST_NAN_AT) == f"{self.env.rank}:{self.step + 1}":
                    loss = loss * float("nan")
                bad = self.parallel.nonfinite_ranks(loss)
                if bad:
                    where = "rank " + ", ".join(map(str, bad)) if self.parallel.world_size > 1 else "this run"
                    raise FloatingPointError(
                        f"non-finite loss at step {self.step + 1} on {where} "
                        f"({', '.join(f'{k}={float(v):.3g}' for k, v in terms.items())}); lower --lr or check the data")
                (loss / cfg.accum).backward()
            for k, v in terms.items():
                rec[k] = rec.get(k, 0.0) + float(v.detach()) / cfg.accum
        self.parallel.reduce_ignored_grads()
        lam_grads = self.lambda_grads()
        norms = self.parallel.clip_gradients(cfg.grad_clip)
        self.optimizer.step()
        self.step += 1
        rec.update(step=self.step, lr=lr, grad_norm=sum(v * v for v in norms.values()) ** 0.5)
        rec.update({f"grad_norm_{k}": v for k, v in norms.items()})
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
        """Loss terms and :func:`quick_metrics` on two fixed held-out clips (``--val-data``, else
        procedural scenes of seeds 100, 101) at the first training size (every rank runs it)."""
        if self._val is None:
            c = self.cfg
            self._val = (mixture_for(c).validation_batch() if c.val_data else None) \
                or validation_batch(c.timesteps, c.views, c.height, c.width)
        self.model.eval()
        outs, metrics = [], []
        for i in range(self._val["images"].shape[0]):
            b = {k: v[i:i + 1].to(self.device) for k, v in self._val.items()}
            out, terms = self.forward_losses(b)
            outs.append({k: float(v) for k, v in terms.items()})
            metrics.append(quick_metrics(out, b))
        set_train_mode(self.model)
        res = {f"val_{k}": sum(o[k] for o in outs) / len(outs) for k in ("loss", "camera", "depth", "point", "mask") if k in outs[0]}
        res.update({f"val_{k}": sum(m[k] for m in metrics) / len(metrics) for k in metrics[0]})
        return res

    # ------------------------------------------------------------------ state
    def save_checkpoint(self) -> Path:
        """Write the resumable state into ``out_dir`` (every rank calls this; see :mod:`.checkpoint`)."""
        if self.out_dir is None:
            raise ValueError("this trainer has no out_dir")
        return checkpoint.save(self)

    @classmethod
    def resume(cls, path: str | os.PathLike, out_dir: str | os.PathLike | None = None,
               steps: int | None = None, env: DistEnv | None = None) -> "Trainer":
        """A trainer restored from a checkpoint (``checkpoint.pt`` or a sharded ``checkpoint/``);
        ``steps`` may extend the run (changes the cosine). Same world size and strategy only."""
        path = Path(path)
        meta = checkpoint.read_meta(path)
        cfg = TrainConfig.from_dict(meta["train_config"])
        env = env or DistEnv()
        checkpoint.check_world(meta, path, env.world_size if env.distributed else 1, cfg.strategy)
        if steps is not None:
            cfg.steps = int(steps)
        # the checkpoint already holds the weights: do not re-read cfg.init (it may have moved)
        trainer = cls(dataclasses.replace(cfg, init=None, init_pi3=None), out_dir,
                      ModelConfig.from_dict(meta["model_config"]), env)
        trainer.cfg = cfg
        checkpoint.load(trainer, path, meta)
        return trainer

    def run_record(self) -> dict[str, Any]:
        """The first record of ``log.jsonl``."""
        return {"train_config": self.cfg.to_dict(), "model_config": self.model_config.to_dict(),
                "world_size": self.parallel.world_size, "strategy": self.parallel.strategy,
                "trainable": self.trainable_rows()}

    def save_weights(self) -> Path | None:
        """``out_dir/model.safetensors`` (+ ``.json`` manifest, config in the header) via
        ``save_merged``, written by rank 0 (under FSDP every rank takes part in gathering it)."""
        from vggt_mv.weights.loader import save_merged

        if self.out_dir is None:
            raise ValueError("this trainer has no out_dir")
        path = self.out_dir / WEIGHTS_NAME
        if self.parallel.strategy == "fsdp":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            full = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
            if self.is_main:
                plain = VGGTMV(self.model_config)
                plain.load_state_dict(full)
                save_merged(plain.eval(), path)
        elif self.is_main:
            plain = VGGTMV(self.model_config)
            plain.load_state_dict({k: v.detach().cpu() for k, v in self.model.state_dict().items()})
            save_merged(plain.eval(), path)
        if dist.is_available() and dist.is_initialized():
            dist.barrier()
        return path if self.is_main else None

    # ------------------------------------------------------------------ loop
    def _mean_over_ranks(self, row: dict[str, float]) -> dict[str, float]:
        """Each key's mean over the ranks that have it (one small all-gather on logging steps)."""
        if self.parallel.world_size == 1:
            return row
        rows: list[dict[str, float]] = [{} for _ in range(self.parallel.world_size)]
        dist.all_gather_object(rows, row)
        keys = {k for r in rows for k in r}
        return {k: sum(r[k] for r in rows if k in r) / sum(1 for r in rows if k in r) for k in keys}

    def fit(self, progress: bool = True) -> dict[str, Any]:
        """Train from ``self.step`` to ``cfg.steps``; checkpoints / log go to ``out_dir`` if set.

        Logged records average the terms over ``log_every`` steps and over ranks, with lr, λ,
        images/s (all ranks) and this rank's peak memory. Returns a summary with ``sec_per_step``.
        """
        from tqdm import tqdm

        cfg = self.cfg
        self.log.start(self.run_record(), resume_step=self.step if self.step else None)
        t0, n0 = time.perf_counter(), self.step
        t_log, n_images = t0, 0
        acc: dict[str, float] = {}
        n_acc = 0
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not (progress and self.is_main),
                   dynamic_ncols=True, desc="train")
        stream = batches(cfg, self.step, self.env.rank)
        try:
            for batch in stream:
                rec = self.train_step(batch)
                n_images += batch["images"].shape[0] * batch["images"].shape[1] * batch["images"].shape[2]
                for k, v in rec.items():
                    acc[k] = acc.get(k, 0.0) + v
                n_acc += 1
                bar.update(1)
                bar.set_postfix({k: f"{rec[k]:.3g}" for k in ("loss", "camera", "depth", "point", "mask", "lambda_pose", "lambda_geo") if k in rec})
                last = self.step == cfg.steps
                if self.step % cfg.log_every == 0 or last:
                    now = time.perf_counter()
                    row = {k: v / n_acc for k, v in acc.items()}
                    row.update(images_per_s=n_images / max(now - t_log, 1e-9),
                               peak_memory_mb=peak_memory_bytes(self.device) / 2**20)
                    row = self._mean_over_ranks(row)
                    row["images_per_s"] *= self.parallel.world_size
                    row.update(step=self.step, lr=rec["lr"], sec_per_step=(now - t0) / max(1, self.step - n0))
                    if cfg.val_every and (self.step % cfg.val_every == 0 or last):
                        row.update(self.validate())
                        if self.is_main:
                            bar.write(" ".join(f"{k}={row[k]:.4g}" for k in sorted(row) if k.startswith("val_")))
                    self.history.append(row)
                    self.log.append({"kind": "step", **row})
                    acc, n_acc, t_log, n_images = {}, 0, time.perf_counter(), 0
                if self.out_dir is not None and (self.step % cfg.ckpt_every == 0 or last):
                    self.save_checkpoint()
        finally:
            bar.close()
            stream.close()
        elapsed = time.perf_counter() - t0
        summary = {"steps_run": self.step - n0, "seconds": elapsed,
                   "sec_per_step": elapsed / max(1, self.step - n0)}
        if self.out_dir is not None:
            self.save_weights()
            self.log.append({"kind": "summary", "step": self.step, **summary})
        self.log.close()
        return summary
