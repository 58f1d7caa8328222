"""Heartbeats for the stream sessions: one timer for every session, not one each.

Each session is due a heartbeat ``period`` seconds after its last one (the first:
``period`` after its hello). A timer per session costs a deadline in trio's heap and
a wake-up of the session's task per beat: at 1000 clients and 30 s, 33 wake-ups a
second, each building and encoding the same message. Here every interval is the
same, so the sessions wait in one FIFO that stays in due order by appending, and one
task serves it:

* it wakes when the head is due, and gives a beat to every session due before
  ``now + slack``: a beat is early by less than ``slack``, never late, and sessions
  due close together share one wake-up (at most one per ``slack`` seconds);
* the message (``latest_t``, ``ts``) is encoded once per wake-up, and its frame once
  per deflate window (a :class:`Beat` builds each on first use);
* a session's next beat is due ``period`` after the one it was just given, so the
  gap between two beats is more than ``period - slack`` and at most ``period`` (plus
  the lateness of the loop itself): a client that counts two silent periods as a
  dead connection never sees one from us.

A session that has ended is dropped when it reaches the head (it is not searched
for). The FIFO holds weak references, so a closed connection's session is freed
when its task ends, not ``period`` seconds later: a client reconnecting in a loop
costs the FIFO one dead weak reference per connection of the last ``period``.
"""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import trio

from tickcast.protocol import heartbeat_message
from tickcast.transports.frames import message_frame

if TYPE_CHECKING:
    from tickcast.service import Service

__all__ = ["Beat", "Beating", "Heartbeats", "service_heartbeats"]

SLACK_S = 1.0  # at most this early; at most one wake-up per this long
SLACK_SHARE = 0.1  # ... and at most this share of the period early


class Beat:
    """One heartbeat, shared by every session beaten in the same wake-up.

    Attributes:
        payload: the JSON message (what a transport that frames its own sends sends).
    """

    __slots__ = ("_frames", "payload")

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self._frames: dict[int, bytes] = {}

    def frame(self, wbits: int) -> bytes:
        """The message as one frame for deflate window ``wbits`` (0: none), built once."""
        frame = self._frames.get(wbits)
        if frame is None:
            frame = self._frames[wbits] = message_frame(self.payload, wbits)
        return frame


class Beating(Protocol):
    """A session the timer beats (both transports' sessions)."""

    def beat(self, beat: Beat) -> bool:
        """Send ``beat``; False when the session has ended (it is then dropped)."""
        ...


def service_heartbeats(service: Service) -> Heartbeats:
    """The heartbeat timer of ``service``'s stream sessions (run :meth:`Heartbeats.run`)."""
    history = service.history
    return Heartbeats(service.config.heartbeat_s, lambda: heartbeat_message(history.latest_t))


class Heartbeats:
    """The FIFO of sessions by due time, and the task that serves it (:meth:`run`)."""

    def __init__(self, period: float, message: Callable[[], bytes]) -> None:
        """A timer beating every ``period`` seconds (the ``heartbeat_s`` setting).

        ``message`` builds the heartbeat's JSON; it is called once per wake-up, so its
        ``latest_t`` and ``ts`` are those of the moment the beats go out.
        """
        self.period = period
        self.slack = min(SLACK_S, period * SLACK_SHARE)
        self._message = message
        self._due: deque[tuple[float, weakref.ref[Beating]]] = deque()
        self._added = trio.Event()

    def __len__(self) -> int:
        """Entries in the FIFO, ended sessions not yet dropped included."""
        return len(self._due)

    def add(self, session: Beating) -> None:
        """Start beating ``session``: its first beat is due ``period`` from now."""
        self._due.append((trio.current_time() + self.period, weakref.ref(session)))
        self._added.set()

    async def run(self) -> None:
        """Give each session its beats, until cancelled.

        Idle (one event wait) while no session is due; cancellation is taken at either
        wait and leaves the FIFO as it was. Never blocks on a session: ``beat`` only
        queues a message.
        """
        due = self._due
        while True:
            if not due:
                self._added = trio.Event()
                await self._added.wait()
                continue
            await trio.sleep_until(due[0][0])
            self.beat_due(trio.current_time())

    def beat_due(self, now: float) -> None:
        """Beat every session due before ``now + slack``."""
        due = self._due
        horizon = now + self.slack
        beat = Beat(self._message())
        next_due = now + self.period
        while due and due[0][0] < horizon:
            _, ref = due.popleft()
            session = ref()
            if session is not None and session.beat(beat):
                due.append((next_due, ref))
