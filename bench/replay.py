#!/usr/bin/env python3
"""Replay benchmark: pacing accuracy, replay throughput and the isolation of live clients.

Run: ``.venv/bin/python bench/replay.py [--quick] [--parts pacing,throughput,isolation]``
from the project root (needs the ``load`` extra, like ``bench/fanout.py``). It prints
figures; it asserts nothing about time. The history is ``--ticks`` simulated ticks
(default 1 000 000, ``ts`` 100 ms apart: the default rate) built once through the
storage layer and cached (``bench/history_cache.py``); each run works on a copy of
it. The server is ``tickcast serve`` pinned to CPU 0, the clients run in this process
pinned to CPU 1 (``--no-pin`` to leave both free), as in ``bench/fanout.py``.

1. **pacing**: on a server with no live source (``--source ingest``), for each of
   ``--speeds`` one client replays ``--pacing-ticks`` ticks from the middle of the
   history with ``speed=S&batch=1&to_t=..``; the error of a gap is
   ``|actual gap - ts gap / S|``, the actual gap being the difference of the receive
   times of two consecutive ticks at the client (one ``time.time()`` per socket read).
   Prints p50, p99 and max of it, and the drift (the whole stretch's actual duration
   minus its paced one).
2. **throughput**: on the same server, ``--replays`` clients at once, each replaying its
   own stretch of ``--replay-ticks`` ticks at ``speed=max&batch=B`` with ``to_t``, so
   each ends with ``{"type":"end"}``; then, for comparison, one client doing a plain
   catch-up (``from_t=0&batch=B``, no ``speed``) of the whole history. Prints ticks
   delivered per second of server CPU (user + system of the server process, from
   /proc), the wall time, and the server's RSS before, at its peak (``VmHWM``, reset
   before each phase) and after. Each phase is preceded by a short unmeasured one: a
   server's first replay pays for imports and first-touch of code paths.
3. **isolation**: on a server producing ``--rate`` ticks/s (the simulator, resuming the
   history), ``--live-clients`` live clients (``loadtest/light_client.py``, as in
   ``bench/fanout.py``) are measured for ``--duration`` s, then while the same
   replays as in 2 run (in a child process pinned to CPU 1 at nice 19, so that
   reading them does not delay the live clients' reads), then for ``--duration`` s
   again. Prints push latency (receive time - ``ts``) p50/p99/max, missed ticks and
   drops of each window, and p99 with replays / p99 before them.

The machine's load average and per-CPU busy time are printed with each part: the
figures are only as good as the machine was quiet.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from fanout import BUSY_PCT, DRIVER_CPU, SERVER_CPU, ServerSampler, percentile, raise_nofile_limit  # noqa: E402
from history_cache import TS_GAP_S, History, cached_history, copy_history  # noqa: E402
from loadtest.light_client import Client, Stats, open_client  # noqa: E402
from loadtest.targets import (  # noqa: E402
    VENV_BIN,
    RunningTarget,
    pin_current_process,
    start_target,
    stop_target,
)
from replay_client import Stretch, run_stretches, worker_main  # noqa: E402

from tickcast.sources.simulator import DEFAULT_AGENTS  # noqa: E402

__all__ = ["main"]

# Limits
MAX_GAP_S = 5.0  # a ts gap above this is paced as this (the replay contract)
RAMP_BATCH = 50  # live clients connected at once
WARM_TICKS = 2_000  # the unmeasured replay before each throughput phase
# Timeouts
SETTLE_S = 2.0  # between the live clients' ramp and the first window
RSS_SAMPLE_S = 0.25
AFTER_S = 1.0  # after a phase, before its "after" RSS
# Targets (printed next to the figures)
PACING_P99_MS = 5.0
TICKS_PER_CPU_S = 200_000
RSS_GROWTH_MB = 100.0
P99_RATIO = 1.2


# The server and /proc


def start_server(data: Path, *, live_rate: float | None, clients: int, pin: bool) -> RunningTarget:
    """``tickcast serve`` over ``data``: the simulator at ``live_rate`` ticks/s (it resumes
    the history), or no live source at all (``--source ingest``) when None."""
    extra = ["--data-dir", str(data), "--log-level", "warning"]
    if live_rate is None:
        extra += ["--source", "ingest", "--ingest-token", "bench"]
    return start_target(
        "tickcast",
        rate=live_rate or 10.0,
        compression=False,
        max_clients=2 * clients + 10,
        cpu=None if not pin else SERVER_CPU,
        extra_args=extra,
    )


def status_mb(pid: int, key: str) -> float:
    """A memory line of /proc/PID/status (``VmRSS``, ``VmHWM``) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak(pid: int) -> None:
    """Set the process's ``VmHWM`` back to its current RSS."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def machine() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"load average {load}"


def busy(cpu: list[float], *ours: float) -> str:
    """Each CPU's busy share, and what processes other than ``ours`` (CPU %) used."""
    per_cpu = ", ".join(f"cpu{i} {pct:.0f}%" for i, pct in enumerate(cpu))
    other = max(0.0, sum(cpu) - sum(ours))
    flag = "BUSY: " if other > BUSY_PCT else ""
    return f"machine {per_cpu}; {flag}other processes {other:.0f}% of a CPU"


