"""DESIGN §3 model invariants, tested at the aggregator level (random-init ``tiny`` models, 28x42 images).

(a) 6-D input with T=1 equals the 5-D path on the V images; (b) all lambdas 0, no sparse layer:
``streams`` == ``tokens`` == mask off; lambdas change what they should and only that; the external
mask moves m the right way; input validation; config I/O and validation.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vggt_mv.config import ModelConfig
from vggt_mv.model.aggregator import Aggregator

TOL = dict(rtol=1e-5, atol=1e-5)
EXACT = dict(rtol=1e-6, atol=1e-6)
REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference"
H, W, GH, GW = 28, 42, 2, 3
FIRST_BIAS = 3  # tiny: mask_layer 2, bias_layers [3, 4, 5]


def _images(t=3, v=2, seed=0):
    return torch.rand(1, t, v, 3, H, W, generator=torch.Generator().manual_seed(seed))


def _agg(cfg: ModelConfig, seed: int = 0, sharpen_mask: bool = True) -> Aggregator:
    torch.manual_seed(seed)
    agg = Aggregator(cfg).eval()
    if sharpen_mask and cfg.mask.enabled:
        # Random init gives m in ~[0.46, 0.52]: scale the mask head's last conv so m spans a wide range
        # and lambda effects are far above float noise.
        with torch.no_grad():
            agg.spatial_mask_head.head0[-1].weight.mul_(30.0)
    return agg


def _assert_lists(a, b, tol=TOL, layers=None):
    layers = range(len(a)) if layers is None else layers
    for i in layers:
        torch.testing.assert_close(a[i], b[i], **tol, msg=lambda m, i=i: f"layer {i}: {m}")


def _differs(a, b, thresh=1e-4) -> bool:
    return bool((a - b).abs().max() > thresh)


# ---------------------------------------------------------------- (a) T=1 6-D == 5-D
@pytest.mark.parametrize("sparse", ["none", "dilated"])
def test_T1_factorized_equals_5d(sparse):
    cfg = ModelConfig.preset("tiny").replace(sparse={"strategy": sparse})
    agg = _agg(cfg)
    # nonzero lambdas in both Time-SA and View-SA so the bias path is covered too
    agg.mask_bias.set(lambda_pose=2.0, lambda_geo=1.0, lambda_pose_t=1.0, lambda_geo_t=-1.0)
    imgs6 = _images(t=1, v=3)
    imgs5 = imgs6[:, 0]  # [B, S=V, 3, H, W]
    with torch.no_grad():
        o6 = agg.run(imgs6, layout="factorized")
        o5 = agg.run(imgs5[:, :, None], five_d=True)
        tokens5, psi = agg(imgs5)
    assert psi == 5 and len(o6.pose_tokens) == cfg.depth
    # 5-D entries are [B,S,1,P,2C]; 6-D T=1 entries are [B,1,V,P,2C]: same images, same order
    _assert_lists([e[:, :, 0] for e in o5.pose_tokens], [e[:, 0] for e in o6.pose_tokens])
    _assert_lists([e[:, :, 0] for e in o5.geo_tokens], [e[:, 0] for e in o6.geo_tokens])
    _assert_lists(tokens5, [e[:, 0] for e in o6.geo_tokens])
    torch.testing.assert_close(o5.dynamic_mask[:, :, 0], o6.dynamic_mask[:, 0], **TOL)
    # the streams really differ here (so comparing both lists is not vacuous)
    assert _differs(o6.pose_tokens[-1], o6.geo_tokens[-1])


def test_T1_model_equals_5d():
    vm = pytest.importorskip("vggt_mv.model.vggt_mv")
    cfg = ModelConfig.preset("tiny")
    torch.manual_seed(0)
    model = vm.VGGTMV(cfg).eval()
    model.set_lambdas(lambda_pose=1.0, lambda_geo=0.5)
    imgs6 = _images(t=1, v=2)
    with torch.no_grad():
        o6, o5 = model(imgs6), model(imgs6[:, 0])
    for key, val in o5.items():
        if isinstance(val, torch.Tensor) and key in o6 and key != "pose_enc_list":
            torch.testing.assert_close(o6[key][:, 0], val, **TOL, msg=lambda m, k=key: f"{k}: {m}")


# ---------------------------------------------------------------- (b) lambda 0: streams == tokens
@pytest.mark.parametrize("grad", [False, True])
def test_streams_equal_tokens_at_lambda_zero(grad):
    base = ModelConfig.preset("tiny")
    assert base.sparse.strategy == "none"
    streams = _agg(base.replace(mask={"mode": "streams"}))
    tokens = _agg(base.replace(mask={"mode": "tokens"}))
    off = _agg(base.replace(mask={"enabled": False}))
    imgs = _images()
    with torch.set_grad_enabled(grad):  # grad on: learnable lambdas make the (zero) bias "active"
        os_ = streams.run(imgs, layout="factorized")
        ot = tokens.run(imgs, layout="factorized")
        oo = off.run(imgs, layout="factorized")
    assert ot.pose_tokens is ot.geo_tokens or all(torch.equal(a, b) for a, b in zip(ot.pose_tokens, ot.geo_tokens))
    _assert_lists(os_.pose_tokens, ot.geo_tokens, EXACT)
    _assert_lists(os_.geo_tokens, ot.geo_tokens, EXACT)
    _assert_lists(oo.geo_tokens, ot.geo_tokens, EXACT)  # mask on with lambda 0 == plain VGGT numerics


# ---------------------------------------------------------------- lambdas change what they should
@pytest.fixture(scope="module")
def streams_runs():
    cfg = ModelConfig.preset("tiny")  # streams, bias_blocks global+frame
    agg = _agg(cfg)
    imgs = _images()
    runs = {}
    with torch.no_grad():
        for name, lam in [("base", {}), ("pose", {"lambda_pose": 3.0}), ("geo", {"lambda_geo": 3.0}),
                          ("pose_t", {"lambda_pose_t": 3.0}), ("geo_t", {"lambda_geo_t": 3.0})]:
            agg.mask_bias.set(**{"lambda_pose": 0.0, "lambda_geo": 0.0, "lambda_pose_t": 0.0,
                                 "lambda_geo_t": 0.0, **lam})
            runs[name] = agg.run(imgs, layout="factorized")
    return runs


@pytest.mark.parametrize("which,changed,unchanged", [
    ("pose", "pose_tokens", "geo_tokens"), ("geo", "geo_tokens", "pose_tokens"),
    ("pose_t", "pose_tokens", "geo_tokens"), ("geo_t", "geo_tokens", "pose_tokens"),
])
def test_streams_lambda_affects_only_its_stream(streams_runs, which, changed, unchanged):
    base, run = streams_runs["base"], streams_runs[which]
    depth = len(base.pose_tokens)
    _assert_lists(getattr(run, unchanged), getattr(base, unchanged), EXACT)
    _assert_lists(getattr(run, changed), getattr(base, changed), EXACT, layers=range(FIRST_BIAS))
    for i in range(FIRST_BIAS, depth):
        assert _differs(getattr(run, changed)[i], getattr(base, changed)[i]), f"layer {i} unchanged"
    torch.testing.assert_close(run.mask_logit, base.mask_logit, rtol=0, atol=0)  # mask precedes the bias


def test_global_lambda_leaves_time_half_of_first_bias_layer():
    """lambda_pose acts in View-SA only: at the first bias layer the Time-SA half is unchanged, the
    View-SA half changes."""
    cfg = ModelConfig.preset("tiny").replace(mask={"mode": "tokens"})
    agg = _agg(cfg)
    imgs = _images()
    c = cfg.embed_dim
    with torch.no_grad():
        base = agg.run(imgs, layout="factorized")
        agg.mask_bias.set(lambda_pose=3.0)
        run = agg.run(imgs, layout="factorized")
    _assert_lists(run.geo_tokens, base.geo_tokens, EXACT, layers=range(FIRST_BIAS))
    torch.testing.assert_close(run.geo_tokens[FIRST_BIAS][..., :c], base.geo_tokens[FIRST_BIAS][..., :c], **EXACT)
    assert _differs(run.geo_tokens[FIRST_BIAS][..., c:], base.geo_tokens[FIRST_BIAS][..., c:])
    for i in range(FIRST_BIAS, cfg.depth):
        assert _differs(run.geo_tokens[i], base.geo_tokens[i])


@pytest.mark.parametrize("blocks,expect_change", [(["global"], False), (["global", "frame"], True)])
@pytest.mark.parametrize("mode", ["tokens", "streams"])
def test_time_lambdas_need_frame_in_bias_blocks(blocks, expect_change, mode):
    cfg = ModelConfig.preset("tiny").replace(mask={"bias_blocks": blocks, "mode": mode})
    agg = _agg(cfg)
    imgs = _images()
    with torch.no_grad():
        base = agg.run(imgs, layout="factorized")
        agg.mask_bias.set(lambda_pose_t=3.0, lambda_geo_t=-3.0)
        run = agg.run(imgs, layout="factorized")
    _assert_lists(run.pose_tokens, base.pose_tokens, EXACT, layers=range(FIRST_BIAS))
    changed = any(_differs(a, b) for a, b in zip(run.pose_tokens + run.geo_tokens,
                                                 base.pose_tokens + base.geo_tokens))
    assert changed == expect_change
    if not expect_change:
        _assert_lists(run.pose_tokens, base.pose_tokens, EXACT)
        _assert_lists(run.geo_tokens, base.geo_tokens, EXACT)


def test_lambda_bound_and_names():
    agg = _agg(ModelConfig.preset("tiny"), sharpen_mask=False)
    agg.mask_bias.set(lambda_pose=4.0, lambda_geo=-4.0)  # the bound itself is allowed
    for name in ("lambda_pose", "lambda_geo", "lambda_pose_t", "lambda_geo_t"):
        with pytest.raises(ValueError, match=r"bound \+-4") as e:
            agg.mask_bias.set(**{name: 4.5})
        assert name in str(e.value)
    with pytest.raises(ValueError, match="unknown lambda"):
        agg.mask_bias.set(lambda_foo=1.0)
    assert agg.mask_bias.as_dict()["lambda_pose"] == 4.0  # failed sets changed nothing


# ---------------------------------------------------------------- external mask
def test_external_mask_moves_m():
    cfg = ModelConfig.preset("tiny").replace(mask={"mode": "tokens"})
    agg = _agg(cfg)
    agg.mask_bias.set(lambda_pose=3.0)
    imgs = _images()
    shape = (1, 3, 2, GH, GW)
    with torch.no_grad():
        none = agg.run(imgs, layout="factorized")
        ones = agg.run(imgs, layout="factorized", ext_masks=torch.ones(shape))
        zeros = agg.run(imgs, layout="factorized", ext_masks=torch.zeros(shape))
    assert bool((ones.dynamic_mask > none.dynamic_mask + 1e-4).all())  # dynamic evidence raises m
    torch.testing.assert_close(ones.mask_logit, none.mask_logit, rtol=0, atol=0)  # logit is the head's own
    torch.testing.assert_close(zeros.dynamic_mask, none.dynamic_mask, rtol=0, atol=0)  # beta * 0
    _assert_lists(zeros.geo_tokens, none.geo_tokens, EXACT)
    assert _differs(ones.geo_tokens[-1], none.geo_tokens[-1])  # m feeds the bias
    # m = sigmoid(s * a * z' + b * M): with a = b = 1, s = -1
    torch.testing.assert_close(ones.dynamic_mask, torch.sigmoid(-none.mask_logit + 1.0), **TOL)


def test_model_ext_mask_area_pooling():
    vm = pytest.importorskip("vggt_mv.model.vggt_mv")
    cfg = ModelConfig.preset("tiny")
    torch.manual_seed(0)
    model = vm.VGGTMV(cfg).eval()
    imgs = _images(t=2, v=2)
    ext = torch.zeros(1, 2, 2, H, W)
    ext[0, 1, 0, 14:28, 0:7] = 1.0  # half of patch (1, 0) of image (t=1, v=0)
    with torch.no_grad():
        a = model.run_aggregator(imgs)
        b = model.run_aggregator(imgs, ext_masks=ext)
    expect = torch.zeros(1, 2, 2, GH, GW)
    expect[0, 1, 0, 1, 0] = 0.5
    torch.testing.assert_close(b.dynamic_mask, torch.sigmoid(-a.mask_logit + expect), **TOL)


# ---------------------------------------------------------------- input validation
@pytest.fixture(scope="module")
def model():
    vm = pytest.importorskip("vggt_mv.model.vggt_mv")
    torch.manual_seed(0)
    return vm.VGGTMV(ModelConfig.preset("tiny")).eval()


@pytest.mark.parametrize("kwargs,match", [
    (dict(images=torch.rand(2, 3, H, W)), r"\[B,S,3,H,W\] or \[B,T,V,3,H,W\]"),
    (dict(images=torch.rand(1, 2, 2, 2, 3, H, W)), r"\[B,S,3,H,W\] or \[B,T,V,3,H,W\]"),
    (dict(images=torch.rand(1, 2, 4, H, W)), "3 RGB channels"),
    (dict(images=torch.rand(1, 2, 2, 1, H, W)), "3 RGB channels"),
    (dict(images=torch.rand(1, 2, 3, 30, W)), "multiple of the patch size 14"),
    (dict(images=torch.rand(1, 2, 3, H, 40)), "multiple of the patch size 14"),
    (dict(images=torch.rand(1, 2, 2, 3, H, W), ext_masks=torch.rand(1, 2, 2, GH, GW)), "ext_masks must have shape"),
    (dict(images=torch.rand(1, 2, 3, H, W), ext_masks=torch.rand(1, 3, H, W)), "ext_masks must have shape"),
    (dict(images=torch.rand(1, 2, 3, H, W), query_points=torch.rand(1, 5, 3)), "query_points must be"),
    (dict(images=torch.rand(1, 2, 3, H, W), query_points=torch.rand(2, 5, 2)), "query_points must be"),
    (dict(images=torch.rand(1, 2, 3, H, W), query_points=torch.rand(1, 5, 2)), "no track head"),
    (dict(images=[[0.0]]), "must be a torch.Tensor"),
])
def test_input_validation(model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        model(**kwargs)


# ---------------------------------------------------------------- config
def _fixture_configs():
    parity = REFERENCE / "parity"
    return sorted(parity.glob("*/model_config.json")) if parity.is_dir() else []


@pytest.mark.parametrize("path", _fixture_configs() or [None], ids=lambda p: p.parent.name if p else "absent")
def test_fixture_configs_load(path):
    if path is None:
        pytest.skip(f"reference fixtures not found under {REFERENCE}")
    cfg = ModelConfig.from_json(path)
    assert cfg.embed_dim % cfg.num_heads == 0
    again = ModelConfig.from_dict(cfg.to_dict())
    assert again == cfg  # round trip through the dict form is lossless


@pytest.mark.parametrize("name", ["vggt", "page4d", "page4d_mask", "page4d_fin10", "vggt_mv", "tiny"])
def test_presets_validate(name):
    cfg = ModelConfig.preset(name)
    assert cfg.name == name
    cfg.validate()
    if cfg.mask.enabled:
        assert cfg.mask.mask_layer < min(cfg.mask.bias_layers)


def test_config_validation_errors(tmp_path):
    tiny = ModelConfig.preset("tiny")
    with pytest.raises(ValueError, match=r"mask_layer \(3\) must be < min\(bias_layers\) \(3\)"):
        tiny.replace(mask={"mask_layer": 3})
    with pytest.raises(ValueError, match="mask_layer"):
        tiny.replace(mask={"mask_layer": 5, "bias_layers": [4, 6]})
    with pytest.raises(ValueError, match="unknown field"):
        ModelConfig.from_dict({**tiny.to_dict(), "not_a_field": 1})
    with pytest.raises(ValueError, match="unknown preset"):
        ModelConfig.preset("nope")
    with pytest.raises(ValueError, match=r"bias_layers \[3, 8\] must lie in 0..7"):
        tiny.replace(mask={"bias_layers": [3, 8]})
    p = tmp_path / "bad.json"
    p.write_text("{not json")
    with pytest.raises(ValueError, match="cannot read model config"):
        ModelConfig.from_json(p)
    p.write_text(tiny.to_json())
    assert ModelConfig.from_json(p) == tiny


# ---------------------------------------------------------------- pipeline cache (snapshot / resume)
def test_snapshot_resume_equals_full_run():
    cfg = ModelConfig.preset("tiny")
    agg = _agg(cfg)
    imgs = _images()
    with torch.no_grad():
        snap = agg.run(imgs, layout="factorized", snapshot_at=FIRST_BIAS).snapshot
        agg.mask_bias.set(lambda_pose=2.0)
        full = agg.run(imgs, layout="factorized")
        resumed = agg.run(imgs, layout="factorized", resume=snap)
    _assert_lists(resumed.pose_tokens, full.pose_tokens, EXACT)
    _assert_lists(resumed.geo_tokens, full.geo_tokens, EXACT)
