"""The edge's side of scale-out: follow the producer's ticks through Redis.

Invariants:

* The sink sees ticks of one epoch in strictly consecutive ``t``, exact bytes,
  each once. Every entry is checked against the last delivered ``t``
  (:func:`.layout.decide`): Redis hands back the first *kept* entry, without an
  error, when asked to read from a trimmed one, so a hole is only ever found by
  this check, and it is reported (``on_gap``), never skipped silently.
* One ``XREAD BLOCK`` call waits on both the ticks stream of the current epoch
  and the epochs stream, so an epoch change wakes the follower at once.
* A connection cycle (fresh coredis client) re-reads the current epoch, then
  reads on from the last delivered tick, which fills whatever was appended while
  it was away. After a failed cycle: ``on_state(False)``, capped backoff, retry.
  A Redis that cannot be reached is logged as an error naming ``redis_url`` at the
  first failure, then at most once per ``REPORT_EVERY_S`` while it lasts (a
  mistyped URL must not look like a quiet producer).

Why the follower checks what Redis already orders: a stream is trimmed (``MAXLEN``),
may be lost with a Redis restart, and is refilled by the appender from the
producer's history, so "the next entry" is not always "the next tick". Only the
edge's own last ``t`` tells; the rules are plain functions in ``layout.py``
(:func:`.layout.decide`), tested without Redis.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import coredis
import trio
from coredis.response.types import StreamEntry

from ..tick import EncodedTick
from .backoff import Backoff, Throttle
from .client import REDIS_ERRORS, open_client, redacted
from .layout import (
    Step,
    StreamFormatError,
    decide,
    decode_announcement,
    decode_entry,
    entry_id,
    epochs_key,
    initial_cursor,
    t_of_id,
    ticks_key,
)

__all__ = ["Follower", "FollowerStatistics", "TickSink"]

log = logging.getLogger("tickcast.scaleout.follower")

# What ends a connection cycle and is retried after a backoff.
_RETRIED: tuple[type[Exception], ...] = (*REDIS_ERRORS, StreamFormatError)

BATCH = 500  # entries per XREAD reply: one sink call per reply, at most this many ticks
# How long one XREAD waits for news. Short enough that a dead link is noticed within
# BLOCK_S + STREAM_TIMEOUT_MARGIN_S, long enough that an idle feed costs ~nothing.
BLOCK_S = 2.0
STREAM_TIMEOUT_MARGIN_S = 5.0  # a reply later than BLOCK_S + this means the link is dead
REPORT_EVERY_S = 10.0  # while Redis stays unreachable, log it at most this often

_Client = coredis.Redis[bytes]


class TickSink(Protocol):
    """What the follower hands its ticks to (the edge's ring and hub).

    The follower awaits each call in turn, so a slow sink slows the follower (the
    stream keeps the ticks meanwhile; past ``redis_maxlen`` that becomes a gap).
    """

    async def on_epoch(self, epoch: str, *, protected: bool) -> None:
        """The producer's epoch: once when first learnt, then at every change of the
        epoch or of its read access (``protected``: the producer requires a read token).

        After an epoch change, ``t`` starts afresh: the next ``on_ticks`` begins the
        new epoch's history (its last ``backlog`` ticks). Before the first call no
        tick is delivered.
        """
        ...

    async def on_ticks(self, ticks: list[EncodedTick]) -> None:
        """The next ticks (non-empty, consecutive ``t``, the producer's exact bytes)."""
        ...

    async def on_gap(self, expected_t: int, got_t: int) -> None:
        """Ticks ``expected_t .. got_t - 1`` are lost to this edge (trimmed, or lost
        with Redis); the next ``on_ticks`` starts at ``got_t``."""
        ...

    async def on_state(self, connected: bool) -> None:
        """Reading works (True) or does not (False); called on changes only."""
        ...


@dataclass(frozen=True, slots=True)
class FollowerStatistics:
    """A snapshot for ``/health`` and ``/metrics``.

    Attributes:
        connected: the follower is reading the stream.
        epoch: the current epoch, None until learnt.
        delivered_t: the last tick handed to the sink in this epoch, None if none.
        gaps: holes reported through ``on_gap``.
        malformed: entries skipped because they do not follow the layout.
        errors: connection cycles that ended on a Redis error.
        last_error: the last error's text, None if none.
    """

    connected: bool
    epoch: str | None
    delivered_t: int | None
    gaps: int
    malformed: int
    errors: int
    last_error: str | None


class Follower:
    """Reads ``<key>:ticks:<epoch>`` and ``<key>:epochs`` (see :mod:`.layout`) into a sink.

    Args:
        sink: receives epochs, ticks, gaps and connection state.
        url: the Redis URL (``redis_url``).
        key: the key prefix (``redis_key``).
        backlog: on first start (and after an epoch change) deliver at most this
            many of the newest ticks before the live ones, e.g. the edge's ring size.
        block_s: how long one ``XREAD`` blocks; the reply timeout is set above it.
        backoff_max_s: the longest wait between connection attempts.
        report_every_s: while Redis cannot be reached, log that at most this often.
    """

    def __init__(
        self,
        sink: TickSink,
        *,
        url: str,
        key: str,
        backlog: int,
        block_s: float = BLOCK_S,
        backoff_max_s: float = 2.0,
        report_every_s: float = REPORT_EVERY_S,
    ) -> None:
        if backlog < 0:
            raise ValueError(f"backlog must be >= 0, got {backlog}")
        self._sink = sink
        self._url = url
        self._key = key
        self._epochs_key = epochs_key(key)
        self._backlog = backlog
        self._block_ms = max(1, round(block_s * 1000))
        self._stream_timeout_s = block_s + STREAM_TIMEOUT_MARGIN_S
        self._backoff = Backoff(max_s=backoff_max_s)
        # Reading position
        self._epoch: str | None = None
        self._protected = False  # the last announcement's read access
        self._last_t: int | None = None  # last tick delivered in this epoch
        self._cursor: str | None = None  # read ticks after this ID; None: find the backlog
        self._epochs_cursor = "0-0"
        # Counters
        self._connected = False
        self._gaps = 0
        self._malformed = 0
        self._errors = 0
        self._last_error: str | None = None
        self._report = Throttle(report_every_s)
        self._failures = 0  # connection cycles failed in a row

    def statistics(self) -> FollowerStatistics:
        """The follower's state now, for ``/health`` and ``/metrics`` (no I/O)."""
        return FollowerStatistics(
            connected=self._connected,
            epoch=self._epoch,
            delivered_t=self._last_t,
            gaps=self._gaps,
            malformed=self._malformed,
            errors=self._errors,
            last_error=self._last_error,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Follow the stream until cancelled.

        Reports started at once, before connecting: an edge starts (and says
        ``degraded``) while Redis is away. Redis errors never leave this method;
        they end the connection cycle (``on_state(False)``), are counted, and a
        new cycle with a fresh client follows after a backoff. An unreadable tick
        entry is skipped (counted as ``malformed``; the next tick is then a gap);
        an unreadable stream ID ends the cycle like a Redis error.

        Cancellation: stops at any await, including inside a sink call. The
        position is kept (ticks passed to an ``on_ticks`` call count as delivered
        even if the call was cancelled), so running again resumes after them.

        Raises:
            Whatever the sink raises (wrapped in an exception group when it
            leaves the coredis client's nursery).
        """
        task_status.started()
        while True:
            try:
                await self._cycle()
            except* _RETRIED as group:
                self._errors += 1
                self._failures += 1
                self._last_error = "; ".join(f"{type(e).__name__}: {e}" for e in group.exceptions)
                if self._connected:
                    log.warning("redis follower lost %s: %s", redacted(self._url), self._last_error)
                elif self._report.ready(trio.current_time()):
                    log.error(
                        "redis follower: cannot read redis_url=%s (%s); %d attempt(s) failed, "
                        "retrying (logged at most every %.0f s)",
                        redacted(self._url),
                        self._last_error,
                        self._failures,
                        self._report.every_s,
                    )
            await self._set_connected(False)
            await trio.sleep(self._backoff.next_delay())

    async def _set_connected(self, connected: bool) -> None:
        """Tell the sink when the link comes or goes (changes only, never repeats)."""
        if connected != self._connected:
            self._connected = connected
            await self._sink.on_state(connected)

    async def _cycle(self) -> None:
        """One connection: settle the epoch from the epochs stream's last entry, then read.

        The reading position survives the cycle (it is the follower's, not the
        client's), so a reconnect reads on from the last delivered tick. Only
        returns by raising; the client is closed with the cycle.
        """
        async with open_client(
            self._url, stream_timeout_s=self._stream_timeout_s, name="tickcast-follower"
        ) as client:
            last = await client.xrevrange(self._epochs_key, count=1)
            if last:
                self._epochs_cursor = _text(last[0].identifier)
                await self._on_epoch_entry(last[0])
            else:  # Redis came back empty: take whatever the producer announces next
                self._epochs_cursor = "0-0"
            await self._set_connected(True)
            if self._failures:
                log.info(
                    "redis follower: reading redis_url=%s after %d failed attempt(s)",
                    redacted(self._url),
                    self._failures,
                )
            self._failures = 0
            self._report.reset()
            self._backoff.reset()
            while True:
                await self._read(client)

    async def _read(self, client: _Client) -> None:
        """One ``XREAD BLOCK`` round: deliver its ticks, then apply its epoch news."""
        streams = {self._epochs_key: self._epochs_cursor}
        epoch = self._epoch
        key = None if epoch is None else ticks_key(self._key, epoch)
        if key is not None:
            if self._cursor is None:
                # New epoch (or first start): begin `backlog` ticks before the stream's
                # top, so the edge's ring is filled without reading the whole stream.
                top = await client.xrevrange(key, count=1)
                top_t = t_of_id(top[0].identifier) if top else None
                self._cursor = entry_id(initial_cursor(top_t, self._backlog))
            streams[key] = self._cursor
        reply = await client.xread(streams, count=BATCH, block=self._block_ms)
        if not reply:
            return
        if key is not None and epoch is not None:
            await self._on_tick_entries(epoch, reply.get(key.encode(), ()))
        for entry in reply.get(self._epochs_key.encode(), ()):
            self._epochs_cursor = _text(entry.identifier)
            await self._on_epoch_entry(entry)

    async def _on_tick_entries(self, epoch: str, entries: tuple[StreamEntry, ...]) -> None:
        """Hand one reply's tick entries to the sink, in consecutive runs.

        Ticks are gathered into runs and passed with one ``on_ticks`` per run, so a
        reply of 500 ticks costs one sink call. A gap or an epoch change flushes the
        run first, so the sink always sees ticks, gap and epoch in stream order.
        """
        run: list[EncodedTick] = []
        for raw_entry in entries:
            self._cursor = _text(raw_entry.identifier)
            try:
                entry = decode_entry(raw_entry.identifier, raw_entry.field_values)
            except StreamFormatError as exc:
                self._malformed += 1
                log.error("redis follower: skipping an entry of %s: %s", epoch, exc)
                continue
            step = decide(epoch, self._last_t, entry)
            if step is Step.STALE:
                continue
            if step is Step.EPOCH:  # a tick of another epoch in this epoch's key
                await self._flush(run)
                await self._switch(entry.epoch, self._protected)  # the epochs entry follows
                return
            if step is Step.GAP:
                assert self._last_t is not None
                await self._flush(run)
                run = []
                self._gaps += 1
                log.warning(
                    "redis follower: ticks %d..%d are gone from the stream",
                    self._last_t + 1,
                    entry.t - 1,
                )
                await self._sink.on_gap(self._last_t + 1, entry.t)
            run.append(entry.tick)
            self._last_t = entry.t  # counts as delivered before on_ticks returns
        await self._flush(run)

    async def _flush(self, run: list[EncodedTick]) -> None:
        # The sink's contract: on_ticks is never called with an empty list.
        if run:
            await self._sink.on_ticks(run)

    async def _on_epoch_entry(self, entry: StreamEntry) -> None:
        """Apply one announcement: a new epoch, or a change of read access only.

        A change of read access alone is passed on too: the edge must stop if the
        producer starts requiring a token that the edge does not have.
        """
        try:
            announced = decode_announcement(entry.field_values)
        except StreamFormatError as exc:
            self._malformed += 1
            log.error("redis follower: skipping an epochs entry: %s", exc)
            return
        if announced.epoch != self._epoch:
            await self._switch(announced.epoch, announced.protected)
        elif announced.protected != self._protected:
            self._protected = announced.protected
            await self._sink.on_epoch(announced.epoch, protected=announced.protected)

    async def _switch(self, epoch: str, protected: bool) -> None:
        """Follow ``epoch`` from its backlog: forget the position, tell the sink."""
        if self._epoch is not None:
            log.warning("redis follower: epoch changed from %s to %s", self._epoch, epoch)
        self._epoch = epoch
        self._protected = protected
        self._last_t = None
        self._cursor = None
        await self._sink.on_epoch(epoch, protected=protected)


def _text(value: bytes | str) -> str:
    # coredis returns bytes with decode_responses off (the ticks must stay bytes); IDs
    # are ASCII and are kept as str for use as cursors.
    return value.decode() if isinstance(value, bytes) else value
