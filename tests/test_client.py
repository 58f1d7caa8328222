"""tickcast.client and ``tickcast tail`` (docs/client.md), over real sockets.

The decisions (cursor, backoff, URLs) are tested synchronously; the rest against a
real tickcast (in-process, or a ``tickcast serve`` subprocess for restarts), or,
for what tickcast does not send yet (close 4009) and for what a client must send
(the read token), against a scripted server on a real socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import signal
import subprocess
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage

from conftest import PYTHON, Running, free_port, make_config, running, tickcast_process
from tickcast.client import (
    BadMessageError,
    Client,
    EpochChangedError,
    NoProgressError,
    RefusedError,
    StreamClosedError,
    TruncatedError,
)
from tickcast.client.blocking import _Reader
from tickcast.client.cursor import MAX_STALLS, Backoff, Cursor, Next
from tickcast.client.settings import Endpoint
from tickcast.service import Service

WAIT_S = 60  # every wait has a deadline, generous for a busy 2-core machine
FAST = {"backoff_initial_s": 0.05, "backoff_max_s": 0.5}  # reconnect quickly in tests


def consecutive(ts: list[int]) -> bool:
    return ts == list(range(ts[0], ts[0] + len(ts)))


async def wait_until(service: Service, condition: Callable[[], bool]) -> None:
    """Wait, tick by tick, until ``condition()`` holds."""
    with trio.fail_after(WAIT_S):
        while not condition():
            await service.wait_for_t((service.history.latest_t or 0) + 1)


async def take(client: Client, n: int, from_t: int | None = None) -> list[int]:
    """The ``t`` of the first ``n`` ticks of ``client.astream(from_t)``."""
    got: list[int] = []
    with trio.fail_after(WAIT_S):
        async with aclosing(client.astream(from_t)) as ticks:
            async for tick in ticks:
                got.append(tick["t"])
                if len(got) == n:
                    break
    return got


# -- the decisions, without I/O ----------------------------------------------------------


def msg(**fields: Any) -> bytes:
    return orjson.dumps(fields)


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    low = Backoff(0.5, 4.0, random=lambda: 0.0)
    assert [low.delay_s() for _ in range(6)] == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    high = Backoff(0.5, 4.0, random=lambda: 0.999999)
    assert all(d <= 4.0 for d in (high.delay_s() for _ in range(10)))
    low.reset()
    assert low.delay_s() == 0.25


def test_cursor_checks_t_and_unpacks_batches() -> None:
    cursor = Cursor()
    assert cursor.hello(msg(type="hello", epoch="e1", oldest_t=0, latest_t=9)) is not None
    assert [t["t"] for t in cursor.take(msg(type="tick", t=9))] == [9]
    batch = msg(type="batch", ticks=[{"type": "tick", "t": 10}, {"type": "tick", "t": 11}])
    assert [t["t"] for t in cursor.take(batch)] == [10, 11]
    assert cursor.take(msg(type="heartbeat", latest_t=11, ts=1.0)) == []
    assert cursor.next_t == 12
    with pytest.raises(BadMessageError, match="expected t=12, got t=14"):
        cursor.take(msg(type="tick", t=14))
    with pytest.raises(BadMessageError, match="not JSON"):
        cursor.take(b"{")


def test_cursor_gap_policy() -> None:
    with pytest.raises(TruncatedError) as info:
        Cursor(next_t=5).hello(msg(type="hello", epoch="e", oldest_t=40, truncated=True))
    assert (info.value.next_t, info.value.oldest_t) == (5, 40)
    carry = Cursor(next_t=5, on_gap="continue")
    assert carry.hello(msg(type="hello", epoch="e", oldest_t=40, truncated=True))
    assert carry.next_t == 40

    with pytest.raises(EpochChangedError) as changed:
        Cursor(next_t=7, epoch="old").hello(msg(type="hello", epoch="new"))
    assert (changed.value.old, changed.value.new, changed.value.next_t) == ("old", "new", 7)
    carry = Cursor(next_t=7, epoch="old", on_gap="continue")
    assert carry.hello(msg(type="hello", epoch="new")) is None  # reconnect, from t=0
    assert (carry.epoch, carry.next_t) == ("new", 0)


def test_cursor_close_codes() -> None:
    cursor = Cursor()
    assert cursor.closed(4008, "slow consumer; resume with from_t=77") is Next.NOW
    assert cursor.next_t == 77  # adopted: nothing received yet
    assert cursor.closed(4008, "slow consumer; resume with from_t=99") is Next.NOW
    assert cursor.next_t == 77  # our own count wins (they never differ in practice)
    assert cursor.closed(4009, "epoch changed") is Next.NOW
    assert cursor.closed(1001, "server shutting down") is Next.BACK_OFF
    assert cursor.closed(1006, "") is Next.BACK_OFF
    with pytest.raises(StreamClosedError) as info:
        cursor.closed(1011, "history unreadable: corrupt record")
    assert info.value.code == 1011
    assert cursor.refused(429, b'{"error":"too_many_connections","detail":"x"}') is Next.BACK_OFF
    with pytest.raises(RefusedError, match="fields: unknown field") as refused:
        cursor.refused(400, b'{"error":"bad_request","detail":"fields: unknown field"}')
    assert refused.value.status == 400


def test_cursor_ends_a_run_of_answers_that_move_nothing() -> None:
    cursor = Cursor(next_t=5)
    reason = "slow consumer; resume with from_t=5"
    for _ in range(MAX_STALLS - 1):
        assert cursor.closed(4008, reason) is Next.NOW
    with pytest.raises(NoProgressError) as info:
        cursor.closed(4008, reason)
    assert (info.value.next_t, info.value.attempts) == (5, MAX_STALLS)
    assert reason in str(info.value)
    # A tick in between: the count starts again, and the first 4008 after progress
    # is an ordinary slow-consumer close.
    moving = Cursor(next_t=5)
    for t in range(5, 5 + 3 * MAX_STALLS):
        moving.take(msg(type="tick", t=t))
        assert moving.closed(4008, f"slow consumer; resume with from_t={t + 1}") is Next.NOW
        assert moving.stalls == 0
    # Empty history pages count the same way.
    pages = Cursor(next_t=0)
    for _ in range(MAX_STALLS - 1):
        pages.stalled("an empty page")
    pages.advance([{"t": 0}])
    pages.stalled("an empty page")  # counted from zero again
    assert pages.stalls == 1


def test_cursor_starts_by_time_until_the_first_tick() -> None:
    cursor = Cursor(from_ts=1_700_000_000.25)
    assert cursor.query_start() == {"from_ts": "1700000000.25"}
    cursor.take(msg(type="tick", t=41))
    assert cursor.query_start() == {"from_t": "42"}
    assert Cursor().query_start() == {}
    # A seek by time that landed on oldest_t after retention: ticks that may have
    # matched are gone.
    with pytest.raises(TruncatedError, match="before oldest_t=40") as info:
        Cursor(from_ts=5.0).hello(msg(type="hello", epoch="e", oldest_t=40, truncated=True))
    assert info.value.next_t is None and info.value.oldest_t == 40
    assert Cursor(from_ts=5.0, on_gap="continue").hello(
        msg(type="hello", epoch="e", oldest_t=40, truncated=True)
    )


def test_urls_and_options() -> None:
    assert Endpoint.parse("http://127.0.0.1:8000/") == Endpoint("127.0.0.1", 8000, False)
    assert Endpoint.parse("wss://feed.example/tc/ws/stream") == Endpoint(
        "feed.example", 443, True, "/tc"
    )
    edge = Endpoint.parse("https://feed.example:8443/tc")
    assert edge.http_url("/incremental") == "https://feed.example:8443/tc/incremental"
    assert edge.target("/ws/stream", {"from_t": "5", "fields": "s,matches"}) == (
        "/tc/ws/stream?from_t=5&fields=s,matches"
    )
    for bad in ("ftp://x", "http://", "http://x/?from_t=1"):
        with pytest.raises(ValueError, match="url"):
            Client(bad)
    with pytest.raises(ValueError, match="batch"):
        Client("http://x", batch=0)
    with pytest.raises(ValueError, match="on_gap"):
        Client("http://x", on_gap="skip")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="from_t"):
        Client("http://x").stream(from_t=-1)
    with pytest.raises(ValueError, match="not both"):
        Client("http://x").stream(from_t=1, from_ts=1.0)
    for bad_ts in (-1.0, float("nan"), "1"):
        with pytest.raises(ValueError, match="from_ts"):
            Client("http://x").history(from_ts=bad_ts)  # type: ignore[arg-type]


# -- from_ts: starting by time -----------------------------------------------------------


async def test_stream_history_and_tail_start_by_time(server: Running) -> None:
    await server.wait_for_t(40)
    page = (await server.get("/incremental?from_t=0&limit=40")).json()["data"]
    ts = page[20]["ts"]
    assert page[19]["ts"] < ts  # tick 20 is the first with ts >= its own ts
    client = Client(server.url(""), fields=["s"])
    with trio.fail_after(WAIT_S):
        async with aclosing(client.astream(from_ts=ts)) as ticks:
            got = [(await anext(ticks))["t"] for _ in range(30)]
        assert got == list(range(20, 50))
        assert [t["t"] for t in await client.ahistory(from_ts=ts, to_t=25)] == [20, 21, 22, 23, 24]
        blocking = await trio.to_thread.run_sync(partial(client.history, None, 22, from_ts=ts))
        assert [t["t"] for t in blocking] == [20, 21]
        cmd = [PYTHON, "-m", "tickcast.cli", "tail", server.url(""), "--from-ts", repr(ts)]
        line = f"{' '.join(cmd)} | head -n 3"
        done = await trio.run_process(
            ["bash", "-c", line], capture_stdout=True, capture_stderr=True, check=False
        )
    assert [orjson.loads(x)["t"] for x in done.stdout.splitlines()] == [20, 21, 22]


# -- astream under trio and asyncio ------------------------------------------------------


async def test_astream_under_trio(server: Running) -> None:
    client = Client(server.url(""), fields=["s"], batch=7)
    got = await take(client, 40, from_t=0)
    assert got[0] == 0 and consecutive(got)  # replay in batches of 7, then live
    live = await take(client, 3)
    assert live[0] >= got[-1] and consecutive(live)


async def test_astream_under_asyncio(server: Running) -> None:
    client = Client(server.url(""), fields="s,matches")

    async def consume() -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        async with asyncio.timeout(WAIT_S), aclosing(client.astream(from_t=0)) as ticks:
            async for tick in ticks:
                got.append(tick)
                if len(got) == 40:
                    break
        return got

    ticks = await trio.to_thread.run_sync(asyncio.run, consume())
    assert consecutive([t["t"] for t in ticks]) and ticks[0]["t"] == 0
    assert all(list(t) == ["type", "t", "ts", "s", "matches"] for t in ticks)


# -- a slow consumer is evicted (4008) and resumes without a gap --------------------------


async def test_astream_follows_a_4008_without_a_gap(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tickcast.client")
    config = make_config(tmp_path, rate=300.0, agents=300, max_lag=50)
    async with running(config) as srv:
        await srv.wait_for_t(0)
        hub = srv.service.hub
        client = Client(srv.url(""), compression=False, **FAST)
        got: list[int] = []
        target: int | None = None
        with trio.fail_after(WAIT_S):
            async with aclosing(client.astream()) as ticks:
                async for tick in ticks:
                    got.append(tick["t"])
                    if len(got) == 3:
                        # Stop reading: the socket buffers fill, the server falls back
                        # to history for us, then evicts us past max_lag.
                        await wait_until(srv.service, lambda: hub.statistics().slow_closes >= 1)
                        target = (srv.service.history.latest_t or 0) + 30
                    if target is not None and got[-1] >= target:
                        break
    assert consecutive(got)
    closes = [r.getMessage() for r in caplog.records if "closed 4008" in r.getMessage()]
    assert len(closes) == 1, caplog.text
    resumed_at = int(closes[0].rsplit("from_t=", 1)[1])
    assert f"slow consumer; resume with from_t={resumed_at}" in closes[0]
    assert got[0] < resumed_at <= got[-1]


# -- restarts and history resets (tickcast serve subprocesses, same port) -----------------


@dataclass
class Consumer:
    """``client.stream()`` iterated in a thread; what it yields (or raises) goes to a queue."""

    client: Client
    from_t: int | None = None
    items: queue.Queue[int | BaseException] = field(default_factory=queue.Queue)
    stop: threading.Event = field(default_factory=threading.Event)
    got: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            with contextlib.closing(self.client.stream(self.from_t)) as ticks:
                for tick in ticks:
                    self.items.put(tick["t"])
                    if self.stop.is_set():
                        return
        except BaseException as exc:
            self.items.put(exc)

    def until(self, done: Callable[[int], bool]) -> list[int]:
        """Collect ``t`` values until ``done(t)``; raises what the stream raised."""
        while True:
            item = self.items.get(timeout=WAIT_S)
            if isinstance(item, BaseException):
                raise item
            self.got.append(item)
            if done(item):
                return self.got

    def close(self) -> None:
        self.stop.set()
        self.thread.join(WAIT_S)
        assert not self.thread.is_alive()


def health(port: int) -> dict[str, Any]:
    body = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).json()
    assert isinstance(body, dict)
    return body


def test_stream_is_consecutive_across_a_restart_on_the_same_port(tmp_path: Path) -> None:
    port, data = free_port(), tmp_path / "data"
    with tickcast_process(tmp_path, port=port, data_dir=data, name="first") as first:
        consumer = Consumer(Client(f"http://127.0.0.1:{port}", fields=["s"], **FAST))
        consumer.until(lambda t: len(consumer.got) >= 20)
        first.proc.send_signal(signal.SIGTERM)
        assert first.proc.wait(WAIT_S) == 0, first.output()
    with tickcast_process(tmp_path, port=port, data_dir=data, name="second"):
        restarted_at = health(port)["latest_t"]
        got = consumer.until(lambda t: t >= restarted_at + 20)
        consumer.close()
    assert consecutive(got), got
    assert got[0] < restarted_at  # the stream spans both servers


def test_history_reset_raises_or_carries_on(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tickcast_process(tmp_path, port=port, data_dir=tmp_path / "a", name="a") as first:
        old = health(port)["epoch"]
        strict = Consumer(Client(url, fields=["s"], **FAST))
        lenient = Consumer(Client(url, fields=["s"], on_gap="continue", **FAST))
        for consumer in (strict, lenient):
            consumer.until(lambda t: True)
        first.proc.send_signal(signal.SIGTERM)
        assert first.proc.wait(WAIT_S) == 0
    # The same port, a wiped data directory: a new history, numbered from 0 again.
    with tickcast_process(tmp_path, port=port, data_dir=tmp_path / "b", name="b"):
        new = health(port)["epoch"]
        with pytest.raises(EpochChangedError) as info:
            strict.until(lambda t: False)
        assert (info.value.old, info.value.new) == (old, new)
        before = len(lenient.got)
        lenient.until(lambda t: t == 0)  # the new history, from its first tick
        lenient.until(lambda t: t >= 30)
        lenient.close()
    strict.thread.join(WAIT_S)
    reset = lenient.got.index(0, before)
    assert consecutive(lenient.got[:reset])  # the old history, up to the reset
    assert lenient.got[reset:] == list(range(len(lenient.got) - reset))


# -- truncated: retention deleted what a resume asks for ----------------------------------


async def test_truncated_raises_or_carries_on(tmp_path: Path) -> None:
    config = make_config(tmp_path, rate=100.0, segment_bytes=8192, retain_bytes=100_000)
    async with running(config) as srv:
        history = srv.service.history
        await wait_until(srv.service, lambda: (history.oldest_t or 0) > 0)
        oldest = history.oldest_t or 0
        strict = Client(srv.url(""), fields=["s"])
        with pytest.raises(TruncatedError) as info:
            await take(strict, 1, from_t=0)
        assert info.value.next_t == 0 and info.value.oldest_t >= oldest
        with pytest.raises(TruncatedError):
            await strict.ahistory(0, 10)

        lenient = Client(srv.url(""), fields=["s"], on_gap="continue")
        got = await take(lenient, 10, from_t=0)
        assert got[0] >= oldest and consecutive(got)
        page = await lenient.ahistory(0)
        ts = [t["t"] for t in page]
        assert ts[0] >= oldest and consecutive(ts)


# -- history ----------------------------------------------------------------------------


def small_tick(t: int) -> dict[str, Any]:
    """Tick ``t``'s content (``produce`` numbers it: ``t`` must be the next one)."""
    return {"ts": 1.0, "s": {"i": t}, "agents": [], "actions": [], "matches": []}


