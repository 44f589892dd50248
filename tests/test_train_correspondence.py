"""The auxiliary View-SA correspondence term: GT patch matches, the loss and its wiring."""
from __future__ import annotations

import math

import pytest
import torch

from vggt_mv.config import ModelConfig
from vggt_mv.data.synthetic import SyntheticSceneConfig, render_scene
from vggt_mv.model.vggt_mv import VGGTMV
from vggt_mv.train.correspondence import capture_view_inputs, correspondence_loss, patch_correspondences
from vggt_mv.train.data import normalize_scene
from vggt_mv.train.losses import LossConfig
from vggt_mv.train.trainer import TrainConfig, Trainer

H, W, PATCH = 56, 84, 14


@pytest.fixture(scope="module")
def batch() -> dict[str, torch.Tensor]:
    scene = render_scene(SyntheticSceneConfig(T=2, V=3, H=H, W=W, arc_deg=50), seed=501)
    d = normalize_scene(scene)
    d["ext_masks"] = torch.zeros_like(d["dynamic_mask"])
    d["ext_mask_on"] = torch.tensor(False)
    return {k: v[None] for k, v in d.items()}


def test_matches_point_at_the_same_3d_point(batch):
    key, ok = patch_correspondences(batch, PATCH)
    h, w = H // PATCH, W // PATCH
    assert key.shape == ok.shape == (1, 2, 3, 3, h * w)
    assert not ok[:, :, torch.arange(3), torch.arange(3)].any()  # never a view with itself
    assert ok.float().mean() > 0.3                               # the views overlap
    pts = batch["world_points"][:, :, :, PATCH // 2::PATCH, PATCH // 2::PATCH].reshape(1, 2, 3, h * w, 3)
    for a, c in ((0, 1), (2, 0), (1, 2)):
        m = ok[0, 0, a, c]
        matched = pts[0, 0, c][key[0, 0, a, c][m]]
        other = pts[0, 0, c][torch.randperm(h * w, generator=torch.Generator().manual_seed(0))[:int(m.sum())]]
        d = (pts[0, 0, a][m] - matched).norm(dim=-1).median()  # ~ half a patch's footprint apart
        d_random = (pts[0, 0, a][m] - other).norm(dim=-1).median()
        assert d < 0.15 and d < 0.3 * d_random, (a, c, float(d), float(d_random))


def test_occluded_points_are_not_matched(batch):
    hidden = dict(batch)
    depth = batch["depth"].clone()
    depth[:, :, 1] *= 0.5            # view 1 now "sees" a surface in front of every projected point
    hidden["depth"] = depth
    _, ok = patch_correspondences(hidden, PATCH)
    assert not ok[:, :, :, 1].any() and ok[:, :, :, 0].any()


def test_loss_is_low_only_when_attention_points_at_the_match(batch):
    key, ok = patch_correspondences(batch, PATCH)
    v, hw, psi, c = 3, key.shape[-1], 5, 8
    p = psi + hw

    pts = batch["world_points"][0, :, :, PATCH // 2::PATCH, PATCH // 2::PATCH].reshape(2, v, hw, 3)
    # q = [p, 1, -|p|^2/2], k = [p, -|p|^2/2, 1]: q_a.k_c = -|p_a - p_c|^2 / 2, highest at the same 3D point
    half_sq = -0.5 * (pts ** 2).sum(-1, keepdim=True)
    one = torch.ones_like(half_sq)
    q, k = torch.zeros(2, v, p, 5), torch.zeros(2, v, p, 5)
    q[:, :, psi:] = torch.cat([pts, one, half_sq], -1)
    k[:, :, psi:] = torch.cat([pts, half_sq, one], -1)

    class Exact(torch.nn.Module):
        def __init__(self, scale: float, shuffle: bool = False):
            super().__init__()
            self.norm1 = torch.nn.Identity()
            kk = k.roll(1, dims=2) if shuffle else k

            class Attn:
                num_heads = 1

                @staticmethod
                def project(_x, _pos):
                    return (q.reshape(2, 1, v * p, 5) * scale, kk.reshape(2, 1, v * p, 5) * 5 ** 0.5, None)
            self.attn = Attn()

    flat = torch.zeros(2, v * p, c)  # the block's input (only its shape matters to these blocks)
    good = correspondence_loss(Exact(200.0), flat, None, key, ok, psi)
    wrong = correspondence_loss(Exact(200.0, shuffle=True), flat, None, key, ok, psi)
    flat_attn = correspondence_loss(Exact(0.0), flat, None, key, ok, psi)
    assert float(flat_attn) == pytest.approx(math.log(hw), rel=1e-4)  # uniform over the hw keys
    assert good < 0.5 * flat_attn and wrong > good + 1.0, (float(good), float(wrong), float(flat_attn))
    with pytest.raises(ValueError, match="does not match"):
        correspondence_loss(Exact(1.0), flat[:, :-1], None, key, ok, psi)


def test_capture_hooks_see_view_blocks_and_are_removed(batch):
    torch.manual_seed(0)
    model = VGGTMV(ModelConfig.preset("tiny"))
    agg = model.aggregator
    with capture_view_inputs(agg, [1, 2]) as captured:
        model(batch["images"])
    assert [blk for blk, _, _ in captured] == [agg.global_blocks[1], agg.global_blocks[2]]
    x = captured[0][1]
    assert x.shape == (2, 3 * (agg.patch_start_idx + (H // PATCH) * (W // PATCH)), 64)  # [B*T, V*P, C]
    assert all(not blk._forward_pre_hooks for blk in agg.global_blocks)
    with pytest.raises(ValueError, match="out of range"):
        capture_view_inputs(agg, [8]).__enter__()


def test_trainer_adds_the_term_and_it_trains_the_view_attention(batch):
    cfg = TrainConfig(steps=10, timesteps=2, views=3, height=H, width=W, warmup=1, lr=2e-3, val_every=0,
                      threads=2, seed=0, loss=LossConfig(corr=1.0, corr_layers=[1]))
    tr = Trainer(cfg)
    first = tr.train_step(batch)
    assert "corr" in first and first["corr"] > 0
    grad_seen = tr.model.aggregator.global_blocks[1].attn.qkv.weight
    losses = [first["corr"]] + [tr.train_step(batch)["corr"] for _ in range(9)]
    assert min(losses[-3:]) < losses[0] - 0.1, losses
    assert grad_seen.grad is not None
    off = Trainer(TrainConfig(steps=1, timesteps=2, views=3, height=H, width=W, val_every=0, threads=2))
    assert "corr" not in off.train_step(batch)
