"""Distributed / long-capture inference, measured side by side in one run (DESIGN §9).

CPU/gloo section (always):
  * world 1 vs 2 on the same windows: ``vggt-mv reconstruct`` with 2 torch threads in one process vs
    ``torchrun --nproc_per_node 2`` with 1 thread per rank: wall time, bytes sent to rank 0, the most
    finished windows rank 0 held at once (from the result's manifest);
  * peak memory (ru_maxrss of a fresh process) vs sequence length, 1x and 4x the frames: the growth
    beyond the result's own bytes on disk, ``(peak_4x - disk_4x) / (peak_1x - disk_1x)`` (target <= 1.2).
GPU section (a lent device): world 1 on ``cuda`` at 518 px, wall time and peak device memory.

    python benchmarks/distributed_inference.py [--frames 12] [--views 2] [--resolution 252] [--gpu]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PEAK = ("import resource, sys; from vggt_mv.cli import main; rc = main(sys.argv[1:]); "
        "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(rc)")


def write_scene(root: Path, frames: int, views: int, size: tuple[int, int] = (240, 180)) -> Path:
    """A test-written capture: ``cam{v}/{t:05d}.png`` smooth moving patterns (deterministic)."""
    from PIL import Image

    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for v in range(views):
        (root / f"cam{v}").mkdir(parents=True, exist_ok=True)
        for t in range(frames):
            r = 127 + 120 * np.sin((xx + 7 * t + 31 * v) / 17.0)
            g = 127 + 120 * np.cos((yy - 5 * t) / 13.0 + v)
            b = 127 + 120 * np.sin((xx + yy + 3 * t) / 23.0)
            Image.fromarray(np.stack([r, g, b], -1).clip(0, 255).astype(np.uint8)).save(root / f"cam{v}" / f"{t:05d}.png")
    return root


def _args(scene: Path, out: Path, resolution: int, device: str) -> list[str]:
    return ["reconstruct", "--scene", str(scene), "--preset", "tiny", "--resolution", str(resolution),
            "--window", "4", "--overlap", "1", "--device", device, "--no-progress", "--out", str(out)]


def _run(cmd: list[str], threads: int) -> tuple[float, str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0, proc.stderr


def _disk_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())["meta"]


def world_1_vs_2(scene: Path, work: Path, resolution: int) -> None:
    one = work / "w1"
    two = work / "w2"
    t1, _ = _run([sys.executable, "-m", "vggt_mv", *_args(scene, one, resolution, "cpu")], threads=2)
    t2, _ = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                  "-m", "vggt_mv", *_args(scene, two, resolution, "cpu")], threads=1)
    m1, m2 = _manifest(one), _manifest(two)
    a = np.load(one / "arrays" / "world_points.npy")
    b = np.load(two / "arrays" / "world_points.npy")
    dist = m2["distributed"]
    print(f"windows: {len(m1['windows'])}; ranks (world 2): {[w['rank'] for w in m2['windows']]}")
    print(f"{'run':32s} {'wall s':>8s} {'model s':>8s}")
    print(f"{'world 1 (1 process, 2 threads)':32s} {t1:8.1f} {m1['timings']['model_s']:8.1f}")
    print(f"{'world 2 (2 ranks, 1 thread each)':32s} {t2:8.1f} {m2['timings']['model_s']:8.1f}")
    print(f"speed-up world 2 / world 1: {t1 / t2:.2f}x; bytes sent to rank 0: {dist['bytes_received_by_rank0']:,}; "
          f"most windows rank 0 held at once: {dist['max_windows_held_by_rank0']}; "
          f"max |world points diff| / scale: {np.abs(a - b).max() / np.abs(a).max():.2e}")


def peak_vs_length(work: Path, frames: int, views: int, resolution: int) -> None:
    rows = []
    for factor in (1, 4):
        scene = write_scene(work / f"scene{factor}x", frames * factor, views)
        out = work / f"peak{factor}x"
        _, err = _run([sys.executable, "-c", PEAK, *_args(scene, out, resolution, "cpu")], threads=2)
        peak = int(next(line.split()[1] for line in err.splitlines() if line.startswith("MAXRSS_KB"))) * 1024
        rows.append((factor, frames * factor, peak, _disk_bytes(out)))
    print(f"{'frames':>7s} {'peak RSS MB':>12s} {'result on disk MB':>18s} {'peak - disk MB':>15s}")
    for _, n, peak, disk in rows:
        print(f"{n:7d} {peak / 2**20:12.1f} {disk / 2**20:18.1f} {(peak - disk) / 2**20:15.1f}")
    (_, _, p1, d1), (_, _, p4, d4) = rows
    print(f"peak growth 4x frames beyond the result's bytes on disk: {(p4 - d4) / (p1 - d1):.3f}x "
          f"(target <= 1.2); raw peak ratio {p4 / p1:.3f}x")


def gpu_section(scene: Path, work: Path) -> None:
    import torch

    if not torch.cuda.is_available():
        print("GPU section skipped: no CUDA device")
        return
    out = work / "gpu"
    t, _ = _run([sys.executable, "-m", "vggt_mv", *_args(scene, out, 518, "cuda")], threads=4)
    print(f"GPU world 1 at 518 px: {t:.1f}s wall, model {_manifest(out)['timings']['model_s']:.1f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=12, help="frames of the 1x scene (default 12)")
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--resolution", type=int, default=252)
    parser.add_argument("--skip-world", action="store_true", help="only the peak-memory section")
    parser.add_argument("--gpu", action="store_true", help="also the GPU section")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vggt_mv_bench_") as tmp:
        work = Path(tmp)
        print("== peak memory vs sequence length (single process, CPU) ==")
        peak_vs_length(work, args.frames, args.views, args.resolution)
        scene = write_scene(work / "scene_world", args.frames, args.views)
        if not args.skip_world:
            print("== world 1 vs world 2 (CPU, gloo) ==")
            world_1_vs_2(scene, work, args.resolution)
        if args.gpu:
            print("== GPU ==")
            gpu_section(scene, work)


if __name__ == "__main__":
    main()
