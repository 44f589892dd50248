"""Forward-pass cost of the VGGT-MV aggregator variants, measured side by side in one run (CPU).

    .venv/bin/python benchmarks/model_forward.py            # full (~3-5 min on 2 cores)
    .venv/bin/python benchmarks/model_forward.py --quick    # smoke run (~1 min)

Sections (see benchmarks/README.md for how to read them):
  (a) mask bias: bias off (lambda 0) vs ``tokens`` vs ``streams``, tiny and a mid-size config;
  (b) layout: ``flat`` vs ``factorized`` at T=8, V=4;
  (c) Sparse Global-SA attention op vs T and V: dense vs landmark / dilated / memory_bank, and
      landmark vs dense at a 518x518 grid (P = 1369 patches).

Time: warm-up, then the variants of one table are run round-robin (interleaved) ``repeats`` times and
the median is reported, so machine load affects all variants alike. Peak memory: each variant runs in a
fresh subprocess; we reset the kernel's RSS high-water mark (``/proc/self/clear_refs`` <- 5) after
building the model and inputs and report VmHWM - VmRSS after one forward (``ru_maxrss`` delta where
that is not allowed) = the extra resident memory the forward needed at its peak. tracemalloc
does not see torch's C++ allocations and the torch profiler's CPU memory events need an allocation-trace
walk to get a peak; a process high-water mark is the number that matters for "will it fit".
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vggt_mv.config import ModelConfig  # noqa: E402
from vggt_mv.layers import Block, RotaryPositionEmbedding2D, attend, patch_positions  # noqa: E402
from vggt_mv.layers.sparse_attention import sparse_attend  # noqa: E402
from vggt_mv.model.aggregator import Aggregator  # noqa: E402

NS = 5


# ---------------------------------------------------------------- configs
from _measure import status_kb, time_interleaved  # noqa: E402  (sibling module)

def model_config(size: str) -> ModelConfig:
    cfg = ModelConfig.preset("tiny")
    if size == "mid":
        cfg = cfg.replace(
            embed_dim=256, num_heads=8, depth=8,
            dino={"embed_dim": 256, "num_heads": 8, "depth": 2, "pos_embed_shape": [1, 1370, 256]},
            mask={"hidden": 64},
        )
    return cfg


BIAS_VARIANTS = {
    # name: (mask overrides, lambdas); each bias mode is compared with the same mode at lambda = 0
    # (bias skipped exactly), so the ratio isolates the bias; streams' doubled layers show in the
    # streams-off row vs the tokens-off row.
    "mask off": ({"enabled": False}, {}),
    "bias off (tokens, lambda=0)": ({"mode": "tokens"}, {}),
    "tokens": ({"mode": "tokens"}, {"lambda_pose": 1.0, "lambda_geo": 0.5}),
    "bias off (streams, lambda=0)": ({"mode": "streams"}, {}),
    "streams": ({"mode": "streams"}, {"lambda_pose": 1.0, "lambda_geo": 0.5}),
}
BASELINE = {"tokens": "bias off (tokens, lambda=0)", "streams": "bias off (streams, lambda=0)"}


def make_case(spec: dict):
    """spec -> a zero-argument callable running one forward (used by the parent and the memory child)."""
    torch.manual_seed(0)
    kind = spec["kind"]
    if kind in ("bias", "layout"):
        cfg = model_config(spec["size"])
        if kind == "bias":
            over, lams = BIAS_VARIANTS[spec["variant"]]
            cfg = cfg.replace(mask=over)
            layout = "factorized"
        else:
            lams, layout = {}, spec["variant"]
        agg = Aggregator(cfg).eval()
        if lams:
            agg.mask_bias.set(**lams)
        t, v, hw = spec["t"], spec["v"], spec["hw"]
        imgs = torch.rand(1, t, v, 3, hw, hw, generator=torch.Generator().manual_seed(1))

        def run():
            with torch.no_grad():
                agg.run(imgs, layout=layout)

        return run
    raise ValueError(kind)


# ---------------------------------------------------------------- measurement


def mem_child(spec: dict) -> None:
    """Peak RSS growth of one forward: reset the kernel's RSS high-water mark (VmHWM, via
    /proc/self/clear_refs) right before the forward, so building the model does not mask it; fall back
    to the ru_maxrss delta where clear_refs is not writable."""
    torch.set_num_threads(spec.get("threads", 2))
    fn = make_case(spec)
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")
        before, method = status_kb("VmRSS"), "VmHWM"
    except OSError:
        before, method = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "ru_maxrss"
    fn()
    after = status_kb("VmHWM") if method == "VmHWM" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_delta_mb": (after - before) / 1024.0, "method": method}))


def peak_memory(spec: dict, threads: int) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--mem-child", json.dumps({**spec, "threads": threads})],
        capture_output=True, text=True, check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_delta_mb"]


def table(title: str, header: list[str], rows: list[list]) -> None:
    print(f"\n## {title}")
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    print(fmt.format(*header))
    print(fmt.format(*["-" * w for w in widths]))
    for r in rows:
        print(fmt.format(*r))
    sys.stdout.flush()


# ---------------------------------------------------------------- sections
def section_a(args) -> None:
    sizes = [("tiny", 2, 2, 112), ("mid", 2, 2, 168 if not args.quick else 112)]
    for size, t, v, hw in sizes:
        specs = {name: dict(kind="bias", size=size, variant=name, t=t, v=v, hw=hw) for name in BIAS_VARIANTS}
        times = time_interleaved({k: make_case(s) for k, s in specs.items()}, args.repeats)
        mem = {k: peak_memory(s, args.threads) for k, s in specs.items()}
        rows = []
        for k in specs:
            base = BASELINE.get(k, "bias off (tokens, lambda=0)")
            rows.append([k, f"{times[k] * 1e3:.1f}", f"{times[k] / times[base]:.2f}x", f"{mem[k]:.1f}",
                         f"{mem[k] / max(mem[base], 1e-9):.2f}x"])
        cfg = model_config(size)
        table(f"(a) mask bias, {size} (embed {cfg.embed_dim}, depth {cfg.depth}, heads {cfg.num_heads}), "
              f"factorized T={t} V={v} {hw}x{hw}, bias layers {cfg.mask.bias_layers} "
              f"[{'+'.join(cfg.mask.bias_blocks)}]; targets: tokens <= 1.15x time, memory within 10%",
              ["variant", "time ms", "vs its bias-off", "peak +MB", "vs its bias-off"], rows)


def section_b(args) -> None:
    t, v, hw = 8, 4, 112 if not args.quick else 56
    for size in ("tiny", "mid"):
        specs = {lay: dict(kind="layout", size=size, variant=lay, t=t, v=v, hw=hw) for lay in ("flat", "factorized")}
        times = time_interleaved({k: make_case(s) for k, s in specs.items()}, args.repeats)
        mem = {k: peak_memory(s, args.threads) for k, s in specs.items()}
        p = NS + (hw // 14) ** 2
        rows = [[k, f"{times[k] * 1e3:.1f}", f"{times[k] / times['flat']:.2f}x", f"{mem[k]:.1f}",
                 f"{mem[k] / max(mem['flat'], 1e-9):.2f}x"] for k in specs]
        table(f"(b) layout, {size}, T={t} V={v} {hw}x{hw} (P={p}; flat global N={t * v * p}, "
              f"factorized Time-SA N={t * p}, View-SA N={v * p})",
              ["layout", "time ms", "vs flat", "peak +MB", "vs flat"], rows)


def _sparse_setup(t, v, grid, dim=64, heads=4):
    torch.manual_seed(0)
    block = Block(dim, heads, qk_norm=True, init_values=0.01, rope=RotaryPositionEmbedding2D(100.0)).eval()
    x = torch.randn(1, t, v, NS + grid * grid, dim, generator=torch.Generator().manual_seed(1))
    pos = patch_positions(1, grid, grid, NS, torch.device("cpu"))[0]
    memory = 0.02 * torch.randn(1, 32, dim)
    return block, x, pos, memory


def _sparse_fns(block, x, pos, memory, strategies, k=64):
    """The attention op alone for each strategy (``sparse_attend`` vs ``attend`` over all tokens) on
    q/k/v precomputed once: the O(N) projections, out-projection and residual are the same for
    every strategy and are left out. ``landmark`` includes its saliency pass (anchor choice)."""
    b, t, v, p, c = x.shape
    flat = x.reshape(b, -1, c)
    with torch.no_grad():
        h = block.norm1(flat)
        q, kk, val = block.attn.project(h, pos.repeat(t * v, 1)[None])
    grid = (t, v, p)

    def saliency():
        patches = h.reshape(b, t * v, p, c)[:, :, NS:]
        return (patches - patches.mean(2, keepdim=True)).norm(dim=-1)

    fns = {"dense": lambda: attend(q, kk, val)}
    for s in strategies:
        fns[s] = (lambda s=s: sparse_attend(
            q, kk, val, s, grid, n_special=NS, landmark_k=k,
            landmark_scores=saliency() if s == "landmark" else None,
            offsets=[0, 1, -1, 2, -2, 4, -4], memory=memory, block=block))
    if "landmark" in strategies:  # the same op with anchor scores given (e.g. a previous run's confidence)
        scores = torch.rand(b, t * v, p - NS, generator=torch.Generator().manual_seed(2))
        fns["landmark (scores given)"] = lambda: sparse_attend(
            q, kk, val, "landmark", grid, n_special=NS, landmark_k=k, landmark_scores=scores)
    return {name: (lambda f=f: torch.no_grad()(f)()) for name, f in fns.items()}


def section_c(args) -> None:
    strategies = ["landmark", "dilated", "memory_bank"]
    grid = 14 if not args.quick else 8
    tvs = [(4, 2), (8, 2), (16, 2), (8, 4)] if not args.quick else [(2, 2), (4, 2), (8, 2), (4, 4)]
    res = {}
    for t, v in tvs:
        block, x, pos, memory = _sparse_setup(t, v, grid)
        res[(t, v)] = time_interleaved(_sparse_fns(block, x, pos, memory, strategies), args.repeats)
    p = NS + grid * grid
    rows = []
    prev = None
    for t, v in tvs:
        r = res[(t, v)]
        growth = ""
        if prev is not None and prev[1] == v and t == 2 * prev[0]:
            growth = "  ".join(f"{s}:{r[s] / res[prev][s]:.2f}x" for s in ["dense", "dilated", "memory_bank"])
        rows.append([f"T={t} V={v} (N={t * v * p})", *(f"{r[s] * 1e3:.1f}" for s in ["dense", *strategies]),
                     f"{r['memory_bank'] / (t * v) * 1e3:.2f}", growth])
        prev = (t, v)
    table(f"(c1) sparse-layer attention op (ms) vs T, V (embed 64, 4 heads, {grid}x{grid} patches, P={p}, "
          "landmark K=64, memory 32); targets: doubling T -> dilated <= 2.3x, dense ~4x; "
          "memory_bank ~linear in T*V (constant ms/img)",
          ["size", "dense", "landmark", "dilated", "memory_bank", "mb ms/img", "growth when T doubles"], rows)

    # landmark at a 518x518 grid
    grid, k = 37, 64
    t, v = (2, 2) if not args.quick else (1, 2)
    block, x, pos, memory = _sparse_setup(t, v, grid)
    times = time_interleaved(_sparse_fns(block, x, pos, memory, ["landmark"], k=k), args.repeats)
    p = grid * grid
    target = 1.5 * (k + NS) / p
    ratio = min(times["landmark"], times["landmark (scores given)"]) / times["dense"]
    rows = [[name, f"{times[name] * 1e3:.1f}", f"{times[name] / times['dense']:.3f}"]
            for name in ("dense", "landmark", "landmark (scores given)")]
    table(f"(c2) landmark K={k} vs dense attention op at a 518x518 grid (P={p}), T={t} V={v}, "
          f"N={t * v * (p + NS)}; target ratio <= 1.5*(K+5)/P = {target:.3f} ({'met' if ratio <= target else 'NOT met'})",
          ["variant", "attn op ms", "vs dense"], rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, 2 repeats (~1 min)")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats per variant (median)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--sections", default="abc", help="subset of 'abc' to run")
    ap.add_argument("--mem-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mem_child:
        mem_child(json.loads(args.mem_child))
        return
    args.repeats = args.repeats or (2 if args.quick else 5)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpu count {os.cpu_count()}, "
          f"repeats {args.repeats} (median), {'quick' if args.quick else 'full'}")
    t0 = time.perf_counter()
    for s, fn in (("a", section_a), ("b", section_b), ("c", section_c)):
        if s in args.sections:
            fn(args)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