async def test_history_pages_incremental(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = make_config(tmp_path, source="ingest", ingest_token="x", ring_size=1000)
    async with running(config) as srv:
        for t in range(25_000):
            await srv.producer.produce(small_tick(t))
        await srv.wait_for_t(24_999)  # the writer publishes once written
        client = Client(srv.url(""), fields=["s"])
        caplog.set_level(logging.INFO, logger="httpx")
        with trio.fail_after(WAIT_S):
            ticks = await client.ahistory(from_t=0, to_t=25_000)
        assert [t["t"] for t in ticks] == list(range(25_000))  # to_t is exclusive
        assert ticks[123] == {"type": "tick", "t": 123, "ts": 1.0, "s": {"i": 123}}
        pages = [r.getMessage() for r in caplog.records if "/incremental" in r.getMessage()]
        assert [p.split("limit=")[1].split(" ")[0] for p in pages] == ["10000", "10000", "5000"]

        assert [t["t"] for t in await client.ahistory(24_990)] == list(range(24_990, 25_000))
        assert await client.ahistory(100, 100) == []
        assert len(await client.ahistory(24_000, 99_999)) == 1000  # up to the latest
        # The blocking twin, from a thread (this one runs the server).
        again = await trio.to_thread.run_sync(partial(client.history, 9_990, 10_010))
        assert [t["t"] for t in again] == list(range(9_990, 10_010))


# -- a scripted server: what tickcast does not send yet, and what the client sends ------


@dataclass
class Ws:
    """Accept the upgrade, send ``messages``, then close with ``close``."""

    messages: list[dict[str, Any]]
    close: tuple[int, str] = (1001, "server shutting down")


@dataclass
class Http:
    """Answer with ``status`` and a JSON ``body`` (a refused upgrade, or a page)."""

    status: int
    body: dict[str, Any]


@dataclass
class Scripted:
    port: int
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@asynccontextmanager
async def scripted_server(*scripts: Ws | Http) -> AsyncIterator[Scripted]:
    """Each connection gets the next script; later ones get 503."""
    pending = list(scripts)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    fake = Scripted(listeners[0].socket.getsockname()[1])

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            head = b""
            while b"\r\n\r\n" not in head:
                head += await stream.receive_some(65536)
            lines = head.split(b"\r\n\r\n")[0].decode().split("\r\n")
            pairs = [line.split(": ", 1) for line in lines[1:]]
            headers = {name.lower(): value for name, value in pairs}
            fake.requests.append((lines[0].split(" ")[1], headers))
            script = pending.pop(0) if pending else Http(503, {"detail": "no more scripts"})
            if isinstance(script, Http):
                body = orjson.dumps(script.body)
                await stream.send_all(
                    f"HTTP/1.1 {script.status} X\r\ncontent-type: application/json\r\n"
                    f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
                    + body
                )
                return
            ws = WSConnection(ConnectionType.SERVER)
            ws.receive_data(head)
            assert any(isinstance(e, Request) for e in ws.events())
            out = ws.send(AcceptConnection())
            for message in script.messages:
                out += ws.send(TextMessage(orjson.dumps(message).decode()))
            await stream.send_all(out + ws.send(CloseConnection(*script.close)))
            with trio.move_on_after(5):  # the client's close reply, then EOF
                while await stream.receive_some(65536):
                    pass

    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(trio.serve_listeners, handle, listeners))
        yield fake
        nursery.cancel_scope.cancel()


