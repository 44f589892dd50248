"""Resumable training checkpoints, written atomically (DESIGN §12).

* One process or DDP: rank 0 writes ``OUT/checkpoint.pt`` (``torch.save`` of model, optimizer,
  step, configs, world size and strategy; temp file + rename), read back with ``weights_only=True``.
* FSDP: ``OUT/checkpoint/`` by ``torch.distributed.checkpoint``: every rank writes its shards of
  the model and optimizer state into ``OUT/.checkpoint.tmp/`` and rank 0 its ``meta.json``; after
  all ranks finished, rank 0 swaps the folder in. A run killed while writing keeps the previous
  checkpoint.

Nothing else is needed to resume exactly: batches and per-step RNG are pure functions of
``(seed, step, rank)``. Resuming needs the same world size and strategy (another world size would
draw other batches); a mismatch is refused in one line.
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from vggt_mv.export.atomic import atomic_file
from vggt_mv.export.output import replace_dir

if TYPE_CHECKING:
    from vggt_mv.train.trainer import Trainer

CHECKPOINT_NAME = "checkpoint.pt"
SHARDED_NAME = "checkpoint"
META_NAME = "meta.json"


def find_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    """``OUT/checkpoint.pt`` or ``OUT/checkpoint/`` (sharded), whichever exists."""
    out = Path(out_dir)
    for path in (out / CHECKPOINT_NAME, out / SHARDED_NAME / META_NAME):
        if path.is_file():
            return path if path.name == CHECKPOINT_NAME else path.parent
    return None


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The run description of a checkpoint: ``step``, ``train_config``, ``model_config``,
    ``world_size``, ``strategy`` (and, for ``checkpoint.pt``, the state itself)."""
    path = Path(path)
    try:
        if path.is_dir():
            meta = json.loads((path / META_NAME).read_text())
        else:
            meta = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise ValueError(f"--resume: {path} cannot be read as a vggt-mv training checkpoint with "
                         f"weights_only=True ({first}); start a new run with another --out") from None
    if not isinstance(meta, dict) or not {"step", "train_config", "model_config"} <= set(meta):
        raise ValueError(f"--resume: {path} is not a vggt-mv training checkpoint (missing keys); "
                         "start a new run with another --out")
    return meta


def check_world(meta: dict[str, Any], path: Path, world_size: int, strategy: str) -> None:
    """Refuse resuming at another world size or strategy than the checkpoint's."""
    saved_world, saved_strategy = int(meta.get("world_size", 1)), meta.get("strategy", "none")
    if saved_world != world_size:
        raise ValueError(f"--resume: {path} was written by {saved_world} rank(s), this run has {world_size}; "
                         f"resume with --nproc_per_node x nodes = {saved_world} (batches depend on the rank)")
    if saved_strategy != strategy:
        raise ValueError(f"--resume: {path} was written with --strategy {saved_strategy}, not {strategy}; "
                         f"resume with --strategy {saved_strategy}")


def save(trainer: "Trainer") -> Path:
    """Write ``trainer``'s state into its ``out_dir`` (every rank calls this)."""
    out = trainer.out_dir
    assert out is not None
    meta = {"step": trainer.step, "train_config": trainer.cfg.to_dict(),
            "model_config": trainer.model_config.to_dict(), "world_size": trainer.parallel.world_size,
            "strategy": trainer.parallel.strategy}
    if trainer.parallel.strategy != "fsdp":
        path = out / CHECKPOINT_NAME
        if trainer.is_main:
            state = {**meta, "model": trainer.model.state_dict(), "optimizer": trainer.optimizer.state_dict()}
            with atomic_file(path) as f:
                torch.save(state, f)
        _barrier()
        return path
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    tmp, path = out / f".{SHARDED_NAME}.tmp", out / SHARDED_NAME
    if trainer.is_main:
        shutil.rmtree(tmp, ignore_errors=True)  # a killed run's partial checkpoint
        tmp.mkdir(parents=True)
    _barrier()
    model_sd, optim_sd = get_state_dict(trainer.model, trainer.optimizer)
    dcp.save({"model": model_sd, "optimizer": optim_sd}, checkpoint_id=str(tmp))
    if trainer.is_main:
        with atomic_file(tmp / META_NAME, "w") as f:
            f.write(json.dumps(meta))
    _barrier()
    if trainer.is_main:
        replace_dir(tmp, path)
    _barrier()
    return path


def _saved_keys(path: Path, prefix: str) -> set[str]:
    """Top-level keys under ``prefix`` in a DCP checkpoint's metadata."""
    import torch.distributed.checkpoint as dcp

    meta = dcp.FileSystemReader(str(path)).read_metadata()
    return {k.split(".", 1)[1] for k in meta.state_dict_metadata if k.startswith(prefix + ".")}


def load(trainer: "Trainer", path: str | os.PathLike, meta: dict[str, Any]) -> None:
    """Restore model and optimizer state from ``path`` into ``trainer`` (every rank calls this)."""
    path = Path(path)
    if path.is_dir():
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        from torch.distributed.checkpoint import DefaultLoadPlanner

        model_sd, optim_sd = get_state_dict(trainer.model, trainer.optimizer)
        state = {"model": model_sd, "optimizer": optim_sd}
        # get_state_dict gives every parameter an (empty) optimizer state; parameters that never had
        # a gradient (DINOv2's mask_token, ...) have none saved: those entries stay empty
        dcp.load(state, checkpoint_id=str(path), planner=DefaultLoadPlanner(allow_partial_load=True))
        missing = [k for k in model_sd if k not in _saved_keys(path, "model")]
        if missing:
            raise ValueError(f"--resume: {path} has no {missing[0]} (and {len(missing) - 1} more model tensors); "
                             "it was written for another model")
        set_state_dict(trainer.model, trainer.optimizer, model_state_dict=state["model"],
                       optim_state_dict=state["optimizer"])
    else:
        trainer.model.load_state_dict(meta["model"])
        trainer.optimizer.load_state_dict(meta["optimizer"])
    trainer.step = int(meta["step"])
