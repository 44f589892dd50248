"""Pre-run cost estimate: counts that follow the architecture (layout, streams, windows)."""
from __future__ import annotations

from vggt_mv.config import ModelConfig
from vggt_mv.inference.estimate import estimate_run, forward_flops


def test_flops_follow_layout_streams_and_size():
    cfg = ModelConfig.preset("tiny")
    flat = forward_flops(cfg, 8, 4, 140, 196, "flat")
    fact = forward_flops(cfg, 8, 4, 140, 196, "factorized")
    assert fact < flat  # factorized attention groups are smaller than one global group
    single = cfg.replace(mask={"mode": "tokens"})
    assert forward_flops(single, 4, 2, 56, 70) < forward_flops(cfg, 4, 2, 56, 70)  # streams run layers twice
    assert forward_flops(cfg, 8, 2, 56, 70) > 1.9 * forward_flops(cfg, 4, 2, 56, 70)


def test_estimate_scales_with_windows_and_reports_memory():
    cfg = ModelConfig.preset("tiny")
    one = estimate_run(cfg, 4, 3, 56, 70, window=4, overlap=1)
    three = estimate_run(cfg, 10, 3, 56, 70, window=4, overlap=1)
    assert three.windows == 3 and one.windows == 1
    assert three.gflops > 2.9 * one.gflops
    assert one.peak_bytes > 4 * 1e6 and one.seconds > 0
    assert "GiB" in str(one)


# ------------------------------------------------------------------ memory guard (issue 12)
import logging  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from vggt_mv.inference import estimate as est_mod  # noqa: E402
from vggt_mv.inference.estimate import RunShape, check_memory, host_budget, parse_bytes, scene_shape  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "assets" / "sample"


def test_host_memory_grows_with_frames_and_pixels():
    cfg = ModelConfig.preset("tiny")
    a = estimate_run(cfg, 100, 3, 84, 112, window=8, overlap=2, timed=False)
    b = estimate_run(cfg, 200, 3, 84, 112, window=8, overlap=2, timed=False)
    c = estimate_run(cfg, 10, 3, 168, 224, window=8, overlap=2, timed=False)
    # the window's activations do not grow with T; frames / result / exports do, linearly (with
    # many timesteps the export phase is the peak)
    assert b.device_bytes == a.device_bytes
    px = 100 * 3 * 84 * 112
    assert b.host_bytes - a.host_bytes == pytest.approx(px * (est_mod.FRAME_BYTES + est_mod.GT_BYTES +
                                                              est_mod.RESULT_BYTES + est_mod.EXPORT_BYTES))
    small = estimate_run(cfg, 10, 3, 84, 112, window=8, overlap=2, timed=False)
    assert c.peak_bytes - c.device_bytes > 3.5 * (small.peak_bytes - small.device_bytes - est_mod.FIRST_LOAD_BYTES)
    no_export = estimate_run(cfg, 100, 3, 84, 112, window=8, overlap=2, timed=False, exports=False)
    loaded = estimate_run(cfg, 10, 3, 84, 112, window=8, overlap=2, timed=False, model_loaded=True)
    assert no_export.host_bytes < a.host_bytes  # with many timesteps the exports are the peak
    assert small.peak_bytes - loaded.peak_bytes == est_mod.model_bytes(cfg) + est_mod.FIRST_LOAD_BYTES


def test_budget_is_the_smallest_of_meminfo_cgroup_and_cap(monkeypatch, tmp_path):
    monkeypatch.delenv("VGGT_MV_MEMORY_CAP", raising=False)
    free, source = host_budget()
    assert free > 0 and source
    monkeypatch.setenv("VGGT_MV_MEMORY_CAP", "123M")
    assert host_budget() == (123 * 2**20, "VGGT_MV_MEMORY_CAP")
    assert parse_bytes("2G") == 2 * 2**30 and parse_bytes("1.5GiB") == int(1.5 * 2**30) and parse_bytes("77") == 77
    with pytest.raises(ValueError, match="not a memory size"):
        parse_bytes("lots")
    # a cgroup v2 limit: memory.max - memory.current
    real = Path
    cg = tmp_path / "cgroup"
    cg.mkdir()
    (cg / "memory.max").write_text("1073741824\n")
    (cg / "memory.current").write_text("1000000000\n")
    monkeypatch.delenv("VGGT_MV_MEMORY_CAP")
    monkeypatch.setattr(est_mod, "Path", lambda p: cg if p == "/sys/fs/cgroup" else real(p))
    assert host_budget() == (1073741824 - 1000000000, "cgroup memory.max")
    (cg / "memory.max").write_text("max\n")  # no limit: MemAvailable decides
    assert host_budget()[1] == "MemAvailable"


