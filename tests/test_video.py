"""Demo-video recording: software splatter, camera paths, atomic MP4 writer, ``vggt-mv record``."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from vggt_mv.eval.synthetic import make_synthetic_reconstruction
from vggt_mv.export.video import ViewCamera, camera_path, iter_frames, record, render_frame, splat

SIZE = (48, 64)  # small, even frames keep the tests fast


@pytest.fixture(scope="module")
def rec():
    return make_synthetic_reconstruction(num_timesteps=3, num_views=2, height=24, width=32)


def _eye_k(f: float = 10.0, cx: float = 16.0, cy: float = 12.0) -> tuple[np.ndarray, np.ndarray]:
    ext = np.concatenate([np.eye(3), np.zeros((3, 1))], axis=1).astype(np.float32)
    return ext, np.array([[f, 0, cx], [0, f, cy], [0, 0, 1]], np.float32)


def test_splat_known_pixel_and_zbuffer() -> None:
    ext, k = _eye_k()
    # (0.5, 0.2, 1) -> u = 10*0.5+16 = 21, v = 10*0.2+12 = 14; a farther green point on the same ray
    # and a point behind the camera must both lose to the near red one.
    xyz = np.array([[1.0, 0.4, 2.0], [0.5, 0.2, 1.0], [-0.5, -0.2, -1.0], [0.0, 0.0, 1.0]], np.float32)
    rgb = np.array([[0, 255, 0], [255, 0, 0], [0, 0, 255], [255, 255, 0]], np.uint8)
    img = splat(xyz, rgb, ext, k, (24, 32), point_size=1, background=(0, 0, 0))
    assert img.shape == (24, 32, 3) and img.dtype == np.uint8
    assert tuple(img[14, 21]) == (255, 0, 0)
    assert tuple(img[12, 16]) == (255, 255, 0)
    assert (img.reshape(-1, 3).any(axis=1)).sum() == 2  # one pixel each, nothing else drawn
    # order does not matter: the near point wins also when listed last
    img2 = splat(xyz[[1, 0, 2, 3]], rgb[[1, 0, 2, 3]], ext, k, (24, 32), point_size=1, background=(0, 0, 0))
    assert tuple(img2[14, 21]) == (255, 0, 0)
    # a splat of width 3 covers the 3x3 block around the pixel; the nearer point still wins there
    big = splat(xyz, rgb, ext, k, (24, 32), point_size=3, background=(0, 0, 0))
    assert (big[13:16, 20:23] == np.array([255, 0, 0], np.uint8)).all()
    assert splat(np.zeros((0, 3)), np.zeros((0, 3)), ext, k, (4, 6), background=(7, 8, 9)).tolist() == \
        np.full((4, 6, 3), [7, 8, 9]).tolist()


def test_render_from_reference_camera_reproduces_image(rec) -> None:
    """Rendering timestep 0 from the reference camera at its own resolution puts every pixel's
    point back on that pixel, so the frame matches the input image almost everywhere."""
    view = ViewCamera(rec.extrinsic[0, 0], rec.intrinsic[0, 0], 0)
    cloud = rec.points(0, views=[0], conf_percentile=None)
    img = render_frame(rec, view, rec.image_size, point_size=1, cloud=cloud, show_cameras=False,
                       background=(0, 0, 0))
    match = np.all(img == rec.images[0, 0], axis=-1).mean()
    assert match > 0.99, match
    both = render_frame(rec, view, rec.image_size, point_size=1, conf_percentile=None, show_cameras=False)
    assert np.all(both == rec.images[0, 0], axis=-1).mean() > 0.8  # view 1 interleaves on the same surface


def test_render_not_blank_and_cameras_drawn(rec) -> None:
    cams = camera_path(rec, "timeline", size=SIZE)
    bg = (18, 18, 22)
    with_cams = render_frame(rec, cams[0], SIZE, background=bg)
    no_cams = render_frame(rec, cams[0], SIZE, background=bg, show_cameras=False)
    drawn = np.any(with_cams != np.array(bg, np.uint8), axis=-1).mean()
    assert drawn > 0.2, drawn
    assert len(np.unique(with_cams.reshape(-1, 3), axis=0)) >= 5  # wall checker, box, frustums
    assert np.any(with_cams != no_cams)  # frustum lines are visible from the pulled-back viewpoint
    mask = render_frame(rec, cams[0], SIZE, background=bg, color_by="mask", show_cameras=False)
    assert np.any(mask != no_cams)


def test_camera_paths(rec) -> None:
    tl = camera_path(rec, "timeline", size=SIZE, frames_per_step=3, hold=2, loops=2)
    assert [c.t for c in tl] == ([0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2]) * 2
    assert all(np.array_equal(c.extrinsic, tl[0].extrinsic) for c in tl)
    orbit = camera_path(rec, "orbit", size=SIZE, num_frames=8)
    assert [c.t for c in orbit] == [0, 0, 0, 1, 1, 1, 2, 2]  # the timeline advances over the orbit
    centres = np.stack([-c.extrinsic[:, :3].T @ c.extrinsic[:, 3] for c in orbit])
    dist = np.linalg.norm(centres - rec.scene_center(), axis=1)
    np.testing.assert_allclose(dist, dist[0], rtol=1e-4)  # on one circle
    frozen = camera_path(rec, "orbit", size=SIZE, num_frames=4, orbit_timestep=-1, up="+z")
    assert [c.t for c in frozen] == [2, 2, 2, 2]
    up = np.array([0.0, 0.0, 1.0])
    heights = [(-c.extrinsic[:, :3].T @ c.extrinsic[:, 3]) @ up for c in frozen]
    np.testing.assert_allclose(heights, heights[0], atol=1e-4)  # circle is perpendicular to +z
    swing = camera_path(rec, "orbit", size=SIZE, num_frames=8, arc_degrees=60)
    start = centres[0] - rec.scene_center()
    swing_c = np.stack([-c.extrinsic[:, :3].T @ c.extrinsic[:, 3] for c in swing]) - rec.scene_center()
    cosang = swing_c @ start / (np.linalg.norm(swing_c, axis=1) * np.linalg.norm(start))
    assert np.isclose(cosang[0], 1.0, atol=1e-5) and np.cos(np.deg2rad(31)) < cosang.min() < np.cos(np.deg2rad(10))
    frames = [render_frame(rec, c, SIZE) for c in orbit[::2]]
    for a, b in zip(frames, frames[1:]):
        assert np.mean(np.any(a != b, axis=-1)) > 0.05
    with pytest.raises(ValueError):
        camera_path(rec, "spiral")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        camera_path(rec, "orbit", orbit_timestep=5)
    with pytest.raises(ValueError):
        camera_path(rec, "orbit", arc_degrees=0)


def test_iter_frames_lazy_and_labelled(rec) -> None:
    views = camera_path(rec, "timeline", size=SIZE, frames_per_step=1)
    gen = iter_frames(rec, views, SIZE, label=False)
    first = next(gen)  # lazy: frames come one at a time
    assert first.shape == (*SIZE, 3) and len(list(gen)) == rec.num_timesteps - 1
    np.testing.assert_array_equal(first, render_frame(rec, views[0], SIZE))
    labelled = next(iter_frames(rec, views, SIZE, label=True))
    diff = np.any(labelled != first, axis=-1)
    assert diff.any() and not diff[: SIZE[0] // 2].any()  # the stamp sits in the bottom corner


def test_record_mp4_roundtrip(rec, tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    out = record(rec, tmp_path / "sub" / "demo.mp4", mode="timeline", fps=5, size=SIZE, frames_per_step=2,
                 progress=lambda done, total: seen.append((done, total)))
    assert out == (tmp_path / "sub" / "demo.mp4").absolute() and out.is_file()
    frames = iio.imread(out, plugin="pyav")
    assert frames.shape == (6, *SIZE, 3)
    assert seen[-1] == (6, 6) and len(seen) == 6
    assert frames[0].std() > 5  # not a flat frame after encoding
    meta = iio.immeta(out, plugin="pyav")
    assert meta["codec"] in ("h264", "libx264") and abs(meta["fps"] - 5) < 1e-6
    orbit = record(rec, tmp_path / "orbit.mp4", mode="orbit", size=SIZE, num_frames=5, orbit_timestep=1)
    assert iio.imread(orbit, plugin="pyav").shape == (5, *SIZE, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["orbit.mp4", "sub"]  # no temp files left
    with pytest.raises(ValueError, match="even"):
        record(rec, tmp_path / "odd.mp4", size=(47, 64))


def test_record_failure_leaves_no_file(rec, tmp_path: Path) -> None:
    def boom(done: int, total: int) -> None:
        if done == 3:
            raise RuntimeError("cancelled")

    with pytest.raises(RuntimeError, match="cancelled"):
        record(rec, tmp_path / "demo.mp4", size=SIZE, progress=boom)
    assert list(tmp_path.iterdir()) == []
    # a video it wrote survives a failed re-record untouched; a foreign file is never replaced
    record(rec, tmp_path / "demo.mp4", size=SIZE, frames_per_step=1)
    old = (tmp_path / "demo.mp4").read_bytes()
    with pytest.raises(RuntimeError):
        record(rec, tmp_path / "demo.mp4", size=SIZE, progress=boom)
    assert (tmp_path / "demo.mp4").read_bytes() == old and len(list(tmp_path.iterdir())) == 1
    (tmp_path / "talk.mp4").write_bytes(b"someone else's")
    with pytest.raises(ValueError, match="not written by vggt-mv"):
        record(rec, tmp_path / "talk.mp4", size=SIZE)
    assert (tmp_path / "talk.mp4").read_bytes() == b"someone else's"


def test_cli_record_end_to_end(rec, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vggt_mv.cli import main

    result = rec.save(tmp_path / "result")
    out = tmp_path / "video.mp4"
    code = main(["record", str(result), "--out", str(out), "--orbit", "--num-frames", "4", "--fps", "8",
                 "--size", "48x64", "--color-by", "mask", "--conf-percentile", "10"])
    assert code == 0
    assert iio.imread(out, plugin="pyav").shape == (4, 48, 64, 3)
    code = main(["record", str(result), "--out", str(tmp_path / "tl.mp4"), "--timeline", "--size", "48x64",
                 "--frames-per-step", "1", "--no-cameras", "--no-label", "--threads", "1"])
    assert code == 0 and iio.imread(tmp_path / "tl.mp4", plugin="pyav").shape[0] == rec.num_timesteps

    missing = tmp_path / "nope"
    capsys.readouterr()
    assert main(["record", str(missing), "--out", str(tmp_path / "x.mp4")]) == 2
    assert str(missing) in capsys.readouterr().err
    assert main(["record", str(result), "--out", str(tmp_path / "x.txt")]) == 2  # checked before any rendering
    assert "--out " in (err := capsys.readouterr().err) and "must end in .mp4 / .mov" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x.txt").exists()
    (tmp_path / "empty").mkdir()
    assert main(["record", str(tmp_path / "empty"), "--out", str(tmp_path / "x.mp4")]) == 2
    assert "empty" in capsys.readouterr().err and not (tmp_path / "x.mp4").exists()
    with pytest.raises(SystemExit):
        main(["record", str(result), "--out", str(out), "--size", "47x64"])
