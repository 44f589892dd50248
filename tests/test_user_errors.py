"""Bad input is one line naming the file/option and the fix, exit code 2, no traceback — and it is
caught before weights load or frames decode. Weights load exactly, or loudly fail."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import vggt_mv
from conftest import REPO
from vggt_mv.cli import main as cli_main
from vggt_mv.data import io
from vggt_mv.inference.reconstruction import Reconstruction

SAMPLE = REPO / "assets" / "sample"
TINY = REPO / "assets" / "weights" / "tiny.safetensors"


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    rc = cli_main(list(argv))
    err = capsys.readouterr().err
    return rc, err


def assert_user_error(rc: int, err: str, command: str, *needles: str) -> None:
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith(("INFO ", "WARNING "))]
    assert rc == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith(f"vggt-mv {command}: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def recon(scene, out, *extra):
    return ["reconstruct", "--scene", str(scene), "--preset", "tiny", "--resolution", "56", "--frames", "0:2",
            "--window", "2", "--overlap", "1", "--no-progress", "--out", str(out), *extra]


@pytest.fixture
def wide_config(tmp_path) -> Path:
    cfg = vggt_mv.ModelConfig.preset("tiny").to_dict()
    cfg["embed_dim"] = cfg["dino"]["embed_dim"] = 96
    for head in ("camera_head", "depth_head", "point_head", "track_head"):
        cfg[head]["dim_in"] = 192
    path = tmp_path / "wide.json"
    path.write_text(json.dumps(cfg))
    return path


# ----------------------------------------------------------------------------- weights exact or loud

def test_weights_that_do_not_fit_fail_before_inference(tmp_path, capsys, caplog, wide_config):
    """Reported: a wider --config with tiny.safetensors (24.5% used) reconstructed with random weights, rc 0."""
    with caplog.at_level(logging.INFO):
        rc, err = run_cli(capsys, *recon(SAMPLE, tmp_path / "out", "--config", str(wide_config),
                                         "--checkpoint", str(TINY)))
    assert_user_error(rc, err, "reconstruct", "do not fit", "no weights for aggregator.frame_blocks",
                      "shape mismatch", "--allow-partial")
    assert "scene:" not in caplog.text  # no frame was decoded
    assert not (tmp_path / "out").exists()


def test_unrelated_file_fails_and_allow_partial_is_shown_in_the_result(tmp_path, capsys):
    one = tmp_path / "one.safetensors"
    save_file({"aggregator.foo": torch.zeros(3)}, str(one))
    rc, err = run_cli(capsys, *recon(SAMPLE, tmp_path / "out", "--checkpoint", str(one)))
    assert_user_error(rc, err, "reconstruct", "1 of 1 checkpoint tensors unused", "0.0% of the model")
    rc, err = run_cli(capsys, *recon(SAMPLE, tmp_path / "out", "--checkpoint", str(one), "--allow-partial"))
    assert rc == 0, err
    meta = Reconstruction.load(tmp_path / "out").meta
    assert meta["partial_weights"] == "partial weights (0.0% of parameters loaded)"


def test_load_model_strict_and_partial_share(wide_config):
    cfg = vggt_mv.ModelConfig.from_json(wide_config)
    with pytest.raises(vggt_mv.weights.WeightsMismatchError, match="do not fit"):
        vggt_mv.load_model(cfg, checkpoint=TINY)
    model, report = vggt_mv.load_model(cfg, checkpoint=TINY, strict=False)
    share = report.fraction_params_loaded()
    assert 0.0 < share < 0.5 and model.partial_weights == pytest.approx(share)
    model, report = vggt_mv.load_model("tiny", checkpoint=TINY)  # exact: no problems, not partial
    assert report.strict_problems() is None and model.partial_weights is None
    model, _ = vggt_mv.load_model("tiny")  # no files: random init is allowed
    assert model.partial_weights is None


def test_weights_inspect_mismatch_is_exit_2(capsys, wide_config):
    rc, err = run_cli(capsys, "weights", "inspect", "--config", str(wide_config), "--checkpoint", str(TINY))
    assert rc == 2 and "vggt-mv weights inspect: error: the files do not fit" in err
    rc, _ = run_cli(capsys, "weights", "inspect", "--preset", "tiny", "--checkpoint", str(TINY))
    assert rc == 0


def test_config_from_weights_header_and_manifest(tmp_path, capsys):
    """A vggt-mv .safetensors supplies its config; --config accepts the manifest the project writes."""
    rc, err = run_cli(capsys, "reconstruct", "--scene", str(SAMPLE), "--checkpoint", str(TINY), "--resolution", "56",
                      "--frames", "0:2", "--window", "2", "--overlap", "1", "--no-progress", "--out",
                      str(tmp_path / "a"))
    assert rc == 0, err
    assert Reconstruction.load(tmp_path / "a").meta["preset"] == "tiny"
    assert vggt_mv.ModelConfig.from_json(TINY.with_suffix(".json")).to_dict() == \
        vggt_mv.ModelConfig.preset("tiny").to_dict()
    # `weights inspect` / `weights merge` take it from the header too (they used to assume vggt)
    rc, err = run_cli(capsys, "weights", "inspect", "--checkpoint", str(TINY))
    assert rc == 0, err
    rc, err = run_cli(capsys, "weights", "merge", "--checkpoint", str(TINY), "--out", str(tmp_path / "m.safetensors"))
    assert rc == 0, err
    from vggt_mv.weights.formats import embedded_config

    merged = vggt_mv.ModelConfig.from_json(tmp_path / "m.json").to_dict()
    assert merged == vggt_mv.ModelConfig.from_dict(embedded_config(TINY)).to_dict()


# ----------------------------------------------------------------------------- validated first

@pytest.mark.parametrize("extra,needles", [
    (["--conf-percentile", "150"], ["--conf-percentile must be in [0, 100]"]),
    (["--window", "2", "--overlap", "2"], ["--overlap must be in [0, --window)"]),
    (["--frames", "0:9", "--window", "4", "--overlap", "0"], ["--window 4 / --overlap 0 with 9 timesteps"]),
    (["--frames", "20:30"], ["selects no frame of the 10"]),
    (["--resolution", "14000"], ["above the ceiling 1036", "--max-resolution"]),
    (["--resolution", "100"], ["--resolution", "multiple of 14", "the nearest are 98 or 112"]),
    (["--lambda-pose", "100"], ["--lambda-pose 100 is outside +-4", "mask.lambda_bound"]),  # was after the load
    (["--masks", str(SAMPLE / "masks" / "view_0")], ["holds 0 subfolder(s) for 3 cameras"]),
    (["--device", "tpu9"], ["unknown device 'tpu9'"]),
    (["--dtype", "fp8"], ["unknown dtype"]),
    (["--out", "/proc/vggt-mv-out"], ["cannot write in /proc"]),
])
def test_bad_options_fail_before_weights_load(tmp_path, capsys, caplog, extra, needles):
    argv = recon(SAMPLE, tmp_path / "out")
    argv += extra  # later options win in argparse
    with caplog.at_level(logging.INFO):
        rc, err = run_cli(capsys, *argv)
    assert_user_error(rc, err, "reconstruct", *needles)
    assert "demo weights" not in caplog.text and "scene:" not in caplog.text


def test_scene_paths_and_environment_name_what_is_wrong(tmp_path, capsys, monkeypatch):
    rc, err = run_cli(capsys, *recon(tmp_path / "nowhere", tmp_path / "out"))
    assert_user_error(rc, err, "reconstruct", "nowhere' does not exist; pass a scene root (cam*/")
    (tmp_path / "rig" / "left").mkdir(parents=True)
    (tmp_path / "rig" / "right").mkdir()
    rc, err = run_cli(capsys, *recon(tmp_path / "rig", tmp_path / "out"))
    assert_user_error(rc, err, "reconstruct", "subfolders (left, right) are not named cam*/view*", "--views")
    monkeypatch.setenv("VGGT_MV_MEMORY_CAP", "abc")
    rc, err = run_cli(capsys, *recon(SAMPLE, tmp_path / "out"))
    assert_user_error(rc, err, "reconstruct", "VGGT_MV_MEMORY_CAP: not a memory size: 'abc'")
    (tmp_path / "c.pt").write_bytes(b"\x80\x81\x82 not text")
    rc, err = run_cli(capsys, *recon(SAMPLE, tmp_path / "out"), "--config", str(tmp_path / "c.pt"))
    assert_user_error(rc, err, "reconstruct", "--config", "is not a JSON text file")


def test_out_an_existing_file_fails_first(tmp_path, capsys):
    (tmp_path / "out").write_text("keep me")
    rc, err = run_cli(capsys, *recon(SAMPLE, tmp_path / "out"))
    assert_user_error(rc, err, "reconstruct", "exists and is not a folder")
    assert (tmp_path / "out").read_text() == "keep me"


# ----------------------------------------------------------------------------- bad files

@pytest.mark.parametrize("content", [b"hello, not tensors", None], ids=["text", "cut-in-header"])
def test_broken_safetensors_is_one_line(tmp_path, capsys, content):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(content if content is not None else TINY.read_bytes()[:20])
    rc, err = run_cli(capsys, *recon(SAMPLE, tmp_path / "out", "--checkpoint", str(bad)))
    assert_user_error(rc, err, "reconstruct", str(bad), "not a safetensors file")
    rc, err = run_cli(capsys, "weights", "inspect", "--checkpoint", str(bad))
    assert_user_error(rc, err, "weights inspect", "not a safetensors file")


def test_record_on_a_truncated_array(tmp_path, capsys):
    out = tmp_path / "res"
    assert cli_main(recon(SAMPLE, out)) == 0
    npy = out / "arrays" / "depth.npy"
    npy.write_bytes(npy.read_bytes()[: npy.stat().st_size // 2])
    rc, err = run_cli(capsys, "record", str(out), "--out", str(tmp_path / "v.mp4"))
    assert_user_error(rc, err, "record", "depth.npy", "reconstruct it again")
    assert not (tmp_path / "v.mp4").exists()


def test_record_refuses_a_foreign_file_and_replaces_its_own(tmp_path, capsys):
    out = tmp_path / "res"
    assert cli_main(recon(SAMPLE, out)) == 0
    foreign = tmp_path / "talk.mp4"
    foreign.write_bytes(b"someone else's video")
    rc, err = run_cli(capsys, "record", str(out), "--out", str(foreign), "--size", "32x32")
    assert_user_error(rc, err, "record", "not written by vggt-mv")
    assert foreign.read_bytes() == b"someone else's video"
    mine = tmp_path / "mine.mp4"
    for _ in range(2):  # the second run replaces the video the first one wrote
        assert cli_main(["record", str(out), "--out", str(mine), "--size", "32x32", "--frames-per-step", "1"]) == 0
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".mine")] == []


def test_train_resume_with_a_code_pickle(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    with open(run / "checkpoint.pt", "wb") as handle:
        torch.save({"model": Fraction(1, 2)}, handle)  # a pickle global weights_only=True refuses
    rc, err = run_cli(capsys, "train", "--out", str(run), "--resume")
    assert_user_error(rc, err, "train", "checkpoint.pt", "weights_only=True")


def test_train_out_refuses_a_foreign_folder(tmp_path, capsys):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "thesis.tex").write_text("x")
    rc, err = run_cli(capsys, "train", "--out", str(tmp_path / "docs"), "--steps", "1")
    assert_user_error(rc, err, "train", "not a vggt-mv result")
    assert (tmp_path / "docs" / "thesis.tex").read_text() == "x"
    assert run_cli(capsys, *recon(SAMPLE, tmp_path / "result"))[0] == 0
    rc, err = run_cli(capsys, "train", "--out", str(tmp_path / "result"), "--steps", "1")
    assert_user_error(rc, err, "train", "result is a vggt-mv output of another kind than this command writes")


@pytest.mark.parametrize("change,needle", [
    ({"depth": 6}, "intermediate_layer_idx"),
    ({"patch_size": 0}, "patch_size must be a positive integer"),
])
def test_inconsistent_configs_fail_at_load(tmp_path, capsys, change, needle):
    cfg = vggt_mv.ModelConfig.preset("vggt" if "depth" in change else "tiny").to_dict()
    cfg.update(change)
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg))
    rc, err = run_cli(capsys, *recon(SAMPLE, tmp_path / "out", "--config", str(path)))
    assert_user_error(rc, err, "reconstruct", str(path), needle)


def test_debug_shows_the_traceback(tmp_path):
    env = {"VGGT_MV_DEBUG": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "vggt_mv.cli", "reconstruct", "--scene", str(SAMPLE),
                           "--device", "tpu9", "--out", str(tmp_path / "o")], capture_output=True, text=True,
                          env={**env, "PYTHONPATH": str(REPO)}, timeout=120)
    assert proc.returncode == 2 and "Traceback" in proc.stderr and "unknown device" in proc.stderr


# ----------------------------------------------------------------------------- image decoding

def test_truncated_jpeg_names_the_file(tmp_path, capsys):
    for cam in ("cam0", "cam1"):
        (tmp_path / cam).mkdir()
        for t in range(2):
            img = cv2.imread(str(SAMPLE / "images" / f"time_0{t}" / f"view{cam[-1]}.png"))
            cv2.imwrite(str(tmp_path / cam / f"f{t}.jpg"), img)
    bad = tmp_path / "cam1" / "f1.jpg"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    rc, err = run_cli(capsys, "reconstruct", "--views", str(tmp_path / "cam0"), str(tmp_path / "cam1"),
                      "--preset", "tiny", "--resolution", "56", "--window", "2", "--overlap", "1",
                      "--no-progress", "--out", str(tmp_path / "out"))
    assert_user_error(rc, err, "reconstruct", str(bad), "truncated")
    with pytest.raises(ValueError, match="truncated"):
        io.read_rgb(bad)


def test_rgba_is_composited_on_white_and_logged_once(tmp_path, caplog):
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, :2, 3] = 255  # left two columns opaque red, the rest fully transparent
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    io._NOTED.clear()
    with caplog.at_level(logging.INFO, logger="vggt_mv.data"):
        out = [io.read_rgb(tmp_path / f"f{i}.png") for i in range(3)]
    assert (out[0][:, :2] == [200, 0, 0]).all() and (out[0][:, 2:] == 255).all()
    assert caplog.text.count("composited on white") == 1


def test_grey_masks_use_the_documented_threshold(tmp_path, caplog):
    grey = np.array([[0, 127, 128, 255]], np.uint8)
    cv2.imwrite(str(tmp_path / "m0.png"), grey)
    cv2.imwrite(str(tmp_path / "m1.png"), grey)
    cv2.imwrite(str(tmp_path / "b.png"), np.array([[0, 1, 1, 0]], np.uint8))
    io._NOTED.clear()
    with caplog.at_level(logging.INFO, logger="vggt_mv.data"):
        m = io.read_mask(tmp_path / "m0.png")
        io.read_mask(tmp_path / "m1.png")
    assert m.tolist() == [[False, False, True, True]]
    assert caplog.text.count("grey levels") == 1
    assert io.read_mask(tmp_path / "b.png").tolist() == [[False, True, True, False]]


@pytest.mark.parametrize("argv,needle", [
    (["reconstruct", "--resolution", "abc"], "argument --resolution: invalid int value: 'abc'"),
    (["train", "--size", "50x70"], "--size 50x70: H and W must be positive multiples of 14"),
    (["reconstruct", "--scene", "a", "--views", "b"], "not allowed with argument"),
])
def test_usage_errors_are_one_line_too(capsys, argv, needle):
    """argparse's own errors: one line pointing at --help, not the whole usage block."""
    with pytest.raises(SystemExit) as exit_:
        cli_main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1, err
    assert err[0].startswith(f"vggt-mv {argv[0]}: error: ") and needle in err[0]
    assert err[0].endswith(f"(see vggt-mv {argv[0]} --help)")


def test_version(capsys):
    import vggt_mv

    with pytest.raises(SystemExit) as exit_:
        cli_main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"vggt-mv {vggt_mv.__version__}"