def hello(epoch: str, latest_t: int) -> dict[str, Any]:
    return {"type": "hello", "epoch": epoch, "oldest_t": 0, "latest_t": latest_t, "heartbeat_s": 30}


def tick(t: int) -> dict[str, Any]:
    return {"type": "tick", "t": t, "ts": 1.0, "s": {}}


async def test_close_4009_is_an_epoch_change() -> None:
    scripts = (
        Ws([hello("A", 9), tick(9), tick(10)], close=(4009, "epoch changed")),
        Ws([hello("B", 3)]),
    )
    async with scripted_server(*scripts) as fake:
        with pytest.raises(EpochChangedError) as info:
            await take(Client(fake.url, **FAST), 10)
    assert (info.value.old, info.value.new, info.value.next_t) == ("A", "B", 11)
    assert fake.requests[1][0] == "/ws/stream?from_t=11&batch=100"  # asked at once


async def test_close_4009_carry_on_restarts_at_the_new_history() -> None:
    scripts = (
        Ws([hello("A", 9), tick(9), tick(10)], close=(4009, "epoch changed")),
        Ws([hello("B", 3)]),  # answers from_t=11: the client must not follow it
        Ws([hello("B", 3), {"type": "batch", "ticks": [tick(0), tick(1)]}, tick(2)]),
    )
    async with scripted_server(*scripts) as fake:
        got = await take(Client(fake.url, on_gap="continue", **FAST), 5)
    assert got == [9, 10, 0, 1, 2]
    assert [target for target, _ in fake.requests] == [
        "/ws/stream?batch=100",
        "/ws/stream?from_t=11&batch=100",
        "/ws/stream?from_t=0&batch=100",
    ]


