"""The app's sessions in headless Chromium, with Gradio's heartbeat at 1 s (issue 12):

* closed tabs release their viser server (the port binds again) and their session folder
  (exports included) within heartbeat + 5 s, and the app still serves a new tab;
* ``--max-sessions 2``: a 3rd tab evicts the 1st, which says "session expired" and whose next Run
  works in a fresh session (a new viser server);
* a newcomer's page (no ``--views/--scene``) runs the bundled sample on load and shows a point
  cloud without a click; a run the memory estimate says will not fit (``VGGT_MV_MEMORY_CAP``)
  is refused in the page with the largest resolution that fits, and that suggestion then runs.

Screenshots go to pytest's tmp_path (printed with ``-s``).
"""
from __future__ import annotations

import contextlib
import re
import time
from pathlib import Path

import pytest

from test_app import port_free
from test_app_browser import ARGS, CHROMIUM, MIN_SCENE, VIEWPORT, Canvas, _nonbg, require_browser, running_app

pytestmark = pytest.mark.browser

HEARTBEAT = {"GRADIO_HEARTBEAT_INTERVAL": "1"}
SRC_JS = "() => { const f = document.getElementById('viser-frame'); return f && f.getAttribute('src'); }"
STATUS_RE = "() => { const s = document.querySelector('#status'); return s && /%s/.test(s.innerText); }"


@pytest.fixture(autouse=True)
def _browser_deps():
    require_browser()


@contextlib.contextmanager
def chromium():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def open_tab(browser, url: str):
    """A new tab (its own browser context: its own Gradio session) once its viser iframe is set;
    returns ``(page, viser_port)``."""
    page = browser.new_context(viewport=VIEWPORT).new_page()
    page.goto(url)
    page.wait_for_function(SRC_JS, timeout=60_000)
    return page, int(re.search(r":(\d+)/", page.evaluate(SRC_JS)).group(1))


def wait_until(cond, timeout: float) -> float:
    """Seconds until ``cond()`` held (polled every 0.2 s); fails after ``timeout``."""
    t0 = time.time()
    while not cond():
        if time.time() - t0 > timeout:
            pytest.fail(f"condition not met within {timeout:.0f} s")
        time.sleep(0.2)
    return time.time() - t0


def session_dirs(root: Path) -> set[str]:
    d = root / "sessions"
    return {p.name for p in d.iterdir()} if d.is_dir() else set()


def run_and_wait(page, timeout: float = 120_000) -> str:
    """Press Run; the status once this run finished (it first shows the estimate, "… Running…")."""
    page.click("#run-btn")
    page.wait_for_function(STATUS_RE % "Running…", timeout=timeout)  # the estimate step
    page.wait_for_function("() => { const s = document.querySelector('#status').innerText;"
                           " return !/Running…/.test(s) && /Done|failed|problem|Not run/.test(s); }",
                           timeout=timeout)
    return page.inner_text("#status")


def test_closed_tabs_release_ports_and_folders(tmp_path):
    info: dict = {}
    with running_app("--resolution", "56", "--window", "5", "--overlap", "1", "--no-autorun",
                     env=HEARTBEAT, info=info) as (url, _), chromium() as browser:
        root = info["root"]
        tabs = [open_tab(browser, url) for _ in range(3)]
        ports = [port for _, port in tabs]
        assert len(set(ports)) == 3 and not any(port_free(p) for p in ports), ports
        assert len(session_dirs(root)) == 3
        page = tabs[0][0]
        status = run_and_wait(page)
        assert "Done" in status, status
        page.get_by_role("tab", name="Export").click()
        page.get_by_role("button", name="NPZ").click()
        page.wait_for_function("() => /Saved under/.test(document.body.innerText)", timeout=60_000)
        npz = list((root / "sessions").glob("*/export_*/reconstruction.npz"))
        assert len(npz) == 1 and npz[0].stat().st_size > 10_000, npz
        link = page.locator("a[download]").first.get_attribute("href")
        assert link and "reconstruction.npz" in link, link  # the download link serves the session's file
        for page, _ in tabs:
            page.context.close()
        waited = wait_until(lambda: all(port_free(p) for p in ports) and not session_dirs(root), 1 + 5)
        print(f"\nports {ports} free and session folders gone {waited:.1f} s after the tabs closed")
        assert not npz[0].exists()
        page, port = open_tab(browser, url)  # the app still serves a new tab
        page.frame_locator("#viser-frame").locator("canvas").first.wait_for(timeout=30_000)
        assert not port_free(port) and len(session_dirs(root)) == 1
    print(f"SIGTERM: exit status {info['returncode']} after {info['stop_s']:.1f} s")
    assert info["returncode"] == 143 and not root.exists()  # SIGTERM removed everything


