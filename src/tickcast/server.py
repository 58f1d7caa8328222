"""The nursery that owns everything (SPEC §8).

::

    serve()                          outer nursery
    ├── Producer.run_writer          segment writer; publishes each tick once written
    └── inner nursery
        ├── run_simulator            the source (or nothing: POST /ingest feeds it)
        ├── app_lifespan             the Quart app's startup/shutdown hooks, app.nursery
        └── serve_frontdoor          listener: /ws/stream -> raw session, rest -> Hypercorn

Shutdown is cancellation, inner first: the source stops and every stream client
gets close 1001 (bounded by 2 s), then the writer is cancelled,
writes what is queued, fsyncs and closes the store. Every tick a client received
was queued for the writer before it was published, so it is on disk after a clean
stop.
"""

from __future__ import annotations

import gc
import logging
import signal
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import trio

from tickcast.config import Config
from tickcast.producer import Producer
from tickcast.service import Service
from tickcast.sources.simulated import run_simulator
from tickcast.web.app import attach, create_app
from tickcast.web.frontdoor import listen, serve_frontdoor
from tickcast.web.lifespan import app_lifespan

if TYPE_CHECKING:
    from tickcast.edge import Edge

__all__ = [
    "run_producer",
    "serve",
    "serve_edge",
    "serve_edge_until_signal",
    "serve_until_signal",
    "steady_state",
]

log = logging.getLogger("tickcast.server")


@contextmanager
def steady_state(service: Service) -> Iterator[None]:
    """Start-up is over: its objects are frozen, and GC pauses exported, for the block.

    ``gc.freeze()`` moves every object made so far (modules, the app, the routes)
    out of the collector's reach: a full collection then scans only what serving
    made. Without it, under a stock Hypercorn, a full collection ran every ~2.2 s
    and took 40-62 ms, and every tick it caught was that late for every client.
    """
    gc.collect()
    gc.freeze()
    service.metrics.watch_gc()
    try:
        yield
    finally:
        service.metrics.unwatch_gc()


async def run_producer(
    config: Config,
    *,
    producer: Producer | None = None,
    task_status: trio.TaskStatus[Producer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Open history and run the writer and the source until cancelled (no listener).

    ``asgi.py`` uses this under a stock Hypercorn; :func:`serve` adds the listener.
    """
    if producer is None:
        producer = await Producer.open(config)
    async with trio.open_nursery() as nursery:
        await nursery.start(producer.run_writer)
        if config.source == "sim":
            await nursery.start(run_simulator, producer)
        if producer.appender is not None:
            await nursery.start(producer.appender.run)
        task_status.started(producer)
        await trio.sleep_forever()


async def serve(
    config: Config,
    *,
    shutdown_trigger: Callable[[], Awaitable[object]] | None = None,
    producer: Producer | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run tickcast until ``shutdown_trigger`` returns (or forever), then stop cleanly.

    ``task_status.started`` receives the bound port (useful with ``port=0``).
    ``producer`` lets a caller (tests, embedding) open the producer itself.
    """
    if producer is None:
        producer = await Producer.open(config)
    service = producer.service
    app = create_app()
    attach(app, service, producer=producer)
    lsock = listen(config.host, config.port)
    port = int(lsock.getsockname()[1])
    try:
        async with trio.open_nursery() as outer:
            await outer.start(producer.run_writer)
            async with trio.open_nursery() as inner, app_lifespan(app):
                if config.source == "sim":
                    await inner.start(run_simulator, producer)
                if producer.appender is not None:
                    await inner.start(producer.appender.run)
                await inner.start(serve_frontdoor, service, app, lsock)
                log.info("tickcast listening on http://%s:%d", config.host, port)
                with steady_state(service):
                    task_status.started(port)
                    if shutdown_trigger is None:
                        await trio.sleep_forever()
                    await shutdown_trigger()
                log.info("shutting down: closing stream clients with 1001")
                inner.cancel_scope.cancel()
            outer.cancel_scope.cancel()
    finally:
        attach(app, None)
        lsock.close()
    log.info("stopped; latest t %s", service.history.latest_t)


async def serve_edge(
    config: Config,
    *,
    shutdown_trigger: Callable[[], Awaitable[object]] | None = None,
    edge: Edge | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a scale-out edge (SPEC §7) until ``shutdown_trigger`` returns.

    The same listener, routes and sessions as :func:`serve`, over a history read
    from the Redis stream instead of a source and segment files. ``started``
    receives the bound port. ``edge`` lets a caller (tests) build the edge itself.
    """
    if edge is None:
        from tickcast.edge import Edge  # coredis and httpx only for an edge (~0.4 s)

        edge = Edge(config)
    service = edge.service
    app = create_app()
    attach(app, service)
    lsock = listen(config.host, config.port, reuse_port=config.reuse_port)
    port = int(lsock.getsockname()[1])
    try:
        async with trio.open_nursery() as nursery, app_lifespan(app):
            await nursery.start(edge.run)
            await nursery.start(serve_frontdoor, service, app, lsock)
            log.info("tickcast edge listening on http://%s:%d", config.host, port)
            with steady_state(service):
                task_status.started(port)
                if shutdown_trigger is None:
                    await trio.sleep_forever()
                await shutdown_trigger()
            log.info("shutting down: closing stream clients with 1001")
            nursery.cancel_scope.cancel()
    finally:
        attach(app, None)
        lsock.close()


async def _first_signal() -> None:
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
