"""A pre-run estimate of time and memory for ``reconstruct`` (shown by the app before a run starts).

Time = counted FLOPs of one window (encoder, aggregator with its layout and streams, heads) x the
number of windows, divided by this device's measured matmul throughput (a short timed matmul)
and an efficiency factor. Memory = parameters + the token activations the heads keep + one DPT
frame chunk. Both are estimates (typically within 2x); the run's measured timings go into
``rec.meta``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import lru_cache

import torch

from vggt_mv.config import ModelConfig
from vggt_mv.inference.windows import plan_windows
from vggt_mv.weights.loader import model_shapes

EFFICIENCY = 0.35  # fraction of peak matmul throughput a full forward reaches (convs, softmax, memory traffic)


@dataclass
class CostEstimate:
    seconds: float
    peak_bytes: int
    gflops: float
    windows: int
    device: str

    def __str__(self) -> str:
        return (f"~{self.seconds:.0f} s and ~{self.peak_bytes / 2**30:.1f} GiB on {self.device} "
                f"({self.windows} window(s), {self.gflops:.0f} GFLOP)")


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


def estimate_run(cfg: ModelConfig, t: int, v: int, h: int, w: int, *, window: int = 8, overlap: int = 2,
                 layout: str | None = None, device: str = "cpu") -> CostEstimate:
    windows = plan_windows(t, window, overlap)
    tw = min(window, t)
    flops = forward_flops(cfg, tw, v, h, w, layout) * len(windows)
    seconds = flops / (matmul_throughput(device) * EFFICIENCY)
    n = tw * v
    p = (h // cfg.patch_size) * (w // cfg.patch_size) + 1 + cfg.num_register_tokens
    params = sum(math.prod(s) for s in model_shapes(cfg).values())
    streams = 2 if cfg.mask.enabled and cfg.mask.mode == "streams" else 1
    tokens = n * p * 2 * cfg.embed_dim * 4 * (len(set(cfg.depth_head.intermediate_layer_idx)) + 2) * streams
    dpt_chunk = min(n, cfg.depth_head.frames_chunk_size) * cfg.depth_head.features * h * w * 4 * 6
    peak = params * 4 + tokens + dpt_chunk
    return CostEstimate(seconds, int(peak), flops / 1e9, len(windows), device)

