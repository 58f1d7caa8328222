#!/usr/bin/env python3
"""What a storm of evicted clients costs the server, for each close grace.

For each ``--grace`` value this script starts ``tickcast serve`` (pinned to CPU 0)
with ``--close-grace-s`` set to it, connects ``--clients`` clients that complete the
handshake and then never read (4 KiB receive window), and samples the server's
RSS until every one of them has been evicted (4008, ``tickcast_slow_consumer_closes``)
and its socket closed (``tickcast_connections`` back to 0 and the sockets reset).
It prints, per grace: RSS before the storm, the peak while evicted clients wait
out their grace, RSS once they are gone, and how long the server held them.

Usage: ``python bench/evict_storm.py --clients 1000 --grace 2,10``
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loadtest.light_client import Stats, open_client  # noqa: E402
from loadtest.targets import pin_current_process, start_target, stop_target  # noqa: E402

SAMPLE_S = 0.1
METRIC = re.compile(rb"^(tickcast_\w+) ([0-9.e+-]+)$", re.MULTILINE)


def metrics(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
        return {k.decode(): float(v) for k, v in METRIC.findall(resp.read())}


def rss_mb(proc: psutil.Process) -> float:
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20


async def storm(grace: float, clients: int, rate: float) -> dict[str, float]:
    target = start_target(
        "tickcast",
        rate=rate,
        agents=300,
        max_clients=clients + 10,
        cpu=0,
        extra_args=["--max-lag", "50", "--close-grace-s", f"{grace:g}", "--no-compression"],
    )
    try:
        proc = psutil.Process(target.pid)
        before = rss_mb(proc)
        stats = Stats()
        opened = [
            c
            for c in await asyncio.gather(
                *(
                    open_client(
                        stats,
                        kind="raw",
                        host="127.0.0.1",
                        port=target.port,
                        compression=False,
                        stalled=True,
                    )
                    for _ in range(clients)
                )
            )
            if c is not None
        ]
        peak, started = before, time.monotonic()
        evicted_at = None
        while time.monotonic() - started < grace + 60:
            peak = max(peak, rss_mb(proc))
            m = metrics(target.http_url)
            if evicted_at is None and m.get("tickcast_slow_consumer_closes_total", 0) >= len(
                opened
            ):
                evicted_at = time.monotonic()
            open_sockets = sum(
                1 for c in proc.net_connections("tcp") if c.laddr.port == target.port and c.raddr
            )
            if evicted_at is not None and open_sockets == 0:
                break
            await asyncio.sleep(SAMPLE_S)
        held_s = time.monotonic() - (evicted_at or started)
        after = rss_mb(proc)
        for c in opened:
            c.abort()
        return {
            "grace_s": grace,
            "clients": len(opened),
            "rss_before_mb": before,
            "rss_peak_mb": peak,
            "rss_after_mb": after,
            "held_s": held_s,
        }
    finally:
        stop_target(target)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--grace", default="2,10", help="comma list of close_grace_s values")
    parser.add_argument("--rate", type=float, default=200.0, help="ticks/s")
    args = parser.parse_args()
    pin_current_process(1)
    print("grace_s  clients  RSS before MB  RSS peak MB  RSS after MB  held s")
    for grace in [float(g) for g in args.grace.split(",")]:
        row = asyncio.run(storm(grace, args.clients, args.rate))
        print(
            f"{row['grace_s']:7g}  {row['clients']:7d}  {row['rss_before_mb']:13.1f}"
            f"  {row['rss_peak_mb']:11.1f}  {row['rss_after_mb']:12.1f}  {row['held_s']:6.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
