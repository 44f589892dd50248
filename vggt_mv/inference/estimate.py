"""A pre-run estimate of time and memory for ``reconstruct`` (shown by the app before a run starts),
and the memory guard that refuses a run which will not fit (app and ``vggt-mv reconstruct``).

Time = counted FLOPs of one window (encoder, aggregator with its layout and streams, heads) x the
number of windows, divided by this device's measured matmul throughput (a short timed matmul)
and an efficiency factor.

Memory has two parts. The *device* part is bounded by one window: parameters + the token
activations the heads keep + one DPT frame chunk. The *host* part grows with the sequence length
T: the decoded frames (float32 ``[T,V,3,H,W]``, with the copies made while decoding), the stitched
result (depth, confidences, world points, mask, uint8 images) and the exports written from it. On
CPU both parts are in host memory. The guard compares them with what this process may still take:
``min(MemAvailable, cgroup memory.max - memory.current)`` for the host and
``torch.cuda.mem_get_info`` for a GPU (``VGGT_MV_MEMORY_CAP`` lowers the host budget, e.g. on a
shared machine). Estimates, not measurements: the closing note of issue 12 lists the error against
measured peak RSS.
"""
from __future__ import annotations

import contextlib
import math
import os
import re
import time
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import torch

from vggt_mv.config import ModelConfig
from vggt_mv.inference.windows import plan_windows
from vggt_mv.weights.loader import model_shapes

EFFICIENCY = 0.35  # fraction of peak matmul throughput a full forward reaches (convs, softmax, memory traffic)


# Host bytes per pixel of the sequence (T*V*H*W). The phases of a run do not overlap: decoding
# (frames + their transient copies), the windows (frames + result + one window's activations and
# outputs), the exports (frames + result + the gathered point clouds). Per-pixel figures follow the
# array dtypes; EXPORT_BYTES and FIRST_LOAD_BYTES were measured (peak RSS of the tiny preset on the
# sample, CPU) since they come from several libraries' temporaries.
FRAME_BYTES = 3 * 4             # decoded frames, float32 RGB, resident for the whole run
FRAME_DECODE_BYTES = 2 * 3 * 4  # transient while decoding: per-camera stacks + the permuted copy
GT_BYTES = 4 + 4 + 1            # ground-truth depth, external mask, dynamic mask (when a scene has them)
RESULT_BYTES = 6 * 4 + 4 + 3    # depth, depth_conf, world points xyz, points conf, mask (float32) + uint8 RGB
EXPORT_BYTES = 100              # rec.save: NPZ / PLY / GLB temporaries (points, colours, masks, zlib buffers)
FIRST_LOAD_BYTES = 80 * 2**20   # the first model load in a process: library code, allocator arenas


@dataclass
class CostEstimate:
    """Time and memory of one run. ``device_bytes``: model + one window's activations;
    ``host_bytes``: arrays that grow with T (on CPU the device part is host memory too)."""

    seconds: float
    device_bytes: int
    host_bytes: int
    gflops: float
    windows: int
    device: str

    @property
    def on_host(self) -> bool:
        return not self.device.startswith("cuda")

    @property
    def peak_bytes(self) -> int:
        """Everything the run adds (device + host)."""
        return self.device_bytes + self.host_bytes

    def __str__(self) -> str:
        mem = (f"~{self.peak_bytes / 2**30:.2f} GiB of RAM" if self.on_host else
               f"~{self.device_bytes / 2**30:.2f} GiB on {self.device} + ~{self.host_bytes / 2**30:.2f} GiB of RAM")
        return f"~{self.seconds:.0f} s and {mem} ({self.windows} window(s), {self.gflops:.0f} GFLOP)"


def _block_flops(tokens: int, group: int, c: int, mlp_ratio: float) -> float:
    """One transformer block on ``tokens`` tokens split in attention groups of ``group`` tokens."""
    linear = 2 * tokens * c * c * (4 + 2 * mlp_ratio)
    attention = 4 * tokens * group * c
    return linear + attention


