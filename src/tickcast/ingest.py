"""The ingest source: an external simulation POSTs ticks (SPEC §6).

``POST /ingest`` with ``Authorization: Bearer <ingest_token>`` and a JSON body that
is one tick's content or a list of them: ``{"s":{...},"agents":[...],
"actions":[...],"matches":[...]}`` (``ts`` optional). The server assigns ``t`` (so
numbering stays gap-free across restarts) and ``ts`` when absent, then the tick
takes the same path as a simulated one. Only with ``--source ingest``.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec
import orjson
import trio
from quart import Quart, Response, request

from .tick import OPTIONAL_KEYS, EncodedTick

if TYPE_CHECKING:
    from .service import Service

__all__ = ["MAX_INGEST_BYTES", "build_tick", "register_ingest"]

MAX_INGEST_BYTES = 16 * 2**20


def _error(status: int, error: str, detail: str) -> Response:
    body = msgspec.json.encode({"error": error, "detail": detail})
    return Response(body, status=status, content_type="application/json")


def build_tick(t: int, content: Any) -> dict[str, Any]:
    """A tick dict in SPEC key order from posted content.

    Raises:
        ValueError: the content is not an object with the four tick keys.
    """
    if not isinstance(content, dict):
        raise ValueError("each tick must be a JSON object")
    missing = [k for k in OPTIONAL_KEYS if k not in content]
    if missing:
        raise ValueError(f"tick content lacks {','.join(missing)}")
    if not isinstance(content["s"], dict):
        raise ValueError("'s' must be an object")
    for key in ("agents", "actions", "matches"):
        if not isinstance(content[key], list):
            raise ValueError(f"{key!r} must be a list")
    ts = content.get("ts", time.time())
    if not isinstance(ts, int | float):
        raise ValueError("'ts' must be a number")
    tick: dict[str, Any] = {"type": "tick", "t": t, "ts": round(float(ts), 6)}
    for key in OPTIONAL_KEYS:
        tick[key] = content[key]
    return tick


def register_ingest(app: Quart, service_of: Callable[[Quart], Service]) -> None:
    """Add ``POST /ingest`` to ``app``."""
    numbering = trio.Lock()  # one request at a time assigns t, so t stays consecutive

    @app.post("/ingest")
    async def ingest() -> Response:
        """Append ticks from an external simulation (bearer token; ``--source ingest``)."""
        service = service_of(app)
        config = service.config
        if config.source != "ingest" or not config.ingest_token:
            return _error(409, "not_ingest", "this server's source is the built-in simulator")
        auth = request.headers.get("authorization", "")
        expected = f"Bearer {config.ingest_token}"
        if not hmac.compare_digest(auth.encode(), expected.encode()):
            return _error(401, "unauthorized", "missing or wrong bearer token")
        body = await request.get_data(cache=False)
        if len(body) > MAX_INGEST_BYTES:
            return _error(413, "too_large", f"body over {MAX_INGEST_BYTES} bytes")
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return _error(400, "bad_request", "body is not JSON")
        items = payload if isinstance(payload, list) else [payload]
        history = service.history
        async with numbering:
            t0 = history.next_t
            try:
                ticks = [build_tick(t0 + i, c) for i, c in enumerate(items)]
            except ValueError as exc:
                return _error(400, "bad_request", str(exc))
            for tick in ticks:
                await service.produce(EncodedTick.from_dict(tick))
        out = {"accepted": len(ticks), "first_t": t0, "latest_t": history.latest_t}
        return Response(msgspec.json.encode(out), content_type="application/json")
