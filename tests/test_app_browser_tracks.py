"""The app in headless Chromium with ``--config`` + ``--query-points``: the page runs the sample, the
status reports the tracks, and the per-view images the browser shows have the tracks drawn on them
(the gallery image the page loads is fetched and its pixels at the query points checked)."""
from __future__ import annotations

import numpy as np
import pytest

from test_app_browser import ARGS, CHROMIUM, REPO, VIEWPORT, require_browser, running_app

pytestmark = pytest.mark.browser
QUERIES = np.array([[20.0, 30.0], [56.0, 42.0], [90.0, 60.0]], np.float32)


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    require_browser()
    from vggt_mv.config import ModelConfig

    d = tmp_path_factory.mktemp("browser_tracks")
    ModelConfig.preset("tiny").replace(enable_track=True).to_json(d / "tiny_track.json")
    np.save(d / "q.npy", QUERIES)
    with running_app("--scene", str(REPO / "assets" / "sample"), "--config", str(d / "tiny_track.json"),
                     "--query-points", str(d / "q.npy"), "--time-bias", "0.5",
                     "--resolution", "112", "--window", "5", "--overlap", "1") as (url, _):
        yield url


def test_tracks_are_drawn_in_the_page(app_url, tmp_path):
    cv2 = pytest.importorskip("cv2")
    from playwright.sync_api import sync_playwright

    from vggt_mv_app.tracks import track_colors

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_context(viewport=VIEWPORT).new_page()
            page.goto(app_url)
            # --scene: the run starts when the page opens
            page.wait_for_function(
                "() => { const s = document.querySelector('#status'); return s && /Done|failed|problem/.test(s.innerText); }",
                timeout=120_000)
            status = page.inner_text("#status")
            assert "Done" in status and "3 tracks" in status and "time bias 0.5" in status, status
            assert page.input_value("#query-points textarea, #query-points input").endswith("q.npy")
            page.screenshot(path=str(tmp_path / "tracks_page.png"), full_page=True)
            imgs = page.locator("#g-img img")
            imgs.first.wait_for(timeout=30_000)
            assert imgs.count() >= 3
            src = imgs.first.get_attribute("src")
            body = page.request.get(src if src.startswith("http") else app_url.rstrip("/") + "/" + src.lstrip("/")).body()
            img = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]  # RGB
            cv2.imwrite(str(tmp_path / "view0_t0.png"), img[..., ::-1])
        finally:
            browser.close()
    assert img.shape[:2] == (84, 112), img.shape
    colors = track_colors(len(QUERIES))
    for q, col in zip(QUERIES, colors):  # the track's dot (filled) or ring (not visible) around each query
        x, y = np.rint(q).astype(int)
        patch = img[y - 3:y + 4, x - 3:x + 4].reshape(-1, 3).astype(int)
        assert (np.abs(patch - col).max(-1) <= 8).sum() >= 4, (q, col)
    far = img[5:15, 100:110].reshape(-1, 3).astype(int)  # away from every track: no track colour
    assert not any((np.abs(far - c).max(-1) <= 8).any() for c in colors)
