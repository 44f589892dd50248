"""Issue 20: gate fusion starts as scalar fusion (a_f = b_f = 1); memory_bank applies the mask bias
on patch keys exactly like explicit logits."""
from __future__ import annotations

import pytest
import torch

from test_sparse_attention import NS, _block, _memory_bank_reference, _tokens
from vggt_mv.config import ModelConfig
from vggt_mv.layers import LowRankBias
from vggt_mv.layers.sparse_attention import sparse_global_block
from vggt_mv.model.mask_head import Fin10MaskHead, FusionGate, PageMaskHead
from vggt_mv.model.vggt_mv import VGGTMV

TOL = dict(rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- gate fusion
@pytest.mark.parametrize("head", [PageMaskHead(16, 8), Fin10MaskHead(16)])
def test_gate_initialised_equals_scalar_fusion(head):
    g = torch.Generator().manual_seed(0)
    logit = 3 * torch.randn(2, 3, 12, generator=g)
    ext = torch.rand(2, 3, 12, generator=g)
    gate = FusionGate(8)
    one = torch.tensor(1.0)
    for e in (ext, None):
        scalar = head.probability(logit, -1.0, one, e, one)
        gated = head.probability(logit, -1.0, one, e, one, gate=gate)
        assert (gated - scalar).abs().max() <= 1e-6
    # the gate really is in the path: a trained (perturbed) gate changes m
    with torch.no_grad():
        gate.mlp[2].weight.normal_(generator=g)
    assert (head.probability(logit, -1.0, one, ext, one, gate=gate) - head.probability(logit, -1.0, one, ext, one)).abs().max() > 1e-3


def test_gate_keys_only_when_asked_and_model_equals_scalar_at_init():
    tiny = ModelConfig.preset("tiny")
    gated_cfg = tiny.replace(mask={"fusion": "gate"})
    torch.manual_seed(0)
    scalar = VGGTMV(tiny).eval()
    gated = VGGTMV(gated_cfg).eval()
    gate_keys = {k for k in gated.state_dict() if k.startswith("aggregator.mask_bias.gate.")}
    assert gate_keys and not any(".gate." in k for k in scalar.state_dict())
    for p in ("vggt", "page4d", "page4d_fin10", "vggt_mv", "vggt_mv_fin10"):
        assert ModelConfig.preset(p).mask.fusion == "scalar"
    missing, unexpected = gated.load_state_dict(scalar.state_dict(), strict=False)
    assert set(missing) == gate_keys  # the gate replaces the two learnable gains
    assert set(unexpected) == {"aggregator.mask_bias.feature_gain", "aggregator.mask_bias.external_gain"}
    images = torch.rand(1, 2, 2, 3, 28, 42, generator=torch.Generator().manual_seed(1))
    masks = torch.rand(1, 2, 2, 28, 42, generator=torch.Generator().manual_seed(2))
    for m in (scalar, gated):
        m.set_lambdas(lambda_pose=1.5, lambda_geo=0.7)
    with torch.no_grad():
        a, b = scalar(images, masks), gated(images, masks)
    for k in ("dynamic_mask", "pose_enc", "depth"):
        assert (a[k] - b[k]).abs().max() <= 1e-6, k


# ---------------------------------------------------------------- memory_bank bias
def _memory_bank_with_dense_bias(block, x, pos, memory, bias: LowRankBias):
    """Gather as before (memory queries: no bias), then per image: explicit softmax over
    [image keys, memory keys] with the dense bias row_i . key_j on the image's own keys only."""
    b, t, v, p, c = x.shape
    ni = t * v
    flat = x.reshape(b, -1, c)
    pos_all = pos.repeat(ni, 1)[None].expand(b, -1, -1)
    q, k, val = block.attn.project(block.norm1(flat), pos_all)
    _, mem2 = _memory_bank_reference(block, x, pos, memory)  # the gather step, as in test_sparse_attention
    zeros = torch.zeros(b, mem2.shape[1], 2, dtype=pos.dtype)
    _, km, vm = block.attn.project(block.norm1(mem2), zeros)
    dense = bias.dense()  # [B, N, N]
    outs = []
    for i in range(ni):
        sl = slice(i * p, (i + 1) * p)
        qi, ki, vi = q[:, :, sl], torch.cat([k[:, :, sl], km], 2), torch.cat([val[:, :, sl], vm], 2)
        logits = qi @ ki.transpose(-1, -2) * qi.shape[-1] ** -0.5
        extra = torch.cat([dense[:, sl, sl], torch.zeros(b, p, km.shape[2])], -1)
        o = (logits + extra[:, None]).softmax(-1) @ vi
        outs.append(block.attn.out(o))
    out = flat + block.ls1(torch.cat(outs, 1))
    return block.ffn(out).reshape(x.shape)


def test_memory_bank_bias_equals_explicit_logits():
    block = _block()
    x, pos = _tokens(2, 3, 2, 2, 2)
    n = 3 * 2 * x.shape[3]
    g = torch.Generator().manual_seed(4)
    memory = 0.5 * torch.randn(1, 4, x.shape[-1], generator=g)
    key = torch.randn(2, n, 1, generator=g)
    key.view(2, 6, -1, 1)[:, :, :NS] = 0  # mask bias: special keys get none
    bias = LowRankBias(3 * torch.randn(2, n, 1, generator=g), key)
    with torch.no_grad():
        got = sparse_global_block(block, x, pos, "memory_bank", n_special=NS, memory=memory, bias=bias)
        ref = _memory_bank_with_dense_bias(block, x, pos, memory, bias)
        plain = sparse_global_block(block, x, pos, "memory_bank", n_special=NS, memory=memory)
    torch.testing.assert_close(got, ref, **TOL)
    assert (got - plain).abs().max() > 1e-3  # the bias has an effect (it was 0.0 before issue 20)


def test_memory_bank_layer_responds_to_lambdas_in_the_model():
    cfg = ModelConfig.preset("tiny").replace(
        mask={"mode": "tokens", "bias_layers": [3, 4, 5, 6, 7]}, sparse={"strategy": "memory_bank", "layers": [6, 7]}
    )
    torch.manual_seed(0)
    model = VGGTMV(cfg).eval()
    images = torch.rand(1, 2, 2, 3, 28, 42, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        base = model.aggregator.run(images, layout="factorized")
        model.set_lambdas(lambda_pose=3.0)
        # bias only in the sparse layers: switch it off elsewhere by restricting bias layers
        model.aggregator.bias_layers = frozenset({6, 7})
        out = model.aggregator.run(images, layout="factorized")
    for i in range(6):
        torch.testing.assert_close(out.geo_tokens[i], base.geo_tokens[i], rtol=0, atol=0)
    assert (out.geo_tokens[6] - base.geo_tokens[6]).abs().max() > 1e-4
