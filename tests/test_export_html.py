"""`vggt-mv export-html` / `Reconstruction.to_html`: what the recording holds (decoded from the
file, checked against the reconstruction), the size budget, the .viser folder, and the errors."""
from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from share_helpers import by_type, decode_recording, embedded_recording, sample_result
from vggt_mv.cli import main as cli_main
from vggt_mv.export import html as share
from vggt_mv.export.html_budget import MIN_POINT_FACTOR, plan_size, select_points
from vggt_mv.export.output import OutputError
from vggt_mv.export.viser_scene import ROOT_WXYZ, tint_mask, viser_client_path
from vggt_mv.inference.reconstruction import Reconstruction


@pytest.fixture(scope="module")
def result_dir(tmp_path_factory):
    return sample_result(tmp_path_factory.mktemp("sample") / "rec")


@pytest.fixture(scope="module")
def rec(result_dir):
    return Reconstruction.load(result_dir)


def _clouds(recording: dict) -> dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]:
    out = {}
    for _, m in by_type(recording, "PointCloudMessage"):
        _, _, t, v, _ = m["name"].split("/")
        out[int(t[1:]), int(v[1:])] = (m["props"]["points"].reshape(-1, 3).astype(np.float32),
                                       m["props"]["colors"].reshape(-1, 3))
    return out


def test_html_holds_the_timeline_as_the_viewer_draws_it(rec, tmp_path):
    out = share.export_html(rec, tmp_path / "scene.html", fps=2.0, conf_percentile=20.0).path
    html = out.read_text(encoding="utf-8")
    assert html.startswith("<!doctype html>") and html.index(share.MARKER) < 200
    recording = decode_recording(embedded_recording(html))
    T, V = rec.num_timesteps, rec.num_views
    assert recording["duration"] == pytest.approx(T / 2.0)
    keep = rec.confidence_mask("depth", percentile=20.0)
    clouds = _clouds(recording)
    assert sorted(clouds) == [(t, v) for t in range(T) for v in range(V)]
    for (t, v), (pts, col) in clouds.items():  # every kept pixel, in order, image colours, recentred
        np.testing.assert_array_equal(col, rec.images[t, v][keep[t, v]])
        np.testing.assert_array_equal(pts, _f16(rec, keep, t, v).astype(np.float32))
    frustums = by_type(recording, "CameraFrustumMessage")
    assert len(frustums) == T * V
    assert all(m["props"]["_format"] == "jpeg" and m["props"]["_image_data"][:2] == b"\xff\xd8"
               for _, m in frustums)
    # playback: at each 1/fps step one timestep frame is hidden and the next one shown
    flips = [(t, m["name"], m["visible"]) for t, m in by_type(recording, "SetSceneNodeVisibilityMessage") if t > 0]
    assert flips == [x for k in range(1, T) for x in ((k / 2.0, f"/world/t{k - 1:03d}", False),
                                                      (k / 2.0, f"/world/t{k:03d}", True))]
    start = {m["name"]: m["visible"] for t, m in by_type(recording, "SetSceneNodeVisibilityMessage")
             if t == 0 and m["name"].count("/") == 2}
    assert start == {f"/world/t{t:03d}": t == 0 for t in range(T)}
    cam = by_type(recording, "SetCameraPositionMessage")
    assert cam and np.linalg.norm(cam[0][1]["position"]) > 0  # an initial camera looking at the scene


def test_mask_colouring_and_up_axis_are_the_viewers(rec, tmp_path):
    assert rec.dynamic_mask is not None
    out = share.export_html(rec, tmp_path / "mask.html", color_by="mask", up="+z", conf_percentile=None).path
    recording = decode_recording(embedded_recording(out.read_text(encoding="utf-8")))
    keep = rec.confidence_mask("depth")
    for (t, v), (_, col) in _clouds(recording).items():
        np.testing.assert_array_equal(col, tint_mask(rec.images[t, v], rec.dynamic_mask[t, v])[keep[t, v]])
    world = [m for _, m in by_type(recording, "FrameMessage") if m["name"] == "/world"]
    rot = [m for _, m in by_type(recording, "SetOrientationMessage") if m["name"] == "/world"]
    assert world and rot and np.allclose(rot[-1]["wxyz"], ROOT_WXYZ["+z"])
    up = by_type(recording, "SetCameraUpDirectionMessage")
    assert np.allclose(up[-1][1]["position"], (0, 0, 1))


