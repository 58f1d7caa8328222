"""``/asyncapi.json``: the ``/ws/stream`` protocol as AsyncAPI 3.0 (docs/protocol.md).

Built from what the code uses: the message and query models of ``web.schemas``
(msgspec Structs, turned into JSON Schema by ``msgspec.json.schema_components``),
the close codes of ``wire.CloseCode`` (with the reasons ``protocol.End`` builds)
and the limits the code enforces. The server is the document's application: it *sends* hello, tick,
batch, heartbeat, end, pong, replay and error, and *receives* ping and the replay
controls (pause, play, speed, seek, live). The query string is the
WebSocket channel binding's ``query`` (AsyncAPI channel parameters are for the
address only). Close codes and handshake refusals, which AsyncAPI has no object
for, are the channel's ``x-close-codes`` and ``x-handshake-refusals``.

Invariants (``tests/test_asyncapi.py`` and ``tests/test_wire.py`` check them):

* every ``wire.CloseCode`` has exactly one entry in :data:`CLOSE_CODES`, and every
  ``wire.MessageType`` exactly one message, so adding a code or a message type to
  the wire module without describing it here fails the tests rather than shipping
  an incomplete document;
* every example payload is valid by the document's own schemas, and the messages a
  real server sends are valid by them too: the examples are not decoration;
* the document is valid AsyncAPI 3.0 (checked against the official JSON Schema).

The module is pure: :func:`document` does no I/O and keeps no state, so the route
builds it per request (only ``host`` and the scheme change) and tests call it
directly. Numbers that a reader acts on (the batch cap, the largest client message)
are formatted from the constants the server enforces, never written as literals.
"""

from __future__ import annotations

from typing import Any

import msgspec

from tickcast import __version__
from tickcast.protocol import End
from tickcast.web import schemas
from tickcast.wire import MAX_BATCH, MAX_CLIENT_MESSAGE, CloseCode, MessageType

__all__ = ["CLOSE_CODES", "SERVER_MESSAGES", "document"]

# Where msgspec's schemas are put: AsyncAPI 3.0 keeps reusable schemas under
# components/schemas, as OpenAPI does, so one ref template serves both documents.
REF = "#/components/schemas/{name}"
# The one channel's key; `/ws/stream` is its address. Operations and message refs
# point at it, so it is named once.
CHANNEL = "stream"

# Every code the server closes with: the reason it sends, and what a client should do.
# The reason is built from the same `protocol.End` template the server uses (formatted
# with a sample value where it carries one), so the document shows the exact text a
# client will parse. An empty reason: the code is sent without one (or, for 1000, echoed).
# The advice is part of the contract: the bundled client (`tickcast.client`) follows it.
CLOSE_CODES: dict[CloseCode, tuple[str, str]] = {
    CloseCode.NORMAL: (
        End.RANGE_END.template,
        "After `end`: every tick of the range asked with `to_t` / `to_ts` has been sent. "
        "Otherwise the server echoes the code of a client that closes first (1000, or "
        "none when the client's close had none).",
    ),
    CloseCode.GOING_AWAY: (
        End.SHUTDOWN.template,
        "The server is stopping. Back off (0.5 s doubling to 10 s) and resume with "
        "`from_t` = last t + 1.",
    ),
    CloseCode.PROTOCOL_ERROR: ("", "The client broke RFC 6455 framing. Fix the client."),
    CloseCode.INVALID_DATA: ("", "A text message that is not UTF-8. Fix the client."),
    CloseCode.POLICY_VIOLATION: (
        "",
        "Not sent by tickcast; a proxy in front of it may send it. Do not retry as is.",
    ),
    CloseCode.TOO_BIG: (
        End.TOO_BIG.template.format(size=MAX_CLIENT_MESSAGE + 1),
        f"A client message over {MAX_CLIENT_MESSAGE} bytes. Fix the client.",
    ),
    CloseCode.INTERNAL_ERROR: (
        End.CORRUPT_HISTORY.template,
        "The history is damaged (`/health` names the record), or a server bug "
        "(reason `internal error`, logged). Report it; a retry at the same from_t fails again.",
    ),
    CloseCode.SLOW_CONSUMER: (
        End.SLOW_CONSUMER.template.format(t=8261),
        "The client fell more than `max_lag` ticks behind. Reconnect at once with the "
        "`from_t` in the reason: no gap, no duplicate.",
    ),
    CloseCode.EPOCH_CHANGED: (
        End.EPOCH_CHANGED.template,
        "The history was reset (a scale-out edge saw a new epoch). Reconnect; the new "
        "hello carries the new epoch, and old t values mean nothing in it.",
    ),
}