# 1. Pacing


def pacing(
    target: RunningTarget, history: History, args: argparse.Namespace
) -> list[dict[str, Any]]:
    rows = []
    sampler = ServerSampler(target.pid)
    n = args.pacing_ticks
    for i, speed in enumerate(args.speeds):
        from_t = history.ticks // 2 + i * (n + 100)
        stretch = Stretch(from_t, to_t=from_t + n - 1, speed=f"{speed:g}", batch=1)
        paced_s = (n - 1) * TS_GAP_S / speed
        psutil.cpu_percent(percpu=True)
        cpu0, wall0 = sampler.cpu_s(), time.time()
        result, subs = asyncio.run(
            run_stretches(target.port, [stretch], timeout_s=2 * paced_s + 30, record=True)
        )
        wall = time.time() - wall0
        row: dict[str, Any] = {
            "speed": speed,
            "result": result.to_json(),
            "machine_cpu": psutil.cpu_percent(percpu=True),
            "server_cpu_pct": 100 * (sampler.cpu_s() - cpu0) / wall,
            "client_cpu_pct": 100 * result.client_cpu_s / wall,
        }
        if subs and len(subs[0].rec_t) >= 2:
            row |= pacing_errors(subs[0].rec_ts, subs[0].rec_now, speed)
        rows.append(row)
        print(format_pacing(row, n), flush=True)
    return rows


def pacing_errors(ts: Sequence[float], now: Sequence[float], speed: float) -> dict[str, Any]:
    """p50/p99/max of |actual gap - ts gap / speed| (ms) and the drift over the stretch."""
    errors, signed, same_read = [], 0.0, 0
    for k in range(1, len(ts)):
        expected = min(ts[k] - ts[k - 1], MAX_GAP_S) / speed
        actual = now[k] - now[k - 1]
        same_read += actual == 0.0
        errors.append(abs(actual - expected) * 1e3)
        signed += actual - expected
    errors.sort()
    return {
        "gaps": len(errors),
        "p50_ms": percentile(errors, 50),
        "p99_ms": percentile(errors, 99),
        "max_ms": errors[-1],
        "drift_ms": signed * 1e3,
        "same_read": same_read,  # gaps whose two ticks came in one socket read
    }


def format_pacing(row: dict[str, Any], n: int) -> str:
    result = row["result"]
    head = f"  speed {row['speed']:>6g}: "
    if "p99_ms" not in row:
        return head + f"NO FIGURE: {result['ticks']} of {n} ticks; {result['errors']}"
    ok = "ok" if row["p99_ms"] <= PACING_P99_MS else "ABOVE TARGET"
    complete = "" if result["complete"] and result["ended"] else f" INCOMPLETE {result}"
    return (
        head + f"p50 {row['p50_ms']:6.2f} ms  p99 {row['p99_ms']:6.2f} ms  "
        f"max {row['max_ms']:7.2f} ms  drift {row['drift_ms']:+8.1f} ms over "
        f"{row['gaps']} gaps ({row['same_read']} in one read)  "
        f"[{ok}; {busy(row['machine_cpu'], row['server_cpu_pct'], row['client_cpu_pct'])}]"
        f"{complete}"
    )


# 2. Throughput


def stretches(args: argparse.Namespace, *, speed: str = "max") -> list[Stretch]:
    size = args.replay_ticks
    return [
        Stretch(i * size, to_t=(i + 1) * size - 1, speed=speed, batch=args.batch)
        for i in range(args.replays)
    ]


