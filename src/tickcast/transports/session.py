"""The ``/ws/stream`` protocol and the session skeleton, whatever the transport.

A :class:`StreamSession` is one client: it sends the hello, the latest tick or the
replay, then alternates between two phases until the connection ends:

* **catch-up**: read from history at ``next_t`` (ring or segment files) and send,
  ``batch`` ticks per message, awaiting the transport after each message (so a slow
  client slows only its own reads);
* **live**: once ``next_t`` passes the latest published tick, become live in the
  same step (no await in between, so no tick can slip by) and let the hub deliver.

Its lifecycle is :class:`State` (OPEN -> CLOSING -> CLOSED) plus the reason it
ended (:attr:`StreamSession.end`), which decides the :class:`CloseCode`. The slot
taken by ``intake.admit`` is given back the moment the session starts closing,
so an evicted client's address may reconnect at once.

A transport (``raw`` for ``tickcast serve``, ``asgi`` for a stock ASGI server)
subclasses it and supplies only how bytes reach the socket: :meth:`send_message`,
:meth:`deliver`, :meth:`live_phase`, :meth:`read_messages` and :meth:`close_connection`.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import orjson
import trio

from tickcast import __version__
from tickcast.errors import CorruptRecordError, ProtocolError
from tickcast.fanout.hub import Subscriber
from tickcast.tick import EncodedTick, batch_message, encode_message
from tickcast.transports.params import StreamParams, start_t

if TYPE_CHECKING:
    from tickcast.service import Service

__all__ = [
    "CATCH_UP_CHUNK",
    "MAX_CLIENT_MESSAGE",
    "CloseCode",
    "EpochChanged",
    "PeerGone",
    "SlowConsumer",
    "State",
    "StreamSession",
    "client_reply",
    "heartbeat_message",
    "too_big",
]

log = logging.getLogger("tickcast.ws")

MAX_CLIENT_MESSAGE = 64 * 1024  # bytes; larger client messages close the connection with 1009
CATCH_UP_CHUNK = 256  # ticks read from history per step of a catch-up


class CloseCode(enum.IntEnum):
    """The WebSocket close codes tickcast sends (RFC 6455 §7.4, and ours in 4000-4999)."""

    GOING_AWAY = 1001  # server shutting down
    PROTOCOL_ERROR = 1002  # the client broke RFC 6455
    INVALID_DATA = 1007  # a text message that is not UTF-8
    TOO_BIG = 1009  # a client message over 64 KiB
    INTERNAL_ERROR = 1011  # history unreadable, or a bug (logged)
    SLOW_CONSUMER = 4008  # lag past max_lag; the reason names the from_t to resume with
    EPOCH_CHANGED = 4009  # the producer's history was reset (scale-out edges, SPEC §7)


class State(enum.Enum):
    """A session's lifecycle."""

    OPEN = "open"  # upgraded; streaming (catching up or live: see ``Subscriber.live``)
    CLOSING = "closing"  # ended: slot released, the close frame is being delivered
    CLOSED = "closed"  # the socket is closed


class SlowConsumer(Exception):
    """The client lags by more than ``max_lag``: close with 4008, resume at ``resume_t``."""

    def __init__(self, resume_t: int) -> None:
        super().__init__(f"slow consumer; resume with from_t={resume_t}")
        self.resume_t = resume_t


class Evicted(Exception):
    """The hub evicted the session (4008; the ``from_t`` is decided at the close)."""


class EpochChanged(Exception):
    """The history behind this session was reset: close with 4009."""

    def __init__(self) -> None:
        super().__init__("epoch changed")


class PeerGone(Exception):
    """The client closed the connection, or it broke."""


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


def too_big(size: int) -> ProtocolError:
    return ProtocolError(
        f"message of {size} bytes exceeds {MAX_CLIENT_MESSAGE} bytes", code=CloseCode.TOO_BIG
    )


