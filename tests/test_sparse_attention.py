"""Sparse Global-SA (DESIGN §3): key patterns checked directly, equality with explicitly masked dense
attention, ``landmark`` with K = all patches equals dense/``flat`` global attention, and the sparse
layer's output is the layer entry the heads read."""
from __future__ import annotations

import pytest
import torch

from vggt_mv.config import ModelConfig
from vggt_mv.layers import Block, LowRankBias, RotaryPositionEmbedding2D, patch_positions
from vggt_mv.layers.sparse_attention import dilated_time_index, landmark_index, sparse_global_block
from vggt_mv.model.aggregator import Aggregator

TOL = dict(rtol=1e-5, atol=1e-5)
NS = 5  # camera + 4 registers
OFFSETS = [0, 1, -1, 2, -2, 4, -4]


def _block(dim: int = 32, heads: int = 4, seed: int = 0) -> Block:
    torch.manual_seed(seed)
    # init_values 0.5 (not 0.01) so the attention branch is clearly visible in the block output
    return Block(dim, heads, qk_norm=True, init_values=0.5, rope=RotaryPositionEmbedding2D(100.0)).eval()


def _tokens(b, t, v, gh, gw, dim=32, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, v, NS + gh * gw, dim, generator=g)
    pos = patch_positions(1, gh, gw, NS, torch.device("cpu"))[0]
    return x, pos


def explicit_masked_block(block: Block, x, pos, allowed, dense_bias=None):
    """Dense block over all T*V*P tokens with logits masked to ``allowed [N, N]`` (query, key)."""
    b, t, v, p, c = x.shape
    flat = x.reshape(b, -1, c)
    pos_all = pos.repeat(t * v, 1)[None].expand(b, -1, -1)
    q, k, val = block.attn.project(block.norm1(flat), pos_all)
    logits = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5
    if dense_bias is not None:
        logits = logits + dense_bias[:, None]
    logits = logits.masked_fill(~allowed, float("-inf"))
    out = flat + block.ls1(block.attn.out(logits.softmax(-1) @ val))
    return block.ffn(out).reshape(b, t, v, p, c)


def _time_of_token(t, v, p):
    return torch.arange(t).repeat_interleave(v * p)


# ---------------------------------------------------------------- landmark
def test_landmark_index_pattern():
    g = torch.Generator().manual_seed(0)
    b, ni, pp, k = 2, 3, 12, 4
    scores = torch.randn(b, ni, pp, generator=g)
    idx = landmark_index(scores, k, NS)
    p = NS + pp
    assert idx.shape == (b, ni * (NS + k))
    for bi in range(b):
        got = set(idx[bi].tolist())
        want = set()
        for i in range(ni):
            want |= {i * p + s for s in range(NS)}  # specials of every image
            top = scores[bi, i].argsort(descending=True)[:k]
            want |= {i * p + NS + int(j) for j in top}
        assert got == want
        assert len(idx[bi].tolist()) == len(got)  # no duplicate keys
    # K larger than the patch count clamps to all patches
    assert set(landmark_index(scores, 100, NS)[0].tolist()) == set(range(ni * p))


@pytest.mark.parametrize("with_bias", [False, True])
def test_landmark_all_patches_equals_dense(with_bias):
    block = _block()
    x, pos = _tokens(1, 3, 2, 2, 3)
    b, t, v, p, c = x.shape
    n = t * v * p
    bias = None
    if with_bias:
        g = torch.Generator().manual_seed(3)
        bias = LowRankBias(2 * torch.randn(b, n, 1, generator=g), torch.randn(b, n, 1, generator=g))
    with torch.no_grad():
        got = sparse_global_block(block, x, pos, "landmark", n_special=NS, landmark_k=p - NS, bias=bias)
        dense = block(x.reshape(b, n, c), pos.repeat(t * v, 1)[None], bias).reshape(x.shape)
    torch.testing.assert_close(got, dense, **TOL)


def test_landmark_subset_equals_explicit_mask():
    block = _block()
    x, pos = _tokens(1, 2, 2, 3, 3)
    b, t, v, p, c = x.shape
    g = torch.Generator().manual_seed(4)
    scores = torch.randn(b, t * v, p - NS, generator=g)
    k = 3
    idx = landmark_index(scores, k, NS)
    allowed = torch.zeros(t * v * p, t * v * p, dtype=torch.bool)
    allowed[:, idx[0]] = True
    n = t * v * p
    bias = LowRankBias(torch.randn(b, n, 1, generator=g), torch.randn(b, n, 1, generator=g))
    with torch.no_grad():
        got = sparse_global_block(block, x, pos, "landmark", n_special=NS, landmark_k=k, landmark_scores=scores)
        torch.testing.assert_close(got, explicit_masked_block(block, x, pos, allowed), **TOL)
        got_b = sparse_global_block(block, x, pos, "landmark", n_special=NS, landmark_k=k,
                                    landmark_scores=scores, bias=bias)
        torch.testing.assert_close(got_b, explicit_masked_block(block, x, pos, allowed, bias.dense()), **TOL)
        # without scores: documented saliency rule ||norm1(x)_p - mean_p norm1(x)|| per image
        h = block.norm1(x)[:, :, :, NS:].reshape(b, t * v, p - NS, c)
        sal = (h - h.mean(2, keepdim=True)).norm(dim=-1)
        torch.testing.assert_close(
            sparse_global_block(block, x, pos, "landmark", n_special=NS, landmark_k=k),
            sparse_global_block(block, x, pos, "landmark", n_special=NS, landmark_k=k, landmark_scores=sal),
            **TOL,
        )


