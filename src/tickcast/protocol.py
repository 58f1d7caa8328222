"""The ``/ws/stream`` protocol without I/O: one :class:`StreamProtocol` per connection.

A transport (``transports/raw.py`` for ``tickcast serve``, ``transports/asgi.py``
under a stock ASGI server) holds one and only moves bytes; everything it has to
*decide* is asked of the protocol, the way websockets' ``Connection`` holds a
sans-I/O ``Protocol``:

* **where the stream is**: one :class:`State`, changed only through the table
  :data:`TRANSITIONS` (as h11 writes its state machine), and the position:
  ``next_t`` (the next tick this client has not been given), ``sent_t`` (the last
  tick the transport has taken) and the lag ``allowance``;
* **why it ended**: one :class:`End`, which carries its :class:`CloseCode`, and
  the close reason built from it (:meth:`StreamProtocol.close_reason`);
* **the lag rule**: :func:`too_far_behind`, the one written form of the
  slow-consumer policy, which the hub applies to every subscriber that is not
  live and the protocol applies during its own catch-up;
* **the messages**: the parser of client messages (:meth:`StreamProtocol.reply`)
  and the builders of every server message (hello, tick and batch, heartbeat,
  pong, error), through the Structs of ``wire.py``.

The life of a stream::

    GREETING --greeted--> CATCHING_UP --caught up--> LIVE <--joined / left--> IN_LANE
                               ^   |                  |  ^
                               +---+--fell behind-----+  |
                         unpaced   | paced               | caught up
                                   v                     |
                                 PACED ------------------+
    CATCHING_UP, PACED, LIVE --paused--> PAUSED --paced / unpaced--> PACED / CATCHING_UP
    any of those --ended--> CLOSING --closed--> CLOSED  (ended again: no change)

Replay (docs/protocol.md, "Replay"): a stream with a ``speed`` sends history PACED
by the ticks' own ``ts``; the control messages (pause, play, speed, seek, live) are
parsed by :meth:`StreamProtocol.reply`, queued in ``controls``, and applied by the
stream's own task with :meth:`StreamProtocol.apply` at a point where nothing is
half sent, which returns the ``replay`` acknowledgement to send before any tick
that follows from it. PACED and PAUSED streams are not slow consumers (the lag
rule skips them: :attr:`StreamProtocol.replaying`). A stream with a range end
(``to_t`` / ``to_ts``) never goes LIVE: past the latest tick it waits for the next
one, and after the last tick of its range it sends ``end`` and closes with 1000.

Invariants:

* The state changes only in :meth:`StreamProtocol._move`, and only along
  :data:`TRANSITIONS`; any other step is a bug and raises :class:`StateError`.
* The first :class:`End` wins: a stream evicted while its reader sees the client
  go still closes with 4008.
* ``sent_t`` only grows while the stream is open, and everything the transport
  has taken reaches the client before a close frame: so the ``from_t`` a 4008
  names (``sent_t + 1``, decided when the close is built) continues exactly what
  the client received.
* Nothing here awaits or imports trio, anyio, Quart or Hypercorn (an
  import-linter contract checks it), so every transition is tested without a
  socket (``tests/test_stream_protocol.py``).

Pacing is computed here too, from the clock value the caller passes
(:meth:`StreamProtocol.due_now`): tick k+1 is due ``(ts[k+1] - ts[k]) / speed``
after tick k, with a gap longer than ``GAP_CAP_S`` counted as ``GAP_CAP_S``.
"""

from __future__ import annotations

import enum
import math
import time
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any, Literal, TypeAlias

import msgspec
import orjson
from msgspec import UNSET

from tickcast.tick import EncodedTick, Fields, batch_message
from tickcast.wire import (
    GAP_CAP_S,
    MAX_CLIENT_MESSAGE,
    CloseCode,
    Error,
    Heartbeat,
    Hello,
    Live,
    MessageType,
    Pause,
    Play,
    Pong,
    Replay,
    ReplayState,
    Seek,
    SetSpeed,
)
from tickcast.wire import End as EndMessage

