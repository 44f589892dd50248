"""Training code: losses, GT consistency of the procedural dataset, overfitting, lambda gradients,
exact checkpoint resumption, and the ``vggt-mv train`` CLI end to end (tiny sizes, CPU)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vggt_mv.config import ModelConfig
from vggt_mv.data.synthetic import SyntheticSceneConfig, render_scene
from vggt_mv.train.data import SAMPLE_SEED, SyntheticDynamicDataset, normalize_scene
from vggt_mv.train.losses import LossConfig, compute_losses
from vggt_mv.train.trainer import TrainConfig, Trainer, lr_at

T, V, H, W = 2, 2, 28, 42


def small_cfg(**kw) -> TrainConfig:
    base = dict(steps=4, timesteps=T, views=V, height=H, width=W, warmup=1, val_every=0,
                log_every=1, ckpt_every=2, threads=2, ext_mask_prob=0.5, seed=3)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def batch() -> dict[str, torch.Tensor]:
    return SyntheticDynamicDataset(T, V, H, W, seed=0, ext_mask_prob=1.0).batch(1)


def perfect_outputs(b: dict[str, torch.Tensor], iters: int = 4) -> dict[str, torch.Tensor]:
    ones = torch.ones_like(b["depth"])
    return {
        "pose_enc_list": b["pose_enc"][None].expand(iters, *b["pose_enc"].shape).clone(),
        "depth": b["depth"][..., None].clone(), "depth_conf": ones.clone(),
        "world_points": b["world_points"].clone(), "world_points_conf": ones.clone(),
        "dynamic_logit": 12.0 * (2.0 * (b["dynamic_mask_patch"] > 0.5).float() - 1.0),  # BCE ~ 6e-6
    }


def test_losses_zero_for_perfect_and_positive_otherwise(batch):
    b = dict(batch)
    b["dynamic_mask_patch"] = (b["dynamic_mask_patch"] > 0.5).float()  # binary target: BCE minimum ~0
    cfg = LossConfig()
    terms = compute_losses(perfect_outputs(b), b, cfg)
    for k in ("camera", "cam_T", "cam_R", "cam_FL", "depth", "depth_grad", "point", "point_grad", "depth_err"):
        assert float(terms[k]) == pytest.approx(0.0, abs=1e-6), k
    assert float(terms["mask"]) < 2e-4 and float(terms["loss"]) < 2e-4
    # the quaternion sign is irrelevant
    flipped = perfect_outputs(b)
    flipped["pose_enc_list"][..., 3:7] *= -1
    assert float(compute_losses(flipped, b, cfg)["camera"]) == pytest.approx(0.0, abs=1e-6)
    # perturbing any prediction makes its term positive
    g = torch.Generator().manual_seed(0)
    for key, term in (("pose_enc_list", "camera"), ("depth", "depth"), ("world_points", "point"), ("dynamic_logit", "mask")):
        out = perfect_outputs(b)
        noise = 0.3 * torch.randn(out[key].shape, generator=g)
        out[key] = 0.05 * out[key] if key == "dynamic_logit" else out[key] + noise
        t = compute_losses(out, b, cfg)
        assert float(t[term]) > 1e-2, term
        assert float(t["loss"]) > float(terms["loss"]) + 1e-2
    # confidence: loss is c*e - alpha*log(c); for a perfect prediction higher confidence is lower loss
    out = perfect_outputs(b)
    out["depth_conf"] = out["depth_conf"] * 3
    assert float(compute_losses(out, b, cfg)["depth_reg"]) == pytest.approx(-cfg.alpha * np.log(3), rel=1e-5)
    # later refinement iterations weigh more (gamma^(n-1-i))
    early, late = perfect_outputs(b), perfect_outputs(b)
    early["pose_enc_list"][0] += 0.1
    late["pose_enc_list"][-1] += 0.1
    assert float(compute_losses(late, b, cfg)["camera"]) > float(compute_losses(early, b, cfg)["camera"])


def test_dataset_ground_truth_is_consistent():
    cfg = SyntheticSceneConfig(T=T, V=3, H=H, W=W)
    scene = render_scene(cfg, seed=11)
    gt = normalize_scene(scene)
    valid = gt["valid"].numpy()
    assert valid.mean() > 0.5
    # reference camera is the identity, and the mean distance of valid points to it is 1
    assert torch.allclose(gt["extrinsic"][0, 0], torch.eye(3, 4), atol=1e-6)
    assert float(gt["world_points"].norm(dim=-1)[gt["valid"]].mean()) == pytest.approx(1.0, abs=1e-4)
    # independent numpy unprojection of the raw scene, moved to the reference frame and scaled
    scale = float(gt["scale"])
    e_ref = np.vstack([scene.extrinsic[0, 0], [0, 0, 0, 1]]).astype(np.float64)
    vv, uu = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    pix = np.stack([uu, vv, np.ones_like(uu)], -1).astype(np.float64)
    for t in range(T):
        for v in range(3):
            k, e, d = scene.intrinsic[t, v].astype(np.float64), scene.extrinsic[t, v].astype(np.float64), scene.depth[t, v]
            cam = (pix @ np.linalg.inv(k).T) * d[..., None]
            world = (cam - e[:, 3]) @ e[:, :3]                 # R^T (x - t)
            ref = (world @ e_ref[:3, :3].T + e_ref[:3, 3]) / scale
            m = valid[t, v]
            np.testing.assert_allclose(gt["world_points"][t, v].numpy()[m], ref[m], atol=1e-4)
            # GT depth + GT (normalised) cameras reproduce the GT points: z of the point in each camera
            ext = gt["extrinsic"][t, v].double().numpy()
            z = (ref @ ext[:, :3].T + ext[:, 3])[..., 2]
            np.testing.assert_allclose(z[m], gt["depth"][t, v].numpy()[m], rtol=1e-4, atol=1e-5)
    assert torch.all(gt["depth"][~gt["valid"]] == 0)
    pe = gt["pose_enc"]
    assert pe.shape == (T, 3, 9) and torch.allclose(pe[0, 0, 3:7], torch.tensor([0.0, 0, 0, 1]), atol=1e-6)
    assert gt["dynamic_mask_patch"].shape == (T, 3, H // 14, W // 14)
    assert float(gt["dynamic_mask_patch"].mean()) == pytest.approx(float(gt["dynamic_mask"].mean()), abs=1e-5)


def test_dataset_never_draws_the_sample_seed_and_is_reproducible():
    ds = SyntheticDynamicDataset(T, V, H, W, seed=5)
    draws = iter([SAMPLE_SEED, SAMPLE_SEED, 4242])

    class FakeRng:
        def integers(self, *a, **k):
            return next(draws)

    ds.rng = FakeRng()  # type: ignore[assignment]
    assert ds.next_seed() == 4242
    a = SyntheticDynamicDataset(T, V, H, W, seed=9).batch(1)
    b = SyntheticDynamicDataset(T, V, H, W, seed=9).batch(1)
    assert torch.equal(a["images"], b["images"]) and int(a["seed"]) not in (SAMPLE_SEED,)
    # several sizes / a T range: one (T, H, W) per batch, drawn from the choices
    ds = SyntheticDynamicDataset(2, V, 28, 42, seed=1, sizes=[(28, 42), (42, 56)], max_T=3)
    shapes = {tuple(ds.batch(2)["images"].shape) for _ in range(6)}
    assert len(shapes) > 1
    assert all(s[0] == 2 and s[1] in (2, 3) and s[2] == V and s[4:] in ((28, 42), (42, 56)) for s in shapes), shapes


def test_overfit_fixed_batch_and_lambda_gradients(batch):
    tr = Trainer(small_cfg(steps=8, lr=2e-3, warmup=1, lambda_lr_mult=10.0))
    first = tr.train_step(batch)
    for name in ("lambda_pose", "lambda_geo", "lambda_pose_t", "lambda_geo_t"):
        assert first[f"grad_{name}"] != 0.0, name  # learnable lambdas receive gradients
    # the mask loss is on the head's own logit, so the fusion gains learn through the attention bias
    # only: no gradient while every lambda is 0, one as soon as the lambdas moved
    assert first["grad_external_gain"] == 0.0 and first["grad_feature_gain"] == 0.0
    second = tr.train_step(batch)
    assert second["grad_external_gain"] != 0.0 and second["grad_feature_gain"] != 0.0
    losses = [first["loss"], second["loss"]] + [tr.train_step(batch)["loss"] for _ in range(6)]
    assert min(losses[-3:]) < 0.7 * losses[0], losses
    lam = tr.model.lambdas()
    assert any(abs(v) > 1e-3 for v in lam.values()), lam  # the lambdas moved
    assert tr.model.aggregator.spatial_mask_head is not None


def test_lr_schedule():
    cfg = TrainConfig(steps=100, warmup=10, lr=1.0, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(10, cfg) == pytest.approx(1.0) and lr_at(100, cfg) == pytest.approx(0.1)
    assert lr_at(40, cfg) > lr_at(70, cfg)


def test_checkpoint_resume_is_bit_identical(tmp_path):
    full = Trainer(small_cfg(steps=3), tmp_path / "full")
    full.fit(progress=False)
    part = Trainer(small_cfg(steps=2), tmp_path / "part")
    part.fit(progress=False)                      # writes checkpoint.pt at step 2
    resumed = Trainer.resume(tmp_path / "part" / "checkpoint.pt", tmp_path / "part", steps=3)
    assert resumed.step == 2
    resumed.fit(progress=False)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_cli_trains_and_writes_loadable_weights(tmp_path, caplog):
    import json
    import logging

    from vggt_mv.cli import main
    from vggt_mv.weights.loader import load_model

    out = tmp_path / "run"
    rc = main(["train", "--preset", "tiny", "--steps", "2", "--out", str(out),
               "--views", str(V), "--timesteps", str(T), "--threads", "2", "--val-every", "2",
               "--no-progress", "--seed", "1", "--log-every", "1", "--size", f"{H}x{W},42x56", "--timesteps", "2-3"])
    assert rc == 0
    for name in ("checkpoint.pt", "model.safetensors", "model.json", "log.jsonl"):
        assert (out / name).is_file(), name
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    run, steps = records[0], [r for r in records if r["kind"] == "step"]
    assert run["kind"] == "run" and run["world_size"] == 1 and run["strategy"] == "none"
    assert run["train_config"]["extra_sizes"] == [[42, 56]] and run["train_config"]["max_timesteps"] == 3
    assert sum(r["trainable"] for r in run["trainable"]) == sum(r["total"] for r in run["trainable"])
    assert [r["step"] for r in steps] == [1, 2] and "val_abs_rel" in steps[-1]
    for key in ("loss", "camera", "depth", "point", "mask", "lr", "lambda_pose", "images_per_s", "peak_memory_mb"):
        assert key in steps[0], key
    model, report = load_model(ModelConfig.preset("tiny"), checkpoint=out / "model.safetensors")
    n = len(model.state_dict())
    assert report.fraction_loaded("checkpoint") == pytest.approx(1.0)
    assert not report.left_at_init and not report.skipped
    ckpt = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
    sd = model.state_dict()
    assert set(ckpt["model"]) == set(sd) and len(sd) == n
    for k, v in ckpt["model"].items():
        assert torch.equal(v, sd[k]), k  # 100% of tensors loaded from the file
    assert main(["train", "--steps", "2", "--out", str(out), "--no-progress"]) == 2  # refuses to overwrite
    assert main(["train", "--out", str(out), "--resume", "--no-progress"]) == 2  # at step 2 of 2: nothing to do
    weights = (out / "model.safetensors").read_bytes()
    with caplog.at_level(logging.WARNING, logger="vggt_mv.train"):
        assert main(["train", "--steps", "3", "--out", str(out), "--resume", "--no-progress", "--lr", "0.5"]) == 0
    assert "saved settings; ignored: --lr 0.5" in caplog.text  # the run keeps its own lr
    steps = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()][1:]
    assert [r["step"] for r in steps if r["kind"] == "step"] == [1, 2, 3]  # resumed: appended after step 2
    assert steps[-2]["lr"] < 0.5 and (out / "model.safetensors").read_bytes() != weights


def test_init_from_saved_weights_and_refuses_partial_files(tmp_path):
    from safetensors.torch import save_file

    first = Trainer(small_cfg(steps=1), tmp_path / "a")
    first.fit(progress=False)
    weights = tmp_path / "a" / "model.safetensors"
    again = Trainer(small_cfg(steps=1, init=str(weights), seed=9))  # another seed would init differently
    a, b = first.model.state_dict(), again.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    half = dict(list(a.items())[: len(a) // 2])
    save_file({k: v.contiguous() for k, v in half.items()}, str(tmp_path / "half.safetensors"))
    with pytest.raises(ValueError, match="do not fit the 'tiny' model: no weights for"):
        Trainer(small_cfg(init=str(tmp_path / "half.safetensors")))
    # resuming does not re-read the init file (it may have moved since)
    first.cfg.init = str(tmp_path / "gone.safetensors")
    first.save_checkpoint()
    assert Trainer.resume(tmp_path / "a" / "checkpoint.pt").cfg.init.endswith("gone.safetensors")


def test_camera_arc_range_is_sampled():
    from vggt_mv.train.data import SceneSampling

    ds = SyntheticDynamicDataset(T, V, H, W, seed=0, sampling=SceneSampling(arc_deg=(30.0, 90.0)))
    arcs = [ds.scene_config().arc_deg for _ in range(20)]
    assert all(30.0 <= a <= 90.0 for a in arcs) and max(arcs) - min(arcs) > 20.0
    fixed = SyntheticDynamicDataset(T, V, H, W, seed=0, sampling=SceneSampling(arc_deg=(60.0, 60.0)))
    assert fixed.scene_config().arc_deg == 60.0


def test_worker_batches_are_determined_by_the_step(tmp_path):
    from vggt_mv.train.batches import batch_for_step, batches

    cfg = small_cfg(steps=2, workers=2)
    a, b = batch_for_step(cfg, 1), batch_for_step(cfg, 1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(batch_for_step(cfg, 0)["images"], a["images"])
    assert not torch.equal(batch_for_step(cfg, 1, rank=1)["images"], a["images"])  # each rank its own
    fetched = list(batches(cfg, 0))  # rendered in 2 processes, delivered in step order
    assert len(fetched) == 2 and all(torch.equal(fetched[1][k], a[k]) for k in a)
    in_process = list(batches(small_cfg(steps=2), 0))
    assert all(torch.equal(in_process[1][k], a[k]) for k in a)
    tr = Trainer(cfg, tmp_path / "w")
    summary = tr.fit(progress=False)  # batches rendered by 2 spawned processes
    assert tr.step == 2 and summary["steps_run"] == 2 and (tmp_path / "w" / "model.safetensors").is_file()


def test_run_log_resume_drops_records_past_the_checkpoint(tmp_path):
    from vggt_mv.train.run_log import RunLog, read_log

    log = RunLog(tmp_path, tensorboard=False)
    log.start({"train_config": {}, "world_size": 1})
    for step in (1, 2, 3, 4):
        log.append({"kind": "step", "step": step, "loss": float(step)})
    RunLog(tmp_path, tensorboard=False).start({"train_config": {}}, resume_step=2)  # resumed from step 2
    assert [(r["kind"], r.get("step")) for r in read_log(tmp_path / "log.jsonl")] == [("run", None), ("step", 1), ("step", 2)]
    assert RunLog(tmp_path, enabled=False).path is None  # ranks other than 0 write nothing


def test_run_log_writes_tensorboard_events_when_installed(tmp_path):
    pytest.importorskip("tensorboard")
    from vggt_mv.train.run_log import RunLog

    log = RunLog(tmp_path)
    log.start({"train_config": {}})
    log.append({"kind": "step", "step": 1, "loss": 0.5})
    log.close()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
