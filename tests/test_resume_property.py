"""Property: whatever ``from_t`` and however production and reading interleave, a client
sees every ``t`` from its start exactly once, in order, until the live end — or is closed
with 4008 naming exactly the ``from_t`` that continues what it received.

The real RawSession, Hub and History (ring + segment files) run over a real socketpair
with small kernel buffers; the test drives production and the client's reads step by step.
"""

from __future__ import annotations

import socket
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Request,
    TextMessage,
)

from tickcast.config import Config
from tickcast.producer import Producer
from tickcast.protocol import heartbeat_message
from tickcast.transports.heartbeats import Heartbeats
from tickcast.transports.pacing import Pacer
from tickcast.transports.params import StreamParams
from tickcast.transports.raw import RawSession

PAD = "x" * 3000  # ~3 KB ticks, so a few dozen fill the small buffers


def make_tick() -> dict[str, Any]:
    """A tick's content (``produce`` numbers it)."""
    return {"ts": 1.0, "s": {"p": PAD}, "agents": [], "actions": [], "matches": []}


def socket_pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    for s in (a, b):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        s.setblocking(False)
    return a, b


def handshake() -> tuple[WSConnection, WSConnection]:
    server = WSConnection(ConnectionType.SERVER)
    client = WSConnection(ConnectionType.CLIENT)
    server.receive_data(client.send(Request(host="test", target="/ws/stream")))
    assert isinstance(next(server.events()), Request)
    client.receive_data(server.send(AcceptConnection()))
    assert isinstance(next(client.events()), AcceptConnection)
    return server, client


class Client:
    """The far end of the socketpair, reading only when told to."""

    def __init__(self, sock: socket.socket, ws: WSConnection, from_t: int | None) -> None:
        self.from_t = from_t
        self._parts: list[str] = []
        self.sock = sock
        self.ws = ws
        self.ticks: list[int] = []
        self.hello: dict[str, Any] | None = None
        self.close: tuple[int, str] | None = None

    def read_available(self, max_bytes: int) -> None:
        """Read what is in the socket now (at most ``max_bytes``) and parse it."""
        while max_bytes > 0 and self.close is None:
            try:
                data = self.sock.recv(min(max_bytes, 65536))
            except BlockingIOError:
                return
            if not data:
                return
            max_bytes -= len(data)
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, TextMessage):
                    self._parts.append(event.data)
                    if event.message_finished:
                        self._message(orjson.loads("".join(self._parts)))
                        self._parts.clear()
                elif isinstance(event, CloseConnection):
                    self.close = (event.code, event.reason)
                    self.sock.sendall(self.ws.send(event.response()))
                    self.sock.shutdown(socket.SHUT_WR)

    def start(self) -> int:
        """The first t this client should get, from its hello and its from_t."""
        assert self.hello is not None
        oldest, latest = self.hello["oldest_t"], self.hello["latest_t"]
        if self.from_t is None:
            return latest if latest is not None else 0
        return self.from_t if oldest is None else max(self.from_t, oldest)

    def done(self, latest: int | None) -> bool:
        if self.close is not None:
            return True
        if self.hello is None:
            return False
        if latest is None or self.start() > latest:
            return True
        return bool(self.ticks) and self.ticks[-1] == latest

    def _message(self, msg: dict[str, Any]) -> None:
        if msg["type"] == "hello":
            self.hello = msg
        elif msg["type"] == "tick":
            self.ticks.append(msg["t"])
        elif msg["type"] == "batch":
            self.ticks += [t["t"] for t in msg["ticks"]]


steps = st.lists(
    st.one_of(
        st.tuples(st.just("produce"), st.integers(1, 40)),
        st.tuples(st.just("read"), st.integers(1, 200_000)),
    ),
    max_size=25,
)


async def scenario(
    data_dir: Path, history_len: int, from_t: int | None, batch: int, plan: list[tuple[str, int]]
) -> None:
    config = replace(
        Config(),
        data_dir=data_dir,
        ring_size=32,
        max_lag=120,
        segment_bytes=40_000,
        fsync="never",
        heartbeat_s=3600.0,
    )
    producer = await Producer.open(config)
    service = producer.service
    async with trio.open_nursery() as nursery:
        await nursery.start(producer.run_writer)
        for _ in range(history_len):
            await producer.produce(make_tick())
        await service.wait_for_t(history_len - 1)  # the writer publishes once written
        server_sock, client_sock = socket_pair()
        server_ws, client_ws = handshake()
        assert service.limits.acquire("test") is None
        session = RawSession(
            service,
            StreamParams(from_t=from_t, batch=batch),
            ip="test",
            sock=server_sock,
            ws=server_ws,
            wbits=0,
            beats=Heartbeats(config.heartbeat_s, lambda: heartbeat_message(None)),
            pacer=Pacer(),
            live_backlog=16_384,
            high_water=8192,
        )
        nursery.start_soon(session.serve)
        client = Client(client_sock, client_ws, from_t)
        for action, n in plan:
            if action == "produce":
                for _ in range(n):
                    await producer.produce(make_tick())
                await service.wait_for_t(producer.log.next_t - 1)
            else:
                client.read_available(n)
            await trio.testing.wait_all_tasks_blocked()
        latest = service.history.latest_t
        # Drain: read until the client is at the live end, or closed.
        with trio.fail_after(10):
            while not client.done(latest):
                await trio.lowlevel.wait_readable(client_sock)
                client.read_available(1 << 20)
        client_sock.close()  # the client leaves; the server's close then fails fast
        nursery.cancel_scope.cancel()

    start = client.start()
    if client.ticks:
        assert client.ticks == list(range(start, start + len(client.ticks)))
    if client.close is not None:
        code, reason = client.close
        assert code == 4008, client.close
        resume = start + len(client.ticks)
        assert reason == f"slow consumer; resume with from_t={resume}"
        assert service.limits.total == 0  # the slot was released
    elif latest is not None and start <= latest:
        assert client.ticks[-1] == latest
    else:
        assert client.ticks == []


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    history_len=st.integers(0, 150),
    from_t=st.one_of(st.none(), st.integers(0, 200)),
    batch=st.sampled_from([1, 1, 7, 1000]),
    plan=steps,
)
def test_resume_sees_every_tick_exactly_once(
    history_len: int, from_t: int | None, batch: int, plan: list[tuple[str, int]]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        trio.run(scenario, Path(tmp), history_len, from_t, batch, plan)