def test_eviction_is_visible_and_the_next_run_gets_a_fresh_session(tmp_path):
    with running_app("--resolution", "56", "--window", "5", "--overlap", "1", "--no-autorun",
                     "--max-sessions", "2", env=HEARTBEAT) as (url, _), chromium() as browser:
        (first, port1), (second, _) = open_tab(browser, url), open_tab(browser, url)
        assert "Ready" in first.inner_text("#status")
        open_tab(browser, url)  # the 3rd tab evicts the 1st
        first.wait_for_function(STATUS_RE % "Session expired", timeout=15_000)
        assert "press Run again" in first.inner_text("#status")
        wait_until(lambda: port_free(port1), 5)  # its viser server stopped
        first.screenshot(path=str(tmp_path / "expired.png"), full_page=True)
        status = run_and_wait(first)
        assert "Done" in status, status
        new_port = int(re.search(r":(\d+)/", first.evaluate(SRC_JS)).group(1))
        first.screenshot(path=str(tmp_path / "fresh.png"), full_page=True)
        assert not port_free(new_port)  # a live server behind the refreshed iframe
        first.frame_locator("#viser-frame").get_by_label("cameras", exact=True).wait_for(timeout=30_000)


def test_newcomer_page_shows_the_sample_and_memory_guard_refuses(tmp_path):
    """No --views/--scene: the sample runs on load. Then 518 px under a 400 MiB cap is refused with
    the largest resolution that fits, and that one runs."""
    env = {**HEARTBEAT, "VGGT_MV_MEMORY_CAP": "400M"}
    with running_app(env=env) as (url, _), chromium() as browser:
        page, _ = open_tab(browser, url)
        page.wait_for_function(STATUS_RE % "Done|failed|problem|Not run", timeout=120_000)
        status = page.inner_text("#status")
        assert "Done" in status and "T=10" in status, status
        assert page.input_value("#views textarea") == "assets/sample"  # relative to the app's folder
        canvas = Canvas(page, tmp_path)
        vframe = page.frame_locator("#viser-frame")
        vframe.get_by_label("cameras", exact=True).wait_for(timeout=30_000)
        with contextlib.suppress(Exception):  # "Software WebGL rendering detected" toast
            vframe.locator(".mantine-Notification-closeButton").first.click(timeout=5_000)
        img = canvas.settle(lambda im: _nonbg(im).mean() > MIN_SCENE, "autorun_canvas.png")
        print(f"\nautorun canvas coverage {_nonbg(img).mean():.3f}; screenshots: {tmp_path}")
        assert _nonbg(img).mean() > MIN_SCENE
        page.screenshot(path=str(tmp_path / "autorun_page.png"), full_page=True)  # the README screenshot

        pick_resolution(page, "518")
        status = run_and_wait(page)
        assert "Not run:" in status and "largest that would fit: resolution" in status, status
        page.screenshot(path=str(tmp_path / "refused.png"), full_page=True)
        suggested = re.search(r"largest that would fit: resolution (\d+)", status).group(1)
        pick_resolution(page, suggested)
        status = run_and_wait(page)  # the app stayed up and the suggestion fits
        assert "Done" in status and f"×{suggested} " in status, status


def pick_resolution(page, value: str) -> None:
    box = page.locator("#resolution input")
    box.click()
    page.get_by_role("option", name=value, exact=True).click()
    assert box.input_value() == value
