"""docs/protocol.md over real sockets: resume, slow clients, fields, batching, compression, limits.

Every test that takes ``stream_server`` or ``transport`` runs under both WebSocket
transports: ``tickcast serve``'s raw one and the Quart route under Hypercorn (ASGI).
Where the ASGI transport behaves differently, the test asserts what docs/protocol.md
("The ASGI transport") says. The rest are raw-only, each saying why.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
import trio.testing

from conftest import (
    Running,
    Transport,
    collect_ticks,
    make_config,
    recv_json,
    running,
    truncated,
)
from conftest import ws_connect as open_websocket_url
from tickcast.service import Service
from tickcast.transports.raw import LIVE_BACKLOG, RawSession
from wsclient import RawClient, Rejected

WAIT_S = 30  # a deadline for waits on the server, so a regression fails instead of hanging


def consecutive(ticks: list[dict[str, Any]], start: int) -> bool:
    return [t["t"] for t in ticks] == list(range(start, start + len(ticks)))


async def wait_until(service: Service, condition: Any) -> None:
    """Wait, tick by tick, until ``condition()`` holds (the hub acts only on publish)."""
    with trio.fail_after(WAIT_S):
        while not condition():
            await service.wait_for_t((service.history.latest_t or 0) + 1)


# -- resume --------------------------------------------------------------------------------


async def test_resume_from_ring_then_live(stream_server: Running) -> None:
    await stream_server.wait_for_t(60)
    async with open_websocket_url(stream_server.ws_url("?from_t=10")) as ws:
        hello = await recv_json(ws)
        assert "truncated" not in hello
        ticks = await collect_ticks(ws, 150)  # the replay, then live ticks
    assert consecutive(ticks, 10)
    assert ticks[-1]["t"] > hello["latest_t"]


async def test_resume_from_segment_files_then_ring_then_live(
    tmp_path: Path, transport: Transport
) -> None:
    # (max_lag: it defaults to the ring size, 25 ticks, which at 400 ticks/s is 60 ms of
    # a slow machine's pause between catching up and going live: a 4008, not this test)
    config = make_config(tmp_path, ring_size=25, rate=400.0, max_lag=10_000)
    async with running(config, transport) as srv:
        await srv.wait_for_t(300)
        assert srv.producer.log.ring.oldest_t > 5  # t=5 is only on disk
        async with open_websocket_url(srv.ws_url("?from_t=5")) as ws:
            hello = await recv_json(ws)
            ticks = await collect_ticks(ws, 400)
        assert consecutive(ticks, 5)
        assert ticks[-1]["t"] > hello["latest_t"]


async def test_from_t_in_the_future_starts_when_produced(stream_server: Running) -> None:
    target = (stream_server.service.history.latest_t or 0) + 25
    async with open_websocket_url(stream_server.ws_url(f"?from_t={target}")) as ws:
        hello = await recv_json(ws)
        assert hello["latest_t"] < target
        ticks = await collect_ticks(ws, 3)
    assert consecutive(ticks, target)


async def test_from_t_before_oldest_is_truncated(tmp_path: Path, transport: Transport) -> None:
    async with truncated(tmp_path, transport) as srv:
        async with open_websocket_url(srv.ws_url("?from_t=0")) as ws:
            hello = await recv_json(ws)
            assert hello["truncated"] is True
            assert hello["oldest_t"] > 0
            ticks = await collect_ticks(ws, 5)
        assert ticks[0]["t"] == hello["oldest_t"]
        assert consecutive(ticks, hello["oldest_t"])
        health = (await srv.get("/health")).json()
        assert health["oldest_t"] >= hello["oldest_t"]
        body = (await srv.get("/incremental?from_t=0&limit=3")).json()
        assert body["from_t"] >= hello["oldest_t"]


# -- fields and batches ------------------------------------------------------------------


async def test_fields_selection_on_the_stream(stream_server: Running) -> None:
    async with open_websocket_url(stream_server.ws_url("?fields=matches,s")) as ws:
        await recv_json(ws)
        ticks = await collect_ticks(ws, 3)
    for tick in ticks:
        assert list(tick) == ["type", "t", "ts", "s", "matches"]


async def test_batch_groups_the_replay_and_never_holds_live_ticks(
    stream_server: Running, transport: Transport
) -> None:
    await stream_server.wait_for_t(120)
    async with open_websocket_url(stream_server.ws_url("?from_t=0&batch=50")) as ws:
        hello = await recv_json(ws)
        got: list[dict[str, Any]] = []
        sizes: list[int] = []

        def past_the_replay() -> bool:
            if not got or got[-1]["t"] <= hello["latest_t"] + 5:
                return False
            # Under ASGI, live ticks that queued up in the connection's channel are
            # grouped too (docs/protocol.md): read on until one arrives alone.
            return transport == "raw" or sizes[-1] == 1

        with trio.fail_after(WAIT_S):
            while not past_the_replay():
                msg = await recv_json(ws)
                if msg["type"] == "batch":
                    sizes.append(len(msg["ticks"]))
                    got += msg["ticks"]
                elif msg["type"] == "tick":
                    sizes.append(1)
                    got.append(msg)
    assert consecutive(got, 0)
    assert max(sizes) == 50  # the replay came in full batches
    assert all(1 <= n <= 50 for n in sizes)
    assert sizes[-1] == 1  # a live tick is sent alone, not held for a batch


# -- slow clients ------------------------------------------------------------------------


async def test_stalled_client_is_closed_4008_and_others_get_every_tick(
    tmp_path: Path, transport: Transport
) -> None:
    config = make_config(
        tmp_path,
        rate=200.0,
        agents=300,
        ring_size=3000,
        max_lag=150,
        max_connections_per_ip=20,
    )
    async with running(config, transport) as srv:
        await srv.wait_for_t(0)
        service = srv.service
        stalled = await RawClient.connect(srv.port, rcvbuf=4096)  # never reads (for now)
        start = (service.history.latest_t or 0) + 1
        end: list[int] = []
        results: dict[int, list[dict[str, Any]]] = {}

        async def reader(i: int, *, task_status: Any) -> None:
            # (fields=s: small messages, so that on a busy 2-core machine the readers,
            # in this process, leave the server the CPU it needs to keep them live)
            async with open_websocket_url(srv.ws_url(f"?from_t={start}&fields=s")) as ws:
                await recv_json(ws)
                task_status.started()
                got: list[dict[str, Any]] = []
                while not end or not got or got[-1]["t"] < end[0]:
                    got += await collect_ticks(ws, 1)
                results[i] = got

        stalled_got: list[dict[str, Any]] = []
        stalled_hello: list[dict[str, Any]] = []

        async def drain_stalled() -> None:
            while (msg := await stalled.message()) is not None:
                if msg["type"] == "hello":
                    stalled_hello.append(msg)
                elif msg["type"] == "tick":
                    stalled_got.append(msg)
                elif msg["type"] == "batch":
                    stalled_got.extend(msg["ticks"])

        try:
            with trio.fail_after(WAIT_S):
                async with trio.open_nursery() as nursery:
                    for i in range(5):
                        await nursery.start(reader, i)
                    held = await _sample_until_evicted(service)
                    # Evicted: the stalled client reads from now on (it must not depend
                    # on how long the readers take whether its close grace has run out).
                    nursery.start_soon(drain_stalled)
                    assert service.limits.total == 5  # the stalled client's slot is free
                    end.append((service.history.latest_t or 0) + 20)
        finally:
            # (Under ASGI a socket left unread would hold Hypercorn's shielded send,
            # and with it the server's shutdown.)
            stalled.aclose()
        if transport == "raw":
            # The outbox never passed the live backlog plus one message, however far
            # behind the client fell. (The ASGI transport's buffer is a channel of
            # ASGI_QUEUE ticks: bounded by its type.)
            biggest = max(len(t.raw) for t in srv.producer.log.ring.range(start, 100))
            assert held and max(held) <= LIVE_BACKLOG + biggest + 64
        for ticks in results.values():
            assert consecutive(ticks, start)
            assert ticks[-1]["t"] >= end[0]
        # The stalled client got everything queued for it, in order, then 4008 naming
        # exactly the t that continues it.
        # It connected without from_t: its stream starts with the hello's latest tick.
        got = stalled_got
        assert stalled.close is not None
        assert stalled.close.code == 4008
        assert len(stalled_hello) == 1 and got
        assert consecutive(got, stalled_hello[0]["latest_t"])
        resume = got[-1]["t"] + 1
        assert stalled.close.reason == f"slow consumer; resume with from_t={resume}"
        # A new connection resumes exactly there.
        async with open_websocket_url(srv.ws_url(f"?from_t={resume}")) as ws:
            await recv_json(ws)
            with trio.fail_after(WAIT_S):
                more = await collect_ticks(ws, 5)
        assert consecutive(more, resume)


async def _sample_until_evicted(service: Service) -> list[int]:
    """The raw outbox bytes of non-live 127.0.0.1 sessions, on every tick, until a 4008."""
    held = []
    while service.hub.statistics().slow_closes == 0:
        held += [
            s._out_bytes
            for s in service.hub.subscribers()
            if isinstance(s, RawSession) and s.ip == "127.0.0.1" and not s.live
        ]
        await service.wait_for_t((service.history.latest_t or 0) + 1)
    return held


async def test_client_that_never_reads_is_evicted_and_its_slot_freed_at_once(
    tmp_path: Path, transport: Transport
) -> None:
    config = make_config(
        tmp_path, rate=150.0, agents=600, max_lag=50, max_connections_per_ip=1, close_grace_s=0.5
    )
    async with running(config, transport) as srv:
        await srv.wait_for_t(0)
        service = srv.service
        stalled = await RawClient.connect(srv.port, rcvbuf=4096)  # never reads, at all
        try:
            with trio.fail_after(WAIT_S):
                while not (sessions := service.hub.subscribers()):
                    await service.wait_for_t((service.history.latest_t or 0) + 1)
            session = sessions[0]
            # Evicted even if its very first send blocks (a regression under ASGI: the
            # session joined the hub only after its hello and first tick were sent).
            await wait_until(service, lambda: service.hub.statistics().slow_closes == 1)
            assert service.limits.total == 0
            # The same address may connect again immediately (per-IP limit 1).
            async with open_websocket_url(srv.ws_url()) as ws:
                assert (await recv_json(ws))["type"] == "hello"
            if transport == "raw":
                # The server does not hold the socket of a client that will not read:
                # after close_grace_s it resets it (a shielded send would keep it open).
                assert isinstance(session, RawSession)
                with trio.fail_after(WAIT_S):
                    await session.closed.wait()
                assert session.sock.fileno() == -1
                with pytest.raises(ConnectionResetError):
                    while await stalled.sock.recv(1 << 20):
                        pass
        finally:
            stalled.aclose()
        # Under ASGI, Hypercorn shields its sends: while such a client neither reads nor
        # leaves, its socket stays open (docs/protocol.md, "The ASGI transport"); the
        # session ends as soon as the client goes.
        with trio.fail_after(WAIT_S):
            await session.closed.wait()


async def test_short_stall_catches_up_losslessly(tmp_path: Path, transport: Transport) -> None:
    config = make_config(tmp_path, rate=200.0, agents=300, ring_size=5000)
    async with running(config, transport) as srv:
        await srv.wait_for_t(0)
        service = srv.service
        client = await RawClient.connect(srv.port, "/ws/stream?batch=20", rcvbuf=4096)
        try:
            hello = await client.message()
            assert hello is not None
            (session,) = service.hub.subscribers()

            def behind() -> bool:
                # The server stopped handing it live ticks: it must catch up from history.
                # (Under ASGI the stall may begin in the catch-up before it ever went live,
                # so fell_behind, which counts live -> catching up, need not move.)
                return not session.live and (service.history.latest_t or 0) - session.next_t > 20

            # Stop reading until the server has had to fall back to history for us.
            await wait_until(service, behind)
            target = (service.history.latest_t or 0) + 20
            got: list[dict[str, Any]] = []
            with trio.fail_after(WAIT_S):
                while not got or got[-1]["t"] < target:
                    got += await client.ticks(1)
        finally:
            client.aclose()
        assert consecutive(got, hello["latest_t"])
        assert service.hub.statistics().slow_closes == 0


# -- compression -------------------------------------------------------------------------


async def test_permessage_deflate_negotiated_and_shared(server: Running) -> None:
    # Raw only: one compressed frame per tick shared by every client, and
    # server_no_context_takeover, are the raw transport's; under ASGI Hypercorn
    # compresses per connection with context takeover (docs/protocol.md).
    client = await RawClient.connect(server.port, deflate=True)
    assert client.negotiated() == ["permessage-deflate"]
    assert client.accept is not None
    ext = client.accept.extensions[0]
    assert ext.server_no_context_takeover  # type: ignore[attr-defined]
    await client.message()  # hello
    ticks = await client.ticks(30)
    client.aclose()
    assert consecutive(ticks, ticks[0]["t"])
    assert client.wire_bytes < client.payload_bytes * 0.8


async def test_compression_off_refuses_deflate(tmp_path: Path, transport: Transport) -> None:
    async with running(make_config(tmp_path, compression=False), transport) as srv:
        await srv.wait_for_t(0)
        client = await RawClient.connect(srv.port, deflate=True)
        try:
            with trio.fail_after(WAIT_S):
                await client.message()
                ticks = await client.ticks(5)
        finally:
            client.aclose()
        assert consecutive(ticks, ticks[0]["t"])
        if transport == "raw":
            assert client.negotiated() == []
            assert client.wire_bytes >= client.payload_bytes
        else:
            # Hypercorn negotiates permessage-deflate itself, before the app sees the
            # request: the setting cannot turn it off there (docs/protocol.md).
            assert client.negotiated() == ["permessage-deflate"]


# -- validation and limits ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("from_t=abc", "from_t"),
        ("from_t=-1", "from_t"),
        ("from_t=", "from_t"),
        ("batch=0", "batch"),
        ("batch=1001", "batch"),
        ("batch=x", "batch"),
        ("fields=s,bogus", "fields"),
        ("fields=", "fields"),
    ],
)
async def test_bad_parameter_refuses_upgrade_with_400(
    stream_server: Running, query: str, param: str
) -> None:
    # (wsclient, not trio-websocket: the latter leaks its socket on a rejection)
    with pytest.raises(Rejected) as info:
        await RawClient.connect(stream_server.port, f"/ws/stream?{query}")
    assert info.value.status == 400
    body = orjson.loads(info.value.body)
    assert body["error"] == "bad_request"
    assert param in body["detail"]


async def test_max_connections_429_and_freed_on_close(tmp_path: Path, transport: Transport) -> None:
    async with running(make_config(tmp_path, max_connections=2), transport) as srv:
        await srv.wait_for_t(0)
        async with open_websocket_url(srv.ws_url()) as a:
            await recv_json(a)
            async with open_websocket_url(srv.ws_url()) as b:
                await recv_json(b)
                with pytest.raises(Rejected) as info:
                    await RawClient.connect(srv.port)
                assert info.value.status == 429
                body = orjson.loads(info.value.body)
                assert body["error"] == "too_many_connections"
                assert "max_connections" in body["detail"]
            # b closed: its slot is free again.
            async with open_websocket_url(srv.ws_url()) as c:
                assert (await recv_json(c))["type"] == "hello"
        text = (await srv.get("/metrics")).text
        assert "tickcast_refused_connections_total 1.0" in text


async def test_max_connections_per_ip(tmp_path: Path, transport: Transport) -> None:
    async with running(make_config(tmp_path, max_connections_per_ip=1), transport) as srv:
        await srv.wait_for_t(0)
        async with open_websocket_url(srv.ws_url()) as a:
            await recv_json(a)
            with pytest.raises(Rejected) as info:
                await RawClient.connect(srv.port)
            assert info.value.status == 429
            assert "max_connections_per_ip" in orjson.loads(info.value.body)["detail"]


def xff(addr: str) -> list[tuple[bytes, bytes]]:
    return [(b"X-Forwarded-For", addr.encode())]


async def test_forwarded_for_believed_only_from_trusted_proxies(
    tmp_path: Path, transport: Transport
) -> None:
    trusted = (ipaddress.ip_network("127.0.0.1/32"),)
    config = make_config(tmp_path, max_connections_per_ip=1, trusted_proxies=trusted)
    async with running(config, transport) as srv:
        await srv.wait_for_t(0)
        one = await RawClient.connect(srv.port, headers=xff("203.0.113.1"))
        two = await RawClient.connect(srv.port, headers=xff("203.0.113.2"))
        with pytest.raises(Rejected) as info:
            await RawClient.connect(srv.port, headers=xff("203.0.113.1"))
        assert info.value.status == 429
        assert "203.0.113.1" in orjson.loads(info.value.body)["detail"]
        one.aclose()
        two.aclose()


async def test_forwarded_for_ignored_without_trusted_proxies(
    tmp_path: Path, transport: Transport
) -> None:
    async with running(make_config(tmp_path, max_connections_per_ip=1), transport) as srv:
        await srv.wait_for_t(0)
        one = await RawClient.connect(srv.port, headers=xff("203.0.113.1"))
        with pytest.raises(Rejected) as info:
            await RawClient.connect(srv.port, headers=xff("203.0.113.2"))
        assert info.value.status == 429
        assert "127.0.0.1" in orjson.loads(info.value.body)["detail"]
        one.aclose()


# -- abusive or unusual clients ------------------------------------------------------------


async def test_client_that_sends_without_reading_cannot_grow_server_memory(
    tmp_path: Path, transport: Transport
) -> None:
    from wsproto.events import TextMessage

    async with running(make_config(tmp_path, rate=5.0), transport) as srv:
        await srv.wait_for_t(0)
        client = await RawClient.connect(srv.port, rcvbuf=4096)
        try:
            # Up to 2,000,000 tiny messages (40 MB), each answered with an error the
            # client never reads: far more than the kernel buffers on both sides hold.
            chunk = b"".join(client.ws.send(TextMessage(data='{"type":"x"}')) for _ in range(1000))
            assert await _pushed_back(client.sock, chunk * 2000)  # the server stopped reading
            if transport == "raw":
                sessions = [s for s in srv.service.hub.subscribers() if isinstance(s, RawSession)]
                assert len(sessions) == 1
                assert sessions[0]._out_bytes <= 256 * 1024  # high-water + one read's replies
            # (Under ASGI the session's reader awaits each reply's send, Quart's and
            # Hypercorn's queues between the socket and it hold 10 messages each, and
            # Hypercorn stops reading when they are full.)
        finally:
            client.aclose()


async def _pushed_back(sock: trio.socket.SocketType, data: bytes) -> bool:
    """Send ``data`` until TCP pushes back; False if all of it was taken.

    Pushback, not a slow server: the server runs in this trio run, so once every
    task is blocked it has read all it is willing to read, and a send that still
    cannot proceed then means it stopped reading.
    """
    raw = socket.socket(fileno=os.dup(sock.fileno()))  # the same socket, non-blocking
    raw.setblocking(False)
    view = memoryview(data)
    try:
        with trio.fail_after(WAIT_S):
            while view:
                try:
                    view = view[raw.send(view[:65536]) :]
                    await trio.lowlevel.checkpoint()
                except BlockingIOError:
                    await trio.testing.wait_all_tasks_blocked(cushion=0.01)
                    try:
                        view = view[raw.send(view[:65536]) :]
                    except BlockingIOError:
                        return True
    finally:
        raw.close()  # the duplicate only
    return False


def frames_of(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of each unmasked server frame in ``data``."""
    out, pos = [], 0
    while pos + 2 <= len(data):
        n, head = data[pos + 1] & 0x7F, 2
        if n == 126:
            n, head = int.from_bytes(data[pos + 2 : pos + 4], "big"), 4
        elif n == 127:
            n, head = int.from_bytes(data[pos + 2 : pos + 10], "big"), 10
        out.append((data[pos] & 0x0F, data[pos + head : pos + head + n]))
        pos += head + n
    return out


