"""The dashboard in a real browser (Debian's Chromium driven by Playwright).

It must show live ticks, count no gap, and survive a server restart by resuming
with ``from_t`` (docs/api.md ``GET /``, docs/protocol.md resume); show whatever an
external simulation's ticks carry (``--source ingest``, fed by the publisher); count
only live ticks in its rate; and raise no page error.

As a replay client (docs/dashboard.md): a link ``/#t=N`` opens tick N; a click on
the timeline seeks and draws the tick there; the speed control replays faster
than the ticks were produced; the "live" button goes back to following live; the
URL's hash follows the position. Every wait is for an event, bounded by a timeout.
"""

from __future__ import annotations

import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from conftest import free_port, tickcast_process
from tickcast.publisher import Publisher
from tickcast.sources.simulator import Market
from tickcast.storage import SegmentStore

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


# -- replay --------------------------------------------------------------------------

HISTORY = 3000  # ticks stored before the server starts
RATE = 50  # ticks/s: tickcast_process's --rate, and the pace of the stored ticks' ts


def stored_history(data: Path, n: int = HISTORY) -> None:
    """``n`` simulated ticks in ``data``, their ``ts`` spaced as ``RATE`` would, ending now."""
    market = Market(agents=20, seed=5)
    start = time.time() - n / RATE
    raws = [orjson.dumps(market.step(t, round(start + t / RATE, 6))) for t in range(n)]
    with SegmentStore.open(data) as store:
        for i in range(0, n, 500):
            store.append([(i + k, raw) for k, raw in enumerate(raws[i : i + 500])])


def stored_tick(url: str, t: int) -> dict[str, Any]:
    tick = httpx.get(f"{url}/incremental?from_t={t}&limit=1").json()["data"][0]
    assert isinstance(tick, dict) and tick["t"] == t
    return tick


def watched(browser: Browser, errors: list[str]) -> Page:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return page


def shows_tick(page: Page, tick: dict[str, Any]) -> None:
    """The page shows ``tick`` (once its next frame is drawn): its t, and the members of its s."""
    page.wait_for_function(f"document.getElementById('t').textContent === '{tick['t']}'")
    for key, value in tick["s"].items():
        assert abs(float(state_value(page, key)) - value) < 1e-6, (key, value)


def test_a_link_opens_that_moment(browser: Browser, tmp_path: Path) -> None:
    stored_history(tmp_path / "segments")
    errors: list[str] = []
    with tickcast_process(tmp_path) as srv:
        # Paused: the page shows tick 1234 and stays there.
        page = watched(browser, errors)
        page.goto(srv.url("/#t=1234&speed=2&paused"))
        page.wait_for_function(
            "window.__tickcast.mode === 'paused' && window.__tickcast.lastT === 1234",
            timeout=15000,
        )
        shows_tick(page, stored_tick(srv.url(""), 1234))
        assert page.locator("#mode").inner_text() == "paused"
        assert page.locator("#speed").input_value() == "2"
        assert page.evaluate("location.hash") == "#t=1234&speed=2&paused"
        # A position typed into the open page's URL: it seeks there.
        page.evaluate("location.hash = '#t=2000&speed=2&paused'")
        page.wait_for_function("window.__tickcast.lastT === 2000", timeout=15000)
        shows_tick(page, stored_tick(srv.url(""), 2000))
        page.close()
        # Playing: the first tick drawn is tick 1000, then the replay moves on.
        page = watched(browser, errors)
        page.goto(srv.url("/#t=1000&speed=1"))
        page.wait_for_function("window.__tickcast.lastT > 1000", timeout=15000)
        state = ticks_seen(page)
        assert state["firstT"] == 1000 and state["missed"] == 0
        assert page.locator("#mode").inner_text() == "replay 1\N{MULTIPLICATION SIGN}"
        page.close()
    assert errors == []


