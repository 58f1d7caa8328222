"""The life of one ``/ws/stream`` connection, the same for both transports.

A session (``raw.RawSession``, ``asgi.AsgiSession``) holds a sans-I/O
``protocol.StreamProtocol`` and moves bytes; the functions here drive it through
the protocol's states, awaiting the session's I/O where the protocol says to:

* :func:`serve` runs the stream (:func:`run`) and the session's reader side by
  side; whichever ends first ends the other; then it closes the connection with
  what the protocol's :class:`~tickcast.protocol.End` says.
* :func:`run` sends the hello and the start, then goes where the protocol's state
  says: **play** (history from ``next_t``: as fast as the client reads while
  catching up, ``batch`` ticks per message, awaiting the transport after each, so a
  slow client slows only its own reads; at the pace of the ticks' ``ts`` while
  PACED), **live** (the hub delivers; the session's ``live_phase`` returns when it
  fell behind or a control message came), **paused** (nothing but heartbeats), and
  **controls** (:func:`apply_controls`: the client's pause, play, speed, seek and
  live, each acknowledged before any tick that follows from it).
* :func:`terminate` ends a stream from outside its task (the hub's 4008 and
  4009); :func:`release` gives the connection slot back.

A session provides what :class:`Session` lists: structural typing, not a base
class, so each transport reads top to bottom on its own.

Invariants:

* The slot taken by ``intake.admit`` is given back the moment the stream starts
  closing (:func:`release`, idempotent), so an evicted client's address may
  reconnect at once.
* A stream is in the hub from before its first await to its end, so the lag rule
  covers the hello and the replay too.
* Both transports ask "has it ended?" one way: ``session.protocol.is_open``.
* Only the stream's own task sends ticks and acknowledgements (the hub sends live
  ticks to a LIVE stream, and a control message leaves LIVE in the same step as it
  is applied), so "between two ``replay`` messages the ticks are consecutive" holds
  by construction: a control is applied only once the stream is *settled* (nothing
  taken and not yet sent), and its acknowledgement is sent before anything else.
* A session's task waits for the next due tick, a published tick, or a paused
  stream's next control in one way: :meth:`HeldProtocol.until_poked`, which a
  control message (the reader) and the pacer's timer (``pacing.py``) interrupt.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Protocol, TypeVar, cast

import trio

from tickcast import __version__
from tickcast.errors import CorruptRecordError
from tickcast.fanout.hub import Lane, Subscriber
from tickcast.protocol import End, State, StreamEnded, StreamProtocol
from tickcast.tick import EncodedTick
from tickcast.transports.pacing import Pacer
from tickcast.transports.params import StreamParams, start_t
from tickcast.wire import CloseCode, Seek

if TYPE_CHECKING:
    from tickcast.service import Service

__all__ = [
    "HeldProtocol",
    "PeerGone",
    "Session",
    "apply_controls",
    "play",
    "release",
    "run",
    "serve",
    "terminate",
]

T = TypeVar("T")

log = logging.getLogger("tickcast.ws")


class PeerGone(Exception):
    """The client closed the connection (``end``: CLIENT_CLOSED) or it broke."""

    def __init__(self, detail: str, *, end: End = End.CONNECTION_LOST) -> None:
        super().__init__(detail)
        self.end = end


class Session(Subscriber, Protocol):
    """What a transport's session gives :func:`serve`: the hub's side, its protocol, I/O."""

    service: Service
    protocol: StreamProtocol
    ip: str  # the address whose connection slot the session holds while open
    scope: trio.CancelScope  # cancelled to end the stream from outside
    closed: trio.Event  # set once the protocol is CLOSED
    pacer: Pacer  # the shared timer of paced replays

    def poke(self) -> None:
        """Interrupt the task's wait (see :meth:`HeldProtocol.poke`)."""
        ...

    async def send_message(self, payload: bytes) -> None:
        """Send one JSON message; may wait on backpressure."""
        ...

    async def send_ticks(self, ticks: Sequence[EncodedTick]) -> None:
        """Send ``ticks`` as the protocol groups them, moving ``protocol.sent_t``.

        Stops early, between two messages, once a control message waits.
        """
        ...

    def settle(self) -> None:
        """Leave any lane and drop what was taken but not sent (a control follows).

        After it nothing reaches the client past ``protocol.sent_t``, which is where
        :meth:`StreamProtocol.apply` takes the stream from.
        """
        ...

    async def send_aside(self) -> None:
        """Send what a wait was interrupted for, if anything (a heartbeat)."""
        ...

    async def until_poked(self, wait: Callable[..., Awaitable[T]], *args: object) -> T | None:
        """``await wait(*args)``, or None as soon as the session is poked."""
        ...

    def greeted(self) -> None:
        """The hello has gone out (start the heartbeats)."""
        ...

    async def live_phase(self) -> None:
        """Run while live; return when the stream fell behind or a control waits."""
        ...

    async def read_messages(self) -> None:
        """Read and answer client messages until the client leaves.

        Raises:
            PeerGone: the client closed or the connection broke.
            StreamEnded: the client broke the protocol (a message too big).
        """
        ...

    async def close_connection(self, code: CloseCode | None, reason: str) -> None:
        """Send the close (``code`` None: none) and close; runs shielded, bounded."""
        ...


