"""Pipeline-cache re-runs vs their floor, and peak memory vs sequence length (CPU, side by side).

    .venv/bin/python benchmarks/rerun_cache.py            # ~3 min on 2 idle cores; far longer when loaded
    .venv/bin/python benchmarks/rerun_cache.py --quick    # repeats 2, no cache memory variant
    .venv/bin/python benchmarks/rerun_cache.py --sections memory --sizes tiny

Issue acceptance: for the ``tiny`` preset and a mid-size config (embed 256, depth 8, 8 heads):

(1) Time. ``full run`` = ``reconstruct`` with an empty ``PipelineCache`` (every window misses, runs
    fully and stores its snapshot); ``λ-only re-run`` = the same call after ``set_lambdas`` (every
    window hits and resumes at ``L = aggregator.first_affected_layer()``); ``sparse-only re-run`` =
    the same after switching ``config.sparse.strategy`` (also a hit). The **floor** of a re-run is
    the share of the compute downstream of L, measured by timing the stages of one window's model
    forward at the re-run's settings: ``forward(resume=snapshot at L) / full forward``. A re-run can
    not beat ``floor x full run``; the target is ``re-run / full run <= 1.1 x floor``. Both the full
    runs and re-runs are run round-robin (median of ``--repeats``), the forwards likewise, so machine
    load hits all of them alike: the *ratios* are meaningful on a shared machine, absolute ms are not.
    Note the floor is compared at the re-run's own settings (a λ != 0 computes the bias, λ = 0 skips
    it exactly), so "re-run share" divides by a full run at those same settings.

(2) Memory. Each sequence length runs in a fresh subprocess (with ``MALLOC_MMAP_THRESHOLD_=131072``
    so that freed buffers leave RSS; see ``peak_memory``): build the model and the scene, warm
    up with one window's forward, reset the kernel's RSS high-water mark (``/proc/self/clear_refs``
    <- 5), run ``reconstruct`` and report ``VmHWM - VmRSS(before) - stored results`` where the stored
    results are the ``Reconstruction``'s arrays (plus the cache's stored bytes in the cache variant).
    Sequences of 1x and 4x the window are compared, each the median of ``--mem-repeats`` processes
    (run interleaved), at 168 x 224 by default (the app's CPU resolution); target 4x / 1x <= 1.2
    (memory bounded by one window, not by the sequence).

Random-init weights (``torch.manual_seed(0)``); the bundled sample's images (played forward and
backward to make longer sequences), no ground truth attached.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import vggt_mv  # noqa: E402
from vggt_mv.config import ModelConfig  # noqa: E402
from vggt_mv.inference.cache import PipelineCache  # noqa: E402

LAMBDA_RERUN = {"lambda_pose": 2.0, "lambda_geo": 1.0}
SPARSE_RERUN = "dilated"


# ---------------------------------------------------------------- setup
from _measure import status_kb, time_interleaved  # noqa: E402  (sibling module)

def model_config(size: str) -> ModelConfig:
    cfg = ModelConfig.preset("tiny")
    if size == "mid":
        cfg = cfg.replace(
            name="mid", embed_dim=256, num_heads=8, depth=8,
            dino={"embed_dim": 256, "num_heads": 8, "depth": 2, "pos_embed_shape": [1, 1370, 256]},
            mask={"hidden": 64},
            camera_head={"dim_in": 512}, depth_head={"dim_in": 512}, point_head={"dim_in": 512},
        )
    return cfg


def build_model(size: str):
    torch.manual_seed(0)
    model, _ = vggt_mv.load_model(model_config(size), checkpoint=None, device="cpu")
    return model.eval()


_FRAMES: torch.Tensor | None = None


def scene_of(num_t: int, resolution: int) -> SimpleNamespace:
    """The sample's frames ``[T,V,3,H,W]``, played forward then backward to reach ``num_t``."""
    global _FRAMES
    if _FRAMES is None or _FRAMES.shape[-1] != resolution:
        _FRAMES = vggt_mv.load_scene(ROOT / "assets" / "sample", resolution=resolution).images
    pingpong = torch.cat([_FRAMES, _FRAMES.flip(0)[1:-1]])
    idx = [i % len(pingpong) for i in range(num_t)]
    return SimpleNamespace(images=pingpong[idx].contiguous(), ext_masks=None, gt=None,
                           source={"benchmark": "rerun_cache"}, view_names=[], frame_names=[])