def test_budget_subsamples_by_confidence_and_logs_the_factor(rec, tmp_path, caplog):
    full = share.export_html(rec, tmp_path / "full.html")
    budget_mb = round((full.bytes - 0.4 * (full.bytes - viser_client_path().stat().st_size)) / 1e6, 3)
    with caplog.at_level(logging.INFO, logger="vggt_mv.export.html"):
        res = share.export_html(rec, tmp_path / "small.html", max_mb=budget_mb)
    f = res.plan.point_factor
    assert 0 < f < 1 and res.bytes <= budget_mb * 1e6 == res.plan.budget_bytes
    assert f"points subsampled x{f:.3f} per timestep" in caplog.text
    assert res.path.stat().st_size == res.bytes
    clouds = _clouds(decode_recording(embedded_recording(res.path.read_text(encoding="utf-8"))))
    keep = rec.confidence_mask("depth", percentile=20.0)
    for t in range(rec.num_timesteps):
        n_t = int(keep[t].sum())
        kept = sum(len(clouds[t, v][0]) for v in range(rec.num_views))
        assert kept == math.ceil(f * n_t)
        kept_conf = np.concatenate([_source_conf(rec, keep, t, v, clouds[t, v][0]) for v in range(rec.num_views)])
        conf_t = np.sort(rec.depth_conf[t][keep[t]])[::-1]
        n_conf = max(kept, math.ceil(n_t / 2))  # confidence drops at most half, uniform sampling the rest
        assert kept_conf.min() >= conf_t[n_conf - 1]


def _f16(rec, keep, t, v):
    center = rec.scene_center().astype(np.float64)
    return (rec.points_from_depth()[t, v][keep[t, v]] - center).astype(np.float32).astype(np.float16)


def _source_conf(rec, keep, t, v, got):
    """Confidences of the exported points ``got``, found as an ordered subsequence of the pixels."""
    want = _f16(rec, keep, t, v).astype(np.float32)
    conf = rec.depth_conf[t, v][keep[t, v]]
    idx, j = [], 0
    for i in range(len(want)):
        if j < len(got) and np.array_equal(want[i], got[j]):
            idx.append(i)
            j += 1
    assert j == len(got), "exported points are not a subset of the reconstruction's, in order"
    return conf[idx]


def test_select_points_drops_the_least_confident_first_then_uniformly():
    conf = np.random.default_rng(0).permutation(1000).astype(np.float32)
    top70 = select_points(conf, 0.7, seed=1)
    assert len(top70) == 700 and conf[top70].min() == 300  # only the 300 least confident dropped
    low = select_points(conf, 0.2, seed=1)
    assert len(low) == 200 and conf[low].min() >= 500  # from the confident half ...
    assert conf[low].max() - conf[low].min() > 400  # ... spread uniformly over it
    np.testing.assert_array_equal(low, select_points(conf, 0.2, seed=1))
    assert len(select_points(conf, 1.0, seed=0)) == 1000


def test_tight_budget_downsizes_frustum_images_to_a_quarter_of_it():
    imgs = list(np.random.default_rng(0).integers(0, 256, (4, 189, 252, 3), dtype=np.uint8))
    counts = np.full(24, 20_000)
    roomy = plan_size(counts, imgs, 96, 256, 60_000_000, 900_000, True, 100)
    assert roomy.image_side == 256 and roomy.point_factor == 1.0
    tight = plan_size(counts, imgs, 96, 256, 3_000_000, 900_000, True, 100)
    assert 32 <= tight.image_side < 256 and tight.point_factor < 1.0
    assert tight.estimated_bytes <= tight.budget_bytes
    assert "points subsampled x" in tight.describe() and f"{tight.image_side}px" in tight.describe()


