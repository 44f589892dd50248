"""The shared scene in headless Chromium with the network cut off: the single HTML from ``file://``
and the ``.viser`` + ``viewer/`` folder from ``python -m http.server`` on 127.0.0.1.

Every request that is not the file itself (or, for the folder, not the local server) is aborted and
recorded; none may happen. The WebGL canvas is measured with viser's notification toast hidden
(white background = reference): the scene must cover part of it, and two screenshots taken one
second of playback apart (read from the player's own timeline) must differ. Screenshots are saved
under pytest's tmp_path (printed with ``-s``). Needs Debian's ``chromium`` (never ``playwright install``).
"""
from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from share_helpers import sample_result
from vggt_mv.export.html import export_html
from vggt_mv.inference.reconstruction import Reconstruction

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader",
        "--disable-background-networking", "--disable-component-update", "--no-first-run"]
FPS = 2.0               # 10 timesteps -> a 5 s loop, so "one second later" never wraps to the start
MIN_COVER = 0.03        # non-background share of the canvas; measured ~0.2
MIN_CHANGE = 0.002      # share of canvas pixels that change over one playback second; measured ~0.05
BG_DELTA = 40
_HIDE_TOAST = "() => { const s = document.createElement('style'); s.textContent = " \
              "'.mantine-Notifications-root {visibility: hidden !important}'; document.head.appendChild(s); }"
_PLAY_TIME = "() => { const e = document.querySelector('.mantine-Slider-root input[type=hidden]'); " \
             "return e ? parseFloat(e.value) : null; }"


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium not installed")
    pytest.importorskip("playwright.sync_api")
    return Reconstruction.load(sample_result(tmp_path_factory.mktemp("sample") / "rec", resolution=112))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _nonbg(img: np.ndarray) -> np.ndarray:
    return np.abs(img.astype(np.int16) - 255).max(-1) > BG_DELTA


def _play(url: str, allowed: str, shots: Path, duration: float) -> dict:
    """Open ``url`` with only ``allowed``-prefixed requests let through; measure the canvas."""
    import cv2
    from playwright.sync_api import sync_playwright

    blocked, served = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            ctx = browser.new_context(viewport={"width": 1000, "height": 700})

            def route(r) -> None:
                if r.request.url.startswith(allowed):
                    served.append(r.request.url)
                    r.continue_()
                else:
                    blocked.append(r.request.url)
                    r.abort()

            ctx.route("**/*", route)
            page = ctx.new_page()
            page.goto(url)
            canvas = page.locator("canvas").first
            canvas.wait_for(timeout=60_000)
            page.evaluate(_HIDE_TOAST)
            box = canvas.bounding_box()

            def grab(name: str) -> np.ndarray:
                png = page.screenshot(clip=box)
                img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
                cv2.imwrite(str(shots / name), img)
                return img

            t0 = time.time()  # wait for the scene: enough non-background pixels
            while (first := grab("a.png")) is not None and _nonbg(first).mean() < MIN_COVER:
                if time.time() - t0 > 60:
                    break
                time.sleep(0.5)
            while (ta := page.evaluate(_PLAY_TIME)) is not None and ta > duration - 1.5:
                time.sleep(0.05)  # close to the end of the loop: take "a" after the wrap
                if time.time() - t0 > 90:
                    break
            first = grab("a.png")
            while (tb := page.evaluate(_PLAY_TIME)) is not None and ta is not None and tb < ta + 1.0:
                if time.time() - t0 > 90:
                    break
                time.sleep(0.05)
            second = grab("b.png")
        finally:
            browser.close()
    changed = float((np.abs(first.astype(np.int16) - second.astype(np.int16)).max(-1) > BG_DELTA).mean())
    return dict(blocked=blocked, served=served, cover=float(_nonbg(first).mean()), changed=changed,
                t=(ta, tb))


def _check(m: dict, shots: Path) -> None:
    print(f"\nscreenshots: {shots}\nmeasured: cover={m['cover']:.3f} changed={m['changed']:.3f} "
          f"playback t={m['t']} served={len(m['served'])}")
    assert m["blocked"] == [], f"requests outside the export: {m['blocked']}"
    assert m["cover"] >= MIN_COVER, "the canvas is blank"
    ta, tb = m["t"]
    assert ta is not None and tb is not None and tb >= ta + 1.0, f"the timeline does not play: {m['t']}"
    assert m["changed"] >= MIN_CHANGE, "two screenshots a playback second apart are the same"


def test_offline_html_plays_from_file_without_network(rec, tmp_path):
    out = export_html(rec, tmp_path / "scene.html", fps=FPS).path
    shots = tmp_path / "screenshots"
    shots.mkdir()
    m = _play(out.as_uri(), out.as_uri(), shots, rec.num_timesteps / FPS)
    assert m["served"] == [out.as_uri()]  # the page itself and nothing else
    _check(m, shots)


def test_viser_folder_plays_from_a_static_server(rec, tmp_path):
    folder = export_html(rec, tmp_path / "share", format="viser", fps=FPS).path
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                              cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}/"
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        shots = tmp_path / "screenshots"
        shots.mkdir()
        m = _play(base + "viewer/?playbackPath=../scene.viser", base, shots, rec.num_timesteps / FPS)
    finally:
        server.kill()
        server.wait(timeout=10)
    assert base + "scene.viser" in m["served"]
    _check(m, shots)