def measure(target: RunningTarget, phase: list[Stretch], timeout_s: float) -> dict[str, Any]:
    """Run ``phase``'s stretches from this process; server CPU, RSS and the clients' tally."""
    pid = target.pid
    sampler = ServerSampler(pid)
    rss_before = status_mb(pid, "VmRSS")
    reset_peak(pid)
    psutil.cpu_percent(percpu=True)
    user0, sys0 = sampler.cpu_split_s()
    result, _ = asyncio.run(run_stretches(target.port, phase, timeout_s=timeout_s))
    user1, sys1 = sampler.cpu_split_s()
    cpu = psutil.cpu_percent(percpu=True)
    peak = status_mb(pid, "VmHWM")
    time.sleep(AFTER_S)
    cpu_s = (user1 - user0) + (sys1 - sys0)
    wall = result.wall_s
    return {
        "clients": len(phase),
        "result": result.to_json(),
        "server_cpu_s": cpu_s,
        "server_user_s": user1 - user0,
        "ticks_per_cpu_s": result.ticks / cpu_s if cpu_s else float("nan"),
        "ticks_per_wall_s": result.ticks / result.wall_s if result.wall_s else float("nan"),
        "server_cpu_pct": 100 * cpu_s / result.wall_s if result.wall_s else float("nan"),
        "rss_before_mb": rss_before,
        "rss_peak_mb": peak,
        "rss_after_mb": status_mb(pid, "VmRSS"),
        "machine_cpu": cpu,
        "client_cpu_pct": 100 * result.client_cpu_s / wall if wall else float("nan"),
    }


