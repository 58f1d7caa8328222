"""``tickcast serve`` and ``tickcast edge``: the assembly behind our own listener.

Hypercorn's shape is the model: ``serve(config, *, shutdown_trigger, task_status)``
runs until ``shutdown_trigger`` returns (or forever), then stops cleanly, and
``task_status.started`` receives the bound port (useful with ``port=0``).

::

    serve(config) / serve_edge(config)
    └── assemble(config, role, front=serve_frontdoor)     see assembly.py
        └── serve_frontdoor                              the listener: /ws/stream -> raw
                                                         sessions, the rest -> Hypercorn

What this module owns is only what differs between the roles and the signals:
which role is opened (:func:`~tickcast.assembly.open_role`), whether the port is
shared (``reuse_port``, edges only), what is logged, and the SIGINT/SIGTERM
trigger of the command line. Everything else (the order tasks start and stop
in, the app's lifespan, the service attached to the routes) is the assembly's.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING

import trio

from tickcast.assembly import assemble, open_role
from tickcast.config import Config
from tickcast.producer import Producer
from tickcast.web.frontdoor import serve_frontdoor

if TYPE_CHECKING:
    from tickcast.edge import Edge

__all__ = ["serve", "serve_edge", "serve_edge_until_signal", "serve_until_signal"]

log = logging.getLogger("tickcast.server")


async def serve(
    config: Config,
    *,
    shutdown_trigger: Callable[[], Awaitable[object]] | None = None,
    producer: Producer | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the producer until ``shutdown_trigger`` returns (or forever), then stop cleanly.

    ``producer`` lets a caller (tests, embedding) open the producer itself.

    Raises:
        ConfigError: the port cannot be bound (in use, not permitted).
        StoreError: the data directory is locked by another process or unreadable.
    """
    if producer is None:
        producer = await Producer.open(config)
    await _serve(config, producer, "tickcast", shutdown_trigger, task_status)


async def serve_edge(
    config: Config,
    *,
    shutdown_trigger: Callable[[], Awaitable[object]] | None = None,
    edge: Edge | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a scale-out edge until ``shutdown_trigger`` returns.

    The same listener, routes and sessions as :func:`serve`, over a history read
    from the Redis stream instead of a source and segment files; with
    ``reuse_port`` several edges share the port. ``edge`` lets a caller (tests)
    build the edge itself.

    Raises:
        ConfigError: the port cannot be bound.
    """
    role = edge if edge is not None else await open_role(config, edge=True)
    await _serve(config, role, "tickcast edge", shutdown_trigger, task_status)


async def _serve(
    config: Config,
    role: Producer | Edge,
    name: str,
    shutdown_trigger: Callable[[], Awaitable[object]] | None,
    task_status: trio.TaskStatus[int],
) -> None:
    """:func:`serve` and :func:`serve_edge` after their role is open.

    The front door binds inside the assembly, after the app's startup hooks and
    before any source (see ``assembly.py``): a busy port stops start-up before a
    tick is made. The block below is the serving period; leaving it is the
    shutdown, in the assembly's order.
    """
    # Only edges share a port (several edge processes behind one address); a
    # second producer on the same data would be refused by the directory lock.
    reuse_port = config.reuse_port and not isinstance(role, Producer)
    front = partial(serve_frontdoor, host=config.host, port=config.port, reuse_port=reuse_port)
    async with assemble(config, role, front=front) as running:
        assert running.port is not None  # a front reports its port
        log.info("%s listening on http://%s:%d", name, config.host, running.port)
        task_status.started(running.port)
        if shutdown_trigger is None:
            await trio.sleep_forever()
        await shutdown_trigger()
        log.info("shutting down: closing stream clients with 1001")
    if isinstance(role, Producer):
        log.info("stopped; latest t %s", role.service.history.latest_t)


async def _first_signal() -> None:
    """Return at the first SIGINT or SIGTERM (the command line's shutdown trigger).

    The signals' previous handlers are back once it returns: during the
    shutdown a second Ctrl-C raises ``KeyboardInterrupt`` (trio's handler) and a
    second SIGTERM ends the process at once (the default action), without waiting
    for the close grace.
    """
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("received %s", signal.Signals(signum).name)
            return


async def serve_until_signal(config: Config) -> None:
    """:func:`serve` until SIGINT or SIGTERM."""
    await serve(config, shutdown_trigger=_first_signal)


async def serve_edge_until_signal(config: Config) -> None:
    """:func:`serve_edge` until SIGINT or SIGTERM."""
    await serve_edge(config, shutdown_trigger=_first_signal)
