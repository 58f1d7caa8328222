"""A minimal WebSocket client on wsproto, for what trio-websocket cannot do:
offer permessage-deflate, set socket buffers, and stay unread on purpose."""

from __future__ import annotations

import contextlib
import socket
from typing import Any

import orjson
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Event,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.extensions import Extension, PerMessageDeflate

WAIT_S = 30  # at most, for one read: a regression fails instead of hanging


class Rejected(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(status, body)
        self.status = status
        self.body = body


class RawClient:
    """One connection: ``messages()`` yields parsed JSON messages, then the close."""

    def __init__(self, sock: trio.socket.SocketType, ws: WSConnection) -> None:
        self.sock = sock
        self.ws = ws
        self.accept: AcceptConnection | None = None
        self.wire_bytes = 0
        self.payload_bytes = 0
        self.close: CloseConnection | None = None
        self._pending: list[Event] = []
        self._parts: list[str] = []

    @classmethod
    async def connect(
        cls,
        port: int,
        target: str = "/ws/stream",
        *,
        deflate: bool = False,
        headers: list[tuple[bytes, bytes]] | None = None,
        rcvbuf: int | None = None,
    ) -> RawClient:
        sock = trio.socket.socket()
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        await sock.connect(("127.0.0.1", port))
        ws = WSConnection(ConnectionType.CLIENT)
        client = cls(sock, ws)
        extensions: list[Extension] = [PerMessageDeflate()] if deflate else []
        request = Request(
            host=f"127.0.0.1:{port}",
            target=target,
            extensions=extensions,
            extra_headers=headers or [],
        )
        await sock.send(ws.send(request))
        status, body = 0, b""
        while client.accept is None:
            with trio.fail_after(WAIT_S):
                data = await sock.recv(65536)
            if not data:
                raise Rejected(status, body)
            client.wire_bytes += len(data)
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, AcceptConnection):
                    client.accept = event
                elif isinstance(event, RejectConnection):
                    status = event.status_code
                elif isinstance(event, RejectData):
                    body += event.data
                    if event.body_finished:
                        sock.close()
                        raise Rejected(status, body)
                else:
                    client._pending.append(event)
        return client

    def negotiated(self) -> list[str]:
        assert self.accept is not None
        return [ext.name for ext in self.accept.extensions]

    async def message(self) -> dict[str, Any] | None:
        """The next JSON message, or None once the server closed (see ``close``)."""
        while True:
            while self._pending:
                event = self._pending.pop(0)
                if isinstance(event, TextMessage):
                    self._parts.append(event.data)
                    if event.message_finished:
                        text = "".join(self._parts)
                        self._parts.clear()
                        self.payload_bytes += len(text)
                        msg = orjson.loads(text)
                        assert isinstance(msg, dict)
                        return msg
                elif isinstance(event, CloseConnection):
                    self.close = event
                    with contextlib.suppress(OSError):
                        await self.sock.send(self.ws.send(event.response()))
                    return None
            if self.close is not None:
                return None
            with trio.fail_after(WAIT_S):
                data = await self.sock.recv(1 << 20)
            if not data:
                return None
            self.wire_bytes += len(data)
            self.ws.receive_data(data)
            self._pending += list(self.ws.events())

    async def ticks(self, n: int) -> list[dict[str, Any]]:
        """The next ``n`` ticks (batches unpacked, other messages skipped)."""
        out: list[dict[str, Any]] = []
        while len(out) < n:
            msg = await self.message()
            assert msg is not None, f"closed after {len(out)} ticks: {self.close}"
            if msg["type"] == "tick":
                out.append(msg)
            elif msg["type"] == "batch":
                out += msg["ticks"]
        return out

    def aclose(self) -> None:
        self.sock.close()
