"""The ingest source (README): an external simulation POSTs ticks with a bearer token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trio

from conftest import PYTHON, Running, make_config, recv_json, running
from conftest import ws_connect as open_websocket_url

TOKEN = "s3cret"
CONTENT = {
    "s": {"price_norm": 0.5, "volatility": 0.0, "liquidity": 1.0, "imbalance": 0.0},
    "agents": [{"id": 0, "experience": 0.1}],
    "actions": [],
    "matches": [],
}


async def post(srv: Running, body: Any, token: str | None = TOKEN) -> httpx.Response:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient() as client:
        return await client.post(srv.url("/ingest"), content=orjson.dumps(body), headers=headers)


async def test_ingest_assigns_t_and_streams(tmp_path: Path) -> None:
    config = make_config(tmp_path, source="ingest", ingest_token=TOKEN)
    async with running(config) as srv:
        r = await post(srv, CONTENT)
        assert r.status_code == 200, r.text
        assert r.json() == {"accepted": 1, "first_t": 0, "latest_t": 0}
        async with open_websocket_url(srv.ws_url()) as ws:
            hello = await recv_json(ws)
            assert hello["latest_t"] == 0
            first = await recv_json(ws)
            assert first["t"] == 0
            r = await post(srv, [CONTENT, {**CONTENT, "ts": 1700000000.5}])
            assert r.json()["first_t"] == 1
            ticks = [await recv_json(ws), await recv_json(ws)]
        assert [t["t"] for t in ticks] == [1, 2]
        assert ticks[1]["ts"] == 1700000000.5
        assert list(ticks[0]) == ["type", "t", "ts", "s", "agents", "actions", "matches"]
        body = (await srv.get("/incremental?from_t=0")).json()
        assert body["count"] == 3


async def test_concurrent_list_requests_each_get_a_block_of_t(tmp_path: Path) -> None:
    # Each answer's first_t .. first_t + accepted - 1 must be exactly its own ticks,
    # however the requests overlap (the publisher hands that range to its caller).
    config = make_config(tmp_path, source="ingest", ingest_token=TOKEN)
    n, senders = 300, 4
    answers: dict[int, dict[str, Any]] = {}
    async with running(config) as srv:

        async def send(who: int) -> None:
            items = [{**CONTENT, "s": {"who": who, "i": i}} for i in range(n)]
            r = await post(srv, items)
            assert r.status_code == 200, r.text
            answers[who] = r.json()

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for who in range(senders):
                    nursery.start_soon(send, who)
        for who, answer in answers.items():
            assert answer["accepted"] == n
            first = answer["first_t"]
            page = (await srv.get(f"/incremental?from_t={first}&limit={n}")).json()
            assert [tick["s"] for tick in page["data"]] == [{"who": who, "i": i} for i in range(n)]


async def test_ingest_rejects_bad_token_and_bad_bodies(tmp_path: Path) -> None:
    config = make_config(tmp_path, source="ingest", ingest_token=TOKEN)
    async with running(config) as srv:
        assert (await post(srv, CONTENT, token=None)).status_code == 401
        assert (await post(srv, CONTENT, token="wrong")).status_code == 401
        for bad in [
            {"s": {}},
            [CONTENT, {"agents": 1}],
            "text",
            {**CONTENT, "ts": "x"},
            {**CONTENT, "ts": True},
        ]:
            r = await post(srv, bad)
            assert r.status_code == 400, bad
            assert r.json()["error"] == "bad_request"
        async with httpx.AsyncClient() as client:
            r = await client.post(
                srv.url("/ingest"),
                content=b"{not json",
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
        assert r.status_code == 400
        # Nothing was appended by the refused requests.
        assert srv.service.history.latest_t is None


async def test_ingest_refused_when_source_is_the_simulator(server: Running) -> None:
    r = await post(server, CONTENT)
    assert r.status_code == 409
    assert r.json()["error"] == "not_ingest"


# -- the publisher ---------------------------------------------------------------------


async def test_publisher_library(tmp_path: Path) -> None:
    from tickcast.publisher import Publisher, PublishError

    config = make_config(tmp_path, source="ingest", ingest_token=TOKEN)
    async with running(config) as srv:
        pub = Publisher(srv.url(""), token=TOKEN)
        assert await trio.to_thread.run_sync(pub.publish, CONTENT) == 0
        many = await trio.to_thread.run_sync(pub.publish_many, [CONTENT] * 3)
        assert many == range(1, 4)
        bad = Publisher(srv.url(""), token="nope")
        with pytest.raises(PublishError) as info:
            await trio.to_thread.run_sync(bad.publish, CONTENT)
        assert info.value.status == 401
        with pytest.raises(PublishError) as info:
            await trio.to_thread.run_sync(pub.publish, {"s": {}})
        assert info.value.status == 400
        assert "lacks" in info.value.detail
    unreachable = Publisher(srv.url(""), token=TOKEN, timeout_s=2)
    with pytest.raises(PublishError) as info:
        await trio.to_thread.run_sync(unreachable.publish, CONTENT)
    assert info.value.status == 0


async def test_publish_command_pipes_json_lines(tmp_path: Path) -> None:
    config = make_config(tmp_path, source="ingest", ingest_token=TOKEN)
    lines = b"\n".join(orjson.dumps({**CONTENT, "ts": 1000.0 + i}) for i in range(25)) + b"\n\n"
    async with running(config) as srv:
        result = await trio.run_process(
            [
                PYTHON,
                "-m",
                "tickcast.cli",
                "publish",
                "--url",
                srv.url(""),
                "--token",
                TOKEN,
                "--batch",
                "10",
            ],
            stdin=lines,
            capture_stderr=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert b"published 25 ticks" in result.stderr
        body = (await srv.get("/incremental?from_t=0&limit=100")).json()
        assert [t["t"] for t in body["data"]] == list(range(25))
        assert [t["ts"] for t in body["data"]] == [1000.0 + i for i in range(25)]
        bad = await trio.run_process(
            [PYTHON, "-m", "tickcast.cli", "publish", "--url", srv.url(""), "--token", TOKEN],
            stdin=b"{oops\n",
            capture_stderr=True,
            check=False,
        )
        assert bad.returncode == 1
        assert b"line 1 is not JSON" in bad.stderr


async def test_publish_without_url_says_where_it_posts() -> None:
    cmd = [PYTHON, "-m", "tickcast.cli", "publish", "--token", TOKEN]
    done = await trio.run_process(cmd, stdin=b"", capture_stderr=True, check=False)
    assert b"posting to http://127.0.0.1:8000 (no --url given)" in done.stderr
    helped = await trio.run_process([*cmd, "--help"], capture_stdout=True, check=False)
    assert b"default: http://127.0.0.1:8000" in helped.stdout


async def test_ingest_refuses_what_it_could_not_store(tmp_path: Path) -> None:
    # JSON nested deeper than orjson writes (254 levels) parses, but cannot be stored.
    deep = b"[" * 300 + b"]" * 300
    body = orjson.dumps({**CONTENT, "actions": []}).replace(b'"actions":[]', b'"actions":' + deep)
    config = make_config(tmp_path, source="ingest", ingest_token=TOKEN)
    async with running(config) as srv, httpx.AsyncClient() as client:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        r = await client.post(srv.url("/ingest"), content=body, headers=auth)
        assert r.status_code == 400, r.text
        assert r.json()["error"] == "bad_request"
        assert (await post(srv, CONTENT)).json()["first_t"] == 0  # nothing was taken
