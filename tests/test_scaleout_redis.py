"""Appender and follower against a real redis-server (tests/redis_server.py).

The producer is a small in-memory :class:`MemorySource` (a list of ticks and an
event), the edge a :class:`RecordingSink`; every wait is for a condition, bounded
by ``trio.fail_after``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import coredis
import pytest
import trio

from conftest import free_port
from redis_server import RedisServer
from tickcast.scaleout import Appender, Follower
from tickcast.scaleout.backoff import Throttle
from tickcast.tick import EncodedTick

pytestmark = pytest.mark.slow

WAIT_S = 30  # generous: a busy 2-core machine
KEY = "tc"


def make_tick(t: int, epoch: str) -> EncodedTick:
    """A ~1 KB tick whose bytes depend on ``t`` and the epoch."""
    agents = [{"id": i, "experience": ((t * 31 + i * 17) % 1000) / 1000} for i in range(30)]
    return EncodedTick.from_dict(
        {
            "type": "tick",
            "t": t,
            "ts": 1_700_000_000 + t / 1000,
            "s": {"price_norm": (t % 97) / 97, "epoch": epoch},
            "agents": agents,
        }
    )


class Changes:
    """A condition variable for tests: ``notify()`` on change, ``wait_until(pred)``."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        with trio.fail_after(WAIT_S):
            while not predicate():
                await self._event.wait()


async def polled(predicate: Callable[[], bool]) -> None:
    """Wait for a condition no event signals (a component's statistics())."""
    with trio.fail_after(WAIT_S):
        while not predicate():  # noqa: ASYNC110 - statistics() are snapshots, no event
            await trio.sleep(0.01)


class MemorySource:
    """The producer's side of :class:`~tickcast.scaleout.TickSource`, in memory."""

    def __init__(self, epoch: str = "e1") -> None:
        self.epoch = epoch
        self.ticks: list[EncodedTick] = []
        self.changes = Changes()

    @property
    def oldest_t(self) -> int | None:
        return self.ticks[0].t if self.ticks else None

    @property
    def latest_t(self) -> int | None:
        return self.ticks[-1].t if self.ticks else None

    def publish(self, n: int = 1) -> None:
        for _ in range(n):
            self.ticks.append(make_tick(len(self.ticks), self.epoch))
        self.changes.notify()

    async def read(self, from_t: int, limit: int) -> list[EncodedTick]:
        await trio.lowlevel.checkpoint()
        return self.ticks[max(from_t, 0) : max(from_t, 0) + limit]

    async def wait_for_t(self, t: int) -> None:
        while self.latest_t is None or self.latest_t < t:
            await self.changes._event.wait()


class RecordingSink:
    """An edge that records what the follower hands it; ``hold_at`` pauses it."""

    def __init__(self) -> None:
        self.epochs: list[str] = []
        self.access: list[tuple[str, bool]] = []  # (epoch, protected) at each on_epoch
        self.ticks: list[tuple[str, EncodedTick]] = []  # (epoch, tick)
        self.gaps: list[tuple[int, int]] = []
        self.states: list[bool] = []
        self.changes = Changes()
        self.hold_at: int | None = None  # after delivering this t, wait for release
        self.release = trio.Event()

    async def on_epoch(self, epoch: str, *, protected: bool) -> None:
        if not self.epochs or self.epochs[-1] != epoch:
            self.epochs.append(epoch)
        self.access.append((epoch, protected))
        self.changes.notify()

    async def on_ticks(self, ticks: list[EncodedTick]) -> None:
        assert ticks
        assert [t.t for t in ticks] == list(range(ticks[0].t, ticks[-1].t + 1))
        self.ticks += [(self.epochs[-1], tick) for tick in ticks]
        self.changes.notify()
        if self.hold_at is not None and ticks[-1].t >= self.hold_at:
            self.hold_at = None
            await self.release.wait()

    async def on_gap(self, expected_t: int, got_t: int) -> None:
        self.gaps.append((expected_t, got_t))
        self.changes.notify()

    async def on_state(self, connected: bool) -> None:
        self.states.append(connected)
        self.changes.notify()

    def ts(self, epoch: str = "e1") -> list[int]:
        return [tick.t for e, tick in self.ticks if e == epoch]

    @property
    def last_t(self) -> int | None:
        return self.ticks[-1][1].t if self.ticks else None

    async def wait_for_t(self, t: int, epoch: str = "e1") -> None:
        await self.changes.wait_until(
            lambda: bool(self.ticks) and self.ticks[-1][0] == epoch and self.ticks[-1][1].t >= t
        )


