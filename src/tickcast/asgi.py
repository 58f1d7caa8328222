"""``tickcast.asgi:app``, for ``hypercorn --worker-class trio tickcast.asgi:app``.

Settings come from ``TICKCAST_*`` variables only (Hypercorn owns the command line
and the listener). The service (history, writer, source) lives in the nursery of
the ASGI lifespan call: it starts with Hypercorn's serving lifecycle and is
cancelled (drained, fsynced) when Hypercorn shuts down. HTTP routes and
``/ws/stream`` are the Quart app's (the portable ASGI transport).
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from tickcast.config import from_sources
from tickcast.server import run_producer, steady_state
from tickcast.web.app import attach, create_app
from tickcast.web.lifespan import app_lifespan

__all__ = ["app", "quart_app"]

log = logging.getLogger("tickcast.asgi")

quart_app = create_app()

Scope = dict[str, Any]


async def _lifespan(receive: Any, send: Any) -> None:
    message = await receive()
    assert message["type"] == "lifespan.startup"
    started = False
    try:
        config = from_sources({})
        async with trio.open_nursery() as nursery:
            producer = await nursery.start(run_producer, config)
            async with app_lifespan(quart_app):
                attach(quart_app, producer.service, producer=producer)
                with steady_state(producer.service):
                    await send({"type": "lifespan.startup.complete"})
                    started = True
                    message = await receive()
                attach(quart_app, None)
            nursery.cancel_scope.cancel()
    except Exception as exc:
        attach(quart_app, None)
        if not started:
            log.exception("tickcast failed to start")
            await send({"type": "lifespan.startup.failed", "message": f"{exc}"})
            return
        log.exception("tickcast failed while serving")
        await send({"type": "lifespan.shutdown.failed", "message": f"{exc}"})
        return
    await send({"type": "lifespan.shutdown.complete"})


async def app(scope: Scope, receive: Any, send: Any) -> None:
    """The ASGI application: our lifespan, Quart for everything else."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
    else:
        await quart_app(scope, receive, send)  # type: ignore[arg-type]
