"""Locust scenarios for tickcast (the WebSocket stream of docs/protocol.md, ``/incremental``).

User classes (pick them by name on the command line, e.g.
``locust -f loadtest/locustfile.py TickStreamUser``; default mix 8:1:1):

- ``TickStreamUser``: one WebSocket, read continuously by a greenlet. Every tick
  is a request event ``WS tick`` with ``response_time`` = push latency in ms
  (receive time - ``ts``) and ``response_length`` = message bytes; ticks that
  were history when the stream started (``t <= hello.latest_t``) are ``WS
  replay`` instead. Every missing ``t`` fires one failure ``WS missed``, a ``t``
  seen twice fires ``WS duplicate``. A dropped connection fires ``WS
  disconnect`` and is resumed with ``from_t = last_t + 1``.
- ``HttpPagingUser``: pages ``/incremental?from_t=..&limit=..`` from 0,
  following ``next_t``, and fails a page whose ``data`` is not consecutive, does
  not start where it asked, or disagrees with ``count``/``next_t``.
- ``ResumingUser``: reads a few ticks, disconnects, waits, reconnects with
  ``from_t = last_t + 1``; ``WS resume`` succeeds (response_time = time to the
  first tick) only when the stream continues with no gap and no duplicate.

``--summary-json PATH`` (added to locust's options) writes the exact latency
percentiles of ``WS tick`` and the counts of every failure when locust quits;
``loadtest/run`` reads it. Run locust as one process (no ``--processes``): the
summary is per process.
"""

from __future__ import annotations

import json
import logging
import math
import random
import socket
import struct
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import gevent
import websocket
from locust import FastHttpUser, User, between, constant, events, task
from locust.env import Environment

loads: Callable[[bytes], Any]
try:
    from orjson import loads
except ImportError:  # orjson is a tickcast dependency; fall back to the stdlib
    loads = json.loads

__all__ = ["HttpPagingUser", "ResumingUser", "TickStreamUser"]

log = logging.getLogger("tickcast.loadtest")

WS_PATH = "/ws/stream"
# Timeouts
CONNECT_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 1.0
MIN_READ_TIMEOUT_S = 35.0  # > the default heartbeat (30 s): silence longer than this is a fault

# Exact figures for the summary (this process only).
TICK_LATENCIES_MS: array[float] = array("d")
OUTCOMES: Counter[str] = Counter()  # "WS tick ok", "WS missed failed", ...


class MissedTick(Exception):
    """A ``t`` never arrived (a gap in the stream)."""


class DuplicateTick(Exception):
    """A ``t`` arrived again, or went backwards."""


class StreamError(Exception):
    """The stream broke a docs/protocol.md rule or dropped."""


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    parser.add_argument(
        "--summary-json",
        default="",
        help="write exact tick-latency percentiles and failure counts here on exit",
    )
    parser.add_argument("--page-limit", type=int, default=100, help="HttpPagingUser's limit")


@events.request.add_listener
def _count(request_type: str, name: str, exception: BaseException | None, **_: Any) -> None:
    OUTCOMES[f"{request_type} {name} {'failed' if exception else 'ok'}"] += 1


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (nan when empty)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summary() -> dict[str, Any]:
    latencies = sorted(TICK_LATENCIES_MS)

    def count(name: str, outcome: str) -> int:
        return sum(n for key, n in OUTCOMES.items() if key.endswith(f" {name} {outcome}"))

    return {
        "ticks": len(latencies),
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "p99_ms": percentile(latencies, 99),
        "max_ms": latencies[-1] if latencies else math.nan,
        "missed": count("missed", "failed"),
        "duplicates": count("duplicate", "failed"),
        "replayed": count("replay", "ok"),
        "resumes_ok": count("resume", "ok"),
        "failures": {key: n for key, n in sorted(OUTCOMES.items()) if key.endswith(" failed")},
    }


