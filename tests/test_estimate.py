"""Pre-run cost estimate: counts that follow the architecture (layout, streams, windows)."""
from __future__ import annotations

from vggt_mv.config import ModelConfig
from vggt_mv.inference.estimate import estimate_run, forward_flops


def test_flops_follow_layout_streams_and_size():
    cfg = ModelConfig.preset("tiny")
    flat = forward_flops(cfg, 8, 4, 140, 196, "flat")
    fact = forward_flops(cfg, 8, 4, 140, 196, "factorized")
    assert fact < flat  # factorized attention groups are smaller than one global group
    single = cfg.replace(mask={"mode": "tokens"})
    assert forward_flops(single, 4, 2, 56, 70) < forward_flops(cfg, 4, 2, 56, 70)  # streams run layers twice
    assert forward_flops(cfg, 8, 2, 56, 70) > 1.9 * forward_flops(cfg, 4, 2, 56, 70)


def test_estimate_scales_with_windows_and_reports_memory():
    cfg = ModelConfig.preset("tiny")
    one = estimate_run(cfg, 4, 3, 56, 70, window=4, overlap=1)
    three = estimate_run(cfg, 10, 3, 56, 70, window=4, overlap=1)
    assert three.windows == 3 and one.windows == 1
    assert three.gflops > 2.9 * one.gflops
    assert one.peak_bytes > 4 * 1e6 and one.seconds > 0
    assert "GiB" in str(one)
