"""The app in headless Chromium: run the bundled sample, check the viser iframe, two tabs isolated.

The 3D scene is checked by pixel statistics of screenshots of the viser iframe (the floating GUI
panel and the "Software WebGL rendering detected" toast are hidden while capturing, so only the
WebGL canvas is measured; the white background is the reference):

* before the run the canvas is empty; after it, frustums + points cover part of it;
* with cameras / GT cameras switched off in viser's panel (and the point size at its maximum,
  since random tiny weights give thin clouds) what is left are the points: a minimum coverage
  and colour spread (image colours, not one flat line colour);
* after a λ change and re-run, the canvas differs from the first run's, both with the orange
  A/B ghost shown (orange pixels appear) and with it off (the geometry itself moved);
* moving the Gradio timestep slider changes the canvas and viser's own timeline follows.

Waits poll screenshots until a condition holds and the picture is steady (no fixed sleeps).
Needs Debian's ``chromium`` (never ``playwright install``). Screenshots go to a temp dir whose
path is printed (``pytest -s``) and kept by pytest's tmp_path retention; the measured values
are printed too.
"""
from __future__ import annotations

import contextlib

import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader",
        "--disable-background-networking", "--disable-component-update", "--no-first-run"]
REPO = Path(__file__).resolve().parents[1]

# Thresholds on the canvas (fractions of its pixels); the test prints the measured values.
MIN_SCENE = 0.03        # non-background after the run (frustums + points); measured ~0.14
# tall enough for the whole page: headless Chromium throttles an iframe scrolled out of view (clicking
# Run at the bottom of the controls scrolls the page), and the viser client then applies no updates
VIEWPORT = {"width": 1500, "height": 2000}
MIN_POINTS = 0.001      # non-background with cameras hidden, max point size; measured 0.006-0.03
MIN_POINT_STD = 8.0     # colour std (0-255) over those pixels; measured ~33
MIN_GHOST = 0.001       # pixels that change when the A/B ghost is toggled after the λ re-run
MIN_GHOST_TINT = 30.0   # mean red - blue over those pixels (the ghost is orange)
MIN_CHANGE = 0.002      # pixels changed by the λ re-run (ghost off) / by a timestep switch
BG_DELTA = 40           # a pixel is "non-background" / "changed" above this max-channel difference

# Hide viser's GUI panel and notifications (toast) while capturing the canvas.
_HIDE_OVERLAYS = """(on) => { for (const e of document.querySelectorAll(
    '.mantine-Paper-root, .mantine-Notifications-root')) e.style.visibility = on ? 'hidden' : ''; }"""
# The number box / slider next to a labelled control in viser's panel.
_VISER_ROW = """([label, sel]) => { const l = Array.from(document.querySelectorAll('label'))
    .find(e => e.textContent.trim() === label);
  let n = l; while (n && !(n.querySelector && n.querySelector(sel))) n = n.parentElement;
  return n ? n.querySelector(sel) : null; }"""


@contextlib.contextmanager
def running_app(*args: str, env: dict | None = None, info: dict | None = None):
    """``vggt-mv-app *args`` in a subprocess; yields ``(url, viser_port)`` once it serves; stopped
    (SIGTERM) after. ``env``: extra environment; ``info`` gets ``root`` (the app's temp root),
    ``proc`` and, once stopped, ``returncode``."""
    port, vport = _free_port(), _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "vggt_mv_app.main", "--port", str(port), "--viser-port", str(vport), *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)
    url, lines, t0 = None, [], time.time()
    while time.time() - t0 < 60:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        lines.append(line)
        m = re.search(r"vggt-mv-app: open (http://\S+)", line)
        if m:
            url = m.group(1)
            root = re.search(r"session files under (\S+)\)", line)
            if info is not None:
                info.update(root=Path(root.group(1)) if root else None, proc=proc)
            break
    if url is not None:  # keep draining the log so the app never blocks on a full pipe
        threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
        if info is not None:
            info["log"] = lines
    try:
        if url is None:
            pytest.fail("app did not start:\n" + "".join(lines[-40:]))
        yield url, vport
    finally:
        proc.terminate()
        t_stop = time.time()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if info is not None:
            info.update(returncode=proc.returncode, stop_s=time.time() - t_stop)


