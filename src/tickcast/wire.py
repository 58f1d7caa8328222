"""Wire facts of the ``/ws/stream`` protocol and the HTTP pages: one plain module.

What a client and the server must agree on lives here, once: the message type
names, the WebSocket close codes, the limits either side enforces or relies on,
and the shape of the messages a client reads before any tick (hello, heartbeat)
or gets in answer to its own (pong, error, and the ping it sends).

Invariants:

* Plain Python and msgspec only: no trio, anyio, Quart or Hypercorn, and nothing
  else of tickcast (an import-linter contract checks both). So ``tickcast.client``
  imports this module and nothing else of the server, and the API documents
  (``web/schemas.py``, ``web/asyncapi.py``) are generated from the same Structs.
* Every code in :class:`CloseCode` and every type in :class:`MessageType` is
  described in ``/asyncapi.json``, and nothing else is (``tests/test_wire.py``).
* Ticks themselves are not built through these Structs: a tick is bytes encoded
  once (``tick.py``). The Structs describe the other messages, and the server
  builds those through them (``protocol.py``), so the documents cannot drift.
"""

from __future__ import annotations

import enum
import re
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

__all__ = [
    "GAP_CAP_S",
    "MAX_BATCH",
    "MAX_CLIENT_MESSAGE",
    "MAX_SPEED",
    "MIN_SPEED",
    "PAGE_LIMIT",
    "CloseCode",
    "End",
    "Error",
    "Heartbeat",
    "Hello",
    "Live",
    "MessageType",
    "Pause",
    "Ping",
    "Play",
    "Pong",
    "Replay",
    "ReplayState",
    "Seek",
    "SetSpeed",
    "read_head",
]

# -- limits ----------------------------------------------------------------------------

PAGE_LIMIT = 10_000
"""Ticks per ``/incremental`` page at most: a larger ``limit`` is capped, not refused."""

MAX_CLIENT_MESSAGE = 64 * 1024
"""Bytes in one client message at most: a larger one closes the stream with 1009."""

MAX_BATCH = 1000
"""Ticks in one ``batch`` message at most: ``?batch=`` is ``1..MAX_BATCH``."""

MIN_SPEED = 0.1
MAX_SPEED = 1000.0
"""A replay's ``speed`` is ``MIN_SPEED..MAX_SPEED`` times real time, or ``"max"``."""

GAP_CAP_S = 5.0
"""A paced replay shortens a ``ts`` gap longer than this to this (then divides by speed)."""


class MessageType(enum.StrEnum):
    """The ``type`` of every JSON message on ``/ws/stream``."""

    # server -> client
    HELLO = "hello"  # always first
    TICK = "tick"  # one tick
    BATCH = "batch"  # consecutive ticks that were already waiting
    HEARTBEAT = "heartbeat"  # every heartbeat_s seconds
    PONG = "pong"  # the answer to a ping
    ERROR = "error"  # the answer to a message the server cannot follow
    REPLAY = "replay"  # the answer to a control message: where the stream is now
    END = "end"  # the last tick of the asked range has been sent (then close 1000)
    # client -> server
    PING = "ping"
    PAUSE = "pause"  # control messages: each answered by a "replay" message
    PLAY = "play"
    SPEED = "speed"
    SEEK = "seek"
    LIVE = "live"


class CloseCode(enum.IntEnum):
    """The WebSocket close codes of the stream (RFC 6455 §7.4, and ours in 4000-4999).

    A client reconnects after 1001 and 4008 (4008 at once, at the ``from_t`` the
    reason names), starts over after 4009, and gives up on 1002, 1007, 1008, 1009
    and 1011: the same request would end the same way.
    """

    NORMAL = 1000  # the end of an asked range (after "end"); a client's close, echoed
    GOING_AWAY = 1001  # the server is shutting down
    PROTOCOL_ERROR = 1002  # the client broke RFC 6455 framing
    INVALID_DATA = 1007  # a text message that is not UTF-8
    POLICY_VIOLATION = 1008  # not sent by this server; a proxy in front of it may send it
    TOO_BIG = 1009  # a client message over MAX_CLIENT_MESSAGE bytes
    INTERNAL_ERROR = 1011  # the history is unreadable, or a server bug (logged)
    SLOW_CONSUMER = 4008  # lag past max_lag; the reason names the from_t to resume with
    EPOCH_CHANGED = 4009  # the history was reset (a scale-out edge saw a new epoch)


# -- messages ----------------------------------------------------------------------------