def release(session: Session, end: End = End.CONNECTION_LOST) -> None:
    """Leave the hub and give back the connection slot (idempotent, never blocks).

    Ends the protocol with ``end`` unless it has already ended (the first reason
    wins): an eviction frees the slot before the close.
    """
    session.service.hub.discard(session)
    if session.protocol.finish(end):
        session.service.limits.release(session.ip)


def terminate(session: Session, end: End) -> None:
    """End the stream for ``end`` from outside its task (never blocks).

    The slot is released at once; the session's task is cancelled and closes the
    connection with ``end``'s code.
    """
    release(session, end)
    session.scope.cancel()


async def serve(session: Session) -> None:
    """Run the stream until it ends, then close the connection.

    On cancellation (server shutdown) the client gets 1001. The slot is released
    before the close; ``close_connection`` runs shielded (the session bounds it).
    """
    session.service.traffic.accepted()
    protocol = session.protocol
    try:
        with session.scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_read, session)
                try:
                    await run(session)
                except (StreamEnded, PeerGone, CorruptRecordError) as exc:
                    release(session, _end_of(exc))
                except Exception:  # a bug or a store failure: 1011, logged
                    log.exception("stream session for %s failed", session.ip)
                    release(session, End.INTERNAL_ERROR)
                nursery.cancel_scope.cancel()
    finally:
        release(session, End.SHUTDOWN)  # a no-op unless cancelled from outside
        with trio.CancelScope(shield=True):
            await session.close_connection(*protocol.close_reason())
        protocol.closed()
        session.closed.set()


def _end_of(exc: BaseException) -> End:
    """The end an exception out of :func:`run` stands for (and so the close code).

    A damaged record gets its own end (1011 with a reason that says so); anything
    unexpected is an internal error, logged by the caller with its traceback.
    """
    if isinstance(exc, StreamEnded | PeerGone):
        return exc.end
    if isinstance(exc, CorruptRecordError):
        return End.CORRUPT_HISTORY
    return End.INTERNAL_ERROR


async def _read(session: Session) -> None:
    """The reader side of :func:`serve`: read until the client ends, then stop the stream.

    Whatever ends the reading (a close, a reset, a too-big message, a bug) releases
    the slot with its end first, so the stream side, cancelled next, closes with it.
    """
    try:
        await session.read_messages()
    except (StreamEnded, PeerGone) as exc:
        release(session, exc.end)
    except Exception:
        log.exception("reading from %s failed", session.ip)
        release(session, End.INTERNAL_ERROR)
    session.scope.cancel()


