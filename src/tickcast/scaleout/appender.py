"""The producer's side of scale-out: append every published tick to Redis.

Invariants:

* Off the hot path. The appender only reads the producer's history
  (:class:`TickSource`); the producer never waits for it, so Redis being down,
  slow or restarting never delays a tick to the producer's own clients or disk.
* Idempotent by ``t``. Every batch goes through one Lua script that first checks
  that the epoch is announced and that the stream's top is the tick the appender
  appended last, and only then ``XADD``s the batch. coredis silently reconnects
  to a restarted Redis, so a Redis that came back empty (no persistence) or
  short (AOF tail lost) is found by that check, never trusted: the appender then
  resynchronises, re-announces the epoch and re-appends from history whatever
  the stream is missing (at most the last ``maxlen`` ticks).
* A fresh coredis client per connection cycle; capped exponential backoff
  between cycles.

Why a Lua script rather than a WATCH/MULTI/EXEC transaction: the check (epoch
announced, stream top as expected) and the appends must be one atomic step whose
outcome depends on what the check found. Redis runs a script without interleaving
any other client's command, in one round trip; an optimistic transaction would
need a round trip to read before it, and a retry loop around it.

What the edges rely on (docs/scale-out.md): entry IDs are ``<t+1>-0`` (``layout.py``),
so the stream is ordered by ``t`` and a follower finds a gap by arithmetic; each
entry carries the tick's exact stored bytes, so an edge serves what the producer
serves, byte for byte.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import coredis
import trio
from coredis.tokens import PureToken

from ..tick import EncodedTick
from .backoff import Backoff, Throttle
from .client import REDIS_ERRORS, open_client, redacted
from .layout import (
    EPOCHS_MAXLEN,
    Announcement,
    StreamFormatError,
    append_start,
    decode_announcement,
    encode_epoch,
    entry_id,
    epochs_key,
    t_of_id,
    ticks_key,
)

__all__ = ["Appender", "AppenderStatistics", "TickSource"]

_Client = coredis.Redis[bytes]

log = logging.getLogger("tickcast.scaleout.appender")

# What ends a connection cycle and is retried after a backoff.
_RETRIED: tuple[type[Exception], ...] = (*REDIS_ERRORS, StreamFormatError)

# Ticks per script call (1-5 KB each: at most a few MB per round trip). Larger batches
# refill a stream faster after a Redis loss; smaller ones keep each script short, since
# Redis serves no other client while a script runs.
BATCH = 500
STREAM_TIMEOUT_S = 10.0  # the longest one reply may take
OLD_EPOCH_TTL_S = 3600  # a superseded epoch's stream expires this long after the new one starts
REPORT_EVERY_S = 10.0  # while Redis stays unreachable, log it at most this often

# KEYS: ticks stream, epochs stream. ARGV: epoch, expected top ID ("" = empty), maxlen,
# then ID, tick pairs. Returns {1, n appended} or {0, what differs}; writes only on 1.
_APPEND = """
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
if last[1] == nil or last[1][2][1] ~= 'epoch' or last[1][2][2] ~= ARGV[1] then
  return {0, 'epoch not announced'}
end
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local top_id = ''
if top[1] then top_id = top[1][1] end
if top_id ~= ARGV[2] then
  return {0, 'stream top is "' .. top_id .. '", expected "' .. ARGV[2] .. '"'}
end
for i = 4, #ARGV, 2 do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], ARGV[i],
             'epoch', ARGV[1], 'tick', ARGV[i + 1])