def test_recording_server_is_temporary():
    import socket

    from vggt_mv.export.viser_scene import temporary_server

    with temporary_server() as server:
        port = server.get_port()
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_estimate_is_recalibrated_when_the_file_comes_out_over(rec, tmp_path, monkeypatch, caplog):
    """The serializer is single use: an estimate that undershoots makes the exporter rebuild smaller."""
    monkeypatch.setattr("vggt_mv.export.html_budget.BYTES_PER_POINT", 1)  # a 9x underestimate
    with caplog.at_level(logging.INFO, logger="vggt_mv.export.html"):
        res = share.export_html(rec, tmp_path / "s.html", max_mb=1.05)
    assert res.attempts >= 2 and "over the 1.1 MB budget; rebuilding with fewer points" in caplog.text
    assert res.path.stat().st_size <= 1.05e6


def test_over_budget_even_at_minimum_sampling_is_a_clear_error(rec, tmp_path):
    with pytest.raises(ValueError, match=r"does not fit --max-mb 0.5 even at the minimum sampling"):
        share.export_html(rec, tmp_path / "x.html", max_mb=0.5)
    assert not (tmp_path / "x.html").exists() and not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="minimum sampling"):
        plan_size(np.array([100_000_000]), [], 0, 0, 2_000_000, 1_000_000, True, 10)
    assert MIN_POINT_FACTOR < 0.01


def test_viser_folder_for_static_hosting(rec, tmp_path):
    res = share.export_html(rec, tmp_path / "share", format="viser", fps=4.0)
    files = sorted(p.relative_to(res.path).as_posix() for p in res.path.rglob("*") if p.is_file())
    assert files == ["README.md", "scene.viser", share.SHARE_MANIFEST, "viewer/index.html"]
    assert (res.path / "viewer/index.html").read_bytes() == viser_client_path().read_bytes()
    assert "viewer/?playbackPath=../scene.viser" in (res.path / "README.md").read_text()
    recording = decode_recording((res.path / "scene.viser").read_bytes())
    assert recording["duration"] == pytest.approx(rec.num_timesteps / 4.0)
    assert len(_clouds(recording)) == rec.num_timesteps * rec.num_views
    assert res.bytes == sum(p.stat().st_size for p in res.path.rglob("*") if p.is_file())
    assert sorted(share.share_files(res.path)) == files  # the manifest lists exactly what was written
    (res.path / "index.html").write_text("<html>my landing page</html>")  # the user's file in the share
    with pytest.raises(OutputError, match=r"also holds .*\(index\.html\)"):
        share.export_html(rec, res.path, format="viser", fps=4.0)
    assert (res.path / "index.html").read_text() == "<html>my landing page</html>"
    (res.path / "index.html").unlink()
    share.export_html(rec, res.path, format="viser", fps=2.0)  # only its own files: replaced


