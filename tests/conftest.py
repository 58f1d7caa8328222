"""Shared fixtures: a real tickcast on an ephemeral port, real clients.

``running(config, transport)`` serves in-process under either WebSocket transport:
``"raw"`` is ``tickcast serve`` (its raw-socket ``/ws/stream``), ``"asgi"`` is the
Quart route under Hypercorn (``asgi_server.py``). The ``transport`` fixture runs a
test under both, so the two cannot drift apart.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Literal

import httpx
import orjson
import pytest
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from asgi_server import serve_asgi
from tickcast.config import Config
from tickcast.producer import Producer
from tickcast.server import serve
from tickcast.service import Service

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

Transport = Literal["raw", "asgi"]
TRANSPORTS: list[Transport] = ["raw", "asgi"]


class _Addresses:
    """The URLs of a server listening on 127.0.0.1:``port``."""

    port: int

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def ws_url(self, query: str = "") -> str:
        return f"ws://127.0.0.1:{self.port}/ws/stream{query}"


@dataclass
class Running(_Addresses):
    """A tickcast served in this process."""

    port: int
    service: Service
    config: Config
    producer: Producer

    async def get(self, path: str) -> httpx.Response:
        async with httpx.AsyncClient() as client:
            return await client.get(self.url(path))

    async def wait_for_t(self, t: int) -> None:
        """Wait until tick ``t`` has been published (30 s at most)."""
        with trio.fail_after(30):
            await self.service.wait_for_t(t)


def make_config(tmp_path: Path, **overrides: Any) -> Config:
    base = Config(
        port=0,
        data_dir=tmp_path / "segments",
        rate=100.0,
        seed=7,
        agents=20,
        ring_size=2000,
        heartbeat_s=30.0,
    )
    return replace(base, **overrides)


@asynccontextmanager
async def running(config: Config, transport: Transport = "raw") -> AsyncIterator[Running]:
    """Serve ``config`` under ``transport`` until the block ends, then stop it cleanly."""
    stop = trio.Event()
    producer = await Producer.open(config)
    server = serve if transport == "raw" else serve_asgi
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            partial(server, config, producer=producer, shutdown_trigger=stop.wait)
        )
        try:
            yield Running(port, producer.service, config, producer)
        finally:
            stop.set()


@asynccontextmanager
async def truncated(tmp_path: Path, transport: Transport = "raw") -> AsyncIterator[Running]:
    """A server whose retention has deleted the start of its 200 ticks (oldest_t > 20).

    The ticks come from the test (ingest), not a timer, so retention moves
    ``oldest_t`` only while they are produced, never between a test's two steps (on a
    slow machine at 300 ticks/s it did).
    """
    config = make_config(
        tmp_path,
        segment_bytes=8192,
        retain_bytes=30_000,
        ring_size=50,
        source="ingest",
        ingest_token="x",
    )
    async with running(config, transport) as srv:
        for t in range(200):
            agents = [{"id": i, "experience": 0.125} for i in range(40)]
            tick = {"type": "tick", "t": t, "ts": 1.0 + t, "s": {"price_norm": 0.5}}
            await srv.producer.produce(tick | {"agents": agents, "actions": [], "matches": []})
        await srv.wait_for_t(199)
        assert (srv.service.history.oldest_t or 0) > 20  # retention deleted the start
        yield srv


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Running]:
    async with running(make_config(tmp_path)) as srv:
        await srv.wait_for_t(0)
        yield srv


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> Transport:
    """Each WebSocket transport in turn (a test taking it runs once per transport)."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
async def stream_server(tmp_path: Path, transport: Transport) -> AsyncIterator[Running]:
    """``server`` under each transport."""
    async with running(make_config(tmp_path), transport) as srv:
        await srv.wait_for_t(0)
        yield srv


async def recv_json(ws: WebSocketConnection) -> dict[str, Any]:
    """The next message, parsed (30 s at most: a regression fails instead of hanging)."""
    with trio.fail_after(30):
        data = await ws.get_message()
    msg = orjson.loads(data)
    assert isinstance(msg, dict)
    return msg


async def next_tick(ws: WebSocketConnection) -> dict[str, Any]:
    """The next tick message, skipping heartbeats."""
    while True:
        msg = await recv_json(ws)
        if msg["type"] != "heartbeat":
            return msg


async def collect_ticks(ws: WebSocketConnection, n: int) -> list[dict[str, Any]]:
    """Read messages until ``n`` ticks arrived (batches unpacked, heartbeats skipped)."""
    out: list[dict[str, Any]] = []
    while len(out) < n:
        msg = await recv_json(ws)
        if msg["type"] == "tick":
            out.append(msg)
        elif msg["type"] == "batch":
            out.extend(msg["ticks"])
        else:
            assert msg["type"] == "heartbeat", msg
    return out


@asynccontextmanager
async def ws_connect(url: str, **kwargs: Any) -> AsyncIterator[WebSocketConnection]:
    """``open_websocket_url`` that always closes its socket.

    trio-websocket 0.12's client, when the server closes first, reads EOF and stops
    without closing its TCP stream (``_reader_task``: ``if len(data) == 0 ... break``),
    which ``filterwarnings=error`` turns into a ResourceWarning failure.
    """
    opened: list[WebSocketConnection] = []
    try:
        async with open_websocket_url(url, **kwargs) as ws:
            opened.append(ws)
            yield ws
    finally:
        for ws in opened:
            with trio.CancelScope(shield=True):
                await ws._stream.aclose()


# -- subprocess servers ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc(_Addresses):
    """``tickcast serve`` running as a subprocess."""

    proc: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def wait_ready(
    port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0, *, first_tick: bool = True
) -> None:
    """Poll ``/health`` until it answers (and, with ``first_tick``, has a tick)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early with {proc.returncode}")
        try:
            r = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0)
            if r.status_code in (200, 503) and (
                r.json().get("latest_t") is not None or not first_tick
            ):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError("server did not become ready")


@contextmanager
def tickcast_process(
    tmp_path: Path,
    *args: str,
    data_dir: Path | None = None,
    env: dict[str, str] | None = None,
    name: str = "server",
    port: int | None = None,
    first_tick: bool = True,
) -> Iterator[Proc]:
    """``tickcast serve`` as a subprocess; killed at the end if still running.

    Ready once it has a tick; without ``first_tick`` (an ingest source, which has
    none until fed) once ``/health`` answers.
    """
    port = port or free_port()
    data = data_dir or tmp_path / "segments"
    log = tmp_path / f"{name}-{port}.log"
    cmd = [
        PYTHON,
        "-m",
        "tickcast.cli",
        "serve",
        "--port",
        str(port),
        "--data-dir",
        str(data),
        "--rate",
        "50",
        "--seed",
        "3",
        *args,
    ]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TICKCAST_")}
    full_env.update(env or {})
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=full_env, cwd=tmp_path
        )
    try:
        wait_ready(port, proc, first_tick=first_tick)
        yield Proc(proc, port, data, log)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()


# Real redis-server fixtures (redis_server, make_redis) for the scale-out tests.
from redis_server import make_redis, redis_server  # noqa: E402, F401
