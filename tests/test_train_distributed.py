"""Training across processes (gloo on CPU, one thread per rank): a DDP / FSDP2 step equals one process
on the union of the ranks' batches, ranks stay identical, resumption is exact, and the torchrun
command line trains, logs on rank 0 and stops every rank on a non-finite loss."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dist_helpers import free_port, run_world
from vggt_mv.train.batches import batch_for_step
from vggt_mv.train.config import TrainConfig
from vggt_mv.train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "assets" / "weights" / "tiny.safetensors")


def cfg(**kw) -> TrainConfig:
    base = dict(steps=4, timesteps=2, views=2, height=28, width=42, warmup=1, val_every=0, log_every=1,
                ckpt_every=2, threads=1, ext_mask_prob=0.5, seed=3, grad_clip=0.0, lr=1e-3)
    base.update(kw)
    return TrainConfig(**base)


def _full(t: torch.Tensor | None) -> torch.Tensor | None:
    from torch.distributed.tensor import DTensor

    if t is None:
        return None
    return (t.full_tensor() if isinstance(t, DTensor) else t).detach().clone()


def _step_grads_and_params(tr: Trainer, batch) -> tuple[dict, dict]:
    tr.train_step(batch)
    grads = {n: _full(p.grad) for n, p in tr.model.named_parameters()}
    params = {n: _full(p) for n, p in tr.model.named_parameters()}
    return grads, params


def _world_body(rank: int, world: int, out: str) -> dict:
    from vggt_mv import distributed

    env = distributed.init_from_env("cpu")
    result: dict = {}
    for strategy in ("ddp", "fsdp"):
        c = cfg(strategy=strategy)
        tr = Trainer(c, env=env)
        result[strategy] = _step_grads_and_params(tr, batch_for_step(c, 0, rank))
        # resumption: 2 steps, checkpoint, "killed"; a new trainer resumes and finishes at 4
        run_dir = Path(out) / strategy
        part = Trainer(c, run_dir, env=env)
        for step in range(2):
            part.train_step(batch_for_step(c, step, rank))
        part.save_checkpoint()
        del part
        found = run_dir / ("checkpoint" if strategy == "fsdp" else "checkpoint.pt")
        resumed = Trainer.resume(found, run_dir, env=env)
        assert resumed.step == 2
        resumed.fit(progress=False)
        full = Trainer(c, env=env)
        full.fit(progress=False)
        result[f"{strategy}_resume"] = ({n: _full(p) for n, p in resumed.model.named_parameters()},
                                        {n: _full(p) for n, p in full.model.named_parameters()})
    return result


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> list[dict]:
    """One gloo world of 2 ranks for the whole module (DDP and FSDP steps, resumption)."""
    return run_world(_world_body, 2, str(tmp_path_factory.mktemp("runs")), timeout=600)


def _single_process_reference(strategy_cfg: TrainConfig) -> tuple[dict, dict]:
    """One process, one step on the union of rank 0's and rank 1's batches."""
    torch.set_num_threads(1)
    c = cfg()
    union = [batch_for_step(c, 0, r) for r in range(2)]
    batch = {k: torch.cat([union[0][k], union[1][k]]) for k in union[0]}
    return _step_grads_and_params(Trainer(c), batch)


def _assert_close(a: dict, b: dict, what: str, rtol: float = 1e-5, atol: float = 1e-9) -> None:
    assert a.keys() == b.keys()
    for n in a:
        if a[n] is None or b[n] is None:
            assert a[n] is None and b[n] is None, f"{what}: {n} has a gradient on one side only"
            continue
        scale = float(b[n].abs().max()) or 1.0
        err = float((a[n] - b[n]).abs().max())
        assert err <= rtol * scale + atol, f"{what}: {n} differs by {err:.3g} (scale {scale:.3g})"


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_a_step_equals_one_process_on_the_union_of_the_rank_batches(world, strategy):
    grads_ref, params_ref = _single_process_reference(cfg())
    for rank, res in enumerate(world):
        grads, params = res[strategy]
        _assert_close(grads, grads_ref, f"{strategy} rank {rank} gradients")
        # (parameters are not compared with the reference: Adam's first step is ~lr * sign(g), so
        # float noise in a near-zero gradient element moves it by up to 2 lr)
    zero_d = [n for n, p in params_ref.items() if p.dim() == 0]
    assert zero_d and all(world[0][strategy][1][n] == world[1][strategy][1][n] for n in zero_d)
    for n in params_ref:  # every rank holds identical parameters after the step
        assert torch.equal(world[0][strategy][1][n], world[1][strategy][1][n]), n


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_resuming_after_a_checkpoint_reproduces_the_uninterrupted_run(world, strategy):
    for rank, res in enumerate(world):
        resumed, full = res[f"{strategy}_resume"]
        for n in full:
            assert torch.equal(resumed[n], full[n]), f"{strategy} rank {rank}: {n}"


def test_accumulating_two_micro_batches_equals_one_batch_of_both():
    torch.set_num_threads(1)
    c1 = cfg(batch_size=2, accum=1)
    batch = batch_for_step(c1, 0)
    one = _step_grads_and_params(Trainer(c1), batch)
    two = _step_grads_and_params(Trainer(cfg(batch_size=1, accum=2)), batch)
    _assert_close(two[0], one[0], "accumulated gradients")


# ---------------------------------------------------------------------------------------- torchrun
def _torchrun(args: list[str], timeout: float = 600, **env) -> subprocess.CompletedProcess:
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", f"--master-port={free_port()}", "--nproc_per_node", "2",
           "-m", "vggt_mv", *args]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "VGGT_MV_DIST_TIMEOUT": "120", **env}
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=environment)


TRAIN = ["train", "--data", "dump:assets/sample", "--preset", "tiny", "--init", DEMO, "--device", "cpu",
         "--size", "42x56", "--timesteps", "2", "--views", "2", "--val-every", "0", "--log-every", "1",
         "--ckpt-every", "2", "--no-progress"]


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_torchrun_trains_logs_on_rank_0_and_writes_loadable_weights(tmp_path, strategy):
    from vggt_mv.weights.loader import load_model

    out = tmp_path / "x"
    r = _torchrun(TRAIN + ["--steps", "3", "--strategy", strategy, "--out", str(out)])
    assert r.returncode == 0, r.stderr[-3000:]
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert records[0]["world_size"] == 2 and records[0]["strategy"] == strategy
    assert [x["step"] for x in records if x["kind"] == "step"] == [1, 2, 3]
    assert r.stdout.count('"world_size": 2') == 1  # the summary is printed once (rank 0)
    _, report = load_model("tiny", checkpoint=out / "model.safetensors")
    assert report.fraction_params_loaded() == pytest.approx(1.0) and not report.left_at_init
    assert (out / ("checkpoint" if strategy == "fsdp" else "checkpoint.pt")).exists()


def test_a_non_finite_loss_on_one_rank_stops_both_with_one_line(tmp_path):
    r = _torchrun(TRAIN + ["--steps", "4", "--out", str(tmp_path / "nan")], timeout=300, VGGT_MV_TEST_NAN_AT="1:2")
    assert r.returncode != 0
    lines = [x for x in r.stderr.splitlines() if "non-finite loss" in x]
    assert len(lines) == 1 and "at step 2 on rank 1" in lines[0], r.stderr[-2000:]
