"""Aggregator parity with the VGGT / PAGE-4D / fin10 reference fixtures (encoder + all 24 layers)."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from conftest import reference_case
from vggt_mv.config import ModelConfig
from vggt_mv.model.aggregator import Aggregator

TOL = dict(rtol=1e-4, atol=1e-4)


def _load(case: str, **mask_overrides):
    root = reference_case(case)
    cfg = ModelConfig.from_json(root / "model_config.json")
    for k, v in mask_overrides.items():
        setattr(cfg.mask, k, v)
    agg = Aggregator(cfg).eval()
    sd = torch.load(root / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]
    own = {k[len("aggregator."):]: v.float() for k, v in sd.items() if k.startswith("aggregator.")}
    agg.load_state_dict(own, strict=True)
    return root, agg


@pytest.mark.parametrize(
    "case,expected,overrides",
    [
        ("vggt_tiny", "expected", {}),
        ("page4d_tiny_mask", "expected", {}),
        ("page4d_tiny_mask", "expected_alpha0", {"lambda_pose": 0.0}),
        ("fin10_tiny", "expected", {}),
        ("fin10_tiny", "expected_nomask", {"lambda_pose": 0.0}),
    ],
)
def test_tokens_match_reference(case, expected, overrides):
    root, agg = _load(case, **overrides)
    images = load_file(root / "inputs.safetensors")["images"]
    exp = load_file(root / f"{expected}.safetensors")
    with torch.no_grad():
        x = (images.flatten(0, 1) - agg._resnet_mean) / agg._resnet_std
        torch.testing.assert_close(agg.patch_embed(x), exp["dino_patch_tokens"], **TOL)
        tokens, psi = agg(images)
    assert psi == int(exp["patch_start_idx"])
    layers = [k for k in exp if k.startswith("tokens_layer_")]
    assert len(layers) >= 6
    for k in layers:
        torch.testing.assert_close(tokens[int(k.rsplit("_", 1)[1])], exp[k], **TOL, msg=k)


def test_page4d_mask_values():
    root, agg = _load("page4d_tiny_mask")
    images = load_file(root / "inputs.safetensors")["images"]
    exp = load_file(root / "expected.safetensors")
    with torch.no_grad():
        out = agg.run(images[:, :, None], five_d=True)
    # PAGE stores sigmoid(z') - 0.5 = 0.5 - m in our convention (m = P(dynamic)).
    torch.testing.assert_close(0.5 - out.dynamic_mask[:, :, 0], exp["mask_m"], **TOL)


def test_fin10_mask_terms():
    root, agg = _load("fin10_tiny")
    images = load_file(root / "inputs.safetensors")["images"]
    exp = load_file(root / "expected.safetensors")
    head = agg.spatial_mask_head
    torch.testing.assert_close(head.alpha().detach(), exp["mask_alpha"], **TOL)
    torch.testing.assert_close(head.tau().detach(), exp["mask_tau"], **TOL)
    with torch.no_grad():
        out = agg.run(images[:, :, None], five_d=True)
        m = out.dynamic_mask[:, :, 0]
        z = out.mask_logit[:, :, 0]
    torch.testing.assert_close(z, exp["mask_logit"], **TOL)
    torch.testing.assert_close(torch.sigmoid(-z / head.tau()), exp["mask_suppress"], **TOL)
    # the head's key bias c_j = -0.5 * m_j on patch keys, 0 on the 5 special keys of each frame
    b, s = m.shape[:2]
    key_bias = torch.cat([torch.zeros(b, s, 5), -0.5 * m.reshape(b, s, -1)], -1).reshape(b, -1)
    torch.testing.assert_close(key_bias, exp["mask_key_bias"], **TOL)
