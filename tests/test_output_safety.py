"""The output rule (DESIGN §12): no writer deletes what vggt-mv did not write; kills leave a complete result."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from vggt_mv.cli import main as cli_main
from vggt_mv.export.output import OutputError, check_output, collect_leftovers, is_result_dir, output_dir
from vggt_mv.inference.reconstruction import Reconstruction

SAMPLE = REPO / "assets" / "sample"


def tree_digest(root: Path) -> dict[str, str]:
    """relative path -> sha1 of every file under ``root`` (folders as '<dir>')."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = "<dir>" if p.is_dir() else hashlib.sha1(p.read_bytes()).hexdigest()
    return out


def reconstruct_args(scene: Path, out: str | Path, *extra: str) -> list[str]:
    return ["reconstruct", "--scene", str(scene), "--preset", "tiny", "--resolution", "56", "--frames", "0:2",
            "--window", "2", "--overlap", "1", "--no-progress", "--out", str(out), *extra]


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """A user's folder holding a copy of the sample scene and an unrelated file; cwd is that folder."""
    shutil.copytree(SAMPLE, tmp_path / "scene")
    (tmp_path / "notes.txt").write_text("my notes\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("target", [".", "scene", "scene/images", "..", "foreign"])
def test_out_refuses_cwd_inputs_ancestors_and_foreign_folders(workdir, capsys, target):
    """The reported case: `--out .` deleted every file of the folder. Now each of these is refused
    (exit 2, one line naming the reason) and every file is byte-identical afterwards."""
    (workdir / "foreign").mkdir()
    (workdir / "foreign" / "data.bin").write_bytes(b"\x00\x01")
    before = tree_digest(workdir)
    scene = workdir / "scene" if target != "scene/images" else workdir / "scene" / "images" / ".."
    rc = cli_main(reconstruct_args(scene, target))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err[-1].startswith("vggt-mv reconstruct: error: --out ") and "Traceback" not in "\n".join(err)
    assert tree_digest(workdir) == before


def test_out_replaces_a_previous_result_and_writes_empty_folders(workdir):
    out = workdir / "out"
    out.mkdir()  # an empty folder may be written
    assert cli_main(reconstruct_args(workdir / "scene", out)) == 0
    first = (out / "manifest.json").read_text()
    assert is_result_dir(out)
    assert cli_main(reconstruct_args(workdir / "scene", out, "--lambda-pose", "1")) == 0
    assert (out / "manifest.json").read_text() != first  # replaced by the new result
    assert not [p for p in workdir.iterdir() if p.name.startswith(".out.")]  # no temp/old left


def test_a_previous_result_holding_the_users_files_is_not_replaced(workdir, capsys):
    """Replacing a previous result must not take along what the user put into it (a note, a video
    recorded into it, a file inside arrays/): refused before the run, exit 2, one line naming them."""
    out = workdir / "out"
    assert cli_main(reconstruct_args(workdir / "scene", out)) == 0
    (out / "notes.txt").write_text("keep me\n")
    (out / "arrays" / "mine.npy").write_bytes(b"x")
    (out / "extra").mkdir()
    before = tree_digest(workdir)
    capsys.readouterr()
    assert cli_main(reconstruct_args(workdir / "scene", out, "--lambda-pose", "1")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "arrays/mine.npy, extra/, notes.txt" in err[0] and "move that out" in err[0], err
    assert tree_digest(workdir) == before
    for extra in (out / "notes.txt", out / "arrays" / "mine.npy", out / "extra"):
        shutil.rmtree(extra) if extra.is_dir() else extra.unlink()
    assert cli_main(reconstruct_args(workdir / "scene", out, "--lambda-pose", "1")) == 0  # only its own files: replaced


def test_unlisted_entries(tmp_path):
    from vggt_mv.export.output import unlisted_entries

    for rel in ("a.txt", "pts/t0.ply", "pts/t1.ply", "colmap/images/v0/x.png", "colmap/c.txt", "deep/er/y"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    (tmp_path / "empty").mkdir()
    listed = ["a.txt", "pts/t0.ply", "colmap/images/", "colmap/c.txt"]
    assert unlisted_entries(tmp_path, listed) == ["deep/", "empty/", "pts/t1.ply"]
    assert unlisted_entries(tmp_path, listed + ["pts/t1.ply", "deep/er/y", "empty/"]) == []


def test_check_output_rules(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.png").write_bytes(b"x")
    with pytest.raises(OutputError, match="not written by vggt-mv"):
        check_output("file.txt", kind="file")
    with pytest.raises(OutputError, match="is a folder"):
        check_output("data", kind="file")
    with pytest.raises(OutputError, match="an input"):
        check_output("data/a.png", kind="file", inputs=["data/a.png"], is_ours=lambda p: True)
    with pytest.raises(OutputError, match="holding the input"):
        check_output(tmp_path / "data", kind="dir", inputs=["data/a.png"])
    with pytest.raises(OutputError, match="cannot write"):
        check_output("/proc/vggt-mv-out", kind="dir")
    assert check_output("file.txt", kind="file", is_ours=lambda p: True) == tmp_path / "file.txt"
    assert check_output("new/deeper/out", kind="dir") == tmp_path / "new" / "deeper" / "out"
    assert not (tmp_path / "new").exists()  # validation creates nothing


# ----------------------------------------------------------------------------- kill safety

_WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from vggt_mv.inference.reconstruction import Reconstruction
    T, V, H, W = 2, 2, 8, 10
    value = float(sys.argv[2])
    rec = Reconstruction(images=np.zeros((T, V, H, W, 3), np.uint8), depth=np.full((T, V, H, W), value, np.float32),
                         depth_conf=None, world_points=None, world_points_conf=None,
                         extrinsic=np.tile(np.eye(3, 4, dtype=np.float32), (T, V, 1, 1)),
                         intrinsic=np.tile(np.diag([10.0, 10.0, 1.0]).astype(np.float32), (T, V, 1, 1)))
    rec.save(sys.argv[1], glb=False, colmap=False)
""")


def _write(target: Path, value: float, die_at: str | None = None, exchange: bool = True) -> int:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("VGGT_MV_TEST_DIE_AT", None)
    if die_at:
        env["VGGT_MV_TEST_DIE_AT"] = die_at
    if not exchange:
        env["VGGT_MV_TEST_NO_EXCHANGE"] = "1"
    return subprocess.run([sys.executable, "-c", _WRITER, str(target), str(value)], env=env, timeout=120).returncode


def _depth_value(target: Path) -> float:
    rec = Reconstruction.load(target)  # raises unless the folder holds a complete result
    return float(np.unique(rec.depth).item())


@pytest.mark.slow
@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
@pytest.mark.parametrize("point", ["temp_written", "between_renames", "cleanup"])
def test_killed_writer_leaves_a_complete_result_and_the_next_run_cleans_up(tmp_path, point, exchange):
    target = tmp_path / "out"
    assert _write(target, 1.0) == 0
    assert _write(target, 2.0, die_at=point, exchange=exchange) == 86  # os._exit at that point
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")]
    assert leftovers, "the killed writer should have left its temp/old entry behind"
    if target.exists():
        value = _depth_value(target)  # the complete old or the complete new result
        assert value in (1.0, 2.0)
        if point == "temp_written":
            assert value == 1.0
        if point == "cleanup":
            assert value == 2.0
    else:  # only the two-rename swap can be caught between its renames
        assert point == "between_renames" and not exchange
    assert _write(target, 3.0) == 0  # restores / cleans, then writes
    assert _depth_value(target) == 3.0
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_missing_target_is_restored_from_a_dead_writers_old_folder(tmp_path):
    target = tmp_path / "out"
    assert _write(target, 1.0) == 0
    assert _write(target, 2.0, die_at="between_renames", exchange=False) == 86
    assert not target.exists()
    removed = collect_leftovers(target, is_result_dir)
    assert target.exists() and _depth_value(target) == 1.0  # the previous result is back
    assert all(p.name.endswith(".tmp") for p in removed)


def test_leftovers_of_live_writers_are_kept(tmp_path):
    target = tmp_path / "out"
    with output_dir(target) as tmp:
        (tmp / "manifest.json").write_text("{}")
        assert collect_leftovers(target) == []  # our own pid: alive
        assert tmp.exists()
    assert target.is_dir() and not tmp.exists()
