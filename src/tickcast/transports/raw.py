"""``/ws/stream`` on a raw non-blocking socket: the fast transport of ``tickcast serve``.

A :class:`RawSession` holds a sans-I/O ``protocol.StreamProtocol``, which decides
what to send and when the stream ends, and ``transports/stream.serve`` drives it;
this module only moves bytes: the outbox, the reader, the bounded close, and the
:class:`RawLane` fast path the hub serves live clients through.

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
* Control frames are read and answered whatever the outbox holds (the reader
  never stops for a full outbox while fewer than ``UNANSWERED_INPUT`` bytes of
  client messages wait for their answer): a pong or a close reply goes right after
  the frame being sent, and a client's close drops every frame not yet started,
  so the stream stops sending ticks the moment it has the close.
* Every exit releases the connection slot first, then closes: a close frame with its
  code, a bounded flush (``config.close_grace_s``), and an abortive close (RST) if the client
  will not take the bytes — so a stalled client's socket never lingers.

Why a raw socket at all, next to the portable ASGI transport: at thousands of
clients the cost per tick per client is what limits a server, and here it is one
``send`` of shared bytes with no task switch, no per-client encoding and no
per-client timer (docs/performance.md has the figures). Everything that is not
byte-moving (state, lag rule, messages) is the shared protocol's, so the two
transports cannot drift apart in behaviour.

Threads: none. Everything runs on the trio thread; the socket is non-blocking, and
waits are ``trio.lowlevel.wait_readable`` / ``wait_writable``.
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

from tickcast.fanout.hub import Hub, Subscriber
from tickcast.fanout.traffic import Traffic
from tickcast.protocol import End
from tickcast.service import Service
from tickcast.tick import EncodedTick, Fields
from tickcast.transports import stream
from tickcast.transports.frames import batch_frame, close_frame, message_frame, tick_frame
from tickcast.transports.heartbeats import Beat, Heartbeats
from tickcast.transports.pacing import Pacer
from tickcast.transports.params import StreamParams
from tickcast.transports.stream import PeerGone
from tickcast.wire import CloseCode

__all__ = ["RawLane", "RawSession"]

log = logging.getLogger("tickcast.ws")

# Backpressure (bytes). A live client's outbox may grow to LIVE_BACKLOG before it
# falls back to catching up; a catch-up writes until the outbox passes the high-water
# mark, then waits for it to drain below it. The gap keeps a client that just caught
# up from falling straight back.
LIVE_BACKLOG = 256 * 1024
CATCH_UP_HIGH_WATER = 128 * 1024
UNANSWERED_INPUT = 64 * 1024  # client messages held unanswered while the outbox is full
RECV_BYTES = 65536  # one read from the socket at most
SHUTDOWN_GRACE = 2.0  # seconds: the close grace at shutdown (the process exits within 5 s)


class RawLane:
    """Live raw sessions with an empty outbox on one field set and window.

    :meth:`publish` is the floor's loop: the tick's cached frame, then one
    ``sock.send`` per member; messages and bytes are counted once for the lot. A
    member the kernel does not take the whole frame from leaves after the loop,
    the rest of the frame in its outbox (or its socket broken).
    """

    def __init__(self, hub: Hub, traffic: Traffic, fields: Fields, wbits: int) -> None:
        """An empty lane; the hub makes one per key on first use (:meth:`Hub.lane`).

        Args:
            hub: the hub whose ``leave`` short members are handed to.
            traffic: counts the lane's messages and bytes, once per tick.
            fields: the members' field set (every member gets the same view).
            wbits: the members' deflate window, 0 without compression.
        """
        self.hub = hub
        self.traffic = traffic
        self.fields = fields
        self.wbits = wbits
        # socket -> its session, in joining order (a dict: O(1) removal). Keyed by the
        # socket, not its bound send: in place, each object the loop touches per
        # member is a likely cache miss, and the socket is touched by send anyway.
        self._members: dict[socket.socket, RawSession] = {}

    def __len__(self) -> int:
        """How many sessions the lane serves."""
        return len(self._members)

    # The last tick every member has been given (the hub advances it). A member's own
    # position is implied by it while in the lane, which is what lets publish() skip
    # every per-member write.
    t: int = -1

    def members(self) -> Iterable[Subscriber]:
        """The member sessions, in joining order."""
        return self._members.values()

    def add(self, sub: Subscriber) -> None:
        """Take a raw session in (only the hub calls it: :meth:`Hub.join`)."""
        assert isinstance(sub, RawSession)
        self._members[sub.sock] = sub

    def remove(self, sub: Subscriber, next_t: int) -> None:
        """Let a session go with its exact position (only the hub: :meth:`Hub.leave`)."""
        assert isinstance(sub, RawSession)
        del self._members[sub.sock]
        protocol = sub.protocol
        protocol.next_t = next_t
        protocol.sent_t = next_t - 1

    def publish(self, tick: EncodedTick) -> None:
        """Send ``tick``'s cached frame to every member; the short ones leave after.

        The hot path: one ``send`` per member and nothing else. A member that took
        part of the frame leaves with the rest in its outbox (``next_t`` past the
        tick); one that took nothing leaves with ``next_t`` at it, or broken.
        """
        frame = tick_frame(tick, self.fields, self.wbits)
        n = len(frame)
        members = self._members
        # Members cannot leave during the loop (hub.leave mutates the dict), so the short
        # ones are collected and handled after it.
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


class RawSession(stream.HeldProtocol):
    """One ``/ws/stream`` client on a non-blocking socket: its protocol, and its outbox.

    Holds a :class:`~tickcast.protocol.StreamProtocol` (the decisions) and does the
    I/O: frames into the outbox or straight to the socket, reading and answering
    the client, and the bounded close. :func:`stream.serve` drives it. It is also
    the hub's subscriber: ``next_t``, ``live``, ``allowance`` and ``lane`` are its
    protocol's.

    Memory per client is bounded: the outbox by ``live_backlog`` while live (a tick
    that would pass it is refused and the session catches up from history) and by
    ``high_water`` plus one message while catching up; unanswered client input by
    ``UNANSWERED_INPUT``. Nothing else grows with the client's slowness.
    """

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
        pacer: Pacer,
        # Backpressure
        live_backlog: int = LIVE_BACKLOG,
        high_water: int = CATCH_UP_HIGH_WATER,
    ) -> None:
        """A session for one upgraded connection (the front door builds it).

        Args:
            service: the running service (hub, history, counters, settings).
            params: the admitted query (``intake.admit``).
            ip: the address whose connection slot this session holds.
            sock: the connected non-blocking socket, after the 101 was sent.
            ws: wsproto's connection, past the handshake: it parses the client's
                frames and serialises pongs and close replies.
            wbits: the negotiated deflate window, 0 without compression.
            beats: the shared heartbeat timer (one for every session).
            pacer: the shared timer of paced replays (one for every session).
            live_backlog: outbox bytes a live client may have pending before a tick
                is refused (tests lower it to force the fallback).
            high_water: outbox bytes above which a catch-up or a reply waits.
        """
        super().__init__(service, params, ip=ip, pacer=pacer)
        self._live_backlog = live_backlog
        self._high_water = high_water
        self.sock = sock
        self.ws = ws
        self.wbits = wbits
        self._out: deque[memoryview] = deque()
        self._out_bytes = 0
        self._head_started = False  # the outbox's first frame is partly sent
        self._wake = trio.Event()
        self._room = trio.Event()  # set when the outbox drains to the high-water mark
        self._reading: trio.CancelScope | None = None  # a read waiting for room too
        self._broken: BaseException | None = None  # the socket error that broke the outbox
        self._beats = beats

    # -- writing ----------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        """Queue ``data`` after what is pending, sending at once if nothing is.

        Never blocks and never raises for a socket error: a broken socket is recorded
        (:meth:`_break`) and every later write is dropped; the waits raise
        ``PeerGone``. That keeps the hub's synchronous delivery free of error paths.
        """
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

    def _write_control(self, data: bytes) -> None:
        """Queue a control frame (pong, close reply) ahead of every waiting frame.

        RFC 6455 §5.4 lets a control frame go between two messages: it goes right
        after the frame being sent, so the reply does not wait behind the outbox.
        """
        if self._broken is not None:
            return
        if not self._out:  # (then it may be in a lane: _write leaves it if need be)
            self._write(data)
            return
        self._out.insert(1 if self._head_started else 0, memoryview(data))
        self._out_bytes += len(data)
        self._wake.set()

    def _drop_unsent(self) -> None:
        """Forget every frame not yet started: the client closed, it wants no more."""
        out = self._out
        keep = out[0] if out and self._head_started else None
        out.clear()
        self._out_bytes = 0
        if keep is not None:
            out.append(keep)
            self._out_bytes = len(keep)

    def _queue(self, data: bytes, offset: int) -> None:
        """Put ``data[offset:]`` in the outbox (it leaves the lane: the outbox is not empty)."""
        if self.lane is not None:
            self.service.hub.leave(self)
        view = memoryview(data)[offset:] if offset else memoryview(data)
        if not self._out:
            self._head_started = offset > 0
        self._out.append(view)
        self._out_bytes += len(view)
        self._wake.set()

    def _break(self, exc: BaseException) -> None:
        """The socket failed: forget the outbox, wake every waiter (they raise PeerGone)."""
        if self.lane is not None:
            self.service.hub.leave(self)
        self._broken = exc
        self._out.clear()
        self._out_bytes = 0
        self._head_started = False
        self._wake.set()
        self._has_room()

    def _has_room(self) -> None:
        """The outbox is at or under the high-water mark: wake the reader's waits."""
        self._room.set()
        if self._reading is not None:
            self._reading.cancel()

    def _join_lane(self) -> None:
        """Become a member of the lane for this session's frames, if at the live edge."""
        hub = self.service.hub
        fields, wbits, traffic = self.params.fields, self.wbits, self._traffic
        lane = hub.lane(("raw", fields, wbits), lambda: RawLane(hub, traffic, fields, wbits))
        hub.join(self, lane)

    def _send_pending(self) -> None:
        """Give the kernel what it takes of the outbox now (one ``sendmsg``, no wait)."""
        # One scatter-gather call for up to 64 buffers (well under Linux's IOV_MAX of
        # 1024): no joining of frames into a new bytes object, one system call.
        out = self._out
        try:
            n = self.sock.sendmsg(list(out)[:64])
        except BlockingIOError:
            return
        except OSError as exc:
            self._break(exc)
            return
        self._out_bytes -= n
        while n:
            head = out[0]
            if n >= len(head):
                n -= len(head)
                out.popleft()
                self._head_started = False
            else:
                out[0] = head[n:]
                self._head_started = True
                n = 0
        if self._out_bytes <= self._high_water:
            self._has_room()

    async def _flush(self, low_water: int = 0) -> None:
        """Wait until at most ``low_water`` bytes are pending.

        Cancellation: safe at the ``wait_writable``; what was not sent stays in the
        outbox, and the close path (which runs after) decides what to do with it.

        Raises:
            PeerGone: the connection broke.
        """
        while self._out_bytes > low_water:
            await trio.lowlevel.wait_writable(self.sock)
            self._send_pending()
        if self._broken is not None:
            raise PeerGone(str(self._broken))

    def count(self, nbytes: int) -> None:
        """Count one message of ``nbytes`` payload bytes sent to this client.

        Payload bytes (the JSON, before framing and compression), so ``/metrics``
        figures are comparable across transports and compression settings.
        """
        self._traffic.sent(nbytes)

    async def send_message(self, payload: bytes) -> None:
        """Write one JSON message, then wait while the outbox is over the high-water mark.

        Backpressure: the message is queued at once (never dropped); only the return
        waits, so a slow client slows its own session task and nothing else.

        Raises:
            PeerGone: the connection broke.
        """
        self._write(message_frame(payload, self.wbits))
        self.count(len(payload))
        await self._flush(self._high_water)

    async def send_ticks(self, ticks: Sequence[EncodedTick]) -> None:
        """Queue each message, record it as sent, then wait on backpressure.

        ``sent_t`` moves when the frame enters the outbox: everything in the outbox
        reaches the client before any close frame, so a 4008 reason is exact even
        when the eviction lands while this waits. Stops between two messages once a
        control message waits.
        """
        protocol, fields, wbits = self.protocol, self.params.fields, self.wbits
        for group in protocol.messages(ticks):
            if protocol.controls:
                return
            if len(group) == 1:
                self._write(tick_frame(group[0], fields, wbits))
                self.count(len(group[0].view(fields)))
            else:
                data, size = batch_frame([tick.view(fields) for tick in group], wbits)
                self._write(data)
                self.count(size)
            protocol.sent_t = group[-1].t
            await self._flush(self._high_water)

    def settle(self) -> None:
        """Leave the lane (its position written back): what is queued counts as sent."""
        if self.lane is not None:
            self.service.hub.leave(self)

    async def send_aside(self) -> None:
        """Nothing: a heartbeat is queued in the outbox when it is due."""

    # -- heartbeats (one timer for every session: heartbeats.py) -----------------------

    def greeted(self) -> None:
        """The hello is out: heartbeats start (the first one ``heartbeat_s`` from now)."""
        self._beats.add(self)

    def beat(self, beat: Beat) -> bool:
        """Queue ``beat``'s shared frame like any other write; False once the stream ended."""
        if not self.protocol.is_open:
            return False
        self._write(beat.frame(self.wbits))
        self.count(len(beat.payload))
        return True

    # -- the hub's side ---------------------------------------------------------------

    def deliver(self, tick: EncodedTick) -> bool:
        """The one-by-one path (the outbox is not empty, or not yet in the lane).

        Called by the hub inside ``Hub.publish``, so it must not block: the frame is
        sent or queued, and the position moves. Returns False, taking nothing, when
        the outbox is past ``live_backlog`` (or the socket broke); the hub then calls
        :meth:`fell_behind`. Joins the lane when the frame went out whole.
        """
        if self._out_bytes > self._live_backlog or self._broken is not None:
            return False
        fields = self.params.fields
        self._write(tick_frame(tick, fields, self.wbits))
        protocol = self.protocol
        protocol.next_t = tick.t + 1
        protocol.sent_t = tick.t
        self._traffic.sent(len(tick.view(fields)))
        if not self._out and self._broken is None:
            self._join_lane()
        return True

    def fell_behind(self) -> None:
        """The hub's: a tick was refused, so the session task returns to catching up."""
        self.protocol.fell_behind()
        self._wake.set()

    async def live_phase(self) -> None:
        """Flush the outbox while the hub delivers; rejoin the lane whenever it is empty.

        Returns when the stream fell behind (the protocol is no longer live), or a
        control message waits (the stream still in its lane: ``settle`` takes it
        out). Cancellation (the stream ending from outside: 4008, 4009, shutdown) is
        taken at either wait; the session stays in whatever lane it is in until
        :func:`stream.release` takes it out of the hub.

        Raises:
            PeerGone: the socket broke.
        """
        protocol = self.protocol
        while True:
            if self._out:
                await self._flush()
                continue
            if self._broken is not None:
                raise PeerGone(str(self._broken))
            if not protocol.live or protocol.controls:
                return
            if self.lane is None:
                self._join_lane()
            await self.until_poked(self._wake.wait)
            self._wake = trio.Event()

    # -- reading ----------------------------------------------------------------------

    async def read_messages(self) -> None:
        """Read the client's frames and answer them until it closes or errs.

        Control frames are read and answered whatever the outbox holds: a ping's
        pong and a close's reply go ahead of the waiting frames, and a close drops
        the frames not yet started (the client wants no more). Replies to *data*
        messages wait for room in the outbox; while more than ``UNANSWERED_INPUT``
        bytes of messages wait for their answer, nothing more is read (TCP then
        pushes back on a client that sends without reading).

        Raises:
            PeerGone: EOF, reset, or a close frame from the client (CLIENT_CLOSED).
            StreamEnded: a message over 64 KiB (close 1009).
        """
        protocol = self.protocol
        size = 0
        parts: list[bytes] = []
        waiting: deque[bytes] = deque()  # whole messages not answered yet
        waiting_bytes = 0
        while True:
            while waiting and self._out_bytes <= self._high_water:
                message = waiting.popleft()
                waiting_bytes -= len(message)
                self._answer(message)
            if waiting_bytes >= UNANSWERED_INPUT and self._broken is None:
                await self._wait_for_room()
                continue
            if waiting and self._broken is None:  # read, or answer once there is room
                with trio.CancelScope() as self._reading:
                    await trio.lowlevel.wait_readable(self.sock)
                self._reading = None
            else:
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
            for event in self.ws.events():
                if isinstance(event, TextMessage | BytesMessage):
                    chunk = (
                        event.data.encode() if isinstance(event.data, str) else bytes(event.data)
                    )
                    size += len(chunk)
                    protocol.check_size(size)
                    parts.append(chunk)
                    if event.message_finished:
                        message = b"".join(parts)
                        parts.clear()
                        size = 0
                        if waiting or self._out_bytes > self._high_water:
                            waiting.append(message)
                            waiting_bytes += len(message)
                        else:
                            self._answer(message)
                elif isinstance(event, Ping):
                    self._write_control(self.ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    self._drop_unsent()
                    self._write_control(self.ws.send(event.response()))
                    raise PeerGone(f"client closed ({event.code})", end=End.CLIENT_CLOSED)

    def _answer(self, message: bytes) -> None:
        """Write the protocol's reply to one whole client message.

        The protocol decides the reply (a pong, or an error); this only frames it. A
        control message has no reply here: it is queued in the protocol, and the
        stream's task, poked, applies it and sends its acknowledgement. Never blocks:
        the caller has checked there is room.
        """
        reply = self.protocol.reply(message)
        if reply is None:  # a control message: the stream's task applies it
            self.poke()
            return
        self._write(message_frame(reply, self.wbits))
        self.count(len(reply))

    async def _wait_for_room(self) -> None:
        """Until the outbox is back under the high-water mark (or broken)."""
        while self._out_bytes > self._high_water and self._broken is None:
            self._room = trio.Event()
            await self._room.wait()

    # -- closing ----------------------------------------------------------------------

    async def close_connection(self, code: CloseCode | None, reason: str) -> None:
        """Close frame after the outbox, bounded flush, half-close, drain; else RST.

        The close frame goes after everything already queued, so a client evicted
        with 4008 has every tick before the ``from_t`` its reason names. The whole
        close is bounded by ``close_grace_s`` (``SHUTDOWN_GRACE`` at shutdown): a
        client that does not read in that time gets a reset (``SO_LINGER`` 0), which
        frees the socket's kernel buffers at once instead of lingering in FIN_WAIT.
        Draining the input before closing avoids the reset that closing a socket
        with unread data would send, which could destroy the close frame in flight.

        Args:
            code: the close code to send; None sends no close frame (the client
                closed first and the reply is already queued, or the connection is
                lost and only the socket is closed).
            reason: the close reason, cut to fit a control frame.
        """
        end = self.protocol.end
        sock = self.sock
        clean = False
        # A client closed for its own sake (4008, 1009, 1011) gets the full grace to
        # read its last ticks and the reason; at shutdown (1001) the process must exit
        # within 5 s, so the grace is capped.
        grace = self.service.config.close_grace_s
        if code is CloseCode.GOING_AWAY:
            grace = min(grace, SHUTDOWN_GRACE)
        with trio.move_on_after(grace):
            if end is not End.CONNECTION_LOST:
                if code is not None:
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
        # Closing anyway: a broken socket only means there is nothing left to flush.
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
