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

Why not a WebSocket library with its own I/O: the client must run under trio and
asyncio with one code path, and wsproto (sans-I/O) plus anyio's streams gives that
in this one small file. The same wsproto the server runs under Hypercorn parses
the frames, so both ends agree on every edge case of RFC 6455.

Invariants:

* one :class:`WebSocket` has one reader: messages come out whole and in order,
  fragments reassembled, and control frames (ping, close) are answered on the way
  without the caller seeing them;
* nothing is sent but pongs, the close handshake and the request: the stream's
  own messages (ping, for instance) are not needed by ``follow.py``, which reads only;
* the socket is closed on every exit path: a failed handshake, :meth:`WebSocket.aclose`,
  and cancellation during :func:`connect`.
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

# Largest single read from the socket: a catch-up batch of ticks can be hundreds of KB,
# so a large read takes it in few system calls; wsproto reassembles across reads.
RECEIVE_BYTES = 256 * 1024
CLOSE_SEND_S = 1.0  # at most this long to say goodbye with a close frame
ABNORMAL = 1006  # no close frame (RFC 6455 §7.1.5); never sent on the wire
PROTOCOL_ERROR = 1002


class Closed(Exception):
    """The connection ended with ``code`` (1006: no close frame) and ``reason``.

    One exception for every way an open connection ends, so the caller decides by
    the code alone (``cursor.py``: 4008 resume now, 1001 back off, ...). A broken
    socket is folded into 1006 here, as RFC 6455 says a client should report it.
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


class Rejected(Exception):
    """The server refused the upgrade with HTTP ``status``; ``body`` is its answer.

    tickcast answers every refusal with a JSON ``{"error", "detail"}`` body (400,
    401, 429, 503); the body is kept raw here because a proxy in front of the server
    may answer with anything, and parsing is the caller's business.
    """

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(status, body)
        self.status = status
        self.body = body


class WebSocket:
    """An open connection: :meth:`receive` whole messages, :meth:`aclose` when done.

    Not for concurrent use: one task receives at a time (the one iterating).

    Built only by :func:`connect`, with the events wsproto produced after the
    handshake (the server's first message can share a TCP read with the 101).
    """

    def __init__(
        self, stream: anyio.abc.ByteStream, ws: WSConnection, pending: list[Event]
    ) -> None:
        self._stream = stream
        self._ws = ws
        self._pending = pending  # events parsed but not yet handed out, in order
        self._parts: list[str | bytes] = []  # the fragments of an unfinished message

    async def receive(self) -> str | bytes:
        """The next whole message; answers pings and the close handshake on the way.

        Text messages come back as ``str``, binary as ``bytes`` (tickcast sends text
        only). A close from the server is answered with the same code before
        :class:`Closed` is raised, completing the handshake.

        Cancellation: while waiting for bytes, nothing is lost, and a later call
        carries on. Cancelled while sending a pong or a close reply, the socket may
        be left mid-frame: do not receive again, :meth:`aclose` it.

        Backpressure: reads only when the caller asks, so a slow caller leaves the
        bytes in the kernel's buffers and TCP slows the server, which then closes
        it with 4008 if it falls more than ``max_lag`` ticks behind.

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
        # The fragments of one message are all text or all bytes (RFC 6455 §5.4); the
        # filters only keep mypy exact about it.
        parts, self._parts = self._parts, []
        if len(parts) == 1:
            return parts[0]
        if isinstance(parts[0], str):
            return "".join(p for p in parts if isinstance(p, str))
        return b"".join(p for p in parts if isinstance(p, bytes))

    async def _fill(self) -> None:
        """Read once from the socket and queue what wsproto parsed from it.

        A reset or a broken socket raises :class:`Closed` (1006) at once; an orderly
        EOF goes through wsproto, which turns it into a 1006 close event.
        """
        try:
            data: bytes | None = await self._stream.receive(RECEIVE_BYTES)
        except anyio.EndOfStream:
            data = None
        except (anyio.BrokenResourceError, OSError) as exc:
            raise Closed(ABNORMAL, f"connection lost: {exc!r}") from None
        self._ws.receive_data(data)  # None: EOF, which wsproto reports as a 1006 close
        self._pending.extend(self._ws.events())

    async def _send(self, event: Event) -> None:
        """Serialise ``event`` with wsproto and write it; a dead socket is a 1006 close."""
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

    Args:
        endpoint: the server (host, port, TLS), from ``Endpoint.parse``.
        target: the request target, path and query (``Endpoint.target``).
        headers: extra request headers (the read token's ``Authorization``).
        compression: offer permessage-deflate; the server may decline it.

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
    """Send the upgrade request on ``stream`` and read until it is accepted or refused.

    A refusal's body may come in several reads (``RejectData``); it is gathered until
    wsproto says it is finished, or the server hangs up, and then raised whole.
    Does not close ``stream`` on failure: :func:`connect` does.
    """
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
