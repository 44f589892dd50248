"""Training that can work: the mask loss reaches the head, the cross-view term is right by geometry,
and each training recipe trains exactly the parameters it names (tiny sizes, CPU)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vggt_mv.config import ModelConfig
from vggt_mv.data.synthetic import SyntheticSceneConfig, render_scene
from vggt_mv.model.vggt_mv import VGGTMV
from vggt_mv.train.cross_view import cross_view_loss
from vggt_mv.train.data import SyntheticDynamicDataset
from vggt_mv.train.losses import LossConfig, compute_losses
from vggt_mv.train.recipes import module_key, parse_rule
from vggt_mv.train.trainer import TrainConfig, Trainer

T, V, H, W = 2, 2, 28, 42
DEMO_WEIGHTS = "assets/weights/tiny.safetensors"


@pytest.fixture(scope="module")
def batch() -> dict[str, torch.Tensor]:
    return SyntheticDynamicDataset(T, V, H, W, seed=0, ext_mask_prob=1.0).batch(1)


def small_cfg(**kw) -> TrainConfig:
    base = dict(steps=4, timesteps=T, views=V, height=H, width=W, warmup=1, val_every=0, log_every=1,
                ckpt_every=100, threads=2, ext_mask_prob=0.5, seed=3)
    base.update(kw)
    return TrainConfig(**base)


# ---------------------------------------------------------------------------------------- mask loss
@pytest.mark.parametrize("external", [False, True])
def test_mask_loss_reaches_the_head_not_the_fusion_gain(batch, external):
    torch.manual_seed(0)
    model = VGGTMV(ModelConfig.preset("tiny")).train()
    ext = batch["ext_masks"] if external else None  # the GT mask itself as external input
    out = model(batch["images"], ext_masks=ext)
    cfg = LossConfig(camera=0, depth=0, point=0, cross_view=0)
    terms = compute_losses(out, batch, cfg)
    terms["mask"].backward()
    head = dict(model.aggregator.spatial_mask_head.named_parameters())
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in head.values()), \
        {n: None if p.grad is None else float(p.grad.abs().sum()) for n, p in head.items()}
    gain = model.aggregator.mask_bias.external_gain.grad
    assert gain is None or float(gain) == 0.0  # the loss cannot be met by leaning on the external mask
    # and it is a BCE-with-logits on the head's own logit: recompute it independently
    logit = -out["mask_logit"]  # tiny: page4d head, logit_sign -1, feature gain outside the loss
    expect = torch.nn.functional.binary_cross_entropy_with_logits(
        logit, batch["dynamic_mask_patch"], pos_weight=torch.tensor(cfg.mask_pos_weight))
    assert float(terms["mask"].detach()) == pytest.approx(float(expect.detach()), rel=1e-6)


# ---------------------------------------------------------------------------------------- cross-view
@pytest.fixture(scope="module")
def gt_views():
    """Exact geometry of a rendered scene at the training size: depth [1,T,V,H,W], extrinsic, intrinsic."""
    s = render_scene(SyntheticSceneConfig(T=2, V=2, H=126, W=168, n_moving=2, n_static_boxes=3, arc_deg=50), seed=2)
    as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).double()[None]  # noqa: E731
    return as_t(s.depth), as_t(s.extrinsic), as_t(s.intrinsic)


def _rotate_view(ext: torch.Tensor, view: int, deg: float) -> torch.Tensor:
    a = math.radians(deg)
    rot = torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]], dtype=ext.dtype)
    out = ext.clone()
    out[:, :, view] = rot @ ext[:, :, view]
    return out


def test_cross_view_is_zero_on_exact_geometry_and_grows_with_a_camera_error(gt_views):
    depth, ext, intr = gt_views
    loss, count = cross_view_loss(depth, ext, intr)
    assert float(count) > 0.5 * depth[0, 0].numel()  # most pixels are compared
    assert float(loss) <= 1e-4
    # scale invariance: the same geometry at another scale has the same loss
    scaled = torch.cat([ext[..., :3], 3.0 * ext[..., 3:]], -1)
    assert float(cross_view_loss(3.0 * depth, scaled, intr)[0]) == pytest.approx(float(loss), rel=1e-6)
    errs = [float(cross_view_loss(depth, _rotate_view(ext, 1, d), intr)[0]) for d in (0.5, 1.0, 2.0)]
    assert float(loss) < errs[0] < errs[1] < errs[2], (float(loss), errs)
    # never "same pixel = same point": identical depth maps of two different cameras are not consistent
    same = depth[:, :, :1].expand_as(depth).clone()
    assert float(cross_view_loss(same, ext, intr)[0]) > 10 * errs[0]


def _occluded_in_other_view(depth, ext, intr, t=0, a=0, b=1, margin=3):
    """Pixels of view a whose point is hidden behind view b's surface (nearest-pixel test with GT),
    eroded by ``margin`` so the region stays away from its edges."""
    from vggt_mv.train.data import unproject_depth

    d = depth[0, t]
    pts = unproject_depth(d[a], intr[0, t, a], ext[0, t, a])  # [H,W,3]
    cam = pts @ ext[0, t, b, :3, :3].T + ext[0, t, b, :3, 3]
    z = cam[..., 2]
    u = (intr[0, t, b, 0, 0] * cam[..., 0] / z + intr[0, t, b, 0, 2]).round().long()
    v = (intr[0, t, b, 1, 1] * cam[..., 1] / z + intr[0, t, b, 1, 2]).round().long()
    h, w = d.shape[-2:]
    inside = (u >= 0) & (u < w) & (v >= 0) & (v < h) & (z > 0) & (d[a] > 0)
    seen = d[b][v.clamp(0, h - 1), u.clamp(0, w - 1)]
    hidden = inside & (seen > 0) & (z > 1.1 * seen)
    k = 2 * margin + 1
    eroded = -torch.nn.functional.max_pool2d(-hidden.double()[None, None], k, 1, margin)[0, 0] > 0.5
    return eroded


def test_cross_view_ignores_the_predicted_depth_of_occluded_regions(gt_views):
    depth, ext, intr = gt_views
    region = _occluded_in_other_view(depth, ext, intr)
    assert int(region.sum()) > 50, int(region.sum())
    base = cross_view_loss(depth, ext, intr)
    g = torch.Generator().manual_seed(0)
    perturbed = depth.clone()
    factor = 1.0 + 0.3 * torch.rand(region.shape, generator=g, dtype=depth.dtype)  # further back: still hidden
    perturbed[0, 0, 0] = torch.where(region, depth[0, 0, 0] * factor, depth[0, 0, 0])
    after = cross_view_loss(perturbed, ext, intr)
    assert float(after[1]) == float(base[1])
    assert float(after[0]) == pytest.approx(float(base[0]), rel=1e-9, abs=1e-12)
    # the same perturbation on visible pixels is seen
    visible = (~region) & (depth[0, 0, 0] > 0)
    moved = depth.clone()
    moved[0, 0, 0] = torch.where(visible, depth[0, 0, 0] * factor, depth[0, 0, 0])
    assert float(cross_view_loss(moved, ext, intr)[0]) > 10 * float(base[0])


def test_cross_view_has_a_gradient_into_depth_and_cameras(gt_views):
    depth, ext, intr = (x[:, :1].float() for x in gt_views)
    depth = (depth * 1.05).requires_grad_()  # a slightly wrong prediction
    ext = _rotate_view(ext, 1, 1.0).requires_grad_()
    loss, _ = cross_view_loss(depth, ext, intr)
    loss.sum().backward()
    assert float(depth.grad.abs().sum()) > 0 and float(ext.grad[:, :, 1].abs().sum()) > 0


def test_cross_view_applies_to_clips_without_gt_depth_only_by_default(batch):
    from vggt_mv.weights.loader import load_model

    model, _ = load_model("tiny", checkpoint=DEMO_WEIGHTS)  # cameras that see each other
    with torch.no_grad():
        out = model(batch["images"])
    assert "cross_view" not in compute_losses(out, batch, LossConfig())
    no_gt = dict(batch, valid=torch.zeros_like(batch["valid"]))
    terms = compute_losses(out, no_gt, LossConfig())
    assert float(terms["cross_view"]) > 0 and float(terms["cross_view_px"]) > 0
    assert "cross_view" in compute_losses(out, batch, LossConfig(cross_view_on="all"))


def test_a_batch_loss_is_the_mean_of_its_samples_losses():
    """What makes DDP/FSDP gradient averaging over equal-size batches equal one process on the union."""
    from vggt_mv.weights.loader import load_model

    model, _ = load_model("tiny", checkpoint=DEMO_WEIGHTS)
    b = SyntheticDynamicDataset(T, V, 56, 84, seed=5, ext_mask_prob=0.5).batch(2)
    b["valid"][1, :, :, :20] = False  # different valid counts per sample
    b["has_mask"] = torch.tensor([True, False])
    with torch.no_grad():
        out = model(b["images"])
    cfg = LossConfig(cross_view_on="all")
    whole = compute_losses(out, b, cfg)
    parts = [compute_losses({k: v[i:i + 1] if k != "pose_enc_list" else v[:, i:i + 1] for k, v in out.items()},
                            {k: v[i:i + 1] for k, v in b.items()}, cfg) for i in range(2)]
    for key in ("loss", "camera", "depth", "point", "mask", "cross_view", "depth_grad"):
        assert float(whole[key]) == pytest.approx((float(parts[0][key]) + float(parts[1][key])) / 2, rel=1e-5), key
    assert float(parts[1]["mask"]) == 0.0  # no mask: no mask loss for that sample


# ---------------------------------------------------------------------------------------- recipes
def _expected_modules(recipe: str, depth: int = 8, separate: bool = False) -> set[str]:
    blocks = lambda kind, idx: {f"aggregator.{kind}_blocks.{i}" for i in idx}  # noqa: E731
    if recipe == "page4d":  # 10..19 of 24 -> 3..6 of 8
        return blocks("frame", range(3, 7)) | blocks("global", range(3, 7)) | {"aggregator.spatial_mask_head"}
    if recipe == "stage1":  # mask head, lambdas/gains, blocks 8..15 of 24 -> 2..5, plus the pose stream
        base = ({"aggregator.spatial_mask_head", "aggregator.mask_bias", "aggregator.keypoint_bias"}
                | blocks("frame", range(2, 6)) | blocks("global", range(2, 6)))
        if separate:
            return base | blocks("pose_frame", range(5)) | blocks("pose_global", range(5))
        return base | blocks("frame", range(3, 8)) | blocks("global", range(3, 8))  # fork layer 3 on
    if recipe == "heads":
        return {"camera_head", "depth_head", "point_head"}
    raise AssertionError(recipe)


@pytest.mark.parametrize("recipe,separate", [("page4d", False), ("stage1", False), ("stage1", True),
                                             ("heads", False), ("all", False)])
def test_each_recipe_trains_exactly_what_it_names(batch, recipe, separate):
    mc = ModelConfig.preset("tiny")
    mc.mask.separate_stream_blocks = separate
    tr = Trainer(small_cfg(train_recipe=recipe, steps=2, warmup=0), model_config=mc)
    tr.train_step(batch)
    named = dict(tr.model.named_parameters())
    trained = {n for n, p in named.items() if p.requires_grad}
    modules = {module_key(n) for n in trained}
    if recipe == "all":
        assert trained == set(named)
    else:
        assert modules == _expected_modules(recipe, separate=separate), sorted(modules)
    # gradients there (nonzero in every trained module), None elsewhere
    # DINOv2's masked-image token; λ_kpt acts on sparse layers only (tiny has none)
    unused_by_forward = {"aggregator.patch_embed.mask_token", "aggregator.keypoint_bias.lambda_kpt",
                         "aggregator.keypoint_bias.lambda_kpt_pose"}
    for n, p in named.items():
        assert (p.grad is not None) == (n in trained and n not in unused_by_forward), n
    for m in {module_key(n) for n in trained - unused_by_forward}:
        assert any(float(named[n].grad.abs().sum()) > 0 for n in trained - unused_by_forward if module_key(n) == m), m
    # optimizer state for exactly those parameters
    state_ids = {id(p) for p in tr.optimizer.state}
    assert state_ids == {id(named[n]) for n in trained - unused_by_forward}
    # frozen modules stay in eval mode; trained ones train
    for m in tr.model.modules():
        params = list(m.parameters())
        if params:
            assert m.training == any(p.requires_grad for p in params)
    if recipe == "page4d":  # PAGE-4D's learning rates (before the schedule: warmup 0, step 0)
        lrs = {module_key(n): v for n, v in tr.trained_lrs.items()}
        assert lrs["aggregator.frame_blocks.3"] == 1e-5 and lrs["aggregator.spatial_mask_head"] == 2e-5


def test_trainable_and_frozen_globs_later_wins_with_group_lr(batch):
    rules = [parse_rule("depth_head.*", False).__dict__,
             parse_rule("depth_head.scratch.output_conv2.*=1e-3", True).__dict__]
    tr = Trainer(small_cfg(train_recipe="heads", rules=rules, steps=2, warmup=0))
    trained = {n for n, p in tr.model.named_parameters() if p.requires_grad}
    assert {module_key(n) for n in trained} == {"camera_head", "depth_head", "point_head"}
    depth = {n for n in trained if n.startswith("depth_head.")}
    assert depth and all(n.startswith("depth_head.scratch.output_conv2.") for n in depth)
    assert {tr.trained_lrs[n] for n in depth} == {1e-3}
    group_lrs = sorted(g["base_lr"] for g in tr.optimizer.param_groups)
    assert 1e-3 in group_lrs and tr.cfg.lr in group_lrs
    with pytest.raises(ValueError, match="matches no parameter"):
        Trainer(small_cfg(rules=[parse_rule("nothing.here.*", True).__dict__]))
    for text, trains, msg in (("x.*=fast", True, "must be a number"), ("x.*=1e-4", False, "no learning rate"),
                              ("=1e-4", True, "expected a parameter-name glob")):
        with pytest.raises(ValueError, match=msg):
            parse_rule(text, trains)


def test_init_leaves_new_modules_at_init_only_when_they_train(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    sd = VGGTMV(ModelConfig.preset("tiny")).state_dict()
    vggt_like = {k: v.contiguous() for k, v in sd.items()
                 if not k.startswith(("aggregator.spatial_mask_head.", "aggregator.mask_bias."))}
    path = tmp_path / "no_mask_head.safetensors"
    save_file(vggt_like, str(path))
    with pytest.raises(ValueError, match="leaves them frozen at random init.*spatial_mask_head"):
        Trainer(small_cfg(init=str(path), train_recipe="heads"))
    tr = Trainer(small_cfg(init=str(path), train_recipe="stage1"))  # stage1 trains the new mask head
    got = tr.model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in vggt_like.items())  # everything else from the file
    heads_plus = [parse_rule("aggregator.spatial_mask_head.*", True).__dict__,
                  parse_rule("aggregator.mask_bias.*", True).__dict__]
    Trainer(small_cfg(init=str(path), train_recipe="heads", rules=heads_plus))


# ---------------------------------------------------------------------------------------- fine-tuning
@pytest.fixture(scope="module")
def sample_clip() -> dict[str, torch.Tensor]:
    """One fixed clip of the bundled sample read through the dump-layout reader (2 timesteps x 3 views)."""
    from vggt_mv.data.mixture import ClipConfig, MixtureData

    clip = ClipConfig(timesteps=(2, 2), views=(3, 3), sizes=[(56, 70)], ext_mask_prob=0.0)
    return MixtureData(["dump:assets/sample"], clip).batch_at(seed=0, step=0, batch_size=1)


@pytest.mark.parametrize("recipe", ["page4d", "stage1", "heads", "all"])
def test_finetuning_the_demo_weights_on_one_clip_lowers_the_loss(sample_clip, recipe):
    cfg = small_cfg(init=DEMO_WEIGHTS, train_recipe=recipe, steps=30, warmup=0, lr=2e-4)
    tr = Trainer(cfg)
    losses = [tr.train_step(sample_clip)["loss"] for _ in range(30)]
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first, (recipe, losses)