def test_seek_with_the_timeline_then_back_to_live(browser: Browser, tmp_path: Path) -> None:
    stored_history(tmp_path / "segments")
    errors: list[str] = []
    with tickcast_process(tmp_path) as srv:
        page = watched(browser, errors)
        page.goto(srv.url("/#t=500&speed=1&paused"))
        page.wait_for_function(
            "window.__tickcast.lastT === 500 && window.__tickcast.timeline", timeout=15000
        )
        timeline = page.locator("#timeline")
        box = timeline.bounding_box()
        assert box is not None
        first, last = page.evaluate("window.__tickcast.timeline")

        def click_at(fraction: float) -> dict[str, Any]:
            seeks = page.evaluate("window.__tickcast.probe.seeks")
            page.mouse.click(box["x"] + box["width"] * fraction, box["y"] + box["height"] / 2)
            page.wait_for_function(
                f"(p => p.seeks > {seeks} && p.seekMs !== null && p.firstT !== null)"
                "(window.__tickcast.probe)",
                timeout=15000,
            )
            probe = page.evaluate("window.__tickcast.probe")
            assert isinstance(probe, dict)
            tolerance = (last - first) / box["width"] * 2  # a pixel or two
            assert abs(probe["seekT"] - (first + fraction * (last - first))) <= tolerance
            return probe

        # Paused: the tick at the clicked t is drawn, and the URL names it.
        probe = click_at(0.25)
        assert probe["firstT"] == probe["seekT"] == ticks_seen(page)["lastT"]
        shows_tick(page, stored_tick(srv.url(""), probe["seekT"]))
        page.wait_for_function(f"location.hash === '#t={probe['seekT']}&speed=1&paused'")
        # Playing: the stream goes on from exactly the clicked t.
        page.click("#play")
        page.wait_for_function("window.__tickcast.mode === 'playing'", timeout=15000)
        probe = click_at(0.75)
        assert probe["firstT"] == probe["seekT"]
        page.wait_for_function(f"window.__tickcast.lastT > {probe['seekT']}", timeout=15000)
        assert ticks_seen(page)["missed"] == 0
        # Live: back to the latest tick, and the URL drops the position.
        latest = httpx.get(srv.url("/health")).json()["latest_t"]
        page.click("#live")
        page.wait_for_function(
            f"window.__tickcast.mode === 'live' && window.__tickcast.lastT > {latest}",
            timeout=15000,
        )
        assert page.locator("#mode").inner_text() == "live"
        page.wait_for_function("location.hash === ''")
        page.close()
    assert errors == []


def test_play_at_ten_times_the_production_rate(browser: Browser, tmp_path: Path) -> None:
    stored_history(tmp_path / "segments")
    errors: list[str] = []
    with tickcast_process(tmp_path) as srv:
        page = watched(browser, errors)
        page.goto(srv.url("/#t=100&speed=1"))
        page.wait_for_function("window.__tickcast.lastT > 100", timeout=15000)
        page.select_option("#speed", "10")
        page.wait_for_function("window.__tickcast.speed === 10", timeout=15000)
        t0, ms0 = page.evaluate("[window.__tickcast.lastT, performance.now()]")
        page.wait_for_function(f"window.__tickcast.lastT >= {t0 + 400}", timeout=30000)
        t1, ms1 = page.evaluate("[window.__tickcast.lastT, performance.now()]")
        rate = (t1 - t0) / ((ms1 - ms0) / 1000)
        # 10x is 500 ticks/s. Loosely: clearly faster than 1x, and still paced (not max).
        assert 3 * RATE < rate < 50 * RATE, rate
        assert page.locator("#mode").inner_text() == "replay 10\N{MULTIPLICATION SIGN}"
        assert ticks_seen(page)["missed"] == 0
        page.wait_for_function("location.hash.includes('&speed=10')")
        page.close()
    assert errors == []


def test_drag_on_the_timeline_seeks_where_it_is_let_go(browser: Browser, tmp_path: Path) -> None:
    stored_history(tmp_path / "segments")
    errors: list[str] = []
    with tickcast_process(tmp_path) as srv:
        page = watched(browser, errors)
        page.goto(srv.url("/#t=100&speed=1&paused"))
        page.wait_for_function(
            "window.__tickcast.lastT === 100 && window.__tickcast.timeline", timeout=15000
        )
        box = page.locator("#timeline").bounding_box()
        assert box is not None
        y = box["y"] + box["height"] / 2
        page.mouse.move(box["x"] + box["width"] * 0.2, y)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.6, y, steps=20)
        seeks = page.evaluate("window.__tickcast.probe.seeks")
        page.mouse.up()
        page.wait_for_function(
            f"(p => p.seeks > {seeks} && p.firstT !== null)(window.__tickcast.probe)",
            timeout=15000,
        )
        probe = page.evaluate("window.__tickcast.probe")
        first, last = page.evaluate("window.__tickcast.timeline")
        tolerance = (last - first) / box["width"] * 2
        assert abs(probe["seekT"] - (first + 0.6 * (last - first))) <= tolerance
        shows_tick(page, stored_tick(srv.url(""), probe["seekT"]))
        assert page.locator("#mode").inner_text() == "paused"
        page.close()
    assert errors == []


