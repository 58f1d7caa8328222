#!/usr/bin/env python3
"""Fan-out benchmark: N WebSocket clients x R ticks/s against tickcast and the peer.

For each cell of the matrix targets x clients x rates this script

1. starts the target itself (``loadtest/targets.py``: free port, temporary data
   directory, pinned to CPU 0) and waits for ``GET /health`` = 200;
2. connects the clients from this one process (pinned to CPU 1), ramping in
   batches of ``--ramp-batch`` so the accept queue is never flooded, plus
   ``--stalled`` clients that complete the handshake and then never read;
3. waits ``--settle`` seconds, then measures for ``--duration`` seconds:
   push latency (receive time - ``ts``) of every live tick, ticks received,
   gaps in ``t`` per client, the server's CPU (``cpu_times`` delta / wall, all
   its processes, 100 % = one core) and its RSS (max of samples);
4. closes the clients, stops the target (SIGTERM, SIGKILL after 5 s).

The clients (``loadtest/light_client.py``) are a minimal RFC 6455
implementation on ``asyncio.Protocol`` (``--client raw``, the default) that
reads ``t`` and ``ts`` off the head of each message without parsing the JSON,
so 1000 clients x 50 ticks/s fit in one core; ``--client websockets`` uses the
``websockets`` library instead (heavier, for cross-checks).

Latency counts live ticks only: a tick whose ``t`` is at most the hello's
``latest_t`` is history (the "latest tick" sent on connect), not a push.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import resource
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loadtest.light_client import Client, RawClient, Stats, open_client  # noqa: E402
from loadtest.targets import (  # noqa: E402
    TARGETS,
    RunningTarget,
    TargetError,
    pin_current_process,
    start_target,
    stop_target,
)

__all__ = ["Row", "main", "run_cell"]

# CPUs (as in the measurements)
SERVER_CPU = 0
DRIVER_CPU = 1
# Timeouts
RAMP_TIMEOUT_S = 120.0
CLOSE_WAIT_S = 0.5
RSS_SAMPLE_S = 0.25

LOG_DIR = ROOT / "bench" / "results"  # git-ignored; server logs of failed cells land here


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence (nan when empty)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


class ServerSampler:
    """CPU (cpu_times delta / wall) and max RSS of the server's process tree."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.rss_max = 0

    def _procs(self) -> list[psutil.Process]:
        try:
            return [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return [self.root]

    def cpu_s(self) -> float:
        total = 0.0
        for proc in self._procs():
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
        return total

    def sample_rss(self) -> None:
        rss = 0
        for proc in self._procs():
            try:
                rss += proc.memory_info().rss
            except psutil.Error:
                continue
        self.rss_max = max(self.rss_max, rss)


@dataclass
class Row:
    target: str
    clients: int
    rate: float
    duration_s: float
    connected: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    ticks: int
    expected: int  # connected clients x ticks produced during the window
    missed: int
    duplicates: int
    failures: int  # connect failures + drops
    server_cpu_pct: float
    server_rss_mb: float
    driver_cpu_pct: float
    msg_bytes: float
    compressed: int
    stalled: list[dict[str, Any]]
    server_exit: int | None
    reasons: dict[str, int]
    produced_per_s: float = math.nan  # t advance seen by the clients / wall
    machine_cpu_busy_pct: list[float] = field(default_factory=list)  # every process, per CPU
    error: str | None = None


async def drive(target: RunningTarget, clients: int, rate: float, args: argparse.Namespace) -> Row:
    """Connect, measure for ``args.duration`` seconds, disconnect."""
    stats = Stats()
    host, port = "127.0.0.1", target.port

    async def connect(stalled: bool = False) -> Client | None:
        return await open_client(
            stats,
            kind=args.client,
            host=host,
            port=port,
            compression=args.compression,
            stalled=stalled,
        )

    opened: list[Client] = []
    try:
        async with asyncio.timeout(RAMP_TIMEOUT_S):
            for start in range(0, clients, args.ramp_batch):
                batch = min(args.ramp_batch, clients - start)
                opened += [c for c in await asyncio.gather(*(connect() for _ in range(batch))) if c]
    except TimeoutError:
        stats.reasons[f"ramp not done within {RAMP_TIMEOUT_S:g} s"] += 1
    stalled = [c for c in await asyncio.gather(*(connect(True) for _ in range(args.stalled))) if c]

    await asyncio.sleep(args.settle)
    sampler = ServerSampler(target.pid)
    connected = sum(1 for c in opened if not getattr(c, "lost", False))
    psutil.cpu_percent(percpu=True)  # starts the machine-wide per-CPU interval
    usage0, cpu0 = resource.getrusage(resource.RUSAGE_SELF), sampler.cpu_s()
    wall0 = time.monotonic()
    t0 = stats.max_t
    stats.measuring = True
    deadline = wall0 + args.duration
    while (now := time.monotonic()) < deadline:
        sampler.sample_rss()
        await asyncio.sleep(min(RSS_SAMPLE_S, deadline - now))
    stats.measuring = False
    wall = time.monotonic() - wall0
    cpu1, usage1 = sampler.cpu_s(), resource.getrusage(resource.RUSAGE_SELF)
    produced = stats.max_t - t0
    cpu_busy = psutil.cpu_percent(percpu=True)
    sampler.sample_rss()

    stalled_report = []
    for client in stalled:
        assert isinstance(client, RawClient)
        client.drain_stalled()
    if stalled:
        await asyncio.sleep(1.0)
    for client in stalled:
        assert isinstance(client, RawClient)
        stalled_report.append(
            {
                "ticks_read_after_drain": client.sub.received,
                "close_code": client.sub.close_code,
                "open": not client.lost and client.sub.close_code is None,
            }
        )
    for client in [*opened, *stalled]:
        client.close()
    await asyncio.sleep(CLOSE_WAIT_S)

    latencies = sorted(stats.latencies_ms)
    driver_s = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    return Row(
        target=target.name,
        clients=clients,
        rate=rate,
        duration_s=round(wall, 3),
        connected=connected,
        p50_ms=percentile(latencies, 50),
        p95_ms=percentile(latencies, 95),
        p99_ms=percentile(latencies, 99),
        max_ms=latencies[-1] if latencies else math.nan,
        ticks=stats.ticks,
        expected=connected * produced,
        produced_per_s=produced / wall,
        missed=stats.missed,
        duplicates=stats.duplicates,
        failures=stats.connect_failures + stats.drops,
        server_cpu_pct=100.0 * (cpu1 - cpu0) / wall,
        server_rss_mb=sampler.rss_max / 2**20,
        driver_cpu_pct=100.0 * driver_s / wall,
        msg_bytes=stats.bytes / stats.ticks if stats.ticks else math.nan,
        compressed=stats.compressed,
        stalled=stalled_report,
        server_exit=None,
        reasons=dict(stats.reasons),
        machine_cpu_busy_pct=cpu_busy,
    )


def run_cell(target_name: str, clients: int, rate: float, args: argparse.Namespace) -> Row:
    """One cell of the matrix: start the target, drive it, stop it."""
    try:
        target = start_target(
            target_name,
            rate=rate,
            agents=args.agents,
            compression=args.compression,
            max_clients=2 * (clients + args.stalled) + 10,
            cpu=None if args.no_pin else SERVER_CPU,
            extra_args=args.server_arg,
        )
    except (TargetError, ValueError, OSError) as exc:
        return _failed_row(target_name, clients, rate, args, f"start: {exc}")
    try:
        row = asyncio.run(drive(target, clients, rate, args))
    except Exception as exc:
        row = _failed_row(target_name, clients, rate, args, f"{type(exc).__name__}: {exc}")
    finally:
        exit_code = stop_target(target, keep_workdir=True)
    row.server_exit = exit_code
    if exit_code != 0 or row.error:  # keep the evidence
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        saved = LOG_DIR / f"{target_name}-{clients}x{rate:g}.log"
        shutil.copyfile(target.log_path, saved)
        row.reasons[f"server log saved to {saved.relative_to(ROOT)}"] = 1
    shutil.rmtree(target.workdir, ignore_errors=True)
    return row


def _failed_row(
    target: str, clients: int, rate: float, args: argparse.Namespace, error: str
) -> Row:
    nan = math.nan
    return Row(
        target, clients, rate, args.duration, 0, nan, nan, nan, nan, 0, 0, 0, 0, clients,
        nan, nan, nan, nan, 0, [], None, {}, error=error,
    )  # fmt: skip


# Output

COLUMNS: list[tuple[str, str, Callable[[Row], str]]] = [
    ("target", "<9", lambda r: r.target),
    ("clients", ">7", lambda r: str(r.clients)),
    ("rate", ">5", lambda r: f"{r.rate:g}"),
    ("p50 ms", ">8", lambda r: f"{r.p50_ms:.2f}"),
    ("p95 ms", ">8", lambda r: f"{r.p95_ms:.2f}"),
    ("p99 ms", ">8", lambda r: f"{r.p99_ms:.2f}"),
    ("max ms", ">8", lambda r: f"{r.max_ms:.1f}"),
    ("ticks", ">8", lambda r: str(r.ticks)),
    ("recv %", ">6", lambda r: f"{100 * r.ticks / r.expected:.1f}" if r.expected else "-"),
    ("missed", ">6", lambda r: str(r.missed)),
    ("fail", ">5", lambda r: str(r.failures)),
    ("srv CPU%", ">8", lambda r: f"{r.server_cpu_pct:.1f}"),
    ("srv RSS MB", ">10", lambda r: f"{r.server_rss_mb:.1f}"),
    ("drv CPU%", ">8", lambda r: f"{r.driver_cpu_pct:.1f}"),
    ("msg B", ">6", lambda r: f"{r.msg_bytes:.0f}"),
]


def format_table(rows: Sequence[Row]) -> str:
    header = "  ".join(f"{name:{spec}}" for name, spec, _ in COLUMNS)
    lines = [header, "-" * len(header)]
    lines += ["  ".join(f"{get(row):{spec}}" for _, spec, get in COLUMNS) for row in rows]
    return "\n".join(lines)


def format_notes(rows: Sequence[Row]) -> list[str]:
    notes = []
    for row in rows:
        where = f"{row.target} {row.clients}x{row.rate:g}/s"
        if row.error:
            notes.append(f"{where}: ERROR {row.error}")
        for reason, count in row.reasons.items():
            notes.append(f"{where}: {count} x {reason}")
        if row.produced_per_s < 0.95 * row.rate:
            notes.append(f"{where}: server produced only {row.produced_per_s:.1f} ticks/s")
        if row.compressed:
            notes.append(f"{where}: {row.compressed} connections negotiated permessage-deflate")
        if row.machine_cpu_busy_pct:
            busy = ", ".join(f"cpu{i} {pct:.0f}%" for i, pct in enumerate(row.machine_cpu_busy_pct))
            notes.append(f"{where}: machine CPU busy during the window: {busy}")
        if row.driver_cpu_pct > 90:
            notes.append(f"{where}: the load driver was CPU-bound; latencies include its queueing")
        for i, stalled in enumerate(row.stalled):
            notes.append(f"{where}: stalled client {i}: {stalled}")
        if row.server_exit not in (0, None) or (row.server_exit is None and not row.error):
            notes.append(
                f"{where}: server exit code {row.server_exit} after SIGTERM (None = killed)"
            )
    return notes


def format_ratios(rows: Sequence[Row]) -> list[str]:
    by_key = {(r.target, r.clients, r.rate): r for r in rows if not r.error}
    lines = []
    for (target, clients, rate), tc in by_key.items():
        peer = by_key.get(("peer", clients, rate))
        if target == "peer" or peer is None:
            continue
        cpu = tc.server_cpu_pct / peer.server_cpu_pct if peer.server_cpu_pct else math.nan
        p99 = tc.p99_ms / peer.p99_ms if peer.p99_ms else math.nan
        lines.append(f"{target:>13} {clients:>6} x {rate:g}/s: CPU x{cpu:.2f}, p99 x{p99:.2f}")
    return lines


# CLI


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def float_list(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def str_list(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    unknown = sorted(set(names) - set(TARGETS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown target(s) {unknown}; choose from {TARGETS}")
    return names


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="WebSocket fan-out benchmark (tickcast vs the websockets peer).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--targets", type=str_list, default=["tickcast", "peer"], help="comma list")
    parser.add_argument("--clients", type=int_list, default=[100, 1000], help="comma list")
    parser.add_argument(
        "--rates", type=float_list, default=[20.0, 50.0], help="comma list of ticks/s"
    )
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per cell")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds between ramp and window")
    parser.add_argument("--ramp-batch", type=int, default=50, help="clients connected at once")
    parser.add_argument("--stalled", type=int, default=0, help="extra clients that never read")
    parser.add_argument(
        "--compression", action="store_true", help="clients offer permessage-deflate"
    )
    parser.add_argument("--agents", type=int, default=None, help="passed to both servers")
    parser.add_argument(
        "--client", choices=["raw", "websockets"], default="raw", help="client implementation"
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin server/driver CPUs")
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for the server command line (repeatable)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the rows to this file")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.ramp_batch < 1 or args.stalled < 0:
        parser.error("--duration > 0, --ramp-batch >= 1 and --stalled >= 0 are required")
    return args


def raise_nofile_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # servers inherit it
        soft = hard
    return soft


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    nofile = raise_nofile_limit()
    needed = max(args.clients) + args.stalled + 100
    if nofile < needed:
        print(f"warning: RLIMIT_NOFILE is {nofile}, {needed} needed", file=sys.stderr)
    pinned = not args.no_pin and pin_current_process(DRIVER_CPU)
    print(
        f"fan-out: targets={','.join(args.targets)} clients={args.clients} rates={args.rates} "
        f"duration={args.duration:g}s client={args.client} compression={args.compression} "
        f"stalled={args.stalled} pinning={'server CPU 0, driver CPU 1' if pinned else 'off'}",
        flush=True,
    )
    rows: list[Row] = []
    for clients in args.clients:
        for rate in args.rates:
            for target in args.targets:
                row = run_cell(target, clients, rate, args)
                rows.append(row)
                print(format_table([row]).splitlines()[-1], flush=True)
    print()
    print(format_table(rows))
    for line in format_notes(rows):
        print(f"note: {line}")
    ratios = format_ratios(rows)
    if ratios:
        print("\ntarget / peer:")
        print("\n".join(ratios))
    if args.json:
        meta = {
            "argv": sys.argv[1:],
            "cpus": os.cpu_count(),
            "pinned": pinned,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        payload = {"meta": meta, "rows": [asdict(r) for r in rows]}
        args.json.write_text(json.dumps(payload, indent=2, default=str, allow_nan=True) + "\n")
        print(f"\nrows written to {args.json}")
    return 1 if any(r.error for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