async def test_close_without_code_gets_a_valid_reply(stream_server: Running) -> None:
    import os

    client = await RawClient.connect(stream_server.port, "/ws/stream?from_t=999999999")
    await client.sock.send(bytes([0x88, 0x80]) + os.urandom(4))  # close, masked, no code
    data = b""
    with trio.fail_after(5):
        while chunk := await client.sock.recv(65536):
            data += chunk
    client.aclose()
    closes = [payload for op, payload in frames_of(data) if op == 0x8]
    assert len(closes) == 1
    # Either no code or a valid one; 1005 ("no status") must never be sent on the wire.
    assert closes[0] == b"" or int.from_bytes(closes[0][:2], "big") not in (1005, 1006)


async def read_response(sock: trio.socket.SocketType) -> tuple[bytes, bytes]:
    """One HTTP response's head and body, read by its content-length (not to EOF:
    Hypercorn says "connection: close" but keeps the socket open a while)."""
    data = b""
    while True:
        head, done, body = data.partition(b"\r\n\r\n")
        if done:
            length = re.search(rb"(?im)^content-length: *(\d+)", head)
            assert length is not None, head
            if len(body) >= int(length[1]):
                return head, body
        chunk = await sock.recv(65536)
        assert chunk, data
        data += chunk


async def test_invalid_handshake_gets_400(stream_server: Running, transport: Transport) -> None:
    sock = trio.socket.socket()
    await sock.connect(("127.0.0.1", stream_server.port))
    await sock.send(
        b"GET /ws/stream HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    )
    with trio.fail_after(5):
        head, body = await read_response(sock)
    sock.close()
    assert head.startswith(b"HTTP/1.1 400")
    if transport == "raw":
        assert orjson.loads(body)["error"] == "bad_request"
    else:
        # Hypercorn refuses an invalid handshake itself, before the app: no JSON body
        # (docs/protocol.md, "The ASGI transport").
        assert body == b""
