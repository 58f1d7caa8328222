"""A light WebSocket subscriber for 1000+ connections in one asyncio process.

Used by ``bench/fanout.py``. ``RawClient`` is a minimal RFC 6455 client on
``asyncio.BufferedProtocol`` (every connection reads into one shared buffer, so
a read allocates nothing): one ``time.time()`` per socket read, ``t`` and ``ts`` read
off the head of each text frame with one regex (the tick's key order is fixed: docs/protocol.md
``type, t, ts``), no JSON parsing of ticks, permessage-deflate when offered and
accepted, pings answered, the closing handshake echoed. Anything that is not a
plain tick (hello, batch, heartbeat, a tick with other key order) takes the
``json.loads`` slow path. ``WebsocketsClient`` feeds the same ``Subscriber``
from the ``websockets`` library, to cross-check the raw client.

Invariants: one event loop, no threads, so ``Stats`` needs no lock; a tick is
counted as received only while ``Stats.measuring``; gaps (``missed``) and
duplicates are counted over the whole life of a connection; latency is
recorded only for live ticks (``t`` greater than the hello's ``latest_t``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import socket
import struct
import time
import zlib
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Client",
    "HandshakeError",
    "RawClient",
    "Stats",
    "Subscriber",
    "WebsocketsClient",
    "open_client",
]

# Timeouts
CONNECT_TIMEOUT_S = 10.0
# Limits
STALLED_RCVBUF_BYTES = 4096  # a stalled client's receive window: the server's buffers fill fast

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TICK_HEAD = re.compile(rb'\{"type":"tick","t":(\d+),"ts":([0-9.eE+-]+)')
_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


@dataclass
class Stats:
    """Counters shared by every client of one run (single-threaded: no locks)."""

    measuring: bool = False
    latencies_ms: array[float] = field(default_factory=lambda: array("d"))
    ticks: int = 0  # received during the window
    bytes: int = 0  # message bytes received during the window (after inflate)
    max_t: int = -1  # highest t any client has seen
    missed: int = 0  # gaps in t, whole run
    duplicates: int = 0  # t not increasing, whole run
    connect_failures: int = 0
    drops: int = 0  # closed by the server or reset, not by us
    compressed: int = 0  # connections that negotiated permessage-deflate
    reasons: Counter[str] = field(default_factory=Counter)


class Subscriber:
    """Per-connection protocol state: hello, then ticks with consecutive ``t``."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self.hello: dict[str, Any] | None = None
        self.history_until: int = -1  # ticks up to the hello's latest_t are history
        self.last_t: int | None = None
        self.received = 0  # ticks, whole run
        self.close_code: int | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_message(self, buf: bytes | bytearray, start: int, end: int, now: float) -> None:
        """Handle the message ``buf[start:end]`` received at ``now`` (unix seconds)."""
        match = TICK_HEAD.match(buf, start, end)
        if match is not None:
            self.on_tick(int(match[1]), float(match[2]), now, end - start)
            return
        message = json.loads(buf[start:end])
        kind = message.get("type")
        if kind == "batch":
            ticks = message["ticks"]
            for tick in ticks:
                self.on_tick(tick["t"], tick["ts"], now, (end - start) // max(1, len(ticks)))
        elif kind == "tick":  # keys not in the wire order: slow path
            self.on_tick(message["t"], message["ts"], now, end - start)
        elif kind == "hello":
            self.hello = message
            latest = message.get("latest_t")
            self.history_until = -1 if latest is None else latest
            if not self.ready.done():
                self.ready.set_result(None)
        # heartbeat, pong, error: nothing to measure

    def on_tick(self, t: int, ts: float, now: float, size: int) -> None:
        stats = self.stats
        last = self.last_t
        if last is not None and t != last + 1:
            if t > last:
                stats.missed += t - last - 1
            else:
                stats.duplicates += 1
                return
        self.last_t = t
        self.received += 1
        if t > stats.max_t:
            stats.max_t = t
        if stats.measuring:
            stats.ticks += 1
            stats.bytes += size
            if t > self.history_until:
                stats.latencies_ms.append((now - ts) * 1000.0)


class HandshakeError(Exception):
    pass


def _mask(payload: bytes, key: bytes) -> bytes:
    if not payload:
        return b""
    n = len(payload)
    repeated = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")


def client_frame(opcode: int, payload: bytes = b"") -> bytes:
    """A masked, final client frame (control frames only: payload < 126 bytes)."""
    key = os.urandom(4)
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + key + _mask(payload, key)


# One receive buffer for every RawClient: the loop is single-threaded and each read is
# parsed before the next one, so sharing it saves an allocation per read (asyncio's
# plain Protocol allocates a 256 KiB bytes object for every recv).
_READ_BUFFER = bytearray(256 * 1024)
_READ_VIEW = memoryview(_READ_BUFFER)


class RawClient(asyncio.BufferedProtocol):
    """A minimal WebSocket client: handshake, frame parser, inflate, ping/close replies."""

    def __init__(
        self,
        sub: Subscriber,
        *,
        host: str,
        port: int,
        path: str,
        compression: bool,
        stalled: bool = False,
    ) -> None:
        self.sub = sub
        self.request_line = f"GET {path} HTTP/1.1"
        self.host = f"{host}:{port}"
        self.offer_deflate = compression
        self.stalled = stalled
        self.key = base64.b64encode(os.urandom(16))
        self.transport: asyncio.Transport | None = None
        self.upgraded = False
        self.closing = False  # we initiated the close
        self.lost = False
        self.counted = not stalled  # a stalled client's fate is reported apart
        self._buf = b""
        self._inflate: Any = None  # zlib decompressobj once deflate is negotiated
        self._fragments: list[bytes] = []
        self._fragments_compressed = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        lines = [
            self.request_line,
            f"Host: {self.host}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {self.key.decode()}",
            "Sec-WebSocket-Version: 13",
        ]
        if self.offer_deflate:
            lines.append("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits")
        transport.write(("\r\n".join(lines) + "\r\n\r\n").encode())

    def get_buffer(self, sizehint: int) -> memoryview:
        return _READ_VIEW

    def buffer_updated(self, nbytes: int) -> None:
        now = time.time()
        if self._buf or not self.upgraded:
            buf: bytes | bytearray = self._buf + _READ_BUFFER[:nbytes]
            nbytes = len(buf)
        else:  # the usual case: parse in place, copy only an incomplete frame
            buf = _READ_BUFFER
        if not self.upgraded:
            assert isinstance(buf, bytes)
            head, sep, rest = buf.partition(b"\r\n\r\n")
            if not sep:
                self._buf = buf
                return
            try:
                self._on_handshake(head)
            except HandshakeError as exc:
                self._fail(exc)
                return
            buf, nbytes = rest, len(rest)
            if self.stalled:
                assert self.transport is not None
                self.transport.pause_reading()
                self.sub.ready.set_result(None)
        self._buf = self._parse_frames(buf, nbytes, now)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.sub.ready.done():
            self.sub.ready.set_exception(ConnectionError(f"closed during handshake: {exc}"))
        elif not self.closing and self.counted:
            self.sub.stats.drops += 1
            self.sub.stats.reasons[f"dropped (close code {self.sub.close_code})"] += 1

    # WebSocket

    def _on_handshake(self, head: bytes) -> None:
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or parts[1] != "101":
            raise HandshakeError(f"HTTP {parts[1] if len(parts) > 1 else status_line!r}")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        expected = base64.b64encode(hashlib.sha1(self.key + WS_GUID).digest()).decode()
        if headers.get("sec-websocket-accept") != expected:
            raise HandshakeError("bad Sec-WebSocket-Accept")
        extensions = headers.get("sec-websocket-extensions", "")
        if "permessage-deflate" in extensions:
            if not self.offer_deflate:
                raise HandshakeError("server imposed permessage-deflate")
            self._inflate = zlib.decompressobj(-zlib.MAX_WBITS)
            self.sub.stats.compressed += 1
        self.upgraded = True

    def _parse_frames(self, buf: bytes | bytearray, n: int, now: float) -> bytes:
        """Handle every complete frame in ``buf[:n]``; return the incomplete rest (a copy)."""
        i = 0
        while n - i >= 2:
            b0, b1 = buf[i], buf[i + 1]
            length, head = b1 & 0x7F, 2
            if length == 126:
                if n - i < 4:
                    break
                length, head = _U16.unpack_from(buf, i + 2)[0], 4
            elif length == 127:
                if n - i < 10:
                    break
                length, head = _U64.unpack_from(buf, i + 2)[0], 10
            if b1 & 0x80:
                self._fail(HandshakeError("masked frame from the server"))
                return b""
            end = i + head + length
            if end > n:
                break
            if b0 & 0xCF == 0x81 and not self._fragments:  # FIN, no RSV1, text: the fast path
                self.sub.on_message(buf, i + head, end, now)
            else:
                self._on_frame(b0, bytes(buf[i + head : end]), now)
                if self.lost or self.closing:
                    return b""
            i = end
        return bytes(buf[i:n])

    def _on_frame(self, b0: int, payload: bytes, now: float) -> None:
        opcode, fin, rsv1 = b0 & 0x0F, bool(b0 & 0x80), bool(b0 & 0x40)
        if opcode in (OP_TEXT, OP_BINARY, OP_CONT):
            if opcode != OP_CONT:
                self._fragments_compressed = rsv1
            self._fragments.append(payload)
            if not fin:
                return
            message = b"".join(self._fragments)
            self._fragments.clear()
            if self._fragments_compressed:
                message = self._inflate.decompress(message + b"\x00\x00\xff\xff")
            self.sub.on_message(message, 0, len(message), now)
        elif opcode == OP_PING:
            self._write(client_frame(OP_PONG, payload))
        elif opcode == OP_CLOSE:
            self.sub.close_code = _U16.unpack_from(payload)[0] if len(payload) >= 2 else 1005
            self._write(client_frame(OP_CLOSE, payload[:2]))
            if self.transport is not None:
                self.transport.close()

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _fail(self, exc: Exception) -> None:
        if not self.sub.ready.done():
            self.sub.ready.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        """Start the closing handshake (1000) and close the socket once flushed."""
        self.closing = True
        if self.transport is not None and not self.transport.is_closing():
            self._write(client_frame(OP_CLOSE, _U16.pack(1000)))
            self.transport.close()

    def abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    def drain_stalled(self) -> None:
        """Let a stalled client read again (to see what it was sent, and its close code)."""
        if self.transport is not None and not self.transport.is_closing():
            self.stalled = False
            self.transport.resume_reading()


class WebsocketsClient:
    """The same subscriber on the ``websockets`` client (``--client websockets``)."""

    def __init__(self, sub: Subscriber, *, url: str, compression: bool) -> None:
        self.sub = sub
        self.url = url
        self.compression = compression
        self.closing = False
        self.task: asyncio.Task[None] | None = None
        self.ws: Any = None

    async def run(self) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed

        try:
            async with connect(
                self.url,
                compression="deflate" if self.compression else None,
                max_size=None,
                ping_interval=None,
                open_timeout=CONNECT_TIMEOUT_S,
            ) as ws:
                self.ws = ws
                headers = ws.response.headers if ws.response else {}
                if "permessage-deflate" in headers.get("Sec-WebSocket-Extensions", ""):
                    self.sub.stats.compressed += 1
                while True:
                    data = await ws.recv(decode=False)
                    self.sub.on_message(data, 0, len(data), time.time())
        except ConnectionClosed as exc:
            if not self.closing:
                self.sub.stats.drops += 1
                code = exc.rcvd.code if exc.rcvd else None
                self.sub.stats.reasons[f"dropped (close code {code})"] += 1
        except Exception as exc:
            if not self.sub.ready.done():
                self.sub.ready.set_exception(exc)
            elif not self.closing:
                self.sub.stats.drops += 1
                self.sub.stats.reasons[f"dropped ({type(exc).__name__})"] += 1

    def close(self) -> None:
        self.closing = True
        if self.task is not None:
            self.task.cancel()

    abort = close


Client = RawClient | WebsocketsClient


async def open_client(
    stats: Stats,
    *,
    kind: str,
    host: str,
    port: int,
    compression: bool,
    stalled: bool = False,
) -> Client | None:
    """Connect one client and wait for its hello; None (and counted) on failure."""
    loop = asyncio.get_running_loop()
    sub = Subscriber(stats)
    client: Client | None = None
    sock: socket.socket | None = None
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            if kind == "websockets" and not stalled:
                url = f"ws://{host}:{port}/ws/stream"
                client = WebsocketsClient(sub, url=url, compression=compression)
                client.task = loop.create_task(client.run())
            else:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                if stalled:  # a small window so that the server's buffers fill quickly
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, STALLED_RCVBUF_BYTES)
                await loop.sock_connect(sock, (host, port))
                client = RawClient(
                    sub,
                    host=host,
                    port=port,
                    path="/ws/stream",
                    compression=compression,
                    stalled=stalled,
                )
                await loop.create_connection(lambda: client, sock=sock)
            await sub.ready
        return client
    except Exception as exc:  # OSError, TimeoutError, HandshakeError, websockets' errors
        stats.connect_failures += 1
        stats.reasons[f"connect: {type(exc).__name__}: {exc}"[:120]] += 1
        if client is not None and (not isinstance(client, RawClient) or client.transport):
            client.abort()
        elif sock is not None:
            sock.close()
        return None
