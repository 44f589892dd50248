"""``vggt-mv train``: train VGGT-MV on procedural scenes or real multi-camera data (``--data``), in
one process or across GPUs and machines with ``torchrun -m vggt_mv train`` (DDP or FSDP2).

Writes ``OUT/checkpoint.pt`` (sharded ``OUT/checkpoint/`` with ``--strategy fsdp``) every
``--ckpt-every`` steps, ``OUT/log.jsonl`` (the run record, then one record per ``--log-every``
steps) and, at the end, ``OUT/model.safetensors`` (+ ``model.json``) via ``save_merged``.
``--resume`` continues from the checkpoint with its saved settings (``--steps`` may extend the run;
same world size). Under torchrun only rank 0 prints and writes logs.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

from vggt_mv.export.output import check_output, is_train_run
from vggt_mv.train.losses import LossConfig
from vggt_mv.train.recipes import RECIPES, format_table, parse_rule
from vggt_mv.weights.hub import parse_weights_ref
from vggt_mv.train.checkpoint import CHECKPOINT_NAME, SHARDED_NAME, find_checkpoint
from vggt_mv.train.parallel import PRECISIONS, STRATEGIES
from vggt_mv.train.trainer import TrainConfig, Trainer

log = logging.getLogger("vggt_mv.train")


def _sizes(text: str) -> list[tuple[int, int]]:
    """``"126x168"`` or ``"126x168,168x224"`` -> ``[(H, W), ...]``."""
    out = []
    for part in text.split(","):
        try:
            h, w = (int(x) for x in part.lower().strip().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"--size must look like 126x168 or 126x168,168x224 (HxW), got {text!r}") from None
        if h <= 0 or w <= 0 or h % 14 or w % 14:
            raise argparse.ArgumentTypeError(f"--size {part}: H and W must be positive multiples of 14")
        out.append((h, w))
    return out


def _span(flag: str, cast: type, example: str, min_lo: float):
    """An argparse type for ``"x"`` or ``"lo-hi"`` -> ``(lo, hi)`` with ``min_lo <= lo <= hi``."""
    def parse(text: str) -> tuple:
        try:
            lo, _, hi = text.partition("-")
            rng = (cast(lo), cast(hi or lo))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must look like {example}, got {text!r}") from None
        if rng[0] < min_lo or rng[1] < rng[0]:
            raise argparse.ArgumentTypeError(f"{flag} {text}: need {min_lo} <= lo <= hi")
        return rng
    return parse


_timesteps = _span("--timesteps", int, "4 or 3-6", 1)
_arc = _span("--arc", float, "60 or 40-80 (degrees)", 0.0)


def _layers(text: str) -> list[int]:
    """``"1,2"`` -> ``[1, 2]``."""
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected layer indices like 1,2, got {text!r}") from None


class _RuleAction(argparse.Action):
    """``--trainable GLOB[=LR]`` / ``--frozen GLOB`` appended in command-line order (later wins)."""

    def __call__(self, parser, namespace, values, option_string=None):
        try:
            rule = parse_rule(values, trainable=option_string == "--trainable")
        except ValueError as e:
            raise argparse.ArgumentError(self, str(e).split(": ", 1)[-1]) from None
        getattr(namespace, self.dest).append(dataclasses.asdict(rule))


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` subcommand."""
    d = TrainConfig()
    p = subparsers.add_parser("train", help="train a model on real multi-camera data (--data) or procedural scenes",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default=d.preset, help="model preset (default: %(default)s)")
    p.add_argument("--steps", type=int, default=None,
                   help=f"total optimizer steps (default: {d.steps}; with --resume: the run's own total)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the data stream and the init (default: %(default)s)")
    p.add_argument("--init", default=None,  # a str: Path() would fold the // of hf:// URIs
                   help="start from these weights instead of random init: a previous run's model.safetensors, "
                        "hf://OWNER/REPO/FILE or a weights name")
    p.add_argument("--pi3", default=None,
                   help="with --init: Pi3 weights combined with it by the seed recipe (as `vggt-mv reconstruct`)")
    p.add_argument("--train-recipe", default=d.train_recipe, choices=RECIPES,
                   help="what trains: page4d (PAGE-4D's blocks 10-19 at 1e-5 + mask head at 2e-5), stage1 "
                        "(pose stream, mask head, lambdas/gains, blocks 8-15), heads, all (default: %(default)s); "
                        "see vggt_mv/train/recipes.py")
    p.add_argument("--trainable", dest="rules", action=_RuleAction, default=[], metavar="GLOB[=LR]",
                   help="also train parameters matching GLOB (at LR); repeatable, later flags win")
    p.add_argument("--frozen", dest="rules", action=_RuleAction, default=[], metavar="GLOB",
                   help="freeze parameters matching GLOB; repeatable, later flags win")
    p.add_argument("--size", type=_sizes, default=[(d.height, d.width)],
                   help="HxW (multiples of 14), or a comma list drawn per step; validation uses the first "
                        "(default: 126x168)")
    p.add_argument("--views", type=int, default=d.views, help="cameras per scene (default: %(default)s)")
    p.add_argument("--timesteps", type=_timesteps, default=(d.timesteps, d.timesteps),
                   help="timesteps per scene, or a range lo-hi drawn per step (default: 4)")
    p.add_argument("--batch", type=int, default=d.batch_size, help="scenes per step (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None,
                   help=f"torch threads per process (default: {d.threads}; under torchrun OMP_NUM_THREADS)")
    p.add_argument("--device", default=d.device, help="cpu, cuda or cuda:N (default: %(default)s)")
    p.add_argument("--workers", type=int, default=d.workers,
                   help="processes rendering training scenes; 0 = in the training process (default: %(default)s)")
    p.add_argument("--strategy", choices=("auto",) + STRATEGIES, default=d.strategy,
                   help="data parallelism: auto = ddp under torchrun, none alone; fsdp shards parameters, "
                        "gradients and optimizer state (default: %(default)s)")
    p.add_argument("--precision", choices=PRECISIONS, default=d.precision,
                   help="auto = bf16 autocast on CUDA, fp32 on CPU (default: %(default)s)")
    p.add_argument("--checkpointing", action="store_true",
                   help="activation checkpointing of the aggregator blocks: less memory, more compute")
    p.add_argument("--accum", type=int, default=d.accum,
                   help="micro-batches of --batch per optimizer step (gradient accumulation; default: %(default)s)")
    p.add_argument("--lr", type=float, default=d.lr,
                   help="peak AdamW learning rate, after warm-up, cosine decay (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=d.warmup, help="linear warm-up steps (default: %(default)s)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="AdamW weight decay (default: %(default)s)")
    p.add_argument("--grad-clip", type=float, default=d.grad_clip,
                   help="gradient-norm clip; 0 = off (default: %(default)s)")
    p.add_argument("--ext-mask-prob", type=float, default=d.ext_mask_prob,
                   help="share of samples that feed the GT mask as external mask (default: %(default)s)")
    p.add_argument("--arc", type=_arc, default=tuple(d.arc_deg),
                   help="degrees spanned by each scene's camera arc, drawn in lo-hi (default: 40-80)")
    p.add_argument("--camera-weight", type=float, default=d.loss.camera, help="camera loss weight (default: %(default)s)")
    p.add_argument("--corr-weight", type=float, default=d.loss.corr,
                   help="View-SA correspondence supervision weight; 0 = off (default: %(default)s)")
    p.add_argument("--corr-layers", type=_layers, default=d.loss.corr_layers,
                   help="layers whose View-SA attention is supervised (default: 1,2)")
    p.add_argument("--mask-weight", type=float, default=d.loss.mask,
                   help="dynamic-mask BCE weight (default: %(default)s)")
    p.add_argument("--cross-view-weight", type=float, default=d.loss.cross_view,
                   help="self-supervised cross-view depth consistency weight (default: %(default)s)")
    p.add_argument("--cross-view-on", choices=["no-gt", "all"], default=d.loss.cross_view_on,
                   help="clips it applies to: those without GT depth, or all (default: %(default)s)")
    p.add_argument("--mask-pos-weight", type=float, default=d.loss.mask_pos_weight,
                   help="BCE weight of dynamic patches (default: %(default)s)")
    p.add_argument("--data", action="append", default=[], metavar="[FORMAT:]PATH[@W]",
                   help="training data (repeatable, weight W, default 1): dump, mvtracker_npz, dexycb, kubric_mv, "
                        "panoptic (auto-detected) or synthetic; default: procedural scenes")
    p.add_argument("--val-data", action="append", default=[], metavar="[FORMAT:]PATH",
                   help="validation sequences (repeatable); never trained on, even if also under --data")
    p.add_argument("--log-every", type=int, default=d.log_every,
                   help="steps between log.jsonl records (default: %(default)s)")
    p.add_argument("--ckpt-every", type=int, default=d.ckpt_every,
                   help="steps between checkpoints (default: %(default)s)")
    p.add_argument("--val-every", type=int, default=d.val_every, help="0 disables validation")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    p.set_defaults(func=run)


