"""SPEC §3 over real sockets: resume, slow clients, fields, batching, compression, limits."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio

from conftest import Running, collect_ticks, make_config, recv_json, running
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


async def test_resume_from_ring_then_live(server: Running) -> None:
    await server.wait_for_t(60)
    async with open_websocket_url(server.ws_url("?from_t=10")) as ws:
        hello = await recv_json(ws)
        assert "truncated" not in hello
        ticks = await collect_ticks(ws, 150)  # the replay, then live ticks
    assert consecutive(ticks, 10)
    assert ticks[-1]["t"] > hello["latest_t"]


async def test_resume_from_segment_files_then_ring_then_live(tmp_path: Path) -> None:
    # max_lag well above the ring: this test is about where the replay reads from, and
    # a busy machine's client may trail the 400 ticks/s by more than the ring's 25.
    config = make_config(tmp_path, ring_size=25, rate=400.0, max_lag=100_000)
    async with running(config) as srv:
        await srv.wait_for_t(300)
        assert srv.producer.log.ring.oldest_t > 5  # t=5 is only on disk
        async with open_websocket_url(srv.ws_url("?from_t=5")) as ws:
            hello = await recv_json(ws)
            ticks = await collect_ticks(ws, 400)
        assert consecutive(ticks, 5)
        assert ticks[-1]["t"] > hello["latest_t"]


async def test_from_t_in_the_future_starts_when_produced(server: Running) -> None:
    target = (server.service.history.latest_t or 0) + 25
    async with open_websocket_url(server.ws_url(f"?from_t={target}")) as ws:
        hello = await recv_json(ws)
        assert hello["latest_t"] < target
        ticks = await collect_ticks(ws, 3)
    assert consecutive(ticks, target)


async def test_from_t_before_oldest_is_truncated(tmp_path: Path) -> None:
    config = make_config(
        tmp_path, segment_bytes=8192, retain_bytes=30_000, rate=300.0, ring_size=50
    )
    async with running(config) as srv:
        await wait_until(srv.service, lambda: (srv.service.history.oldest_t or 0) > 20)
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


async def test_fields_selection_on_the_stream(server: Running) -> None:
    async with open_websocket_url(server.ws_url("?fields=matches,s")) as ws:
        await recv_json(ws)
        ticks = await collect_ticks(ws, 3)
    for tick in ticks:
        assert list(tick) == ["type", "t", "ts", "s", "matches"]


async def test_batch_groups_the_replay_and_never_holds_live_ticks(server: Running) -> None:
    await server.wait_for_t(120)
    async with open_websocket_url(server.ws_url("?from_t=0&batch=50")) as ws:
        hello = await recv_json(ws)
        got: list[dict[str, Any]] = []
        sizes = []
        while not got or got[-1]["t"] <= hello["latest_t"] + 5:
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


async def test_stalled_client_is_closed_4008_and_others_get_every_tick(tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        rate=200.0,
        agents=300,
        ring_size=3000,
        max_lag=150,
        max_connections_per_ip=20,
    )
    async with running(config) as srv:
        await srv.wait_for_t(0)
        service = srv.service
        stalled = await RawClient.connect(srv.port, rcvbuf=4096)  # never reads (for now)
        start = (service.history.latest_t or 0) + 1
        end: list[int] = []
        results: dict[int, list[dict[str, Any]]] = {}

        async def reader(i: int, *, task_status: Any) -> None:
            async with open_websocket_url(srv.ws_url(f"?from_t={start}")) as ws:
                await recv_json(ws)
                task_status.started()
                got: list[dict[str, Any]] = []
                while not end or not got or got[-1]["t"] < end[0]:
                    got += await collect_ticks(ws, 1)
                results[i] = got

        stalled_got: list[dict[str, Any]] = []

        async def drain_stalled() -> None:
            while (msg := await stalled.message()) is not None:
                if msg["type"] == "tick":
                    stalled_got.append(msg)
                elif msg["type"] == "batch":
                    stalled_got.extend(msg["ticks"])

        async with trio.open_nursery() as nursery:
            for i in range(5):
                await nursery.start(reader, i)
            # Until the eviction, sample (on every published tick) how much the server
            # holds for the stalled client: its outbox never passes the live backlog
            # plus one message, however far behind it falls.
            held = []
            with trio.fail_after(WAIT_S):
                while service.hub.statistics().slow_closes == 0:
                    held += [
                        s._out_bytes
                        for s in service.hub.subscribers()
                        if isinstance(s, RawSession) and s.ip == "127.0.0.1" and not s.live
                    ]
                    await service.wait_for_t((service.history.latest_t or 0) + 1)
            # Evicted: the stalled client reads from now on (it must not depend on how
            # long the readers take whether its close grace has run out).
            nursery.start_soon(drain_stalled)
            biggest_message = max(len(t.raw) for t in srv.producer.log.ring.range(start, 100))
            assert held and max(held) <= LIVE_BACKLOG + biggest_message + 64
            assert service.limits.total == 5  # the stalled client's slot is free already
            end.append((service.history.latest_t or 0) + 20)
        for ticks in results.values():
            assert consecutive(ticks, start)
            assert ticks[-1]["t"] >= end[0]
        # The stalled client got everything queued for it, in order, then 4008 naming
        # exactly the t that continues it.
        got = stalled_got
        stalled.aclose()
        assert stalled.close is not None
        assert stalled.close.code == 4008
        assert consecutive(got, got[0]["t"]) if got else True
        resume = got[-1]["t"] + 1
        assert stalled.close.reason == f"slow consumer; resume with from_t={resume}"
        # A new connection resumes exactly there.
        async with open_websocket_url(srv.ws_url(f"?from_t={resume}")) as ws:
            await recv_json(ws)
            more = await collect_ticks(ws, 5)
        assert consecutive(more, resume)


async def test_evicted_slot_is_released_at_once_and_socket_within_grace(tmp_path: Path) -> None:
    config = make_config(
        tmp_path, rate=300.0, agents=300, max_lag=50, max_connections_per_ip=1, close_grace_s=0.5
    )
    async with running(config) as srv:
        await srv.wait_for_t(0)
        service = srv.service
        stalled = await RawClient.connect(srv.port, rcvbuf=4096)  # never reads, at all
        with trio.fail_after(WAIT_S):
            while not (sessions := service.hub.subscribers()):
                await service.wait_for_t((service.history.latest_t or 0) + 1)
        session = sessions[0]
        assert isinstance(session, RawSession)
        await wait_until(service, lambda: service.hub.statistics().slow_closes == 1)
        assert service.limits.total == 0
        # The same address may connect again immediately (per-IP limit 1).
        async with open_websocket_url(srv.ws_url()) as ws:
            assert (await recv_json(ws))["type"] == "hello"
        # The server does not hold the socket of a client that will not read: after
        # close_grace_s it resets it (a shielded send would keep it ESTABLISHED).
        with trio.fail_after(WAIT_S):
            await session.closed.wait()
        assert session.sock.fileno() == -1
        with pytest.raises(ConnectionResetError):
            while await stalled.sock.recv(1 << 20):
                pass
        stalled.aclose()


async def test_short_stall_catches_up_losslessly(tmp_path: Path) -> None:
    config = make_config(tmp_path, rate=200.0, agents=300, ring_size=5000)
    async with running(config) as srv:
        await srv.wait_for_t(0)
        client = await RawClient.connect(srv.port, "/ws/stream?batch=20", rcvbuf=4096)
        hello = await client.message()
        assert hello is not None
        # Stop reading until the server has had to fall back to history for us.
        await wait_until(srv.service, lambda: srv.service.hub.statistics().fell_behind >= 1)
        target = (srv.service.history.latest_t or 0) + 20
        got: list[dict[str, Any]] = []
        while not got or got[-1]["t"] < target:
            got += await client.ticks(1)
        client.aclose()
        assert consecutive(got, hello["latest_t"])
        assert srv.service.hub.statistics().slow_closes == 0


# -- compression -------------------------------------------------------------------------


async def test_permessage_deflate_negotiated_and_shared(server: Running) -> None:
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


async def test_compression_off_refuses_deflate(tmp_path: Path) -> None:
    async with running(make_config(tmp_path, compression=False)) as srv:
        await srv.wait_for_t(0)
        client = await RawClient.connect(srv.port, deflate=True)
        assert client.negotiated() == []
        await client.message()
        ticks = await client.ticks(5)
        client.aclose()
        assert consecutive(ticks, ticks[0]["t"])
        assert client.wire_bytes >= client.payload_bytes


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
    server: Running, query: str, param: str
) -> None:
    # (wsclient, not trio-websocket: the latter leaks its socket on a rejection)
    with pytest.raises(Rejected) as info:
        await RawClient.connect(server.port, f"/ws/stream?{query}")
    assert info.value.status == 400
    body = orjson.loads(info.value.body)
    assert body["error"] == "bad_request"
    assert param in body["detail"]


async def test_max_connections_429_and_freed_on_close(tmp_path: Path) -> None:
    async with running(make_config(tmp_path, max_connections=2)) as srv:
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


async def test_max_connections_per_ip(tmp_path: Path) -> None:
    async with running(make_config(tmp_path, max_connections_per_ip=1)) as srv:
        await srv.wait_for_t(0)
        async with open_websocket_url(srv.ws_url()) as a:
            await recv_json(a)
            with pytest.raises(Rejected) as info:
                await RawClient.connect(srv.port)
            assert info.value.status == 429
            assert "max_connections_per_ip" in orjson.loads(info.value.body)["detail"]


def xff(addr: str) -> list[tuple[bytes, bytes]]:
    return [(b"X-Forwarded-For", addr.encode())]


async def test_forwarded_for_believed_only_from_trusted_proxies(tmp_path: Path) -> None:
    trusted = (ipaddress.ip_network("127.0.0.1/32"),)
    config = make_config(tmp_path, max_connections_per_ip=1, trusted_proxies=trusted)
    async with running(config) as srv:
        await srv.wait_for_t(0)
        one = await RawClient.connect(srv.port, headers=xff("203.0.113.1"))
        two = await RawClient.connect(srv.port, headers=xff("203.0.113.2"))
        with pytest.raises(Rejected) as info:
            await RawClient.connect(srv.port, headers=xff("203.0.113.1"))
        assert info.value.status == 429
        assert "203.0.113.1" in orjson.loads(info.value.body)["detail"]
        one.aclose()
        two.aclose()


async def test_forwarded_for_ignored_without_trusted_proxies(tmp_path: Path) -> None:
    async with running(make_config(tmp_path, max_connections_per_ip=1)) as srv:
        await srv.wait_for_t(0)
        one = await RawClient.connect(srv.port, headers=xff("203.0.113.1"))
        with pytest.raises(Rejected) as info:
            await RawClient.connect(srv.port, headers=xff("203.0.113.2"))
        assert info.value.status == 429
        assert "127.0.0.1" in orjson.loads(info.value.body)["detail"]
        one.aclose()


# -- abusive or unusual clients ------------------------------------------------------------


async def test_client_that_sends_without_reading_cannot_grow_server_memory(
    tmp_path: Path,
) -> None:
    from wsproto.events import TextMessage

    async with running(make_config(tmp_path, rate=5.0)) as srv:
        await srv.wait_for_t(0)
        client = await RawClient.connect(srv.port, rcvbuf=4096)
        # Up to 2,000,000 tiny messages (40 MB), each answered with an error the client
        # never reads: far more than the kernel buffers on both sides hold.
        chunk = b"".join(client.ws.send(TextMessage(data='{"type":"x"}')) for _ in range(1000))
        sent = 0
        with trio.move_on_after(3):  # once the server stops reading, our sends block
            while sent < 2000:
                await client.sock.send(chunk)
                sent += 1
        assert sent < 2000  # TCP pushed back: the server stopped reading
        sessions = [s for s in srv.service.hub.subscribers() if isinstance(s, RawSession)]
        assert len(sessions) == 1
        assert sessions[0]._out_bytes <= 256 * 1024  # high-water mark + one read's replies
        client.aclose()


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


async def test_close_without_code_gets_a_valid_reply(server: Running) -> None:
    import os

    client = await RawClient.connect(server.port, "/ws/stream?from_t=999999999")
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


async def test_invalid_handshake_gets_json_400(server: Running) -> None:
    sock = trio.socket.socket()
    await sock.connect(("127.0.0.1", server.port))
    await sock.send(
        b"GET /ws/stream HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    )
    data = b""
    with trio.fail_after(5):
        while chunk := await sock.recv(65536):
            data += chunk
    sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert orjson.loads(body)["error"] == "bad_request"
