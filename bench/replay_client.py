"""Replay clients for ``bench/replay.py``: one stretch of history each, counted cheaply.

A :class:`ReplayClient` is ``loadtest/light_client.py``'s raw WebSocket client on
``/ws/stream?<query>`` (``from_t``, ``to_t``, ``speed``, ``batch``) with a
:class:`ReplaySubscriber` that never parses a tick: a ``batch`` message is checked by
its first and last ``t`` (read off their heads) and the number of tick heads in it, a
single tick by its head (the regex of ``light_client``), so 100 clients at
``speed=max`` cost the driver far less CPU than they cost the server. Every other
message (hello, end, replay, error, heartbeat) is parsed with ``json``.

Invariants: one asyncio loop, no threads. A stretch is done when its ``end`` message
arrives (the server then closes with 1000, which is not counted as a drop), when its
``until_t`` tick arrives (a catch-up without ``to_t`` never ends by itself; the
driver closes it), or when the connection is lost. ``gaps`` counts every place where
``t`` is not the previous ``t`` + 1, inside a batch or between messages.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import socket
import sys
import time
from array import array
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtest.light_client import (
    CONNECT_TIMEOUT_S,
    TICK_HEAD,
    RawClient,
    Stats,
    Subscriber,
)

__all__ = [
    "ReplayClient",
    "ReplaySubscriber",
    "Stretch",
    "StretchesResult",
    "open_replay",
    "run_stretches",
]

HOST = "127.0.0.1"
BATCH_HEAD = b'{"type":"batch","ticks":['
TICK_PREFIX = b'{"type":"tick","t":'
RAMP_BATCH = 50  # clients connected at once


@dataclass(frozen=True)
class Stretch:
    """One client's range: ``from_t`` .. ``to_t`` (sent) or ``until_t`` (client-side end)."""

    from_t: int
    to_t: int | None = None  # sent: the server ends the stream with {"type":"end"}
    speed: str | None = None  # "max", "10", ...; None: a plain catch-up
    batch: int = 1
    until_t: int | None = None  # not sent: the client stops when this t arrives

    @property
    def last_t(self) -> int:
        last = self.to_t if self.to_t is not None else self.until_t
        assert last is not None, "a stretch needs to_t or until_t"
        return last

    @property
    def ticks(self) -> int:
        return self.last_t - self.from_t + 1

    def query(self) -> str:
        parts = [f"from_t={self.from_t}"]
        if self.to_t is not None:
            parts.append(f"to_t={self.to_t}")
        if self.speed is not None:
            parts.append(f"speed={self.speed}")
        if self.batch != 1:
            parts.append(f"batch={self.batch}")
        return "&".join(parts)


class ReplaySubscriber(Subscriber):
    """Counts one stream's ticks and checks they are consecutive; ``record`` keeps
    ``(t, ts, receive time)`` of every single-tick message (for pacing)."""

    def __init__(self, stats: Stats, stretch: Stretch, *, record: bool = False) -> None:
        super().__init__(stats)
        self.stretch = stretch
        self.record = record
        self.client: RawClient | None = None
        self.first_t: int | None = None
        self.count = 0
        self.gaps = 0
        self.messages = 0
        self.end: dict[str, Any] | None = None
        self.errors: list[dict[str, Any]] = []
        self.done_at: float | None = None  # time.time() of the end (or the last tick)
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.rec_t: array[int] = array("q")
        self.rec_ts: array[float] = array("d")
        self.rec_now: array[float] = array("d")

    def on_message(self, buf: bytes | bytearray, start: int, end: int, now: float) -> None:
        self.messages += 1
        if buf.startswith(BATCH_HEAD, start, end):
            first = TICK_HEAD.match(buf, start + len(BATCH_HEAD), end)
            last = TICK_HEAD.match(buf, buf.rfind(TICK_PREFIX, start, end), end)
            if first is not None and last is not None:
                self._ticks(int(first[1]), int(last[1]), buf.count(TICK_PREFIX, start, end), now)
                return
        head = TICK_HEAD.match(buf, start, end)
        if head is not None:
            t = int(head[1])
            if self.record:
                self.rec_t.append(t)
                self.rec_ts.append(float(head[2]))
                self.rec_now.append(now)
            self._ticks(t, t, 1, now)
            return
        message = json.loads(buf[start:end])
        kind = message.get("type")
        if kind == "hello":
            self.hello = message
            if not self.ready.done():
                self.ready.set_result(None)
        elif kind == "end":
            self.end = message
            if self.client is not None:
                self.client.closing = True  # the server's 1000 that follows is no drop
            self.finish(now)
        elif kind == "error":
            self.errors.append(message)
        elif kind in ("tick", "batch"):  # keys not in the wire order: slow path
            for tick in message["ticks"] if kind == "batch" else [message]:
                self._ticks(tick["t"], tick["t"], 1, now)
        # replay, heartbeat, pong: nothing to count

    def _ticks(self, first: int, last: int, n: int, now: float) -> None:
        if self.last_t is not None and first != self.last_t + 1:
            self.gaps += 1
        if last - first + 1 != n:
            self.gaps += 1
        if self.first_t is None:
            self.first_t = first
        self.last_t = last
        self.count += n
        self.received += n
        until = self.stretch.until_t
        if until is not None and last >= until:
            self.finish(now)

    def finish(self, now: float | None = None) -> None:
        if not self.done.done():
            self.done_at = time.time() if now is None else now
            self.done.set_result(None)


