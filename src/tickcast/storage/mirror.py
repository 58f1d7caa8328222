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

What "published" means here: a tick is published the moment the role calls
:meth:`MirrorHistory.publish` (there is no disk behind it to wait for), so
``latest_t`` is simply the last tick taken. ``oldest_t`` reaches past the ring into
the producer's history only while the backfill vouches for the same epoch.

Not thread-safe: every method runs on the trio thread; only :meth:`read` (through
the backfill) and :meth:`wait_published` await.
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
    """Older ticks than the mirror holds, from the producer (``history_url``).

    A seam so that the mirror stays free of HTTP: ``edge.ProducerHistory`` is the one
    implementation, and a test can pass a fake. Every method answers "unavailable"
    rather than raising: the mirror then serves what its ring holds.
    """

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
        """Start empty and not ready: nothing is served until :meth:`reset` names an epoch.

        Args:
            ring_size: ticks kept in memory (the ``ring_size`` setting).
            backfill: where older ticks come from; None serves the ring alone. The edge
                sets it after construction, since the backfill needs the mirror.
        """
        self._ring_size = ring_size
        self.ring = Ring(ring_size)
        self.backfill = backfill
        self._epoch: str | None = None
        self._published_t: int | None = None  # latest_t; None while the ring is empty
        self._next_t = 0  # the t the next published tick carries, once known
        # Set (then dropped) to wake wait_published callers; created only when someone
        # waits, so publishing with no waiter costs nothing.
        self._published: trio.Event | None = None

    # -- what the edge role calls -----------------------------------------------------

    def reset(self, epoch: str) -> None:
        """Serve ``epoch`` from now on, empty (the first tick may have any ``t``).

        Waiters in :meth:`wait_published` are woken and raise ``StoreError`` (their
        ``t`` means nothing in the new epoch). Closing the clients (4009) is the
        role's job, done before this call.
        """
        self._epoch = epoch
        self.ring = Ring(self._ring_size)
        self._published_t = None
        self._next_t = 0
        self._wake()

    def restart_at(self, t: int) -> None:
        """Ticks before ``t`` are lost to this edge: start afresh at ``t``.

        Same epoch, so waiters keep waiting (for a ``t`` at or past the restart they
        will be served; the role has already closed the clients behind it with 4008).
        """
        self.ring = Ring(self._ring_size)
        self._published_t = None
        self._next_t = t
        self._wake()

    def publish(self, tick: EncodedTick) -> None:
        """Take the next tick (consecutive after the last, or any ``t`` when empty).

        Does not wake waiters: the role publishes a batch, then calls :meth:`wake`
        once, so a burst of ticks costs one wake-up.

        Raises:
            ValueError: ``tick.t`` is not the next ``t`` (from the ring); the mirror
                is unchanged.
        """
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
        """Whether an epoch is known (the first ``reset``); before it, nothing is served."""
        return self._epoch is not None

    @property
    def epoch(self) -> str:
        """The producer's epoch this mirror serves; "" until the first :meth:`reset`."""
        return self._epoch or ""

    @property
    def oldest_t(self) -> int | None:
        """The ring's oldest ``t``, or the producer's when the backfill reaches further.

        None while the ring is empty: the producer's range is not offered on its own,
        since nothing would connect it to the live edge of the stream.
        """
        ring_oldest = self.ring.oldest_t
        if ring_oldest is None or self._published_t is None:
            return None
        remote = self.backfill.oldest_t if self.backfill is not None else None
        return ring_oldest if remote is None else min(remote, ring_oldest)

    @property
    def latest_t(self) -> int | None:
        """The last tick taken by :meth:`publish` (None while the ring is empty)."""
        return self._published_t

    @property
    def next_published_t(self) -> int:
        """The next ``t`` expected; 0 after a reset until the first tick shows the start."""
        return self._next_t

    def latest(self) -> EncodedTick | None:
        """The newest tick (always in the ring when there is one)."""
        return self.ring.latest()

    async def read(
        self, from_t: int, limit: int, *, upto: int | None = None, shared: bool = False
    ) -> list[EncodedTick]:
        """:meth:`History.read`: the backfill for ticks older than the ring, then the ring.

        An older part the backfill cannot give ends the answer early (possibly empty),
        never with a hole; the caller asks again or reports ``truncated``. ``shared``
        changes nothing here: an edge's older ticks come from the producer's pages.
        """
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
        """Wait until tick ``t`` has been taken (:meth:`publish`, then :meth:`wake`).

        Cancellation: a plain ``trio.Event`` wait, so cancelling it leaves nothing
        behind.

        Raises:
            StoreError: the epoch changed while waiting (``t`` is void).
        """
        epoch = self._epoch
        while (self._published_t if self._published_t is not None else -1) < t:
            if self._published is None:
                self._published = trio.Event()
            await self._published.wait()
            if epoch is not None and self._epoch != epoch:
                raise StoreError("the history was reset (a new epoch)")

    def health(self) -> tuple[bool, list[str]]:
        """Not ready until the first epoch; the Redis link's own health is the edge's."""
        if self._epoch is None:
            return False, ["waiting for the producer's stream"]
        return True, []

    def statistics(self) -> HistoryStatistics:
        """The ring's counters; an edge keeps no segments, so those are 0."""
        return HistoryStatistics(
            latest_t=self._published_t,
            ring_ticks=len(self.ring),
            ring_bytes=self.ring.nbytes,
            segment_bytes=0,
            segments=0,
        )
