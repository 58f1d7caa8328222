"""Dashboard seek latency over a long history: from a click on the timeline to the tick drawn.

Run: ``.venv/bin/python bench/dashboard_seek.py [--ticks 1000000] [--seeks 20]`` from
the project root (needs Playwright, the ``dev`` extra, and Debian's ``/usr/bin/chromium``).

It builds a history of ``--ticks`` simulated ticks (the built-in simulator's, their
``ts`` spaced as ``--rate`` makes them, ending now) straight into a data directory,
or reuses the one a previous run left (``--data``, default under /tmp), starts
``tickcast serve`` on it with the simulator producing on top, and prints:

* ``GET /timeline`` on that history: the first call after start (every sample read
  from the segment files, and each file's index checked on its first read), a call
  whose grid is mostly new (``points`` doubled), and a warm call (the samples kept);
* the seek latency in headless Chromium: ``--seeks`` clicks at random places on the
  timeline, paused (the page reads the tick with ``/incremental``) and playing at 1x
  (the next tick on the stream is the one clicked). Each figure is measured by the
  page itself, from the click's handler to the end of the animation frame that drew
  the tick (``window.__tickcast.probe.seekMs``), and from outside, from Playwright's
  click to the page reporting it (which adds Playwright's round trips).

Figures land in docs/dashboard.md ("Seek latency"). The target is 200 ms.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from tickcast.sources.simulator import Market  # noqa: E402
from tickcast.storage import SegmentStore  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TARGET_MS = 200


def build_history(data: Path, ticks: int, rate: float) -> None:
    """``ticks`` simulated ticks in ``data`` (kept if it already holds as many)."""
    if (data / "EPOCH").exists():
        with SegmentStore.open(data, fsync="never") as store:
            if store.latest_t is not None and store.latest_t + 1 >= ticks:
                print(f"reusing {data}: ticks {store.oldest_t}..{store.latest_t}")
                return
        shutil.rmtree(data)
    print(f"building {ticks:,} ticks in {data} (about 100 s per million)...", flush=True)
    start = time.perf_counter()
    market = Market(seed=1)
    first_ts = time.time() - ticks / rate
    with SegmentStore.open(data, fsync="never") as store:
        batch: list[tuple[int, bytes]] = []
        for t in range(ticks):
            batch.append((t, orjson.dumps(market.step(t, round(first_ts + t / rate, 6)))))
            if len(batch) == 5000:
                store.append(batch)
                batch = []
        if batch:
            store.append(batch)
    print(f"built in {time.perf_counter() - start:.0f} s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``tickcast serve`` over ``data``, the simulator producing at ``rate``."""

    def __init__(self, data: Path, rate: float, log: Path) -> None:
        self.port = free_port()
        cmd = [
            sys.executable, "-m", "tickcast.cli", "serve", "--port", str(self.port),
            "--data-dir", str(data), "--rate", str(rate), "--log-level", "warning",
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("TICKCAST_")}
        self._log = log.open("wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url("/health"), timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise SystemExit(f"the server did not start; see {log}")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def timed_get(client: httpx.Client, url: str) -> tuple[float, Any]:
    start = time.perf_counter()
    response = client.get(url)
    response.raise_for_status()
    return (time.perf_counter() - start) * 1e3, response.json()


def bench_timeline(server: Server, points: int) -> list[tuple[str, str]]:
    """/timeline's time, on one kept-alive connection (httpx.get alone costs ~20 ms)."""
    with httpx.Client(timeout=30) as client:
        client.get(server.url("/health")).raise_for_status()  # the connection, opened
        first_ms, body = timed_get(client, server.url(f"/timeline?points={points}"))
        rows = [
            (
                f"first call after start, points={points}",
                f"{first_ms:.0f} ms ({len(body['t'])} samples)",
            )
        ]
        more_ms, more = timed_get(client, server.url(f"/timeline?points={points * 2}"))
        fresh = len(set(more["t"]) - set(body["t"]))
        rows.append(
            (f"grid mostly new, points={points * 2}", f"{more_ms:.0f} ms ({fresh} samples read)")
        )
        warm = [timed_get(client, server.url(f"/timeline?points={points}"))[0] for _ in range(10)]
        rows.append((f"warm, points={points} (median of 10)", f"{statistics.median(warm):.1f} ms"))
    return rows


def seeks(page: Any, count: int, rng: random.Random) -> tuple[list[float], list[float]]:
    """``count`` clicks on the timeline: (in-page ms, outside ms) for each."""
    box = page.locator("#timeline").bounding_box()
    inside: list[float] = []
    outside: list[float] = []
    for _ in range(count):
        done = page.evaluate("window.__tickcast.probe.seeks")
        x = box["x"] + box["width"] * rng.uniform(0.02, 0.98)
        start = time.perf_counter()
        page.mouse.click(x, box["y"] + box["height"] / 2)
        page.wait_for_function(
            f"(p => p.seeks > {done} && p.seekMs !== null)(window.__tickcast.probe)",
            polling="raf",
            timeout=30000,
        )
        outside.append((time.perf_counter() - start) * 1e3)
        probe = page.evaluate("window.__tickcast.probe")
        assert probe["firstT"] == probe["seekT"], probe  # the tick drawn is the one clicked
        inside.append(float(probe["seekMs"]))
    return inside, outside


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return f"p50 {p50:5.0f} ms   p99 {p99:5.0f} ms   max {ordered[-1]:5.0f} ms"


def bench_seeks(server: Server, count: int, screenshot: Path | None) -> list[tuple[str, str]]:
    from playwright.sync_api import sync_playwright

    rng = random.Random(20261206)
    rows: list[tuple[str, str]] = []
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        middle = httpx.get(server.url("/health")).json()["latest_t"] // 2
        page.goto(server.url(f"/#t={middle}&speed=1&paused"))
        page.wait_for_function(
            "window.__tickcast.lastT !== null && window.__tickcast.timeline", timeout=60000
        )
        seeks(page, 3, rng)  # warm-up: the page's first fetches, the server's first reads
        inside, outside = seeks(page, count, rng)
        rows.append((f"paused, {count} seeks, in the page", percentiles(inside)))
        rows.append((f"paused, {count} seeks, from Playwright", percentiles(outside)))
        page.click("#play")
        page.wait_for_function("window.__tickcast.mode === 'playing'", timeout=10000)
        inside, outside = seeks(page, count, rng)
        rows.append((f"playing 1x, {count} seeks, in the page", percentiles(inside)))
        rows.append((f"playing 1x, {count} seeks, from Playwright", percentiles(outside)))
        if screenshot is not None:
            page.select_option("#speed", "10")
            page.wait_for_function("window.__tickcast.speed === 10", timeout=10000)
            page.wait_for_function(
                f"window.__tickcast.lastT > {page.evaluate('window.__tickcast.lastT') + 300}",
                timeout=30000,
            )
            page.screenshot(path=str(screenshot), full_page=True)
            print(f"screenshot: {screenshot}")
        browser.close()
    if errors:
        raise SystemExit(f"page errors: {errors}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ticks", type=int, default=1_000_000)
    parser.add_argument("--seeks", type=int, default=20)
    parser.add_argument("--rate", type=float, default=50.0, help="ticks/s, stored and live")
    parser.add_argument("--points", type=int, default=1000, help="/timeline samples")
    parser.add_argument("--data", type=Path, help="the history's directory (kept for reuse)")
    parser.add_argument("--screenshot", type=Path, help="a screenshot of a replay at 10x")
    args = parser.parse_args()
    data = args.data or Path(tempfile.gettempdir()) / f"tickcast-dashboard-seek-{args.ticks}"
    build_history(data, args.ticks, args.rate)
    server = Server(data, args.rate, data.parent / f"{data.name}.log")
    try:
        health = httpx.get(server.url("/health")).json()
        held = health["latest_t"] - health["oldest_t"] + 1
        rows = bench_timeline(server, args.points)
        rows += bench_seeks(server, args.seeks, args.screenshot)
    finally:
        server.stop()
    print(f"\n{held:,}-tick history, {os.cpu_count()} CPUs; seek target {TARGET_MS} ms")
    for name, value in rows:
        print(f"  {name:48} {value}")


if __name__ == "__main__":
    main()
