"""The app in headless Chromium: run the bundled sample, check the viser iframe, two tabs isolated.

Needs Debian's ``chromium`` (never ``playwright install``). Screenshots go to a temp dir whose
path is printed (``pytest -s``) and kept by pytest's tmp_path retention.
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader",
        "--disable-background-networking", "--disable-component-update", "--no-first-run"]
REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url():
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium not installed")
    pytest.importorskip("playwright.sync_api")
    if not (REPO / "assets" / "sample").is_dir():
        pytest.skip("bundled sample not present")
    port, vport = _free_port(), _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "vggt_mv_app.main", "--port", str(port), "--viser-port", str(vport),
         "--resolution", "112", "--window", "10", "--overlap", "0"],
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
            break
    if url is None:
        proc.kill()
        pytest.fail("app did not start:\n" + "".join(lines[-40:]))
    yield url, vport
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_run_sample_and_two_tabs(app_url, tmp_path):
    from playwright.sync_api import sync_playwright

    url, vport = app_url
    shots = tmp_path / "screenshots"
    shots.mkdir()
    print(f"\nscreenshots: {shots}")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            ctx = browser.new_context(viewport={"width": 1500, "height": 1100})
            page = ctx.new_page()
            page.goto(url)
            page.wait_for_selector("#run-btn", timeout=30_000)
            src_js = "() => { const f = document.getElementById('viser-frame'); return f && f.getAttribute('src'); }"
            page.wait_for_function(src_js, timeout=30_000)
            src1 = page.evaluate(src_js)
            assert src1.startswith("http://127.0.0.1:"), src1  # built from window.location.hostname
            assert "random tiny weights" in page.inner_text("#banner")
            page.screenshot(path=str(shots / "0_loaded.png"), full_page=True)

            page.click("#run-btn")
            page.wait_for_function(
                "() => { const s = document.querySelector('#status'); return s && /Done|failed|problem/.test(s.innerText); }",
                timeout=90_000)
            status = page.inner_text("#status")
            assert "Done" in status, status
            assert "T=10" in status and "V=3" in status

            # the iframe serves viser and shows a WebGL canvas
            frame = page.frame_locator("#viser-frame")
            frame.locator("canvas").first.wait_for(timeout=30_000)
            time.sleep(3.0)  # let the scene stream in
            page.screenshot(path=str(shots / "1_after_run.png"), full_page=True)
            page.locator("#viser-frame").screenshot(path=str(shots / "2_viser.png"))
            assert page.locator("#g-img img").count() >= 3  # per-view gallery filled

            # A/B: change λ_pose, re-run, the page shows what changed (previous run = ghost)
            box = page.locator("#lam-pose input[type=number]")
            box.fill("2")
            box.press("Enter")
            page.click("#run-btn")
            page.wait_for_function(
                "() => { const s = document.querySelector('#status'); return s && /λ=\\(2/.test(s.innerText); }",
                timeout=90_000)
            page.get_by_role("tab", name="A/B").click()
            page.wait_for_selector("#ab-table :text('camera translation')", timeout=15_000)
            time.sleep(2.0)
            page.screenshot(path=str(shots / "4_ab.png"), full_page=True)

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