def heartbeat_message(latest_t: int | None) -> bytes:
    """A heartbeat message, stamped now (the same for every client of a service)."""
    return encode_message({"type": "heartbeat", "latest_t": latest_t, "ts": round(time.time(), 6)})


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
        self.ip = ip  # the address whose connection slot this session holds while OPEN
        self.live = False
        self.next_t = 0
        self.from_t = params.from_t  # with from_ts: the t it resolved to (see run())
        self.sent_t = -1  # the last t whose message the transport has taken
        self.state = State.OPEN
        self.end: BaseException | None = None  # why it ended (None: cancelled, i.e. shutdown)
        self.closed = trio.Event()  # set once the state is CLOSED
        self._scope = trio.CancelScope()
        self._traffic = service.traffic

    # -- ending -----------------------------------------------------------------------

    def terminate(self, reason: BaseException) -> None:
        """End the session for ``reason`` from outside its task (never blocks).

        The slot is released at once; the session task is cancelled and closes the
        connection with the code ``reason`` maps to (see :meth:`close_reason`).
        """
        if self.end is None:
            self.end = reason
        self.release()
        self._scope.cancel()

    def evict(self) -> None:
        """The hub's 4008 (it has already left the hub and been counted)."""
        self.terminate(Evicted())

    def reset(self) -> None:
        """The hub's 4009: the history was reset (a scale-out edge saw a new epoch)."""
        self.terminate(EpochChanged())

    def release(self) -> None:
        """Leave the hub and give back the connection slot (idempotent, never blocks).

        Moves the state to CLOSING: an eviction frees the slot before the close.
        """
        self.service.hub.discard(self)
        if self.state is State.OPEN:
            self.state = State.CLOSING
            self.live = False
            self.service.limits.release(self.ip)

    def close_reason(self) -> tuple[CloseCode, str]:
        """The close code and reason for how the session ended (:attr:`end`)."""
        end = self.end
        if isinstance(end, SlowConsumer):
            return CloseCode.SLOW_CONSUMER, str(end)
        if isinstance(end, Evicted):  # exact: nothing is queued after the eviction
            return CloseCode.SLOW_CONSUMER, str(SlowConsumer(self.sent_t + 1))
        if isinstance(end, EpochChanged):
            return CloseCode.EPOCH_CHANGED, str(end)
        if isinstance(end, ProtocolError):
            return CloseCode(end.code), str(end)
        if isinstance(end, CorruptRecordError):
            return CloseCode.INTERNAL_ERROR, "history unreadable: corrupt record"
        if end is None:
            return CloseCode.GOING_AWAY, "server shutting down"
        return CloseCode.INTERNAL_ERROR, "internal error"

    # -- the skeleton -------------------------------------------------------------------

    async def serve(self) -> None:
        """Run the session until it ends, then close the connection.

        The protocol (:meth:`run`) and the transport's reader (:meth:`read_messages`)
        run side by side; whichever ends first ends the other. On cancellation
        (server shutdown) the client gets 1001. The slot is released before the
        close; :meth:`close_connection` runs shielded (the transport bounds it).
        """
        self._traffic.accepted()
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._read)
                    try:
                        await self.run()
                    except (SlowConsumer, PeerGone, ProtocolError, CorruptRecordError) as exc:
                        self._ended(exc)
                    except Exception as exc:  # a bug or a store failure: 1011, logged
                        log.exception("stream session for %s failed", self.ip)
                        self._ended(exc)
                    nursery.cancel_scope.cancel()
        finally:
            self.release()
            with trio.CancelScope(shield=True):
                await self.close_connection(*self.close_reason())
            self.state = State.CLOSED
            self.closed.set()

    def _ended(self, exc: BaseException) -> None:
        if self.end is None:
            self.end = exc

    async def _read(self) -> None:
        try:
            await self.read_messages()
        except (PeerGone, ProtocolError) as exc:
            self._ended(exc)
        except Exception as exc:
            log.exception("reading from %s failed", self.ip)
            self._ended(exc)
        self._scope.cancel()

    # -- what transports provide ----------------------------------------------------

    def count(self, nbytes: int) -> None:
        """Count one message of ``nbytes`` payload bytes sent to this client."""
        self._traffic.sent(nbytes)

    def greeted(self) -> None:
        """Called once the hello has been sent (a transport may start heartbeats)."""

    async def send_message(self, payload: bytes) -> None:
        """Send one text message (JSON bytes); may wait on backpressure."""
        raise NotImplementedError

    async def send_ticks(self, ticks: Sequence[EncodedTick]) -> None:
        """Send ticks as tick messages, or as batch messages of up to ``batch``."""
        fields = self.params.fields
        size = self.params.batch
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

    async def read_messages(self) -> None:
        """Read and answer client messages until the client leaves.

        Raises:
            PeerGone: the client closed or the connection broke.
            ProtocolError: the client broke the protocol (its close code).
        """
        raise NotImplementedError

    async def close_connection(self, code: CloseCode, reason: str) -> None:
        """Send the close (``code``, ``reason``) if it should be sent, and close.

        Runs shielded from cancellation: it must bound its own waiting.
        """
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
        from_t, oldest = self.from_t, history.oldest_t
        if from_t is not None and oldest is not None:
            # from_t: ticks from_t .. oldest_t - 1 are gone. from_ts: the seek landed on
            # oldest_t and retention has deleted ticks before it, which may have matched.
            # With from_t too, only if from_t itself reached below oldest_t.
            by_time = self.params.from_ts is not None and (self.params.from_t or 0) < oldest
            if from_t < oldest or (by_time and from_t == oldest > 0):
                msg["truncated"] = True
        return encode_message(msg)

    async def run(self) -> None:
        """Send hello, the start of the stream, then alternate catch-up and live.

        Registers with the hub for its whole life (so the lag policy covers the
        replay too) and unregisters on the way out, whatever the exit.

        Raises:
            SlowConsumer: when the lag exceeds ``max_lag`` during catch-up.
        """
        history = self.service.history
        hub = self.service.hub
        if self.params.from_ts is not None:  # resolve to a t (<= latest_t + 1), then as from_t
            found = await history.find_ts(self.params.from_ts)
            self.from_t = start_t(self.params.from_t, found)  # with from_t: both bounds
        # Decide the start and build the hello in one step (no await between), so the
        # hello's oldest_t / latest_t / truncated describe exactly what follows.
        hello = self.hello()
        from_t = self.from_t
        first: EncodedTick | None = None
        if from_t is None:
            first = history.latest()
            self.next_t = history.next_published_t
        else:
            oldest = history.oldest_t
            self.next_t = from_t if oldest is None else max(from_t, oldest)
        # Join the hub before the first await: a send may block from the first byte (the
        # ASGI transport awaits TCP), and a client that never reads even its hello must
        # still fall under the lag policy (4008, its slot freed), not hold it forever.
        self.sent_t = (self.next_t if first is None else first.t) - 1
        latest = history.latest_t
        self.allowance = 0 if latest is None else max(0, latest - self.next_t + 1)
        hub.add(self)
        try:
            await self.send_message(hello)
            self.greeted()
            if first is not None:
                await self.send_ticks([first])
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
        """A 4008 decided here (catch-up), counted with the hub's."""
        self.service.hub.count_slow_close()
        return SlowConsumer(self.sent_t + 1)
