#!/usr/bin/env python3
"""Fan-out benchmark: N WebSocket clients x R ticks/s against tickcast, the peer and the floor.

For each cell of the matrix clients x rates x compression x ``--repeat`` rounds, it
runs every target in turn (so targets alternate and share the machine's mood; every
other round in the reverse order, so that a machine slowly getting busier or quieter
over a run does not favour the target that always goes first), and for each target

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

The ``floor`` target (``bench/peer_floor.py``: a bare ``for sock in clients:
sock.send(frame)`` loop) is what the figures are read against: when it is in the run,
the table gains columns of each row's CPU per delivered message, p50 and p99 as
ratios to the floor's in the same cell and round.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loadtest.light_client import Client, RawClient, Stats, open_client  # noqa: E402
from loadtest.targets import (  # noqa: E402
    BASE_SRC_ENV,
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
# Another process using more than this much of a CPU during a window flags the cell
BUSY_PCT = 10.0

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
        return sum(self.cpu_split_s())

    def cpu_split_s(self) -> tuple[float, float]:
        """(user, system) CPU seconds of the process tree."""
        user = system = 0.0
        for proc in self._procs():
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            user += times.user
            system += times.system
        return user, system

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
    server_user_pct: float  # of server_cpu_pct, in user mode (the rest is the kernel)
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
    compression: bool = False  # the clients offered permessage-deflate
    round: int = 0  # which repetition of the cell (--repeat)

    @property
    def cpu_us_per_msg(self) -> float:
        """Server CPU per delivered message (µs): CPU seconds in the window / ticks."""
        if not self.ticks:
            return math.nan
        return self.server_cpu_pct / 100.0 * self.duration_s / self.ticks * 1e6

    def other_load_pct(self) -> list[float]:
        """Per CPU: how busy it was minus our own process pinned to it."""
        ours = {SERVER_CPU: self.server_cpu_pct, DRIVER_CPU: self.driver_cpu_pct}
        return [
            max(0.0, busy - ours.get(i, 0.0)) for i, busy in enumerate(self.machine_cpu_busy_pct)
        ]


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
    usage0, split0 = resource.getrusage(resource.RUSAGE_SELF), sampler.cpu_split_s()
    wall0 = time.monotonic()
    t0 = stats.max_t
    stats.measuring = True
    deadline = wall0 + args.duration
    while (now := time.monotonic()) < deadline:
        sampler.sample_rss()
        await asyncio.sleep(min(RSS_SAMPLE_S, deadline - now))
    stats.measuring = False
    wall = time.monotonic() - wall0
    split1, usage1 = sampler.cpu_split_s(), resource.getrusage(resource.RUSAGE_SELF)
    cpu0, cpu1 = sum(split0), sum(split1)
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
        server_user_pct=100.0 * (split1[0] - split0[0]) / wall,
        server_rss_mb=sampler.rss_max / 2**20,
        driver_cpu_pct=100.0 * driver_s / wall,
        msg_bytes=stats.bytes / stats.ticks if stats.ticks else math.nan,
        compressed=stats.compressed,
        stalled=stalled_report,
        server_exit=None,
        reasons=dict(stats.reasons),
        machine_cpu_busy_pct=cpu_busy,
    )


def run_cell(
    target_name: str, clients: int, rate: float, args: argparse.Namespace, *, round_: int = 0
) -> Row:
    """One cell of the matrix: start the target, drive it, stop it."""
    row = _run_cell(target_name, clients, rate, args)
    row.compression = args.compression
    row.round = round_
    return row


def _run_cell(target_name: str, clients: int, rate: float, args: argparse.Namespace) -> Row:
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
        nan, nan, nan, nan, nan, 0, [], None, {}, error=error,
    )  # fmt: skip


# Output

COLUMNS: list[tuple[str, str, Callable[[Row], str]]] = [
    ("target", "<9", lambda r: r.target + ("+z" if r.compression else "")),
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
    ("of it usr", ">9", lambda r: f"{r.server_user_pct:.1f}"),
    ("srv RSS MB", ">10", lambda r: f"{r.server_rss_mb:.1f}"),
    ("drv CPU%", ">8", lambda r: f"{r.driver_cpu_pct:.1f}"),
    ("msg B", ">6", lambda r: f"{r.msg_bytes:.0f}"),
    ("us/msg", ">6", lambda r: f"{r.cpu_us_per_msg:.2f}"),
]

FLOOR = "floor"


def _cell(row: Row) -> tuple[int, float, bool, int]:
    return (row.clients, row.rate, row.compression, row.round)


def _ratio(value: float, floor: float) -> str:
    return f"x{value / floor:.2f}" if floor and not math.isnan(floor) else "-"


def floor_columns(rows: Sequence[Row]) -> list[tuple[str, str, Callable[[Row], str]]]:
    """Ratio columns against the floor row of the same cell and round (if any)."""
    floors = {_cell(r): r for r in rows if r.target == FLOOR and not r.error}
    if not floors:
        return []

    def ratio(metric: Callable[[Row], float]) -> Callable[[Row], str]:
        def get(row: Row) -> str:
            floor = floors.get(_cell(row))
            return "-" if floor is None else _ratio(metric(row), metric(floor))

        return get

    return [
        ("CPU/msg /floor", ">14", ratio(lambda r: r.cpu_us_per_msg)),
        ("p50 /floor", ">10", ratio(lambda r: r.p50_ms)),
        ("p99 /floor", ">10", ratio(lambda r: r.p99_ms)),
    ]


def format_table(rows: Sequence[Row], *, ratios: bool = True) -> str:
    columns = COLUMNS + (floor_columns(rows) if ratios else [])
    header = "  ".join(f"{name:{spec}}" for name, spec, _ in columns)
    lines = [header, "-" * len(header)]
    lines += ["  ".join(f"{get(row):{spec}}" for _, spec, get in columns) for row in rows]
    return "\n".join(lines)


def format_notes(rows: Sequence[Row]) -> list[str]:
    notes = []
    for row in rows:
        where = f"{row.target} {row.clients}x{row.rate:g}/s"
        if row.compression:
            where += " deflate offered"
        if row.round:
            where += f" round {row.round + 1}"
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
            other = row.other_load_pct()
            if max(other) > BUSY_PCT:
                load = ", ".join(f"cpu{i} {pct:.0f}%" for i, pct in enumerate(other))
                notes.append(f"{where}: BUSY: other processes used {load}; repeat this cell")
        if row.driver_cpu_pct > 90:
            notes.append(f"{where}: the load driver was CPU-bound; latencies include its queueing")
        for i, stalled in enumerate(row.stalled):
            notes.append(f"{where}: stalled client {i}: {stalled}")
        if row.server_exit not in (0, None) or (row.server_exit is None and not row.error):
            notes.append(
                f"{where}: server exit code {row.server_exit} after SIGTERM (None = killed)"
            )
    return notes


def format_ratios(rows: Sequence[Row], base: str) -> list[str]:
    """Each target against ``base`` in the same cell and round: CPU per message, p50, p99."""
    ok = [r for r in rows if not r.error]
    bases = {_cell(r): r for r in ok if r.target == base}
    lines = []
    for row in ok:
        other = bases.get(_cell(row))
        if row.target == base or other is None:
            continue
        where = f"{row.target:>13} {row.clients:>6} x {row.rate:g}/s"
        where += " deflate" if row.compression else ""
        where += f" (round {row.round + 1})" if row.round else ""
        lines.append(
            f"{where}: CPU/msg {_ratio(row.cpu_us_per_msg, other.cpu_us_per_msg)}, "
            f"CPU {_ratio(row.server_cpu_pct, other.server_cpu_pct)}, "
            f"p50 {_ratio(row.p50_ms, other.p50_ms)}, p99 {_ratio(row.p99_ms, other.p99_ms)}"
        )
    return lines


def format_ratio_medians(rows: Sequence[Row], base: str) -> list[str]:
    """Over the rounds of each cell: the median of each target's ratios to ``base``."""
    ok = [r for r in rows if not r.error]
    bases = {_cell(r): r for r in ok if r.target == base}
    ratios: dict[tuple[str, int, float, bool], list[tuple[float, float]]] = {}
    for row in ok:
        other = bases.get(_cell(row))
        if row.target == base or other is None or not other.cpu_us_per_msg or not other.p99_ms:
            continue
        key = (row.target, row.clients, row.rate, row.compression)
        pair = (row.cpu_us_per_msg / other.cpu_us_per_msg, row.p99_ms / other.p99_ms)
        ratios.setdefault(key, []).append(pair)
    lines = []
    for (target, clients, rate, compression), pairs in ratios.items():
        if len(pairs) < 2:
            continue
        cpu = ", ".join(f"{c:.2f}" for c, _ in pairs)
        where = f"{target:>13} {clients:>6} x {rate:g}/s" + (" deflate" if compression else "")
        lines.append(
            f"{where}: median of {len(pairs)} rounds: CPU/msg"
            f" x{statistics.median(c for c, _ in pairs):.2f} ({cpu}),"
            f" p99 x{statistics.median(p for _, p in pairs):.2f}"
        )
    return lines


