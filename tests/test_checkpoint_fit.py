"""Issue 20: the mask head and track head follow the checkpoint (full-size manifests on the meta
device, the fin10 fixture in a vggt_mv-shaped config), config aliases, time_blocks/view_blocks keys."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import reference_case
from test_weights import manifest
from vggt_mv.config import ALIASES, ModelConfig
from vggt_mv.weights import build_plan, load_model, model_shapes
from vggt_mv.weights.autoconfig import resolve_config
from vggt_mv.weights.report import LoadReport

MASK = "aggregator.spatial_mask_head."


def _plan(preset: str, tsv: str):
    ck = manifest(tsv)
    cfg, choices = resolve_config(ModelConfig.preset(preset), ck)
    target = model_shapes(cfg)
    fork = min(cfg.mask.bias_layers) if cfg.mask.mode == "streams" else None
    plan = build_plan(target, ck, mask_head=cfg.mask.head, fork_layer=fork, fresh_mask_head=choices.fresh_mask_head)
    report = LoadReport.from_plan(plan, target, {"checkpoint": ck}, {}, "seed")
    report.set_choices(choices)
    return cfg, choices, ck, target, plan, report


# ---------------------------------------------------------------- full-size manifests (meta device)
def test_vggt_mv_with_checkpoint_150_keys_plans_every_tensor():
    cfg, choices, ck, target, plan, report = _plan("vggt_mv", "page4d_fin10.tsv")
    assert cfg.mask.head == "fin10" and cfg.enable_track and choices.track_head
    assert cfg.layout == "factorized" and cfg.mask.mode == "streams"  # still the seeds' architecture
    used = {a.source_key for a in plan.assignments.values()}
    assert used == set(ck), sorted(set(ck) - used)[:5]  # 100% of the checkpoint, 1805 tensors
    assert len(ck) == 1805 and report.fraction_loaded("checkpoint") == 1.0
    assert not plan.skipped
    assert plan.assignments[MASK + "alpha_logit"].source == "checkpoint"
    assert plan.assignments[MASK + "tau_logit"].source == "checkpoint"
    assert sum(k.startswith("track_head.") for k in plan.assignments) == 394
    # only the seeds' new modules stay at init
    assert all(why.startswith("new module") for why in plan.left_at_init.values())
    assert all(k.startswith(("aggregator.mask_bias.", "aggregator.keypoint_bias.")) for k in plan.left_at_init)
    assert "fin10" in report.to_table() and "track head: on" in report.to_table()
    js = json.loads(report.to_json())
    assert js["mask_head"]["variant"] == "fin10" and js["track_head"]["enabled"] is True
    assert "fin10" in js["mask_head"]["reason"] and "track_head" in js["track_head"]["reason"]


def test_vggt_mv_with_official_page4d_keys_uses_official_head_and_no_track():
    cfg, choices, ck, target, plan, report = _plan("vggt_mv", "page4d_notrack.tsv")
    assert cfg.mask.head == "page4d" and not cfg.enable_track
    assert {a.source_key for a in plan.assignments.values()} == set(ck)
    assert not any(k.startswith("track_head.") for k in target)
    assert "track head: off" in report.to_table() and "no track_head" in report.track_head_reason


def test_vggt_mv_with_vggt_checkpoint_gets_a_fresh_listed_mask_head():
    cfg, choices, ck, target, plan, report = _plan("vggt_mv", "vggt.tsv")
    assert choices.fresh_mask_head and cfg.enable_track  # VGGT-1B has the track head
    fresh = {k: why for k, why in plan.left_at_init.items() if k.startswith(MASK)}
    assert fresh and set(fresh) == {k for k in target if k.startswith(MASK)}
    assert all(why.startswith("new module") for why in fresh.values())
    assert report.fraction_loaded("checkpoint") == 1.0
    # a strict load accepts it: nothing is missing, nothing unused
    assert report.missing() == {} and report.strict_problems() is None
    assert "fresh" in report.mask_head_reason


def test_explicit_presets_do_not_follow():
    cfg, choices = resolve_config(ModelConfig.preset("page4d"), manifest("page4d_fin10.tsv"))
    assert cfg.mask.head == "page4d" and not cfg.enable_track and "follow_checkpoint off" in choices.mask_reason
    with pytest.raises(ValueError, match="page4d_fin10"):
        build_plan(model_shapes(cfg), manifest("page4d_fin10_notrack.tsv"), mask_head="page4d")


def test_vggt_mv_fin10_preset_matches_checkpoint_150_keys():
    cfg = ModelConfig.preset("vggt_mv_fin10")
    assert cfg.mask.head == "fin10" and cfg.enable_track and cfg.layout == "factorized"
    shapes = model_shapes(cfg)
    ck = manifest("page4d_fin10.tsv")
    assert {k: s for k, s in shapes.items() if not k.startswith(("aggregator.mask_bias.", "aggregator.keypoint_bias."))} == ck


# ---------------------------------------------------------------- fin10 fixture in a vggt_mv-shaped config
def _vggt_mv_shaped_fin10(mode: str) -> ModelConfig:
    d = json.loads((reference_case("fin10_tiny") / "model_config.json").read_text())
    d["mask"].update(head="page4d", lambda_pose=0.0, learnable_lambdas=True, learnable_fusion=True, mode=mode)
    d.update(layout="factorized", follow_checkpoint=True)
    return ModelConfig.from_dict(d)


@pytest.mark.parametrize("expected,lam", [("expected", 0.5), ("expected_nomask", 0.0)])
def test_fin10_fixture_in_vggt_mv_shaped_config_reproduces_reference(expected, lam):
    root = reference_case("fin10_tiny")
    model, report = load_model(_vggt_mv_shaped_fin10("tokens"), checkpoint=root / "checkpoint.pt")
    assert model.config.mask.head == "fin10" and report.mask_head == "fin10"
    assert not model.config.enable_track and report.track_head is False
    assert report.fraction_loaded("checkpoint") == 1.0
    assert all(why.startswith("new module") for why in report.left_at_init.values())
    model.set_lambdas(lambda_pose=lam)
    inputs = load_file(root / "inputs.safetensors")
    exp = load_file(root / f"{expected}.safetensors")
    images = inputs["images"]  # [1, S, 3, H, W]; as 6-D one time x S views, flat layout
    with torch.no_grad():
        out = model(images[:, None], layout="flat")
    compared = 0
    for k in ("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf", "extrinsic", "intrinsic"):
        torch.testing.assert_close(out[k][:, 0], exp[k], rtol=1e-4, atol=1e-4, msg=k)
        compared += 1
    assert compared == 7


def test_fin10_fixture_loads_fully_into_streams_mode():
    root = reference_case("fin10_tiny")
    model, report = load_model(_vggt_mv_shaped_fin10("streams"), checkpoint=root / "checkpoint.pt")
    assert model.config.mask.head == "fin10" and report.fraction_loaded("checkpoint") == 1.0
    sd = torch.load(root / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]
    assert torch.equal(model.state_dict()[MASK + "alpha_logit"], sd[MASK + "alpha_logit"].float())


# ---------------------------------------------------------------- aliases
def test_every_alias_builds_the_same_model_as_the_project_names():
    base = ModelConfig.preset("tiny").to_dict()
    canonical = json.loads(json.dumps(base))
    canonical["mask"].update(mode="tokens", lambda_bound=2.5, fusion="gate")
    canonical["sparse"].update(strategy="memory_bank", layers=[5, 7], memory_tokens=6,
                               dilated_offsets=[0, 1, -1, 2, -2])
    aliased = json.loads(json.dumps(base))
    aliased["mask"] = {k: v for k, v in aliased["mask"].items() if k not in ("mode", "lambda_bound", "fusion")}
    aliased["sparse"] = {k: v for k, v in aliased["sparse"].items() if k not in ("strategy", "layers", "memory_tokens", "dilated_offsets")}
    aliased.update(enable_dual_stream=False, enable_sparse_global=True, sparse_global_layers=[5, 7],
                   sparse_strategy="memory_bank", lambda_clamp_value=2.5, memory_tokens_num=6,
                   dilated_levels=[1, 2], use_gating=True)
    assert set(ALIASES) <= set(aliased)  # every alias is exercised
    a, c = ModelConfig.from_dict(aliased), ModelConfig.from_dict(canonical)
    assert a.to_dict() == c.to_dict()
    from vggt_mv.model.vggt_mv import VGGTMV

    torch.manual_seed(0)
    ma = VGGTMV(a)
    torch.manual_seed(0)
    mc = VGGTMV(c)
    sa, sc = ma.state_dict(), mc.state_dict()
    assert sa.keys() == sc.keys() and any(k.startswith("aggregator.mask_bias.gate.") for k in sa)
    assert all(torch.equal(sa[k], sc[k]) for k in sa)
    # a perturbed alias gives a different config
    aliased["dilated_levels"] = 3
    assert ModelConfig.from_dict(aliased).sparse.dilated_offsets == [0, 1, -1, 2, -2, 4, -4]


def test_alias_conflicts_are_errors():
    d = ModelConfig.preset("tiny").to_dict()
    d["use_gating"] = True  # mask.fusion is 'scalar' in the dict
    with pytest.raises(ValueError, match="use_gating.*mask.fusion"):
        ModelConfig.from_dict(d)
    d = ModelConfig.preset("tiny").to_dict()
    d["sparse"].pop("strategy")
    d["enable_sparse_global"] = False
    d["sparse_strategy"] = "dilated"
    assert ModelConfig.from_dict(d).sparse.strategy == "none"


def test_time_and_view_block_keys_load_as_frame_and_global_blocks(tmp_path):
    from vggt_mv.model.vggt_mv import VGGTMV

    torch.manual_seed(0)
    cfg = ModelConfig.preset("tiny")
    src = VGGTMV(cfg)
    renamed = {k.replace("frame_blocks.", "time_blocks.").replace("global_blocks.", "view_blocks."): v
               for k, v in src.state_dict().items()}
    assert any(k.startswith("aggregator.time_blocks.") for k in renamed)
    dst = VGGTMV(cfg)
    dst.load_state_dict(dict(renamed))  # strict: every key found
    assert all(torch.equal(dst.state_dict()[k], v) for k, v in src.state_dict().items())
    torch.save(renamed, tmp_path / "notes.pt")
    model, report = load_model(cfg, checkpoint=tmp_path / "notes.pt")
    assert report.fraction_loaded("checkpoint") == 1.0 and not report.left_at_init
    key = "aggregator.global_blocks.3.attn.qkv.weight"
    assert torch.equal(model.state_dict()[key], src.state_dict()[key])
    assert report.provenance[key] == "checkpoint:aggregator.view_blocks.3.attn.qkv.weight"


# ---------------------------------------------------------------- real files into the tiny preset
def test_tiny_preset_follows_real_checkpoint_files(tmp_path, capsys):
    from vggt_mv.cli import main as cli_main
    from vggt_mv.model.vggt_mv import VGGTMV
    from vggt_mv.weights import save_merged

    torch.manual_seed(0)
    src_cfg = ModelConfig.preset("tiny").replace(mask={"head": "fin10"}, enable_track=True)
    src = VGGTMV(src_cfg)
    with torch.no_grad():
        src.aggregator.spatial_mask_head.alpha_logit.fill_(0.3)
    path = save_merged(src, tmp_path / "fin10_track.safetensors")
    model, report = load_model("tiny", checkpoint=path)  # the preset says page4d head, no track head
    assert model.config.mask.head == "fin10" and model.config.enable_track and model.track_head is not None
    assert report.fraction_loaded("checkpoint") == 1.0 and not report.left_at_init
    for k, v in src.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    assert cli_main(["weights", "inspect", "--checkpoint", str(path), "--preset", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "mask head used: fin10" in out and "track head: on" in out

    # a checkpoint without a mask head (VGGT-style): a fresh head, reported as a new module
    no_mask = {k: v for k, v in src.state_dict().items() if not k.startswith(MASK)}
    torch.save(no_mask, tmp_path / "vggt_style.pt")
    model, report = load_model("tiny", checkpoint=tmp_path / "vggt_style.pt")
    assert model.config.mask.head == "page4d"  # the preset's head, initialised fresh
    assert {k for k, why in report.left_at_init.items() if why.startswith("new module (the checkpoint has no mask")} \
        == {k for k in model.state_dict() if k.startswith(MASK)}
    assert report.strict_problems() is None  # strict loading accepts the fresh head
    assert cli_main(["weights", "inspect", "--checkpoint", str(tmp_path / "vggt_style.pt"), "--preset", "tiny"]) == 0
