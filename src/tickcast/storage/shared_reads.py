"""Reads of the segment files shared by the readers of one stretch of history.

Without this, ten researchers replaying the same stretch (a link to the crash at
t=48 210 sent round a team) would each read it from the files and each encode its
ticks' frames. Here reads are made in aligned chunks (``CHUNK`` ticks starting at a
multiple of ``CHUNK``), and the last ``KEEP`` chunks read are kept: a reader of the
same stretch gets the same ``EncodedTick`` objects, so the file is read once and each
frame (``tick.py`` caches them per tick) is built once. Two readers asking for the
same chunk at the same moment share one read (the second waits for the first).

Invariants:

* What :meth:`SharedReads.read` returns is what the wrapped read would return for
  the same ``(from_t, limit)``: consecutive ticks from the first the files still have
  at or after ``from_t``, at most ``limit``, stopping where the files stop.
* Ticks in the files never change once written (append-only), so a kept chunk is
  never stale; a chunk read while the files ended inside it is kept too, and read
  again when a reader needs a tick past its end.
* Only a stream's steps are shared (reads of ``CHUNK`` to ``SHARED_UP_TO`` chunks,
  what a catch-up or a replay asks for): a probe of one tick (the dashboard's
  timeline) or a page of thousands (``/incremental``) is one read of its own, as
  before, and does not push a stream's chunks out.
* Memory is bounded: ``KEEP`` chunks of ``CHUNK`` ticks, plus the chunks in flight.
* A damaged record fails only the reads whose range holds it: a chunk that cannot
  be read whole is read again from the caller's ``from_t``, unshared.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable

import trio

from tickcast.errors import CorruptRecordError
from tickcast.tick import EncodedTick

__all__ = ["CHUNK", "KEEP", "SHARED_UP_TO", "SharedReads"]

CHUNK = 256  # ticks per aligned read (a catch-up step reads this many)
KEEP = 16  # chunks kept after their read: ~16 x 256 x 3 KB = 12 MB of default ticks
SHARED_UP_TO = 4  # reads of CHUNK .. 4 x CHUNK ticks are shared (a stream's steps)

ReadFiles = Callable[[int, int], Awaitable[list[EncodedTick]]]


class SharedReads:
    """The files' read in aligned chunks, the last few kept for the next reader."""

    def __init__(self, read: ReadFiles, *, chunk: int = CHUNK, keep: int = KEEP) -> None:
        """Share ``read(from_t, limit)`` (the segment files' read, in a worker thread)."""
        self._read = read
        self._chunk = chunk
        self._keep = keep
        self._kept: OrderedDict[int, list[EncodedTick]] = OrderedDict()  # start -> ticks
        self._flights: dict[int, trio.Event] = {}  # start -> set when its read ends
        self.reads = 0  # chunks read from the files (for tests and /metrics)
        self.shared = 0  # chunk lookups answered without a read of the files

    async def read(self, from_t: int, limit: int) -> list[EncodedTick]:
        """Up to ``limit`` consecutive ticks from the first the files have at or after
        ``from_t`` (as the wrapped read), shared when ``limit`` is a stream's step.

        Raises:
            CorruptRecordError: a stored record failed its checksum.
        """
        size = self._chunk
        if not size <= limit <= SHARED_UP_TO * size:
            return await self._read(from_t, limit)  # a probe or a page: one read of its own
        out: list[EncodedTick] = []
        while limit > 0:
            start = from_t - from_t % size
            try:
                ticks = await self._chunk_at(start, min(from_t + limit, start + size) - 1)
            except CorruptRecordError:
                # Maybe before from_t: read the caller's range alone (it raises if the
                # damaged record is in it; else it returns the ticks up to the chunk's end).
                return out + await self._read(from_t, limit)
            if not ticks or ticks[-1].t < from_t:
                break
            i = max(0, from_t - ticks[0].t)
            part = ticks[i : i + limit]
            if out and part[0].t != out[-1].t + 1:
                break  # retention cut the range between two chunks
            out += part
            limit -= len(part)
            from_t = part[-1].t + 1
            if ticks[-1].t < start + size - 1:
                break  # the files end inside this chunk
        return out

    async def _chunk_at(self, start: int, need: int) -> list[EncodedTick]:
        """The chunk from ``start``, kept or read, holding ``need`` if the files do (a
        kept chunk that ends before ``need`` was read where the files ended: again)."""
        while True:
            kept = self._kept.get(start)
            if kept is not None and kept[-1].t >= need:
                self._kept.move_to_end(start)
                self.shared += 1
                return kept
            flight = self._flights.get(start)
            if flight is None:
                break
            await flight.wait()  # another reader is reading it: look again after
        flight = self._flights[start] = trio.Event()
        try:
            ticks = await self._read(start, self._chunk)
            self.reads += 1
        finally:
            del self._flights[start]
            flight.set()
        if ticks:
            self._kept[start] = ticks
            self._kept.move_to_end(start)
            while len(self._kept) > self._keep:
                self._kept.popitem(last=False)
        return ticks