def format_deflate_ratios(rows: Sequence[Row]) -> list[str]:
    """Each target with deflate offered against itself without, same cell and round."""
    plain = {(r.target, r.clients, r.rate, r.round): r for r in rows if not r.compression}
    lines = []
    for row in rows:
        other = plain.get((row.target, row.clients, row.rate, row.round))
        if not row.compression or other is None or row.error or other.error:
            continue
        where = f"{row.target:>13} {row.clients:>6} x {row.rate:g}/s"
        where += f" (round {row.round + 1})" if row.round else ""
        lines.append(
            f"{where}: CPU {_ratio(row.server_cpu_pct, other.server_cpu_pct)}, "
            f"p99 {_ratio(row.p99_ms, other.p99_ms)}"
        )
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
    parser.add_argument(
        "--targets", type=str_list, default=["floor", "tickcast", "peer"], help="comma list"
    )
    parser.add_argument("--clients", type=int_list, default=[100, 1000], help="comma list")
    parser.add_argument(
        "--rates", type=float_list, default=[20.0, 50.0], help="comma list of ticks/s"
    )
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per cell")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds between ramp and window")
    parser.add_argument("--ramp-batch", type=int, default=50, help="clients connected at once")
    parser.add_argument("--stalled", type=int, default=0, help="extra clients that never read")
    parser.add_argument(
        "--compression",
        nargs="?",
        const="on",
        default="off",
        choices=["off", "on", "both"],
        help="clients offer permessage-deflate (both: every cell with and without)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds of each cell (targets alternate in each; even counts cancel a drift)",
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
    parser.add_argument(
        "--baseline",
        metavar="REF",
        default=None,
        help="git ref whose src/ the target 'base' runs (before/after in one run)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the rows to this file")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.ramp_batch < 1 or args.stalled < 0 or args.repeat < 1:
        parser.error(
            "--duration > 0, --ramp-batch >= 1, --stalled >= 0 and --repeat >= 1 are required"
        )
    args.compression_modes = {"off": [False], "on": [True], "both": [False, True]}[args.compression]
    args.compression = args.compression_modes[0]
    if bool({"base", "base-asgi"} & set(args.targets)) != (args.baseline is not None):
        parser.error("--baseline REF and the target 'base' (or 'base-asgi') go together")
    return args


@contextlib.contextmanager
def baseline_tree(ref: str | None) -> Iterator[None]:
    """Extract ``src/`` at git ``ref`` to a temporary directory for the target ``base``."""
    if ref is None:
        yield
        return
    with tempfile.TemporaryDirectory(prefix="tickcast-base-") as tmp:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", ref, "src"], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        os.environ[BASE_SRC_ENV] = str(Path(tmp) / "src")
        try:
            yield
        finally:
            del os.environ[BASE_SRC_ENV]


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
        f"duration={args.duration:g}s client={args.client} "
        f"compression={','.join(str(c) for c in args.compression_modes)} "
        f"repeat={args.repeat} stalled={args.stalled} "
        f"pinning={'server CPU 0, driver CPU 1' if pinned else 'off'}",
        flush=True,
    )
    if args.baseline:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", args.baseline],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        print(f"base = src/ at {args.baseline} ({commit})", flush=True)
    with baseline_tree(args.baseline):
        rows = run_matrix(args)
    print()
    report(rows, args, pinned)
    return 1 if any(r.error for r in rows) else 0


