"""Data parallelism for training: DDP or FSDP2, activation checkpointing, autocast, per-module
gradient clipping and the all-ranks non-finite check. All wrapping lives here: the model never
knows it is distributed (torchtitan's rule).

* ``ddp``: ``DistributedDataParallel`` with ``find_unused_parameters=True``: parameters may get no
  gradient on some batches (``external_gain`` without external masks, the time-bias λ in the flat
  layout, DINOv2's ``mask_token`` always); their gradients are averaged as zeros where unused, and
  parameters unused on every rank keep no gradient, exactly like one process. (Making them always
  take part with ``0 * p.sum()`` instead would give them zero gradients, which AdamW's weight decay
  then acts on: a different run from the single-process one.)
* ``fsdp``: ``fully_shard`` on every aggregator block, then on the root, over a 1-D mesh on the
  run's device type (a CPU mesh over gloo on CPU). ``fully_shard`` refuses 0-d parameters (λ,
  fusion gains, fin10's ``alpha_logit``/``tau_logit``): they stay replicated (``ignored_params``)
  and :meth:`DataParallel.reduce_ignored_grads` all-reduces their gradients before clipping, as
  DDP would (else ranks diverge silently).
* Gradient averaging over equal-size rank batches equals one process on the union because every
  loss term is a mean of per-sample means (:func:`vggt_mv.train.losses.sample_mean`).
"""
from __future__ import annotations

import contextlib
import resource
from collections.abc import Iterator

import torch
import torch.distributed as dist
import torch.nn as nn

from vggt_mv.distributed import DistEnv

STRATEGIES = ("none", "ddp", "fsdp")
PRECISIONS = ("auto", "fp32", "bf16")


def aggregator_blocks(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of the aggregator: frame/global blocks and pose-stream copies."""
    agg = model.aggregator
    blocks: list[nn.Module] = []
    for name in ("frame_blocks", "global_blocks", "pose_frame_blocks", "pose_global_blocks"):
        blocks.extend(getattr(agg, name, []))
    return blocks


def apply_activation_checkpointing(model: nn.Module) -> None:
    """Recompute each aggregator block's activations in backward instead of storing them
    (composable ``checkpoint``: works under DDP and under ``fully_shard`` applied afterwards)."""
    from torch.distributed._composable import checkpoint

    for block in aggregator_blocks(model):
        checkpoint(block)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """``auto``: bf16 on CUDA, none on CPU; ``bf16`` / ``fp32`` as said."""
    if precision not in PRECISIONS:
        raise ValueError(f"--precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def peak_memory_bytes(device: torch.device) -> int:
    """Peak allocated CUDA memory on a GPU; the process's peak resident set size on the CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


class DataParallel:
    """``model`` wrapped for ``strategy`` on ``env``; ``module`` is what to call, ``model`` the
    plain ``nn.Module`` (same parameters; under FSDP they are DTensor shards)."""

    def __init__(self, model: nn.Module, strategy: str, env: DistEnv) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"--strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}")
        if strategy != "none" and not (dist.is_available() and dist.is_initialized()):
            raise ValueError(f"--strategy {strategy} needs a distributed run: launch with "
                             "torchrun --nproc_per_node N -m vggt_mv train ...")
        self.model, self.strategy, self.env = model, strategy, env
        self.ignored: list[nn.Parameter] = []
        if strategy == "ddp":
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [env.device.index] if env.device.type == "cuda" else None
            self.module: nn.Module = DDP(model, device_ids=ids, find_unused_parameters=True)
        elif strategy == "fsdp":
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import fully_shard

            mesh = init_device_mesh(env.device.type, (env.world_size,))
            self.ignored = [p for p in model.parameters() if p.dim() == 0]
            for block in aggregator_blocks(model):
                fully_shard(block, mesh=mesh)
            fully_shard(model, mesh=mesh, ignored_params=set(self.ignored))
            self.module = model
        else:
            self.module = model

    @property
    def world_size(self) -> int:
        return self.env.world_size if self.strategy != "none" else 1

    @contextlib.contextmanager
    def gradient_sync(self, enabled: bool) -> Iterator[None]:
        """Within the block backward averages gradients across ranks only when ``enabled`` (the
        last micro-batch of an accumulated step)."""
        if self.strategy == "ddp" and not enabled:
            with self.module.no_sync():  # type: ignore[operator]
                yield
            return
        if self.strategy == "fsdp":
            self.model.set_requires_gradient_sync(enabled)  # type: ignore[operator]
        yield

    def reduce_ignored_grads(self) -> None:
        """FSDP: average the 0-d parameters' gradients over ranks (zeros where a rank has none);
        parameters no rank has a gradient for keep none."""
        params = [p for p in self.ignored if p.requires_grad]
        if self.strategy != "fsdp" or not params:
            return
        ref = params[0]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.stack([g.reshape(()) for g in grads] + [ref.new_tensor(float(p.grad is not None)) for p in params])
        dist.all_reduce(flat)
        n = len(params)
        for p, total, count in zip(params, flat[:n], flat[n:]):
            p.grad = None if float(count) == 0 else (total / self.world_size).reshape(p.shape).to(p.dtype)

    def nonfinite_ranks(self, loss: torch.Tensor) -> list[int]:
        """The ranks whose ``loss`` is not finite (all ranks agree; one small all-gather)."""
        bad = torch.tensor([0.0 if bool(torch.isfinite(loss.detach()).all()) else 1.0], device=loss.device)
        if self.world_size == 1:
            return [0] if float(bad) else []
        flags = [torch.zeros_like(bad) for _ in range(self.world_size)]
        dist.all_gather(flags, bad)
        return [r for r, f in enumerate(flags) if float(f)]

    def clip_gradients(self, max_norm: float) -> dict[str, float]:
        """Clip each top-level module's gradients (``aggregator``, ``camera_head``, ...) to
        ``max_norm`` separately, as VGGT does; returns the norms before clipping."""
        groups: dict[str, list[torch.Tensor]] = {}
        for name, p in self.model.named_parameters():
            if p.grad is not None:
                groups.setdefault(name.split(".")[0], []).append(p)
        norms = {}
        for group, params in groups.items():
            total = _total_norm([p.grad for p in params])
            if max_norm > 0:
                torch.nn.utils.clip_grads_with_norm_(params, max_norm, total, foreach=False)
            norms[group] = float(total)
        return norms


def _total_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """L2 norm of ``grads``, DTensor shards (FSDP) and plain tensors mixed."""
    from torch.distributed.tensor import DTensor

    squares = []
    for kind in (True, False):
        part = [g for g in grads if isinstance(g, DTensor) == kind]
        if not part:
            continue
        norm = torch.nn.utils.get_total_norm(part, 2.0, foreach=False)
        if isinstance(norm, DTensor):
            norm = norm.full_tensor()
        squares.append(norm.float() ** 2)
    return torch.stack(squares).sum().sqrt()
