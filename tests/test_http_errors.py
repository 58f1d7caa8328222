"""HTTP answers that are not the route's own: 405 with Allow, and keep-alive after them."""

from __future__ import annotations

import httpx
import pytest
import trio
import trio.testing

from conftest import Running
from wsclient import RawClient, Rejected


async def test_405_is_json_and_carries_allow(server: Running) -> None:
    async with httpx.AsyncClient() as client:
        r = await client.request("TRACE", server.url("/health"))
    assert r.status_code == 405
    assert r.json()["error"] == "method_not_allowed"
    assert set(r.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "OPTIONS"}


@pytest.mark.parametrize("path", ["/ingest", "/health"])
async def test_keep_alive_survives_an_answer_before_the_body(server: Running, path: str) -> None:
    # A body that arrives after the answer (409 / 405) once left the connection dead:
    # the next request on it was never answered (see tickcast.web.keepalive). The
    # server runs in this trio run: once every task is blocked, it has either
    # answered the head already (the path of that bug) or is waiting for the body.
    lines = []
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            for _ in range(3):
                head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n"
                await stream.send_all(head.encode())
                await trio.testing.wait_all_tasks_blocked()
                await stream.send_all(b"[]")
                data = b""
                while b"}" not in data:
                    chunk = await stream.receive_some(4096)
                    assert chunk, "the server closed the connection"
                    data += chunk
                lines.append(data.split(b"\r\n")[0])
    assert len(lines) == 3
    assert all(line.split()[1] in (b"405", b"409") for line in lines)


@pytest.mark.parametrize("query", ["from_t=" + "9" * 5000, "limit=" + "9" * 5000])
async def test_an_integer_too_long_for_python_is_a_400(server: Running, query: str) -> None:
    # int() refuses more than 4300 digits with ValueError: that was a 500 (internal).
    r = await server.get(f"/incremental?{query}")
    assert r.status_code == 400
    assert r.json() == {
        "error": "bad_request",
        "detail": f"{query.split('=')[0]}: must be an integer, got 5000 digits",
    }


async def test_an_integer_too_long_for_python_refuses_the_upgrade(server: Running) -> None:
    with pytest.raises(Rejected) as refused:
        await RawClient.connect(server.port, "/ws/stream?from_t=" + "9" * 5000)
    assert refused.value.status == 400
    assert b"5000 digits" in refused.value.body