def test_cli_writes_refuses_foreign_targets_and_replaces_its_own(result_dir, tmp_path, capsys):
    out = tmp_path / "scene.html"
    assert cli_main(["export-html", str(result_dir), "--out", str(out), "--fps", "3", "--colour", "mask"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    first = out.stat().st_mtime_ns
    assert cli_main(["export-html", str(result_dir), "--out", str(out)]) == 0  # its own file: replaced
    assert out.stat().st_mtime_ns >= first and share.MARKER in out.read_text(encoding="utf-8")[:300]

    foreign = tmp_path / "notes.html"
    foreign.write_text("<html>my notes</html>")
    assert cli_main(["export-html", str(result_dir), "--out", str(foreign)]) == 2
    err = capsys.readouterr().err
    assert "vggt-mv export-html: error: --out" in err and "was not written by vggt-mv" in err
    assert foreign.read_text() == "<html>my notes</html>"
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "keep.txt").write_text("x")
    assert cli_main(["export-html", str(result_dir), "--format", "viser", "--out", str(folder)]) == 2
    assert (folder / "keep.txt").read_text() == "x" and len(list(folder.iterdir())) == 1
    assert cli_main(["export-html", str(result_dir), "--format", "viser", "--out", str(result_dir)]) == 2
    assert "is an input" in capsys.readouterr().err
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_cli_errors_name_the_problem(result_dir, tmp_path, capsys):
    assert cli_main(["export-html", str(tmp_path), "--out", str(tmp_path / "a.html")]) == 2
    assert f"RESULT_DIR {tmp_path} is not a vggt-mv result folder" in capsys.readouterr().err
    assert cli_main(["export-html", str(result_dir), "--out", str(tmp_path / "a.txt")]) == 2
    assert "must end in .html" in capsys.readouterr().err
    assert cli_main(["export-html", str(result_dir), "--out", str(tmp_path / "a.html"), "--max-mb", "0.3"]) == 2
    assert "raise --max-mb" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.html"))


def test_help_says_what_is_fixed_at_export(capsys):
    with pytest.raises(SystemExit):
        cli_main(["export-html", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "confidence filter, colouring and point size are FIXED AT EXPORT" in text
    assert "--max-mb" in text and "--colour {image,mask}" in text and "--fps" in text


def test_empty_result_is_refused(tmp_path):
    from vggt_mv.eval.synthetic import make_synthetic_reconstruction

    empty = make_synthetic_reconstruction(num_timesteps=2, num_views=2, height=12, width=16)
    empty.depth[:] = 0.0
    empty.invalidate_cache()
    with pytest.raises(ValueError, match="no valid points after the confidence filter"):
        empty.to_html(tmp_path / "e.html")
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_24_timesteps_by_4_views_at_252px_fit_the_default_budget_and_8_mb(tmp_path, caplog):
    """A procedural 24 x 4 scene at 252 px through the tiny preset: the default 60 MB budget holds
    it whole; --max-mb 8 subsamples, stays under 8 MB and logs the factor (sizes printed)."""
    from vggt_mv.data.synthetic import SyntheticSceneConfig, render_scene
    from vggt_mv.inference.pipeline import reconstruct
    from vggt_mv.weights import load_model
    from vggt_mv.weights.demo import demo_weights

    scene = render_scene(SyntheticSceneConfig(T=24, V=4, H=189, W=252), seed=5).to_scene(resolution=252)
    model, _ = load_model("tiny", checkpoint=demo_weights("tiny"))
    big = reconstruct(scene, model, window=24, overlap=0)
    assert (big.num_timesteps, big.num_views, big.image_size[1]) == (24, 4, 252)
    default = share.export_html(big, tmp_path / "default.html")
    assert default.bytes <= 60e6
    with caplog.at_level(logging.INFO, logger="vggt_mv.export.html"):
        small = big.to_html(tmp_path / "small.html", max_mb=8)
    res_bytes = small.stat().st_size
    factor = float(caplog.text.split("points x")[-1].split()[0])
    assert res_bytes <= 8e6 and 0 < factor < 1
    assert f"points subsampled x{factor:.3f} per timestep" in caplog.text
    print(f"\n24x4 @ {big.image_size[1]}x{big.image_size[0]}: default budget {default.bytes / 1e6:.1f} MB "
          f"(point factor {default.plan.point_factor:.3f}, {default.plan.points:,} points); "
          f"--max-mb 8: {res_bytes / 1e6:.2f} MB, factor {factor:.3f}")


def test_targets_are_checked_before_anything_is_recorded(rec, tmp_path, monkeypatch):
    monkeypatch.setattr(share, "_record", lambda *a, **k: pytest.fail("recorded before checking the target"))
    foreign = tmp_path / "page.html"
    foreign.write_text("<html>someone's page</html>")
    with pytest.raises(ValueError, match="was not written by vggt-mv"):
        share.export_html(rec, foreign)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="is the current directory"):
        share.export_html(rec, tmp_path, format="viser")
    with pytest.raises(ValueError, match="is an ancestor of the current directory"):
        share.export_html(rec, tmp_path.parent, format="viser")
    assert foreign.read_text() == "<html>someone's page</html>"
    assert share.is_shared_html(foreign) is False and share.is_share_dir(tmp_path) is False
