"""``/ws/stream`` on a raw non-blocking socket: the fast transport of ``tickcast serve``.

Invariants:

* Outgoing frames are written by us (``frames.py``), never by wsproto, except
  control replies (pong, close) which wsproto serialises. Frames are never split or
  interleaved: every write goes through one outbox, in order.
* Live delivery happens inside :meth:`Hub.publish`: when the outbox is empty the
  cached frame goes straight to ``socket.send`` (no task switch per client); what the
  kernel does not take waits in the outbox, flushed by the session task. When the
  outbox holds more than ``LIVE_BACKLOG`` bytes, :meth:`deliver` refuses the tick and
  the session catches up from history instead (the bounded backpressure point).
* The fast path is a :class:`RawLane` (one per field set and window): a live session
  whose outbox is empty is a member, and a tick costs it one ``send`` of the lane's
  frame and nothing else (no per-session attribute is read or written; ``next_t``
  and ``sent_t`` are the lane's edge, written back when it leaves). A session is a
  member only while its outbox is empty: the moment anything is queued (the rest of a
  short send, a heartbeat or a reply that did not go at once) it leaves, so every
  write still goes through the outbox in order; it rejoins once the outbox is empty.
* Every exit releases the connection slot first, then closes: a close frame with its
  code, a bounded flush (``config.close_grace_s``), and an abortive close (RST) if the client
  will not take the bytes — so a stalled client's socket never lingers.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
from collections import deque
from collections.abc import Iterable, Sequence

import trio
from wsproto import WSConnection
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage

from tickcast.fanout.hub import Hub, Lane, Subscriber
from tickcast.fanout.traffic import Traffic
from tickcast.service import Service
from tickcast.tick import EncodedTick, Fields, batch_message
from tickcast.transports.frames import close_frame, message_frame, tick_frame
from tickcast.transports.heartbeats import Heartbeats
from tickcast.transports.params import StreamParams
from tickcast.transports.session import (
    MAX_CLIENT_MESSAGE,
    CloseCode,
    PeerGone,
    State,
    StreamSession,
    client_reply,
    too_big,
)

__all__ = ["RawLane", "RawSession"]

log = logging.getLogger("tickcast.ws")

LIVE_BACKLOG = 256 * 1024  # outbox bytes beyond which a live client falls back to catch-up
CATCH_UP_HIGH_WATER = 128 * 1024  # catch-up waits until the outbox is below this (< LIVE_BACKLOG)
SHUTDOWN_GRACE = 2.0  # seconds: the close grace at shutdown (SPEC: exit within 5 s)
RECV_BYTES = 65536


class ClientClosed(PeerGone):
    """The client sent a close frame (our reply is queued)."""


class RawLane(Lane):
    """Live raw sessions with an empty outbox on one field set and window.

    :meth:`publish` is the floor's loop: the tick's cached frame, then one
    ``sock.send`` per member; messages and bytes are counted once for the lot. A
    member the kernel does not take the whole frame from leaves after the loop,
    the rest of the frame in its outbox (or its socket broken).
    """

    def __init__(self, hub: Hub, traffic: Traffic, fields: Fields, wbits: int) -> None:
        self.hub = hub
        self.traffic = traffic
        self.fields = fields
        self.wbits = wbits
        # socket -> its session, in joining order (a dict: O(1) removal). Keyed by the
        # socket, not its bound send: in place, each object the loop touches per
        # member is a likely cache miss, and the socket is touched by send anyway.
        self._members: dict[socket.socket, RawSession] = {}

    def __len__(self) -> int:
        return len(self._members)

    def members(self) -> Iterable[Subscriber]:
        return self._members.values()

    def add(self, sub: Subscriber) -> None:
        assert isinstance(sub, RawSession)
        self._members[sub.sock] = sub

    def remove(self, sub: Subscriber, next_t: int) -> None:
        assert isinstance(sub, RawSession)
        del self._members[sub.sock]
        sub.next_t = next_t
        sub.sent_t = next_t - 1

    def publish(self, tick: EncodedTick) -> None:
        frame = tick_frame(tick, self.fields, self.wbits)
        n = len(frame)
        members = self._members
        short: list[tuple[socket.socket, int | OSError]] = []
        for sock in members:
            try:
                sent = sock.send(frame)
            except OSError as exc:  # BlockingIOError: nothing taken; else the socket broke
                short.append((sock, exc))
                continue
            if sent != n:
                short.append((sock, sent))
        taken = len(members)
        t = tick.t
        for sock, result in short:
            session = members[sock]
            if isinstance(result, BlockingIOError):
                result = 0
            if isinstance(result, OSError):
                taken -= 1
                self.hub.leave(session, next_t=t)
                session._break(result)
            else:
                self.hub.leave(session, next_t=t + 1)
                session._queue(frame, result)
        self.traffic.sent_many(taken, taken * len(tick.view(self.fields)))


class RawSession(StreamSession):
    """A stream session writing frames directly to a non-blocking socket."""

    def __init__(
        self,
        service: Service,
        params: StreamParams,
        *,
        ip: str,
        sock: socket.socket,
        ws: WSConnection,
        wbits: int,
        beats: Heartbeats,
        # Backpressure
        live_backlog: int = LIVE_BACKLOG,
        high_water: int = CATCH_UP_HIGH_WATER,
    ) -> None:
        super().__init__(service, params, ip=ip)
        self._live_backlog = live_backlog
        self._high_water = high_water
        self.sock = sock
        self.ws = ws
        self.wbits = wbits
        self._out: deque[memoryview] = deque()
        self._out_bytes = 0
        self._wake = trio.Event()
        self._room = trio.Event()  # set when the outbox drains to the high-water mark
        self._broken: BaseException | None = None  # the socket error that broke the outbox
        self._beats = beats

    # -- writing ----------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        """Queue ``data`` after what is pending, sending at once if nothing is."""
        if self._broken is not None:
            return
        if self._out:
            self._queue(data, 0)
            return
        try:
            n = self.sock.send(data)
        except BlockingIOError:
            n = 0
        except OSError as exc:
            self._break(exc)
            return
        if n != len(data):
            self._queue(data, n)

    def _queue(self, data: bytes, offset: int) -> None:
        """Put ``data[offset:]`` in the outbox (it leaves the lane: the outbox is not empty)."""
        if self.lane is not None:
            self.service.hub.leave(self)
        view = memoryview(data)[offset:] if offset else memoryview(data)
        self._out.append(view)
        self._out_bytes += len(view)
        self._wake.set()

    def _break(self, exc: BaseException) -> None:
        if self.lane is not None:
            self.service.hub.leave(self)
        self._broken = exc
        self._out.clear()
        self._out_bytes = 0
        self.live = False
        self._wake.set()
        self._room.set()

    def _join_lane(self) -> None:
        """Become a member of the lane for this session's frames, if at the live edge."""
        hub = self.service.hub
        fields, wbits, traffic = self.params.fields, self.wbits, self._traffic
        lane = hub.lane(("raw", fields, wbits), lambda: RawLane(hub, traffic, fields, wbits))
        hub.join(self, lane)

    def _send_pending(self) -> None:
        out = self._out
        try:
            n = self.sock.sendmsg(list(out)[:64])
        except BlockingIOError:
            return
        except OSError as exc:
            self._break(exc)
            return
        self._out_bytes -= n
        if self._out_bytes <= self._high_water:
            self._room.set()
        while n:
            head = out[0]
            if n >= len(head):
                n -= len(head)
                out.popleft()
            else:
                out[0] = head[n:]
                n = 0

    async def _flush(self, low_water: int = 0) -> None:
        """Wait until at most ``low_water`` bytes are pending.

        Raises:
            PeerGone: the connection broke.
        """
        while self._out_bytes > low_water:
            await trio.lowlevel.wait_writable(self.sock)
            self._send_pending()
        if self._broken is not None:
            raise PeerGone(str(self._broken))

    async def send_message(self, payload: bytes) -> None:
        self._write(message_frame(payload, self.wbits))
        self.count(len(payload))
        await self._flush(self._high_water)

    async def send_ticks(self, ticks: Sequence[EncodedTick]) -> None:
        """Queue each message, record it as sent, then wait on backpressure.

        ``sent_t`` moves when the frame enters the outbox: everything in the outbox
        reaches the client before any close frame, so a 4008 reason is exact even
        when the eviction lands while this waits.
        """
        fields, wbits, size = self.params.fields, self.wbits, self.params.batch
        for i in range(0, len(ticks), size):
            group = ticks[i : i + size]
            if len(group) == 1:
                self._write(tick_frame(group[0], fields, wbits))
                self.count(len(group[0].view(fields)))
            else:
                payload = batch_message(t.view(fields) for t in group)
                self._write(message_frame(payload, wbits))
                self.count(len(payload))
            self.sent_t = group[-1].t
            await self._flush(self._high_water)

    # -- heartbeats (one timer for every session: heartbeats.py) -----------------------

    def greeted(self) -> None:
        self._beats.add(self)

    def beat(self, payload: bytes, frames: dict[int, bytes]) -> bool:
        """Queue heartbeat ``payload`` like any other write; False once the session ended."""
        if self.state is not State.OPEN:
            return False
        frame = frames.get(self.wbits)
        if frame is None:
            frame = frames[self.wbits] = message_frame(payload, self.wbits)
        self._write(frame)
        self.count(len(payload))
        return True

    # -- the hub's side ---------------------------------------------------------------

    def deliver(self, tick: EncodedTick) -> bool:
        """The one-by-one path (the outbox is not empty, or not yet in the lane)."""
        if self._out_bytes > self._live_backlog or self._broken is not None:
            return False
        fields = self.params.fields
        self._write(tick_frame(tick, fields, self.wbits))
        self.next_t = tick.t + 1
        self.sent_t = tick.t
        self._traffic.sent(len(tick.view(fields)))
        if not self._out and self._broken is None:
            self._join_lane()
        return True

    def fell_behind(self) -> None:
        self._wake.set()

    async def live_phase(self) -> None:
        while True:
            if self._out:
                await self._flush()
                continue
            if self._broken is not None:
                raise PeerGone(str(self._broken))
            if not self.live:
                return
            if self.lane is None:
                self._join_lane()
            await self._wake.wait()
            self._wake = trio.Event()

    # -- reading ----------------------------------------------------------------------

    async def read_messages(self) -> None:
        """Answer pings and client messages until the client closes or errs.

        Raises:
            PeerGone: EOF, reset, or a close frame from the client.
            ProtocolError: a message over 64 KiB (close 1009).
        """
        size = 0
        while True:
            # A client that sends without reading our replies must not make them pile
            # up: read nothing more until the outbox is back under the high-water mark
            # (TCP then pushes back on the client's sends).
            await self._wait_for_room()
            await trio.lowlevel.wait_readable(self.sock)
            try:
                data = self.sock.recv(RECV_BYTES)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise PeerGone(str(exc)) from None
            if not data:
                raise PeerGone("EOF")
            self.ws.receive_data(data)
            parts: list[bytes] = []
            for event in self.ws.events():
                if isinstance(event, TextMessage | BytesMessage):
                    chunk = (
                        event.data.encode() if isinstance(event.data, str) else bytes(event.data)
                    )
                    size += len(chunk)
                    if size > MAX_CLIENT_MESSAGE:
                        raise too_big(size)
                    parts.append(chunk)
                    if event.message_finished:
                        reply = client_reply(b"".join(parts))
                        parts.clear()
                        size = 0
                        self._write(message_frame(reply, self.wbits))
                        self.count(len(reply))
                        # One read can hold thousands of small messages, each reply
                        # larger than its message: answer the rest (wsproto keeps
                        # them) only once the outbox has room again.
                        await self._wait_for_room()
                elif isinstance(event, Ping):
                    self._write(self.ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    self._write(self.ws.send(event.response()))
                    raise ClientClosed(f"client closed ({event.code})")

    async def _wait_for_room(self) -> None:
        """Until the outbox is back under the high-water mark (or broken)."""
        while self._out_bytes > self._high_water and self._broken is None:
            self._room = trio.Event()
            await self._room.wait()

    # -- closing ----------------------------------------------------------------------

    async def close_connection(self, code: CloseCode, reason: str) -> None:
        """Close frame after the outbox, bounded flush, half-close, drain; else RST."""
        end = self.end
        peer_closed = isinstance(end, ClientClosed)
        sock = self.sock
        clean = False
        # A client closed for its own sake (4008, 1009, 1011) gets the full grace to
        # read its last ticks and the reason; at shutdown (1001) the process must exit
        # within SPEC's 5 s, so the grace is capped.
        grace = self.service.config.close_grace_s
        if code is CloseCode.GOING_AWAY:
            grace = min(grace, SHUTDOWN_GRACE)
        with trio.move_on_after(grace):
            if not isinstance(end, PeerGone) or peer_closed:
                if not peer_closed:
                    self._write(close_frame(code, reason))
                await self._flush_quietly()
                if self._broken is None and not self._out:
                    try:
                        sock.shutdown(socket.SHUT_WR)
                    except OSError:  # the peer is already gone (ENOTCONN)
                        pass
                    else:
                        await self._drain_input()
                        clean = True
        if not clean:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        self._out.clear()  # what a reset connection left: nothing outlives the socket
        self._out_bytes = 0

    async def _flush_quietly(self) -> None:
        with contextlib.suppress(PeerGone):
            await self._flush()

    async def _drain_input(self) -> None:
        """Read until the client closes its side (so our close does not reset it)."""
        while True:
            await trio.lowlevel.wait_readable(self.sock)
            try:
                if not self.sock.recv(RECV_BYTES):
                    return
            except BlockingIOError:
                continue
            except OSError:
                return
