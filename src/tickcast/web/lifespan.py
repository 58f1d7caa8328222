"""The Quart app's ASGI lifespan, driven by tickcast in both deployments.

Quart runs its ``before_serving`` / ``after_serving`` hooks, and QuartTrio opens
``app.nursery``, only inside the ASGI lifespan call. ``tickcast serve`` serves the
app through Hypercorn's connection handler, which never sends lifespan events, and
``tickcast.asgi:app`` answers Hypercorn's lifespan itself (to run the service). So
both call :func:`app_lifespan`, which speaks the lifespan protocol to the app: the
hooks run, and ``app.nursery`` exists, exactly as under a plain Quart deployment.

Invariant: the app's shutdown hooks run whenever its startup completed, even when
the block is left by cancellation (the server shutting down), bounded by
``SHUTDOWN_S``; a startup failure is raised as one ``TickcastError`` that says so.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from tickcast.errors import TickcastError

__all__ = ["SHUTDOWN_S", "app_lifespan"]

# Seconds the app's shutdown hooks may take; past that they are cancelled, so a hung
# hook cannot keep the process from exiting.
SHUTDOWN_S = 5.0


@asynccontextmanager
async def app_lifespan(app: Any) -> AsyncIterator[None]:
    """Run ``app``'s startup on entry and its shutdown on exit.

    Raises:
        TickcastError: the app reported ``lifespan.startup.failed``.
    """
    # One channel each way, as an ASGI server gives the app `receive` and `send`. A
    # buffer of 1: the protocol is strictly request/answer, one message in flight.
    to_app, app_receive = trio.open_memory_channel[dict[str, Any]](1)
    app_send, from_app = trio.open_memory_channel[dict[str, Any]](1)
    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
    # The app's lifespan task must outlive a cancellation of the block (a shutdown)
    # long enough to run the shutdown hooks: shield it, and cancel it ourselves.
    app_scope = trio.CancelScope(shield=True)

    async def run_app() -> None:
        with app_scope:
            await app(scope, app_receive.receive, app_send.send)

    failed: str | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_app)
        try:
            await to_app.send({"type": "lifespan.startup"})
            reply = await from_app.receive()
            if reply["type"] != "lifespan.startup.complete":
                failed = str(reply.get("message", reply["type"]))
            else:
                try:
                    yield
                finally:
                    with trio.CancelScope(shield=True), trio.move_on_after(SHUTDOWN_S):
                        await to_app.send({"type": "lifespan.shutdown"})
                        await from_app.receive()
        finally:
            app_scope.cancel()
    if failed is not None:  # raised outside the nursery: a plain error, not a group
        raise TickcastError(f"app startup failed: {failed}")
