"""Model options beyond the invariants file: separate stream blocks, relative-time bias, aa_order."""
from __future__ import annotations

import pytest
import torch

from vggt_mv.config import ModelConfig
from vggt_mv.model.aggregator import Aggregator
from vggt_mv.model.mask_bias import relative_time_bias


def _images(t=3, v=2):
    return torch.rand(1, t, v, 3, 28, 42, generator=torch.Generator().manual_seed(3))


def test_separate_stream_blocks_start_as_copies_and_then_diverge():
    torch.manual_seed(0)
    shared_cfg = ModelConfig.preset("tiny")
    sep_cfg = shared_cfg.replace(mask={"separate_stream_blocks": True})
    shared = Aggregator(shared_cfg).eval()
    sep = Aggregator(sep_cfg).eval()
    sep.load_state_dict(shared.state_dict(), strict=False)
    sep.copy_stream_blocks()
    imgs = _images()
    with torch.no_grad():
        a, b = shared.run(imgs, "factorized"), sep.run(imgs, "factorized")
        for x, y in zip(a.pose_tokens, b.pose_tokens):
            torch.testing.assert_close(x, y)
        sep.pose_global_blocks[0].attn.proj.weight.mul_(1.5)  # the pose copy is its own module
        c = sep.run(imgs, "factorized")
    fork = min(sep_cfg.mask.bias_layers)
    assert (c.pose_tokens[fork] - b.pose_tokens[fork]).abs().max() > 1e-4
    torch.testing.assert_close(c.geo_tokens[-1], b.geo_tokens[-1])


def test_relative_time_bias_equals_squared_time_difference_up_to_row_constants():
    times = torch.tensor([[0.0, 0.0, 1.0, 1.0, 2.0, 3.0]])
    dense = relative_time_bias(times, 0.7).dense()[0]
    explicit = -0.7 * (times[0, :, None] - times[0, None, :]) ** 2
    diff = dense - explicit  # must be constant along each row (softmax ignores it)
    torch.testing.assert_close(diff, diff[:, :1].expand_as(diff))


def test_time_bias_is_off_by_default_and_acts_when_set():
    torch.manual_seed(0)
    cfg = ModelConfig.preset("tiny")
    assert cfg.time_bias.strength == 0.0
    agg = Aggregator(cfg).eval()
    imgs = _images()
    with torch.no_grad():
        base = agg.run(imgs, "factorized").geo_tokens[-1]
        agg.cfg.time_bias.strength = 2.0
        on = agg.run(imgs, "factorized").geo_tokens[-1]
        flat = agg.run(imgs, "flat").geo_tokens[-1]
        agg.cfg.time_bias.strength = 0.0
        flat0 = agg.run(imgs, "flat").geo_tokens[-1]
    assert (on - base).abs().max() > 1e-3
    torch.testing.assert_close(flat, flat0)  # flat Time-SA is per image: no time differences


def test_aa_order_view_first_changes_the_computation_but_keeps_entry_layout():
    torch.manual_seed(0)
    cfg = ModelConfig.preset("tiny")
    agg = Aggregator(cfg).eval()
    rev = Aggregator(cfg.replace(aa_order=["view", "time"])).eval()
    rev.load_state_dict(agg.state_dict())
    imgs = _images()
    with torch.no_grad():
        a, b = agg.run(imgs, "factorized"), rev.run(imgs, "factorized")
    assert a.geo_tokens[0].shape == b.geo_tokens[0].shape
    assert (a.geo_tokens[0] - b.geo_tokens[0]).abs().max() > 1e-4


def test_switching_sparse_strategy_at_runtime_takes_effect():
    torch.manual_seed(0)
    cfg = ModelConfig.preset("tiny")
    agg = Aggregator(cfg).eval()
    imgs = _images(t=4, v=2)
    with torch.no_grad():
        dense = agg.run(imgs, "factorized").geo_tokens[-1]
        agg.cfg.sparse.strategy = "dilated"
        agg.cfg.sparse.dilated_offsets = [0]  # every view at its own time only = View-SA
        same_time = agg.run(imgs, "factorized").geo_tokens[-1]
        agg.cfg.sparse.strategy = "landmark"
        agg.cfg.sparse.landmark_k = 2
        landmark = agg.run(imgs, "factorized").geo_tokens[-1]
        agg.cfg.sparse.strategy = "memory_bank"
        with pytest.raises(ValueError, match="memory tokens"):
            agg.run(imgs, "factorized")
    # dilated with offsets [0] is View-SA over the same keys: equal; landmark K=2 is not
    torch.testing.assert_close(same_time, dense, rtol=1e-5, atol=1e-5)
    assert (landmark - dense).abs().max() > 1e-4
