"""One WebSocket connection of the client: anyio TCP (or TLS) plus wsproto framing.

Moves bytes only: what a message means and what to do when the connection ends is
``cursor.py``'s business. Runs under trio and asyncio alike (anyio). How a
connection can end, as seen by the caller:

* :class:`Closed` from :meth:`WebSocket.receive`: the server's close code and
  reason, or 1006 when the connection broke without a close frame;
* :class:`Rejected` from :func:`connect`: the upgrade was answered with an HTTP
  status (400, 401, 429...), with the response body;
* ``OSError`` from :func:`connect`: nothing listens there (yet).

These three never leave the client package: ``follow.py`` turns them into a
reconnect or a :class:`~tickcast.errors.ClientError`.
"""

from __future__ import annotations

import contextlib

import anyio
import anyio.abc
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.utilities import RemoteProtocolError

from .settings import Endpoint

__all__ = ["Closed", "Rejected", "WebSocket", "connect"]

RECEIVE_BYTES = 256 * 1024
CLOSE_SEND_S = 1.0  # at most this long to say goodbye with a close frame
ABNORMAL = 1006  # no close frame (RFC 6455 §7.1.5); never sent on the wire
PROTOCOL_ERROR = 1002


class Closed(Exception):
    """The connection ended with ``code`` (1006: no close frame) and ``reason``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


class Rejected(Exception):
    """The server refused the upgrade with HTTP ``status``; ``body`` is its answer."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(status, body)
        self.status = status
        self.body = body


class WebSocket:
    """An open connection: :meth:`receive` whole messages, :meth:`aclose` when done.

    Not for concurrent use: one task receives at a time (the one iterating).
    """

    def __init__(
        self, stream: anyio.abc.ByteStream, ws: WSConnection, pending: list[Event]
    ) -> None:
        self._stream = stream
        self._ws = ws
        self._pending = pending
        self._parts: list[str | bytes] = []

    async def receive(self) -> str | bytes:
        """The next whole message; answers pings and the close handshake on the way.

        Raises:
            Closed: the server closed the connection, or it broke (1006).
        """
        while True:
            while self._pending:
                event = self._pending.pop(0)
                if isinstance(event, TextMessage | BytesMessage):
                    data = event.data
                    self._parts.append(bytes(data) if isinstance(data, bytearray) else data)
                    if event.message_finished:
                        return self._message()
                elif isinstance(event, Ping):
                    await self._send(event.response())
                elif isinstance(event, CloseConnection):
                    if self._ws.state is ConnectionState.REMOTE_CLOSING:
                        with contextlib.suppress(Closed):
                            await self._send(event.response())
                    raise Closed(event.code, event.reason or "")
            await self._fill()

    async def aclose(self) -> None:
        """Say goodbye (close 1000, without waiting for the reply) and close the socket.

        Safe to call more than once and when cancelled: bounded by ``CLOSE_SEND_S``,
        shielded from the caller's cancellation.
        """
        with anyio.move_on_after(CLOSE_SEND_S, shield=True):
            if self._ws.state is ConnectionState.OPEN:
                with contextlib.suppress(Closed):
                    await self._send(CloseConnection(code=1000))
        await anyio.aclose_forcefully(self._stream)

    def _message(self) -> str | bytes:
        parts, self._parts = self._parts, []
        if len(parts) == 1:
            return parts[0]
        if isinstance(parts[0], str):
            return "".join(p for p in parts if isinstance(p, str))
        return b"".join(p for p in parts if isinstance(p, bytes))

    async def _fill(self) -> None:
        try:
            data: bytes | None = await self._stream.receive(RECEIVE_BYTES)
        except anyio.EndOfStream:
            data = None
        except (anyio.BrokenResourceError, OSError) as exc:
            raise Closed(ABNORMAL, f"connection lost: {exc!r}") from None
        self._ws.receive_data(data)  # None: EOF, which wsproto reports as a 1006 close
        self._pending.extend(self._ws.events())

    async def _send(self, event: Event) -> None:
        try:
            await self._stream.send(self._ws.send(event))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            raise Closed(ABNORMAL, f"connection lost: {exc!r}") from None


async def connect(
    endpoint: Endpoint,
    target: str,
    *,
    headers: dict[str, str],
    compression: bool,
) -> WebSocket:
    """Open a TCP (TLS for wss/https) connection and upgrade it to a WebSocket.

    Cancellation closes the socket. The caller bounds the wait (``fail_after``).

    Raises:
        OSError: the connection could not be made.
        Rejected: the server answered the upgrade with an HTTP status.
        Closed: the server hung up during the handshake (1006), or its answer was not
            a WebSocket handshake (1002).
    """
    stream: anyio.abc.ByteStream
    if endpoint.tls:
        stream = await anyio.connect_tcp(endpoint.host, endpoint.port, tls=True)
    else:
        stream = await anyio.connect_tcp(endpoint.host, endpoint.port)
    try:
        return await _handshake(stream, endpoint, target, headers, compression)
    except BaseException:
        await anyio.aclose_forcefully(stream)
        raise


async def _handshake(
    stream: anyio.abc.ByteStream,
    endpoint: Endpoint,
    target: str,
    headers: dict[str, str],
    compression: bool,
) -> WebSocket:
    ws = WSConnection(ConnectionType.CLIENT)
    extensions: list[Extension] = [PerMessageDeflate()] if compression else []
    request = Request(
        host=endpoint.host_header,
        target=target,
        extensions=extensions,
        extra_headers=[(k.encode(), v.encode()) for k, v in headers.items()],
    )
    try:
        await stream.send(ws.send(request))
    except anyio.BrokenResourceError:
        raise Closed(ABNORMAL, "the server hung up during the handshake") from None
    status, body = 0, bytearray()
    while True:
        try:
            data = await stream.receive(RECEIVE_BYTES)
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            if status:
                raise Rejected(status, bytes(body)) from None
            raise Closed(ABNORMAL, "the server hung up during the handshake") from None
        try:
            ws.receive_data(data)
            events = list(ws.events())
        except RemoteProtocolError as exc:
            raise Closed(PROTOCOL_ERROR, f"not a WebSocket handshake: {exc}") from None
        for i, event in enumerate(events):
            if isinstance(event, AcceptConnection):
                return WebSocket(stream, ws, events[i + 1 :])
            if isinstance(event, RejectConnection):
                status = event.status_code
                if not event.has_body:
                    raise Rejected(status, b"")
            elif isinstance(event, RejectData):
                body += event.data
                if event.body_finished:
                    raise Rejected(status, bytes(body))