@events.quitting.add_listener
def _write_summary(environment: Environment, **_: Any) -> None:
    path = getattr(environment.parsed_options, "summary_json", "")
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(summary(), indent=2) + "\n")


def ws_url(host: str, from_t: int | None) -> str:
    """``http://h:p`` -> ``ws://h:p/ws/stream[?from_t=N]``."""
    url = urlsplit(host)
    scheme = "wss" if url.scheme in ("https", "wss") else "ws"
    query = "" if from_t is None else f"from_t={from_t}"
    return urlunsplit((scheme, url.netloc, WS_PATH, query, ""))


class TickChecker:
    """Checks one client's stream across reconnects and reports each tick as an event.

    ``last_t`` survives a reconnect, so a resume with ``from_t = last_t + 1`` is
    checked for gaps and duplicates like the live stream.
    """

    def __init__(self, fire: Callable[..., None]) -> None:
        self._fire = fire
        self.last_t: int | None = None
        self.history_until = -1  # ticks up to hello.latest_t were history, not pushes
        self.heartbeat_s = 30.0
        self.expect_from: int | None = None  # the from_t of the current connection

    def connected(self, from_t: int | None) -> None:
        self.expect_from = from_t

    def feed(self, raw: bytes, now: float) -> list[int]:
        """Handle one message; returns the ``t`` of the ticks it carried."""
        message = loads(raw)
        kind = message.get("type")
        if kind == "tick":
            return [self._tick(message, now, len(raw))]
        if kind == "batch":
            ticks = message["ticks"]
            share = len(raw) // max(1, len(ticks))
            return [self._tick(tick, now, share) for tick in ticks]
        if kind == "hello":
            self._hello(message)
        elif kind == "error":
            self._fire("WS", "server-error", 0, len(raw), StreamError(message.get("code")))
        return []

    def _hello(self, hello: dict[str, Any]) -> None:
        latest = hello.get("latest_t")
        self.history_until = -1 if latest is None else latest
        self.heartbeat_s = float(hello.get("heartbeat_s") or 30.0)
        if hello.get("truncated"):
            self._fire("WS", "truncated", 0, 0, StreamError("history truncated before from_t"))

    def _tick(self, tick: dict[str, Any], now: float, size: int) -> int:
        t = int(tick["t"])
        last = self.last_t
        if last is not None and t <= last:
            self._fire("WS", "duplicate", 0, size, DuplicateTick("t did not increase"))
            return t
        if last is not None:
            for _ in range(last + 1, t):
                self._fire("WS", "missed", 0, 0, MissedTick("gap in t"))
            if t > last + 1:
                log.warning("gap: t %d..%d missing", last + 1, t - 1)
        self.last_t = t
        latency_ms = (now - tick["ts"]) * 1000.0
        if t > self.history_until:
            TICK_LATENCIES_MS.append(latency_ms)
            self._fire("WS", "tick", latency_ms, size, None)
        else:
            self._fire("WS", "replay", latency_ms, size, None)
        return t

    @property
    def read_timeout_s(self) -> float:
        return max(MIN_READ_TIMEOUT_S, 2 * self.heartbeat_s + 5)


OP_TEXT, OP_BINARY, OP_CLOSE = 0x1, 0x2, 0x8


_ANC_SIZE = socket.CMSG_SPACE(struct.calcsize("@ll"))
# Python does not export SO_TIMESTAMP; 29 on Linux (also the SCM_TIMESTAMP cmsg type).
SO_TIMESTAMP = getattr(socket, "SO_TIMESTAMP", 29)


def _enable_timestamps(sock: Any) -> bool:
    """Ask the kernel to stamp each received packet (SO_TIMESTAMP)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMP, 1)
    except (AttributeError, OSError):
        return False
    return hasattr(sock, "recvmsg")


def _kernel_time(ancillary: list[tuple[int, int, bytes]]) -> float:
    """The arrival time of the data just read, from SO_TIMESTAMP (time.time() if absent)."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMP:
            sec, usec = struct.unpack("@ll", data[: struct.calcsize("@ll")])
            return sec + usec / 1e6
    return time.time()


