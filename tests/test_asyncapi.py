"""``/asyncapi.json`` (docs/api.md): valid AsyncAPI 3.0, and true to what the server sends.

The document is checked against the official AsyncAPI 3.0.0 JSON Schema. No PyPI
package ships it, so the Makefile's install step fetches it from the npm package
that the AsyncAPI initiative publishes it in (``@asyncapi/specs``, pinned there)
into the venv, as it installs Chromium and redis-server: the test itself needs
nothing from outside. Then real messages from a running server are validated
against the document's own message schemas.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import trio

from conftest import Running, make_config, recv_json, running
from conftest import ws_connect as open_websocket_url
from tickcast.web import asyncapi
from tickcast.wire import CloseCode

# Where the Makefile puts it (ASYNCAPI_SCHEMA), in the venv running the suite.
SCHEMA_FILE = Path(sys.prefix) / "share" / "asyncapi" / "3.0.0.json"


@pytest.fixture(scope="session")
def asyncapi_3_schema() -> dict[str, Any]:
    """The official AsyncAPI 3.0.0 JSON Schema (draft-07), from ``@asyncapi/specs``."""
    assert SCHEMA_FILE.is_file(), (
        f"the AsyncAPI 3.0.0 JSON Schema is missing: {SCHEMA_FILE} "
        "(make test fetches it; or run: make .venv/share/asyncapi/3.0.0.json)"
    )
    schema = json.loads(SCHEMA_FILE.read_text())
    assert isinstance(schema, dict)
    assert schema["$id"] == "http://asyncapi.com/definitions/3.0.0/asyncapi.json", schema["$id"]
    return schema


def payload_validators(doc: dict[str, Any]) -> dict[str, Any]:
    """A validator per message name, resolving ``#/components/...`` within ``doc``."""
    out = {}
    for name, message in doc["components"]["messages"].items():
        schema = {"components": doc["components"], **message["payload"]}
        out[name] = jsonschema_rs.Draft7Validator(schema)
    return out


async def test_document_is_valid_asyncapi_3(
    server: Running, asyncapi_3_schema: dict[str, Any]
) -> None:
    r = await server.get("/asyncapi.json")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    doc = r.json()
    errors = [
        e.message[:300] for e in jsonschema_rs.validator_for(asyncapi_3_schema).iter_errors(doc)
    ]
    assert errors == []
    assert doc["asyncapi"] == "3.0.0"
    assert doc["servers"]["tickcast"] == {
        **doc["servers"]["tickcast"],
        "host": f"127.0.0.1:{server.port}",
        "protocol": "ws",
    }
    query = doc["channels"]["stream"]["bindings"]["ws"]["query"]
    assert set(query["properties"]) == {
        "from_t",
        "from_ts",
        "to_t",
        "to_ts",
        "speed",
        "fields",
        "batch",
        "token",
    }
    assert query["properties"]["batch"]["maximum"] == 1000


def test_the_schema_check_catches_mistakes(asyncapi_3_schema: dict[str, Any]) -> None:
    validator = jsonschema_rs.validator_for(asyncapi_3_schema)
    doc = asyncapi.document("example.org")
    assert validator.is_valid(doc)
    doc["operations"]["sendStream"]["action"] = "publish"  # AsyncAPI 2's word
    assert not validator.is_valid(doc)


def test_every_message_and_close_code_is_described() -> None:
    doc = asyncapi.document("example.org")
    messages = doc["channels"]["stream"]["messages"]
    assert set(messages) == {
        "hello",
        "tick",
        "batch",
        "heartbeat",
        "end",
        "pong",
        "replay",
        "error",
        "ping",
        "pause",
        "play",
        "speed",
        "seek",
        "live",
    }
    codes = {c["code"]: c for c in doc["channels"]["stream"]["x-close-codes"]}
    assert set(codes) == {int(code) for code in CloseCode}
    assert codes[4008]["reason"] == "slow consumer; resume with from_t=8261"
    assert all(c["meaning"] for c in codes.values())
    # The examples are valid by the document's own schemas.
    validators = payload_validators(doc)
    for name, message in doc["components"]["messages"].items():
        for example in message["examples"]:
            assert validators[name].is_valid(example["payload"]), name


async def test_real_messages_match_their_schemas(tmp_path: Path) -> None:
    config = make_config(tmp_path, heartbeat_s=0.2, agents=3)
    async with running(config) as srv:
        await srv.wait_for_t(10)
        doc = (await srv.get("/asyncapi.json")).json()
        validators = payload_validators(doc)
        seen: dict[str, dict[str, Any]] = {}
        async with open_websocket_url(srv.ws_url("?from_t=0&batch=4&fields=s,actions")) as ws:
            with trio.fail_after(10):
                while not {"hello", "batch", "tick", "heartbeat"} <= set(seen):
                    msg = await recv_json(ws)
                    seen.setdefault(msg["type"], msg)
            await ws.send_message('{"type":"ping","id":[1,"a"]}')
            await ws.send_message("not json")
            with trio.fail_after(10):
                while not {"pong", "error"} <= set(seen):
                    msg = await recv_json(ws)
                    seen.setdefault(msg["type"], msg)
        async with open_websocket_url(srv.ws_url()) as ws:  # a full tick, no fields
            await recv_json(ws)
            full = await recv_json(ws)
        assert full["type"] == "tick" and "agents" in full
    assert seen["pong"]["id"] == [1, "a"]
    for name, msg in [*seen.items(), ("tick", full)]:
        errors = [e.message for e in validators[name].iter_errors(msg)]
        assert errors == [], (name, msg)
    # ...and the schemas are not vacuous: a wrong message fails them.
    assert not validators["hello"].is_valid({**seen["hello"], "oldest_t": "0"})
    assert not validators["tick"].is_valid({**full, "t": -1})
    assert not validators["batch"].is_valid({"type": "batch", "ticks": [full]})
