"""Read every request body before answering, so keep-alive connections stay usable.

The failure this prevents (Hypercorn 0.18 with quart-trio 0.12, under ``tickcast
serve`` and a stock ``hypercorn`` alike): when a response is complete while the
client is still sending the request body (a 409 from ``POST /ingest`` on a
simulator, a 405 for ``POST /health``), Hypercorn closes the connection from inside
the app's task, after telling the app the client is gone; quart-trio's receiver
sees that and cancels the very task doing the close. The close is abandoned half
way: the socket stays open, the body is read, and the next request on the
connection is never answered (schemathesis found it: a read timeout).

So a request that carries a body has it read first (at most Quart's
``MAX_CONTENT_LENGTH``, 16 MiB; a larger one is refused with 413 without reading
it). The handler then finds it cached: ``request.get_data()`` returns it at once.
"""

from __future__ import annotations

from quart import Quart, request

__all__ = ["install"]


async def _read_body() -> None:
    chunked = "chunked" in request.headers.get("transfer-encoding", "").lower()
    if request.content_length or chunked:
        await request.get_data()


def install(app: Quart) -> None:
    """Make ``app`` read each request body before any handler or routing error answers."""
    app.before_request(_read_body)
