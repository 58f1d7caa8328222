"""tickcast under Hypercorn's public trio API, in-process: the ASGI transport for tests.

What ``hypercorn --worker-class trio tickcast.asgi:app`` runs, with the test's
``Config`` instead of ``TICKCAST_*`` variables: the same assembly as
``tickcast.asgi`` (``tickcast.assembly.assemble`` without a listener of ours), and
``/ws/stream`` answered by the Quart route (``AsgiSession``). Only
``hypercorn.trio.serve`` and ``hypercorn.config.Config`` are used: no internals.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.trio import serve as hypercorn_serve

from tickcast.assembly import assemble
from tickcast.config import Config
from tickcast.producer import Producer
from tickcast.web.app import create_app

__all__ = ["GRACEFUL_TIMEOUT_S", "serve_asgi"]

# Hypercorn's shutdown grace (stock: 3 s). Tests close their clients before the
# server stops; this only bounds a test that does not.
GRACEFUL_TIMEOUT_S = 1.0


async def _answer_lifespan(receive: Any, send: Any) -> None:
    """Hypercorn's lifespan: the app's own runs under ``assemble`` (as in asgi.py)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def serve_asgi(
    config: Config,
    *,
    producer: Producer,
    shutdown_trigger: Callable[[], Awaitable[object]],
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``producer``'s service on ``config.host``, port 0, until ``shutdown_trigger``.

    ``task_status.started`` receives the bound port (Hypercorn reports its binds).
    Stops like ``tickcast.asgi``: Hypercorn first (connections cancelled after
    ``GRACEFUL_TIMEOUT_S``), then the app's shutdown, then the source and writer.
    """
    app = create_app()

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _answer_lifespan(receive, send)
        else:
            await app(scope, receive, send)  # type: ignore[arg-type]

    hyper = HyperConfig()
    hyper.bind = [f"{config.host}:0"]
    hyper.graceful_timeout = GRACEFUL_TIMEOUT_S

    async def shutdown() -> None:
        await shutdown_trigger()

    async with assemble(config, producer, app=app), trio.open_nursery() as inner:
        binds = await inner.start(partial(hypercorn_serve, asgi, hyper, shutdown_trigger=shutdown))
        port = urlsplit(binds[0]).port
        assert port is not None, binds
        task_status.started(port)
