"""Reads of the segment files shared by the readers of one stretch of history.

Without this, ten researchers replaying the same stretch (a link to the crash at
t=48 210 sent round a team) would each read it from the files and each encode its
ticks' frames. Here reads are made in aligned chunks (``CHUNK`` ticks starting at a
multiple of ``CHUNK``), and the chunks read last are kept (``KEEP_BYTES`` of them): a reader of the
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
* Memory is bounded: ``KEEP_BYTES`` of kept ticks, plus the reads in flight.
* A damaged record fails only the reads whose range holds it: a chunk that cannot
  be read whole is read again from the caller's ``from_t``, unshared.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable

import trio

from tickcast.errors import CorruptRecordError
from tickcast.tick import EncodedTick

__all__ = ["CHUNK", "KEEP_BYTES", "SHARED_UP_TO", "SharedReads"]

CHUNK = 64  # ticks per aligned chunk (a stream reads batch, or 256, ticks per step)
KEEP_BYTES = 8 * 1024 * 1024  # bytes of ticks kept after their read (~50 chunks of 2.5 KB ticks)
SHARED_UP_TO = 16  # reads of CHUNK .. 16 x CHUNK ticks are shared (a stream's steps)

ReadFiles = Callable[[int, int], Awaitable[list[EncodedTick]]]


class SharedReads:
    """The files' read in aligned chunks, the last few kept for the next reader."""

    def __init__(
        self, read: ReadFiles, *, chunk: int = CHUNK, keep_bytes: int = KEEP_BYTES
    ) -> None:
        """Share ``read(from_t, limit)`` (the segment files' read, in a worker thread)."""
        self._read = read
        self._chunk = chunk
        self._keep_bytes = keep_bytes
        self._kept: OrderedDict[int, list[EncodedTick]] = OrderedDict()  # start -> ticks
        self._kept_sizes: dict[int, int] = {}  # start -> bytes of its ticks
        self.kept_bytes = 0
        self._flights: dict[int, trio.Event] = {}  # start -> set when its read ends
        self.reads = 0  # chunks read from the files (for tests and /metrics)
        self.shared = 0  # chunk lookups answered without a read of the files

    async def read(self, from_t: int, limit: int) -> list[EncodedTick]:
        """Up to ``limit`` consecutive ticks from the first the files have at or after
        ``from_t`` (as the wrapped read), shared when ``limit`` is a stream's step.

        The chunks the range touches come from those kept, and the rest from one read
        of the files (from the first chunk missing to the end of the range's last).

        Raises:
            CorruptRecordError: a stored record failed its checksum.
        """
        size = self._chunk
        if not size <= limit <= SHARED_UP_TO * size:
            return await self._read(from_t, limit)  # a probe or a page: one read of its own
        first = from_t - from_t % size
        end = from_t + limit  # (exclusive)
        while True:
            chunks: list[list[EncodedTick]] = []
            start = first
            while start < end:  # the kept chunks that begin the range
                kept = self._kept.get(start)
                if kept is None or kept[-1].t < min(end, start + size) - 1:
                    break
                self._kept.move_to_end(start)
                chunks.append(kept)
                start += size
            if start >= end:
                self.shared += 1
                return _cut(chunks, from_t, limit)
            flight = self._flights.get(start)
            if flight is None:
                break
            await flight.wait()  # another reader is reading from there: look again
        flight = self._flights[start] = trio.Event()
        # To the end of the range's last chunk, and at least ``limit`` ticks: a stream
        # reading on finds its next step kept, instead of reading one chunk at a time.
        stop = max(end, start + limit)
        span = stop - start + (-stop) % size
        try:
            ticks = await self._read(start, span)
            self.reads += 1
        except CorruptRecordError:
            # Maybe before from_t: read the caller's range alone (it raises if the damaged
            # record is in it, else returns the ticks up to the damage).
            return await self._read(from_t, limit)
        finally:
            del self._flights[start]
            flight.set()
        for i in range(0, len(ticks), size):
            chunk = ticks[i : i + size]
            if chunk[0].t % size == 0:  # aligned (retention may have cut the first)
                self._keep(chunk)
            chunks.append(chunk)
        return _cut(chunks, from_t, limit)

    def _keep(self, chunk: list[EncodedTick]) -> None:
        """Keep ``chunk`` (replacing a shorter one), dropping the least recent past the budget."""
        start = chunk[0].t
        self._forget(start)
        nbytes = sum(len(tick.raw) for tick in chunk)
        self._kept[start] = chunk
        self._kept_sizes[start] = nbytes
        self.kept_bytes += nbytes
        while self.kept_bytes > self._keep_bytes and len(self._kept) > 1:
            self._forget(next(iter(self._kept)))

    def _forget(self, start: int) -> None:
        if self._kept.pop(start, None) is not None:
            self.kept_bytes -= self._kept_sizes.pop(start)


def _cut(chunks: list[list[EncodedTick]], from_t: int, limit: int) -> list[EncodedTick]:
    """The consecutive ticks of ``chunks`` from the first at or after ``from_t``, at most
    ``limit``; they stop at a break in ``t`` (retention cut between two chunks)."""
    out: list[EncodedTick] = []
    for chunk in chunks:
        if not chunk or chunk[-1].t < from_t:
            continue
        part = chunk[max(0, from_t - chunk[0].t) :][: limit - len(out)]
        if out and part[0].t != out[-1].t + 1:
            break
        out += part
        if len(out) >= limit:
            break
        from_t = out[-1].t + 1
    return out
