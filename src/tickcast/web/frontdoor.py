"""The listener of ``tickcast serve``: ``/ws/stream`` to our transport, the rest to Hypercorn.

Each accepted connection's request head is read once. A WebSocket upgrade of
``/ws/stream`` is validated (400), counted against the limits (429) and accepted
here, on the raw socket (``wsraw``); any other request is handed, head and all, to
Hypercorn's own trio connection handler serving the Quart app, so every HTTP route
behaves exactly as under a stock ``hypercorn`` deployment.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Callable
from functools import partial
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, RejectConnection, RejectData, Request
from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.utilities import RemoteProtocolError

from tickcast.errors import error_body
from tickcast.service import Service
from tickcast.transports.heartbeats import service_heartbeats
from tickcast.transports.intake import Refusal, admit
from tickcast.transports.raw import RawSession
from tickcast.web.hypercorn_bridge import HypercornHandler

__all__ = ["PrefixedStream", "listen", "serve_frontdoor"]

log = logging.getLogger("tickcast.server")

STREAM_PATH = "/ws/stream"
MAX_HEAD = 16 * 1024
HEAD_TIMEOUT = 10.0
ACCEPT_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}


class PrefixedStream(trio.abc.HalfCloseableStream):
    """A socket stream whose first reads return bytes we already read (the request head)."""

    def __init__(self, stream: trio.SocketStream, prefix: bytes) -> None:
        self._stream = stream
        self._prefix = prefix
        self.socket = stream.socket

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._prefix:
            out, self._prefix = self._prefix, b""
            return out
        return bytes(await self._stream.receive_some(max_bytes))

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()


def listen(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A non-blocking listening socket (``port`` 0 picks a free one).

    ``reuse_port`` sets ``SO_REUSEPORT``: several processes (edges) share the port
    and the kernel spreads connections over them.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=4096, reuse_port=reuse_port)
    sock.setblocking(False)
    return sock


def _is_stream_upgrade(head: bytes) -> bool:
    line, _, rest = head.partition(b"\r\n")
    parts = line.split(b" ")
    if len(parts) != 3 or parts[0] != b"GET":
        return False
    if urlsplit(parts[1].decode("latin-1")).path != STREAM_PATH:
        return False
    for header in rest.split(b"\r\n"):
        name, _, value = header.partition(b":")
        if name.strip().lower() == b"upgrade" and b"websocket" in value.lower():
            return True
    return False


async def _read_head(sock: socket.socket) -> bytes:
    buf = bytearray()
    with trio.move_on_after(HEAD_TIMEOUT):
        while b"\r\n\r\n" not in buf and len(buf) < MAX_HEAD:
            await trio.lowlevel.wait_readable(sock)
            try:
                data = sock.recv(MAX_HEAD)
            except BlockingIOError:
                continue
            except OSError:
                break
            if not data:
                break
            buf += data
    return bytes(buf)


async def _send_all(sock: socket.socket, data: bytes) -> None:
    view = memoryview(data)
    while view:
        await trio.lowlevel.wait_writable(sock)
        try:
            n = sock.send(view)
        except BlockingIOError:
            continue
        view = view[n:]


def _json_reject(
    ws: WSConnection, status: int, body: bytes, extra: list[tuple[str, str]] | None = None
) -> bytes:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    headers += [(k.encode(), v.encode()) for k, v in extra or ()]
    return ws.send(RejectConnection(status_code=status, headers=headers, has_body=True)) + ws.send(
        RejectData(data=body, body_finished=True)
    )


class FrontDoor:
    """Dispatches each accepted connection (see the module docstring)."""

    def __init__(self, service: Service, app: Any) -> None:
        self.service = service
        self.http = HypercornHandler(app)
        self.beats = service_heartbeats(service)

    async def handle(self, sock: socket.socket, peer: str) -> None:
        """Serve one connection; its failure is logged and never reaches the listener."""
        try:
            await self._handle(sock, peer)
        except Exception:
            log.exception("connection from %s failed", peer)
            sock.close()

    async def _handle(self, sock: socket.socket, peer: str) -> None:
        try:
            head = await _read_head(sock)
            if head and _is_stream_upgrade(head):
                await self._stream(sock, peer, head)
                return
        except BaseException:
            sock.close()
            raise
        tsock = trio.socket.from_stdlib_socket(sock)
        stream = PrefixedStream(trio.SocketStream(tsock), head)
        try:
            await self.http.serve(stream)
        finally:
            # Hypercorn's close path awaits send_eof() before aclose(); when cancelled
            # (server shutdown) it never reaches aclose, so close the socket here.
            tsock.close()

    async def _stream(self, sock: socket.socket, peer: str, head: bytes) -> None:
        service = self.service
        ws = WSConnection(ConnectionType.SERVER)
        try:
            ws.receive_data(head)
            request = next(ws.events())
        except (RemoteProtocolError, StopIteration):
            request = None
        if not isinstance(request, Request):
            body = error_body("bad_request", "invalid WebSocket handshake")
            head = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
            head += b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
            await _send_all(sock, head + body)
            sock.close()
            return
        query = dict(parse_qsl(urlsplit(request.target).query, keep_blank_values=True))
        forwarded = authorization = None
        for name, value in request.extra_headers:
            if name.lower() == b"x-forwarded-for":
                forwarded = value.decode("latin-1")
            elif name.lower() == b"authorization":
                authorization = value.decode("latin-1")
        try:
            admission = admit(
                service.limits,
                query,
                peer=peer,
                forwarded_for=forwarded,
                read_token=service.config.read_token,
                authorization=authorization,
                unavailable=service.unavailable(),
            )
        except Refusal as refused:
            reject = _json_reject(ws, refused.status, refused.body(), refused.headers())
            await _send_all(sock, reject)
            sock.close()
            return
        ip = admission.ip
        deflate = PerMessageDeflate(server_no_context_takeover=True)
        extensions: list[Extension] = [deflate] if service.config.compression else []
        session: RawSession | None = None
        try:
            await _send_all(sock, ws.send(AcceptConnection(extensions=extensions)))
            wbits = deflate.server_max_window_bits if deflate.enabled() else 0
            session = RawSession(
                service, admission.params, ip=ip, sock=sock, ws=ws, wbits=wbits, beats=self.beats
            )
        finally:
            if session is None:
                service.limits.release(ip)
                sock.close()
        await session.serve()  # releases the slot itself


async def _accept_loop(
    lsock: socket.socket, handler: Callable[[socket.socket, str], Any], nursery: trio.Nursery
) -> None:
    try:
        await _accept_forever(lsock, handler, nursery)
    finally:
        lsock.close()  # on cancellation: stop accepting before the connections wind down


async def _accept_forever(
    lsock: socket.socket, handler: Callable[[socket.socket, str], Any], nursery: trio.Nursery
) -> None:
    while True:
        await trio.lowlevel.wait_readable(lsock)
        for _ in range(128):
            try:
                conn, addr = lsock.accept()
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno in ACCEPT_ERRNOS:
                    log.error("accept failed (%s); pausing 100 ms", exc)
                    await trio.sleep(0.1)
                break
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            nursery.start_soon(handler, conn, addr[0])


async def serve_frontdoor(
    service: Service,
    app: Any,
    lsock: socket.socket,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept connections on ``lsock`` until cancelled.

    On cancellation the listener closes first (no new connections), then every
    connection task is cancelled: stream clients get close 1001 within their grace.
    """
    door = FrontDoor(service, app)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(door.beats.run)
            nursery.start_soon(partial(_accept_loop, lsock, door.handle, nursery))
            task_status.started()
    finally:
        lsock.close()