__all__ = [
    "CATCH_UP_CHUNK",
    "MAX_PENDING_CONTROLS",
    "TRANSITIONS",
    "Control",
    "End",
    "Event",
    "State",
    "StateError",
    "StreamEnded",
    "StreamProtocol",
    "heartbeat_message",
    "too_far_behind",
]

CATCH_UP_CHUNK = 256  # ticks read from history per step of a catch-up
REPLAY_STEP = 64  # ... and of a paced replay, at least (batch when larger)
MAX_PENDING_CONTROLS = 16  # control messages waiting to be applied; more: bad_message
EARLY_S = 0.001  # a paced tick due within this is sent now (a timer cannot do better)
RESYNC_S = 0.005  # a paced tick sent later than this restarts the pace from now

Control: TypeAlias = Pause | Play | SetSpeed | Seek | Live
"""A parsed control message, waiting in ``StreamProtocol.controls``."""

_CONTROL_TYPES = {
    MessageType.PAUSE.value,
    MessageType.PLAY.value,
    MessageType.SPEED.value,
    MessageType.SEEK.value,
    MessageType.LIVE.value,
}

_encode = msgspec.json.Encoder().encode


class State(enum.Enum):
    """Everything a stream can be (see the module docstring for the picture)."""

    GREETING = "greeting"  # upgraded: the start is decided, the hello on its way
    CATCHING_UP = "catching up"  # sending history from next_t; under the lag rule
    PACED = "paced"  # sending history at the pace of its ts; not under the lag rule
    PAUSED = "paused"  # sending no tick (heartbeats go on); not under the lag rule
    LIVE = "live"  # the hub hands it each new tick, one by one
    IN_LANE = "in a lane"  # live, and served by a lane's loop (the fast path)
    CLOSING = "closing"  # ended: slot released, the close being delivered
    CLOSED = "closed"  # the socket is closed


class Event(enum.Enum):
    """What moves a stream from one :class:`State` to the next."""

    GREETED = "greeted"  # the hello has been sent
    CAUGHT_UP = "caught up"  # next_t passed the latest published tick
    FELL_BEHIND = "fell behind"  # a live tick could not be taken: catch up from history
    JOINED_LANE = "joined a lane"
    LEFT_LANE = "left its lane"
    PACE = "paced"  # history at a speed from next_t (speed, play, seek with a speed)
    UNPACE = "unpaced"  # history as fast as it reads from next_t (play, seek, live)
    PAUSE = "paused"
    ENDED = "ended"  # an End was recorded (the first one wins)
    CLOSED = "closed"  # the transport closed the socket


_OPEN = (
    State.GREETING,
    State.CATCHING_UP,
    State.PACED,
    State.PAUSED,
    State.LIVE,
    State.IN_LANE,
)
# Where a control message applies: a stream in a lane leaves it first (it is settled).
_CONTROLLED = (State.CATCHING_UP, State.PACED, State.PAUSED, State.LIVE)

TRANSITIONS: dict[tuple[State, Event], State] = {
    (State.GREETING, Event.GREETED): State.CATCHING_UP,
    (State.CATCHING_UP, Event.CAUGHT_UP): State.LIVE,
    (State.PACED, Event.CAUGHT_UP): State.LIVE,
    (State.LIVE, Event.FELL_BEHIND): State.CATCHING_UP,
    **{(state, Event.PACE): State.PACED for state in _CONTROLLED},
    **{(state, Event.UNPACE): State.CATCHING_UP for state in _CONTROLLED},
    **{(state, Event.PAUSE): State.PAUSED for state in _CONTROLLED},
    (State.LIVE, Event.JOINED_LANE): State.IN_LANE,
    (State.IN_LANE, Event.LEFT_LANE): State.LIVE,
    **{(state, Event.ENDED): State.CLOSING for state in _OPEN},
    (State.CLOSING, Event.ENDED): State.CLOSING,  # a later reason is ignored
    (State.CLOSING, Event.CLOSED): State.CLOSED,
    (State.CLOSED, Event.ENDED): State.CLOSED,  # e.g. the hub's 4009 racing the close
}
"""Every allowed step: ``(state, event) -> next state``. Anything else is a bug."""


