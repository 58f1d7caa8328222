"""The ``/ws/stream`` protocol, independent of how bytes reach the socket.

A :class:`StreamSession` is one client: it sends the hello, the latest tick or the
replay, then alternates between two phases until the connection ends:

* **catch-up**: read from history at ``next_t`` (ring or segment files) and send,
  ``batch`` ticks per message, awaiting the transport after each message (so a slow
  client slows only its own reads);
* **live**: once ``next_t`` passes the latest published tick, become live in the
  same step (no await in between, so no tick can slip by) and let the hub deliver.

A transport (``wsraw`` for ``tickcast serve``, ``app`` for a stock ASGI server)
subclasses it and supplies how messages are written and what the live phase does.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

from tickcast import __version__
from tickcast.errors import CorruptRecordError, ProtocolError
from tickcast.fanout.hub import Subscriber
from tickcast.tick import EncodedTick, Fields, batch_message, encode_message, parse_fields

if TYPE_CHECKING:
    from tickcast.service import Service

__all__ = [
    "CATCH_UP_CHUNK",
    "MAX_CLIENT_MESSAGE",
    "BadParam",
    "SlowConsumer",
    "StreamParams",
    "StreamSession",
    "client_reply",
    "fields_param",
    "int_param",
    "parse_stream_params",
    "too_big",
]

MAX_CLIENT_MESSAGE = 64 * 1024  # bytes; larger client messages close the connection with 1009
CATCH_UP_CHUNK = 256  # ticks read from history per step of a catch-up
CLOSE_GOING_AWAY = 1001
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_SLOW = 4008


_DIGITS = re.compile(r"-?[0-9]+\Z")


class BadParam(ValueError):
    """A query parameter is invalid; ``param`` names it (HTTP 400 before the upgrade)."""

    def __init__(self, param: str, detail: str) -> None:
        super().__init__(f"{param}: {detail}")
        self.param = param
        self.detail = detail


class SlowConsumer(Exception):
    """The client lags by more than ``max_lag``: close with 4008, resume at ``resume_t``."""

    def __init__(self, resume_t: int) -> None:
        super().__init__(f"slow consumer; resume with from_t={resume_t}")
        self.resume_t = resume_t


@dataclass(frozen=True, slots=True)
class StreamParams:
    from_t: int | None = None
    fields: Fields = None
    batch: int = 1


def int_param(query: Mapping[str, str], name: str, lo: int, hi: int | None) -> int | None:
    """The integer query parameter ``name`` in ``lo..hi``, or None when absent.

    Raises:
        BadParam: not a plain decimal integer, or out of range.
    """
    raw = query.get(name)
    if raw is None:
        return None
    if not _DIGITS.match(raw):
        raise BadParam(name, f"must be an integer, got {raw!r}")
    value = int(raw)
    if value < lo or (hi is not None and value > hi):
        bound = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        raise BadParam(name, f"must be {bound}, got {value}")
    return value


def parse_stream_params(query: Mapping[str, str]) -> StreamParams:
    """Validate ``from_t``, ``fields`` and ``batch``.

    Raises:
        BadParam: naming the first invalid parameter.
    """
    from_t = int_param(query, "from_t", 0, None)
    batch = int_param(query, "batch", 1, 1000)
    return StreamParams(from_t=from_t, fields=fields_param(query), batch=batch or 1)


def fields_param(query: Mapping[str, str]) -> Fields:
    """The ``fields`` query parameter as a canonical selection.

    Raises:
        BadParam: an unknown or empty field name.
    """
    try:
        return parse_fields(query.get("fields"))
    except ValueError as exc:
        raise BadParam("fields", str(exc)) from None


def client_reply(data: bytes | str) -> bytes:
    """The reply to one client message: a pong, or a ``bad_message`` error."""
    try:
        msg = orjson.loads(data)
    except orjson.JSONDecodeError:
        return _error("bad_message", "not JSON")
    if not isinstance(msg, dict):
        return _error("bad_message", "expected a JSON object")
    if msg.get("type") == "ping":
        pong: dict[str, object] = {"type": "pong", "ts": round(time.time(), 6)}
        if "id" in msg:
            pong["id"] = msg["id"]
        return encode_message(pong)
    kind = repr(msg.get("type"))
    if len(kind) > 64:
        kind = kind[:61] + "..."
    return _error("bad_message", f"unknown message type {kind}; expected 'ping'")


def _number(value: float) -> float | int:
    """30.0 -> 30 (SPEC shows integers where the setting is whole)."""
    return int(value) if value.is_integer() else value


def _error(code: str, detail: str) -> bytes:
    return encode_message({"type": "error", "code": code, "detail": detail})


class StreamSession(Subscriber):
    """One ``/ws/stream`` client, whatever the transport."""

    def __init__(self, service: Service, params: StreamParams, *, ip: str) -> None:
        self.service = service
        self.params = params
        self.ip = ip
        self.live = False
        self.next_t = 0
        self.sent_t = -1  # the last t whose message the transport has taken
        self.evicted = False
        self._holds_slot = True  # the caller acquired a limits slot for ``ip``

    def release(self) -> None:
        """Give back the connection slot and leave the hub (idempotent, never blocks).

        Called on eviction itself, so a 4008 frees the slot before the close completes.
        """
        self.service.hub.discard(self)
        if self._holds_slot:
            self._holds_slot = False
            self.service.limits.release(self.ip)

    # -- what transports provide ----------------------------------------------------

    async def send_message(self, payload: bytes) -> None:
        """Send one text message (JSON bytes); may wait on backpressure."""
        raise NotImplementedError

    async def send_ticks(self, ticks: Sequence[EncodedTick]) -> None:
        """Send ticks as tick messages, or as batch messages of up to ``batch``."""
        fields = self.params.fields
        size = self.params.batch
        if size == 1:
            for tick in ticks:
                await self.send_message(tick.view(fields))
                self.sent_t = tick.t
            return
        for i in range(0, len(ticks), size):
            group = ticks[i : i + size]
            if len(group) == 1:
                await self.send_message(group[0].view(fields))
            else:
                await self.send_message(batch_message(t.view(fields) for t in group))
            self.sent_t = group[-1].t

    async def live_phase(self) -> None:
        """Run while live; return when the subscriber fell behind (to catch up)."""
        raise NotImplementedError

    # -- the protocol -----------------------------------------------------------------

    def hello(self) -> bytes:
        history = self.service.history
        msg: dict[str, object] = {
            "type": "hello",
            "epoch": history.epoch,
            "oldest_t": history.oldest_t,
            "latest_t": history.latest_t,
            "heartbeat_s": _number(self.service.config.heartbeat_s),
            "server": f"tickcast/{__version__}",
        }
        from_t = self.params.from_t
        if from_t is not None and history.oldest_t is not None and from_t < history.oldest_t:
            msg["truncated"] = True
        return encode_message(msg)

    def heartbeat(self) -> bytes:
        return encode_message(
            {
                "type": "heartbeat",
                "latest_t": self.service.history.latest_t,
                "ts": round(time.time(), 6),
            }
        )

    async def run(self) -> None:
        """Send hello, the start of the stream, then alternate catch-up and live.

        Registers with the hub for its whole life (so the lag policy covers the
        replay too) and unregisters on the way out, whatever the exit.

        Raises:
            SlowConsumer: when the lag exceeds ``max_lag`` during catch-up.
        """
        history = self.service.history
        hub = self.service.hub
        # Decide the start and build the hello in one step (no await between), so the
        # hello's oldest_t / latest_t / truncated describe exactly what follows.
        hello = self.hello()
        from_t = self.params.from_t
        first: EncodedTick | None = None
        if from_t is None:
            first = history.latest()
            self.next_t = history.next_published_t
        else:
            oldest = history.oldest_t
            self.next_t = from_t if oldest is None else max(from_t, oldest)
        await self.send_message(hello)
        if first is not None:
            await self.send_ticks([first])
        self.sent_t = self.next_t - 1
        latest = history.latest_t
        self.allowance = 0 if latest is None else max(0, latest - self.next_t + 1)
        hub.add(self)
        try:
            while True:
                await self.catch_up()
                await self.live_phase()
        finally:
            hub.discard(self)

    async def catch_up(self) -> None:
        """Send history from ``next_t`` until it reaches the live edge, then go live."""
        history = self.service.history
        limit = self.service.config.lag_limit
        while True:
            latest = history.latest_t
            if latest is None or self.next_t > latest:
                self.allowance = 0
                self.live = True
                return
            lag = latest - self.next_t + 1
            if lag > limit + self.allowance:
                raise self._slow()
            self.allowance = min(self.allowance, lag)
            ticks = await history.read(self.next_t, max(CATCH_UP_CHUNK, self.params.batch))
            if not ticks or ticks[0].t != self.next_t:
                # Retention removed what this client still needed: it must resume.
                raise self._slow()
            self.next_t = ticks[-1].t + 1
            await self.send_ticks(ticks)

    def _slow(self) -> SlowConsumer:
        """A 4008 decided here (catch-up), counted with the hub's evictions."""
        self.service.hub.evicted += 1
        return SlowConsumer(self.sent_t + 1)

    def close_reason(self, exc: BaseException | None) -> tuple[int, str]:
        """The close code and reason for how the session ended."""
        if isinstance(exc, SlowConsumer):
            return CLOSE_SLOW, str(exc)
        if self.evicted:  # the hub evicted it (and counted it)
            return CLOSE_SLOW, str(SlowConsumer(self.sent_t + 1))
        if isinstance(exc, ProtocolError):
            return exc.code, str(exc)
        if isinstance(exc, CorruptRecordError):
            return CLOSE_INTERNAL, "history unreadable: corrupt record"
        if exc is None:
            return CLOSE_GOING_AWAY, "server shutting down"
        return CLOSE_INTERNAL, "internal error"


def too_big(size: int) -> ProtocolError:
    return ProtocolError(
        f"message of {size} bytes exceeds {MAX_CLIENT_MESSAGE} bytes", code=CLOSE_TOO_BIG
    )