class Hello(msgspec.Struct, tag=MessageType.HELLO.value, tag_field="type"):
    """Always the first message."""

    epoch: Annotated[str, Meta(description="id of this history; changes when it is reset")]
    oldest_t: Annotated[int, Meta(ge=0)] | None
    latest_t: Annotated[int, Meta(ge=0)] | None
    heartbeat_s: Annotated[float, Meta(gt=0, description="seconds between heartbeats")]
    server: Annotated[str, Meta(pattern="^tickcast/", description="`tickcast/<version>`")]
    truncated: (
        Annotated[
            Literal[True],
            Meta(
                description="present only when `from_t < oldest_t`: the stream starts at oldest_t"
            ),
        ]
        | UnsetType
    ) = UNSET


class Heartbeat(msgspec.Struct, tag=MessageType.HEARTBEAT.value, tag_field="type"):
    """Sent every `heartbeat_s` seconds."""

    latest_t: Annotated[int, Meta(ge=0)] | None
    ts: float


class Pong(msgspec.Struct, tag=MessageType.PONG.value, tag_field="type"):
    """The answer to a `ping`; echoes its `id` when it had one."""

    ts: float
    id: Any | UnsetType = UNSET


class Error(msgspec.Struct, tag=MessageType.ERROR.value, tag_field="type"):
    """The answer to a client message the server cannot follow; the connection stays open."""

    code: Literal["bad_message"]
    detail: str


class Ping(msgspec.Struct, tag=MessageType.PING.value, tag_field="type"):
    """Asks for a `pong`; `id` (any JSON value) is echoed in it."""

    id: Any | UnsetType = UNSET


# -- replay ------------------------------------------------------------------------------

Speed = Annotated[float, Meta(ge=MIN_SPEED, le=MAX_SPEED)] | Literal["max"]
ReplayState = Literal["playing", "paused", "live"]


class Replay(msgspec.Struct, tag=MessageType.REPLAY.value, tag_field="type"):
    """The answer to a control message, sent before any tick that follows from it.

    Between two `replay` messages the ticks are strictly consecutive.
    """

    state: Annotated[
        ReplayState,
        Meta(description="`playing` (history, paced or not), `paused`, or `live`"),
    ]
    t: Annotated[int, Meta(ge=0, description="the next tick the stream will send")]
    speed: Annotated[
        Speed | None,
        Meta(description="the pace of history; null when live or when no speed was set"),
    ]
    clamped: (
        Annotated[
            Literal[True],
            Meta(description="present only when a seek's t was outside the retained range"),
        ]
        | UnsetType
    ) = UNSET


class End(msgspec.Struct, tag=MessageType.END.value, tag_field="type"):
    """The asked range (`to_t` / `to_ts`) has been sent; the server closes with 1000."""

    t: Annotated[int, Meta(ge=-1, description="the last tick sent (from_t - 1 if none)")]


class Pause(msgspec.Struct, tag=MessageType.PAUSE.value, tag_field="type"):
    """Stop sending ticks (heartbeats go on); the position is kept."""


class Play(msgspec.Struct, tag=MessageType.PLAY.value, tag_field="type"):
    """Go on from the position, at the stream's speed (as fast as it reads without one)."""


class SetSpeed(msgspec.Struct, tag=MessageType.SPEED.value, tag_field="type"):
    """Pace history at `speed` times real time from now on (`max`: as fast as it reads)."""

    speed: Speed


class Seek(msgspec.Struct, tag=MessageType.SEEK.value, tag_field="type"):
    """Go to tick `t`, or to the first tick with `ts >= ts` (exactly one of the two)."""

    t: Annotated[int, Meta(ge=0)] | UnsetType = UNSET
    ts: Annotated[float, Meta(ge=0)] | UnsetType = UNSET


class Live(msgspec.Struct, tag=MessageType.LIVE.value, tag_field="type"):
    """Send the latest tick next, then every new tick."""


# -- the head of a tick ---------------------------------------------------------------------

# A tick's JSON starts with its keys ``type, t, ts`` in that order (docs/protocol.md,
# "tick"), so a reader can take ``t`` and ``ts`` off the first bytes of a message, a
# stored line or an export line without parsing the rest. The trailing [,}] makes a
# number cut off by the end of a prefix fail to match, rather than read as shorter.
_HEAD = re.compile(rb'^\{"type":"tick","t":(\d+),"ts":([0-9.eE+-]+)[,}]')


def read_head(raw: bytes) -> tuple[int, float] | None:
    """``(t, ts)`` read off the head of a tick's JSON (keys ``type, t, ts`` first).

    ``raw`` may be just the first bytes of a record. None when they do not start
    ``{"type":"tick","t":N,"ts":X`` followed by ``,`` or ``}`` (a cut number does not match).
    """
    m = _HEAD.match(raw)
    if m is None:
        return None
    try:
        return int(m.group(1)), float(m.group(2))
    except ValueError:  # "1.2.3" matches the character class but is no number
        return None