def read_frames(sock: Any) -> Iterator[tuple[int, bytes, float]]:
    """(opcode, payload, receive time) of each frame, read straight off the socket.

    websocket-client does the handshake; its per-message path (pure-Python frame
    parsing, a settimeout per call) costs enough under gevent that, with 100 users
    served one after the other per tick, it was most of the measured p99. Server
    frames are unmasked and, without permessage-deflate (not offered here), whole
    messages, so this reader takes one time stamp per socket read and slices frames
    out of one buffer. The receive time is the kernel's arrival stamp of the packet
    (SO_TIMESTAMP), so the latency measured is the server's push latency, not how
    long this one process took to get round to each of its 100 users.
    """
    buf = bytearray()
    stamped = _enable_timestamps(sock)
    while True:
        if stamped:
            data, ancillary, _flags, _addr = sock.recvmsg(262144, _ANC_SIZE)
            now = _kernel_time(ancillary)
        else:
            data = sock.recv(262144)
            now = time.time()
        if not data:
            raise StreamError("connection closed (EOF)")
        buf += data
        pos = 0
        end = len(buf)
        while end - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            if b1 & 0x80:
                raise StreamError("masked frame from the server")
            n = b1 & 0x7F
            head = 2
            if n == 126:
                if end - pos < 4:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                head = 4
            elif n == 127:
                if end - pos < 10:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                head = 10
            if end - pos < head + n:
                break
            yield b0 & 0x0F, bytes(buf[pos + head : pos + head + n]), now
            pos += head + n
        del buf[:pos]


class _WebSocketUser(User):
    abstract = True

    def fire(
        self,
        request_type: str,
        name: str,
        response_time: float,
        response_length: int,
        exception: BaseException | None,
    ) -> None:
        self.environment.events.request.fire(
            request_type=request_type,
            name=name,
            response_time=response_time,
            response_length=response_length,
            exception=exception,
            context={},
        )

    def open(self, checker: TickChecker, from_t: int | None) -> websocket.WebSocket | None:
        """Connect (``WS connect`` event); None when it failed."""
        started = time.perf_counter()
        try:
            ws = websocket.create_connection(
                ws_url(self.host or "", from_t),
                timeout=CONNECT_TIMEOUT_S,
                skip_utf8_validation=True,
            )
        except Exception as exc:
            self.fire("WS", "connect", (time.perf_counter() - started) * 1000, 0, exc)
            return None
        self.fire("WS", "connect", (time.perf_counter() - started) * 1000, 0, None)
        checker.connected(from_t)
        return ws

    @staticmethod
    def close(ws: websocket.WebSocket | None) -> None:
        if ws is not None:
            try:
                ws.close(timeout=CLOSE_TIMEOUT_S)
            except Exception:
                ws.abort()


class TickStreamUser(_WebSocketUser):
    """Watches the live stream; a greenlet reads every message as soon as it arrives."""

    weight = 8
    wait_time = constant(1)

    def on_start(self) -> None:
        self.checker = TickChecker(self.fire)
        self.ws: websocket.WebSocket | None = None
        self.reader: gevent.Greenlet[Any, Any] | None = None
        self.stopping = False
        self._connect()

    def on_stop(self) -> None:
        self.stopping = True  # the closes below are ours, not disconnects
        if self.reader is not None:
            self.reader.kill(block=True, timeout=CLOSE_TIMEOUT_S)
        self.close(self.ws)
        self.ws = None

    def _connect(self) -> None:
        last = self.checker.last_t
        self.ws = self.open(self.checker, None if last is None else last + 1)
        if self.ws is not None:
            self.reader = gevent.spawn(self._read_forever, self.ws)

    def _read_forever(self, ws: websocket.WebSocket) -> None:
        try:
            ws.sock.settimeout(self.checker.read_timeout_s)
            for opcode, data, now in read_frames(ws.sock):
                if opcode == OP_CLOSE:
                    code = int.from_bytes(data[:2], "big") if len(data) >= 2 else None
                    raise StreamError(f"closed by the server ({code})")
                if opcode in (OP_TEXT, OP_BINARY):
                    self.checker.feed(data, now)
        except gevent.GreenletExit:
            raise
        except Exception as exc:
            if not self.stopping:
                error = StreamError(f"{type(exc).__name__}: {exc}")
                self.fire("WS", "disconnect", 0, 0, error)
        finally:
            self.close(ws)

    @task
    def keep_watching(self) -> None:
        """Resume with from_t = last_t + 1 if the reader lost its connection."""
        if not self.stopping and (self.reader is None or self.reader.dead):
            self._connect()


