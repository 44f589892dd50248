"""The app in headless Chromium with ``--sparse landmark --keypoints sift``: the λ_kpt slider is enabled
(the strategy is not ``none``), moving it and re-running resumes from the cache and changes the scene,
and the per-view images carry the keypoints.

The page is opened with ``?fixedDpr=1``, which the app passes to the viser iframe: viser then renders
at a fixed resolution instead of adapting it to the frame rate (slow software WebGL would otherwise
change the resolution between two pictures of the same scene). A re-run keeps the viewer's frame
(same input, other settings). So a re-run with the same settings must give the same pixels (the
control), and the λ_kpt re-run must not.
"""
from __future__ import annotations

import contextlib
import time

import numpy as np
import pytest

from test_app_browser import ARGS, CHROMIUM, REPO, VIEWPORT, Canvas, require_browser, running_app

pytestmark = pytest.mark.browser

CONTROL_MAX = 1e-4   # pixels changed by a same-settings re-run (measured 0)
MIN_KPT_CHANGE = 0.01  # pixels changed by λ_kpt 0 -> 8 with the demo weights (measured ~0.1)


@pytest.fixture(scope="module")
def app_url():
    require_browser()
    with running_app("--scene", str(REPO / "assets" / "sample"), "--sparse", "landmark", "--keypoints", "sift",
                     "--resolution", "112", "--window", "10", "--overlap", "0") as (url, _):
        yield url


def _wait_status(page, pattern: str) -> str:
    page.wait_for_function(
        "(p) => { const s = document.querySelector('#status'); return s && new RegExp(p).test(s.innerText); }",
        arg=pattern, timeout=120_000)
    return page.inner_text("#status")


class SceneBytes:
    """Bytes the viser client received over its websocket (the scene arrives there)."""

    def __init__(self, page) -> None:
        self.total, self.last = 0, time.time()
        page.on("websocket", lambda ws: ws.on("framereceived", self._frame))

    def _frame(self, payload) -> None:
        self.total += len(payload)
        self.last = time.time()

    def wait_for(self, start: int, at_least: int, quiet_s: float = 1.0, timeout: float = 60.0) -> int:
        """Wait until ``at_least`` bytes arrived after ``start`` and nothing more for ``quiet_s``."""
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.total - start >= at_least and time.time() - self.last > quiet_s:
                return self.total - start
            time.sleep(0.1)
        raise AssertionError(f"the viewer received {self.total - start} bytes, expected >= {at_least}")


def _changed(a, b) -> float:
    return float((np.abs(a.astype(np.int16) - b.astype(np.int16)).max(-1) > 0).mean())


def test_lambda_kpt_slider_changes_the_scene(app_url, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_context(viewport=VIEWPORT).new_page()
            received = SceneBytes(page)
            page.goto(app_url + "?fixedDpr=1")
            status = _wait_status(page, "Done|failed|problem")  # --scene: runs when the page opens
            assert "Done" in status and "keypoints sift" in status, status
            assert "fixedDpr=1" in page.evaluate("() => document.getElementById('viser-frame').src")
            assert "keypoints" in page.locator("#g-img").inner_text()  # captions count the drawn keypoints
            canvas = Canvas(page, tmp_path)
            vframe = page.frame_locator("#viser-frame")
            vframe.locator("canvas").first.wait_for(timeout=30_000)
            with contextlib.suppress(Exception):  # "Software WebGL rendering detected" toast
                vframe.locator(".mantine-Notification-closeButton").first.click(timeout=5_000)
            vframe.get_by_label("cameras", exact=True).wait_for(timeout=30_000)
            canvas.click_checkbox("cameras")  # the predicted cameras off: λ_kpt moves the geometry
            page.get_by_label("A/B: keep the previous run as a ghost").uncheck()  # no ghost: only the geometry
            first = canvas.settle(lambda im: True, "k0_first.png")
            scene_bytes = received.total

            def rerun(n: int, pattern: str = "") -> str:
                start = received.total
                page.click("#run-btn")
                status = _wait_status(page, f"\\(run {n}\\)[^]*{pattern}")
                got = received.wait_for(start, at_least=scene_bytes // 2)  # the rebuilt scene reached the page
                print(f"run {n}: the viewer received {got} bytes")
                return status

            # control: the same settings again -> the scene is rebuilt and sent again, same pixels
            rerun(2)
            same = canvas.settle(lambda im: True, "k1_same.png")
            control = _changed(first, same)
            box = page.locator("#lam-kpt input[type=number]")
            assert box.is_enabled()  # the strategy is landmark
            box.fill("8")
            box.press("Enter")
            status = rerun(3, "λ_kpt=\\(8")
            assert "reused cached upstream layers" in status, status
            after = canvas.settle(lambda im: _changed(same, im) > MIN_KPT_CHANGE, "k2_kpt8.png")
            changed = _changed(same, after)
            print(f"\npixels changed: same-settings re-run {control:.5f}, λ_kpt 0 -> 8 {changed:.5f} ({tmp_path})")
            assert control <= CONTROL_MAX, control
            assert changed > MIN_KPT_CHANGE, changed
        finally:
            browser.close()
