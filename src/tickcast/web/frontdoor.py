"""The listener of ``tickcast serve`` and ``tickcast edge``: one socket, one accept loop.

What it owns:

* **The listening socket**, from bind to close: :func:`serve_frontdoor` binds it
  and closes it in one place (the ``with`` around its accept loop), as soon as
  the loop stops (cancelled, or failed), before the connections wind down, so no
  new connection is completed into the backlog during their close grace.
* **The accept loop** (:func:`_accept_loop`), modelled on trio's
  ``serve_listeners``: a connection that vanished before it was accepted is
  skipped; a shortage of descriptors or memory (``EMFILE``, ``ENFILE``,
  ``ENOMEM``, ``ENOBUFS``) is logged at most once a second, and a connection
  waiting while descriptors are out is answered 503 with the spare descriptor of
  a :class:`~tickcast.web.descriptors.Reserve` instead of hanging; **any other
  error is raised**, so a broken listener stops the server loudly instead of
  leaving it up and deaf.
* **The dispatch of each connection** (:class:`FrontDoor`). The request head is
  read once, on the raw socket (16 KiB, 10 s). A WebSocket upgrade of
  ``/ws/stream`` stays here: the handshake goes through wsproto, the query is
  checked (400), a slot is taken (429) and the upgrade accepted, then the
  raw-socket transport (``transports/raw.py``, :class:`RawSession`) owns the
  socket. Any other request is handed, head and all (:class:`PrefixedStream`), to
  Hypercorn's own trio connection handler serving the Quart app, so every HTTP
  route behaves exactly as under a stock ``hypercorn`` deployment.

Invariants:

* A connection's failure is logged and closes that connection only; it never
  reaches the accept loop or the service. ``Cancelled`` is never swallowed.
* Every connection task runs in the front door's nursery: cancelling it (the
  server's shutdown) cancels every connection, and stream sessions close with
  1001 within their grace (``transports/raw.py``).
* A WebSocket slot taken by :func:`admit` is released exactly once: by
  :class:`RawSession` once it exists, else here.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, RejectConnection, RejectData, Request
from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.utilities import RemoteProtocolError

from tickcast.errors import ConfigError, error_body
from tickcast.service import Service
from tickcast.transports.heartbeats import service_heartbeats
from tickcast.transports.intake import Refusal, admit
from tickcast.transports.pacing import Pacer
from tickcast.transports.raw import RawSession
from tickcast.web.descriptors import Reserve
from tickcast.web.hypercorn_bridge import HypercornHandler

__all__ = ["PrefixedStream", "listen", "serve_frontdoor"]

log = logging.getLogger("tickcast.server")

STREAM_PATH = "/ws/stream"
MAX_HEAD = 16 * 1024  # bytes of request head read before dispatching
HEAD_TIMEOUT_S = 10.0  # a client has this long to send its request head
BACKLOG = 4096  # connections the kernel completes before we accept them
ACCEPT_BURST = 128  # accepts per wake-up, before other tasks get a turn
# accept() errors that say nothing about the listener: the connection went away
# before we took it (as trio's SocketListener skips them).
VANISHED_ERRNOS = {errno.ECONNABORTED, errno.EPROTO, errno.EPERM}
# accept() errors that mean a resource ran out: wait, and refuse with the reserve.
CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
CAPACITY_PAUSE_S = 0.1  # the wait after a shortage the reserve could not answer

Handler = Callable[[socket.socket, str], Any]


class PrefixedStream(trio.abc.HalfCloseableStream):
    """A socket stream whose first read returns bytes we already read (the request head).

    Hypercorn's handler reads the request from the start; the front door has
    read the head already to choose the transport, so it is replayed first.
    """

    def __init__(self, stream: trio.SocketStream, prefix: bytes) -> None:
        self._stream = stream
        self._prefix = prefix
        # Hypercorn reads the peer and local addresses off ``.socket``.
        self.socket = stream.socket

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """The head read earlier (whole, whatever ``max_bytes``), then the socket's bytes.

        The head is at most ``MAX_HEAD`` bytes, so handing it over in one piece
        never gives Hypercorn's parser more than it would buffer anyway.
        """
        if self._prefix:
            out, self._prefix = self._prefix, b""
            return out
        return bytes(await self._stream.receive_some(max_bytes))

    # The rest is the socket stream's own behaviour, unchanged.

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

    Raises:
        ConfigError: the address cannot be bound (in use, not this host's, not
            permitted); the message names the ``host`` and ``port`` settings.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # A deep backlog: a burst of reconnects (an edge restarting, a network blip)
    # waits in the kernel for the accept loop rather than being refused.
    try:
        sock = socket.create_server(
            (host, port), family=family, backlog=BACKLOG, reuse_port=reuse_port
        )
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ConfigError(
            f"settings 'host', 'port': cannot listen on {host}:{port}: {reason}"
        ) from None
    sock.setblocking(False)
    return sock


def _is_stream_upgrade(head: bytes) -> bool:
    """Whether ``head`` is a ``GET /ws/stream`` with ``Upgrade: websocket`` (ours to serve).

    Only a cheap look at the request line and the ``Upgrade`` header: the full
    handshake is wsproto's, in :meth:`FrontDoor._stream`, which answers a malformed
    one 400. Anything else, a plain ``GET /ws/stream`` among them, goes to
    Hypercorn and the app, which answer it as a stock deployment would.
    """
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
    """The request head, up to ``\\r\\n\\r\\n``; what came, on a limit, EOF or error.

    At most ``MAX_HEAD`` bytes and ``HEAD_TIMEOUT_S`` seconds: a client that sends
    nothing holds one descriptor for that long, then its connection goes to
    Hypercorn with what came (an empty head: Hypercorn closes it). Reading may
    take a few bytes of the body after the head; they stay in the head and are
    replayed (:class:`PrefixedStream`) or parsed by wsproto with it.
    """
    buf = bytearray()
    with trio.move_on_after(HEAD_TIMEOUT_S):
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
    """Write all of ``data`` to a non-blocking socket (handshake answers only).

    No deadline of its own: a handshake answer is a few hundred bytes, which an
    empty send buffer takes whole, so this does not wait in practice. Stream
    traffic never comes here: it goes through the session's outbox.
    """
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
    """The bytes of an HTTP refusal of an upgrade, with a JSON body (as every error here)."""
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    headers += [(k.encode(), v.encode()) for k, v in extra or ()]
    return ws.send(RejectConnection(status_code=status, headers=headers, has_body=True)) + ws.send(
        RejectData(data=body, body_finished=True)
    )


class FrontDoor:
    """Dispatches each accepted connection (see the module docstring).

    One per listener. It holds what every connection shares: the service, the
    Hypercorn handler of the app, and the one heartbeat timer and the one pacer of
    the raw sessions.
    """

    def __init__(self, service: Service, app: Any) -> None:
        self.service = service
        self.http = HypercornHandler(app)
        self.beats = service_heartbeats(service)
        self.pacer = Pacer()

    async def handle(self, sock: socket.socket, peer: str) -> None:
        """Serve one connection; its failure is logged and never reaches the listener.

        Runs as its own task in the front door's nursery, one per connection. Only
        ``Exception`` is caught: a cancellation (the server's shutdown) passes
        through, after the socket is closed on the way out.
        """
        try:
            await self._handle(sock, peer)
        except Exception:
            log.exception("connection from %s failed", peer)
            sock.close()

    async def _handle(self, sock: socket.socket, peer: str) -> None:
        # Until the socket is handed to a transport (RawSession or Hypercorn's
        # stream), closing it on the way out, cancelled or not, is ours.
        try:
            head = await _read_head(sock)
            if head and _is_stream_upgrade(head):
                await self._stream(sock, peer, head)
                return
        except BaseException:
            sock.close()
            raise
        # Any other request: HTTP, served by Hypercorn's connection handler over a
        # trio stream of the same socket, with the head we read replayed first.
        tsock = trio.socket.from_stdlib_socket(sock)
        stream = PrefixedStream(trio.SocketStream(tsock), head)
        try:
            await self.http.serve(stream)
        finally:
            # Hypercorn's close path awaits send_eof() before aclose(); when cancelled
            # (server shutdown) it never reaches aclose, so close the socket here.
            tsock.close()

    async def _stream(self, sock: socket.socket, peer: str, head: bytes) -> None:
        """Handshake, admit and serve one ``/ws/stream`` upgrade on the raw socket."""
        service = self.service
        ws = WSConnection(ConnectionType.SERVER)
        try:
            ws.receive_data(head)
            request = next(ws.events())
        except (RemoteProtocolError, StopIteration):
            request = None
        if not isinstance(request, Request):  # not a WebSocket handshake wsproto accepts
            body = error_body("bad_request", "invalid WebSocket handshake")
            head = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
            head += b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
            await _send_all(sock, head + body)
            sock.close()
            return
        # Admission is the transports' one rule (transports/intake.py), the same as
        # the ASGI route's: query parameters (400), read token (401), the service
        # not ready (503), then a connection slot (429).
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
        ip = admission.ip  # the client address the slot is counted against
        # permessage-deflate, when offered and enabled, always without server
        # context takeover: each message is deflated on its own, so one tick's
        # compressed frame is the same bytes for every client on the same window
        # and is made once (transports/frames.py).
        deflate = PerMessageDeflate(server_no_context_takeover=True)
        extensions: list[Extension] = [deflate] if service.config.compression else []
        # The slot taken by admit() is this function's until a RawSession exists
        # (which releases it when it ends); if the accept cannot be sent or the
        # session cannot be built, it is released here, once.
        session: RawSession | None = None
        try:
            await _send_all(sock, ws.send(AcceptConnection(extensions=extensions)))
            wbits = deflate.server_max_window_bits if deflate.enabled() else 0
            session = RawSession(
                service,
                admission.params,
                ip=ip,
                sock=sock,
                ws=ws,
                wbits=wbits,
                beats=self.beats,
                pacer=self.pacer,
            )
        finally:
            if session is None:
                service.limits.release(ip)
                sock.close()
        await session.serve()  # releases the slot itself


async def serve_frontdoor(
    service: Service,
    app: Any,
    *,
    host: str,
    port: int,
    reuse_port: bool = False,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``host:port`` and serve every connection until cancelled.

    ``task_status.started`` receives the bound port once connections are accepted
    (useful with ``port`` 0). On cancellation the listening socket closes
    first (no new connections), then every connection task is cancelled: stream
    clients get close 1001 within their grace.

    Raises:
        ConfigError: ``host:port`` cannot be bound.
        OSError: ``accept()`` failed in a way that says the listener is broken.
    """
    door = FrontDoor(service, app)
    reserve = Reserve()  # taken before any connection can use the descriptors up
    try:
        lsock = listen(host, port, reuse_port=reuse_port)  # from here _accept_loop owns it
        async with trio.open_nursery() as nursery:
            # Connection tasks go into this nursery, next to the accept loop: when
            # it is cancelled the loop closes the listener first, then the
            # connections wind down (1001 for stream clients) before this returns.
            bound = await nursery.start(_accept_loop, lsock, door.handle, reserve, nursery)
            nursery.start_soon(door.beats.run)
            nursery.start_soon(door.pacer.run)
            task_status.started(bound)
    finally:
        reserve.close()


async def _accept_loop(
    lsock: socket.socket,
    handler: Handler,
    reserve: Reserve,
    nursery: trio.Nursery,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept connections on ``lsock`` into ``nursery`` until cancelled; closes ``lsock``.

    Each wake-up accepts up to ``ACCEPT_BURST`` connections. Errors, as trio's
    ``serve_listeners`` treats them: a connection that vanished is skipped; a
    resource shortage is logged (once a second at most), the waiting connection
    is refused 503 with the reserve's descriptor when it is a descriptor shortage,
    and the loop pauses ``CAPACITY_PAUSE_S`` when it could not; anything else is
    raised (the listener is broken: the server must stop, not stay up deaf).
    """
    with lsock:  # the one place the listening socket is closed
        task_status.started(int(lsock.getsockname()[1]))
        while True:
            # Woken when connections wait; take up to a burst of them, then let
            # the connection tasks just started (and the hub) have a turn: a
            # reconnect storm is accepted quickly without starving live clients.
            await trio.lowlevel.wait_readable(lsock)
            for _ in range(ACCEPT_BURST):
                try:
                    conn, addr = lsock.accept()
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno in VANISHED_ERRNOS:
                        continue  # that client gave up first: take the next one
                    if exc.errno not in CAPACITY_ERRNOS:
                        # EBADF, EINVAL, ENOTSOCK...: the listener itself is broken.
                        # Staying in the loop would spin on it, unseen; raising
                        # stops the server, and the error says why.
                        raise
                    reserve.shortage(exc)
                    # Out of descriptors: answer the waiting client 503 with a spare
                    # one. Out of memory or buffers, or no spare left: wait a
                    # little (a connection may end meanwhile) and try again.
                    descriptors = exc.errno in (errno.EMFILE, errno.ENFILE)
                    if not (descriptors and reserve.refuse_one(lsock, nursery)):
                        await trio.sleep(CAPACITY_PAUSE_S)
                        break
                    continue
                # Non-blocking, as every transport here writes with send() and waits
                # with trio; no Nagle delay: a tick is one small write, sent at once.
                conn.setblocking(False)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                nursery.start_soon(handler, conn, addr[0])
