"""The low-rank attention bias (PAGE's extra q/k channel trick) equals explicit-logit attention.

DESIGN §3: the mask bias ``logit_ij += r_i (m_j - c0)`` must not materialise an N x N mask and must be
proven equal to explicit logits. These tests build the explicit ``softmax(QK^T/sqrt(d) + B) V`` by
hand and compare it with ``attend`` / ``Block`` / the aggregator's own bias construction.
"""
from __future__ import annotations

import pytest
import torch

from vggt_mv.config import ModelConfig
from vggt_mv.layers import Block, LowRankBias, RotaryPositionEmbedding2D, attend, patch_positions
from vggt_mv.model.aggregator import Aggregator
from vggt_mv.model.mask_bias import mask_bias, relative_time_bias

TOL = dict(rtol=1e-5, atol=1e-5)


def explicit_attention(q, k, v, dense_bias=None, key_mask=None):
    """softmax(q k^T / sqrt(d) + bias) v with bias ``[B, Nq, Nk]`` broadcast over heads."""
    logits = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5
    if dense_bias is not None:
        logits = logits + dense_bias[:, None]
    if key_mask is not None:
        logits = logits.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    return logits.softmax(-1) @ v


def explicit_block(block: Block, x, pos, dense_bias=None):
    """``Block.forward`` written out with explicit logits (same q/k/v projection, RoPE and norms)."""
    q, k, v = block.attn.project(block.norm1(x), pos)
    o = explicit_attention(q, k, v, dense_bias)
    x = x + block.ls1(block.attn.out(o))
    return x + block.ls2(block.mlp(block.norm2(x)))


@pytest.mark.parametrize("rank", [1, 2])
@pytest.mark.parametrize("shape", [(1, 1, 7, 7, 8), (2, 3, 5, 11, 16), (3, 2, 13, 4, 6)])
def test_attend_lowrank_equals_explicit(shape, rank):
    b, h, nq, nk, d = shape
    g = torch.Generator().manual_seed(nq * 31 + nk + rank)
    q, k, v = (torch.randn(b, h, n, d, generator=g) for n in (nq, nk, nk))
    # large bias values so a wrong scale (e.g. forgetting the /scale on the row channel) is obvious
    bias = LowRankBias(3 * torch.randn(b, nq, rank, generator=g), 3 * torch.randn(b, nk, rank, generator=g))
    got = attend(q, k, v, bias)
    torch.testing.assert_close(got, explicit_attention(q, k, v, bias.dense()), **TOL)
    # the bias actually matters (so the comparison above is not vacuous)
    assert (got - attend(q, k, v)).abs().max() > 1e-2


@pytest.mark.parametrize("rank", [1, 2])
def test_attend_lowrank_with_key_mask(rank):
    b, h, nq, nk, d = 2, 2, 6, 9, 8
    g = torch.Generator().manual_seed(5 + rank)
    q, k, v = (torch.randn(b, h, n, d, generator=g) for n in (nq, nk, nk))
    bias = LowRankBias(2 * torch.randn(b, nq, rank, generator=g), 2 * torch.randn(b, nk, rank, generator=g))
    key_mask = torch.rand(b, nk, generator=g) > 0.4
    key_mask[:, 0] = True  # at least one visible key per row
    got = attend(q, k, v, bias, key_mask)
    torch.testing.assert_close(got, explicit_attention(q, k, v, bias.dense(), key_mask), **TOL)
    # masked keys have no influence: changing their values leaves the output unchanged
    v2 = v.clone()
    v2[~key_mask[:, None, :, None].expand_as(v)] += 100.0
    torch.testing.assert_close(attend(q, k, v2, bias, key_mask), got, **TOL)


def test_lowrank_concat_sums_biases():
    g = torch.Generator().manual_seed(1)
    a = LowRankBias(torch.randn(1, 4, 1, generator=g), torch.randn(1, 5, 1, generator=g))
    c = LowRankBias(torch.randn(1, 4, 2, generator=g), torch.randn(1, 5, 2, generator=g))
    torch.testing.assert_close(LowRankBias.concat([a, None, c]).dense(), a.dense() + c.dense())
    assert LowRankBias.concat([None]) is None
    with pytest.raises(ValueError, match="rank mismatch"):
        LowRankBias(torch.zeros(1, 4, 1), torch.zeros(1, 5, 2))


def test_relative_time_bias_is_minus_s_dt2_up_to_row_constant():
    times = torch.tensor([[0.0, 0.0, 1.0, 1.0, 2.0, 3.0]])
    s = 0.7
    dense = relative_time_bias(times, s).dense()
    target = -s * (times[0, :, None] - times[0, None, :]) ** 2
    diff = dense[0] - target  # must be constant along each row (cancels in softmax)
    torch.testing.assert_close(diff, diff[:, :1].expand_as(diff), **TOL)