def forward_flops(cfg: ModelConfig, t: int, v: int, h: int, w: int, layout: str | None = None) -> float:
    """FLOPs of one forward on ``[1,t,v,3,h,w]``."""
    layout = layout or cfg.layout
    n = t * v
    hw = (h // cfg.patch_size) * (w // cfg.patch_size)
    d = cfg.dino
    p_dino = hw + 1 + d.num_register_tokens
    flops = n * d.depth * _block_flops(p_dino, p_dino, d.embed_dim, d.mlp_ratio)
    p = hw + 1 + cfg.num_register_tokens
    tokens = n * p
    flat = layout == "flat" or v == 1
    time_group, view_group = (p, n * p) if flat else (t * p, v * p)
    per_layer = _block_flops(tokens, time_group, cfg.embed_dim, cfg.mlp_ratio) + _block_flops(
        tokens, view_group, cfg.embed_dim, cfg.mlp_ratio)
    layers = cfg.depth
    if cfg.mask.enabled and cfg.mask.mode == "streams":
        layers += cfg.depth - min(cfg.mask.bias_layers)  # the rest run twice
    flops += layers * per_layer
    if cfg.enable_camera:
        c2 = cfg.camera_head.dim_in
        flops += cfg.camera_head.num_iterations * cfg.camera_head.trunk_depth * _block_flops(n, n, c2, cfg.camera_head.mlp_ratio)
    for head, on in ((cfg.depth_head, cfg.enable_depth), (cfg.point_head, cfg.enable_point)):
        if on:  # DPT: fusion convs at up to 1/2 resolution dominate (3x3 convs on `features` channels)
            flops += n * (2 * 9 * head.features**2 * (h * w / 4) * 4 + 2 * head.dim_in * sum(head.out_channels) * hw)
    return flops


@lru_cache(maxsize=4)
def matmul_throughput(device: str) -> float:
    """Measured FLOP/s of a float32 matmul on ``device`` (cached per process)."""
    n = 1024 if device.startswith("cuda") else 384
    a = torch.randn(n, n, device=device)
    a @ a
    reps = 20 if device.startswith("cuda") else 5
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        a @ a
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return reps * 2 * n**3 / max(time.perf_counter() - start, 1e-9)


def host_bytes(t: int, v: int, h: int, w: int, *, gt: bool = True, exports: bool = True,
               during_windows: int = 0, streamed_window: int | None = None) -> int:
    """Peak of the host arrays that grow with the sequence: the decoded frames plus the largest of
    decoding, the stitched result + ``during_windows`` bytes (what a window adds on the host), and
    the result + the exports.

    ``streamed_window=Tw`` (``vggt-mv reconstruct``: frames decoded per window, the result
    memory-mapped into the output folder, so it is page cache the kernel can write back, not
    resident arrays): only ``Tw`` timesteps of frames are held; the ground truth is still read whole."""
    px = t * v * h * w
    if streamed_window is not None:
        pxw = min(streamed_window, t) * v * h * w
        return int(px * (GT_BYTES if gt else 0) + pxw * (FRAME_BYTES + FRAME_DECODE_BYTES)
                   + max(during_windows, px * EXPORT_BYTES if exports else 0))
    frames = px * (FRAME_BYTES + (GT_BYTES if gt else 0))
    result = px * RESULT_BYTES
    return int(frames + max(px * FRAME_DECODE_BYTES, result + during_windows,
                            result + (px * EXPORT_BYTES if exports else 0)))


def model_bytes(cfg: ModelConfig) -> int:
    """float32 parameters of ``cfg``'s model."""
    return 4 * sum(math.prod(s) for s in model_shapes(cfg).values())


def estimate_run(cfg: ModelConfig, t: int, v: int, h: int, w: int, *, window: int = 8, overlap: int = 2,
                 layout: str | None = None, device: str = "cpu", model_loaded: bool = False,
                 gt: bool = True, exports: bool = True, timed: bool = True,
                 weights_bytes: int | None = None, streamed: bool = False) -> CostEstimate:
    """Estimate a run on ``[T=t, V=v, 3, h, w]``. ``model_loaded``: the weights are already in memory
    (a cached model), so they are not counted again. ``timed=False`` skips the throughput probe;
    ``weights_bytes``: :func:`model_bytes` computed once by the caller; ``streamed``: frames decoded
    per window and the result memory-mapped (see :func:`host_bytes`)."""
    windows = plan_windows(t, window, overlap)
    tw = min(window, t)
    flops = forward_flops(cfg, tw, v, h, w, layout) * len(windows)
    seconds = flops / (matmul_throughput(device) * EFFICIENCY) if timed else float("nan")
    n = tw * v
    p = (h // cfg.patch_size) * (w // cfg.patch_size) + 1 + cfg.num_register_tokens
    streams = 2 if cfg.mask.enabled and cfg.mask.mode == "streams" else 1
    tokens = n * p * 2 * cfg.embed_dim * 4 * (len(set(cfg.depth_head.intermediate_layer_idx)) + 2) * streams
    dpt_chunk = min(n, cfg.depth_head.frames_chunk_size) * cfg.depth_head.features * h * w * 4 * 4
    window_out = n * h * w * RESULT_BYTES  # one window's predictions on the host before stitching
    weights = weights_bytes if weights_bytes is not None else model_bytes(cfg)
    activations = tokens + dpt_chunk
    on_host = not device.startswith("cuda")
    dev_bytes = (0 if model_loaded else weights) + (0 if on_host else activations)
    host = host_bytes(t, v, h, w, gt=gt, exports=exports,
                      during_windows=window_out + (activations if on_host else 0),
                      streamed_window=tw if streamed else None)
    return CostEstimate(seconds, int(dev_bytes), host + (0 if model_loaded else FIRST_LOAD_BYTES),
                        flops / 1e9, len(windows), device)


# ---------------------------------------------------------------------------- the memory guard
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)


def parse_bytes(text: str) -> int:
    """``"512M"``, ``"2G"``, ``"1.5GiB"``, ``"1000000"`` -> bytes (powers of 1024)."""
    m = _SIZE.match(str(text))
    if not m:
        raise ValueError(f"not a memory size: {text!r} (use e.g. 512M, 2G or a number of bytes)")
    return int(float(m.group(1)) * 1024 ** "bkmgt".index((m.group(2) or "b").lower()))


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max" = no limit


def host_budget() -> tuple[int, str]:
    """``(bytes, source)``: host memory this process may still take: ``min(MemAvailable, cgroup
    memory.max - memory.current, VGGT_MV_MEMORY_CAP)``."""
    found: list[tuple[int, str]] = []
    with contextlib.suppress(OSError):  # no /proc (not Linux): the other bounds only
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append((int(line.split()[1]) * 1024, "MemAvailable"))
    cg = Path("/sys/fs/cgroup")
    for limit_f, usage_f, name in (("memory.max", "memory.current", "cgroup memory.max"),
                                   ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes", "cgroup limit")):
        limit, usage = _read_int(cg / limit_f), _read_int(cg / usage_f)
        if limit is not None and usage is not None and limit < 1 << 60:
            found.append((max(limit - usage, 0), name))
            break
    cap = os.environ.get("VGGT_MV_MEMORY_CAP")
    if cap:
        try:
            found.append((parse_bytes(cap), "VGGT_MV_MEMORY_CAP"))
        except ValueError as e:
            raise ValueError(f"VGGT_MV_MEMORY_CAP: {e}") from None
    if not found:
        return 1 << 62, "unknown (no limit found)"
    return min(found)


def device_budget(device: str) -> tuple[int, str] | None:
    """Free bytes on a CUDA ``device`` (``torch.cuda.mem_get_info``); None for CPU / MPS."""
    if not str(device).startswith("cuda") or not torch.cuda.is_available():
        return None
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    return int(free), f"free memory of {device}"


@dataclass(frozen=True)
class RunShape:
    """What a run's memory depends on: T timesteps, V views at ``h x w``, window/overlap."""

    t: int
    v: int
    h: int
    w: int
    window: int
    overlap: int


def _fits(cfg: ModelConfig, shape: RunShape, device: str, host: int, dev: tuple[int, str] | None,
          **kw) -> tuple[bool, CostEstimate]:
    est = estimate_run(cfg, shape.t, shape.v, shape.h, shape.w, window=shape.window,
                       overlap=min(shape.overlap, max(shape.window - 1, 0)), device=device, timed=False, **kw)
    if dev is None:
        return est.peak_bytes <= host, est
    return est.host_bytes <= host and est.device_bytes <= dev[0], est


def check_memory(cfg: ModelConfig, shape: RunShape, *, device: str = "cpu",
                 resolutions: tuple[int, ...] | list[int] = (), **kw) -> str | None:
    """None if the run fits; else a one-line reason with the largest resolution / window / frame
    count that would fit (each changed alone). ``kw`` go to :func:`estimate_run`."""
    host, host_src = host_budget()
    dev = device_budget(device)
    kw.setdefault("weights_bytes", model_bytes(cfg))
    ok, est = _fits(cfg, shape, device, host, dev, **kw)
    if ok:
        return None
    if dev is not None and est.device_bytes > dev[0]:
        need = f"~{est.device_bytes / 2**30:.2f} GiB on {device} but {dev[0] / 2**30:.2f} GiB is free ({dev[1]})"
    else:
        need = (f"~{(est.peak_bytes if dev is None else est.host_bytes) / 2**30:.2f} GiB of RAM but "
                f"{host / 2**30:.2f} GiB is available ({host_src})")

    def fits(candidate: RunShape) -> bool:
        try:
            return _fits(cfg, candidate, device, host, dev, **kw)[0]
        except ValueError:  # e.g. windows without overlap cannot be stitched: not an option
            return False

    options = []
    for r in sorted((r for r in resolutions if r < shape.w), reverse=True):
        h = max(14, round(shape.h * r / shape.w / 14) * 14)
        if fits(replace(shape, h=h, w=r)):
            options.append(f"resolution {r}")
            break
    for win in range(min(shape.window, shape.t) - 1, 0, -1):
        if fits(replace(shape, window=win, overlap=min(shape.overlap, win - 1))):
            options.append(f"window {win}")
            break
    lo, hi = 0, shape.t - 1  # largest frame count that fits, by bisection
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(replace(shape, t=mid, window=min(shape.window, mid), overlap=min(shape.overlap, max(mid - 1, 0)))):
            lo = mid
        else:
            hi = mid - 1
    if lo >= 1:
        options.append(f"{lo} frame(s) (frame range 0:{lo})")
    hint = ("largest that would fit: " + " or ".join(options)) if options else \
        "even the smallest resolution / window / one frame does not fit: free memory or use a smaller model"
    return f"this run needs {need}; {hint}"



def scene_shape(source, *, resolution: int, mode: str = "crop", frame_range=None, stride: int = 1,
                masks=None) -> tuple[int, int, int, int, bool]:
    """``(T, V, H, W, has_gt)`` that ``load_scene`` would produce, from listings and image headers
    (one frame of a video is decoded); cheap enough to run before anything large is read."""
    from PIL import Image

    from vggt_mv.data.preprocess import check_resolution, common_size, plan_preprocess
    from vggt_mv.data.scene import _select

    target = check_resolution(resolution)
    _, cams, _, _, idx = _select(source, masks, frame_range, stride)
    sizes = []
    for c in cams:
        if c.frames is not None:
            with Image.open(c.frames[idx[0]]) as im:
                sizes.append((im.height, im.width))
        else:
            sizes.append(next(c.iter_frames(idx[:1])).shape[:2])
    h, w = common_size([plan_preprocess(h, w, mode, target) for h, w in sizes])[0].out_hw
    has_gt = any(c.depth or c.dyn or c.mask_dir for c in cams)
    return len(idx), len(cams), int(h), int(w), bool(has_gt)