# The HTTP answers to an upgrade that is refused, each with a JSON error body.
# status -> (the body's `error` value, when a client gets it). A refusal happens before
# the upgrade, so no close code is involved: a client sees an HTTP response, not a
# WebSocket. The order of the 400 checks is stated because only the first fault is named.
REFUSALS: dict[int, tuple[str, str]] = {
    400: (
        "bad_request",
        "A query parameter is unknown (`detail` names it), or invalid (checked in the "
        "order from_t, from_ts, to_t, to_ts, speed, batch, fields); `to_t < from_t` and "
        "`to_ts < from_ts` are refused too.",
    ),
    401: ("unauthorized", "With `read_token` set: the token is missing or wrong."),
    429: (
        "too_many_connections",
        "The server is at `max_connections`, or the address at `max_connections_per_ip`.",
    ),
    503: (
        "unavailable",
        "The service cannot stream yet: starting or stopping, or a scale-out edge that "
        "has not yet read the producer's stream (`detail` says which); or the server "
        "is out of file descriptors. Retry with backoff.",
    ),
}

# What the server sends. name -> (model, summary, example payload). The name is the
# message's `type` value (from `wire.MessageType`, never a literal), and doubles as the
# message's key in the document. Examples are real output, trimmed: they must validate
# against the model's schema (the tests check), so edit the two together.
SERVER_MESSAGES: dict[str, tuple[type[msgspec.Struct], str, dict[str, Any]]] = {
    MessageType.HELLO.value: (
        schemas.Hello,
        "Always first: the history's epoch and range.",
        {
            "type": "hello",
            "epoch": "01f6f5ff2f6d25c6",
            "oldest_t": 0,
            "latest_t": 6268,
            "heartbeat_s": 30,
            "server": f"tickcast/{__version__}",
        },
    ),
    MessageType.TICK.value: (
        schemas.Tick,
        "One tick (here with `fields=s`): the latest one, the replay, then every new one.",
        {
            "type": "tick",
            "t": 6271,
            "ts": 1795491984.183187,
            "s": {"price_norm": 0.511999, "volatility": 0.000618, "liquidity": 0.5926},
        },
    ),
    MessageType.BATCH.value: (
        schemas.Batch,
        f"Up to `batch` (at most {MAX_BATCH}) consecutive ticks that were already waiting.",
        {
            "type": "batch",
            "ticks": [
                {"type": "tick", "t": 3, "ts": 1795493404.862579, "s": {"price_norm": 0.500756}},
                {"type": "tick", "t": 4, "ts": 1795493404.962457, "s": {"price_norm": 0.500793}},
            ],
        },
    ),
    MessageType.HEARTBEAT.value: (
        schemas.Heartbeat,
        "Every `heartbeat_s` seconds; two periods of silence mean a dead connection.",
        {"type": "heartbeat", "latest_t": 2192, "ts": 1795492058.996497},
    ),
    MessageType.END.value: (
        schemas.End,
        "The last tick of the asked range (`to_t` / `to_ts`) has been sent; close 1000 follows.",
        {"type": "end", "t": 48300},
    ),
    MessageType.PONG.value: (
        schemas.Pong,
        "The answer to a ping.",
        {"type": "pong", "ts": 1795491983.959698, "id": 7},
    ),
    MessageType.REPLAY.value: (
        schemas.Replay,
        "The answer to a control message, before any tick that follows from it: where "
        "the stream is now. Between two of them the ticks are strictly consecutive.",
        {"type": "replay", "state": "playing", "t": 48210, "speed": 10},
    ),
    MessageType.ERROR.value: (
        schemas.Error,
        "The answer to a client message that is not JSON, not an object, of no known "
        "type, or a malformed or out-of-range control message (which changes nothing).",
        {"type": "error", "code": "bad_message", "detail": "not JSON"},
    ),
}

