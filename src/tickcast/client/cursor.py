"""The client's position in the feed, and what to do after every event. Plain Python.

Invariants (the whole no-gap, no-duplicate promise rests on them):

* ``next_t`` is the ``t`` the next tick handed out must have; ``None`` only before
  the first tick of a stream started at the live end or by time (``from_ts``). A
  tick is handed out only if its ``t == next_t``; then ``next_t += 1``. So whatever
  ends a connection, the next one asks ``from_t=next_t`` = last ``t`` handed out + 1
  (``from_ts`` again while no tick came).
* ``epoch`` is the history ``next_t`` belongs to (``None`` until the first hello).
  A hello with another epoch means ``next_t`` points into other data.
* Skipping ticks happens in two places only, both under ``on_gap``: a hello with
  ``truncated`` (retention) and a hello with a new epoch (a reset).
* Never loop without progress: answers that move nothing (a 4008 close, an empty
  history page while the server has ticks there) are counted, the count is reset
  by a tick, and the ``MAX_STALLS``-th in a row raises :class:`NoProgressError`.
* A replay with a range ends once, for good: at the server's ``end`` message, or
  before a reconnect when ``next_t`` is already past ``to_t`` (the last tick came,
  the ``end`` was lost with the connection). :meth:`Cursor.finished` says which.

The I/O layer (``follow.py``) asks :meth:`Cursor.query_start` before connecting, feeds
:meth:`Cursor.hello` and :meth:`Cursor.take`, and on the way out asks
:meth:`Cursor.closed` or :meth:`Cursor.refused` whether to reconnect at once, back
off first, or give up (they raise).
"""

from __future__ import annotations

import enum
import logging
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from ..errors import (
    BadMessageError,
    EpochChangedError,
    NoProgressError,
    RefusedError,
    StreamClosedError,
    TruncatedError,
)
from ..wire import CloseCode, MessageType
from .settings import OnGap

__all__ = ["MAX_STALLS", "Backoff", "Cursor", "Next", "Tick", "silence_limit_s"]

log = logging.getLogger("tickcast.client")

# A tick as the client hands it out: the parsed JSON object, keys as on the wire.
Tick = dict[str, Any]

# Close codes a reconnect cannot fix: the same request would fail the same way. 1002,
# 1003, 1007, 1009 and 1010 say this client broke the protocol; 1011 from tickcast means a
# damaged record at this position (or a server bug), which a retry would hit again.
FATAL_CLOSES = frozenset({1002, 1003, 1007, 1009, 1010, 1011})
# HTTP statuses worth retrying: the server is busy or on its way back.
RETRY_STATUSES = frozenset({408, 429, 502, 503, 504})
MAX_STALLS = 4  # answers in a row that move nothing before NoProgressError
_RESUME_T = re.compile(r"from_t=(\d+)")


class Next(enum.Enum):
    """What to do once a connection has ended."""

    NOW = "reconnect now"  # 4008, 4009, a new epoch being followed: nothing to wait for
    BACK_OFF = "back off, then reconnect"  # the server is away or busy


def silence_limit_s(heartbeat_s: object) -> float:
    """How long a connection may stay silent before it counts as dead: two heartbeats.

    Plus 5 s of slack for a busy network or a paused server process, so that one late
    heartbeat does not cost a reconnect. A hello without a usable ``heartbeat_s`` is
    taken to mean the server's default, 30 s.
    """
    beat = float(heartbeat_s) if isinstance(heartbeat_s, int | float) else 30.0
    return 2 * beat + 5.0


@dataclass
class Backoff:
    """Capped exponential backoff with jitter.

    The n-th consecutive wait is drawn uniformly from ``[base/2, base]`` where
    ``base = min(initial_s * 2**n, max_s)``: 0.25 to 0.5 s, 0.5 to 1 s, ... up to 5 to 10 s by
    default. Jitter spreads the reconnects of many clients after a restart.
    """

    initial_s: float = 0.5
    max_s: float = 10.0
    random: Callable[[], float] = random.random
    _base_s: float = 0.0

    def delay_s(self) -> float:
        """The next wait; each call doubles the base until the cap."""
        self._base_s = self.initial_s if self._base_s == 0.0 else self._base_s * 2
        self._base_s = min(self._base_s, self.max_s)
        return self._base_s * (0.5 + 0.5 * self.random())

    def reset(self) -> None:
        """A connection worked: the next failure waits ``initial_s`` again."""
        self._base_s = 0.0


