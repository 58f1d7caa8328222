"""The read token (docs/protocol.md "Read access"): /ws/stream, /incremental and / require it.

Checked on every route under both transports: ``tickcast serve``'s raw front door
(in-process ``serve`` and the real command line) and the Quart route served by
Hypercorn in-process. A refusal is 401 with a JSON body, before any upgrade.
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import httpx
import orjson
import pytest
import trio

from asgi_server import serve_asgi
from conftest import PYTHON, free_port, make_config, running, tickcast_process, wait_ready
from tickcast.config import Config, describe
from tickcast.errors import ConfigError
from tickcast.fanout.limits import Limits
from tickcast.producer import Producer
from tickcast.transports.intake import Refusal, admit, authorize
from wsclient import RawClient, Rejected

READ = "r3ad-T0ken_42"
WRONG = "Wr0ng-guess-77"
OPEN_ROUTES = ["/health", "/metrics", "/docs", "/openapi.json"]

# -- the check itself (synchronous) -------------------------------------------------------


def test_open_when_no_token_is_set() -> None:
    authorize(None, {}, authorization=None)
    authorize(None, {"token": "anything"}, authorization="Bearer x")


@pytest.mark.parametrize(
    ("query", "authorization"),
    [
        ({"token": READ}, None),
        ({}, f"Bearer {READ}"),
        ({}, f"bearer  {READ} "),  # the scheme is case-insensitive (RFC 7235)
        ({"token": WRONG}, f"Bearer {READ}"),  # either form may carry it
        ({"token": READ}, "Basic dXNlcjpwYXNz"),
    ],
)
def test_accepted(query: dict[str, str], authorization: str | None) -> None:
    authorize(READ, query, authorization=authorization)


@pytest.mark.parametrize(
    ("query", "authorization", "detail"),
    [
        ({}, None, "required"),
        ({}, "Basic dXNlcjpwYXNz", "required"),
        ({}, f"Token {READ}", "required"),
        ({"token": WRONG}, None, "wrong"),
        ({}, f"Bearer {WRONG}", "wrong"),
        ({"token": ""}, None, "wrong"),
        ({"token": READ[:-1]}, None, "wrong"),
        ({"token": READ + "x"}, None, "wrong"),
        ({"token": "é"}, None, "wrong"),
    ],
)
def test_refused_with_401_never_echoing_what_was_sent(
    query: dict[str, str], authorization: str | None, detail: str
) -> None:
    with pytest.raises(Refusal) as info:
        authorize(READ, query, authorization=authorization)
    refusal = info.value
    assert (refusal.status, refusal.error) == (401, "unauthorized")
    assert detail in refusal.detail
    text = f"{refusal} {refusal.body()!r} {refusal.headers()}"
    assert WRONG not in text and READ not in text
    assert orjson.loads(refusal.body()) == {"error": "unauthorized", "detail": refusal.detail}
    assert ("www-authenticate", 'Bearer realm="tickcast"') in refusal.headers()


def test_401_comes_before_400_and_takes_no_slot() -> None:
    limits = Limits(Config())
    with pytest.raises(Refusal) as info:
        admit(
            limits,
            {"from_t": "x"},
            peer="127.0.0.1",
            forwarded_for=None,
            read_token=READ,
            authorization=None,
        )
    assert info.value.status == 401
    assert limits.total == 0 and limits.refused == 0


def test_setting_is_masked_and_validated() -> None:
    config = Config(read_token=READ)
    lines = describe(config)
    assert "read_token=***" in lines and not any(READ in line for line in lines)
    assert "read_token=None" in describe(Config())
    for bad in ["", "with space", "tab\there", "nön-ascii"]:
        with pytest.raises(ConfigError, match="read_token") as info:
            Config(read_token=bad)
        assert bad not in str(info.value) or bad == ""


# -- over real sockets ------------------------------------------------------------------------


async def check_every_route(port: int) -> None:
    """The read token on every route of a server listening on ``port``."""
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base) as http:
        for path, params in [("/incremental", {"from_t": "0", "limit": "1"}), ("/", {})]:
            refused = [
                ({}, {}),
                ({}, {"token": WRONG}),
                ({"Authorization": f"Bearer {WRONG}"}, {}),
                ({"Authorization": WRONG}, {}),
            ]
            for headers, extra in refused:
                r = await http.get(path, params={**params, **extra}, headers=headers)
                assert r.status_code == 401, (path, headers, extra)
                assert r.headers["content-type"] == "application/json"
                assert r.json()["error"] == "unauthorized"
                assert r.headers["www-authenticate"] == 'Bearer realm="tickcast"'
                assert WRONG not in r.text
            for headers, extra in [
                ({"Authorization": f"Bearer {READ}"}, {}),
                ({}, {"token": READ}),
            ]:
                r = await http.get(path, params={**params, **extra}, headers=headers)
                assert r.status_code == 200, (path, r.text)
        r = await http.get(f"/incremental?from_ts=0&limit=1&token={READ}")
        assert r.status_code == 200 and r.json()["count"] == 1
        for path in OPEN_ROUTES:
            r = await http.get(path)
            assert r.status_code == 200, path
    # The stream: refused before the upgrade, 401 before any 400.
    for target, headers in [
        ("/ws/stream", []),
        (f"/ws/stream?token={WRONG}", []),
        ("/ws/stream?from_t=x", []),
        ("/ws/stream", [(b"authorization", f"Bearer {WRONG}".encode())]),
    ]:
        with pytest.raises(Rejected) as info:
            await RawClient.connect(port, target, headers=headers)
        assert info.value.status == 401, target
        body = orjson.loads(info.value.body)
        assert body["error"] == "unauthorized" and WRONG not in body["detail"]
    for target, headers in [
        (f"/ws/stream?token={READ}", []),
        ("/ws/stream", [(b"authorization", f"Bearer {READ}".encode())]),
    ]:
        client = await RawClient.connect(port, target, headers=headers)
        try:
            hello = await client.message()
            assert hello is not None and hello["type"] == "hello"
            tick = await client.message()
            assert tick is not None and tick["type"] == "tick"
        finally:
            client.aclose()


async def test_raw_transport_every_route(tmp_path: Path) -> None:
    async with running(make_config(tmp_path, read_token=READ)) as srv:
        await srv.wait_for_t(0)
        with trio.fail_after(30):
            await check_every_route(srv.port)
        assert srv.service.limits.refused == 0  # a 401 never counts against the limits


async def test_raw_transport_401_carries_the_challenge_header(tmp_path: Path) -> None:
    async with running(make_config(tmp_path, read_token=READ)) as srv:
        sock = trio.socket.socket()
        await sock.connect(("127.0.0.1", srv.port))
        await sock.send(
            b"GET /ws/stream HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        data = b""
        with trio.fail_after(10):
            while chunk := await sock.recv(65536):
                data += chunk
        sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401")
    assert b'\r\nwww-authenticate: Bearer realm="tickcast"' in head
    assert orjson.loads(body)["error"] == "unauthorized"


async def test_open_without_a_token(tmp_path: Path) -> None:
    async with running(make_config(tmp_path)) as srv:
        await srv.wait_for_t(0)
        with trio.fail_after(30):
            assert (await srv.get("/incremental?limit=1")).status_code == 200
            assert (await srv.get("/")).status_code == 200
            client = await RawClient.connect(srv.port, "/ws/stream")
            try:
                assert (await client.message() or {}).get("type") == "hello"
            finally:
                client.aclose()


@asynccontextmanager
async def asgi_running(config: Config) -> AsyncIterator[tuple[int, Producer]]:
    """The Quart app (its own ``/ws/stream`` route) under Hypercorn, in this process."""
    producer = await Producer.open(config)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            partial(serve_asgi, config, producer=producer, shutdown_trigger=stop.wait)
        )
        try:
            with trio.fail_after(30):
                await producer.service.wait_for_t(0)
            yield port, producer
        finally:
            stop.set()


async def test_asgi_route_every_route(tmp_path: Path) -> None:
    async with asgi_running(make_config(tmp_path, read_token=READ)) as (port, _):
        with trio.fail_after(30):
            await check_every_route(port)


async def test_asgi_route_from_ts(tmp_path: Path) -> None:
    async with asgi_running(make_config(tmp_path, read_token=READ)) as (port, producer):
        with trio.fail_after(30):
            await producer.service.wait_for_t(2)
            async with httpx.AsyncClient() as http:
                url = f"http://127.0.0.1:{port}/incremental?from_t=2&limit=1&token={READ}"
                first = (await http.get(url)).json()["data"][0]
            target = f"/ws/stream?from_ts={first['ts']}&token={READ}"
            client = await RawClient.connect(port, target)
            try:
                assert (await client.message() or {}).get("type") == "hello"
                ticks = await client.ticks(1)
            finally:
                client.aclose()
        assert ticks[0]["t"] <= 2 and ticks[0]["ts"] == first["ts"]


def test_command_line_masks_the_token_and_never_logs_a_wrong_one(tmp_path: Path) -> None:
    port = free_port()
    with tickcast_process(tmp_path, "--read-token", READ, port=port) as proc:
        wait_ready(port, proc.proc)
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/incremental?token={WRONG}").status_code == 401
        assert httpx.get(f"{base}/?token={READ}").status_code == 200
        r = httpx.get(f"{base}/incremental", headers={"Authorization": f"Bearer {WRONG}"})
        assert r.status_code == 401
        proc.proc.terminate()
        assert proc.proc.wait(10) == 0
    log = proc.output()
    assert "read_token=***" in log
    assert READ not in log and WRONG not in log


def test_env_var_sets_the_token(tmp_path: Path) -> None:
    port = free_port()
    env = {"TICKCAST_READ_TOKEN": READ}
    with tickcast_process(tmp_path, env=env, port=port):
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/incremental").status_code == 401
        assert httpx.get(f"{base}/incremental?token={READ}").status_code == 200
        assert httpx.get(f"{base}/health").status_code == 200


def test_a_bad_token_stops_start_up_without_echoing_it(tmp_path: Path) -> None:
    proc = subprocess.run(
        [PYTHON, "-m", "tickcast.cli", "serve", "--port", "0", "--read-token", "has space"],
        capture_output=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0
    err = proc.stderr.decode()
    assert "read_token" in err and "has space" not in err
