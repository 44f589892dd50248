"""Weights by name: hf:// URIs and short names resolved through huggingface_hub's cache, offline.

A temp ``HF_HOME`` is laid out like the hub's cache (``hub/models--OWNER--REPO/{refs/main,
snapshots/REV/FILE}``, datasets under ``datasets--OWNER--REPO``) with the reference fixtures under
the real file names; ``HF_HUB_OFFLINE=1``. Nothing touches the network.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from conftest import REPO, reference_case
from test_model_parity import compare_to_expected
from vggt_mv.cli import main as cli_main
from vggt_mv.config import ModelConfig
from vggt_mv.weights import load_model
from vggt_mv.weights.hub import SHORT_NAMES, implied_preset, parse_weights_ref, resolve_weights

REV = "0123456789abcdef0123456789abcdef01234567"


def put_in_cache(home: Path, repo_type: str, repo_id: str, filename: str, src: Path) -> Path:
    """Place ``src`` in the hub cache layout under ``home`` as ``repo_id``/``filename`` at ``main``."""
    repo = home / "hub" / f"{repo_type}s--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(REV)  # no trailing newline, as the hub writes it
    dst = repo / "snapshots" / REV / filename
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst


@pytest.fixture
def hub_home(tmp_path, monkeypatch) -> Path:
    """A hub cache with the fixtures under the real names; offline mode."""
    home = tmp_path / "hf"
    vggt = reference_case("vggt_tiny")
    put_in_cache(home, "model", "facebook/VGGT-1B", "model.pt", vggt / "checkpoint.pt")
    state = torch.load(vggt / "checkpoint.pt", map_location="cpu", weights_only=True)
    state = state.get("model", state)
    converted = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(converted))
    put_in_cache(home, "model", "facebook/VGGT-1B", "model.safetensors", converted)
    put_in_cache(home, "dataset", "zhouk777/PAGE4D", "checkpoint_mask.pt",
                 reference_case("page4d_tiny_mask") / "checkpoint.pt")
    put_in_cache(home, "model", "yyfz233/Pi3", "model.safetensors", reference_case("pi3_tiny") / "model.safetensors")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


def offline_cli(home: Path, *argv: str) -> subprocess.CompletedProcess:
    """The CLI in a fresh process (huggingface_hub reads its environment at import)."""
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    env.pop("HF_HUB_CACHE", None)
    return subprocess.run([sys.executable, "-m", "vggt_mv.cli", *argv], capture_output=True, text=True, env=env,
                          timeout=180)


def test_parse_refs():
    assert parse_weights_ref("hf://facebook/VGGT-1B/model.pt").repo_id == "facebook/VGGT-1B"
    ref = parse_weights_ref("hf://datasets/zhouk777/PAGE4D@v1.0/sub/dir/checkpoint_mask.pt")
    assert (ref.repo_type, ref.repo_id, ref.revision, ref.filename) == ("dataset", "zhouk777/PAGE4D", "v1.0",
                                                                          "sub/dir/checkpoint_mask.pt")
    assert ref.download_command() == ("hf download zhouk777/PAGE4D sub/dir/checkpoint_mask.pt --repo-type dataset "
                                      "--revision v1.0")
    assert parse_weights_ref("hf://datasets/zhouk777/PAGE4D@refs%2Fpr%2F1/a.pt").revision == "refs/pr/1"
    assert parse_weights_ref("pi3") == SHORT_NAMES["pi3"] and parse_weights_ref("some/local.pt") is None
    with pytest.raises(ValueError, match="not a Hub file URI"):
        parse_weights_ref("hf://just-a-name")
    assert implied_preset("vggt-1b", None) == "vggt" and implied_preset("page4d-mask", None) == "page4d_mask"
    assert implied_preset("page4d-nomask", None) == "page4d" and implied_preset(None, "pi3") == "vggt_mv"
    assert implied_preset("x.pt", None) is None


def test_a_local_path_wins_over_a_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pi3").write_bytes(b"x")
    assert parse_weights_ref("pi3") is None and resolve_weights("pi3") == Path("pi3")


@pytest.mark.parametrize("ref", ["hf://facebook/VGGT-1B/model.pt", "vggt-1b"])
def test_vggt_by_name_loads_exactly(hub_home, ref):
    root = reference_case("vggt_tiny")
    model, report = load_model(ModelConfig.from_json(root / "model_config.json"), checkpoint=ref)
    assert report.fraction_loaded("checkpoint") == 1.0 and not report.left_at_init
    assert str(hub_home) in report.files["checkpoint"]
    assert compare_to_expected(model, root) >= 10  # parity through the hub name


def test_dataset_repo_and_pi3_by_name(hub_home):
    page = reference_case("page4d_tiny_mask")
    model, report = load_model(ModelConfig.from_json(page / "model_config.json"),
                               checkpoint="hf://datasets/zhouk777/PAGE4D/checkpoint_mask.pt")
    assert report.fraction_loaded("checkpoint") == 1.0
    assert compare_to_expected(model, page) >= 10
    pi3 = reference_case("pi3_tiny")
    _, report = load_model(ModelConfig.from_json(pi3 / "model_config.json"), pi3="pi3")
    assert report.fraction_loaded("pi3") == 1.0


@pytest.mark.slow
def test_cli_inspect_by_name_offline(hub_home):
    cfg = reference_case("vggt_tiny") / "model_config.json"
    for ref in ("hf://facebook/VGGT-1B/model.pt", "vggt-1b"):
        proc = offline_cli(hub_home, "weights", "inspect", "--checkpoint", ref, "--config", str(cfg))
        assert proc.returncode == 0, proc.stderr
        assert "(100.0% of expected" in proc.stdout
    proc = offline_cli(hub_home, "weights", "list")
    assert proc.returncode == 0
    lines = {ln.split()[0]: ln for ln in proc.stdout.splitlines()[2:6]}
    assert " yes " in lines["vggt-1b"] and " yes " in lines["pi3"] and " no " in lines["page4d-nomask"]
    assert "hf download zhouk777/PAGE4D checkpoint_nomask.pt --repo-type dataset" in proc.stdout


def test_absent_name_offline_is_one_line_exit_2(hub_home, tmp_path, capsys):
    rc = cli_main(["reconstruct", "--scene", str(REPO / "assets" / "sample"), "--checkpoint", "page4d-nomask",
                   "--resolution", "56", "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and "Traceback" not in "\n".join(err)
    assert err[-1] == (f"vggt-mv reconstruct: error: --checkpoint page4d-nomask: zhouk777/PAGE4D/checkpoint_nomask.pt "
                       f"is not in the Hugging Face cache {hub_home / 'hub'} and downloads are off (HF_HUB_OFFLINE=1); "
                       "download it with `hf download zhouk777/PAGE4D checkpoint_nomask.pt --repo-type dataset` "
                       "(or pass a local file path)")
    assert not (tmp_path / "out").exists()


def test_absent_name_in_the_app_is_a_message(hub_home):
    from vggt_mv_app.state import UserError, get_model

    with pytest.raises(UserError, match="hf download facebook/VGGT-1B missing.safetensors"):
        get_model("vggt", "hf://facebook/VGGT-1B/missing.safetensors", None, "cpu", "none")


def test_choices_and_descriptions_for_the_app(hub_home, tmp_path):
    from vggt_mv.weights.hub import describe_weights, weights_choices

    labels = dict((v, label) for label, v in weights_choices("checkpoint"))
    assert labels == {"vggt-1b": "vggt-1b (cached)", "page4d-mask": "page4d-mask (cached)",
                      "page4d-nomask": "page4d-nomask (downloads on first run)"}
    assert weights_choices("pi3") == [("pi3 (cached)", "pi3")]
    assert describe_weights("vggt-1b").startswith("hf://facebook/VGGT-1B/model.safetensors: cached (")
    assert "hf download zhouk777/PAGE4D checkpoint_nomask.pt --repo-type dataset" in describe_weights("page4d-nomask")
    (tmp_path / "w.pt").write_bytes(b"x" * 2000)
    assert describe_weights(str(tmp_path / "w.pt")) == "local file, 2.0 KB"


def _resolve_on_rank(rank: int, world: int, port: int, home: str, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(HF_HOME=home, HF_HUB_OFFLINE="1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=__import__("datetime").timedelta(seconds=60))
    try:
        Path(out, f"rank{rank}").write_text(str(resolve_weights("vggt-1b")))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_every_rank_resolves_a_name_under_torch_distributed(hub_home, tmp_path):
    """Rank 0 fetches, the others wait at the barrier and read the cache: all get the same file."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_resolve_on_rank, args=(2, port, str(hub_home), str(tmp_path)), nprocs=2,
                       start_method="spawn", join=True)
    paths = {(tmp_path / f"rank{r}").read_text() for r in range(2)}
    assert len(paths) == 1 and paths.pop().startswith(str(hub_home))