def set_settings(model, lambdas: dict[str, float], sparse: str) -> None:
    model.set_lambdas(**{"lambda_pose": 0.0, "lambda_geo": 0.0, **lambdas})
    model.config.sparse.strategy = sparse



# ---------------------------------------------------------------- (1) time
SETTINGS = {
    "λ-only": (LAMBDA_RERUN, "none"),
    "sparse-only": ({}, SPARSE_RERUN),
}


def time_section(size: str, args) -> list[list]:
    model = build_model(size)
    scene = scene_of(args.seq, args.resolution)
    window, overlap = args.window, args.overlap
    layer = model.aggregator.first_affected_layer()
    imgs = scene.images[:window][None]
    rows = []
    for label, (lams, sparse) in SETTINGS.items():
        # floor: stages of one window's forward at the re-run's settings
        set_settings(model, lams, sparse)
        with torch.inference_mode():
            snap = model(imgs, snapshot_at=layer, return_aggregator=True)["_aggregator"].snapshot
            fwd = time_interleaved({
                "full": lambda: model(imgs),
                "resumed": lambda: model(imgs, resume=snap),
            }, args.repeats)
        floor = fwd["resumed"] / fwd["full"]

        # the pipeline: full run (empty cache) vs re-run after a λ / sparse-only change (cache hit)
        def full_run():
            set_settings(model, lams, sparse)
            vggt_mv.reconstruct(scene, model, window=window, overlap=overlap, cache=PipelineCache())

        warm = PipelineCache()
        set_settings(model, {}, "none")
        vggt_mv.reconstruct(scene, model, window=window, overlap=overlap, cache=warm)  # fills the cache

        def rerun():
            set_settings(model, lams, sparse)
            before = warm.hits
            rec = vggt_mv.reconstruct(scene, model, window=window, overlap=overlap, cache=warm)
            assert warm.hits - before == len(rec.meta["windows"]), "re-run missed the cache"

        t = time_interleaved({"full": full_run, "rerun": rerun}, args.repeats, warmup=0)
        share = t["rerun"] / t["full"]
        rows.append([size, label, f"{t['full'] * 1e3:.0f}", f"{t['rerun'] * 1e3:.0f}", f"{share:.3f}",
                     f"{floor:.3f}", f"{share / floor:.2f}x", "ok" if share <= 1.1 * floor else "MISS"])
        rows[-1].insert(2, f"L={layer}/{model.config.depth}")
    set_settings(model, {}, "none")
    return rows


# ---------------------------------------------------------------- (2) memory

def mem_child(spec: dict) -> None:
    torch.set_num_threads(spec["threads"])
    model = build_model(spec["size"])
    scene = scene_of(spec["num_t"], spec["resolution"])
    window, overlap = spec["window"], spec["overlap"]
    with torch.inference_mode():  # warm-up: one window, so lazy one-time allocations are not counted
        model(scene.images[:window][None])
    cache = PipelineCache() if spec["cache"] else None
    Path("/proc/self/clear_refs").write_text("5")
    before = status_kb("VmRSS")
    rec = vggt_mv.reconstruct(scene, model, window=window, overlap=overlap, cache=cache)
    peak = (status_kb("VmHWM") - before) * 1024
    stored = sum(getattr(rec, f).nbytes for f in ("images", "depth", "depth_conf", "world_points",
                                                  "world_points_conf", "extrinsic", "intrinsic", "dynamic_mask")
                 if isinstance(getattr(rec, f, None), np.ndarray))
    if cache is not None:
        stored += cache.nbytes
    print(json.dumps({"peak": peak, "stored": stored, "windows": len(rec.meta["windows"])}))


