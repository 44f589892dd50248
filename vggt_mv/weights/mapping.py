"""The three-stage mapping plan (DESIGN §4) from Pi3 and VGGT/PAGE-4D keys onto a ``VGGTMV`` model.

Mapping table (target <- source):

| target (``VGGTMV``)                         | Pi3 ``model.safetensors``                 | VGGT / PAGE-4D checkpoint |
|---------------------------------------------|-------------------------------------------|---------------------------|
| ``aggregator.patch_embed.*``                | ``encoder.*`` (no mask_token)             | same name                 |
| ``aggregator.frame_blocks.i.*``  (i < 18)   | ``decoder.{2i}.*``                        | same name                 |
| ``aggregator.global_blocks.i.*`` (i < 18)   | ``decoder.{2i+1}.*``                      | same name                 |
| blocks 18..23                               | (Pi3 has 36 decoder blocks = 18 pairs)    | same name                 |
| ``aggregator.camera_token [1,2,1,C]``       | ``register_token[:, :, 0]`` in both slots  (Pi3 alone) | same name    |
| ``aggregator.register_token [1,2,4,C]``     | ``register_token[:, :, 1:5]`` (Pi3 alone); ``[:, :, 0:4]`` (seed recipe) | same name |
| ``aggregator.spatial_mask_head.*``          | -                                         | same name (variant checked) |
| ``camera_head/depth_head/point_head/track_head.*`` | never (Pi3 heads collide by name)  | same name                 |
| ``aggregator.pose_{frame,global}_blocks.j`` (separate stream copies) | copy of block fork+j's source | copy of block fork+j |
| lambdas (mask, keypoint), fusion gains, memory tokens | - (initialised: lambdas from config, gains 1, memory N(0, 0.02)) | - |

Recipes when both files are given: ``seed`` (default; seed 000 §7): Pi3 provides blocks 0..17 and
the registers, the checkpoint everything else (patch_embed, blocks 18..23, camera token, mask head,
heads). ``checkpoint_first``: the checkpoint wins wherever it has a tensor, Pi3 fills the rest.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

Shape = tuple[int, ...]
Recipe = Literal["seed", "checkpoint_first"]
PI3_BLOCK_PAIRS = 18
PI3_HEAD_PREFIXES = ("point_decoder.", "point_head.", "conf_decoder.", "conf_head.", "camera_decoder.", "camera_head.")
PI3_IGNORED = ("image_mean", "image_std")
NEW_MODULE_PATTERNS = ("aggregator.mask_bias.", "aggregator.keypoint_bias.", "aggregator.memory_tokens")
MASK_PREFIX = "aggregator.spatial_mask_head."
#: the design notes' block names, read as the project's (``time_blocks`` = ``frame_blocks``, ...)
_KEY_ALIASES = re.compile(r"^(aggregator\.)(pose_)?(time|view)_blocks\.")

_BLOCK = re.compile(r"^aggregator\.(frame_blocks|global_blocks)\.(\d+)\.(.*)$")
_PI3_DEC = re.compile(r"^decoder\.(\d+)\.(.*)$")


@dataclass(frozen=True)
class Assignment:
    """target <- source[source_key] (optionally through ``transform``)."""

    target: str
    source: str  # "checkpoint" | "pi3"
    source_key: str
    transform: str | None = None  # "pi3_camera" | "pi3_registers_1_5" | "pi3_registers_0_4"


@dataclass(frozen=True)
class Skip:
    source: str
    key: str
    reason: str


@dataclass
class Plan:
    assignments: dict[str, Assignment] = field(default_factory=dict)
    skipped: list[Skip] = field(default_factory=list)
    left_at_init: dict[str, str] = field(default_factory=dict)  # target -> why
    mask_variant: str | None = None


def canonical_key(key: str) -> str:
    """A state_dict key with the notes' ``aggregator.time_blocks.`` / ``view_blocks.`` read as
    ``frame_blocks.`` / ``global_blocks.`` (also ``pose_time_blocks.`` / ``pose_view_blocks.``). Only the
    aggregator's blocks: the track head's own ``updateformer.time_blocks`` keep their name."""
    return _KEY_ALIASES.sub(
        lambda m: f"{m.group(1)}{m.group(2) or ''}{'frame' if m.group(3) == 'time' else 'global'}_blocks.", key
    )


def detect_mask_variant(keys: dict[str, Shape]) -> str | None:
    """'page4d' / 'fin10' from the checkpoint's mask-head shapes, None when it has no mask head."""
    pre = "aggregator.spatial_mask_head."
    if not any(k.startswith(pre) for k in keys):
        return None
    if pre + "alpha_logit" in keys:
        return "fin10"
    w2 = keys.get(pre + "head0.2.weight")
    if w2 is not None and len(w2) == 4 and w2[1] == 1 and w2[2:] == (3, 3):
        return "fin10"  # depthwise 3x3 second conv
    return "page4d"


def _pi3_target(key: str, n_pairs: int) -> str | None:
    if key.startswith("encoder."):
        rest = key[len("encoder."):]
        return None if rest == "mask_token" else "aggregator.patch_embed." + rest
    m = _PI3_DEC.match(key)
    if m:
        n, rest = int(m.group(1)), m.group(2)
        i = n // 2
        if i >= n_pairs:
            return None
        return f"aggregator.{'frame_blocks' if n % 2 == 0 else 'global_blocks'}.{i}.{rest}"
    return None


def transformed_shape(transform: str, shape: Shape) -> Shape:
    if transform == "pi3_camera":
        return (shape[0], 2, 1, shape[3])
    return (shape[0], 2, 4, shape[3])


