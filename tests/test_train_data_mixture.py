"""The --data training stream: weighted mixture, pure in (seed, step, rank), crops that keep the
geometry, split by sequence, and the train CLI on real-format data."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from test_data_formats import assert_geometry

from vggt_mv.data.clips import CropBox, crop_clip, frame_indices, random_crop
from vggt_mv.data.formats import open_source
from vggt_mv.data.mixture import ClipConfig, MixtureData, MixtureStream

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "assets" / "sample"
SMALL = ClipConfig(timesteps=(2, 3), views=(2, 3), sizes=[(56, 70), (42, 84)])


def test_mixture_of_dump_and_synthetic_draws_both_about_equally():
    m = MixtureData([f"dump:{SAMPLE}@1", "synthetic@1"], SMALL)
    draws = [m.source_index(seed=0, step=s, rank=0, index=i) for s in range(100) for i in range(2)]
    counts = np.bincount(draws, minlength=2)
    assert counts.sum() == 200 and abs(counts[0] - counts[1]) <= 40, counts  # 1:1 (|diff| < 3 sd)
    for s in range(3):                            # the real samples come from the drawn source
        out = m.sample(0, s, 0, 0)
        assert int(out["source"]) == m.source_index(0, s, 0, 0)
    skewed = MixtureData([f"dump:{SAMPLE}@3", "synthetic"], SMALL)
    share = np.mean([skewed.source_index(0, s, 0, 0) == 0 for s in range(200)])
    assert 0.65 < share < 0.85, share             # 3:1


def test_clip_sampling_is_a_pure_function_of_seed_step_rank():
    a = MixtureData([str(SAMPLE), "synthetic"], SMALL).batch_at(seed=5, step=3, batch_size=2, rank=1)
    b = MixtureData([str(SAMPLE), "synthetic"], SMALL).batch_at(seed=5, step=3, batch_size=2, rank=1)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    m = MixtureData([str(SAMPLE)], SMALL)
    base = m.batch_at(5, 3, 1, rank=1)
    for other in (m.batch_at(5, 3, 1, rank=0), m.batch_at(5, 4, 1, rank=1), m.batch_at(6, 3, 1, rank=1)):
        assert base["images"].shape != other["images"].shape or not torch.equal(base["images"], other["images"])
    stream = MixtureStream(m, seed=5, rank=1)
    stream.load_state_dict({"step": 3})           # resumption = the step counter
    assert torch.equal(stream.batch(1)["images"], base["images"]) and stream.state_dict() == {"step": 4}


def test_clips_have_random_views_stride_and_valid_gt():
    m = MixtureData([str(SAMPLE)], SMALL)
    seq = m.sources[0].sequences[0]
    strides, orders = set(), set()
    for step in range(30):
        rng = np.random.default_rng(step)
        f = frame_indices(rng, seq.num_frames, 3, 3)
        strides.add(f[1] - f[0])
        orders.add(tuple(int(v) for v in rng.permutation(3)[:2]))
    assert strides == {1, 2, 3} and len(orders) == 6
    b = m.batch_at(0, 0, 2)
    T, V = b["images"].shape[1:3]
    assert T in (2, 3) and V in (2, 3) and b["has_mask"].all()
    assert torch.allclose(b["extrinsic"][:, 0, 0], torch.eye(3, 4).expand(2, 3, 4), atol=1e-6)  # reference camera
    pts = b["world_points"][b["valid"]]
    for i in range(2):                               # mean point distance 1 (VGGT normalisation)
        d = b["world_points"][i][b["valid"][i]].norm(dim=-1).mean()
        assert abs(float(d) - 1.0) < 1e-4
    assert pts.numel() > 0


def test_crops_keep_intrinsics_depth_and_masks_consistent():
    clip = open_source(str(SAMPLE)).sequences[0].read([0, 4], [0, 1, 2])
    H0, W0 = clip.images.shape[2:4]
    shifted = crop_clip(clip, [CropBox(10, 20, 150, 120, (120, 150)), CropBox(0, 5, 150, 120, (120, 150)),
                               CropBox(60, 40, 150, 120, (120, 150))])
    assert_geometry(shifted)                         # unscaled crops: exact cross-view depth check
    assert np.array_equal(shifted.dynamic_mask[:, 0], clip.dynamic_mask[:, 0, 20:140, 10:160])
    rng = np.random.default_rng(0)
    box = random_crop(rng, (H0, W0), (56, 84))
    assert 0 <= box.x0 and box.x0 + box.w <= W0 and box.y0 + box.h <= H0
    out = crop_clip(clip, [box] * 3)
    # a world point projects to the same place through (crop then new K) and (old K then box map)
    K, E = clip.intrinsic[0, 0], clip.extrinsic[0, 0]
    X = np.array([0.3, 0.5, 0.1])
    xc = E[:, :3] @ X + E[:, 3]
    uv_old = (K @ xc)[:2] / xc[2]
    sx, sy = box.scale_xy
    expect = np.array([(uv_old[0] - box.x0 + 0.5) * sx - 0.5, (uv_old[1] - box.y0 + 0.5) * sy - 0.5])
    uv_new = (out.intrinsic[0, 0] @ xc)[:2] / xc[2]
    assert np.allclose(uv_new, expect, atol=1e-9)
    assert out.images.shape[2:4] == (56, 84) and out.dynamic_mask.shape[2:] == (56, 84)
    assert 0 <= out.dynamic_mask.min() and out.dynamic_mask.max() <= 1


def test_split_by_sequence(tmp_path):
    for name in ("a", "b"):
        shutil.copytree(SAMPLE, tmp_path / "root" / name, ignore=shutil.ignore_patterns("cam*"))
    m = MixtureData([str(tmp_path / "root")], SMALL, val_data=[str(tmp_path / "root" / "b")])
    assert [s.name for s in m.sources[0].sequences] == ["a"]
    val = m.validation_batch(2)
    assert val["images"].shape[:3] == (2, 2, 3) and not val["ext_mask_on"].any()
    with pytest.raises(ValueError, match="every sequence of it is also in --val-data"):
        MixtureData([str(tmp_path / "root" / "b")], SMALL, val_data=[str(tmp_path / "root")])
    shutil.rmtree(tmp_path / "root" / "a" / "depths")
    with pytest.raises(ValueError, match="training needs depth"):
        MixtureData([str(tmp_path / "root" / "a")], SMALL)


def test_train_cli_on_dump_and_synthetic_with_workers(tmp_path, capsys):
    from vggt_mv.train.batches import batch_for_step, batches
    from vggt_mv.train.config import TrainConfig

    cfg = TrainConfig(steps=2, batch_size=1, timesteps=2, views=2, height=42, width=56, threads=1,
                      data=[f"dump:{SAMPLE}", "synthetic"], val_data=["synthetic"], val_every=2, log_every=1)
    first = next(batches(cfg, 0))
    assert torch.equal(first["images"], batch_for_step(cfg, 0)["images"])  # worker batches = in-process ones
    from vggt_mv.cli import main

    out = tmp_path / "run"
    args = ["train", "--out", str(out), "--steps", "2", "--size", "42x56", "--timesteps", "2", "--views", "2",
            "--threads", "1", "--workers", "1", "--no-progress", "--data", f"dump:{SAMPLE}@1",
            "--data", "synthetic@1", "--val-data", "synthetic", "--val-every", "2"]
    assert main(args) == 0
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert records[0]["train_config"]["data"] == [f"dump:{SAMPLE}@1", "synthetic@1"]
    assert "val_loss" in records[-2] and (out / "model.safetensors").is_file()
    capsys.readouterr()
    assert main(["train", "--out", str(tmp_path / "bad"), "--steps", "1", "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no known training-data layout" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("extra,needle", [
    (["--val-data", "nowhere"], "--val-data nowhere: no such file or folder"),  # was found after training
    (["--data", "foo:/tmp"], "--data foo:/tmp: unknown format 'foo'; use one of dexycb, dump"),
    (["--device", "cuda:0"] if not torch.cuda.is_available() else ["--device", "tpu9"], "device"),
])
def test_train_options_are_checked_before_anything_runs(tmp_path, capsys, extra, needle):
    from vggt_mv.cli import main

    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--steps", "1", "--size", "42x56", "--no-progress", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1, err
    assert not out.exists()  # nothing written
