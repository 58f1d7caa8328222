#!/usr/bin/env python3
"""The floor: the least a Python server can do to push every tick to every client.

``bench/fanout.py`` runs it beside tickcast and the ``websockets`` peer so that every
figure can be read as a ratio to it. It is one ``selectors`` loop, standard library
only, and per tick it does exactly this::

    frame = header + json_bytes            # built once per tick
    for sock in clients:
        sock.send(frame)

and nothing else: no backpressure, no outbox, no history, no per-client state beyond
the socket, no compression (a client that offers permessage-deflate is answered
without it). It speaks only what ``loadtest/light_client.py`` needs:

- ``GET /ws/stream``: a minimal RFC 6455 handshake (``Sec-WebSocket-Accept``), a
  ``hello`` whose ``latest_t`` marks what is history, then one text frame per tick
  (the synthetic tick of ``bench/synthetic.py``, keys ``type, t, ts`` first);
- ``GET /health``: 200 with ``latest_t`` and the client count (readiness);
- whatever a client sends after the handshake is read and ignored; EOF closes it.

A send that the kernel does not take whole (``EAGAIN`` or a short write) would
corrupt the stream, so that client is closed and counted in the log: a floor that
cannot keep up shows as dropped clients, never as a slower floor.

Ticks run on absolute deadlines (``deadline += 1/rate``), as in tickcast and the
peer. SIGTERM and SIGINT stop it with exit status 0.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import logging
import selectors
import signal
import socket
import struct
import time
import uuid
from collections.abc import Callable
from types import FrameType
from typing import Any

from synthetic import DEFAULT_AGENTS, TickGenerator

__all__ = ["Floor", "main"]

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# Limits
MAX_HEAD_BYTES = 16 * 1024
RECV_BYTES = 65536
BACKLOG = 1024

log = logging.getLogger("floor")


class Stop(Exception):
    """SIGTERM or SIGINT."""


def text_frame(payload: bytes) -> bytes:
    """One final, unmasked text frame."""
    n = len(payload)
    if n < 126:
        head = bytes((0x81, n))
    elif n < 65536:
        head = struct.pack("!BBH", 0x81, 126, n)
    else:
        head = struct.pack("!BBQ", 0x81, 127, n)
    return head + payload


def encode(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def http_response(status: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class Floor:
    """The listener, the client list and the tick loop."""

    def __init__(self, listener: socket.socket, *, rate: float, agents: int) -> None:
        self.listener = listener
        self.period = 1.0 / rate
        self.generate = TickGenerator(agents)
        self.epoch = uuid.uuid4().hex[:16]
        self.sel = selectors.DefaultSelector()
        self.clients: list[socket.socket] = []  # upgraded: every tick goes to each
        self.heads: dict[socket.socket, bytes] = {}  # accepted, request head incomplete
        self.next_t = 0
        self.dropped = 0  # clients closed because a send was refused or short
        listener.setblocking(False)
        self.sel.register(listener, selectors.EVENT_READ, self._accept)

    # The tick loop

    def run(self) -> None:
        deadline = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= deadline:
                self.publish()
                deadline += self.period
                if deadline < now - 1.0:  # over a second behind: do not burst
                    deadline = now
                continue
            for key, _ in self.sel.select(deadline - now):
                handler: Callable[[socket.socket], None] = key.data
                handler(key.fileobj)  # type: ignore[arg-type]

    def publish(self) -> None:
        frame = text_frame(encode(self.generate(self.next_t)))
        self.next_t += 1
        n = len(frame)
        refused = []
        for sock in self.clients:
            try:
                if sock.send(frame) == n:
                    continue
            except OSError:
                pass
            refused.append(sock)
        for sock in refused:
            self.dropped += 1
            log.warning("client dropped: send refused or short (%d so far)", self.dropped)
            self._close(sock)

    # Connections

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except BlockingIOError:
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.heads[sock] = b""
            self.sel.register(sock, selectors.EVENT_READ, self._read_head)

    def _read_head(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(RECV_BYTES)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        head = self.heads[sock] + data
        if not data or len(head) > MAX_HEAD_BYTES:
            self._close(sock)
            return
        if b"\r\n\r\n" not in head:
            self.heads[sock] = head
            return
        del self.heads[sock]
        request_line, *lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        parts = request_line.split(" ")
        path = parts[1].split("?", 1)[0] if len(parts) > 1 else ""
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        key = headers.get("sec-websocket-key")
        if path == "/ws/stream" and key:
            self._upgrade(sock, key.encode())
        elif path == "/health":
            latest = self.next_t - 1 if self.next_t else None
            body = encode({"status": "ok", "latest_t": latest, "clients": len(self.clients)})
            self._reply_and_close(sock, http_response("200 OK", body))
        else:
            body = encode({"error": "not_found", "detail": path})
            self._reply_and_close(sock, http_response("404 Not Found", body))

    def _upgrade(self, sock: socket.socket, key: bytes) -> None:
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode()
        response = (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        ).encode()
        latest = self.next_t - 1 if self.next_t else None
        hello = {"type": "hello", "epoch": self.epoch, "oldest_t": 0 if self.next_t else None}
        hello |= {"latest_t": latest, "heartbeat_s": 30, "server": "floor"}
        try:
            sock.sendall(response + text_frame(encode(hello)))  # small: the buffer takes it
        except OSError:
            self._close(sock)
            return
        self.sel.modify(sock, selectors.EVENT_READ, self._read_and_ignore)
        self.clients.append(sock)

    def _read_and_ignore(self, sock: socket.socket) -> None:
        try:
            if sock.recv(RECV_BYTES):
                return
        except BlockingIOError:
            return
        except OSError:
            pass
        self._close(sock)

    def _reply_and_close(self, sock: socket.socket, data: bytes) -> None:
        with contextlib.suppress(OSError):
            sock.sendall(data)
        self._close(sock)

    def _close(self, sock: socket.socket) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(sock)
        self.heads.pop(sock, None)
        if sock in self.clients:
            self.clients.remove(sock)
        sock.close()


def _stop(signum: int, frame: FrameType | None) -> None:
    raise Stop(signal.Signals(signum).name)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002, help="0 picks a free port")
    parser.add_argument("--rate", type=float, default=10.0, help="ticks per second")
    parser.add_argument("--agents", type=int, default=DEFAULT_AGENTS, help="scales the tick size")
    # Accepted for a command line shared with the other targets; the floor never deflates.
    parser.add_argument("--compression", action=argparse.BooleanOptionalAction, default=False)
    args = parser.parse_args(argv)
    if args.rate <= 0:
        parser.error("--rate must be > 0")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    listener = socket.create_server((args.host, args.port), backlog=BACKLOG)
    floor = Floor(listener, rate=args.rate, agents=args.agents)
    log.info("floor listening on %s:%d rate=%g", args.host, listener.getsockname()[1], args.rate)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        floor.run()
    except Stop as exc:
        log.info("stopped by %s at t=%d, %d clients dropped", exc, floor.next_t, floor.dropped)
    finally:
        listener.close()


if __name__ == "__main__":
    main()
