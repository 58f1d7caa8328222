"""Storage benchmark: append throughput, read and seek latency by depth, open() time.

Run: ``.venv/bin/python bench/storage.py [--quick]`` (from the project root). Prints a
table; the figures in docs/performance.md ("Storage") come from it. Works in a
temp directory under /tmp and removes it afterwards. Page cache is warm in
every measurement (we do not drop caches): the figures show the store's own
cost, not the disk's, except for ``fsync=always``, which is the disk's.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from tickcast.storage import SegmentStore
from tickcast.storage.ring import Ring
from tickcast.storage.segment import index_name
from tickcast.storage.timeindex import TimeIndex, lower_bound
from tickcast.tick import EncodedTick

Row = tuple[str, str, str]


def tick_maker(size: int) -> Callable[[int], bytes]:
    """Return ``make(t)``: a synthetic tick of about ``size`` bytes of JSON (the wire shape)."""

    def body(agents: int) -> bytes:
        return orjson.dumps(
            {
                "s": {"price_norm": 0.49875, "volatility": 0.003, "liquidity": 1.0},
                "agents": [{"id": i, "experience": 0.123456} for i in range(agents)],
                "actions": [{"id": i, "side": "buy", "price": 50000.0} for i in range(agents)],
                "matches": [{"a": 0, "b": -1, "prob": 0.0}],
            }
        )[1:]

    agents = 0
    while len(body(agents + 1)) + 50 <= size:
        agents += 1
    tail = body(agents)

    def make(t: int) -> bytes:
        return b'{"type":"tick","t":%d,"ts":%.6f,' % (t, 1732450000.0 + t / 10) + tail

    return make


def bench_append(root: Path, policy: str, count: int, make: Callable[[int], bytes]) -> Row:
    directory = root / f"append-{policy}"
    store = SegmentStore.open(directory, fsync=policy)  # type: ignore[arg-type]
    records = [(t, make(t)) for t in range(count)]  # built outside the timed loop
    start = time.perf_counter()
    for record in records:
        store.append([record])
    elapsed = time.perf_counter() - start
    store.close()
    mb_s = sum(len(r) + 1 for _, r in records) / elapsed / 2**20
    target = ">= 50,000" if policy == "interval" else ""
    value = f"{count / elapsed:,.0f} ticks/s ({mb_s:.0f} MB/s)"
    shutil.rmtree(directory)
    return (f"append, batch of 1, fsync={policy} ({count:,} ticks)", value, target)


def build(directory: Path, count: int, make: Callable[[int], bytes]) -> float:
    """Fill a store with ``count`` ticks in batches of 1000; returns ticks/s."""
    start = time.perf_counter()
    with SegmentStore.open(directory, fsync="never") as store:
        for first in range(0, count, 1000):
            store.append([(t, make(t)) for t in range(first, min(first + 1000, count))])
    return count / (time.perf_counter() - start)


def read_latency(
    store: SegmentStore, ranges: list[tuple[int, int]], reads: int
) -> list[tuple[float, float]]:
    """Median and p99 (µs) of ``read(from_t, 100)``, ``from_t`` uniform in each range.

    The ranges take turns, so drift (CPU frequency, other load) hits them equally.
    """
    rng = random.Random(1)
    samples: list[list[float]] = [[] for _ in ranges]
    for _ in range(reads):
        for (lo, hi), out in zip(ranges, samples, strict=True):
            from_t = rng.randrange(lo, hi)
            start = time.perf_counter()
            got = store.read(from_t, 100)
            out.append(time.perf_counter() - start)
            assert len(got) == 100
    result = []
    for out in samples:
        out.sort()
        result.append((statistics.median(out) * 1e6, out[int(len(out) * 0.99)] * 1e6))
    return result


def ts_of(t: int) -> float:
    """The ``ts`` that ``tick_maker`` gives tick ``t``."""
    return float("%.6f" % (1732450000.0 + t / 10))


def seek_latency(
    store: SegmentStore, ranges: list[tuple[int, int]], seeks: int
) -> list[tuple[float, float]]:
    """Median and p99 (µs) of a time seek (``TimeIndex.find``) to a tick's ``ts`` in each
    range, checked against the tick's ``t``; the ranges take turns, like ``read_latency``."""
    index = TimeIndex(store)
    rng = random.Random(2)
    samples: list[list[float]] = [[] for _ in ranges]
    for _ in range(seeks):
        for (lo, hi), out in zip(ranges, samples, strict=True):
            t = rng.randrange(lo, hi)
            start = time.perf_counter()
            found = index.find(ts_of(t))
            out.append(time.perf_counter() - start)
            assert found == t, (found, t)
    result = []
    for out in samples:
        out.sort()
        result.append((statistics.median(out) * 1e6, out[int(len(out) * 0.99)] * 1e6))
    return result


