"""Hypercorn's trio connection handler, behind one door.

Why internals at all: ``tickcast serve`` keeps one listening socket and reads each
request head itself, so that ``/ws/stream`` can stay on our raw-socket transport.
Every *other* connection is handed, head and all, to Hypercorn's own per-connection
handler, so HTTP behaves exactly as under a stock ``hypercorn`` deployment. Hypercorn
exports only ``Config`` publicly (its ``__all__``); the handler (``TCPServer``), the
worker context, ``wrap_app`` and ``ConnectionState`` are internal and changed
signature in 0.16, 0.17 and 0.18. So:

* this module is the only one that imports them;
* ``pyproject.toml`` pins Hypercorn to the tested minor version (:data:`TESTED`);
* :func:`shape_mismatches` compares what is installed with the shape this module
  was written against, and ``tests/test_hypercorn_bridge.py`` fails naming every
  difference, so an upgrade breaks a test, not production.

What it does not do: accept connections, read request heads, or route WebSockets
(``web/frontdoor.py`` does); TLS (``tickcast serve`` listens in plain TCP, as a
deployment behind a TLS-terminating proxy expects).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import wrap_app

__all__ = ["TESTED", "HypercornHandler", "shape_mismatches"]

TESTED = "0.18"  # the Hypercorn minor version this module was written and tested against
# Seconds an idle HTTP/1.1 connection stays open: long enough for a dashboard's polling
# to reuse its connection, short enough that idle sockets do not pile up.
KEEP_ALIVE_S = 30

# The parameters (names, in order) of every internal callable used below.
_SHAPE: dict[str, tuple[Callable[..., Any], tuple[str, ...]]] = {
    "hypercorn.trio.tcp_server.TCPServer": (
        TCPServer.__init__,
        ("self", "app", "config", "context", "state", "stream"),
    ),
    "hypercorn.trio.worker_context.WorkerContext": (
        WorkerContext.__init__,
        ("self", "max_requests"),
    ),
    "hypercorn.utils.wrap_app": (wrap_app, ("app", "wsgi_max_body_size", "mode")),
}


def shape_mismatches() -> list[str]:
    """How the installed Hypercorn differs from the internals used here (empty: none)."""
    problems = []
    installed = version("hypercorn")
    if not installed.startswith(TESTED + "."):
        problems.append(f"hypercorn {installed} installed; tickcast is tested with {TESTED}.x")
    for name, (func, expected) in _SHAPE.items():
        got = tuple(inspect.signature(func).parameters)
        if got != expected:
            problems.append(f"{name} takes {got}, tickcast calls it as {expected}")
    if not hasattr(TCPServer, "__await__"):
        problems.append("hypercorn.trio.tcp_server.TCPServer is no longer awaitable")
    return problems


class HypercornHandler:
    """Serves one already-accepted connection with Hypercorn's HTTP machinery.

    One per server, shared by every connection: the config, the wrapped app and the
    worker context are built once, as Hypercorn's own trio worker builds them.
    """

    def __init__(self, app: Any) -> None:
        """Wrap ``app`` (the Quart app) as Hypercorn's worker would (ASGI mode)."""
        self.config = HyperConfig()
        self.config.keep_alive_timeout = KEEP_ALIVE_S
        self._app = wrap_app(app, self.config.wsgi_max_body_size, None)
        self._context = WorkerContext(None)  # None: no max_requests, never recycled

    async def serve(self, stream: trio.abc.HalfCloseableStream) -> None:
        """Serve HTTP on ``stream`` until the client or Hypercorn closes it.

        ``stream`` must replay the bytes the front door already read (the request
        head) before the socket's own: Hypercorn parses the request from the start.
        Cancellation (server shutdown) is Hypercorn's to handle; it closes the
        connection.
        """
        # TCPServer is typed for SSL streams but duck-types plain ones (no do_handshake).
        await TCPServer(
            self._app,
            self.config,
            self._context,
            ConnectionState({}),
            stream,  # type: ignore[arg-type]
        )