# ---------------------------------------------------------------- dilated
@pytest.mark.parametrize("t", [1, 3, 8])
def test_dilated_time_index_pattern(t):
    tidx, valid = dilated_time_index(t, OFFSETS)
    assert tidx.shape == valid.shape == (t, len(OFFSETS))
    for ti in range(t):
        got = sorted(int(s) for s, ok in zip(tidx[ti], valid[ti]) if ok)
        want = sorted(ti + o for o in OFFSETS if 0 <= ti + o < t)
        assert got == want
        assert int(tidx[ti].min()) >= 0 and int(tidx[ti].max()) < t  # clamped, always gatherable


def test_dilated_equals_explicit_time_mask():
    block = _block()
    x, pos = _tokens(2, 8, 2, 1, 2)
    b, t, v, p, c = x.shape
    tt = _time_of_token(t, v, p)
    dt = tt[None, :] - tt[:, None]
    allowed = torch.zeros_like(dt, dtype=torch.bool)
    for o in OFFSETS:
        allowed |= dt == o
    g = torch.Generator().manual_seed(7)
    n = t * v * p
    bias = LowRankBias(torch.randn(b, n, 1, generator=g), torch.randn(b, n, 1, generator=g))
    with torch.no_grad():
        got = sparse_global_block(block, x, pos, "dilated", n_special=NS, offsets=OFFSETS)
        torch.testing.assert_close(got, explicit_masked_block(block, x, pos, allowed), **TOL)
        got_b = sparse_global_block(block, x, pos, "dilated", n_special=NS, offsets=OFFSETS, bias=bias)
        torch.testing.assert_close(got_b, explicit_masked_block(block, x, pos, allowed, bias.dense()), **TOL)


def test_dilated_query_depends_only_on_key_times():
    block = _block()
    x, pos = _tokens(1, 8, 2, 1, 2)
    with torch.no_grad():
        base = sparse_global_block(block, x, pos, "dilated", n_special=NS, offsets=OFFSETS)
        # query time 0 sees times {0, 1, 2, 4}; time 3 (and 5, 6, 7) is outside its key set
        for t_pert, in_set in [(3, False), (5, False), (7, False), (4, True), (2, True)]:
            x2 = x.clone()
            x2[:, t_pert] += torch.randn_like(x2[:, t_pert])
            out = sparse_global_block(block, x2, pos, "dilated", n_special=NS, offsets=OFFSETS)
            diff = (out[:, 0] - base[:, 0]).abs().max().item()
            if in_set:
                assert diff > 1e-3, f"time {t_pert} is in the key set of time 0 but has no effect"
            else:
                assert diff < 1e-6, f"time {t_pert} is not in the key set of time 0 but changed it by {diff}"


# ---------------------------------------------------------------- memory bank
def _memory_bank_reference(block, x, pos, memory):
    """Gather (memory queries attend to all tokens), then per image: block over [image, memory']."""
    b, t, v, p, c = x.shape
    flat = x.reshape(b, -1, c)
    pos_all = pos.repeat(t * v, 1)[None].expand(b, -1, -1)
    _, k, val = block.attn.project(block.norm1(flat), pos_all)
    mem = memory.expand(b, -1, -1)
    zeros = torch.zeros(b, mem.shape[1], 2, dtype=pos.dtype)
    qm, _, _ = block.attn.project(block.norm1(mem), zeros)
    att = (qm @ k.transpose(-1, -2) * qm.shape[-1] ** -0.5).softmax(-1) @ val
    mem2 = mem + block.ls1(block.attn.out(att))
    outs = []
    for i in range(t * v):
        xi = flat[:, i * p:(i + 1) * p]
        y = block(torch.cat([xi, mem2], 1), torch.cat([pos[None].expand(b, -1, -1), zeros], 1))
        outs.append(y[:, :p])
    return torch.stack(outs, 1).reshape(x.shape), mem2