def require_browser() -> None:
    """Skip unless Debian's chromium, playwright and the bundled sample are there."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium not installed")
    pytest.importorskip("playwright.sync_api")
    if not (REPO / "assets" / "sample").is_dir():
        pytest.skip("bundled sample not present")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url():
    require_browser()
    with running_app("--resolution", "112", "--window", "10", "--overlap", "0", "--no-autorun") as (url, vport):
        yield url, vport


def _nonbg(img):
    import numpy as np

    return np.abs(img.astype(np.int16) - 255).max(-1) > BG_DELTA


def _changed(a, b) -> float:
    import numpy as np

    return float((np.abs(a.astype(np.int16) - b.astype(np.int16)).max(-1) > BG_DELTA).mean())


class Canvas:
    """Screenshots of the viser canvas (overlays hidden), as BGR arrays, saved as PNGs."""

    def __init__(self, page, shots: Path) -> None:
        self.page, self.shots = page, shots
        self.frame = None

    def viser(self):
        if self.frame is None or self.frame.is_detached():
            src = self.page.evaluate("() => document.getElementById('viser-frame').src")
            self.frame = next(f for f in self.page.frames if f.url.rstrip("/") == src.rstrip("/"))
        return self.frame

    def grab(self, name: str | None = None):
        import cv2
        import numpy as np

        f = self.viser()
        f.evaluate(_HIDE_OVERLAYS, True)
        try:
            png = self.page.locator("#viser-frame").screenshot()
        finally:
            f.evaluate(_HIDE_OVERLAYS, False)
        img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)[4:-4, 4:-4]  # drop the border
        if name:
            cv2.imwrite(str(self.shots / name), img)
        return img

    def settle(self, cond, name: str, timeout: float = 30.0):
        """Grab until ``cond(img)`` holds on two consecutive, (nearly) identical screenshots."""
        import numpy as np

        t0, prev = time.time(), None
        while True:
            img = self.grab()
            steady = prev is not None and float(np.abs(img.astype(np.int16) - prev).mean()) < 0.5
            if (steady and cond(img)) or time.time() - t0 > timeout:
                return self._save(img, name)
            prev = img
            time.sleep(0.2)

    def _save(self, img, name):
        import cv2

        cv2.imwrite(str(self.shots / name), img)
        return img

    def click_checkbox(self, label: str) -> None:
        self.page.frame_locator("#viser-frame").get_by_label(label, exact=True).click()

    def row(self, label: str, sel: str):
        return self.viser().evaluate_handle(_VISER_ROW, [label, sel]).as_element()


from vggt_mv.weights.demo import demo_weights  # noqa: E402


def test_run_sample_and_two_tabs(app_url, tmp_path):
    pytest.importorskip("cv2")
    import numpy as np
    from playwright.sync_api import sync_playwright

    url, vport = app_url
    shots = tmp_path / "screenshots"
    shots.mkdir()
    print(f"\nscreenshots: {shots}")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            ctx = browser.new_context(viewport=VIEWPORT)
            page = ctx.new_page()
            page.goto(url)
            page.wait_for_selector("#run-btn", timeout=30_000)
            src_js = "() => { const f = document.getElementById('viser-frame'); return f && f.getAttribute('src'); }"
            page.wait_for_function(src_js, timeout=30_000)
            src1 = page.evaluate(src_js)
            assert src1.startswith("http://127.0.0.1:"), src1  # built from window.location.hostname
            banner = page.inner_text("#banner")
            assert ("demo weights" in banner) if demo_weights("tiny") else ("random tiny weights" in banner), banner
            page.screenshot(path=str(shots / "0_loaded.png"), full_page=True)

            canvas = Canvas(page, shots)
            vframe = page.frame_locator("#viser-frame")
            vframe.locator("canvas").first.wait_for(timeout=30_000)
            toast = vframe.locator(".mantine-Notification-closeButton")  # "Software WebGL rendering detected"
            with contextlib.suppress(Exception):  # no toast (hardware GL): nothing to dismiss
                toast.first.click(timeout=5_000)
            empty = canvas.settle(lambda im: True, "c0_empty.png")
            measured = {"empty": float(_nonbg(empty).mean())}
            assert measured["empty"] < 0.01, measured

            page.click("#run-btn")
            page.wait_for_function(
                "() => { const s = document.querySelector('#status'); return s && /Done|failed|problem/.test(s.innerText); }",
                timeout=90_000)
            status = page.inner_text("#status")
            assert "Done" in status, status
            assert "T=10" in status and "V=3" in status

            # the scene streamed in: viser's panel has the run's controls and the canvas is covered
            vframe.get_by_label("cameras", exact=True).wait_for(timeout=30_000)
            run1 = canvas.settle(lambda im: _nonbg(im).mean() > MIN_SCENE, "c1_run1.png")
            measured["run1"] = float(_nonbg(run1).mean())
            page.screenshot(path=str(shots / "1_after_run.png"), full_page=True)
            page.locator("#viser-frame").screenshot(path=str(shots / "2_viser.png"))
            assert page.locator("#g-img img").count() >= 3  # per-view gallery filled
            assert measured["run1"] > MIN_SCENE, measured

            # points alone: frustums off, point size to the slider's maximum (random weights -> thin clouds)
            canvas.click_checkbox("cameras")
            canvas.click_checkbox("ground-truth cameras")
            size_max = canvas.row("point size", "[role=slider]").get_attribute("aria-valuemax")
            box_size = canvas.row("point size", "input.mantine-NumberInput-input")
            box_size.fill(f"{0.999 * float(size_max):.6g}")
            box_size.press("Enter")
            pts = canvas.settle(lambda im: run1.shape != im.shape or _changed(im, run1) > MIN_CHANGE, "c2_points.png")
            sel = _nonbg(pts)
            measured["points"] = float(sel.mean())
            measured["points_colour_std"] = float(pts[sel].astype(float).std(0).mean()) if sel.any() else 0.0
            assert measured["points"] > MIN_POINTS, measured
            assert measured["points_colour_std"] > MIN_POINT_STD, measured
            canvas.click_checkbox("cameras")
            canvas.click_checkbox("ground-truth cameras")
            base = canvas.settle(lambda im: _changed(im, pts) > MIN_CHANGE, "c3_before_lambda.png")

            # A/B: change λ_pose, re-run, the page shows what changed (previous run = ghost)
            box = page.locator("#lam-pose input[type=number]")
            box.fill("2")
            box.press("Enter")
            page.click("#run-btn")
            page.wait_for_function(
                "() => { const s = document.querySelector('#status'); return s && /λ=\\(2/.test(s.innerText); }",
                timeout=90_000)
            vframe.get_by_label("A/B ghost (previous run)", exact=True).wait_for(timeout=30_000)
            ghost_on = canvas.settle(lambda im: _changed(im, base) > MIN_CHANGE, "c4_lambda_ghost_on.png")
            canvas.click_checkbox("A/B ghost (previous run)")
            ghost_off = canvas.settle(lambda im: _changed(im, ghost_on) > MIN_GHOST, "c5_lambda_ghost_off.png")
            measured["lambda_change_ghost_on"] = _changed(ghost_on, base)
            measured["lambda_change_ghost_off"] = _changed(ghost_off, base)
            ghost_px = np.abs(ghost_on.astype(np.int16) - ghost_off.astype(np.int16)).max(-1) > BG_DELTA
            measured["ghost"] = float(ghost_px.mean())
            # the ghost (orange points, translucent orange frustums) is warm: red well above blue
            bgr = ghost_on[ghost_px].astype(float)
            measured["ghost_red_minus_blue"] = float((bgr[:, 2] - bgr[:, 0]).mean()) if len(bgr) else 0.0
            assert measured["lambda_change_ghost_off"] > MIN_CHANGE, measured  # the geometry itself moved
            assert measured["ghost"] > MIN_GHOST, measured
            assert measured["ghost_red_minus_blue"] > MIN_GHOST_TINT, measured
            canvas.click_checkbox("A/B ghost (previous run)")

            page.get_by_role("tab", name="A/B").click()
            page.wait_for_selector("#ab-table :text('camera translation')", timeout=15_000)
            page.screenshot(path=str(shots / "4_ab.png"), full_page=True)

            # timeline: the Gradio timestep slider drives viser's timeline (visibility flip)
            t0_img = canvas.settle(lambda im: _changed(im, ghost_off) > MIN_GHOST, "c6_t0.png")
            page.get_by_role("tab", name="Views").click()
            t_box = page.get_by_label("number input for timestep")
            t_box.fill("9")
            t_box.press("Enter")
            viser_t = canvas.row("timestep", "input.mantine-NumberInput-input")
            t_end = time.time() + 20
            while viser_t.input_value() != "9" and time.time() < t_end:
                time.sleep(0.2)
            assert viser_t.input_value() == "9", viser_t.input_value()
            t9 = canvas.settle(lambda im: _changed(im, t0_img) > MIN_CHANGE, "c7_t9.png")
            measured["timestep_change"] = _changed(t9, t0_img)
            assert measured["timestep_change"] > MIN_CHANGE, measured
            print("canvas measurements:", {k: round(v, 4) for k, v in measured.items()})

            # diagnostics: attention mass per bias layer, with vs without the bias
            page.get_by_role("tab", name="Diagnostics").click()
            page.click("#diag-btn")
            page.wait_for_function(
                "() => { const t = document.querySelector('#diag-table'); return t && /pose/.test(t.innerText); }",
                timeout=60_000)
            page.screenshot(path=str(shots / "5_diag.png"), full_page=True)

            # record an MP4 of the timeline
            page.get_by_role("tab", name="Export").click()
            page.click("#record-btn")
            page.wait_for_function("() => /Recorded vggt_mv_timeline.mp4/.test(document.body.innerText)",
                                   timeout=90_000)

            # a second tab gets its own viser server / scene
            page2 = ctx.new_page()
            page2.goto(url)
            page2.wait_for_function(src_js, timeout=30_000)
            src2 = page2.evaluate(src_js)
            assert src2 != src1, (src1, src2)
            page2.frame_locator("#viser-frame").locator("canvas").first.wait_for(timeout=30_000)
            assert "Ready" in page2.inner_text("#status")  # tab 1's run did not leak into tab 2
            page2.screenshot(path=str(shots / "3_second_tab.png"), full_page=True)
        finally:
            browser.close()
    for name in ("0_loaded.png", "1_after_run.png", "2_viser.png", "3_second_tab.png", "4_ab.png", "5_diag.png"):
        assert (shots / name).stat().st_size > 10_000
