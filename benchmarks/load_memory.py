"""Peak RSS while ``load_model`` reads a ~1 GB checkpoint, versus the checkpoint's size.

Writes a VGGT-layout checkpoint of about ``--gb`` GB (a ``vggt`` preset with widths cut so the
model has that many float32 bytes) as both a torch zip ``.pt`` ({'model': sd}) and a
``.safetensors``, then loads each in a fresh subprocess and prints its peak RSS (VmHWM), the
high-water mark of the same process after imports (reset via /proc/self/clear_refs), and ratios. Target: peak
RSS <= 1.3x the file size (one copy of the model plus one tensor in flight).

    .venv/bin/python benchmarks/load_memory.py [--gb 1.0] [--dir /tmp/vggt_mv_mem]
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys, torch
from vggt_mv.config import ModelConfig
from vggt_mv.weights import load_model
import vggt_mv.model.vggt_mv  # import everything load_model uses, so "before" is the library's baseline

def hwm():  # peak resident set size (VmHWM) of this process, bytes
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

cfg = ModelConfig.from_json(sys.argv[1])
open("/proc/self/clear_refs", "w").write("5")  # reset the high-water mark after imports
before = hwm()
model, report = load_model(cfg, checkpoint=sys.argv[2])
peak = hwm()
print(json.dumps({"before": before, "peak": peak, "loaded": report.fraction_loaded("checkpoint")}))
"""

WRITER = r"""
import sys, torch
from safetensors.torch import save_file
from vggt_mv.config import ModelConfig
from vggt_mv.model.vggt_mv import VGGTMV
sd = VGGTMV(ModelConfig.from_json(sys.argv[1])).state_dict()
torch.save({"model": sd}, sys.argv[2])
save_file({k: v.contiguous() for k, v in sd.items()}, sys.argv[3])
"""


def config_for(gb: float):
    from vggt_mv.config import ModelConfig
    from vggt_mv.weights.loader import model_shapes

    cfg = ModelConfig.preset("vggt")
    cfg.enable_track = cfg.enable_depth = cfg.enable_point = False
    cfg.dino.depth = 4
    for depth in range(1, 25):
        cfg.depth = depth
        n = sum(math.prod(s) for s in model_shapes(cfg).values())
        if n * 4 >= gb * 1e9:
            break
    return cfg


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gb", type=float, default=1.0)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    root = Path(args.dir or tempfile.mkdtemp(prefix="vggt_mv_mem_"))
    root.mkdir(parents=True, exist_ok=True)
    cfg = config_for(args.gb)
    cfg_path = root / "config.json"
    cfg.to_json(cfg_path)
    pt, st = root / "checkpoint.pt", root / "model.safetensors"
    if not pt.exists() or not st.exists():
        # in a child process, so this (parent) process never holds the model: children forked from
        # a big parent would inherit its resident pages
        subprocess.run([sys.executable, "-c", WRITER, str(cfg_path), str(pt), str(st)], check=True)
    print(f"config: vggt preset, {cfg.depth} aggregator layers, DINO depth {cfg.dino.depth}, camera head only")
    print(f"{'file':<20} {'size GB':>8} {'RSS before':>11} {'peak RSS':>9} {'peak/size':>10} {'(peak-before)/size':>19}")
    for f in (pt, st):
        out = subprocess.run([sys.executable, "-c", CHILD, str(cfg_path), str(f)], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        size = f.stat().st_size
        print(f"{f.name:<20} {size / 1e9:>8.2f} {r['before'] / 1e9:>10.2f}G {r['peak'] / 1e9:>8.2f}G "
              f"{r['peak'] / size:>10.2f} {(r['peak'] - r['before']) / size:>19.2f}   loaded {100 * r['loaded']:.0f}%")


if __name__ == "__main__":
    main()