def run_matrix(args: argparse.Namespace) -> list[Row]:
    """Every cell: clients x rates x compression x rounds, the targets in turn in each.

    Odd rounds run the targets in reverse (A B C, C B A, ...): a drift over the run
    then shifts each target's figure one way in a round and the other way in the
    next, instead of always against the target that goes last.
    """
    rows: list[Row] = []
    print(format_table([], ratios=False).splitlines()[0], flush=True)
    for clients in args.clients:
        for rate in args.rates:
            for compression in args.compression_modes:
                args.compression = compression
                for round_ in range(args.repeat):
                    order = args.targets if round_ % 2 == 0 else args.targets[::-1]
                    for target in order:
                        row = run_cell(target, clients, rate, args, round_=round_)
                        rows.append(row)
                        print(format_table([row], ratios=False).splitlines()[-1], flush=True)
    return rows


def report(rows: list[Row], args: argparse.Namespace, pinned: bool) -> None:
    print(format_table(rows))
    for line in format_notes(rows):
        print(f"note: {line}")
    for base in (FLOOR, "base", "base-asgi", "peer"):
        ratios = format_ratios(rows, base)
        if ratios:
            print(f"\ntarget / {base} (same cell, same round):")
            print("\n".join(ratios + format_ratio_medians(rows, base)))
    deflate = format_deflate_ratios(rows)
    if deflate:
        print("\ndeflate offered / not (same target, cell and round):")
        print("\n".join(deflate))
    if args.json:
        meta = {
            "argv": sys.argv[1:],
            "cpus": os.cpu_count(),
            "pinned": pinned,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        payload = {
            "meta": meta,
            "rows": [asdict(r) | {"cpu_us_per_msg": r.cpu_us_per_msg} for r in rows],
        }
        args.json.write_text(json.dumps(payload, indent=2, default=str, allow_nan=True) + "\n")
        print(f"\nrows written to {args.json}")


if __name__ == "__main__":
    sys.exit(main())