#: train options -> the TrainConfig field they set (what --resume takes from the checkpoint instead)
_RESUMED = {"preset": "preset", "lr": "lr", "warmup": "warmup", "weight_decay": "weight_decay",
            "grad_clip": "grad_clip", "batch": "batch_size", "views": "views", "seed": "seed",
            "accum": "accum", "train_recipe": "train_recipe", "precision": "precision"}


def _ignored_on_resume(args: argparse.Namespace, saved: TrainConfig) -> list[str]:
    """Options given with --resume (not at their default) that differ from the run's saved settings."""
    default = TrainConfig()
    out = [f"--{opt.replace('_', '-')} {getattr(args, opt)}" for opt, field in _RESUMED.items()
           if getattr(args, opt) != getattr(default, field) and getattr(args, opt) != getattr(saved, field)]
    size = [saved.height, saved.width]
    if list(args.size[0]) not in ([default.height, default.width], size):
        out.append(f"--size {args.size[0][0]}x{args.size[0][1]}")
    return out


def run(args: argparse.Namespace) -> int:
    """Entry point of ``vggt-mv train`` (also each torchrun rank's); returns the exit code."""
    from vggt_mv import distributed

    if args.steps is not None and args.steps <= 0:
        raise ValueError(f"--steps must be positive, got {args.steps}")
    for name in ("views", "batch", "log_every", "ckpt_every", "accum", "lr"):
        if not getattr(args, name) > 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    for name in ("warmup", "weight_decay", "grad_clip"):
        if not getattr(args, name) >= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    if args.threads is not None and args.threads <= 0:
        raise ValueError("--threads must be positive")
    threads = args.threads or (None if distributed.under_torchrun() else TrainConfig.threads)
    out: Path = args.out
    found = find_checkpoint(out)
    if args.resume:
        if found is None:
            raise FileNotFoundError(f"--resume: no checkpoint at {out / CHECKPOINT_NAME} or {out / SHARDED_NAME}/")
    else:
        local = [w for w in (args.init, args.pi3) if w and parse_weights_ref(w) is None]
        check_output(out, kind="dir", inputs=local, is_ours=is_train_run)
        if found is not None:
            raise ValueError(f"{found} exists; pass --resume to continue it or choose another --out")
    if not distributed.under_torchrun():  # under torchrun each rank takes its cuda:LOCAL_RANK
        from vggt_mv.inference.device import select_device

        select_device(args.device)  # e.g. cuda on a machine without it: one line, before anything runs
    env = distributed.init_from_env(args.device)
    distributed.quiet_other_ranks()
    say = print if env.is_main else (lambda *a, **k: None)
    try:
        if args.resume:
            if threads:
                import torch
                torch.set_num_threads(threads)
            trainer = Trainer.resume(found, out, steps=args.steps, env=env)
            if trainer.step >= trainer.cfg.steps:
                raise ValueError(f"--resume: {found} is at step {trainer.step} of {trainer.cfg.steps}, so there is "
                                 f"nothing to train; pass --steps N with N > {trainer.step} to train further")
            ignored = _ignored_on_resume(args, trainer.cfg)
            if ignored:
                log.warning("--resume continues with the run's saved settings; ignored: %s", ", ".join(ignored))
            say(f"resuming {found} at step {trainer.step} of {trainer.cfg.steps}", file=sys.stderr)
        else:
            steps = args.steps or TrainConfig.steps
            (h, w), extra = args.size[0], [list(s) for s in args.size[1:]]
            t_lo, t_hi = args.timesteps
            cfg = TrainConfig(
                preset=args.preset, steps=steps, lr=args.lr, warmup=min(args.warmup, steps),
                weight_decay=args.weight_decay, grad_clip=args.grad_clip, batch_size=args.batch,
                timesteps=t_lo, max_timesteps=t_hi if t_hi != t_lo else None, views=args.views,
                height=h, width=w, extra_sizes=extra,
                ext_mask_prob=args.ext_mask_prob, arc_deg=list(args.arc), seed=args.seed, threads=threads,
                init=args.init, init_pi3=args.pi3, train_recipe=args.train_recipe, rules=args.rules,
                device=str(env.device) if env.distributed else args.device, workers=args.workers,
                data=list(args.data), val_data=list(args.val_data),
                strategy=args.strategy, precision=args.precision, checkpointing=args.checkpointing, accum=args.accum,
                log_every=args.log_every, ckpt_every=args.ckpt_every, val_every=args.val_every,
                loss=LossConfig(camera=args.camera_weight, mask=args.mask_weight, mask_pos_weight=args.mask_pos_weight,
                                corr=args.corr_weight, corr_layers=args.corr_layers,
                                cross_view=args.cross_view_weight, cross_view_on=args.cross_view_on),
            )
            if cfg.data or cfg.val_data:  # open every source before the model is built: a bad spec fails in a second
                from vggt_mv.train.batches import mixture_for
                mixture_for(cfg)
            trainer = Trainer(cfg, out, env=env)
        say(format_table(trainer.trainable_rows()), file=sys.stderr)
        summary = trainer.fit(progress=not args.no_progress)
        say(json.dumps({"out": str(out), "step": trainer.step, "world_size": trainer.parallel.world_size,
                        "strategy": trainer.parallel.strategy, **summary, "lambdas": trainer.model.lambdas()}, indent=1))
    finally:
        distributed.shutdown()
    return 0
