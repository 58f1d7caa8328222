"""History: what sessions and routes need from the ticks behind them (the seam).

Two roles implement it:

* the producer's :class:`~tickcast.storage.local.LocalHistory`: the ring in front of
  the segment files, fed by the source and published by the segment writer;
* a scale-out edge's history, fed from a Redis stream (docs/scale-out.md).

Sessions (``transports``), the hub and the routes (``web``) see only this
interface, so an edge is an addition, not a fork. Invariants every implementation
keeps:

* ``latest_t`` is the newest *published* tick: the hub has already been offered
  it, and :meth:`History.read` returns it. Ticks are published in ``t`` order,
  consecutively, each exactly once.
* ``oldest_t .. latest_t`` is one consecutive readable range (None, None while
  nothing is published).
* :meth:`History.read` never returns a tick past ``latest_t`` and never a gap.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from tickcast.storage.ring import Ring
from tickcast.tick import EncodedTick

__all__ = ["History", "HistoryStatistics", "range_end", "read_through"]


@dataclass(frozen=True, slots=True)
class HistoryStatistics:
    """A snapshot for ``/metrics`` (sizes are 0 where a role keeps no such thing)."""

    latest_t: int | None
    ring_ticks: int
    ring_bytes: int
    segment_bytes: int
    segments: int


class History(Protocol):
    """The published ticks of one epoch, as sessions and routes read them."""

    @property
    def epoch(self) -> str:
        """The id of this history; a new one means every ``t`` before is void."""
        ...

    @property
    def oldest_t(self) -> int | None:
        """The oldest readable ``t`` (None while nothing is published)."""
        ...

    @property
    def latest_t(self) -> int | None:
        """The newest published ``t`` (None while nothing is published)."""
        ...

    @property
    def next_published_t(self) -> int:
        """The ``t`` the next published tick will carry."""
        ...

    def latest(self) -> EncodedTick | None:
        """The newest published tick, if it is in memory."""
        ...

    async def read(
        self, from_t: int, limit: int, *, upto: int | None = None, shared: bool = False
    ) -> list[EncodedTick]:
        """Up to ``limit`` consecutive published ticks from ``max(from_t, oldest_t)``.

        ``upto`` caps the range (default: ``latest_t``). ``shared``: a stream's step
        (a catch-up or a replay), whose reads of older ticks a history may share with
        other streams reading the same stretch; a page or an export reads on its own.

        Raises:
            CorruptRecordError: a stored record failed its checksum.
        """
        ...

    async def find_ts(self, ts: float) -> int:
        """The ``t`` a seek to unix time ``ts`` starts at (docs/protocol.md, "Seeking by time").

        The first published tick whose ``ts >= ts``, found by a binary search (no
        scan); ``next_published_t`` when no published tick qualifies (the stream then
        starts with the next tick, as for a future ``from_t``). Where a tick's ``ts``
        is lower than its predecessor's, the result ``r`` still has ``ts(r) >= ts``
        and ``ts(r - 1) < ts`` (see ``storage/timeindex.py``).

        Raises:
            CorruptRecordError: a stored record failed its checksum.
        """
        ...

    async def wait_published(self, t: int) -> None:
        """Wait until tick ``t`` has been published.

        Raises:
            StoreError: the history failed before publishing ``t``.
        """
        ...

    def health(self) -> tuple[bool, list[str]]:
        """(ok, reasons) for ``/health``."""
        ...

    def statistics(self) -> HistoryStatistics:
        """Counters and sizes for ``/metrics``."""
        ...


async def read_through(
    ring: Ring,
    older: Callable[[int, int], Awaitable[list[EncodedTick]]],
    from_t: int,
    limit: int,
    *,
    oldest_t: int | None,
    latest_t: int | None,
    upto: int | None = None,
) -> list[EncodedTick]:
    """:meth:`History.read` for a history made of a ring and something older.

    Up to ``limit`` consecutive ticks from ``max(from_t, oldest_t)`` to
    ``min(latest_t, upto)``: from ``older`` (segment files, or a producer) until the
    ring begins, then from the ring. ``older(from_t, n)`` returns up to ``n``
    consecutive ticks from ``from_t`` (or from the first it still has). Stops at
    the first break in ``t`` (retention cut the range), returning the consecutive
    part; retries when the ring moved on while ``older`` was read. A list ``older``
    returned is never changed: a read wholly from ``older`` returns that very list
    (which a shared read may be handing to other streams too).
    """
    if latest_t is None or limit < 1:
        return []
    end = latest_t if upto is None else min(latest_t, upto)
    start = from_t if oldest_t is None else max(from_t, oldest_t)
    out: list[EncodedTick] = []
    limit = min(limit, end - start + 1)
    while limit > 0:
        ring_oldest = ring.oldest_t
        if ring_oldest is not None and start >= ring_oldest:
            try:
                return out + ring.range(start, limit, upto=end)
            except KeyError:  # the ring moved on while we read the older part
                continue
        n = limit if ring_oldest is None else min(limit, ring_oldest - start)
        ticks = await older(start, n)
        if not ticks:
            return out
        if out and ticks[0].t != out[-1].t + 1:
            return out
        out = out + ticks if out else ticks
        start = ticks[-1].t + 1
        limit -= len(ticks)
    return out


async def range_end(history: History, to_t: int | None, to_ts: float | None) -> int | None:
    """The last tick of a range that ends at ``to_t`` and/or ``to_ts`` (both inclusive).

    The latest tick, lowered to ``to_t`` and to the last tick whose ``ts <= to_ts``
    (the first with ``ts > to_ts``, less one: one seek, as ``find_ts`` costs). None
    while the history is empty. ``/incremental`` and ``/export`` end their ranges
    through this, so the two read the same range from the same parameters.

    Raises:
        CorruptRecordError: the seek by time probed a corrupt record.
    """
    end = history.latest_t
    if end is None:
        return None
    if to_t is not None:
        end = min(end, to_t)
    if to_ts is not None:
        end = min(end, await history.find_ts(math.nextafter(to_ts, math.inf)) - 1)
    return end
