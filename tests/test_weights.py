"""Weight loading: formats by content, clear errors, the three-stage plan on full-size manifests, merging."""
from __future__ import annotations

import argparse
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import REFERENCE, reference_case
from vggt_mv.cli import main as cli_main
from vggt_mv.config import ModelConfig
from vggt_mv.weights import CheckpointError, build_plan, load_model, model_shapes, open_checkpoint, save_merged
from vggt_mv.weights.report import LoadReport


def manifest(name: str) -> dict[str, tuple[int, ...]]:
    path = REFERENCE / "keys" / name
    if not path.exists():
        pytest.skip(f"{path} not found")
    out = {}
    for line in path.read_text().splitlines()[1:]:
        key, shape, _, _ = line.split("\t")
        out[key] = tuple(int(x) for x in shape.split("x")) if shape else ()
    return out


# ---------------------------------------------------------------- full-size key compatibility
@pytest.mark.parametrize(
    "preset,tsv",
    [("vggt", "vggt.tsv"), ("page4d", "page4d_notrack.tsv"), ("page4d_fin10", "page4d_fin10_notrack.tsv")],
)
def test_full_size_presets_have_exact_keys(preset, tsv):
    assert model_shapes(ModelConfig.preset(preset)) == manifest(tsv)


def test_full_size_presets_with_track_head_match_manifests():
    cfg = ModelConfig.preset("page4d")
    cfg.enable_track = True
    assert model_shapes(cfg) == manifest("page4d.tsv")
    cfg = ModelConfig.preset("page4d_fin10")
    cfg.enable_track = True
    assert model_shapes(cfg) == manifest("page4d_fin10.tsv")


def test_parameter_counts_match_the_seed():
    shapes = model_shapes(ModelConfig.preset("vggt"))
    count = lambda pre: sum(math.prod(s) for k, s in shapes.items() if k.startswith(pre)) / 1e6  # noqa: E731
    assert round(count("aggregator"), 1) == 909.1
    assert round(count("camera_head"), 1) == 216.2
    assert round(count("depth_head"), 2) == 32.65 and round(count("point_head"), 2) == 32.65
    assert round(count("track_head"), 1) == 65.9
    page = model_shapes(ModelConfig.preset("page4d"))
    assert round(sum(math.prod(s) for k, s in page.items() if k.startswith("aggregator")) / 1e6, 2) == 909.39


# ---------------------------------------------------------------- planning on manifests (no 5 GB files)
def test_seed_plan_pi3_plus_page4d_into_vggt_mv():
    target = model_shapes(ModelConfig.preset("vggt_mv"))
    pi3, page = manifest("pi3.tsv"), manifest("page4d_notrack.tsv")
    plan = build_plan(target, page, pi3, recipe="seed", mask_head="page4d", fork_layer=8)
    assert set(plan.assignments) | set(plan.left_at_init) == set(target)  # every tensor accounted for
    assert all(k.startswith(("aggregator.mask_bias.", "aggregator.keypoint_bias.")) for k in plan.left_at_init), plan.left_at_init
    for tgt, a in plan.assignments.items():
        src = pi3 if a.source == "pi3" else page
        if a.transform is None:
            assert src[a.source_key] == target[tgt], tgt  # zero shape mismatches on mapped tensors
    by_src = lambda k: plan.assignments[k].source  # noqa: E731
    assert by_src("aggregator.frame_blocks.0.attn.qkv.weight") == "pi3"
    assert by_src("aggregator.global_blocks.17.mlp.fc2.bias") == "pi3"
    assert by_src("aggregator.frame_blocks.18.attn.qkv.weight") == "checkpoint"
    assert by_src("aggregator.global_blocks.23.ls2.gamma") == "checkpoint"
    assert by_src("aggregator.patch_embed.pos_embed") == "checkpoint"
    assert by_src("aggregator.camera_token") == "checkpoint"
    assert by_src("aggregator.register_token") == "pi3"
    assert by_src("aggregator.spatial_mask_head.head0.4.weight") == "checkpoint"
    assert by_src("camera_head.trunk.0.attn.qkv.weight") == "checkpoint"
    collisions = [s.key for s in plan.skipped if s.reason.startswith("collision")]
    assert "camera_head.res_conv.0.weight" in collisions or any(k.startswith("camera_head.") for k in collisions)
    assert len(collisions) == sum(1 for k in pi3 if k.startswith(("point_", "conf_", "camera_")))
    assert not [s for s in plan.skipped if "shape mismatch" in s.reason]


