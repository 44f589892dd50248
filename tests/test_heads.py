"""Parity of the prediction heads with the reference VGGT outputs (vggt_tiny fixture)."""
from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

from vggt_mv.config import CameraHeadConfig, DPTHeadConfig, ModelConfig, TrackHeadConfig
from vggt_mv.heads import (
    CameraHead,
    DPTHead,
    TrackHead,
    extri_intri_to_pose_encoding,
    mat_to_quat,
    pose_encoding_to_extri_intri,
    quat_to_mat,
)

REF = Path(os.environ.get("VGGT_MV_REFERENCE", Path(__file__).resolve().parents[1].parent / "shared" / "reference"))
CASE = REF / "parity" / "vggt_tiny"
KEYS = REF / "keys" / "vggt.tsv"
TOL = dict(rtol=1e-4, atol=1e-4)
TRACK_TOL = dict(rtol=0.0, atol=1e-4)

needs_fixture = pytest.mark.skipif(
    not (CASE / "checkpoint.pt").exists(), reason=f"reference fixture not found at {CASE} (../shared beside the repo)"
)


@pytest.fixture(scope="module")
def fixture() -> dict:
    from safetensors.torch import load_file

    torch.manual_seed(0)
    cfg = ModelConfig.from_json(CASE / "model_config.json")
    sd = torch.load(CASE / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]
    inputs = load_file(str(CASE / "inputs.safetensors"))
    expected = load_file(str(CASE / "expected.safetensors"))
    tokens: list[torch.Tensor | None] = [None] * cfg.depth
    for i in (4, 11, 17, 23):
        tokens[i] = expected[f"tokens_layer_{i}"]
    return dict(cfg=cfg, sd=sd, inputs=inputs, expected=expected, tokens=tokens)


def _load(head: torch.nn.Module, sd: dict[str, torch.Tensor], prefix: str) -> torch.nn.Module:
    sub = {k[len(prefix):]: v.float() for k, v in sd.items() if k.startswith(prefix)}
    assert sub, f"no {prefix}* keys in the checkpoint"
    head.load_state_dict(sub, strict=True)  # every key consumed, none missing
    return head.float().eval()


@needs_fixture
def test_camera_head_parity(fixture: dict) -> None:
    head = _load(CameraHead(fixture["cfg"].camera_head), fixture["sd"], "camera_head.")
    exp = fixture["expected"]
    with torch.no_grad():
        preds = head(fixture["tokens"])
    assert len(preds) == exp["pose_enc_list"].shape[0]
    torch.testing.assert_close(preds[-1], exp["pose_enc"], **TOL)
    torch.testing.assert_close(torch.stack(preds), exp["pose_enc_list"], **TOL)
    with torch.no_grad():
        assert len(head(fixture["tokens"], num_iterations=2)) == 2


@needs_fixture
def test_pose_encoding_parity(fixture: dict) -> None:
    exp = fixture["expected"]
    h, w = fixture["inputs"]["images"].shape[-2:]
    extrinsic, intrinsic = pose_encoding_to_extri_intri(exp["pose_enc"], (h, w))
    torch.testing.assert_close(extrinsic, exp["extrinsic"], **TOL)
    torch.testing.assert_close(intrinsic, exp["intrinsic"], **TOL)


