"""``/ws/stream`` over Quart's websocket object: the transport under a stock ASGI server.

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
so a close to a client that does not read is bounded by TCP, not by us.
"""

from __future__ import annotations

import contextlib

import trio
from quart import websocket

from tickcast.service import Service
from tickcast.tick import EncodedTick
from tickcast.transports.heartbeats import Heartbeats
from tickcast.transports.params import StreamParams
from tickcast.transports.session import (
    MAX_CLIENT_MESSAGE,
    CloseCode,
    PeerGone,
    StreamSession,
    client_reply,
    too_big,
)

__all__ = ["ASGI_QUEUE", "AsgiSession"]

ASGI_QUEUE = 64  # ticks buffered per ASGI connection before it falls back to catch-up


class AsgiSession(StreamSession):
    """A stream session over Quart's websocket object (memory channel per client)."""

    def __init__(
        self, service: Service, params: StreamParams, *, ip: str, beats: Heartbeats
    ) -> None:
        super().__init__(service, params, ip=ip)
        # ticks, and heartbeat payloads (bytes) queued behind them
        self._send, self._receive = trio.open_memory_channel[EncodedTick | bytes](ASGI_QUEUE)
        self._beats = beats

    async def send_message(self, payload: bytes) -> None:
        await websocket.send(payload.decode())
        self.count(len(payload))

    def deliver(self, tick: EncodedTick) -> bool:
        try:
            self._send.send_nowait(tick)
        except trio.WouldBlock:
            return False
        self.next_t = tick.t + 1
        return True

    def greeted(self) -> None:
        self._beats.add(self)

    def beat(self, payload: bytes, frames: dict[int, bytes]) -> bool:
        """Queue heartbeat ``payload`` behind the waiting ticks; False once ended."""
        if self.end is not None:
            return False
        if self.live:
            # a full queue is full of ticks: not a silent connection
            with contextlib.suppress(trio.WouldBlock):
                self._send.send_nowait(payload)
        return True

    async def live_phase(self) -> None:
        while True:
            try:
                first = self._receive.receive_nowait()
            except trio.WouldBlock:
                if not self.live:
                    return
                first = await self._receive.receive()
            if isinstance(first, bytes):
                await self.send_message(first)
                continue
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

    async def read_messages(self) -> None:
        while True:
            data: str | bytes | None = await websocket.receive()
            if data is None:  # Quart passes an empty binary message on as None
                data = b""
            size = len(data.encode()) if isinstance(data, str) else len(data)
            if size > MAX_CLIENT_MESSAGE:
                raise too_big(size)
            await self.send_message(client_reply(data))

    async def close_connection(self, code: CloseCode, reason: str) -> None:
        # On cancellation (the client left, or Hypercorn is shutting down) Hypercorn
        # closes the connection itself; a close awaited here could wait on TCP.
        if self.end is not None and not isinstance(self.end, PeerGone):
            with trio.move_on_after(self.service.config.close_grace_s):
                await websocket.close(code, reason)
