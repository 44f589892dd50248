"""Training-step cost: images/s and peak memory per training recipe, activation checkpointing off/on,
and DDP world 1 vs 2 (gloo on CPU), all measured side by side in one run.

Every variant runs in a fresh subprocess: model, optimizer and one batch are built, one warm-up
step allocates the optimizer state, freed memory is handed back (``malloc_trim``), the RSS
high-water mark is reset (``/proc/self/clear_refs``), one step runs and ``VmHWM - VmRSS before`` is
its peak ("peak +MB": activations and gradients on top of model and optimizer state); then
``--steps`` more steps are timed. The model is a mid-size VGGT-MV (depth 8, width 256; random init),
the input ``[B=1, T=4, V=3, 3, 126, 168]`` unless changed by flags. On a GPU (``--device cuda``)
peak memory is ``torch.cuda.max_memory_allocated`` minus the allocation before the step.

    .venv/bin/python benchmarks/train_step.py              # ~5-10 min on 2 CPU cores
    .venv/bin/python benchmarks/train_step.py --quick      # smaller input, 2 timed steps
    .venv/bin/python benchmarks/train_step.py --device cuda --precision bf16   # a GPU section
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _measure import status_kb  # noqa: E402


def mid_config():
    """tiny's layout (depth 8, mask streams) at width 256: aggregator-heavy like the real models."""
    from vggt_mv.config import ModelConfig

    cfg = ModelConfig.preset("tiny")
    cfg.embed_dim, cfg.num_heads = 256, 8
    cfg.dino.embed_dim, cfg.dino.num_heads, cfg.dino.pos_embed_shape = 256, 8, [1, 1370, 256]
    for head in (cfg.camera_head, cfg.depth_head, cfg.point_head):
        head.dim_in = 512
    cfg.camera_head.num_heads = 8
    return cfg


def one(spec: dict) -> dict:
    """Run one variant in this process (a fresh subprocess or a torchrun-like rank)."""
    import torch

    from vggt_mv import distributed
    from vggt_mv.train.batches import batch_for_step
    from vggt_mv.train.config import TrainConfig
    from vggt_mv.train.trainer import Trainer

    env = distributed.init_from_env(spec["device"])
    torch.set_num_threads(spec["threads"])
    cfg = TrainConfig(steps=100, timesteps=spec["T"], views=spec["V"], height=spec["H"], width=spec["W"],
                      batch_size=spec["batch"], threads=spec["threads"], device=spec["device"], warmup=1,
                      val_every=0, train_recipe=spec["recipe"], checkpointing=spec["checkpointing"],
                      precision=spec["precision"], strategy=spec["strategy"], ext_mask_prob=0.0)
    try:
        tr = Trainer(cfg, model_config=mid_config(), env=env)
        batch = batch_for_step(cfg, 0, env.rank)
        device = tr.device
        tr.train_step(batch)  # warm-up: allocates the optimizer state, which is not the step's peak
        if device.type == "cpu":
            ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed activations back, so RSS shows the next peak
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        else:
            Path("/proc/self/clear_refs").write_text("5")
            before = status_kb("VmRSS") * 1024
        tr.train_step(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() - before
        else:
            peak = status_kb("VmHWM") * 1024 - before
        t0 = time.perf_counter()
        for _ in range(spec["steps"]):
            tr.train_step(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        sec = (time.perf_counter() - t0) / spec["steps"]
        images = batch["images"].shape[0] * batch["images"].shape[1] * batch["images"].shape[2]
        return {"sec_per_step": sec, "images_per_s": images * tr.parallel.world_size / sec, "peak_mb": peak / 2**20}
    finally:
        distributed.shutdown()


def run_variant(spec: dict, world: int = 1) -> dict:
    """``spec`` in a fresh subprocess (``world`` > 1: under torchrun, gloo); rank 0's numbers."""
    cmd = [sys.executable, __file__, "--one", json.dumps(spec)]
    if world > 1:
        cmd = [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc_per_node", str(world),
               __file__, "--one", json.dumps(spec)]
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"])}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"variant {spec} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[0])


def table(title: str, rows: dict[str, dict], base: str) -> None:
    print(f"\n{title}")
    print(f"{'variant':<28} {'s/step':>8} {'images/s':>9} {'x base':>7} {'peak +MB':>9} {'x base':>7}")
    b = rows[base]
    for name, r in rows.items():
        print(f"{name:<28} {r['sec_per_step']:>8.3f} {r['images_per_s']:>9.2f} "
              f"{r['images_per_s'] / b['images_per_s']:>7.2f} {r['peak_mb']:>9.0f} {r['peak_mb'] / max(b['peak_mb'], 1e-9):>7.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="auto")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--sections", default="abc", help="which tables: a (recipes), b (checkpointing), c (DDP)")
    args = p.parse_args()
    if args.one:
        result = one(json.loads(args.one))
        if os.environ.get("RANK", "0") == "0":
            print(json.dumps(result), flush=True)
        return
    size = (2, 2, 56, 84) if args.quick else (4, 3, 126, 168)
    base = dict(T=size[0], V=size[1], H=size[2], W=size[3], batch=1, threads=args.threads, device=args.device,
                recipe="all", checkpointing=False, precision=args.precision, strategy="none",
                steps=2 if args.quick else args.steps)
    print(f"input [B=1, T={size[0]}, V={size[1]}, 3, {size[2]}, {size[3]}], mid-size model (depth 8, width 256), "
          f"{args.device}, {args.threads} threads, precision {args.precision}")
    if "a" in args.sections:
        rows = {r: run_variant({**base, "recipe": r}) for r in ("all", "stage1", "page4d", "heads")}
        table("(a) training recipes (what trains): cost of one step", rows, "all")
    if "b" in args.sections:
        rows = {"checkpointing off": run_variant(base), "checkpointing on": run_variant({**base, "checkpointing": True})}
        table("(b) activation checkpointing of the aggregator blocks", rows, "checkpointing off")
    if "c" in args.sections and args.device == "cpu":
        one_proc = run_variant({**base, "batch": 2})
        two = run_variant({**base, "batch": 1, "threads": max(1, args.threads // 2), "strategy": "ddp"}, world=2)
        table("(c) DDP over gloo: same global batch of 2 clips", {
            f"1 process x {args.threads} threads": one_proc,
            f"DDP 2 ranks x {max(1, args.threads // 2)} thread": two}, f"1 process x {args.threads} threads")


if __name__ == "__main__":
    main()
