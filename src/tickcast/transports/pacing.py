"""The pace of replays: one timer for every paced session, not one sleep per tick each.

A paced replay (``speed`` on ``/ws/stream``, docs/protocol.md "Replay") sends each
tick when it is due. Were each session to sleep until its next tick, every tick of
every replay would put a deadline of its own in trio's timer heap. Here the sessions
put their due times in one heap, and one task (:meth:`Pacer.run`) sleeps until the
earliest and *pokes* every session due by then (``HeldProtocol.poke``): the session's
task, already waiting, sends what is due and asks for its next wake-up.

Invariants:

* A session is woken at or after the time it asked for, never before; sessions due
  at the same moment share one wake-up of the timer.
* A wake-up a session no longer needs (it was poked earlier by a control message)
  costs one spurious poke, which the session takes as "look again"; entries are
  never searched for or removed, so asking is O(log n).
* The heap holds weak references: a session that ended is freed at once, and its
  entry is dropped when it comes due.
"""

from __future__ import annotations

import heapq
import weakref
from typing import Protocol

import trio

__all__ = ["Pacer", "Pokable"]


class Pokable(Protocol):
    """A session the pacer wakes (both transports' sessions)."""

    def poke(self) -> None:
        """Wake the session's task if it waits (never blocks)."""
        ...


class Pacer:
    """The heap of due times, and the task that serves it (:meth:`run`)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, weakref.ref[Pokable]]] = []
        self._seq = 0  # ties broken in asking order (and never by comparing sessions)
        self._earlier = trio.Event()  # set when the head of the heap moves earlier

    def __len__(self) -> int:
        """Wake-ups waiting (ended sessions' not yet dropped included)."""
        return len(self._heap)

    def wake_at(self, due: float, session: Pokable) -> None:
        """Poke ``session`` at trio time ``due`` (or as soon after as the loop can)."""
        self._seq += 1
        entry = (due, self._seq, weakref.ref(session))
        heapq.heappush(self._heap, entry)
        if self._heap[0] is entry:
            self._earlier.set()

    async def run(self) -> None:
        """Poke each session when it is due, until cancelled.

        Idle (one event wait) while nothing is due; cancellation is taken at the wait
        and leaves the heap as it was. Never blocks on a session: ``poke`` only wakes.
        """
        heap = self._heap
        while True:
            self._earlier = trio.Event()
            if not heap:
                await self._earlier.wait()
                continue
            with trio.move_on_at(heap[0][0]):
                await self._earlier.wait()
                continue  # something earlier was asked for: sleep until that instead
            self.poke_due(trio.current_time())

    def poke_due(self, now: float) -> None:
        """Poke every session due at or before ``now``."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, ref = heapq.heappop(heap)
            session = ref()
            if session is not None:
                session.poke()
