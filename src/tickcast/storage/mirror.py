"""MirrorHistory: a scale-out edge's history, fed tick by tick from outside.

The edge has no segment files. Its role (``edge.py``) hands it the producer's
ticks as it reads them from the Redis stream (:meth:`MirrorHistory.publish`),
in consecutive ``t``; it keeps the newest ``ring_size`` of them in a ring, and,
when the edge knows the producer's base URL, reads older ticks from the
producer's ``/incremental`` (a :class:`Backfill`). It implements
:class:`~tickcast.storage.history.History`, so sessions, the hub and the routes
serve an edge's clients exactly as a producer's.

Invariants: the ring holds one consecutive range of one epoch. A new epoch
(:meth:`reset`) or a hole in the stream that nothing could fill (:meth:`restart_at`)
empties it; the role closes the clients that the change strands (4009 / 4008).
"""

from __future__ import annotations

from typing import Protocol

import trio

from tickcast.errors import StoreError
from tickcast.storage.history import HistoryStatistics, read_through
from tickcast.storage.ring import Ring
from tickcast.storage.timeindex import ring_lower_bound
from tickcast.tick import EncodedTick

__all__ = ["Backfill", "MirrorHistory"]


class Backfill(Protocol):
    """Older ticks than the mirror holds, from the producer (``history_url``)."""

    async def find_ts(self, ts: float) -> int | None:
        """The producer's answer to a seek by time (None: unavailable)."""
        ...

    @property
    def oldest_t(self) -> int | None:
        """The producer's oldest ``t`` for the mirror's epoch (None: unknown)."""
        ...

    async def read(self, from_t: int, limit: int) -> list[EncodedTick]:
        """Up to ``limit`` consecutive ticks from ``from_t``; [] when unavailable."""
        ...


class MirrorHistory:
    """The edge's ring of the producer's newest ticks (see the module docstring)."""

    def __init__(self, ring_size: int, *, backfill: Backfill | None = None) -> None:
        self._ring_size = ring_size
        self.ring = Ring(ring_size)
        self.backfill = backfill
        self._epoch: str | None = None
        self._published_t: int | None = None
        self._next_t = 0  # the t the next published tick carries, once known
        self._published: trio.Event | None = None

    # -- what the edge role calls -----------------------------------------------------

    def reset(self, epoch: str) -> None:
        """Serve ``epoch`` from now on, empty (the first tick may have any ``t``)."""
        self._epoch = epoch
        self.ring = Ring(self._ring_size)
        self._published_t = None
        self._next_t = 0
        self._wake()

    def restart_at(self, t: int) -> None:
        """Ticks before ``t`` are lost to this edge: start afresh at ``t``."""
        self.ring = Ring(self._ring_size)
        self._published_t = None
        self._next_t = t
        self._wake()

    def publish(self, tick: EncodedTick) -> None:
        """Take the next tick (consecutive after the last, or any ``t`` when empty)."""
        self.ring.append(tick)
        self._published_t = tick.t
        self._next_t = tick.t + 1

    def wake(self) -> None:
        """Wake :meth:`wait_published` callers (after a batch was published)."""
        self._wake()

    def _wake(self) -> None:
        if self._published is not None:
            self._published.set()
            self._published = None

    # -- History ------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._epoch is not None

    @property
    def epoch(self) -> str:
        return self._epoch or ""

    @property
    def oldest_t(self) -> int | None:
        ring_oldest = self.ring.oldest_t
        if ring_oldest is None or self._published_t is None:
            return None
        remote = self.backfill.oldest_t if self.backfill is not None else None
        return ring_oldest if remote is None else min(remote, ring_oldest)

    @property
    def latest_t(self) -> int | None:
        return self._published_t

    @property
    def next_published_t(self) -> int:
        return self._next_t

    def latest(self) -> EncodedTick | None:
        return self.ring.latest()

    async def read(self, from_t: int, limit: int, *, upto: int | None = None) -> list[EncodedTick]:
        return await read_through(
            self.ring,
            self._read_older,
            from_t,
            limit,
            oldest_t=self.oldest_t,
            latest_t=self._published_t,
            upto=upto,
        )

    async def _read_older(self, from_t: int, limit: int) -> list[EncodedTick]:
        if self.backfill is None:
            return []
        return await self.backfill.read(from_t, limit)

    async def find_ts(self, ts: float) -> int:
        """A binary search over the ring; older than the ring: the producer's answer
        with ``history_url``, else the ring's oldest tick (the edge has no more)."""
        end, lo = self._published_t, self.ring.oldest_t
        if end is None or lo is None:
            return self._next_t
        found = ring_lower_bound(self.ring, lo, end, ts)
        if found is not None:
            return found
        if self.backfill is not None:
            found = await self.backfill.find_ts(ts)
            if found is not None and found <= lo:
                return found
        return lo

    async def wait_published(self, t: int) -> None:
        epoch = self._epoch
        while (self._published_t if self._published_t is not None else -1) < t:
            if self._published is None:
                self._published = trio.Event()
            await self._published.wait()
            if epoch is not None and self._epoch != epoch:
                raise StoreError("the history was reset (a new epoch)")

    def health(self) -> tuple[bool, list[str]]:
        if self._epoch is None:
            return False, ["waiting for the producer's stream"]
        return True, []

    def statistics(self) -> HistoryStatistics:
        return HistoryStatistics(
            latest_t=self._published_t,
            ring_ticks=len(self.ring),
            ring_bytes=self.ring.nbytes,
            segment_bytes=0,
            segments=0,
        )