@pytest.mark.parametrize("lam", [4.0, 64.0])
def test_block_page_style_bias_equals_explicit(lam):
    """PAGE tokens-mode bias: r_i = -lam on the 5 special rows of each image (0 on patch rows),
    key value (m_j - c0) on patch keys and 0 on special keys; Block with the low-rank bias equals the
    explicit-logit block."""
    torch.manual_seed(0)
    dim, heads, n_img, gh, gw, ns = 32, 4, 3, 2, 3, 5
    block = Block(dim, heads, qk_norm=True, init_values=0.5, rope=RotaryPositionEmbedding2D(100.0)).eval()
    p = ns + gh * gw
    pos = patch_positions(1, gh, gw, ns, torch.device("cpu")).repeat(1, n_img, 1)
    x = torch.randn(1, n_img * p, dim)
    m = torch.rand(1, n_img, gh * gw)
    c0 = 0.5
    key_value = torch.cat([torch.zeros(1, n_img, ns), m - c0], -1).reshape(1, -1)
    is_special = (torch.arange(p) < ns).repeat(n_img)
    rows = torch.where(is_special, torch.tensor(-lam), torch.tensor(0.0))[None]
    bias = mask_bias(rows, key_value)
    explicit = torch.zeros(1, n_img * p, n_img * p)
    for i in range(n_img * p):
        for j in range(n_img * p):
            if is_special[i] and not is_special[j]:
                explicit[0, i, j] = -lam * (m.reshape(-1)[(j // p) * gh * gw + j % p - ns] - c0)
    torch.testing.assert_close(bias.dense(), explicit, rtol=0, atol=1e-6)
    with torch.no_grad():
        got = block(x, pos, bias)
        torch.testing.assert_close(got, explicit_block(block, x, pos, explicit), **TOL)
        assert (got - block(x, pos)).abs().max() > 1e-3


def test_aggregator_bias_rows_and_keys():
    """The aggregator's own r_i / (m_j - c0) construction: tokens mode -> -lambda_pose on special rows,
    +lambda_geo on patch rows; streams -> one value per stream; special keys get 0."""
    cfg = ModelConfig.preset("tiny")
    cfg.mask.mode = "tokens"
    torch.manual_seed(0)
    agg = Aggregator(cfg).eval()
    agg.mask_bias.set(lambda_pose=1.5, lambda_geo=0.25, lambda_pose_t=-2.0, lambda_geo_t=3.0)
    ref = torch.zeros(())
    with torch.no_grad():
        r = agg._row_weight("main", 11, "global", ref)
        torch.testing.assert_close(r, torch.tensor([-1.5] * 5 + [0.25] * 6))
        r = agg._row_weight("main", 11, "frame", ref)
        torch.testing.assert_close(r, torch.tensor([2.0] * 5 + [3.0] * 6))
        torch.testing.assert_close(agg._row_weight("pose", 11, "global", ref), torch.full((11,), -1.5))
        torch.testing.assert_close(agg._row_weight("geo", 11, "global", ref), torch.full((11,), 0.25))
        logit = torch.randn(1, 1, 2, 6)
        kv = agg._key_value(logit, None)
        assert kv.shape == (1, 1, 2, 11)
        assert torch.equal(kv[..., :5], torch.zeros(1, 1, 2, 5))
        torch.testing.assert_close(kv[..., 5:], torch.sigmoid(-logit) - cfg.mask.mask_center)
    cfg2 = ModelConfig.preset("tiny")
    cfg2.mask.bias_blocks = ["global"]
    agg2 = Aggregator(cfg2)
    agg2.mask_bias.set(lambda_pose_t=1.0)
    assert agg2._row_weight("main", 11, "frame", ref) is None


def _sdpa_kernels(fn) -> set[str]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {e.key for e in prof.key_averages() if "scaled_dot_product" in e.key}


FLASH_CPU = "aten::_scaled_dot_product_flash_attention_for_cpu"


@pytest.mark.parametrize("with_mask", [False, True])
def test_bias_keeps_fused_cpu_kernel(with_mask):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 64, 16, generator=g) for _ in range(3))
    key_mask = (torch.rand(1, 64, generator=g) > 0.3) if with_mask else None
    if FLASH_CPU not in _sdpa_kernels(lambda: attend(q, k, v, None, key_mask)):
        pytest.skip("this torch build has no fused CPU SDPA kernel")
    bias = LowRankBias(torch.randn(1, 64, 1, generator=g), torch.randn(1, 64, 1, generator=g))
    assert FLASH_CPU in _sdpa_kernels(lambda: attend(q, k, v, bias, key_mask))
