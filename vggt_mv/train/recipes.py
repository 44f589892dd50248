"""What trains: named training recipes, ``--trainable`` / ``--frozen`` globs, per-group learning rates.

A recipe is an ordered list of rules ``(glob, trainable, lr)`` over parameter names; for each
parameter the *last* matching rule decides whether it trains and at which base lr (``None`` = the
run's ``--lr``). Parameters no rule matches are frozen. ``--trainable GLOB[=LR]`` / ``--frozen GLOB``
rules follow the recipe's, so they win.

Recipes (block ranges are those of the 24-block models and scale to shallower ones:
block ``i`` -> ``i * depth // 24``, so on ``tiny`` (8 blocks) 10..19 -> 3..6 and 8..15 -> 2..5):

* ``page4d``: PAGE-4D's ``training_final``: ``aggregator.frame_blocks.{10..19}`` and
  ``aggregator.global_blocks.{10..19}`` at lr 1e-5, ``aggregator.spatial_mask_head`` at 2e-5.
* ``stage1``: the pose-stream blocks (``aggregator.pose_{frame,global}_blocks`` with separate stream
  blocks; in shared-stream mode the frame/global blocks from the fork layer on), the mask head,
  λ and fusion gains (``aggregator.mask_bias``, ``aggregator.keypoint_bias``), frame/global blocks 8..15.
* ``heads``: ``camera_head``, ``depth_head``, ``point_head``.
* ``all``: every parameter.

Frozen parameters get ``requires_grad=False`` (no gradient, no optimizer state) and modules whose
parameters are all frozen stay in eval mode (:func:`set_train_mode`).
"""
from __future__ import annotations

import fnmatch
from collections import OrderedDict
from dataclasses import dataclass

import torch

from vggt_mv.config import ModelConfig

RECIPES = ("page4d", "stage1", "heads", "all")
REFERENCE_DEPTH = 24


@dataclass(frozen=True)
class Rule:
    """Parameters whose name matches ``glob`` train (at ``lr``; None = the run's lr) or are frozen."""

    glob: str
    trainable: bool = True
    lr: float | None = None
    user: bool = False  # from --trainable/--frozen: must match a parameter (recipes name what may exist)


def parse_rule(text: str, trainable: bool) -> Rule:
    """``"GLOB"`` or ``"GLOB=LR"`` (``--trainable``) / ``"GLOB"`` (``--frozen``) -> :class:`Rule`."""
    glob, sep, lr = text.rpartition("=") if "=" in text else (text, "", "")
    if not glob.strip():
        raise ValueError(f"{'--trainable' if trainable else '--frozen'} {text!r}: expected a parameter-name glob "
                         "like 'aggregator.frame_blocks.*'")
    if sep and not trainable:
        raise ValueError(f"--frozen {text!r}: frozen parameters have no learning rate; drop '={lr}'")
    value = None
    if sep:
        try:
            value = float(lr)
        except ValueError:
            raise ValueError(f"--trainable {text!r}: the learning rate after '=' must be a number, "
                             f"like 'camera_head.*=1e-5'") from None
        if not value > 0:
            raise ValueError(f"--trainable {text!r}: the learning rate must be positive")
    return Rule(glob.strip(), trainable, value, user=True)


def _blocks(kind: str, lo: int, hi: int, depth: int, lr: float | None = None) -> list[Rule]:
    a, b = lo * depth // REFERENCE_DEPTH, hi * depth // REFERENCE_DEPTH
    return [Rule(f"aggregator.{kind}_blocks.{i}.*", True, lr) for i in range(a, min(b, depth - 1) + 1)]


def recipe_rules(name: str, cfg: ModelConfig) -> list[Rule]:
    """The rules of recipe ``name`` for a model built from ``cfg`` (module doc)."""
    depth = cfg.depth
    if name == "all":
        return [Rule("*")]
    if name == "heads":
        return [Rule("camera_head.*"), Rule("depth_head.*"), Rule("point_head.*")]
    if name == "page4d":
        return (_blocks("frame", 10, 19, depth, 1e-5) + _blocks("global", 10, 19, depth, 1e-5)
                + [Rule("aggregator.spatial_mask_head.*", True, 2e-5)])
    if name == "stage1":
        rules = [Rule("aggregator.spatial_mask_head.*"), Rule("aggregator.mask_bias.*"), Rule("aggregator.keypoint_bias.*")]
        m = cfg.mask
        if m.enabled and m.mode == "streams":
            if m.separate_stream_blocks:
                rules += [Rule("aggregator.pose_frame_blocks.*"), Rule("aggregator.pose_global_blocks.*")]
            else:
                fork = min(m.bias_layers)
                rules += [Rule(f"aggregator.{k}_blocks.{i}.*") for k in ("frame", "global") for i in range(fork, depth)]
        return rules + _blocks("frame", 8, 15, depth) + _blocks("global", 8, 15, depth)
    raise ValueError(f"--train-recipe {name!r}: unknown; choose one of {', '.join(RECIPES)}")


