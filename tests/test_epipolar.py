"""Epipolar prior: fundamental matrices, the low-rank bias equals the explicit penalty, and it acts on View-SA."""
from __future__ import annotations

import math

import pytest
import torch

from vggt_mv.config import ModelConfig
from vggt_mv.model.aggregator import Aggregator
from vggt_mv.model.epipolar import EpipolarPrior, epipolar_bias, fundamental_matrices


def _rig(v: int = 3, t: int = 2, h: int = 42, w: int = 56) -> tuple[torch.Tensor, torch.Tensor]:
    """Cameras on an arc looking at the origin: intrinsic [1,T,V,3,3], extrinsic [1,T,V,3,4]."""
    ks, es = [], []
    for i in range(v):
        ang = math.radians(-30 + 30 * i)
        c = torch.tensor([3 * math.sin(ang), -0.3 * i, -3 * math.cos(ang)], dtype=torch.float64)
        z = -c / c.norm()
        x = torch.linalg.cross(torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64), z)
        x = x / x.norm()
        y = torch.linalg.cross(z, x)
        r = torch.stack([x, y, z])
        es.append(torch.cat([r, (-r @ c)[:, None]], 1))
        ks.append(torch.tensor([[50.0 + i, 0, w / 2], [0, 52.0, h / 2], [0, 0, 1]], dtype=torch.float64))
    k = torch.stack(ks)[None, None].expand(1, t, v, 3, 3)
    e = torch.stack(es)[None, None].expand(1, t, v, 3, 4)
    return k, e


def test_fundamental_matrices_satisfy_the_epipolar_constraint():
    k, e = _rig()
    f = fundamental_matrices(k, e)[0, 0]
    pts = torch.randn(20, 3, dtype=torch.float64) * 0.5
    proj = []
    for vi in range(3):
        cam = pts @ e[0, 0, vi, :, :3].T + e[0, 0, vi, :, 3]
        uv = cam @ k[0, 0, vi].T
        proj.append(uv / uv[:, 2:])
    for a in range(3):
        for b in range(3):
            if a != b:
                res = torch.einsum("ni,ij,nj->n", proj[b], f[a, b], proj[a])
                assert res.abs().max() < 1e-8


def test_low_rank_bias_equals_explicit_squared_distance():
    k, e = _rig(v=3, t=1)
    gh, gw, patch, ns = 3, 4, 14, 5
    prior = EpipolarPrior(k, e, strength=2.0, band=20.0)
    dense = epipolar_bias(prior, gh, gw, patch, ns).dense()[0]  # [V*P, V*P]
    f = fundamental_matrices(k, e)[0, 0]
    n = ns + gh * gw
    centres = [((c + 0.5) * patch, (r + 0.5) * patch) for r in range(gh) for c in range(gw)]
    expected = torch.zeros(3 * n, 3 * n, dtype=torch.float64)
    for a in range(3):
        for b in range(3):
            if a == b:
                continue
            for i, (ui, vi) in enumerate(centres):
                line = f[a, b] @ torch.tensor([ui, vi, 1.0], dtype=torch.float64)
                for j, (uj, vj) in enumerate(centres):
                    d = (line @ torch.tensor([uj, vj, 1.0], dtype=torch.float64)) / line[:2].norm()
                    expected[a * n + ns + i, b * n + ns + j] = -2.0 * (d / 20.0) ** 2
    torch.testing.assert_close(dense.double(), expected, rtol=1e-4, atol=1e-3)
    assert expected.abs().max() > 1.0  # the penalty is not trivially small


def test_prior_changes_view_attention_and_zero_strength_does_not():
    torch.manual_seed(0)
    cfg = ModelConfig.preset("tiny")
    cfg.mask.enabled = False
    agg = Aggregator(cfg).eval()
    k, e = _rig(v=3, t=2, h=28, w=42)
    images = torch.rand(1, 2, 3, 3, 28, 42)
    with torch.no_grad():
        base = agg.run(images, layout="factorized").geo_tokens[-1]
        off = agg.run(images, layout="factorized", epipolar=EpipolarPrior(k, e, strength=0.0)).geo_tokens[-1]
        on = agg.run(images, layout="factorized", epipolar=EpipolarPrior(k, e, strength=5.0, band=5.0)).geo_tokens
    torch.testing.assert_close(off, base)
    assert (on[-1] - base).abs().max() > 1e-3
    with pytest.raises(ValueError, match="factorized"):
        agg.run(images, layout="flat", epipolar=EpipolarPrior(k, e))
