"""A query parameter a route does not take is a 400 naming it, on every route (docs/api.md).

Against a real server under each transport: a typo (``lmit``) or a parameter of
another route (``to_t`` on ``/ws/stream``) is never dropped silently. What each
route takes is exactly what its OpenAPI operation lists.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import msgspec
import orjson
import pytest
import trio

from conftest import Transport, make_config, running
from tickcast.transports.params import STREAM_PARAMS, BadParam, reject_unknown
from tickcast.web.app import create_app
from tickcast.web.openapi import query_names
from tickcast.web.schemas import StreamQuery
from wsclient import RawClient, Rejected

INGEST_TOKEN = "ingest-t0ken"
# Every HTTP route, with a request it answers 200 to; "?" or "&" then the extra parameter.
GETS = [
    "/health",
    "/metrics",
    "/",
    "/incremental?from_t=0&limit=2",
    "/docs",
    "/docs/static/docs.js",
    "/openapi.json",
    "/asyncapi.json",
    "/favicon.ico",
]


def with_param(path: str, extra: str) -> str:
    return f"{path}{'&' if '?' in path else '?'}{extra}"


def assert_names(response: httpx.Response, name: str) -> None:
    assert response.status_code == 400, (response.request.url, response.text)
    body = response.json()
    assert body["error"] == "bad_request"
    assert body["detail"].startswith(f"{name}: unknown parameter"), body


async def test_every_http_route_refuses_an_unknown_parameter(tmp_path: Path) -> None:
    config = make_config(tmp_path, source="ingest", ingest_token=INGEST_TOKEN)
    async with running(config) as srv, httpx.AsyncClient() as client:
        for path in GETS:
            ok = await client.get(srv.url(path))
            assert ok.status_code == 200, (path, ok.text)
            assert_names(await client.get(srv.url(with_param(path, "lmit=5"))), "lmit")
        headers = {"Authorization": f"Bearer {INGEST_TOKEN}"}
        body = orjson.dumps({"s": {"x": 1.0}, "agents": [], "actions": [], "matches": []})
        refused = await client.post(srv.url("/ingest?dry_run=1"), content=body, headers=headers)
        assert_names(refused, "dry_run")
        assert (await srv.get("/health")).json()["latest_t"] is None  # nothing was appended
        accepted = await client.post(srv.url("/ingest"), content=body, headers=headers)
        assert accepted.status_code == 200, accepted.text


async def test_the_read_token_parameter_is_known_only_where_the_token_applies(
    tmp_path: Path,
) -> None:
    async with running(make_config(tmp_path)) as srv:
        await srv.wait_for_t(0)
        for path in ["/", "/incremental?limit=1"]:  # an open server ignores the token
            r = await srv.get(with_param(path, "token=x"))
            assert r.status_code == 200, (path, r.text)
        for path in ["/health", "/metrics"]:  # always open: no token to take
            assert_names(await srv.get(f"{path}?token=x"), "token")


async def test_incremental_names_a_parameter_of_another_route(tmp_path: Path) -> None:
    async with running(make_config(tmp_path)) as srv:
        await srv.wait_for_t(3)
        assert_names(await srv.get("/incremental?from_t=0&batch=2"), "batch")
        # The typo is named even when a valid parameter follows it.
        assert_names(await srv.get("/incremental?lmit=1&limit=1"), "lmit")


@pytest.mark.parametrize("transport", ["raw", "asgi"])
async def test_the_stream_upgrade_refuses_an_unknown_parameter(
    tmp_path: Path, transport: Transport
) -> None:
    async with running(make_config(tmp_path), transport) as srv:
        await srv.wait_for_t(0)
        for query, name in [("from_t=0&limit=3", "limit"), ("btach=5", "btach")]:
            with trio.fail_after(10), pytest.raises(Rejected) as info:
                await RawClient.connect(srv.port, f"/ws/stream?{query}")
            assert info.value.status == 400
            body = orjson.loads(info.value.body)
            assert body["error"] == "bad_request"
            assert body["detail"].startswith(f"{name}: unknown parameter"), body
        with trio.fail_after(10):  # the known ones, token included, still upgrade
            client = await RawClient.connect(
                srv.port,
                "/ws/stream?from_t=0&from_ts=0&to_t=9&to_ts=1e10&speed=max&fields=s&batch=2&token=x",
            )
            client.aclose()


def test_reject_unknown_names_the_first_unknown() -> None:
    reject_unknown({"a": "1", "b": "2"}, {"a", "b", "c"})
    with pytest.raises(BadParam) as info:
        reject_unknown({"a": "1", "x": "2", "y": "3"}, {"a"})
    assert info.value.param == "x"
    assert "takes a" in info.value.detail
    with pytest.raises(BadParam, match="no query parameters"):
        reject_unknown({"x": ""}, set())


def test_what_each_route_takes_is_what_the_openapi_lists() -> None:
    app = create_app()
    spec = app.extensions["QUART_SCHEMA"].openapi_provider.schema()
    in_query = {
        name
        for name, scheme in spec["components"]["securitySchemes"].items()
        if scheme.get("in") == "query"
    }
    checked = 0
    for rule in app.url_map.iter_rules():
        if rule.websocket or rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:>]*:)?([^>]+)>", r"{\1}", rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            operation = spec["paths"][path][method.lower()]
            listed = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
            for requirement in operation.get("security", []):
                for scheme in requirement.keys() & in_query:
                    listed.add(spec["components"]["securitySchemes"][scheme]["name"])
            assert query_names(app.view_functions[rule.endpoint]) == listed, path
            assert "400" in operation["responses"], path
            checked += 1
    assert checked >= 9
    # /ws/stream takes what its AsyncAPI query lists, plus the read token.
    documented = {f.name for f in msgspec.structs.fields(StreamQuery)}
    assert documented | {"token"} == STREAM_PARAMS
