"""The camera-attention-mass diagnostic: lambda_pose lowers the mass on dynamic patches, only where it acts."""
from __future__ import annotations

import pytest
import torch

from vggt_mv.config import ModelConfig
from vggt_mv.eval.attention_mass import camera_attention_mass
from vggt_mv.model.vggt_mv import VGGTMV


def test_lambda_pose_lowers_pose_stream_mass_only():
    torch.manual_seed(0)
    cfg = ModelConfig.preset("tiny")
    model = VGGTMV(cfg).eval()
    images = torch.rand(1, 2, 2, 3, 28, 42)
    model.set_lambdas(lambda_pose=4.0, lambda_geo=0.0)
    rows = camera_attention_mass(model, images)
    assert {r["layer"] for r in rows} == set(cfg.mask.bias_layers)
    pose = [r for r in rows if r["stream"] == "pose"]
    geo = [r for r in rows if r["stream"] == "geo"]
    assert len(pose) == len(geo) == len(cfg.mask.bias_layers)
    for r in pose:
        assert r["mass_with_bias"] < r["mass_without_bias"] - 1e-4
    for r in geo:  # lambda_geo = 0: no bias in the geo stream
        assert r["mass_with_bias"] == pytest.approx(r["mass_without_bias"], abs=1e-7)


def test_needs_a_mask_head():
    cfg = ModelConfig.preset("tiny")
    cfg.mask.enabled = False
    with pytest.raises(ValueError, match="no dynamic-mask head"):
        camera_attention_mass(VGGTMV(cfg), torch.rand(1, 1, 2, 3, 28, 28))
