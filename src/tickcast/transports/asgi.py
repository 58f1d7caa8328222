"""``/ws/stream`` over Quart's websocket object: the transport under a stock ASGI server.

An :class:`AsgiSession` holds a sans-I/O ``protocol.StreamProtocol`` (the
decisions) and ``transports/stream.serve`` drives it, exactly as for the raw
transport; this module only moves messages between the hub, a channel and Quart.

Under ``hypercorn ... tickcast.asgi:app`` the stream is an ordinary Quart websocket
route. Each connection has a bounded trio memory channel (``ASGI_QUEUE`` ticks) that
the hub fills with ``send_nowait``; the connection's task drains it, grouping up to
``batch`` waiting ticks per message, and awaits ``websocket.send``. ``WouldBlock``
means the client fell behind: it catches up from history like any other.

Heartbeats come from one timer for every session of the app (``heartbeats.py``, as
for the raw transport): a beat is queued in the channel behind the waiting ticks, so
the task's wait for the next tick needs no deadline of its own. During catch-up, or
with a full channel, a beat is skipped: ticks are on their way.

What differs from the raw transport (docs/protocol.md, "The ASGI transport"):
Hypercorn builds the frames and compresses per connection, and shields its sends,
so a close to a client that does not read is bounded by TCP, not by us. It also
reads and answers pings and a client's close itself, whatever is waiting to be
sent, and then cancels this session's task: no tick is sent after the close.

Why keep it when the raw transport is faster: it is what runs under any stock ASGI
deployment (``hypercorn --worker-class trio tickcast.asgi:app``), behind whatever a
platform puts in front, with the same protocol and the same guarantees to clients.

Memory per client is bounded by the channel (``ASGI_QUEUE`` ticks, shared bytes)
plus what Hypercorn holds for one send.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import trio
from quart import websocket

from tickcast.protocol import End, State
from tickcast.service import Service
from tickcast.tick import EncodedTick
from tickcast.transports import stream
from tickcast.transports.heartbeats import Beat, Heartbeats
from tickcast.transports.pacing import Pacer
from tickcast.transports.params import StreamParams
from tickcast.wire import CloseCode

__all__ = ["ASGI_QUEUE", "AsgiSession"]

# Ticks buffered per ASGI connection before it falls back to catch-up. The items are
# references to shared ticks, so 64 costs a few hundred bytes per client, and covers a
# burst of several seconds at the default rate before history takes over.
ASGI_QUEUE = 64


class AsgiSession(stream.HeldProtocol):
    """One ``/ws/stream`` client over Quart's websocket object: its protocol, and a channel.

    Holds a :class:`~tickcast.protocol.StreamProtocol` (the decisions) and does the
    I/O: a bounded memory channel the hub fills with ``send_nowait``, drained into
    ``websocket.send``. :func:`stream.serve` drives it. It is also the hub's
    subscriber: ``next_t``, ``live``, ``allowance`` and ``lane`` are its protocol's
    (it never joins a lane: Hypercorn frames each send itself).
    """

    def __init__(
        self, service: Service, params: StreamParams, *, ip: str, beats: Heartbeats, pacer: Pacer
    ) -> None:
        """A session for one accepted websocket (the route builds it after ``admit``).

        Args:
            service: the running service (hub, history, counters, settings).
            params: the admitted query.
            ip: the address whose connection slot this session holds.
            beats: the app's shared heartbeat timer.
            pacer: the app's shared timer of paced replays.
        """
        super().__init__(service, params, ip=ip, pacer=pacer)
        # ticks, and heartbeat payloads (bytes) queued behind them
        self._send, self._receive = trio.open_memory_channel[EncodedTick | bytes](ASGI_QUEUE)
        self._beats = beats
        self._aside: bytes | None = None  # a heartbeat for a stream that is not live

    # -- sending ------------------------------------------------------------------------

    async def send_message(self, payload: bytes) -> None:
        """Send one JSON message as text; waits as long as Hypercorn's send does.

        Backpressure: Hypercorn's send waits for the socket, so a client that does not
        read stalls this task (and only this task); the hub meanwhile finds the
        channel full and the stream falls behind. Counted once sent.
        """
        await websocket.send(payload.decode())
        self._traffic.sent(len(payload))

    async def send_ticks(self, ticks: Sequence[EncodedTick]) -> None:
        """Send ``ticks`` as the protocol groups them; ``sent_t`` moves after each send."""
        protocol = self.protocol
        for group in protocol.messages(ticks):
            if protocol.controls:  # stop between two messages: a control is next
                return
            await self.send_message(protocol.payload(group))
            protocol.sent_t = group[-1].t

    def settle(self) -> None:
        """Drop what the channel holds (taken from the hub, never sent)."""
        while True:
            try:
                self._receive.receive_nowait()
            except trio.WouldBlock:
                break

    async def send_aside(self) -> None:
        """Send the heartbeat that came while the stream was paused or paced, if any."""
        beat, self._aside = self._aside, None
        if beat is not None:
            await self.send_message(beat)

    def deliver(self, tick: EncodedTick) -> bool:
        """The hub's: queue ``tick`` in the channel; False when it is full (fell behind).

        Never blocks (``send_nowait``): called inside ``Hub.publish`` for every live
        session, so one slow client cannot delay the others.
        """
        try:
            self._send.send_nowait(tick)
        except trio.WouldBlock:
            return False
        self.protocol.next_t = tick.t + 1
        return True

    def fell_behind(self) -> None:
        """The hub's: the channel was full; the task catches up once it has drained it."""
        self.protocol.fell_behind()

    def greeted(self) -> None:
        """The hello is out: heartbeats start (the first one ``heartbeat_s`` from now)."""
        self._beats.add(self)

    def beat(self, beat: Beat) -> bool:
        """Queue ``beat``'s message behind the waiting ticks; False once ended.

        The message, not a frame: Hypercorn frames and compresses each send itself.
        """
        protocol = self.protocol
        if not protocol.is_open:
            return False
        if protocol.live:
            # a full queue is full of ticks: not a silent connection
            with contextlib.suppress(trio.WouldBlock):
                self._send.send_nowait(beat.payload)
        elif protocol.state is not State.CATCHING_UP or protocol.ranged:
            # paused, paced, or waiting for its range's next tick: a wait that may be
            # long; the task sends the beat when poked (catching up: ticks are on
            # their way)
            self._aside = beat.payload
            self.poke()
        return True

    async def live_phase(self) -> None:
        """Drain the channel into sends, up to ``batch`` waiting ticks per message.

        Returns once the channel is empty and the stream is no longer live (it fell
        behind: the rest comes from history), or at once when a control message
        waits (``settle`` then drops what the channel holds).
        """
        protocol = self.protocol
        while True:
            if protocol.controls:
                return
            try:
                first = self._receive.receive_nowait()
            except trio.WouldBlock:
                if not protocol.live:
                    return
                got = await self.until_poked(self._receive.receive)
                if got is None:
                    continue
                first = got
            if isinstance(first, bytes):  # a heartbeat that found no tick ahead of it
                await self.send_message(first)
                continue
            # Whatever else is already waiting joins this message, up to `batch`; a
            # heartbeat behind them ends the group and is sent after it, in order.
            group = [first]
            beat: bytes | None = None
            while len(group) < self.params.batch:
                try:
                    item = self._receive.receive_nowait()
                except trio.WouldBlock:
                    break
                if isinstance(item, bytes):
                    beat = item
                    break
                group.append(item)
            await self.send_ticks(group)
            if beat is not None:
                await self.send_message(beat)

    # -- reading ----------------------------------------------------------------------

    async def read_messages(self) -> None:
        """Answer each client message; Hypercorn answers pings and closes itself.

        The size check comes after Hypercorn has received the whole message (its own
        ``websocket_max_message_size`` bounds that); past ``MAX_CLIENT_MESSAGE`` the
        stream still closes with 1009, as on the raw transport. Replies are sent from
        this task, between the live task's messages, never inside one.

        Raises:
            StreamEnded: a message over ``MAX_CLIENT_MESSAGE`` bytes (close 1009).
        """
        protocol = self.protocol
        while True:
            data: str | bytes | None = await websocket.receive()
            if data is None:  # Quart passes an empty binary message on as None
                data = b""
            protocol.check_size(len(data.encode()) if isinstance(data, str) else len(data))
            reply = protocol.reply(data)
            if reply is None:  # a control message: the stream's task applies it
                self.poke()
            else:
                await self.send_message(reply)

    # -- closing ----------------------------------------------------------------------

    async def close_connection(self, code: CloseCode | None, reason: str) -> None:
        """Send the close with its reason, bounded by ``close_grace_s``.

        Not at shutdown nor when the client left (``End.SHUTDOWN`` is also how a
        cancellation from Hypercorn ends): Hypercorn then closes the connection
        itself, and a close awaited here could wait on TCP.
        """
        if code is None or self.protocol.end is End.SHUTDOWN:
            return
        with trio.move_on_after(self.service.config.close_grace_s):
            await websocket.close(code, reason)
