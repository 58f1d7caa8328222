"""docs/scale-out.md against a real redis-server: a producer, edges, and every failure in between.

Edges run in-process (``serve_edge``) where the test needs to look inside, and as
``tickcast edge`` processes where it kills or freezes them.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trio
from trio_websocket import ConnectionClosed

from conftest import (
    PYTHON,
    Running,
    _Addresses,
    free_port,
    make_config,
    running,
)
from conftest import ws_connect as open_websocket_url
from redis_server import RedisServer
from tickcast.config import Config
from tickcast.edge import Edge
from tickcast.server import serve_edge

WAIT_S = 30
READ = "r3ad-T0ken_42"  # the producer's read token
EDGE_READ = "3dge-T0ken_7"  # an edge's own read token, not the producer's
WRONG = "Wr0ng-guess-77"


@dataclass
class EdgeRunning(_Addresses):
    port: int
    edge: Edge


@asynccontextmanager
async def running_edge(config: Config) -> AsyncIterator[EdgeRunning]:
    """An edge served in this process until the block ends."""
    stop = trio.Event()
    edge = Edge(config)
    async with trio.open_nursery() as nursery:
        serve = partial(serve_edge, config, edge=edge, shutdown_trigger=stop.wait)
        port = await nursery.start(serve)
        try:
            yield EdgeRunning(port, edge)
        finally:
            stop.set()


def edge_config(tmp_path: Path, redis: RedisServer, **overrides: Any) -> Config:
    return replace(make_config(tmp_path, redis_url=redis.url, ring_size=2000), **overrides)


async def wait_edge_at(edge: EdgeRunning, t: int) -> None:
    with trio.fail_after(WAIT_S):
        await edge.edge.service.wait_for_t(t)


async def raw_ticks(url: str, n: int) -> tuple[dict[str, Any], list[bytes]]:
    """The hello and the next ``n`` tick messages, as the exact bytes received."""
    out: list[bytes] = []
    with trio.fail_after(WAIT_S):
        async with open_websocket_url(url) as ws:
            hello = orjson.loads(await ws.get_message())
            while len(out) < n:
                msg = await ws.get_message()
                data = msg.encode() if isinstance(msg, str) else msg
                if orjson.loads(data)["type"] == "tick":
                    out.append(data)
    return hello, out


def ts_of(messages: list[bytes]) -> list[int]:
    return [orjson.loads(m)["t"] for m in messages]


@asynccontextmanager
async def producer(tmp_path: Path, redis: RedisServer, **overrides: Any) -> AsyncIterator[Running]:
    config = make_config(tmp_path, **{"redis_url": redis.url, "rate": 100.0, **overrides})
    async with running(config) as srv:
        await srv.wait_for_t(0)
        yield srv


# -- the guarantees ----------------------------------------------------------------------


async def test_every_edge_serves_the_producers_bytes_epoch_and_order(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with (
        producer(tmp_path, redis_server) as prod,
        running_edge(edge_config(tmp_path, redis_server)) as a,
        running_edge(edge_config(tmp_path, redis_server)) as b,
    ):
        start = (prod.service.history.latest_t or 0) + 5
        await wait_edge_at(a, start)
        await wait_edge_at(b, start)
        results = []
        for srv in (prod, a, b):
            results.append(await raw_ticks(srv.ws_url(f"?from_t={start}"), 40))
        (h0, t0), (h1, t1), (h2, t2) = results
        assert h0["epoch"] == h1["epoch"] == h2["epoch"]
        assert t0 == t1 == t2  # the same bytes, in the same order
        assert ts_of(t0) == list(range(start, start + 40))


async def test_resume_on_another_edge_is_gap_free(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with (
        producer(tmp_path, redis_server),
        running_edge(edge_config(tmp_path, redis_server)) as a,
        running_edge(edge_config(tmp_path, redis_server)) as b,
    ):
        await wait_edge_at(a, 10)
        _, first = await raw_ticks(a.ws_url("?from_t=0"), 30)
        resume = ts_of(first)[-1] + 1
        _, rest = await raw_ticks(b.ws_url(f"?from_t={resume}"), 30)
        assert ts_of(first + rest) == list(range(60))


async def test_an_edge_started_late_serves_recent_history_at_once(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with producer(tmp_path, redis_server, rate=400.0) as prod:
        await prod.wait_for_t(600)
        async with running_edge(edge_config(tmp_path, redis_server, ring_size=500)) as late:
            await wait_edge_at(late, 600)
            mirror = late.edge.mirror
            assert mirror.oldest_t is not None and mirror.oldest_t <= 600 - 400
            async with httpx.AsyncClient() as client:
                body = (await client.get(late.url("/incremental?from_t=200&limit=300"))).json()
            assert [t["t"] for t in body["data"]] == list(range(200, 500))
            direct = (await prod.get("/incremental?from_t=200&limit=300")).json()
            assert body["data"] == direct["data"]
            # Seeking by time on the edge lands where it does on the producer.
            ts = body["data"][150]["ts"]
            async with httpx.AsyncClient() as client:
                seek = (await client.get(late.url(f"/incremental?from_ts={ts}&limit=1"))).json()
            direct = (await prod.get(f"/incremental?from_ts={ts}&limit=1")).json()
            assert seek["data"][0]["t"] == direct["data"][0]["t"] <= 350


@pytest.mark.parametrize("appendonly", [False, True], ids=["no-persistence", "aof"])
async def test_redis_restart_mid_stream_loses_nothing(
    tmp_path: Path, make_redis: Any, appendonly: bool
) -> None:
    redis = make_redis(appendonly=appendonly)
    async with (
        producer(tmp_path, redis) as prod,
        running_edge(edge_config(tmp_path, redis, heartbeat_s=0.5)) as edge,
    ):
        await wait_edge_at(edge, 5)
        got: list[int] = []
        with trio.fail_after(WAIT_S):
            async with open_websocket_url(edge.ws_url("?from_t=0")) as ws:
                await ws.get_message()  # hello
                while len(got) < 20:
                    msg = orjson.loads(await ws.get_message())
                    if msg["type"] == "tick":
                        got.append(msg["t"])
                redis.kill()
                # The edge reports it; its client stays connected and gets heartbeats.
                async with httpx.AsyncClient() as client:
                    # the follower's state has no event: poll it
                    while (await client.get(edge.url("/health"))).status_code != 503:  # noqa: ASYNC110
                        await trio.sleep(0.05)
                heartbeats = 0
                while heartbeats < 2:
                    msg = orjson.loads(await ws.get_message())
                    if msg["type"] == "heartbeat":
                        heartbeats += 1
                    elif msg["type"] == "tick":
                        got.append(msg["t"])
                await redis.restart()
                target = (prod.service.history.latest_t or 0) + 20
                while not got or got[-1] < target:
                    msg = orjson.loads(await ws.get_message())
                    if msg["type"] == "tick":
                        got.append(msg["t"])
        assert got == list(range(len(got)))
        async with httpx.AsyncClient() as client:
            assert (await client.get(edge.url("/health"))).status_code == 200


async def test_a_new_epoch_closes_edge_clients_with_4009(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with running_edge(edge_config(tmp_path, redis_server)) as edge:
        async with producer(tmp_path / "first", redis_server) as first:
            await wait_edge_at(edge, 3)
            old = first.service.history.epoch
        async with open_websocket_url(edge.ws_url()) as ws:
            hello = orjson.loads(await ws.get_message())
            assert hello["epoch"] == old
            # A producer with a wiped history: a new epoch.
            async with producer(tmp_path / "second", redis_server) as second:
                new = second.service.history.epoch
                assert new != old
                with trio.fail_after(WAIT_S), pytest.raises(ConnectionClosed) as closed:
                    while True:
                        await ws.get_message()
                assert closed.value.reason.code == 4009
                assert closed.value.reason.reason == "epoch changed"
                async with open_websocket_url(edge.ws_url()) as again:
                    assert orjson.loads(await again.get_message())["epoch"] == new


# -- edges as processes --------------------------------------------------------------------


@dataclass
class EdgeProc(_Addresses):
    proc: subprocess.Popen[bytes]
    port: int
    log: Path


@contextmanager
def edge_process(
    tmp_path: Path,
    redis: RedisServer | str,
    *args: str,
    port: int | None = None,
    name: str = "edge",
) -> Iterator[EdgeProc]:
    """``tickcast edge`` on ``redis`` (a server, or any redis_url), logging to a file."""
    port = port or free_port()
    log = tmp_path / f"{name}-{port}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKCAST_")}
    url = redis if isinstance(redis, str) else redis.url
    cmd = [PYTHON, "-m", "tickcast.cli", "edge", "--port", str(port), "--redis-url", url]
    with log.open("wb") as out:
        proc = subprocess.Popen([*cmd, *args], stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        yield EdgeProc(proc, port, log)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.send_signal(signal.SIGKILL)
        proc.wait()


async def wait_http_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    with trio.fail_after(WAIT_S):
        async with httpx.AsyncClient() as client:
            while True:
                assert proc.poll() is None, "the edge exited"
                try:
                    r = await client.get(url)
                    if r.status_code == 200 and r.json().get("latest_t") is not None:
                        return
                except httpx.HTTPError:
                    pass
                await trio.sleep(0.05)


async def test_kill9_of_an_edge_and_its_clients_resume_on_another(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with (
        producer(tmp_path, redis_server),
        running_edge(edge_config(tmp_path, redis_server)) as other,
    ):
        with edge_process(tmp_path, redis_server) as doomed:
            await wait_http_ready(doomed.url("/health"), doomed.proc)
            got: list[int] = []
            with trio.fail_after(WAIT_S), pytest.raises(ConnectionClosed):
                async with open_websocket_url(doomed.ws_url("?from_t=0")) as ws:
                    await ws.get_message()
                    while True:
                        msg = orjson.loads(await ws.get_message())
                        if msg["type"] == "tick":
                            got.append(msg["t"])
                            if len(got) == 25:
                                doomed.proc.send_signal(signal.SIGKILL)
        _, rest = await raw_ticks(other.ws_url(f"?from_t={got[-1] + 1}"), 20)
        assert got + ts_of(rest) == list(range(len(got) + 20))


async def test_ticks_trimmed_away_close_the_edges_clients_with_4008(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with producer(tmp_path, redis_server, rate=300.0, redis_maxlen=50) as prod:
        with edge_process(tmp_path, redis_server) as edge:
            await wait_http_ready(edge.url("/health"), edge.proc)
            got: list[int] = []
            with trio.fail_after(WAIT_S), pytest.raises(ConnectionClosed) as closed:
                async with open_websocket_url(edge.ws_url()) as ws:
                    await ws.get_message()
                    while True:
                        msg = orjson.loads(await ws.get_message())
                        if msg["type"] != "tick":
                            continue
                        got.append(msg["t"])
                        if len(got) == 5:
                            # Freeze the edge while the stream moves 300 ticks past it
                            # (it keeps 50), then let it find the hole.
                            edge.proc.send_signal(signal.SIGSTOP)
                            await prod.wait_for_t(got[-1] + 300)
                            edge.proc.send_signal(signal.SIGCONT)
            resume = got[-1] + 1
            assert closed.value.reason.code == 4008
            assert closed.value.reason.reason == f"slow consumer; resume with from_t={resume}"
            assert got == list(range(got[0], resume))
            # Resuming there on the edge: the hello says the start was cut.
            async with open_websocket_url(edge.ws_url(f"?from_t={resume}")) as ws:
                hello = orjson.loads(await ws.get_message())
                assert hello["truncated"] is True and hello["oldest_t"] > resume


@pytest.mark.parametrize(
    ("producer_token", "edge_args", "client_token"),
    [
        (None, (), None),
        (READ, ("--read-token", READ), READ),  # history_token defaults to read_token
        (READ, ("--read-token", EDGE_READ, "--history-token", READ), EDGE_READ),
    ],
    ids=["open", "read-token", "history-token"],
)
async def test_a_hole_is_filled_from_history_url(
    tmp_path: Path,
    redis_server: RedisServer,
    producer_token: str | None,
    edge_args: tuple[str, ...],
    client_token: str | None,
) -> None:
    async with producer(
        tmp_path, redis_server, rate=300.0, redis_maxlen=50, read_token=producer_token
    ) as prod:
        args = ("--history-url", prod.url(""), *edge_args)
        token = "" if client_token is None else f"token={client_token}"
        with edge_process(tmp_path, redis_server, *args) as edge:
            await wait_http_ready(edge.url("/health"), edge.proc)
            got: list[int] = []
            with trio.fail_after(WAIT_S):
                async with open_websocket_url(edge.ws_url(f"?{token}")) as ws:
                    await ws.get_message()
                    while len(got) < 400:
                        msg = orjson.loads(await ws.get_message())
                        if msg["type"] != "tick":
                            continue
                        got.append(msg["t"])
                        if len(got) == 5:
                            edge.proc.send_signal(signal.SIGSTOP)
                            await prod.wait_for_t(got[-1] + 300)
                            edge.proc.send_signal(signal.SIGCONT)
            assert got == list(range(got[0], got[0] + 400))
            # And old history is read through from the producer.
            async with httpx.AsyncClient() as client:
                page = await client.get(edge.url(f"/incremental?from_t=0&limit=5&{token}"))
                health = await client.get(edge.url("/health"))
            assert [t["t"] for t in page.json()["data"]] == [0, 1, 2, 3, 4]
            assert health.status_code == 200, health.text


@asynccontextmanager
async def refused_edge(tmp_path: Path, redis: RedisServer) -> AsyncIterator[EdgeRunning]:
    """A protected producer 300 ticks on, and an edge (a ring of 100) whose
    ``history_token`` that producer refuses."""
    async with producer(tmp_path, redis, rate=300.0, read_token=READ) as prod:
        await prod.wait_for_t(300)
        config = edge_config(
            tmp_path,
            redis,
            ring_size=100,
            read_token=READ,
            history_url=prod.url(""),
            history_token=WRONG,
        )
        async with running_edge(config) as edge:
            await wait_edge_at(edge, 300)
            yield edge


async def test_a_refused_history_url_degrades_health_naming_history_token(
    tmp_path: Path, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tickcast")
    async with refused_edge(tmp_path, redis_server) as edge, httpx.AsyncClient() as client:
        with trio.fail_after(WAIT_S):
            # the refusal is found by the edge's own probe: poll its /health
            while (health := await client.get(edge.url("/health"))).status_code != 503:  # noqa: ASYNC110
                await trio.sleep(0.05)
        body = health.json()
        assert body["status"] == "degraded"
        assert "history_token" in body["reason"] and "HTTP 401" in body["reason"]
        assert WRONG not in body["reason"]
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert any("history_token" in line for line in errors), errors
        # The producer's older ticks are not offered: a resume before the ring is
        # truncated (a clear answer), never a 4008 that the resume gets again.
        async with open_websocket_url(edge.ws_url(f"?from_t=0&token={READ}")) as ws:
            hello = orjson.loads(await ws.get_message())
        assert hello["truncated"] is True and hello["oldest_t"] > 0
        page = await client.get(edge.url(f"/incremental?from_t=0&limit=5&token={READ}"))
        assert page.json()["from_t"] >= hello["oldest_t"] > 0  # the ring moves on


async def test_an_edge_without_read_token_refuses_a_protected_stream(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with producer(tmp_path, redis_server, read_token=READ):
        with edge_process(tmp_path, redis_server) as edge:
            with trio.fail_after(WAIT_S):
                code = await trio.to_thread.run_sync(edge.proc.wait, abandon_on_cancel=True)
            out = edge.log.read_text()
    assert code != 0, out
    assert "Traceback" not in out, out
    errors = [line for line in out.splitlines() if "error" in line.lower()]
    assert errors == [
        "tickcast: error: setting 'read_token': the producer requires a read token (its Redis "
        "stream says so), and this edge has none, so it would serve the feed openly: "
        "set read_token"
    ], out


async def test_an_edge_that_cannot_reach_redis_logs_it_naming_redis_url(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # a mistyped port: nothing listens there
    with edge_process(tmp_path, url) as edge:
        with trio.fail_after(WAIT_S):
            while f"cannot read redis_url={url}" not in edge.log.read_text():
                assert edge.proc.poll() is None, edge.log.read_text()
                await trio.sleep(0.05)  # a log file has no event to wait on
        async with httpx.AsyncClient() as client:
            health = await client.get(edge.url("/health"))
    lines = [line for line in edge.log.read_text().splitlines() if "cannot read redis_url" in line]
    assert lines and " ERROR " in lines[0], lines
    assert health.status_code == 503


async def test_two_edges_share_one_port(tmp_path: Path, redis_server: RedisServer) -> None:
    port = free_port()
    async with producer(tmp_path, redis_server):
        with (
            edge_process(tmp_path, redis_server, "--reuse-port", port=port, name="a") as a,
            edge_process(tmp_path, redis_server, "--reuse-port", port=port, name="b") as b,
        ):
            # Both bound the port; wait until each follows the stream (its log says so:
            # a request to the shared port may reach either).
            for e in (a, b):
                with trio.fail_after(WAIT_S):
                    while "following epoch" not in e.log.read_text():
                        assert e.proc.poll() is None, e.log.read_text()
                        await trio.sleep(0.05)
            for _ in range(6):
                hello, ticks = await raw_ticks(a.ws_url(), 2)
                assert hello["type"] == "hello" and len(ticks) == 2
            a.proc.send_signal(signal.SIGKILL)
            a.proc.wait()
            hello, _ = await raw_ticks(b.ws_url(), 2)  # the survivor takes every connection
            assert hello["type"] == "hello"
