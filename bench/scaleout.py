#!/usr/bin/env python3
"""Scale-out benchmark: producer -> Redis -> edge, next to the single process, in one run.

It starts a real ``redis-server`` (free port, no persistence), a producer
(``tickcast serve --redis-url``, pinned to CPU 0) and edges (``tickcast edge``,
pinned to CPU 0 too, so CPU figures compare one core with one core), then drives
each with the light clients of ``bench/fanout.py`` (pinned to CPU 1):

1. **The Redis hop.** ``--hop-clients`` x ``--hop-rate`` (default 100 x 50/s): the
   push latency of clients of the producer, then of clients of an edge, while
   both run (so the producer carries its appender in both rows).
2. **CPU per delivered message.** ``--cpu-clients`` x ``--cpu-rate`` (default
   1000 x 20/s): the server CPU per delivered message of the edge next to the
   single process (the producer, which also simulates, writes and appends).
3. **One host, two edges on one port** (``--reuse-port``) vs one process:
   ``--host-clients`` (default 2000) x 20/s, unpinned; p99 and missed ticks.

Targets (docs/performance.md): the hop adds <= 5 ms at p99; an edge costs
<= 1.3x the CPU per delivered message of the single process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.fanout import Row, drive, format_table, raise_nofile_limit  # noqa: E402
from loadtest.targets import (  # noqa: E402
    VENV_BIN,
    RunningTarget,
    TargetError,
    free_port,
    pin_current_process,
    start_target,
    stop_target,
)

SERVER_CPU = 0
DRIVER_CPU = 1


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is missing: apt-get install redis-server")
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
            "--logfile",
            str(workdir / "redis.log"),
        ],
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.02)
    proc.kill()
    raise SystemExit("redis-server did not start")


def start_edge(
    name: str, redis_url: str, *, port: int | None, cpu: int | None, max_clients: int, reuse: bool
) -> RunningTarget:
    workdir = Path(tempfile.mkdtemp(prefix=f"tickcast-{name}-"))
    port = port or free_port()
    cmd = [str(VENV_BIN / "tickcast"), "edge", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--redis-url", redis_url, "--max-connections-per-ip", str(max_clients)]
    cmd += ["--reuse-port"] if reuse else []
    log_path = workdir / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=(lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None,
        )
    target = RunningTarget(name, port, proc, workdir, log_path, cmd)
    deadline = time.monotonic() + 30
    while "following epoch" not in log_path.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_target(target)
            raise TargetError(f"{name} did not start:\n{target.log_tail()}")
        time.sleep(0.05)
    return target


def drive_row(
    target: RunningTarget, label: str, clients: int, rate: float, args: argparse.Namespace
) -> Row:
    row = asyncio.run(drive(target, clients, rate, args))
    row.target = label
    return row


def cpu_per_message_us(row: Row) -> float:
    delivered_per_s = row.ticks / row.duration_s if row.duration_s else 0
    return 1e6 * (row.server_cpu_pct / 100.0) / delivered_per_s if delivered_per_s else float("nan")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hop-clients", type=int, default=100)
    parser.add_argument("--hop-rate", type=float, default=50.0)
    parser.add_argument("--cpu-clients", type=int, default=1000)
    parser.add_argument("--cpu-rate", type=float, default=20.0)
    parser.add_argument("--host-clients", type=int, default=2000)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--skip", default="", help="comma list of parts to skip: hop,cpu,host")
    args = parser.parse_args(argv)
    # What bench/fanout.drive reads from its arguments.
    args.client, args.compression, args.ramp_batch, args.stalled, args.settle = (
        "raw", False, 50, 0, 1.0,
    )  # fmt: skip
    skip = set(filter(None, args.skip.split(",")))
    raise_nofile_limit()
    pin_current_process(DRIVER_CPU)
    workdir = Path(tempfile.mkdtemp(prefix="tickcast-scaleout-"))
    redis, redis_url = start_redis(workdir)
    rows: list[Row] = []
    notes: list[str] = []
    try:
        for part, clients, rate in (
            ("hop", args.hop_clients, args.hop_rate),
            ("cpu", args.cpu_clients, args.cpu_rate),
        ):
            if part in skip:
                continue
            extra = ["--redis-url", redis_url, "--no-compression"]
            producer = start_target(
                "tickcast", rate=rate, max_clients=clients + 10, cpu=SERVER_CPU, extra_args=extra
            )
            try:
                edge = start_edge(
                    "edge", redis_url, port=None, cpu=SERVER_CPU, max_clients=clients + 10,
                    reuse=False,
                )  # fmt: skip
                try:
                    direct = drive_row(producer, f"producer/{part}", clients, rate, args)
                    via = drive_row(edge, f"edge/{part}", clients, rate, args)
                    rows += [direct, via]
                    if part == "hop":
                        notes.append(
                            f"Redis hop at {clients} x {rate:g}/s:"
                            f" p50 {via.p50_ms - direct.p50_ms:+.2f} ms,"
                            f" p99 {via.p99_ms - direct.p99_ms:+.2f} ms (target <= +5 ms)"
                        )
                    else:
                        a, b = cpu_per_message_us(direct), cpu_per_message_us(via)
                        notes.append(
                            f"CPU per delivered message at {clients} x {rate:g}/s: single process"
                            f" {a:.1f} us, edge {b:.1f} us: {b / a:.2f}x (target <= 1.3x)"
                        )
                finally:
                    stop_target(edge)
            finally:
                stop_target(producer)
        if "host" not in skip:
            clients = args.host_clients
            extra = ["--redis-url", redis_url, "--no-compression"]
            producer = start_target("tickcast", rate=20, max_clients=clients + 10, extra_args=extra)
            try:
                rows.append(drive_row(producer, "1 process", clients, 20, args))
                port = free_port()
                edges = [
                    start_edge(
                        f"edge{i}", redis_url, port=port, cpu=None, max_clients=clients, reuse=True
                    )
                    for i in range(2)
                ]
                try:
                    rows.append(drive_row(edges[0], "2 edges/1 port", clients, 20, args))
                finally:
                    for e in edges:
                        stop_target(e)
            finally:
                stop_target(producer)
    finally:
        redis.kill()
        redis.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    print(format_table(rows))
    for note in notes:
        print(note)
    print(
        "(2 edges/1 port: the CPU column is edge 0 only; the kernel spreads clients over both."
        " On this 2-core machine the driver shares the cores.)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