# What a client may send, shaped as SERVER_MESSAGES: ping, and the replay controls.
# Anything else is answered with an error message, not obeyed.
CLIENT_MESSAGES: dict[str, tuple[type[msgspec.Struct], str, dict[str, Any]]] = {
    MessageType.PING.value: (
        schemas.Ping,
        f"Answered by a pong. A message of no known type gets an error; one over "
        f"{MAX_CLIENT_MESSAGE} bytes closes the connection with 1009.",
        {"type": "ping", "id": 7},
    ),
    MessageType.PAUSE.value: (
        schemas.Pause,
        "Send no more ticks (heartbeats go on), keeping the position. Answered by `replay`.",
        {"type": "pause"},
    ),
    MessageType.PLAY.value: (
        schemas.Play,
        "Go on from the position, at the stream's speed. Answered by `replay`.",
        {"type": "play"},
    ),
    MessageType.SPEED.value: (
        schemas.SetSpeed,
        "Pace history at this speed from now on. Answered by `replay`.",
        {"type": "speed", "speed": 10},
    ),
    MessageType.SEEK.value: (
        schemas.Seek,
        "The next tick is `t` (or the first with `ts >= ts`), clamped to "
        "`oldest_t` ... `latest_t + 1`. Answered by `replay` (`clamped` when it was).",
        {"type": "seek", "t": 48210},
    ),
    MessageType.LIVE.value: (
        schemas.Live,
        "The next tick is the latest one, then every new tick. Answered by `replay`.",
        {"type": "live"},
    ),
}

# The channel's description, also the document's: the ordering guarantee (hello, then
# the latest tick or the replay, then live; `t` consecutive) is what a client relies
# on, so it is said up front rather than left to the per-message summaries.
DESCRIPTION = """\
The live tick stream. Every server message is one JSON object in one text frame.

Order: `hello` first; then the latest tick (without `from_t`) or the replay from
`max(from_t, oldest_t)` (with it); then every new tick live. `t` is strictly
consecutive across the connection, batches included: no gap, no duplicate.
Heartbeats come every `heartbeat_s` seconds. A client that falls more than
`max_lag` ticks behind is closed with 4008 naming the `from_t` to resume with.

Replay: with `speed`, history is paced by the ticks' own `ts`; with `to_t` /
`to_ts`, the stream ends with `end` and close 1000 after the range. The control
messages (pause, play, speed, seek, live) are each answered by a `replay` message
before any tick that follows from it; between two `replay` messages the ticks are
strictly consecutive. A paused or paced stream is never closed with 4008.
Refused upgrades (`x-handshake-refusals`) are HTTP responses with a JSON body
`{"error", "detail"}`; close codes are in `x-close-codes`.
"""


def _message(name: str, model: type[msgspec.Struct], summary: str, example: Any) -> dict[str, Any]:
    """One AsyncAPI Message Object: the payload by reference, one named example.

    The payload is a ``$ref`` into ``components/schemas`` (where msgspec put the
    model), so a schema shared by two messages (``Tick`` inside ``Batch``) is
    written once.
    """
    return {
        "name": name,
        "title": name,
        "summary": summary,
        "contentType": "application/json",
        "payload": {"$ref": REF.format(name=model.__name__)},
        "examples": [{"name": name, "payload": example}],
    }