def assert_same_bytes(sink: RecordingSink, source: MemorySource) -> None:
    for epoch, tick in sink.ticks:
        if epoch == source.epoch:
            assert tick.raw == source.ticks[tick.t].raw


@asynccontextmanager
async def edge(
    redis: RedisServer, sink: RecordingSink, *, backlog: int = 10_000
) -> AsyncIterator[Follower]:
    async with trio.open_nursery() as nursery:
        follower = Follower(sink, url=redis.url, key=KEY, backlog=backlog, backoff_max_s=0.2)
        await nursery.start(follower.run)
        yield follower
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def producer(
    redis: RedisServer, source: MemorySource, *, maxlen: int = 10_000, protected: bool = False
) -> AsyncIterator[Appender]:
    async with trio.open_nursery() as nursery:
        appender = Appender(
            source,
            url=redis.url,
            key=KEY,
            maxlen=maxlen,
            protected=protected,
            backoff_max_s=0.2,
        )
        await nursery.start(appender.run)
        yield appender
        nursery.cancel_scope.cancel()


async def publish_every(source: MemorySource, period_s: float, stop: trio.Event) -> None:
    """A live producer: one tick per period until ``stop`` (pacing, not a sync point)."""
    while not stop.is_set():
        source.publish()
        await trio.sleep(period_s)


async def test_round_trip_same_bytes_in_order(redis_server: RedisServer) -> None:
    source, sink = MemorySource(), RecordingSink()
    source.publish(50)  # history from before the appender started
    async with producer(redis_server, source), edge(redis_server, sink):
        await sink.wait_for_t(49)
        for _ in range(50):  # live ticks
            source.publish()
            await trio.lowlevel.checkpoint()
        await sink.wait_for_t(99)
    assert sink.ts() == list(range(100))
    assert_same_bytes(sink, source)
    assert sink.epochs == ["e1"]
    assert sink.states[0] is True
    assert sink.gaps == []


async def test_late_follower_gets_recent_history(redis_server: RedisServer) -> None:
    source, probe, late = MemorySource(), RecordingSink(), RecordingSink()
    source.publish(300)
    async with producer(redis_server, source) as appender, edge(redis_server, probe):
        await probe.wait_for_t(299)
        # The follower may read the batch before the appender has taken Redis's reply.
        await polled(lambda: appender.statistics().appended_t == 299)
        async with edge(redis_server, late, backlog=50):
            await late.wait_for_t(299)
            source.publish(10)
            await late.wait_for_t(309)
    assert late.ts() == list(range(250, 310))
    assert_same_bytes(late, source)
    assert late.gaps == []