async def run(session: Session) -> None:
    """Send the hello and the start, then alternate catch-up and live.

    Registers with the hub for its whole life (so the lag rule covers the replay
    too) and unregisters on the way out, whatever the exit.

    Raises:
        StreamEnded: the lag rule closed the stream during catch-up (4008).
    """
    service, protocol = session.service, session.protocol
    history, hub = service.history, service.hub
    if protocol.from_ts is not None:  # resolve to a t (<= latest_t + 1), then as from_t
        found = await history.find_ts(protocol.from_ts)
        protocol.from_t = start_t(protocol.from_t, found)  # with from_t too: both bounds
    # Decide the start and build the hello in one step (no await between).
    hello, first = protocol.start(
        epoch=history.epoch,
        oldest_t=history.oldest_t,
        latest_t=history.latest_t,
        next_published_t=history.next_published_t,
        latest=history.latest() if protocol.from_t is None else None,
        heartbeat_s=service.config.heartbeat_s,
        server=f"tickcast/{__version__}",
    )
    # Join the hub before the first await: a send may block from the first byte (the
    # ASGI transport awaits TCP), and a client that never reads even its hello must
    # still fall under the lag rule (4008, its slot freed), not hold it forever.
    hub.add(session)
    try:
        await session.send_message(hello)
        protocol.greeted()
        session.greeted()
        if first is not None:
            await session.send_ticks([first])
        while True:
            if protocol.controls:
                await apply_controls(session)
            elif protocol.live:
                await session.live_phase()
            elif protocol.state is State.PAUSED:
                await session.until_poked(trio.sleep_forever)
                await session.send_aside()
            else:
                await play(session)
    finally:
        hub.discard(session)


async def apply_controls(session: Session) -> None:
    """Apply the waiting control messages in order, each followed by its acknowledgement.

    Each is applied on a settled stream, in one step with no await (so the hub cannot
    hand it a tick in between), and its ``replay`` message is sent before the stream
    sends anything else. A seek by time is resolved first (the one await before).

    Raises:
        CorruptRecordError: the seek by time probed a corrupt record (1011).
    """
    protocol, history = session.protocol, session.service.history
    controls = protocol.controls
    while controls:
        control = controls[0]
        seek_t: int | None = None
        if isinstance(control, Seek):
            if isinstance(control.t, int):
                seek_t = control.t
            else:
                assert isinstance(control.ts, float | int)  # the protocol checked: one of two
                seek_t = await history.find_ts(control.ts)
        controls.popleft()
        session.settle()
        ack = protocol.apply(
            control,
            seek_t=seek_t,
            oldest_t=history.oldest_t,
            latest_t=history.latest_t,
            next_published_t=history.next_published_t,
        )
        await session.send_message(ack)


async def play(session: Session) -> None:
    """Send history from ``next_t``: paced while PACED, else as fast as the client reads.

    Returns when the stream went live, or a control message waits. A stream with a
    range end waits past the latest tick for the next one, and after the last tick
    of its range sends ``end`` and ends (close 1000).

    Raises:
        StreamEnded: the range is complete (1000); lag past ``max_lag`` while catching
            up, or retention took ticks still needed (4008).
    """
    service, protocol = session.service, session.protocol
    history = service.history
    try:
        while not protocol.controls:
            if protocol.range_done:
                await session.send_message(protocol.end_message())
                raise protocol.ended_range()
            start = protocol.catch_up_from(history.latest_t)
            if start is None:
                if protocol.live:
                    return
                await session.until_poked(history.wait_published, protocol.next_t)
                await session.send_aside()
                continue
            read = await history.read(start, protocol.read_size(), upto=protocol.to_t, shared=True)
            if protocol.controls:
                return  # read, not taken: next_t has not moved
            ticks = protocol.caught(read)
            speed = protocol.speed
            if protocol.state is State.PACED and speed is not None and not math.isinf(speed):
                await _paced(session, ticks)
            else:
                await session.send_ticks(ticks)
            # Let the step go before reading the next: a hundred replays would otherwise
            # each hold two steps of ticks across the read.
            del read, ticks
    except StreamEnded as exc:
        if exc.end is End.SLOW_CONSUMER:  # a 4008 decided here, counted with the hub's
            service.hub.count_slow_close()
        raise


async def _paced(session: Session, ticks: Sequence[EncodedTick]) -> None:
    """Send ``ticks`` each when due (the protocol's pace), sharing the pacer's one timer.

    Returns early when a control message waits (the stream is settled before it is
    applied, so the ticks not sent are read again from ``next_t``).
    """
    protocol, pacer = session.protocol, session.pacer
    i = 0
    while i < len(ticks):
        if protocol.controls:
            return
        n, due = protocol.due_now(ticks[i : i + protocol.batch], trio.current_time())
        if n == 0:
            pacer.wake_at(due, session)
            await session.until_poked(trio.sleep_forever)
            await session.send_aside()
            continue
        await session.send_ticks(ticks[i : i + n])
        i += n