def document(host: str, *, secure: bool = False) -> dict[str, Any]:
    """The AsyncAPI 3.0 document for a server reached at ``host`` (``name[:port]``).

    The document names the server the reader reached, so that tools pointed at
    ``/asyncapi.json`` connect back to the same place, whatever name or proxy the
    client used; everything else is the same for every call.

    Args:
        host: the ``Host`` the request came in on, copied into ``servers`` as is.
        secure: whether the page was reached over TLS; the server's protocol is then
            ``wss`` instead of ``ws``.

    Returns:
        A fresh JSON-ready dict (the caller may mutate or encode it). Component schemas
        are sorted by name so that the encoded document is stable between runs.
    """
    models: list[type[msgspec.Struct]] = [schemas.StreamQuery]
    models += [model for model, _, _ in SERVER_MESSAGES.values()]
    models += [model for model, _, _ in CLIENT_MESSAGES.values()]
    _, components = msgspec.json.schema_components(models, ref_template=REF)
    # Inline: the ws binding's `query` must be a schema object, not a reference, and
    # StreamQuery is not a message, so it has no business among the components.
    query = components.pop("StreamQuery")
    messages = {
        name: _message(name, model, summary, example)
        for name, (model, summary, example) in {**SERVER_MESSAGES, **CLIENT_MESSAGES}.items()
    }
    channel_ref = {"$ref": f"#/channels/{CHANNEL}"}

    def refs(names: Any) -> list[dict[str, str]]:
        # Operations must refer to the channel's messages, not to components/messages
        # directly (AsyncAPI 3.0): the channel lists what it carries; operations pick.
        return [{"$ref": f"#/channels/{CHANNEL}/messages/{name}"} for name in names]

    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "tickcast stream",
            "version": __version__,
            "description": DESCRIPTION,
        },
        "defaultContentType": "application/json",
        "servers": {
            "tickcast": {
                "host": host,
                "protocol": "wss" if secure else "ws",
                "description": "This server. The HTTP API is at /openapi.json.",
                "security": [
                    {"$ref": "#/components/securitySchemes/readBearer"},
                    {"$ref": "#/components/securitySchemes/readQuery"},
                ],
            }
        },
        "channels": {
            CHANNEL: {
                "address": "/ws/stream",
                "title": "The tick stream",
                "description": DESCRIPTION,
                "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in messages},
                "bindings": {
                    "ws": {
                        "method": "GET",
                        "query": query,
                        "bindingVersion": "0.1.0",
                    }
                },
                "x-close-codes": [
                    {"code": int(code), "name": code.name, "reason": reason, "meaning": meaning}
                    for code, (reason, meaning) in CLOSE_CODES.items()
                ],
                "x-handshake-refusals": [
                    {"status": status, "error": error, "meaning": meaning}
                    for status, (error, meaning) in REFUSALS.items()
                ],
            }
        },
        # From the server's side (it is the application described): it *sends* the
        # stream and *receives* pings, whose reply goes back on the same channel.
        "operations": {
            "sendStream": {
                "action": "send",
                "channel": channel_ref,
                "summary": "The server streams hello, ticks, batches, heartbeats and end.",
                "messages": refs(["hello", "tick", "batch", "heartbeat", "end"]),
            },
            "receivePing": {
                "action": "receive",
                "channel": channel_ref,
                "summary": "The server answers a client's ping with a pong (or an error).",
                "messages": refs(["ping"]),
                "reply": {"channel": channel_ref, "messages": refs(["pong", "error"])},
            },
            "receiveControl": {
                "action": "receive",
                "channel": channel_ref,
                "summary": "The server applies a replay control and answers where it is now.",
                "messages": refs(name for name in CLIENT_MESSAGES if name != "ping"),
                "reply": {"channel": channel_ref, "messages": refs(["replay", "error"])},
            },
        },
        "components": {
            "schemas": dict(sorted(components.items())),
            "messages": messages,
            # The same two ways of presenting the read token as the HTTP API; the
            # server checks them only when `read_token` is set (the README's settings).
            "securitySchemes": {
                "readBearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The read token, only when the server has `read_token` set.",
                },
                "readQuery": {
                    "type": "httpApiKey",
                    "name": "token",
                    "in": "query",
                    "description": "The read token as `?token=` (browsers), only when set.",
                },
            },
        },
    }