@pytest.mark.parametrize("appendonly", [False, True], ids=["no-persistence", "aof"])
async def test_redis_killed_and_restarted_mid_stream(
    make_redis: Callable[..., RedisServer], appendonly: bool
) -> None:
    """Every t exactly once, gap-free: the appender re-appends what Redis lost."""
    redis = make_redis(appendonly=appendonly)
    source, sink = MemorySource(), RecordingSink()
    stop = trio.Event()
    async with producer(redis, source) as appender, edge(redis, sink) as follower:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(publish_every, source, 0.002, stop)
            for cycle in range(2):
                await sink.wait_for_t(100 * (cycle + 1))
                redis.kill()
                await sink.changes.wait_until(lambda: sink.states[-1] is False)
                # ticks go on (and the producer never waits) while Redis is away
                down_at = source.latest_t
                assert down_at is not None
                await source.changes.wait_until(lambda: source.latest_t >= down_at + 50)  # noqa: B023
                await redis.restart()
                await sink.changes.wait_until(lambda: sink.states[-1] is True)
            stop.set()
        await sink.wait_for_t(len(source.ticks) - 1)
        # The edge may have read the last batch before the appender took Redis's reply.
        await polled(lambda: appender.statistics().appended_t == source.latest_t)
        stats = appender.statistics()
        assert stats.connected
        assert stats.errors + stats.resyncs >= 2
        assert follower.statistics().gaps == 0
    assert sink.ts() == list(range(len(source.ticks)))
    assert_same_bytes(sink, source)
    assert sink.gaps == []
    assert sink.epochs == ["e1"]
    assert sink.states == [True, False, True, False, True]
    assert redis.starts == 3


async def test_ticks_lost_with_redis_and_trimmed_are_reported_as_a_gap(
    redis_server: RedisServer,
) -> None:
    source, sink = MemorySource(), RecordingSink()
    source.publish(100)
    async with producer(redis_server, source, maxlen=100), edge(redis_server, sink):
        await sink.wait_for_t(99)
        redis_server.kill()
        await sink.changes.wait_until(lambda: sink.states[-1] is False)
        source.publish(1000)  # 100..1099 while Redis is away; MAXLEN keeps 1000..1099
        await redis_server.restart()
        await sink.wait_for_t(1099)
    assert sink.gaps == [(100, 1000)]
    assert sink.ts() == [*range(100), *range(1000, 1100)]
    assert_same_bytes(sink, source)


async def test_follower_too_slow_for_the_stream_gets_a_gap(redis_server: RedisServer) -> None:
    """Redis up all along: entries trimmed before a slow edge read them are reported."""
    source, slow, probe = MemorySource(), RecordingSink(), RecordingSink()
    slow.hold_at = 9
    source.publish(10)
    async with producer(redis_server, source, maxlen=100), edge(redis_server, slow):
        await slow.wait_for_t(9)  # ... and now it is stuck in on_ticks
        async with edge(redis_server, probe):
            for end in range(59, 1010, 50):  # every tick goes through the stream
                source.publish(50)
                await probe.wait_for_t(end)
        slow.release.set()
        await slow.wait_for_t(1009)
    assert probe.ts() == list(range(1010))
    assert len(slow.gaps) == 1
    expected, got = slow.gaps[0]
    assert expected == 10 and 10 < got <= 1010 - 100  # MAXLEN ~ 100 trimmed the rest
    assert slow.ts() == [*range(10), *range(got, 1010)]
    assert_same_bytes(slow, source)


async def test_epoch_change_reaches_the_follower(redis_server: RedisServer) -> None:
    old, new, sink = MemorySource("e1"), MemorySource("e2"), RecordingSink()
    old.publish(20)
    async with edge(redis_server, sink):
        async with producer(redis_server, old):
            await sink.wait_for_t(19)
        new.publish(5)  # history was reset: t starts again at 0
        async with producer(redis_server, new):
            await sink.wait_for_t(4, "e2")
            new.publish(5)
            await sink.wait_for_t(9, "e2")
    assert sink.epochs == ["e1", "e2"]
    assert sink.ts("e1") == list(range(20))
    assert sink.ts("e2") == list(range(10))
    assert_same_bytes(sink, new)
    assert sink.gaps == []
    async with coredis.Redis.from_url(redis_server.url) as client:
        assert await client.ttl(f"{KEY}:ticks:e1") > 0  # the old epoch's stream expires
        assert await client.ttl(f"{KEY}:ticks:e2") == -1


