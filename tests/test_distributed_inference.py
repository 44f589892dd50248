"""Long captures beyond one process: lazy per-window decoding, memory-mapped stitching, windows across
gloo ranks (rank 0 stitches in order), the shared ``vggt_mv.distributed`` helpers, a killed rank."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dist_helpers import run_world
from vggt_mv import distributed
from vggt_mv.config import ModelConfig
from vggt_mv.data import io
from vggt_mv.data.scene import LazyScene, Scene, load_scene
from vggt_mv.inference.pipeline import reconstruct
from vggt_mv.model.vggt_mv import VGGTMV

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "assets" / "sample"
T, V, H, W = 7, 2, 28, 42
FIELDS = ("images", "depth", "depth_conf", "world_points", "world_points_conf", "extrinsic", "intrinsic",
          "dynamic_mask")


def _model() -> VGGTMV:
    torch.manual_seed(0)
    return VGGTMV(ModelConfig.preset("tiny")).eval()


def _scene() -> Scene:
    g = torch.Generator().manual_seed(1)
    return Scene(images=torch.rand(T, V, 3, H, W, generator=g), view_names=["a", "b"],
                 frame_names=[f"f{t}" for t in range(T)], source={"layout": "test"})


def _arrays(rec) -> dict[str, np.ndarray]:
    return {k: np.array(getattr(rec, k)) for k in FIELDS if getattr(rec, k) is not None}


# ---------------------------------------------------------------- lazy frames, memory-mapped result
def test_lazy_scene_decodes_only_the_window_asked_for(monkeypatch):
    eager = load_scene(SAMPLE, resolution=84)
    calls = []
    real = io.read_rgb
    monkeypatch.setattr(io, "read_rgb", lambda path: calls.append(path) or real(path))
    lazy = load_scene(SAMPLE, resolution=84, lazy=True)
    assert isinstance(lazy, LazyScene) and len(calls) == lazy.V == 3  # sizes: the first frame per camera
    assert (lazy.T, lazy.V, lazy.H, lazy.W) == (eager.T, eager.V, eager.H, eager.W)
    calls.clear()
    images, masks = lazy.frames(3, 7)
    assert len(calls) == 4 * lazy.V  # that window's frames only, never the sequence
    assert torch.equal(images, eager.images[3:7])
    assert (masks is None) == (eager.ext_masks is None) and (masks is None or torch.equal(masks, eager.ext_masks[3:7]))
    assert lazy.frame_names == eager.frame_names and lazy.view_names == eager.view_names
    for k in ("depth", "intrinsic", "extrinsic", "dynamic_mask"):  # ground truth, read on demand
        assert np.array_equal(getattr(lazy.gt, k), getattr(eager.gt, k))


def test_memory_mapped_result_equals_the_in_memory_one(tmp_path):
    model, scene = _model(), _scene()
    ref = reconstruct(scene, model, window=3, overlap=1, device="cpu")
    mapped = reconstruct(scene, model, window=3, overlap=1, device="cpu", store=tmp_path / "arrays")
    for name, value in _arrays(ref).items():
        np.testing.assert_array_equal(_arrays(mapped)[name], value, err_msg=name)
    assert isinstance(mapped.depth.base, np.memmap) or isinstance(mapped.depth, np.memmap)
    assert np.array_equal(np.load(tmp_path / "arrays" / "world_points.npy"), ref.world_points)
    assert ref.meta["world_size"] == 1 and [w["rank"] for w in ref.meta["windows"]] == [0, 0, 0]


# ---------------------------------------------------------------- windows across ranks
def _reconstruct_on_rank(rank: int, world: int):
    env = distributed.init_from_env("cpu", timeout=60)
    assert (env.rank, env.world_size) == (rank, world)
    rec = reconstruct(_scene(), _model(), window=3, overlap=1, device="cpu", dist_env=env)
    return None if rec is None else (_arrays(rec), rec.meta)


@pytest.fixture(scope="module")
def world_results():
    """One spawned gloo world of 2 ranks for the module (3 windows: ranks 0, 1, 0)."""
    return run_world(_reconstruct_on_rank, 2, timeout=300)


@pytest.mark.slow
def test_two_ranks_equal_one_process(world_results):
    arrays, meta = world_results[0]
    assert world_results[1] is None  # only rank 0 holds the result
    ref = reconstruct(_scene(), _model(), window=3, overlap=1, device="cpu")
    for name, value in _arrays(ref).items():
        got, finite = arrays[name].astype(np.float64), np.isfinite(value)
        assert np.array_equal(np.isfinite(got), finite) and np.array_equal(got[~finite], value[~finite]) or \
            np.isnan(value[~finite]).all(), name  # a random model's inf focal lengths: the same on both
        scale = max(float(np.abs(value[finite]).max()), 1e-12)
        assert np.abs(got[finite] - value[finite]).max() <= 1e-5 * scale, name
    assert meta["world_size"] == 2 and [w["rank"] for w in meta["windows"]] == [0, 1, 0]
    assert meta["distributed"]["max_windows_held_by_rank0"] == 1
    assert meta["distributed"]["bytes_received_by_rank0"] >= arrays["world_points"][3:5].nbytes  # window 1's share


def test_query_points_are_refused_across_ranks():
    env = distributed.DistEnv(rank=0, world_size=2)
    with pytest.raises(ValueError, match="one process"):
        reconstruct(_scene(), _model(), window=3, overlap=1, device="cpu", dist_env=env,
                    query_points=np.zeros((1, 2), np.float32))


# ---------------------------------------------------------------- the shared module
def test_timeout_and_rank_helpers(monkeypatch):
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "42")
    assert distributed.timeout_s() == 42.0 and distributed.timeout_s(5) == 5.0
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "soon")
    with pytest.raises(ValueError, match="VGGT_MV_DIST_TIMEOUT"):
        distributed.timeout_s()
    monkeypatch.delenv(distributed.TIMEOUT_ENV)
    assert distributed.timeout_s() == distributed.DEFAULT_TIMEOUT_S
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert distributed.rank_prefix() == "rank 1: " and not distributed.is_main_process()
    monkeypatch.setenv("RANK", "0")
    assert distributed.rank_prefix() == "" and distributed.is_main_process()
    assert not distributed.under_torchrun() or "MASTER_ADDR" in os.environ
    with pytest.raises(ValueError, match="CUDA is not available|LOCAL_RANK"):
        if torch.cuda.is_available():
            distributed._pick_device("cuda", 10_000)
        distributed._pick_device("cuda", 0)


def test_sigterm_raises_terminated_so_finally_blocks_run():
    cleaned = []
    with pytest.raises(distributed.Terminated) as info:
        with distributed.on_sigterm(lambda: cleaned.append(1)):
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
            finally:
                cleaned.append(2)
    assert cleaned == [1, 2] and info.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is not None  # handler restored


def test_wait_for_names_what_timed_out():
    class Stuck:
        def wait(self, timeout):
            time.sleep(timeout.total_seconds() + 0.2)
            raise RuntimeError("Timed out waiting 1000ms for recv operation to complete")

    with pytest.raises(TimeoutError, match="window 3 from rank 1"):
        distributed.wait_for(Stuck(), "window 3 from rank 1", timeout=0.3)

    class Broken:
        def wait(self, timeout):
            raise RuntimeError("Connection closed by peer [127.0.0.1]:1234")

    with pytest.raises(RuntimeError, match="lost window 2 from rank 2: Connection closed"):
        distributed.wait_for(Broken(), "window 2 from rank 2", timeout=5)


# ---------------------------------------------------------------- torchrun: a killed rank
def _torchrun(nproc: int, out: Path, *extra: str, env: dict | None = None, timeout: float = 400):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "vggt_mv", "reconstruct", "--scene", str(SAMPLE), "--preset", "tiny", "--resolution", "84",
           "--window", "4", "--overlap", "1", "--device", "cpu", "--no-progress", "--out", str(out), *extra]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env={**os.environ, **(env or {})})
    return proc, time.monotonic() - t0


@pytest.mark.slow
def test_a_killed_rank_fails_the_run_naming_rank_and_window_without_output(tmp_path):
    out = tmp_path / "out"
    proc, seconds = _torchrun(2, out, env={"VGGT_MV_TEST_DIE_RANK": "1:1", distributed.TIMEOUT_ENV: "120"})
    assert proc.returncode != 0 and seconds < 120 + 60
    lines = [line for line in proc.stderr.splitlines() if "vggt-mv reconstruct: error:" in line]
    assert lines and "rank 1" in lines[0] and "window 1" in lines[0], proc.stderr[-3000:]
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # temp folder removed