def ring_seek_latency(size: int, seeks: int, make: Callable[[int], bytes]) -> float:
    """Median µs of the in-memory part of a seek: a bisection over a full ring."""
    ring = Ring(size)
    for t in range(size):
        ring.append(EncodedTick.from_stored(make(t), t))
    rng = random.Random(3)
    samples = []
    for _ in range(seeks):
        t = rng.randrange(size)
        start = time.perf_counter()
        found = lower_bound(0, size, ts_of(t), lambda u: ring.get(u).ts)  # type: ignore[union-attr]
        samples.append(time.perf_counter() - start)
        assert found == t
    return statistics.median(samples) * 1e6


def time_open(directory: Path, *, crash: bool, drop_last_idx: bool = False, runs: int = 5) -> float:
    """Median seconds of ``SegmentStore.open`` (with or without the CLEAN marker)."""
    samples = []
    for _ in range(runs):
        if crash:
            (directory / "CLEAN").unlink(missing_ok=True)
        if drop_last_idx:
            last = max(int(p.stem) for p in directory.glob("*.jsonl"))
            (directory / index_name(last)).unlink()
        start = time.perf_counter()
        store = SegmentStore.open(directory)
        samples.append(time.perf_counter() - start)
        store.close()
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    args = parser.parse_args()
    q = args.quick
    logging.getLogger("tickcast.storage").setLevel(logging.ERROR)  # recovery notes: expected here
    big_tick, small_tick = tick_maker(2500), tick_maker(200)
    n_append = 20_000 if q else 200_000
    n_always = 300 if q else 3_000
    n_deep = 100_000 if q else 1_000_000
    reads = 300 if q else 2_000
    rows: list[Row] = []
    root = Path(tempfile.mkdtemp(prefix="tickcast-bench-", dir="/tmp"))
    try:
        print(f"tick sizes: {len(big_tick(123456))} B (append), {len(small_tick(123456))} B (1M)")
        for policy, n in (("always", n_always), ("interval", n_append), ("never", n_append)):
            rows.append(bench_append(root, policy, n, big_tick))
            print(*rows[-1][:2], sep=": ", flush=True)

        small, deep = root / "small", root / "deep"
        build(small, 1_000, small_tick)
        rate = build(deep, n_deep, small_tick)
        segs = len(list(deep.glob("*.jsonl")))
        rows.append(
            (
                f"build {n_deep:,} x {len(small_tick(n_deep))} B ticks, batches of 1000",
                f"{rate:,.0f} ticks/s",
                "",
            )
        )

        with SegmentStore.open(deep) as store:
            latest = store.latest_t
            assert latest is not None
            store.read(0, 1)  # first touch of an old segment checks its index once
            recent, old = read_latency(
                store, [(latest - 10_000, latest - 100), (0, n_deep // 10)], reads
            )
        for name, (med, p99) in (("recent (last 10k)", recent), ("deep (first 10%)", old)):
            rows.append(
                (f"read(from_t, 100), {name}", f"median {med:.0f} us, p99 {p99:.0f} us", "")
            )
        rows.append(("deep / recent median ratio", f"{old[0] / recent[0]:.2f}", "<= 1.5"))

        with SegmentStore.open(deep) as store:
            latest = store.latest_t
            assert latest is not None
            recent, old = seek_latency(store, [(latest - 10_000, latest), (0, n_deep // 10)], reads)
        for name, (med, p99) in (("recent (last 10k)", recent), ("deep (first 10%)", old)):
            rows.append(
                (f"seek by ts in the files, {name}", f"median {med:.0f} us, p99 {p99:.0f} us", "")
            )
        rows.append(("deep / recent seek median ratio", f"{old[0] / recent[0]:.2f}", "<= 1.5"))
        ring_us = ring_seek_latency(10_000, reads, small_tick)
        rows.append(("seek by ts in a 10k ring (memory)", f"median {ring_us:.1f} us", ""))

        for label, directory in (("1,000", small), (f"{n_deep:,}", deep)):
            for crash in (False, True):
                secs = time_open(directory, crash=crash)
                how = "crash (no CLEAN)" if crash else "clean"
                target = "<= 1 s" if directory is deep else ""
                rows.append((f"open(), {label} ticks, {how}", f"{secs * 1e3:.1f} ms", target))
        secs = time_open(deep, crash=True, drop_last_idx=True, runs=3)
        rows.append(
            (f"open(), {n_deep:,} ticks, crash + last .idx deleted", f"{secs * 1e3:.0f} ms", "")
        )
        rows.append((f"  ({segs} segments of <= 64 MiB in that store)", "", ""))
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print()
    print(
        f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"
    )
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    print(f"| {'measurement':<{width}} | {'result':<{vwidth}} | target |")
    print(f"|{'-' * (width + 2)}|{'-' * (vwidth + 2)}|--------|")
    for name, value, target in rows:
        print(f"| {name:<{width}} | {value:<{vwidth}} | {target} |")


if __name__ == "__main__":
    main()