async def test_producer_restart_continues_gap_free(redis_server: RedisServer) -> None:
    source, sink = MemorySource(), RecordingSink()
    source.publish(30)
    async with edge(redis_server, sink):
        async with producer(redis_server, source):
            await sink.wait_for_t(29)
        source.publish(30)  # published while no appender ran
        async with producer(redis_server, source):
            await sink.wait_for_t(59)
    assert sink.ts() == list(range(60))
    assert sink.epochs == ["e1"]
    assert sink.gaps == []


async def test_both_start_while_redis_is_away(redis_server: RedisServer) -> None:
    """Neither waits for Redis to start; both catch up once it is there."""
    redis_server.kill()
    source, sink = MemorySource(), RecordingSink()
    async with (
        producer(redis_server, source) as appender,
        edge(redis_server, sink) as follower,
    ):
        source.publish(20)
        await polled(lambda: appender.statistics().errors > 0 < follower.statistics().errors)
        assert sink.states == []
        assert not appender.statistics().connected
        await redis_server.restart()
        await sink.wait_for_t(19)
    assert sink.ts() == list(range(20))
    assert sink.states == [True]


async def test_protected_reading_is_announced_to_the_follower(redis_server: RedisServer) -> None:
    source, sink = MemorySource(), RecordingSink()
    source.publish(10)
    async with edge(redis_server, sink):
        async with producer(redis_server, source, protected=True):
            await sink.wait_for_t(9)
        assert sink.access == [("e1", True)]  # told before any tick
        # The same history served open again: the same epoch, re-announced.
        source.publish(10)
        async with producer(redis_server, source):
            await sink.wait_for_t(19)
    assert sink.access == [("e1", True), ("e1", False)]
    assert sink.epochs == ["e1"]
    assert sink.ts() == list(range(20))


async def test_unreachable_redis_is_logged_naming_redis_url(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An error at the first failure, then throttled (here: nothing more for a while)."""
    caplog.set_level(logging.INFO, logger="tickcast.scaleout")
    port = free_port()  # nothing listens there
    sink = RecordingSink()
    async with trio.open_nursery() as nursery:
        url = f"redis://:s3cret@127.0.0.1:{port}/0"
        follower = Follower(
            sink, url=url, key=KEY, backlog=10, backoff_max_s=0.05, report_every_s=3600
        )
        appender = Appender(MemorySource(), url=url, key=KEY, maxlen=10, backoff_max_s=0.05)
        await nursery.start(follower.run)
        await nursery.start(appender.run)
        await polled(lambda: follower.statistics().errors >= 4 <= appender.statistics().errors)
        nursery.cancel_scope.cancel()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2, caplog.text  # one each (the appender's is every 10 s at most)
    for line in errors:
        assert f"redis_url=redis://:***@127.0.0.1:{port}/0" in line
    assert "s3cret" not in caplog.text
    assert sink.states == []


def test_report_throttle() -> None:
    throttle = Throttle(10.0)
    assert [throttle.ready(now) for now in (0.0, 5.0, 9.9, 10.0, 12.0, 20.5)] == [
        True,
        False,
        False,
        True,
        False,
        True,
    ]
    throttle.reset()
    assert throttle.ready(21.0)


def test_coredis_internals_still_have_the_shape_client_py_relies_on() -> None:
    """``tickcast.scaleout.client`` closes coredis' connection buffers itself."""
    from coredis.connection import TCPConnection, TCPLocation

    from tickcast.scaleout import client

    connection = TCPConnection(TCPLocation("127.0.0.1", 1))
    for name in client._BUFFERS:
        assert hasattr(getattr(connection, name), "close"), name
    client._close_buffers(connection)
    pool = client.open_client("redis://127.0.0.1:1/0", stream_timeout_s=1, name="x").connection_pool
    assert issubclass(pool.connection_class, client._TCPConnection)