def test_checkpoint_first_plan_prefers_checkpoint():
    target = model_shapes(ModelConfig.preset("vggt_mv"))
    plan = build_plan(target, manifest("page4d_notrack.tsv"), manifest("pi3.tsv"),
                      recipe="checkpoint_first", mask_head="page4d", fork_layer=8)
    assert plan.assignments["aggregator.frame_blocks.0.attn.qkv.weight"].source == "checkpoint"
    assert plan.assignments["aggregator.register_token"].source == "checkpoint"


def test_vggt_manifest_alone_fills_vggt_preset():
    target = model_shapes(ModelConfig.preset("vggt"))
    plan = build_plan(target, manifest("vggt.tsv"))
    assert set(plan.assignments) == set(target) and not plan.skipped and not plan.left_at_init


def test_mask_variant_mismatch_is_a_clear_error():
    target = model_shapes(ModelConfig.preset("page4d"))
    with pytest.raises(ValueError, match="fin10.*page4d_fin10"):
        build_plan(target, manifest("page4d_fin10_notrack.tsv"), mask_head="page4d")


# ---------------------------------------------------------------- real files: formats and errors
@pytest.fixture(scope="module")
def vggt_case():
    root = reference_case("vggt_tiny")
    sd = torch.load(root / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]
    return root, sd, ModelConfig.from_json(root / "model_config.json"), load_file(root / "inputs.safetensors")


def _pose(model, inputs):
    with torch.no_grad():
        return model(inputs["images"])["pose_enc"]


def test_flat_module_prefixed_and_safetensors_forms_load_identically(vggt_case, tmp_path):
    root, sd, cfg, inputs = vggt_case
    ref = _pose(load_model(cfg, checkpoint=root / "checkpoint.pt")[0], inputs)
    torch.save({"module." + k: v for k, v in sd.items()}, tmp_path / "flat.pt")
    save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / "model.safetensors")
    for f in ("flat.pt", "model.safetensors"):
        model, report = load_model(cfg, checkpoint=tmp_path / f)
        assert report.fraction_loaded("checkpoint") == 1.0
        assert torch.equal(_pose(model, inputs), ref), f


def test_bf16_file_is_cast_to_model_dtype(vggt_case, tmp_path):
    _, sd, cfg, _ = vggt_case
    torch.save({k: v.to(torch.bfloat16) for k, v in sd.items()}, tmp_path / "bf16.pt")
    model, _ = load_model(cfg, checkpoint=tmp_path / "bf16.pt")
    assert all(p.dtype == torch.float32 for p in model.parameters())
    key = "aggregator.frame_blocks.3.attn.qkv.weight"
    assert torch.equal(model.state_dict()[key], sd[key].to(torch.bfloat16).float())


@pytest.mark.parametrize(
    "writer,message",
    [
        (lambda p, sd: p.write_bytes(b""), "empty"),
        (lambda p, sd: (torch.save(sd, p), p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])), "truncated or corrupt"),
        (lambda p, sd: torch.save({"model": sd, "args": argparse.Namespace(lr=1)}, p), "refusing to unpickle.*Namespace"),
        (lambda p, sd: p.write_bytes(b"not a checkpoint at all"), "truncated or corrupt|cannot read"),
        # random bytes: torch's one specific reason, not its paragraph about weights_only defaults
        (lambda p, sd: p.write_bytes(bytes(range(256)) * 20), r"cannot read as a torch checkpoint \([^()]{1,80}\); "),
        (lambda p, sd: torch.save({"a": torch.zeros(2)}, p), "neither a VGGT"),
        (lambda p, sd: torch.save([1, 2], p), "expected a state_dict"),
    ],
)
def test_bad_files_get_clear_errors(vggt_case, tmp_path, writer, message):
    _, sd, cfg, _ = vggt_case
    path = tmp_path / "bad.pt"
    writer(path, sd)
    with pytest.raises(CheckpointError, match=message) as e:
        load_model(cfg, checkpoint=path)
    assert str(path) in str(e.value)