def test_memory_bank_equals_gather_then_per_image_attention():
    block = _block()
    x, pos = _tokens(2, 3, 2, 2, 2)
    memory = 0.5 * torch.randn(1, 4, x.shape[-1], generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        got = sparse_global_block(block, x, pos, "memory_bank", n_special=NS, memory=memory)
        ref, _ = _memory_bank_reference(block, x, pos, memory)
    torch.testing.assert_close(got, ref, **TOL)


def test_memory_bank_other_images_only_through_memory():
    block = _block()
    x, pos = _tokens(1, 3, 2, 2, 2)
    memory = 0.5 * torch.randn(1, 4, x.shape[-1], generator=torch.Generator().manual_seed(9))
    x2 = x.clone()
    x2[:, 2, 1] += torch.randn_like(x2[:, 2, 1])  # perturb image (t=2, v=1) only
    with torch.no_grad():
        base = sparse_global_block(block, x, pos, "memory_bank", n_special=NS, memory=memory)
        pert = sparse_global_block(block, x2, pos, "memory_bank", n_special=NS, memory=memory)
        # image (0, 0) changes: information flows through the memory...
        assert (pert[:, 0, 0] - base[:, 0, 0]).abs().max() > 1e-4
        # ...and only through it: with the memory held at its unperturbed value, image (0, 0)'s
        # output from the perturbed input is exactly the unperturbed one.
        _, mem_base = _memory_bank_reference(block, x, pos, memory)
        b, t, v, p, c = x.shape
        zeros = torch.zeros(b, mem_base.shape[1], 2, dtype=pos.dtype)
        y = block(torch.cat([x2[:, 0, 0], mem_base], 1), torch.cat([pos[None], zeros], 1))[:, :p]
        torch.testing.assert_close(y, base[:, 0, 0], **TOL)


def test_sparse_errors():
    block = _block()
    x, pos = _tokens(1, 2, 1, 1, 1)
    with pytest.raises(ValueError, match="memory"):
        sparse_global_block(block, x, pos, "memory_bank", n_special=NS)
    with pytest.raises(ValueError, match="unknown sparse strategy"):
        sparse_global_block(block, x, pos, "bogus", n_special=NS)


# ---------------------------------------------------------------- aggregator level
def _images(t=3, v=2, seed=0):
    return torch.rand(1, t, v, 3, 28, 42, generator=torch.Generator().manual_seed(seed))


def _agg(cfg, seed=0):
    torch.manual_seed(seed)
    return Aggregator(cfg).eval()


@pytest.mark.parametrize("mode", ["tokens", "streams"])
def test_aggregator_flat_landmark_all_equals_dense_global(mode):
    """In the ``flat`` layout, View-SA *is* dense global attention over all T*V images, so a sparse
    ``landmark`` layer with K = all patches must reproduce it exactly, bias included (the sparse
    layers are also bias layers here, with nonzero lambdas)."""
    base = ModelConfig.preset("tiny").replace(
        mask={"mode": mode, "bias_layers": [3, 4, 5, 6, 7]},
    )
    n_patch = 2 * 3
    dense_cfg = base.replace(sparse={"strategy": "none"})
    sparse_cfg = base.replace(sparse={"strategy": "landmark", "landmark_k": n_patch})
    a, s = _agg(dense_cfg), _agg(sparse_cfg)
    s.load_state_dict(a.state_dict())
    for m in (a, s):
        m.mask_bias.set(lambda_pose=2.0, lambda_geo=1.0)
    imgs = _images()
    with torch.no_grad():
        oa, os_ = a.run(imgs, layout="flat"), s.run(imgs, layout="flat")
    for la, ls in zip(oa.pose_tokens + oa.geo_tokens, os_.pose_tokens + os_.geo_tokens):
        torch.testing.assert_close(ls, la, **TOL)


@pytest.mark.parametrize("strategy", ["landmark", "dilated", "memory_bank"])
def test_aggregator_sparse_layer_is_layer_output(strategy):
    """Factorized layout: layers before the sparse layer are untouched, the sparse layer's entry
    changes with the strategy, its view half equals ``sparse_global_block`` applied to its time half
    with that layer's own global block, and ``Aggregator.forward`` (what the heads read) returns it."""
    base = ModelConfig.preset("tiny")
    extra = {"dilated_offsets": [0, 1]} if strategy == "dilated" else {"landmark_k": 2}
    cfg = base.replace(sparse={"strategy": strategy, "layers": [6, 7], **extra})
    ref = _agg(base.replace(sparse={"strategy": "none"}))
    agg = _agg(cfg)
    agg.load_state_dict(ref.state_dict(), strict=False)  # memory tokens are extra
    imgs = _images()
    c = cfg.embed_dim
    with torch.no_grad():
        o_ref = ref.run(imgs, layout="factorized")
        o = agg.run(imgs, layout="factorized")
        for i in range(6):
            torch.testing.assert_close(o.geo_tokens[i], o_ref.geo_tokens[i], rtol=0, atol=0)
        for i in (6, 7):
            assert (o.geo_tokens[i] - o_ref.geo_tokens[i]).abs().max() > 1e-4
        e = o.geo_tokens[6]
        memory = agg.memory_tokens[0][None] if strategy == "memory_bank" else None
        pos = patch_positions(1, 2, 3, NS, torch.device("cpu"))[0]
        direct = sparse_global_block(
            agg.global_blocks[6], e[..., :c], pos, strategy, n_special=NS,
            landmark_k=cfg.sparse.landmark_k, offsets=cfg.sparse.dilated_offsets, memory=memory,
        )
        torch.testing.assert_close(e[..., c:], direct, **TOL)
        tokens, psi = agg(imgs)
        assert psi == NS
        for got, want in zip(tokens, o.geo_tokens):
            torch.testing.assert_close(got, want, rtol=0, atol=0)