@contextlib.contextmanager
def profiled(pid: int, path: Path | None) -> Iterator[None]:
    """Record ``pid`` with py-spy (collapsed stacks, every thread) while the block runs."""
    if path is None:
        yield
        return
    spy = shutil.which("py-spy") or str(VENV_BIN / "py-spy")
    path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [spy, "record", "--pid", str(pid), "--format", "raw", "--nonblocking"]
    cmd += ["--rate", "250", "--output", str(path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)


# Leaves of py-spy stacks that are a wait, not work (sampled anyway without --idle: a
# worker thread parked on trio's thread-cache lock, the loop in epoll_wait)
IDLE_LEAVES = ("WorkerThread._work (", "EpollIOManager.get_events (")


def profile_summary(path: Path, top: int = 15) -> list[str]:
    """Where a py-spy raw file's samples went: by line (self) and by function (total),
    as shares of the samples that were not a wait (:data:`IDLE_LEAVES`)."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    busy = idle = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        if frames[-1].startswith(IDLE_LEAVES):
            idle += count
            continue
        busy += count
        own[frames[-1]] += count
        for frame in {re.sub(r":\d+\)$", ")", f) for f in frames}:
            total[frame] += count
    lines = [f"    {busy} samples of work ({idle} of waiting left out), {path}; self, by line:"]
    lines += [f"      {100 * n / busy:5.1f}%  {f}" for f, n in own.most_common(top)]
    lines.append("    total (self + callees), by function:")
    lines += [f"      {100 * n / busy:5.1f}%  {f}" for f, n in total.most_common(top)]
    return lines


def throughput(target: RunningTarget, history: History, args: argparse.Namespace) -> dict[str, Any]:
    replays = stretches(args)
    total = sum(s.ticks for s in replays)
    timeout = 60 + total / 10_000
    warm = min(WARM_TICKS, history.ticks // 2)
    out = {}
    for name, phase, warm_phase in (
        (
            f"{len(replays)} replays",
            replays,
            [Stretch(0, to_t=warm - 1, speed="max", batch=args.batch)],
        ),
        (
            "1 catch-up",
            [Stretch(0, until_t=history.latest_t, batch=args.batch)],
            [Stretch(warm, until_t=2 * warm - 1, batch=args.batch)],
        ),
    ):
        asyncio.run(run_stretches(target.port, warm_phase, timeout_s=60))
        profile = args.profile / f"{name.replace(' ', '-')}.txt" if args.profile else None
        with profiled(target.pid, profile):
            row = out[name] = measure(target, phase, timeout)
        print(format_throughput(name, row, targets=phase is replays), flush=True)
        if profile is not None:
            print("\n".join(profile_summary(profile)), flush=True)
    return out


def format_throughput(name: str, row: dict[str, Any], *, targets: bool = True) -> str:
    """One phase's line; ``targets``: compare with the targets (not for the catch-up,
    which is there for comparison)."""
    r = row["result"]
    growth = row["rss_peak_mb"] - row["rss_before_mb"]
    user = 100 * row["server_user_s"] / row["server_cpu_s"] if row["server_cpu_s"] else 0.0
    ok = "ok" if row["ticks_per_cpu_s"] >= TICKS_PER_CPU_S else "BELOW TARGET"
    ok += "" if growth <= RSS_GROWTH_MB else ", RSS ABOVE TARGET"
    ok = ok if targets else "for comparison"
    line = (
        f"  {name:>12}: {r['ticks']:>9,} ticks  {row['ticks_per_cpu_s']:>9,.0f} ticks/s of server "
        f"CPU ({row['server_cpu_s']:.2f} s, {user:.0f}% user)  wall {r['wall_s']:.2f} s = "
        f"{row['ticks_per_wall_s']:,.0f} ticks/s  server "
        f"{row['server_cpu_pct']:.0f}% of a core  client CPU {r['client_cpu_s']:.2f} s  "
        f"RSS {row['rss_before_mb']:.0f} / {row['rss_peak_mb']:.0f} / {row['rss_after_mb']:.0f} MB "
        f"(+{growth:.0f})  [{ok}; "
        f"{busy(row['machine_cpu'], row['server_cpu_pct'], row['client_cpu_pct'])}]"
    )
    if r["ticks"] != r["expected"] or r["gaps"] or r["errors"]:
        line += (
            f"\n    INCOMPLETE: {r['ticks']} of {r['expected']} ticks, {r['complete']} of "
            f"{r['clients']} stretches complete, {r['ended']} ended, {r['gaps']} gaps, "
            f"close codes {r['close_codes']}, errors {r['errors']}"
        )
    return line


# 3. Isolation


async def isolation(target: RunningTarget, args: argparse.Namespace) -> dict[str, Any]:
    stats = Stats()
    opened: list[Client] = []
    for first in range(0, args.live_clients, RAMP_BATCH):
        batch = min(RAMP_BATCH, args.live_clients - first)
        got = await asyncio.gather(
            *(
                open_client(
                    stats, kind="raw", host="127.0.0.1", port=target.port, compression=False
                )
                for _ in range(batch)
            )
        )
        opened += [c for c in got if c is not None]
    await asyncio.sleep(SETTLE_S)
    sampler = ServerSampler(target.pid)
    job = {
        "port": target.port,
        "stretches": [vars(s) for s in stretches(args)],
        "timeout_s": 120 + args.replays * args.replay_ticks / 5_000,
        "nice": 19,
        "cpu": None if args.no_pin else DRIVER_CPU,
    }
    windows = {"without": await window(stats, sampler, args.duration)}
    print(format_window("without", windows["without"]), flush=True)
    windows["with"] = await window(stats, sampler, args.duration, job=job)
    print(format_window("with", windows["with"]), flush=True)
    windows["without, after"] = await window(stats, sampler, args.duration)
    print(format_window("without, after", windows["without, after"]), flush=True)
    for client in opened:
        client.close()
    await asyncio.sleep(0.5)
    return {"live_clients": len(opened), "connect_failures": stats.connect_failures} | windows


async def window(
    stats: Stats, sampler: ServerSampler, duration: float, *, job: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One measuring window: ``duration`` s, or while ``job``'s replays run (child process)."""
    proc = None
    if job is not None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--worker", json.dumps(job), stdout=asyncio.subprocess.PIPE
        )
        assert proc.stdout is not None
        started = await proc.stdout.readline()
        assert started.strip() == b"started", started
    first, missed0, drops0, ticks0, t0 = (
        len(stats.latencies_ms), stats.missed, stats.drops, stats.ticks, stats.max_t
    )  # fmt: skip
    psutil.cpu_percent(percpu=True)
    usage0, cpu0, wall0 = resource.getrusage(resource.RUSAGE_SELF), sampler.cpu_s(), time.time()
    stats.measuring = True
    replays = None
    if proc is not None:
        assert proc.stdout is not None
        reading = asyncio.ensure_future(proc.stdout.readline())
        while not reading.done():
            sampler.sample_rss()
            await asyncio.wait([reading], timeout=RSS_SAMPLE_S)
        line = reading.result()
        await proc.wait()
        replays = json.loads(line) if line else {"error": f"worker exit {proc.returncode}"}
    else:
        deadline = wall0 + duration
        while (now := time.time()) < deadline:
            sampler.sample_rss()
            await asyncio.sleep(min(RSS_SAMPLE_S, deadline - now))
    stats.measuring = False
    wall = time.time() - wall0
    cpu1, usage1 = sampler.cpu_s(), resource.getrusage(resource.RUSAGE_SELF)
    lat = sorted(stats.latencies_ms[first:])
    produced = stats.max_t - t0
    driver = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    return {
        "duration_s": wall,
        "p50_ms": percentile(lat, 50),
        "p99_ms": percentile(lat, 99),
        "max_ms": lat[-1] if lat else float("nan"),
        "samples": len(lat),
        "ticks": stats.ticks - ticks0,
        "produced_per_s": produced / wall,
        "missed": stats.missed - missed0,
        "drops": stats.drops - drops0,
        "server_cpu_pct": 100 * (cpu1 - cpu0) / wall,
        "server_rss_max_mb": sampler.rss_max / 2**20,
        "driver_cpu_pct": 100 * driver / wall,
        "machine_cpu": psutil.cpu_percent(percpu=True),
        "replays": replays,
    }


