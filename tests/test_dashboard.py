"""The dashboard in a real browser (Debian's Chromium driven by Playwright).

It must show live ticks, count no gap, and survive a server restart by resuming
with ``from_t`` (SPEC §4 ``GET /``, §3 resume).
"""

from __future__ import annotations

import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from conftest import free_port, tickcast_process

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Chromium's own background traffic is refused on this network: keep it quiet.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield browser
        browser.close()


def ticks_seen(page: Page) -> dict[str, int]:
    state = page.evaluate("window.__tickcast || {count: 0, lastT: -1, missed: 0}")
    assert isinstance(state, dict)
    return state


def test_dashboard_shows_live_ticks_and_resumes_after_restart(
    browser: Browser, tmp_path: Path
) -> None:
    port = free_port()
    data = tmp_path / "data"
    errors: list[str] = []
    page = browser.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    with tickcast_process(tmp_path, data_dir=data, port=port, name="first") as srv:
        page.goto(srv.url("/"))
        page.wait_for_function("window.__tickcast && window.__tickcast.count >= 30", timeout=15000)
        assert page.locator("#conn").inner_text() == "live"
        shown_t = int(page.locator("#t").inner_text())
        assert shown_t >= 29
        assert float(page.locator("#price").inner_text()) > 0
        assert page.locator("#orders tr").count() > 0
        before = ticks_seen(page)
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(10) == 0
    # The page notices, keeps its place, and resumes on the new server without a gap.
    page.wait_for_function("document.getElementById('conn').textContent.startsWith('reconnecting')")
    with tickcast_process(tmp_path, data_dir=data, port=port, name="second"):
        target = before["lastT"] + 40
        page.wait_for_function(f"window.__tickcast.lastT >= {target}", timeout=20000)
        after = ticks_seen(page)
        assert after["missed"] == 0
        assert page.locator("#conn").inner_text() == "live"
    assert errors == []
    page.close()


def test_dashboard_with_a_read_token_passes_it_on_and_shows_live_ticks(
    browser: Browser, tmp_path: Path
) -> None:
    token = "dash-T0ken"
    errors: list[str] = []
    page = browser.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    with tickcast_process(tmp_path, "--read-token", token) as srv:
        refused = page.goto(srv.url("/"))
        assert refused is not None and refused.status == 401
        assert refused.json()["error"] == "unauthorized"
        shown = page.goto(srv.url(f"/?token={token}"))
        assert shown is not None and shown.status == 200
        page.wait_for_function("window.__tickcast && window.__tickcast.count >= 20", timeout=15000)
        assert page.locator("#conn").inner_text() == "live"
        assert ticks_seen(page)["missed"] == 0
        assert float(page.locator("#price").inner_text()) > 0
    assert errors == []
    page.close()