@needs_fixture
@pytest.mark.parametrize("name,key", [("depth_head", "depth"), ("point_head", "world_points")])
def test_dpt_head_parity(fixture: dict, name: str, key: str) -> None:
    head = _load(DPTHead(getattr(fixture["cfg"], name)), fixture["sd"], f"{name}.")
    exp, images = fixture["expected"], fixture["inputs"]["images"]
    with torch.no_grad():
        preds, conf = head(fixture["tokens"], images, patch_start_idx=fixture["cfg"].patch_start_idx)
        preds_c, conf_c = head(fixture["tokens"], images, fixture["cfg"].patch_start_idx, frames_chunk_size=2)
    torch.testing.assert_close(preds, exp[key], **TOL)
    torch.testing.assert_close(conf, exp[f"{key}_conf"], **TOL)
    # Chunking over frames must not change the result (beyond conv reduction-order noise).
    torch.testing.assert_close(preds_c, preds, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(conf_c, conf, rtol=1e-5, atol=1e-5)


@needs_fixture
def test_track_head_parity(fixture: dict) -> None:
    head = _load(TrackHead(fixture["cfg"].track_head), fixture["sd"], "track_head.")
    exp, inp = fixture["expected"], fixture["inputs"]
    with torch.no_grad():
        coords, vis, conf = head(fixture["tokens"], inp["images"], fixture["cfg"].patch_start_idx, inp["query_points"])
    torch.testing.assert_close(coords[-1], exp["track"], **TRACK_TOL)
    torch.testing.assert_close(torch.stack(coords), exp["track_list"], **TRACK_TOL)
    torch.testing.assert_close(vis, exp["vis"], **TOL)
    torch.testing.assert_close(conf, exp["conf"], **TOL)
    torch.testing.assert_close(coords[-1][:, 0], inp["query_points"], rtol=0, atol=0)


def test_quaternion_round_trip() -> None:
    g = torch.Generator().manual_seed(0)
    q = torch.randn(64, 4, generator=g, dtype=torch.float64)
    q = q / q.norm(dim=-1, keepdim=True)
    q = torch.where(q[..., 3:4] < 0, -q, q)
    rot = quat_to_mat(q)
    torch.testing.assert_close(rot @ rot.transpose(-1, -2), torch.eye(3, dtype=q.dtype).expand(64, 3, 3))
    torch.testing.assert_close(mat_to_quat(rot), q)
    # Unnormalized quaternions give the same rotation.
    torch.testing.assert_close(quat_to_mat(3.0 * q), rot)


def test_pose_encoding_round_trip() -> None:
    g = torch.Generator().manual_seed(1)
    b, s, (h, w) = 2, 5, (126, 168)
    q = torch.randn(b, s, 4, generator=g)
    q = q / q.norm(dim=-1, keepdim=True)
    q = torch.where(q[..., 3:4] < 0, -q, q)
    t = torch.randn(b, s, 3, generator=g)
    fov = 0.4 + torch.rand(b, s, 2, generator=g)
    enc = torch.cat([t, q, fov], dim=-1)
    extrinsic, intrinsic = pose_encoding_to_extri_intri(enc, (h, w))
    assert extrinsic.shape == (b, s, 3, 4) and intrinsic.shape == (b, s, 3, 3)
    torch.testing.assert_close(intrinsic[..., 0, 2], torch.full((b, s), w / 2))
    torch.testing.assert_close(intrinsic[..., 1, 2], torch.full((b, s), h / 2))
    torch.testing.assert_close(intrinsic[..., 0, 0], (w / 2) / torch.tan(fov[..., 1] / 2))
    back = extri_intri_to_pose_encoding(extrinsic, intrinsic, (h, w))
    torch.testing.assert_close(back, enc, rtol=1e-5, atol=1e-5)
    # Extra leading dims are supported.
    e2, k2 = pose_encoding_to_extri_intri(enc[None], (h, w))
    torch.testing.assert_close(e2[0], extrinsic)
    torch.testing.assert_close(k2[0], intrinsic)
    assert math.isclose(float(intrinsic[0, 0, 2, 2]), 1.0)


def _manifest(prefix: str) -> dict[str, tuple[int, ...]]:
    out = {}
    for line in KEYS.read_text().splitlines()[1:]:
        key, shape, *_ = line.split("\t")
        if key.startswith(prefix):
            out[key[len(prefix):]] = tuple(int(x) for x in shape.split("x"))
    return out


@pytest.mark.skipif(not KEYS.exists(), reason=f"key manifest not found at {KEYS}")
def test_full_size_keys_on_meta() -> None:
    """VGGT-1B-sized heads build on the meta device with exactly the released key names and shapes."""
    cfg = ModelConfig()
    with torch.device("meta"):
        heads = {
            "camera_head.": CameraHead(cfg.camera_head),
            "depth_head.": DPTHead(cfg.depth_head),
            "point_head.": DPTHead(cfg.point_head),
            "track_head.": TrackHead(cfg.track_head),
        }
    for prefix, head in heads.items():
        got = {k: tuple(v.shape) for k, v in head.state_dict().items()}
        assert got == _manifest(prefix), prefix


def test_small_heads_train_backward() -> None:
    """Randomly initialised small heads run in train mode, with finite gradients into the tokens."""
    torch.manual_seed(0)
    dim, b, s, h, w, p0 = 32, 1, 3, 28, 42, 5
    tokens = torch.randn(b, s, p0 + (h // 14) * (w // 14), dim, requires_grad=True)
    toks: list[torch.Tensor | None] = [tokens] * 4
    images = torch.rand(b, s, 3, h, w)
    small_dpt = dict(dim_in=dim, features=16, out_channels=[8, 16, 32, 32], intermediate_layer_idx=[0, 1, 2, 3])
    cam = CameraHead(CameraHeadConfig(dim_in=dim, num_heads=2, trunk_depth=1))
    dpt = DPTHead(DPTHeadConfig(output_dim=4, **small_dpt))
    fe = DPTHeadConfig(feature_only=True, down_ratio=2, pos_embed=False, **small_dpt)
    trk = TrackHead(TrackHeadConfig(dim_in=dim, features=16, hidden_size=16, corr_levels=2, corr_radius=1,
                                    updateformer_depth=2, num_virtual_tracks=4, iters=2, feature_extractor=fe))
    poses = cam(toks)
    pts, conf = dpt(toks, images, p0)
    query = torch.tensor([[[3.0, 4.0], [20.5, 11.0]]])
    coords, vis, tconf = trk(toks, images, p0, query)
    assert [x.shape for x in poses] == [(b, s, 9)] * 4
    assert pts.shape == (b, s, h, w, 3) and conf.shape == (b, s, h, w)
    assert len(coords) == 2 and coords[-1].shape == (b, s, 2, 2) and vis.shape == tconf.shape == (b, s, 2)
    loss = poses[-1].sum() + pts.mean() + conf.mean() + coords[-1].sum() + vis.sum() + tconf.sum()
    loss.backward()
    assert tokens.grad is not None and torch.isfinite(tokens.grad).all() and tokens.grad.abs().sum() > 0
