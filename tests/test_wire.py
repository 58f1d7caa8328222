"""The wire facts of ``tickcast.wire`` and the API documents agree, both ways."""

from __future__ import annotations

from pathlib import Path

from conftest import make_config, running
from tickcast.wire import PAGE_LIMIT, CloseCode, MessageType


async def test_the_documents_describe_exactly_the_wire_facts(tmp_path: Path) -> None:
    async with running(make_config(tmp_path)) as srv:
        asyncapi = (await srv.get("/asyncapi.json")).json()
        openapi = (await srv.get("/openapi.json")).json()
    channel = asyncapi["channels"]["stream"]
    assert {c["code"] for c in channel["x-close-codes"]} == {int(c) for c in CloseCode}
    assert {c["name"] for c in channel["x-close-codes"]} == {c.name for c in CloseCode}
    assert set(channel["messages"]) == {str(m) for m in MessageType}
    assert set(asyncapi["components"]["messages"]) == {str(m) for m in MessageType}
    # The page cap, where /openapi.json states it.
    params = {
        p["name"]: p
        for p in openapi["paths"]["/incremental"]["get"]["parameters"]
        if p["in"] == "query"
    }
    assert str(PAGE_LIMIT) in params["limit"]["description"]
    schemas = openapi["components"]["schemas"]
    # Every message a client reads as JSON is typed by its tag in the components.
    assert schemas["Tick"]["properties"]["type"]["enum"] == [MessageType.TICK.value]