class End(enum.Enum):
    """Why a stream ended, with the close code it sends (None: no close frame of ours).

    Attributes:
        code: the close code, or None when the client closed first (its close is
            answered with its own code) or the connection broke (nothing can be sent).
        template: the close reason; ``{t}`` and ``{size}`` are filled in by
            :meth:`StreamProtocol.close_reason`.
    """

    RANGE_END = (CloseCode.NORMAL, "end of range")
    SHUTDOWN = (CloseCode.GOING_AWAY, "server shutting down")
    SLOW_CONSUMER = (CloseCode.SLOW_CONSUMER, "slow consumer; resume with from_t={t}")
    EPOCH_CHANGED = (CloseCode.EPOCH_CHANGED, "epoch changed")
    TOO_BIG = (CloseCode.TOO_BIG, f"message of {{size}} bytes exceeds {MAX_CLIENT_MESSAGE} bytes")
    CORRUPT_HISTORY = (CloseCode.INTERNAL_ERROR, "history unreadable: corrupt record")
    INTERNAL_ERROR = (CloseCode.INTERNAL_ERROR, "internal error")
    CLIENT_CLOSED = (None, "client closed")
    CONNECTION_LOST = (None, "connection lost")

    def __init__(self, code: CloseCode | None, template: str) -> None:
        self.code = code
        self.template = template


class StateError(RuntimeError):
    """A step :data:`TRANSITIONS` does not allow: a bug in a transport or the hub."""


class StreamEnded(Exception):
    """Raised out of a protocol method that ended the stream; ``end`` says why."""

    def __init__(self, end: End) -> None:
        super().__init__(end.template)
        self.end = end


def too_far_behind(t: int, next_t: int, lag_limit: int, allowance: int) -> bool:
    """The slow-consumer rule: True when a stream at ``next_t`` must close with 4008.

    ``t`` is the latest published tick; the lag is ``t - next_t + 1`` ticks. A stream
    may lag by ``lag_limit`` (``max_lag``) plus its ``allowance``: 0 once it has been
    live, and for a replay from far back the smallest lag it has had so far, so a
    resume is never refused for starting far back, only for falling further behind.
    """
    return t - next_t + 1 > lag_limit + allowance


def heartbeat_message(latest_t: int | None) -> bytes:
    """A heartbeat stamped now: the same bytes for every stream of a service."""
    return _encode(Heartbeat(latest_t=latest_t, ts=round(time.time(), 6)))


def _number(value: float) -> float | int:
    """30.0 -> 30: settings that are whole numbers are shown as integers."""
    return int(value) if value.is_integer() else value


def _error(detail: str) -> bytes:
    """The error message answering a client message the stream does not take."""
    return _encode(Error(code="bad_message", detail=detail))