def select(model: torch.nn.Module, rules: list[Rule]) -> dict[str, float | None]:
    """Parameter name -> base lr (None = the run's lr) for the parameters ``rules`` train; sets
    ``requires_grad`` on every parameter accordingly. A user glob that matches nothing is an error."""
    names = [n for n, _ in model.named_parameters()]
    for r in rules:
        if r.user and not any(fnmatch.fnmatchcase(n, r.glob) for n in names):
            flag = "--trainable" if r.trainable else "--frozen"
            raise ValueError(f"{flag} {r.glob!r} matches no parameter of this model; names look like "
                             f"{names[0]!r} (see the trainable-parameter table of a run)")
    chosen: dict[str, float | None] = {}
    for name, p in model.named_parameters():
        decision: Rule | None = None
        for r in rules:
            if fnmatch.fnmatchcase(name, r.glob):
                decision = r
        trains = decision is not None and decision.trainable
        p.requires_grad_(trains)
        if trains:
            chosen[name] = decision.lr  # type: ignore[union-attr]
    if not chosen:
        raise ValueError("the training recipe and --trainable/--frozen leave no parameter to train")
    return chosen


def set_train_mode(model: torch.nn.Module) -> torch.nn.Module:
    """``model.train()``, then eval mode for every module whose parameters are all frozen."""
    model.train()
    for module in model.modules():
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            module.eval()
    return model


def module_key(name: str) -> str:
    """``aggregator.frame_blocks.3.attn.qkv.weight`` -> ``aggregator.frame_blocks.3`` (blocks one by
    one), ``aggregator.spatial_mask_head.head0.0.weight`` -> ``aggregator.spatial_mask_head``,
    ``camera_head.trunk.0.norm1.weight`` -> ``camera_head``."""
    parts = name.split(".")
    if parts[0] != "aggregator" or len(parts) < 3:
        return parts[0] if parts[0] != "aggregator" else ".".join(parts[:2])
    if parts[1].endswith("_blocks") and parts[2].isdigit():
        return ".".join(parts[:3])
    return ".".join(parts[:2])


def trainable_table(model: torch.nn.Module, lrs: dict[str, float | None], base_lr: float) -> list[dict]:
    """Per module (blocks one by one, heads whole): trainable / total parameters and lr(s)."""
    rows: "OrderedDict[str, dict]" = OrderedDict()
    for name, p in model.named_parameters():
        row = rows.setdefault(module_key(name), {"module": module_key(name), "trainable": 0, "total": 0, "lr": set()})
        row["total"] += p.numel()
        if name in lrs:
            row["trainable"] += p.numel()
            row["lr"].add(lrs[name] if lrs[name] is not None else base_lr)
    return [{**r, "lr": sorted(r["lr"])} for r in rows.values()]


def format_table(rows: list[dict]) -> str:
    """Text of :func:`trainable_table`: trained modules, then one line for the frozen rest and the total."""
    trained = [r for r in rows if r["trainable"]]
    width = max((len(r["module"]) for r in trained), default=10)
    lines = [f"{'module':<{width}}  {'trainable':>12}  lr"]
    for r in trained:
        share = "" if r["trainable"] == r["total"] else f" of {r['total']:,}"
        lines.append(f"{r['module']:<{width}}  {r['trainable']:>12,}{share}  {', '.join(f'{x:g}' for x in r['lr'])}")
    n_train, n_all = sum(r["trainable"] for r in rows), sum(r["total"] for r in rows)
    frozen = sum(1 for r in rows if not r["trainable"])
    lines.append(f"{frozen} modules frozen; trainable {n_train:,} of {n_all:,} parameters ({100 * n_train / max(1, n_all):.2f}%)")
    return "\n".join(lines)