def test_check_memory_refuses_with_the_largest_fitting_settings(monkeypatch):
    cfg = ModelConfig.preset("tiny")
    shape = RunShape(t=10, v=3, h=392, w=518, window=8, overlap=2)
    need = estimate_run(cfg, 10, 3, 392, 518, window=8, overlap=2, timed=False).peak_bytes
    monkeypatch.setenv("VGGT_MV_MEMORY_CAP", str(need + 1))
    assert check_memory(cfg, shape, resolutions=[112, 224, 518]) is None  # fits exactly
    monkeypatch.setenv("VGGT_MV_MEMORY_CAP", str(need // 3))
    problem = check_memory(cfg, shape, resolutions=[112, 168, 224, 280, 336, 392])
    assert problem and "GiB of RAM" in problem and "VGGT_MV_MEMORY_CAP" in problem
    res = int(problem.split("resolution ")[1].split()[0])
    frames = int(problem.split(" frame(s)")[0].split()[-1])
    fit = lambda **kw: estimate_run(cfg, **{**dict(t=10, v=3, h=392, w=518, window=8, overlap=2), **kw},  # noqa: E731
                                    timed=False).peak_bytes <= need // 3
    # the suggestions fit, and one step larger would not: the largest that fits
    h = lambda r: max(14, round(392 * r / 518 / 14) * 14)  # noqa: E731
    assert fit(h=h(res), w=res) and not fit(h=h(res + 56), w=res + 56)
    span = lambda t: dict(t=t, window=min(8, t), overlap=min(2, t - 1))  # noqa: E731
    assert fit(**span(frames)) and not fit(**span(frames + 1))
    monkeypatch.setenv("VGGT_MV_MEMORY_CAP", "1M")
    assert "even the smallest" in check_memory(cfg, shape, resolutions=[112])


@pytest.mark.skipif(not SAMPLE.is_dir(), reason="bundled sample not present")
def test_scene_shape_matches_load_scene_without_decoding():
    from vggt_mv.data.scene import load_scene

    shape = scene_shape(SAMPLE, resolution=112, frame_range=(0, 4), stride=1)
    scene = load_scene(SAMPLE, resolution=112, frame_range=(0, 4))
    assert shape[:4] == (scene.T, scene.V, scene.H, scene.W) and shape[4] == (scene.gt is not None)


@pytest.mark.skipif(not SAMPLE.is_dir(), reason="bundled sample not present")
def test_reconstruct_refuses_a_run_that_does_not_fit(tmp_path, capsys, monkeypatch, caplog):
    from vggt_mv.cli import main

    argv = ["reconstruct", "--scene", str(SAMPLE), "--preset", "tiny", "--resolution", "112", "--frames", "0:3",
            "--window", "3", "--overlap", "1", "--no-progress", "--device", "cpu"]
    monkeypatch.setenv("VGGT_MV_MEMORY_CAP", "20M")
    with caplog.at_level(logging.INFO):
        rc = main(argv + ["--out", str(tmp_path / "a")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("vggt-mv reconstruct: error: this run needs"), err
    assert "--no-memory-check" in err[0] and "Traceback" not in err[0]
    assert "scene:" not in caplog.text and "demo weights" not in caplog.text  # refused before loading
    assert not (tmp_path / "a").exists()
    assert main(argv + ["--out", str(tmp_path / "b"), "--no-memory-check"]) == 0
    assert (tmp_path / "b" / "manifest.json").is_file() and (tmp_path / "b" / "arrays").is_dir()


def test_streamed_runs_hold_one_window_of_frames():
    """vggt-mv reconstruct decodes frames per window and memory-maps the result: its host estimate
    grows with T only by the ground truth and the exports, far less than an in-memory run's."""
    from vggt_mv.config import ModelConfig
    from vggt_mv.inference.estimate import estimate_run

    cfg = ModelConfig.preset("tiny")
    short = [estimate_run(cfg, 10, 3, 112, 154, window=4, overlap=1, timed=False, streamed=s, gt=False, exports=False)
             for s in (False, True)]
    long = [estimate_run(cfg, 40, 3, 112, 154, window=4, overlap=1, timed=False, streamed=s, gt=False, exports=False)
            for s in (False, True)]
    assert long[1].host_bytes == short[1].host_bytes  # one window of frames, whatever T
    grown = long[0].host_bytes - short[0].host_bytes  # an in-memory run: frames + result for 30 more steps
    assert grown >= 30 * 3 * 112 * 154 * (12 + 31) and long[0].host_bytes > long[1].host_bytes