async def test_token_is_sent_and_refusals_are_raised() -> None:
    page = {"from_t": 0, "count": 1, "latest_t": 0, "next_t": 1, "data": [tick(0)]}
    unauthorized = {"error": "unauthorized", "detail": "missing or wrong read token"}
    scripts = (Ws([hello("A", 0), tick(0)]), Http(200, page), Http(401, unauthorized))
    async with scripted_server(*scripts) as fake:
        client = Client(fake.url, token="s3cret", fields=["s"], **FAST)
        assert await take(client, 1) == [0]
        assert await client.ahistory(0) == [tick(0)]
        with pytest.raises(RefusedError) as info:
            await take(client, 1)
    assert info.value.status == 401 and "read token" in info.value.detail
    assert [h.get("authorization") for _, h in fake.requests] == ["Bearer s3cret"] * 3
    assert fake.requests[1][0] == "/incremental?from_t=0&fields=s&limit=10000"
    assert len(fake.requests) == 3  # a 401 is not retried


# -- tickcast tail ----------------------------------------------------------------------


def _default_sigint() -> None:
    # A shell without job control starts background jobs with SIGINT ignored, and an
    # ignored signal stays ignored across exec: give the child a normal Ctrl-C.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


async def test_blocking_reader_closes_whatever_order_a_read_and_the_close_run_in() -> None:
    # Ctrl-C can land after a read was scheduled in the portal but before it ran: the
    # close then races it (trio runs a batch of tasks in random order), and closing the
    # generator while the read is inside it failed with 'aclose(): asynchronous
    # generator is already running' (seen in a suite run under load). 200 rounds
    # cover both orders.
    for _ in range(200):

        async def batches() -> AsyncIterator[list[int]]:
            while True:
                await trio.sleep_forever()
                yield [1]

        reader = _Reader(batches())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader.next)
            nursery.start_soon(reader.close)