def build_plan(
    target: dict[str, Shape],
    checkpoint: dict[str, Shape] | None = None,
    pi3: dict[str, Shape] | None = None,
    *,
    recipe: Recipe = "seed",
    mask_head: str | None = None,
    fork_layer: int | None = None,
    fresh_mask_head: bool = False,
) -> Plan:
    """Plan which source tensor fills each target tensor. Inputs are key -> shape maps only.

    Checkpoint keys named with ``time_blocks`` / ``view_blocks`` fill ``frame_blocks`` /
    ``global_blocks``. ``fresh_mask_head``: the config chose to initialise the mask head fresh
    (the checkpoint has none), so it is listed as a new module.
    """
    if recipe not in ("seed", "checkpoint_first"):
        raise ValueError(f"unknown recipe {recipe!r}; use 'seed' or 'checkpoint_first'")
    plan = Plan()
    ck_cands: dict[str, Assignment] = {}
    pi_cands: dict[str, Assignment] = {}

    if checkpoint is not None:
        names = {canonical_key(k): k for k in checkpoint}
        checkpoint = {canonical_key(k): s for k, s in checkpoint.items()}
        variant = detect_mask_variant(checkpoint)
        plan.mask_variant = variant
        if variant and mask_head and variant != mask_head:
            raise ValueError(
                f"the checkpoint's mask head is the '{variant}' variant but the preset expects '{mask_head}'; "
                f"use the {'page4d_fin10' if variant == 'fin10' else 'page4d / page4d_mask'} preset (--preset)"
            )
        for key, shape in checkpoint.items():
            if key in target:
                if tuple(target[key]) == tuple(shape):
                    ck_cands[key] = Assignment(key, "checkpoint", names[key])
                else:
                    plan.skipped.append(Skip("checkpoint", names[key], f"shape mismatch: checkpoint {list(shape)} vs model {list(target[key])}"))
            elif key.startswith("aggregator.spatial_mask_head.") and mask_head is None:
                plan.skipped.append(Skip("checkpoint", names[key], "mask head in checkpoint but the preset has the mask disabled"))
            elif key.split(".")[0] in ("track_head", "camera_head", "depth_head", "point_head") and not any(
                t.startswith(key.split(".")[0] + ".") for t in target
            ):
                plan.skipped.append(Skip("checkpoint", names[key], "head disabled in this preset"))
            else:
                plan.skipped.append(Skip("checkpoint", names[key], "unknown key (no such tensor in this model)"))

    if pi3 is not None:
        n_pairs = PI3_BLOCK_PAIRS
        for key, shape in pi3.items():
            if key.startswith(PI3_HEAD_PREFIXES):
                plan.skipped.append(Skip("pi3", key, "collision: Pi3 head (names clash with VGGT heads; never mapped)"))
                continue
            if key in PI3_IGNORED:
                plan.skipped.append(Skip("pi3", key, "ignored: image normalisation constant (the model normalises itself)"))
                continue
            if key == "register_token":
                if len(shape) != 4 or shape[2] < 5:
                    plan.skipped.append(Skip("pi3", key, f"unexpected register_token shape {list(shape)}"))
                    continue
                reg_tf = "pi3_registers_1_5" if checkpoint is None else "pi3_registers_0_4"
                for tgt, tf in (("aggregator.camera_token", "pi3_camera"), ("aggregator.register_token", reg_tf)):
                    if tgt in target and tuple(target[tgt]) == transformed_shape(tf, shape):
                        pi_cands[tgt] = Assignment(tgt, "pi3", key, tf)
                continue
            tgt = _pi3_target(key, n_pairs)
            if tgt is None or tgt not in target:
                plan.skipped.append(Skip("pi3", key, "unknown key (no such tensor in this model)"))
            elif tuple(target[tgt]) != tuple(shape):
                plan.skipped.append(Skip("pi3", key, f"shape mismatch: pi3 {list(shape)} vs model {tgt} {list(target[tgt])}"))
            else:
                pi_cands[tgt] = Assignment(tgt, "pi3", key)

    def pi3_wins(tgt: str) -> bool:
        if recipe == "checkpoint_first":
            return tgt not in ck_cands
        m = _BLOCK.match(tgt)
        if m:
            return int(m.group(2)) < PI3_BLOCK_PAIRS
        return tgt == "aggregator.register_token"

    for tgt in target:
        ck, pi = ck_cands.get(tgt), pi_cands.get(tgt)
        if ck and pi:
            win, lose = (pi, ck) if pi3_wins(tgt) else (ck, pi)
            plan.assignments[tgt] = win
            plan.skipped.append(Skip(lose.source, lose.source_key, f"superseded by {win.source} ({recipe} recipe) for {tgt}"))
        elif ck or pi:
            plan.assignments[tgt] = ck or pi  # type: ignore[assignment]

    # separate pose-stream block copies take the source of the block they copy
    for tgt in target:
        m = re.match(r"^aggregator\.pose_(frame|global)_blocks\.(\d+)\.(.*)$", tgt)
        if m and fork_layer is not None and tgt not in plan.assignments:
            src = plan.assignments.get(f"aggregator.{m.group(1)}_blocks.{fork_layer + int(m.group(2))}.{m.group(3)}")
            if src:
                plan.assignments[tgt] = src

    for tgt in target:
        if tgt not in plan.assignments:
            if tgt.startswith(NEW_MODULE_PATTERNS):
                why = "new module (initialised per DESIGN)"
            elif fresh_mask_head and tgt.startswith(MASK_PREFIX):
                why = "new module (the checkpoint has no mask head; fresh mask head)"
            else:
                why = "no source tensor"
            plan.left_at_init[tgt] = why
    return plan
