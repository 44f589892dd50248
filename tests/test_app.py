"""Viewer app (no browser): A/B comparison, scene building, per-session state, CLI helpers."""
from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("viser")
pytest.importorskip("gradio")

from vggt_mv.inference.alignment import apply_sim3  # noqa: E402
from vggt_mv.eval.synthetic import make_synthetic_reconstruction  # noqa: E402
from vggt_mv.inference.reconstruction import Reconstruction  # noqa: E402
from vggt_mv_app import compare as cmp  # noqa: E402
from vggt_mv_app.main import build_parser, defaults_from_args, free_port  # noqa: E402
from vggt_mv_app.scene_view import SceneView, frustum_fov_aspect, frustum_pose  # noqa: E402
from vggt_mv_app.state import (  # noqa: E402
    SAMPLE_DIR, RunParams, SessionRegistry, SessionState, UserError, parse_views, run_reconstruction,
)


def _rot(axis: np.ndarray, deg: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    a = np.radians(deg)
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k


def _moved(rec: Reconstruction, s: float, rot: np.ndarray, trans: np.ndarray) -> Reconstruction:
    """The same reconstruction expressed in another world (X' = s R X + t)."""
    from vggt_mv.inference.alignment import transform_extrinsic

    return Reconstruction(
        images=rec.images, depth=rec.depth * s, depth_conf=rec.depth_conf,
        world_points=apply_sim3(rec.world_points, s, rot, trans).astype(np.float32),
        world_points_conf=rec.world_points_conf,
        extrinsic=transform_extrinsic(rec.extrinsic, s, rot, trans).astype(np.float32),
        intrinsic=rec.intrinsic, dynamic_mask=rec.dynamic_mask, view_names=rec.view_names, gt=rec.gt)


@pytest.fixture(scope="module")
def rec() -> Reconstruction:
    return make_synthetic_reconstruction(num_timesteps=4, num_views=3, height=24, width=32)


@pytest.fixture
def session():
    sess = SessionState(viser_port=0)
    yield sess
    sess.close()


# ------------------------------------------------------------------ compare
def test_compare_identical_runs_is_zero(rec):
    comp = cmp.compare(rec, rec)
    s = comp.summary()
    assert s["cam_translation_max"] < 1e-5 and s["cam_rotation_max_deg"] < 1e-2
    assert s["point_disp_static"] < 1e-4 and s["point_disp_dynamic"] < 1e-4
    assert s["n_dynamic"] > 0 and s["n_static"] > 0


def test_compare_removes_similarity(rec):
    prev = _moved(rec, 2.5, _rot(np.array([0.3, 1.0, -0.2]), 40.0), np.array([3.0, -1.0, 7.0]))
    comp = cmp.compare(prev, rec)
    assert comp.sim3[0] == pytest.approx(1 / 2.5, rel=1e-4)
    s = comp.summary()
    assert s["cam_translation_max"] < 1e-4 * comp.scene_scale
    assert s["cam_rotation_max_deg"] < 0.05
    assert s["point_disp_static"] < 1e-3 * comp.scene_scale
    ghost = cmp.align_reconstruction(prev, comp.sim3)
    np.testing.assert_allclose(ghost.camera_centers(), rec.camera_centers(), atol=1e-4)


def test_compare_splits_dynamic_and_static(rec):
    depth = rec.depth.copy()
    dyn = rec.dynamic_mask >= 0.5
    depth[dyn] *= 1.2  # only dynamic pixels move
    prev = Reconstruction(images=rec.images, depth=depth, depth_conf=rec.depth_conf, world_points=None,
                          world_points_conf=None, extrinsic=rec.extrinsic, intrinsic=rec.intrinsic,
                          dynamic_mask=rec.dynamic_mask, view_names=rec.view_names)
    s = cmp.compare(prev, rec).summary()
    assert s["point_disp_static"] < 1e-5
    assert s["point_disp_dynamic"] > 0.05
    rows = cmp.compare(prev, rec).rows()
    assert any("dynamic" in r[0] for r in rows) and all(len(r) == 3 for r in rows)


def test_compare_mismatched_grids_does_not_crash(rec):
    other = make_synthetic_reconstruction(num_timesteps=2, num_views=2, height=24, width=32)
    comp = cmp.compare(other, rec)
    assert comp.method == "identity" and comp.notes
    assert comp.summary()["cam_translation_mean"] is None


def test_rotation_delta():
    a = np.concatenate([np.eye(3), np.zeros((3, 1))], 1)
    b = np.concatenate([_rot(np.array([0, 0, 1.0]), 30), np.zeros((3, 1))], 1)
    assert cmp.rotation_delta_deg(a, b) == pytest.approx(30.0, abs=1e-6)


# ------------------------------------------------------------------ scene building
def test_frustum_geometry():
    k = np.array([[100.0, 0, 40], [0, 50.0, 30], [0, 0, 1]])
    fov, aspect = frustum_fov_aspect(k, 60, 80)
    assert fov == pytest.approx(2 * np.arctan(30 / 50.0))
    assert aspect == pytest.approx(80 / 60)
    ext = np.concatenate([np.eye(3), np.array([[1.0], [2.0], [3.0]])], 1)
    wxyz, pos = frustum_pose(ext, np.array([0.5, 0.5, 0.5]))
    np.testing.assert_allclose(pos, [-1.5, -2.5, -3.5])
    np.testing.assert_allclose(np.abs(wxyz), [1, 0, 0, 0], atol=1e-9)


def test_scene_one_node_per_timestep_and_playback_only_toggles(session, rec):
    view = session.view
    session.set_result(rec, {})
    T, V = rec.num_timesteps, rec.num_views
    assert [f"t{t}" for t in range(T)] == [k for k in view.nodes if "/" not in k]
    assert all(f"t{t}/v{v}/points" in view.nodes and f"t{t}/v{v}/cam" in view.nodes
               for t in range(T) for v in range(V))
    assert all(f"t{t}/gt/v{v}" in view.nodes for t in range(T) for v in range(V))  # gt cameras overlaid
    handles = dict(view.nodes)
    assert [view.nodes[f"t{t}"].visible for t in range(T)] == [True] + [False] * (T - 1)
    view.set_timestep(2)
    assert [view.nodes[f"t{t}"].visible for t in range(T)] == [t == 2 for t in range(T)]
    assert all(view.nodes[k] is handles[k] for k in handles)  # nothing re-uploaded
    view.set_views([True, False, True])
    assert not view.nodes["t0/v1"].visible and view.nodes["t0/v2"].visible


def test_scene_points_recentred_and_conf_filter(session, rec):
    view = session.view
    view.max_points_per_view = None
    session.set_result(rec, {}, conf_percentile=0)
    n_all = sum(len(view.nodes[f"t0/v{v}/points"].points) for v in range(rec.num_views))
    assert n_all == int(rec.confidence_mask("depth")[0].sum())
    pts = np.concatenate([view.nodes[f"t{t}/v0/points"].points for t in range(rec.num_timesteps)])
    assert np.abs(np.median(pts, axis=0)).max() < 0.25 * rec.scene_scale()  # recentred
    view.set_conf_percentile(50)
    n_half = sum(len(view.nodes[f"t0/v{v}/points"].points) for v in range(rec.num_views))
    assert 0.3 * n_all < n_half < 0.7 * n_all
    view.set_color_by("mask")
    cols = view.nodes["t0/v0/points"].colors
    assert cols.shape[1] == 3
    view.set_up_axis("+z")
    np.testing.assert_allclose(view.root.wxyz, [np.sqrt(0.5), -np.sqrt(0.5), 0, 0])


def test_ab_ghost_is_aligned(session, rec):
    prev = _moved(rec, 0.5, _rot(np.array([1.0, 0, 0]), 25.0), np.array([1.0, 2.0, 3.0]))
    session.set_result(prev, {})
    assert session.comparison is None and not any("ghost" in k for k in session.view.nodes)
    session.set_result(rec, {})
    assert session.comparison is not None
    assert session.comparison.summary()["cam_rotation_max_deg"] < 0.05
    assert all(f"t{t}/ghost/points" in session.view.nodes for t in range(rec.num_timesteps))
    ghost_pts = session.view.nodes["t0/ghost/points"].points.astype(np.float64)
    cur_pts = np.concatenate([session.view.nodes[f"t0/v{v}/points"].points for v in range(3)]).astype(np.float64)
    # ghost and current clouds overlap after alignment: close centroids
    assert np.linalg.norm(ghost_pts.mean(0) - cur_pts.mean(0)) < 0.05 * rec.scene_scale()
    session.view.set_flag("show_ghost", False)
    assert not session.view.nodes["t0/ghost/points"].visible


def test_rerun_of_the_same_input_keeps_the_viewer_frame(session, rec):
    """A re-run with other settings is not re-centred: nodes that did not change stay where they were
    (only what the settings moved moves on screen); a different input gets a fresh frame."""
    view = session.view
    session.set_result(rec, {})
    view.set_point_size(0.02)  # the user's choice survives the re-run
    cams0 = view.nodes["t0/v1/cam"].position.copy()
    moved = Reconstruction(  # deeper geometry (so another centre) seen from the same cameras
        images=rec.images, depth=rec.depth * 1.5, depth_conf=rec.depth_conf, world_points=rec.world_points * 1.5,
        world_points_conf=rec.world_points_conf, extrinsic=rec.extrinsic, intrinsic=rec.intrinsic,
        dynamic_mask=rec.dynamic_mask, view_names=rec.view_names, gt=rec.gt)
    assert not np.allclose(moved.scene_center(), rec.scene_center())
    session.set_result(moved, {}, keep_frame=True)
    np.testing.assert_array_equal(view.nodes["t0/v1/cam"].position, cams0)
    assert view.options["point_size"] == pytest.approx(0.02)
    session.set_result(moved, {})  # a new input: re-centred on its own scene
    assert not np.allclose(view.nodes["t0/v1/cam"].position, cams0)
    a = RunParams(resolution=112)
    assert a.same_input(RunParams(resolution=112, lambda_kpt=8.0, strategy="landmark", window=4))
    assert not a.same_input(RunParams(resolution=224)) and not a.same_input(None)
    assert not a.same_input(RunParams(resolution=112, preset="vggt"))
    import os

    assert a.same_input(RunParams(resolution=112, views=[os.path.relpath(SAMPLE_DIR)]))  # the same folder, relative


def test_a_new_input_reframes_open_clients_and_a_rerun_does_not(session, rec):
    """viser's initial_camera only moves clients that connect later: the open tabs' cameras are set
    too when the frame is new, and left where the user put them on a re-run of the same input."""
    import contextlib
    from types import SimpleNamespace

    server = session.server
    client = SimpleNamespace(client_id=1, atomic=contextlib.nullcontext,
                             camera=SimpleNamespace(position=None, look_at=None, up_direction=None))
    target = SimpleNamespace(scene=server.scene, gui=server.gui, initial_camera=server.initial_camera,
                             get_clients=lambda: {1: client})
    view = SceneView(target)
    view.build(rec)
    np.testing.assert_allclose(client.camera.position, server.initial_camera.position)
    np.testing.assert_allclose(client.camera.look_at, server.initial_camera.look_at)
    client.camera.position = np.array([9.0, 9.0, 9.0])  # the user orbits away
    view.build(rec, keep_frame=True)
    np.testing.assert_array_equal(client.camera.position, [9.0, 9.0, 9.0])
    view.build(rec)  # another input: framed again
    np.testing.assert_allclose(client.camera.position, server.initial_camera.position)
    view.close()


def test_playback_advances(session, rec):
    import time

    session.set_result(rec, {})
    session.view.play(True, fps=30)
    time.sleep(0.4)
    session.view.play(False)
    assert session.view.options["t"] != 0 or session.view.num_timesteps == 1


# ------------------------------------------------------------------ sessions / state
def test_sessions_are_isolated(rec):
    reg = SessionRegistry(viser_port=0, max_sessions=2)
    a, b = reg.new(), reg.new()
    try:
        assert a.viser_port != b.viser_port and a.server is not b.server
        a.set_result(rec, {})
        assert a.view.nodes and not b.view.nodes
        c = reg.new()  # evicts the oldest
        assert a.closed and a.id not in reg.sessions and c.id in reg.sessions
        reg.drop(b)
        assert b.closed
    finally:
        reg.close_all()


def port_free(port: int) -> bool:
    """True when a server could listen on ``port`` again (SO_REUSEADDR, as servers bind)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_release_frees_port_results_and_folder(rec):
    """A tab's session (keyed by Gradio's session_hash) owns a viser port and a folder under the app
    root; releasing it (tab closed) frees both, eviction marks the evicted one, exit removes the root."""
    from vggt_mv_app.state import SessionExpired

    reg = SessionRegistry(viser_port=0, max_sessions=2)
    try:
        a = reg.new("hash-a")
        a.set_result(rec, {})
        export = a.new_folder("export")
        (export / "x.npz").write_bytes(b"0" * 100)
        port = a.viser_port
        assert reg.get("hash-a") is a and export.parent == a.folder and a.folder.parent == reg.sessions_dir
        assert not port_free(port)
        reg.release("hash-a")
        assert a.closed and reg.get("hash-a") is None and a.rec is None and a.view is None
        assert port_free(port) and not a.folder.exists()
        with pytest.raises(SessionExpired):  # nothing is written into a stopped server
            a.set_result(rec, {})
        with pytest.raises(SessionExpired):
            a.new_folder("video")
        reg.release("never-opened")  # a tab without a session: no-op
        b, c = reg.new("hash-b"), reg.new("hash-c")
        d = reg.new("hash-d")  # evicts the oldest (b), visibly
        assert b.closed and b.evicted and not c.evicted and not b.folder.exists()
        assert sorted(reg.sessions) == ["hash-c", "hash-d"]
        fresh = reg.new("hash-b")  # the evicted tab's next action: a fresh session (evicts c)
        assert fresh is not b and not fresh.closed and c.evicted and d.id in {s.id for s in reg.sessions.values()}
        root = reg.root
    finally:
        reg.close_all()
    assert not root.exists() and all(s.closed for s in (a, b, c, d, fresh))


def test_sigterm_releases_everything(tmp_path):
    """At SIGTERM every session is closed and the app root removed (exit status 143)."""
    import subprocess
    import sys

    code = ("import os, signal, time\n"
            "from vggt_mv_app.main import release_at_exit\n"
            "from vggt_mv_app.state import SessionRegistry\n"
            "reg = SessionRegistry(viser_port=0)\n"
            "release_at_exit(reg)\n"
            "s = reg.new('h')\n"
            "print('SESSION', reg.root, s.viser_port, flush=True)\n"
            "time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    line = ""
    while not line.startswith("SESSION"):  # viser prints its own banner first
        line = proc.stdout.readline()
        assert line, "the child exited early"
    root, port = line.split()[1:]
    assert Path(root, "sessions").is_dir() and not port_free(int(port))
    proc.terminate()
    assert proc.wait(timeout=30) == 143
    assert not Path(root).exists() and port_free(int(port))


def test_resolution_choices_and_memory_refusal(monkeypatch):
    from vggt_mv_app.state import MemoryRefusal, estimate_params, memory_problem, resolution_choices

    assert resolution_choices("tiny") == [56, 112, 168, 224, 280, 336, 392, 518]
    with pytest.raises(UserError, match="above the largest offered"):
        run_reconstruction(RunParams(resolution=14000))
    params = RunParams(resolution=518)
    assert "GiB of RAM" in estimate_params(params)
    monkeypatch.setenv("VGGT_MV_MEMORY_CAP", "300M")
    problem = memory_problem(params)
    assert problem and "largest that would fit: resolution" in problem, problem
    with pytest.raises(MemoryRefusal, match="largest that would fit"):
        run_reconstruction(params)
    monkeypatch.setenv("VGGT_MV_MEMORY_CAP", "64G")
    assert memory_problem(params) is None


def test_parse_views_errors_name_the_path(tmp_path):
    with pytest.raises(UserError, match="nope/cam0"):
        parse_views("nope/cam0\n")
    with pytest.raises(UserError, match="No scene"):
        parse_views("  \n")
    (tmp_path / "cam0").mkdir()
    (tmp_path / "cam1").mkdir()
    assert parse_views(f"{tmp_path}/cam0\n{tmp_path}/cam1") == [str(tmp_path / "cam0"), str(tmp_path / "cam1")]


def test_run_bad_inputs_are_user_errors(tmp_path):
    (tmp_path / "cam0").mkdir()
    with pytest.raises(UserError, match=str(tmp_path)):
        run_reconstruction(RunParams(views=[str(tmp_path / "cam0")], resolution=56))
    with pytest.raises(UserError, match="multiple of 14"):
        run_reconstruction(RunParams(resolution=100))
    with pytest.raises(UserError, match="checkpoint file not found"):
        run_reconstruction(RunParams(resolution=56, frame_stop=2, checkpoint=str(tmp_path / "x.pt")))


@pytest.mark.slow
@pytest.mark.skipif(not SAMPLE_DIR.is_dir(), reason="bundled sample not present")
def test_run_sample_tiny_end_to_end(session):
    params = RunParams(resolution=56, frame_stop=3, window=3, overlap=1)
    rec, info = run_reconstruction(params)
    assert rec.depth.shape[:2] == (3, 3) and "random tiny weights" in info["banner"] or "weights" in info["banner"]
    session.set_result(rec, info)
    params.lambda_pose = 1.5
    rec2, info2 = run_reconstruction(params)
    session.set_result(rec2, info2)
    assert session.comparison is not None and session.comparison.cam_translation.shape == (3, 3)
    from vggt_mv_app.ui import gallery_items, metrics_rows

    imgs, depths, masks = gallery_items(rec2, 1)
    assert len(imgs) == len(depths) == 3 and depths[0][0].dtype == np.uint8
    assert any(r[0].startswith("depth/") for r in metrics_rows(rec2))


# ------------------------------------------------------------------ CLI / UI construction
def test_free_port_skips_used_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        used = s.getsockname()[1]
        assert free_port(used) != used


def test_cli_defaults():
    args = build_parser().parse_args([])
    d = defaults_from_args(args)
    assert args.host == "127.0.0.1" and d.preset == "tiny" and Path(d.views[0]).resolve() == SAMPLE_DIR
    args = build_parser().parse_args(["--views", "a", "b", "--preset", "vggt_mv", "--port", "9000"])
    assert defaults_from_args(args).views == ["a", "b"] and args.port == 9000


def test_build_ui_constructs():
    from vggt_mv_app.ui import build_ui, colorize_depth

    reg = SessionRegistry(viser_port=0)
    demo = build_ui(reg, RunParams(resolution=112))
    assert demo is not None
    rgb = colorize_depth(np.array([[0.0, 1.0], [2.0, np.nan]]))
    assert rgb.shape == (2, 2, 3) and rgb[0, 0].sum() == 0


def test_show_for_notebooks(rec):
    from vggt_mv_app import show

    view = show(rec, port=0)
    try:
        assert view.target.get_port() > 0 and "t0/v0/points" in view.nodes
    finally:
        view.close()
        view.target.stop()


def test_offline_html_button_keeps_the_viewers_look(session, rec, tmp_path):
    """The Export tab's "Offline HTML": the file plays the session's result with the viewer's up
    axis, point size and fps and the page's colouring; without a result it says so."""
    from share_helpers import by_type, decode_recording, embedded_recording
    from vggt_mv.export.viser_scene import ROOT_WXYZ
    from vggt_mv_app.ui import share_html

    assert share_html(session, "image", 20) == (None, "Run a reconstruction first.")
    session.set_result(rec, {})
    session.view.set_up_axis("+z")
    session.view.set_point_size(0.02 * session.view.scale)
    session.view.options["fps"] = 5.0
    path, msg = share_html(session, "mask", 20, out_dir=tmp_path)
    assert path == str(tmp_path / "vggt_mv_scene.html") and "opens from disk" in msg and "fixed" in msg
    recording = decode_recording(embedded_recording(Path(path).read_text(encoding="utf-8")))
    assert recording["duration"] == pytest.approx(rec.num_timesteps / 5.0)
    rot = [m for _, m in by_type(recording, "SetOrientationMessage") if m["name"] == "/world"]
    assert np.allclose(rot[-1]["wxyz"], ROOT_WXYZ["+z"])
    sizes = {m["props"]["point_size"] for _, m in by_type(recording, "PointCloudMessage")}
    assert sizes and all(s == pytest.approx(0.02 * session.view.scale, rel=1e-5) for s in sizes)


@pytest.mark.parametrize("extra, needle", [(["--resolution", "14000"], "--resolution 14000 is not offered"),
                                          (["--max-sessions", "0"], "--max-sessions must be >= 1")])
def test_app_bad_options_are_one_line(extra, needle, capsys):
    from vggt_mv_app.main import main

    with pytest.raises(SystemExit) as exc:
        main(["--port", "0", *extra])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and needle in err and "Traceback" not in err