HELD_STREAM = """
import sys, time
from tickcast.client import Client
ticks = Client(sys.argv[1], fields=["s"]).stream(from_t=0)
for tick in ticks:
    print(tick["t"], flush=True)
    time.sleep(600)  # Ctrl-C lands here, the stream still held by `ticks`
"""
PLAIN_STREAM = """
import sys
from tickcast.client import Client
for tick in Client(sys.argv[1], fields=["s"]).stream():
    print(tick["t"], flush=True)
"""


async def interrupted(cmd: list[str], *, lines: int = 1) -> tuple[int, bytes, bytes]:
    """Run ``cmd``, Ctrl-C it once it printed ``lines`` lines; its status, stdout, stderr."""
    proc = await trio.lowlevel.open_process(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_default_sigint
    )
    assert proc.stdout is not None and proc.stderr is not None
    out = err = b""
    try:
        with trio.fail_after(WAIT_S):
            while out.count(b"\n") < lines:
                chunk = await proc.stdout.receive_some(65536)
                assert chunk, "the command ended before printing"
                out += chunk
            proc.send_signal(signal.SIGINT)
            while chunk := await proc.stdout.receive_some(65536):
                out += chunk
            while chunk := await proc.stderr.receive_some(65536):
                err += chunk
            await proc.wait()
    finally:
        with trio.CancelScope(shield=True):
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await proc.stdout.aclose()
            await proc.stderr.aclose()
    return proc.returncode, out, err


