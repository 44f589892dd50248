"""Fit a config to a checkpoint before the model is built: mask-head variant and track head.

DESIGN §3/§4 and the design notes ("use the checkpoint's mask head; if it does not fit, add a fresh
one"): a config with ``follow_checkpoint=True`` (the default; presets ``vggt_mv``, ``vggt_mv_fin10``,
``tiny``) takes from the checkpoint's key/shape header

* ``mask.head``: the variant the checkpoint's ``aggregator.spatial_mask_head.*`` tensors are
  (``page4d`` or ``fin10``); a checkpoint without a mask head keeps the config's head, which is then
  initialised fresh and reported as a new module;
* ``enable_track``: on when the checkpoint has ``track_head.*`` tensors, off otherwise.

Configs with ``follow_checkpoint=False`` (the ``vggt`` / ``page4d*`` presets) are left unchanged, so their numerics and key sets are exactly the released ones.
"""
from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass

from vggt_mv.config import ModelConfig
from vggt_mv.weights.mapping import MASK_PREFIX, Shape, canonical_key, detect_mask_variant


@dataclass
class ConfigChoices:
    """What ``resolve_config`` decided and why (shown in the ``LoadReport``)."""

    mask_head: str | None  # variant used ("page4d" / "fin10"), None when the mask is disabled
    mask_reason: str
    track_head: bool
    track_reason: str
    fresh_mask_head: bool = False  # the mask head gets no checkpoint tensors: a new module


def resolve_config(cfg: ModelConfig, checkpoint: dict[str, Shape] | None) -> tuple[ModelConfig, ConfigChoices]:
    """``cfg`` fitted to ``checkpoint`` (key -> shape, or None) and the choices made. A copy when
    something changes; ``cfg`` itself (unchanged) otherwise."""
    keys = None if checkpoint is None else {canonical_key(k): s for k, s in checkpoint.items()}
    variant = detect_mask_variant(keys) if keys is not None else None
    has_track = keys is not None and any(k.startswith("track_head.") for k in keys)
    follow = cfg.follow_checkpoint and keys is not None

    # mask head
    fresh = False
    if not cfg.mask.enabled:
        mask, mask_why = None, "mask disabled in the config"
    elif keys is None:
        mask, mask_why = cfg.mask.head, "config (no checkpoint given)"
    elif variant is None:
        mask = cfg.mask.head
        fresh = cfg.follow_checkpoint
        mask_why = (f"config; the checkpoint has no mask head ({MASK_PREFIX}*), so a fresh one is initialised"
                    if fresh else "config; the checkpoint has no mask head")
    elif follow:
        mask = variant
        mask_why = (f"checkpoint: its mask head is the '{variant}' variant"
                    + (f" (config asked for '{cfg.mask.head}')" if variant != cfg.mask.head else ""))
    else:
        mask, mask_why = cfg.mask.head, "config (follow_checkpoint off)"

    # track head
    if follow:
        track = has_track
        track_why = ("checkpoint has track_head.* tensors" if has_track
                     else "checkpoint has no track_head.* tensors")
    else:
        track = cfg.enable_track
        track_why = "config (no checkpoint given)" if keys is None else "config (follow_checkpoint off)"
    if (mask is not None and mask != cfg.mask.head) or track != cfg.enable_track:
        cfg = copy.deepcopy(cfg)
        if mask is not None:
            cfg.mask.head = mask
        cfg.enable_track = track
    return cfg.validate(), ConfigChoices(mask, mask_why, track, track_why, fresh)


def base_config(*, config: str | os.PathLike | None = None, preset: str | None = None,
                checkpoint: str | os.PathLike | None = None, checkpoint_ref: str | None = None,
                pi3_ref: str | None = None, fallback: str = "vggt") -> ModelConfig:
    """The config to fit (before :func:`resolve_config`): ``config`` (a ``model_config.json``), else
    the one a vggt-mv ``checkpoint`` file carries in its header, else ``preset``, else the preset a
    short weights name implies (``checkpoint_ref`` / ``pi3_ref`` as the user gave them), else ``fallback``."""
    from vggt_mv.weights.formats import embedded_config
    from vggt_mv.weights.hub import implied_preset

    if config:
        return ModelConfig.from_json(config)
    embedded = embedded_config(checkpoint) if checkpoint and not preset else None
    if embedded is not None:
        try:
            cfg = ModelConfig.from_dict(embedded)
        except (TypeError, ValueError) as e:
            raise ValueError(f"--checkpoint {checkpoint_ref or checkpoint}: its embedded config is invalid ({e}); "
                             "pass --preset or --config") from None
        logging.getLogger("vggt_mv.weights").info("model config from %s (vggt_mv_config in its header)",
                                                  checkpoint_ref or checkpoint)
        return cfg
    return ModelConfig.preset(preset or implied_preset(checkpoint_ref, pi3_ref) or fallback)
