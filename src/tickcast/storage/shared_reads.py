"""Reads of the segment files shared by the streams that read the same stretch at once.

Ten researchers replaying the same stretch (a link to the crash at t=48 210 sent
round a team) take the same steps: the same ``from_t`` and ``batch``, so the same
``(from_t, limit)`` reads, at about the same time when they are paced alike. Here a
step read from the files is *held* (by a weak reference) for as long as any stream
holds it, that is while it sends it: a stream asking for a step another one holds
gets the same ``EncodedTick`` objects, so the file is read once and each frame
(``tick.py`` caches them per tick) is built once. Two streams asking for one step at
the same moment share its one read.

Nothing is kept beyond that. Keeping the last steps read (an 8 MB cache, first of
aligned chunks, then of steps) cost a hundred replays on a hundred stretches 16 % of
their CPU in ``bench/replay.py`` for nothing, the ticks it kept being memory that
the next reads could not reuse warm; and reading ahead in chunks made them read
much of it twice. A step no stream holds is read again, as without sharing.

Invariants:

* What :meth:`SharedReads.read` returns is what the wrapped read returns for the same
  ``(from_t, limit)``: consecutive ticks from the first the files still have at or
  after ``from_t``, at most ``limit``, stopping where the files stop. Ticks in the
  files never change once written (append-only), so a held step is never stale; one
  cut short by the end of the files is read again for a stream that asks for more.
* No memory of its own: the dictionary of weak references, and the reads in flight.
* Callers never change a list it returned (``history.read_through`` copies instead).
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable

import trio

from tickcast.tick import EncodedTick

__all__ = ["SharedReads", "Step"]

ReadFiles = Callable[[int, int], Awaitable[list[EncodedTick]]]


class Step(list[EncodedTick]):
    """The ticks of one step: a list that a weak reference can point at."""

    __slots__ = ("__weakref__",)


class SharedReads:
    """The files' read; a step held by a stream is handed to the others that ask for it."""

    def __init__(self, read: ReadFiles) -> None:
        """Share ``read(from_t, limit)`` (the segment files' read, in a worker thread)."""
        self._read = read
        self._held: weakref.WeakValueDictionary[int, Step] = weakref.WeakValueDictionary()
        self._flights: dict[int, trio.Event] = {}  # from_t -> set when its read ends
        self.reads = 0  # reads of the files (for tests)
        self.shared = 0  # steps answered without a read of the files

    async def read(self, from_t: int, limit: int) -> list[EncodedTick]:
        """Up to ``limit`` consecutive ticks from the first the files have at or after
        ``from_t`` (as the wrapped read): the step another stream holds, if any.

        Raises:
            CorruptRecordError: a stored record failed its checksum.
        """
        while True:
            held = self._held.get(from_t)
            if held is not None and len(held) >= limit:
                self.shared += 1
                return held if len(held) == limit else held[:limit]
            flight = self._flights.get(from_t)
            if flight is None:
                break
            await flight.wait()  # another stream is reading this step: look again
        flight = self._flights[from_t] = trio.Event()
        try:
            step = Step(await self._read(from_t, limit))
            self.reads += 1
        finally:
            del self._flights[from_t]
            flight.set()
        if step:
            self._held[from_t] = step
        return step