@pytest.mark.parametrize("script", [HELD_STREAM, PLAIN_STREAM], ids=["held", "plain"])
async def test_ctrl_c_on_a_blocking_stream_prints_one_traceback(
    server: Running, script: str
) -> None:
    # A held stream hung at exit until a second Ctrl-C (its close waited for the
    # portal's thread during the interpreter's final clean-up), then printed more.
    for _ in range(3):
        code, _, raw = await interrupted([PYTHON, "-c", script, server.url("")])
        err = raw.decode()
        assert code != 0
        assert err.count("Traceback") == 1 and err.count("KeyboardInterrupt") == 1, err
        assert err.rstrip().endswith("KeyboardInterrupt"), err


async def test_tail_prints_json_lines_and_ends_quietly_on_ctrl_c(server: Running) -> None:
    cmd = [PYTHON, "-m", "tickcast.cli", "tail", server.url(""), "--from-t", "0", "--fields", "s"]
    code, out, err = await interrupted(cmd, lines=30)
    assert code == 0, err.decode()
    assert err == b""  # no traceback, nothing to report
    ticks = [orjson.loads(line) for line in out.splitlines()]
    assert [t["t"] for t in ticks] == list(range(len(ticks)))
    assert list(ticks[0]) == ["type", "t", "ts", "s"]


async def test_tail_into_head_ends_quietly(server: Running) -> None:
    line = f"set -o pipefail; {PYTHON} -m tickcast.cli tail {server.url('')} --from-t 0 | head -n 3"
    with trio.fail_after(WAIT_S):
        done = await trio.run_process(
            ["bash", "-c", line], capture_stdout=True, capture_stderr=True, check=False
        )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stderr == b""
    assert [orjson.loads(x)["t"] for x in done.stdout.splitlines()] == [0, 1, 2]


async def test_tail_reports_a_refusal(server: Running) -> None:
    cmd = [PYTHON, "-m", "tickcast.cli", "tail", server.url(""), "--fields", "nope"]
    with trio.fail_after(WAIT_S):
        done = await trio.run_process(cmd, capture_stdout=True, capture_stderr=True, check=False)
    assert done.returncode == 1
    assert b"tickcast: error: refused with HTTP 400: fields: unknown field 'nope'" in done.stderr