def format_window(name: str, w: dict[str, Any]) -> str:
    line = (
        f"  {name:>15}: {w['duration_s']:5.1f} s  p50 {w['p50_ms']:6.2f} ms  p99 "
        f"{w['p99_ms']:6.2f} ms  max {w['max_ms']:7.1f} ms  {w['ticks']:>8,} ticks "
        f"({w['produced_per_s']:.1f}/s produced)  missed {w['missed']}  drops {w['drops']}  "
        f"server {w['server_cpu_pct']:.0f}% CPU, RSS max {w['server_rss_max_mb']:.0f} MB  "
        f"driver {w['driver_cpu_pct']:.0f}%"
    )
    r = w["replays"]
    ours = [w["server_cpu_pct"], w["driver_cpu_pct"]]
    if r is not None and "client_cpu_s" in r:
        ours.append(100 * r["client_cpu_s"] / w["duration_s"])
        line += f"  replay clients {ours[-1]:.0f}%"
    line += f"  [{busy(w['machine_cpu'], *ours)}]"
    if r is not None:
        if "error" in r:
            return line + f"\n    replays FAILED: {r['error']}"
        line += (
            f"\n    replays: {r['ticks']:,} of {r['expected']:,} ticks in {r['wall_s']:.1f} s, "
            f"{r['ended']} of {r['clients']} ended, {r['gaps']} gaps"
            + (f", errors {r['errors']}" if r["errors"] else "")
        )
    return line