class ResumingUser(_WebSocketUser):
    """Reads a few ticks, disconnects, and resumes where it stopped."""

    weight = 1
    wait_time = between(0.2, 2.0)  # ticks pile up meanwhile: the resume replays them

    def on_start(self) -> None:
        self.checker = TickChecker(self.fire)

    @task
    def read_disconnect_resume(self) -> None:
        checker = self.checker
        from_t = None if checker.last_t is None else checker.last_t + 1
        started = time.perf_counter()
        ws = self.open(checker, from_t)
        if ws is None:
            return
        wanted = random.randint(5, 30)
        first: int | None = None
        try:
            received = 0
            ws.sock.settimeout(checker.read_timeout_s)
            for opcode, data, now in read_frames(ws.sock):
                if opcode == OP_CLOSE:
                    raise StreamError("closed by the server")
                ts = checker.feed(data, now)
                if ts and first is None:
                    first = ts[0]
                    self._report_resume(from_t, first, started)
                received += len(ts)
                if received >= wanted:
                    break
        except Exception as exc:
            self.fire("WS", "resume", 0, 0, StreamError(f"{type(exc).__name__}: {exc}"))
        finally:
            self.close(ws)

    def _report_resume(self, from_t: int | None, first: int, started: float) -> None:
        if from_t is None:
            return  # the first connection: nothing to resume yet
        elapsed_ms = (time.perf_counter() - started) * 1000
        if first == from_t:
            self.fire("WS", "resume", elapsed_ms, 0, None)
        else:
            error = StreamError(f"asked from_t={from_t}, stream restarted at t={first}")
            self.fire("WS", "resume", elapsed_ms, 0, error)


class HttpPagingUser(FastHttpUser):
    """Pages the history from t=0 following next_t, then keeps polling for new ticks."""

    weight = 1
    wait_time = between(0.5, 1.0)

    def on_start(self) -> None:
        self.next_t = 0
        self.limit = max(1, int(getattr(self.environment.parsed_options, "page_limit", 100)))

    @task
    def page(self) -> None:
        from_t = self.next_t
        url = f"/incremental?from_t={from_t}&limit={self.limit}"
        with self.client.get(url, name="/incremental", catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")
                return
            try:
                body = response.json()
                problem = check_page(body, from_t, self.limit)
            except (ValueError, KeyError, TypeError) as exc:
                problem = f"bad body: {type(exc).__name__}: {exc}"
            if problem:
                response.failure(problem)
                return
            self.next_t = body["next_t"]


def check_page(body: dict[str, Any], from_t: int, limit: int) -> str | None:
    """What is wrong with an ``/incremental`` page asked at ``from_t`` (None if nothing)."""
    data = body["data"]
    start, count = body["from_t"], body["count"]
    if count != len(data) or count > limit:
        return f"count={count} but {len(data)} ticks (limit {limit})"
    if body["next_t"] != start + count:
        return f"next_t={body['next_t']} != from_t {start} + count {count}"
    if start != from_t and count:
        return f"asked from_t={from_t}, page starts at {start}"  # retention would explain it
    for i, tick in enumerate(data):
        if tick.get("t") != start + i:
            return f"data[{i}].t={tick.get('t')} != {start + i}: not consecutive"
    return None