def peak_memory(spec: dict) -> dict:
    # A fixed mmap threshold: every allocation >= 128 KiB is its own mapping, returned to the OS on
    # free, so VmHWM follows the live arrays / tensors. With glibc's default *dynamic* threshold,
    # freed buffers stay resident in the heap and the second forward reuses the warm-up's pages:
    # VmHWM growth then ranged 22-142 MiB for the same run (measured), which says nothing.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                         check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def memory_section(size: str, args) -> list[list]:
    """Median over ``--mem-repeats`` fresh processes of (peak - stored), at 1x and 4x the window."""
    rows = []
    for cache in ((False, True) if not args.quick and size == "tiny" else (False,)):
        runs: dict[int, list[dict]] = {1: [], 4: []}
        for _ in range(args.mem_repeats):
            for mult in (1, 4):  # interleaved, so load changes hit both lengths alike
                spec = {"size": size, "num_t": mult * args.window, "window": args.window, "overlap": args.overlap,
                        "resolution": args.mem_resolution, "threads": args.threads, "cache": cache}
                runs[mult].append(peak_memory(spec))
        net = {m: statistics.median(r["peak"] - r["stored"] for r in runs[m]) for m in runs}
        stored = {m: statistics.median(r["stored"] for r in runs[m]) for m in runs}
        spread = {m: [round((r["peak"] - r["stored"]) / 2**20, 1) for r in runs[m]] for m in runs}
        ratio = net[4] / net[1] if net[1] > 0 else float("nan")
        rows.append([size, "yes" if cache else "no",
                     *(f"{net[m] / 2**20:.1f} (runs {spread[m]}; stored {stored[m] / 2**20:.1f})" for m in (1, 4)),
                     f"{ratio:.2f}x", "ok" if ratio <= 1.2 else "MISS"])
    return rows


# ---------------------------------------------------------------- output
def table(title: str, header: list[str], rows: list[list]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats, no cache memory variant")
    ap.add_argument("--repeats", type=int, default=None, help="timing repeats (default 3; 2 with --quick)")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--sizes", default="tiny,mid")
    ap.add_argument("--sections", default="time,memory", help="comma list of: time, memory")
    ap.add_argument("--mem-resolution", type=int, default=224, choices=[84, 112, 168, 224],
                    help="image width of the memory section (height = 3/4 of it; default: the app's CPU default)")
    ap.add_argument("--mem-repeats", type=int, default=3, help="fresh processes per sequence length (median)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        mem_child(json.loads(args.child))
        return
    torch.set_num_threads(args.threads)
    args.repeats = args.repeats or (2 if args.quick else 3)
    args.resolution = 84          # timing: 56 x 84 px (4 x 6 patches)
    # memory: --mem-resolution (168 x 224 by default, what the app runs on CPU; at 56 x 84 one tiny
    # window's activations are a few MB and allocator noise decides the ratio)
    args.window, args.overlap = 4, 1
    args.seq = 4                  # timing runs: one window (the re-run cost is per window)
    t0 = time.perf_counter()
    print(f"rerun_cache: torch {torch.__version__}, {args.threads} threads, repeats {args.repeats}, "
          f"images 56x84, 3 views, window {args.window} overlap {args.overlap}; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (ratios are measured side by side)")
    print(f"λ-only re-run: set_lambdas({LAMBDA_RERUN}); sparse-only re-run: sparse.strategy 'none' -> '{SPARSE_RERUN}'")
    sizes = args.sizes.split(",")
    if "time" in args.sections:
        rows = [r for s in sizes for r in time_section(s, args)]
        table(f"(1) time: re-run vs full run ({args.seq} timesteps = 1 window, median of {args.repeats}), floor = resumed / full forward "
              "at the re-run's settings; target share <= 1.1x floor",
              ["config", "re-run", "resume at", "full ms", "re-run ms", "share", "floor", "share/floor", "target"], rows)
    if "memory" in args.sections:
        mrows = [r for s in sizes for r in memory_section(s, args)]
        h = round(args.mem_resolution * 3 / 4 / 14) * 14  # the sample is 3:4; heights snap to 14
        table(f"(2) peak memory at {h}x{args.mem_resolution}: net = VmHWM growth - stored results, median of "
              f"{args.mem_repeats} processes; {args.window} vs {4 * args.window} timesteps (1x vs 4x the window); target 4x/1x <= 1.2",
              ["config", "cache", "1x: net MiB (median)", "4x: net MiB (median)", "4x/1x", "target"], mrows)
    print(f"\ntotal {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