class HeldProtocol:
    """What every transport's session does the same way, by holding its protocol.

    The hub and the lanes read and write a subscriber's ``next_t``, ``allowance``,
    ``live`` and ``lane``; they live in the session's :class:`StreamProtocol`, so the
    state and the position are in one place, and these properties only forward. The
    ways a stream is ended from outside (the hub's 4008 and 4009, a failed upgrade)
    and served are the module functions above. No method here is a hook to override:
    a transport adds its I/O (``send_message``, ``send_ticks``, ``deliver``, ...) and
    nothing else.
    """

    def __init__(self, service: Service, params: StreamParams, *, ip: str, pacer: Pacer) -> None:
        """The session's protocol, from the admitted query, and its ending machinery.

        Args:
            service: the running service (hub, history, counters, settings).
            params: the admitted query.
            ip: the address whose connection slot this session holds while open.
            pacer: the shared timer of paced replays (``pacing.py``).
        """
        self.service = service
        self.params = params
        self.ip = ip
        self.pacer = pacer
        self.protocol = StreamProtocol(
            from_t=params.from_t,
            from_ts=params.from_ts,
            fields=params.fields,
            batch=params.batch,
            lag_limit=service.config.lag_limit,
            to_t=params.to_t,
            to_ts=params.to_ts,
            speed=params.speed,
        )
        self.scope = trio.CancelScope()  # cancelled to end the stream from outside
        self.closed = trio.Event()  # set once the protocol is CLOSED
        self._traffic = service.traffic
        self._poked = False  # poked while not waiting: the next wait returns at once
        self._waiting: trio.CancelScope | None = None  # the wait a poke interrupts

    def poke(self) -> None:
        """Interrupt the task's wait (a control message came, or a paced tick is due).

        Never blocks. A poke while the task is not waiting makes its next
        :meth:`until_poked` return at once, so no poke is lost.
        """
        if self._waiting is not None:
            self._waiting.cancel()
        else:
            self._poked = True

    async def until_poked(self, wait: Callable[..., Awaitable[T]], *args: object) -> T | None:
        """``await wait(*args)``, or None as soon as :meth:`poke` is called.

        ``wait`` must be safe to cancel (trio's waits are). Returns at once, with
        None, when poked since the last wait.
        """
        if self._poked:
            self._poked = False
            return None
        scope = self._waiting = trio.CancelScope()
        try:
            with scope:
                return await wait(*args)
        finally:
            self._waiting = None
        return None  # the poke cancelled the wait

    @property
    def next_t(self) -> int:
        """The next tick not yet given to this client (the protocol's)."""
        return self.protocol.next_t

    @next_t.setter
    def next_t(self, value: int) -> None:
        self.protocol.next_t = value

    @property
    def sent_t(self) -> int:
        """The last tick whose message the transport has taken (the protocol's)."""
        return self.protocol.sent_t

    @property
    def allowance(self) -> int:
        """Extra lag tolerated after a deep resume (the protocol's; the hub's lag rule)."""
        return self.protocol.allowance

    @allowance.setter
    def allowance(self, value: int) -> None:
        self.protocol.allowance = value

    @property
    def live(self) -> bool:
        """Whether the hub delivers to this session directly (the protocol's state)."""
        return self.protocol.live

    @property
    def replaying(self) -> bool:
        """Paced or paused: the hub's lag rule skips it (the protocol's state)."""
        return self.protocol.replaying

    @property
    def lane(self) -> Lane | None:
        """The lane this session is a member of, if any (only the hub sets it)."""
        return self.protocol.lane  # type: ignore[return-value]  # only the hub sets it

    @lane.setter
    def lane(self, lane: Lane | None) -> None:
        self.protocol.lane = lane

    def evict(self) -> None:
        """The hub's 4008 (it has already left the hub and been counted)."""
        terminate(cast("Session", self), End.SLOW_CONSUMER)

    def reset(self) -> None:
        """The hub's 4009: the history was reset (a scale-out edge saw a new epoch)."""
        terminate(cast("Session", self), End.EPOCH_CHANGED)

    def release(self) -> None:
        """Give the slot back without serving (the upgrade failed)."""
        release(cast("Session", self))

    async def serve(self) -> None:
        """Serve the stream until it ends, then close (see :func:`serve`)."""
        await serve(cast("Session", self))