class ReplayClient(RawClient):
    """``RawClient`` whose lost connection also finishes its stretch."""

    sub: ReplaySubscriber

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.sub.finish()


async def open_replay(
    stats: Stats, stretch: Stretch, *, port: int, record: bool = False
) -> ReplayClient:
    """Connect one stretch's stream and wait for its hello.

    Raises:
        HandshakeError: the server refused the upgrade (e.g. 400: it does not know a
            parameter), or ``OSError`` / ``TimeoutError``.
    """
    loop = asyncio.get_running_loop()
    sub = ReplaySubscriber(stats, stretch, record=record)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    client = ReplayClient(
        sub, host=HOST, port=port, path=f"/ws/stream?{stretch.query()}", compression=False
    )
    sub.client = client
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            await loop.sock_connect(sock, (HOST, port))
            await loop.create_connection(lambda: client, sock=sock)
            await sub.ready
    except BaseException:
        if client.transport is not None:
            client.abort()
        else:
            sock.close()
        raise
    return client


@dataclass
class StretchesResult:
    """What a set of stretches delivered, seen from the clients."""

    clients: int
    connected: int
    ticks: int  # received
    expected: int  # sum of the stretches' lengths
    ended: int  # streams that got their {"type":"end"}
    complete: int  # streams that got every tick of their stretch
    gaps: int
    messages: int
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0  # first connect .. last stretch done
    client_cpu_s: float = 0.0  # this process, user + sys
    close_codes: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


async def run_stretches(
    port: int,
    stretches: list[Stretch],
    *,
    timeout_s: float,
    record: bool = False,
) -> tuple[StretchesResult, list[ReplaySubscriber]]:
    """Connect one client per stretch (``RAMP_BATCH`` at a time), wait until each is
    done or ``timeout_s`` has passed, close them; returns the tally and the subscribers.
    """
    stats = Stats()
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    start = time.time()
    clients: list[ReplayClient] = []
    refused: Counter[str] = Counter()  # why connecting failed: count (one example query)
    reason_example: dict[str, str] = {}

    async def connect(stretch: Stretch) -> ReplayClient | None:
        try:
            return await open_replay(stats, stretch, port=port, record=record)
        except Exception as exc:
            reason = f"connect: {type(exc).__name__}: {exc}"
            if reason not in refused:
                reason_example[reason] = stretch.query()
            refused[reason] += 1
            return None

    for first in range(0, len(stretches), RAMP_BATCH):
        opened = await asyncio.gather(*map(connect, stretches[first : first + RAMP_BATCH]))
        clients += [c for c in opened if c is not None]
    try:
        async with asyncio.timeout(timeout_s):
            await asyncio.gather(*(c.sub.done for c in clients))
    except TimeoutError:
        refused[f"not done within {timeout_s:g} s"] += 1
    errors = [
        f"{n} x {reason}"
        + (f" (e.g. ?{reason_example[reason]})" if reason in reason_example else "")
        for reason, n in refused.items()
    ]
    done_at = [c.sub.done_at for c in clients if c.sub.done_at is not None]
    wall = (max(done_at) if done_at else time.time()) - start
    for client in clients:
        if not client.lost:
            client.close()
    await asyncio.sleep(0.2)  # the closing handshakes
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    subs = [c.sub for c in clients]
    codes: dict[str, int] = {}
    for sub in subs:
        key = str(sub.close_code)
        codes[key] = codes.get(key, 0) + 1
        errors += [json.dumps(e) for e in sub.errors]
    errors += [f"{n} x {reason}" for reason, n in stats.reasons.items()]
    result = StretchesResult(
        clients=len(stretches),
        connected=len(clients),
        ticks=sum(s.count for s in subs),
        expected=sum(s.ticks for s in stretches),
        ended=sum(1 for s in subs if s.end is not None),
        complete=sum(
            1
            for s in subs
            if s.first_t == s.stretch.from_t and s.last_t == s.stretch.last_t and not s.gaps
        ),
        gaps=sum(s.gaps for s in subs),
        messages=sum(s.messages for s in subs),
        errors=errors[:20],
        wall_s=wall,
        client_cpu_s=(usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime),
        close_codes=codes,
    )
    return result, subs


def worker_main(spec: str) -> int:
    """``bench/replay.py --worker JOB``: run the stretches of ``JOB`` (JSON), print the
    line ``started`` before the first connect and the result as one JSON line."""
    job = json.loads(spec)
    if job.get("nice"):
        os.nice(job["nice"])
    if job.get("cpu") is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {job["cpu"]})
    stretches = [Stretch(**s) for s in job["stretches"]]
    print("started", flush=True)
    result, _ = asyncio.run(run_stretches(job["port"], stretches, timeout_s=job["timeout_s"]))
    print(json.dumps(result.to_json()), flush=True)
    return 0