def test_weights_list_asks_the_hub_for_sizes_once_and_fast(tmp_path):
    """`weights list` online: sizes come from one HEAD request per file (a local stand-in for the Hub
    via HF_ENDPOINT); with the Hub unreachable it answers at once instead of retrying per name."""
    import http.server
    import json
    import threading
    import time

    heads: list[str] = []

    class Hub(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):  # noqa: N802 - http.server's name
            heads.append(self.path)
            self.send_response(200)
            self.send_header("X-Linked-Size", "123456789")
            self.send_header("ETag", '"abc"')
            self.send_header("X-Repo-Commit", "0" * 40)
            self.end_headers()

        def log_message(self, *args):
            """Quiet: http.server would print a line per request into the test output."""

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    code = ("import json; from vggt_mv.weights.hub import weights_table; "
            "print(json.dumps([r['size'] for r in weights_table()]))")

    def sizes(endpoint: str) -> tuple[list, float]:
        env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": endpoint, "PYTHONPATH": str(REPO)}
        for key in ("HF_HUB_OFFLINE", "HF_HUB_CACHE"):
            env.pop(key, None)
        t0 = time.monotonic()
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout.strip().splitlines()[-1]), time.monotonic() - t0

    try:
        got, _ = sizes(f"http://127.0.0.1:{server.server_port}")
        assert got == [123456789] * len(SHORT_NAMES) and len(heads) == len(SHORT_NAMES)
    finally:
        server.shutdown()
        server.server_close()
    got, seconds = sizes(f"http://127.0.0.1:{server.server_port}")  # nobody listens there now
    assert got == [None] * len(SHORT_NAMES) and seconds < 20, seconds
