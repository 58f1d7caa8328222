"""The dashboard in a real browser (Debian's Chromium driven by Playwright).

It must show live ticks, count no gap, and survive a server restart by resuming
with ``from_t`` (docs/api.md ``GET /``, docs/protocol.md resume); show whatever an
external simulation's ticks carry (``--source ingest``, fed by the publisher); count
only live ticks in its rate; and raise no page error.
"""

from __future__ import annotations

import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from conftest import free_port, tickcast_process
from tickcast.publisher import Publisher

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


def state_value(page: Page, key: str) -> str:
    """The value the state panel shows for member ``key`` of ``s``."""
    return page.locator(f'#state dd[data-key="{key}"] span').inner_text()


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
        assert page.locator("#mode").inner_text() == "live"
        shown_t = int(page.locator("#t").inner_text())
        assert shown_t >= 29
        assert float(state_value(page, "price_norm")) > 0
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
        assert page.locator("#mode").inner_text() == "live"
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
        assert page.locator("#mode").inner_text() == "live"
        assert ticks_seen(page)["missed"] == 0
        assert float(state_value(page, "price_norm")) > 0
    assert errors == []
    page.close()


# An external simulation's tick: none of the built-in simulator's members, some not numbers.
def external_tick(i: int) -> dict[str, Any]:
    return {
        "s": {"mid": 100.0 + i / 100, "spread": 0.25, "regime": "calm", "book": {"bid": 3}},
        "agents": [{"id": "fund-a", "cash": 10.5}, {"id": "fund-b", "experience": 0.5}],
        "actions": [{"who": "fund-a", "side": "sell", "qty": i}],
        "matches": [],
    }


def test_dashboard_shows_an_external_simulation_and_counts_only_live_ticks(
    browser: Browser, tmp_path: Path
) -> None:
    token = "ingest-T0ken"
    errors: list[str] = []
    console: list[str] = []
    page = browser.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: console.append(msg.text) if msg.type == "error" else None)
    args = ("--source", "ingest", "--ingest-token", token)
    with tickcast_process(tmp_path, *args, first_tick=False) as srv:
        publisher = Publisher(srv.url(""), token=token)
        for i in range(0, 500, 100):  # history the page replays: 500 ticks at once
            publisher.publish_many([external_tick(i + k) for k in range(100)])
        stop = threading.Event()

        def feed() -> None:  # then 20 ticks/s, live
            i = 500
            while not stop.is_set():
                publisher.publish(external_tick(i))
                i += 1
                time.sleep(0.05)

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        try:
            shown = page.goto(srv.url("/"))
            assert shown is not None and shown.status == 200
            page.wait_for_function(
                "window.__tickcast && window.__tickcast.live >= 40", timeout=20000
            )
            assert page.locator("#mode").inner_text() == "live"
            assert ticks_seen(page)["missed"] == 0
            # Every member of s: the numbers with a sparkline, the rest as text.
            assert 100 <= float(state_value(page, "mid")) < 110
            assert state_value(page, "regime") == "calm"
            assert state_value(page, "book") == '{"bid":3}'
            assert page.locator("#state canvas.spark").count() == 2  # mid, spread
            assert page.locator("#chart-title").text_content() == "mid"
            assert page.locator("#orders-head th").all_inner_texts() == ["who", "side", "qty"]
            assert page.locator("#orders td.sell").count() >= 1
            assert page.locator("#agents div").count() == 2
            # The 500 replayed ticks are not in the rate: it reads the live 20 ticks/s.
            rate = float(page.locator("#rate").inner_text())
            assert rate <= 30, rate
            icon = page.request.get(srv.url("/favicon.ico"))
            assert icon.status == 200 and icon.body()[:4] == b"\x00\x00\x01\x00"
        finally:
            stop.set()
            feeder.join(10)
    assert errors == []
    assert console == []
    page.close()
