"""One assembly of a running tickcast: config -> history -> service -> app.

Every deployment builds the same thing the same way, here and nowhere else:

* ``tickcast serve`` (:func:`tickcast.server.serve`): a :class:`Producer`, with the
  front door as its listener;
* ``tickcast edge`` (:func:`tickcast.server.serve_edge`): an :class:`Edge`, with the
  same front door;
* ``hypercorn --worker-class trio tickcast.asgi:app``: a :class:`Producer`, with no
  listener of ours (Hypercorn owns it and calls the app).

What it owns, and in which order it starts and stops them::

    assemble(config, role, front=...)
    ├── outer nursery
    │   └── Producer.run_writer        producer only: writes, then publishes
    └── inner nursery + app_lifespan   the Quart app's startup/shutdown hooks, app.nursery
        ├── front                      the caller's listener (serve_frontdoor), if any
        ├── run_simulator              producer with source=sim
        ├── Appender.run               producer with redis_url
        └── Edge.run                   edge: Redis follower (+ the producer's /health)

Invariants:

* The app serves a service only between ``app.attach`` and ``app.attach(None)``,
  both here: before and after, every route answers 503 ``unavailable``.
* The listener starts before any source: a port that cannot be bound fails start-up
  before a tick is made (the writer is running but has nothing to write).
* Shutdown is cancellation, inner first: the sources, the listener and every
  client (stream clients get 1001 within ``close_grace_s``, at most 2 s) stop;
  then the app's shutdown hooks run; then the writer is cancelled, writes what
  is queued, fsyncs and writes ``CLEAN``. Every tick a client received was
  queued for the writer before it was published, so it is on disk after a
  clean stop.
* Before anything starts, the soft open-files limit is raised to the hard one
  (one descriptor per client; see ``web/descriptors.py``), and a limit still
  below ``max_connections`` is logged once with the number it allows.
* While the block runs, start-up's objects are frozen out of the garbage
  collector's reach (:func:`steady_state`).
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from tickcast.config import Config
from tickcast.producer import Producer
from tickcast.service import Service
from tickcast.sources.simulated import run_simulator
from tickcast.web.app import Mount, TickcastApp, create_app
from tickcast.web.descriptors import raise_open_files_limit
from tickcast.web.lifespan import app_lifespan

if TYPE_CHECKING:
    from tickcast.edge import Edge

__all__ = ["Assembly", "Front", "assemble", "open_role", "steady_state"]

Front = Callable[..., Any]
"""A listener started as ``await nursery.start(front, service, app)``; it calls
``task_status.started(port)`` once it accepts connections."""


@dataclass(frozen=True, eq=False)
class Assembly:
    """A running tickcast, as :func:`assemble` yields it."""

    config: Config
    service: Service
    app: TickcastApp
    producer: Producer | None  # None on an edge
    port: int | None  # the listener's bound port; None without one (stock Hypercorn)


async def open_role(config: Config, *, edge: bool = False) -> Producer | Edge:
    """Open what ``config`` serves: the producer's segment files, or an edge.

    Opening a producer recovers the store and takes its directory lock (in a
    worker thread); it starts no task.

    Raises:
        StoreError: the data directory is locked by another process or unreadable.
    """
    if edge:
        from tickcast.edge import Edge  # coredis and httpx only for an edge (~0.4 s)

        return Edge(config)
    return await Producer.open(config)


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


@asynccontextmanager
async def assemble(
    config: Config,
    role: Producer | Edge,
    *,
    front: Front | None = None,
    app: TickcastApp | None = None,
) -> AsyncIterator[Assembly]:
    """Run ``role``'s tasks and the app around the block; stop them in order on exit.

    ``front`` (``serve_frontdoor`` under ``tickcast serve`` and ``tickcast edge``)
    is started in the inner nursery after the app's startup hooks and before any
    source; the port it reports is :attr:`Assembly.port`. ``app`` is the app to
    attach the service to (``tickcast.asgi`` made its own when it was imported, for
    Hypercorn to call); by default a new one. The block is the serving period:
    leave it (return, or be cancelled) to shut down, as the module docstring says.

    Raises:
        TickcastError: the app's startup hooks failed, or ``front`` failed to start
            (e.g. ``ConfigError`` for a port that cannot be bound); from inside the
            nurseries, so wrapped in exception groups (``errors.leaves`` unwraps).
    """
    service = role.service
    producer = role if isinstance(role, Producer) else None  # else an edge
    app = create_app() if app is None else app
    raise_open_files_limit(config.max_connections)  # one descriptor per client
    async with trio.open_nursery() as outer:
        if producer is not None:
            await outer.start(producer.run_writer)
        async with trio.open_nursery() as inner, app_lifespan(app):
            app.attach(Mount(service, producer))
            try:
                port = None if front is None else await inner.start(front, service, app)
                if not isinstance(role, Producer):
                    await inner.start(role.run)
                elif config.source == "sim":
                    await inner.start(run_simulator, role)
                if producer is not None and producer.appender is not None:
                    await inner.start(producer.appender.run)
                with steady_state(service):
                    yield Assembly(config, service, app, producer, port)
                inner.cancel_scope.cancel()
            finally:
                app.attach(None)
        outer.cancel_scope.cancel()