class StreamProtocol:
    """One ``/ws/stream`` connection's state, position, end and messages; no I/O.

    Args:
        from_t: the first tick wanted, or None for the latest tick (or with ``from_ts``).
        from_ts: the start asked by time, instead of or as well as ``from_t``; the
            I/O layer resolves it to a ``from_t`` before :meth:`start` (with both, the
            later of the two bounds). It changes when the hello says ``truncated``.
        fields: the tick keys this client asked for (None: all).
        batch: up to this many waiting ticks per message.
        lag_limit: ``max_lag``, for the lag rule during catch-up.
        to_t: the last tick of the range (inclusive), or None.
        to_ts: the range ends before the first tick with ``ts > to_ts``, or None.
        speed: the pace of history (``math.inf``: ``max``), or None: as fast as the
            client reads, under the lag rule.

    Attributes:
        state: where the stream is (see :data:`TRANSITIONS`).
        end: why it ended, once it has (the first reason recorded).
        next_t: the next tick not yet given to this client.
        sent_t: the last tick whose message the transport has taken.
        allowance: the extra lag tolerated while replaying (see :func:`too_far_behind`).
        controls: control messages parsed by :meth:`reply`, not yet applied.
    """

    __slots__ = (
        "_lane",
        "_last_due",
        "_last_ts",
        "_past_to_ts",
        "_to_live",
        "_too_big",
        "allowance",
        "asked_from_t",
        "batch",
        "controls",
        "end",
        "fields",
        "from_t",
        "from_ts",
        "lag_limit",
        "next_t",
        "sent_t",
        "speed",
        "state",
        "to_t",
        "to_ts",
    )

    def __init__(
        self,
        *,
        from_t: int | None,
        from_ts: float | None = None,
        fields: Fields = None,
        batch: int = 1,
        lag_limit: int,
        to_t: int | None = None,
        to_ts: float | None = None,
        speed: float | None = None,
    ) -> None:
        self.from_t = from_t
        self.asked_from_t = from_t  # as asked: from_t may be replaced by a from_ts seek
        self.from_ts = from_ts
        self.fields = fields
        self.batch = batch
        self.lag_limit = lag_limit
        self.state = State.GREETING
        self.end: End | None = None
        self.next_t = 0
        self.sent_t = -1
        self.allowance = 0
        self._lane: object | None = None
        self._too_big = 0
        self.to_t = to_t
        self.to_ts = to_ts
        self.speed = speed
        self.controls: deque[Control] = deque()
        self._to_live = False  # the "live" control: catching up to the latest, then live
        self._past_to_ts = False  # a tick past to_ts was read: the range is complete
        self._last_ts: float | None = None  # the pace: ts and due time of the last tick
        self._last_due = 0.0

    # -- state ------------------------------------------------------------------------

    def _move(self, event: Event) -> None:
        """Take one step of :data:`TRANSITIONS`.

        Raises:
            StateError: the table has no such step from the current state.
        """
        try:
            self.state = TRANSITIONS[self.state, event]
        except KeyError:
            raise StateError(f"{event.value!r} while {self.state.value}") from None

    @property
    def is_open(self) -> bool:
        """Not yet ended: the stream holds its slot and may be given ticks."""
        return self.state in _OPEN

    @property
    def live(self) -> bool:
        """True while the hub hands this stream each new tick (LIVE or IN_LANE)."""
        state = self.state
        return state is State.LIVE or state is State.IN_LANE

    @property
    def replaying(self) -> bool:
        """True while PACED or PAUSED: not a slow consumer (the hub's lag rule skips it)."""
        state = self.state
        return state is State.PACED or state is State.PAUSED

    @property
    def ranged(self) -> bool:
        """The stream has a range end (``to_t`` / ``to_ts``): it never goes LIVE."""
        return self.to_t is not None or self.to_ts is not None

    @property
    def range_done(self) -> bool:
        """Every tick of the range has been sent: ``end`` and close 1000 are next."""
        to_t = self.to_t
        return self._past_to_ts or (to_t is not None and self.next_t > to_t)

    @property
    def lane(self) -> object | None:
        """The lane this stream is a member of (set by the hub: JOINED / LEFT_LANE)."""
        return self._lane

    @lane.setter
    def lane(self, lane: object | None) -> None:
        if lane is None:
            if self._lane is not None and self.state is State.IN_LANE:
                self._move(Event.LEFT_LANE)
        else:
            self._move(Event.JOINED_LANE)
        self._lane = lane

    def fell_behind(self) -> None:
        """A live tick could not be taken: the stream catches up from ``next_t``."""
        if self.state is State.LIVE:
            self._move(Event.FELL_BEHIND)

    def finish(self, end: End) -> bool:
        """Record why the stream ends and move to CLOSING; True if it was still open.

        The first reason wins; a later one changes nothing.
        """
        was_open = self.is_open
        if self.end is None:
            self.end = end
        self._move(Event.ENDED)
        return was_open

    def closed(self) -> None:
        """The transport has closed the socket."""
        self._move(Event.CLOSED)

    def close_reason(self) -> tuple[CloseCode | None, str]:
        """The close code to send (None: send none) and its reason, for :attr:`end`."""
        end = self.end if self.end is not None else End.SHUTDOWN
        return end.code, end.template.format(t=self.sent_t + 1, size=self._too_big)

    # -- the start ----------------------------------------------------------------------

    def start(
        self,
        *,
        epoch: str,
        oldest_t: int | None,
        latest_t: int | None,
        next_published_t: int,
        latest: EncodedTick | None,
        heartbeat_s: float,
        server: str,
    ) -> tuple[bytes, EncodedTick | None]:
        """Decide where the stream starts; return the hello and the first tick to send.

        Called once, with the history's facts read in the same step (no await in
        between), so the hello's ``oldest_t`` / ``latest_t`` / ``truncated`` describe
        exactly what follows. Without ``from_t`` the first tick is ``latest`` and the
        stream goes on at ``next_published_t``; with it, from ``max(from_t, oldest_t)``.
        The stream stays GREETING until :meth:`greeted`; the hub's lag rule already
        covers it (a client that never reads even its hello is still a slow consumer).
        """
        from_t = self.from_t
        hello = Hello(
            epoch=epoch,
            oldest_t=oldest_t,
            latest_t=latest_t,
            heartbeat_s=_number(heartbeat_s),
            server=server,
        )
        # from_t: ticks from_t .. oldest_t - 1 are gone. from_ts: the seek landed on
        # oldest_t and retention has deleted ticks before it, which may have matched;
        # with from_t too, only if that bound itself reached below oldest_t.
        by_time = self.from_ts is not None and (self.asked_from_t or 0) < (oldest_t or 0)
        if (
            from_t is not None
            and oldest_t is not None
            and (from_t < oldest_t or (by_time and from_t == oldest_t > 0))
        ):
            hello.truncated = True
        first: EncodedTick | None = None
        if from_t is None:
            first = latest
            self.next_t = next_published_t
        else:
            self.next_t = from_t if oldest_t is None else max(from_t, oldest_t)
        self.sent_t = (self.next_t if first is None else first.t) - 1
        self.allowance = 0 if latest_t is None else max(0, latest_t - self.next_t + 1)
        return _encode(hello), first

    def greeted(self) -> None:
        """The hello has been sent: the catch-up (or, with a speed, the replay) begins."""
        self._move(Event.GREETED)
        if self.speed is not None:
            self._move(Event.PACE)

    # -- catching up ------------------------------------------------------------------

    def catch_up_from(self, latest_t: int | None) -> int | None:
        """The ``t`` to read history from next, or None: nothing to read now.

        None means caught up: the stream is now LIVE, unless it has a range end (it
        then waits for the next published tick, still catching up or PACED). Going
        live happens in this call, with no await between the check and the change,
        so no published tick can slip past the stream. The lag rule applies to a
        stream CATCHING_UP only.

        Raises:
            StreamEnded: the lag rule closes the stream (4008).
        """
        if latest_t is None or self.next_t > latest_t:
            if not self.ranged:
                self.allowance = 0
                self._to_live = False
                self._move(Event.CAUGHT_UP)
            return None
        if self.state is State.CATCHING_UP:
            if too_far_behind(latest_t, self.next_t, self.lag_limit, self.allowance):
                raise self._ended(End.SLOW_CONSUMER)
            self.allowance = min(self.allowance, latest_t - self.next_t + 1)
        return self.next_t

    def read_size(self) -> int:
        """How many ticks to ask history for per step: ``max(REPLAY_STEP, batch)`` for a
        paced replay (about one message: a hundred replays hold a hundred steps), else
        ``max(CATCH_UP_CHUNK, batch)`` (fewer, larger reads for a catch-up)."""
        if self.state is State.PACED:
            return max(REPLAY_STEP, self.batch)
        return max(CATCH_UP_CHUNK, self.batch)

    def caught(self, ticks: Sequence[EncodedTick]) -> Sequence[EncodedTick]:
        """History answered the read at ``next_t`` with ``ticks``; move past them.

        Returns the ticks to send: all of them, or those before the first with
        ``ts > to_ts`` (the range is then complete: :attr:`range_done`).

        Raises:
            StreamEnded: the ticks do not start at ``next_t`` (retention removed what
                this client still needed): it must resume (4008).
        """
        if not ticks or ticks[0].t != self.next_t:
            raise self._ended(End.SLOW_CONSUMER)
        to_ts = self.to_ts
        if to_ts is not None:
            for i, tick in enumerate(ticks):
                if tick.ts > to_ts:
                    self._past_to_ts = True
                    ticks = ticks[:i]
                    break
        if ticks:
            self.next_t = ticks[-1].t + 1
        return ticks

    # -- pacing ----------------------------------------------------------------------

    def due_now(self, ticks: Sequence[EncodedTick], now: float) -> tuple[int, float]:
        """How many of ``ticks`` (at most ``batch``) are due at ``now``, and when the
        next is due.

        The pace moves past the ticks counted (the caller sends them now). Tick k+1 is
        due ``min(ts gap, GAP_CAP_S) / speed`` after tick k; the first tick after the
        start or an acknowledgement is due at once; a tick later than ``RESYNC_S``
        (the client read slower, or the loop was busy) restarts the pace from ``now``,
        so the gaps after it are kept rather than squeezed. Returns ``(0, due)`` when
        the first tick is not due yet; ``due`` is ``now`` when ticks were counted.
        """
        speed = self.speed if self.speed is not None else math.inf
        last_ts, last_due = self._last_ts, self._last_due
        horizon = now + EARLY_S
        n = 0
        due = now
        for tick in ticks[: self.batch]:
            ts = tick.ts
            if last_ts is None:
                due = now
            else:
                due = last_due + min(max(ts - last_ts, 0.0), GAP_CAP_S) / speed
                if due > horizon:
                    break
                if now - due > RESYNC_S:
                    due = now
            last_ts, last_due = ts, due
            n += 1
        self._last_ts, self._last_due = last_ts, last_due
        return n, (now if n else due)

    def _ended(self, end: End) -> StreamEnded:
        """Finish with ``end`` (the first end wins) and return the exception to raise."""
        self.finish(end)
        return StreamEnded(end)

    # -- server messages -----------------------------------------------------------------

    def messages(self, ticks: Sequence[EncodedTick]) -> Iterator[Sequence[EncodedTick]]:
        """``ticks`` in groups of up to ``batch``: one message each (a tick or a batch)."""
        size = self.batch
        for i in range(0, len(ticks), size):
            yield ticks[i : i + size]

    def payload(self, group: Sequence[EncodedTick]) -> bytes:
        """The message for one group of :meth:`messages`: the tick itself, or a batch."""
        fields = self.fields
        if len(group) == 1:
            return group[0].view(fields)
        return batch_message(t.view(fields) for t in group)

    # -- client messages ----------------------------------------------------------------

    def check_size(self, size: int) -> None:
        """A client message has reached ``size`` bytes so far.

        Raises:
            StreamEnded: over ``MAX_CLIENT_MESSAGE`` (1009, the reason names the size).
        """
        if size > MAX_CLIENT_MESSAGE:
            self._too_big = size
            raise self._ended(End.TOO_BIG)

    def reply(self, data: bytes | str) -> bytes | None:
        """The answer to one whole client message: a pong, a ``bad_message`` error, or
        None for a valid control message, queued in :attr:`controls` (its answer is
        the ``replay`` acknowledgement :meth:`apply` builds).

        A control message that is malformed or out of range changes nothing; nor does
        one past ``MAX_PENDING_CONTROLS`` waiting (a client that sends controls
        faster than the stream applies them is told so, and may send it again).
        """
        try:
            msg = orjson.loads(data)
        except orjson.JSONDecodeError:
            return _error("not JSON")
        if not isinstance(msg, dict):
            return _error("expected a JSON object")
        kind: Any = msg.get("type")
        if kind == MessageType.PING:
            pong = Pong(ts=round(time.time(), 6))
            if "id" in msg:
                pong.id = msg["id"]
            return _encode(pong)
        if kind in _CONTROL_TYPES:
            try:
                control = msgspec.convert(msg, Control)
            except msgspec.ValidationError as exc:
                return _error(f"{kind}: {exc}")
            if isinstance(control, Seek) and (control.t is UNSET) == (control.ts is UNSET):
                return _error("seek: give exactly one of t and ts")
            if len(self.controls) >= MAX_PENDING_CONTROLS:
                return _error(
                    f"{kind}: more than {MAX_PENDING_CONTROLS} control messages waiting; "
                    "send it again after their replay messages"
                )
            self.controls.append(control)
            return None
        text = repr(kind)
        if len(text) > 64:
            text = text[:61] + "..."
        return _error(
            f"unknown message type {text}; expected one of ping, pause, play, speed, seek, live"
        )

    # -- control messages (applied by the stream's task) ---------------------------------

    def apply(
        self,
        control: Control,
        *,
        seek_t: int | None,
        oldest_t: int | None,
        latest_t: int | None,
        next_published_t: int,
    ) -> bytes:
        """Apply one control message; return its ``replay`` acknowledgement.

        The caller has *settled* the stream first: out of any lane, nothing taken and
        not yet sent, so the client is at ``sent_t + 1``, where ``next_t`` is put back
        (a catch-up's read or a live channel may have moved it past what was sent).
        ``seek_t`` is the target of a seek (a ``ts`` seek resolved with ``find_ts``).
        After it, the next tick is sent at once and the pace runs from it.
        """
        self.next_t = self.sent_t + 1
        clamped = False
        state = self.state
        paused = state is State.PAUSED
        if isinstance(control, Pause):
            self._to_live = False
            self._move(Event.PAUSE)
        elif isinstance(control, Play):
            if paused:
                self._resume(latest_t)
        elif isinstance(control, SetSpeed):
            self.speed = math.inf if control.speed == "max" else float(control.speed)
            if state is State.CATCHING_UP and not self._to_live:
                self._move(Event.PACE)
        elif isinstance(control, Seek):
            assert seek_t is not None
            lo = oldest_t if oldest_t is not None else next_published_t
            hi = latest_t + 1 if latest_t is not None else next_published_t
            t = min(max(seek_t, lo), hi)
            clamped = control.t is not UNSET and t != control.t
            self._jump(t)
            self._to_live = False
            if not paused:
                self._resume(latest_t)
        else:  # Live
            self._jump(latest_t if latest_t is not None else next_published_t)
            self._to_live = True
            self.allowance = 0
            self._move(Event.UNPACE)
        self._last_ts = None
        return self.acknowledgement(clamped=clamped)

    def _jump(self, t: int) -> None:
        """Move the position to ``t`` (the next tick sent)."""
        self.next_t = t
        self.sent_t = t - 1
        self._past_to_ts = False

    def _resume(self, latest_t: int | None) -> None:
        """Play from ``next_t``: PACED with a speed, else CATCHING_UP (as from a resume)."""
        if self.speed is not None:
            self._move(Event.PACE)
        else:
            self.allowance = 0 if latest_t is None else max(0, latest_t - self.next_t + 1)
            self._move(Event.UNPACE)

    def replay_state(self) -> ReplayState:
        """``playing``, ``paused`` or ``live``, as a ``replay`` message says it."""
        if self.state is State.PAUSED:
            return "paused"
        if self.live or self._to_live:
            return "live"
        return "playing"

    def acknowledgement(self, *, clamped: bool = False) -> bytes:
        """The ``replay`` message for where the stream is now."""
        state = self.replay_state()
        speed = self.speed
        shown: float | Literal["max"] | None = None
        if speed is not None and state != "live":
            shown = "max" if math.isinf(speed) else _number(speed)
        ack = Replay(state=state, t=self.next_t, speed=shown)
        if clamped:
            ack.clamped = True
        return _encode(ack)

    def end_message(self) -> bytes:
        """The ``end`` message: the range is complete (close 1000 follows)."""
        return _encode(EndMessage(t=self.sent_t))

    def ended_range(self) -> StreamEnded:
        """Finish with the end of the range (1000) and return the exception to raise."""
        return self._ended(End.RANGE_END)