# CLI


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--parts", default="pacing,throughput,isolation", help="comma list")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 100k ticks, 100 ticks per pacing run, 100 x 1000-tick replays, "
        "200 live clients, 5 s windows (explicit flags still win)",
    )
    parser.add_argument("--ticks", type=int, default=None, help="history size [1000000]")
    parser.add_argument("--agents", type=int, default=DEFAULT_AGENTS)
    parser.add_argument("--speeds", default="1,10,100", help="pacing: comma list")
    parser.add_argument("--pacing-ticks", type=int, default=None, help="per speed [1000]")
    parser.add_argument("--replays", type=int, default=100, help="replaying clients")
    parser.add_argument(
        "--replay-ticks", type=int, default=None, help="per replay [ticks / replays]"
    )
    parser.add_argument("--batch", type=int, default=100, help="throughput and isolation")
    parser.add_argument("--live-clients", type=int, default=None, help="isolation [1000]")
    parser.add_argument("--rate", type=float, default=20.0, help="isolation: live ticks/s")
    parser.add_argument("--duration", type=float, default=None, help="isolation windows, s [15]")
    parser.add_argument("--no-pin", action="store_true", help="do not pin server/driver CPUs")
    parser.add_argument("--cache", type=Path, default=None, help="history cache directory")
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="py-spy the server during each throughput phase (collapsed stacks in DIR, a "
        "summary printed; the figures of such a run are perturbed by the sampling)",
    )
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quick = args.quick
    for name, full, small in (
        ("ticks", 1_000_000, 100_000),
        ("pacing_ticks", 1_000, 100),
        ("live_clients", 1_000, 200),
        ("duration", 15.0, 5.0),
    ):
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
    if args.replay_ticks is None:
        args.replay_ticks = 1_000 if quick else args.ticks // args.replays
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    args.speeds = [float(s) for s in args.speeds.split(",") if s.strip()]
    unknown = set(args.parts) - {"pacing", "throughput", "isolation"}
    if unknown:
        parser.error(f"--parts: unknown {sorted(unknown)}")
    if args.replays * args.replay_ticks > args.ticks:
        parser.error("--replays x --replay-ticks must fit in --ticks")
    if args.ticks < 2 * WARM_TICKS or args.pacing_ticks * len(args.speeds) * 2 > args.ticks:
        parser.error("--ticks too small for the warm-up or the pacing stretches")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        return worker_main(args.worker)
    raise_nofile_limit()
    pinned = not args.no_pin and pin_current_process(DRIVER_CPU)
    t0 = time.perf_counter()
    kwargs = {"root": args.cache} if args.cache else {}
    history = cached_history(args.ticks, args.agents, **kwargs)
    how = f"built in {history.build_s:.0f} s" if history.build_s else "from the cache"
    print(
        f"replay benchmark: {history.ticks:,} ticks of {history.agents} agents, "
        f"{history.bytes_per_tick:,.0f} B/tick, ts gap {TS_GAP_S * 1e3:g} ms ({how}: "
        f"{history.path}); python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"pinning {'server CPU 0, clients CPU 1' if pinned else 'off'}; {machine()}",
        flush=True,
    )
    results: dict[str, Any] = {"argv": sys.argv[1:], "ticks": history.ticks}
    work = Path(tempfile.mkdtemp(prefix="tickcast-bench-replay-"))
    try:
        copied = copy_history(history, work / "segments")
        print(f"history copied for this run in {copied:.1f} s", flush=True)
        results |= run_parts(work / "segments", history, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\ndone in {time.perf_counter() - t0:.0f} s; {machine()}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
        print(f"figures written to {args.json}")
    return 0


def run_parts(data: Path, history: History, args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    if {"pacing", "throughput"} & set(args.parts):
        target = start_server(data, live_rate=None, clients=args.replays, pin=not args.no_pin)
        try:
            if "pacing" in args.parts:
                print(
                    f"\n1. pacing: {args.pacing_ticks} ticks at batch=1 per speed; "
                    f"|actual gap - ts gap / speed| (target p99 <= {PACING_P99_MS:g} ms); "
                    f"{machine()}",
                    flush=True,
                )
                results["pacing"] = pacing(target, history, args)
            if "throughput" in args.parts:
                print(
                    f"\n2. throughput: batch={args.batch}; {args.replays} replays of "
                    f"{args.replay_ticks:,} ticks at speed=max (to_t: each ends), then one "
                    f"plain catch-up of {history.ticks:,} ticks (target >= "
                    f"{TICKS_PER_CPU_S:,} ticks/s of server CPU, RSS growth <= "
                    f"{RSS_GROWTH_MB:g} MB; RSS before / peak / after); {machine()}",
                    flush=True,
                )
                results["throughput"] = throughput(target, history, args)
        finally:
            results["server_exit_1_2"] = stop_target(target)
    if "isolation" in args.parts:
        print(
            f"\n3. isolation: {args.live_clients} live clients at {args.rate:g} ticks/s, push "
            f"latency without / with {args.replays} replays of {args.replay_ticks:,} ticks "
            f"(speed=max, batch={args.batch}) / without (target p99 ratio <= {P99_RATIO:g}, "
            f"0 missed); {machine()}",
            flush=True,
        )
        target = start_server(
            data, live_rate=args.rate, clients=args.live_clients + args.replays, pin=not args.no_pin
        )
        try:
            iso = results["isolation"] = asyncio.run(isolation(target, args))
        finally:
            results["server_exit_3"] = stop_target(target)
        ratio = iso["with"]["p99_ms"] / iso["without"]["p99_ms"]
        after = iso["with"]["p99_ms"] / iso["without, after"]["p99_ms"]
        windows = ("without", "with", "without, after")
        missed = sum(iso[w]["missed"] for w in windows)
        drops = sum(iso[w]["drops"] for w in windows)
        iso["p99_ratio"] = ratio
        ok = "ok" if ratio <= P99_RATIO and missed == 0 and drops == 0 else "ABOVE TARGET"
        print(
            f"  p99 with / without replays: x{ratio:.3f} (x{after:.3f} against the window "
            f"after); missed {missed}, drops {drops} in all [{ok}]"
        )
    return results


if __name__ == "__main__":
    sys.exit(main())