def test_a_replay_resumes_after_a_restart_at_the_same_speed(
    browser: Browser, tmp_path: Path
) -> None:
    data = tmp_path / "segments"
    stored_history(data)
    port = free_port()
    errors: list[str] = []
    page = watched(browser, errors)
    with tickcast_process(tmp_path, port=port, name="first") as srv:
        page.goto(srv.url("/#t=500&speed=2"))
        page.wait_for_function("window.__tickcast.lastT > 520", timeout=15000)
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(10) == 0
    page.wait_for_function("document.getElementById('conn').textContent.startsWith('reconnecting')")
    before = ticks_seen(page)["lastT"]
    with tickcast_process(tmp_path, port=port, name="second"):
        page.wait_for_function(f"window.__tickcast.lastT > {before + 50}", timeout=20000)
        state = ticks_seen(page)
        assert state["missed"] == 0 and state["mode"] == "playing" and state["speed"] == 2
        assert page.locator("#mode").inner_text() == "replay 2\N{MULTIPLICATION SIGN}"
    assert errors == []
    page.close()


def test_a_link_keeps_its_position_until_the_tick_is_shown(
    browser: Browser, tmp_path: Path
) -> None:
    # The URL follows the position, but before the first tick is shown there is no
    # position to write: the page used to drop the link's fragment then, and a
    # reconnect in that window opened live instead of the linked tick.
    stored_history(tmp_path / "segments")
    errors: list[str] = []
    with tickcast_process(tmp_path) as srv:
        page = watched(browser, errors)
        page.route("**/incremental?**", lambda route: route.abort())  # tick 1234 never comes
        page.goto(srv.url("/#t=1234&speed=2&paused"))
        page.wait_for_function(
            "window.__tickcast.probe.seekGen !== null && window.__tickcast.mode === 'paused'",
            timeout=15000,
        )
        page.evaluate("writeHash()")  # what the page does four times a second
        assert page.evaluate("location.hash") == "#t=1234&speed=2&paused"
        assert ticks_seen(page)["lastT"] is None
        page.close()
    assert errors == []


def test_a_replay_that_reaches_the_latest_tick_says_it_is_live(
    browser: Browser, tmp_path: Path
) -> None:
    # The server follows live ticks once a replay reaches them, without a message:
    # the page asks, shows "live", and drops the position from the URL.
    stored_history(tmp_path / "segments")
    errors: list[str] = []
    with tickcast_process(tmp_path) as srv:
        page = watched(browser, errors)
        page.goto(srv.url("/#t=2500&speed=max"))
        page.wait_for_function("window.__tickcast.mode === 'live'", timeout=20000)
        # (the pill is drawn on the next frame, after the state it shows)
        page.wait_for_function("document.getElementById('mode').textContent === 'live'")
        page.wait_for_function("location.hash === ''")
        latest = httpx.get(srv.url("/health")).json()["latest_t"]
        page.wait_for_function(f"window.__tickcast.lastT > {latest}", timeout=15000)
        assert ticks_seen(page)["missed"] == 0
        page.close()
    assert errors == []


def test_pause_live_then_play_goes_on_from_there(browser: Browser, tmp_path: Path) -> None:
    errors: list[str] = []
    with tickcast_process(tmp_path) as srv:
        page = watched(browser, errors)
        page.goto(srv.url("/"))
        page.wait_for_function("window.__tickcast.live >= 10", timeout=15000)
        page.click("#play")  # pause
        page.wait_for_function("window.__tickcast.mode === 'paused'", timeout=15000)
        assert page.locator("#play").inner_text().endswith("play")
        paused_at = ticks_seen(page)["lastT"]
        page.wait_for_function(f"location.hash === '#t={paused_at}&speed=1&paused'")
        page.click("#play")  # play: at the chosen speed, from the tick after the last shown
        page.wait_for_function(
            f"window.__tickcast.mode === 'playing' && window.__tickcast.lastT > {paused_at + 5}",
            timeout=15000,
        )
        state = ticks_seen(page)
        assert state["speed"] == 1 and state["missed"] == 0
        page.close()
    assert errors == []


def test_a_replay_goes_live_when_the_history_is_a_new_one(browser: Browser, tmp_path: Path) -> None:
    # After a restart on a wiped data directory (a new epoch) the replay's t means
    # nothing: the page follows live in the new history instead.
    stored_history(tmp_path / "segments")
    port = free_port()
    errors: list[str] = []
    page = watched(browser, errors)
    with tickcast_process(tmp_path, port=port, name="first") as srv:
        page.goto(srv.url("/#t=1234&speed=1&paused"))
        page.wait_for_function("window.__tickcast.lastT === 1234", timeout=15000)
        old_epoch = page.locator("#epoch").inner_text()
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(10) == 0
    page.wait_for_function("document.getElementById('conn').textContent.startsWith('reconnecting')")
    with tickcast_process(tmp_path, port=port, name="second", data_dir=tmp_path / "wiped"):
        page.wait_for_function(
            "window.__tickcast.mode === 'live' && window.__tickcast.live >= 5", timeout=20000
        )
        assert page.locator("#epoch").inner_text() != old_epoch
        page.wait_for_function("location.hash === ''")
    assert errors == []
    page.close()