end
return {1, (#ARGV - 3) / 2}
"""


class TickSource(Protocol):
    """What the appender needs from the producer (``History`` + ``Service.wait_for_t``).

    Attributes:
        epoch: the producer's epoch (constant for the source's lifetime).
        oldest_t: the oldest tick still readable, or None while nothing is published.
        latest_t: the newest published tick, or None while nothing is published.
    """

    @property
    def epoch(self) -> str:
        """The producer's epoch: the stream's key and every entry name it."""
        ...

    @property
    def oldest_t(self) -> int | None:
        """The oldest readable tick (retention moves it): never append older."""
        ...

    @property
    def latest_t(self) -> int | None:
        """The newest published tick: never append past it (it may not be on disk)."""
        ...

    async def read(self, from_t: int, limit: int) -> list[EncodedTick]:
        """Up to ``limit`` consecutive published ticks from ``max(from_t, oldest_t)``.

        Must return at least one tick when ``from_t <= latest_t``, and never wait
        for the producer (ring or segment reads only).
        """
        ...

    async def wait_for_t(self, t: int) -> None:
        """Return once tick ``t`` is published (at once if it already is)."""
        ...


@dataclass(frozen=True, slots=True)
class AppenderStatistics:
    """A snapshot for ``/health`` and ``/metrics``.

    Attributes:
        connected: the last Redis command succeeded (False before the first one).
        appended_t: the newest tick known to be in the stream, None before any.
        appended: ticks this appender wrote (re-appends after a Redis loss included).
        errors: connection cycles that ended on a Redis error.
        resyncs: times the stream was found not to end where expected (Redis
            restarted, lost data, or another writer) and was re-read.
        last_error: the last error's text, None if none.
    """

    connected: bool
    appended_t: int | None
    appended: int
    errors: int
    resyncs: int
    last_error: str | None


class _Resync(Exception):
    """The stream does not end where this appender left it: read it again.

    Not an error to report: a Redis restart without persistence ends this way, and
    the next cycle re-reads the stream's top and refills what is missing.
    """


class Appender:
    """Appends a producer's published ticks to ``<key>:ticks:<epoch>`` (see :mod:`.layout`).

    One per producer, built by ``Producer.open`` when ``redis_url`` is set. It only
    reads published ticks, so what edges receive is exactly what the producer's
    own clients could have been sent, in the same order.

    Args:
        source: the producer's history and publication signal.
        url: the Redis URL (``redis_url``).
        key: the key prefix (``redis_key``).
        maxlen: ticks to keep in the stream (``MAXLEN ~``, ``redis_maxlen``).
        protected: the producer requires a read token (``read_token`` is set): the
            epochs stream says so, and edges without a read token refuse to serve it.
        batch: most ticks per append round trip.
        backoff_max_s: the longest wait between connection attempts.
    """

    def __init__(
        self,
        source: TickSource,
        *,
        url: str,
        key: str,
        maxlen: int,
        protected: bool = False,
        batch: int = BATCH,
        backoff_max_s: float = 2.0,
    ) -> None:
        # Settings were checked at start-up; this guards direct construction (tests).
        if maxlen < 1 or batch < 1:
            raise ValueError(f"maxlen and batch must be >= 1, got {maxlen}, {batch}")
        self._source = source
        self._url = url
        self._key = key
        self._epoch = source.epoch
        self._ticks_key = ticks_key(key, self._epoch)
        self._epochs_key = epochs_key(key)
        self._maxlen = maxlen
        self._announcement = Announcement(self._epoch, protected)
        self._batch = batch
        self._backoff = Backoff(max_s=backoff_max_s)
        # state, read through statistics()
        self._connected = False
        self._appended_t: int | None = None
        self._appended = 0
        self._errors = 0
        self._resyncs = 0
        self._last_error: str | None = None
        self._report = Throttle(REPORT_EVERY_S)

    def statistics(self) -> AppenderStatistics:
        """The appender's state now, for ``/health`` and ``/metrics`` (no I/O)."""
        return AppenderStatistics(
            connected=self._connected,
            appended_t=self._appended_t,
            appended=self._appended,
            errors=self._errors,
            resyncs=self._resyncs,
            last_error=self._last_error,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Append published ticks until cancelled.

        Reports started at once, before connecting: Redis being absent must not
        hold up the producer's start. Redis errors never leave this method; they
        end the connection cycle, are counted in :meth:`statistics`, and a new
        cycle (fresh client) follows after a backoff; so do entries that break
        the layout (a foreign writer), which are logged and counted too.

        Cancellation: stops at any await; a batch cut off mid-call is either
        wholly in the stream or not at all (the script is atomic), and the next
        run finds out which.

        Raises:
            Whatever ``source.read`` raises (e.g. a corrupt stored record): the
            producer decides what that means for its health.
        """
        task_status.started()
        while True:
            try:
                await self._cycle()
            except* _Resync:
                self._resyncs += 1
            except* _RETRIED as group:
                self._errors += 1
                self._last_error = "; ".join(f"{type(e).__name__}: {e}" for e in group.exceptions)
                if self._connected:
                    log.warning("redis appender lost %s: %s", redacted(self._url), self._last_error)
                elif self._report.ready(trio.current_time()):
                    log.error(
                        "redis appender: cannot write to redis_url=%s (%s); retrying "
                        "(logged at most every %.0f s)",
                        redacted(self._url),
                        self._last_error,
                        REPORT_EVERY_S,
                    )
            self._connected = False
            await trio.sleep(self._backoff.next_delay())

    async def _cycle(self) -> None:
        """One connection: announce the epoch, find the stream's top, then append forever.

        Only returns by raising: a Redis error, a layout error or a :class:`_Resync`
        ends the cycle, and the client is closed with it. Counts as connected once
        the top was read, which is when backoff and the error report start afresh.
        """
        async with open_client(
            self._url, stream_timeout_s=STREAM_TIMEOUT_S, name="tickcast-appender"
        ) as client:
            await self._announce(client)
            top = await client.xrevrange(self._ticks_key, count=1)
            top_t = t_of_id(top[0].identifier) if top else None
            self._connected = True
            self._report.reset()
            self._backoff.reset()
            if top_t is not None:
                self._appended_t = top_t
            log.info("redis appender: %s ends at t=%s", self._ticks_key, top_t)
            while True:
                top_t = await self._append_next(client, top_t)

    async def _announce(self, client: _Client) -> None:
        """Make this epoch and read access the last entry of the epochs stream
        (expiring a superseded epoch's stream)."""
        last = await client.xrevrange(self._epochs_key, count=1)
        try:
            announced = decode_announcement(last[0].field_values) if last else None
        except StreamFormatError:
            announced = None  # unreadable: announce over it
        if announced == self._announcement:
            return
        previous = None if announced is None else announced.epoch
        await client.xadd(
            self._epochs_key,
            encode_epoch(self._epoch, protected=self._announcement.protected),
            trim_strategy=PureToken.MAXLEN,
            threshold=EPOCHS_MAXLEN,
            trim_operator=PureToken.APPROXIMATELY,
        )
        log.info(
            "redis appender: announced epoch %s, reading %s (previous: %s)",
            self._epoch,
            "protected" if self._announcement.protected else "open",
            previous,
        )
        if previous is not None and previous != self._epoch:
            await client.expire(ticks_key(self._key, previous), OLD_EPOCH_TTL_S)

    async def _append_next(self, client: _Client, top_t: int | None) -> int | None:
        """Append the next batch after ``top_t`` (waiting for it); returns the new top.

        Where to start is :func:`.layout.append_start`'s answer: right after the
        stream's top, but never before the producer's oldest tick nor more than
        ``maxlen`` ticks behind its newest (those would be trimmed at once). A jump
        over ticks the stream can no longer hold is logged; followers see it as a
        gap (``on_gap``), never as silently missing ticks.

        Backpressure: one round trip per batch, awaited before the next, so a slow
        Redis slows the appender alone; the producer never waits for it.

        Raises:
            _Resync: the script refused (epoch not announced, or the stream's top
                is not ``top_t``); nothing was written.
        """
        source = self._source
        first = append_start(top_t, source.oldest_t, source.latest_t, self._maxlen)
        latest = source.latest_t
        if first is None or latest is None or first > latest:
            await source.wait_for_t(0 if first is None else first)
            return top_t
        ticks = await source.read(first, self._batch)
        if not ticks:
            return top_t
        args: list[str | bytes | int] = [
            self._epoch,
            "" if top_t is None else entry_id(top_t),
            self._maxlen,
        ]
        for tick in ticks:
            args += (entry_id(tick.t), tick.raw)
        reply = await client.eval(_APPEND, keys=[self._ticks_key, self._epochs_key], args=args)
        if not (isinstance(reply, list) and reply and reply[0] == 1):
            detail = reply[1] if isinstance(reply, list) and len(reply) > 1 else reply
            log.warning("redis appender: resynchronising, %r", detail)
            raise _Resync(detail)
        if top_t is not None and ticks[0].t != top_t + 1:
            log.warning(
                "redis appender: ticks %d..%d skipped (older than maxlen or than history)",
                top_t + 1,
                ticks[0].t - 1,
            )
        self._appended += len(ticks)
        self._appended_t = ticks[-1].t
        return ticks[-1].t
