"""Issue 20 in the app (no browser): --config, time-bias, query points drawn on the views and as 3D
polylines in the viser scene, epipolar prior from the GT / the previous run."""
from __future__ import annotations

import numpy as np
import torch
import pytest

pytest.importorskip("viser")
pytest.importorskip("gradio")

from vggt_mv.config import ModelConfig  # noqa: E402
from vggt_mv_app.main import build_parser, defaults_from_args  # noqa: E402
from vggt_mv_app.state import SAMPLE_DIR, RunParams, SessionState, UserError, run_reconstruction  # noqa: E402
from vggt_mv_app.tracks import draw_tracks, track_colors, track_segments  # noqa: E402

pytestmark = pytest.mark.skipif(not SAMPLE_DIR.is_dir(), reason="bundled sample not present")
QUERIES = np.array([[20.0, 30.0], [56.0, 42.0], [90.0, 60.0]], np.float32)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    # the config has no weights (random init) and is first built in this module: seed it, since the
    # visibility of the random track head (>= 0.5 draws a point) depends on the init
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("app_tracks")
    cfg = d / "tiny_track.json"
    ModelConfig.preset("tiny").replace(enable_track=True).to_json(cfg)
    q = d / "q.npy"
    np.save(q, QUERIES)
    return str(cfg), str(q)


@pytest.fixture
def session():
    sess = SessionState(viser_port=0)
    yield sess
    sess.close()


def test_app_cli_takes_config_query_points_epipolar_time_bias():
    args = build_parser().parse_args(["--config", "m.json", "--query-points", "q.npy", "--epipolar", "gt",
                                      "--time-bias", "0.5"])
    d = defaults_from_args(args)
    assert (d.config, d.query_points, d.epipolar, d.time_bias) == ("m.json", "q.npy", "gt", 0.5)
    assert "vggt_mv_fin10" in build_parser().parse_args(["--preset", "vggt_mv_fin10"]).preset


def test_draw_tracks_paints_the_track_colour_at_the_point():
    img = np.full((40, 60, 3), 128, np.uint8)
    tracks = np.array([[[10.0, 10.0], [40.0, 30.0]], [[12.0, 11.0], [45.0, 28.0]]], np.float32)  # [t=2, N=2, 2]
    out = draw_tracks(img, tracks, np.ones((2, 2)))
    cols = track_colors(2)
    assert (out[11, 12] == cols[0]).all() and (out[28, 45] == cols[1]).all()
    assert (img == 128).all()  # input untouched
    seg, col = track_segments(np.array([[[0, 0, 0], [np.nan] * 3], [[1, 0, 0], [2, 2, 2]]], np.float32), 1)
    assert seg.shape == (1, 2, 3) and (col[0, 0] == cols[0]).all()  # the NaN track has no segment


@pytest.mark.slow
def test_app_run_with_query_points_epipolar_and_time_bias(session, inputs):
    from vggt_mv_app.ui import gallery_items

    cfg, q = inputs
    params = RunParams(views=[str(SAMPLE_DIR)], resolution=112, frame_stop=4, window=3, overlap=1, config=cfg,
                       query_points=q, epipolar="gt", time_bias=0.5)
    rec, info = run_reconstruction(params)
    assert rec.tracks.shape == (4, 3, 3, 2)
    np.testing.assert_allclose(rec.tracks[0, 0], QUERIES, atol=1e-4)
    assert rec.meta["epipolar"]["source"] == "gt" and rec.meta["config"]["time_bias"]["strength"] == 0.5
    assert any("epipolar" in n for n in info["notes"])
    session.set_result(rec, info)
    nodes = session.view.nodes
    assert "t0/track_heads" in nodes and any(k.endswith("/tracks") for k in nodes)
    # per-view images: the tracks are drawn (the query pixel of view 0 at t=0 has the track's colour)
    imgs, _, _ = gallery_items(rec, 0)
    x, y = np.rint(QUERIES[1]).astype(int)
    patch = imgs[0][0][y - 3:y + 4, x - 3:x + 4].reshape(-1, 3)
    assert (patch == track_colors(3)[1]).all(-1).sum() >= 4  # dot (visible) or ring (not visible)
    assert "tracks visible" in imgs[0][1]
    assert not (imgs[0][0] == rec.images[0, 0]).all()
    # a second run with the previous run's cameras as the epipolar prior
    params.epipolar = "previous"
    rec2, _ = run_reconstruction(params, previous=rec)
    assert rec2.meta["epipolar"]["source"] == "previous"
    with pytest.raises(UserError, match="previous run"):
        run_reconstruction(params, previous=None)


def test_app_query_points_without_track_head_is_a_user_error(inputs):
    _, q = inputs
    with pytest.raises(UserError, match="track head"):
        run_reconstruction(RunParams(views=[str(SAMPLE_DIR)], resolution=56, frame_stop=2, query_points=q))
