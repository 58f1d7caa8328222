#!/usr/bin/env python3
"""Reference peer: the tickcast push protocol on plain asyncio + ``websockets``.

This is the "best idiomatic Python" baseline that ``bench/fanout.py`` and
``loadtest/run --target peer`` measure tickcast against. It speaks the subset of
the protocol (docs/protocol.md, docs/api.md) that the load tools use:

- ``GET /ws/stream[?from_t=N]``: ``hello``, then the latest tick (or the replay
  from ``from_t``), then every tick as it is produced, ``t`` strictly
  consecutive; ``heartbeat`` every ``--heartbeat-s``; ``{"type":"ping"}`` is
  answered by ``pong``.
- ``GET /health`` and ``GET /incremental?from_t=F&limit=L`` (from memory only).

Invariants:

- A tick is encoded once (``json.dumps`` -> UTF-8 bytes) and the same bytes go
  to the ring and to every client through ``websockets.broadcast``.
- A connection joins the broadcast set only once its replay has caught up with
  the ring, with no ``await`` between the last check and the join: no gap, no
  duplicate.
- There is no backpressure in ``broadcast``; a connection whose write buffer
  exceeds ``--max-buffer-mb`` is closed with 4008, like tickcast's slow-consumer
  policy, so memory stays bounded.

Run ``python bench/peer_websockets.py --help`` for the flags.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import http
import json
import logging
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from synthetic import DEFAULT_AGENTS, TickGenerator
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.version import version as websockets_version

__all__ = ["DEFAULT_AGENTS", "Peer", "TickGenerator", "main"]

# Limits
MAX_MESSAGE_BYTES = 64 * 1024  # docs/protocol.md: a client message over 64 KiB closes with 1009
MAX_INCREMENTAL_LIMIT = 10_000
SLOW_CONSUMER_CODE = 4008

SERVER_NAME = f"peer-websockets/{websockets_version}"

log = logging.getLogger("peer")


def encode(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


@dataclass
class Ring:
    """The last ``size`` encoded ticks, addressed by ``t``."""

    size: int
    items: collections.deque[bytes] = field(init=False)
    oldest_t: int | None = None

    def __post_init__(self) -> None:
        self.items = collections.deque(maxlen=self.size)

    @property
    def latest_t(self) -> int | None:
        return None if self.oldest_t is None else self.oldest_t + len(self.items) - 1

    @property
    def next_t(self) -> int:
        latest = self.latest_t
        return 0 if latest is None else latest + 1

    def append(self, t: int, data: bytes) -> None:
        if self.oldest_t is None:
            self.oldest_t = t
        elif len(self.items) == self.size:
            self.oldest_t += 1
        self.items.append(data)

    def get(self, t: int) -> bytes | None:
        if self.oldest_t is None or not self.oldest_t <= t < self.oldest_t + len(self.items):
            return None
        return self.items[t - self.oldest_t]

    def range(self, from_t: int, limit: int) -> Iterator[bytes]:
        if self.oldest_t is None:
            return iter(())
        start = from_t - self.oldest_t
        return (self.items[i] for i in range(start, min(len(self.items), start + limit)))


class BadRequest(ValueError):
    pass


def int_param(query: dict[str, list[str]], name: str, default: int | None) -> int | None:
    values = query.get(name)
    if not values:
        return default
    try:
        value = int(values[-1])
    except ValueError:
        raise BadRequest(f"{name} must be an integer, got {values[-1]!r}") from None
    if value < 0:
        raise BadRequest(f"{name} must be >= 0, got {value}")
    return value


def json_response(status: int, body: bytes) -> Response:
    headers = Headers(
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
        ]
    )
    return Response(status, http.HTTPStatus(status).phrase, headers, body)


class Peer:
    """Producer, ring and broadcast set of the reference peer."""

    def __init__(
        self,
        *,
        rate: float,
        agents: int,
        ring_size: int,
        heartbeat_s: float,
        max_buffer_bytes: int,
        seed: int | None = None,
    ) -> None:
        self.rate = rate
        self.heartbeat_s = heartbeat_s
        self.max_buffer_bytes = max_buffer_bytes
        self.ring = Ring(ring_size)
        self.epoch = uuid.uuid4().hex[:16]
        self.started = time.monotonic()
        self._generate = TickGenerator(agents, seed=seed)
        self._clients: set[ServerConnection] = set()
        # Clients that asked for a from_t past the latest tick, keyed by that t.
        self._waiting: dict[int, set[ServerConnection]] = collections.defaultdict(set)

    # Producer

    async def run_producer(self) -> None:
        """Produce ticks at ``rate`` per second on an absolute schedule (no drift)."""
        loop = asyncio.get_running_loop()
        period = 1.0 / self.rate
        deadline = loop.time()
        while True:
            self.publish()
            deadline += period
            delay = deadline - loop.time()
            if delay < -1.0:  # fell more than a second behind: do not burst to catch up
                deadline = loop.time()
            await asyncio.sleep(max(0.0, delay))

    def publish(self) -> None:
        t = self.ring.next_t
        data = encode(self._generate(t))
        self.ring.append(t, data)
        self._clients |= self._waiting.pop(t, set())
        self._drop_slow_consumers(t)
        broadcast(self._clients, data, text=True)

    def _drop_slow_consumers(self, t: int) -> None:
        slow = [
            conn
            for conn in self._clients
            if conn.transport.get_write_buffer_size() > self.max_buffer_bytes
        ]
        for conn in slow:
            self._clients.discard(conn)
            # Resume point: the first tick it has not been handed yet is t.
            reason = f"slow consumer; resume with from_t={t}"
            asyncio.get_running_loop().create_task(conn.close(SLOW_CONSUMER_CODE, reason))

    async def run_heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            message = {"type": "heartbeat", "latest_t": self.ring.latest_t, "ts": time.time()}
            broadcast(self._clients, encode(message), text=True)

    # HTTP

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        query = parse_qs(url.query)
        try:
            if url.path == "/ws/stream":
                int_param(query, "from_t", None)  # validate before the upgrade
                return None
            if url.path == "/health":
                return json_response(200, encode(self.health()))
            if url.path == "/incremental":
                return json_response(200, self.incremental(query))
        except BadRequest as exc:
            return json_response(400, encode({"error": "bad_request", "detail": str(exc)}))
        return json_response(404, encode({"error": "not_found", "detail": url.path}))

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "epoch": self.epoch,
            "oldest_t": self.ring.oldest_t,
            "latest_t": self.ring.latest_t,
            "clients": len(self._clients),
            "uptime_s": round(time.monotonic() - self.started, 3),
        }

    def incremental(self, query: dict[str, list[str]]) -> bytes:
        from_t = int_param(query, "from_t", 0)
        limit = int_param(query, "limit", 1000)
        assert from_t is not None and limit is not None
        if limit < 1:
            raise BadRequest("limit must be >= 1")
        limit = min(limit, MAX_INCREMENTAL_LIMIT)
        if self.ring.oldest_t is not None:
            from_t = max(from_t, self.ring.oldest_t)
        ticks = list(self.ring.range(from_t, limit))
        head = {
            "from_t": from_t,
            "count": len(ticks),
            "latest_t": self.ring.latest_t,
            "next_t": from_t + len(ticks),
        }
        return encode(head)[:-1] + b',"data":[' + b",".join(ticks) + b"]}"

    # WebSocket

    async def handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        from_t = int_param(parse_qs(urlsplit(ws.request.path).query), "from_t", None)
        ring = self.ring
        hello: dict[str, Any] = {
            "type": "hello",
            "epoch": self.epoch,
            "oldest_t": ring.oldest_t,
            "latest_t": ring.latest_t,
            "heartbeat_s": self.heartbeat_s,
            "server": SERVER_NAME,
        }
        if from_t is None:
            next_t = ring.latest_t if ring.latest_t is not None else ring.next_t
        elif ring.oldest_t is not None and from_t < ring.oldest_t:
            hello["truncated"] = True
            next_t = ring.oldest_t
        else:
            next_t = from_t
        try:
            await ws.send(encode(hello), text=True)
            # Replay until caught up; the ring may move on while we await.
            while next_t <= ring.next_t - 1:
                data = ring.get(next_t)
                if data is None:  # overwritten while this client was replaying
                    await ws.close(
                        SLOW_CONSUMER_CODE, f"slow consumer; resume with from_t={next_t}"
                    )
                    return
                await ws.send(data, text=True)
                next_t += 1
            # No await between the check above and joining: no gap, no duplicate.
            if next_t == ring.next_t:
                self._clients.add(ws)
            else:
                self._waiting[next_t].add(ws)
            async for message in ws:
                await self._on_client_message(ws, message)
        finally:
            self._clients.discard(ws)
            waiting = self._waiting.get(next_t)
            if waiting is not None:
                waiting.discard(ws)
                if not waiting:
                    del self._waiting[next_t]

    async def _on_client_message(self, ws: ServerConnection, message: str | bytes) -> None:
        try:
            request = json.loads(message)
            if not isinstance(request, dict) or request.get("type") != "ping":
                raise ValueError('expected {"type":"ping"}')
        except ValueError as exc:
            error = {"type": "error", "code": "bad_message", "detail": str(exc)}
            await ws.send(encode(error), text=True)
            return
        pong: dict[str, Any] = {"type": "pong", "ts": time.time()}
        if "id" in request:
            pong["id"] = request["id"]
        await ws.send(encode(pong), text=True)


async def serve_peer(args: argparse.Namespace) -> None:
    peer = Peer(
        rate=args.rate,
        agents=args.agents,
        ring_size=args.ring_size,
        heartbeat_s=args.heartbeat_s,
        max_buffer_bytes=int(args.max_buffer_mb * 1024 * 1024),
        seed=args.seed,
    )
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set_result, None)
    async with serve(
        peer.handle,
        args.host,
        args.port,
        compression="deflate" if args.compression else None,
        process_request=peer.process_request,
        max_size=MAX_MESSAGE_BYTES,
        backlog=args.backlog,
    ) as server:
        port = server.sockets[0].getsockname()[1]
        log.info(
            "peer listening on ws://%s:%d/ws/stream rate=%s agents=%d compression=%s",
            args.host,
            port,
            args.rate,
            args.agents,
            args.compression,
        )
        async with asyncio.TaskGroup() as tasks:
            producer = tasks.create_task(peer.run_producer())
            heartbeat = tasks.create_task(peer.run_heartbeat())
            await stop
            producer.cancel()
            heartbeat.cancel()
    # Leaving ``serve`` closed every connection with 1001 and waited for handlers.
    log.info("peer stopped at t=%s", peer.ring.latest_t)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--rate", type=float, default=10.0, help="ticks per second")
    parser.add_argument("--agents", type=int, default=DEFAULT_AGENTS, help="scales the tick size")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--ring-size", type=int, default=10_000, help="ticks kept for replay")
    parser.add_argument("--heartbeat-s", type=float, default=30.0)
    parser.add_argument(
        "--compression",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="permessage-deflate when the client offers it",
    )
    parser.add_argument(
        "--max-buffer-mb",
        type=float,
        default=32.0,
        help="close a client with 4008 when its write buffer exceeds this",
    )
    parser.add_argument("--backlog", type=int, default=1024, help="listen backlog")
    args = parser.parse_args(argv)
    if args.rate <= 0:
        parser.error("--rate must be > 0")
    if args.agents < 0:
        parser.error("--agents must be >= 0")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # One line per connection would cost CPU at 1000+ clients and is not the baseline's job.
    logging.getLogger("websockets").setLevel(logging.WARNING)
    asyncio.run(serve_peer(args))  # SIGINT and SIGTERM stop it cleanly


if __name__ == "__main__":
    main()
