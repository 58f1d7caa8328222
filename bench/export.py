"""Export benchmark: history as data, /export against paging /incremental.

Run: ``.venv/bin/python bench/export.py [--ticks 1000000] [--agents 40]`` from the
project root (needs pandas: the ``dev`` extra). It writes a history of ``--ticks``
simulated ticks straight into a data directory under /tmp (the bodies of
``--distinct`` simulated ticks, renumbered: the simulator's step would dominate),
starts ``tickcast serve --source ingest`` on it (nothing else produces), and prints:

* (a) the time until an analyst holds a pandas DataFrame of the ``agents`` table by
  paging ``Client.history()`` and ``pandas.json_normalize`` (on the first
  ``--paged-ticks`` ticks: its client memory grows with the range, ~10 KB a tick;
  scaled to the whole range, and said so), against (b) ``Client.table(table="agents")
  .to_pandas()`` on the whole range;
* the server's throughput per format (ticks per second of server CPU time, read
  from /proc, so one core's worth) and the bytes per tick on the wire;
* the server's peak RSS growth during each export (VmHWM, reset before each).

Each format first exports ``WARM_UP_TICKS`` ticks unmeasured: a server's first
export also pays for imports and its worker threads' memory.

``--breakdown`` prints instead where a tick's CPU time goes when a table is built,
in this process (no server): cutting each stored line down to its section, Arrow's
JSON reader (with inferred types, and told the export's types), the rest of
``Flattener.flatten``, and each writer on top of it; the best of ``--repeat`` runs
over batches of the size the server reads.

Figures land in docs/export.md ("Performance").
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from tickcast.client import Client  # noqa: E402
from tickcast.sources.simulator import DEFAULT_AGENTS, Market  # noqa: E402
from tickcast.storage import SegmentStore  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
WARM_UP_TICKS = 20_000  # each format exports this many first, unmeasured


def build_history(data: Path, ticks: int, agents: int, distinct: int) -> float:
    """``ticks`` ticks in ``data``; returns the mean tick size in bytes."""
    market = Market(agents=agents, seed=1)
    pool = [orjson.dumps(market.step(t, 0.0)) for t in range(min(distinct, ticks))]
    bodies = [raw[raw.index(b',"s":') :] for raw in pool]
    total = 0
    with SegmentStore.open(data, fsync="never") as store:
        batch: list[tuple[int, bytes]] = []
        for t in range(ticks):
            raw = b'{"type":"tick","t":%d,"ts":%.6f' % (t, 1_700_000_000.0 + t / 10)
            raw += bodies[t % len(bodies)]
            total += len(raw)
            batch.append((t, raw))
            if len(batch) == 2000:
                store.append(batch)
                batch = []
        if batch:
            store.append(batch)
    return total / max(ticks, 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``tickcast serve`` over ``data``, with its CPU time and memory read from /proc."""

    def __init__(self, data: Path, log: Path) -> None:
        self.port = free_port()
        cmd = [
            sys.executable, "-m", "tickcast.cli", "serve", "--port", str(self.port),
            "--data-dir", str(data), "--source", "ingest", "--ingest-token", "bench",
            "--log-level", "warning",
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

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime

    def memory_kb(self, key: str) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        return 0

    def reset_peak(self) -> None:
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def export_once(server: Server, query: str, ticks: int) -> tuple[float, float, int, float, float]:
    """(ticks/s of server CPU, wall s, bytes, RSS growth MB, first byte s) of one export."""
    server.reset_peak()
    rss = server.memory_kb("VmRSS")
    cpu = server.cpu_s()
    start = time.perf_counter()
    first = 0.0
    size = 0
    with httpx.stream("GET", server.url(f"/export?{query}"), timeout=600) as response:
        response.raise_for_status()
        for chunk in response.iter_raw():
            if not size:
                first = time.perf_counter() - start
            size += len(chunk)
    wall = time.perf_counter() - start
    used = server.cpu_s() - cpu
    growth = (server.memory_kb("VmHWM") - rss) / 1024
    return ticks / max(used, 1e-9), wall, size, growth, first


def paged_dataframe(url: str, ticks: int) -> tuple[float, int]:
    import pandas as pd

    start = time.perf_counter()
    history = Client(url).history(0, ticks)
    frame = pd.json_normalize(history, record_path="agents", meta=["t", "ts"])
    return time.perf_counter() - start, len(frame)


def table_dataframe(url: str) -> tuple[float, int]:
    start = time.perf_counter()
    frame = Client(url).table(table="agents").to_pandas()
    return time.perf_counter() - start, len(frame)


def breakdown(agents: int, repeat: int) -> None:
    """Microseconds per tick of each step of building a table, in this process."""
    from tickcast.export.stream import BATCH_BYTES
    from tickcast.tick import EncodedTick

    market = Market(agents=agents, seed=1)
    pool = [orjson.dumps(market.step(t, 1_700_000_000.0 + t / 10)) for t in range(1000)]
    size = sum(map(len, pool)) / len(pool)
    batch = [EncodedTick.from_raw(raw) for raw in pool[: max(1, int(BATCH_BYTES / size))]]
    tables = ("agents", "ticks")
    best: dict[str, dict[str, float]] = {}
    for table in tables:
        steps = table_steps(table, batch)
        times = best[table] = dict.fromkeys(steps, float("inf"))
        for _ in range(repeat):  # interleaved: a busy machine slows every step alike
            for name, step in steps.items():
                start = time.perf_counter()
                step()
                times[name] = min(times[name], time.perf_counter() - start)
    print(f"us of one core a tick, best of {repeat}, {len(batch)} ticks a batch")
    label = f"({size:,.0f} B/tick, {agents} agents)"
    print(f"{label:37}" + "".join(f"{t:>9}" for t in tables))
    for name in best[tables[0]]:
        cells = "".join(f"{best[t][name] / len(batch) * 1e6:9.2f}" for t in tables)
        print(f"  {name:35}{cells}")


def table_steps(table: str, batch: list[Any]) -> dict[str, Callable[[], object]]:
    """The steps :func:`breakdown` times for one table, each a call on ``batch``."""
    import pyarrow as pa
    import pyarrow.json as pa_json

    from tickcast.export.formats import TableEncoder
    from tickcast.export.tables import Flattener, conform, unify

    flattener = Flattener(table)  # type: ignore[arg-type]
    schema = unify([flattener.flatten(batch).schema])
    raws = [tick.raw for tick in batch]
    lines = flattener.cut(raws)
    read = pa_json.ReadOptions(use_threads=False, block_size=len(lines) + 1)
    known = pa_json.read_json(pa.py_buffer(lines), read_options=read).schema
    told = pa_json.ParseOptions(explicit_schema=known)

    def encode(fmt: str) -> None:
        encoder = TableEncoder(table, fmt, schema)  # type: ignore[arg-type]
        encoder.begin()
        encoder.encode(batch)
        encoder.end()

    return {
        "cut": lambda: flattener.cut(raws),
        "read (types inferred)": lambda: pa_json.read_json(pa.py_buffer(lines), read_options=read),
        "read (types told)": lambda: pa_json.read_json(
            pa.py_buffer(lines), read_options=read, parse_options=told
        ),
        "flatten (cut + read + rest)": lambda: flattener.flatten(batch),
        "flatten + conform": lambda: conform(flattener.flatten(batch), schema),
        "arrow encoder": lambda: encode("arrow"),
        "parquet encoder (with its footer)": lambda: encode("parquet"),
        "csv encoder": lambda: encode("csv"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ticks", type=int, default=1_000_000)
    parser.add_argument("--agents", type=int, default=DEFAULT_AGENTS)
    parser.add_argument("--distinct", type=int, default=5_000, help="distinct tick bodies")
    parser.add_argument("--paged-ticks", type=int, default=100_000, help="range of (a)")
    parser.add_argument("--formats", default="ndjson,csv,arrow,parquet")
    parser.add_argument("--no-dataframe", action="store_true", help="server figures only")
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    parser.add_argument("--breakdown", action="store_true", help="per-step costs, no server")
    parser.add_argument("--repeat", type=int, default=30, help="runs of each --breakdown step")
    args = parser.parse_args()
    if args.breakdown:
        breakdown(args.agents, args.repeat)
        return

    root = Path(tempfile.mkdtemp(prefix="tickcast-bench-export-"))
    data = root / "segments"
    try:
        t0 = time.perf_counter()
        size = build_history(data, args.ticks, args.agents, args.distinct)
        print(
            f"history: {args.ticks:,} ticks, {args.agents} agents, {size:,.0f} B/tick, "
            f"built in {time.perf_counter() - t0:.0f} s (python {sys.version.split()[0]}, "
            f"{os.cpu_count()} CPUs)"
        )
        server = Server(data, root / "server.log")
        try:
            run(server, args)
        finally:
            server.stop()
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def run(server: Server, args: argparse.Namespace) -> None:
    n = args.ticks
    print("\nserver, one export at a time (CPU time of the server process: one core)")
    print(f"{'format':8} {'table':8} {'ticks/s':>10} {'wall s':>7} {'B/tick':>8} "
          f"{'1st byte':>9} {'RSS +MB':>8}")  # fmt: skip
    cells = [(fmt, "agents") for fmt in args.formats.split(",")]
    cells += [("parquet", "ticks")] if "parquet" in args.formats else []
    # A server's first exports pay for imports, code paths run once and its worker
    # threads' malloc arenas: a short export of each first, unmeasured, so that the
    # first row is not charged for them.
    warm = min(n, WARM_UP_TICKS)
    for fmt, table in cells:
        export_once(server, f"format={fmt}&table={table}&to_t={warm - 1}", warm)
    for fmt, table in cells:
        rate, wall, nbytes, growth, first = export_once(server, f"format={fmt}&table={table}", n)
        shown = "-" if fmt == "ndjson" else table
        print(
            f"{fmt:8} {shown:8} {rate:>10,.0f} {wall:>7.1f} {nbytes / n:>8,.1f} "
            f"{first * 1e3:>7.0f}ms {growth:>8.1f}"
        )

    if args.no_dataframe:
        return
    print("\nan analyst's pandas DataFrame of the agents table")
    paged = min(n, args.paged_ticks)
    a_s, a_rows = paged_dataframe(server.url(""), paged)
    a_full = a_s * n / paged
    note = "" if paged == n else f" (measured on {paged:,} ticks, scaled x{n / paged:.0f})"
    print(f"(a) Client.history() + json_normalize: {a_full:8.1f} s{note}, {a_rows:,} rows")
    b_s, b_rows = table_dataframe(server.url(""))
    print(f"(b) Client.table(table='agents').to_pandas(): {b_s:8.1f} s, {b_rows:,} rows")
    print(f"(b) is {a_full / b_s:.1f}x faster (target >= 10x)")


if __name__ == "__main__":
    main()
