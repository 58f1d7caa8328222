"""``tickcast.asgi:app``, for ``hypercorn --worker-class trio tickcast.asgi:app``.

What it owns: the answer to Hypercorn's ASGI lifespan. On ``lifespan.startup``
it reads the settings (``TICKCAST_*`` variables only: Hypercorn owns the command
line and the listener), opens the producer and runs the one assembly
(``assembly.py``) with no listener of its own: the writer, the source and the
appender live in the nursery of the lifespan call, the app's own startup hooks
run, the service is attached, and it answers ``startup.complete``. On
``lifespan.shutdown`` the assembly stops in its order (sources and clients, the
app's shutdown hooks, then the writer drains, fsyncs and writes ``CLEAN``).
HTTP routes and ``/ws/stream`` are the Quart app's (the portable ASGI transport).

Invariants, for an operator:

* A tickcast that cannot start says why in one line on stderr,
  ``tickcast: error: ...``, and its process exits non-zero (2 for a bad
  setting, 1 otherwise), with no traceback: an unknown or bad ``TICKCAST_``
  variable, a worker class other than trio, a locked data directory.
  Hypercorn's own report of a failed lifespan is a traceback and a clean exit,
  so the worker process exits itself, at once (``os._exit``), after that line.
  Hypercorn 0.18's parent process (``--workers`` 1 or more, the default) then
  exits 0 whatever its worker's status (its ``run()`` re-reads the exit codes
  of workers already reaped); with ``--workers 0`` the status is the worker's.
* ``TICKCAST_HOST``, ``TICKCAST_PORT`` and ``TICKCAST_REUSE_PORT`` do not apply:
  Hypercorn's ``--bind`` (and ``--reuse-port``) decide where it listens. A set
  one is named in a warning at start-up, not silently ignored.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, NoReturn

import trio

from tickcast.assembly import assemble, open_role
from tickcast.config import from_sources
from tickcast.errors import ConfigError, TickcastError, leaves
from tickcast.web.app import create_app

__all__ = ["LISTENER_VARIABLES", "app", "quart_app"]

log = logging.getLogger("tickcast.asgi")

# Built at import, as an ASGI server expects `module:app` to be ready; the service is
# attached to it later, in the lifespan, once the settings have been read.
quart_app = create_app()

LISTENER_VARIABLES = ("TICKCAST_HOST", "TICKCAST_PORT", "TICKCAST_REUSE_PORT")
"""Settings of ``tickcast serve``'s own listener, which Hypercorn's ``--bind`` replaces."""

# ASGI's messages are plain dicts; Hypercorn's own types are not imported here (only
# web/hypercorn_bridge.py may import Hypercorn).
Scope = dict[str, Any]


def _exit(message: str, status: int) -> NoReturn:
    """Print ``tickcast: error: message`` on stderr and end the process with ``status``.

    ``os._exit``, not ``sys.exit``: the process must end now with this status, not
    raise an exception that Hypercorn would report as a traceback and a clean exit
    (the module docstring).
    """
    print(f"tickcast: error: {message}", file=sys.stderr, flush=True)
    os._exit(status)


def _warn_listener_variables() -> None:
    """Warn about each listener setting that Hypercorn's ``--bind`` overrides."""
    for name in LISTENER_VARIABLES:
        if name in os.environ:
            log.warning(
                "%s=%s is ignored under Hypercorn: its --bind (and --reuse-port) "
                "decide where it listens",
                name,
                os.environ[name],
            )


def _check_worker_class() -> None:
    """Exit (status 2) unless running under trio: the service is built on trio."""
    # Under the asyncio or uvloop worker there is no trio token; a clear message beats
    # the error the first trio call would raise deep in the assembly.
    try:
        trio.lowlevel.current_trio_token()
    except RuntimeError:
        _exit(
            "tickcast.asgi:app runs only on Hypercorn's trio worker: "
            "start it with hypercorn --worker-class trio tickcast.asgi:app",
            2,
        )


async def _lifespan(receive: Any, send: Any) -> None:
    """Answer Hypercorn's lifespan: run the assembly from startup to shutdown.

    This call lives as long as the server: the assembly's nurseries (writer, source,
    appender) are its children, so they end when it returns. A failure before
    ``startup.complete`` ends the process with a one-line error (the module
    docstring); a failure while serving is logged and reported to Hypercorn as
    ``lifespan.shutdown.failed``.
    """
    message = await receive()
    if message["type"] != "lifespan.startup":  # the ASGI spec's order: a server bug
        raise RuntimeError(f"expected lifespan.startup, got {message['type']!r}")
    _warn_listener_variables()
    try:
        config = from_sources({})
        role = await open_role(config)
    except ConfigError as exc:
        _exit(str(exc), 2)
    except TickcastError as exc:  # e.g. the data directory is in use by another process
        _exit(str(exc), 1)
    started = False
    failure: Exception | None = None
    try:
        async with assemble(config, role, app=quart_app):
            await send({"type": "lifespan.startup.complete"})
            started = True
            message = await receive()
    except Exception as exc:  # an ExceptionGroup from the nurseries, usually
        failure = exc
    if failure is None:
        await send({"type": "lifespan.shutdown.complete"})
        return
    # The nurseries wrap errors in groups; report the leaves, not the group's repr.
    errors = leaves(failure)
    if started:
        log.error("tickcast failed while serving", exc_info=failure)
        await send({"type": "lifespan.shutdown.failed", "message": str(failure)})
    elif all(isinstance(e, TickcastError) for e in errors):
        _exit(
            "; ".join(map(str, errors)), 2 if all(isinstance(e, ConfigError) for e in errors) else 1
        )
    else:
        log.error("tickcast failed to start", exc_info=failure)
        _exit(f"failed to start: {'; '.join(map(repr, errors))}", 1)


async def app(scope: Scope, receive: Any, send: Any) -> None:
    """The ASGI application: our lifespan, Quart for everything else.

    Quart's own lifespan handler is replaced, not chained: the assembly runs the
    app's startup and shutdown hooks itself, in its order.
    """
    if scope["type"] == "lifespan":
        _check_worker_class()
        await _lifespan(receive, send)
    else:
        await quart_app(scope, receive, send)  # type: ignore[arg-type]