@dataclass
class Cursor:
    """Where a stream is (``next_t``, ``epoch``), the gap policy, and the stall count.

    One per ``stream()``/``history()`` call, living across all its connections or
    pages; mutated only by its own methods, from the one task iterating.
    """

    next_t: int | None = None
    epoch: str | None = None
    on_gap: OnGap = "raise"
    from_ts: float | None = None  # the start by time, asked while no tick came
    to_t: int | None = None  # a replay's last t (inclusive), if it has one
    ended: bool = False  # the server said "end": the replay's range is complete
    stalls: int = 0  # answers in a row that moved nothing (see stalled())
    moved: bool = False  # a tick came since the last 4008

    def query_start(self) -> dict[str, str]:
        """Where the next request starts: ``from_t``, or ``from_ts`` before any tick."""
        if self.next_t is not None:
            return {"from_t": str(self.next_t)}
        if self.from_ts is not None:
            return {"from_ts": repr(self.from_ts)}
        return {}

    def finished(self) -> bool:
        """Whether a replay's range is complete: nothing to connect for any more."""
        if self.ended:
            return True
        return self.to_t is not None and self.next_t is not None and self.next_t > self.to_t

    def stalled(self, detail: str) -> None:
        """An answer that moved nothing (a 4008 with no tick since the last one, an
        empty page while the server has ticks from ``next_t``).

        Raises:
            NoProgressError: the ``MAX_STALLS``-th such answer in a row.
        """
        self.stalls += 1
        if self.stalls >= MAX_STALLS:
            raise NoProgressError(next_t=self.next_t, attempts=self.stalls, detail=detail)
        log.warning("no progress at t=%s (%d in a row): %s", self.next_t, self.stalls, detail)

    # -- connecting ----------------------------------------------------------------------

    def hello(self, data: bytes | str) -> dict[str, Any] | None:
        """Check the server's first message: the hello to read on, or None to reconnect
        now (a new epoch, followed from its first tick with ``on_gap="continue"``).

        Raises:
            EpochChangedError: a new epoch, with ``on_gap="raise"``.
            TruncatedError: ``truncated`` (ticks from ``next_t`` are gone), with
                ``on_gap="raise"``.
            BadMessageError: the first message is not a hello.
        """
        msg = _object(data)
        if msg.get("type") != "hello":
            raise BadMessageError(f"expected a hello first, got {str(msg)[:200]}")
        epoch = str(msg.get("epoch"))
        if self.epoch is not None and epoch != self.epoch:
            gap = EpochChangedError(old=self.epoch, new=epoch, next_t=self.next_t)
            if self.on_gap == "raise":
                raise gap
            log.warning("%s; carrying on from t=0 of the new history", gap)
            self.epoch, self.next_t = epoch, 0
            return None  # this connection replays our old from_t in the new history
        self.epoch = epoch
        oldest_t = msg.get("oldest_t")
        if msg.get("truncated") and isinstance(oldest_t, int):
            self.truncated(oldest_t)
        return msg

    def truncated(self, oldest_t: int) -> None:
        """The server starts at ``oldest_t``: ticks ``next_t .. oldest_t - 1`` are gone.

        Raises:
            TruncatedError: with ``on_gap="raise"``; otherwise ``next_t`` jumps.
        """
        if self.next_t is None and self.from_ts is not None:
            # A seek by time landed on oldest_t: ticks before it (some may match) are gone.
            gap = TruncatedError(next_t=None, oldest_t=oldest_t)
            if self.on_gap == "raise":
                raise gap
            log.warning("%s; carrying on at t=%d", gap, oldest_t)
            return
        if self.next_t is None or oldest_t <= self.next_t:
            return
        gap = TruncatedError(next_t=self.next_t, oldest_t=oldest_t)
        if self.on_gap == "raise":
            raise gap
        log.warning("%s; carrying on at t=%d", gap, oldest_t)
        self.next_t = oldest_t

    # -- reading -------------------------------------------------------------------------

    def take(self, data: bytes | str) -> list[Tick]:
        """The ticks in one server message (none for heartbeats and the like), checked.

        An ``end`` (a replay's range is complete) sets :attr:`ended`; a ``replay``
        acknowledgement changes nothing (this client sends no control message that
        would move the stream, so ``t`` still runs on from ``next_t``).

        Raises:
            BadMessageError: not a JSON object, or a ``t`` other than ``next_t``.
        """
        msg = _object(data)
        kind = msg.get("type")
        if kind == "tick":
            ticks = [msg]
        elif kind == "batch" and isinstance(msg.get("ticks"), list):
            ticks = msg["ticks"]
        else:
            if kind == "error":
                log.warning("the server says: %s", msg.get("detail", msg))
            elif kind == MessageType.END:
                self.end(msg.get("t"))
            return []  # heartbeat, pong, replay, and message types added later
        self.advance(ticks)
        return ticks

    def advance(self, ticks: list[Any]) -> None:
        """Check that ``ticks`` continue the stream and move ``next_t`` past them.

        Raises:
            BadMessageError: a tick without an integer ``t``, or out of sequence.
        """
        for tick in ticks:
            t = tick.get("t") if isinstance(tick, dict) else None
            if not isinstance(t, int):
                raise BadMessageError(f"a tick without an integer t: {str(tick)[:200]}")
            if self.next_t is not None and t != self.next_t:
                raise BadMessageError(f"expected t={self.next_t}, got t={t}")
            self.next_t = t + 1
            self.stalls = 0
            self.moved = True

    def end(self, t: object) -> None:
        """The server ended the replay's range after tick ``t``; a close 1000 follows.

        ``t`` is the last tick the server sent (``from_t - 1`` on a connection that
        sent none, such as a resume after the range's last tick by time), so it is
        the last one taken here. A mismatch would be a server bug; it is logged, and
        the range still ends (every tick taken was checked on the way).
        """
        last = None if self.next_t is None else self.next_t - 1
        if isinstance(t, int) and last is not None and t != last:
            log.warning("the server ends the range at t=%d, the last tick here is t=%d", t, last)
        log.info("end of the range (last t=%s)", last)
        self.ended = True

    # -- after a connection ---------------------------------------------------------------

    def closed(self, code: int, reason: str) -> Next:
        """The server closed the stream (1006: it went away without a close frame).

        Raises:
            StreamClosedError: a code that reconnecting cannot fix (see ``FATAL_CLOSES``).
        """
        if code == CloseCode.SLOW_CONSUMER:
            match = _RESUME_T.search(reason)
            named = int(match.group(1)) if match else None
            if self.next_t is None:
                self.next_t = named
            elif named is not None and named != self.next_t:
                # Never expected (the server names exactly what we received + 1); our
                # own count is what "no gap, no duplicate" is measured against.
                log.warning("4008 names from_t=%d, but t=%d comes next here", named, self.next_t)
            log.info("closed 4008 (%s); resuming at from_t=%s", reason, self.next_t)
            if self.moved:  # ticks came since the last 4008: an ordinary slow-consumer close
                self.moved = False
            else:
                self.stalled(f"closed 4008 ({reason})")
            return Next.NOW
        if code == CloseCode.EPOCH_CHANGED:
            # The hello of the next connection carries the new epoch: hello() decides.
            log.info("closed 4009 (%s); reconnecting to learn the new epoch", reason)
            return Next.NOW
        if code in FATAL_CLOSES:
            raise StreamClosedError(code, reason)
        log.warning("stream closed (%d %s)", code, reason or "no reason")
        return Next.BACK_OFF

    def refused(self, status: int, body: bytes) -> Next:
        """The server answered a request (an upgrade or a page) with an HTTP error.

        Raises:
            RefusedError: a status that asking again cannot fix (400, 401, 404...).
        """
        detail = error_detail(body)
        if status not in RETRY_STATUSES:
            raise RefusedError(status, detail)
        log.warning("refused with HTTP %d (%s)", status, detail)
        return Next.BACK_OFF


def _object(data: bytes | str) -> dict[str, Any]:
    """Parse one server message, which must be a JSON object.

    Raises:
        BadMessageError: not JSON, or not an object; the start of it is quoted.
    """
    try:
        msg = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise BadMessageError(f"not JSON: {data[:200]!r}") from None
    if not isinstance(msg, dict):
        raise BadMessageError(f"expected a JSON object, got {str(msg)[:200]}")
    return msg


def error_detail(body: bytes) -> str:
    """The ``detail`` of a tickcast JSON error body, or the start of any other body."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = None
    if isinstance(doc, dict) and "detail" in doc:
        return str(doc["detail"])
    return body[:200].decode(errors="replace") or "no body"
