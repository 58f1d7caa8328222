"""The running service over real sockets: the tick and stream basics (docs/protocol.md)
and HTTP (docs/api.md).

Tests taking ``stream_server`` or ``transport`` run under both WebSocket transports
(``tickcast serve``'s raw one and the Quart route under Hypercorn). The HTTP routes
are the same Quart app on Hypercorn's connection handler under both: their tests run once.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import trio
from trio_websocket import ConnectionClosed

from conftest import (
    Running,
    Transport,
    collect_ticks,
    make_config,
    next_tick,
    recv_json,
    running,
)
from conftest import ws_connect as open_websocket_url
from tickcast.config import Config
from wsclient import RawClient, Rejected

WAIT_S = 30  # a deadline for waits, so a regression fails instead of hanging

KEY_ORDER = ["type", "t", "ts", "s", "agents", "actions", "matches"]


async def test_hello_then_latest_then_consecutive_live_ticks(stream_server: Running) -> None:
    async with open_websocket_url(stream_server.ws_url()) as ws:
        hello = await recv_json(ws)
        assert hello["type"] == "hello"
        assert set(hello) >= {"epoch", "oldest_t", "latest_t", "heartbeat_s", "server"}
        assert hello["epoch"] == stream_server.service.history.epoch
        assert hello["oldest_t"] == 0
        assert hello["heartbeat_s"] == 30.0
        assert hello["server"].startswith("tickcast/")
        assert "truncated" not in hello
        first = await next_tick(ws)
        assert first["t"] == hello["latest_t"]
        ticks = await collect_ticks(ws, 20)
        assert [t["t"] for t in ticks] == list(range(first["t"] + 1, first["t"] + 21))


async def test_tick_shape_and_identical_bytes_everywhere(stream_server: Running) -> None:
    async with open_websocket_url(stream_server.ws_url()) as ws:
        await recv_json(ws)
        raw = await ws.get_message()
    tick = orjson.loads(raw)
    assert list(tick) == KEY_ORDER
    assert isinstance(tick["t"], int)
    assert isinstance(tick["ts"], float)
    assert set(tick["s"]) == {"price_norm", "volatility", "liquidity", "imbalance"}
    # The same bytes are served by /incremental and stored in the segment file.
    r = await stream_server.get(f"/incremental?from_t={tick['t']}&limit=1")
    body = r.content
    assert raw.encode() in body
    await trio.to_thread.run_sync(stream_server.producer.log.store.sync)
    lines = b"".join(p.read_bytes() for p in sorted(stream_server.config.data_dir.glob("*.jsonl")))
    assert raw.encode() + b"\n" in lines


async def test_a_tick_at_the_default_settings_is_1_to_5_kb(tmp_path: Path) -> None:
    # The tests' servers run 20 agents: this one runs the default simulator.
    config = make_config(tmp_path, agents=Config().agents, rate=50.0)
    async with running(config) as srv:
        await srv.wait_for_t(20)
        body = (await srv.get("/incremental?from_t=0&limit=21")).json()
    sizes = [len(orjson.dumps(tick)) for tick in body["data"]]
    assert len(sizes) == 21
    assert all(1024 <= size <= 5120 for size in sizes), sizes


async def test_incremental_shape(server: Running) -> None:
    await server.wait_for_t(30)
    r = await server.get("/incremental?from_t=5&limit=10")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert list(body) == ["from_t", "count", "latest_t", "next_t", "data"]
    assert body["from_t"] == 5
    assert body["count"] == 10
    assert body["next_t"] == 15
    assert body["latest_t"] >= 30
    assert [t["t"] for t in body["data"]] == list(range(5, 15))


async def test_incremental_defaults_and_cap(tmp_path: Path) -> None:
    # 10,051 ticks produced directly (an ingest source: no simulator), in a fraction
    # of a second; the ring holds them all.
    config = make_config(tmp_path, source="ingest", ingest_token="t", ring_size=20000)
    async with running(config) as srv:
        for t in range(10_051):
            tick = {"type": "tick", "t": t, "ts": 1.0 + t, "s": {}}
            tick |= {"agents": [], "actions": [], "matches": []}
            await srv.producer.produce(tick)
        await srv.wait_for_t(10_050)
        body = (await srv.get("/incremental")).json()
        assert body["from_t"] == 0 and body["count"] == 1000
        body = (await srv.get("/incremental?from_t=0&limit=50000")).json()
        assert body["count"] == 10_000
        assert body["next_t"] == 10_000


async def test_incremental_past_latest_is_empty(server: Running) -> None:
    body = (await server.get("/incremental?from_t=999999999")).json()
    assert body["count"] == 0
    assert body["data"] == []
    assert body["from_t"] == 999999999
    assert body["next_t"] == 999999999


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("from_t=abc", "from_t"),
        ("from_t=-1", "from_t"),
        ("from_t=1.5", "from_t"),
        ("limit=0", "limit"),
        ("limit=-3", "limit"),
        ("limit=x", "limit"),
        ("fields=s,nope", "fields"),
    ],
)
async def test_incremental_bad_parameters_are_json_400(
    server: Running, query: str, param: str
) -> None:
    r = await server.get(f"/incremental?{query}")
    assert r.status_code == 400
    body = r.json()
    assert body["error"] == "bad_request"
    assert param in body["detail"]


async def test_incremental_fields(server: Running) -> None:
    await server.wait_for_t(3)
    body = (await server.get("/incremental?from_t=0&limit=3&fields=s")).json()
    for tick in body["data"]:
        assert list(tick) == ["type", "t", "ts", "s"]


async def test_unknown_route_and_method_are_json(server: Running) -> None:
    r = await server.get("/nope")
    assert r.status_code == 404
    assert r.json()["error"]
    import httpx

    async with httpx.AsyncClient() as client:
        r = await client.delete(server.url("/incremental"))
    assert r.status_code == 405
    assert "error" in r.json()


async def test_health(stream_server: Running) -> None:
    r = await stream_server.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert body["epoch"] == stream_server.service.history.epoch
    assert body["oldest_t"] == 0
    assert body["latest_t"] >= 0
    assert body["clients"] == 0
    assert body["uptime_s"] >= 0
    async with open_websocket_url(stream_server.ws_url()) as ws:
        await recv_json(ws)
        assert (await stream_server.get("/health")).json()["clients"] == 1


async def test_health_degraded_when_writer_fails(server: Running) -> None:
    server.producer.log._fail("disk on fire")
    r = await server.get("/health")
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "degraded"
    assert "disk on fire" in body["reason"]


async def test_metrics(stream_server: Running) -> None:
    async with open_websocket_url(stream_server.ws_url()) as ws:
        await recv_json(ws)
        await collect_ticks(ws, 3)
        text = (await stream_server.get("/metrics")).text
    for name in [
        "tickcast_connections ",
        "tickcast_ticks_produced_total",
        "tickcast_messages_sent_total",
        "tickcast_bytes_sent_total",
        "tickcast_slow_consumer_closes_total",
        "tickcast_refused_connections_total",
        "tickcast_push_latency_seconds_bucket",
        "tickcast_segment_bytes",
        "tickcast_gc_pause_seconds_count",
    ]:
        assert name in text, name


async def test_connections_are_counted(stream_server: Running) -> None:
    async def metric(name: str) -> float:
        text = (await stream_server.get("/metrics")).text
        (line,) = [line for line in text.splitlines() if line.startswith(f"{name} ")]
        return float(line.split()[1])

    assert await metric("tickcast_connections_total") == 0
    async with open_websocket_url(stream_server.ws_url()) as a:
        await recv_json(a)
        async with open_websocket_url(stream_server.ws_url()) as b:
            await recv_json(b)
            assert await metric("tickcast_connections") == 2
        await recv_json(a)
    async with open_websocket_url(stream_server.ws_url()) as c:
        await recv_json(c)
        assert await metric("tickcast_connections_total") == 3
    # A refused upgrade (400) is not a connection.
    with pytest.raises(Rejected):
        await RawClient.connect(stream_server.port, "/ws/stream?batch=0")
    assert await metric("tickcast_connections_total") == 3


async def test_openapi_docs_and_dashboard(server: Running) -> None:
    spec = (await server.get("/openapi.json")).json()
    assert spec["openapi"].startswith("3.")
    assert "/incremental" in spec["paths"]
    assert "/health" in spec["paths"]
    docs = await server.get("/docs")
    assert docs.status_code == 200 and "openapi.json" in docs.text
    page = await server.get("/")
    assert page.status_code == 200
    assert "/ws/stream" in page.text


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
async def test_ping_pong_echoes_id(stream_server: Running, binary: bool) -> None:
    ping = orjson.dumps({"type": "ping", "id": "abc"})
    async with open_websocket_url(stream_server.ws_url()) as ws:
        await recv_json(ws)
        await ws.send_message(ping if binary else ping.decode())
        with trio.fail_after(5):
            while (msg := await recv_json(ws))["type"] != "pong":
                pass
        assert msg["id"] == "abc"
        assert isinstance(msg["ts"], float)


async def test_protocol_level_ping_is_answered(stream_server: Running) -> None:
    async with open_websocket_url(stream_server.ws_url()) as ws:
        await recv_json(ws)

        async def keep_reading() -> None:
            # trio-websocket queues one message: unless the ticks are read, its reader
            # stops before it sees a pong that arrives after two of them.
            while True:
                await ws.get_message()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(keep_reading)
            with trio.fail_after(WAIT_S):
                await ws.ping(b"xyz")  # returns when the matching pong arrives
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    "message",
    ["not json", "[1,2]", '{"type":"subscribe"}', '"str"', "", b"", b"\xff", b"[1]"],
    ids=[
        "text",
        "array",
        "unknown-type",
        "string",
        "empty",
        "empty-binary",
        "binary",
        "binary-array",
    ],
)
async def test_bad_message_gets_error_and_connection_stays_open(
    stream_server: Running, message: str | bytes
) -> None:
    async with open_websocket_url(stream_server.ws_url()) as ws:
        await recv_json(ws)
        await ws.send_message(message)
        with trio.fail_after(5):
            while (msg := await recv_json(ws))["type"] != "error":
                pass
        assert msg["code"] == "bad_message"
        assert msg["detail"]
        # Still open: the stream goes on and pings are answered.
        before = (await next_tick(ws))["t"]
        after = (await next_tick(ws))["t"]
        assert after == before + 1


async def test_message_over_64_kib_closes_with_1009(stream_server: Running) -> None:
    async with open_websocket_url(stream_server.ws_url(), max_message_size=2**20) as ws:
        await recv_json(ws)
        await ws.send_message("x" * (64 * 1024 + 1))
        with pytest.raises(ConnectionClosed) as info, trio.fail_after(5):
            while True:
                await ws.get_message()
        assert info.value.reason.code == 1009
        assert info.value.reason.reason == "message of 65537 bytes exceeds 65536 bytes"


async def test_message_of_exactly_64_kib_is_answered(stream_server: Running) -> None:
    async with open_websocket_url(stream_server.ws_url()) as ws:
        await recv_json(ws)
        await ws.send_message(" " * (64 * 1024 - 2) + "{}")
        while (msg := await recv_json(ws))["type"] != "error":
            pass
        assert msg["code"] == "bad_message"


@pytest.mark.parametrize("rate", [1.0, 100.0], ids=["idle", "ticking"])
async def test_heartbeat(tmp_path: Path, transport: Transport, rate: float) -> None:
    # Whether or not ticks are flowing (docs/protocol.md).
    async with running(make_config(tmp_path, heartbeat_s=0.2, rate=rate), transport) as srv:
        await srv.wait_for_t(0)
        async with open_websocket_url(srv.ws_url()) as ws:
            hello = await recv_json(ws)
            assert hello["heartbeat_s"] == 0.2
            beats = []
            with trio.fail_after(5):
                while len(beats) < 2:
                    if (msg := await recv_json(ws))["type"] == "heartbeat":
                        beats.append(msg)
            for beat in beats:
                assert list(beat) == ["type", "latest_t", "ts"]
                assert beat["latest_t"] >= 0
                assert isinstance(beat["ts"], float)


async def test_heartbeats_between_batches_keep_the_ticks_whole(
    tmp_path: Path, transport: Transport
) -> None:
    # Ticks flowing fast, grouped in batches: beats come every period between the
    # messages (under ASGI: queued behind the waiting ticks), and no tick is lost,
    # repeated or reordered around them.
    async with running(make_config(tmp_path, heartbeat_s=0.2, rate=200.0), transport) as srv:
        await srv.wait_for_t(0)
        async with open_websocket_url(srv.ws_url("?batch=20")) as ws:
            await recv_json(ws)  # hello
            beats, ts = 0, []
            with trio.fail_after(20):
                while beats < 4:
                    msg = await recv_json(ws)
                    if msg["type"] == "heartbeat":
                        beats += 1
                    else:
                        ts += [tick["t"] for tick in msg.get("ticks", [msg])]
            assert ts == list(range(ts[0], ts[0] + len(ts)))
            assert len(ts) > beats


async def test_empty_history_starts_with_first_tick(tmp_path: Path, transport: Transport) -> None:
    async with (
        running(make_config(tmp_path, rate=5.0), transport) as srv,
        open_websocket_url(srv.ws_url()) as ws,
    ):
        hello = await recv_json(ws)
        first = await next_tick(ws)
        if hello["latest_t"] is None:
            assert first["t"] == 0
        else:
            assert first["t"] == hello["latest_t"]


async def test_many_clients_see_the_same_ticks(stream_server: Running) -> None:
    results: dict[int, list[int]] = {}

    async def client(i: int) -> None:
        async with open_websocket_url(stream_server.ws_url(f"?from_t={start}")) as ws:
            await recv_json(ws)
            results[i] = [t["t"] for t in await collect_ticks(ws, 50)]

    start = (stream_server.service.history.latest_t or 0) + 1
    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(client, i)
    expected = list(range(start, start + 50))
    assert all(r == expected for r in results.values())
    assert len(results) == 20


async def test_incremental_right_after_the_first_tick(tmp_path: Path) -> None:
    # Regression: t=0 was treated as "nothing published" (0 is falsy).
    async with running(make_config(tmp_path, rate=0.5)) as srv:
        await srv.wait_for_t(0)
        body = (await srv.get("/incremental?from_t=0&limit=10")).json()
        assert body["latest_t"] == 0
        assert body["count"] == 1
        assert body["data"][0]["t"] == 0