def test_truncated_safetensors_is_named(vggt_case, tmp_path):
    _, sd, cfg, _ = vggt_case
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, path)
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(CheckpointError, match="truncated"):
        open_checkpoint(path)


def test_files_given_in_the_wrong_role():
    page = reference_case("page4d_tiny_mask") / "checkpoint.pt"
    pi3 = reference_case("pi3_tiny") / "model.safetensors"
    cfg = ModelConfig.from_json(reference_case("page4d_tiny_mask") / "model_config.json")
    with pytest.raises(CheckpointError, match="looks like a Pi3"):
        load_model(cfg, checkpoint=pi3)
    with pytest.raises(CheckpointError, match="looks like a VGGT/PAGE-4D"):
        load_model(cfg, pi3=page)
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_model(cfg, checkpoint=page.parent / "nope.pt")


# ---------------------------------------------------------------- seed recipe on real tiny files, merging
def test_seed_recipe_on_fixtures_and_save_merged_round_trip(tmp_path):
    page_root, pi3_root = reference_case("page4d_tiny_mask"), reference_case("pi3_tiny")
    cfg = ModelConfig.from_json(page_root / "model_config.json")
    model, report = load_model(cfg, checkpoint=page_root / "checkpoint.pt", pi3=pi3_root / "model.safetensors")
    assert isinstance(report, LoadReport)
    assert report.fraction_loaded("checkpoint") == 1.0 and report.fraction_loaded("pi3") == 1.0
    assert report.count("aggregator.frame_blocks", "pi3") == 18 * 18
    assert report.count("aggregator.frame_blocks", "checkpoint") == 6 * 18
    pi3_sd = load_file(pi3_root / "model.safetensors")
    sd = model.state_dict()
    assert torch.equal(sd["aggregator.global_blocks.5.attn.proj.weight"], pi3_sd["decoder.11.attn.proj.weight"].float())
    assert torch.equal(sd["aggregator.register_token"][0, 1], pi3_sd["register_token"][0, 0, :4].float())
    assert "aggregator.frame_blocks" in report.to_table() and '"recipe": "seed"' in report.to_json()

    images = load_file(page_root / "inputs.safetensors")["images"]
    out = save_merged(model, tmp_path / "merged.safetensors")
    assert out.exists() and out.with_suffix(".json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    again, rep2 = load_model(cfg, checkpoint=out)
    assert rep2.fraction_loaded("checkpoint") == 1.0
    with torch.no_grad():
        assert torch.equal(model(images)["depth"], again(images)["depth"])


def test_cli_inspect_reports_and_exits_2_when_modules_are_missing(capsys):
    page = reference_case("page4d_tiny_mask")
    pi3 = reference_case("pi3_tiny") / "model.safetensors"
    rc = cli_main(["weights", "inspect", "--checkpoint", str(page / "checkpoint.pt"), "--pi3", str(pi3),
                   "--config", str(page / "model_config.json")])
    out = capsys.readouterr().out
    assert rc == 0 and "pi3" in out and "0-17" in out and "18-23" in out
    # Pi3 alone into a preset with heads: the heads get nothing -> exit 2 (unless --allow-partial)
    argv = ["weights", "inspect", "--pi3", str(pi3), "--config", str(page / "model_config.json"), "--json"]
    rc = cli_main(argv)
    err = capsys.readouterr().err
    assert rc == 2 and "do not fit" in err and "camera_head (" in err
    assert cli_main(argv + ["--allow-partial"]) == 0


def test_safetensors_with_zero_dim_tensors_reads_in_place(tmp_path):
    """0-d parameters (fin10's alpha/tau logits, learnable lambdas) read straight into the model."""
    from vggt_mv.model.vggt_mv import VGGTMV

    torch.manual_seed(0)
    cfg = ModelConfig.preset("tiny")
    model = VGGTMV(cfg)
    with torch.no_grad():
        model.aggregator.mask_bias.lambda_pose.fill_(1.25)
    path = save_merged(model, tmp_path / "tiny.safetensors")
    again, report = load_model(cfg, checkpoint=path)
    assert report.fraction_loaded("checkpoint") == 1.0
    assert again.lambdas()["lambda_pose"] == 1.25
    for k, v in model.state_dict().items():
        assert torch.equal(again.state_dict()[k], v), k
